//! Pure placement decisions for a function's pool: no I/O, no clocks, so every case is a unit
//! test. The pool task applies them.

/// Where a new invocation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// An idle, warm environment takes it.
    Reuse,
    /// A new environment is started for it (a cold start).
    Spawn,
    /// Every environment is busy and the pool is at its concurrency: it waits its turn.
    Queue,
}

/// Warm environments first; a cold start only while under `concurrency`.
pub fn place(idle: usize, total: usize, concurrency: u32) -> Placement {
    if idle > 0 {
        Placement::Reuse
    } else if total < concurrency as usize {
        Placement::Spawn
    } else {
        Placement::Queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_first_then_cold_then_wait() {
        assert_eq!(place(1, 1, 1), Placement::Reuse);
        assert_eq!(place(1, 4, 4), Placement::Reuse);
        assert_eq!(place(0, 0, 1), Placement::Spawn);
        assert_eq!(place(0, 3, 4), Placement::Spawn);
        assert_eq!(place(0, 1, 1), Placement::Queue);
        assert_eq!(place(0, 4, 4), Placement::Queue);
    }
}
