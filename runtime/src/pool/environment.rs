//! One execution environment: a task that owns the environment's whole state (its runtime's
//! processes, its Runtime API listener, the invocation in flight) and moves it through
//! init → ready ⇄ invoking → dead. Calls from its Runtime API, messages from the pool, the
//! runtime's exit and the deadline timer all arrive at this one task, one at a time, so there is
//! no lock and no way for an invocation to end twice.
//!
//! Invariants:
//! - an environment serves one invocation at a time;
//! - after a timeout, a runtime exit or a failed init the environment is destroyed, never reused;
//! - every invocation handed to it ends exactly once, whatever happens.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Invocation, PoolMsg};
use crate::config::FunctionSpec;
use crate::config::lambda_env;
use crate::error::{ExitStatus, Failure};
use crate::invoke::{FunctionError, InvokeOutcome};
use crate::logs::{self, LogPump, LogSetup, LogSink, Report};
use crate::runtime_api::extensions::{ExtensionEvent, Extensions, FunctionInfo, ShutdownReason};
use crate::runtime_api::wire::{ApiError, NextEvent};
use crate::runtime_api::{self, ApiCall, Reply};
use crate::sandbox::{
    ApiLink, ApiPlacement, Control, ExtensionEnd, Sandbox, StartSpec, Started, Stop,
};
use crate::telemetry::{self, Telemetry};
use crate::timer::sleep_until;

/// Messages from the pool.
#[derive(Debug)]
pub(crate) enum EnvMsg {
    Invoke(Invocation),
    Shutdown,
}

/// The pool's side of an environment.
#[derive(Debug)]
pub(crate) struct EnvHandle {
    tx: mpsc::UnboundedSender<EnvMsg>,
}

impl EnvHandle {
    /// Hands over an invocation; gives it back, unseen, if the environment is gone.
    pub(crate) fn invoke(&self, invocation: Invocation) -> Result<(), Box<Invocation>> {
        self.tx
            .send(EnvMsg::Invoke(invocation))
            .map_err(|e| match e.0 {
                EnvMsg::Invoke(invocation) => Box::new(invocation),
                EnvMsg::Shutdown => unreachable!("sent an invocation"),
            })
    }

    /// Asks the environment to shut down.
    pub(crate) fn shutdown(&self) {
        let _ = self.tx.send(EnvMsg::Shutdown);
    }
}

/// Starts an environment for `first`, its first invocation (environments start on demand).
pub(crate) fn spawn(
    id: u64,
    spec: Arc<FunctionSpec>,
    sandbox: Arc<dyn Sandbox>,
    logs: Arc<dyn LogSink>,
    pool: mpsc::UnboundedSender<PoolMsg>,
    first: Invocation,
) -> (EnvHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(id, spec, sandbox, logs, pool, first, rx));
    (EnvHandle { tx }, task)
}

/// Why the environment ends, which decides how its processes are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Runtime exited or timed out or broke: kill whatever is left at once.
    Destroy,
    /// Shutdown: SIGTERM, a grace period, then SIGKILL.
    Graceful,
    /// After `/init/error` a runtime is expected to exit by itself: it gets the grace period
    /// to do so, then SIGKILL.
    AwaitExit,
}

