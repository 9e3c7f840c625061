//! One subscriber's delivery: a task that owns its connection and the batch in flight, fed
//! through a [`Feed`] that never waits. The task runs on the courier's thread (`courier.rs`),
//! not on the workers that serve invocations.
//!
//! The records waiting for a batch are a buffer the feed and the task share under a lock
//! held for a push or a take. The feed wakes the task only when there is something to decide:
//! the first record of a batch (its `timeoutMs` starts), a batch's worth, a refused record, a
//! flush, the end. Under load a subscriber gets a record or more per invocation and a batch a
//! second; waking the task for each (a channel message, a poll, a timer set and cancelled) was
//! a measurable part of what telemetry cost an invocation.
//!
//! Lambda's rules (telemetry-api.md; the Runtime Interface Emulator's `subscriber.go`,
//! `client.go`), as lamina keeps them:
//! - A subscriber buffers at most twice its `maxItems` records and `maxBytes` bytes beyond the
//!   batch in flight: a batch filling up, and room for the next while it goes out. A record
//!   that does not fit is dropped at once and counted, so that a slow or stuck listener costs
//!   records, never the function's time. (With room for one batch only, a buffer whose records
//!   stop just short of `maxBytes` refused every record after them, and nothing woke the task
//!   to send it before `timeoutMs`: under load two thirds were dropped with the listener idle.)
//! - A batch goes out when it holds `maxItems` records or `maxBytes` bytes, or `timeoutMs` after
//!   its first record; one request is in flight at a time. lamina sends one sooner, at
//!   [`EAGER_BATCH_BYTES`], when none is in flight: the figures are maximums, and smaller
//!   batches cost the rest of a jailed environment's machine less (see the constant).
//! - HTTP: `POST` of a JSON array, `Content-Type: application/json`, on a kept-alive
//!   connection opened through [`Control::connect`] (the sandbox's own address); a status of 400
//!   or more, a failed connection or no answer within [`Retry::timeout`] is a failed attempt.
//!   TCP: the records as newline-delimited JSON on a kept connection, unacknowledged.
//! - A failed batch is tried again with a doubling backoff, [`Retry::attempts`] times in all,
//!   then dropped and counted. A TCP batch that failed after some of it went out is dropped at
//!   once: TCP has no acknowledgement, and sending it again would hand the listener a cut line
//!   and then the same records twice.
//! - What was dropped is told to the subscriber (when it asked for `platform` records) as
//!   `platform.logsDropped` at the head of its next batch; the news alone makes a batch only
//!   at a flush, so a listener that stays away is not tried again and again for it. Should
//!   that batch be dropped too, the counts it told are told again with its own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};

use super::records::{Audience, Event, Stamped};
use super::subscription::{Buffering, Destination};
use crate::sandbox::{BoxFuture, Control};

/// Lambda's reason for records dropped because the subscriber fell behind (the emulator's
/// wording).
pub const SLOW_CONSUMER: &str = "Some logs were dropped because the downstream consumer is slower than the logs production rate";

/// How many batches' worth of records a subscriber's buffer holds beyond the one in flight.
const BUFFERED_BATCHES: usize = 2;

/// Bytes that make a batch when none is in flight, short of a larger `maxBytes`. Lambda's
/// buffering figures are maximums; under load a subscriber then gets batches that grow with
/// how long it takes over each (what piles up while one is in flight goes out next, up to
/// `maxBytes`) rather than 256 KiB at a time, each a millisecond and more of parsing that
/// holds a core. Measured (design 007, "What telemetry costs"; 8 connections, two cores):
/// under the jail, throughput with a subscriber went from 0.85–0.87 of that without to
/// 0.92–0.93; under the process backend, whose subscribers take the CPU on equal terms with
/// lamina, from 0.89 to 0.86.
const EAGER_BATCH_BYTES: usize = 64 * 1024;

/// How failed deliveries are tried again.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts per batch, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; it doubles for each one after.
    pub backoff: Duration,
    /// An attempt with no answer after this long has failed. Lambda does not say how long
    /// it waits; a listener in the same sandbox answers in milliseconds.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            backoff: Duration::from_millis(100),
            timeout: Duration::from_secs(3),
        }
    }
}

