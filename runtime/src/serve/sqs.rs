//! Amazon SQS: queues as destinations of asynchronous invocation records, and (to come) the
//! SQS event source mapping. Stub until the SQS work lands.

/// The queue URL `text` names (a queue URL, or an SQS ARN), or `None` if it names no queue.
pub fn queue_url(text: &str) -> Option<String> {
    let _ = text;
    None
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("SQS queue {queue}: {reason}")]
pub struct SqsError {
    /// The queue's URL.
    pub queue: String,
    /// What went wrong.
    pub reason: String,
}

/// Sends `body` to the queue at `queue` (a URL from [`queue_url`]).
pub async fn send_message(queue: &str, body: String) -> Result<(), SqsError> {
    let _ = body;
    Err(SqsError {
        queue: queue.to_owned(),
        reason: "not yet supported".into(),
    })
}