async fn run(
    id: u64,
    spec: Arc<FunctionSpec>,
    sandbox: Arc<dyn Sandbox>,
    sink: Arc<dyn LogSink>,
    pool: mpsc::UnboundedSender<PoolMsg>,
    first: Invocation,
    mut rx: mpsc::UnboundedReceiver<EnvMsg>,
) {
    sandbox.prepare(&spec).await;
    let init_started = Instant::now();
    let init_wall = SystemTime::now();
    let env_hex = uuid::Uuid::new_v4().simple().to_string();
    let Running {
        server,
        mut api_rx,
        pump,
        control,
        exited,
        reset_tmp,
        extensions: started_extensions,
        log_stream,
    } = match start(&spec, &*sandbox, &sink, &env_hex).await {
        Ok(running) => running,
        Err(failure) => {
            // Every invocation gets its START, END and REPORT, also one whose environment
            // never came up.
            let request_id = first.request_id.clone();
            let report = Report {
                request_id: &request_id,
                duration: Duration::ZERO,
                init: Some(init_started.elapsed()),
                memory_mb: spec.memory_mb,
                max_memory_mb: 0,
                status: crate::invoke::Status::of_failure(&failure),
                failure: Some((failure.report_status(), failure.error_type())),
            };
            let lines = crate::telemetry::platform_format(&spec).lines(&[
                &logs::start_line(&request_id),
                &logs::end_line(&request_id),
                &report.line(),
            ]);
            for line in &lines {
                sink.line(line.as_bytes());
            }
            let tail = first.request.log_tail.then(|| {
                bytes::Bytes::from(
                    lines
                        .iter()
                        .flat_map(|l| [l.as_str(), "\n"])
                        .collect::<String>(),
                )
            });
            let _ = pool.send(PoolMsg::Retiring(id));
            first.finish_with_tail(InvokeOutcome::Failure(failure), Duration::ZERO, tail);
            let _ = pool.send(PoolMsg::Gone(id));
            return;
        }
    };
    tracing::debug!(function = %spec.name, env_id = %env_hex, backend = sandbox.name(), "environment started");
    let mut extensions = Extensions::new(
        FunctionInfo {
            name: spec.name.clone(),
            version: lambda_env::FUNCTION_VERSION.to_owned(),
            handler: spec.handler.clone(),
            account_id: spec.arn.split(':').nth(4).unwrap_or_default().to_owned(),
        },
        started_extensions.launched.clone(),
    );
    for (name, reason) in &started_extensions.failed {
        extensions.launch_failed(name, reason);
    }
    let control: Arc<dyn Control> = Arc::from(control);
    let telemetry = Telemetry::new(
        telemetry::Identity {
            function_name: spec.name.clone(),
            function_version: lambda_env::FUNCTION_VERSION.to_owned(),
            instance_id: log_stream,
            memory_mb: spec.memory_mb,
        },
        pump.tap_slot(),
        Arc::clone(&control),
        init_started,
        init_wall,
        !started_extensions.launched.is_empty(),
    );
    let mut env = Env {
        id,
        spec,
        pump,
        control,
        pool,
        init_started: Some(init_started),
        init_duration: None,
        parked: None,
        inflight: Some(Inflight {
            invocation: first,
            deadline: None,
            delivered_at: None,
        }),
        answered: VecDeque::new(),
        peak_mb: 0,
        exited: Some(exited),
        reset_tmp,
        retiring: false,
        extensions,
        extensions_alive: started_extensions.launched,
        extension_exits: started_extensions.exits,
        post_runtime: None,
        shutdown_reason: ShutdownReason::Spindown,
        runtime_released: false,
        telemetry,
    };
    // An extension that could not even be started fails init at once.
    let failed_launch = env.check_fatal();
    // Without external extensions there is nothing to wait for.
    env.release_runtime();
    // Set once shut down while the runtime, having answered, is still on its way back to
    // `/next`: until then, or this instant, the SIGTERM waits.
    let mut draining: Option<Instant> = None;
    let end = loop {
        if let Some(end) = failed_launch {
            break end;
        }
        let wake = env.next_wake();
        tokio::select! {
            biased;
            call = api_rx.recv() => {
                // The server holds a sender for as long as it runs, and it runs until dropped.
                let Some(call) = call else { break End::Destroy };
                if let Some(end) = env.on_api(call).await {
                    break end;
                }
                if draining.is_some() && env.parked.is_some() {
                    break End::Graceful;
                }
            }
            () = sleep_until(draining), if draining.is_some() => break End::Graceful,
            exit = async { env.extension_exits.as_mut().expect("polled only while set").recv().await }, if env.extension_exits.is_some() => {
                match exit {
                    Some((name, ended)) => {
                        if let Some(end) = env.on_extension_exit(&name, ended) {
                            break end;
                        }
                    }
                    None => env.extension_exits = None,
                }
            }
            msg = rx.recv(), if draining.is_none() => match msg {
                Some(EnvMsg::Invoke(invocation)) => {
                    if let Some(end) = env.on_invoke(invocation).await {
                        break end;
                    }
                }
                Some(EnvMsg::Shutdown) | None => {
                    // Lambda shuts down idle environments, parked at `/next`. One that has just
                    // answered may still be finishing (a shell runtime's curl that posted the
                    // response has not exited yet): signalling it now would cut that short.
                    let settling = env.inflight.is_none()
                        && env.parked.is_none()
                        && env.init_started.is_none();
                    env.fail_inflight(Failure::Sandbox("the execution environment was shut down".into()));
                    if !settling {
                        break End::Graceful;
                    }
                    draining = Some(Instant::now() + env.spec.shutdown_grace);
                }
            },
            status = async { env.exited.as_mut().expect("polled only while running").await }, if env.exited.is_some() => {
                env.exited = None;
                let status = status.unwrap_or(ExitStatus::Code(-1));
                // A runtime killed by the kernel's OOM killer ran out of memory, as Lambda says.
                let failure = match status {
                    ExitStatus::Signal(9) if env.control.out_of_memory() => Failure::OutOfMemory,
                    status => Failure::Exited(status),
                };
                env.shutdown_reason = ShutdownReason::Failure;
                env.fail_inflight(failure);
                break End::Destroy;
            }
            () = sleep_until(wake) => {
                if let Some(end) = env.on_timer().await {
                    break end;
                }
            }
        }
    };
    env.destroy(end, &mut api_rx).await;
    drop(server);
    env.retire();
    let _ = env.pool.send(PoolMsg::Gone(env.id));
    // An invocation the pool sent while this environment was ending never reached a runtime:
    // it goes back to the pool, to run elsewhere exactly once.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let EnvMsg::Invoke(invocation) = msg {
            let _ = env.pool.send(PoolMsg::Invoke(invocation));
        }
    }
}

