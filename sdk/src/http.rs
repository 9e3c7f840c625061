//! HTTP handlers, as `lambda_http` has them: an API Gateway REST API (payload 1.0), HTTP API
//! (payload 2.0), function URL (2.0) or ALB event becomes an [`http::Request`](Request), and
//! the handler's [`http::Response`](Response) becomes the answer that event's origin expects.
//! Binary bodies travel base64-encoded both ways; request cookies become a `Cookie` header,
//! and `Set-Cookie` headers become payload 2.0's `cookies` (or 1.0's multi-value headers).
//!
//! ```no_run
//! use lamina_sdk::http::{Error, IntoResponse, Request, RequestExt, run, service_fn};
//!
//! async fn hello(request: Request) -> Result<impl IntoResponse, Error> {
//!     let name = request.path_parameters_ref().and_then(|p| p.first("name")).unwrap_or("you");
//!     Ok(format!("hello, {name}"))
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Error> {
//!     run(service_fn(hello)).await
//! }
//! ```

use std::collections::HashMap;

use ::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use aws_lambda_events::alb::{
    AlbTargetGroupRequest, AlbTargetGroupRequestContext, AlbTargetGroupResponse,
};
use aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyRequestContext, ApiGatewayProxyResponse,
    ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext, ApiGatewayV2httpResponse,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::DeserializeOwned;

pub use ::http::{Method, StatusCode};
pub use aws_lambda_events::encodings::Body;
pub use aws_lambda_events::query_map::QueryMap;

use crate::handler::Invoke;
pub use crate::{Context, Diagnostic, Error, Service, service_fn};

/// The request a handler gets.
pub type Request = ::http::Request<Body>;
/// The response a handler gives.
pub type Response<B = Body> = ::http::Response<B>;

/// Serves HTTP events with `handler`.
pub async fn run<S>(handler: S) -> Result<(), Error>
where
    S: Service<Request>,
    S::Response: IntoResponse,
    S::Error: Into<Diagnostic>,
{
    crate::serve(&mut Http { service: handler }).await
}

struct Http<S> {
    service: S,
}

impl<S> Invoke for Http<S>
where
    S: Service<Request>,
    S::Response: IntoResponse,
    S::Error: Into<Diagnostic>,
{
    async fn invoke(&mut self, payload: &[u8], context: Context) -> Result<Vec<u8>, Diagnostic> {
        let (request, origin) = parse(payload, context)?;
        let response = crate::handler::call(&mut self.service, request).await?;
        Ok(origin.respond(response.into_response()))
    }
}

/// Where the event came from: what its answer must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// API Gateway REST API, payload 1.0.
    V1,
    /// API Gateway HTTP API or a function URL, payload 2.0.
    V2,
    /// An Application Load Balancer; `multi` when the target group uses multi-value headers.
    Alb { multi: bool },
}

/// The request context of the event, by origin.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RequestContext {
    /// API Gateway REST API (payload 1.0).
    ApiGatewayV1(ApiGatewayProxyRequestContext),
    /// API Gateway HTTP API or function URL (payload 2.0).
    ApiGatewayV2(ApiGatewayV2httpRequestContext),
    /// Application Load Balancer.
    Alb(AlbTargetGroupRequestContext),
}

#[derive(Debug, Clone)]
struct QueryStringParameters(QueryMap);
#[derive(Debug, Clone)]
struct PathParameters(QueryMap);
#[derive(Debug, Clone)]
struct StageVariables(QueryMap);

/// What the event carried besides the HTTP request itself, as `lambda_http` offers it.
pub trait RequestExt {
    /// The query string's parameters (empty when there were none).
    fn query_string_parameters(&self) -> QueryMap;
    /// The query string's parameters, when there were any.
    fn query_string_parameters_ref(&self) -> Option<&QueryMap>;
    /// The route's path parameters (`{name}` in `/hello/{name}`).
    fn path_parameters(&self) -> QueryMap;
    /// The route's path parameters, when there were any.
    fn path_parameters_ref(&self) -> Option<&QueryMap>;
    /// The stage's variables.
    fn stage_variables(&self) -> QueryMap;
    /// The origin's request context.
    fn request_context_ref(&self) -> Option<&RequestContext>;
    /// The invocation's context.
    fn lambda_context_ref(&self) -> Option<&Context>;
    /// The invocation's context (empty when the request did not come from an event).
    fn lambda_context(&self) -> Context;
    /// The body deserialised as JSON (`None` when empty).
    fn payload<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error>;
}

