//! What happens in an environment, as the Telemetry and Logs APIs tell it: an [`Event`] with
//! the time it happened ([`Stamped`]), rendered for each API into Lambda's envelope
//! `{"time":"2022-10-12T00:00:15.064Z","type":"platform.start","record":{…}}` (UTC, to the
//! millisecond, as Lambda and its emulator write it).
//!
//! An event is kept unrendered until it is delivered, because the two APIs tell the same event
//! differently: the Telemetry API has `platform.initStart`, `platform.initRuntimeDone`,
//! `platform.initReport` and `platform.telemetrySubscription`; the Logs API has none of the
//! init records, tells an invocation's end as `platform.end` (and a crash as `platform.fault`),
//! a subscription as `platform.logsSubscription`, and `platform.runtimeDone` only with schema
//! `2021-03-18`. Records carry the superset of the fields Lambda's schema pages and captures
//! show (telemetry-schema-reference.html; `lambda-apis-wave2.md` §2.5); fields marked optional
//! there are left out when lamina has no value for them.
//!
//! The function's own log, under `LogFormat: JSON`, shows an invocation's `platform.start`,
//! `platform.runtimeDone` and `platform.report` too (`log_format.rs`); they are rendered here
//! ([`Stamped::render_log`]), from the same events and with the same [`Status`], so a log and a
//! subscriber never tell one invocation two ways.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use super::subscription::{Api, Types};
use crate::invoke::Status;
use crate::logs::Source;

/// Which of a subscriber's `types` an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// `platform.*` records.
    Platform,
    /// The function's lines.
    Function,
    /// The extensions' lines.
    Extension,
}

impl From<Source> for Category {
    fn from(source: Source) -> Category {
        match source {
            Source::Function => Category::Function,
            Source::Extension => Category::Extension,
        }
    }
}

impl Category {
    /// Whether a subscriber asking for `types` gets this category.
    pub fn wanted_by(self, types: Types) -> bool {
        match self {
            Category::Platform => types.platform,
            Category::Function => types.function,
            Category::Extension => types.extension,
        }
    }
}

impl Status {
    /// `status` and `errorType` for the Telemetry API.
    fn parts(&self) -> (&'static str, Option<&str>) {
        match self {
            Status::Success => ("success", None),
            Status::Error(t) => ("error", Some(t)),
            Status::Failure(t) => ("failure", Some(t)),
            Status::Timeout => ("timeout", None),
        }
    }

    /// `status` for the Logs API, which knows `success`, `failure` and `timeout` only.
    fn logs_status(&self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error(_) | Status::Failure(_) => "failure",
            Status::Timeout => "timeout",
        }
    }
}

/// A span of an invocation (`responseLatency`, `responseDuration`, `extensionOverhead`).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Its name.
    pub name: &'static str,
    /// When it started.
    pub start: SystemTime,
    /// How long it took.
    pub duration: Duration,
}

/// `platform.report`'s metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportMetrics {
    /// The invocation's duration, with the extensions' time after the runtime's answer.
    pub duration: Duration,
    /// Billed, whole milliseconds.
    pub billed_ms: u64,
    /// The configured memory.
    pub memory_mb: u32,
    /// The peak so far.
    pub max_memory_mb: u64,
    /// Init, on a cold start.
    pub init: Option<Duration>,
}

