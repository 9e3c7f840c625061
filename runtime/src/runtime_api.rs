//! The Runtime API (2018-06-01) as one execution environment sees it. Each environment gets its
//! own listener, whose address only that environment is given; the API learns which environment
//! is calling from the listener, never from anything the guest sends.
//!
//! This module is HTTP only: it parses each request into an [`ApiCall`] and sends it to the
//! environment's task, which owns all state and decides the answer.

/// The Extensions API (2020-01-01) on the same listener: one environment's registrations,
/// events, and what init and an invocation wait for.
pub mod extensions;
pub mod peer;
pub mod wire;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::body::{self, BodyError};
use crate::error::MAX_PAYLOAD_BYTES;
use extensions::{ErrorKind, ExtensionCall};
use wire::SubscriptionApi as Api;
use wire::{ApiError, Body, NextEvent};

/// The answer the environment gives to a call.
pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// One parsed Runtime API call.
#[derive(Debug)]
pub enum ApiCall {
    /// `GET /runtime/invocation/next`: answered when an event exists.
    Next(Reply<NextEvent>),
    /// `POST /runtime/invocation/{id}/response` within the payload limit.
    Response {
        /// The request id in the path.
        request_id: String,
        /// The response payload.
        body: Bytes,
        /// When the runtime began to answer (the request's head was read): telemetry's
        /// `responseDuration` runs from here to the body's end.
        began: Instant,
        /// Accepted, or why not.
        reply: Reply<()>,
    },
    /// `POST /runtime/invocation/{id}/response` over the payload limit.
    ResponseTooLarge {
        /// The request id in the path.
        request_id: String,
        /// Always answered with an error: 413 when the id was right.
        reply: Reply<()>,
    },
    /// `POST /runtime/invocation/{id}/error`
    Error {
        /// The request id in the path.
        request_id: String,
        /// `Lambda-Runtime-Function-Error-Type`, when sent.
        error_type: Option<String>,
        /// The error document.
        body: Bytes,
        /// When the runtime began to send it, as for a response.
        began: Instant,
        /// Accepted, or why not.
        reply: Reply<()>,
    },
    /// Not HTTP: from a runtime that lives in the host (the WASM backend), the invocation
    /// `request_id` (or, when `None`, the init phase) ended in a failure only the host sees:
    /// an exit status, a trap, running out of memory, a module that cannot be loaded. The
    /// environment itself goes on unless the failure came during init.
    Failed {
        /// The invocation, or `None` during init.
        request_id: Option<String>,
        /// What happened, mapped to Lambda's error types in [`crate::error`].
        failure: crate::error::Failure,
        /// Accepted, or why not.
        reply: Reply<()>,
    },
    /// A call of the Extensions API (`/2020-01-01/extension/…`), served on the same listener.
    Extension(crate::runtime_api::extensions::ExtensionCall),
    /// `PUT /2022-07-01/telemetry` or `PUT /2020-08-15/logs`: an extension subscribes.
    Subscribe {
        /// Which of the two APIs.
        api: Api,
        /// `Lambda-Extension-Identifier`, when sent.
        identifier: Option<String>,
        /// The subscription request, parsed by the environment's telemetry.
        body: Bytes,
        /// Accepted (200 `"OK"`), or why not.
        reply: Reply<()>,
    },
    /// `POST /runtime/init/error`
    InitError {
        /// `Lambda-Runtime-Function-Error-Type`, when sent.
        error_type: Option<String>,
        /// The error document.
        body: Bytes,
        /// Accepted, or why not.
        reply: Reply<()>,
    },
}

/// Binds a fresh listener on loopback for one environment.
pub async fn bind() -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves the Runtime API on `listener`, sending every call to `calls`. With `only_uid`, a
/// connection is served only when its client socket belongs to that uid (a sandbox in the
/// host's network namespace); any other is closed before a byte is read. Runs until aborted.
pub async fn serve(
    listener: TcpListener,
    calls: mpsc::UnboundedSender<ApiCall>,
    only_uid: Option<u32>,
) {
    let local = listener.local_addr();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, peer)) => match (only_uid, &local) {
                (None, _) => stream,
                (Some(uid), Ok(local)) => match peer::owner_uid(*local, peer) {
                    Ok(owner) if owner == uid => stream,
                    found => {
                        let owner = found.map_or_else(|e| e.to_string(), |o| format!("uid {o}"));
                        tracing::warn!(%peer, %owner, sandbox_uid = uid,
                            "runtime api refused a connection from outside its sandbox");
                        continue;
                    }
                },
                (Some(_), Err(e)) => {
                    tracing::warn!(error = %e, "runtime api cannot tell its own address; refusing");
                    continue;
                }
            },
            Err(e) => {
                // Out of descriptors or similar: back off rather than spin.
                tracing::warn!(error = %e, "runtime api accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Each call is a small request and response: Nagle's algorithm would add delay.
        let _ = stream.set_nodelay(true);
        let calls = calls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, calls.clone()));
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "runtime api connection ended");
            }
        });
    }
}