fn non_empty(map: Option<&QueryMap>) -> Option<&QueryMap> {
    map.filter(|m| !m.is_empty())
}

impl RequestExt for Request {
    fn query_string_parameters(&self) -> QueryMap {
        self.query_string_parameters_ref()
            .cloned()
            .unwrap_or_default()
    }
    fn query_string_parameters_ref(&self) -> Option<&QueryMap> {
        non_empty(
            self.extensions()
                .get::<QueryStringParameters>()
                .map(|q| &q.0),
        )
    }
    fn path_parameters(&self) -> QueryMap {
        self.path_parameters_ref().cloned().unwrap_or_default()
    }
    fn path_parameters_ref(&self) -> Option<&QueryMap> {
        non_empty(self.extensions().get::<PathParameters>().map(|p| &p.0))
    }
    fn stage_variables(&self) -> QueryMap {
        self.extensions()
            .get::<StageVariables>()
            .map(|s| s.0.clone())
            .unwrap_or_default()
    }
    fn request_context_ref(&self) -> Option<&RequestContext> {
        self.extensions().get()
    }
    fn lambda_context_ref(&self) -> Option<&Context> {
        self.extensions().get()
    }
    fn lambda_context(&self) -> Context {
        self.lambda_context_ref().cloned().unwrap_or_default()
    }
    fn payload<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        if self.body().is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(self.body()).map(Some)
    }
}

/// What a handler may answer with.
pub trait IntoResponse {
    /// The HTTP response.
    fn into_response(self) -> Response;
}

impl<B: Into<Body>> IntoResponse for ::http::Response<B> {
    fn into_response(self) -> Response {
        self.map(Into::into)
    }
}

fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        with_type(StatusCode::OK, "text/plain; charset=utf-8", self.into())
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        self.to_owned().into_response()
    }
}

impl IntoResponse for serde_json::Value {
    fn into_response(self) -> Response {
        with_type(StatusCode::OK, "application/json", self.to_string().into())
    }
}

impl<B: Into<Body>> IntoResponse for (StatusCode, B) {
    fn into_response(self) -> Response {
        let mut response = Response::new(self.1.into());
        *response.status_mut() = self.0;
        response
    }
}

fn unmarshal(message: impl std::fmt::Display) -> Diagnostic {
    Diagnostic::new("Runtime.UnmarshalError", message.to_string())
}

fn decode<T: DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T, Diagnostic> {
    serde_json::from_value(value)
        .map_err(|e| unmarshal(format!("the event is not a valid {what} event: {e}")))
}

/// The event as a request, and where it came from.
fn parse(payload: &[u8], context: Context) -> Result<(Request, Origin), Diagnostic> {
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| unmarshal(format!("the event is not JSON: {e}")))?;
    let context_of = |key: &str| {
        value
            .get("requestContext")
            .and_then(|c| c.get(key))
            .is_some()
    };
    let (mut request, origin) = if context_of("elb") {
        let event: AlbTargetGroupRequest = decode("ALB", value)?;
        from_alb(event)?
    } else if context_of("http") || value.get("version").and_then(|v| v.as_str()) == Some("2.0") {
        let event: ApiGatewayV2httpRequest = decode("API Gateway payload 2.0", value)?;
        (from_v2(event)?, Origin::V2)
    } else if value.get("httpMethod").is_some() {
        let event: ApiGatewayProxyRequest = decode("API Gateway payload 1.0", value)?;
        (from_v1(event)?, Origin::V1)
    } else {
        return Err(unmarshal(
            "the event is not an HTTP request (API Gateway payload 1.0 or 2.0, function URL or ALB)",
        ));
    };
    request.extensions_mut().insert(context);
    Ok((request, origin))
}