/// Something that happened in the environment.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Init began.
    InitStart {
        /// `functionName`
        function_name: String,
        /// `functionVersion`
        function_version: String,
        /// `instanceId`: the log stream's name, as Lambda gives it.
        instance_id: String,
        /// `instanceMaxMemory`, bytes.
        instance_max_memory: u64,
    },
    /// The runtime and the extensions are ready, or init failed.
    InitRuntimeDone {
        /// How it ended.
        status: Status,
    },
    /// Init's figures.
    InitReport {
        /// How it ended.
        status: Status,
        /// How long it took.
        duration: Duration,
    },
    /// A registered extension, at the end of init.
    Extension {
        /// Its name.
        name: String,
        /// Its state (`Ready`).
        state: &'static str,
        /// The events it registered for.
        events: Vec<&'static str>,
    },
    /// An extension subscribed.
    Subscribed {
        /// The extension.
        name: String,
        /// What it asked for.
        types: Types,
    },
    /// An invocation was handed to the runtime.
    Start {
        /// The invocation.
        request_id: String,
        /// The function's version, `$LATEST`.
        version: String,
        /// Its X-Ray trace header, if any.
        trace_id: Option<String>,
        /// The invocation's span id.
        span_id: Option<String>,
    },
    /// The runtime is done with an invocation.
    RuntimeDone {
        /// The invocation.
        request_id: String,
        /// How it ended.
        status: Status,
        /// From the event's handing over to the outcome.
        duration: Duration,
        /// The response's (or error document's) size; the function's log does not show it.
        produced_bytes: Option<u64>,
        /// `responseLatency`, `responseDuration`, when the runtime answered.
        spans: Vec<Span>,
        /// The Logs API's `platform.fault` text, when the runtime crashed.
        fault: Option<String>,
    },
    /// The invocation is over, extensions included.
    Report {
        /// The invocation.
        request_id: String,
        /// How it ended.
        status: Status,
        /// Its figures.
        metrics: ReportMetrics,
        /// `extensionOverhead`.
        spans: Vec<Span>,
    },
    /// Records this subscriber did not get.
    LogsDropped {
        /// Their bytes.
        dropped_bytes: u64,
        /// Their number.
        dropped_records: u64,
        /// Why.
        reason: String,
    },
    /// A line of the function's or an extension's output.
    Line {
        /// Whose.
        source: Source,
        /// The line, without its newline.
        text: String,
    },
}

impl Event {
    /// The subscriber `types` this event belongs to.
    pub fn category(&self) -> Category {
        match self {
            Event::Line {
                source: Source::Function,
                ..
            } => Category::Function,
            Event::Line {
                source: Source::Extension,
                ..
            } => Category::Extension,
            _ => Category::Platform,
        }
    }
}

/// An event and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// When.
    pub time: SystemTime,
    /// What.
    pub event: Event,
}

/// Who an event is rendered for: the API, and whether a Logs API subscriber gets
/// `platform.runtimeDone` (schema `2021-03-18`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audience {
    /// The subscriber's API.
    pub api: Api,
    /// Logs API with schema `2021-03-18`.
    pub logs_runtime_done: bool,
}

impl Stamped {
    /// An event that happens now.
    pub fn now(event: Event) -> Stamped {
        Stamped {
            time: SystemTime::now(),
            event,
        }
    }

    /// The records `audience` gets for this event (none, one, or a few), each one JSON
    /// envelope.
    pub fn render(&self, audience: Audience) -> Vec<Bytes> {
        let mut out = Vec::new();
        self.render_into(audience, &mut one_off_scratch(), &mut out);
        out
    }

