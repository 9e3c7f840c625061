//! Asynchronous (`Event`) invocations: accepted once durable, run when the function has room,
//! retried on error as Lambda retries them, and written to a dead-letter file when they cannot
//! succeed.
//!
//! Every accepted event is in the [`event_store`](super::event_store) before its `202` is
//! sent and leaves it only once it has run or been dead-lettered; a start resumes what the
//! store still holds ([`EventQueue::resume`]), so neither a stop nor a `kill -9` loses one.
//!
//! One task owns the whole queue: the waiting events of every function, the retries due later,
//! and the dead-letter files. Attempts run as tasks of their own and report back to it. An
//! event waits its turn when its function is at its concurrency (a throttle is not a failed
//! attempt, as on Lambda), and after a function error it is retried twice (the function's
//! `max_retry_attempts`) after `retry_delay`, then twice that. An event that still fails is
//! appended to `<state dir>/dead-letters/<function>.jsonl` as a record in the shape of Lambda's
//! on-failure destination.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::Function;
use super::event_store::{Committer, EventKey, StoreError, StoredEvent, epoch_ms};
use crate::config::file::Destination;
use crate::config::lambda_env::FUNCTION_VERSION;
use crate::invoke::{Completed, InvokeRequest, Throttled};
use crate::timer::sleep_until;

/// One accepted `Event` invocation.
#[derive(Debug, Clone)]
pub struct AsyncEvent {
    /// The function.
    pub function: Arc<Function>,
    /// The event and its context, with the request id returned with 202: every attempt runs
    /// under it, as on Lambda.
    pub request: InvokeRequest,
    /// Attempts made so far.
    attempts: u32,
    /// When it was accepted (ms since the epoch).
    accepted_ms: u64,
    /// The store's key for it, given at its append: how its retries and removal name it.
    seq: Option<i64>,
}

impl AsyncEvent {
    /// A new event, not yet attempted.
    pub fn new(function: Arc<Function>, request_id: String, mut request: InvokeRequest) -> Self {
        request.request_id = Some(request_id);
        AsyncEvent {
            function,
            request,
            attempts: 0,
            accepted_ms: epoch_ms(SystemTime::now()),
            seq: None,
        }
    }

    /// How long ago it was accepted.
    fn age(&self) -> Duration {
        SystemTime::now()
            .duration_since(super::event_store::from_epoch_ms(self.accepted_ms))
            .unwrap_or_default()
    }

    /// The event as the store keeps it.
    fn stored(&self) -> StoredEvent {
        StoredEvent {
            request_id: self.request_id().to_owned(),
            function: self.function.name().to_owned(),
            payload: self.request.payload.clone(),
            client_context: self.request.client_context.clone(),
            trace_id: self.request.trace_id.clone(),
            accepted_ms: self.accepted_ms,
            attempts: self.attempts,
            due_ms: 0,
            seq: self.seq,
        }
    }

    /// How the store finds it.
    fn key(&self) -> EventKey {
        EventKey::new(self.request_id(), self.seq)
    }

    /// The request id returned with 202.
    pub fn request_id(&self) -> &str {
        self.request.request_id.as_deref().unwrap_or_default()
    }
}

/// What the queue's owner task hears. Events travel boxed, from the accept to their end: an
/// event is some 600 bytes, which every hop (this channel, a function's queue, the retries
/// held back, an attempt) would otherwise copy, and the channel's blocks would hold at that
/// size.
enum Msg {
    Enqueue(Box<AsyncEvent>),
    /// Resumed from the store: due at this time.
    Resume(Box<AsyncEvent>, SystemTime),
    Throttled(Box<AsyncEvent>),
    Done(Box<AsyncEvent>, Completed),
    Shutdown(oneshot::Sender<()>),
}