/// The route table.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Next,
    Response(String),
    Error(String),
    InitError,
    ExtensionRegister,
    ExtensionNext,
    ExtensionError(ErrorKind),
    Subscribe(Api),
}

const PREFIX: &str = "/2018-06-01/runtime/";
/// The Extensions API's prefix.
const EXTENSION_PREFIX: &str = "/2020-01-01/extension/";
/// The Telemetry API's one endpoint.
const TELEMETRY_PATH: &str = "/2022-07-01/telemetry";
/// The Logs API's one endpoint.
const LOGS_PATH: &str = "/2020-08-15/logs";

fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let subscribe = match path {
        TELEMETRY_PATH => Some(Api::Telemetry),
        LOGS_PATH => Some(Api::Logs),
        _ => None,
    };
    if let Some(api) = subscribe {
        return match *method == Method::PUT {
            true => Ok(Route::Subscribe(api)),
            false => Err(ApiError::method_not_allowed(method, path)),
        };
    }
    if let Some(rest) = path.strip_prefix(EXTENSION_PREFIX) {
        let (route, allowed) = match rest {
            "register" => (Route::ExtensionRegister, Method::POST),
            "event/next" => (Route::ExtensionNext, Method::GET),
            "init/error" => (Route::ExtensionError(ErrorKind::Init), Method::POST),
            "exit/error" => (Route::ExtensionError(ErrorKind::Exit), Method::POST),
            _ => return Err(ApiError::not_found(path)),
        };
        return match *method == allowed {
            true => Ok(route),
            false => Err(ApiError::method_not_allowed(method, path)),
        };
    }
    let rest = path
        .strip_prefix(PREFIX)
        .ok_or_else(|| ApiError::not_found(path))?;
    let (route, allowed) = match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["invocation", "next"] => (Route::Next, Method::GET),
        ["init", "error"] => (Route::InitError, Method::POST),
        ["invocation", id, "response"] if !id.is_empty() => {
            (Route::Response((*id).to_owned()), Method::POST)
        }
        ["invocation", id, "error"] if !id.is_empty() => {
            (Route::Error((*id).to_owned()), Method::POST)
        }
        _ => return Err(ApiError::not_found(path)),
    };
    if *method == allowed {
        Ok(route)
    } else {
        Err(ApiError::method_not_allowed(method, path))
    }
}

