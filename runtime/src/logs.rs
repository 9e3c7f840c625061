//! The function's log stream. Everything an environment's runtime writes to stdout or stderr
//! reaches a [`LogSink`] line by line, in order, interleaved with Lambda's platform lines
//! (`START`, `END`, `REPORT`) in the places CloudWatch shows them.
//!
//! A runtime in a process of its own writes to a pipe. Whoever writes to the environment's
//! lines drains the pipe first, under the lines' lock: a pump task when the pipe has data, the
//! environment before each platform line ([`LogPump::platform`]), so a platform line comes
//! after everything the runtime wrote before it. A function writes its output before it posts
//! its response, so that output is in the pipe before the `END` line is written: no complete
//! line of an invocation can land after its `END`. The other way round, the environment hands
//! an event over after writing its `START`, so nothing the runtime writes about it comes
//! before. No platform line waits for another task.
//!
//! A runtime in the host process (WASM) has no pipe: its output goes through a [`LogWriter`]
//! straight to the sink, and so do the environment's platform lines, each when it happens, so
//! the log is in order with no task, queue or wait. A final line without a newline waits for
//! its newline (or the environment's end).
//!
//! The environment names its platform lines ([`PlatformLine`]); the log writes them in the
//! function's log format ([`PlatformFormat`], given by the environment): Lambda's text lines
//! ([`TextFormat`]), or with `log_format = "JSON"` its JSON records, filtered by the system log
//! level (telemetry's records: `telemetry/log_format.rs`). The runtime's own output is never
//! changed.
//!
//! Telemetry subscribers get the function's and the extensions' lines through a [`LineTap`],
//! set once someone may want them ([`TapSlot`]): each complete line is handed to it, under the
//! lines' lock, tagged with its [`Source`]. Without a tap nothing more happens per line.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::unix::pipe;

use crate::config::lambda_env::FUNCTION_VERSION;
use crate::invoke::Status;

/// CloudWatch's largest log event; a longer line without a newline is cut here.
const MAX_LINE_BYTES: usize = 256 * 1024;

/// Where log lines go. Implementations must be cheap: they are called on the pump's and the
/// environment's tasks, with the environment's lines locked.
pub trait LogSink: Send + Sync + fmt::Debug {
    /// One line, without its newline.
    fn line(&self, line: &[u8]);

    /// Several lines written together (an invocation's `END` and `REPORT`): a sink that
    /// writes each line with a syscall of its own writes them with one.
    fn lines(&self, lines: &[&[u8]]) {
        for line in lines {
            self.line(line);
        }
    }
}

/// Writes lines to the process's stderr, as `lamina invoke` shows them.
#[derive(Debug, Default)]
pub struct StderrSink;

impl LogSink for StderrSink {
    fn line(&self, line: &[u8]) {
        stderr_lines(b"", &[line]);
    }

    fn lines(&self, lines: &[&[u8]]) {
        stderr_lines(b"", lines);
    }
}

/// Writes each of `lines` with `prefix` before it and a newline after it to stderr, in one
/// write (stderr is unbuffered, and other threads write there too). A closed stderr must not
/// take the host down: the log lines are simply lost.
fn stderr_lines(prefix: &[u8], lines: &[&[u8]]) {
    let size = lines.iter().map(|l| prefix.len() + l.len() + 1).sum();
    let mut out = Vec::with_capacity(size);
    for line in lines {
        out.extend_from_slice(prefix);
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), &out);
}

/// What a pipe on a server's stderr is grown to: Linux's default `pipe-max-size`, 16 times
/// the 64 KiB a pipe starts with.
const STDERR_PIPE_BYTES: usize = 1024 * 1024;

/// Grows the pipe on lamina's stderr, when it is one, to 1 MiB. A server's function logs are
/// written where they happen, on the async workers; a reader that falls behind by more than the
/// pipe holds (`| tee`, a supervisor's log collector, the benchmarks' own reader), even for the
/// few milliseconds it is off the CPU under load, would hold every invocation up until it
/// catches up: with 64 KiB that is about 10 ms of START/END/REPORT lines at 13,000 invocations
/// a second (docs/design/007, "What telemetry costs"). Returns the pipe's size after, `None`
/// when stderr is not a pipe; a refusal (a user past its pipe quota) leaves the pipe as it was.
pub fn widen_stderr_pipe() -> Option<usize> {
    widen_pipe(std::io::stderr().as_fd(), STDERR_PIPE_BYTES)
}

