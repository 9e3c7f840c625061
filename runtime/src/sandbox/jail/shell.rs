//! One sandbox before it has a function: the helper started with the sandbox's half of the
//! spec ([`Shell`]), and what it has on the host beside its processes ([`HostTraces`]: its
//! root's mount point, cgroups and uid lease), removed when it goes.

use std::path::PathBuf;
use std::sync::Arc;

use lamina_bootstrap::{IdMap, Network, ShellSpec};

use super::cgroup::{self, Cgroups};
use super::helper::{Helper, host_failure, spawn_helper};
use super::network::Slirp;
use super::state::StateDirs;
use super::uids::UidLease;
use super::watchdog::Watchdog;
use super::{SANDBOX_GID, SANDBOX_UID};
use crate::error::Failure;
use crate::run_dir::RunDir;
use crate::sandbox::Stop;

/// What building a [`Shell`] needs, detached from the sandbox so a blocking thread can own it.
#[derive(Debug)]
pub(super) struct ShellConfig {
    pub(super) helper: Helper,
    pub(super) dirs: StateDirs,
    pub(super) cgroups: Option<cgroup::Place>,
    pub(super) network: Network,
    pub(super) rootless: Option<IdMap>,
    /// slirp4netns, in network mode `outbound`.
    pub(super) slirp: Option<PathBuf>,
}

/// A sandbox whose helper has the first half of the spec: it joins its cgroups, makes its
/// namespaces and its root up to the function's own mounts, and its function's process waits.
#[derive(Debug)]
pub(super) struct Shell {
    pub(super) child: tokio::process::Child,
    pub(super) pid: i32,
    pub(super) control: std::os::unix::net::UnixStream,
    pub(super) logs: std::io::PipeReader,
    pub(super) traces: HostTraces,
}

/// What a sandbox has on the host beside its processes: the root's mount point, its cgroups
/// and, in network mode `host`, its uid. Removed (released) when dropped, which must come after
/// its processes are gone. (The mounts lived in the sandbox's mount namespace and went with it.)
#[derive(Debug)]
pub(super) struct HostTraces {
    /// The directory the root mount point is in, and its name there.
    pub(super) jails: Arc<RunDir>,
    pub(super) name: String,
    pub(super) root: PathBuf,
    pub(super) cgroups: Option<Cgroups>,
    pub(super) uid: Option<UidLease>,
    /// Rootless without cgroups: what holds the memory limit instead.
    pub(super) watchdog: Option<Watchdog>,
    /// In network mode `outbound`: the sandbox's user-mode network.
    pub(super) network: Option<Slirp>,
}

impl HostTraces {
    /// What holds the sandbox's memory limit: its cgroups, or the watchdog.
    pub(super) fn limits(&self) -> Option<&dyn super::limits::Limits> {
        match (&self.cgroups, &self.watchdog) {
            (Some(cgroups), _) => Some(cgroups),
            (None, Some(watchdog)) => Some(watchdog),
            (None, None) => None,
        }
    }
}

impl Drop for HostTraces {
    fn drop(&mut self) {
        let _ = self.jails.remove_entry(&self.name);
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove();
        }
    }
}

/// Distinguishes the sandboxes (and their cgroups and directories) of one lamina process.
pub(super) static SHELL_SEQUENCE: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

impl ShellConfig {
    pub(super) fn build(&self) -> Result<Shell, Failure> {
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
            watchdog: None,
            network: None,
        };
        if self.network == Network::Host && self.rootless.is_none() {
            // On the host's loopback the Runtime API tells its sandbox by the uid (see
            // `runtime_api::peer`); in a private network namespace nobody else can connect.
            let uids = (self.dirs)
                .uids()
                .map_err(|e| host_failure("leasing the sandbox's uid", e))?;
            traces.uid = Some(
                UidLease::acquire(&uids)
                    .map_err(|e| host_failure("leasing the sandbox's uid", e))?,
            );
        }
        if let Some(place) = &self.cgroups {
            traces.cgroups = Some(
                Cgroups::create(place, &name)
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
            user_namespace: self.rootless,
            // Without a pids cgroup, counted in the sandbox's own user namespace.
            max_processes: (traces.cgroups.is_none() && self.rootless.is_some())
                .then_some(u64::from(cgroup::PIDS_MAX)),
        };
        let (mut child, pid, control, logs) = spawn_helper(&self.helper, &shell)?;
        if let (Network::Outbound, Some(program)) = (self.network, &self.slirp) {
            match Slirp::attach(program, pid, self.rootless.is_some()) {
                Ok(slirp) => traces.network = Some(slirp),
                Err(e) => {
                    crate::sandbox::signal_group(pid, Stop::Kill);
                    let _ = child.start_kill();
                    return Err(host_failure("attaching the sandbox's network", e));
                }
            }
        }
        if self.rootless.is_some() && traces.cgroups.is_none() {
            traces.watchdog = Some(Watchdog::new(pid));
        }
        Ok(Shell {
            child,
            pid,
            control,
            logs,
            traces,
        })
    }
}

impl Shell {
    /// Ends an unused sandbox and removes what it left on the host.
    pub(super) fn discard(mut self) {
        crate::sandbox::signal_group(self.pid, Stop::Kill);
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
