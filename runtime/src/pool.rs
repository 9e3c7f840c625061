//! A function's pool: one task that owns all of the function's execution environments and
//! hands each invocation to exactly one of them. Everything talks to it over a channel of
//! [`PoolMsg`]; every invocation carries its own oneshot reply, so it resolves exactly once.
//!
//! Scope: one pool per loaded function; environments live inside it.
//!
//! Capacity: at most `concurrency` environments are alive and not yet retiring. An environment
//! tells the pool it is idle (or retiring) *before* it hands its outcome to the caller, so a
//! caller that invokes again as soon as it has its answer never finds the pool falsely full.
//! Idle environments are reaped after the function's idle timeout, oldest first.

pub mod environment;
pub mod policy;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::FunctionSpec;
use crate::error::Failure;
use crate::invoke::{Completed, InvokeOutcome, InvokeRequest, Throttled};
use crate::logs::LogSink;
use crate::sandbox::Sandbox;
use crate::timer::sleep_until;
use environment::EnvHandle;
use policy::Placement;

/// An invocation on its way to an environment.
#[derive(Debug)]
pub(crate) struct Invocation {
    pub(crate) request_id: String,
    pub(crate) trace_id: String,
    pub(crate) request: InvokeRequest,
    /// Refused when the function is at its concurrency, rather than queued.
    pub(crate) throttle: bool,
    pub(crate) reply: oneshot::Sender<Result<Completed, Throttled>>,
}

impl Invocation {
    /// Ends the invocation with `outcome`. Consumes it: there is no second time.
    pub(crate) fn finish(self, outcome: InvokeOutcome) {
        self.finish_with_tail(outcome, Duration::ZERO, None);
    }

    /// Ends the invocation with `outcome`, how long its runtime had it, and the end of its log.
    pub(crate) fn finish_with_tail(
        self,
        outcome: InvokeOutcome,
        duration: Duration,
        log_tail: Option<Bytes>,
    ) {
        let _ = self.reply.send(Ok(Completed {
            request_id: self.request_id,
            outcome,
            log_tail,
            duration,
        }));
    }
}

/// What the pool task hears.
#[derive(Debug)]
pub(crate) enum PoolMsg {
    Invoke(Invocation),
    /// The environment finished an invocation and can take another.
    Idle(u64),
    /// The environment is ending (its runtime exited, timed out or failed init, or it was
    /// reaped): it no longer counts against the function's concurrency.
    Retiring(u64),
    /// The environment is gone.
    Gone(u64),
    Shutdown(oneshot::Sender<()>),
    /// A newer version of the function took over (`lamina serve --watch`): idle environments
    /// shut down now, busy ones when their invocation has ended; what still arrives is
    /// served. The pool ends when the last handle to it is gone.
    Retire,
}

/// A handle to a function's pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FunctionPool {
    tx: mpsc::UnboundedSender<PoolMsg>,
    spec: Arc<FunctionSpec>,
}

impl FunctionPool {
    /// Starts the pool task for `spec`. Environments start on demand.
    pub fn start(
        spec: Arc<FunctionSpec>,
        sandbox: Arc<dyn Sandbox>,
        logs: Arc<dyn LogSink>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = PoolTask {
            spec: Arc::clone(&spec),
            sandbox,
            logs,
            // Weak: the pool lives for as long as a handle (or an environment) can reach it.
            tx: tx.downgrade(),
            envs: HashMap::new(),
            retired: false,
            retiring: HashMap::new(),
            idle: Vec::new(),
            queue: VecDeque::new(),
            next_env: 0,
        };
        tokio::spawn(task.run(rx));
        Self { tx, spec }
    }

    /// The function this pool runs.
    pub fn spec(&self) -> &Arc<FunctionSpec> {
        &self.spec
    }

    /// Runs one invocation to its end; when the function is at its concurrency, it waits
    /// for an environment (as `lamina invoke` wants).
    pub async fn invoke(&self, request: InvokeRequest) -> Completed {
        match self.send(request, false).await {
            Ok(done) => done,
            Err(Throttled) => unreachable!("a queued invocation is never throttled"),
        }
    }

    /// Runs one invocation to its end, or refuses it at once when every environment is busy
    /// and the function is at its concurrency, as Lambda throttles.
    pub async fn try_invoke(&self, request: InvokeRequest) -> Result<Completed, Throttled> {
        self.send(request, true).await
    }

    async fn send(&self, request: InvokeRequest, throttle: bool) -> Result<Completed, Throttled> {
        let request_id = request
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let trace_id = request.trace_id.clone().unwrap_or_else(new_trace_id);
        let (reply, done) = oneshot::channel();
        let invocation = Invocation {
            request_id: request_id.clone(),
            trace_id,
            request,
            throttle,
            reply,
        };
        let lost = |request_id: String| {
            Ok(Completed {
                request_id,
                outcome: InvokeOutcome::Failure(Failure::Sandbox(
                    "the function's pool has stopped".into(),
                )),
                log_tail: None,
                duration: Duration::ZERO,
            })
        };
        if self.tx.send(PoolMsg::Invoke(invocation)).is_err() {
            return lost(request_id);
        }
        done.await.unwrap_or_else(|_| lost(request_id))
    }

    /// Retires the pool: a newer version of its function took over (see [`PoolMsg::Retire`]).
    pub fn retire(&self) {
        let _ = self.tx.send(PoolMsg::Retire);
    }

