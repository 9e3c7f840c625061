//! The WASM backend: bootstraps compiled to WebAssembly run inside wasmtime, in the lamina
//! process, a fresh instance and a fresh `/tmp` for every invocation. The guest ABI
//! (docs/wasm-guest-abi.md): the event on stdin, the response on stdout, log lines on stderr,
//! Lambda's variables plus the invocation's in the environment, the exit status as the
//! outcome.
//!
//! An environment here is a task on the host's runtime, not a process: it takes events from
//! the environment's mailbox directly ([`ApiLink::InProcess`]), the same calls a native runtime
//! makes over HTTP, so the pool, deadlines, logs and error mapping are the same for both
//! backends. The task runs each invocation itself, asynchronously (see `run`): a hand-off to a
//! thread per invocation would cost more than the instance does. The guest yields at every
//! epoch tick; a timeout drops the run there, or wherever it waits in a host call.
//!
//! Scope: one `WasmSandbox` (one engine, one compiled-code cache) per lamina process; each
//! environment owns a tmpfs and a driver task.

mod code;
mod limits;
mod output;
mod run;
pub mod tmp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};
use wasmtime::Engine;

use super::{ApiLink, ApiPlacement, BoxFuture, Control, Sandbox, StartSpec, Started, Stop};
use crate::config::FunctionSpec;
use crate::config::lambda_env::{self, Paths};
use crate::error::{ExitStatus, Failure, MAX_PAYLOAD_BYTES};
use crate::run_dir::RunDir;
use crate::runtime_api::ApiCall;
use crate::runtime_api::wire::NextEvent;
pub use code::EngineError;
use code::{CodeCache, Guest};
use output::GuestLog;
use run::{Ending, Event, Preopens, Prepared, Ran, Setup};
use tmp::EnvTmp;

/// How often the epoch advances: the longest a guest runs before it yields its thread (and so
/// the longest a timed-out guest runs on).
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Why the WASM backend cannot run on this host.
#[derive(Debug, thiserror::Error)]
pub enum WasmUnavailable {
    /// wasmtime could not be set up.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// `/tmp` filesystems cannot be mounted.
    #[error(
        "the WASM backend mounts a size-limited tmpfs as each environment's /tmp and cannot: {0} (as root it mounts one itself; otherwise it needs unprivileged user namespaces, as the rootless jail does)"
    )]
    Tmp(std::io::Error),
    /// lamina's run directory cannot be used.
    #[error(transparent)]
    RunDir(#[from] crate::run_dir::RunDirError),
    /// The cache of compiled code cannot be trusted.
    #[error(transparent)]
    Cache(crate::run_dir::CacheDirError),
}

fn helper_error(helper: &super::jail::Helper, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{helper} --tmpfs: {e}"))
}

/// A bootstrap's compilation, shared by the environments that run it; compiled once even
/// when several start at the same moment (the others wait for it).
type CodeCell = Arc<OnceLock<Result<Guest, String>>>;

/// Runs WebAssembly bootstraps in wasmtime.
#[derive(Debug)]
pub struct WasmSandbox {
    engine: Engine,
    cache: CodeCache,
    /// Where the environments' `/tmp` filesystems come from.
    tmp_source: tmp::TmpSource,
    /// By the bootstrap's host path, size and modification time.
    code: Mutex<HashMap<(PathBuf, u64, i64), CodeCell>>,
}

impl WasmSandbox {
    /// Sets up the engine (compiled code cached under `cache_root/wasm`) and checks that
    /// environments' `/tmp` filesystems can be made: mounted by lamina under root, else by
    /// `helper` (`lamina __sandbox --tmpfs`) in a user namespace of its own.
    pub fn new(
        cache_root: &Path,
        helper: &super::jail::Helper,
    ) -> Result<WasmSandbox, WasmUnavailable> {
        let engine = code::engine()?;
        let tmp_source = match nix::unistd::Uid::effective().is_root() {
            true => tmp::prepare(&RunDir::open_default()?)?,
            false => tmp::TmpSource::Helper(
                tmp::TmpfsHelper::start(helper.command())
                    .map_err(|e| WasmUnavailable::Tmp(helper_error(helper, e)))?,
            ),
        };
        // Compiled code is loaded from the cache and run: nobody else may write there.
        let (cache_root, _) = crate::run_dir::trusted_dir(cache_root)
            .map_err(|e| WasmUnavailable::Cache(crate::run_dir::CacheDirError::Untrusted(e)))?;
        let cache_root = cache_root.as_path();
        // The epoch ticker lives as long as the engine.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("lamina-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| WasmUnavailable::Engine(EngineError::from_io(e)))?;
        Ok(WasmSandbox {
            cache: CodeCache::new(&engine, cache_root),
            engine,
            tmp_source,
            code: Mutex::default(),
        })
    }

