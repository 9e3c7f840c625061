//! The Lambda Invoke API, `POST /2015-03-31/functions/{name}/invocations`, as AWS SDKs and
//! the AWS CLI call it with `--endpoint-url`. The request is parsed here, at the edge, into an
//! [`InvokeRequest`]; service errors come back in Lambda's shape (status, `x-amzn-ErrorType`,
//! a JSON body with `Type` and `Message`), which the SDKs turn into their exception types.
//!
//! Credentials and signatures are not checked: lamina is a local or trusted-network server
//! (SECURITY.md).

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::event_queue::{AsyncEvent, Refused};
use super::{App, Reply, reply};
use crate::body::{self, BodyError};
use crate::config::function_arn;
use crate::config::lambda_env::FUNCTION_VERSION;
use crate::invoke::{InvokeRequest, Throttled};

/// The path prefix this API answers under.
pub const PREFIX: &str = "/2015-03-31/functions/";
/// Lambda's limit on a synchronous invocation's payload: 6 MB.
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// Lambda's limit on an asynchronous invocation's payload: 1 MB.
pub const MAX_ASYNC_PAYLOAD: usize = 1024 * 1024;
/// Lambda's limit on `X-Amz-Client-Context`, base64.
const MAX_CLIENT_CONTEXT: usize = 3583;

/// A service error, as Lambda reports it.
#[derive(Debug)]
pub(super) struct ServiceError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    reason: Option<&'static str>,
}

impl ServiceError {
    pub(super) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ServiceError {
            status,
            kind,
            message: message.into(),
            reason: None,
        }
    }

    pub(super) fn not_found(arn: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: {arn}"),
        )
    }

    pub(super) fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    pub(super) fn into_reply(self) -> Reply {
        let mut body = serde_json::json!({ "Type": "User", "Message": self.message });
        if let Some(reason) = self.reason {
            body["Reason"] = reason.into();
        }
        let mut r = reply(self.status)
            .header("x-amzn-ErrorType", self.kind)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        r.extensions_mut()
            .insert(super::Refusal(format!("{}: {}", self.kind, self.message)));
        r
    }
}

impl From<Throttled> for ServiceError {
    fn from(t: Throttled) -> Self {
        ServiceError {
            reason: Some("ReservedFunctionConcurrentInvocationLimitExceeded"),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                t.to_string(),
            )
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

/// Handles one Invoke API request; its path starts with [`PREFIX`].
pub async fn handle(app: &App, parts: &http::request::Parts, body: hyper::body::Incoming) -> Reply {
    match invoke(app, parts, body).await {
        Ok(reply) => reply,
        Err(e) => e.into_reply(),
    }
}

async fn invoke(
    app: &App,
    parts: &http::request::Parts,
    body: hyper::body::Incoming,
) -> Result<Reply, ServiceError> {
    let (method, headers) = (&parts.method, &parts.headers);
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or_default();
    let Some(name_part) = path
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix("/invocations"))
        .filter(|n| !n.is_empty() && !n.contains('/'))
    else {
        return Err(ServiceError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("no such operation: {method} {path}"),
        ));
    };
    if method != http::Method::POST {
        return Err(ServiceError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnknownOperationException",
            format!("Invoke is POST, not {method}"),
        ));
    }
    let (name, mut qualifier) = function_name(&super::routes::decode(name_part));
    for pair in query.split('&') {
        if let Some(q) = pair.strip_prefix("Qualifier=") {
            qualifier = Some(super::routes::decode(q));
        }
    }
    let Some(function) = app.served().functions.get(&name).cloned() else {
        let arn = function_arn(&app.region(), &name, qualifier.as_deref());
        return Err(ServiceError::not_found(&arn));
    };
    // lamina has no published versions or aliases: only $LATEST exists.
    if let Some(q) = qualifier.as_deref().filter(|q| *q != FUNCTION_VERSION) {
        let arn = function_arn(&function.pool.spec().region, &name, Some(q));
        return Err(ServiceError::not_found(&arn));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let kind = match header("x-amz-invocation-type") {
        None | Some("RequestResponse") => InvocationType::RequestResponse,
        Some("Event") => InvocationType::Event,
        Some("DryRun") => InvocationType::DryRun,
        Some(other) => {
            return Err(ServiceError::invalid_parameter(format!(
                "X-Amz-Invocation-Type {other:?} is not RequestResponse, Event or DryRun"
            )));
        }
    };
    let log_tail = match header("x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(ServiceError::invalid_parameter(format!(
                "X-Amz-Log-Type {other:?} is not None or Tail"
            )));
        }
    };
    let client_context = header("x-amz-client-context")
        .map(decode_client_context)
        .transpose()?;
    let limit = match kind {
        InvocationType::Event => MAX_ASYNC_PAYLOAD,
        _ => MAX_SYNC_PAYLOAD,
    };
    let payload = read_payload(body, headers, limit, kind).await?;
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        // The SDKs send no body when no payload is given; Lambda's event is then `{}`.
        Bytes::from_static(b"{}")
    } else {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
            return Err(ServiceError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                format!("Could not parse request body into json: {e}"),
            ));
        }
        payload
    };
    let request = InvokeRequest {
        payload,
        client_context,
        trace_id: header("x-amzn-trace-id").map(str::to_owned),
        log_tail,
        ..Default::default()
    };
    match kind {
        InvocationType::DryRun => Ok(reply(StatusCode::NO_CONTENT)
            .header("x-amzn-RequestId", uuid::Uuid::new_v4().to_string())
            .body(Bytes::new())),
        InvocationType::Event => {
            let request_id = uuid::Uuid::new_v4().to_string();
            let event = AsyncEvent::new(Arc::clone(&function), request_id.clone(), request);
            // The 202 is a promise: it is sent only once the event is durable.
            match app.events.enqueue(event).await {
                Ok(()) => {}
                Err(Refused::Stopping) => {
                    return Err(ServiceError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceException",
                        "lamina is shutting down",
                    ));
                }
                Err(Refused::Store(e)) => {
                    return Err(ServiceError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "ServiceException",
                        format!("the event was not accepted: {e}"),
                    ));
                }
            }
            Ok(reply(StatusCode::ACCEPTED)
                .header("x-amzn-RequestId", request_id)
                .body(Bytes::new()))
        }
        InvocationType::RequestResponse => {
            let done = function.pool.try_invoke(request).await?;
            let mut r = reply(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("X-Amz-Executed-Version", FUNCTION_VERSION)
                .header("x-amzn-RequestId", done.request_id.as_str());
            if done.error_type().is_some() {
                r = r.header("X-Amz-Function-Error", "Unhandled");
            }
            if let Some(tail) = &done.log_tail {
                let encoded = base64::engine::general_purpose::STANDARD.encode(tail);
                r = r.header("X-Amz-Log-Result", encoded);
            }
            Ok(r.body(done.body()))
        }
    }
}

