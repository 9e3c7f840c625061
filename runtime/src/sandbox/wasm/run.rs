//! One invocation of a WASM bootstrap: a fresh store and instance, the event on stdin, the
//! response from stdout, stderr into the environment's log, `/var/task` and `/opt`
//! read-only and a fresh `/tmp` read-write as the only files, no sockets.
//!
//! The guest runs asynchronously on the host's runtime (on a fiber of wasmtime's): at every
//! epoch tick it yields, so a busy guest shares its thread with the host's other tasks, and
//! dropping the run stops it wherever it is, in wasm or in a host call. File operations are
//! handed to tokio's blocking threads (a thread hop each), so that no guest blocks a thread
//! the host's other tasks run on.
//!
//! How the run ended is classified here, as data ([`Ran`]); what that means for the
//! invocation (a response, a function error, a failure) is decided by the caller.

use std::path::Path;

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::filesystem::WasiFilesystemCtx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder, WasiView};

use super::code::{Guest, P1Host, P2Host};
use super::limits::Limits;
use super::output::GuestLog;
use crate::error::MAX_PAYLOAD_BYTES;

/// What every run of an environment has in common.
pub struct Setup<'a> {
    /// argv\[0\]: the bootstrap as the function sees it.
    pub program: &'a str,
    /// The environment's variables.
    pub env: &'a [(String, String)],
    /// The environment's log.
    pub stderr: &'a GuestLog,
}

/// The directories a guest sees (`/var/task`, `/opt` when the function has layers, `/tmp`),
/// open, and shared by an environment's runs: opened once, and again only when `/tmp` is made
/// anew. A path walk and a close per directory per run were 8% of a served WASM invocation's
/// CPU. Sharing is safe because wasmtime-wasi opens them `O_PATH` (no offset, no flags a guest
/// could leave changed) and lists a directory through a descriptor of its own.
pub struct Preopens(WasiFilesystemCtx);

impl Preopens {
    /// Opens the directories; an error names the one that could not be opened.
    pub fn open(code_dir: &Path, opt_dir: Option<&Path>, tmp_dir: &Path) -> Result<Self, String> {
        let mut builder = WasiCtxBuilder::new();
        // Not on the host's runtime threads: with this, WASI p1 makes a guest's sleep a
        // `thread::sleep` of the host thread. File operations go to blocking threads.
        builder.allow_blocking_current_thread(false);
        let preopens = [
            (Some(code_dir), "/var/task", FsPerms::ReadOnly),
            (opt_dir, "/opt", FsPerms::ReadOnly),
            (Some(tmp_dir), "/tmp", FsPerms::ReadWrite),
        ];
        for (host, guest, perms) in preopens {
            if let Some(host) = host {
                builder
                    .preopened_dir(host, guest, perms)
                    .map_err(|e| format!("opening {guest}: {e:#}"))?;
            }
        }
        Ok(Preopens(builder.build().filesystem().clone()))
    }
}

/// What one invocation adds to its prepared run.
pub struct Event<'a> {
    /// The invocation's own variables, after the environment's.
    pub env: &'a [(&'static str, String)],
    /// The event, on stdin.
    pub stdin: Bytes,
    /// The linear memory limit.
    pub memory_bytes: usize,
}

/// A run's WASI context, made while the environment waits for its event: copying the
/// environment's variables is most of a context's cost, and none of it depends on the event.
/// Made after `/tmp` is fresh, used once.
pub struct Prepared {
    builder: WasiCtxBuilder,
    filesystem: WasiFilesystemCtx,
    stdout: MemoryOutputPipe,
}

impl Prepared {
    /// A context with everything but the event, or why the directories could not be opened.
    pub fn new(setup: &Setup<'_>, preopens: &Result<Preopens, String>) -> Result<Prepared, String> {
        let filesystem = preopens.as_ref().map_err(Clone::clone)?.0.clone();
        let stdout = MemoryOutputPipe::new(MAX_PAYLOAD_BYTES + 1);
        let mut builder = WasiCtxBuilder::new();
        builder
            .arg(setup.program)
            .envs(setup.env)
            .stdout(stdout.clone())
            .stderr(setup.stderr.clone());
        Ok(Prepared {
            builder,
            filesystem,
            stdout,
        })
    }
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// `_start` or `run` returned (0), or the guest called `exit(n)`.
    Exited(i32),
    /// The guest trapped; the trap and its backtrace.
    Trapped(String),
    /// A memory growth was refused and the guest then failed.
    OutOfMemory,
    /// The host could not run it at all (instantiation failed: for example every pool slot
    /// is in use).
    HostFailed(String),
}

