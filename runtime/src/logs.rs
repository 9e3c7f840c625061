//! The function's log stream. Everything an environment's processes write to stdout or stderr
//! goes into one pipe, whose lines reach a [`LogSink`] in order, interleaved with Lambda's
//! platform lines (`START`, `END`, `REPORT`) in the places CloudWatch shows them.
//!
//! One [`LogPump`] task per environment is the only writer of that environment's lines. The
//! environment queues platform lines to it ([`LogPump::platform`]) without waiting; before
//! writing one, the pump drains whatever the pipe holds at that moment. A function writes its
//! output before it posts its response, so that output is in the pipe before the `END` line is
//! queued: no complete line of an invocation can land after its `END`. The other way round,
//! the environment hands an event over only once its `START` is ordered before whatever the
//! runtime writes next ([`LogPump::settle`]): for a pipe, once it has been written.
//!
//! A runtime in the host process (WASM) has no pipe: its output is queued to the pump by a
//! [`LogWriter`] on the same channel as the platform lines, so the queue's order is the log's
//! order and nothing needs waiting for. Its writer is held back (the guest waits) while more
//! than [`WRITER_BUDGET`] bytes are queued, so a guest that logs faster than the sink takes
//! lines cannot grow the queue without bound. A final line without a newline waits for its
//! newline (or end of file). Logging stays off the invocation's critical path.

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::config::lambda_env::FUNCTION_VERSION;

/// CloudWatch's largest log event; a longer line without a newline is cut here.
const MAX_LINE_BYTES: usize = 256 * 1024;

/// Where log lines go. Implementations must be cheap: they are called on the pump's task.
pub trait LogSink: Send + Sync + fmt::Debug {
    /// One line, without its newline.
    fn line(&self, line: &[u8]);
}

/// Writes lines to the process's stderr, as `lamina invoke` shows them.
#[derive(Debug, Default)]
pub struct StderrSink;

impl LogSink for StderrSink {
    fn line(&self, line: &[u8]) {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        // A closed stderr must not take the host down: the log line is simply lost.
        let _ = err.write_all(line).and_then(|()| err.write_all(b"\n"));
    }
}

/// Writes lines to the process's stderr with the function's name in front, for a server
/// whose functions share one stderr (CloudWatch would keep one log group per function).
#[derive(Debug)]
pub struct NamedStderrSink {
    prefix: Vec<u8>,
}

impl NamedStderrSink {
    /// Lines of `function` are written as `[function] line`.
    pub fn new(function: &str) -> Self {
        NamedStderrSink {
            prefix: format!("[{function}] ").into_bytes(),
        }
    }
}

impl LogSink for NamedStderrSink {
    fn line(&self, line: &[u8]) {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = err
            .write_all(&self.prefix)
            .and_then(|()| err.write_all(line))
            .and_then(|()| err.write_all(b"\n"));
    }
}

/// Keeps lines in memory; for tests.
#[derive(Debug, Default)]
pub struct MemorySink {
    lines: Mutex<Vec<String>>,
}

impl MemorySink {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl LogSink for MemorySink {
    fn line(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line).into_owned();
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }
}

/// Platform lines to write once the pipe has been drained. A closure, so that what is costly
/// to know (peak memory, for REPORT) is read on the pump's task, not the environment's.
pub(crate) type PlatformLines = Box<dyn FnOnce() -> Vec<String> + Send>;

/// Reads an environment's output (its pipe, or what its [`LogWriter`] queues) and forwards it
/// line by line, with platform lines in their places.
#[derive(Debug)]
pub(crate) struct LogPump {
    tx: mpsc::UnboundedSender<PumpMsg>,
    /// Whether output arrives through a pipe (and so can overtake queued lines).
    piped: bool,
}

/// The environment's log before its pump runs: the sandbox takes a [`LogWriter`] from it when
/// its runtime lives in the host process, then the pump starts on the same queue.
#[derive(Debug)]
pub(crate) struct LogQueue {
    tx: mpsc::UnboundedSender<PumpMsg>,
    msgs: mpsc::UnboundedReceiver<PumpMsg>,
    budget: Arc<Budget>,
}

/// How many bytes of a [`LogWriter`]'s output may wait in the pump's queue before the writer
/// waits.
pub const WRITER_BUDGET: usize = 1024 * 1024;

