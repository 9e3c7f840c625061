//! The versioned jail description the host sends. Serde lives here, at the boundary.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The spec's format version; the bootstrap refuses any other.
pub const SPEC_VERSION: u32 = 1;

/// Everything the bootstrap needs to build one execution environment's jail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JailSpec {
    /// [`SPEC_VERSION`].
    pub version: u32,
    /// An empty host directory the new root is built on (a tmpfs is mounted there).
    pub root: PathBuf,
    /// The function's code, mounted read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// The composed layers, mounted read-only at `/opt`.
    pub opt: Option<OptMount>,
    /// Size of the `/tmp` tmpfs, bytes (`--ephemeral-storage`).
    pub tmp_bytes: u64,
    /// The unprivileged user and group the function runs as.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// The sandbox's host name.
    pub hostname: String,
    /// The function's complete environment.
    pub env: Vec<(String, String)>,
    /// The function's bootstrap, as a path inside the jail.
    pub bootstrap: String,
    /// cgroup directories the whole sandbox joins before anything else (processes, CPU).
    pub cgroups: Vec<PathBuf>,
    /// cgroup directories only the function's process joins (memory), so that the OOM killer
    /// never picks the helpers.
    pub function_cgroups: Vec<PathBuf>,
    /// The network the sandbox gets.
    pub network: Network,
}

/// How `/opt` is made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum OptMount {
    /// Bind a merged tree.
    Merged(PathBuf),
}

/// The sandbox's network.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Network {
    /// A private network namespace with loopback only; the Runtime API listener is created in
    /// it and passed to the host over the helper's stdin (a Unix socket).
    None,
    /// The host's network namespace (egress allowed).
    Host,
}