/// What a run leaves to tear down: its store (instance, memory slot, open files). Dropping it
/// costs about as much as the run itself (the memory slot is decommitted), so the caller
/// drops it after the outcome has gone out.
pub struct Leftover(#[allow(dead_code, reason = "held only to be dropped")] Box<dyn Send>);

/// The result of one run.
#[derive(Debug)]
pub struct Ran {
    /// How it ended.
    pub ending: Ending,
    /// What it wrote to stdout, up to one byte past Lambda's response limit (so that an
    /// oversize response is recognised without keeping all of it).
    pub stdout: Bytes,
    /// Its largest linear memory, bytes.
    pub peak_bytes: usize,
}

impl Guest {
    /// Runs one invocation in a fresh instance, with the context `prepared` for it (or the
    /// reason none could be made). Dropping the future stops the guest.
    pub async fn run(
        &self,
        engine: &Engine,
        prepared: Result<Prepared, String>,
        event: Event<'_>,
    ) -> (Ran, Option<Leftover>) {
        let Prepared {
            mut builder,
            filesystem,
            stdout,
        } = match prepared {
            Ok(prepared) => prepared,
            Err(reason) => {
                let ran = Ran {
                    ending: Ending::HostFailed(reason),
                    stdout: Bytes::new(),
                    peak_bytes: 0,
                };
                return (ran, None);
            }
        };
        builder
            .envs(event.env)
            .stdin(MemoryInputPipe::new(event.stdin));
        let limits = Limits::new(event.memory_bytes);
        let (result, (refused, peak_bytes, leftover)) = match self {
            Guest::Module(pre) => {
                let mut wasi = builder.build_p1();
                *wasi.ctx().ctx.filesystem() = filesystem;
                let host = P1Host { wasi, limits };
                let mut store = armed(engine, host, |h| &mut h.limits);
                let result = run_module(pre, &mut store).await;
                (result, finished(store, |h| &mut h.limits))
            }
            Guest::Component(pre) => {
                let mut ctx = builder.build();
                *ctx.filesystem() = filesystem;
                let host = P2Host {
                    ctx,
                    table: ResourceTable::new(),
                    limits,
                };
                let mut store = armed(engine, host, |h| &mut h.limits);
                let result = run_component(pre, &mut store).await;
                (result, finished(store, |h| &mut h.limits))
            }
        };
        let ending = match result {
            Ok(()) => Ending::Exited(0),
            Err(Failed::Instantiate(e)) if refused => {
                // The module's initial memory is over the limit.
                tracing::debug!(error = %e, "instantiation refused by the memory limit");
                Ending::OutOfMemory
            }
            Err(Failed::Instantiate(e)) => Ending::HostFailed(format!("{e:#}")),
            Err(Failed::Guest(e)) => classify(&e, refused),
        };
        let ran = Ran {
            ending,
            stdout: stdout.contents(),
            peak_bytes,
        };
        (ran, Some(leftover))
    }
}

/// Why a run did not return normally.
enum Failed {
    Instantiate(wasmtime::Error),
    Guest(wasmtime::Error),
}

/// Instantiates a command module and runs its `_start`.
async fn run_module(
    pre: &wasmtime::InstancePre<P1Host>,
    store: &mut Store<P1Host>,
) -> Result<(), Failed> {
    let instance = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(Failed::Instantiate)?;
    let start = instance
        .get_typed_func::<(), ()>(&mut *store, "_start")
        .map_err(Failed::Guest)?;
    start.call_async(store, ()).await.map_err(Failed::Guest)
}

/// Instantiates a command component and runs its `wasi:cli/run`.
async fn run_component(
    pre: &wasmtime_wasi::p2::bindings::CommandPre<P2Host>,
    store: &mut Store<P2Host>,
) -> Result<(), Failed> {
    let command = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(Failed::Instantiate)?;
    match command.wasi_cli_run().call_run(store).await {
        Ok(Ok(())) => Ok(()),
        // `run` returning an error is how a component exits non-zero.
        Ok(Err(())) => Err(Failed::Guest(I32Exit(1).into())),
        Err(e) => Err(Failed::Guest(e)),
    }
}

/// A new store of `host` with the limiter and the yield: the deadline is one epoch tick ahead,
/// and at each tick the guest yields to the host's runtime, which may then drop the run (a
/// timeout).
fn armed<T: Send + 'static>(
    engine: &Engine,
    host: T,
    limits: fn(&mut T) -> &mut Limits,
) -> Store<T> {
    let mut store = Store::new(engine, host);
    store.limiter(move |h| limits(h) as &mut dyn wasmtime::ResourceLimiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
    store
}

/// What the limiter saw (a refusal, the peak memory), and the store to tear down later.
fn finished<T: Send + 'static>(
    mut store: Store<T>,
    limits: fn(&mut T) -> &mut Limits,
) -> (bool, usize, Leftover) {
    let Limits {
        refused,
        peak_bytes,
        ..
    } = *limits(store.data_mut());
    (refused, peak_bytes, Leftover(Box::new(store)))
}

/// Classifies a guest's abnormal end: an exit code, a refused allocation, or a trap (whatever
/// else the guest caused, such as a write past the output limit, counts as one too, with its
/// message).
fn classify(error: &wasmtime::Error, refused: bool) -> Ending {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Ending::Exited(exit.0);
    }
    if refused {
        return Ending::OutOfMemory;
    }
    // The trap, then where it happened (wasmtime attaches the wasm backtrace as context).
    let what = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    match error.downcast_ref::<wasmtime::WasmBacktrace>() {
        Some(backtrace) => Ending::Trapped(format!("{what}\n{backtrace}")),
        None => Ending::Trapped(what),
    }
}
