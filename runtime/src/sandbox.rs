//! Where a bootstrap runs. A [`Sandbox`] starts one execution environment's processes and hands
//! back a [`Started`]: a handle to stop them, a future for the runtime's exit, and the read end of
//! the pipe carrying their output. The pool never touches processes, namespaces or cgroups
//! itself; backends do.
//!
//! Scope: a `Sandbox` is runtime-wide; each `Started` belongs to one environment.

pub mod jail;
pub mod process;
pub mod wasm;

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tokio::sync::oneshot;

use crate::config::FunctionSpec;
use crate::error::{ExitStatus, Failure};

/// What a backend needs to start one environment.
#[derive(Debug)]
pub struct StartSpec<'a> {
    /// The function.
    pub spec: &'a FunctionSpec,
    /// The environment's id (hex), unique in this host.
    pub env_id: &'a str,
    /// How the environment's runtime reaches its Runtime API.
    pub runtime_api: ApiLink,
    /// The log stream name (`AWS_LAMBDA_LOG_STREAM_NAME`).
    pub log_stream: &'a str,
    /// Where a runtime in the host process writes its output; a runtime in a process of its
    /// own writes to a pipe instead ([`Started::logs`]).
    pub log: crate::logs::LogWriter,
}

/// How a runtime reaches its environment's Runtime API.
#[derive(Debug)]
pub enum ApiLink {
    /// Over HTTP at this address (the environment's own listener).
    Tcp(SocketAddr),
    /// Straight into the environment's mailbox: a runtime that lives in the host process
    /// (the WASM backend) needs no HTTP.
    InProcess(tokio::sync::mpsc::UnboundedSender<crate::runtime_api::ApiCall>),
}

/// Where a backend's runtimes find their Runtime API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiPlacement {
    /// A listener the host binds on its loopback.
    HostLoopback,
    /// A listener the sandbox makes itself, at this address in its own network namespace,
    /// and hands over ([`Started::listener`]).
    Inside(SocketAddr),
    /// No listener: calls go straight to the mailbox ([`ApiLink::InProcess`]).
    InProcess,
}

impl StartSpec<'_> {
    /// The Runtime API's address, for backends whose runtimes speak HTTP.
    pub fn tcp_api(&self) -> Result<SocketAddr, Failure> {
        match &self.runtime_api {
            ApiLink::Tcp(addr) => Ok(*addr),
            ApiLink::InProcess(_) => Err(Failure::Sandbox(
                "this backend needs a Runtime API listener".into(),
            )),
        }
    }
}

/// How to stop an environment's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ask politely (SIGTERM), as Lambda does at shutdown.
    Terminate,
    /// End at once (SIGKILL), as after a timeout.
    Kill,
}

/// Control over a started environment.
pub trait Control: Send + Sync + fmt::Debug {
    /// Signals every process of the environment.
    fn stop(&self, how: Stop);
    /// Signals the runtime and what it started, not the extensions (Lambda's shutdown sends
    /// the runtime SIGTERM and the extensions a `SHUTDOWN` event). Backends that start no
    /// extensions signal everything.
    fn stop_runtime(&self, how: Stop) {
        self.stop(how);
    }
    /// Kills (SIGKILL) the external extension launched from the file `name`, and what it
    /// started: at shutdown, Lambda kills an extension not registered for `SHUTDOWN` at once.
    /// Backends that start no extensions have none to kill.
    fn kill_extension(&self, _name: &str) {}
    /// Every external extension has registered: the runtime may start, as on Lambda. A
    /// backend that holds the runtime until then starts it now; others started it at once.
    fn release_runtime(&self) {}
    /// The environment's peak memory use so far, in bytes, when the backend can tell.
    fn max_memory_bytes(&self) -> Option<u64>;
    /// Whether the environment ran out of memory (its runtime was killed for it).
    fn out_of_memory(&self) -> bool {
        false
    }
    /// Opens a TCP connection to `port` on the sandbox's own loopback, where its extensions
    /// listen for telemetry (`sandbox.localdomain`): the host's loopback for backends without
    /// a network namespace of their own; a jail's is reached through its PID 1.
    fn connect(&self, port: u16) -> BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> {
        Box::pin(tokio::net::TcpStream::connect((
            std::net::Ipv4Addr::LOCALHOST,
            port,
        )))
    }
}