    fn code_cell(&self, path: &Path) -> CodeCell {
        use std::os::unix::fs::MetadataExt;
        let stamp = std::fs::metadata(path).map_or((0, 0), |m| {
            (m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000)
        });
        let key = (path.to_owned(), stamp.0, stamp.1);
        let mut code = self.code.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(code.entry(key).or_default())
    }
}

impl Sandbox for WasmSandbox {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn runtime_api(&self) -> ApiPlacement {
        ApiPlacement::InProcess
    }

    /// Compiles (or loads from the cache) the bootstrap, so that the environment's init
    /// timeout measures the module's own start-up, not Cranelift. A failure stays in the
    /// bootstrap's code cell, where the driver reports it as an init error.
    fn prepare<'a>(&'a self, spec: &'a FunctionSpec) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok((host_path, _)) = super::find_wasm_bootstrap(spec) else {
                return;
            };
            let cell = self.code_cell(&host_path);
            let _ = load(cell, self.cache.clone(), self.engine.clone(), host_path).await;
        })
    }

    fn start(&self, start: StartSpec<'_>) -> Result<Started, Failure> {
        let spec = start.spec;
        let ApiLink::InProcess(calls) = start.runtime_api else {
            return Err(Failure::Sandbox(
                "the WASM backend takes its events in process".into(),
            ));
        };
        let (host_path, guest_path) = super::find_wasm_bootstrap(spec)?;
        let paths = Paths {
            task_root: "/var/task".into(),
            runtime_dir: "/var/runtime".into(),
            managed: None,
        };
        let mut env = lambda_env::environment(spec, "", start.log_stream, &paths);
        // A WASM runtime is handed its events; it has no Runtime API to call.
        env.retain(|(k, _)| k != "AWS_LAMBDA_RUNTIME_API");
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Failure::Sandbox(format!("starting a WASM environment: {e}")))?;
        let tmp = EnvTmp::new(&self.tmp_source, spec.ephemeral_storage_mb)
            .map_err(|e| Failure::Sandbox(format!("mounting the environment's /tmp: {e}")))?;
        let shared = Arc::new(Shared::default());
        let (exit_tx, exited) = oneshot::channel();
        let driver = Driver {
            engine: self.engine.clone(),
            cache: self.cache.clone(),
            code: self.code_cell(&host_path),
            host_path,
            program: guest_path,
            env,
            stderr: GuestLog(start.log),
            code_dir: spec.code_dir.clone(),
            opt_dir: spec.opt.as_ref().map(|o| o.merged.clone()),
            tmp: Arc::new(tmp),
            tmp_per_invocation: spec.tmp_per_invocation,
            memory_bytes: usize::try_from(u64::from(spec.memory_mb) * 1024 * 1024)
                .unwrap_or(usize::MAX),
            shared: Arc::clone(&shared),
            calls,
        };
        runtime.spawn(async move {
            let status = driver.drive().await;
            let _ = exit_tx.send(status);
        });
        Ok(Started {
            control: Box::new(WasmControl { shared }),
            exited,
            logs: None,
            listener: None,
            // The driver makes /tmp fresh itself, after each response.
            reset_tmp: None,
            runtime_api_peer_uid: None,
            extensions: Default::default(),
            extension_logs: None,
        })
    }
}

/// What an environment's driver and its control share.
#[derive(Debug, Default)]
struct Shared {
    /// Stops the run in progress, at the guest's next yield.
    kill: Notify,
    /// Wakes a driver waiting for its next event, to end.
    stop: Notify,
    /// The largest linear memory of any run, bytes.
    peak_bytes: AtomicU64,
}

#[derive(Debug)]
struct WasmControl {
    shared: Arc<Shared>,
}