fn body(text: Option<String>, base64: bool) -> Result<Body, Diagnostic> {
    Ok(match text {
        None => Body::Empty,
        Some(text) if text.is_empty() => Body::Empty,
        Some(text) if base64 => Body::Binary(
            BASE64
                .decode(text.as_bytes())
                .map_err(|e| unmarshal(format!("the body is marked base64 but is not: {e}")))?,
        ),
        Some(text) => Body::Text(text),
    })
}

/// Percent-encodes what may not appear raw in a URI's path or query (payload 1.0 paths and
/// parameters arrive decoded). `%` is kept when it already starts an escape.
fn encode(text: &str, query_part: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    for (i, &b) in bytes.iter().enumerate() {
        let escape_start = b == b'%'
            && bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        let plain = b.is_ascii_alphanumeric()
            || b"-._~!$'()*,;:@/".contains(&b)
            || (!query_part && b"&=+".contains(&b))
            || escape_start;
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn build(
    method: Method,
    host: Option<&str>,
    path: &str,
    query: &str,
    headers: HeaderMap,
    body: Body,
) -> Result<Request, Diagnostic> {
    let path = if path.is_empty() { "/" } else { path };
    let mut uri = match host {
        Some(host) => format!("https://{host}{}", encode(path, false)),
        None => encode(path, false),
    };
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(query);
    }
    let mut request = ::http::Request::builder()
        .method(method)
        .uri(&uri)
        .body(body)
        .map_err(|e| unmarshal(format!("the request's URI {uri:?} is not valid: {e}")))?;
    *request.headers_mut() = headers;
    Ok(request)
}

fn host_of<'a>(headers: &'a HeaderMap, domain: Option<&'a str>) -> Option<&'a str> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(domain)
        .filter(|h| !h.is_empty())
}

fn query_of(map: &QueryMap) -> String {
    map.iter()
        .map(|(k, v)| format!("{}={}", encode(k, true), encode(v, true)))
        .collect::<Vec<_>>()
        .join("&")
}

fn params(map: HashMap<String, String>) -> QueryMap {
    QueryMap::from(map)
}

fn from_v2(event: ApiGatewayV2httpRequest) -> Result<Request, Diagnostic> {
    let mut headers = event.headers;
    if let Some(cookies) = event.cookies.filter(|c| !c.is_empty()) {
        let joined = HeaderValue::from_str(&cookies.join("; "))
            .map_err(|e| unmarshal(format!("the request's cookies are not a valid header: {e}")))?;
        headers.insert(header::COOKIE, joined);
    }
    let context = event.request_context;
    let path = event
        .raw_path
        .or_else(|| context.http.path.clone())
        .unwrap_or_default();
    let host = host_of(&headers, context.domain_name.as_deref()).map(str::to_owned);
    let mut request = build(
        context.http.method.clone(),
        host.as_deref(),
        &path,
        event.raw_query_string.as_deref().unwrap_or_default(),
        headers,
        body(event.body, event.is_base64_encoded)?,
    )?;
    let extensions = request.extensions_mut();
    extensions.insert(QueryStringParameters(event.query_string_parameters));
    extensions.insert(PathParameters(params(event.path_parameters)));
    extensions.insert(StageVariables(params(event.stage_variables)));
    extensions.insert(RequestContext::ApiGatewayV2(context));
    Ok(request)
}

/// Payload 1.0 and ALB events carry headers and query parameters twice, single- and
/// multi-valued: the multi-value ones when there are any (they hold every value).
fn multi_or_single<T: Carried>(multi: T, single: T) -> T {
    if multi.is_empty() { single } else { multi }
}

/// What an event carries in both forms.
trait Carried {
    fn is_empty(&self) -> bool;
}

impl Carried for HeaderMap {
    fn is_empty(&self) -> bool {
        HeaderMap::is_empty(self)
    }
}

impl Carried for QueryMap {
    fn is_empty(&self) -> bool {
        QueryMap::is_empty(self)
    }
}

