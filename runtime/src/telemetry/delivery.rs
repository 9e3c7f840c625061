//! One subscriber's delivery: a task that owns its buffer and its connection, fed through a
//! [`Feed`] that never waits.
//!
//! Lambda's rules (telemetry-api.md; the Runtime Interface Emulator's `subscriber.go`,
//! `client.go`), as lamina keeps them:
//! - A subscriber buffers at most its `maxItems` records and `maxBytes` bytes beyond the batch
//!   in flight; a record that does not fit is dropped at once and counted, so that a slow or
//!   stuck listener costs records, never the function's time.
//! - A batch goes out when it holds `maxItems` records or `maxBytes` bytes, or `timeoutMs` after
//!   its first record; one request is in flight at a time.
//! - HTTP: `POST` of a JSON array, `Content-Type: application/json`, on a kept-alive
//!   connection opened through [`Control::connect`] (the sandbox's own address); a status of 400
//!   or more, a failed connection or no answer within [`Retry::timeout`] is a failed attempt.
//!   TCP: the records as newline-delimited JSON on a kept connection, unacknowledged.
//! - A failed batch is tried again with a doubling backoff, [`Retry::attempts`] times in all,
//!   then dropped and counted.
//! - What was dropped is told to the subscriber (when it asked for `platform` records) as
//!   `platform.logsDropped` at the head of its next batch; the news alone makes a batch only
//!   at a flush, so a listener that stays away is not tried again and again for it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::records::{Audience, Event, Stamped};
use super::subscription::{Buffering, Destination};
use crate::sandbox::{BoxFuture, Control};

/// Lambda's reason for records dropped because the subscriber fell behind (the emulator's
/// wording).
pub const SLOW_CONSUMER: &str = "Some logs were dropped because the downstream consumer is slower than the logs production rate";

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

/// What goes through a feed, in order.
#[derive(Debug)]
enum Item {
    /// A rendered record.
    Record(Bytes),
    /// Send what is buffered now; answer once it is delivered or dropped.
    Flush(oneshot::Sender<()>),
}

/// The counts a feed and its task share.
#[derive(Debug)]
struct Shared {
    /// Records offered and not yet taken into a batch, and their bytes.
    queued_items: AtomicUsize,
    queued_bytes: AtomicUsize,
    max_items: usize,
    max_bytes: usize,
    /// Records refused because the buffer was full, and their bytes, not yet reported.
    overflow_records: AtomicU64,
    overflow_bytes: AtomicU64,
}

/// The sending side of a subscriber: cheap to offer to, never waits.
#[derive(Debug)]
pub struct Feed {
    tx: mpsc::UnboundedSender<Item>,
    shared: Arc<Shared>,
}

impl Feed {
    /// Queues `record` unless the subscriber's buffer is full, in which case it is counted as
    /// dropped. Returns whether it was queued.
    pub fn offer(&self, record: Bytes) -> bool {
        let s = &self.shared;
        let len = record.len();
        let items = s.queued_items.fetch_add(1, Ordering::AcqRel);
        let bytes = s.queued_bytes.fetch_add(len, Ordering::AcqRel);
        // A record larger than the whole buffer is still taken into an empty one: it goes
        // out alone, as Lambda sends an over-large event in a batch of its own.
        let fits = items < s.max_items && (bytes == 0 || bytes + len <= s.max_bytes);
        if fits && self.tx.send(Item::Record(record)).is_ok() {
            return true;
        }
        s.queued_items.fetch_sub(1, Ordering::AcqRel);
        s.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        self.dropped(1, len as u64);
        false
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
        let _ = self.tx.send(Item::Flush(tx));
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
        queued_items: AtomicUsize::new(0),
        queued_bytes: AtomicUsize::new(0),
        max_items: buffering.max_items,
        max_bytes: buffering.max_bytes,
        overflow_records: AtomicU64::new(0),
        overflow_bytes: AtomicU64::new(0),
    });
    let task = Delivery {
        name,
        rx,
        shared: Arc::clone(&shared),
        destination,
        buffering,
        audience,
        report_drops,
        control,
        retry,
        pending: VecDeque::new(),
        pending_bytes: 0,
        failed: None,
    };
    (Feed { tx, shared }, tokio::spawn(task.run()))
}

/// A batch being delivered: its records, kept across attempts.
#[derive(Debug)]
struct Batch {
    records: Vec<Bytes>,
    bytes: usize,
    attempt: u32,
}