/// Grows the pipe `fd` to at least `bytes` (never shrinks it); its size after, `None` when
/// `fd` is not a pipe (the kernel refuses `F_GETPIPE_SZ` on anything else).
fn widen_pipe(fd: BorrowedFd<'_>, bytes: usize) -> Option<usize> {
    use nix::fcntl::{FcntlArg, fcntl};
    let now = fcntl(fd, FcntlArg::F_GETPIPE_SZ).ok()? as usize;
    if now >= bytes {
        return Some(now);
    }
    // `F_SETPIPE_SZ` answers the size it set (a page multiple at least `bytes`).
    let wanted = i32::try_from(bytes).unwrap_or(i32::MAX);
    Some(fcntl(fd, FcntlArg::F_SETPIPE_SZ(wanted)).map_or(now, |n| n as usize))
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
        stderr_lines(&self.prefix, &[line]);
    }

    fn lines(&self, lines: &[&[u8]]) {
        stderr_lines(&self.prefix, lines);
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

/// An environment's log: platform lines in their places among the runtime's output.
///
/// A runtime in a process of its own writes to a pipe, drained by a pump task when it has
/// data and by the environment before each platform line. A runtime in the host process
/// writes through a [`LogWriter`] straight into the lines, as the environment does its
/// platform lines: both happen in the order the events happen.
#[derive(Debug)]
pub(crate) struct LogPump {
    lines: Arc<Mutex<Lines>>,
    /// How platform lines are written.
    format: Arc<dyn PlatformFormat>,
    /// The runtime's pipe and the extensions' (when they have one of their own), each
    /// with whose output it carries. Before each platform line only the runtime's is read,
    /// so that the line comes after what the runtime wrote before it: an extension runs
    /// beside the invocations, not within them, Lambda orders its lines against none of the
    /// platform's, and reading its pipe there too cost two syscalls an invocation that all but
    /// always found it empty. Its pump task reads it as it is written.
    pipes: Vec<(Source, Arc<pipe::Receiver>)>,
    /// Dropped with the pump: the pump tasks then drain the pipes a last time and end.
    _closed: Option<tokio::sync::watch::Sender<()>>,
}

/// Whose output a line is: the function's (its runtime and what it started) or an external
/// extension's. Telemetry sends them as records of types `function` and `extension`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The runtime, the function's code, and the processes they start.
    Function,
    /// An external extension.
    Extension,
}

/// Telemetry's view of the log: each complete line of the function or of an extension, as it
/// is written. Platform lines do not reach it (telemetry makes its own records of them).
pub(crate) trait LineTap: Send + fmt::Debug {
    /// One line of `source`, without its newline. Called under the log's lock, on the pump's
    /// or the environment's task: it must not wait.
    fn line(&self, source: Source, line: &[u8]);
}

/// Sets or clears an environment's [`LineTap`] once its log has started.
#[derive(Debug, Clone)]
pub(crate) struct TapSlot {
    lines: Arc<Mutex<Lines>>,
}

impl TapSlot {
    /// From now on every line also goes to `tap` (none: to nobody).
    pub(crate) fn set(&self, tap: Option<Box<dyn LineTap>>) {
        lock(&self.lines).tee.tap = tap;
    }
}

/// Lines on their way to the sink: each source's partial line, the log tail being kept.
#[derive(Debug)]
struct Lines {
    tee: Tee,
    partial: LineBuffer,
    extension_partial: LineBuffer,
}

impl Lines {
    fn new(sink: Arc<dyn LogSink>) -> Lines {
        Lines {
            tee: Tee {
                sink,
                tail: None,
                tap: None,
            },
            partial: LineBuffer::default(),
            extension_partial: LineBuffer::default(),
        }
    }