fn from_v1(event: ApiGatewayProxyRequest) -> Result<Request, Diagnostic> {
    let headers = multi_or_single(event.multi_value_headers, event.headers);
    let query = multi_or_single(
        event.multi_value_query_string_parameters,
        event.query_string_parameters,
    );
    let context = event.request_context;
    let host = host_of(&headers, context.domain_name.as_deref()).map(str::to_owned);
    let mut request = build(
        event.http_method,
        host.as_deref(),
        event.path.as_deref().unwrap_or_default(),
        &query_of(&query),
        headers,
        body(event.body, event.is_base64_encoded)?,
    )?;
    let extensions = request.extensions_mut();
    extensions.insert(QueryStringParameters(query));
    extensions.insert(PathParameters(params(event.path_parameters)));
    extensions.insert(StageVariables(params(event.stage_variables)));
    extensions.insert(RequestContext::ApiGatewayV1(context));
    Ok(request)
}

fn from_alb(event: AlbTargetGroupRequest) -> Result<(Request, Origin), Diagnostic> {
    let multi = !event.multi_value_headers.is_empty();
    let headers = multi_or_single(event.multi_value_headers, event.headers);
    let query = multi_or_single(
        event.multi_value_query_string_parameters,
        event.query_string_parameters,
    );
    // An ALB passes the query string as the client sent it (still encoded).
    let raw_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let host = host_of(&headers, None).map(str::to_owned);
    let mut request = build(
        event.http_method,
        host.as_deref(),
        event.path.as_deref().unwrap_or_default(),
        &raw_query,
        headers,
        body(event.body, event.is_base64_encoded)?,
    )?;
    let extensions = request.extensions_mut();
    extensions.insert(QueryStringParameters(query));
    extensions.insert(RequestContext::Alb(event.request_context));
    Ok((request, Origin::Alb { multi }))
}

/// The body for the answer, and whether it is base64.
fn answer_body(body: Body) -> (Option<Body>, bool) {
    match body {
        Body::Empty => (None, false),
        Body::Binary(bytes) => (Some(Body::Binary(bytes)), true),
        other => (Some(other), false),
    }
}

/// One value per header: repeated ones joined with `, ` (RFC 9110), as payload 2.0 and
/// single-value ALB answers carry them.
fn single_valued(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in headers.keys() {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if let Ok(value) = HeaderValue::from_str(&values.join(", ")) {
            out.insert(name.clone(), value);
        }
    }
    out
}

impl Origin {
    /// The response as the JSON this origin expects.
    fn respond(self, response: Response) -> Vec<u8> {
        let (parts, body) = response.into_parts();
        let status = i64::from(parts.status.as_u16());
        let (body, base64) = answer_body(body);
        let json = match self {
            Origin::V2 => {
                let mut headers = parts.headers;
                let cookies = take_all(&mut headers, &header::SET_COOKIE);
                let mut answer = ApiGatewayV2httpResponse::default();
                answer.status_code = status;
                answer.headers = single_valued(&headers);
                answer.cookies = cookies;
                answer.body = body;
                answer.is_base64_encoded = base64;
                serde_json::to_vec(&answer)
            }
            Origin::V1 => {
                let mut answer = ApiGatewayProxyResponse::default();
                answer.status_code = status;
                answer.multi_value_headers = parts.headers;
                answer.body = body;
                answer.is_base64_encoded = base64;
                serde_json::to_vec(&answer)
            }
            Origin::Alb { multi } => {
                let mut answer = AlbTargetGroupResponse::default();
                answer.status_code = status;
                answer.status_description = Some(format!(
                    "{} {}",
                    parts.status.as_u16(),
                    parts.status.canonical_reason().unwrap_or_default()
                ));
                if multi {
                    answer.multi_value_headers = parts.headers;
                } else {
                    answer.headers = single_valued(&parts.headers);
                }
                answer.body = body;
                answer.is_base64_encoded = base64;
                serde_json::to_vec(&answer)
            }
        };
        // These types hold only strings, numbers and maps of strings: they always serialise.
        json.unwrap_or_default()
    }
}

fn take_all(headers: &mut HeaderMap, name: &HeaderName) -> Vec<String> {
    let values = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    headers.remove(name);
    values
}

#[cfg(test)]
mod tests;