/// A request to send what is buffered now, answered once it is delivered or dropped.
type Flush = oneshot::Sender<()>;

/// Records offered and not yet taken into a batch, with when each came, and their bytes.
#[derive(Debug, Default)]
struct Buffer {
    records: VecDeque<(Instant, Bytes)>,
    bytes: usize,
}

impl Buffer {
    /// Whether it holds a batch's worth (`maxItems` records, or `maxBytes` bytes but at most
    /// [`EAGER_BATCH_BYTES`]): the batch is due, when none is in flight, whatever its timer
    /// says.
    fn holds_a_batch(&self, buffering: &Buffering) -> bool {
        self.records.len() >= buffering.max_items
            || self.bytes >= buffering.max_bytes.min(EAGER_BATCH_BYTES)
    }
}

/// What a feed and its task share.
#[derive(Debug)]
struct Shared {
    buffer: Mutex<Buffer>,
    /// The feed's word that the buffer has something for the task to decide.
    wake: Notify,
    /// The subscription's `maxItems`, `maxBytes` (a batch's worth) and `timeoutMs`.
    buffering: Buffering,
    /// What the buffer holds at most: [`BUFFERED_BATCHES`] batches' worth.
    max_items: usize,
    max_bytes: usize,
    /// Records refused because the buffer was full, and their bytes, not yet reported.
    overflow_records: AtomicU64,
    overflow_bytes: AtomicU64,
}

impl Shared {
    /// The buffer. Nothing panics while holding it; were that to happen, the records in it
    /// are still whole.
    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side of a subscriber: cheap to offer to, never waits.
#[derive(Debug)]
pub struct Feed {
    /// Flush requests; its closing (the feed dropped) tells the task to send what is left
    /// and end.
    tx: mpsc::UnboundedSender<Flush>,
    shared: Arc<Shared>,
}

impl Feed {
    /// Queues `record` unless the subscriber's buffer is full, in which case it is counted as
    /// dropped. Returns whether it was queued.
    pub fn offer(&self, record: Bytes) -> bool {
        let s = &*self.shared;
        let len = record.len();
        let queued = {
            let mut buffer = s.buffer();
            let items = buffer.records.len();
            // A record larger than the whole buffer is still taken into an empty one: it
            // goes out alone, as Lambda sends an over-large event in a batch of its own.
            let fits =
                items < s.max_items && (buffer.bytes == 0 || buffer.bytes + len <= s.max_bytes);
            fits.then(|| {
                let held = buffer.holds_a_batch(&s.buffering);
                buffer.records.push_back((Instant::now(), record));
                buffer.bytes += len;
                // The first record starts its batch's timer; a batch's worth sends it. The
                // records between change nothing the task would act on, nor do those after a
                // batch's worth: the task looks again when the batch in flight is answered.
                items == 0 || (!held && buffer.holds_a_batch(&s.buffering))
            })
        };
        match queued {
            Some(wake) => {
                if wake {
                    s.wake.notify_one();
                }
                true
            }
            None => {
                self.dropped(1, len as u64);
                // A refused record makes a batch at once (see `Delivery::due`).
                s.wake.notify_one();
                false
            }
        }
    }

    /// Counts records this subscriber will not get (for example lines it missed before it
    /// subscribed), to be told in its next `platform.logsDropped`.
    pub fn dropped(&self, records: u64, bytes: u64) {
        self.shared
            .overflow_records
            .fetch_add(records, Ordering::AcqRel);
        self.shared
            .overflow_bytes
            .fetch_add(bytes, Ordering::AcqRel);
    }

