//! The versioned jail description the host sends, in two frames on the helper's stdin: a
//! [`ShellSpec`] at once, a [`FunctionSpec`] when the sandbox is put to use. Each frame is a
//! little-endian `u32` length and that many bytes of JSON. Serde lives here, at the boundary.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The spec's format version; the bootstrap refuses any other.
pub const SPEC_VERSION: u32 = 5;

/// The function-independent half of a sandbox: enough to build everything but the function's
/// own mounts, so that a sandbox can be prepared before anyone asks for it (the cgroup moves
/// and namespaces that dominate a cold start then happen off its path). Sent first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShellSpec {
    /// [`SPEC_VERSION`].
    pub version: u32,
    /// An empty host directory the new root is built on (a tmpfs is mounted there).
    pub root: PathBuf,
    /// The unprivileged user and group the function runs as.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// The sandbox's host name.
    pub hostname: String,
    /// cgroup directories the whole sandbox joins before anything else (processes, CPU).
    pub cgroups: Vec<PathBuf>,
    /// cgroup directories only the function's process joins (memory), so that the OOM killer
    /// never picks the helpers.
    pub function_cgroups: Vec<PathBuf>,
    /// The network the sandbox gets.
    pub network: Network,
    /// Rootless: the sandbox gets a user namespace of its own, in which `uid` and `gid` are
    /// the host user's ids (the only ones an unprivileged user may map). `None` under root.
    pub user_namespace: Option<IdMap>,
    /// `RLIMIT_NPROC` for the function: where no pids cgroup caps the sandbox (rootless
    /// without a delegated cgroup), this does, counted in the sandbox's own user namespace.
    pub max_processes: Option<u64>,
}

/// The host ids that the sandbox's `uid` and `gid` stand for inside its user namespace.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMap {
    /// The host user lamina runs as.
    pub outside_uid: u32,
    /// That user's primary group.
    pub outside_gid: u32,
}

/// The function's half, sent when the sandbox is given to an execution environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionSpec {
    /// The function's code, mounted read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// The composed layers, mounted read-only at `/opt`.
    pub opt: Option<OptMount>,
    /// Size of the `/tmp` tmpfs, bytes (`--ephemeral-storage`).
    pub tmp_bytes: u64,
    /// The function's complete environment.
    pub env: Vec<(String, String)>,
    /// The function's bootstrap, as a path inside the jail.
    pub bootstrap: String,
    /// Arguments after the bootstrap's own name: a managed runtime's interpreter is the
    /// bootstrap, and these name its runtime client and the handler.
    pub args: Vec<String>,
    /// A managed runtime's client (lamina's cache), mounted read-only at `/var/runtime`.
    pub runtime_dir: Option<PathBuf>,
    /// A managed runtime's interpreter installation, mounted read-only at `/var/lang`, when it
    /// lives outside the host's `/usr` (which the jail shows anyway).
    pub lang_dir: Option<PathBuf>,
    /// The external extensions to start before the runtime, as paths inside the jail
    /// (`/opt/extensions/NAME`), in order.
    pub extensions: Vec<String>,
    /// Their environment: the runtime's, less what Lambda gives the runtime only.
    pub extension_env: Vec<(String, String)>,
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
    /// As `None`, plus outbound access: the host runs a user-mode network stack
    /// (slirp4netns) attached to the sandbox's namespace, which configures a `tap0` there with
    /// a default route; the host's loopback and every other sandbox stay out of reach. Its
    /// name server is slirp4netns's forwarder, so the jail's `/etc/resolv.conf` names it.
    Outbound,
}

/// The name server a sandbox in network mode `Outbound` uses: slirp4netns's forwarder to the
/// host's own.
pub const OUTBOUND_NAMESERVER: &str = "10.0.2.3";

/// Reads one frame. Unbuffered on purpose: the next frame is read later, by another process
/// (PID 1), from the same descriptor, so nothing past this frame may be consumed here.
/// `Ok(None)` at a clean end of input before the frame starts.
pub fn read_frame(mut input: impl std::io::Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    if !read_whole(&mut input, &mut len)? {
        return Ok(None);
    }
    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut bytes)?;
    Ok(Some(bytes))
}

/// Fills `buf` from `input`; `false` at a clean end of input before the first byte, an
/// error at an end inside it. Unbuffered, as [`read_frame`] needs.
pub fn read_whole(mut input: impl std::io::Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..])? {
            0 if got == 0 => return Ok(false),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(true)
}

/// One frame's bytes: length, then the JSON.
pub fn frame(json: &[u8]) -> Vec<u8> {
    let len = u32::try_from(json.len()).unwrap_or(u32::MAX);
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(json);
    out
}