/// The handle the Invoke API enqueues on. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventQueue {
    tx: mpsc::UnboundedSender<Msg>,
    store: Committer,
    app: Arc<std::sync::OnceLock<std::sync::Weak<super::App>>>,
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// lamina is stopping.
    #[error("lamina is shutting down")]
    Stopping,
    /// The store could not keep it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Enqueue(_) => "Enqueue",
            Msg::Resume(..) => "Resume",
            Msg::Throttled(_) => "Throttled",
            Msg::Done(..) => "Done",
            Msg::Shutdown(_) => "Shutdown",
        })
    }
}

/// How often a server on a shared store looks for events to take over, at most.
const TAKE_OVER_POLL: Duration = Duration::from_secs(1);
/// How many events it takes over at a time.
const TAKE_OVER_BATCH: usize = 500;

/// The first wait after a throttle; it doubles up to [`THROTTLE_BACKOFF_MAX`].
const THROTTLE_BACKOFF: Duration = Duration::from_millis(10);
const THROTTLE_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl EventQueue {
    /// Starts the queue's task over `store`. Dead letters go under `state_dir`.
    pub fn start(state_dir: PathBuf, retry_delay: Duration, store: Committer) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Arc::new(std::sync::OnceLock::new());
        let owner = Owner {
            tx: tx.clone(),
            store: store.clone(),
            app: Arc::clone(&app),
            dead_letters: state_dir.join("dead-letters"),
            retry_delay,
            waiting: HashMap::new(),
            delayed: Delays::new(),
        };
        tokio::spawn(owner.run(rx));
        let queue = EventQueue { tx, store, app };
        if let Some(lease) = queue.store.lease() {
            tokio::spawn(queue.clone().keep_leases(lease));
        }
        queue
    }

    /// For a store shared with other servers: renews this server's leases every third of a
    /// lease, and takes over the events of the functions served here whose lease has lapsed
    /// (a server died) or was given up (a server stopped). Ends when the queue does.
    async fn keep_leases(self, lease: Duration) {
        let period = (lease / 3).max(Duration::from_millis(100));
        let poll = period.min(TAKE_OVER_POLL);
        let mut renewed = Instant::now();
        loop {
            if self.tx.is_closed() {
                return;
            }
            if renewed.elapsed() >= period {
                self.store.renew();
                renewed = Instant::now();
            }
            let functions = self
                .app
                .get()
                .and_then(std::sync::Weak::upgrade)
                .map(|app| app.served().functions.clone());
            if let Some(functions) = functions {
                let names = functions.keys().cloned().collect();
                match self.store.take_over(names, TAKE_OVER_BATCH).await {
                    Ok(taken) if !taken.is_empty() => {
                        let n = self.queue_stored(taken, &functions);
                        tracing::warn!(
                            "took over {n} asynchronous invocations whose server stopped or died"
                        );
                        // More may be waiting: look again at once.
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!("taking over events of stopped servers: {e}"),
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Lets destinations reach the functions `app` serves (at the time of each delivery).
    pub fn connect(&self, app: &Arc<super::App>) {
        let _ = self.app.set(Arc::downgrade(app));
    }

    /// Accepts an event: resolves once it is durable (then a `202` may promise it).
    pub async fn enqueue(&self, mut event: AsyncEvent) -> Result<(), Refused> {
        if self.tx.is_closed() {
            return Err(Refused::Stopping);
        }
        event.seq = self.store.append(event.stored()).await?;
        super::metrics::async_event_received(event.function.name());
        // Stored: if the queue stopped meanwhile, the next start runs it.
        self.tx
            .send(Msg::Enqueue(Box::new(event)))
            .map_err(|_| Refused::Stopping)
    }

    /// Queues what a previous run left in the store, for the functions served now. Events of
    /// a function no longer served stay in the store, and are said once per function.
    pub fn resume(&self, pending: Vec<StoredEvent>, functions: &HashMap<String, Arc<Function>>) {
        let resumed = self.queue_stored(pending, functions);
        if resumed > 0 {
            tracing::warn!(
                "resuming {resumed} asynchronous invocations accepted before the last stop"
            );
        }
    }

    /// Queues stored events of the functions in `functions`, each when it is due; how many.
    /// Events of other functions stay in the store, and are said once per function.
    fn queue_stored(
        &self,
        pending: Vec<StoredEvent>,
        functions: &HashMap<String, Arc<Function>>,
    ) -> usize {
        let mut missing: HashMap<String, usize> = HashMap::new();
        let mut resumed = 0;
        for stored in pending {
            let Some(function) = functions.get(&stored.function) else {
                *missing.entry(stored.function).or_default() += 1;
                continue;
            };
            let request = InvokeRequest {
                payload: stored.payload,
                client_context: stored.client_context,
                trace_id: stored.trace_id,
                ..Default::default()
            };
            let mut event = AsyncEvent::new(Arc::clone(function), stored.request_id, request);
            event.attempts = stored.attempts;
            event.accepted_ms = stored.accepted_ms;
            event.seq = stored.seq;
            let due = super::event_store::from_epoch_ms(stored.due_ms);
            if self.tx.send(Msg::Resume(Box::new(event), due)).is_ok() {
                resumed += 1;
            }
        }
        for (function, n) in missing {
            tracing::warn!(
                "{n} asynchronous invocations of {function} wait in the event store for it to be served again"
            );
        }
        resumed
    }

    /// Stops taking new attempts and waits for the running ones; what has not run stays in
    /// the store for the next start.
    pub async fn shutdown(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(ack)).is_ok() {
            let _ = done.await;
        }
        self.store.flush().await;
        if self.store.lease().is_some() {
            // What this server holds and has not run, the others may run at once.
            self.store.release().await;
        }
    }
}

/// A function's waiting events, its attempts under way, and when it may be tried again after
/// a throttle. The events are boxed: a queue of whole events (about 600 bytes each) copied
/// itself as it grew, and held the owner's task for 160 ms at 262,144 waiting events.
#[derive(Default)]
struct Waiting {
    events: VecDeque<Box<AsyncEvent>>,
    running: usize,
    backoff: Option<(Instant, Duration)>,
}

/// Things held back until a time (retries, and events resumed with their retry still
/// ahead), soonest first; those due at the same time in the order they were held back. A heap:
/// what is due is found without looking at what is not.
struct Delays<T> {
    heap: BinaryHeap<Reverse<Delayed<T>>>,
    /// How many have been held back: the order of those due at the same time.
    count: u64,
}

struct Delayed<T> {
    at: Instant,
    order: u64,
    item: T,
}

impl<T> Delays<T> {
    fn new() -> Self {
        Delays {
            heap: BinaryHeap::new(),
            count: 0,
        }
    }

    /// Holds `item` back until `at`.
    fn push(&mut self, at: Instant, item: T) {
        self.count += 1;
        self.heap.push(Reverse(Delayed {
            at,
            order: self.count,
            item,
        }));
    }

    /// When the first is due.
    fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// The first, if it is due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_at()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(d)| d.item)
    }
}

impl<T> PartialEq for Delayed<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}

impl<T> Eq for Delayed<T> {}

impl<T> PartialOrd for Delayed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Delayed<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

struct Owner {
    tx: mpsc::UnboundedSender<Msg>,
    store: Committer,
    /// The server, for destinations that are functions (set by [`EventQueue::connect`]).
    app: Arc<std::sync::OnceLock<std::sync::Weak<super::App>>>,
    dead_letters: PathBuf,
    retry_delay: Duration,
    /// By function name.
    waiting: HashMap<String, Waiting>,
    /// Retries (and resumed events), soonest first.
    delayed: Delays<Box<AsyncEvent>>,
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let stopped = loop {
            self.start_what_can();
            let wake = self.next_wake();
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                () = sleep_until(wake) => continue,
            };
            match msg {
                Some(Msg::Enqueue(event)) => self.push_back(event),
                Some(Msg::Resume(event, due)) => {
                    let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
                    self.delay(Instant::now() + wait, event);
                }
                Some(Msg::Throttled(event)) => {
                    let w = self.attempt_ended(&event);
                    let next = w
                        .backoff
                        .map_or(THROTTLE_BACKOFF, |(_, d)| (d * 2).min(THROTTLE_BACKOFF_MAX));
                    w.backoff = Some((Instant::now() + next, next));
                    w.events.push_front(event);
                }
                Some(Msg::Done(event, completed)) => {
                    // Room in the function again: its waiting events need not wait out a
                    // throttle backoff.
                    self.attempt_ended(&event).backoff = None;
                    self.done(event, completed, false);
                }
                Some(Msg::Shutdown(ack)) => break Some(ack),
                None => break None,
            }
        };
        // Attempts under way finish (within their deadlines); a failure is recorded for the
        // next start to retry. Whatever has not run stays in the store.
        while self.waiting.values().any(|w| w.running > 0) {
            match rx.recv().await {
                Some(Msg::Done(event, completed)) => {
                    self.attempt_ended(&event);
                    self.done(event, completed, true);
                }
                Some(Msg::Throttled(event)) => {
                    self.attempt_ended(&event);
                }
                Some(Msg::Enqueue(_) | Msg::Resume(..)) => {}
                Some(Msg::Shutdown(ack)) => {
                    let _ = ack.send(());
                }
                None => break,
            }
        }
        if let Some(ack) = stopped {
            let _ = ack.send(());
        }
    }

    /// Counts off a finished attempt of `event`'s function; its queue, for what comes next.
    fn attempt_ended(&mut self, event: &AsyncEvent) -> &mut Waiting {
        let w = self.waiting_for(event.function.name());
        w.running = w.running.saturating_sub(1);
        w
    }

    fn push_back(&mut self, event: Box<AsyncEvent>) {
        self.waiting_for(event.function.name())
            .events
            .push_back(event);
    }

    /// Holds `event` back until `at`.
    fn delay(&mut self, at: Instant, event: Box<AsyncEvent>) {
        self.delayed.push(at, event);
    }

    /// The function's queue; its name is copied only the first time.
    fn waiting_for(&mut self, function: &str) -> &mut Waiting {
        if !self.waiting.contains_key(function) {
            self.waiting.insert(function.to_owned(), Waiting::default());
        }
        self.waiting
            .get_mut(function)
            .unwrap_or_else(|| unreachable!())
    }

    fn next_wake(&self) -> Option<Instant> {
        let backoffs = self
            .waiting
            .values()
            .filter(|w| !w.events.is_empty())
            .filter_map(|w| w.backoff.map(|(at, _)| at))
            // A backoff that has passed wakes no one: the function is full, and its next
            // finished attempt is what starts the next one.
            .filter(|&at| at > Instant::now());
        let retry = self.delayed.next_at();
        backoffs.chain(retry).min()
    }

    /// Moves due retries to their queues and starts attempts for the waiting events of every
    /// function not in a throttle backoff, up to the function's concurrency (beyond it they
    /// would only be throttled; synchronous callers may still take the room first).
    fn start_what_can(&mut self) {
        let now = Instant::now();
        while let Some(due) = self.delayed.pop_due(now) {
            self.waiting_for(due.function.name()).events.push_back(due);
        }
        let mut expired = Vec::new();
        for w in self.waiting.values_mut() {
            if w.backoff.is_some_and(|(at, _)| at > now) {
                continue;
            }
            while let Some(event) = w.events.front() {
                if w.running >= event.function.pool.spec().concurrency as usize {
                    break;
                }
                let Some(event) = w.events.pop_front() else {
                    break;
                };
                // Too old to run: Lambda gives up on it, to the failure destination.
                if event.age() > event.function.asynchronous.maximum_event_age {
                    expired.push(event);
                    continue;
                }
                w.running += 1;
                tokio::spawn(attempt(event, self.tx.clone()));
            }
        }
        for event in expired {
            self.fail(&event, "EventAgeExceeded", None);
        }
    }

    fn done(&mut self, mut event: Box<AsyncEvent>, completed: Completed, stopping: bool) {
        event.attempts += 1;
        if completed.error_type().is_none() {
            if let Some(destination) = event.function.asynchronous.on_success.clone() {
                let record = destination_record(&event, "Success", Some(&completed));
                self.deliver(&event, &destination, record);
            }
            self.store.remove(event.key());
            return;
        }
        let retries_left = event.function.asynchronous.maximum_retry_attempts + 1 > event.attempts;
        if retries_left {
            // Lambda waits a minute, then two; `retry_delay`, then twice it.
            let wait = self.retry_delay * event.attempts;
            let due = epoch_ms(SystemTime::now() + wait);
            self.store.reschedule(event.key(), event.attempts, due);
            if stopping {
                return;
            }
            tracing::info!(request_id = %event.request_id(), function = event.function.name(), attempt = event.attempts, "asynchronous invocation failed; retrying in {wait:?}");
            self.delay(Instant::now() + wait, event);
            return;
        }
        self.fail(&event, "RetriesExhausted", Some(&completed));
    }

    /// An event that will not succeed: its record to the failure destination (else the
    /// dead-letter file), and out of the store.
    fn fail(&self, event: &AsyncEvent, condition: &str, completed: Option<&Completed>) {
        super::metrics::async_event_dropped(event.function.name());
        match event.function.asynchronous.on_failure.clone() {
            Some(destination) => {
                let record = destination_record(event, condition, completed);
                self.deliver(event, &destination, record);
            }
            None => self.dead_letter(event, condition, completed),
        }
        self.store.remove(event.key());
    }

    /// Sends a record to a destination, on a task of its own: appended to a file, an
    /// asynchronous invocation of another function (durable like any), or a message to an SQS
    /// queue. A delivery that fails is retried twice; one that still fails is counted
    /// (`DestinationDeliveryFailures`, as Lambda's metric) and logged with the whole record,
    /// never dropped silently.
    fn deliver(&self, event: &AsyncEvent, destination: &Destination, record: serde_json::Value) {
        let delivery = Delivery {
            request_id: event.request_id().to_owned(),
            function: event.function.name().to_owned(),
            destination: destination.clone(),
            record,
            queue: EventQueue {
                tx: self.tx.clone(),
                store: self.store.clone(),
                app: Arc::clone(&self.app),
            },
            first_wait: self.retry_delay.min(DESTINATION_RETRY_MAX_FIRST_WAIT),
        };
        tokio::spawn(delivery.run());
    }

    /// Appends the event's record to its function's dead-letter file. If even that fails, the
    /// record goes to lamina's log, whole.
    fn dead_letter(&self, event: &AsyncEvent, condition: &str, completed: Option<&Completed>) {
        let record = destination_record(event, condition, completed);
        let path = self
            .dead_letters
            .join(format!("{}.jsonl", event.function.name()));
        let written = append_line(&path, &record);
        match written {
            Ok(()) => tracing::warn!(
                request_id = %event.request_id(),
                function = event.function.name(),
                condition,
                "asynchronous invocation written to {}",
                path.display()
            ),
            Err(e) => tracing::error!(
                request_id = %event.request_id(),
                "cannot write the dead letter {}: {e}; the record: {record}",
                path.display()
            ),
        }
    }
}

