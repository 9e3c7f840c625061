//! The unisolated backend: the bootstrap runs as a plain child process of the host, in its own
//! process group so that stopping the environment reaches every process it started. It gives no
//! isolation at all: for development, and for hosts without namespaces.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Control, Sandbox, StartSpec, Started, Stop, find_bootstrap};
use crate::config::lambda_env::{self, Paths};
use crate::error::{ExitStatus, Failure};

/// Runs bootstraps as plain child processes.
#[derive(Debug, Default)]
pub struct ProcessSandbox;

impl Sandbox for ProcessSandbox {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start(&self, start: StartSpec<'_>) -> Result<Started, Failure> {
        let spec = start.spec;
        // Without a jail there is no /var/task: the variables point at the real directories.
        let seen = spec
            .managed
            .as_ref()
            .map(|m| m.seen_on_host(&spec.code_dir));
        let (bootstrap, args) = match (&spec.managed, &seen) {
            (Some(managed), Some(seen)) => (
                managed.interpreter.executable.clone(),
                managed.args(seen, &spec.handler),
            ),
            _ => (find_bootstrap(spec)?, Vec::new()),
        };
        let paths = Paths {
            task_root: spec.code_dir.display().to_string(),
            runtime_dir: match &seen {
                Some(seen) => seen.runtime_dir.clone(),
                None => spec.code_dir.display().to_string(),
            },
            managed: seen,
        };
        let env = lambda_env::environment(
            spec,
            &start.tcp_api()?.to_string(),
            start.log_stream,
            &paths,
        );
        let (reader, writer, writer2) = super::log_pipe()?;
        // External extensions first, as Lambda starts them: each in a process group of its
        // own, so that the runtime's SIGTERM at shutdown does not reach them. Their output has
        // a pipe of its own: telemetry tells `extension` lines from `function` ones.
        let (extensions, extension_groups, extension_logs) = launch_extensions(spec, &env)?;
        let mut command =
            super::base_command(std::process::Command::new(&bootstrap), writer, writer2);
        command
            .args(args)
            .envs(env)
            .current_dir(&spec.code_dir)
            .stdin(Stdio::null());
        let (exit_tx, exited) = oneshot::channel();
        let control = ProcessControl {
            runtime: Mutex::new(Runtime::Held {
                command: Box::new(command),
                exit_tx,
            }),
            reaped: Arc::new(AtomicBool::new(false)),
            extension_groups,
            status: Mutex::new(None),
        };
        // With extensions, the runtime waits until they have registered, as on Lambda
        // (`release_runtime`); without, it starts now, so that a bootstrap that cannot be
        // started is this start's error.
        if extensions.launched.is_empty() {
            control.spawn_runtime()?;
        }
        Ok(Started {
            control: Box::new(control),
            exited,
            logs: Some(reader.into()),
            extension_logs,
            listener: None,
            // Without a jail /tmp is the host's: nothing to reset.
            reset_tmp: None,
            // Unjailed, the function runs as the host's user: there is nobody to tell apart.
            runtime_api_peer_uid: None,
            extensions,
        })
    }
}

/// Starts every file of the function's `/opt/extensions` with the extensions' environment
/// (the runtime's, less what Lambda gives the runtime only), their output on a pipe of their
/// own, whose read end comes back (`None` without extensions), with each started one's file
/// name and process group.
fn launch_extensions(
    spec: &crate::config::FunctionSpec,
    env: &[(String, String)],
) -> Result<(super::Extensions, Vec<Group>, Option<std::os::fd::OwnedFd>), Failure> {
    let files = &spec.extensions;
    let mut extensions = super::Extensions::default();
    let mut pids = Vec::new();
    if files.is_empty() {
        return Ok((extensions, pids, None));
    }
    let (reader, log, _) = super::log_pipe()?;
    let (exit_tx, exits) = tokio::sync::mpsc::unbounded_channel();
    let env = lambda_env::extension_environment(env);
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pipe = |w: &std::io::PipeWriter| {
            w.try_clone()
                .map_err(|e| Failure::Sandbox(format!("the log pipe for extension {name}: {e}")))
        };
        let mut command =
            super::base_command(std::process::Command::new(file), pipe(&log)?, pipe(&log)?);
        command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.code_dir)
            .stdin(Stdio::null());
        match command.spawn() {
            Ok(mut child) => {
                if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
                    pids.push((name.clone(), pid));
                }
                let exit_tx = exit_tx.clone();
                let exited_name = name.clone();
                tokio::spawn(async move {
                    let status = super::exit_status_of(child.wait().await);
                    let _ = exit_tx.send((exited_name, super::ExtensionEnd::Exited(status)));
                });
                extensions.launched.push(name);
            }
            Err(e) => extensions.failed.push((name, go_style_reason(&e))),
        }
    }
    extensions.exits = Some(exits);
    Ok((extensions, pids, Some(reader.into())))
}

/// An external extension's file name and the process group it leads.
type Group = (String, i32);

#[derive(Debug)]
struct ProcessControl {
    runtime: Mutex<Runtime>,
    /// Set once the runtime has been reaped: its pid may then be anyone's.
    reaped: Arc<AtomicBool>,
    /// Each external extension leads a process group of its own: its file name and group.
    extension_groups: Vec<Group>,
    /// The runtime's `/proc/PID/status`, opened at the first reading of its peak memory and
    /// kept: it is read at the end of every invocation, and an open file stays the runtime's
    /// (once it has exited, reads fail rather than show a process that took its pid).
    status: Mutex<Option<std::fs::File>>,
}