impl Control for WasmControl {
    fn stop(&self, how: Stop) {
        if how == Stop::Kill {
            self.shared.kill.notify_one();
        }
        // Between runs there is nothing to wind down: either way the driver ends.
        self.shared.stop.notify_one();
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        Some(self.shared.peak_bytes.load(Ordering::Relaxed))
    }
}

/// One environment's loop, a task: load the bootstrap (init), then for each event a fresh run.
struct Driver {
    engine: Engine,
    cache: CodeCache,
    code: CodeCell,
    host_path: PathBuf,
    program: &'static str,
    env: Vec<(String, String)>,
    stderr: GuestLog,
    code_dir: PathBuf,
    opt_dir: Option<PathBuf>,
    tmp: Arc<EnvTmp>,
    tmp_per_invocation: bool,
    memory_bytes: usize,
    shared: Arc<Shared>,
    calls: mpsc::UnboundedSender<ApiCall>,
}

impl Driver {
    async fn drive(self) -> ExitStatus {
        let guest = match self.load().await {
            Ok(guest) => guest,
            Err(reason) => {
                let failure = Failure::BootstrapNotExecutable {
                    path: self.program.to_owned(),
                    reason,
                };
                let (reply, _) = oneshot::channel();
                let _ = self.calls.send(ApiCall::Failed {
                    request_id: None,
                    failure,
                    reply,
                });
                return ExitStatus::Code(1);
            }
        };
        let setup = Setup {
            program: self.program,
            env: &self.env,
            stderr: &self.stderr,
        };
        let mut preopens = self.open_preopens();
        loop {
            // Made before asking for the event, so that its cost is not the invocation's.
            let prepared = Prepared::new(&setup, &preopens);
            let (next, event) = oneshot::channel();
            if self.calls.send(ApiCall::Next(next)).is_err() {
                return ExitStatus::Code(0);
            }
            let event = tokio::select! {
                event = event => event.ok().and_then(Result::ok),
                () = self.shared.stop.notified() => None,
            };
            // The environment is gone, refused, or told this one to end.
            let Some(event) = event else {
                return ExitStatus::Code(0);
            };
            let request_id = event.request_id.clone();
            let invocation_env = invocation_env(&event);
            let event = Event {
                env: &invocation_env,
                stdin: event.payload,
                memory_bytes: self.memory_bytes,
            };
            let (ran, leftover) = tokio::select! {
                biased;
                // The environment stopped it (a timeout) and has already ended the invocation.
                () = self.shared.kill.notified() => return ExitStatus::Signal(9),
                ran = guest.run(&self.engine, prepared, event) => ran,
            };
            self.shared
                .peak_bytes
                .fetch_max(ran.peak_bytes as u64, Ordering::Relaxed);
            // The environment's acknowledgement is not awaited: the mailbox keeps this call
            // ahead of the next `Next`, and nothing in the reply changes what happens here.
            let (reply, _) = oneshot::channel();
            if self.calls.send(answer(request_id, ran, reply)).is_err() {
                return ExitStatus::Code(0);
            }
            // The environment (woken by that call) ends the invocation before this task
            // spends its time taking the instance down: on the same thread, it would
            // otherwise wait behind it.
            tokio::task::yield_now().await;
            drop(leftover);
            let renewed = match self.fresh_tmp().await {
                Ok(renewed) => renewed,
                Err(e) => {
                    // A used /tmp is never handed on: this environment ends here.
                    tracing::warn!(error = %e, "emptying a WASM /tmp failed; the environment ends");
                    return ExitStatus::Code(1);
                }
            };
            // A directory made anew is not the one open; one that failed to open is tried
            // again.
            if renewed || preopens.is_err() {
                preopens = self.open_preopens();
            }
        }
    }

    fn open_preopens(&self) -> Result<Preopens, String> {
        Preopens::open(&self.code_dir, self.opt_dir.as_deref(), self.tmp.dir())
    }

    /// The bootstrap, compiled or loaded (normally already, by [`Sandbox::prepare`]).
    async fn load(&self) -> Result<Guest, String> {
        let (cell, cache, engine) = (
            Arc::clone(&self.code),
            self.cache.clone(),
            self.engine.clone(),
        );
        load(cell, cache, engine, self.host_path.clone()).await
    }