    /// [`Stamped::render`] onto `out`, each record written in `scratch` first: one allocation
    /// per record, of its exact size, where the relay keeps `scratch` and `out` (records are
    /// rendered for every invocation, and a subscriber's CPU is the function's).
    pub fn render_into(&self, audience: Audience, scratch: &mut Vec<u8>, out: &mut Vec<Bytes>) {
        let time = Timestamp(self.time);
        macro_rules! put {
            ($kind:expr, $record:expr $(,)?) => {
                out.extend(envelope(scratch, time, $kind, $record))
            };
        }
        let telemetry = audience.api == Api::Telemetry;
        match &self.event {
            Event::InitStart {
                function_name,
                function_version,
                instance_id,
                instance_max_memory,
            } if telemetry => put!(
                "platform.initStart",
                &InitStartRecord {
                    initialization_type: "on-demand",
                    phase: "init",
                    function_name,
                    function_version,
                    instance_id,
                    instance_max_memory: *instance_max_memory,
                },
            ),
            Event::InitRuntimeDone { status } if telemetry => {
                let (status, error_type) = status.parts();
                put!(
                    "platform.initRuntimeDone",
                    &InitRuntimeDoneRecord {
                        initialization_type: "on-demand",
                        phase: "init",
                        status,
                        error_type,
                    },
                );
            }
            Event::InitReport { status, duration } if telemetry => {
                let (status, error_type) = status.parts();
                put!(
                    "platform.initReport",
                    &InitReportRecord {
                        initialization_type: "on-demand",
                        phase: "init",
                        status,
                        error_type,
                        metrics: DurationMetric {
                            duration_ms: millis(*duration),
                        },
                    },
                );
            }
            Event::InitStart { .. } | Event::InitRuntimeDone { .. } | Event::InitReport { .. } => {}
            Event::Extension {
                name,
                state,
                events,
            } => put!(
                "platform.extension",
                &ExtensionRecord {
                    name,
                    state,
                    events,
                },
            ),
            Event::Subscribed { name, types } => put!(
                match audience.api {
                    Api::Telemetry => "platform.telemetrySubscription",
                    Api::Logs => "platform.logsSubscription",
                },
                &SubscriptionRecord {
                    name,
                    state: "Subscribed",
                    types: types.names(),
                },
            ),
            Event::Start {
                request_id,
                version,
                trace_id,
                span_id,
            } => put!(
                "platform.start",
                &StartRecord {
                    request_id,
                    function_arn: None,
                    version,
                    tracing: trace_id
                        .as_deref()
                        .filter(|_| telemetry)
                        .map(|value| Tracing::new(span_id.as_deref(), value)),
                },
            ),
            Event::RuntimeDone {
                request_id,
                status,
                duration,
                produced_bytes,
                spans,
                fault,
            } => {
                if telemetry {
                    let (status, error_type) = status.parts();
                    put!(
                        "platform.runtimeDone",
                        &RuntimeDoneRecord {
                            request_id,
                            status,
                            error_type,
                            metrics: RuntimeDoneMetrics {
                                duration_ms: millis(*duration),
                                produced_bytes: *produced_bytes,
                            },
                            spans: Spans(spans),
                        },
                    );
                    return;
                }
                if audience.logs_runtime_done {
                    put!(
                        "platform.runtimeDone",
                        &LogsRuntimeDoneRecord {
                            request_id,
                            status: status.logs_status(),
                        },
                    );
                }
                if let Some(fault) = fault {
                    put!("platform.fault", fault);
                }
                put!("platform.end", &RequestRecord { request_id });
            }
            Event::Report {
                request_id,
                status,
                metrics,
                spans,
            } => {
                let metrics = ReportMetricsRecord {
                    duration_ms: millis(metrics.duration),
                    billed_duration_ms: metrics.billed_ms,
                    memory_size_mb: metrics.memory_mb,
                    max_memory_used_mb: metrics.max_memory_mb,
                    init_duration_ms: metrics.init.map(millis),
                };
                if telemetry {
                    let (status, error_type) = status.parts();
                    put!(
                        "platform.report",
                        &ReportRecord {
                            request_id,
                            metrics,
                            status,
                            error_type,
                            spans: Spans(spans),
                        },
                    );
                } else {
                    put!(
                        "platform.report",
                        &LogsReportRecord {
                            request_id,
                            metrics,
                        },
                    );
                }
            }
            Event::LogsDropped {
                dropped_bytes,
                dropped_records,
                reason,
            } => put!(
                "platform.logsDropped",
                &LogsDroppedRecord {
                    dropped_bytes: *dropped_bytes,
                    dropped_records: *dropped_records,
                    reason,
                },
            ),
            Event::Line {
                source: Source::Function,
                text,
            } => put!("function", text),
            Event::Line {
                source: Source::Extension,
                text,
            } => put!("extension", text),
        }
    }

    /// The record the function's own log shows for this event under `LogFormat: JSON`: the
    /// Telemetry API's `platform.runtimeDone` and `platform.report`, and a `platform.start`
    /// that names the function (`functionArn`) instead of its trace, as a CloudWatch capture
    /// has it (`lambda-apis-wave2.md` §4.4). Other events have none.
    pub fn render_log(&self, function_arn: &str) -> Option<Bytes> {
        match &self.event {
            Event::Start {
                request_id,
                version,
                ..
            } => envelope(
                &mut one_off_scratch(),
                Timestamp(self.time),
                "platform.start",
                &StartRecord {
                    request_id,
                    function_arn: Some(function_arn),
                    version,
                    tracing: None,
                },
            ),
            Event::RuntimeDone { .. } | Event::Report { .. } => {
                let telemetry = Audience {
                    api: Api::Telemetry,
                    logs_runtime_done: false,
                };
                self.render(telemetry).into_iter().next()
            }
            _ => None,
        }
    }
}

