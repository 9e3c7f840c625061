//! Lambda's Telemetry API (`PUT /2022-07-01/telemetry`) and Logs API (`PUT /2020-08-15/logs`)
//! for one execution environment: extensions subscribe during init, and from then on get the
//! platform's records (`platform.initStart` … `platform.report`) and the function's and the
//! extensions' lines, batched, at a listener of theirs inside the sandbox.
//!
//! [`Telemetry`] is what the environment's task holds and calls at each point of the
//! lifecycle; it keeps the subscriptions' rules (init only, one API per extension) and decides
//! nothing else. Delivery happens elsewhere and never holds the environment up: the
//! environment's calls are non-blocking sends to the relay (`relay.rs`, one task per
//! environment that has subscribers), which renders each event for each subscriber's API
//! (`records.rs`) and offers it to that subscriber's delivery task (`delivery.rs`), whose
//! buffer is bounded and drops (and says so) rather than waits. The delivery tasks run on a
//! thread of their own (`courier.rs`), so that a listener woken by its batch takes the CPU from
//! that thread rather than from an invocation's. Requests are parsed and checked at the edge
//! (`subscription.rs`).
//!
//! Nobody subscribed, nothing happens: the relay exists from the start only where external
//! extensions were launched (or from the first subscription, for an internal extension), and
//! once init is over without a subscriber every call here returns at once, without allocating.

mod courier;
mod delivery;
mod log_format;
mod records;
mod relay;
/// Subscription requests parsed into [`subscription::Subscription`], with Lambda's errors.
pub mod subscription;

pub use log_format::platform_format;
use records::{Event, ReportMetrics, Stamped};

use crate::invoke::Status;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use crate::error::Failure;
use crate::invoke::InvokeOutcome;
use crate::logs::{Report, TapSlot};
use crate::runtime_api::wire::ApiError;
use crate::sandbox::Control;
use records::Span;
use relay::{LineFeed, Msg, Switch};
use subscription::{Api, Subscription, Types};

/// Who the environment is, as `platform.initStart` says.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// `functionName`
    pub(crate) function_name: String,
    /// `functionVersion`
    pub(crate) function_version: String,
    /// `instanceId`: the log stream's name.
    pub(crate) instance_id: String,
    /// The configured memory, MB.
    pub(crate) memory_mb: u32,
}

/// The running relay.
#[derive(Debug)]
struct Owner {
    tx: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An invocation the runtime is done with, whose report waits for the extensions.
#[derive(Debug)]
struct PendingReport {
    request_id: String,
    status: Status,
    duration: Duration,
    init: Option<Duration>,
    max_memory_mb: u64,
    at: Instant,
    wall: SystemTime,
}

/// What the records need of an invocation's outcome, taken before the outcome is handed on.
#[derive(Debug)]
pub(crate) struct Told {
    status: Status,
    produced_bytes: u64,
    fault: Option<String>,
}

/// One environment's telemetry: its subscriptions and what it has told them.
#[derive(Debug)]
pub(crate) struct Telemetry {
    identity: Identity,
    init_started: Instant,
    /// Init is under way: subscriptions are taken, and init's records are yet to be said.
    open: bool,
    subscriptions: Vec<(String, Subscription)>,
    /// Init events while there is no relay yet.
    kept: Vec<Stamped>,
    owner: Option<Owner>,
    switch: Arc<Switch>,
    tap: TapSlot,
    control: Arc<dyn Control>,
    pending_report: Option<PendingReport>,
}

impl Telemetry {
    /// The telemetry of an environment whose init started at `init_started` (`init_wall` on
    /// the clock); emits `platform.initStart`. With `extensions_launched`, the relay starts now,
    /// so that lines written during init reach subscribers that come later.
    pub(crate) fn new(
        identity: Identity,
        tap: TapSlot,
        control: Arc<dyn Control>,
        init_started: Instant,
        init_wall: SystemTime,
        extensions_launched: bool,
    ) -> Telemetry {
        let init_start = Stamped {
            time: init_wall,
            event: Event::InitStart {
                function_name: identity.function_name.clone(),
                function_version: identity.function_version.clone(),
                instance_id: identity.instance_id.clone(),
                instance_max_memory: u64::from(identity.memory_mb) * 1024 * 1024,
            },
        };
        let mut telemetry = Telemetry {
            identity,
            init_started,
            open: true,
            subscriptions: Vec::new(),
            kept: vec![init_start],
            owner: None,
            switch: Arc::new(Switch::default()),
            tap,
            control,
            pending_report: None,
        };
        if extensions_launched {
            telemetry.start_relay();
        }
        telemetry
    }

    /// Whether anything said now can reach anyone: during init (someone may still
    /// subscribe), or with a subscriber.
    fn live(&self) -> bool {
        self.open || self.owner.is_some()
    }

