//! The native jail backend: each environment's processes run under the sandbox helper
//! (`lamina __sandbox`, [`Helper`]), which builds the jail (namespaces, a minimal read-only
//! root, an unprivileged user, seccomp) and execs the function's bootstrap inside it. The host only forks and execs the helper, never
//! enters namespaces itself: the tokio process is multi-threaded.
//!
//! Scope: one `JailSandbox` per runtime; each environment gets a root mount point under the
//! state directory, removed when the environment is dropped.
//!
//! Root or rootless is decided here, once: without root every sandbox gets a user namespace
//! of its own (`lamina_bootstrap::jail`), and what root would hold with cgroups, a delegated
//! v2 group or else the watchdog and `RLIMIT_NPROC` hold.
//!
//! Rooms: [`helper`] the program that builds a jail and its check, [`shell`] a sandbox built
//! ahead and its traces on the host, [`control`] a running sandbox's control socket and
//! `/tmp`, [`state`] the jail's directories, [`limits`] the memory limit behind one trait, with
//! [`cgroup`] (v1, v2, delegated) and [`watchdog`] (no cgroup) as its implementations,
//! [`network`] network mode `outbound`, [`uids`] uid leases.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use lamina_bootstrap::{FunctionSpec, IdMap, Network, OptMount};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

pub mod cgroup;
mod control;
mod helper;
mod limits;
pub mod network;
mod shell;
mod state;
pub mod uids;
mod watchdog;

pub use helper::Helper;

use control::{JailCommand, JailControl, JailTmp, Reports, receive_listener};
use lamina_bootstrap::control::{Command, Report};
use std::os::fd::OwnedFd;

use helper::check_cached;
use helper::host_failure;
use shell::{Shell, ShellConfig};
use state::StateDirs;
use uids::UidLease;

use super::{
    ApiPlacement, Control, ExtensionEnd, Sandbox, StartSpec, Started, Stop, find_bootstrap,
};
use crate::config::lambda_env::{self, Paths};
use crate::error::Failure;

/// Lambda's sandbox user (`sbx_user1051`), shared by every jail with a network namespace of its
/// own; in network mode `host` each jail gets a uid of its own instead ([`UidLease`]).
const SANDBOX_UID: u32 = 993;
const SANDBOX_GID: u32 = 990;

/// Runs bootstraps inside the native jail.
#[derive(Debug)]
pub struct JailSandbox {
    helper: Helper,
    dirs: StateDirs,
    cgroups: Option<cgroup::Place>,
    network: Network,
    /// Rootless: each sandbox gets a user namespace, in which this host user is its uid.
    rootless: Option<IdMap>,
    /// slirp4netns, found when network mode `outbound` was chosen.
    slirp: Option<std::path::PathBuf>,
    /// Sandboxes built up to the function's own mounts, waiting to be used.
    ready: Arc<(std::sync::Mutex<Ready>, std::sync::Condvar)>,
    /// How many to keep ready (refilled in the background as environments take them).
    keep_ready: usize,
    /// Shells being built in the background now.
    building: Arc<std::sync::atomic::AtomicUsize>,
}

impl JailSandbox {
    /// Checks that this host lets `helper` build the jail (every missing capability is
    /// listed, not just the first), and prepares the state directory.
    pub fn new(helper: Helper) -> Result<Self, JailUnavailable> {
        let dirs = StateDirs::open();
        let mut missing = check_cached(&helper, dirs.as_ref().ok().map(|d| d.jails.as_ref()));
        let rootless = Self::rootless_ids();
        let cgroups = cgroup::place(rootless.is_some());
        match (&cgroups, rootless) {
            (Some(place), _) => {
                if let Err(e) = cgroup::prepare(place) {
                    missing.push(format!("cgroups: {e}"));
                }
                for note in cgroup::sweep_dead(place) {
                    tracing::warn!("cleaning up after lamina processes that are gone: {note}");
                }
            }
            // Without a delegated cgroup: memory is held by the watchdog, processes by
            // RLIMIT_NPROC.
            (None, Some(_)) => tracing::warn!("{}", ROOTLESS_LIMITS),
            (None, None) => missing.push(
                "cgroups: neither cgroup v2 with the memory and pids controllers nor cgroup v1 \
                 memory and pids hierarchies are mounted under /sys/fs/cgroup, so memory and \
                 process limits cannot be enforced"
                    .into(),
            ),
        }
        let dirs = match dirs {
            Ok(dirs) => Some(dirs),
            Err(e) => {
                missing.push(format!("run directory: {e}"));
                None
            }
        };
        let (Some(dirs), true) = (dirs, missing.is_empty()) else {
            return Err(JailUnavailable { missing });
        };
        Ok(Self {
            helper,
            dirs,
            cgroups,
            network: Network::None,
            rootless,
            slirp: None,
            ready: Arc::default(),
            keep_ready: 0,
            building: Arc::default(),
        })
    }
}

