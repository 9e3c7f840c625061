//! Amazon SQS, through the official `aws-sdk-sqs`: queues as destinations of asynchronous
//! invocation records ([`send_message`]), and the SQS event source mapping
//! ([`event_source`]), which polls a queue and invokes a function with Lambda's SQS event.
//! Any SQS-compatible endpoint works: a queue is named by its URL (whose scheme, host and port
//! are the endpoint called) or its ARN (AWS's regional endpoint, or `AWS_ENDPOINT_URL_SQS` /
//! `AWS_ENDPOINT_URL` when set). Credentials are the caller's, from lamina's own resolver
//! ([`client::Settings`]).

/// Lambda's SQS event and its batch item failures (pure).
pub mod batch;
/// The SDK client per endpoint and the SQS calls lamina makes.
pub mod client;
/// The event source mapping's pollers.
pub mod event_source;

pub use client::{Settings, configure};
pub use event_source::{Pollers, start};

use crate::config::sqs_address as address;
pub use crate::config::sqs_address::queue_url;

/// Why an SQS call failed; each names the queue.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    /// The endpoint answered that there is no such queue.
    #[error("SQS queue {queue}: no such queue at {endpoint}")]
    NoSuchQueue {
        /// The queue's URL.
        queue: String,
        /// The endpoint asked.
        endpoint: String,
    },
    /// The endpoint could not be reached (refused, unresolvable, timed out).
    #[error("SQS queue {queue}: cannot reach {endpoint}: {reason}")]
    Unreachable {
        /// The queue's URL.
        queue: String,
        /// The endpoint.
        endpoint: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The service refused the call.
    #[error("SQS queue {queue}: {operation}: {code}: {message}")]
    Service {
        /// The queue's URL.
        queue: String,
        /// The SQS action.
        operation: &'static str,
        /// SQS's error code.
        code: String,
        /// SQS's message.
        message: String,
    },
    /// The call failed otherwise (an answer that could not be read, a request not built).
    #[error("SQS queue {queue}: {operation}: {reason}")]
    Call {
        /// The queue's URL.
        queue: String,
        /// The SQS action.
        operation: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// An AWS endpoint, and no credentials to sign with.
    #[error(
        "SQS queue {queue}: no AWS credentials to call it with (set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY, or a profile with static keys)"
    )]
    NoCredentials {
        /// The queue's URL.
        queue: String,
    },
    /// The text is not a queue URL or ARN.
    #[error("{text:?} is not an SQS queue URL or ARN")]
    NotAQueue {
        /// What was given.
        text: String,
    },
}

/// Sends `body` to the queue at `queue` (a URL from [`queue_url`]).
pub async fn send_message(queue: &str, body: String) -> Result<(), SqsError> {
    let located = address::parse(queue, None).ok_or_else(|| SqsError::NotAQueue {
        text: queue.to_owned(),
    })?;
    client::send(&located, body).await
}