    /// Asks for what is buffered to be sent now; resolves once it has been delivered or
    /// dropped (or the task is gone).
    pub fn flush(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(tx);
        rx
    }
}

/// Starts the delivery task of the subscriber `name`; the task ends when its feed is dropped
/// and what it holds has been sent (or dropped).
pub fn spawn(
    name: String,
    destination: Destination,
    buffering: Buffering,
    audience: Audience,
    report_drops: bool,
    control: Arc<dyn Control>,
    retry: Retry,
) -> (Feed, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        buffer: Mutex::default(),
        wake: Notify::new(),
        buffering,
        max_items: buffering.max_items.saturating_mul(BUFFERED_BATCHES),
        max_bytes: buffering.max_bytes.saturating_mul(BUFFERED_BATCHES),
        overflow_records: AtomicU64::new(0),
        overflow_bytes: AtomicU64::new(0),
    });
    let task = Delivery {
        name,
        rx,
        shared: Arc::clone(&shared),
        audience,
        report_drops,
        control,
        retry,
        failed: None,
    };
    (
        Feed { tx, shared },
        super::courier::spawn(task.run(Link::to(destination))),
    )
}

/// Why an attempt at delivering a batch failed. Once the batch is given up, the subscriber is
/// told as `platform.logsDropped` with [`DeliveryError::reason`].
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The listener could not be reached.
    #[error("cannot connect to the listener on port {port}: {source}")]
    Connect {
        /// The listener's port.
        port: u16,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The listener answered with an error status (400 or more).
    #[error("http request failed with status {0}")]
    Status(http::StatusCode),
    /// No answer (HTTP), or the records not written (TCP), within this long.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The request could not be made from the destination (its host or path).
    #[error("{0}")]
    Request(#[from] http::Error),
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// Writing to the TCP listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A TCP batch stopped after part of it went out. It is not tried again: the listener
    /// has a cut line already, and would get the rest twice.
    #[error("{source} after {written} of {total} bytes were written")]
    Cut {
        /// Bytes of the batch that went out.
        written: usize,
        /// The batch's bytes.
        total: usize,
        /// What stopped it.
        source: Box<DeliveryError>,
    },
}

impl DeliveryError {
    /// `platform.logsDropped`'s reason for a batch given up on because of this (the
    /// emulator's words).
    pub fn reason(&self) -> String {
        format!("could not send events: {self}")
    }

    /// Whether another attempt may deliver the batch without the listener getting any of it
    /// twice.
    fn retryable(&self) -> bool {
        !matches!(self, DeliveryError::Cut { .. })
    }
}

/// Drops told in a batch's `platform.logsDropped`: should the batch itself be dropped, the
/// news is lost with it, so the counts are carried back into the next one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Carried {
    records: u64,
    bytes: u64,
}

/// A batch being delivered: its records, kept across attempts.
#[derive(Debug)]
struct Batch {
    /// What goes out: any `platform.logsDropped` first, then the records.
    records: Vec<Bytes>,
    /// The records taken from the buffer (the `platform.logsDropped` news not counted), and
    /// their bytes.
    taken: u64,
    taken_bytes: u64,
    /// The drops the batch tells of.
    carried: Carried,
    attempt: u32,
}

/// The subscriber's listener, and the connection kept to it between batches.
enum Link {
    /// `POST` to `path` on `port`, with `host` as the `Host` header.
    Http {
        port: u16,
        host: String,
        path: String,
        sender: Option<SendRequest<Full<Bytes>>>,
    },
    /// Newline-delimited JSON on a connection to `port`.
    Tcp {
        port: u16,
        stream: Option<TcpStream>,
    },
}

impl Link {
    /// The listener `destination` names, not yet connected.
    fn to(destination: Destination) -> Link {
        match destination {
            Destination::Http { port, host, path } => Link::Http {
                port,
                host,
                path,
                sender: None,
            },
            Destination::Tcp { port } => Link::Tcp { port, stream: None },
        }
    }
}

/// What an attempt gives back: the link (its connection kept when still usable) and how it
/// went.
type Attempt = BoxFuture<'static, (Link, Result<(), DeliveryError>)>;