/// An environment whose sandbox, Runtime API and log pump are up.
struct Running {
    /// The Runtime API server; `None` for a runtime in the host process.
    server: Option<AbortOnDrop>,
    api_rx: mpsc::UnboundedReceiver<ApiCall>,
    pump: LogPump,
    control: Box<dyn Control>,
    exited: oneshot::Receiver<ExitStatus>,
    reset_tmp: Option<Box<dyn crate::sandbox::ResetTmp>>,
    extensions: crate::sandbox::Extensions,
    /// `AWS_LAMBDA_LOG_STREAM_NAME`, which telemetry calls the `instanceId`.
    log_stream: String,
}

/// Brings an environment up: its Runtime API listener (the host's loopback, unless the sandbox
/// makes it inside its own network namespace and hands it over), the sandbox, the log pump.
/// On failure nothing is left running: a started sandbox is killed and reaped first.
async fn start(
    spec: &FunctionSpec,
    sandbox: &dyn Sandbox,
    sink: &Arc<dyn LogSink>,
    env_hex: &str,
) -> Result<Running, Failure> {
    let host_failure = |what: &str, e: std::io::Error| Failure::Sandbox(format!("{what}: {e}"));
    let (api_tx, api_rx) = mpsc::unbounded_channel();
    let placement = sandbox.runtime_api();
    let (host_listener, runtime_api) = match placement {
        ApiPlacement::Inside(addr) => (None, ApiLink::Tcp(addr)),
        ApiPlacement::HostLoopback => {
            let (listener, addr) = runtime_api::bind()
                .await
                .map_err(|e| host_failure("cannot bind the runtime api listener", e))?;
            (Some(listener), ApiLink::Tcp(addr))
        }
        ApiPlacement::InProcess => (None, ApiLink::InProcess(api_tx.clone())),
    };
    let log_stream = lambda_env::log_stream_name(SystemTime::now(), env_hex);
    let log = LogSetup::new(Arc::clone(sink), crate::telemetry::platform_format(spec));
    let Started {
        control,
        mut exited,
        logs,
        extension_logs,
        listener: handed_over,
        reset_tmp,
        runtime_api_peer_uid,
        extensions,
    } = sandbox.start(StartSpec {
        spec,
        env_id: env_hex,
        runtime_api,
        log_stream: &log_stream,
        log: log.writer(),
    })?;
    let listener = match (host_listener, handed_over) {
        _ if placement == ApiPlacement::InProcess => Ok(None),
        (Some(listener), _) => Ok(Some(listener)),
        (None, Some(handed_over)) => {
            match tokio::time::timeout(spec.init_timeout, handed_over).await {
                Ok(Ok(Ok(listener))) => listener
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(listener))
                    .map(Some),
                Ok(Ok(Err(e))) => Err(e),
                Ok(Err(_)) => Err(std::io::Error::other(
                    "the sandbox ended before handing over its runtime api listener",
                )),
                Err(_) => Err(std::io::Error::other(
                    "the sandbox did not hand over its runtime api listener in time",
                )),
            }
        }
        (None, None) => Err(std::io::Error::other(
            "the sandbox made no runtime api listener",
        )),
    };
    let pump = listener.and_then(|listener| Ok((listener, log.start(logs, extension_logs)?)));
    match pump {
        Ok((listener, pump)) => {
            // In process, the runtime holds the only sender: the mailbox closes when it ends.
            let server = listener.map(|listener| {
                AbortOnDrop(tokio::spawn(runtime_api::serve(
                    listener,
                    api_tx,
                    runtime_api_peer_uid,
                )))
            });
            Ok(Running {
                server,
                api_rx,
                pump,
                control,
                exited,
                reset_tmp,
                extensions,
                log_stream,
            })
        }
        Err(e) => {
            control.stop(Stop::Kill);
            let _ = tokio::time::timeout(REAP_LIMIT, &mut exited).await;
            Err(host_failure("starting the environment", e))
        }
    }
}

/// Aborts a task when dropped, so that the listener goes with its environment.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Inflight {
    invocation: Invocation,
    /// Set once the runtime is ready; init time does not count against the timeout.
    deadline: Option<Instant>,
    /// When the runtime received the event from `/next`.
    delivered_at: Option<Instant>,
}