    /// Output of `source`: complete lines go out now, a partial one waits for its newline.
    fn push(&mut self, source: Source, data: &[u8]) {
        match source {
            Source::Function => self.partial.push(source, data, &mut self.tee),
            Source::Extension => self.extension_partial.push(source, data, &mut self.tee),
        }
    }

    /// `source`'s output has ended: a last line without a newline is whole.
    fn finish(&mut self, source: Source) {
        match source {
            Source::Function => self.partial.finish(source, &mut self.tee),
            Source::Extension => self.extension_partial.finish(source, &mut self.tee),
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // The environment and its runtime are gone.
        self.finish(Source::Function);
        self.finish(Source::Extension);
    }
}

/// How an environment's platform lines reach its log: Lambda's text lines ([`TextFormat`]), or
/// a format the environment gives (Lambda's JSON records for `log_format = "JSON"`, which are
/// telemetry's: `telemetry/log_format.rs`).
pub trait PlatformFormat: Send + Sync + fmt::Debug {
    /// `lines` as this format writes them now, in order; none, one or more per line.
    fn lines(&self, lines: &[&PlatformLine<'_>]) -> Vec<String>;
}

/// Lambda's text lines (`START`, `END`, `REPORT`, `Task timed out`), never filtered.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFormat;

impl PlatformFormat for TextFormat {
    fn lines(&self, lines: &[&PlatformLine<'_>]) -> Vec<String> {
        lines.iter().map(|line| line.text()).collect()
    }
}

/// The environment's log before it is started: the sandbox takes a [`LogWriter`] from it when
/// its runtime lives in the host process.
#[derive(Debug)]
pub(crate) struct LogSetup {
    lines: Arc<Mutex<Lines>>,
    format: Arc<dyn PlatformFormat>,
}

/// Writes an in-process runtime's output (stdout and stderr alike) to its environment's log,
/// after the platform lines written before it.
#[derive(Debug, Clone)]
pub struct LogWriter {
    lines: Arc<Mutex<Lines>>,
}

impl LogWriter {
    /// Writes `bytes`; complete lines reach the sink now, a partial one waits for its newline.
    pub fn write(&self, bytes: &[u8]) {
        lock(&self.lines).push(Source::Function, bytes);
    }
}

fn lock(lines: &Mutex<Lines>) -> std::sync::MutexGuard<'_, Lines> {
    // A panic while writing a line leaves nothing half-done that matters more than the log.
    lines.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogSetup {
    /// The log of an environment whose platform lines are written as `format` says.
    pub(crate) fn new(sink: Arc<dyn LogSink>, format: Arc<dyn PlatformFormat>) -> LogSetup {
        LogSetup {
            lines: Arc::new(Mutex::new(Lines::new(sink))),
            format,
        }
    }

    /// A writer for a runtime in the host process.
    pub(crate) fn writer(&self) -> LogWriter {
        LogWriter {
            lines: Arc::clone(&self.lines),
        }
    }

    /// Starts the log: with a pump reading `read_end` when the runtime writes to a pipe,
    /// and another reading `extension_end` when the extensions write to one of their own;
    /// otherwise straight to the sink.
    pub(crate) fn start(
        self,
        read_end: Option<OwnedFd>,
        extension_end: Option<OwnedFd>,
    ) -> std::io::Result<LogPump> {
        let ends = [
            (Source::Function, read_end),
            (Source::Extension, extension_end),
        ];
        let mut pipes = Vec::new();
        for (source, end) in ends {
            if let Some(end) = end {
                pipes.push((source, Arc::new(pipe::Receiver::from_owned_fd(end)?)));
            }
        }
        if pipes.is_empty() {
            return Ok(LogPump {
                lines: self.lines,
                format: self.format,
                pipes,
                _closed: None,
            });
        }
        let (closed, on_close) = tokio::sync::watch::channel(());
        for (source, rx) in &pipes {
            tokio::spawn(pump(
                *source,
                Arc::clone(rx),
                on_close.clone(),
                Arc::clone(&self.lines),
            ));
        }
        Ok(LogPump {
            lines: self.lines,
            format: self.format,
            pipes,
            _closed: Some(closed),
        })
    }
}

/// How much of an invocation's log the Invoke API returns with `X-Amz-Log-Type: Tail`: 4 KB.
pub const TAIL_BYTES: usize = 4 * 1024;

impl LogPump {
    /// Writes platform lines, in the function's log format: after everything the runtime
    /// has written so far.
    pub(crate) fn platform(&self, lines: &[&PlatformLine<'_>]) {
        let written = self.format.lines(lines);
        let lines: Vec<&[u8]> = written.iter().map(|l| l.as_bytes()).collect();
        self.drained().tee.lines(&lines);
    }

    /// Writes an invocation's `START` line; with `keep_tail`, from it on lines are also kept
    /// for its log tail (what the runtime wrote before is not), also when the function's
    /// system log level leaves the line out.
    pub(crate) fn start(&self, line: &PlatformLine<'_>, keep_tail: bool) {
        let written = self.format.lines(&[line]);
        let mut drained = self.drained();
        if keep_tail {
            drained.tee.tail = Some(Vec::new());
        }
        for line in &written {
            drained.tee.line(line.as_bytes());
        }
    }

    /// Stops keeping lines and returns the last [`TAIL_BYTES`] of those kept since
    /// [`LogPump::start`], up to everything the runtime has written so far.
    pub(crate) fn tail_end(&self) -> bytes::Bytes {
        let mut tail = self.drained().tee.tail.take().unwrap_or_default();
        // Lambda returns the last 4 KB; whole lines are not promised.
        let cut = tail.len().saturating_sub(TAIL_BYTES);
        tail.drain(..cut);
        bytes::Bytes::from(tail)
    }

    /// The lines, locked, with what the runtime's pipe holds now in them. A partial line
    /// stays buffered: a runtime may be between two writes of one line right now (formatting
    /// macros write in pieces), and a platform line must not cut it in two. Once the pipe is
    /// at its end (the runtime and everything it started are gone), a last partial line is
    /// whole.
    fn drained(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.drained_of(&[Source::Function])
    }

    /// [`LogPump::drained`] for the pipes of `sources`.
    fn drained_of(&self, sources: &[Source]) -> std::sync::MutexGuard<'_, Lines> {
        let mut lines = lock(&self.lines);
        let mut buf = [0u8; 4096];
        for (source, rx) in self.pipes.iter().filter(|(s, _)| sources.contains(s)) {
            if !drain(*source, rx, &mut buf, &mut lines) {
                lines.finish(*source);
            }
        }
        lines
    }

    /// Brings everything the runtime and the extensions have written so far into the sink.
    pub(crate) fn flush(&self) {
        drop(self.drained_of(&[Source::Function, Source::Extension]));
    }

    /// Where telemetry sets its tap.
    pub(crate) fn tap_slot(&self) -> TapSlot {
        TapSlot {
            lines: Arc::clone(&self.lines),
        }
    }
}

/// Drains the pipe whenever it has data, so that output between invocations reaches the sink
/// as it is written; ends when the pipe does or the environment's log is dropped.
async fn pump(
    source: Source,
    rx: Arc<pipe::Receiver>,
    mut closed: tokio::sync::watch::Receiver<()>,
    lines: Arc<Mutex<Lines>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = closed.changed() => {
                drain(source, &rx, &mut buf, &mut lock(&lines));
                break;
            }
            ready = rx.readable() => {
                if ready.is_err() || !drain(source, &rx, &mut buf, &mut lock(&lines)) {
                    break;
                }
            }
        }
    }
    lock(&lines).finish(source);
}

/// The log's output: the sink, the tail of the invocation that asked for one, and telemetry's
/// tap when someone may want the lines.
#[derive(Debug)]
struct Tee {
    sink: Arc<dyn LogSink>,
    tail: Option<Vec<u8>>,
    tap: Option<Box<dyn LineTap>>,
}

impl Tee {
    /// A line of the function's or an extension's output.
    fn output(&mut self, source: Source, line: &[u8]) {
        self.line(line);
        if let Some(tap) = &self.tap {
            tap.line(source, line);
        }
    }

