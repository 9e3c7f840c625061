//! `lamina serve`: one HTTP listener for the Lambda Invoke API ([`invoke_api`]) and an API
//! Gateway-style front ([`apigw`], [`routes`]), over the same per-function pools `lamina
//! invoke` uses. Each request is parsed at the edge into an [`InvokeRequest`]; from there it
//! is the spine: the function's pool, an environment, exactly one outcome. Asynchronous
//! invocations go through the [`event_queue`].
//!
//! Shutdown ([`serve`]'s `shutdown` future): the listener closes, requests in flight finish
//! (their invocations within their deadlines), the event queue drains, then every pool stops
//! its environments (runtimes get SIGTERM).

pub mod apigw;
pub mod control_plane;
pub mod event_queue;
pub mod event_store;
pub mod invoke_api;
pub mod metrics;
pub mod routes;
pub mod schedule;
pub mod sqs;
pub mod watch;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::body::{self, BodyError};
use crate::config::file::PayloadVersion;
use crate::error::Failure;
use crate::invoke::{InvokeOutcome, InvokeRequest};
use crate::pool::FunctionPool;
use event_queue::EventQueue;
use routes::RouteTable;

/// API Gateway's limit on a request: 10 MB.
pub const MAX_HTTP_REQUEST: usize = 10 * 1024 * 1024;

/// A served function.
#[derive(Debug)]
pub struct Function {
    /// Its pool of environments.
    pub pool: FunctionPool,
    /// Lambda's asynchronous invocation configuration: retries, event age, destinations.
    pub asynchronous: crate::config::file::AsyncConfig,
    /// Its configuration and files' state when it was loaded: a reload keeps the function
    /// (and its warm environments) when this is unchanged.
    pub identity: String,
}

impl Function {
    /// The function's name.
    pub fn name(&self) -> &str {
        &self.pool.spec().name
    }
}

/// The functions and routes being served: replaced as a whole when `lamina serve --watch`
/// reloads, so that one request sees one version of everything.
#[derive(Debug)]
pub struct Served {
    /// By name.
    pub functions: HashMap<String, Arc<Function>>,
    /// The HTTP front's routes.
    pub routes: RouteTable,
    /// The schedules that invoke functions (run by [`schedule::start`]).
    pub schedules: Vec<schedule::Schedule>,
}

/// Everything a request handler reads.
#[derive(Debug)]
pub struct App {
    /// The current version; a handler takes a snapshot ([`App::served`]) and keeps to it.
    served: RwLock<Arc<Served>>,
    /// Pools of versions that were replaced, still finishing what they had.
    retired: Mutex<Vec<FunctionPool>>,
    /// Asynchronous invocations.
    pub events: EventQueue,
}

impl App {
    /// Serves `served`.
    pub fn new(served: Served, events: EventQueue) -> App {
        App {
            served: RwLock::new(Arc::new(served)),
            retired: Mutex::new(Vec::new()),
            events,
        }
    }

    /// The current version of everything served.
    pub fn served(&self) -> Arc<Served> {
        Arc::clone(&self.served.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `next` in place of the current version. Every function it does not carry over
    /// unchanged (the same `Arc<Function>`) is retired: its idle environments shut down now,
    /// busy ones when their invocation ends.
    pub fn replace(&self, next: Served) {
        let next = Arc::new(next);
        let old = std::mem::replace(
            &mut *self.served.write().unwrap_or_else(PoisonError::into_inner),
            Arc::clone(&next),
        );
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, function) in &old.functions {
            let kept = next
                .functions
                .get(name)
                .is_some_and(|f| Arc::ptr_eq(f, function));
            if !kept {
                function.pool.retire();
                retired.push(function.pool.clone());
            }
        }
    }

    /// Drains the event queue, then stops every function's environments (also those of
    /// replaced versions).
    pub async fn shutdown(&self) {
        self.events.shutdown().await;
        for function in self.served().functions.values() {
            function.pool.shutdown().await;
        }
        let retired =
            std::mem::take(&mut *self.retired.lock().unwrap_or_else(PoisonError::into_inner));
        for pool in retired {
            pool.shutdown().await;
        }
    }

    /// The region in the ARN of a function that does not exist: the one every function
    /// names, or lamina's default when they differ (or there are none).
    fn region(&self) -> String {
        let served = self.served();
        let mut regions = served
            .functions
            .values()
            .map(|f| f.pool.spec().region.as_str());
        let first = regions.next().unwrap_or(crate::config::DEFAULT_REGION);
        if regions.all(|r| r == first) {
            first.to_owned()
        } else {
            crate::config::DEFAULT_REGION.to_owned()
        }
    }
}

/// What a handler answers.
pub type Reply = http::Response<Full<Bytes>>;

/// A response builder whose `body` cannot fail (a header that HTTP cannot carry makes it a
/// 500, which only a bug here can cause).
#[derive(Debug)]
pub struct ReplyBuilder(http::response::Builder);

/// Starts a response with `status`.
pub fn reply(status: StatusCode) -> ReplyBuilder {
    ReplyBuilder(http::Response::builder().status(status))
}

impl ReplyBuilder {
    /// Adds a header.
    pub fn header<K, V>(self, name: K, value: V) -> Self
    where
        http::HeaderName: TryFrom<K>,
        <http::HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        http::HeaderValue: TryFrom<V>,
        <http::HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        ReplyBuilder(self.0.header(name, value))
    }