struct Env {
    id: u64,
    spec: Arc<FunctionSpec>,
    pump: LogPump,
    control: Arc<dyn Control>,
    pool: mpsc::UnboundedSender<PoolMsg>,
    /// Some while the runtime has not yet called `/next` for the first time.
    init_started: Option<Instant>,
    /// The init duration, until the first REPORT line shows it.
    init_duration: Option<Duration>,
    /// A `/next` waiting for an event.
    parked: Option<Reply<NextEvent>>,
    inflight: Option<Inflight>,
    /// Recently answered request ids: a second answer to one of them is a 403, an unknown
    /// id a 400, as on Lambda.
    answered: VecDeque<String>,
    /// Peak memory seen so far, MB; read for each REPORT.
    peak_mb: u64,
    /// Resolves when the runtime process has been reaped; `None` once it has.
    exited: Option<oneshot::Receiver<ExitStatus>>,
    /// Asks the sandbox for a fresh `/tmp`, when the function has one per invocation.
    reset_tmp: Option<Box<dyn crate::sandbox::ResetTmp>>,
    /// Whether the pool has been told this environment is ending.
    retiring: bool,
    /// The Extensions API's state.
    extensions: Extensions,
    /// The external extensions whose processes have not exited.
    extensions_alive: Vec<String>,
    /// Each external extension's end; `None` without any, or once all are reaped.
    extension_exits: Option<mpsc::UnboundedReceiver<(String, ExtensionEnd)>>,
    /// Set when the runtime has answered but extensions registered for `INVOKE` have not all
    /// called `/next` again: the invocation's deadline, which still binds them. The
    /// environment is not idle until they have.
    post_runtime: Option<Instant>,
    /// What extensions are told when the environment ends.
    shutdown_reason: ShutdownReason,
    /// Whether the runtime was let go after the extensions' registration.
    runtime_released: bool,
    /// The Telemetry and Logs APIs' subscriptions, told of each step below.
    telemetry: Telemetry,
}

const ANSWERED_KEPT: usize = 32;

impl Env {
    fn next_wake(&self) -> Option<Instant> {
        match self.init_started {
            Some(started) => Some(started + self.spec.init_timeout),
            None => self
                .inflight
                .as_ref()
                .and_then(|i| i.deadline)
                .or(self.post_runtime),
        }
    }

    /// Handles an Extensions API call; a fatal error ends the environment.
    async fn on_extension(
        &mut self,
        call: crate::runtime_api::extensions::ExtensionCall,
    ) -> Option<End> {
        let changed = self.extensions.on_call(call);
        if let Some(end) = self.check_fatal() {
            return Some(end);
        }
        self.release_runtime();
        if changed {
            if self.init_started.is_some() {
                self.advance_init().await;
            } else if self.post_runtime.is_some() && self.extensions.invoke_done() {
                // The last extension is back: the invocation is over, the environment idle.
                self.post_runtime = None;
                self.telemetry.report();
                let _ = self.pool.send(PoolMsg::Idle(self.id));
            }
        }
        None
    }

    /// Lets the runtime start once every launched extension has registered, as Lambda does
    /// (a backend that started it at once ignores this).
    fn release_runtime(&mut self) {
        if !self.runtime_released && self.extensions.all_registered() {
            self.runtime_released = true;
            self.control.release_runtime();
        }
    }

    /// An external extension's process ended. Outside a shutdown that is Lambda's
    /// `Extension.Crash`, whatever its status: the phase fails and the environment resets.
    fn on_extension_exit(&mut self, name: &str, ended: ExtensionEnd) -> Option<End> {
        self.extensions_alive.retain(|n| n != name);
        match ended {
            ExtensionEnd::Exited(status) => self.extensions.crashed(name, &status.to_string()),
            ExtensionEnd::LaunchFailed(reason) => self.extensions.launch_failed(name, &reason),
        }
        self.check_fatal()
    }

    /// If an extension failed: the phase under way fails with its error, and the environment
    /// ends (its extensions told `failure`).
    fn check_fatal(&mut self) -> Option<End> {
        let fatal = self.extensions.fatal()?.clone();
        tracing::warn!(function = %self.spec.name, error_type = fatal.error_type, "{}; the execution environment is reset", fatal.message);
        if let Some(started) = self.init_started.take() {
            self.init_duration = Some(started.elapsed());
        }
        self.shutdown_reason = ShutdownReason::Failure;
        if self.post_runtime.take().is_some() {
            // The runtime had answered: the invocation's report, waiting for the extensions,
            // says how it ended, before the environment is torn down.
            self.telemetry.reset(&Failure::Extension(fatal.clone()));
        }
        self.fail_inflight(Failure::Extension(fatal));
        Some(End::Destroy)
    }

