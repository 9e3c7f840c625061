//! Records against the examples Lambda's documents captured (`lambda-apis-wave2.md` §2.5), the
//! statuses, and what the Logs API gets instead.

use serde_json::{Value, json};

use super::*;

const TELEMETRY: Audience = Audience {
    api: Api::Telemetry,
    logs_runtime_done: false,
};

fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

fn rendered(time: &str, event: Event, audience: Audience) -> Vec<Value> {
    Stamped {
        time: at(time),
        event,
    }
    .render(audience)
    .iter()
    .map(|b| serde_json::from_slice(b).unwrap())
    .collect()
}

/// `ours` has every field of Lambda's `example` with its value; what ours has beyond it
/// must be one of `extra` (fields newer records carry, or the schema's optional ones).
fn matches_example(ours: &Value, example: &str, extra: &[&str]) {
    let example: Value = serde_json::from_str(example).unwrap();
    assert_eq!(ours["time"], example["time"]);
    assert_eq!(ours["type"], example["type"]);
    let (o, e) = (&ours["record"], &example["record"]);
    match (o.as_object(), e.as_object()) {
        (Some(o), Some(e)) => {
            for (k, v) in e {
                assert_eq!(o.get(k), Some(v), "{k} in {ours}");
            }
            for k in o.keys().filter(|k| !e.contains_key(*k)) {
                assert!(extra.contains(&k.as_str()), "{k} in {ours}");
            }
        }
        _ => assert_eq!(o, e),
    }
}