    /// Any line: the platform's, or output.
    fn line(&mut self, line: &[u8]) {
        self.sink.line(line);
        self.keep(line);
    }

    /// Platform lines written together.
    fn lines(&mut self, lines: &[&[u8]]) {
        self.sink.lines(lines);
        for line in lines {
            self.keep(line);
        }
    }

    /// `line` in the tail, when one is kept.
    fn keep(&mut self, line: &[u8]) {
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
/// cache, which may not yet have seen the event for bytes written a moment ago (a runtime
/// writes its log and posts its answer within microseconds; `try_read` would then return
/// `WouldBlock` without reading, and the `END` line would overtake the log). A last
/// `try_read` afterwards clears tokio's readiness, so `readable()` does not spin; it makes no
/// syscall when tokio has not seen the pipe readable.
fn drain(source: Source, rx: &pipe::Receiver, buf: &mut [u8], lines: &mut Lines) -> bool {
    loop {
        match nix::unistd::read(rx, buf) {
            Ok(0) => return false,
            Ok(n) => lines.push(source, &buf[..n]),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    loop {
        match rx.try_read(buf) {
            Ok(0) => return false,
            Ok(n) => lines.push(source, &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

#[derive(Debug, Default)]
struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    fn push(&mut self, source: Source, mut data: &[u8], sink: &mut Tee) {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                sink.output(source, &data[..pos]);
            } else {
                self.partial.extend_from_slice(&data[..pos]);
                sink.output(source, &self.partial);
                self.partial.clear();
            }
            data = &data[pos + 1..];
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() >= MAX_LINE_BYTES {
            self.finish(source, sink);
        }
    }

    fn finish(&mut self, source: Source, sink: &mut Tee) {
        if !self.partial.is_empty() {
            sink.output(source, &self.partial);
            self.partial.clear();
        }
    }
}

/// One of the platform's lines, as the environment names it. It is written in the function's
/// log format when it reaches the log ([`PlatformFormat`]): as Lambda's text line
/// ([`PlatformLine::text`]), as Lambda's JSON record, or not at all.
#[derive(Debug, Clone, Copy)]
pub enum PlatformLine<'a> {
    /// An invocation is handed to the runtime.
    Start {
        /// The invocation.
        request_id: &'a str,
    },
    /// An invocation has ended.
    End {
        /// The invocation.
        request_id: &'a str,
    },
    /// An invocation's figures.
    Report(&'a Report<'a>),
    /// An invocation's deadline passed.
    Timeout {
        /// The invocation.
        request_id: &'a str,
        /// The timeout it had.
        after: Duration,
    },
}

/// `START RequestId: … Version: $LATEST`
pub fn start_line(request_id: &str) -> PlatformLine<'_> {
    PlatformLine::Start { request_id }
}

/// `END RequestId: …`
pub fn end_line(request_id: &str) -> PlatformLine<'_> {
    PlatformLine::End { request_id }
}

/// `<ISO time> <RequestId> Task timed out after N.NN seconds`, logged when a deadline passes.
pub fn timeout_line(request_id: &str, after: Duration) -> PlatformLine<'_> {
    PlatformLine::Timeout { request_id, after }
}

impl PlatformLine<'_> {
    /// The line in Lambda's text format, as CloudWatch shows it, written now.
    pub fn text(&self) -> String {
        match self {
            PlatformLine::Start { request_id } => {
                format!("START RequestId: {request_id} Version: {FUNCTION_VERSION}")
            }
            PlatformLine::End { request_id } => format!("END RequestId: {request_id}"),
            PlatformLine::Report(report) => report.text(),
            PlatformLine::Timeout { request_id, after } => {
                let now = humantime::format_rfc3339_millis(SystemTime::now());
                format!(
                    "{now} {request_id} Task timed out after {:.2} seconds",
                    after.as_secs_f64()
                )
            }
        }
    }
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
    /// How it ended, as Lambda's records (`platform.runtimeDone`, `platform.report`) say it:
    /// the JSON format's, and the same as telemetry's ([`Status::of`]).
    pub status: Status,
    /// The text line's `Status:` and `Error Type:`, which Lambda's text shows for the
    /// platform's failures only (`Failure::report_status`), not for the function's own error.
    pub failure: Option<(&'a str, &'a str)>,
}

/// Billed duration, ms, of an invocation that took `duration` after an init of `init`: rounded
/// up to the millisecond and, for custom runtimes, with init; never 0.
pub fn billed_ms(duration: Duration, init: Option<Duration>) -> u64 {
    let ms = (duration + init.unwrap_or_default())
        .as_nanos()
        .div_ceil(1_000_000)
        .max(1);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

impl Report<'_> {
    /// The `REPORT` line, to be written in the function's log format.
    pub fn line(&self) -> PlatformLine<'_> {
        PlatformLine::Report(self)
    }

