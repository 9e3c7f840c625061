//! The native jail backend: each environment's processes run under the sandbox helper
//! (`lamina __sandbox`, [`Helper`]), which builds the jail (namespaces, a minimal read-only
//! root, an unprivileged user, seccomp) and execs the function's bootstrap inside it. The host only forks and execs the helper, never
//! enters namespaces itself: the tokio process is multi-threaded.
//!
//! Scope: one `JailSandbox` per runtime; each environment gets a root mount point under the
//! state directory, removed when the environment is dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lamina_bootstrap::{FunctionSpec, Network, OptMount, ShellSpec};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::cgroup::{self, Cgroups};
use super::uids::UidLease;
use super::{ApiPlacement, Control, Sandbox, StartSpec, Started, Stop, find_bootstrap};
use crate::config::lambda_env::{self, Paths};
use crate::error::Failure;
use crate::run_dir::RunDir;

/// Lambda's sandbox user (`sbx_user1051`), shared by every jail with a network namespace of its
/// own; in network mode `host` each jail gets a uid of its own instead ([`UidLease`]).
const SANDBOX_UID: u32 = 993;
const SANDBOX_GID: u32 = 990;

/// Runs bootstraps inside the native jail.
#[derive(Debug)]
pub struct JailSandbox {
    helper: Helper,
    dirs: StateDirs,
    cgroups: Option<cgroup::Version>,
    network: Network,
    /// Sandboxes built up to the function's own mounts, waiting to be used.
    ready: Arc<(std::sync::Mutex<Ready>, std::sync::Condvar)>,
    /// How many to keep ready (refilled in the background as environments take them).
    keep_ready: usize,
    /// Shells being built in the background now.
    building: Arc<std::sync::atomic::AtomicUsize>,
}

/// The program that builds each sandbox: a `lamina` binary, started as `lamina __sandbox`
/// (`lamina_bootstrap::entry`). The helper is part of lamina itself, so nothing beside the
/// binary has to be found, built or installed.
#[derive(Debug, Clone)]
pub struct Helper {
    program: PathBuf,
    /// What messages call it.
    shown: String,
}

impl Helper {
    /// The running executable, which must be `lamina` (the CLI's choice). Started through
    /// `/proc/self/exe`, so a binary replaced on disk while lamina runs (a rebuild) still
    /// starts the helper that matches this host.
    pub fn this_executable() -> Helper {
        let shown = std::env::current_exe()
            .map_or_else(|_| "lamina".to_owned(), |p| p.display().to_string());
        Helper {
            program: PathBuf::from("/proc/self/exe"),
            shown,
        }
    }

    /// The `lamina` binary at `path`: for programs that run the host as a library (tests,
    /// benchmarks), whose own executable is not lamina.
    pub fn lamina_at(path: impl Into<PathBuf>) -> Helper {
        let program = path.into();
        Helper {
            shown: program.display().to_string(),
            program,
        }
    }

    fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.arg(lamina_bootstrap::entry::HELPER_ARG);
        command
    }
}

impl std::fmt::Display for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.shown, lamina_bootstrap::entry::HELPER_ARG)
    }
}