#[test]
fn records_match_lambdas_captured_examples() {
    let ms = Duration::from_millis;
    let init_start = rendered(
        "2022-10-19T13:52:15.636Z",
        Event::InitStart {
            function_name: "tenner-notifier".into(),
            function_version: "$LATEST".into(),
            instance_id: "2026/10/08/tenner-notifier[$LATEST]22be53a8".into(),
            instance_max_memory: 268_435_456,
        },
        TELEMETRY,
    );
    matches_example(
        &init_start[0],
        r#"{"time":"2022-10-19T13:52:15.636Z","type":"platform.initStart","record":{"initializationType":"on-demand","phase":"init"}}"#,
        &[
            "functionName",
            "functionVersion",
            "instanceId",
            "instanceMaxMemory",
        ],
    );
    assert_eq!(init_start[0]["record"]["instanceMaxMemory"], 268_435_456);
    let done = rendered(
        "2022-10-19T13:52:16.136Z",
        Event::InitRuntimeDone {
            status: Status::Success,
        },
        TELEMETRY,
    );
    matches_example(
        &done[0],
        r#"{"time":"2022-10-19T13:52:16.136Z","type":"platform.initRuntimeDone","record":{"initializationType":"on-demand","status":"success"}}"#,
        &["phase"],
    );
    let ext = rendered(
        "2022-10-19T13:52:16.136Z",
        Event::Extension {
            name: "my-extension".into(),
            state: "Ready",
            events: vec!["SHUTDOWN", "INVOKE"],
        },
        TELEMETRY,
    );
    matches_example(
        &ext[0],
        r#"{"time":"2022-10-19T13:52:16.136Z","type":"platform.extension","record":{"name":"my-extension","state":"Ready","events":["SHUTDOWN","INVOKE"]}}"#,
        &[],
    );
    let report = rendered(
        "2022-10-19T13:52:16.136Z",
        Event::InitReport {
            status: Status::Success,
            duration: ms(500),
        },
        TELEMETRY,
    );
    matches_example(
        &report[0],
        r#"{"time":"2022-10-19T13:52:16.136Z","type":"platform.initReport","record":{"initializationType":"on-demand","metrics":{"durationMs":500.0},"phase":"init"}}"#,
        &["status"],
    );
    let sub = rendered(
        "2022-10-19T13:52:15.667Z",
        Event::Subscribed {
            name: "my-extension".into(),
            types: Types {
                platform: true,
                function: true,
                extension: false,
            },
        },
        TELEMETRY,
    );
    matches_example(
        &sub[0],
        r#"{"time":"2022-10-19T13:52:15.667Z","type":"platform.telemetrySubscription","record":{"name":"my-extension","state":"Subscribed","types":["platform","function"]}}"#,
        &[],
    );
    let id = "459921b5-681c-4a96-beb0-81e0aa586026";
    let start = rendered(
        "2022-10-21T14:05:03.165Z",
        Event::Start {
            request_id: id.into(),
            version: "$LATEST".into(),
            trace_id: Some(
                "Root=1-6352a70e-1e2c502e358361800241fd45;Parent=35465b3a9e2f7c6a;Sampled=1".into(),
            ),
            span_id: Some("24cd7d670fa455f0".into()),
        },
        TELEMETRY,
    );
    matches_example(
        &start[0],
        r#"{"time":"2022-10-21T14:05:03.165Z","type":"platform.start","record":{"requestId":"459921b5-681c-4a96-beb0-81e0aa586026","version":"$LATEST","tracing":{"spanId":"24cd7d670fa455f0","type":"X-Amzn-Trace-Id","value":"Root=1-6352a70e-1e2c502e358361800241fd45;Parent=35465b3a9e2f7c6a;Sampled=1"}}}"#,
        &[],
    );
    let runtime_done = rendered(
        "2022-10-21T14:05:05.764Z",
        Event::RuntimeDone {
            request_id: id.into(),
            status: Status::Success,
            duration: ms(2599),
            produced_bytes: Some(8),
            spans: vec![
                Span {
                    name: "responseLatency",
                    start: at("2022-10-21T14:05:03.165Z"),
                    duration: ms(2598),
                },
                Span {
                    name: "responseDuration",
                    start: at("2022-10-21T14:05:05.763Z"),
                    duration: Duration::ZERO,
                },
            ],
            fault: None,
        },
        TELEMETRY,
    );
    matches_example(
        &runtime_done[0],
        r#"{"time":"2022-10-21T14:05:05.764Z","type":"platform.runtimeDone","record":{"requestId":"459921b5-681c-4a96-beb0-81e0aa586026","status":"success","spans":[{"name":"responseLatency","start":"2022-10-21T14:05:03.165Z","durationMs":2598.0},{"name":"responseDuration","start":"2022-10-21T14:05:05.763Z","durationMs":0.0}],"metrics":{"durationMs":2599.0,"producedBytes":8}}}"#,
        &[],
    );
    let report = rendered(
        "2022-10-21T14:05:05.766Z",
        Event::Report {
            request_id: id.into(),
            status: Status::Success,
            metrics: ReportMetrics {
                duration: Duration::from_micros(2_599_400),
                billed_ms: 2600,
                memory_mb: 128,
                max_memory_mb: 94,
                init: Some(Duration::from_micros(549_040)),
            },
            spans: Vec::new(),
        },
        TELEMETRY,
    );
    matches_example(
        &report[0],
        r#"{"time":"2022-10-21T14:05:05.766Z","type":"platform.report","record":{"requestId":"459921b5-681c-4a96-beb0-81e0aa586026","metrics":{"durationMs":2599.4,"billedDurationMs":2600,"memorySizeMB":128,"maxMemoryUsedMB":94,"initDurationMs":549.04},"status":"success"}}"#,
        &[],
    );
    let dropped = rendered(
        "2022-10-12T00:02:35.000Z",
        Event::LogsDropped {
            dropped_bytes: 12345,
            dropped_records: 123,
            reason:
                "Consumer seems to have fallen behind as it has not acknowledged receipt of logs."
                    .into(),
        },
        TELEMETRY,
    );
    matches_example(
        &dropped[0],
        r#"{"time":"2022-10-12T00:02:35.000Z","type":"platform.logsDropped","record":{"droppedBytes":12345,"droppedRecords":123,"reason":"Consumer seems to have fallen behind as it has not acknowledged receipt of logs."}}"#,
        &[],
    );
    let line = rendered(
        "2022-10-12T00:03:50.000Z",
        Event::Line {
            source: Source::Function,
            text: "[INFO] Hello world, I am a function!".into(),
        },
        TELEMETRY,
    );
    matches_example(
        &line[0],
        r#"{"time":"2022-10-12T00:03:50.000Z","type":"function","record":"[INFO] Hello world, I am a function!"}"#,
        &[],
    );
}