/// The connection kept between batches.
enum Link {
    Http(Option<SendRequest<Full<Bytes>>>),
    Tcp(Option<TcpStream>),
}

/// What an attempt gives back: the connection (to keep) and how it went.
type Attempt = BoxFuture<'static, (Link, Result<(), String>)>;

struct Delivery {
    name: String,
    rx: mpsc::UnboundedReceiver<Item>,
    shared: Arc<Shared>,
    destination: Destination,
    buffering: Buffering,
    audience: Audience,
    report_drops: bool,
    control: Arc<dyn Control>,
    retry: Retry,
    /// Records not yet in a batch, with when each arrived.
    pending: VecDeque<(Instant, Bytes)>,
    pending_bytes: usize,
    /// Records of batches given up on, their bytes and the last reason, not yet told.
    failed: Option<(u64, u64, String)>,
}

impl Delivery {
    /// The loop: take records and flush requests; whenever nothing is in flight and a batch
    /// is due, send it; on failure wait and try again, or drop it.
    async fn run(mut self) {
        let mut link = Some(match self.destination {
            Destination::Http { .. } => Link::Http(None),
            Destination::Tcp { .. } => Link::Tcp(None),
        });
        let mut in_flight: Option<Attempt> = None;
        let mut batch: Option<Batch> = None;
        let mut retry_at: Option<Instant> = None;
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        let mut open = true;
        loop {
            // Everything already offered joins `pending` first: a batch made now (a refused
            // record makes one at once) takes all that fits, not just what was read so far.
            while open {
                match self.rx.try_recv() {
                    Ok(Item::Record(record)) => {
                        self.pending_bytes += record.len();
                        self.pending.push_back((Instant::now(), record));
                    }
                    Ok(Item::Flush(reply)) => flushes.push(reply),
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
            if in_flight.is_none() && batch.is_none() && self.pending.is_empty() {
                for flushed in flushes.drain(..) {
                    let _ = flushed.send(());
                }
                if !open {
                    return;
                }
            }
            let batch_due = match (&batch, self.pending.front()) {
                (None, Some((first, _))) => Some(*first + self.buffering.timeout),
                _ => None,
            };
            tokio::select! {
                item = self.rx.recv(), if open => match item {
                    Some(Item::Record(record)) => {
                        self.pending_bytes += record.len();
                        self.pending.push_back((Instant::now(), record));
                    }
                    Some(Item::Flush(reply)) => flushes.push(reply),
                    None => open = false,
                },
                (back, result) = async { in_flight.as_mut().expect("polled only while set").await }, if in_flight.is_some() => {
                    in_flight = None;
                    link = Some(back);
                    let Some(mut failed) = batch.take() else { continue };
                    if let Err(reason) = result {
                        failed.attempt += 1;
                        if failed.attempt < self.retry.attempts {
                            let wait = self.retry.backoff.saturating_mul(1 << (failed.attempt - 1).min(16));
                            retry_at = Some(Instant::now() + wait);
                            batch = Some(failed);
                        } else {
                            self.give_up(&failed, &reason);
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
        let Some((first, _)) = self.pending.front() else {
            return force && self.drops_to_report();
        };
        force
            || self.pending.len() >= self.buffering.max_items
            || self.pending_bytes >= self.buffering.max_bytes
            // A record was refused: the buffer is full (records of uneven sizes stop short of
            // `maxBytes`), and waiting for the timer only loses more.
            || self.shared.overflow_records.load(Ordering::Acquire) > 0
            || now >= *first + self.buffering.timeout
    }

    fn drops_to_report(&self) -> bool {
        self.report_drops
            && (self.failed.is_some() || self.shared.overflow_records.load(Ordering::Acquire) > 0)
    }

    /// The next batch: `platform.logsDropped` for what was refused since the last one, then
    /// the oldest records, at most `maxItems` of them and `maxBytes` (at least one).
    fn take_batch(&mut self) -> Batch {
        let mut records = Vec::new();
        let mut bytes = 0;
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
            let event = Event::LogsDropped {
                dropped_bytes,
                dropped_records,
                reason,
            };
            for record in Stamped::now(event).render(self.audience) {
                bytes += record.len();
                records.push(record);
            }
        }
        let (mut taken, mut taken_bytes) = (0usize, 0usize);
        while let Some((_, record)) = self.pending.front() {
            let fits = taken < self.buffering.max_items
                && (taken == 0 || taken_bytes + record.len() <= self.buffering.max_bytes);
            if !fits {
                break;
            }
            let Some((_, record)) = self.pending.pop_front() else {
                break;
            };
            taken += 1;
            taken_bytes += record.len();
            records.push(record);
        }
        self.pending_bytes -= taken_bytes;
        self.shared.queued_items.fetch_sub(taken, Ordering::AcqRel);
        self.shared
            .queued_bytes
            .fetch_sub(taken_bytes, Ordering::AcqRel);
        Batch {
            records,
            bytes: bytes + taken_bytes,
            attempt: 0,
        }
    }

    /// A batch that failed every attempt: dropped, and told in the next one.
    fn give_up(&mut self, batch: &Batch, reason: &str) {
        tracing::warn!(subscriber = %self.name, records = batch.records.len(), %reason,
            "telemetry records dropped: the subscriber's listener did not take them");
        if !self.report_drops {
            return;
        }
        let (records, bytes, last) = self.failed.get_or_insert((0, 0, String::new()));
        *records += batch.records.len() as u64;
        *bytes += batch.bytes as u64;
        *last = format!("could not send events: {reason}");
    }

    /// One attempt at delivering `records`, bounded by the retry timeout.
    fn attempt(&self, link: Link, records: &[Bytes]) -> Attempt {
        let control = Arc::clone(&self.control);
        let timeout = self.retry.timeout;
        match (&self.destination, link) {
            (Destination::Http { port, host, path }, Link::Http(sender)) => {
                let body = json_array(records);
                let (port, host, path) = (*port, host.clone(), path.clone());
                Box::pin(async move {
                    let attempt = post(sender, control, port, &host, &path, body);
                    match tokio::time::timeout(timeout, attempt).await {
                        Ok((sender, result)) => (Link::Http(sender), result),
                        Err(_) => (
                            Link::Http(None),
                            Err(format!("no answer within {} ms", timeout.as_millis())),
                        ),
                    }
                })
            }
            (Destination::Tcp { port }, Link::Tcp(stream)) => {
                let lines = json_lines(records);
                let port = *port;
                Box::pin(async move {
                    let attempt = write_lines(stream, control, port, lines);
                    match tokio::time::timeout(timeout, attempt).await {
                        Ok((stream, result)) => (Link::Tcp(stream), result),
                        Err(_) => (
                            Link::Tcp(None),
                            Err(format!("not written within {} ms", timeout.as_millis())),
                        ),
                    }
                })
            }
            // The link is made from the destination, so they always agree.
            (_, link) => Box::pin(std::future::ready((
                link,
                Err("internal: destination and connection disagree".to_owned()),
            ))),
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
    control: Arc<dyn Control>,
    port: u16,
    host: &str,
    path: &str,
    body: Bytes,
) -> (Option<SendRequest<Full<Bytes>>>, Result<(), String>) {
    let reused = sender.as_ref().is_some_and(|s| !s.is_closed());
    let mut sender = sender.filter(|s| !s.is_closed());
    for fresh in [false, true] {
        if fresh && !reused {
            break;
        }
        let mut current = match sender.take() {
            Some(s) if !fresh => s,
            _ => match connect(&control, port).await {
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
            Err(e) => return (None, Err(e.to_string())),
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
                    _ => (
                        keep,
                        Err(format!("http request failed with status {status}")),
                    ),
                };
            }
            // Nothing was answered on a kept connection: it was closed under us.
            Err(_) if !fresh && reused => continue,
            Err(e) => return (None, Err(e.to_string())),
        }
    }
    (None, Err("no connection".to_owned()))
}

async fn connect(
    control: &Arc<dyn Control>,
    port: u16,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = control
        .connect(port)
        .await
        .map_err(|e| format!("cannot connect to the listener on port {port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "telemetry connection ended");
        }
    });
    Ok(sender)
}

/// Writes `lines` on the kept TCP connection, or a new one.
async fn write_lines(
    stream: Option<TcpStream>,
    control: Arc<dyn Control>,
    port: u16,
    lines: Bytes,
) -> (Option<TcpStream>, Result<(), String>) {
    let mut stream = match stream {
        Some(s) => s,
        None => match control.connect(port).await {
            Ok(s) => s,
            Err(e) => {
                return (
                    None,
                    Err(format!(
                        "cannot connect to the listener on port {port}: {e}"
                    )),
                );
            }
        },
    };
    match stream.write_all(&lines).await {
        Ok(()) => (Some(stream), Ok(())),
        Err(e) => (None, Err(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
