//! The memory limit where no cgroup can hold it: a rootless jail on a host that delegates none
//! to lamina's user (any cgroup v1 host; a v2 host outside a delegated subtree). A task of the
//! host watches the sandbox's resident memory and kills the whole sandbox when it passes the
//! limit, which the environment then reports as `Runtime.OutOfMemory`, as the kernel's OOM
//! killer would be.
//!
//! What is watched: every process of the sandbox but PID 1 (the jail's own, small helper),
//! found through the sandbox's own `/proc` (its PID namespace's, reached through PID 1's root),
//! so a process that left its parent is counted too. Every 10 ms, every 1 ms once within a
//! quarter of the limit. Between two looks a process can grow past the limit by what it
//! allocates in that time (a few MB at most at 1 ms): the limit is a watchdog's, not the
//! kernel's, and `lamina doctor` says so. Max Memory Used is the highest sum seen, and at
//! least the largest high-water mark (`VmHWM`) any one process reached, which the kernel keeps
//! exactly: for the usual one-process runtime the peak is exact.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use crate::sandbox::Stop;

/// How often the watchdog looks, and how often once usage is near the limit.
const CALM: Duration = Duration::from_millis(10);
const NEAR: Duration = Duration::from_millis(1);

/// One sandbox's watchdog. Stops looking when dropped (with the sandbox's traces).
#[derive(Debug)]
pub(super) struct Watchdog {
    helper: i32,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    limit_bytes: AtomicU64,
    peak_bytes: AtomicU64,
    killed: AtomicBool,
    stopped: AtomicBool,
    /// The sandbox's `/proc`, once PID 1 has pivoted into its root.
    proc: std::sync::OnceLock<OwnedFd>,
}

impl Watchdog {
    /// A watchdog for the sandbox whose helper is `helper` (which leads its process group).
    pub(super) fn new(helper: i32) -> Self {
        Self {
            helper,
            shared: Arc::default(),
        }
    }

    /// Sets the limit and starts watching (once; later calls only change the limit). Needs a
    /// tokio runtime, as the environment's start has.
    pub(super) fn set_limit(&self, memory_mb: u32) {
        let bytes = u64::from(memory_mb) * 1024 * 1024;
        if self.shared.limit_bytes.swap(bytes, Ordering::AcqRel) != 0 {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let helper = self.helper;
        tokio::spawn(async move {
            while !shared.stopped.load(Ordering::Acquire) {
                let Some(used) = shared.sample(helper) else {
                    // Not pivoted yet: PID 1 is still building the root.
                    tokio::time::sleep(NEAR).await;
                    continue;
                };
                let limit = shared.limit_bytes.load(Ordering::Acquire);
                if used > limit {
                    shared.killed.store(true, Ordering::Release);
                    crate::sandbox::signal_group(helper, Stop::Kill);
                    break;
                }
                let near = used.saturating_mul(4) > limit.saturating_mul(3);
                tokio::time::sleep(if near { NEAR } else { CALM }).await;
                if !process_exists(helper) {
                    break;
                }
            }
        });
    }

    /// The highest memory use seen so far, bytes; looked at once more now, with each process's
    /// own high-water mark.
    pub(super) fn max_memory_bytes(&self) -> Option<u64> {
        if let Some(proc) = self.shared.proc(self.helper) {
            // One read of each process's status: its resident memory now and its peak.
            let (mut now, mut hwm) = (0, 0);
            for pid in sandbox_pids(proc) {
                if let Some(status) = read_at(proc, &format!("{pid}/status")) {
                    now += status_kb(&status, "VmRSS:") * 1024;
                    hwm = hwm.max(status_kb(&status, "VmHWM:") * 1024);
                }
            }
            self.shared
                .peak_bytes
                .fetch_max(now.max(hwm), Ordering::AcqRel);
        }
        Some(self.shared.peak_bytes.load(Ordering::Acquire))
    }

    /// Whether the watchdog killed the sandbox for passing its limit.
    pub(super) fn killed(&self) -> bool {
        self.shared.killed.load(Ordering::Acquire)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
    }
}

impl Shared {
    /// The sandbox's resident memory now (and the peak updated), or `None` before its root
    /// exists.
    fn sample(&self, helper: i32) -> Option<u64> {
        let proc = self.proc(helper)?;
        let used = sandbox_pids(proc)
            .iter()
            .filter_map(|pid| resident_pages(proc, pid))
            .sum::<u64>()
            * page_size();
        self.peak_bytes.fetch_max(used, Ordering::AcqRel);
        Some(used)
    }

    /// The sandbox's `/proc`, opened once it exists.
    fn proc(&self, helper: i32) -> Option<&OwnedFd> {
        if let Some(proc) = self.proc.get() {
            return Some(proc);
        }
        let opened = open_sandbox_proc(helper)?;
        Some(self.proc.get_or_init(|| opened))
    }
}

fn process_exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(4096)
}

/// The sandbox's own `/proc`, once PID 1 has moved into the jail's root (before that, its root
/// is the host's, whose `/proc` lists every process of the machine).
fn open_sandbox_proc(helper: i32) -> Option<OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    let pid1 = super::helper::pid1_of(helper)?;
    let root = format!("/proc/{pid1}/root");
    let host_root = std::fs::metadata("/").ok()?.dev();
    if std::fs::metadata(&root).ok()?.dev() == host_root {
        return None;
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(format!("{root}/proc").as_str(), flags, Mode::empty()).ok()
}

/// The sandbox's processes but PID 1, by their pids inside it.
fn sandbox_pids(proc: &OwnedFd) -> Vec<String> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let Ok(mut dir) = nix::dir::Dir::openat(proc.as_fd(), ".", flags, Mode::empty()) else {
        return Vec::new();
    };
    dir.iter()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().ok().map(str::to_owned))
        .filter(|name| name != "1" && name.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

fn read_at(proc: &OwnedFd, path: &str) -> Option<String> {
    let fd = openat(
        proc.as_fd(),
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    std::io::read_to_string(std::fs::File::from(fd)).ok()
}

/// A process's resident pages (`statm`'s second field); `None` once it is gone.
fn resident_pages(proc: &OwnedFd, pid: &str) -> Option<u64> {
    read_at(proc, &format!("{pid}/statm"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A `kB` field of a process's `status` (`VmRSS:`, `VmHWM:`); 0 when absent.
fn status_kb(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