/// A started environment.
#[derive(Debug)]
pub struct Started {
    /// Stops the environment and reads its resource use.
    pub control: Box<dyn Control>,
    /// Resolves once the runtime process has exited.
    pub exited: oneshot::Receiver<ExitStatus>,
    /// The read end of the pipe carrying the environment's stdout and stderr; `None` for a
    /// runtime that writes to [`StartSpec::log`].
    pub logs: Option<OwnedFd>,
    /// The read end of the pipe carrying the external extensions' stdout and stderr, when
    /// they have one of their own (telemetry tells `extension` lines from `function` ones);
    /// `None`: whatever they write is in `logs`.
    pub extension_logs: Option<OwnedFd>,
    /// The Runtime API listener, when the sandbox creates it (inside its own network
    /// namespace, see [`ApiPlacement::Inside`]); resolves once the sandbox hands it over.
    pub listener: Option<oneshot::Receiver<std::io::Result<std::net::TcpListener>>>,
    /// Makes `/tmp` fresh between invocations, when the backend does that.
    pub reset_tmp: Option<Box<dyn ResetTmp>>,
    /// The uid the sandbox runs as when its Runtime API listens where others could reach it
    /// (the host's loopback from a jail in network mode `host`): only its sockets are served.
    pub runtime_api_peer_uid: Option<u32>,
    /// The external extensions started (the file names in `/opt/extensions`), and each one's
    /// exit as it happens.
    pub extensions: Extensions,
}

/// The external extensions a backend started beside the runtime.
#[derive(Debug, Default)]
pub struct Extensions {
    /// Their file names, in the order they were started.
    pub launched: Vec<String>,
    /// Those that could not be started, and why.
    pub failed: Vec<(String, String)>,
    /// `(file name, how it ended)` as each ends.
    pub exits: Option<tokio::sync::mpsc::UnboundedReceiver<(String, ExtensionEnd)>>,
}

/// How an external extension's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionEnd {
    /// It ran, and exited (or was killed).
    Exited(ExitStatus),
    /// It could not be started (a backend that starts extensions inside the sandbox learns
    /// of a failed `execve` only then), and why, as Go's os/exec words it.
    LaunchFailed(String),
}

/// An environment's `/tmp`, made fresh between invocations by a backend that does so. The
/// environment's task owns it and asks after every invocation.
pub trait ResetTmp: Send + fmt::Debug {
    /// Whether `/tmp` is still as it was made, so that no reset is needed. Called on the
    /// environment's task after every invocation, so it must be cheap (the jail's is one
    /// `fstatvfs`): most functions never write to `/tmp`, and a hop to another task for each
    /// invocation cost more than the check.
    fn untouched(&mut self) -> bool;
    /// Asks for a fresh `/tmp`; the answer says once it is made, or why it could not be.
    fn reset(&mut self) -> oneshot::Receiver<std::io::Result<()>>;
}