/// The bytes a [`LogWriter`] has queued and the pump not yet taken.
#[derive(Debug, Default)]
struct Budget {
    queued: AtomicUsize,
    taken: tokio::sync::Notify,
}

/// Queues an in-process runtime's output (stdout and stderr alike) to its environment's log,
/// behind the platform lines queued before it.
#[derive(Debug, Clone)]
pub struct LogWriter {
    tx: mpsc::UnboundedSender<PumpMsg>,
    budget: Arc<Budget>,
}

impl LogWriter {
    /// How many bytes may be written now without exceeding the budget (0: wait for
    /// [`LogWriter::ready`]).
    pub fn capacity(&self) -> usize {
        WRITER_BUDGET.saturating_sub(self.budget.queued.load(Ordering::Acquire))
    }

    /// Queues `bytes`. Always accepted (a caller told it had room may have been overtaken by
    /// another writer): the budget is a bound on waiting, not a hard cap.
    pub fn write(&self, bytes: bytes::Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.budget.queued.fetch_add(bytes.len(), Ordering::AcqRel);
        if let Err(e) = self.tx.send(PumpMsg::Output(bytes))
            && let PumpMsg::Output(bytes) = e.0
        {
            // The pump is gone (the environment is ending): the output goes nowhere.
            self.budget.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
        }
    }

    /// Returns once there is room in the budget, or the pump is gone.
    pub async fn ready(&self) {
        loop {
            let taken = self.budget.taken.notified();
            let mut taken = std::pin::pin!(taken);
            taken.as_mut().enable();
            if self.capacity() > 0 || self.tx.is_closed() {
                return;
            }
            taken.await;
        }
    }
}

impl LogQueue {
    pub(crate) fn new() -> LogQueue {
        let (tx, msgs) = mpsc::unbounded_channel();
        LogQueue {
            tx,
            msgs,
            budget: Arc::default(),
        }
    }

    /// A writer for a runtime in the host process.
    pub(crate) fn writer(&self) -> LogWriter {
        LogWriter {
            tx: self.tx.clone(),
            budget: Arc::clone(&self.budget),
        }
    }

    /// Starts pumping into `sink`: the queue, and the read end of a pipe when the runtime has
    /// one.
    pub(crate) fn start(
        self,
        read_end: Option<OwnedFd>,
        sink: Arc<dyn LogSink>,
    ) -> std::io::Result<LogPump> {
        let rx = read_end.map(pipe::Receiver::from_owned_fd).transpose()?;
        let piped = rx.is_some();
        tokio::spawn(pump(rx, self.msgs, self.budget, sink));
        Ok(LogPump { tx: self.tx, piped })
    }
}

enum PumpMsg {
    Platform(PlatformLines),
    /// Output of an in-process runtime.
    Output(bytes::Bytes),
    Flush(oneshot::Sender<()>),
    /// From here on, lines are also kept for an invocation's log tail.
    TailStart,
    /// Stop keeping lines and hand over the last [`TAIL_BYTES`] of them.
    TailEnd(TailFn),
}

/// Receives an invocation's log tail (`X-Amz-Log-Result`).
pub(crate) type TailFn = Box<dyn FnOnce(bytes::Bytes) + Send>;

/// How much of an invocation's log the Invoke API returns with `X-Amz-Log-Type: Tail`: 4 KB.
pub const TAIL_BYTES: usize = 4 * 1024;

impl fmt::Debug for PumpMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PumpMsg::Platform(_) => "Platform",
            PumpMsg::Output(_) => "Output",
            PumpMsg::Flush(_) => "Flush",
            PumpMsg::TailStart => "TailStart",
            PumpMsg::TailEnd(_) => "TailEnd",
        })
    }
}

impl LogPump {
    /// Returns once the lines queued so far are ordered before anything the runtime writes
    /// from now on: at once for an in-process runtime (its output joins the same queue); for
    /// a pipe, once they have been written ([`LogPump::flush`]).
    pub(crate) async fn settle(&self) {
        if self.piped {
            self.flush().await;
        }
    }

    /// Queues platform lines: they are written after everything the pipe holds now.
    pub(crate) fn platform(&self, lines: PlatformLines) {
        let _ = self.tx.send(PumpMsg::Platform(lines));
    }