    /// Stops every environment (runtimes get SIGTERM, then SIGKILL after the grace period) and
    /// waits until they are gone. Invocations still waiting for an environment fail.
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(PoolMsg::Shutdown(done)).is_ok() {
            let _ = finished.await;
        }
    }
}

/// `Root=1-<epoch hex>-<96 random bits>;Parent=<64 random bits>;Sampled=0`, an X-Ray trace
/// header as Lambda makes one for an untraced caller.
fn new_trace_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        secs & 0xffff_ffff,
        &a[..24],
        &b[..16]
    )
}

struct Slot {
    handle: EnvHandle,
    task: JoinHandle<()>,
}

struct PoolTask {
    spec: Arc<FunctionSpec>,
    sandbox: Arc<dyn Sandbox>,
    logs: Arc<dyn LogSink>,
    tx: mpsc::WeakUnboundedSender<PoolMsg>,
    /// A newer version took over: environments end as soon as they are idle.
    retired: bool,
    /// Environments that count against the concurrency.
    envs: HashMap<u64, Slot>,
    /// Environments on their way out; awaited at shutdown.
    retiring: HashMap<u64, JoinHandle<()>>,
    /// Idle environments and since when, oldest first (the newest is reused first, so the
    /// oldest are the ones the idle timeout reaps).
    idle: Vec<(u64, Instant)>,
    queue: VecDeque<Invocation>,
    next_env: u64,
}

impl PoolTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<PoolMsg>) {
        loop {
            let reap_at = self
                .idle
                .first()
                .map(|&(_, since)| since + self.spec.idle_timeout);
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                () = sleep_until(reap_at) => {
                    self.reap(Instant::now());
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            match msg {
                PoolMsg::Invoke(invocation) => self.place(invocation),
                PoolMsg::Idle(id) => match self.queue.pop_front() {
                    Some(next) => self.dispatch(id, next),
                    None if self.retired => self.end(id),
                    None => self.idle.push((id, Instant::now())),
                },
                PoolMsg::Retire => {
                    self.retired = true;
                    for (id, _) in std::mem::take(&mut self.idle) {
                        self.end(id);
                    }
                }
                PoolMsg::Retiring(id) => {
                    self.idle.retain(|&(i, _)| i != id);
                    if let Some(slot) = self.envs.remove(&id) {
                        self.retiring.insert(id, slot.task);
                    }
                    // Capacity freed: a waiting invocation may start a new environment.
                    if let Some(next) = self.queue.pop_front() {
                        self.place(next);
                    }
                }
                // An environment always says `Retiring` first (which freed its capacity).
                PoolMsg::Gone(id) => {
                    self.retiring.remove(&id);
                }
                PoolMsg::Shutdown(done) => {
                    self.shutdown().await;
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    fn place(&mut self, invocation: Invocation) {
        match policy::place(self.idle.len(), self.envs.len(), self.spec.concurrency) {
            Placement::Reuse => match self.idle.pop() {
                Some((id, _)) => self.dispatch(id, invocation),
                None => self.queue.push_back(invocation),
            },
            Placement::Spawn => self.spawn(invocation),
            Placement::Queue if invocation.throttle => {
                let _ = invocation.reply.send(Err(Throttled));
            }
            Placement::Queue => self.queue.push_back(invocation),
        }
    }

    /// Shuts down the environments idle since before `now - idle_timeout`.
    fn reap(&mut self, now: Instant) {
        let timeout = self.spec.idle_timeout;
        let stale = self
            .idle
            .iter()
            .take_while(|&&(_, since)| since + timeout <= now)
            .count();
        let stale: Vec<u64> = self.idle.drain(..stale).map(|(id, _)| id).collect();
        for id in stale {
            tracing::debug!(function = %self.spec.name, env = id, "reaping an idle environment");
            self.end(id);
        }
    }

    /// Shuts an idle environment down.
    fn end(&mut self, id: u64) {
        if let Some(slot) = self.envs.remove(&id) {
            slot.handle.shutdown();
            self.retiring.insert(id, slot.task);
        }
    }

    fn dispatch(&mut self, id: u64, invocation: Invocation) {
        let Some(slot) = self.envs.get(&id) else {
            return self.place(invocation);
        };
        if let Err(returned) = slot.handle.invoke(invocation) {
            // The environment died between its last message and this one: it never saw the
            // invocation, so placing it again cannot run it twice.
            self.envs.remove(&id);
            self.place(*returned);
        }
    }

    fn spawn(&mut self, first: Invocation) {
        // The pool runs only while something can reach it, which this message is proof of.
        let Some(tx) = self.tx.upgrade() else {
            return first.finish(InvokeOutcome::Failure(Failure::Sandbox(
                "the function's pool is gone".into(),
            )));
        };
        let id = self.next_env;
        self.next_env += 1;
        let (handle, task) = environment::spawn(
            id,
            Arc::clone(&self.spec),
            Arc::clone(&self.sandbox),
            Arc::clone(&self.logs),
            tx,
            first,
        );
        self.envs.insert(id, Slot { handle, task });
    }

    async fn shutdown(&mut self) {
        for waiting in self.queue.drain(..) {
            waiting.finish(InvokeOutcome::Failure(Failure::Sandbox(
                "lamina is shutting down".into(),
            )));
        }
        for slot in self.envs.values() {
            slot.handle.shutdown();
        }
        for (_, slot) in self.envs.drain() {
            let _ = slot.task.await;
        }
        for (_, task) in self.retiring.drain() {
            let _ = task.await;
        }
    }
}