#[test]
fn failures_carry_their_error_type_and_timeouts_none() {
    let report = |status| {
        rendered(
            "2022-10-21T14:05:05.766Z",
            Event::RuntimeDone {
                request_id: "r".into(),
                status,
                duration: Duration::from_millis(3),
                produced_bytes: Some(0),
                spans: Vec::new(),
                fault: None,
            },
            TELEMETRY,
        )[0]["record"]
            .clone()
    };
    let timeout = report(Status::Timeout);
    assert_eq!(timeout["status"], "timeout");
    assert!(timeout.get("errorType").is_none());
    assert!(timeout.get("spans").is_none());
    let error = report(Status::Error("Runtime.ExitError".into()));
    assert_eq!(
        (&error["status"], &error["errorType"]),
        (&json!("error"), &json!("Runtime.ExitError"))
    );
    assert_eq!(
        report(Status::Failure("Sandbox.Failure".into()))["status"],
        "failure"
    );
}

#[test]
fn the_logs_api_gets_its_own_records() {
    let logs = |runtime_done| Audience {
        api: Api::Logs,
        logs_runtime_done: runtime_done,
    };
    let t = "2020-08-20T12:31:32.123Z";
    let init = Event::InitStart {
        function_name: "f".into(),
        function_version: "$LATEST".into(),
        instance_id: "i".into(),
        instance_max_memory: 1,
    };
    assert!(rendered(t, init, logs(true)).is_empty());
    let done = Event::RuntimeDone {
        request_id: "r".into(),
        status: Status::Error("Runtime.ExitError".into()),
        duration: Duration::from_millis(3),
        produced_bytes: Some(0),
        spans: Vec::new(),
        fault: Some("RequestId: r Process exited before completing request".into()),
    };
    let types = |records: Vec<Value>| {
        records
            .iter()
            .map(|r| r["type"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        types(rendered(t, done.clone(), logs(false))),
        ["platform.fault", "platform.end"]
    );
    let with_done = rendered(t, done, logs(true));
    assert_eq!(
        types(with_done.clone()),
        ["platform.runtimeDone", "platform.fault", "platform.end"]
    );
    assert_eq!(
        with_done[0]["record"],
        json!({"requestId": "r", "status": "failure"})
    );
    assert_eq!(
        with_done[1]["record"],
        "RequestId: r Process exited before completing request"
    );
    assert_eq!(with_done[2]["record"], json!({"requestId": "r"}));
    let sub = rendered(
        t,
        Event::Subscribed {
            name: "e".into(),
            types: Types {
                platform: true,
                function: false,
                extension: false,
            },
        },
        logs(false),
    );
    assert_eq!(sub[0]["type"], "platform.logsSubscription");
    let report = rendered(
        t,
        Event::Report {
            request_id: "r".into(),
            status: Status::Success,
            metrics: ReportMetrics {
                duration: Duration::from_millis(2),
                billed_ms: 2,
                memory_mb: 128,
                max_memory_mb: 30,
                init: None,
            },
            spans: Vec::new(),
        },
        logs(false),
    );
    assert_eq!(
        report[0]["record"],
        json!({"requestId": "r", "metrics": {"durationMs": 2.0, "billedDurationMs": 2, "memorySizeMB": 128, "maxMemoryUsedMB": 30}})
    );
}
