//! One HTTP/1.1 connection to the Runtime API, with blocking I/O: a call is one vectored write
//! of the request and, usually, one read of the whole answer. Answers are parsed with
//! `httparse` (hyper's parser) and framed by `Content-Length`, chunked transfer coding, or the
//! end of the connection, so the client works against any HTTP/1.1 server playing the API (AWS
//! Lambda's, lamina's, an emulator's), not only the one that answers as lamina does.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The most an answer's head may take. The API's headers are a few hundred bytes; the largest,
/// a client context, is at most 3.5 KB on Lambda.
const MAX_HEAD: usize = 64 * 1024;
/// The largest answer body the client takes: Lambda's events are at most 6 MB (its
/// asynchronous ones 1 MB); well above that, a length is a broken server, not an event, and
/// is refused before any memory is set aside for it.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// The most header lines an answer may have (Lambda sends about ten).
const MAX_HEADERS: usize = 64;
/// The read buffer's first size: an event of up to ~15 KB arrives with its head in one read.
const INITIAL_BUFFER: usize = 16 * 1024;

/// An answer: status, headers, body.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// Why a call failed.
#[derive(Debug)]
pub(super) enum CallError {
    /// The connection failed before any byte of an answer arrived. On a connection that had
    /// served calls before, the server most likely closed it while it was idle, and the call
    /// may be made again on a new one.
    Unanswered(io::Error),
    /// The connection failed mid-answer, or the answer is not HTTP the client can read.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl From<io::Error> for CallError {
    fn from(e: io::Error) -> CallError {
        CallError::Failed(e.into())
    }
}

fn malformed(what: impl Into<String>) -> CallError {
    CallError::Failed(what.into().into())
}

fn too_big(length: impl std::fmt::Display) -> CallError {
    malformed(format!(
        "the answer's body of {length} bytes is over the client's limit of {MAX_BODY}"
    ))
}

/// How an answer's body ends.
enum Framing {
    Length(usize),
    Chunked,
    /// At the end of the connection (HTTP/1.1 without a length; the connection is not reused).
    Close,
}

/// A kept-alive connection and what has been read from it but not yet used.
#[derive(Debug)]
pub(super) struct Connection {
    stream: TcpStream,
    /// Read buffer; the bytes not yet used are `buf[start..end]`. Kept between calls so that
    /// each answer is read into memory that is already there.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Whether a call has been answered on this connection.
    pub(super) used: bool,
}