    fn start_relay(&mut self) {
        if self.owner.is_some() {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let kept = std::mem::take(&mut self.kept);
        let task = relay::spawn(
            rx,
            Arc::clone(&self.switch),
            Arc::clone(&self.control),
            kept,
            delivery::Retry::default(),
        );
        // During init every line is kept for subscribers to come.
        self.switch.want(Types {
            platform: true,
            function: true,
            extension: true,
        });
        self.tap.set(Some(Box::new(LineFeed {
            tx: tx.clone(),
            switch: Arc::clone(&self.switch),
        })));
        self.owner = Some(Owner { tx, task });
    }

    /// Says `make()` now to whoever may hear it; `make` is not called when nobody can.
    fn emit(&mut self, make: impl FnOnce() -> Event) {
        if let Some(owner) = &self.owner {
            let _ = owner.tx.send(Msg::Event(Stamped::now(make())));
        } else if self.open {
            self.kept.push(Stamped::now(make()));
        }
    }

    /// A subscription request of the extension `name` through `api`. Taken during init only,
    /// through one of the two APIs per extension; a repeated identical request changes
    /// nothing, a different one replaces the earlier (the Logs API's "idempotent").
    ///
    /// The body is checked first, as the Runtime Interface Emulator does: a bad request is a
    /// 400 whenever it comes.
    pub(crate) fn subscribe(&mut self, api: Api, name: &str, body: &[u8]) -> Result<(), ApiError> {
        let subscription =
            subscription::parse(api, body).map_err(subscription::SubscribeError::into_api_error)?;
        if !self.open {
            return Err(api.closed());
        }
        let earlier = self.subscriptions.iter().position(|(n, _)| n == name);
        if let Some(i) = earlier
            && self.subscriptions[i].1.api != api
        {
            return Err(api.conflict(name));
        }
        if let Some(i) = earlier {
            if self.subscriptions[i].1 == subscription {
                return Ok(());
            }
            self.subscriptions.remove(i);
        }
        self.start_relay();
        let types = subscription.types;
        self.subscriptions
            .push((name.to_owned(), subscription.clone()));
        if let Some(owner) = &self.owner {
            let _ = owner.tx.send(Msg::Subscribe {
                name: name.to_owned(),
                subscription,
            });
        }
        tracing::debug!(extension = name, api = ?api, types = ?types.names(), "telemetry subscription");
        self.emit(|| Event::Subscribed {
            name: name.to_owned(),
            types,
        });
        Ok(())
    }

    /// Init is over: `platform.initRuntimeDone`, a `platform.extension` for each of
    /// `extensions` (name, events), `platform.initReport`; then subscriptions close. Init
    /// took `duration`.
    pub(crate) fn init_done(
        &mut self,
        extensions: &[(String, Vec<&'static str>)],
        duration: Option<Duration>,
    ) {
        self.end_init(extensions, duration, Status::Success);
    }

    /// [`Telemetry::init_done`] with how init ended; a failed init names no extension. Only
    /// the first call counts.
    fn end_init(
        &mut self,
        extensions: &[(String, Vec<&'static str>)],
        duration: Option<Duration>,
        status: Status,
    ) {
        if !self.open {
            return;
        }
        let duration = duration.unwrap_or_else(|| self.init_started.elapsed());
        let ok = status == Status::Success;
        self.emit(|| Event::InitRuntimeDone {
            status: status.clone(),
        });
        for (name, events) in extensions.iter().filter(|_| ok) {
            self.emit(|| Event::Extension {
                name: name.clone(),
                state: "Ready",
                events: events.clone(),
            });
        }
        self.emit(|| Event::InitReport { status, duration });
        self.close();
    }

    /// Subscriptions close. Without a subscriber everything stops here; with some, only what
    /// they asked for is still tapped.
    fn close(&mut self) {
        self.open = false;
        self.kept = Vec::new();
        if self.subscriptions.is_empty() {
            self.tap.set(None);
            self.owner = None;
            return;
        }
        let wanted = self
            .subscriptions
            .iter()
            .fold(Types::default(), |all, (_, s)| all.union(s.types));
        self.switch.want(wanted);
        if let Some(owner) = &self.owner {
            let _ = owner.tx.send(Msg::Close);
        }
    }

    /// The invocation `request_id` is handed to the runtime: `platform.start`.
    pub(crate) fn start(&mut self, request_id: &str, trace_id: &str) {
        if !self.live() {
            return;
        }
        let version = self.identity.function_version.clone();
        self.emit(|| Event::Start {
            request_id: request_id.to_owned(),
            version,
            trace_id: (!trace_id.is_empty()).then(|| trace_id.to_owned()),
            span_id: Some(format!("{:016x}", uuid::Uuid::new_v4().as_u64_pair().0)),
        });
    }

    /// What the records need of `outcome`; `None` when nobody can hear of it.
    pub(crate) fn told(&self, request_id: &str, outcome: &InvokeOutcome) -> Option<Told> {
        if !self.live() {
            return None;
        }
        let (produced_bytes, fault) = match outcome {
            InvokeOutcome::Response(body) => (body.len(), None),
            InvokeOutcome::FunctionError(e) => (e.payload.len(), None),
            InvokeOutcome::Failure(f) => {
                // The Logs API's `platform.fault`, in Lambda's words.
                let fault = matches!(f, Failure::Exited(_) | Failure::OutOfMemory).then(|| {
                    format!("RequestId: {request_id} Process exited before completing request")
                });
                (0, fault)
            }
        };
        Some(Told {
            status: Status::of(outcome),
            produced_bytes: produced_bytes as u64,
            fault,
        })
    }

    /// The runtime is done with the invocation `report` is about, which it was handed at
    /// `delivered_at`: `platform.runtimeDone` (the spans from its answer, which began at
    /// `response_started`); its report waits for [`Telemetry::report`]. An invocation that
    /// ends init (it failed) reports init first.
    pub(crate) fn runtime_done(
        &mut self,
        told: Option<Told>,
        report: &Report<'_>,
        delivered_at: Option<Instant>,
        response_started: Option<Instant>,
    ) {
        let Some(told) = told else {
            return;
        };
        if self.open {
            self.end_init(&[], report.init, told.status.clone());
        }
        if !self.live() {
            return;
        }
        let request_id = report.request_id;
        if delivered_at.is_none() {
            // Never handed over (init failed first): it still starts, as its log does.
            self.start(request_id, "");
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        let spans = match (delivered_at, response_started) {
            (Some(delivered), Some(began)) => {
                let delivered_wall = wall
                    .checked_sub(now.saturating_duration_since(delivered))
                    .unwrap_or(wall);
                let latency = began.saturating_duration_since(delivered);
                vec![
                    Span {
                        name: "responseLatency",
                        start: delivered_wall,
                        duration: latency,
                    },
                    Span {
                        name: "responseDuration",
                        start: delivered_wall + latency,
                        duration: now.saturating_duration_since(began),
                    },
                ]
            }
            _ => Vec::new(),
        };
        let status = told.status.clone();
        self.emit(|| Event::RuntimeDone {
            request_id: request_id.to_owned(),
            status,
            duration: report.duration,
            produced_bytes: Some(told.produced_bytes),
            spans,
            fault: told.fault,
        });
        self.pending_report = Some(PendingReport {
            request_id: request_id.to_owned(),
            status: told.status,
            duration: report.duration,
            init: report.init,
            max_memory_mb: report.max_memory_mb,
            at: now,
            wall,
        });
    }

    /// The environment resets while its extensions are still at work on the invocation whose
    /// report is pending: they overran its deadline, or one of them failed. The report says
    /// so (`failure`'s status) and goes now: the extensions' time ends here, not once the
    /// environment's processes have been killed.
    pub(crate) fn reset(&mut self, failure: &Failure) {
        if let Some(pending) = &mut self.pending_report {
            pending.status = Status::of_failure(failure);
        }
        self.report();
    }

    /// The invocation is over, extensions included: its `platform.report`, with the time the
    /// extensions took after the runtime (`extensionOverhead`, in the duration and billed).
    pub(crate) fn report(&mut self) {
        let Some(pending) = self.pending_report.take() else {
            return;
        };
        let overhead = pending.at.elapsed();
        let duration = pending.duration + overhead;
        let memory_mb = self.identity.memory_mb;
        self.emit(|| Event::Report {
            request_id: pending.request_id,
            status: pending.status,
            metrics: ReportMetrics {
                duration,
                billed_ms: crate::logs::billed_ms(duration, pending.init),
                memory_mb,
                max_memory_mb: pending.max_memory_mb,
                init: pending.init,
            },
            spans: vec![Span {
                name: "extensionOverhead",
                start: pending.wall,
                duration: overhead,
            }],
        });
    }

    /// Has every subscriber send what it holds, waiting until they have or `deadline`.
    pub(crate) async fn flush(&self, deadline: Instant) {
        let Some(owner) = &self.owner else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        if owner.tx.send(Msg::Flush(tx)).is_err() {
            return;
        }
        let until = tokio::time::Instant::from_std(deadline);
        let Ok(Ok(flushed)) = tokio::time::timeout_at(until, rx).await else {
            return;
        };
        for subscriber in flushed {
            let _ = tokio::time::timeout_at(until, subscriber).await;
        }
    }
}

#[cfg(test)]
mod tests;
