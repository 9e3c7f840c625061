//! lamina's host: it serves the AWS Lambda Runtime API to a function's own `bootstrap` and runs
//! invocations through the spine every feature plugs into:
//!
//! front or CLI → [`invoke::InvokeRequest`] → the function's [`pool::FunctionPool`] → an
//! execution environment ([`pool::environment`]) started in a [`sandbox`] → that environment's
//! own [`runtime_api`] listener → exactly one [`invoke::InvokeOutcome`] back through a oneshot.
//!
//! Modules are declared in reading order. ARCHITECTURE.md at the repository root is the map.

/// Request bodies read with a size limit, for the Runtime API and `lamina serve`.
mod body;
/// The command line.
pub mod cli;
/// Functions as written by users, and their resolved immutable [`config::FunctionSpec`].
pub mod config;
/// Host failures and their mapping to Lambda's `Runtime.*`/`Sandbox.*` error types.
pub mod error;
/// The one request type every entry point builds, and the one outcome every invocation ends in.
pub mod invoke;
/// The function's log stream: its own output and Lambda's START/END/REPORT lines.
pub mod logs;

/// Managed runtimes (`python3.N`, `nodejsN.x`): the host's interpreter and AWS's runtime client.
pub mod managed;
/// Per-function pools of execution environments.
pub mod pool;
/// lamina's directories on the host (run, state, cache): trusted, swept and removed safely.
pub mod run_dir;
/// The Runtime API (2018-06-01) served to one environment.
pub mod runtime_api;
/// Lambda's Telemetry and Logs APIs: subscriptions, records, and their delivery to extensions.
pub mod telemetry;

/// Sample events of Lambda's event sources (`lamina event generate`).
pub mod sample_events;
/// Where a bootstrap runs: the seam between the pool and the operating system.
pub mod sandbox;
/// `lamina serve`: the Invoke API and the API Gateway-style HTTP front.
pub mod serve;
/// The owner tasks' one-deadline timer.
pub(crate) mod timer;
