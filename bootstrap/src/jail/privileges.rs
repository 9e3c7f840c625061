//! Step 5: the function's process gives up everything before it runs user code: batch
//! scheduling, the unprivileged user (so no capabilities), rlimits, `no_new_privs`, and a
//! seccomp filter that refuses what a sandboxed function never needs (mounts, namespaces,
//! tracing, kernel modules, kexec, BPF, keyrings, …).

use std::collections::BTreeMap;
use std::ffi::CString;

use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Uid, chdir, execve, setgid, setgroups, setuid};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use super::{BootstrapError, cstring, step_err};
use crate::spec::{FunctionSpec, ShellSpec};

/// Everything `execve` needs, built before forking.
pub(crate) struct Exec {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    deny: BpfProgram,
    nosys: BpfProgram,
}

/// System calls refused with EPERM.
const DENIED: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_adjtimex,
    libc::SYS_io_uring_setup,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
];

/// Namespace flags `clone` may not carry.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

fn seccomp_err(e: impl std::fmt::Display) -> BootstrapError {
    BootstrapError::Spec(format!("building the seccomp filter: {e}"))
}

/// Builds the exec arguments and compiles the seccomp filters.
pub(crate) fn prepare_exec(spec: &FunctionSpec) -> Result<Exec, BootstrapError> {
    let path = cstring("bootstrap", &spec.bootstrap)?;
    let env = spec
        .env
        .iter()
        .map(|(k, v)| cstring("environment variable", &format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let arch = std::env::consts::ARCH.try_into().map_err(seccomp_err)?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&n| (n, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let flag = u64::from(flag.unsigned_abs());
            let condition = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .map_err(seccomp_err)?;
            SeccompRule::new(vec![condition]).map_err(seccomp_err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(seccomp_err)?;
    // clone3 passes its flags in memory a filter cannot read: refuse it as "not implemented",
    // and C libraries fall back to clone, whose flags the filter above checks.
    let nosys = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(seccomp_err)?;
    Ok(Exec {
        argv: std::iter::once(Ok(path.clone()))
            .chain(spec.args.iter().map(|a| cstring("bootstrap argument", a)))
            .collect::<Result<_, _>>()?,
        path,
        env,
        deny: deny.try_into().map_err(seccomp_err)?,
        nosys: nosys.try_into().map_err(seccomp_err)?,
    })
}

/// Moves the calling process into the function's cgroups (memory), alone: "0" means the
/// writer. Done by the function's process while it waits, off the cold start's path.
pub(crate) fn join_function_cgroups(cgroups: Vec<std::fs::File>) -> Result<(), BootstrapError> {
    use std::io::Write;
    for mut procs in cgroups {
        procs
            .write_all(b"0")
            .map_err(super::io_step_err("join function cgroup", "0"))?;
    }
    Ok(())
}

/// Runs the function (and, by inheritance, all it starts) under `SCHED_BATCH`: when it wakes,
/// because its event or its answer's acknowledgement arrived, it does not preempt the thread
/// that woke it, which is the host serving every environment's Runtime API and every caller. It
/// runs as soon as a CPU is free, or at the next tick. With a CPU to spare nothing changes;
/// when every CPU is busy, the host finishes what it is doing before the switch instead of
/// being switched out mid-request and back. Measured (the serve benchmark, 2 cores,
/// saturated): +9% invocations/s, p50 −12%, p99 1–4 ms → 3.4–6 ms (a woken function may wait
/// for the tick); at 1 connection +5% and a lower p99. The host's threads still preempt the
/// function as before. The function may switch itself back to `SCHED_OTHER` (both are
/// unprivileged policies).
fn batch_scheduling() -> Result<(), BootstrapError> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the sched_param we own, for this process.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        return Err(super::io_step_err("sched_setscheduler", "SCHED_BATCH")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Empties the capability bounding set, so that no later `execve` (of a file with
/// capabilities, say) can grant one. Needs CAP_SETPCAP, so it comes before `setuid`.
fn drop_bounding_set() -> Result<(), BootstrapError> {
    for cap in 0..=63 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and changes only this process.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: past the last capability this kernel knows.
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(super::io_step_err("drop bounding capability", cap)(e));
        }
    }
    Ok(())
}

/// Clears the ambient, effective, permitted and inheritable capability sets. (The `execve`
/// that follows would clear them for a uid other than 0 anyway; this makes it so whatever the
/// kernel's rules for the namespace the jail is in.)
fn drop_capabilities() -> Result<(), BootstrapError> {
    // SAFETY: prctl with PR_CAP_AMBIENT_CLEAR_ALL changes only this process.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads the header and the two data words we own (version 3 takes two).
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(super::io_step_err("capset", "none")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Drops privileges and execs the function's bootstrap. Returns only on failure.
pub(crate) fn drop_and_exec(spec: &ShellSpec, exec: &Exec) -> BootstrapError {
    match try_drop_and_exec(spec, exec) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

fn try_drop_and_exec(spec: &ShellSpec, exec: &Exec) -> Result<Never, BootstrapError> {
    // The spec arrived on stdin; the function reads nothing there.
    let null = std::fs::File::open("/dev/null").map_err(super::io_step_err("open", "/dev/null"))?;
    nix::unistd::dup2_stdin(&null).map_err(step_err("dup2", "stdin"))?;

    batch_scheduling()?;
    // Rootless, setgroups is denied in the user namespace (see `userns`): the function keeps
    // the host user's groups.
    if spec.user_namespace.is_none() {
        setgroups(&[]).map_err(step_err("setgroups", "[]"))?;
    }
    // While CAP_SETPCAP is still held: nothing the function execs can regain a capability.
    drop_bounding_set()?;
    setgid(Gid::from_raw(spec.gid)).map_err(step_err("setgid", spec.gid))?;
    // Under root, leaving uid 0 clears every capability (no SECBIT_KEEP_CAPS). Rootless the
    // uid never was 0 and nothing changes here: the capabilities are dropped explicitly.
    setuid(Uid::from_raw(spec.uid)).map_err(step_err("setuid", spec.uid))?;
    drop_capabilities()?;
    setrlimit(Resource::RLIMIT_NOFILE, 1024, 1024).map_err(step_err("setrlimit", "NOFILE"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(step_err("setrlimit", "CORE"))?;
    if let Some(max) = spec.max_processes {
        setrlimit(Resource::RLIMIT_NPROC, max, max).map_err(step_err("setrlimit", "NPROC"))?;
    }
    chdir("/var/task").map_err(step_err("chdir", "/var/task"))?;
    // Sets no_new_privs, then the filters: last, so that everything above was still allowed.
    seccompiler::apply_filter(&exec.nosys).map_err(seccomp_err)?;
    seccompiler::apply_filter(&exec.deny).map_err(seccomp_err)?;
    // "Text file busy": some process on the host holds the bootstrap open for writing. Most
    // often that is a moment's overlap (a file just copied, whose descriptor a process forked
    // meanwhile still holds until its own exec), so it is tried again for up to 200 ms.
    let mut busy = 0;
    loop {
        match execve(&exec.path, &exec.argv, &exec.env) {
            Err(nix::Error::ETXTBSY) if busy < 100 => {
                busy += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(step_err("execve", exec.path.to_string_lossy())(e)),
            Ok(never) => match never {},
        }
    }
}
