//! The SQS event source mapping, as Lambda runs it: pollers that long-poll a queue, gather a
//! batch (up to `batch_size` messages, or what `maximum_batching_window` brings, or 6 MB),
//! invoke the function synchronously through its pool with Lambda's SQS event, and delete
//! what succeeded. What failed is left alone: it comes back after the queue's visibility
//! timeout, and the queue's own redrive policy moves it to its dead-letter queue after
//! `maxReceiveCount` receives.
//!
//! Per mapping, one task first asks for the queue's ARN (the event's `eventSourceARN`, and
//! proof that the queue is there; an unreachable endpoint or a missing queue is logged
//! naming the queue, and asked again with backoff), then starts its pollers:
//! `maximum_concurrency` of them, else the function's concurrency. A throttled invocation
//! waits and is tried again; it is not a failure. [`Pollers::stop`] ends them: no new batch
//! is received or invoked, a batch being invoked finishes and is deleted only if it succeeded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsMessage;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{SqsError, batch, client};
use crate::config::file::EventSourceEntry;
use crate::config::sqs_address::{self as address, Queue};
use crate::invoke::{InvokeOutcome, InvokeRequest, Throttled};
use crate::serve::App;

/// Lambda's cut of a batch: the synchronous invocation payload limit.
const MAX_BATCH_BYTES: usize = 6 * 1024 * 1024;

/// The longest wait between two tries after an error.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The running mappings: stopped by [`Pollers::stop`], or when dropped.
#[derive(Debug)]
pub struct Pollers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    app: Option<Arc<App>>,
}

/// Starts a task for each enabled mapping in `sources`.
pub fn start(app: &Arc<App>, sources: &[EventSourceEntry]) -> Pollers {
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for source in sources.iter().filter(|s| s.enabled) {
        tasks.spawn(mapping(Arc::clone(app), source.clone(), stopped.clone()));
    }
    Pollers {
        stop,
        tasks,
        app: Some(Arc::clone(app)),
    }
}

impl Pollers {
    /// Nothing running.
    pub fn none() -> Pollers {
        Pollers {
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
            app: None,
        }
    }

    /// Stops every poller: long polls are abandoned (what they would have received stays on
    /// the queue), batches being invoked finish (each invocation ends by its deadline) and
    /// are deleted if they succeeded.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let longest = self.app.as_ref().map_or(Duration::ZERO, |app| {
            app.served()
                .functions
                .values()
                .map(|f| f.pool.spec().timeout + f.pool.spec().init_timeout)
                .max()
                .unwrap_or_default()
        });
        // The deletes after the last invocation have their own bounded timeouts.
        let bound = longest + Duration::from_secs(30);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!("SQS pollers still busy at shutdown were stopped");
            self.tasks.abort_all();
        }
    }
}

/// Sleeps for `wait`; false when the pollers were stopped meanwhile.
async fn sleep_or_stop(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Waits that double from one second up to [`MAX_BACKOFF`].
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_secs(1))
    }

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        wait
    }
}

