//! Write a Lambda handler once; build it as a native `bootstrap` that speaks the Lambda
//! Runtime API (on lamina, or unchanged on AWS Lambda's `provided.al2023`), or as a
//! `wasm32-wasip1`/`wasm32-wasip2` module that speaks lamina's WASM guest ABI.
//!
//! The API is `lambda_runtime`'s: [`run`], [`service_fn`], [`LambdaEvent`], [`Context`],
//! [`Diagnostic`], [`Error`]. HTTP handlers use the [`http`](mod@http) module, as with
//! `lambda_http`. Event types come from `aws_lambda_events`, re-exported as [`events`] behind
//! this crate's features (`sqs`, `sns`, `s3`, `dynamodb`, `kinesis`, `eventbridge`,
//! `all-events`; `http` is on by default).
//!
//! # A complete function
//!
//! ```no_run
//! use lamina_sdk::{Error, LambdaEvent, run, service_fn};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Order { quantity: u32, price_cents: u32 }
//!
//! #[derive(Serialize)]
//! struct Total { total_cents: u64 }
//!
//! // The business logic knows nothing of Lambda.
//! fn total(order: &Order) -> u64 {
//!     u64::from(order.quantity) * u64::from(order.price_cents)
//! }
//!
//! // A thin adapter.
//! async fn handler(event: LambdaEvent<Order>) -> Result<Total, Error> {
//!     Ok(Total { total_cents: total(&event.payload) })
//! }
//!
//! // `current_thread`: the flavour tokio offers on both native and wasm32-wasi targets.
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Error> {
//!     run(service_fn(handler)).await
//! }
//! ```
//!
//! Build it as `cargo build --release` (name the executable `bootstrap` in the function's
//! package) or `cargo build --release --target wasm32-wasip1` (the `.wasm` is the function).
//! For WASM, link with more initial memory than Rust declares
//! (`-C link-arg=--initial-memory=4194304` in the project's `.cargo/config.toml`): every
//! invocation is a fresh instance, and one that must grow its memory pays for it each time
//! (docs/wasm-guest-abi.md, "Performance").
//!
//! # What each build does
//!
//! - **Native:** reads `AWS_LAMBDA_RUNTIME_API` and loops on `GET /runtime/invocation/next`,
//!   posting each answer to `/response` or `/error`, over one kept-alive connection. The
//!   client blocks its thread while it waits for the next event, as Lambda freezes the
//!   environment between events: tasks spawned on a `current_thread` runtime make progress
//!   while a handler runs, not between events (on a multi-threaded runtime, its workers go
//!   on). Missing or malformed configuration (`AWS_LAMBDA_FUNCTION_NAME`,
//!   `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`) is posted to `/init/error` as `Runtime.InvalidConfig`
//!   and [`run`] returns the error.
//! - **WASM** (docs/wasm-guest-abi.md in the lamina repository): one event per instance. The
//!   payload is stdin; the invocation's metadata is in `LAMBDA_RUNTIME_AWS_REQUEST_ID`,
//!   `LAMBDA_RUNTIME_DEADLINE_MS`, `LAMBDA_RUNTIME_INVOKED_FUNCTION_ARN`,
//!   `LAMBDA_RUNTIME_TRACE_ID`, `LAMBDA_RUNTIME_CLIENT_CONTEXT`,
//!   `LAMBDA_RUNTIME_COGNITO_IDENTITY`; the response goes to stdout with exit status 0, an
//!   error's `{"errorType","errorMessage"}` to stdout with exit status 1. Log with
//!   `eprintln!`: stderr is the function's log, as on Lambda.
//!
//! Either way: an event that does not deserialise is `Runtime.UnmarshalError`; a handler's
//! error is reported with its type's name (`ParseIntError`; `Error` for a plain message); a
//! panic is caught and reported as `Panic`, and a native runtime goes on serving.
//!
//! # Porting from `lambda_runtime`
//!
//! 1. In `Cargo.toml`, replace `lambda_runtime` (and `lambda_http`, `aws_lambda_events`) with
//!    `lamina-sdk`, enabling the event features you use.
//! 2. `use lambda_runtime::…` → `use lamina_sdk::…`; `use lambda_http::…` →
//!    `use lamina_sdk::http::…`; `aws_lambda_events::event::sqs::…` →
//!    `lamina_sdk::events::sqs::…`.
//! 3. For a WASM build, use `#[tokio::main(flavor = "current_thread")]` and tokio's `rt` and
//!    `macros` features only (tokio has no multi-threaded runtime or networking on WASI).
//!
//! Not carried over: response streaming, Lambda extensions, `tower` layers that need a
//! multi-threaded runtime on WASM, and `Context::tenant_id`. The X-Ray trace id is
//! `Context::xray_trace_id`; the SDK does not set `_X_AMZN_TRACE_ID` (changing the process's
//! environment while it runs is unsound in Rust 2024).

mod context;
mod diagnostic;
mod handler;
#[cfg(feature = "http")]
pub mod http;
#[cfg(not(target_family = "wasm"))]
pub mod native;
#[cfg(target_family = "wasm")]
mod wasm;

pub use aws_lambda_events as events;
pub use context::InvocationError;
pub use context::{
    ClientApplication, ClientContext, CognitoIdentity, Config, ConfigError, Context,
};
pub use diagnostic::{Diagnostic, Error};
pub use tower::{Service, service_fn};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An event and its invocation's context.
#[derive(Debug, Clone)]
pub struct LambdaEvent<T> {
    /// The event.
    pub payload: T,
    /// The invocation.
    pub context: Context,
}

impl<T> LambdaEvent<T> {
    /// An event with its context.
    pub fn new(payload: T, context: Context) -> LambdaEvent<T> {
        LambdaEvent { payload, context }
    }

    /// The event and the context, apart.
    pub fn into_parts(self) -> (T, Context) {
        (self.payload, self.context)
    }
}

/// Serves the function's events with `handler`: natively, until the Runtime API fails (a
/// runtime's normal life is to be stopped by its host); on WASM, the one event of this run.
pub async fn run<A, F>(handler: F) -> Result<(), Error>
where
    F: Service<LambdaEvent<A>>,
    F::Response: Serialize,
    F::Error: Into<Diagnostic>,
    A: DeserializeOwned,
{
    serve(&mut handler::Typed::new(handler)).await
}

/// The transport of this build.
async fn serve(handler: &mut impl handler::Invoke) -> Result<(), Error> {
    #[cfg(not(target_family = "wasm"))]
    return native::serve(handler).await;
    #[cfg(target_family = "wasm")]
    return wasm::serve(handler).await;
}