async fn handle(
    req: Request<Incoming>,
    calls: mpsc::UnboundedSender<ApiCall>,
) -> Result<Response<Body>, Infallible> {
    let route = match route(req.method(), req.uri().path()) {
        Ok(route) => route,
        Err(e) => return Ok(e.into_response()),
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let error_type = header(wire::FUNCTION_ERROR_TYPE);
    let extension_id = header(extensions::IDENTIFIER);
    let response = match route {
        Route::Subscribe(api) => match read_body(req).await {
            Ok(body) => call(&calls, |reply| ApiCall::Subscribe {
                api,
                identifier: extension_id,
                body,
                reply,
            })
            .await
            .map(|()| wire::json_response(http::StatusCode::OK, r#""OK""#.to_owned())),
            Err(e) => Err(e.into()),
        },
        Route::ExtensionRegister => {
            let name = header(extensions::NAME).unwrap_or_default();
            let accept_feature = header(extensions::ACCEPT_FEATURE);
            match read_body(req).await {
                Ok(body) => call(&calls, |reply| {
                    ApiCall::Extension(ExtensionCall::Register {
                        name,
                        accept_feature,
                        body,
                        reply,
                    })
                })
                .await
                .map(extensions::Registered::into_response),
                Err(e) => Err(e.into()),
            }
        }
        Route::ExtensionNext => call(&calls, |reply| {
            ApiCall::Extension(ExtensionCall::Next {
                id: extension_id,
                reply,
            })
        })
        .await
        .map(extensions::ExtensionEvent::into_response),
        Route::ExtensionError(kind) => {
            // The body is not read: Lambda keeps only the error type.
            let error_type = header(extensions::FUNCTION_ERROR_TYPE);
            call(&calls, |reply| {
                ApiCall::Extension(ExtensionCall::Error {
                    kind,
                    id: extension_id,
                    error_type,
                    reply,
                })
            })
            .await
            .map(|()| wire::accepted())
        }
        Route::Next => call(&calls, ApiCall::Next)
            .await
            .map(NextEvent::into_response),
        Route::Response(request_id) => {
            // Before the body: a runtime that sends it slowly is in responseDuration.
            let began = Instant::now();
            match read_body(req).await {
                Ok(body) => {
                    call(&calls, |reply| ApiCall::Response {
                        request_id,
                        body,
                        began,
                        reply,
                    })
                    .await
                }
                Err(BodyError::TooLarge(_)) => {
                    call(&calls, |reply| ApiCall::ResponseTooLarge {
                        request_id,
                        reply,
                    })
                    .await
                }
                Err(e) => Err(e.into()),
            }
            .map(|()| wire::accepted())
        }
        Route::Error(request_id) => {
            let began = Instant::now();
            match read_body(req).await {
                Ok(body) => {
                    call(&calls, |reply| ApiCall::Error {
                        request_id,
                        error_type,
                        body,
                        began,
                        reply,
                    })
                    .await
                }
                Err(e) => Err(e.into()),
            }
            .map(|()| wire::accepted())
        }
        Route::InitError => match read_body(req).await {
            Ok(body) => {
                call(&calls, |reply| ApiCall::InitError {
                    error_type,
                    body,
                    reply,
                })
                .await
            }
            Err(e) => Err(e.into()),
        }
        .map(|()| wire::accepted()),
    };
    Ok(response.unwrap_or_else(ApiError::into_response))
}

/// Sends a call to the environment and waits for its answer.
async fn call<T>(
    calls: &mpsc::UnboundedSender<ApiCall>,
    make: impl FnOnce(Reply<T>) -> ApiCall,
) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    let gone = || ApiError::internal("the execution environment is shutting down");
    calls.send(make(reply)).map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

/// Past the payload limit a body is still read (and dropped) up to this much, so that the
/// runtime, which writes its whole body before reading the answer, sees the 413 on a connection
/// that stays open. Beyond it the connection is closed.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

async fn read_body(req: Request<Incoming>) -> Result<Bytes, BodyError> {
    body::read_body(req.into_body(), MAX_PAYLOAD_BYTES, DRAIN_LIMIT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_their_errors() {
        let p = |s: &str| format!("{PREFIX}{s}");
        assert_eq!(route(&Method::GET, &p("invocation/next")), Ok(Route::Next));
        assert_eq!(
            route(&Method::POST, &p("invocation/abc/response")),
            Ok(Route::Response("abc".into()))
        );
        assert_eq!(
            route(&Method::POST, &p("invocation/abc/error")),
            Ok(Route::Error("abc".into()))
        );
        assert_eq!(route(&Method::POST, &p("init/error")), Ok(Route::InitError));
        let x = |s: &str| format!("{EXTENSION_PREFIX}{s}");
        assert_eq!(
            route(&Method::POST, &x("register")),
            Ok(Route::ExtensionRegister)
        );
        assert_eq!(
            route(&Method::GET, &x("event/next")),
            Ok(Route::ExtensionNext)
        );
        assert_eq!(
            route(&Method::POST, &x("exit/error")),
            Ok(Route::ExtensionError(ErrorKind::Exit))
        );
        assert_eq!(route(&Method::GET, &x("register")).unwrap_err().status, 405);
        assert_eq!(
            route(&Method::PUT, "/2022-07-01/telemetry"),
            Ok(Route::Subscribe(Api::Telemetry))
        );
        assert_eq!(
            route(&Method::PUT, "/2020-08-15/logs"),
            Ok(Route::Subscribe(Api::Logs))
        );
        for method in [Method::GET, Method::POST, Method::DELETE] {
            assert_eq!(
                route(&method, "/2022-07-01/telemetry").unwrap_err().status,
                405
            );
            assert_eq!(route(&method, "/2020-08-15/logs").unwrap_err().status, 405);
        }
        assert_eq!(
            route(&Method::PUT, "/2022-07-01/telemetry/x")
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            route(&Method::PUT, "/2020-08-15/other").unwrap_err().status,
            404
        );
        assert_eq!(route(&Method::GET, &x("other")).unwrap_err().status, 404);
        assert_eq!(
            route(&Method::POST, &p("invocation/next"))
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            route(&Method::GET, &p("invocation/abc/response"))
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            route(&Method::GET, &p("invocation//response"))
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            route(&Method::GET, "/2018-06-01/other").unwrap_err().status,
            404
        );
    }
}
