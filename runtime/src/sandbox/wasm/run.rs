//! One invocation of a WASM bootstrap: a fresh store and instance, the event on stdin, the
//! response from stdout, stderr into the environment's log pipe, `/var/task` and `/opt`
//! read-only and a fresh `/tmp` read-write as the only files, no sockets. Runs on a blocking
//! thread (WASI's synchronous host calls block).
//!
//! How the run ended is classified here, as data ([`Ran`]); what that means for the
//! invocation (a response, a function error, a failure) is decided by the caller.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::code::{Guest, P1Host, P2Host};
use super::limits::Limits;
use crate::error::MAX_PAYLOAD_BYTES;

/// What one run needs.
pub struct Run<'a> {
    /// argv\[0\]: the bootstrap as the function sees it.
    pub program: &'a str,
    /// The environment's variables.
    pub env: &'a [(String, String)],
    /// The invocation's own variables, added after them.
    pub invocation_env: &'a [(String, String)],
    /// The event.
    pub stdin: Bytes,
    /// The environment's log pipe.
    pub stderr: &'a OutputFile,
    /// `/var/task`.
    pub code_dir: &'a Path,
    /// `/opt`, when the function has layers.
    pub opt_dir: Option<&'a Path>,
    /// `/tmp`, fresh.
    pub tmp_dir: &'a Path,
    /// The linear memory limit.
    pub memory_bytes: usize,
    /// Set by the host to stop the run (a timeout): the guest traps at the next epoch tick.
    pub killed: &'a Arc<AtomicBool>,
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
    /// Stopped by the host.
    Killed,
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
    /// Runs one invocation in a fresh instance.
    pub fn run(&self, engine: &Engine, run: &Run<'_>) -> (Ran, Option<Leftover>) {
        let stdout = MemoryOutputPipe::new(MAX_PAYLOAD_BYTES + 1);
        let mut builder = WasiCtxBuilder::new();
        builder
            .arg(run.program)
            .envs(run.env)
            .envs(run.invocation_env)
            .stdin(MemoryInputPipe::new(run.stdin.clone()))
            .stdout(stdout.clone())
            .stderr(run.stderr.clone())
            // Sync host calls on this (blocking) thread, not another one.
            .allow_blocking_current_thread(true);
        let preopens = [
            (Some(run.code_dir), "/var/task", FsPerms::ReadOnly),
            (run.opt_dir, "/opt", FsPerms::ReadOnly),
            (Some(run.tmp_dir), "/tmp", FsPerms::ReadWrite),
        ];
        for (host, guest, perms) in preopens {
            if let Some(host) = host
                && let Err(e) = builder.preopened_dir(host, guest, perms)
            {
                let ran = Ran {
                    ending: Ending::HostFailed(format!("opening {guest}: {e:#}")),
                    stdout: Bytes::new(),
                    peak_bytes: 0,
                };
                return (ran, None);
            }
        }
        let limits = Limits::new(run.memory_bytes);
        let (result, refused, peak_bytes, leftover) = match self {
            Guest::Module(pre) => {
                let host = P1Host {
                    wasi: builder.build_p1(),
                    limits,
                };
                in_store(
                    engine,
                    host,
                    run.killed,
                    |h| &mut h.limits,
                    |store| {
                        let instance = pre.instantiate(&mut *store).map_err(Failed::Instantiate)?;
                        instance
                            .get_typed_func::<(), ()>(&mut *store, "_start")
                            .and_then(|start| start.call(store, ()))
                            .map_err(Failed::Guest)
                    },
                )
            }
            Guest::Component(pre) => {
                let host = P2Host {
                    ctx: builder.build(),
                    table: ResourceTable::new(),
                    limits,
                };
                in_store(
                    engine,
                    host,
                    run.killed,
                    |h| &mut h.limits,
                    |store| {
                        let command = pre.instantiate(&mut *store).map_err(Failed::Instantiate)?;
                        match command.wasi_cli_run().call_run(store) {
                            Ok(Ok(())) => Ok(()),
                            // `run` returning an error is how a component exits non-zero.
                            Ok(Err(())) => Err(Failed::Guest(I32Exit(1).into())),
                            Err(e) => Err(Failed::Guest(e)),
                        }
                    },
                )
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
            Err(Failed::Guest(e)) => classify(&e, run.killed.load(Ordering::Relaxed), refused),
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

/// Runs `body` in a new store of `host`, armed (see [`arm`]); how it ended, what the limiter
/// saw (a refusal, the peak memory), and the store to tear down later.
fn in_store<T: Send + 'static>(
    engine: &Engine,
    host: T,
    killed: &Arc<AtomicBool>,
    limits: fn(&mut T) -> &mut Limits,
    body: impl FnOnce(&mut Store<T>) -> Result<(), Failed>,
) -> (Result<(), Failed>, bool, usize, Leftover) {
    let mut store = Store::new(engine, host);
    arm(&mut store, killed, limits);
    let result = body(&mut store);
    let Limits {
        refused,
        peak_bytes,
        ..
    } = *limits(store.data_mut());
    (result, refused, peak_bytes, Leftover(Box::new(store)))
}

/// Installs the limiter and the kill switch: the deadline is one epoch tick ahead, and at each
/// tick the run goes on unless the host has set `killed`.
fn arm<T: Send + 'static>(
    store: &mut Store<T>,
    killed: &Arc<AtomicBool>,
    mut limits: impl FnMut(&mut T) -> &mut Limits + Send + Sync + 'static,
) {
    store.limiter(move |h| limits(h) as &mut dyn wasmtime::ResourceLimiter);
    store.set_epoch_deadline(1);
    let killed = Arc::clone(killed);
    store.epoch_deadline_callback(move |_| {
        Ok(if killed.load(Ordering::Relaxed) {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(1)
        })
    });
}

/// Classifies a guest's abnormal end: an exit code, the host's stop, a refused allocation, or
/// a trap (whatever else the guest caused, such as a write past the output limit, counts as
/// one too, with its message).
fn classify(error: &wasmtime::Error, killed: bool, refused: bool) -> Ending {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Ending::Exited(exit.0);
    }
    if killed {
        return Ending::Killed;
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