    /// Ends init once the runtime waits at `/next` and every extension has called its own:
    /// the init time counts until then, and the first invocation's clock starts.
    async fn advance_init(&mut self) {
        if self.init_started.is_none() || self.parked.is_none() || !self.extensions.init_done() {
            return;
        }
        let now = Instant::now();
        self.init_duration = self.init_started.take().map(|started| now - started);
        self.telemetry
            .init_done(&self.extensions.summary(), self.init_duration);
        if let Some(inflight) = &mut self.inflight {
            inflight.deadline = Some(now + self.spec.timeout);
            if let Some(reply) = self.parked.take() {
                self.deliver(reply).await;
            }
        }
    }

    async fn on_invoke(&mut self, invocation: Invocation) -> Option<End> {
        if self.inflight.is_some() {
            // The pool only sends to idle environments; this is a bug, not a user error, but
            // the invocation still ends exactly once.
            invocation.finish(InvokeOutcome::Failure(Failure::Sandbox(
                "execution environment is busy".into(),
            )));
            return None;
        }
        let deadline = self
            .init_started
            .is_none()
            .then(|| Instant::now() + self.spec.timeout);
        self.inflight = Some(Inflight {
            invocation,
            deadline,
            delivered_at: None,
        });
        if let Some(reply) = self.parked.take() {
            self.deliver(reply).await;
        }
        None
    }

    /// Handles one Runtime API call. Returns how the environment ends, if it does.
    async fn on_api(&mut self, call: ApiCall) -> Option<End> {
        match call {
            ApiCall::Next(reply) => self.on_next(reply).await,
            ApiCall::Extension(call) => self.on_extension(call).await,
            ApiCall::Subscribe {
                api,
                identifier,
                body,
                reply,
            } => {
                let answer = self
                    .extensions
                    .name_of(identifier.as_deref())
                    .and_then(|name| self.telemetry.subscribe(api, &name, &body));
                let _ = reply.send(answer);
                None
            }
            ApiCall::Response {
                request_id,
                body,
                began,
                reply,
            } => {
                let outcome = InvokeOutcome::Response(body);
                self.answer(&request_id, reply, Ok(()), outcome, Some(began))
                    .await
            }
            ApiCall::ResponseTooLarge { request_id, reply } => {
                let outcome = InvokeOutcome::Failure(Failure::ResponseTooLarge);
                self.answer(
                    &request_id,
                    reply,
                    Err(ApiError::too_large()),
                    outcome,
                    None,
                )
                .await
            }
            ApiCall::Error {
                request_id,
                error_type,
                body,
                began,
                reply,
            } => {
                let error = FunctionError::from_runtime(error_type.as_deref(), body);
                let outcome = InvokeOutcome::FunctionError(error);
                self.answer(&request_id, reply, Ok(()), outcome, Some(began))
                    .await
            }
            ApiCall::Failed {
                request_id: Some(request_id),
                failure,
                reply,
            } => {
                let outcome = InvokeOutcome::Failure(failure);
                self.answer(&request_id, reply, Ok(()), outcome, None).await
            }
            ApiCall::Failed {
                request_id: None,
                failure,
                reply,
            } => {
                let _ = reply.send(Ok(()));
                self.init_duration = self.init_started.take().map(|s| s.elapsed());
                self.fail_inflight(failure);
                Some(End::Destroy)
            }
            ApiCall::InitError {
                error_type,
                body,
                reply,
            } => {
                if self.init_started.is_none() {
                    let _ = reply.send(Err(ApiError::invalid_state(
                        "Ready",
                        "InitError",
                        "init has already completed",
                    )));
                    return None;
                }
                let _ = reply.send(Ok(()));
                self.init_duration = self.init_started.take().map(|s| s.elapsed());
                let error = FunctionError::from_runtime(error_type.as_deref(), body);
                self.retire();
                self.finish(InvokeOutcome::FunctionError(error), None);
                // Lambda discards an environment whose init failed; the next invocation starts
                // a new one.
                Some(End::AwaitExit)
            }
        }
    }

    async fn on_next(&mut self, reply: Reply<NextEvent>) -> Option<End> {
        if self
            .inflight
            .as_ref()
            .is_some_and(|i| i.delivered_at.is_some())
        {
            let _ = reply.send(Err(ApiError::invalid_state(
                "Invoke",
                "Ready",
                "the current invocation has not been answered",
            )));
            return None;
        }
        if self.parked.is_some() {
            let _ = reply.send(Err(ApiError::invalid_state(
                "Ready",
                "Ready",
                "a /next call is already waiting",
            )));
            return None;
        }
        // Internal extensions register before the runtime's first `/next`, never after.
        self.extensions.close_registration();
        if self.init_started.is_some() {
            self.parked = Some(reply);
            self.advance_init().await;
            return None;
        }
        if self.inflight.is_some() {
            self.deliver(reply).await;
        } else {
            self.parked = Some(reply);
        }
        None
    }