    /// Starts keeping lines for an invocation's log tail.
    pub(crate) fn tail_start(&self) {
        let _ = self.tx.send(PumpMsg::TailStart);
    }

    /// Hands the lines kept since [`LogPump::tail_start`] to `to`, once everything queued
    /// before has been written; an empty tail if the pump is gone.
    pub(crate) fn tail_end(&self, to: TailFn) {
        if let Err(e) = self.tx.send(PumpMsg::TailEnd(to))
            && let PumpMsg::TailEnd(to) = e.0
        {
            to(bytes::Bytes::new());
        }
    }

    /// Returns once everything queued and written to the pipe before this call has reached
    /// the sink.
    pub(crate) async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(PumpMsg::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }
}

async fn pump(
    mut rx: Option<pipe::Receiver>,
    mut msgs: mpsc::UnboundedReceiver<PumpMsg>,
    budget: Arc<Budget>,
    sink: Arc<dyn LogSink>,
) {
    let sink = &mut Tee { sink, tail: None };
    let mut lines = LineBuffer::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            biased;
            msg = msgs.recv() => {
                let Some(msg) = msg else { break };
                // A partial line stays buffered: a runtime may be between two writes of one
                // line right now (formatting macros write in pieces), and a platform line must
                // not cut it in two.
                if let Some(pipe) = &rx
                    && !drain(pipe, &mut buf, &mut lines, sink)
                {
                    rx = None;
                    lines.finish(sink);
                }
                handle(msg, &mut lines, &budget, sink);
            }
            ready = readable(rx.as_ref()) => {
                let open = ready.is_ok()
                    && rx.as_ref().is_some_and(|pipe| drain(pipe, &mut buf, &mut lines, sink));
                if !open {
                    // Closed: the last line is complete, and platform lines and flushes
                    // still come until the environment is gone.
                    rx = None;
                    lines.finish(sink);
                }
            }
        }
    }
    if let Some(pipe) = &rx {
        drain(pipe, &mut buf, &mut lines, sink);
    }
    lines.finish(sink);
    // Wakes a writer still waiting: it sees the queue closed.
    budget.taken.notify_waiters();
}

/// Resolves when the pipe has something to read; never without one.
async fn readable(rx: Option<&pipe::Receiver>) -> std::io::Result<()> {
    match rx {
        Some(rx) => rx.readable().await,
        None => std::future::pending().await,
    }
}

fn handle(msg: PumpMsg, lines: &mut LineBuffer, budget: &Budget, sink: &mut Tee) {
    match msg {
        PumpMsg::Output(bytes) => {
            lines.push(&bytes, sink);
            budget.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
            budget.taken.notify_waiters();
        }
        PumpMsg::Platform(make) => {
            for line in make() {
                sink.line(line.as_bytes());
            }
        }
        PumpMsg::Flush(ack) => {
            let _ = ack.send(());
        }
        PumpMsg::TailStart => sink.tail = Some(Vec::new()),
        PumpMsg::TailEnd(to) => {
            let mut tail = sink.tail.take().unwrap_or_default();
            // Lambda returns the last 4 KB; whole lines are not promised.
            let cut = tail.len().saturating_sub(TAIL_BYTES);
            tail.drain(..cut);
            to(bytes::Bytes::from(tail));
        }
    }
}

/// The pump's output: the sink, and the tail of the invocation that asked for one.
struct Tee {
    sink: Arc<dyn LogSink>,
    tail: Option<Vec<u8>>,
}

impl Tee {
    fn line(&mut self, line: &[u8]) {
        self.sink.line(line);
        if let Some(tail) = &mut self.tail {
            tail.extend_from_slice(line);
            tail.push(b'\n');
            // Bounded however much the invocation logs: only the last TAIL_BYTES are kept.
            if tail.len() > 4 * TAIL_BYTES {
                let cut = tail.len() - TAIL_BYTES;
                tail.drain(..cut);
            }
        }
    }
}