impl Connection {
    pub(super) fn open(addr: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr)?;
        // Requests are small and answered at once: do not wait to coalesce them.
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            used: false,
        })
    }

    /// Sends `head` and `body` and reads the answer. Returns it, and whether the connection
    /// may carry another call.
    pub(super) fn call(
        &mut self,
        head: &[u8],
        body: &[u8],
        no_body: bool,
    ) -> Result<(Answer, bool), CallError> {
        if let Err(e) = self.write(head, body) {
            return Err(CallError::Unanswered(e));
        }
        let answer = self.answer(no_body)?;
        self.used = true;
        Ok(answer)
    }

    fn write(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        let mut slices = [IoSlice::new(head), IoSlice::new(body)];
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            match self.stream.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads more into the buffer, making room first; `Ok(0)` at the end of the connection.
    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// `fill`, where the end of the connection is an error.
    fn fill_more(&mut self, reading: &str) -> Result<(), CallError> {
        match self.fill()? {
            0 => Err(malformed(format!(
                "the connection closed in the middle of the answer's {reading}"
            ))),
            _ => Ok(()),
        }
    }

    fn answer(&mut self, no_body: bool) -> Result<(Answer, bool), CallError> {
        let mut got_any = self.start < self.end;
        loop {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(len)) => {
                    let code = parsed.code.unwrap_or_default();
                    let status = StatusCode::from_u16(code)
                        .map_err(|_| malformed(format!("the answer's status {code} is invalid")))?;
                    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
                    for header in parsed.headers.iter() {
                        let name = HeaderName::from_bytes(header.name.as_bytes());
                        let value = HeaderValue::from_bytes(header.value);
                        let (Ok(name), Ok(value)) = (name, value) else {
                            return Err(malformed(format!(
                                "the answer's header {:?} is invalid",
                                header.name
                            )));
                        };
                        headers.append(name, value);
                    }
                    let version = parsed.version.unwrap_or(1);
                    self.start += len;
                    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                        // `100 Continue` and the like come before the answer proper.
                        continue;
                    }
                    let keep_alive = keeps_alive(version, &headers);
                    let framing = if no_body
                        || status.is_informational()
                        || status == StatusCode::NO_CONTENT
                        || status == StatusCode::NOT_MODIFIED
                    {
                        Framing::Length(0)
                    } else {
                        framing(&headers)?
                    };
                    let (body, keep_alive) = match framing {
                        Framing::Length(n) => (self.take(n)?, keep_alive),
                        Framing::Chunked => (self.chunked()?, keep_alive),
                        Framing::Close => (self.until_closed()?, false),
                    };
                    let answer = Answer {
                        status,
                        headers,
                        body,
                    };
                    return Ok((answer, keep_alive));
                }
                Ok(httparse::Status::Partial) => {
                    if self.end - self.start >= MAX_HEAD {
                        return Err(malformed(format!(
                            "the answer's head is over {MAX_HEAD} bytes"
                        )));
                    }
                    match self.fill() {
                        Ok(0) | Err(_) if !got_any => {
                            return Err(CallError::Unanswered(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the connection closed before an answer",
                            )));
                        }
                        Ok(0) => {
                            return Err(malformed(
                                "the connection closed in the middle of the answer's head",
                            ));
                        }
                        Ok(_) => got_any = true,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(malformed(format!("the answer is not HTTP/1.1: {e}"))),
            }
        }
    }

    /// The next `n` bytes of the connection.
    fn take(&mut self, n: usize) -> Result<Bytes, CallError> {
        if n > MAX_BODY {
            return Err(too_big(n));
        }
        let buffered = self.end - self.start;
        if buffered >= n {
            let body = Bytes::copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            return Ok(body);
        }
        // A body larger than what was read with the head is read straight into its own memory.
        let mut body = vec![0; n];
        body[..buffered].copy_from_slice(&self.buf[self.start..self.end]);
        (self.start, self.end) = (0, 0);
        self.stream.read_exact(&mut body[buffered..]).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                malformed("the connection closed in the middle of the answer's body")
            } else {
                e.into()
            }
        })?;
        Ok(Bytes::from(body))
    }

    /// A body in chunked transfer coding, decoded; trailers are read and dropped.
    fn chunked(&mut self) -> Result<Bytes, CallError> {
        let mut body = Vec::new();
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        self.start += len;
                        break size;
                    }
                    Ok(httparse::Status::Partial) if self.end - self.start < MAX_HEAD => {
                        self.fill_more("chunk size")?;
                    }
                    Ok(httparse::Status::Partial) => {
                        return Err(malformed("a chunk size line of the answer is too long"));
                    }
                    Err(_) => return Err(malformed("the answer's chunk size is invalid")),
                }
            };
            if size == 0 {
                while !self.line()?.is_empty() {}
                return Ok(Bytes::from(body));
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|size| body.len().saturating_add(*size) <= MAX_BODY)
                .ok_or_else(|| too_big(format!("at least {size}")))?;
            body.extend_from_slice(&self.take(size)?);
            if !self.line()?.is_empty() {
                return Err(malformed("the answer's chunk is longer than its size"));
            }
        }
    }

    /// The next line, without its CRLF.
    fn line(&mut self) -> Result<Vec<u8>, CallError> {
        loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(at) = unread.windows(2).position(|w| w == b"\r\n") {
                let line = unread[..at].to_vec();
                self.start += at + 2;
                return Ok(line);
            }
            if unread.len() >= MAX_HEAD {
                return Err(malformed("a line of the answer is too long"));
            }
            self.fill_more("chunked body")?;
        }
    }

    /// Everything until the server closes the connection.
    fn until_closed(&mut self) -> Result<Bytes, CallError> {
        let mut body = self.buf[self.start..self.end].to_vec();
        (self.start, self.end) = (0, 0);
        let room = (MAX_BODY + 1).saturating_sub(body.len()) as u64;
        (&mut self.stream).take(room).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(too_big(body.len()));
        }
        Ok(Bytes::from(body))
    }
}

/// Whether the server keeps the connection open after this answer.
fn keeps_alive(version: u8, headers: &HeaderMap) -> bool {
    let says = |token: &str| {
        headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if version == 0 {
        says("keep-alive")
    } else {
        !says("close")
    }
}

/// How the body of an answer with these headers ends (RFC 9112, section 6.3).
fn framing(headers: &HeaderMap) -> Result<Framing, CallError> {
    if let Some(coding) = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let last = coding.to_str().unwrap_or_default().rsplit(',').next();
        return Ok(match last.map(str::trim) {
            Some(c) if c.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::Close,
        });
    }
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return Ok(Framing::Close);
    };
    let parse = |v: &HeaderValue| v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok());
    let length = parse(first)
        .ok_or_else(|| malformed(format!("the answer's Content-Length {first:?} is invalid")))?;
    if lengths.any(|other| parse(other) != Some(length)) {
        return Err(malformed("the answer has conflicting Content-Lengths"));
    }
    Ok(Framing::Length(length))
}

#[cfg(test)]
mod tests;
