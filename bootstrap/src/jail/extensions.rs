//! Step 6a: PID 1 starts the function's external extensions (the files of `/opt/extensions`)
//! before it lets the runtime go, as Lambda does. Each runs as the function does (its memory
//! cgroup, the unprivileged user, rlimits, seccomp) but leads a process group of its own, so
//! that signals meant for the runtime at shutdown spare it, and writes to the extensions' own
//! log pipe. An `execve` that fails is reported as the extension's launch error, not as a
//! crash: a close-on-exec pipe tells PID 1 which happened.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::unistd::{ForkResult, Pid, fork, setpgid};

use super::privileges;
use crate::control::Report;
use crate::spec::{FunctionSpec, ShellSpec};

/// An extension that started: its pid, which is also its process group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    pub(crate) pid: Pid,
    pub(crate) index: u8,
}

/// Starts every extension of `function`, in order; those whose `execve` failed are reported
/// to the host (`report`) and left out. `cgroups` are the function's memory cgroups, which the
/// extensions share with it as on Lambda; `log` is the write end of their log pipe (without
/// one, they write where PID 1 does).
pub(crate) fn launch(
    spec: &ShellSpec,
    function: &FunctionSpec,
    cgroups: &[File],
    log: Option<&OwnedFd>,
    report: &dyn Fn(Report),
) -> Vec<Started> {
    let mut started = Vec::new();
    for (index, path) in function.extensions.iter().enumerate() {
        let index = u8::try_from(index).unwrap_or(u8::MAX);
        match launch_one(spec, function, path, cgroups, log) {
            Ok(pid) => started.push(Started { pid, index }),
            Err(errno) => {
                eprintln!(
                    "lamina sandbox helper: extension {path}: {}",
                    nix::errno::Errno::from_raw(errno).desc()
                );
                report(Report::ExtensionLaunchFailed { index, errno });
            }
        }
    }
    started
}

/// Forks and execs one extension; its pid, or the errno its start failed with.
fn launch_one(
    spec: &ShellSpec,
    function: &FunctionSpec,
    path: &str,
    cgroups: &[File],
    log: Option<&OwnedFd>,
) -> Result<Pid, i32> {
    let as_function = FunctionSpec {
        bootstrap: path.to_owned(),
        args: Vec::new(),
        env: function.extension_env.clone(),
        ..function.clone()
    };
    // Built before forking: the child only makes system calls.
    let exec = privileges::prepare_exec(&as_function).map_err(|_| libc::EINVAL)?;
    let cgroups = cgroups
        .iter()
        .map(File::try_clone)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let (failed_r, failed_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e as i32)?;
    // SAFETY: PID 1 has not started its control thread yet: it is single-threaded here.
    match unsafe { fork() }.map_err(|e| e as i32)? {
        ForkResult::Child => {
            drop(failed_r);
            let errno = child(spec, &exec, cgroups, log);
            let _ = File::from(failed_w).write_all(&errno.to_le_bytes());
            std::process::exit(127);
        }
        ForkResult::Parent { child } => {
            drop(failed_w);
            // Also here, so no signal for the runtime can reach it before the child has
            // made its own group.
            let _ = setpgid(child, child);
            let mut errno = [0u8; 4];
            match File::from(failed_r).read_exact(&mut errno) {
                // The pipe closed on a successful execve.
                Err(_) => Ok(child),
                Ok(()) => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    Err(i32::from_le_bytes(errno))
                }
            }
        }
    }
}

/// In the extension's process: its own group, its cgroups, its output, then as the function.
/// Returns the errno of the step that failed.
fn child(
    spec: &ShellSpec,
    exec: &privileges::Exec,
    cgroups: Vec<File>,
    log: Option<&OwnedFd>,
) -> i32 {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let io_errno = |e: super::BootstrapError| match e {
        super::BootstrapError::Step { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        super::BootstrapError::Spec(_) => libc::EINVAL,
    };
    if let Err(e) = privileges::join_function_cgroups(cgroups) {
        return io_errno(e);
    }
    if let Some(log) = log {
        let fd = log.as_fd();
        if nix::unistd::dup2_stdout(fd).is_err() || nix::unistd::dup2_stderr(fd).is_err() {
            return libc::EBADF;
        }
    }
    io_errno(privileges::drop_and_exec(spec, exec))
}