    /// Hands the waiting invocation to the runtime's `/next`, once its `START` line is in the
    /// log: whatever the runtime writes after it has the event must come after `START`.
    async fn deliver(&mut self, reply: Reply<NextEvent>) {
        let Some(inflight) = &mut self.inflight else {
            return;
        };
        let now = Instant::now();
        let deadline = inflight.deadline.unwrap_or(now + self.spec.timeout);
        let deadline_wall = SystemTime::now() + deadline.saturating_duration_since(now);
        let deadline_ms = deadline_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let invocation = &inflight.invocation;
        let event = NextEvent {
            request_id: invocation.request_id.clone(),
            deadline_ms,
            function_arn: self.spec.arn.clone(),
            trace_id: invocation.trace_id.clone(),
            client_context: invocation.request.client_context.clone(),
            cognito_identity: invocation.request.cognito_identity.clone(),
            payload: invocation.request.payload.clone(),
        };
        inflight.delivered_at = Some(now);
        self.pump.start(
            &logs::start_line(&invocation.request_id),
            invocation.request.log_tail,
        );
        self.telemetry
            .start(&invocation.request_id, &invocation.trace_id);
        // Extensions registered for INVOKE learn of it together with the runtime.
        self.extensions.invoke(|| ExtensionEvent::Invoke {
            request_id: event.request_id.clone(),
            deadline_ms,
            function_arn: event.function_arn.clone(),
            trace_id: Some(event.trace_id.clone()).filter(|t| !t.is_empty()),
        });
        // If the runtime hung up before this answer reached it, the invocation stays in flight
        // and its deadline ends it: an event is handed over once, never twice.
        let _ = reply.send(Ok(event));
    }

    /// Checks that `request_id` is the invocation in flight, then ends it with `outcome` and
    /// answers the runtime with `api_answer`; otherwise answers with the error and changes
    /// nothing. When the function has a `/tmp` per invocation, it is made fresh in between:
    /// after the caller has the outcome, before the runtime has its acknowledgement. `began`
    /// is when the runtime began to send its answer, if it sent one.
    async fn answer(
        &mut self,
        request_id: &str,
        reply: Reply<()>,
        api_answer: Result<(), ApiError>,
        outcome: InvokeOutcome,
        began: Option<Instant>,
    ) -> Option<End> {
        let current = self
            .inflight
            .as_ref()
            .filter(|i| i.delivered_at.is_some())
            .is_some_and(|i| i.invocation.request_id == request_id);
        if !current {
            let error = if self.answered.iter().any(|a| a == request_id) {
                ApiError::invalid_state(
                    "Ready",
                    "InvocationResponse",
                    "the invocation was already answered",
                )
            } else {
                ApiError::invalid_request_id()
            };
            let _ = reply.send(Err(error));
            return None;
        }
        // A fresh /tmp is asked for now, before anything else is sent (and only when this
        // invocation wrote to it).
        let reset = self
            .reset_tmp
            .as_mut()
            .and_then(|tmp| (!tmp.untouched()).then(|| tmp.reset()));
        // The pool hears first, the caller second: a caller that invokes again on its answer
        // must find this environment idle, not count it busy and be throttled. With
        // extensions still at work on this invocation it is not idle: the caller has its
        // answer now, and the pool hears once they are back at `/next` (by the deadline).
        if self.extensions.invoke_done() {
            let _ = self.pool.send(PoolMsg::Idle(self.id));
        } else {
            self.post_runtime = self.inflight.as_ref().and_then(|i| i.deadline);
        }
        self.finish(outcome, began);
        // The runtime hears that its answer was accepted only once /tmp is fresh: all it wrote
        // there before answering is gone, and nothing it writes afterwards is swept away under
        // it (the AWS tutorial's shell runtime keeps `curl -D` files in /tmp while it waits
        // for the next event).
        let fresh = match reset {
            None => true,
            Some(done) => matches!(
                tokio::time::timeout(RESET_LIMIT, done).await,
                Ok(Ok(Ok(())))
            ),
        };
        if !fresh {
            // A used /tmp is never handed on: the environment ends (an invocation the pool
            // sent it meanwhile goes back to the pool).
            tracing::warn!(
                env = self.id,
                "resetting /tmp failed; the environment is discarded"
            );
            self.retire();
            return Some(End::Destroy);
        }
        let _ = reply.send(api_answer);
        None
    }

