//! The Telemetry API and the Logs API as an extension written against AWS's documents uses
//! them (`--sandbox process`): a Python extension in a layer registers, starts an HTTP
//! listener on `0.0.0.0`, subscribes with destination `http://sandbox.localdomain:PORT`, and
//! writes every record it is sent to a file. The tests read that file: the records of a cold
//! invocation, the Logs API's, Lambda's errors for bad or late subscriptions, a listener that
//! does not answer (records are dropped and told, invocations are not held up), and a timeout.
//!
//! Two cases run under both native backends (`process` and `jail`), with a second extension
//! that prints what it gets (a jailed extension cannot write the host's files): a subscriber
//! with a TCP destination reads the records as newline-delimited JSON on one kept connection,
//! and a subscription request without a known `Lambda-Extension-Identifier` gets Lambda's 403
//! while the environment goes on serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::server::{Server, header, json_of};

/// The extension. Its environment (the function's) steers it: `SUBSCRIBE_API` (`telemetry`
/// or `logs`), `PROBES` (a JSON list of `[method, path, body, send_identifier]` calls made
/// after subscribing, each answer written to `$RECORD.answers`), `LATE_PROBE` (subscribe again
/// at each INVOKE, after init), `HANG_UNTIL` (the listener holds every request until this
/// file exists).
const EXTENSION: &str = r#"#!/usr/bin/env python3
import json, os, sys, threading, time, urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"]
NAME = os.path.basename(__file__)
RECORD = os.environ["RECORD"]
LOCK = threading.Lock()

def call(method, path, body=None, headers=None):
    data = None if body is None else body.encode()
    request = urllib.request.Request(API + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, answer.headers, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()

def append(path, lines):
    with LOCK, open(path, "a") as f:
        for line in lines:
            f.write(line + "\n")

class Listener(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        hang = os.environ.get("HANG_UNTIL")
        while hang and not os.path.exists(hang):
            time.sleep(0.05)
        append(RECORD, [json.dumps(r) for r in json.loads(body)])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("0.0.0.0", 0), Listener)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]

_, headers, _ = call("POST", "/2020-01-01/extension/register",
                     json.dumps({"events": ["INVOKE", "SHUTDOWN"]}), {"Lambda-Extension-Name": NAME})
