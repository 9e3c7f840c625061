//! A uid of its own for each jail in the host's network namespace. There the Runtime API is on
//! the host's loopback, and the uid that owns a connecting socket is what tells the sandbox's
//! own runtime from every other process (see `runtime_api::peer`). So no two live sandboxes
//! on the machine may share one, across all lamina processes.
//!
//! A uid is leased by holding an exclusive `flock` on `<dir>/<uid>.lock`: the kernel releases
//! it when the holder closes the file or dies, so a crashed lamina leaks no uid, and another
//! lamina process skips the uids in use without any coordination beyond the directory.

use std::fs::{File, TryLockError};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use crate::run_dir::RunDir;
use std::sync::atomic::{AtomicU32, Ordering};

/// The first uid of the reserved range. Far above the ranges distributions hand to users
/// (1000+) and to rootless containers in `/etc/subuid` (100000+, 65536 each), so no other
/// process on the host runs as one of these.
pub const UID_BASE: u32 = 2_000_000_000;
/// How many uids the range holds: the most jails in host network mode alive at once.
pub const UID_SLOTS: u32 = 65_536;

/// Where the next search starts: the slot after the last one leased by this process, so a
/// lease is usually found at the first try.
static NEXT_SLOT: AtomicU32 = AtomicU32::new(0);

/// No uid could be leased.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease directory could not be made or a lock file opened.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory at fault.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Every uid of the range is held by a live sandbox.
    #[error("all {UID_SLOTS} sandbox uids from {UID_BASE} are in use")]
    Exhausted,
}

/// A uid held for one sandbox until this is dropped (which must be after its processes end).
#[derive(Debug)]
pub struct UidLease {
    uid: u32,
    _lock: File,
}

impl UidLease {
    /// Leases a free uid, keeping its lock file in `dir` (opened there without following a
    /// link).
    pub fn acquire(dir: &RunDir) -> Result<UidLease, LeaseError> {
        let io = |path: &std::path::Path, source| LeaseError::Io {
            path: path.display().to_string(),
            source,
        };
        let start = NEXT_SLOT.load(Ordering::Relaxed);
        for step in 0..UID_SLOTS {
            let slot = start.wrapping_add(step) % UID_SLOTS;
            let uid = UID_BASE + slot;
            let name = format!("{uid}.lock");
            let file = openat(
                dir.fd(),
                name.as_str(),
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map(File::from)
            .map_err(|e| io(&dir.path().join(&name), e.into()))?;
            match file.try_lock() {
                Ok(()) => {
                    NEXT_SLOT.store(slot.wrapping_add(1) % UID_SLOTS, Ordering::Relaxed);
                    return Ok(UidLease { uid, _lock: file });
                }
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => return Err(io(&dir.path().join(&name), e)),
            }
        }
        Err(LeaseError::Exhausted)
    }

    /// The leased uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_leases_never_share_a_uid_and_a_dropped_one_is_free_again() {
        let base = tempfile::tempdir().unwrap();
        let leases = RunDir::open(&base.path().join("uids")).unwrap();
        let dir = leases.path();
        let a = UidLease::acquire(&leases).unwrap();
        let b = UidLease::acquire(&leases).unwrap();
        assert_ne!(a.uid(), b.uid());
        assert!((UID_BASE..UID_BASE + UID_SLOTS).contains(&a.uid()));
        // A lock held through another open file (as another lamina process would) is skipped.
        let held_by_other = File::create(dir.join(format!("{}.lock", b.uid() + 1))).unwrap();
        held_by_other.try_lock().unwrap();
        let c = UidLease::acquire(&leases).unwrap();
        assert_eq!(c.uid(), b.uid() + 2);
        drop(held_by_other);
        let freed = a.uid();
        drop(a);
        let probe = File::options()
            .write(true)
            .open(dir.join(format!("{freed}.lock")))
            .unwrap();
        probe
            .try_lock()
            .expect("a dropped lease's lock is released");
    }
}
