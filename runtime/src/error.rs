//! Failures of the host or of the function's process, as opposed to errors the function itself
//! reports (those are data: [`crate::invoke::FunctionError`]). This is the one place where a
//! failure becomes one of Lambda's error types and messages.

use std::fmt;
use std::time::Duration;

use serde_json::json;

/// The largest response (and event) the Runtime API accepts: 6 MiB + 100 bytes, as on Lambda.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024 + 100;

/// How a process ended, rendered as Go renders it, because Lambda's messages quote that form
/// ("exit status 1", "signal: killed").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Code(code) => write!(f, "exit status {code}"),
            ExitStatus::Signal(signal) => {
                let name = match signal {
                    1 => "hangup",
                    2 => "interrupt",
                    3 => "quit",
                    4 => "illegal instruction",
                    6 => "aborted",
                    7 => "bus error",
                    8 => "floating point exception",
                    9 => "killed",
                    11 => "segmentation fault",
                    13 => "broken pipe",
                    15 => "terminated",
                    _ => return write!(f, "signal: signal {signal}"),
                };
                write!(f, "signal: {name}")
            }
        }
    }
}

/// Why an invocation ended without the function answering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No executable bootstrap in the places Lambda looks.
    BootstrapNotFound {
        /// The paths searched, as the function sees them.
        searched: Vec<String>,
    },
    /// The bootstrap exists but could not be started.
    BootstrapNotExecutable {
        /// Its path, as the function sees it.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The bootstrap exited during init or an invocation.
    Exited(ExitStatus),
    /// The invocation passed its deadline.
    Timeout(Duration),
    /// Init did not reach the first `/next` in time.
    InitTimeout(Duration),
    /// The function's response was larger than [`MAX_PAYLOAD_BYTES`].
    ResponseTooLarge,
    /// The environment ran out of memory.
    OutOfMemory,
    /// A WebAssembly function trapped: the trap (`wasm trap: …`) and where it happened.
    Trapped(String),
    /// lamina itself failed; not the function's fault.
    Sandbox(String),
    /// An extension failed (`Extension.Crash`, `Extension.InitError`, `Extension.ExitError`,
    /// `Extension.LaunchError`): the environment is reset, as on Lambda.
    Extension(Fatal),
}

/// The first fatal error of an environment's extensions (kept by
/// [`crate::runtime_api::extensions::Extensions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// `Extension.InitError`, `Extension.ExitError`, `Extension.Crash`, `Extension.LaunchError`.
    pub error_type: &'static str,
    /// What happened, naming the extension.
    pub message: String,
}

impl Failure {
    /// Lambda's `errorType` for this failure.
    pub fn error_type(&self) -> &'static str {
        match self {
            Failure::BootstrapNotFound { .. } | Failure::BootstrapNotExecutable { .. } => {
                "Runtime.InvalidEntrypoint"
            }
            Failure::Exited(_) => "Runtime.ExitError",
            Failure::Timeout(_) | Failure::InitTimeout(_) => "Sandbox.Timedout",
            Failure::ResponseTooLarge => "Function.ResponseSizeTooLarge",
            Failure::OutOfMemory => "Runtime.OutOfMemory",
            // Lambda has no WASM; a trap is the guest crashing, so it gets a runtime error
            // type of its own, as a native crash gets `Runtime.ExitError`.
            Failure::Trapped(_) => "Runtime.WasmTrap",
            Failure::Sandbox(_) => "Sandbox.Failure",
            Failure::Extension(fatal) => fatal.error_type,
        }
    }

    /// Lambda's `errorMessage` for this failure of the invocation `request_id`.
    pub fn message(&self, request_id: &str) -> String {
        let detail = match self {
            Failure::BootstrapNotFound { searched } => {
                format!("Couldn't find valid bootstrap(s): [{}]", searched.join(" "))
            }
            Failure::BootstrapNotExecutable { path, reason } => {
                format!("fork/exec {path}: {reason}")
            }
            Failure::Exited(ExitStatus::Code(0)) => {
                "Runtime exited without providing a reason".into()
            }
            Failure::Exited(status) => format!("Runtime exited with error: {status}"),
            Failure::Timeout(after) | Failure::InitTimeout(after) => {
                format!("Task timed out after {:.2} seconds", after.as_secs_f64())
            }
            Failure::ResponseTooLarge => {
                // Lambda gives this one without the request id prefix.
                return format!(
                    "Response payload size exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes)."
                );
            }
            Failure::OutOfMemory => "Runtime exited with error: signal: killed".into(),
            // wasmtime's own words: "wasm trap: …" and the backtrace.
            Failure::Trapped(trap) => trap.clone(),
            Failure::Sandbox(reason) => reason.clone(),
            Failure::Extension(fatal) => fatal.message.clone(),
        };
        format!("RequestId: {request_id} Error: {detail}")
    }

    /// The error document an invoker receives, as Lambda renders it.
    pub fn to_json(&self, request_id: &str) -> serde_json::Value {
        json!({ "errorType": self.error_type(), "errorMessage": self.message(request_id) })
    }

    /// The `Status:` field of the REPORT line.
    pub fn report_status(&self) -> &'static str {
        match self {
            Failure::Timeout(_) | Failure::InitTimeout(_) => "timeout",
            _ => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_lambda() {
        let id = "abc";
        assert_eq!(
            Failure::Exited(ExitStatus::Code(3)).message(id),
            "RequestId: abc Error: Runtime exited with error: exit status 3"
        );
        assert_eq!(
            Failure::Exited(ExitStatus::Signal(9)).message(id),
            "RequestId: abc Error: Runtime exited with error: signal: killed"
        );
        assert_eq!(
            Failure::Exited(ExitStatus::Code(0)).message(id),
            "RequestId: abc Error: Runtime exited without providing a reason"
        );
        assert_eq!(
            Failure::Timeout(Duration::from_secs(3)).message(id),
            "RequestId: abc Error: Task timed out after 3.00 seconds"
        );
        assert_eq!(
            Failure::BootstrapNotFound {
                searched: vec!["/var/task/bootstrap".into(), "/opt/bootstrap".into()]
            }
            .message(id),
            "RequestId: abc Error: Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]"
        );
        assert_eq!(
            Failure::ResponseTooLarge.error_type(),
            "Function.ResponseSizeTooLarge"
        );
        assert!(
            Failure::ResponseTooLarge
                .message(id)
                .contains("6291556 bytes")
        );
    }
}