    /// Makes `/tmp` empty again if the last run used it and the function has one per
    /// invocation (true: a new directory); the emptying (as long as the guest filled it) on a
    /// blocking thread.
    async fn fresh_tmp(&self) -> std::io::Result<bool> {
        if !self.tmp_per_invocation || !self.tmp.used()? {
            return Ok(false);
        }
        let tmp = Arc::clone(&self.tmp);
        tokio::task::spawn_blocking(move || tmp.empty())
            .await
            .map_err(std::io::Error::other)??;
        Ok(true)
    }
}

/// The bootstrap in `cell`, compiled or loaded into it on a blocking thread unless it is
/// there already; environments starting at once wait for the one load.
async fn load(
    cell: CodeCell,
    cache: CodeCache,
    engine: Engine,
    path: PathBuf,
) -> Result<Guest, String> {
    if let Some(loaded) = cell.get() {
        return loaded.clone();
    }
    tokio::task::spawn_blocking(move || cell.get_or_init(|| cache.load(&engine, &path)).clone())
        .await
        .unwrap_or_else(|e| Err(format!("loading the module: {e}")))
}

/// The invocation's own variables: the Runtime API's header names, upper-cased with `_`.
fn invocation_env(event: &NextEvent) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("LAMBDA_RUNTIME_AWS_REQUEST_ID", event.request_id.clone()),
        ("LAMBDA_RUNTIME_DEADLINE_MS", event.deadline_ms.to_string()),
        (
            "LAMBDA_RUNTIME_INVOKED_FUNCTION_ARN",
            event.function_arn.clone(),
        ),
        ("LAMBDA_RUNTIME_TRACE_ID", event.trace_id.clone()),
        ("_X_AMZN_TRACE_ID", event.trace_id.clone()),
    ];
    if let Some(context) = &event.client_context {
        vars.push(("LAMBDA_RUNTIME_CLIENT_CONTEXT", context.clone()));
    }
    if let Some(identity) = &event.cognito_identity {
        vars.push(("LAMBDA_RUNTIME_COGNITO_IDENTITY", identity.clone()));
    }
    vars
}

/// What a run means for its invocation, as the call a native runtime would have made (or,
/// for what only the host sees, a failure).
fn answer(
    request_id: String,
    ran: Ran,
    reply: oneshot::Sender<Result<(), crate::runtime_api::wire::ApiError>>,
) -> ApiCall {
    if ran.stdout.len() > MAX_PAYLOAD_BYTES {
        return ApiCall::ResponseTooLarge { request_id, reply };
    }
    // A module's answer is its whole stdout, seen when it exits: it begins (for telemetry's
    // spans) and ends now.
    let failure = match ran.ending {
        Ending::Exited(0) => {
            return ApiCall::Response {
                request_id,
                body: ran.stdout,
                began: Instant::now(),
                reply,
            };
        }
        Ending::Exited(code) => match error_document(&ran.stdout) {
            Some(error_type) => {
                return ApiCall::Error {
                    request_id,
                    error_type: Some(error_type),
                    body: ran.stdout,
                    began: Instant::now(),
                    reply,
                };
            }
            None => Failure::Exited(ExitStatus::Code(code)),
        },
        Ending::Trapped(trap) => Failure::Trapped(trap),
        Ending::OutOfMemory => Failure::OutOfMemory,
        Ending::HostFailed(reason) => Failure::Sandbox(reason),
    };
    ApiCall::Failed {
        request_id: Some(request_id),
        failure,
        reply,
    }
}

/// The `errorType` of stdout when it is a JSON object with `errorType` and `errorMessage`
/// strings: the guest's own error document.
fn error_document(stdout: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(stdout).ok()?;
    let object = value.as_object()?;
    object.get("errorMessage")?.as_str()?;
    object.get("errorType")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_document_needs_both_fields() {
        assert_eq!(
            error_document(br#"{"errorType":"Bad","errorMessage":"no"}"#),
            Some("Bad".into())
        );
        assert_eq!(error_document(br#"{"errorType":"Bad"}"#), None);
        assert_eq!(error_document(br#"["errorType"]"#), None);
        assert_eq!(error_document(b"plain text"), None);
    }
}
