//! The jail, built in this order (SECURITY.md describes the same steps). The host sends the
//! spec in two halves (see [`crate::spec`]): steps 1–5 need only the first, so a sandbox can
//! be built ahead and wait, with its function's process ready, until an environment takes it.
//!
//! 1. Join the environment's process and CPU cgroups, so that everything below is counted and
//!    limited. (The memory cgroup is joined by the function's process alone, in step 5: the
//!    OOM killer can then only ever pick the function, never the helpers reporting on it.)
//! 2. Unshare mount, PID, IPC and UTS namespaces, and in network mode `none` a network
//!    namespace, where `lo` is brought up and the Runtime API listener is bound and handed to
//!    the host. Rootless, a user namespace comes with them and owns them ([`userns`]).
//! 3. Fork: the child is PID 1 of the new PID namespace. The parent stays outside, waits, and
//!    exits the way the function did (the host watches it); it dies with the host.
//! 4. PID 1 builds the new root on a tmpfs: the host's `/usr`, `/bin`, `/lib*` and a few `/etc`
//!    files read-only, a minimal `/dev`, a new `/proc`, and sets the host name.
//! 5. PID 1 forks the function's process, which joins its memory cgroup and waits.
//! 6. The function's half arrives: PID 1 mounts `/var/task` and `/opt` read-only and a fresh
//!    sized tmpfs `/tmp`, then `pivot_root`s (which moves the waiting process too), detaches the
//!    old root and remounts the root read-only. It starts the function's external extensions
//!    ([`extensions`]: each as the function, but in a process group of its own), then passes
//!    the spec on; the function's process drops to the unprivileged user (no capabilities
//!    left), sets rlimits and `no_new_privs`, installs the seccomp filter, and execs the
//!    function's bootstrap.
//! 7. PID 1 reaps every process of the sandbox. Once the function's process and every
//!    extension have ended, it reports the function's exact status to the outer process and
//!    exits, which ends every process left inside; with extensions still running, the
//!    runtime's end (and each extension's) is reported to the host at once. Meanwhile a
//!    thread of PID 1 answers the host's commands ([`commands`]: a fresh `/tmp` between
//!    invocations, a connection to the sandbox's loopback for telemetry, signals for the
//!    runtime alone), and ends the sandbox if the host goes away (its socket closes).

mod commands;
mod extensions;
pub(crate) mod mounts;
pub mod network;
pub(crate) mod userns;

pub use mounts::{tmp_untouched, tmp_untouched_fd};
mod privileges;

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid, sethostname};

use crate::control::{Report, Status};
use crate::spec::{FunctionSpec, Network, SPEC_VERSION, ShellSpec};

/// A step of the jail failed. Each variant names the step and what it touched.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The spec could not be read or has the wrong version.
    #[error("reading the jail spec: {0}")]
    Spec(String),
    /// A system call of one step failed.
    #[error("{step}: {target}: {source}")]
    Step {
        /// The step (`join cgroup`, `mount /tmp`, …).
        step: &'static str,
        /// The path or value it was applied to.
        target: String,
        /// The error.
        source: std::io::Error,
    },
}

pub(crate) fn step_err(
    step: &'static str,
    target: impl std::fmt::Display,
) -> impl FnOnce(nix::Error) -> BootstrapError {
    let target = target.to_string();
    move |e| BootstrapError::Step {
        step,
        target,
        source: std::io::Error::from(e),
    }
}

pub(crate) fn io_step_err(
    step: &'static str,
    target: impl std::fmt::Display,
) -> impl FnOnce(std::io::Error) -> BootstrapError {
    let target = target.to_string();
    move |source| BootstrapError::Step {
        step,
        target,
        source,
    }
}

/// Parses and checks the first frame.
pub fn parse_spec(bytes: &[u8]) -> Result<ShellSpec, BootstrapError> {
    let spec: ShellSpec =
        serde_json::from_slice(bytes).map_err(|e| BootstrapError::Spec(e.to_string()))?;
    if spec.version != SPEC_VERSION {
        return Err(BootstrapError::Spec(format!(
            "version {} is not the supported {SPEC_VERSION}",
            spec.version
        )));
    }
    Ok(spec)
}

