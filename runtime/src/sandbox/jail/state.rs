//! The jail's directories on the host: its part of lamina's run directory (each sandbox's root
//! mount point, swept after dead lamina processes) and the host-wide uid leases.

use std::path::Path;
use std::sync::Arc;

use crate::run_dir::{RunDir, RunDirError};

/// Where every root lamina on the host leases sandbox uids (see `uids`), whatever its run
/// directory.
pub(super) const UID_LEASES: &str = "/run/lamina/uids";

/// The jail's directories in lamina's run directory ([`crate::run_dir`]).
#[derive(Debug, Clone)]
pub(super) struct StateDirs {
    /// `jails/<pid>-<n>`: each sandbox's root mount point.
    pub(super) jails: Arc<RunDir>,
    /// `uids/<uid>.lock`: the uid leases of network mode `host`, shared by every lamina.
    pub(super) uids: Arc<RunDir>,
}

impl StateDirs {
    /// Opens `jails/` in the run directory (removing what dead lamina processes left there)
    /// and the host-wide uid leases.
    pub(super) fn open() -> Result<StateDirs, RunDirError> {
        let run = RunDir::open_default()?;
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
    }
}