/// One subscriber's delivery task: the records offered and not yet sent, the batch in flight,
/// and what has been dropped and not yet told. It alone owns them; it shares with its [`Feed`]
/// only the records waiting for a batch, and the counts of those refused.
struct Delivery {
    name: String,
    rx: mpsc::UnboundedReceiver<Flush>,
    shared: Arc<Shared>,
    audience: Audience,
    report_drops: bool,
    control: Arc<dyn Control>,
    retry: Retry,
    /// Records of batches given up on, their bytes and the last reason, not yet told.
    failed: Option<(u64, u64, String)>,
}

impl Delivery {
    /// The loop: take flush requests and the feed's word; whenever nothing is in flight and a
    /// batch is due, send it; on failure wait and try again, or drop it.
    async fn run(mut self, link: Link) {
        let mut link = Some(link);
        let mut in_flight: Option<Attempt> = None;
        let mut batch: Option<Batch> = None;
        let mut retry_at: Option<Instant> = None;
        let mut flushes: Vec<Flush> = Vec::new();
        let mut open = true;
        loop {
            while open {
                match self.rx.try_recv() {
                    Ok(reply) => flushes.push(reply),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            let now = Instant::now();
            if in_flight.is_none() && retry_at.is_none() {
                let force = !flushes.is_empty() || !open;
                if batch.is_none() && self.due(now, force) {
                    batch = Some(self.take_batch());
                }
                if let Some(b) = &batch
                    && let Some(l) = link.take()
                {
                    in_flight = Some(self.attempt(l, &b.records));
                }
            }
            let first = self.shared.buffer().records.front().map(|(at, _)| *at);
            if in_flight.is_none() && batch.is_none() && first.is_none() {
                for flushed in flushes.drain(..) {
                    let _ = flushed.send(());
                }
                if !open {
                    return;
                }
            }
            let batch_due = match (&batch, first) {
                (None, Some(first)) => Some(first + self.shared.buffering.timeout),
                _ => None,
            };
            tokio::select! {
                reply = self.rx.recv(), if open => match reply {
                    Some(reply) => flushes.push(reply),
                    None => open = false,
                },
                () = self.shared.wake.notified() => {}
                (back, result) = async { in_flight.as_mut().expect("polled only while set").await }, if in_flight.is_some() => {
                    in_flight = None;
                    link = Some(back);
                    let Some(mut failed) = batch.take() else { continue };
                    if let Err(error) = result {
                        failed.attempt += 1;
                        if error.retryable() && failed.attempt < self.retry.attempts {
                            let wait = self.retry.backoff.saturating_mul(1 << (failed.attempt - 1).min(16));
                            retry_at = Some(Instant::now() + wait);
                            batch = Some(failed);
                        } else {
                            self.give_up(&failed, &error);
                        }
                    }
                }
                () = crate::timer::sleep_until(retry_at), if retry_at.is_some() => retry_at = None,
                () = crate::timer::sleep_until(batch_due), if batch_due.is_some() => {}
            }
        }
    }

    /// Whether a batch should go out now. Drops alone make a batch only when forced (a flush,
    /// the end): otherwise they go with the next records, so that a listener that stays away
    /// is not tried again and again with nothing but the news of its own losses.
    fn due(&self, now: Instant, force: bool) -> bool {
        let buffer = self.shared.buffer();
        let Some((first, _)) = buffer.records.front() else {
            return force && self.drops_to_report();
        };
        force
            || buffer.holds_a_batch(&self.shared.buffering)
            // A record was refused: the buffer is full (records of uneven sizes stop short of
            // `maxBytes`), and waiting for the timer only loses more.
            || self.shared.overflow_records.load(Ordering::Acquire) > 0
            || now >= *first + self.shared.buffering.timeout
    }

    fn drops_to_report(&self) -> bool {
        self.report_drops
            && (self.failed.is_some() || self.shared.overflow_records.load(Ordering::Acquire) > 0)
    }

    /// The next batch: `platform.logsDropped` for what was refused or given up on since the
    /// last one, then the oldest records, at most `maxItems` of them and `maxBytes` (at least
    /// one). The drops it tells of are counted in the batch, to be told again should it fail.
    fn take_batch(&mut self) -> Batch {
        let mut records = Vec::new();
        let mut carried = Carried::default();
        let dropped = self.shared.overflow_records.swap(0, Ordering::AcqRel);
        let dropped_bytes = self.shared.overflow_bytes.swap(0, Ordering::AcqRel);
        if dropped > 0 {
            tracing::debug!(subscriber = %self.name, dropped, "telemetry records dropped: the subscriber falls behind");
        }
        let failed = self.failed.take();
        let told = [
            (dropped > 0).then(|| (dropped, dropped_bytes, SLOW_CONSUMER.to_owned())),
            failed,
        ];
        for (dropped_records, dropped_bytes, reason) in told.into_iter().flatten() {
            if !self.report_drops {
                break;
            }
            carried.records += dropped_records;
            carried.bytes += dropped_bytes;
            let event = Event::LogsDropped {
                dropped_bytes,
                dropped_records,
                reason,
            };
            records.extend(Stamped::now(event).render(self.audience));
        }
        let (mut taken, mut taken_bytes) = (0usize, 0usize);
        let mut buffer = self.shared.buffer();
        while let Some((_, record)) = buffer.records.front() {
            let fits = taken < self.shared.buffering.max_items
                && (taken == 0 || taken_bytes + record.len() <= self.shared.buffering.max_bytes);
            if !fits {
                break;
            }
            let Some((_, record)) = buffer.records.pop_front() else {
                break;
            };
            taken += 1;
            taken_bytes += record.len();
            records.push(record);
        }
        buffer.bytes -= taken_bytes;
        drop(buffer);
        Batch {
            records,
            taken: taken as u64,
            taken_bytes: taken_bytes as u64,
            carried,
            attempt: 0,
        }
    }

    /// A batch that failed for good: its records are dropped, and told in the next batch
    /// together with the drops it was to tell of.
    fn give_up(&mut self, batch: &Batch, error: &DeliveryError) {
        tracing::warn!(subscriber = %self.name, records = batch.taken, %error,
            "telemetry records dropped: the subscriber's listener did not take them");
        if !self.report_drops {
            return;
        }
        let (records, bytes, last) = self.failed.get_or_insert((0, 0, String::new()));
        *records += batch.taken + batch.carried.records;
        *bytes += batch.taken_bytes + batch.carried.bytes;
        *last = error.reason();
    }

    /// One attempt at delivering `records` through `link`, bounded by the retry timeout.
    fn attempt(&self, link: Link, records: &[Bytes]) -> Attempt {
        let control = Arc::clone(&self.control);
        let timeout = self.retry.timeout;
        match link {
            Link::Http {
                port,
                host,
                path,
                sender,
            } => {
                let body = json_array(records);
                Box::pin(async move {
                    let attempt = post(sender, &control, port, &host, &path, body);
                    let (sender, result) = match tokio::time::timeout(timeout, attempt).await {
                        Ok(done) => done,
                        Err(_) => (None, Err(DeliveryError::Timeout(timeout))),
                    };
                    let link = Link::Http {
                        port,
                        host,
                        path,
                        sender,
                    };
                    (link, result)
                })
            }
            Link::Tcp { port, stream } => {
                let lines = json_lines(records);
                Box::pin(async move {
                    let (stream, result) =
                        write_lines(stream, &control, port, lines, timeout).await;
                    (Link::Tcp { port, stream }, result)
                })
            }
        }
    }
}

/// `[r1,r2,…]`
fn json_array(records: &[Bytes]) -> Bytes {
    let len = records.iter().map(|r| r.len() + 1).sum::<usize>() + 2;
    let mut body = BytesMut::with_capacity(len);
    body.extend_from_slice(b"[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b",");
        }
        body.extend_from_slice(record);
    }
    body.extend_from_slice(b"]");
    body.freeze()
}

/// `r1\nr2\n…`
fn json_lines(records: &[Bytes]) -> Bytes {
    let mut lines = BytesMut::with_capacity(records.iter().map(|r| r.len() + 1).sum());
    for record in records {
        lines.extend_from_slice(record);
        lines.extend_from_slice(b"\n");
    }
    lines.freeze()
}

/// How much of a listener's answer is read (and dropped): it says nothing lamina needs.
const ANSWER_LIMIT: usize = 64 * 1024;

/// One `POST`, on the kept connection if it is still open, else on a new one. A kept
/// connection the listener closed meanwhile (an HTTP/1.0 server closes after each answer) is
/// replaced at once, not counted as a failed attempt.
async fn post(
    sender: Option<SendRequest<Full<Bytes>>>,
    control: &Arc<dyn Control>,
    port: u16,
    host: &str,
    path: &str,
    body: Bytes,
) -> (Option<SendRequest<Full<Bytes>>>, Result<(), DeliveryError>) {
    let mut kept = sender.filter(|s| !s.is_closed());
    loop {
        let reused = kept.is_some();
        let mut current = match kept.take() {
            Some(s) => s,
            None => match connect(control, port).await {
                Ok(s) => s,
                Err(e) => return (None, Err(e)),
            },
        };
        let request = http::Request::post(path)
            .header(http::header::HOST, host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()));
        let request = match request {
            Ok(r) => r,
            Err(e) => return (None, Err(DeliveryError::Request(e))),
        };
        let sent = match current.ready().await {
            Ok(()) => current.send_request(request).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(response) => {
                let status = response.status();
                // The answer is read so the connection can carry the next request.
                let read = Limited::new(response.into_body(), ANSWER_LIMIT)
                    .collect()
                    .await;
                let keep = read.is_ok().then_some(current);
                return match status.as_u16() {
                    0..400 => (keep, Ok(())),
                    _ => (keep, Err(DeliveryError::Status(status))),
                };
            }
            // Nothing was answered on a kept connection: it was closed under us. A request
            // the listener never answered may be sent again; once, on a new connection.
            Err(_) if reused => {}
            Err(e) => return (None, Err(DeliveryError::Http(e))),
        }
    }
}