/// Builds the jail and runs the function in it. Returns only in the outer process, with the
/// function's exit status to reproduce; never returns in PID 1 or the function.
pub fn run(spec: &ShellSpec) -> Result<ExitReport, BootstrapError> {
    // 1. cgroups.
    for dir in &spec.cgroups {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, getpid().to_string())
            .map_err(io_step_err("join cgroup", procs.display()))?;
    }

    // 2. namespaces (rootless: inside a user namespace of the sandbox's own).
    let flags = namespaces(spec.network);
    match &spec.user_namespace {
        Some(map) => userns::enter(map, spec.uid, spec.gid, flags)?,
        None => unshare(flags).map_err(step_err("unshare", format!("{flags:?}")))?,
    }
    if spec.network != Network::Host {
        // The network namespace applies to this process at once: loopback, then the listener.
        // (In mode `Outbound`, the host attaches the user-mode network to it from outside.)
        network::loopback_up()?;
        network::plain_congestion_control();
        network::hand_over_listener(0)?;
    }
    // Prepared before forking: PID 1 reports the function's status through this pipe.
    // Close-on-exec: nothing PID 1 starts may hold it.
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(step_err("pipe", "status"))?;
    // 3. fork PID 1.
    // SAFETY: this process is single-threaded (the bootstrap never starts threads), so the
    // child may run any code after fork.
    match unsafe { fork() }.map_err(step_err("fork", "pid 1"))? {
        ForkResult::Parent { child } => {
            drop(status_w);
            // The host's SIGTERM is for the function; the outer process just keeps waiting.
            // SAFETY: installing SIG_IGN has no handler code to be unsafe in.
            let _ = unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) };
            outer_wait(child, status_r)
        }
        ForkResult::Child => {
            drop(status_r);
            let code = match pid1(spec, status_w) {
                Ok(never) => match never {},
                Err(e) => {
                    eprintln!("lamina sandbox helper: {e}");
                    125
                }
            };
            std::process::exit(code)
        }
    }
}

/// The namespaces a sandbox gets: its own network namespace unless in mode `host`.
pub(crate) fn namespaces(network: Network) -> CloneFlags {
    let all = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    match network {
        Network::None | Network::Outbound => all | CloneFlags::CLONE_NEWNET,
        Network::Host => all,
    }
}

/// How the function ended, as the outer process must reproduce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReport {
    /// Exit with this code.
    Code(i32),
    /// Die of this signal.
    Signal(i32),
}

fn outer_wait(pid1: Pid, status_r: OwnedFd) -> Result<ExitReport, BootstrapError> {
    // PID 1 dies with us (PDEATHSIG): the host killing this process ends the sandbox.
    loop {
        match waitpid(pid1, None) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => break,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(step_err("wait", "pid 1")(e)),
        }
    }
    let mut report = String::new();
    let _ = File::from(status_r).read_to_string(&mut report);
    let mut parts = report.split_whitespace();
    match (parts.next(), parts.next().and_then(|n| n.parse().ok())) {
        (Some("code"), Some(n)) => Ok(ExitReport::Code(n)),
        (Some("signal"), Some(n)) => Ok(ExitReport::Signal(n)),
        _ => Err(BootstrapError::Spec(
            "pid 1 ended without reporting the function's status".into(),
        )),
    }
}

enum Never {}

