//! The Runtime API's wire: header names, the event a `/next` returns, and the API's own error
//! responses with the status codes and bodies the Runtime Interface Emulator gives.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

use crate::body::BodyError;

/// `Lambda-Runtime-Aws-Request-Id`
pub const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
/// `Lambda-Runtime-Deadline-Ms`
pub const DEADLINE_MS: &str = "lambda-runtime-deadline-ms";
/// `Lambda-Runtime-Invoked-Function-Arn`
pub const FUNCTION_ARN: &str = "lambda-runtime-invoked-function-arn";
/// `Lambda-Runtime-Trace-Id`
pub const TRACE_ID: &str = "lambda-runtime-trace-id";
/// `Lambda-Runtime-Client-Context`
pub const CLIENT_CONTEXT: &str = "lambda-runtime-client-context";
/// `Lambda-Runtime-Cognito-Identity`
pub const COGNITO_IDENTITY: &str = "lambda-runtime-cognito-identity";
/// `Lambda-Runtime-Function-Error-Type`
pub const FUNCTION_ERROR_TYPE: &str = "lambda-runtime-function-error-type";

/// Which of the two subscription APIs a request came through (its rules:
/// `telemetry::subscription`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionApi {
    /// `PUT /2022-07-01/telemetry`
    Telemetry,
    /// `PUT /2020-08-15/logs`, the older API with fewer record types.
    Logs,
}

/// The body type every Runtime API response here carries.
pub type Body = Full<Bytes>;

/// What `/next` returns for one invocation.
#[derive(Debug, Clone)]
pub struct NextEvent {
    /// The invocation's request id.
    pub request_id: String,
    /// Unix epoch milliseconds at which the invocation times out.
    pub deadline_ms: u64,
    /// The invoked function's ARN.
    pub function_arn: String,
    /// The X-Ray trace header.
    pub trace_id: String,
    /// The caller's client context, when given.
    pub client_context: Option<String>,
    /// The caller's Cognito identity, when given.
    pub cognito_identity: Option<String>,
    /// The event payload.
    pub payload: Bytes,
}

impl NextEvent {
    pub(crate) fn into_response(self) -> Response<Body> {
        let mut response = Response::new(Full::new(self.payload));
        let headers = response.headers_mut();
        let mut put = |name: &'static str, value: &str| {
            // Values are built by the host or validated at the edge; one that still is not a
            // valid header value is dropped rather than failing the invocation.
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        put(REQUEST_ID, &self.request_id);
        put(DEADLINE_MS, &self.deadline_ms.to_string());
        put(FUNCTION_ARN, &self.function_arn);
        put(TRACE_ID, &self.trace_id);
        if let Some(c) = &self.client_context {
            put(CLIENT_CONTEXT, c);
        }
        if let Some(c) = &self.cognito_identity {
            put(COGNITO_IDENTITY, c);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// An error the Runtime API returns to the runtime. A rejected call changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `errorType` of the body.
    pub error_type: &'static str,
    /// The `errorMessage` of the body.
    pub message: String,
}

impl ApiError {
    /// 400: the request id is not the current invocation's.
    pub fn invalid_request_id() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error_type: "InvalidRequestID",
            message: "Invalid request ID".into(),
        }
    }

    /// 403: the call does not fit the environment's state (for example a second answer).
    pub fn invalid_state(from: &str, to: &str, why: &str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            error_type: "InvalidStateTransition",
            message: format!(
                "State transition from {from} to {to} failed for runtime. Error: {why}"
            ),
        }
    }

    /// 413: the body is over the payload limit.
    pub fn too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error_type: "RequestEntityTooLarge",
            message: format!(
                "Exceeded maximum allowed payload size ({} bytes).",
                crate::error::MAX_PAYLOAD_BYTES
            ),
        }
    }

    /// 400: the body ended before its declared length.
    pub fn truncated() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error_type: "TruncatedHTTPRequest",
            message: "The request body was truncated".into(),
        }
    }

    /// 404: no such endpoint.
    pub fn not_found(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            error_type: "NotFound",
            message: format!("No route for {path}"),
        }
    }

    /// 405: the endpoint exists, but not with this method.
    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error_type: "MethodNotAllowed",
            message: format!("{method} is not allowed on {path}"),
        }
    }

    /// 500: the environment is gone; the runtime should exit.
    pub fn internal(message: &str) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "InternalServerError",
            message: message.into(),
        }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let body = json!({ "errorMessage": self.message, "errorType": self.error_type });
        json_response(self.status, body.to_string())
    }
}

impl From<BodyError> for ApiError {
    /// A body the API could not read: over the payload limit, or cut off.
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(_) => ApiError::too_large(),
            BodyError::Broken(_) => ApiError::truncated(),
        }
    }
}

/// 202 `{"status":"OK"}`, the answer to an accepted response or error report.
pub(crate) fn accepted() -> Response<Body> {
    json_response(StatusCode::ACCEPTED, r#"{"status":"OK"}"#.to_owned())
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