/// The first wait before a failed delivery to a destination is tried again (or the
/// queue's `retry_delay`, if shorter); the second waits twice as long.
const DESTINATION_RETRY_MAX_FIRST_WAIT: Duration = Duration::from_secs(1);

/// Deliveries to a destination: the first and this many retries.
const DESTINATION_ATTEMPTS: u32 = 3;

/// One record on its way to a destination.
struct Delivery {
    request_id: String,
    function: String,
    destination: Destination,
    record: serde_json::Value,
    /// For destinations that are functions.
    queue: EventQueue,
    first_wait: Duration,
}

impl Delivery {
    async fn run(self) {
        let mut wait = self.first_wait;
        for attempt in 1..=DESTINATION_ATTEMPTS {
            let Err(e) = self.attempt().await else {
                return;
            };
            if attempt == DESTINATION_ATTEMPTS {
                super::metrics::destination_delivery_failed(&self.function);
                tracing::error!(
                    request_id = %self.request_id,
                    function = %self.function,
                    "destination {}: {e}; not delivered after {DESTINATION_ATTEMPTS} attempts; the record: {}",
                    self.destination, self.record
                );
                return;
            }
            tracing::warn!(request_id = %self.request_id, "destination {}: {e}; trying again in {wait:?}", self.destination);
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }

    async fn attempt(&self) -> Result<(), String> {
        match &self.destination {
            Destination::File(path) => append_line(path, &self.record).map_err(|e| e.to_string()),
            Destination::Function(name) => {
                let target = self
                    .queue
                    .app
                    .get()
                    .and_then(std::sync::Weak::upgrade)
                    .and_then(|app| app.served().functions.get(name).cloned())
                    .ok_or("the function is not served")?;
                let request = InvokeRequest {
                    payload: Bytes::from(self.record.to_string()),
                    ..Default::default()
                };
                let next = AsyncEvent::new(target, uuid::Uuid::new_v4().to_string(), request);
                self.queue.enqueue(next).await.map_err(|e| e.to_string())
            }
            Destination::Sqs(queue) => super::sqs::send_message(queue, self.record.to_string())
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// Appends `record` to the JSON Lines file at `path` (its directory made if missing). One
/// write per record: appends of whole lines do not interleave.
fn append_line(path: &std::path::Path, record: &serde_json::Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(format!("{record}\n").as_bytes())
}

async fn attempt(event: Box<AsyncEvent>, tx: mpsc::UnboundedSender<Msg>) {
    let msg = match event.function.pool.try_invoke(event.request.clone()).await {
        Ok(completed) => Msg::Done(event, completed),
        Err(Throttled) => Msg::Throttled(event),
    };
    let _ = tx.send(msg);
}

/// A record in the shape of Lambda's destination records: `condition` is `Success`,
/// `RetriesExhausted` or `EventAgeExceeded`.
fn destination_record(
    event: &AsyncEvent,
    condition: &str,
    completed: Option<&Completed>,
) -> serde_json::Value {
    let payload = |bytes: &Bytes| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into()))
    };
    let mut record = serde_json::json!({
        "version": "1.0",
        "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "requestContext": {
            "requestId": event.request_id(),
            "functionArn": format!("{}:{FUNCTION_VERSION}", event.function.pool.spec().arn),
            "condition": condition,
            "approximateInvokeCount": event.attempts,
        },
        "requestPayload": payload(&event.request.payload),
    });
    if let Some(completed) = completed {
        record["responseContext"] = serde_json::json!({
            "statusCode": 200,
            "executedVersion": FUNCTION_VERSION,
        });
        if completed.error_type().is_some() {
            record["responseContext"]["functionError"] = "Unhandled".into();
        }
        record["responsePayload"] = payload(&completed.body());
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_come_out_when_due_soonest_first_and_ties_in_the_order_held_back() {
        let now = Instant::now();
        let at = |ms: u64| now + Duration::from_millis(ms);
        let mut delays = Delays::new();
        assert_eq!(delays.next_at(), None);
        assert_eq!(delays.pop_due(at(1_000)), None);
        delays.push(at(30), "c");
        delays.push(at(10), "a");
        delays.push(at(20), "b1");
        delays.push(at(20), "b2");
        delays.push(at(20), "b3");
        assert_eq!(delays.next_at(), Some(at(10)));
        assert_eq!(
            delays.pop_due(at(9)),
            None,
            "nothing is due before its time"
        );
        let mut out = Vec::new();
        while let Some(item) = delays.pop_due(at(20)) {
            out.push(item);
        }
        assert_eq!(out, ["a", "b1", "b2", "b3"]);
        assert_eq!(delays.next_at(), Some(at(30)));
        assert_eq!(delays.pop_due(at(30)), Some("c"));
        assert_eq!(delays.pop_due(at(1_000)), None);
    }
}
