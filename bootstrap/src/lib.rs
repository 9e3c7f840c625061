//! The contract between lamina's host and `lamina-bootstrap`, the first process of a native
//! sandbox. The host writes one [`JailSpec`] as JSON on the bootstrap's stdin; the bootstrap
//! builds the jail in the order [`jail::run`] lists, then execs the function's own bootstrap.
//!
//! The binary is single-threaded by design: namespaces are entered and processes forked here,
//! never in the multi-threaded tokio host.

pub mod spec;

#[cfg(target_os = "linux")]
pub mod check;
#[cfg(target_os = "linux")]
pub mod jail;

pub use spec::{FunctionSpec, Network, OptMount, ShellSpec};