/// A time as records write it, `2022-10-12T00:00:15.064Z`: formatted straight into the JSON.
#[derive(Debug, Clone, Copy)]
struct Timestamp(SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// An event's spans as records list them, each formatted as it is written.
struct Spans<'a>(&'a [Span]);

impl Spans<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Spans<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(SpanRecord::from))
    }
}

/// Milliseconds to the microsecond, as Lambda's records give them (`2599.4`, `549.04`).
fn millis(d: Duration) -> f64 {
    // Whole microseconds in an f64 are exact far beyond any invocation's length.
    d.as_micros() as f64 / 1000.0
}

#[derive(Serialize)]
struct Envelope<'a, R: ?Sized> {
    time: Timestamp,
    #[serde(rename = "type")]
    kind: &'a str,
    record: &'a R,
}

/// A scratch buffer for a render that keeps none (the function's JSON log, a replay), sized
/// for a record rather than grown to one from a few bytes.
fn one_off_scratch() -> Vec<u8> {
    Vec::with_capacity(1024)
}

/// One envelope's JSON, written in `scratch` (which keeps its capacity from record to record)
/// and copied out at its size. Records are plain structs and strings, which always
/// serialise; should one not, the record is left out rather than the host failing.
fn envelope<R: Serialize + ?Sized>(
    scratch: &mut Vec<u8>,
    time: Timestamp,
    kind: &str,
    record: &R,
) -> Option<Bytes> {
    scratch.clear();
    serde_json::to_writer(&mut *scratch, &Envelope { time, kind, record }).ok()?;
    Some(Bytes::copy_from_slice(scratch))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitStartRecord<'a> {
    initialization_type: &'a str,
    phase: &'a str,
    function_name: &'a str,
    function_version: &'a str,
    instance_id: &'a str,
    instance_max_memory: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitRuntimeDoneRecord<'a> {
    initialization_type: &'a str,
    phase: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitReportRecord<'a> {
    initialization_type: &'a str,
    phase: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    metrics: DurationMetric,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DurationMetric {
    duration_ms: f64,
}

#[derive(Serialize)]
struct ExtensionRecord<'a> {
    name: &'a str,
    state: &'a str,
    events: &'a [&'static str],
}

#[derive(Serialize)]
struct SubscriptionRecord<'a> {
    name: &'a str,
    state: &'a str,
    types: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StartRecord<'a> {
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_arn: Option<&'a str>,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracing: Option<Tracing<'a>>,
}

/// Lambda's TraceContext.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tracing<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
    value: &'a str,
}

impl<'a> Tracing<'a> {
    fn new(span_id: Option<&'a str>, value: &'a str) -> Tracing<'a> {
        Tracing {
            span_id,
            kind: "X-Amzn-Trace-Id",
            value,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeDoneRecord<'a> {
    request_id: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    metrics: RuntimeDoneMetrics,
    #[serde(skip_serializing_if = "Spans::is_empty")]
    spans: Spans<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeDoneMetrics {
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    produced_bytes: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogsRuntimeDoneRecord<'a> {
    request_id: &'a str,
    status: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestRecord<'a> {
    request_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanRecord {
    name: &'static str,
    start: Timestamp,
    duration_ms: f64,
}

impl From<&Span> for SpanRecord {
    fn from(span: &Span) -> Self {
        SpanRecord {
            name: span.name,
            start: Timestamp(span.start),
            duration_ms: millis(span.duration),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportMetricsRecord {
    duration_ms: f64,
    billed_duration_ms: u64,
    #[serde(rename = "memorySizeMB")]
    memory_size_mb: u32,
    #[serde(rename = "maxMemoryUsedMB")]
    max_memory_used_mb: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_duration_ms: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportRecord<'a> {
    request_id: &'a str,
    // The metrics before the status, as both of Lambda's captures have them (`lambda-apis-wave2.md`
    // §2.5, §4.4).
    metrics: ReportMetricsRecord,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Spans::is_empty")]
    spans: Spans<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogsReportRecord<'a> {
    request_id: &'a str,
    metrics: ReportMetricsRecord,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogsDroppedRecord<'a> {
    dropped_bytes: u64,
    dropped_records: u64,
    reason: &'a str,
}

#[cfg(test)]
mod tests;