/// A new HTTP/1.1 connection to the listener on `port`.
async fn connect(
    control: &Arc<dyn Control>,
    port: u16,
) -> Result<SendRequest<Full<Bytes>>, DeliveryError> {
    let stream = control
        .connect(port)
        .await
        .map_err(|source| DeliveryError::Connect { port, source })?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "telemetry connection ended");
        }
    });
    Ok(sender)
}

/// Whether a kept connection may still carry records. A listener never writes, so a read
/// that would block means open; the end of the stream means the listener hung up. Writing
/// to such a connection would still succeed once (the kernel takes the bytes, the peer
/// answers with a reset), and that batch would vanish uncounted.
fn still_open(stream: &TcpStream) -> bool {
    match stream.try_read(&mut [0u8; 1]) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(0) => false,
        // It said something, which it need not: the connection is open all the same.
        Ok(_) => true,
    }
}

/// Writes `lines` on the kept TCP connection, or a new one, within `timeout`. Once any byte
/// of them went out, a failure is [`DeliveryError::Cut`]: the batch is not sent again.
async fn write_lines(
    stream: Option<TcpStream>,
    control: &Arc<dyn Control>,
    port: u16,
    lines: Bytes,
    timeout: Duration,
) -> (Option<TcpStream>, Result<(), DeliveryError>) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = match stream.filter(still_open) {
        Some(s) => s,
        None => match tokio::time::timeout_at(deadline, control.connect(port)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return (None, Err(DeliveryError::Connect { port, source })),
            Err(_) => return (None, Err(DeliveryError::Timeout(timeout))),
        },
    };
    let mut written = 0;
    while written < lines.len() {
        let error = match tokio::time::timeout_at(deadline, stream.write(&lines[written..])).await {
            Ok(Ok(0)) => DeliveryError::Io(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => {
                written += n;
                continue;
            }
            Ok(Err(e)) => DeliveryError::Io(e),
            Err(_) => DeliveryError::Timeout(timeout),
        };
        let error = match written {
            0 => error,
            written => DeliveryError::Cut {
                written,
                total: lines.len(),
                source: Box::new(error),
            },
        };
        return (None, Err(error));
    }
    (Some(stream), Ok(()))
}

#[cfg(test)]
mod tests;
