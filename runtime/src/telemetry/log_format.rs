//! The platform's lines in the function's log format ([`platform_format`]). Text is Lambda's
//! classic lines (`START`, `END`, `REPORT`, `Task timed out`), never filtered, and the log's
//! own ([`TextFormat`]). JSON is Lambda's records, the Telemetry
//! API's envelope `{"time","type","record"}` one per line, as CloudWatch shows them for a
//! function with `LogFormat: JSON`, each kept only at or above the function's system log level.
//! The records are telemetry's own, rendered from the same events with the same status
//! (`records.rs`, [`Stamped::render_log`]): a subscriber and the log never tell one
//! invocation two ways. That is why this format lives here and reaches the log as a
//! [`PlatformFormat`] the environment hands it: the log knows no records.
//!
//! What each line becomes in JSON, and its level (which level Lambda gives each record is
//! **unconfirmed**: no AWS page lists it; the choices below fit the captures cited):
//!
//! | line | JSON | level |
//! |---|---|---|
//! | `START` | `platform.start` `{requestId, functionArn, version}` | INFO |
//! | `END` | nothing: a JSON log has no `END` (observed in a CloudWatch capture, 2026) | |
//! | `REPORT` | `platform.runtimeDone` `{requestId, status, errorType?, metrics {durationMs}}` | DEBUG |
//! |  | then `platform.report` `{requestId, metrics {durationMs, billedDurationMs, memorySizeMB, maxMemoryUsedMB, initDurationMs?}, status, errorType?}` | INFO |
//! | `Task timed out` | nothing: the records say `"status":"timeout"` | |
//!
//! `platform.start` and `platform.report` are the only records of a CloudWatch capture of a
//! JSON-format function (2026; `lambda-apis-wave2.md` §4.4), presumably at the default level,
//! INFO; `platform.runtimeDone` is missing there but present in other JSON logs (fixtures of
//! aws-lambda-power-tuning, 2024), hence DEBUG. Lambda's telemetry for a timeout (a capture of
//! 2026) is `runtimeDone` and `report` with `"status":"timeout"` and no `errorType`, and
//! Lambda's text logs of 2026 no longer have a `Task timed out` line either (its REPORT says
//! `Status: timeout`; lamina's text lines keep theirs, unchanged). Every other status is the
//! records' ([`Status`](crate::invoke::Status)): `error` with its `errorType` for the function's own error and the
//! runtime's failures, `failure` for the platform's (`Sandbox.*`). `runtimeDone`'s
//! `metrics.durationMs` is the runtime's time with the event, as in `REPORT`; its
//! `producedBytes` and `spans` are left out (both optional in the schema).

use std::time::SystemTime;

use std::sync::Arc;

use super::records::{Event, ReportMetrics, Stamped};
use crate::config::FunctionSpec;
use crate::config::lambda_env::FUNCTION_VERSION;
use crate::config::logging::{LogFormat, SystemLogLevel};
use crate::logs::{PlatformFormat, PlatformLine, Report, TextFormat};

/// How the environment of `spec` writes its platform lines, from its logging settings.
pub fn platform_format(spec: &FunctionSpec) -> Arc<dyn PlatformFormat> {
    match spec.logging.format {
        LogFormat::Text => Arc::new(TextFormat),
        LogFormat::Json => Arc::new(JsonRecords::new(&spec.arn, spec.logging.system_level)),
    }
}

/// Lambda's JSON records for one function.
#[derive(Debug, Clone)]
struct JsonRecords {
    /// Records below this level are left out.
    level: SystemLogLevel,
    /// `platform.start`'s `functionArn`.
    function_arn: String,
}

impl PlatformFormat for JsonRecords {
    fn lines(&self, lines: &[&PlatformLine<'_>]) -> Vec<String> {
        let now = SystemTime::now();
        let mut out = Vec::with_capacity(lines.len() + 1);
        for line in lines {
            self.write(line, now, &mut out);
        }
        out
    }
}

impl JsonRecords {
    /// The records of the function `function_arn`, those below `level` left out.
    fn new(function_arn: &str, level: SystemLogLevel) -> JsonRecords {
        JsonRecords {
            level,
            function_arn: function_arn.to_owned(),
        }
    }

