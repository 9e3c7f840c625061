//! The native transport: a Runtime API client over one kept-alive HTTP/1.1 connection to
//! `AWS_LAMBDA_RUNTIME_API` (blocking I/O, `connection.rs`), the `next` → handler →
//! `response`/`error` loop, and init errors for configuration the function cannot start
//! without.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::context::Invocation;
use crate::handler::Invoke;
use crate::{Config, Context, Diagnostic};

mod connection;

use connection::{CallError, Connection};

const API: &str = "/2018-06-01/runtime";

/// The Runtime API could not be used; the runtime ends with this error (Lambda then restarts
/// the environment).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `AWS_LAMBDA_RUNTIME_API` is not set: this is not running under Lambda or lamina.
    #[error("AWS_LAMBDA_RUNTIME_API is not set: the runtime has no Runtime API to call")]
    NoApi,
    /// Connecting or talking to the API failed.
    #[error("the Runtime API at {addr}: {source}")]
    Transport {
        /// The API's address.
        addr: String,
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The API answered a call with an unexpected status.
    #[error("the Runtime API answered {method} {path} with {status}: {body}")]
    Status {
        /// The call's method.
        method: Method,
        /// The call's path.
        path: String,
        /// The status.
        status: StatusCode,
        /// The body, as text.
        body: String,
    },
}

/// A Runtime API client on one kept-alive connection, reconnecting when the host closed it.
///
/// Its calls block the thread they are made on until the API answers; they are `async` so that
/// they fit the loop around the handler, which is. Lambda freezes the whole environment
/// between events, so nothing of the function's is meant to run while the runtime waits for
/// `/next`; tasks on a multi-threaded runtime's workers go on running anyway. Blocking makes a
/// call one write and, usually, one read: half the system calls of a client on tokio's
/// reactor, and no task hand-offs (the runtime's own cost was a third of the CPU of a loaded
/// lamina host; SPECIFICATION.md).
#[derive(Debug)]
pub struct Client {
    addr: String,
    connection: Option<Connection>,
    /// The request head being sent, kept to be written into again.
    head: Vec<u8>,
}

impl Client {
    /// A client of the API at `addr` (`host:port`); connects on first use.
    pub fn new(addr: impl Into<String>) -> Client {
        Client {
            addr: addr.into(),
            connection: None,
            head: Vec::with_capacity(256),
        }
    }

    /// A client of the API this process was started with.
    pub fn from_env() -> Result<Client, ClientError> {
        std::env::var("AWS_LAMBDA_RUNTIME_API")
            .map(Client::new)
            .map_err(|_| ClientError::NoApi)
    }

    fn transport(
        &self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ClientError {
        ClientError::Transport {
            addr: self.addr.clone(),
            source: source.into(),
        }
    }

    /// One call; the answer's status, headers and body.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        self.head.clear();
        let _ = write!(
            self.head,
            "{method} {path} HTTP/1.1\r\nhost: {}\r\n",
            self.addr
        );
        if method != Method::GET {
            let _ = write!(self.head, "content-length: {}\r\n", body.len());
        }
        for (name, value) in headers {
            let _ = write!(self.head, "{name}: {value}\r\n");
        }
        self.head.extend_from_slice(b"\r\n");
        loop {
            let connection = match &mut self.connection {
                Some(connection) => connection,
                None => {
                    let opened = Connection::open(&self.addr).map_err(|e| self.transport(e))?;
                    self.connection.insert(opened)
                }
            };
            let reused = connection.used;
            match connection.call(&self.head, &body, method == Method::HEAD) {
                Ok((answer, keep_alive)) => {
                    if !keep_alive {
                        self.connection = None;
                    }
                    return Ok((answer.status, answer.headers, answer.body));
                }
                // The host closed the kept-alive connection while it was idle: it never saw
                // this call, which goes again on a new connection.
                Err(CallError::Unanswered(_)) if reused => self.connection = None,
                Err(CallError::Unanswered(e)) => {
                    self.connection = None;
                    return Err(self.transport(e));
                }
                Err(CallError::Failed(e)) => {
                    self.connection = None;
                    return Err(self.transport(e));
                }
            }
        }
    }

