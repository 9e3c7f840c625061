//! The native jail backend: each environment's processes run under `lamina-bootstrap`, which
//! builds the jail (namespaces, a minimal read-only root, an unprivileged user, seccomp) and
//! execs the function's bootstrap inside it. The host only forks and execs the helper, never
//! enters namespaces itself: the tokio process is multi-threaded.
//!
//! Scope: one `JailSandbox` per runtime; each environment gets a root mount point under the
//! state directory, removed when the environment is dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lamina_bootstrap::{JailSpec, Network, OptMount};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::cgroup::{self, Cgroups};
use super::{Control, Sandbox, StartSpec, Started, Stop, find_bootstrap};
use crate::config::lambda_env::{self, Paths};
use crate::error::Failure;

/// Lambda's sandbox user (`sbx_user1051`).
const SANDBOX_UID: u32 = 993;
const SANDBOX_GID: u32 = 990;

/// Runs bootstraps inside the native jail.
#[derive(Debug)]
pub struct JailSandbox {
    helper: PathBuf,
    state_dir: PathBuf,
    cgroups: Option<cgroup::Version>,
    network: Network,
}

impl JailSandbox {
    /// Finds `lamina-bootstrap` (`LAMINA_BOOTSTRAP`, else beside the running executable or one
    /// directory up, where cargo puts binaries next to test executables), checks that this
    /// host lets it build the jail (every missing capability is listed, not just the first),
    /// and prepares the state directory.
    pub fn new() -> Result<Self, JailUnavailable> {
        let unavailable = |missing: String| JailUnavailable {
            missing: vec![missing],
        };
        let helper = match std::env::var_os("LAMINA_BOOTSTRAP") {
            Some(path) => PathBuf::from(path),
            None => {
                let exe = std::env::current_exe()
                    .map_err(|e| unavailable(format!("cannot locate lamina itself: {e}")))?;
                let dirs = exe
                    .parent()
                    .into_iter()
                    .chain(exe.parent().and_then(Path::parent));
                dirs.map(|d| d.join("lamina-bootstrap"))
                    .find(|p| p.is_file())
                    .ok_or_else(|| {
                        unavailable(format!(
                            "lamina-bootstrap not found beside {} (set LAMINA_BOOTSTRAP)",
                            exe.display()
                        ))
                    })?
            }
        };
        let mut missing = check_with(&helper);
        let cgroups = cgroup::detect();
        match cgroups {
            Some(version) => {
                if let Err(e) = cgroup::prepare(version) {
                    missing.push(format!("cgroups: {e}"));
                }
            }
            None => missing.push(
                "cgroups: neither cgroup v2 with the memory and pids controllers nor cgroup v1 \
                 memory and pids hierarchies are mounted under /sys/fs/cgroup, so memory and \
                 process limits cannot be enforced"
                    .into(),
            ),
        }
        let state_dir = std::env::temp_dir().join("lamina-jails");
        if let Err(e) =
            std::fs::create_dir_all(&state_dir).and_then(|()| cgroup::writable(&state_dir))
        {
            missing.push(format!("state directory {}: {e}", state_dir.display()));
        }
        if !missing.is_empty() {
            return Err(JailUnavailable { missing });
        }
        Ok(Self {
            helper,
            state_dir,
            cgroups,
            network: Network::None,
        })
    }
}

/// The native jail cannot run on this host; each entry names a capability and why.
#[derive(Debug, thiserror::Error)]
#[error("the native jail cannot run on this host:{}", .missing.iter().map(|m| format!("\n  - {m}")).collect::<String>())]
pub struct JailUnavailable {
    /// One line per missing capability.
    pub missing: Vec<String>,
}

/// Runs `lamina-bootstrap --check`, which tries namespaces, mounts and seccomp for real in
/// throwaway children, and returns what it found missing.
fn check_with(helper: &Path) -> Vec<String> {
    let output = match std::process::Command::new(helper)
        .arg("--check")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(output) => output,
        Err(e) => return vec![format!("running {} --check: {e}", helper.display())],
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut missing: Vec<String> = text
        .lines()
        .filter_map(lamina_bootstrap::check::Finding::parse)
        .filter_map(|(feature, problem)| problem.map(|p| format!("{feature}: {p}")))
        .collect();
    if missing.is_empty() && !output.status.success() {
        missing.push(format!(
            "{} --check failed ({}) without saying why",
            helper.display(),
            output.status
        ));
    }
    missing
}