/// Reads what the pipe holds now; false once it reports end of file or fails.
///
/// "Now" is the kernel's now: the reads go to the pipe itself, not through tokio's readiness
/// cache, which may not yet have seen the event for bytes written a moment ago (a WASM guest
/// writes its log and its thread hands over the answer within microseconds; `try_read` would
/// then return `WouldBlock` without reading, and the `END` line would overtake the log).
/// A last `try_read` afterwards clears tokio's readiness, so `readable()` does not spin.
fn drain(rx: &pipe::Receiver, buf: &mut [u8], lines: &mut LineBuffer, sink: &mut Tee) -> bool {
    loop {
        match nix::unistd::read(rx, buf) {
            Ok(0) => return false,
            Ok(n) => lines.push(&buf[..n], sink),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    loop {
        match rx.try_read(buf) {
            Ok(0) => return false,
            Ok(n) => lines.push(&buf[..n], sink),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

#[derive(Default)]
struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    fn push(&mut self, mut data: &[u8], sink: &mut Tee) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                sink.line(&data[..pos]);
            } else {
                self.partial.extend_from_slice(&data[..pos]);
                sink.line(&self.partial);
                self.partial.clear();
            }
            data = &data[pos + 1..];
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() >= MAX_LINE_BYTES {
            self.finish(sink);
        }
    }

    fn finish(&mut self, sink: &mut Tee) {
        if !self.partial.is_empty() {
            sink.line(&self.partial);
            self.partial.clear();
        }
    }
}

/// `START RequestId: … Version: $LATEST`
pub fn start_line(request_id: &str) -> String {
    format!("START RequestId: {request_id} Version: {FUNCTION_VERSION}")
}

/// `END RequestId: …`
pub fn end_line(request_id: &str) -> String {
    format!("END RequestId: {request_id}")
}

/// `<ISO time> <RequestId> Task timed out after N.NN seconds`, logged when a deadline passes.
pub fn timeout_line(request_id: &str, after: Duration) -> String {
    let now = humantime::format_rfc3339_millis(SystemTime::now());
    format!(
        "{now} {request_id} Task timed out after {:.2} seconds",
        after.as_secs_f64()
    )
}

/// The facts of one invocation's `REPORT` line.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// The invocation.
    pub request_id: &'a str,
    /// From delivery to the runtime until the outcome.
    pub duration: Duration,
    /// Init, when this invocation was the environment's cold start.
    pub init: Option<Duration>,
    /// The configured memory size.
    pub memory_mb: u32,
    /// Peak memory of the environment so far.
    pub max_memory_mb: u64,
    /// `Status:` and `Error Type:` for failed invocations.
    pub failure: Option<(&'a str, &'a str)>,
}

impl Report<'_> {
    /// The tab-separated line CloudWatch shows. Billed duration rounds up to the millisecond
    /// and, for custom runtimes, includes init.
    pub fn line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let billed = (ms(self.duration) + self.init.map_or(0.0, ms))
            .ceil()
            .max(1.0);
        let mut line = format!(
            "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {billed:.0} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
            self.request_id,
            ms(self.duration),
            self.memory_mb,
            self.max_memory_mb,
        );
        if let Some(init) = self.init {
            line.push_str(&format!("\tInit Duration: {:.2} ms", ms(init)));
        }
        if let Some((status, error_type)) = self.failure {
            line.push_str(&format!("\tStatus: {status}\tError Type: {error_type}"));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_has_lambdas_fields() {
        let r = Report {
            request_id: "id",
            duration: Duration::from_micros(2_340),
            init: Some(Duration::from_micros(120_120)),
            memory_mb: 128,
            max_memory_mb: 35,
            failure: None,
        };
        assert_eq!(
            r.line(),
            "REPORT RequestId: id\tDuration: 2.34 ms\tBilled Duration: 123 ms\tMemory Size: 128 MB\tMax Memory Used: 35 MB\tInit Duration: 120.12 ms"
        );
    }

    #[test]
    fn lines_are_split_and_partials_kept_until_finished() {
        let sink = std::sync::Arc::new(MemorySink::default());
        let tee = &mut Tee {
            sink: sink.clone(),
            tail: Some(Vec::new()),
        };
        let mut b = LineBuffer::default();
        b.push(b"one\ntw", tee);
        b.push(b"o\nthree", tee);
        assert_eq!(sink.lines(), ["one", "two"]);
        b.finish(tee);
        assert_eq!(sink.lines(), ["one", "two", "three"]);
        assert_eq!(tee.tail.as_deref(), Some(&b"one\ntwo\nthree\n"[..]));
    }
}