    /// Posts and expects `202 Accepted`; anything else is reported.
    async fn post(
        &mut self,
        path: String,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(), ClientError> {
        let (status, _, answer) = self.call(Method::POST, &path, headers, body).await?;
        if status == StatusCode::ACCEPTED {
            return Ok(());
        }
        Err(ClientError::Status {
            method: Method::POST,
            path,
            status,
            body: String::from_utf8_lossy(&answer).into_owned(),
        })
    }

    /// Waits for the next event: its headers and payload.
    pub async fn next(&mut self) -> Result<(HeaderMap, Bytes), ClientError> {
        const NEXT: &str = "/2018-06-01/runtime/invocation/next";
        let (status, headers, body) = self.call(Method::GET, NEXT, &[], Vec::new()).await?;
        if status != StatusCode::OK {
            return Err(ClientError::Status {
                method: Method::GET,
                path: NEXT.to_owned(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok((headers, body))
    }

    /// Posts an invocation's response.
    pub async fn response(&mut self, request_id: &str, body: Vec<u8>) -> Result<(), ClientError> {
        let path = format!("{API}/invocation/{request_id}/response");
        self.post(path, &[], body).await
    }

    /// Posts an invocation's error.
    pub async fn error(&mut self, request_id: &str, error: &Diagnostic) -> Result<(), ClientError> {
        let path = format!("{API}/invocation/{request_id}/error");
        let headers = [(
            "lambda-runtime-function-error-type",
            error.error_type.as_str(),
        )];
        self.post(path, &headers, error.to_json()).await
    }

    /// Reports that the function cannot start.
    pub async fn init_error(&mut self, error: &Diagnostic) -> Result<(), ClientError> {
        let headers = [(
            "lambda-runtime-function-error-type",
            error.error_type.as_str(),
        )];
        self.post(format!("{API}/init/error"), &headers, error.to_json())
            .await
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Serves events until the API fails.
pub(crate) async fn serve(handler: &mut impl Invoke) -> Result<(), crate::Error> {
    let mut client = Client::from_env()?;
    serve_with(&mut client, handler, Config::from_env()).await
}

pub(crate) async fn serve_with(
    client: &mut Client,
    handler: &mut impl Invoke,
    config: Result<Config, crate::context::ConfigError>,
) -> Result<(), crate::Error> {
    let config = match config {
        Ok(config) => Arc::new(config),
        Err(e) => {
            client
                .init_error(&Diagnostic::new("Runtime.InvalidConfig", e.to_string()))
                .await?;
            return Err(e.into());
        }
    };
    loop {
        let (headers, payload) = client.next().await?;
        let invocation = Invocation {
            request_id: header(&headers, "lambda-runtime-aws-request-id"),
            deadline_ms: header(&headers, "lambda-runtime-deadline-ms"),
            function_arn: header(&headers, "lambda-runtime-invoked-function-arn"),
            trace_id: header(&headers, "lambda-runtime-trace-id"),
            client_context: header(&headers, "lambda-runtime-client-context"),
            cognito_identity: header(&headers, "lambda-runtime-cognito-identity"),
        };
        let Some(request_id) = invocation.request_id.map(str::to_owned) else {
            // Nothing to answer to: the host is not speaking the Runtime API.
            return Err(
                "the Runtime API sent an event without Lambda-Runtime-Aws-Request-Id".into(),
            );
        };
        let outcome = match Context::new(&invocation, Arc::clone(&config)) {
            Ok(context) => handler.invoke(&payload, context).await,
            Err(e) => Err(Diagnostic::new("Runtime.InvalidInvocation", e.to_string())),
        };
        let posted = match outcome {
            Ok(body) => client.response(&request_id, body).await,
            Err(error) => client.error(&request_id, &error).await,
        };
        match posted {
            Ok(()) => {}
            // The host refused this answer (too large, or the invocation is over): it has
            // ended the invocation itself; serve the next one.
            Err(ClientError::Status { status, body, .. }) if status.is_client_error() => {
                eprintln!("lamina-sdk: the answer to {request_id} was refused ({status}): {body}");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests;