/// What a rootless jail without a delegated cgroup holds, and how: said once at start-up.
pub const ROOTLESS_LIMITS: &str = "rootless jail: no cgroup is delegated to this user, so \
    lamina's watchdog enforces the memory limit (it samples the sandbox's memory and kills it \
    past the limit, reported as Runtime.OutOfMemory), RLIMIT_NPROC caps processes at 1,024, and \
    CPU shares are not enforced; for cgroup limits, start lamina in a delegated cgroup v2 group \
    (systemd-run --user --scope -p Delegate=yes lamina …) or as root";

impl JailSandbox {
    /// The host ids of a rootless jail: `None` under root.
    fn rootless_ids() -> Option<IdMap> {
        let uid = nix::unistd::Uid::effective();
        (!uid.is_root()).then(|| IdMap {
            outside_uid: uid.as_raw(),
            outside_gid: nix::unistd::Gid::effective().as_raw(),
        })
    }

    /// Whether this jail runs without root, in user namespaces.
    pub fn is_rootless(&self) -> bool {
        self.rootless.is_some()
    }

    /// Where the environments' cgroups go; `None` when there are none (rootless, nothing
    /// delegated: the watchdog and RLIMIT_NPROC hold the limits).
    pub fn cgroups(&self) -> Option<&cgroup::Place> {
        self.cgroups.as_ref()
    }
}

/// The native jail cannot run on this host; each entry names a capability and why.
#[derive(Debug, thiserror::Error)]
#[error("the native jail cannot run on this host:{}", .missing.iter().map(|m| format!("\n  - {m}")).collect::<String>())]
pub struct JailUnavailable {
    /// One line per missing capability.
    pub missing: Vec<String>,
}

impl JailSandbox {
    /// The same jail in the host's network namespace (`--network host`), for functions that
    /// need egress. Its Runtime API then listens on the host's loopback.
    pub fn with_host_network(mut self) -> Self {
        self.network = Network::Host;
        self
    }

    /// Outbound access from the sandbox's own network namespace (`--network outbound`,
    /// [`network`]), through `slirp4netns` (as [`network::find`] found it).
    pub fn with_outbound_network(mut self, slirp4netns: std::path::PathBuf) -> Self {
        self.network = Network::Outbound;
        self.slirp = Some(slirp4netns);
        self
    }

    /// Keeps `count` sandboxes built ahead, up to the function's own mounts, and builds more in
    /// the background as environments take them: a cold start then skips the cgroup moves and
    /// namespace creation, which on cgroup v1 can each cost milliseconds. Call within a tokio
    /// runtime (elsewhere nothing is built ahead).
    pub fn with_ready(mut self, count: usize) -> Self {
        self.keep_ready = count;
        self.refill();
        self
    }

    /// Builds one sandbox ahead now, without keeping any ready later: for `lamina invoke`,
    /// whose one environment starts once the function's archives are extracted.
    pub fn prepare_one(&self) {
        self.build_in_background(std::time::Duration::ZERO);
    }

    fn refill(&self) {
        let pending = self.ready_len() + self.building.load(Ordering::Acquire);
        for _ in pending..self.keep_ready {
            self.build_in_background(REFILL_DELAY);
        }
    }

