//! The platform's lines in the function's log format. Text is Lambda's classic lines (`START`,
//! `END`, `REPORT`, `Task timed out`), never filtered. JSON is Lambda's records, the Telemetry
//! API's envelope `{"time","type","record"}` one per line, as CloudWatch shows them for a
//! function with `LogFormat: JSON`, each kept only at or above the function's system log level.
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
//! `Status: timeout`; lamina's text lines keep theirs, unchanged); lamina's other failures carry
//! `"status":"error"` and their `errorType`, as the text `REPORT` has them. A function error (the
//! runtime's `/error`) is `"status":"success"` here, as the text `REPORT` has no status for it
//! (unconfirmed). `runtimeDone`'s `metrics.durationMs` is the runtime's time with the event, as
//! in `REPORT`; its `producedBytes` and `spans` are left out (both optional in the schema).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{PlatformLine, Report};
use crate::config::FunctionSpec;
use crate::config::lambda_env::FUNCTION_VERSION;
use crate::config::logging::{LogFormat, SystemLogLevel};

/// How an environment writes its platform lines: per function, from its logging settings.
#[derive(Debug, Clone, Default)]
pub struct PlatformFormat {
    /// With the JSON format: the records' settings. Text otherwise.
    json: Option<JsonRecords>,
}

#[derive(Debug, Clone)]
struct JsonRecords {
    /// Records below this level are left out.
    level: SystemLogLevel,
    /// `platform.start`'s `functionArn`.
    function_arn: String,
}

impl PlatformFormat {
    /// The format `spec`'s logging settings ask for.
    pub fn of(spec: &FunctionSpec) -> PlatformFormat {
        match spec.logging.format {
            LogFormat::Text => PlatformFormat::default(),
            LogFormat::Json => PlatformFormat::json(&spec.arn, spec.logging.system_level),
        }
    }

    /// Lambda's JSON records for the function `function_arn`, those below `level` left out.
    pub fn json(function_arn: &str, level: SystemLogLevel) -> PlatformFormat {
        PlatformFormat {
            json: Some(JsonRecords {
                level,
                function_arn: function_arn.to_owned(),
            }),
        }
    }

    /// `lines` as this format writes them now, in order; none, one or two per line.
    pub fn lines(&self, lines: &[&PlatformLine<'_>]) -> Vec<String> {
        let Some(json) = &self.json else {
            return lines.iter().map(|line| line.text()).collect();
        };
        let now = SystemTime::now();
        let mut out = Vec::with_capacity(lines.len() + 1);
        for line in lines {
            json.write(line, now, &mut out);
        }
        out
    }
}

impl JsonRecords {
    /// The records of `line` at or above the level, written at `now`, onto `out`.
    fn write(&self, line: &PlatformLine<'_>, now: SystemTime, out: &mut Vec<String>) {
        let keep = |level: SystemLogLevel| level >= self.level;
        let time = humantime::format_rfc3339_millis(now).to_string();
        match line {
            PlatformLine::Start { request_id } if keep(SystemLogLevel::Info) => {
                let record = Start {
                    request_id,
                    function_arn: &self.function_arn,
                    version: FUNCTION_VERSION,
                };
                out.push(envelope(&time, "platform.start", &record));
            }
            PlatformLine::Report(report) => {
                let (status, error_type) = outcome(report);
                if keep(SystemLogLevel::Debug) {
                    let record = RuntimeDone {
                        request_id: report.request_id,
                        status,
                        error_type,
                        metrics: RuntimeDoneMetrics {
                            duration_ms: millis(report.duration),
                        },
                    };
                    out.push(envelope(&time, "platform.runtimeDone", &record));
                }
                if keep(SystemLogLevel::Info) {
                    let record = ReportRecord {
                        request_id: report.request_id,
                        metrics: ReportMetrics {
                            duration_ms: millis(report.duration),
                            billed_duration_ms: report.billed_ms(),
                            memory_size_mb: report.memory_mb,
                            max_memory_used_mb: report.max_memory_mb,
                            init_duration_ms: report.init.map(millis),
                        },
                        status,
                        error_type,
                    };
                    out.push(envelope(&time, "platform.report", &record));
                }
            }
            PlatformLine::Start { .. }
            | PlatformLine::End { .. }
            | PlatformLine::Timeout { .. } => {}
        }
    }
}

/// The records' `status` and `errorType` for the invocation `report` is about.
fn outcome<'a>(report: &Report<'a>) -> (&'a str, Option<&'a str>) {
    match report.failure {
        None => ("success", None),
        Some(("timeout", _)) => ("timeout", None),
        Some((status, error_type)) => (status, Some(error_type)),
    }
}