/// One mapping: the queue's ARN, then its pollers until stopped.
async fn mapping(app: Arc<App>, source: EventSourceEntry, mut stop: watch::Receiver<bool>) {
    let Some(queue) = address::parse(&source.queue, None) else {
        tracing::error!("{}: {:?} is not a queue URL", source.at, source.queue);
        return;
    };
    let mut backoff = Backoff::new();
    let arn = loop {
        let asked = tokio::select! {
            answer = client::queue_arn(&queue) => answer,
            _ = stop.changed() => return,
        };
        match asked {
            Ok(arn) => break arn,
            Err(e) => {
                let wait = backoff.next();
                tracing::error!(
                    "SQS event source of function {}: {e}; trying again in {}s",
                    source.function,
                    wait.as_secs()
                );
                if !sleep_or_stop(wait, &mut stop).await {
                    return;
                }
            }
        }
    };
    let region = arn
        .split(':')
        .nth(3)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .or_else(|| client::for_queue(&queue).ok().map(|(_, region)| region))
        .unwrap_or_else(|| crate::config::DEFAULT_REGION.to_owned());
    let Some(function) = app.served().functions.get(&source.function).cloned() else {
        tracing::error!(
            "SQS event source of function {}: the function is not served",
            source.function
        );
        return;
    };
    let pollers = source
        .maximum_concurrency
        .unwrap_or(function.pool.spec().concurrency)
        .max(1);
    drop(function);
    tracing::info!(
        "SQS event source of function {}: polling {} ({arn}) with {pollers} pollers",
        source.function,
        queue.url
    );
    let shared = Arc::new(Mapping {
        app,
        source,
        queue,
        arn,
        region,
    });
    let mut tasks = JoinSet::new();
    for _ in 0..pollers {
        tasks.spawn(Arc::clone(&shared).poll(stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// What a mapping's pollers share.
#[derive(Debug)]
struct Mapping {
    app: Arc<App>,
    source: EventSourceEntry,
    queue: Queue,
    arn: String,
    region: String,
}

/// Why a poller stopped gathering.
enum Halt {
    Stopped,
    Failed(SqsError),
}

impl Mapping {
    /// One poller: gather, invoke, delete, until stopped.
    async fn poll(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut carried = VecDeque::new();
        let mut backoff = Backoff::new();
        while !stopped(&stop) {
            match self.gather(&mut carried, &mut stop).await {
                Ok(batch) => {
                    backoff = Backoff::new();
                    if !batch.is_empty() {
                        self.run(batch, &mut stop).await;
                    }
                }
                // What was received before it stopped is not invoked: it comes back after the
                // queue's visibility timeout.
                Err(Halt::Stopped) => return,
                Err(Halt::Failed(e)) => {
                    let wait = backoff.next();
                    tracing::error!(
                        "SQS event source of function {}: {e}; trying again in {}s",
                        self.source.function,
                        wait.as_secs()
                    );
                    if !sleep_or_stop(wait, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Receives until the batch is full (`batch_size` messages or 6 MB) or the batching
    /// window, which opens at the first message, has passed. A message that would take the
    /// batch past 6 MB is carried to the next one.
    async fn gather(
        &self,
        carried: &mut VecDeque<SqsMessage>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Vec<SqsMessage>, Halt> {
        let capacity = usize::try_from(self.source.batch_size).unwrap_or(usize::MAX);
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut deadline = None;
        let mut add = |record: SqsMessage,
                       batch: &mut Vec<SqsMessage>,
                       carried: &mut VecDeque<SqsMessage>| {
            let size = batch::size(&record);
            if !batch.is_empty() && (batch.len() >= capacity || bytes + size > MAX_BATCH_BYTES) {
                carried.push_back(record);
            } else {
                bytes += size;
                batch.push(record);
            }
        };
        for record in std::mem::take(carried) {
            add(record, &mut batch, carried);
        }
        loop {
            if !carried.is_empty() || batch.len() >= capacity {
                return Ok(batch);
            }
            if !batch.is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + self.source.maximum_batching_window);
            }
            let wait = match deadline {
                None => client::MAX_WAIT_SECONDS,
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(batch);
                    }
                    // Whole seconds, rounded up: the window may run up to a second over.
                    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    u32::try_from(secs).unwrap_or(client::MAX_WAIT_SECONDS)
                }
            };
            let want = capacity - batch.len();
            let received = tokio::select! {
                received = client::receive(&self.queue, want, wait) => received,
                _ = stop.changed() => return Err(Halt::Stopped),
            };
            match received {
                Ok(messages) => {
                    for message in messages {
                        add(
                            batch::record(message, &self.arn, &self.region),
                            &mut batch,
                            carried,
                        );
                    }
                }
                Err(e) if batch.is_empty() => return Err(Halt::Failed(e)),
                Err(e) => {
                    tracing::warn!(
                        "SQS event source of function {}: {e}; invoking the {} messages received",
                        self.source.function,
                        batch.len()
                    );
                    return Ok(batch);
                }
            }
        }
    }

    /// Invokes the function with `batch` (waiting while it is throttled) and deletes what
    /// succeeded.
    async fn run(&self, batch: Vec<SqsMessage>, stop: &mut watch::Receiver<bool>) {
        let function_name = &self.source.function;
        let payload = Bytes::from(batch::event(&batch));
        let mut throttled_wait = Duration::from_millis(50);
        let completed = loop {
            let Some(function) = self.app.served().functions.get(function_name).cloned() else {
                tracing::warn!(
                    "SQS event source of function {function_name}: the function is no longer \
                     served; {} messages stay on {}",
                    batch.len(),
                    self.queue.url
                );
                return;
            };
            let request = InvokeRequest {
                payload: payload.clone(),
                ..Default::default()
            };
            match function.pool.try_invoke(request).await {
                Ok(completed) => break completed,
                Err(Throttled) => {
                    if !sleep_or_stop(throttled_wait, stop).await {
                        return;
                    }
                    throttled_wait = (throttled_wait * 2).min(Duration::from_secs(1));
                }
            }
        };
        let ids: Vec<&str> = batch
            .iter()
            .filter_map(|r| r.message_id.as_deref())
            .collect();
        let failed = match &completed.outcome {
            InvokeOutcome::Response(body) if self.source.report_batch_item_failures => {
                match batch::failed_items(body, &ids) {
                    Ok(failed) => failed,
                    Err(why) => {
                        tracing::warn!(
                            request_id = %completed.request_id,
                            "SQS event source of function {function_name}: {why}; the whole \
                             batch of {} stays on {}",
                            batch.len(),
                            self.queue.url
                        );
                        return;
                    }
                }
            }
            InvokeOutcome::Response(_) => Vec::new(),
            InvokeOutcome::FunctionError(_) | InvokeOutcome::Failure(_) => {
                tracing::info!(
                    request_id = %completed.request_id,
                    "SQS event source of function {function_name}: the invocation failed ({}); \
                     {} messages return to {} after its visibility timeout",
                    completed.error_type().unwrap_or("error"),
                    batch.len(),
                    self.queue.url
                );
                return;
            }
        };
        let done: Vec<&str> = batch
            .iter()
            .filter(|r| !r.message_id.as_ref().is_some_and(|id| failed.contains(id)))
            .filter_map(|r| r.receipt_handle.as_deref())
            .collect();
        if done.is_empty() {
            return;
        }
        match client::delete(&self.queue, &done).await {
            Ok(refused) if refused.is_empty() => {}
            Ok(refused) => tracing::warn!(
                "SQS event source of function {function_name}: {} of {} processed messages \
                 could not be deleted from {} and will be received again: {}",
                refused.len(),
                done.len(),
                self.queue.url,
                refused.join("; ")
            ),
            Err(e) => tracing::warn!(
                "SQS event source of function {function_name}: {e}; {} processed messages will \
                 be received again",
                done.len()
            ),
        }
    }
}