    async fn on_timer(&mut self) -> Option<End> {
        let now = Instant::now();
        if let Some(started) = self.init_started {
            if now < started + self.spec.init_timeout {
                return None;
            }
            let request_id = self
                .inflight
                .as_ref()
                .map(|i| i.invocation.request_id.clone());
            if let Some(request_id) = request_id {
                self.pump
                    .platform(&[&logs::timeout_line(&request_id, self.spec.init_timeout)]);
            }
            self.kill_and_reap().await;
            self.init_duration = Some(now - started);
            self.shutdown_reason = ShutdownReason::Timeout;
            self.fail_inflight(Failure::InitTimeout(self.spec.init_timeout));
            return Some(End::Destroy);
        }
        if self.inflight.is_none()
            && let Some(deadline) = self.post_runtime
        {
            if now < deadline {
                return None;
            }
            // Extensions that overran the invocation's deadline after the runtime answered:
            // the environment resets, and they are told `timeout`.
            tracing::warn!(function = %self.spec.name, "extensions did not finish the invocation before its deadline; the execution environment is reset");
            self.post_runtime = None;
            self.shutdown_reason = ShutdownReason::Timeout;
            self.telemetry.reset(&Failure::Timeout(self.spec.timeout));
            self.retire();
            return Some(End::Destroy);
        }
        let inflight = self.inflight.as_ref()?;
        if inflight.deadline.is_none_or(|d| now < d) {
            return None;
        }
        self.shutdown_reason = ShutdownReason::Timeout;
        let request_id = inflight.invocation.request_id.clone();
        // Stop the runtime before anything else: when the caller hears of the timeout, the
        // function is no longer running.
        self.kill_and_reap().await;
        self.pump
            .platform(&[&logs::timeout_line(&request_id, self.spec.timeout)]);
        self.fail_inflight(Failure::Timeout(self.spec.timeout));
        Some(End::Destroy)
    }

    /// Ends the invocation in flight, if any, with `failure`; the environment is ending.
    fn fail_inflight(&mut self, failure: Failure) {
        self.retire();
        self.finish(InvokeOutcome::Failure(failure), None);
    }

    /// Tells the pool, once, that this environment no longer counts against the concurrency.
    fn retire(&mut self) {
        if !self.retiring {
            self.retiring = true;
            let _ = self.pool.send(PoolMsg::Retiring(self.id));
        }
    }

    /// Ends the invocation in flight with `outcome`, then writes its END and REPORT lines.
    /// `began` is when the runtime began to send the answer `outcome` holds, if it did.
    fn finish(&mut self, outcome: InvokeOutcome, began: Option<Instant>) {
        let Some(inflight) = self.inflight.take() else {
            return;
        };
        let now = Instant::now();
        let request_id = inflight.invocation.request_id.clone();
        let tail = inflight.invocation.request.log_tail;
        if inflight.delivered_at.is_none() {
            self.pump.start(&logs::start_line(&request_id), tail);
        }
        let duration = inflight.delivered_at.map_or(Duration::ZERO, |t| now - t);
        let failure = match &outcome {
            InvokeOutcome::Failure(f) => Some((f.report_status(), f.error_type())),
            _ => None,
        };
        let status = crate::invoke::Status::of(&outcome);
        // What telemetry needs of the outcome, before it is handed on.
        let told = self.telemetry.told(&request_id, &outcome);
        // Without a log tail the caller has its outcome before END and REPORT are written
        // (and the peak memory read for REPORT); with one, after, so they are in the tail.
        let pending = if tail {
            Some((inflight.invocation, outcome))
        } else {
            inflight
                .invocation
                .finish_with_tail(outcome, duration, None);
            None
        };
        if let Some(bytes) = self.control.max_memory_bytes() {
            self.peak_mb = self.peak_mb.max(bytes.div_ceil(1024 * 1024));
        }
        let report = Report {
            request_id: &request_id,
            duration,
            init: self.init_duration.take(),
            memory_mb: self.spec.memory_mb,
            max_memory_mb: self.peak_mb,
            status,
            failure,
        };
        self.pump
            .platform(&[&logs::end_line(&request_id), &report.line()]);
        self.telemetry
            .runtime_done(told, &report, inflight.delivered_at, began);
        if self.post_runtime.is_none() {
            self.telemetry.report();
        }
        if let Some((invocation, outcome)) = pending {
            invocation.finish_with_tail(outcome, duration, Some(self.pump.tail_end()));
        }
        if self.answered.len() == ANSWERED_KEPT {
            self.answered.pop_front();
        }
        self.answered.push_back(request_id);
    }

    /// Kills the runtime (and what it started) and waits (boundedly) until it is reaped.
    /// Extensions are left for the shutdown, which tells them why.
    async fn kill_and_reap(&mut self) {
        self.control.stop_runtime(Stop::Kill);
        if let Some(exited) = &mut self.exited
            && tokio::time::timeout(REAP_LIMIT, exited).await.is_ok()
        {
            self.exited = None;
        }
    }