impl JailSandbox {
    /// The same jail in the host's network namespace (`--network host`), for functions that
    /// need egress. Its Runtime API then listens on the host's loopback.
    pub fn with_host_network(mut self) -> Self {
        self.network = Network::Host;
        self
    }
}

impl Sandbox for JailSandbox {
    fn name(&self) -> &'static str {
        "jail"
    }

    fn runtime_api_inside(&self) -> Option<std::net::SocketAddr> {
        match self.network {
            Network::None => lamina_bootstrap::jail::network::RUNTIME_API_ADDR
                .parse()
                .ok(),
            Network::Host => None,
        }
    }

    fn start(&self, start: StartSpec<'_>) -> Result<Started, Failure> {
        let spec = start.spec;
        let host_bootstrap = find_bootstrap(spec)?;
        let bootstrap = if host_bootstrap.starts_with(&spec.code_dir) {
            "/var/task/bootstrap"
        } else {
            "/opt/bootstrap"
        };
        let host_failure =
            |what: &str, e: &dyn std::fmt::Display| Failure::Sandbox(format!("{what}: {e}"));
        let paths = Paths {
            task_root: "/var/task".into(),
            runtime_dir: "/var/runtime".into(),
        };
        let env = lambda_env::environment(
            spec,
            &start.runtime_api.to_string(),
            start.log_stream,
            &paths,
        );
        // Prefixed with the host's pid: each lamina process (and each test binary) can tell its
        // own sandboxes' cgroups and directories from those of others on the machine.
        let name = format!("{}-{}", std::process::id(), start.env_id);
        let root = self.state_dir.join(&name);
        std::fs::create_dir_all(&root).map_err(|e| host_failure("creating the jail root", &e))?;
        let cgroups = match self.cgroups {
            Some(version) => Some(
                Cgroups::create(version, &name, spec.memory_mb)
                    .map_err(|e| host_failure("creating the environment's cgroups", &e))?,
            ),
            None => None,
        };
        let jail = JailSpec {
            version: lamina_bootstrap::spec::SPEC_VERSION,
            root: root.clone(),
            code_dir: spec.code_dir.clone(),
            opt: spec
                .opt
                .as_ref()
                .map(|o| OptMount::Merged(o.merged.clone())),
            tmp_bytes: u64::from(spec.ephemeral_storage_mb) * 1024 * 1024,
            uid: SANDBOX_UID,
            gid: SANDBOX_GID,
            hostname: "lamina".into(),
            env,
            bootstrap: bootstrap.into(),
            cgroups: cgroups
                .as_ref()
                .map(|c| c.sandbox_dirs.clone())
                .unwrap_or_default(),
            function_cgroups: cgroups
                .as_ref()
                .map(|c| c.function_dirs.clone())
                .unwrap_or_default(),
            network: self.network,
        };
        let spec_json =
            serde_json::to_vec(&jail).map_err(|e| host_failure("encoding the jail spec", &e))?;
        let (reader, writer, writer2) = super::log_pipe()?;
        // The helper's stdin is one end of a socket pair: the spec goes in, and in network mode
        // `none` the Runtime API listener comes back (SCM_RIGHTS).
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| host_failure("creating the control socket", &e))?;
        let mut command = super::base_command(&self.helper, writer, writer2);
        command.stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
        let mut child = command
            .spawn()
            .map_err(|e| host_failure(&format!("starting {}", self.helper.display()), &e))?;
        drop(command);
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| Failure::Sandbox("the jail exited before it could be tracked".into()))?;
        ours.set_nonblocking(true)
            .map_err(|e| host_failure("preparing the control socket", &e))?;
        let mut control = tokio::net::UnixStream::from_std(ours)
            .map_err(|e| host_failure("preparing the control socket", &e))?;
        let (listener_tx, listener_rx) = oneshot::channel();
        let expects_listener = self.network == Network::None;
        let reaped = Arc::new(AtomicBool::new(false));
        let (exit_tx, exited) = oneshot::channel();
        let reaped_flag = Arc::clone(&reaped);
        let (reset_tx, mut resets) =
            tokio::sync::mpsc::unbounded_channel::<oneshot::Sender<std::io::Result<()>>>();
        let reset_tmp = spec.tmp_per_invocation.then_some(reset_tx);
        let sandbox_procs = cgroups
            .as_ref()
            .and_then(|c| c.sandbox_dirs.first())
            .map(|dir| dir.join("cgroup.procs"));
        tokio::spawn(async move {
            // The spec, length-prefixed; the socket then stays open as the control channel.
            let length = u32::try_from(spec_json.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes();
            let written = match control.write_all(&length).await {
                Ok(()) => control.write_all(&spec_json).await,
                Err(e) => Err(e),
            };
            if expects_listener {
                let listener = match written {
                    Ok(()) => receive_listener(&control).await,
                    Err(e) => Err(e),
                };
                let _ = listener_tx.send(listener);
            }
            // Serve /tmp resets until the sandbox ends.
            let waited = loop {
                tokio::select! {
                    request = resets.recv() => match request {
                        Some(ack) => {
                            let _ = ack.send(reset_tmp_over(&mut control).await);
                        }
                        None => break child.wait().await,
                    },
                    status = child.wait() => break status,
                }
            };
            // The helper is reaped; when it was killed rather than exiting after PID 1, the
            // kernel may still be tearing down the PID namespace. The sandbox has ended once
            // its process cgroup is empty.
            if let Some(procs) = &sandbox_procs {
                settle(procs).await;
            }
            let status = super::exit_status_of(waited);
            reaped_flag.store(true, Ordering::Release);
            let _ = exit_tx.send(status);
        });
        Ok(Started {
            control: Box::new(JailControl {
                pid,
                reaped,
                root,
                cgroups,
            }),
            exited,
            logs: reader.into(),
            listener: expects_listener.then_some(listener_rx),
            reset_tmp,
        })
    }
}

