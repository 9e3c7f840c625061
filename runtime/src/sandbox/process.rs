//! The unisolated backend: the bootstrap runs as a plain child process of the host, in its own
//! process group so that stopping the environment reaches every process it started. It gives no
//! isolation at all: for development, and for hosts without namespaces.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use super::{Control, Sandbox, StartSpec, Started, Stop, find_bootstrap};
use crate::config::lambda_env::{self, Paths};
use crate::error::Failure;

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
        let (extensions, extension_pids, extension_logs) = launch_extensions(spec, &env)?;
        let mut command =
            super::base_command(std::process::Command::new(&bootstrap), writer, writer2);
        command
            .args(args)
            .envs(env)
            .current_dir(&spec.code_dir)
            .stdin(Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|e| Failure::BootstrapNotExecutable {
                path: "/var/task/bootstrap".to_owned(),
                reason: go_style_reason(&e),
            })?;
        // The command holds the pipe's write ends; drop them so the pipe ends with the child.
        drop(command);
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| {
                Failure::Sandbox("the bootstrap exited before it could be tracked".into())
            })?;
        let reaped = Arc::new(AtomicBool::new(false));
        let (exit_tx, exited) = oneshot::channel();
        let reaped_flag = Arc::clone(&reaped);
        tokio::spawn(async move {
            let status = super::exit_status_of(child.wait().await);
            reaped_flag.store(true, Ordering::Release);
            let _ = exit_tx.send(status);
        });
        Ok(Started {
            control: Box::new(ProcessControl {
                pid,
                reaped,
                extension_pids,
            }),
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
/// own, whose read end comes back (`None` without extensions).
fn launch_extensions(
    spec: &crate::config::FunctionSpec,
    env: &[(String, String)],
) -> Result<(super::Extensions, Vec<i32>, Option<std::os::fd::OwnedFd>), Failure> {
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
                    pids.push(pid);
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

#[derive(Debug)]
struct ProcessControl {
    pid: i32,
    reaped: Arc<AtomicBool>,
    /// Each external extension leads a process group of its own.
    extension_pids: Vec<i32>,
}

impl Control for ProcessControl {
    fn stop(&self, how: Stop) {
        // The group outlives its leader while any member lives, so this also reaches
        // processes the runtime left behind.
        super::signal_group(self.pid, how);
        for pid in &self.extension_pids {
            super::signal_group(*pid, how);
        }
    }

    fn stop_runtime(&self, how: Stop) {
        super::signal_group(self.pid, how);
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        if self.reaped.load(Ordering::Acquire) {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
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