    /// The records of `line` at or above the level, written at `now`, onto `out`.
    fn write(&self, line: &PlatformLine<'_>, now: SystemTime, out: &mut Vec<String>) {
        let keep = |level: SystemLogLevel| level >= self.level;
        let mut put = |event: Event| {
            let record = Stamped { time: now, event }.render_log(&self.function_arn);
            // Records are JSON, which is UTF-8; a record's bytes are its own, so they become
            // the line without a copy.
            out.extend(record.and_then(|r| String::from_utf8(Vec::from(r)).ok()));
        };
        match line {
            PlatformLine::Start { request_id } if keep(SystemLogLevel::Info) => put(Event::Start {
                request_id: (*request_id).to_owned(),
                version: FUNCTION_VERSION.to_owned(),
                trace_id: None,
                span_id: None,
            }),
            PlatformLine::Report(report) => {
                if keep(SystemLogLevel::Debug) {
                    put(Event::RuntimeDone {
                        request_id: report.request_id.to_owned(),
                        status: report.status.clone(),
                        duration: report.duration,
                        produced_bytes: None,
                        spans: Vec::new(),
                        fault: None,
                    });
                }
                if keep(SystemLogLevel::Info) {
                    put(Event::Report {
                        request_id: report.request_id.to_owned(),
                        status: report.status.clone(),
                        metrics: metrics(report),
                        spans: Vec::new(),
                    });
                }
            }
            PlatformLine::Start { .. }
            | PlatformLine::End { .. }
            | PlatformLine::Timeout { .. } => {}
        }
    }
}

/// `platform.report`'s metrics from the `REPORT` line's facts.
fn metrics(report: &Report<'_>) -> ReportMetrics {
    ReportMetrics {
        duration: report.duration,
        billed_ms: report.billed_ms(),
        memory_mb: report.memory_mb,
        max_memory_mb: report.max_memory_mb,
        init: report.init,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use serde_json::{Value, json};

    use super::*;
    use crate::error::{ExitStatus, Failure};
    use crate::invoke::Status;
    use crate::invoke::{FunctionError, InvokeOutcome};
    use crate::logs::{end_line, start_line, timeout_line};

    const ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:f";

    fn report(status: Status, failure: Option<(&'static str, &'static str)>) -> Report<'static> {
        Report {
            request_id: "id",
            duration: Duration::from_micros(1_233_960),
            init: Some(Duration::from_micros(463_512)),
            memory_mb: 256,
            max_memory_mb: 123,
            status,
            failure,
        }
    }

    /// The `REPORT` facts of an invocation that ended with `outcome`, as the environment
    /// gives them.
    fn report_of(outcome: &InvokeOutcome) -> Report<'static> {
        let failure = match outcome {
            InvokeOutcome::Failure(f) => Some((f.report_status(), f.error_type())),
            _ => None,
        };
        report(Status::of(outcome), failure)
    }

