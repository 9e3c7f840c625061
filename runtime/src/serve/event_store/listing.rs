//! What `lamina events ls` shows of a store, whichever it is: per function, the events due and
//! those waiting for a retry ([`FunctionQueue`]), and one function's events without their
//! payloads ([`QueuedEvent`]). The embedded store's reader and the shared queue's each query
//! their own table and fold the rows here, so both count alike.

use std::collections::BTreeMap;

/// What a store holds for one function at a moment: `lamina events ls`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionQueue {
    /// The function's name.
    pub function: String,
    /// Events due now: waiting for room, or running.
    pub queued: u64,
    /// Events waiting for a retry due later, counted by the attempts made so far.
    pub retrying_by_attempts: BTreeMap<u32, u64>,
    /// When the earliest of those is due, in milliseconds since the Unix epoch.
    pub next_retry_ms: Option<u64>,
}

impl FunctionQueue {
    /// Events waiting for a retry due later.
    pub fn retrying(&self) -> u64 {
        self.retrying_by_attempts.values().sum()
    }
}

/// One stored event without its payload: a line of `lamina events ls --function`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    /// The request id returned with its `202`.
    pub request_id: String,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub accepted_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, in milliseconds since the Unix epoch (0: at once).
    pub due_ms: u64,
    /// The payload's size in bytes.
    pub payload_bytes: u64,
}

/// A stored time or count, never negative.
pub(super) fn non_negative(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or(0)
}

/// The summary's rows, `(function, due later, attempts, count, first due)` ordered by
/// function, folded into one [`FunctionQueue`] per function.
pub(super) fn summary_of(
    rows: impl IntoIterator<Item = (String, bool, u32, i64, i64)>,
) -> Vec<FunctionQueue> {
    let mut queues: Vec<FunctionQueue> = Vec::new();
    for (function, later, attempts, count, first_due) in rows {
        if queues.last().is_none_or(|q| q.function != function) {
            queues.push(FunctionQueue {
                function,
                ..FunctionQueue::default()
            });
        }
        let queue = queues.last_mut().expect("just pushed");
        let count = non_negative(count);
        match later {
            false => queue.queued += count,
            true => {
                *queue.retrying_by_attempts.entry(attempts).or_default() += count;
                let due = non_negative(first_due);
                queue.next_retry_ms = Some(queue.next_retry_ms.map_or(due, |d| d.min(due)));
            }
        }
    }
    queues
}
