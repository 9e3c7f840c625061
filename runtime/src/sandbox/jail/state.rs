//! The jail's directories on the host: its part of lamina's run directory (each sandbox's root
//! mount point, swept after dead lamina processes) and the host-wide uid leases.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use crate::run_dir::{RunDir, RunDirError};

/// Where every root lamina on the host leases sandbox uids (see `uids`), whatever its run
/// directory.
pub(super) const UID_LEASES: &str = "/run/lamina/uids";

/// The jail's directories in lamina's run directory ([`crate::run_dir`]).
#[derive(Debug, Clone)]
pub(super) struct StateDirs {
    /// `jails/<pid>-<n>`: each sandbox's root mount point.
    pub(super) jails: Arc<RunDir>,
    /// `uids/<uid>.lock`: the uid leases of network mode `host`, shared by every lamina;
    /// opened at the first lease (the default network mode never needs it).
    uids: Arc<Mutex<Option<Arc<RunDir>>>>,
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
        Ok(StateDirs {
            jails: Arc::new(jails),
            uids: Arc::default(),
        })
    }

    /// The uid leases' directory. It is one set for every lamina on the host, whatever run
    /// directory each was given: two sets could hand one uid to two sandboxes.
    pub(super) fn uids(&self) -> Result<Arc<RunDir>, RunDirError> {
        let mut uids = self.uids.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(dir) = uids.as_ref() {
            return Ok(Arc::clone(dir));
        }
        let dir = Arc::new(RunDir::open(Path::new(UID_LEASES))?);
        *uids = Some(Arc::clone(&dir));
        Ok(dir)
    }
}