    /// Stops every process of the environment and waits for the runtime to be reaped. With
    /// extensions, as Lambda: the runtime first (SIGTERM, a share of the budget), then
    /// `SHUTDOWN` to the extensions registered for it, which have until the budget ends to
    /// exit, and SIGKILL at once for the others; then SIGKILL for whatever is left.
    async fn destroy(&mut self, end: End, api_rx: &mut mpsc::UnboundedReceiver<ApiCall>) {
        let started = Instant::now();
        let budget = self.shutdown_budget();
        let runtime_share = match budget {
            Some(budget) => budget.mul_f64(RUNTIME_SHARE).min(self.spec.shutdown_grace),
            None => self.spec.shutdown_grace,
        };
        if end != End::Destroy
            && let Some(exited) = &mut self.exited
        {
            if end == End::Graceful {
                self.control.stop_runtime(Stop::Terminate);
            }
            if tokio::time::timeout(runtime_share, exited).await.is_ok() {
                self.exited = None;
            }
        }
        // Also reaches what the runtime left behind in its group after it exited.
        self.kill_and_reap().await;
        if let Some(budget) = budget {
            // Subscribers get what is buffered, the last report included, before their
            // extensions hear `SHUTDOWN`; within half of what is left of the budget, so that
            // a stuck listener cannot take the extensions' own time.
            self.pump.flush();
            self.telemetry.report();
            let left = (started + budget).saturating_duration_since(Instant::now());
            self.telemetry.flush(Instant::now() + left / 2).await;
            self.shut_extensions_down(started + budget, api_rx).await;
        }
        self.extensions.close();
        self.control.stop(Stop::Kill);
        // Whoever waits for this environment to end (a shutdown, the CLI) gets its last lines.
        self.pump.flush();
    }
}

/// The share of the shutdown budget the runtime gets before its extensions are told, as the
/// Runtime Interface Emulator splits it.
const RUNTIME_SHARE: f64 = 0.3;

impl Env {
    /// Lambda's shutdown budget: 2,000 ms with external extensions, 500 ms with internal
    /// ones only, none without.
    fn shutdown_budget(&self) -> Option<Duration> {
        if self.extensions.any_external() {
            Some(Duration::from_millis(2_000))
        } else if self.extensions.any() {
            Some(Duration::from_millis(500))
        } else {
            None
        }
    }

    /// Tells the extensions registered for it that the environment is shutting down, and
    /// waits until the external ones have exited or `deadline`. Their calls are still served
    /// meanwhile: one busy with its last invocation fetches its `SHUTDOWN` with its next
    /// `/next`. The runtime is gone; a call of its gets the API's "shutting down".
    async fn shut_extensions_down(
        &mut self,
        deadline: Instant,
        api_rx: &mut mpsc::UnboundedReceiver<ApiCall>,
    ) {
        let wall = SystemTime::now() + deadline.saturating_duration_since(Instant::now());
        let deadline_ms = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.extensions.shutdown(self.shutdown_reason, deadline_ms);
        // Those not registered for `SHUTDOWN` are killed now, as on Lambda, rather than left
        // to run out the budget of those that are. Exits already reported are taken first:
        // the process group of one reaped meanwhile may be someone else's by now.
        if let Some(exits) = &mut self.extension_exits {
            while let Ok((name, _)) = exits.try_recv() {
                self.extensions_alive.retain(|n| *n != name);
            }
        }
        for name in self.extensions.external_without_shutdown() {
            if self.extensions_alive.contains(&name) {
                self.control.kill_extension(&name);
            }
        }
        let Some(exits) = &mut self.extension_exits else {
            return;
        };
        let until = sleep_until(Some(deadline));
        tokio::pin!(until);
        while !self.extensions_alive.is_empty() {
            tokio::select! {
                exit = exits.recv() => match exit {
                    Some((name, _)) => self.extensions_alive.retain(|n| *n != name),
                    None => break,
                },
                call = api_rx.recv() => match call {
                    Some(ApiCall::Extension(call)) => {
                        self.extensions.on_call(call);
                    }
                    Some(_) => {}
                    None => break,
                },
                () = &mut until => break,
            }
        }
        if !self.extensions_alive.is_empty() {
            tracing::warn!(function = %self.spec.name, "extensions {} did not exit within the shutdown budget; killed", self.extensions_alive.join(", "));
        }
    }
}

/// A killed process is reaped within milliseconds; this bound only keeps a stuck kernel
/// (a process in uninterruptible sleep) from holding the environment task forever.
const REAP_LIMIT: Duration = Duration::from_secs(5);
/// A `/tmp` reset is two small messages and a mount; past this something is wrong.
const RESET_LIMIT: Duration = Duration::from_secs(5);