ID = headers["Lambda-Extension-Identifier"]
with_id = {"Lambda-Extension-Identifier": ID, "Content-Type": "application/json"}
destination = {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/records"}
types = ["platform", "function", "extension"]
if os.environ.get("SUBSCRIBE_API") == "logs":
    path = "/2020-08-15/logs"
    subscription = {"schemaVersion": "2021-03-18", "types": types, "destination": destination,
                    "buffering": {"timeoutMs": 100}}
else:
    path = "/2022-07-01/telemetry"
    subscription = {"schemaVersion": "2022-12-13", "types": types, "destination": destination,
                    "buffering": {"timeoutMs": 100}}
status, _, text = call("PUT", path, json.dumps(subscription), with_id)
answers = [json.dumps({"probe": "subscribe", "status": status, "body": text})]
for method, probe_path, body, send_id in json.loads(os.environ.get("PROBES", "[]")):
    status, _, text = call(method, probe_path, body, with_id if send_id else {})
    answers.append(json.dumps({"probe": [method, probe_path], "status": status, "body": text}))
append(RECORD + ".answers", answers)
print(f"{NAME} subscribed on port {port}", flush=True)

while True:
    _, _, text = call("GET", "/2020-01-01/extension/event/next", None, with_id)
    event = json.loads(text)
    if event["eventType"] == "SHUTDOWN":
        sys.exit(0)
    print(f"extension saw INVOKE {event['requestId']}", flush=True)
    if os.environ.get("LATE_PROBE"):
        status, _, text = call("PUT", path, json.dumps(subscription), with_id)
        append(RECORD + ".answers", [json.dumps({"probe": "late", "status": status, "body": text})])
"#;

/// The function: prints `lines` lines, sleeps `sleep` seconds, returns its request id.
const HANDLER: &str = r#"import time
def handler(event, context):
    for i in range(event.get('lines', 1)):
        print(f'handler line {i} of {context.aws_request_id}')
    time.sleep(event.get('sleep', 0))
    return {'id': context.aws_request_id}
"#;

/// A project serving the function `f` (Python, [`HANDLER`]) with a layer holding
/// [`EXTENSION`] as `extensions/telemetry-recorder`; `env` is more of the function's
/// environment (`, KEY = "value"`), `extra` more of its table. The record file lives outside
/// the project, which a stopped server's directory takes with it.
fn project(env: &str, extra: &str) -> (TempDir, TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("f")).unwrap();
    std::fs::write(root.join("f/app.py"), HANDLER).unwrap();
    let ext = root.join("layer/extensions/telemetry-recorder");
    std::fs::create_dir_all(ext.parent().unwrap()).unwrap();
    std::fs::write(&ext, EXTENSION).unwrap();
    std::fs::set_permissions(&ext, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let records = tempfile::tempdir().unwrap();
    let record = records.path().join("records.jsonl");
    std::fs::write(
        root.join("lamina.toml"),
        format!(
            "[functions.f]\ncode = \"f\"\nlayers = [\"layer\"]\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
             environment = {{ RECORD = {:?}{env} }}\n{extra}\n",
            record.display().to_string()
        ),
    )
    .unwrap();
    (dir, records, record)
}

/// The complete records in `path`: the recorder may be mid-write, so a last
/// line without its newline is not a record yet.
fn lines_of(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Waits until `found` holds for the records received so far; returns them.
fn wait_records(record: &Path, server: &Server, found: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = lines_of(record);
        if found(&records) {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "records so far:\n{}\n{}",
            records
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The index of the first record of `kind` (whose record matches `pick`).
fn position(records: &[Value], kind: &str, pick: impl Fn(&Value) -> bool) -> usize {
    records
        .iter()
        .position(|r| r["type"] == kind && pick(&r["record"]))
        .unwrap_or_else(|| panic!("no {kind} in {records:#?}"))
}

fn is_report_of(id: &str) -> impl Fn(&[Value]) -> bool + '_ {
    move |records| {
        records
            .iter()
            .any(|r| r["type"] == "platform.report" && r["record"]["requestId"] == id)
    }
}

/// Invokes `f` with `payload`; a 429 while the one environment's extension finishes is
/// tried again, as the SDKs do.
async fn invoke(server: &Server, payload: &str) -> http::Response<bytes::Bytes> {
    server.invoke_when_free("f", payload.to_owned()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_invocation_as_a_telemetry_subscriber_sees_it() {
    let (dir, _records, record) = project("", "memory = 256\n");
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let r = invoke(&server, r#"{"lines": 2}"#).await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let id = json_of(&r)["id"].as_str().unwrap().to_owned();
    let records = wait_records(&record, &server, is_report_of(&id));
    for r in &records {
        assert!(
            r["time"].as_str().unwrap().ends_with('Z') && r["time"].as_str().unwrap().len() == 24,
            "{r}"
        );
    }
    let any = |_: &Value| true;
    let init_start = position(&records, "platform.initStart", any);
    let subscribed = position(&records, "platform.telemetrySubscription", any);
    let init_done = position(&records, "platform.initRuntimeDone", any);
    let extension = position(&records, "platform.extension", any);
    let init_report = position(&records, "platform.initReport", any);
    let start = position(&records, "platform.start", |r| {
        r["requestId"] == id.as_str()
    });
    let line0 = position(&records, "function", |r| {
        *r == json!(format!("handler line 0 of {id}"))
    });
    let line1 = position(&records, "function", |r| {
        *r == json!(format!("handler line 1 of {id}"))
    });
    let done = position(&records, "platform.runtimeDone", |r| {
        r["requestId"] == id.as_str()
    });
    let report = position(&records, "platform.report", |r| {
        r["requestId"] == id.as_str()
    });
    let seen = position(&records, "extension", |r| {
        *r == json!(format!("extension saw INVOKE {id}"))
    });
    assert!(
        init_start < subscribed
            && subscribed < init_done
            && init_done < extension
            && extension < init_report
            && init_report < start
            && start < line0
            && line0 < line1
            && line1 < done
            && done < report
            && start < seen,
        "{records:#?}"
    );
    let record_of = |i: usize| &records[i]["record"];
    let init = record_of(init_start);
    assert_eq!(init["initializationType"], "on-demand");
    assert_eq!(init["phase"], "init");
    assert_eq!(init["functionName"], "f");
    assert_eq!(init["functionVersion"], "$LATEST");
    assert_eq!(init["instanceMaxMemory"], 268_435_456);
    assert!(init["instanceId"].as_str().unwrap().contains("[$LATEST]"));
    assert_eq!(
        record_of(subscribed),
        &json!({"name": "telemetry-recorder", "state": "Subscribed", "types": ["platform", "function", "extension"]})
    );
    assert_eq!(record_of(init_done)["status"], "success");
    assert_eq!(
        record_of(extension),
        &json!({"name": "telemetry-recorder", "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]})
    );
    assert!(
        record_of(init_report)["metrics"]["durationMs"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(record_of(start)["version"], "$LATEST");
    assert_eq!(record_of(start)["tracing"]["type"], "X-Amzn-Trace-Id");
    let done = record_of(done);
    assert_eq!(done["status"], "success");
    assert_eq!(
        done["metrics"]["producedBytes"].as_u64().unwrap() as usize,
        r.body().len()
    );
    let spans: Vec<&Value> = done["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["name"])
        .collect();
    assert_eq!(
        spans,
        [&json!("responseLatency"), &json!("responseDuration")]
    );
    let report = record_of(report);
    assert_eq!(report["status"], "success");
    let metrics = &report["metrics"];
    assert_eq!(metrics["memorySizeMB"], 256);
    assert!(metrics["billedDurationMs"].as_u64().unwrap() >= 1);
    assert!(metrics["maxMemoryUsedMB"].as_u64().unwrap() > 0);
    assert!(
        metrics["initDurationMs"].as_f64().unwrap() > 0.0,
        "cold start: {report}"
    );
    assert_eq!(report["spans"][0]["name"], "extensionOverhead");
    // The second invocation is warm: no init duration.
    let r = invoke(&server, "{}").await;
    let second = json_of(&r)["id"].as_str().unwrap().to_owned();
    let records = wait_records(&record, &server, is_report_of(&second));
    let report = &records[position(&records, "platform.report", |r| {
        r["requestId"] == second.as_str()
    })]["record"];
    assert!(
        report["metrics"].get("initDurationMs").is_none(),
        "{report}"
    );
    let (ok, logs) = server.stop();
    assert!(ok, "{logs}");
}

/// A custom runtime that answers in three chunks, 200 ms apart, after the request's head.
const TRICKLING_BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import http.client, json, os, time
API = os.environ["AWS_LAMBDA_RUNTIME_API"]
while True:
    c = http.client.HTTPConnection(API)
    c.request("GET", "/2018-06-01/runtime/invocation/next")
    r = c.getresponse()
    r.read()
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    c.putrequest("POST", f"/2018-06-01/runtime/invocation/{rid}/response")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    for part in [b'{"id": ', json.dumps(rid).encode(), b"}"]:
        c.send(b"%x\r\n%s\r\n" % (len(part), part))
        time.sleep(0.2)
    c.send(b"0\r\n\r\n")
    c.getresponse().read()
    c.close()
"#;

/// `platform.runtimeDone`'s spans split the runtime's time where Lambda does: a body that
/// takes 600 ms to arrive is mostly `responseDuration`, not `responseLatency`, and the second span
/// starts where the first ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_response_sent_slowly_is_told_as_response_duration() {
    let (dir, _records, record) = project("", "");
    let root = dir.path();
    let bootstrap = root.join("f/bootstrap");
    std::fs::write(&bootstrap, TRICKLING_BOOTSTRAP).unwrap();
    std::fs::set_permissions(
        &bootstrap,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        root.join("lamina.toml"),
        format!(
            "[functions.f]\ncode = \"f\"\nlayers = [\"layer\"]\nenvironment = {{ RECORD = {:?} }}\n",
            record.display().to_string()
        ),
    )
    .unwrap();
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let r = invoke(&server, "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let id = json_of(&r)["id"].as_str().unwrap().to_owned();
    let records = wait_records(&record, &server, is_report_of(&id));
    let done = &records[position(&records, "platform.runtimeDone", |r| {
        r["requestId"] == id.as_str()
    })]["record"];
    let spans = done["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2, "{done}");
    let (latency, duration) = (&spans[0], &spans[1]);
    assert_eq!(latency["name"], "responseLatency", "{done}");
    assert_eq!(duration["name"], "responseDuration", "{done}");
    let ms = |span: &Value| span["durationMs"].as_f64().unwrap();
    // The body took 600 ms; a loaded machine may read its head late, never its end early.
    assert!(ms(duration) >= 300.0, "the body took 600 ms: {done}");
    assert!(ms(latency) < ms(duration), "{done}");
    let at = |span: &Value| {
        let time = span["start"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(time)
            .unwrap_or_else(|e| panic!("{e}: {time}"))
            .timestamp_millis() as f64
    };
    assert!(
        (at(latency) + ms(latency) - at(duration)).abs() <= 2.0,
        "responseDuration starts where responseLatency ends: {done}"
    );
    let (ok, logs) = server.stop();
    assert!(ok, "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_logs_api_subscriber_gets_its_own_records() {
    let (dir, _records, record) = project(", SUBSCRIBE_API = \"logs\"", "");
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let r = invoke(&server, "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let id = json_of(&r)["id"].as_str().unwrap().to_owned();
    let records = wait_records(&record, &server, is_report_of(&id));
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .filter(|t| t.starts_with("platform."))
        .collect();
    assert_eq!(
        kinds,
        [
            "platform.logsSubscription",
            "platform.extension",
            "platform.start",
            "platform.runtimeDone",
            "platform.end",
            "platform.report"
        ],
        "{records:#?}"
    );
    let of = |kind: &str| &records[position(&records, kind, |_| true)]["record"];
    assert_eq!(
        of("platform.runtimeDone"),
        &json!({"requestId": id, "status": "success"})
    );
    assert_eq!(of("platform.end"), &json!({"requestId": id}));
    let report = of("platform.report");
    assert!(report.get("status").is_none(), "{report}");
    assert!(report["metrics"]["billedDurationMs"].as_u64().is_some());
    position(&records, "function", |r| {
        *r == json!(format!("handler line 0 of {id}"))
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_and_late_subscriptions_get_lambdas_errors() {
    let telemetry_bad = json!({"schemaVersion": "2022-12-13", "types": [],
        "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain"}})
    .to_string();
    let logs_bad = json!({"types": ["platform"], "buffering": {"maxItems": 10},
        "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:1234"}})
    .to_string();
    let logs_good = json!({"types": ["platform"],
        "destination": {"protocol": "TCP", "port": 4000}})
    .to_string();
    let probes = json!([
        ["PUT", "/2022-07-01/telemetry", telemetry_bad, true],
        ["PUT", "/2020-08-15/logs", logs_bad, true],
        ["PUT", "/2022-07-01/telemetry", "{}", false],
        ["GET", "/2022-07-01/telemetry", null, true],
        ["PUT", "/2020-08-15/logs", logs_good, true],
    ]);
    let env = format!(", PROBES = {:?}, LATE_PROBE = \"1\"", probes.to_string());
    let (dir, _records, record) = project(&env, "");
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let r = invoke(&server, "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let answers_file = PathBuf::from(format!("{}.answers", record.display()));
    let answers = wait_records(&answers_file, &server, |a| {
        a.iter().any(|a| a["probe"] == "late")
    });
    let answer = |i: usize| {
        let a = &answers[i];
        let body: Value = serde_json::from_str(a["body"].as_str().unwrap()).unwrap_or(Value::Null);
        (a["status"].as_u64().unwrap(), body)
    };
    // The subscription itself: 200 and the JSON string "OK".
    assert_eq!(answer(0), (200, json!("OK")));
    assert_eq!(
        answer(1),
        (
            400,
            json!({"errorType": "ValidationError", "errorMessage": "URI port is not provided; types should not be empty"})
        )
    );
    let (status, body) = answer(2);
    assert_eq!(
        (status, &body["errorType"]),
        (400, &json!("Logs.ValidationError"))
    );
    assert_eq!(
        body["errorMessage"],
        "buffering.maxItems must be an integer from 1000 to 10000"
    );
    let (status, body) = answer(3);
    assert_eq!(
        (status, &body["errorType"]),
        (403, &json!("Extension.MissingExtensionIdentifier"))
    );
    assert_eq!(answer(4).0, 405);
    let (status, body) = answer(5);
    assert_eq!(
        (status, &body["errorType"]),
        (403, &json!("Logs.SubscriptionConflict"))
    );
    let late = answers.iter().find(|a| a["probe"] == "late").unwrap();
    assert_eq!(late["status"], 403);
    let body: Value = serde_json::from_str(late["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"errorType": "Telemetry.SubscriptionClosed", "errorMessage": "Telemetry API subscription is closed"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_that_does_not_answer_costs_records_never_the_invocations_time() {
    let release = tempfile::tempdir().unwrap();
    let release = release.path().join("release");
    let env = format!(", HANG_UNTIL = {:?}", release.display().to_string());
    let (dir, _records, record) = project(&env, "timeout = 10\n");
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    // Each invocation prints 4,000 lines (some 500 KB of records): five of them are far more
    // than the subscriber's buffer (two batches of 262,144 bytes) while its listener holds the
    // first request.
    let mut ids = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let r = invoke(&server, r#"{"lines": 4000}"#).await;
        assert_eq!(r.status(), 200, "{}", server.logs());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the invocation waited for telemetry: {:?}",
            started.elapsed()
        );
        ids.push(json_of(&r)["id"].as_str().unwrap().to_owned());
    }
    assert!(
        lines_of(&record).is_empty(),
        "the listener answered nothing yet"
    );
    std::fs::write(&release, "").unwrap();
    let records = wait_records(&record, &server, |records| {
        records.iter().any(|r| r["type"] == "platform.logsDropped")
    });
    let told = &records[position(&records, "platform.logsDropped", |_| true)]["record"];
    assert!(told["droppedRecords"].as_u64().unwrap() > 0, "{told}");
    assert!(told["droppedBytes"].as_u64().unwrap() > 0, "{told}");
    assert_eq!(
        told["reason"],
        "Some logs were dropped because the downstream consumer is slower than the logs production rate"
    );
    // Once the backlog has gone out, the subscriber is whole again.
    let mut count = 0;
    while count != lines_of(&record).len() {
        count = lines_of(&record).len();
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = invoke(&server, "{}").await;
    assert_eq!(r.status(), 200);
    let last = json_of(&r)["id"].as_str().unwrap().to_owned();
    let records = wait_records(&record, &server, is_report_of(&last));
    let printed = 5 * 4000 + 1;
    let delivered = records.iter().filter(|r| r["type"] == "function").count();
    let dropped: u64 = records
        .iter()
        .filter(|r| r["type"] == "platform.logsDropped")
        .map(|r| r["record"]["droppedRecords"].as_u64().unwrap())
        .sum();
    assert!(delivered < printed, "{delivered}");
    // Every record is either delivered or counted as dropped (platform records too).
    assert!(
        delivered as u64 + dropped >= printed as u64,
        "{delivered} + {dropped}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_is_told_as_runtime_done_with_status_timeout() {
    let (dir, _records, record) = project("", "timeout = 1\n");
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let r = invoke(&server, r#"{"sleep": 3}"#).await;
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(json_of(&r)["errorType"], "Sandbox.Timedout");
    let id = header(&r, "x-amzn-RequestId").unwrap().to_owned();
    let records = wait_records(&record, &server, is_report_of(&id));
    let done = &records[position(&records, "platform.runtimeDone", |r| {
        r["requestId"] == id.as_str()
    })]["record"];
    assert_eq!(done["status"], "timeout", "{done}");
    assert!(done.get("errorType").is_none(), "{done}");
    let report = &records[position(&records, "platform.report", |r| {
        r["requestId"] == id.as_str()
    })]["record"];
    assert_eq!(report["status"], "timeout", "{report}");
    assert!(
        report["metrics"]["durationMs"].as_f64().unwrap() >= 1000.0,
        "{report}"
    );
}

/// The native backends, each of which runs the cases below (as tests/it/extensions.rs does).
const BACKENDS: [&str; 2] = ["process", "jail"];

/// A subscriber that listens on TCP and prints what it gets, for both backends (in the jail
/// it cannot write the host's files; its stdout reaches the server's log). It registers,
/// listens on `0.0.0.0:0`, then makes `$PROBES` (a JSON list of `[api, identifier]`, `api`
/// `telemetry` or `logs`, `identifier` `none`, `unknown` (a fresh UUID), `invalid` or `own`:
/// its own subscription request sent with that identifier) and subscribes with its own
/// identifier through the Telemetry API, each answer printed after [`PROBE`]; `$LATE_PROBES`
/// are made at each INVOKE. Named `*-uri`, it gives its destination as
/// `{"protocol":"TCP","URI":"sandbox.localdomain:PORT"}`, else `{"protocol":"TCP","port":PORT}`.
/// Every connection is told after [`CONNECTED`] and every line read on one after [`RECEIVED`]
/// (a line the connection ended inside of, after [`UNTERMINATED`]), each followed by its own
/// name. It asks for `platform` and `function` records only: its own prints are `extension`
/// records, which would come back to it.
const TCP_EXTENSION: &str = r#"#!/usr/bin/env python3
import json, os, socket, sys, threading, urllib.error, urllib.request, uuid

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"]
NAME = os.path.basename(__file__)
OUT = threading.Lock()

def say(prefix, text):
    with OUT:
        sys.stdout.write(f"{prefix} {NAME} {text}\n")
        sys.stdout.flush()

def call(method, path, body=None, headers=None):
    data = None if body is None else body.encode()
    request = urllib.request.Request(API + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, answer.headers, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()

def receive(connection):
    with connection, connection.makefile("rb") as stream:
        for line in stream:
            text = line.decode()
            # Subscribed to `extension` records, it hears its own prints: the news of what it
            # printed is not printed again.
            if '"type":"extension"' in text and '"record":"TCP-' in text:
                continue
            if text.endswith("\n"):
                say("TCP-RECORD", text[:-1])
            else:
                say("TCP-UNTERMINATED", json.dumps(text))

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 0))
listener.listen(16)
port = listener.getsockname()[1]

def accept():
    while True:
        connection, _ = listener.accept()
        say("TCP-CONNECTED", str(port))
        threading.Thread(target=receive, args=(connection,), daemon=True).start()

threading.Thread(target=accept, daemon=True).start()

_, headers, _ = call("POST", "/2020-01-01/extension/register",
                     json.dumps({"events": ["INVOKE", "SHUTDOWN"]}), {"Lambda-Extension-Name": NAME})
ID = headers["Lambda-Extension-Identifier"]
if NAME.endswith("-uri"):
    destination = {"protocol": "TCP", "URI": f"sandbox.localdomain:{port}"}
else:
    destination = {"protocol": "TCP", "port": port}
types = json.loads(os.environ.get("TYPES", '["platform", "function"]'))
bodies = {
    "telemetry": ("/2022-07-01/telemetry", {"schemaVersion": "2022-12-13", "types": types,
                  "destination": destination, "buffering": {"timeoutMs": 25}}),
    "logs": ("/2020-08-15/logs", {"schemaVersion": "2021-03-18", "types": types,
             "destination": destination, "buffering": {"timeoutMs": 25}}),
}

def probe(label, api, identifier):
    path, body = bodies[api]
    sent = {"none": None, "unknown": str(uuid.uuid4()), "invalid": "not-a-uuid", "own": ID}[identifier]
    headers = {"Content-Type": "application/json"}
    if sent is not None:
        headers["Lambda-Extension-Identifier"] = sent
    status, _, text = call("PUT", path, json.dumps(body), headers)
    say("PROBE", json.dumps({"probe": label, "api": api, "identifier": identifier, "sent": sent,
                             "status": status, "body": text}))

for api, identifier in json.loads(os.environ.get("PROBES", "[]")):
    probe("init", api, identifier)
probe("subscribe", "telemetry", "own")

while True:
    _, _, text = call("GET", "/2020-01-01/extension/event/next", None,
                      {"Lambda-Extension-Identifier": ID})
    event = json.loads(text)
    if event["eventType"] == "SHUTDOWN":
        sys.exit(0)
    if os.environ.get("SAY_HELLO"):
        say("HELLO", event["requestId"])
    for api, identifier in json.loads(os.environ.get("LATE_PROBES", "[]")):
        probe("late", api, identifier)
"#;

/// What [`TCP_EXTENSION`] prints before each line it reads on its TCP connection.
const RECEIVED: &str = "TCP-RECORD ";
/// … before a line its connection ended inside of (no newline).
const UNTERMINATED: &str = "TCP-UNTERMINATED ";
/// … when a connection is made to it.
const CONNECTED: &str = "TCP-CONNECTED ";
/// … before the answer to each subscription request it makes.
const PROBE: &str = "PROBE ";

/// A project for both backends: the function `f` ([`HANDLER`]) with a layer holding
/// [`TCP_EXTENSION`] under each of `names`; `env` is the function's environment
/// (`KEY = "value", …`). Everything is readable by the jail's unprivileged user.
fn tcp_project(names: &[&str], env: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("f")).unwrap();
    std::fs::write(root.join("f/app.py"), HANDLER).unwrap();
    std::fs::create_dir_all(root.join("layer/extensions")).unwrap();
    for name in names {
        let ext = root.join("layer/extensions").join(name);
        std::fs::write(&ext, TCP_EXTENSION).unwrap();
        std::fs::set_permissions(&ext, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    for d in [
        root,
        &root.join("f"),
        &root.join("layer"),
        &root.join("layer/extensions"),
    ] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        root.join("lamina.toml"),
        format!(
            "[functions.f]\ncode = \"f\"\nlayers = [\"layer\"]\nruntime = \"python3.11\"\n\
             handler = \"app.handler\"\nenvironment = {{ {env} }}\n"
        ),
    )
    .unwrap();
    dir
}

/// What the extension `name` printed after `prefix` in `logs`, in order.
fn printed<'a>(logs: &'a str, prefix: &str, name: &str) -> Vec<&'a str> {
    logs.lines()
        .filter_map(|l| l.split_once(prefix))
        .filter_map(|(_, rest)| rest.split_once(' '))
        .filter(|(who, _)| *who == name)
        .map(|(_, text)| text)
        .collect()
}

/// The records the extension `name` read on TCP, each line parsed on its own: a line that is
/// not one JSON object fails the test.
fn tcp_records(logs: &str, name: &str) -> Vec<Value> {
    printed(logs, RECEIVED, name)
        .into_iter()
        .map(|line| {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name} read a line that is not JSON ({e}): {line:?}"));
            assert!(
                record.is_object() && record["type"].is_string(),
                "{name} read a line that is not one record: {line:?}"
            );
            record
        })
        .collect()
}

/// Waits until `found` holds for the records the extension `name` has read on TCP; returns
/// the server's log then.
fn wait_tcp(server: &Server, name: &str, found: impl Fn(&[Value]) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = server.logs();
        if found(&tcp_records(&logs, name)) {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "{name} has not read the records awaited:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The answers to the extension `name`'s subscription requests, in order.
fn probes(logs: &str, name: &str) -> Vec<Value> {
    printed(logs, PROBE, name)
        .into_iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// A probe's status and its body parsed (`Null` when the body is not JSON).
fn answer_of(probe: &Value) -> (u64, Value) {
    let body = serde_json::from_str(probe["body"].as_str().unwrap()).unwrap_or(Value::Null);
    (probe["status"].as_u64().unwrap(), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_subscriber_reads_newline_delimited_records_on_both_backends() {
    for backend in BACKENDS {
        tcp_subscriber_reads_newline_delimited_records(backend).await;
    }
}

async fn tcp_subscriber_reads_newline_delimited_records(backend: &str) {
    // Both shapes of a TCP destination: `port` (the emulator's) and a `URI` (the reference
    // page's), one extension each.
    let names = ["tcp-port", "tcp-uri"];
    let server = Server::start_in(tcp_project(&names, ""), &["--sandbox", backend]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = invoke(&server, r#"{"lines": 2}"#).await;
        assert_eq!(r.status(), 200, "{backend}: {}", server.logs());
        assert_eq!(header(&r, "x-amz-function-error"), None, "{backend}");
        ids.push(json_of(&r)["id"].as_str().unwrap().to_owned());
    }
    for name in names {
        let logs = wait_tcp(&server, name, |records| {
            ids.iter().all(|id| is_report_of(id)(records))
        });
        let records = tcp_records(&logs, name);
        let context = format!("{backend}, {name}: {records:#?}\n{logs}");
        let subscribed = probes(&logs, name);
        assert_eq!(answer_of(&subscribed[0]), (200, json!("OK")), "{context}");
        assert!(printed(&logs, UNTERMINATED, name).is_empty(), "{context}");
        // One connection, kept from batch to batch.
        assert_eq!(printed(&logs, CONNECTED, name).len(), 1, "{context}");
        // Only what it asked for: no `extension` records (its own prints).
        assert!(
            records.iter().all(|r| {
                let kind = r["type"].as_str().unwrap();
                kind == "function" || kind.starts_with("platform.")
            }),
            "{context}"
        );
        let count = |kind: &str| records.iter().filter(|r| r["type"] == kind).count();
        assert_eq!(count("platform.initStart"), 1, "{context}");
        let subscription = &records[position(&records, "platform.telemetrySubscription", |r| {
            r["name"] == name
        })]["record"];
        assert_eq!(
            subscription,
            &json!({"name": name, "state": "Subscribed", "types": ["platform", "function"]}),
            "{context}"
        );
        for id in &ids {
            let of = |r: &Value| r["requestId"] == id.as_str();
            let start = position(&records, "platform.start", of);
            let line = |i: usize| {
                position(&records, "function", |r| {
                    *r == json!(format!("handler line {i} of {id}"))
                })
            };
            let (line0, line1) = (line(0), line(1));
            let done = position(&records, "platform.runtimeDone", of);
            let report = position(&records, "platform.report", of);
            assert!(
                start < line0 && line0 < line1 && line1 < done && done < report,
                "records of {id} out of order: {context}"
            );
            assert_eq!(records[done]["record"]["status"], "success", "{context}");
            assert_eq!(records[report]["record"]["status"], "success", "{context}");
            for kind in ["platform.start", "platform.runtimeDone", "platform.report"] {
                let of_id = records
                    .iter()
                    .filter(|r| r["type"] == kind && of(&r["record"]))
                    .count();
                assert_eq!(of_id, 1, "{kind} of {id} once: {context}");
            }
        }
    }
    let (ok, logs) = server.stop();
    assert!(ok, "{backend}: {logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_without_a_known_extension_identifier_is_refused_on_both_backends() {
    for backend in BACKENDS {
        subscription_without_a_known_identifier_is_refused(backend).await;
    }
}

async fn subscription_without_a_known_identifier_is_refused(backend: &str) {
    let name = "tcp-port";
    let probes_at_init = json!([
        ["telemetry", "none"],
        ["telemetry", "unknown"],
        ["telemetry", "invalid"],
        ["logs", "none"],
        ["logs", "unknown"],
    ]);
    let probes_late = json!([["telemetry", "unknown"], ["logs", "none"]]);
    let env = format!(
        "PROBES = {:?}, LATE_PROBES = {:?}",
        probes_at_init.to_string(),
        probes_late.to_string()
    );
    let server = Server::start_in(tcp_project(&[name], &env), &["--sandbox", backend]);
    let r = invoke(&server, "{}").await;
    assert_eq!(r.status(), 200, "{backend}: {}", server.logs());
    assert_eq!(header(&r, "x-amz-function-error"), None, "{backend}");
    let first = json_of(&r)["id"].as_str().unwrap().to_owned();
    // The environment goes on: a second invocation, and the subscription made with the
    // extension's own identifier after the refused ones delivers both.
    let r = invoke(&server, "{}").await;
    assert_eq!(r.status(), 200, "{backend}: {}", server.logs());
    assert_eq!(header(&r, "x-amz-function-error"), None, "{backend}");
    let second = json_of(&r)["id"].as_str().unwrap().to_owned();
    let logs = wait_tcp(&server, name, |records| {
        is_report_of(&first)(records) && is_report_of(&second)(records)
    });
    // Every answer is in the log by now: the extension prints the late ones before it calls
    // `/next` again, which the invocation's `platform.report` waits for, and it prints them on
    // the same stdout as the records it reads.
    let answers = probes(&logs, name);
    let context = format!("{backend}: {answers:#?}\n{logs}");
    // Five at init, the subscription, then two at each of the two INVOKEs.
    assert_eq!(answers.len(), 5 + 1 + 2 * 2, "{context}");
    for probe in &answers {
        let (status, body) = answer_of(probe);
        let sent = probe["sent"].as_str();
        let expected = match (
            probe["probe"].as_str().unwrap(),
            probe["identifier"].as_str().unwrap(),
        ) {
            ("subscribe", "own") => {
                assert_eq!((status, &body), (200, &json!("OK")), "{context}");
                continue;
            }
            (_, "none") => (
                "Extension.MissingExtensionIdentifier",
                "Missing Lambda-Extension-Identifier header".to_owned(),
            ),
            (_, "unknown") => (
                "Extension.UnknownExtensionIdentifier",
                format!("Unknown extension {}", sent.unwrap()),
            ),
            (_, "invalid") => (
                "Extension.InvalidExtensionIdentifier",
                "Invalid Lambda-Extension-Identifier".to_owned(),
            ),
            other => panic!("unexpected probe {other:?}: {context}"),
        };
        assert_eq!(
            (status, &body),
            (
                403,
                &json!({"errorType": expected.0, "errorMessage": expected.1})
            ),
            "{probe}: {context}"
        );
    }
    // Nothing was subscribed by the refused requests: one subscription, the extension's own.
    let records = tcp_records(&logs, name);
    let subscriptions: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["type"] == "platform.telemetrySubscription"
                || r["type"] == "platform.logsSubscription"
        })
        .map(|r| &r["record"])
        .collect();
    assert_eq!(
        subscriptions,
        [&json!({"name": name, "state": "Subscribed", "types": ["platform", "function"]})],
        "{backend}: {records:#?}"
    );
    for id in [&first, &second] {
        let done = position(&records, "platform.runtimeDone", |r| {
            r["requestId"] == id.as_str()
        });
        assert_eq!(records[done]["record"]["status"], "success", "{backend}");
    }
    let (ok, logs) = server.stop();
    assert!(ok, "{backend}: {logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_extensions_own_lines_reach_a_subscriber_of_extension_records_on_both_backends() {
    for backend in BACKENDS {
        extension_records(&["--sandbox", backend]).await;
    }
    // With no network at all, the host still reaches the listener in the sandbox (through
    // its PID 1).
    extension_records(&["--sandbox", "jail", "--network", "none"]).await;
}

async fn extension_records(args: &[&str]) {
    let backend = args.join(" ");
    // The TCP subscriber asks for `extension` records only and prints a line of its own at
    // each INVOKE; it should get those lines back, and nothing of the platform's or the
    // function's (whose handler prints too).
    let name = "tcp-port";
    let env = r#"TYPES = "[\"extension\"]", SAY_HELLO = "1""#;
    let server = Server::start_in(tcp_project(&[name], env), args);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = invoke(&server, r#"{"lines": 1}"#).await;
        assert_eq!(r.status(), 200, "{backend}: {}", server.logs());
        ids.push(json_of(&r)["id"].as_str().unwrap().to_owned());
    }
    let said = |id: &str| json!(format!("HELLO {name} {id}"));
    let logs = wait_tcp(&server, name, |records| {
        ids.iter().all(|id| {
            records
                .iter()
                .any(|r| r["type"] == "extension" && r["record"] == said(id))
        })
    });
    let records = tcp_records(&logs, name);
    assert!(
        records.iter().all(|r| r["type"] == "extension"),
        "{backend}: {records:#?}"
    );
}