    /// Billed duration, ms ([`billed_ms`]).
    pub fn billed_ms(&self) -> u64 {
        billed_ms(self.duration, self.init)
    }

    /// The tab-separated line CloudWatch shows.
    pub fn text(&self) -> String {
        use fmt::Write as _;
        let billed = self.billed_ms();
        let mut line = format!(
            "REPORT RequestId: {}\tDuration: {} ms\tBilled Duration: {billed} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
            self.request_id,
            Millis(self.duration),
            self.memory_mb,
            self.max_memory_mb,
        );
        if let Some(init) = self.init {
            let _ = write!(line, "\tInit Duration: {} ms", Millis(init));
        }
        if let Some((status, error_type)) = self.failure {
            let _ = write!(line, "\tStatus: {status}\tError Type: {error_type}");
        }
        line
    }
}

/// Milliseconds with two decimals, rounded, as the REPORT line has them. In integers:
/// formatting an `f64` to a precision took 1% of a served WASM invocation's CPU.
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hundredths = (self.0.as_nanos() + 5_000) / 10_000;
        write!(f, "{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_is_widened_to_a_mebibyte_and_a_file_is_left_alone() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let size = |fd: &OwnedFd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ);
        assert_eq!(size(&write).unwrap(), 64 * 1024, "a new pipe's size");
        assert_eq!(
            widen_pipe(write.as_fd(), STDERR_PIPE_BYTES),
            Some(1024 * 1024)
        );
        // The read end sees the same pipe.
        assert_eq!(size(&read).unwrap(), 1024 * 1024);
        // Never shrunk.
        assert_eq!(widen_pipe(write.as_fd(), 4096), Some(1024 * 1024));
        let file = tempfile::tempfile().unwrap();
        assert_eq!(widen_pipe(file.as_fd(), STDERR_PIPE_BYTES), None);
    }