/// The name and qualifier of a `FunctionName`: `name`, `name:qualifier`, a full ARN
/// (`arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`) or a partial one
/// (`ACCOUNT:function:NAME[:QUALIFIER]`).
pub(super) fn function_name(given: &str) -> (String, Option<String>) {
    let rest = match given.split_once(":function:") {
        Some((_, rest)) => rest,
        None => given,
    };
    match rest.split_once(':') {
        Some((name, qualifier)) => (name.to_owned(), Some(qualifier.to_owned())),
        None => (rest.to_owned(), None),
    }
}

/// `X-Amz-Client-Context` is base64 of a JSON object; the runtime gets the JSON.
fn decode_client_context(encoded: &str) -> Result<String, ServiceError> {
    let bad = || {
        ServiceError::invalid_parameter(
            "X-Amz-Client-Context must be a valid Base64-encoded JSON object",
        )
    };
    if encoded.len() > MAX_CLIENT_CONTEXT {
        return Err(ServiceError::invalid_parameter(format!(
            "X-Amz-Client-Context is {} bytes, over Lambda's {MAX_CLIENT_CONTEXT}",
            encoded.len()
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad())?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) if v.is_object() => String::from_utf8(bytes).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The body, refused with 413 past `limit` (as early as `Content-Length` says so).
async fn read_payload(
    body: hyper::body::Incoming,
    headers: &HeaderMap,
    limit: usize,
    kind: InvocationType,
) -> Result<Bytes, ServiceError> {
    let too_large = |n: usize| {
        let kind = match kind {
            InvocationType::Event => "Event",
            InvocationType::RequestResponse => "RequestResponse",
            InvocationType::DryRun => "DryRun",
        };
        ServiceError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!(
                "{n} byte payload is too large for the {kind} invocation type (limit {limit} bytes)"
            ),
        )
    };
    let bytes = body::read_request_body(headers, body, limit)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(n) => too_large(n),
            BodyError::Broken(e) => ServiceError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                format!("reading the request body: {e}"),
            ),
        })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_in_every_form() {
        let n = |s: &str| function_name(s);
        assert_eq!(n("hello"), ("hello".into(), None));
        assert_eq!(n("hello:$LATEST"), ("hello".into(), Some("$LATEST".into())));
        assert_eq!(
            n("arn:aws:lambda:us-east-1:000000000000:function:hello"),
            ("hello".into(), None)
        );
        assert_eq!(
            n("000000000000:function:hello:prod"),
            ("hello".into(), Some("prod".into()))
        );
    }

    #[test]
    fn client_context_must_be_base64_json() {
        let ok = base64::engine::general_purpose::STANDARD.encode(br#"{"custom":{"a":1}}"#);
        assert_eq!(decode_client_context(&ok).unwrap(), r#"{"custom":{"a":1}}"#);
        assert!(decode_client_context("!!").is_err());
        let not_object = base64::engine::general_purpose::STANDARD.encode(b"[1]");
        assert!(decode_client_context(&not_object).is_err());
    }
}
