//! The contract between lamina's host and its sandbox helper, the first process of a native
//! sandbox. The host starts `lamina __sandbox` ([`entry`]) and writes a [`ShellSpec`] as JSON
//! on its stdin; the helper builds the jail in the order [`jail::run`] lists, then execs the
//! function's own bootstrap.
//!
//! The helper is single-threaded by design: namespaces are entered and processes forked here,
//! never in the multi-threaded tokio host, which only forks and execs its own binary.

pub mod control;
pub mod spec;

#[cfg(target_os = "linux")]
pub mod entry;

#[cfg(target_os = "linux")]
pub mod check;
#[cfg(target_os = "linux")]
pub mod jail;
#[cfg(target_os = "linux")]
pub mod tmpfs;

pub use spec::{FunctionSpec, IdMap, Network, OptMount, ShellSpec};
