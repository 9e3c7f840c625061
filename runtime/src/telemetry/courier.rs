//! Where subscribers' deliveries run: one thread of lamina's own (`lamina-telemetry`) with a
//! single-threaded tokio runtime, not the async workers that serve invocations.
//!
//! A batch written to a listener wakes the extension that owns it, and the kernel tends to run
//! a woken task on the waker's core and to let it preempt the waker. The extension then parses
//! its batch, a millisecond and more of CPU, in place of the thread that wrote it. When that
//! thread is one of the async workers, the invocations queued on it wait meanwhile: under the
//! process backend, whose extensions have lamina's own CPU weight, that cost lamina 7 µs of
//! scheduling per invocation at 8 connections and several points of throughput. Written from
//! this thread, a preempted writer holds nothing else up. Measured in docs/design/007 ("What
//! telemetry costs", session 23). The relay stays on the workers: it is fed at every
//! invocation, and handing each event to another thread cost more than it saved.
//!
//! The thread is started at the first subscription in the process and lives as long as the
//! process. Should it not start (a thread or runtime refused by the host's limits),
//! deliveries run on the caller's runtime as before, and the host's log says why once.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The thread's name, as `ps -T` and `/proc/PID/task/*/comm` show it.
const THREAD_NAME: &str = "lamina-telemetry";

/// The courier's runtime, once asked for; `None` when it could not be started.
static COURIER: OnceLock<Option<Handle>> = OnceLock::new();

/// Runs `task` on the courier's thread (or, failing that, on the current runtime).
pub(super) fn spawn<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match COURIER.get_or_init(start) {
        Some(courier) => courier.spawn(task),
        None => tokio::spawn(task),
    }
}

/// Starts the thread and its runtime. The runtime is built on the thread itself: one that
/// failed to start would otherwise be dropped here, in an async context, where tokio refuses
/// to drop a runtime.
fn start() -> Option<Handle> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name(THREAD_NAME.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    let _ = tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    // Waits once per process, for as long as a thread takes to start.
    let started = spawned.and_then(|_| {
        rx.recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the thread ended at its start")))
    });
    match started {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the telemetry thread; subscribers' deliveries run on the async workers");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_runs_on_the_courier_thread_and_every_task_on_the_same_one() {
        let name = || std::thread::current().name().map(str::to_owned);
        let first = spawn(async move { (name(), std::thread::current().id()) });
        let second = spawn(async move { std::thread::current().id() });
        let (first_name, first_id) = first.await.unwrap();
        assert_eq!(first_name.as_deref(), Some(THREAD_NAME));
        assert_eq!(second.await.unwrap(), first_id);
        assert_ne!(first_id, std::thread::current().id());
    }
}
