//! Reading an HTTP request body with a size limit, for both of lamina's servers: the callers'
//! (Invoke API, HTTP front) and the runtimes' (Runtime API). A body over the limit is still
//! read (and dropped) up to a drain limit, so that a client that writes its whole body before
//! reading the answer gets its 413 on a connection that stays open; past that it is cut off.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// Longer than allowed: this many bytes (or at least this many).
    #[error("the request body is too large")]
    TooLarge(usize),
    /// The connection failed while reading it.
    #[error("{0}")]
    Broken(String),
}

/// Reads a whole body of at most `limit` bytes; a longer one is read on and dropped up to
/// `drain_limit` bytes, then refused.
pub(crate) async fn read_body(
    mut body: Incoming,
    limit: usize,
    drain_limit: usize,
) -> Result<Bytes, BodyError> {
    let mut kept = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total <= limit {
            kept.extend_from_slice(&data);
        } else if total > drain_limit {
            return Err(BodyError::TooLarge(total));
        }
    }
    if total > limit {
        return Err(BodyError::TooLarge(total));
    }
    Ok(kept.freeze())
}

/// A caller's body of at most `limit` bytes (the Invoke API's and the HTTP front's): one that
/// `Content-Length` declares over twice the limit is refused before any of it is read; a
/// longer one is read on to twice the limit, so that a client still sending gets its 413.
pub(crate) async fn read_request_body(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let drain_limit = limit.saturating_mul(2);
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > drain_limit) {
        return Err(BodyError::TooLarge(n));
    }
    read_body(body, limit, drain_limit).await
}
