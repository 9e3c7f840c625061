//! A store's resource limiter: linear memory capped at the function's `--memory`, and a record
//! of what happened, so a trap that follows a refused allocation is reported as running out
//! of memory, and REPORT's Max Memory Used is the largest memory the guest had.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// The limiter of one invocation's store.
pub struct Limits {
    inner: StoreLimits,
    /// A memory growth (or the initial size) was refused.
    pub(super) refused: bool,
    /// The largest linear memory granted, bytes.
    pub(super) peak_bytes: usize,
}

impl Limits {
    /// At most `memory_bytes` of linear memory.
    pub fn new(memory_bytes: usize) -> Limits {
        Limits {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                // Enough for a component's core instances; a module needs one.
                .instances(64)
                .memories(64)
                .tables(256)
                .build(),
            refused: false,
            peak_bytes: 0,
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.inner.memory_growing(current, desired, maximum)?;
        if granted {
            self.peak_bytes = self.peak_bytes.max(desired);
        } else {
            self.refused = true;
        }
        Ok(granted)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
