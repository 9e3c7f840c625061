//! The one request type every entry point (CLI, Invoke API, HTTP front) builds, and the one
//! outcome every invocation ends in. Nothing below this module sees HTTP or terminal types.

use bytes::Bytes;
use serde_json::json;

use crate::error::Failure;

/// One invocation as asked for by a caller, before it has a request id.
#[derive(Debug, Clone, Default)]
pub struct InvokeRequest {
    /// The request id to run under; a new one is made when absent. Lambda keeps one id across
    /// the retries of an asynchronous invocation.
    pub request_id: Option<String>,
    /// The event payload, exactly as the function will read it from `/next`.
    pub payload: Bytes,
    /// The caller's client context (JSON), passed as `Lambda-Runtime-Client-Context`.
    pub client_context: Option<String>,
    /// The caller's Cognito identity (JSON), passed as `Lambda-Runtime-Cognito-Identity`.
    pub cognito_identity: Option<String>,
    /// An X-Ray trace header to continue; a new trace id is made when absent.
    pub trace_id: Option<String>,
    /// Return the last 4 KB of the invocation's log with its outcome
    /// (`X-Amz-Log-Type: Tail`).
    pub log_tail: bool,
}

/// An error the function reported itself (through `/invocation/{id}/error` or
/// `/init/error`). It is data: passed to the invoker as the function wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// The error type, validated the way Lambda does (`Runtime.Unknown` when unusable).
    pub error_type: String,
    /// The error document the runtime posted, verbatim.
    pub payload: Bytes,
}

impl FunctionError {
    /// Builds the error from what a runtime posted: the `Lambda-Runtime-Function-Error-Type`
    /// header when it is a valid type, else the body's `errorType`, else `Runtime.Unknown`.
    pub fn from_runtime(header_type: Option<&str>, body: Bytes) -> Self {
        let body_type = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("errorType")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
            });
        let error_type = header_type
            .filter(|t| is_valid_error_type(t))
            .map(str::to_owned)
            .or(body_type)
            .unwrap_or_else(|| "Runtime.Unknown".to_owned());
        let payload = if body.is_empty() {
            Bytes::from(
                json!({ "errorType": error_type, "errorMessage": "" })
                    .to_string()
                    .into_bytes(),
            )
        } else {
            body
        };
        FunctionError {
            error_type,
            payload,
        }
    }
}

/// `(Runtime|Function)\.[A-Z][a-zA-Z]+`, the check Lambda applies to a runtime's error type
/// header; runtimes also send plain types such as `Unhandled`, which are kept as the body's.
fn is_valid_error_type(t: &str) -> bool {
    let rest = t
        .strip_prefix("Runtime.")
        .or_else(|| t.strip_prefix("Function."));
    rest.is_some_and(|r| {
        let mut chars = r.chars();
        chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && r.len() >= 2
            && chars.all(|c| c.is_ascii_alphabetic())
    })
}

/// How an invocation ended: exactly one of these, exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeOutcome {
    /// The function answered; the bytes it posted to `/response`.
    Response(Bytes),
    /// The function reported an error.
    FunctionError(FunctionError),
    /// The invocation failed around the function: exit, timeout, bad bootstrap, host failure.
    Failure(Failure),
}

/// An invocation refused because the function is at its concurrency: every environment is
/// busy and no other may start. Nothing ran; the caller may try again (Lambda's
/// `TooManyRequestsException`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Rate Exceeded.")]
pub struct Throttled;

/// A finished invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The request id the function saw.
    pub request_id: String,
    /// What happened.
    pub outcome: InvokeOutcome,
    /// The end of the invocation's log, START to REPORT, when the request asked for it.
    pub log_tail: Option<Bytes>,
    /// From the event's hand-over to the runtime until its outcome, as REPORT's `Duration`
    /// says; zero when it never reached a runtime.
    pub duration: std::time::Duration,
}

impl Completed {
    /// Lambda's error type when the invocation failed.
    pub fn error_type(&self) -> Option<&str> {
        match &self.outcome {
            InvokeOutcome::Response(_) => None,
            InvokeOutcome::FunctionError(e) => Some(&e.error_type),
            InvokeOutcome::Failure(f) => Some(f.error_type()),
        }
    }

    /// What the invoker receives: the response bytes, or the error document.
    pub fn body(&self) -> Bytes {
        match &self.outcome {
            InvokeOutcome::Response(b) => b.clone(),
            InvokeOutcome::FunctionError(e) => e.payload.clone(),
            InvokeOutcome::Failure(f) => Bytes::from(f.to_json(&self.request_id).to_string()),
        }
    }
}

/// How an invocation (or init) ended, as the records' `status` and `errorType` say it: the one
/// mapping from an outcome to Lambda's vocabulary, for the Telemetry and Logs APIs and for the
/// function's JSON log alike.
///
/// Lambda's schema page knows `success`, `failure` and `error`, with an `errorType` for the
/// latter two; its emulator adds `timeout` (`lambda-apis-wave2.md` §2.5). What the function's
/// runtime reported through `/error` is `error` with the function's `errorType`: the page gives
/// no other status for a failed invocation. (The Runtime Interface Emulator's invoke path says
/// `success` for it, and Lambda's text `REPORT` line shows no status; neither is a record.)
/// `Sandbox.*` failures are the platform's, `failure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// It answered.
    Success,
    /// The function reported an error, or its runtime failed (`Runtime.ExitError`, …).
    Error(String),
    /// The platform failed it (`Sandbox.*`).
    Failure(String),
    /// It ran out of time. Lambda's timeout records carry no `errorType` (a capture of 2026).
    Timeout,
}

impl Status {
    /// How `outcome` is told.
    pub fn of(outcome: &InvokeOutcome) -> Status {
        match outcome {
            InvokeOutcome::Response(_) => Status::Success,
            InvokeOutcome::FunctionError(e) => Status::Error(e.error_type.clone()),
            InvokeOutcome::Failure(f) => Status::of_failure(f),
        }
    }

    /// How an invocation (or init) that ended with `failure` is told.
    pub fn of_failure(failure: &Failure) -> Status {
        match failure {
            Failure::Timeout(_) | Failure::InitTimeout(_) => Status::Timeout,
            f if f.error_type().starts_with("Sandbox.") => {
                Status::Failure(f.error_type().to_owned())
            }
            f => Status::Error(f.error_type().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_type_validation_follows_lambda() {
        assert!(is_valid_error_type("Runtime.ExitError"));
        assert!(is_valid_error_type("Function.MyError"));
        assert!(!is_valid_error_type("Unhandled"));
        assert!(!is_valid_error_type("Runtime.lower"));
        assert!(!is_valid_error_type("Runtime."));
        let body = Bytes::from_static(br#"{"errorType":"ValueError","errorMessage":"boom"}"#);
        let e = FunctionError::from_runtime(Some("Unhandled"), body.clone());
        assert_eq!(e.error_type, "ValueError");
        assert_eq!(e.payload, body);
        let e = FunctionError::from_runtime(Some("Function.Bad"), Bytes::from_static(b"not json"));
        assert_eq!(e.error_type, "Function.Bad");
        assert_eq!(e.payload, Bytes::from_static(b"not json"));
        let e = FunctionError::from_runtime(None, Bytes::new());
        assert_eq!(e.error_type, "Runtime.Unknown");
    }
}