fn pid1(spec: &ShellSpec, status_w: OwnedFd) -> Result<Never, BootstrapError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(step_err("prctl", "pdeathsig"))?;
    // Opened now: after pivot_root the host's cgroup files are out of reach.
    let function_cgroups = spec
        .function_cgroups
        .iter()
        .map(|dir| {
            let procs = dir.join("cgroup.procs");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(io_step_err("open", procs.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // 4. the new root, all but the function's own mounts.
    mounts::prepare_root(spec)?;
    sethostname(&spec.hostname).map_err(step_err("sethostname", &spec.hostname))?;
    // 5. the function's process, forked now: it joins its cgroup while the sandbox waits to
    // be used, then waits for the function's half of the spec, passed on through this pipe.
    // Close-on-exec: an extension holding its write end would keep the function waiting.
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(step_err("pipe", "go"))?;
    // SAFETY: PID 1 is single-threaded too.
    let function = match unsafe { fork() }.map_err(step_err("fork", "function"))? {
        ForkResult::Parent { child } => child,
        ForkResult::Child => {
            drop((status_w, go_w));
            let e = match function_process(spec, function_cgroups, go_r) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            eprintln!("lamina sandbox helper: {e}");
            std::process::exit(127);
        }
    };
    drop(go_r);
    // The sandbox is ready. Its function's half arrives when an environment takes it, after
    // a header byte that may carry the extensions' log pipe; the host closing the socket
    // first means the sandbox was never used.
    let extension_log = match commands::receive_header() {
        Ok(Some(log)) => log,
        Ok(None) => std::process::exit(0),
        Err(e) => return Err(io_step_err("read", "the function's spec")(e)),
    };
    // SAFETY: fd 0 is the control socket, open for the life of PID 1; ManuallyDrop keeps this
    // handle from closing it.
    let stdin = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let frame = match crate::spec::read_frame(&*stdin) {
        Ok(Some(frame)) => frame,
        Ok(None) => std::process::exit(0),
        Err(e) => return Err(io_step_err("read", "the function's spec")(e)),
    };
    let function_spec: FunctionSpec =
        serde_json::from_slice(&frame).map_err(|e| BootstrapError::Spec(e.to_string()))?;
    mounts::finish_root(&spec.root, &function_spec)?;
    // 6a. the external extensions, before the runtime, as on Lambda.
    let extensions = extensions::launch(
        spec,
        &function_spec,
        &function_cgroups,
        extension_log.as_ref(),
        &|r| commands::report(r, None),
    );
    // The extensions hold their own copies; PID 1 keeping one would hold the pipe open.
    drop((function_cgroups, extension_log));
    // Without extensions the runtime starts now; with them, once the host says every one has
    // registered (Lambda's order).
    let held = match extensions.is_empty() {
        true => {
            File::from(go_w)
                .write_all(&frame)
                .map_err(io_step_err("write", "the function's spec"))?;
            None
        }
        false => Some((go_w, frame)),
    };
    // PID 1 answers the host's commands on its stdin (the control socket) from here on. A
    // thread only now: the function's process and the extensions were forked while PID 1 was
    // single-threaded.
    std::thread::spawn({
        let tmp_bytes = function_spec.tmp_bytes;
        let groups = extensions
            .iter()
            .map(|e| (e.index, e.pid.as_raw()))
            .collect();
        move || commands::serve(tmp_bytes, groups, held)
    });
    // 7. reap until the function's process and every extension have ended. With extensions
    // running on, the runtime's end is reported at once (the host then shuts them down), and
    // each extension's as it comes.
    let mut alive = extensions;
    let mut function_status = None;
    let status = loop {
        let (pid, status) = match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Status::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Status::Signal(sig as i32)),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(step_err("wait", "function")(e)),
        };
        if pid == function {
            function_status = Some(status);
            if !alive.is_empty() {
                commands::report(Report::RuntimeExited(status), None);
            }
        } else if let Some(at) = alive.iter().position(|e| e.pid == pid) {
            let index = alive.remove(at).index;
            commands::report(Report::ExtensionExited { index, status }, None);
        }
        if let Some(status) = function_status
            && alive.is_empty()
        {
            break status;
        }
    };
    let report = match status {
        Status::Code(code) => format!("code {code}"),
        Status::Signal(signal) => format!("signal {signal}"),
    };
    let mut status = File::from(status_w);
    let _ = status.write_all(report.as_bytes());
    std::process::exit(0)
}

/// The function's process: joins its cgroup, waits for the function's spec (EOF: the sandbox
/// was never used), then drops privileges and execs the bootstrap. PID 1 finished the root
/// (and `pivot_root` moved this process into it) before sending the spec.
fn function_process(
    spec: &ShellSpec,
    cgroups: Vec<File>,
    go: OwnedFd,
) -> Result<Never, BootstrapError> {
    privileges::join_function_cgroups(cgroups)?;
    let mut frame = Vec::new();
    File::from(go)
        .read_to_end(&mut frame)
        .map_err(io_step_err("read", "the function's spec"))?;
    if frame.is_empty() {
        std::process::exit(0);
    }
    let function_spec: FunctionSpec =
        serde_json::from_slice(&frame).map_err(|e| BootstrapError::Spec(e.to_string()))?;
    let exec = privileges::prepare_exec(&function_spec)?;
    Err(privileges::drop_and_exec(spec, &exec))
}

/// Turns a string into a C string, naming the field on failure.
pub(crate) fn cstring(what: &'static str, s: &str) -> Result<CString, BootstrapError> {
    CString::new(s).map_err(|_| BootstrapError::Spec(format!("{what} {s:?} contains a NUL byte")))
}