    /// Waits (boundedly) for a sandbox being built ahead rather than building a second one:
    /// `lamina invoke` asks for its sandbox while the one it prepared is still being built.
    fn wait_for_ready(&self) -> Option<Shell> {
        let deadline = std::time::Instant::now() + READY_WAIT;
        let mut ready = self.ready.0.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(shell) = ready.shells.pop() {
                return Some(shell);
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            if self.building.load(Ordering::Acquire) == 0 {
                return None;
            }
            ready = self
                .ready
                .1
                .wait_timeout(ready, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn ready_len(&self) -> usize {
        self.ready
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shells
            .len()
    }

    /// Builds a sandbox on a blocking thread, after `delay`: a refill waits a moment so that
    /// it does not compete for the CPU with the cold start that just took a sandbox.
    fn build_in_background(&self, delay: std::time::Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let config = self.shell_config();
        let ready = Arc::clone(&self.ready);
        let building = Arc::clone(&self.building);
        building.fetch_add(1, Ordering::AcqRel);
        // Forking a large process and writing cgroup files block: a blocking thread does it,
        // and hands the sandbox over itself, so a taker waiting on the condition variable
        // never depends on an async worker being free.
        runtime.spawn_blocking(move || {
            std::thread::sleep(delay);
            let (lock, available) = &*ready;
            // Closed while this waited (lamina is exiting): nothing will take it.
            let closed = lock.lock().unwrap_or_else(|p| p.into_inner()).closed;
            let shell = match closed {
                true => Err(Failure::Sandbox("closed".into())),
                false => config.build(),
            };
            let mut ready = lock.lock().unwrap_or_else(|p| p.into_inner());
            building.fetch_sub(1, Ordering::AcqRel);
            match shell {
                // The sandbox backend went away while this one was being built.
                Ok(shell) if ready.closed => {
                    drop(ready);
                    shell.discard();
                }
                Ok(shell) => ready.shells.push(shell),
                // lamina is exiting (closed before, or while, this was built): nothing wants
                // this sandbox any more, and an orderly exit prints nothing.
                Err(_) if ready.closed => {}
                Err(e) => tracing::warn!("building a sandbox ahead: {e:?}"),
            }
            available.notify_all();
        });
    }

    fn shell_config(&self) -> ShellConfig {
        ShellConfig {
            helper: self.helper.clone(),
            dirs: self.dirs.clone(),
            cgroups: self.cgroups.clone(),
            network: self.network,
            rootless: self.rootless,
            slirp: self.slirp.clone(),
        }
    }

    /// A sandbox built ahead, or one built now.
    fn take_shell(&self) -> Result<Shell, Failure> {
        let shell = match self.wait_for_ready() {
            Some(shell) => shell,
            None => self.shell_config().build()?,
        };
        self.refill();
        Ok(shell)
    }
}

/// How long taking a sandbox waits for one being built ahead (rather than building a second).
/// Bounded only against a stuck build: one being built always finishes before a new one would.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a refill waits before building (see `build_in_background`).
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

impl Drop for JailSandbox {
    fn drop(&mut self) {
        // Unused sandboxes: closing their control sockets ends them (PID 1 reads EOF where the
        // function's spec would be); then their cgroups and directories go.
        let shells = {
            let mut ready = self.ready.0.lock().unwrap_or_else(|p| p.into_inner());
            ready.closed = true;
            std::mem::take(&mut ready.shells)
        };
        for shell in shells {
            shell.discard();
        }
    }
}

/// The sandboxes built ahead; `closed` once the backend is dropped, after which one that
/// finishes building is discarded instead of kept.
#[derive(Debug, Default)]
struct Ready {
    shells: Vec<Shell>,
    closed: bool,
}

impl Sandbox for JailSandbox {
    fn name(&self) -> &'static str {
        "jail"
    }

    fn runtime_api(&self) -> ApiPlacement {
        match self.network {
            Network::None | Network::Outbound => {
                ApiPlacement::Inside(lamina_bootstrap::jail::network::RUNTIME_API_ADDR)
            }
            Network::Host => ApiPlacement::HostLoopback,
        }
    }

    fn start(&self, start: StartSpec<'_>) -> Result<Started, Failure> {
        let spec = start.spec;
        // A managed runtime's bootstrap is its interpreter, with the client and handler as
        // arguments; otherwise the function's (or a layer's) own.
        let seen = spec.managed.as_ref().map(|m| m.seen_in_jail());
        let (host_bootstrap, bootstrap) = match (&spec.managed, &seen) {
            (Some(managed), Some(seen)) => (
                managed.interpreter.executable.clone(),
                seen.interpreter.clone(),
            ),
            _ => {
                let host = find_bootstrap(spec)?;
                let inside = match host.starts_with(&spec.code_dir) {
                    true => "/var/task/bootstrap",
                    false => "/opt/bootstrap",
                };
                (host, inside.to_owned())
            }
        };
        sandbox_user_may_run(
            &spec.code_dir,
            &host_bootstrap,
            &bootstrap,
            self.rootless.is_some(),
        )?;
        let args = match (&spec.managed, &seen) {
            (Some(managed), Some(seen)) => managed.args(seen, &spec.handler),
            _ => Vec::new(),
        };
        let paths = Paths {
            task_root: "/var/task".into(),
            runtime_dir: "/var/runtime".into(),
            managed: seen,
        };
        let env = lambda_env::environment(
            spec,
            &start.tcp_api()?.to_string(),
            start.log_stream,
            &paths,
        );
        // External extensions: PID 1 starts them before the runtime, writing to a pipe of
        // their own.
        let extension_names: Vec<String> = spec
            .extensions
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        let extension_env = match extension_names.is_empty() {
            true => Vec::new(),
            false => lambda_env::extension_environment(&env),
        };
        let extension_pipe = match extension_names.is_empty() {
            true => None,
            false => Some(
                std::io::pipe()
                    .map_err(|e| host_failure("creating the extensions' log pipe", e))?,
            ),
        };
        let function = FunctionSpec {
            code_dir: spec.code_dir.clone(),
            opt: spec
                .opt
                .as_ref()
                .map(|o| OptMount::Merged(o.merged.clone())),
            tmp_bytes: u64::from(spec.ephemeral_storage_mb) * 1024 * 1024,
            env,
            bootstrap,
            args,
            runtime_dir: spec.managed.as_ref().map(|m| m.runtime_dir.clone()),
            lang_dir: spec
                .managed
                .as_ref()
                .and_then(|m| m.lang_mount())
                .map(Path::to_owned),
            extensions: extension_names
                .iter()
                .map(|n| format!("/opt/extensions/{n}"))
                .collect(),
            extension_env,
        };
        let function_json =
            serde_json::to_vec(&function).map_err(|e| host_failure("encoding the jail spec", e))?;
        let Shell {
            mut child,
            pid,
            control,
            logs,
            mut traces,
        } = self.take_shell()?;
        let network_ready = traces.network.as_mut().and_then(|n| n.take_ready());
        let (commands_tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<JailCommand>();
        // From here on the sandbox is this environment's: dropping its control removes it.
        let jail_control = JailControl {
            pid,
            reaped: Arc::default(),
            traces,
            commands: commands_tx.clone(),
            extensions: extension_names.clone(),
            host_network: self.network == Network::Host,
        };
        let cgroups = jail_control.traces.cgroups.as_ref();
        // Rootless in the host's network namespace, the sandbox's sockets are this user's.
        let runtime_api_peer_uid = match (self.network, self.rootless) {
            (Network::Host, Some(ids)) => Some(ids.outside_uid),
            _ => jail_control.traces.uid.as_ref().map(UidLease::uid),
        };
        let sandbox_procs = cgroups
            .and_then(|c| c.sandbox_dirs.first())
            .map(|dir| dir.join("cgroup.procs"));
        let prepared = (jail_control.traces.limits())
            .map_or(Ok(()), |l| l.set_memory(spec.memory_mb))
            .map_err(|e| host_failure("setting the environment's limits", e))
            .and_then(|()| {
                control
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::UnixStream::from_std(control))
                    .map_err(|e| host_failure("preparing the control socket", e))
            });
        let mut control = match prepared {
            Ok(control) => control,
            Err(failure) => {
                jail_control.stop(Stop::Kill);
                return Err(failure);
            }
        };
        let reaped_flag = Arc::clone(&jail_control.reaped);
        let (listener_tx, listener_rx) = oneshot::channel();
        let expects_listener = self.network != Network::Host;
        let (exit_tx, exited) = oneshot::channel();
        let reset_tmp = spec.tmp_per_invocation.then(|| {
            Box::new(JailTmp {
                helper: pid,
                seen_from_host: None,
                commands: commands_tx.clone(),
            }) as Box<dyn super::ResetTmp>
        });
        drop(commands_tx);
        let (extension_log, extension_logs) = match extension_pipe {
            Some((reader, writer)) => (Some(OwnedFd::from(writer)), Some(OwnedFd::from(reader))),
            None => (None, None),
        };
        let (extension_tx, extension_exits) = tokio::sync::mpsc::unbounded_channel();
        let names = extension_names.clone();
        tokio::spawn(async move {
            // The listener was sent while the shell was built; the function's half of the spec
            // follows on the socket, which then stays open as the control channel.
            let mut listener = if expects_listener {
                Some(receive_listener(&control).await)
            } else {
                None
            };
            // Outbound: the function starts once its network is up.
            if let Some(ready) = network_ready
                && let Err(e) = network::wait_ready(ready).await
            {
                listener = Some(Err(e));
            }
            let listener = match listener {
                // Without its network the function is never started: the environment fails.
                Some(Err(e)) => {
                    let _ = listener_tx.send(Err(e));
                    let status = super::exit_status_of(child.wait().await);
                    reaped_flag.store(true, Ordering::Release);
                    let _ = exit_tx.send(status);
                    return;
                }
                other => other,
            };
            let written = match control::send_header(&control, extension_log.as_ref()).await {
                Ok(()) => {
                    control
                        .write_all(&lamina_bootstrap::spec::frame(&function_json))
                        .await
                }
                Err(e) => Err(e),
            };
            // PID 1 has its copy of the extensions' pipe.
            drop(extension_log);
            if let Some(listener) = listener {
                let _ = listener_tx.send(written.and(listener));
            }
            // Without a cgroup to watch empty (rootless), the sandbox has ended once its PID 1
            // has: the kernel ends every other process of a PID namespace before its first.
            let pid1 = match &sandbox_procs {
                Some(_) => None,
                None => control::pid1_handle(pid).await,
            };
            // Serve the environment's commands and PID 1's reports until the sandbox ends.
            let mut exit_tx = Some(exit_tx);
            let mut reports = Reports::default();
            let mut resets = std::collections::VecDeque::new();
            let mut connects = std::collections::VecDeque::new();
            let waited = loop {
                tokio::select! {
                    command = commands.recv() => {
                        let Some(command) = command else { break child.wait().await };
                        let bytes = match command {
                            JailCommand::ResetTmp(ack) => {
                                resets.push_back(ack);
                                Command::ResetTmp
                            }
                            JailCommand::Connect(port, ack) => {
                                connects.push_back(ack);
                                Command::Connect(port)
                            }
                            JailCommand::SignalRuntime(how) => Command::SignalRuntime(match how {
                                Stop::Terminate => 15,
                                Stop::Kill => 9,
                            }),
                            JailCommand::ReleaseRuntime => Command::ReleaseRuntime,
                            JailCommand::KillExtension(index) => Command::KillExtension(index),
                        }
                        .encode();
                        if let Err(e) = control::send(&control, &bytes).await {
                            tracing::debug!("the jail's control socket: {e}");
                        }
                    }
                    report = reports.next(&control) => match report {
                        Ok((Report::TmpReset(ok), _)) => {
                            if let Some(ack) = resets.pop_front() {
                                let _ = ack.send(match ok {
                                    true => Ok(()),
                                    false => Err(std::io::Error::other("the jail could not make a fresh /tmp")),
                                });
                            }
                        }
                        Ok((Report::Connected, fd)) => {
                            if let Some(ack) = connects.pop_front() {
                                let _ = ack.send(fd.map(std::net::TcpStream::from).ok_or_else(|| {
                                    std::io::Error::other("the jail sent no connection")
                                }));
                            }
                        }
                        Ok((Report::ConnectFailed(errno), _)) => {
                            if let Some(ack) = connects.pop_front() {
                                let _ = ack.send(Err(std::io::Error::from_raw_os_error(errno)));
                            }
                        }
                        Ok((Report::ExtensionLaunchFailed { index, errno }, _)) => {
                            if let Some(name) = names.get(usize::from(index)) {
                                let reason = super::process::go_style_reason(&std::io::Error::from_raw_os_error(errno));
                                let _ = extension_tx.send((name.clone(), ExtensionEnd::LaunchFailed(reason)));
                            }
                        }
                        Ok((Report::ExtensionExited { index, status }, _)) => {
                            if let Some(name) = names.get(usize::from(index)) {
                                let _ = extension_tx.send((name.clone(), ExtensionEnd::Exited(exit_status(status))));
                            }
                        }
                        Ok((Report::RuntimeExited(status), _)) => {
                            if let Some(tx) = exit_tx.take() {
                                let _ = tx.send(exit_status(status));
                            }
                        }
                        Err(e) => {
                            tracing::warn!("the jail's control socket: {e}");
                            break child.wait().await;
                        }
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
            if let Some(pid1) = pid1 {
                control::wait_exit(pid1).await;
            }
            let status = super::exit_status_of(waited);
            reaped_flag.store(true, Ordering::Release);
            if let Some(tx) = exit_tx.take() {
                let _ = tx.send(status);
            }
        });
        let extensions = match extension_names.is_empty() {
            true => super::Extensions::default(),
            false => super::Extensions {
                launched: extension_names,
                failed: Vec::new(),
                exits: Some(extension_exits),
            },
        };
        Ok(Started {
            control: Box::new(jail_control),
            exited,
            logs: Some(logs.into()),
            listener: expects_listener.then_some(listener_rx),
            reset_tmp,
            runtime_api_peer_uid,
            extensions,
            extension_logs,
        })
    }
}

/// A status PID 1 reported, as the environment reads one.
fn exit_status(status: lamina_bootstrap::control::Status) -> crate::error::ExitStatus {
    match status {
        lamina_bootstrap::control::Status::Code(code) => crate::error::ExitStatus::Code(code),
        lamina_bootstrap::control::Status::Signal(signal) => {
            crate::error::ExitStatus::Signal(signal)
        }
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

/// Whether the sandbox's user (unprivileged, neither owner nor group of the host's files) may
/// enter the code directory and run the bootstrap. Checked on the host, so that the error names
/// the host path and its mode: inside the jail it would be a bare "Permission denied" from
/// PID 1's `chdir` and an exit status. (A zip's tree is extracted readable; a directory is
/// mounted as it is.)
///
/// Rootless, the sandbox's user is lamina's own user (with its groups), so the question is
/// whether this process may: `access(2)` answers it.
fn sandbox_user_may_run(
    code_dir: &Path,
    host_bootstrap: &Path,
    bootstrap: &str,
    rootless: bool,
) -> Result<(), Failure> {
    use nix::unistd::{AccessFlags, access};
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).map_or(0o777, |m| m.permissions().mode() & 0o7777);
    let (who, example) = match rootless {
        false => (
            "an unprivileged user, which needs",
            " (for example chmod 755)",
        ),
        true => ("you, who need", ""),
    };
    let denied = |what: &Path, needs: &str| Failure::BootstrapNotExecutable {
        path: bootstrap.to_owned(),
        reason: format!(
            "permission denied: {} is mode {:04o}, and the jail runs the function as {who} {needs}{example}",
            what.display(),
            mode(what)
        ),
    };
    let (dir_ok, file_ok) = match rootless {
        false => (
            mode(code_dir) & 0o005 == 0o005,
            mode(host_bootstrap) & 0o001 != 0,
        ),
        true => (
            access(code_dir, AccessFlags::R_OK | AccessFlags::X_OK).is_ok(),
            access(host_bootstrap, AccessFlags::X_OK).is_ok(),
        ),
    };
    if !dir_ok {
        let needs = if rootless {
            "read and search permission"
        } else {
            "others' read and search permission"
        };
        return Err(denied(code_dir, needs));
    }
    if !file_ok {
        let needs = if rootless {
            "execute permission"
        } else {
            "others' execute permission"
        };
        return Err(denied(host_bootstrap, needs));
    }
    Ok(())
}