/// A way of running execution environments.
pub trait Sandbox: Send + Sync + fmt::Debug {
    /// The backend's name, for logs (`process`, `jail`, `wasm`).
    fn name(&self) -> &'static str;
    /// Starts the function's runtime. Errors are the invocation's outcome (a missing bootstrap,
    /// or a host failure).
    fn start(&self, start: StartSpec<'_>) -> Result<Started, Failure>;
    /// Where the backend's runtimes find their Runtime API.
    fn runtime_api(&self) -> ApiPlacement {
        ApiPlacement::HostLoopback
    }
    /// The platform's own work before an environment starts (compiling a WASM module), done
    /// before the init clock runs: like provisioning on Lambda, it is not the function's init
    /// and must not eat its init timeout. Problems are left for `start` to report.
    fn prepare<'a>(&'a self, _spec: &'a FunctionSpec) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// A boxed future, for the trait's asynchronous steps.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where Lambda looks for a custom runtime's `bootstrap`, as the function sees the paths.
pub const BOOTSTRAP_PATHS: [&str; 2] = ["/var/task/bootstrap", "/opt/bootstrap"];

/// Where lamina looks for a WebAssembly bootstrap, in order: a WASM runtime can ship in the
/// function's code or as a layer, like a native one.
pub const WASM_BOOTSTRAP_PATHS: [&str; 4] = [
    "/var/task/bootstrap",
    "/var/task/bootstrap.wasm",
    "/opt/bootstrap",
    "/opt/bootstrap.wasm",
];

/// Which backend family a function's bootstrap needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapKind {
    /// An executable: the jail (or the unisolated process backend).
    Native,
    /// A WebAssembly module or component: wasmtime.
    Wasm,
}

/// The host path behind each of [`WASM_BOOTSTRAP_PATHS`] (the `/opt` ones only with layers).
fn wasm_candidates(spec: &FunctionSpec) -> impl Iterator<Item = (PathBuf, &'static str)> + '_ {
    let [task, task_wasm, opt, opt_wasm] = WASM_BOOTSTRAP_PATHS;
    let code = [
        (spec.code_dir.join("bootstrap"), task),
        (spec.code_dir.join("bootstrap.wasm"), task_wasm),
    ];
    let layers = spec.opt.iter().flat_map(move |o| {
        [
            (o.merged.join("bootstrap"), opt),
            (o.merged.join("bootstrap.wasm"), opt_wasm),
        ]
    });
    code.into_iter().chain(layers)
}

/// Whether `path` starts with WebAssembly's magic (a core module or a component).
pub fn is_wasm_file(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"\0asm")
}

/// Which backend the function needs: WASM when the first bootstrap found in lamina's lookup
/// order is a WebAssembly binary; native otherwise (including when there is none, so that
/// the error is Lambda's own).
pub fn bootstrap_kind(spec: &FunctionSpec) -> BootstrapKind {
    if spec.managed.is_some() {
        return BootstrapKind::Native;
    }
    wasm_candidates(spec)
        .find_map(|(host, _)| {
            if is_wasm_file(&host) {
                Some(BootstrapKind::Wasm)
            } else if host.file_name().is_some_and(|n| n == "bootstrap") && host.is_file() {
                Some(BootstrapKind::Native)
            } else {
                None
            }
        })
        .unwrap_or(BootstrapKind::Native)
}

/// Finds the WebAssembly bootstrap: (host path, the path as the function sees it).
pub fn find_wasm_bootstrap(spec: &FunctionSpec) -> Result<(PathBuf, &'static str), Failure> {
    wasm_candidates(spec)
        .find(|(host, _)| is_wasm_file(host))
        .ok_or_else(|| Failure::BootstrapNotFound {
            searched: WASM_BOOTSTRAP_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        })
}

/// Finds the executable `bootstrap` on the host: the function's code first, then its layers'
/// composed `/opt`, as Lambda looks. One that is there but not executable is said so, with
/// how to fix it: the usual cause is a `chmod +x` forgotten, or a `.zip` made by a tool that
/// stores no Unix permissions (lamina then extracts every file read-only, not executable).
pub fn find_bootstrap(spec: &FunctionSpec) -> Result<PathBuf, Failure> {
    let candidates = std::iter::once(spec.code_dir.join("bootstrap"))
        .chain(spec.opt.iter().map(|opt| opt.merged.join("bootstrap")));
    let mut not_executable = None;
    for (candidate, seen_as) in candidates.zip(BOOTSTRAP_PATHS) {
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return Ok(candidate);
        }
        if meta.is_file() && not_executable.is_none() {
            not_executable = Some((seen_as, meta.permissions().mode() & 0o7777));
        }
    }
    if let Some((seen_as, mode)) = not_executable {
        return Err(Failure::BootstrapNotExecutable {
            path: (*seen_as).to_owned(),
            reason: format!(
                "permission denied: the bootstrap is not executable (mode {mode:04o}); make it \
                 executable (chmod +x bootstrap), and zip it with a tool that keeps Unix \
                 permissions (zip on Linux or macOS; archives made on Windows store none)"
            ),
        });
    }
    Err(Failure::BootstrapNotFound {
        searched: BOOTSTRAP_PATHS.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// The pipe an environment's stdout and stderr share: (read end, stdout's write end, stderr's).
pub(crate) fn log_pipe() -> Result<
    (
        std::io::PipeReader,
        std::io::PipeWriter,
        std::io::PipeWriter,
    ),
    Failure,
> {
    let failure = |e: std::io::Error| Failure::Sandbox(format!("creating the log pipe: {e}"));
    let (reader, writer) = std::io::pipe().map_err(failure)?;
    let writer2 = writer.try_clone().map_err(failure)?;
    Ok((reader, writer, writer2))
}

/// The child command every backend starts from: an empty environment, the log pipe as stdout
/// and stderr, its own process group (so stopping reaches everything it starts), killed if
/// the host drops it.
pub(crate) fn base_command(
    command: std::process::Command,
    stdout: std::io::PipeWriter,
    stderr: std::io::PipeWriter,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::from(command);
    command
        .env_clear()
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// How a reaped child ended, as Lambda's messages word it (`-1` when it cannot be known).
pub(crate) fn exit_status_of(waited: std::io::Result<std::process::ExitStatus>) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match waited.map(|s| (s.code(), s.signal())) {
        Ok((Some(code), _)) => ExitStatus::Code(code),
        Ok((None, Some(signal))) => ExitStatus::Signal(signal),
        Ok((None, None)) | Err(_) => ExitStatus::Code(-1),
    }
}

/// Signals a whole process group the way `how` asks.
pub(crate) fn signal_group(pgid: i32, how: Stop) {
    let signal = match how {
        Stop::Terminate => nix::sys::signal::Signal::SIGTERM,
        Stop::Kill => nix::sys::signal::Signal::SIGKILL,
    };
    // ESRCH just means nothing is left.
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
}

/// Receives one message from a Unix socket: how many bytes of its one-byte body arrived (0 at
/// the end of the stream) and the descriptor it carried (`SCM_RIGHTS`), if any. How a sandbox's
/// helpers hand the host what they made inside their namespaces (a Runtime API listener, a
/// tmpfs). A non-blocking socket gives `WouldBlock` as any read does.
pub(crate) fn receive_fd(socket: std::os::fd::RawFd) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut byte = [0u8; 1];
    let (bytes, fds) = lamina_bootstrap::control::receive(socket, &mut byte)?;
    Ok((bytes, fds.into_iter().next()))
}