    fn parsed(lines: &[String]) -> Vec<Value> {
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn json_records_have_lambdas_shape() {
        let format = JsonRecords::new(ARN, SystemLogLevel::Debug);
        let r = report(Status::Success, None);
        let lines = format.lines(&[&start_line("id"), &end_line("id"), &r.line()]);
        // No END; runtimeDone before report, as Lambda writes them.
        let records = parsed(&lines);
        assert_eq!(records.len(), 3, "{lines:?}");
        let time = records[0]["time"].as_str().unwrap();
        assert!(
            time.len() == "2026-10-08T07:30:28.235Z".len() && time.ends_with('Z'),
            "{time}"
        );
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        assert_eq!(records[0]["type"], "platform.start");
        assert_eq!(
            records[0]["record"],
            json!({"requestId": "id", "functionArn": ARN, "version": "$LATEST"})
        );
        assert_eq!(records[1]["type"], "platform.runtimeDone");
        assert_eq!(
            records[1]["record"],
            json!({"requestId": "id", "status": "success", "metrics": {"durationMs": 1233.96}})
        );
        assert_eq!(records[2]["type"], "platform.report");
        assert_eq!(
            records[2]["record"],
            json!({
                "requestId": "id",
                "metrics": {
                    "durationMs": 1233.96,
                    "billedDurationMs": 1698,
                    "memorySizeMB": 256,
                    "maxMemoryUsedMB": 123,
                    "initDurationMs": 463.512
                },
                "status": "success"
            })
        );
        // The envelope's keys in Lambda's order, each record on one line.
        assert!(lines[0].starts_with(r#"{"time":""#), "{}", lines[0]);
        assert!(lines[0].contains(r#"Z","type":"platform.start","record":{"requestId":"id","#));
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn failures_carry_status_and_error_type_and_a_timeout_has_no_line_of_its_own() {
        let format = JsonRecords::new(ARN, SystemLogLevel::Info);
        let failed = report_of(&InvokeOutcome::Failure(Failure::Exited(ExitStatus::Code(
            1,
        ))));
        let records = parsed(&format.lines(&[&failed.line()]));
        assert_eq!(records.len(), 1, "runtimeDone is DEBUG");
        assert_eq!(records[0]["record"]["status"], "error");
        assert_eq!(records[0]["record"]["errorType"], "Runtime.ExitError");
        let timed_out = Report {
            init: None,
            ..report_of(&InvokeOutcome::Failure(Failure::Timeout(
                Duration::from_secs(3),
            )))
        };
        let lines = format.lines(&[
            &timeout_line("id", Duration::from_secs(3)),
            &end_line("id"),
            &timed_out.line(),
        ]);
        let records = parsed(&lines);
        assert_eq!(records.len(), 1, "{lines:?}");
        assert_eq!(records[0]["type"], "platform.report");
        assert_eq!(records[0]["record"]["status"], "timeout");
        assert!(records[0]["record"].get("errorType").is_none());
        assert!(
            records[0]["record"]["metrics"]
                .get("initDurationMs")
                .is_none()
        );
    }

    #[test]
    fn the_system_level_filters_records_and_text_is_never_filtered() {
        let r = report(Status::Success, None);
        let kinds = |level| {
            let format = JsonRecords::new(ARN, level);
            parsed(&format.lines(&[&start_line("id"), &r.line()]))
                .iter()
                .map(|v| v["type"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(SystemLogLevel::Debug),
            ["platform.start", "platform.runtimeDone", "platform.report"]
        );
        assert_eq!(
            kinds(SystemLogLevel::Info),
            ["platform.start", "platform.report"]
        );
        assert!(kinds(SystemLogLevel::Warn).is_empty());
        let text = TextFormat.lines(&[&start_line("id"), &end_line("id"), &r.line()]);
        assert_eq!(text.len(), 3);
        assert_eq!(text[0], "START RequestId: id Version: $LATEST");
        assert_eq!(text[1], "END RequestId: id");
        assert_eq!(text[2], r.text());
        let timeout = TextFormat.lines(&[&timeout_line("id", Duration::from_secs(3))]);
        assert!(
            timeout[0].ends_with("Z id Task timed out after 3.00 seconds"),
            "{timeout:?}"
        );
    }

    #[test]
    fn the_log_and_telemetry_tell_an_outcome_the_same_way() {
        let function_error = InvokeOutcome::FunctionError(FunctionError::from_runtime(
            Some("Function.Oops"),
            Bytes::from_static(br#"{"errorMessage":"oops"}"#),
        ));
        let cases = [
            (InvokeOutcome::Response(Bytes::new()), "success", None),
            (function_error, "error", Some("Function.Oops")),
            (
                InvokeOutcome::Failure(Failure::Exited(ExitStatus::Signal(9))),
                "error",
                Some("Runtime.ExitError"),
            ),
            (
                InvokeOutcome::Failure(Failure::Sandbox("gone".into())),
                "failure",
                Some("Sandbox.Failure"),
            ),
            (
                InvokeOutcome::Failure(Failure::Timeout(Duration::from_secs(3))),
                "timeout",
                None,
            ),
        ];
        let format = JsonRecords::new(ARN, SystemLogLevel::Debug);
        for (outcome, status, error_type) in cases {
            let r = report_of(&outcome);
            let records = parsed(&format.lines(&[&r.line()]));
            assert_eq!(records.len(), 2);
            for record in &records {
                let record = &record["record"];
                assert_eq!(record["status"], status, "{record}");
                assert_eq!(record["errorType"].as_str(), error_type, "{record}");
            }
        }
    }
}