/// Where the runtime process is in its life.
#[derive(Debug)]
enum Runtime {
    /// Not started yet: the extensions are registering. The command holds the log pipe's write
    /// ends; the sender tells the environment how the runtime ended.
    Held {
        command: Box<tokio::process::Command>,
        exit_tx: oneshot::Sender<ExitStatus>,
    },
    /// Started, leading the process group `pid`.
    Running { pid: i32 },
    /// Stopped before it was started, or could not be started.
    Gone,
}

impl ProcessControl {
    /// Starts a held runtime. The exit status goes to the environment once it is reaped.
    fn spawn_runtime(&self) -> Result<(), Failure> {
        let mut runtime = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
        let (mut command, exit_tx) = match std::mem::replace(&mut *runtime, Runtime::Gone) {
            Runtime::Held { command, exit_tx } => (command, exit_tx),
            // Started already (or stopped first): nothing to do.
            other => {
                *runtime = other;
                return Ok(());
            }
        };
        let spawned = command.spawn();
        // The command holds the pipe's write ends; drop them so the pipe ends with the child.
        drop(command);
        let mut child = spawned.map_err(|e| Failure::BootstrapNotExecutable {
            path: "/var/task/bootstrap".to_owned(),
            reason: go_style_reason(&e),
        })?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| {
                Failure::Sandbox("the bootstrap exited before it could be tracked".into())
            })?;
        *runtime = Runtime::Running { pid };
        let reaped = Arc::clone(&self.reaped);
        tokio::spawn(async move {
            let status = super::exit_status_of(child.wait().await);
            reaped.store(true, Ordering::Release);
            let _ = exit_tx.send(status);
        });
        Ok(())
    }

    /// Signals the runtime's process group; a runtime still held is never started, and ends
    /// as if the signal had reached it.
    fn signal_runtime(&self, how: Stop) {
        let mut runtime = self.runtime.lock().unwrap_or_else(|e| e.into_inner());
        match &*runtime {
            // The group outlives its leader while any member lives, so this also reaches
            // processes the runtime left behind.
            Runtime::Running { pid } => super::signal_group(*pid, how),
            Runtime::Held { .. } => {
                if let Runtime::Held { exit_tx, .. } =
                    std::mem::replace(&mut *runtime, Runtime::Gone)
                {
                    let signal = match how {
                        Stop::Terminate => nix::sys::signal::Signal::SIGTERM,
                        Stop::Kill => nix::sys::signal::Signal::SIGKILL,
                    };
                    let _ = exit_tx.send(ExitStatus::Signal(signal as i32));
                }
            }
            Runtime::Gone => {}
        }
    }
}

impl Control for ProcessControl {
    fn stop(&self, how: Stop) {
        self.signal_runtime(how);
        for (_, group) in &self.extension_groups {
            super::signal_group(*group, how);
        }
    }

    fn kill_extension(&self, name: &str) {
        for (_, group) in self.extension_groups.iter().filter(|(n, _)| n == name) {
            super::signal_group(*group, Stop::Kill);
        }
    }

    fn stop_runtime(&self, how: Stop) {
        self.signal_runtime(how);
    }

    fn release_runtime(&self) {
        if let Err(failure) = self.spawn_runtime() {
            // Found executable at start, it could not be started now (removed meanwhile, or
            // out of processes). Its exit sender is gone with it, so the environment sees the
            // runtime end at once and fails init; the reason is in lamina's own log.
            tracing::warn!("starting the runtime once its extensions registered: {failure:?}");
        }
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        let Runtime::Running { pid } = *self.runtime.lock().unwrap_or_else(|e| e.into_inner())
        else {
            return None;
        };
        if self.reaped.load(Ordering::Acquire) {
            return None;
        }
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            *status = std::fs::File::open(format!("/proc/{pid}/status")).ok();
        }
        // One read from the start: procfs files have no size to read by, and reading to the
        // end grows a buffer from 32 bytes, a read per doubling (8 for a status file).
        let mut text = [0u8; 8192];
        let read = std::os::unix::fs::FileExt::read_at(status.as_ref()?, &mut text, 0).ok()?;
        peak_memory_bytes(&text[..read])
    }
}

/// `VmHWM` (the peak resident set) of a `/proc/PID/status` text, in bytes.
fn peak_memory_bytes(status: &[u8]) -> Option<u64> {
    // By line, as bytes: the process's name (first line) may be anything.
    let line = status
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"VmHWM:"))?;
    let kb: u64 = std::str::from_utf8(line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// "no such file or directory", as Go's os/exec words it in Lambda's messages.
pub(crate) fn go_style_reason(e: &std::io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
        None => e.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_read_from_a_status_whatever_the_processs_name() {
        let status = std::fs::read("/proc/self/status").unwrap();
        assert!(peak_memory_bytes(&status).unwrap() > 0);
        let named = b"Name:\t\xff\xfe\nVmPeak:\t  9000 kB\nVmHWM:\t    4288 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(peak_memory_bytes(named), Some(4288 * 1024));
        assert_eq!(peak_memory_bytes(b"Name:\tx\nVmRSS:\t 1 kB\n"), None);
    }
}