    #[test]
    fn report_line_has_lambdas_fields() {
        let r = Report {
            request_id: "id",
            duration: Duration::from_micros(2_340),
            init: Some(Duration::from_micros(120_120)),
            memory_mb: 128,
            max_memory_mb: 35,
            status: Status::Success,
            failure: None,
        };
        assert_eq!(
            r.text(),
            "REPORT RequestId: id\tDuration: 2.34 ms\tBilled Duration: 123 ms\tMemory Size: 128 MB\tMax Memory Used: 35 MB\tInit Duration: 120.12 ms"
        );
        // Rounded to the hundredth; billed rounds up, and is never 0.
        for (nanos, shown) in [
            (1_004_999, "1.00 ms\tBilled Duration: 2 ms"),
            (9_995_000, "10.00 ms\tBilled Duration: 10 ms"),
            (1, "0.00 ms\tBilled Duration: 1 ms"),
        ] {
            let r = Report {
                duration: Duration::from_nanos(nanos),
                init: None,
                ..r.clone()
            };
            assert!(
                r.text().contains(&format!("\tDuration: {shown}\t")),
                "{nanos}"
            );
        }
    }

    #[test]
    fn lines_are_split_and_partials_kept_until_finished() {
        let sink = std::sync::Arc::new(MemorySink::default());
        let tee = &mut Tee {
            sink: sink.clone(),
            tail: Some(Vec::new()),
            tap: None,
        };
        let mut b = LineBuffer::default();
        let f = Source::Function;
        b.push(f, b"one\ntw", tee);
        b.push(f, b"o\nthree", tee);
        assert_eq!(sink.lines(), ["one", "two"]);
        b.finish(f, tee);
        assert_eq!(sink.lines(), ["one", "two", "three"]);
        assert_eq!(tee.tail.as_deref(), Some(&b"one\ntwo\nthree\n"[..]));
    }