    /// Finishes the response.
    pub fn body(self, body: impl Into<Bytes>) -> Reply {
        self.0.body(Full::new(body.into())).unwrap_or_else(|e| {
            tracing::error!("building a response: {e}");
            let mut r = http::Response::new(Full::default());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down in order: no new
/// connections, requests in flight finish, the event queue drains, environments stop.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, for instance: wait rather than spin.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = Arc::clone(&app);
                let service = hyper::service::service_fn(move |request| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, Infallible>(handle(&app, request, peer).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    // Every invocation in flight ends by its deadline; this bound only keeps a client that
    // never finishes sending its request from holding the shutdown.
    let longest = app
        .served()
        .functions
        .values()
        .map(|f| f.pool.spec().timeout + f.pool.spec().init_timeout)
        .max()
        .unwrap_or_default();
    if tokio::time::timeout(longest + Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at shutdown were closed");
    }
    app.shutdown().await;
}

async fn handle(
    app: &App,
    request: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Reply {
    let (parts, body) = request.into_parts();
    let reply = if parts.method == http::Method::GET && control_plane::answers(parts.uri.path()) {
        control_plane::handle(app, &parts)
    } else if parts.method == http::Method::GET && parts.uri.path() == metrics::PATH {
        let mut reply = Reply::new(Full::new(Bytes::from(metrics::render())));
        reply.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        reply
    } else if parts.uri.path().starts_with(invoke_api::PREFIX) {
        invoke_api::handle(app, &parts, body).await
    } else {
        front(app, &parts, body, peer).await
    };
    // Only what lamina itself refused: a function's own 4xx (through the front) is its answer.
    if let Some(refusal) = reply.extensions().get::<Refusal>() {
        log_refusal(&parts, reply.status(), &refusal.0, peer);
    }
    reply
}

/// Why a request was refused, attached to the reply by the code that refused it (the status
/// alone does not tell an operator which route, limit or function was at fault).
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

/// The target of the one line logged, at the default level, for each refused request.
pub const REQUEST_LOG: &str = "lamina::requests";

/// One line for a refused request (404, 400, 413, 429, …): method, path, status and reason.
/// Answers that reached a function (its own errors, 502, 504) are in its log stream instead.
fn log_refusal(parts: &http::request::Parts, status: StatusCode, reason: &str, peer: SocketAddr) {
    tracing::info!(
        target: REQUEST_LOG,
        "{} {} {} from {peer}: {}: {reason}",
        status.as_u16(),
        parts.method,
        parts.uri.path(),
        status.canonical_reason().unwrap_or_default(),
    );
}

/// The API Gateway-style front: route, build the event, invoke, map the answer.
async fn front(
    app: &App,
    parts: &http::request::Parts,
    body: hyper::body::Incoming,
    peer: SocketAddr,
) -> Reply {
    let served = app.served();
    // A function URL's function sees the path after its prefix, on the `$default` route.
    let (found, path) = match served.routes.find_url(parts.uri.path()) {
        Some((matched, rest)) => (Some(matched), rest),
        None => (
            served.routes.find(parts.method.as_str(), parts.uri.path()),
            parts.uri.path(),
        ),
    };
    let Some(matched) = found else {
        return refused(
            send(
                apigw::gateway_error(StatusCode::NOT_FOUND, PayloadVersion::V2),
                None,
            ),
            "no route matches (and it is not the Invoke API's path, /2015-03-31/functions/…)",
        );
    };
    let version = matched.route.payload;
    let request_id = uuid::Uuid::new_v4().to_string();
    let ids = Some((version, request_id.as_str()));
    let route = &matched.route.key;
    let too_large = |what: &str| {
        refused(
            send(
                apigw::gateway_error(StatusCode::PAYLOAD_TOO_LARGE, version),
                ids,
            ),
            format!("route {route}: {what}"),
        )
    };
    let body = match body::read_request_body(&parts.headers, body, MAX_HTTP_REQUEST).await {
        Ok(body) => body,
        Err(BodyError::TooLarge(_)) => {
            return too_large(&format!(
                "the body is over API Gateway's {MAX_HTTP_REQUEST} bytes"
            ));
        }
        Err(BodyError::Broken(e)) => {
            return refused(
                send(apigw::gateway_error(StatusCode::BAD_REQUEST, version), ids),
                format!("route {route}: request {request_id}: reading the body: {e}"),
            );
        }
    };
    let http_request = apigw::HttpRequest {
        method: parts.method.as_str(),
        raw_path: path,
        raw_query: parts.uri.query().unwrap_or_default(),
        headers: &parts.headers,
        body: &body,
        source_ip: peer.ip().to_string(),
        request_id: &request_id,
        time: SystemTime::now(),
    };
    let event = apigw::event(&http_request, &matched);
    // Lambda's own 6 MB limit applies to the event, base64 and all.
    if event.len() > invoke_api::MAX_SYNC_PAYLOAD {
        return too_large(&format!(
            "the event is {} bytes, over Lambda's {} bytes",
            event.len(),
            invoke_api::MAX_SYNC_PAYLOAD
        ));
    }
    let Some(function) = served.functions.get(&matched.route.function) else {
        // The configuration check makes every route's function exist.
        return send(
            apigw::gateway_error(StatusCode::INTERNAL_SERVER_ERROR, version),
            ids,
        );
    };
    let trace_id = parts
        .headers
        .get("x-amzn-trace-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let request = InvokeRequest {
        payload: Bytes::from(event),
        trace_id,
        ..Default::default()
    };
    let done = match function.pool.try_invoke(request).await {
        Ok(done) => done,
        Err(_) => {
            return refused(
                send(
                    apigw::gateway_error(StatusCode::TOO_MANY_REQUESTS, version),
                    ids,
                ),
                format!(
                    "route {route}: function {} is at its concurrency ({})",
                    function.name(),
                    function.pool.spec().concurrency
                ),
            );
        }
    };
    let status = match &done.outcome {
        InvokeOutcome::Response(payload) => match apigw::response(version, payload) {
            Ok(response) => return send(response, ids),
            Err(reason) => {
                tracing::warn!(
                    route = %matched.route.key,
                    function = function.name(),
                    request_id = %done.request_id,
                    "502: {reason}"
                );
                StatusCode::BAD_GATEWAY
            }
        },
        InvokeOutcome::Failure(Failure::Timeout(_) | Failure::InitTimeout(_)) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        InvokeOutcome::FunctionError(_) | InvokeOutcome::Failure(_) => StatusCode::BAD_GATEWAY,
    };
    send(apigw::gateway_error(status, version), ids)
}

/// A reply that refuses the request, with why (see [`log_refusal`]).
fn refused(mut reply: Reply, reason: impl Into<String>) -> Reply {
    reply.extensions_mut().insert(Refusal(reason.into()));
    reply
}

/// Sends a front response, with API Gateway's request id header.
fn send(response: apigw::HttpResponse, ids: Option<(PayloadVersion, &str)>) -> Reply {
    let mut r = http::Response::new(Full::new(response.body));
    *r.status_mut() = response.status;
    let headers = r.headers_mut();
    for (name, value) in response.headers {
        headers.append(name, value);
    }
    if let Some((version, id)) = ids
        && let Ok(v) = http::HeaderValue::from_str(id)
    {
        let name = match version {
            PayloadVersion::V2 => "apigw-requestid",
            PayloadVersion::V1 => "x-amzn-requestid",
        };
        headers.insert(name, v);
    }
    r
}
