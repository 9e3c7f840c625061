//! An environment's memory limit and what it used, as the host holds them: one trait, with the
//! cgroups (v1, v2, delegated or not) and the watchdog (rootless without a delegated cgroup) as
//! its two implementations, so that starting and reporting need not know which one a host has.

use super::cgroup::Cgroups;
use super::watchdog::Watchdog;

/// Holds an environment's memory limit and reports on it.
pub(super) trait Limits: std::fmt::Debug + Send + Sync {
    /// Sets the memory limit, `memory_mb` MB (and the CPU share that goes with it, where the
    /// implementation has one).
    fn set_memory(&self, memory_mb: u32) -> std::io::Result<()>;
    /// The peak memory use so far, bytes.
    fn max_memory_bytes(&self) -> Option<u64>;
    /// Whether something of the environment was killed for passing the limit.
    fn out_of_memory(&self) -> bool;
}

impl Limits for Cgroups {
    fn set_memory(&self, memory_mb: u32) -> std::io::Result<()> {
        self.set_limits(memory_mb)
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        Cgroups::max_memory_bytes(self)
    }

    fn out_of_memory(&self) -> bool {
        self.oom_killed()
    }
}

impl Limits for Watchdog {
    fn set_memory(&self, memory_mb: u32) -> std::io::Result<()> {
        self.set_limit(memory_mb);
        Ok(())
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        Watchdog::max_memory_bytes(self)
    }

    fn out_of_memory(&self) -> bool {
        self.killed()
    }
}