    /// Records what reaches a tap.
    #[derive(Debug, Default)]
    struct Tapped(Arc<Mutex<Vec<(Source, String)>>>);

    impl LineTap for Tapped {
        fn line(&self, source: Source, line: &[u8]) {
            let line = String::from_utf8_lossy(line).into_owned();
            self.0.lock().unwrap().push((source, line));
        }
    }

    #[test]
    fn a_tap_gets_output_lines_with_their_source_but_no_platform_line() {
        let sink = Arc::new(MemorySink::default());
        let setup = LogSetup::new(sink.clone(), Arc::new(TextFormat));
        let writer = setup.writer();
        let pump = setup.start(None, None).unwrap();
        writer.write(b"before the tap\n");
        let seen = Arc::new(Mutex::new(Vec::new()));
        pump.tap_slot()
            .set(Some(Box::new(Tapped(Arc::clone(&seen)))));
        pump.start(&start_line("r1"), false);
        writer.write(b"hello\npart");
        lock(&pump.lines).push(Source::Extension, b"from an extension\n");
        writer.write(b"ial\n");
        pump.tap_slot().set(None);
        writer.write(b"after\n");
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (Source::Function, "hello".to_owned()),
                (Source::Extension, "from an extension".to_owned()),
                (Source::Function, "partial".to_owned()),
            ]
        );
        assert_eq!(sink.lines().len(), 6);
    }

    /// Before a platform line only the runtime's pipe is read; the extensions' is read by its
    /// pump task, and by a flush (the environment's last, at shutdown) with the runtime's.
    #[tokio::test]
    async fn a_platform_line_reads_the_runtimes_pipe_and_a_flush_the_extensions_too() {
        let sink = Arc::new(MemorySink::default());
        let (runtime_end, runtime_write) = nix::unistd::pipe().unwrap();
        let (extension_end, extension_write) = nix::unistd::pipe().unwrap();
        let pump = LogSetup::new(sink.clone(), Arc::new(TextFormat))
            .start(Some(runtime_end), Some(extension_end))
            .unwrap();
        nix::unistd::write(&runtime_write, b"from the runtime\n").unwrap();
        nix::unistd::write(&extension_write, b"from an extension\n").unwrap();
        // Nothing is awaited: on this single-threaded runtime the pump tasks have not run.
        pump.start(&start_line("r1"), false);
        let lines = sink.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], "from the runtime");
        assert!(lines[1].starts_with("START RequestId: r1"), "{lines:?}");
        pump.flush();
        assert_eq!(sink.lines()[2..], ["from an extension"]);
    }

    /// Counts the sink's writes: a call to `line` or `lines` is one.
    #[derive(Debug, Default)]
    struct Writes(Mutex<Vec<Vec<String>>>);

    impl LogSink for Writes {
        fn line(&self, line: &[u8]) {
            self.lines(&[line]);
        }

        fn lines(&self, lines: &[&[u8]]) {
            let lines = lines
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned());
            self.0.lock().unwrap().push(lines.collect());
        }
    }

    #[test]
    fn an_invocations_end_and_report_are_one_write_and_both_in_its_tail() {
        let sink = Arc::new(Writes::default());
        let pump = LogSetup::new(sink.clone(), Arc::new(TextFormat))
            .start(None, None)
            .unwrap();
        pump.start(&start_line("r1"), true);
        let report = Report {
            request_id: "r1",
            duration: Duration::from_millis(1),
            init: None,
            memory_mb: 128,
            max_memory_mb: 5,
            status: Status::Success,
            failure: None,
        };
        pump.platform(&[&end_line("r1"), &report.line()]);
        let writes = sink.0.lock().unwrap().clone();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[1].len(), 2, "{writes:?}");
        assert!(writes[1][0].starts_with("END RequestId: r1"), "{writes:?}");
        assert!(
            writes[1][1].starts_with("REPORT RequestId: r1"),
            "{writes:?}"
        );
        let tail = String::from_utf8(pump.tail_end().to_vec()).unwrap();
        assert_eq!(tail.lines().count(), 3, "{tail}");
    }
}