impl JailSandbox {
    /// Checks that this host lets `helper` build the jail (every missing capability is
    /// listed, not just the first), and prepares the state directory.
    pub fn new(helper: Helper) -> Result<Self, JailUnavailable> {
        let mut missing = check_with(&helper);
        let cgroups = cgroup::detect();
        match cgroups {
            Some(version) => {
                if let Err(e) = cgroup::prepare(version) {
                    missing.push(format!("cgroups: {e}"));
                }
                for note in cgroup::sweep_dead(version) {
                    tracing::warn!("cleaning up after lamina processes that are gone: {note}");
                }
            }
            None => missing.push(
                "cgroups: neither cgroup v2 with the memory and pids controllers nor cgroup v1 \
                 memory and pids hierarchies are mounted under /sys/fs/cgroup, so memory and \
                 process limits cannot be enforced"
                    .into(),
            ),
        }
        let dirs = RunDir::open_default().and_then(|run| {
            let jails = run.subdir("jails")?;
            // The roots' mounts lived in the sandboxes' own mount namespaces: a dead lamina's
            // roots are empty directories, and nothing is unmounted here.
            for note in jails.sweep_dead(None) {
                tracing::warn!("cleaning up after lamina processes that are gone: {note}");
            }
            // The uid leases must be one set for every lamina on the host, whatever run
            // directory each was given: two sets could hand one uid to two sandboxes.
            let uids = match RunDir::open(Path::new(UID_LEASES)) {
                Ok(dir) => dir,
                Err(e) if !nix::unistd::Uid::effective().is_root() => {
                    // Network mode `host` (the only user of leases) needs root anyway.
                    tracing::debug!("uid leases: {e}");
                    run.subdir("uids")?
                }
                Err(e) => return Err(e),
            };
            Ok(StateDirs {
                jails: Arc::new(jails),
                uids: Arc::new(uids),
            })
        });
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
            ready: Arc::default(),
            keep_ready: 0,
            building: Arc::default(),
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

/// Runs `lamina __sandbox --check`, which tries namespaces, mounts and seccomp for real in
/// throwaway children, and returns what it found missing.
fn check_with(helper: &Helper) -> Vec<String> {
    let output = match helper
        .command()
        .arg("--check")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(output) => output,
        Err(e) => return vec![format!("running {helper} --check: {e}")],
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut missing: Vec<String> = text
        .lines()
        .filter_map(lamina_bootstrap::check::Finding::parse)
        .filter_map(|(feature, problem)| problem.map(|p| format!("{feature}: {p}")))
        .collect();
    if missing.is_empty() && !output.status.success() {
        missing.push(format!(
            "{helper} --check failed ({}) without saying why",
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
            let shell = config.build();
            let (lock, available) = &*ready;
            let mut ready = lock.lock().unwrap_or_else(|p| p.into_inner());
            building.fetch_sub(1, Ordering::AcqRel);
            match shell {
                // The sandbox backend went away while this one was being built.
                Ok(shell) if ready.closed => {
                    drop(ready);
                    shell.discard();
                }
                Ok(shell) => ready.shells.push(shell),
                // lamina is exiting (the async runtime is shutting down under this build):
                // nothing wanted this sandbox any more, and an orderly exit prints nothing.
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
            cgroups: self.cgroups,
            network: self.network,
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

/// How long taking a sandbox waits for one being built ahead; building one costs about this.
const READY_WAIT: std::time::Duration = std::time::Duration::from_millis(30);
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

/// Where every root lamina on the host leases sandbox uids (see `uids`), whatever its run
/// directory.
const UID_LEASES: &str = "/run/lamina/uids";

/// The jail's directories in lamina's run directory ([`crate::run_dir`]).
#[derive(Debug, Clone)]
struct StateDirs {
    /// `jails/<pid>-<n>`: each sandbox's root mount point.
    jails: Arc<RunDir>,
    /// `uids/<uid>.lock`: the uid leases of network mode `host`, shared by every lamina.
    uids: Arc<RunDir>,
}

/// What building a [`Shell`] needs, detached from the sandbox so a blocking thread can own it.
#[derive(Debug)]
struct ShellConfig {
    helper: Helper,
    dirs: StateDirs,
    cgroups: Option<cgroup::Version>,
    network: Network,
}

/// A sandbox whose helper has the first half of the spec: it joins its cgroups, makes its
/// namespaces and its root up to the function's own mounts, and its function's process waits.
#[derive(Debug)]
struct Shell {
    child: tokio::process::Child,
    pid: i32,
    control: std::os::unix::net::UnixStream,
    logs: std::io::PipeReader,
    traces: HostTraces,
}

/// What a sandbox has on the host beside its processes: the root's mount point, its cgroups
/// and, in network mode `host`, its uid. Removed (released) when dropped, which must come after
/// its processes are gone. (The mounts lived in the sandbox's mount namespace and went with it.)
#[derive(Debug)]
struct HostTraces {
    /// The directory the root mount point is in, and its name there.
    jails: Arc<RunDir>,
    name: String,
    root: PathBuf,
    cgroups: Option<Cgroups>,
    uid: Option<UidLease>,
}

impl Drop for HostTraces {
    fn drop(&mut self) {
        let _ = self.jails.remove_entry(&self.name);
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove();
        }
    }
}

/// A host-side step of starting a sandbox failed.
fn host_failure(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Sandbox(format!("{what}: {e}"))
}

/// Distinguishes the sandboxes (and their cgroups and directories) of one lamina process.
static SHELL_SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl ShellConfig {
    fn build(&self) -> Result<Shell, Failure> {
        // Prefixed with the host's pid: each lamina process (and each test binary) can tell its
        // own sandboxes' cgroups and directories from those of others on the machine.
        let (name, root) = (self.dirs.jails)
            .make_own_entry(&SHELL_SEQUENCE)
            .map_err(|e| host_failure("creating the jail root", e))?;
        // From here on, an early return removes what was made.
        let mut traces = HostTraces {
            jails: Arc::clone(&self.dirs.jails),
            name: name.clone(),
            root,
            cgroups: None,
            uid: None,
        };
        if self.network == Network::Host {
            // On the host's loopback the Runtime API tells its sandbox by the uid (see
            // `runtime_api::peer`); in a private network namespace nobody else can connect.
            traces.uid = Some(
                UidLease::acquire(&self.dirs.uids)
                    .map_err(|e| host_failure("leasing the sandbox's uid", e))?,
            );
        }
        if let Some(version) = self.cgroups {
            traces.cgroups = Some(
                Cgroups::create(version, &name)
                    .map_err(|e| host_failure("creating the environment's cgroups", e))?,
            );
        }
        let cgroups = traces.cgroups.as_ref();
        let shell = ShellSpec {
            version: lamina_bootstrap::spec::SPEC_VERSION,
            root: traces.root.clone(),
            uid: traces.uid.as_ref().map_or(SANDBOX_UID, UidLease::uid),
            gid: SANDBOX_GID,
            hostname: "lamina".into(),
            cgroups: cgroups.map(|c| c.sandbox_dirs.clone()).unwrap_or_default(),
            function_cgroups: cgroups.map(|c| c.function_dirs.clone()).unwrap_or_default(),
            network: self.network,
        };
        let (child, pid, control, logs) = spawn_helper(&self.helper, &shell)?;
        Ok(Shell {
            child,
            pid,
            control,
            logs,
            traces,
        })
    }
}

/// Starts the sandbox helper with the first half of the spec on its stdin: one end of a socket
/// pair, over which the Runtime API listener comes back in network mode `none` (SCM_RIGHTS).
fn spawn_helper(
    helper: &Helper,
    shell: &ShellSpec,
) -> Result<
    (
        tokio::process::Child,
        i32,
        std::os::unix::net::UnixStream,
        std::io::PipeReader,
    ),
    Failure,
> {
    let spec_json =
        serde_json::to_vec(shell).map_err(|e| host_failure("encoding the jail spec", e))?;
    let (reader, writer, writer2) = super::log_pipe()?;
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| host_failure("creating the control socket", e))?;
    let mut command = super::base_command(helper.command(), writer, writer2);
    command.stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
    let child = command
        .spawn()
        .map_err(|e| host_failure(&format!("starting {helper}"), e))?;
    drop(command);
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| Failure::Sandbox("the jail exited before it could be tracked".into()))?;
    // A few hundred bytes into an empty socket buffer: this does not block.
    std::io::Write::write_all(&mut ours, &lamina_bootstrap::spec::frame(&spec_json))
        .map_err(|e| host_failure("sending the jail spec", e))?;
    Ok((child, pid, ours, reader))
}

impl Shell {
    /// Ends an unused sandbox and removes what it left on the host.
    fn discard(mut self) {
        super::signal_group(self.pid, Stop::Kill);
        // Reaped here, not left to tokio's orphan queue: at shutdown nothing polls that queue
        // any more, and the helper would stay a zombie (and its cgroups busy) until lamina
        // itself exits. A killed helper is gone within a few milliseconds; this is bounded.
        for _ in 0..500 {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Ok(Some(_)) | Err(_) => break,
            }
        }
        // Then the fields drop in order: the helper, the control socket, the traces.
    }
}

impl Sandbox for JailSandbox {
    fn name(&self) -> &'static str {
        "jail"
    }

    fn runtime_api(&self) -> ApiPlacement {
        match self.network {
            Network::None => {
                ApiPlacement::Inside(lamina_bootstrap::jail::network::RUNTIME_API_ADDR)
            }
            Network::Host => ApiPlacement::HostLoopback,
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
        sandbox_user_may_run(&spec.code_dir, &host_bootstrap, bootstrap)?;
        let paths = Paths {
            task_root: "/var/task".into(),
            runtime_dir: "/var/runtime".into(),
        };
        let env = lambda_env::environment(
            spec,
            &start.tcp_api()?.to_string(),
            start.log_stream,
            &paths,
        );
        let function = FunctionSpec {
            code_dir: spec.code_dir.clone(),
            opt: spec
                .opt
                .as_ref()
                .map(|o| OptMount::Merged(o.merged.clone())),
            tmp_bytes: u64::from(spec.ephemeral_storage_mb) * 1024 * 1024,
            env,
            bootstrap: bootstrap.into(),
        };
        let function_json =
            serde_json::to_vec(&function).map_err(|e| host_failure("encoding the jail spec", e))?;
        let Shell {
            mut child,
            pid,
            control,
            logs,
            traces,
        } = self.take_shell()?;
        // From here on the sandbox is this environment's: dropping its control removes it.
        let jail_control = JailControl {
            pid,
            reaped: Arc::default(),
            traces,
        };
        let cgroups = jail_control.traces.cgroups.as_ref();
        let runtime_api_peer_uid = jail_control.traces.uid.as_ref().map(UidLease::uid);
        let sandbox_procs = cgroups
            .and_then(|c| c.sandbox_dirs.first())
            .map(|dir| dir.join("cgroup.procs"));
        let prepared = cgroups
            .map_or(Ok(()), |c| c.set_limits(spec.memory_mb))
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
        let expects_listener = self.network == Network::None;
        let (exit_tx, exited) = oneshot::channel();
        let (reset_tx, mut resets) =
            tokio::sync::mpsc::unbounded_channel::<oneshot::Sender<std::io::Result<()>>>();
        let reset_tmp = spec.tmp_per_invocation.then(|| {
            Box::new(JailTmp {
                helper: pid,
                seen_from_host: None,
                resets: reset_tx,
            }) as Box<dyn super::ResetTmp>
        });
        tokio::spawn(async move {
            // The listener was sent while the shell was built; the function's half of the spec
            // follows on the socket, which then stays open as the control channel.
            let listener = if expects_listener {
                Some(receive_listener(&control).await)
            } else {
                None
            };
            let written = control
                .write_all(&lamina_bootstrap::spec::frame(&function_json))
                .await;
            if let Some(listener) = listener {
                let _ = listener_tx.send(written.and(listener));
            }
            // Serve /tmp resets (asked for only when the function wrote there: `JailTmp`)
            // until the sandbox ends.
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
            control: Box::new(jail_control),
            exited,
            logs: Some(logs.into()),
            listener: expects_listener.then_some(listener_rx),
            reset_tmp,
            runtime_api_peer_uid,
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

/// PID 1 of a sandbox, seen from the host: the helper's only child.
fn pid1_of(helper: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{helper}/task/{helper}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether the sandbox's user (unprivileged, neither owner nor group of the host's files) may
/// enter the code directory and run the bootstrap. Checked on the host, so that the error names
/// the host path and its mode: inside the jail it would be a bare "Permission denied" from
/// PID 1's `chdir` and an exit status. (A zip's tree is extracted readable; a directory is
/// mounted as it is.)
fn sandbox_user_may_run(
    code_dir: &Path,
    host_bootstrap: &Path,
    bootstrap: &str,
) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).map_or(0o777, |m| m.permissions().mode() & 0o7777);
    let denied = |what: &Path, mode: u32, needs: &str| Failure::BootstrapNotExecutable {
        path: bootstrap.to_owned(),
        reason: format!(
            "permission denied: {} is mode {mode:04o}, and the jail runs the function as an unprivileged user, which needs {needs} (for example chmod 755)",
            what.display()
        ),
    };
    let dir = mode(code_dir);
    if dir & 0o005 != 0o005 {
        return Err(denied(code_dir, dir, "others' read and search permission"));
    }
    let file = mode(host_bootstrap);
    if file & 0o001 == 0 {
        return Err(denied(host_bootstrap, file, "others' execute permission"));
    }
    Ok(())
}

/// `path` opened only as a place (`O_PATH`): enough to ask about its filesystem.
fn open_path(path: &str) -> Option<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()).ok()
}

/// A jailed environment's `/tmp`: checked from the host, reset by PID 1 over the control
/// socket (by the task that owns it).
#[derive(Debug)]
struct JailTmp {
    /// The sandbox's helper process; PID 1 is its only child.
    helper: i32,
    /// The sandbox's `/tmp` as the host reaches it (through PID 1's root), held open: asking
    /// it is one `fstatvfs`, not a path walk through `/proc`. Opened at the first check (by
    /// then the function has run, so PID 1 exists) and after each reset (a new tmpfs).
    seen_from_host: Option<std::os::fd::OwnedFd>,
    resets: tokio::sync::mpsc::UnboundedSender<oneshot::Sender<std::io::Result<()>>>,
}

impl super::ResetTmp for JailTmp {
    fn untouched(&mut self) -> bool {
        if self.seen_from_host.is_none() {
            self.seen_from_host =
                pid1_of(self.helper).and_then(|p| open_path(&format!("/proc/{p}/root/tmp")));
        }
        let untouched = self
            .seen_from_host
            .as_ref()
            .is_some_and(lamina_bootstrap::jail::tmp_untouched_fd);
        if !untouched {
            // The one held is the tmpfs about to be replaced.
            self.seen_from_host = None;
        }
        untouched
    }

    fn reset(&mut self) -> oneshot::Receiver<std::io::Result<()>> {
        let (ack, done) = oneshot::channel();
        // When the sandbox has ended, the request and its `ack` are dropped: `done` then
        // reports that no fresh /tmp was made.
        let _ = self.resets.send(ack);
        done
    }
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
    traces: HostTraces,
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
        self.traces
            .cgroups
            .as_ref()
            .and_then(Cgroups::max_memory_bytes)
    }

    fn out_of_memory(&self) -> bool {
        self.traces
            .cgroups
            .as_ref()
            .is_some_and(Cgroups::oom_killed)
    }
}