/// Milliseconds to the microsecond, as Lambda's records give them (`1233.96`, `463.512`).
fn millis(d: Duration) -> f64 {
    // Whole microseconds in an f64 are exact far beyond any invocation's length.
    d.as_micros() as f64 / 1000.0
}

/// The envelope of every record: when, which, what.
#[derive(Serialize)]
struct Envelope<'a, R> {
    time: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    record: &'a R,
}

/// One record in its envelope, on one line.
fn envelope<R: Serialize>(time: &str, kind: &'static str, record: &R) -> String {
    let envelope = Envelope { time, kind, record };
    // Plain structs of strings and numbers: serializing them cannot fail.
    serde_json::to_string(&envelope).unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Start<'a> {
    request_id: &'a str,
    function_arn: &'a str,
    version: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeDone<'a> {
    request_id: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
    metrics: RuntimeDoneMetrics,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeDoneMetrics {
    duration_ms: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportRecord<'a> {
    request_id: &'a str,
    metrics: ReportMetrics,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_type: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportMetrics {
    duration_ms: f64,
    billed_duration_ms: u128,
    #[serde(rename = "memorySizeMB")]
    memory_size_mb: u32,
    #[serde(rename = "maxMemoryUsedMB")]
    max_memory_used_mb: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_duration_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{end_line, start_line, timeout_line};
    use serde_json::{Value, json};

    const ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:f";

    fn report(failure: Option<(&'static str, &'static str)>) -> Report<'static> {
        Report {
            request_id: "id",
            duration: Duration::from_micros(1_233_960),
            init: Some(Duration::from_micros(463_512)),
            memory_mb: 256,
            max_memory_mb: 123,
            failure,
        }
    }

    fn parsed(lines: &[String]) -> Vec<Value> {
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn json_records_have_lambdas_shape() {
        let format = PlatformFormat::json(ARN, SystemLogLevel::Debug);
        let r = report(None);
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
        let format = PlatformFormat::json(ARN, SystemLogLevel::Info);
        let failed = report(Some(("error", "Runtime.ExitError")));
        let records = parsed(&format.lines(&[&failed.line()]));
        assert_eq!(records.len(), 1, "runtimeDone is DEBUG");
        assert_eq!(records[0]["record"]["status"], "error");
        assert_eq!(records[0]["record"]["errorType"], "Runtime.ExitError");
        let timed_out = Report {
            init: None,
            ..report(Some(("timeout", "Sandbox.Timedout")))
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
        let r = report(None);
        let kinds = |level| {
            let format = PlatformFormat::json(ARN, level);
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
        let text =
            PlatformFormat::default().lines(&[&start_line("id"), &end_line("id"), &r.line()]);
        assert_eq!(text.len(), 3);
        assert_eq!(text[0], "START RequestId: id Version: $LATEST");
        assert_eq!(text[1], "END RequestId: id");
        assert_eq!(text[2], r.text());
        let timeout =
            PlatformFormat::default().lines(&[&timeout_line("id", Duration::from_secs(3))]);
        assert!(
            timeout[0].ends_with("Z id Task timed out after 3.00 seconds"),
            "{timeout:?}"
        );
    }
}