/// Waits (boundedly: a process stuck in the kernel must not hold the environment forever)
/// until no process is left in the cgroup whose `cgroup.procs` is `procs`.
async fn settle(procs: &Path) {
    for _ in 0..5_000 {
        match tokio::fs::read(procs).await {
            Ok(pids) if !pids.is_empty() => {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            _ => return,
        }
    }
    tracing::warn!(cgroup = %procs.display(), "processes still in the sandbox's cgroup after 5 s");
}

/// Asks PID 1 for a fresh `/tmp` (command `T`) and waits for its one-byte answer.
async fn reset_tmp_over(control: &mut tokio::net::UnixStream) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    control.write_all(b"T").await?;
    let mut answer = [0u8; 1];
    control.read_exact(&mut answer).await?;
    match &answer {
        b"K" => Ok(()),
        _ => Err(std::io::Error::other(
            "the jail could not make a fresh /tmp",
        )),
    }
}

/// Receives the listening socket the helper made inside the sandbox's network namespace.
async fn receive_listener(
    control: &tokio::net::UnixStream,
) -> std::io::Result<std::net::TcpListener> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    loop {
        control.readable().await?;
        let received = control.try_io(tokio::io::Interest::READABLE, || {
            let mut byte = [0u8; 1];
            let mut iov = [std::io::IoSliceMut::new(&mut byte)];
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let message = recvmsg::<()>(
                control.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            let fd = message
                .cmsgs()
                .map_err(std::io::Error::from)?
                .find_map(|c| match c {
                    ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                    _ => None,
                });
            Ok(fd)
        });
        match received {
            Ok(Some(fd)) => {
                // SAFETY: SCM_RIGHTS gave us a new descriptor that nothing else owns.
                return Ok(unsafe { std::net::TcpListener::from_raw_fd(fd) });
            }
            Ok(None) => {
                return Err(std::io::Error::other(
                    "the jail closed its control socket without a listener",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug)]
struct JailControl {
    pid: i32,
    reaped: Arc<AtomicBool>,
    root: PathBuf,
    cgroups: Option<Cgroups>,
}

impl Control for JailControl {
    fn stop(&self, how: Stop) {
        // The helper, PID 1 and the function share this process group. PID 1 dies with the
        // helper, and every process of the sandbox with PID 1, so once the helper is reaped
        // nothing is left, and the group id may belong to someone else: leave it alone.
        if !self.reaped.load(Ordering::Acquire) {
            super::signal_group(self.pid, how);
        }
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        self.cgroups.as_ref().and_then(Cgroups::max_memory_bytes)
    }

    fn out_of_memory(&self) -> bool {
        self.cgroups.as_ref().is_some_and(Cgroups::oom_killed)
    }
}

impl Drop for JailControl {
    fn drop(&mut self) {
        // The mounts lived in the sandbox's mount namespace and went with it; the mount point
        // directory is all that is left on the host.
        let _ = std::fs::remove_dir(&self.root);
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove();
        }
    }
}
