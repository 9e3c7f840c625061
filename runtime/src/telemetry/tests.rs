//! [`Telemetry`] as the environment drives it, against real listeners on the loopback: the
//! subscriptions' rules, the replay of init events to later subscribers, what each API gets of
//! an invocation, the tap's lines, a reset while the extensions finish an invocation, and
//! nothing at all once init ends without a subscriber.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::logs::{LogPump, LogSetup, LogWriter, MemorySink, TextFormat};
use crate::sandbox::Stop;

/// Connects to the host's loopback, as the process backend does.
#[derive(Debug)]
pub(super) struct Loopback;

impl Control for Loopback {
    fn stop(&self, _: Stop) {}
    fn max_memory_bytes(&self) -> Option<u64> {
        None
    }
}

/// A listener that answers `status` after `delay`, and hands over each body it got (checked
/// to be a `POST` of JSON).
pub(super) async fn listener(
    status: u16,
    delay: Duration,
) -> (SocketAddr, mpsc::UnboundedReceiver<(Instant, Vec<Value>)>) {
    listener_answering(move |_| status, delay).await
}

/// [`listener`] answering its `n`th request (from 0) with `status(n)`.
pub(super) async fn listener_answering(
    status: impl Fn(usize) -> u16 + Send + Sync + 'static,
    delay: Duration,
) -> (SocketAddr, mpsc::UnboundedReceiver<(Instant, Vec<Value>)>) {
    let status = Arc::new(status);
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = socket.accept().await else {
                return;
            };
            let tx = tx.clone();
            let (status, requests) = (Arc::clone(&status), Arc::clone(&requests));
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        let n = requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let status = status(n);
                        async move {
                            assert_eq!(req.method(), http::Method::POST);
                            assert_eq!(req.headers()["content-type"], "application/json");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let records: Vec<Value> = serde_json::from_slice(&body).unwrap();
                            tokio::time::sleep(delay).await;
                            let _ = tx.send((Instant::now(), records));
                            let mut response =
                                http::Response::new(Full::new(Bytes::from_static(b"ok")));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

fn identity() -> Identity {
    Identity {
        function_name: "f".into(),
        function_version: "$LATEST".into(),
        instance_id: "2026/01/01/[$LATEST]abc".into(),
        memory_mb: 256,
    }
}

fn log() -> (LogWriter, LogPump) {
    let setup = LogSetup::new(Arc::new(MemorySink::default()), Arc::new(TextFormat));
    let writer = setup.writer();
    (writer, setup.start(None, None).unwrap())
}

fn telemetry(pump: &LogPump, launched: bool) -> Telemetry {
    Telemetry::new(
        identity(),
        pump.tap_slot(),
        Arc::new(Loopback),
        Instant::now(),
        SystemTime::now(),
        launched,
    )
}

fn body(addr: SocketAddr, types: &str) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":"2022-12-13","types":{types},"buffering":{{"timeoutMs":25}},
            "destination":{{"protocol":"HTTP","URI":"http://sandbox.localdomain:{}/t"}}}}"#,
        addr.port()
    )
    .into_bytes()
}

/// Every record the listener has had so far.
fn received(got: &mut mpsc::UnboundedReceiver<(Instant, Vec<Value>)>) -> Vec<Value> {
    let mut all = Vec::new();
    while let Ok((_, batch)) = got.try_recv() {
        all.extend(batch);
    }
    all
}

fn kinds(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn flush(t: &Telemetry) {
    t.flush(Instant::now() + Duration::from_secs(5)).await;
}

fn report(request_id: &str) -> Report<'_> {
    Report {
        request_id,
        duration: Duration::from_millis(12),
        init: Some(Duration::from_millis(30)),
        memory_mb: 256,
        max_memory_mb: 40,
        status: Status::Success,
        failure: None,
    }
}

#[tokio::test]
async fn init_events_are_replayed_to_each_later_subscriber() {
    let (a_addr, mut a) = listener(200, Duration::ZERO).await;
    let (b_addr, mut b) = listener(200, Duration::ZERO).await;
    let (writer, pump) = log();
    let mut t = telemetry(&pump, true);
    writer.write(b"printed during init\n");
    t.subscribe(
        Api::Telemetry,
        "a",
        &body(a_addr, r#"["platform","function"]"#),
    )
    .unwrap();
    t.subscribe(Api::Telemetry, "b", &body(b_addr, r#"["platform"]"#))
        .unwrap();
    t.init_done(
        &[
            ("a".into(), vec!["INVOKE", "SHUTDOWN"]),
            ("b".into(), vec!["SHUTDOWN"]),
        ],
        Some(Duration::from_millis(40)),
    );
    flush(&t).await;
    let a = received(&mut a);
    assert_eq!(
        kinds(&a),
        [
            "platform.initStart",
            "function",
            "platform.telemetrySubscription",
            "platform.telemetrySubscription",
            "platform.initRuntimeDone",
            "platform.extension",
            "platform.extension",
            "platform.initReport"
        ]
    );
    assert_eq!(a[0]["record"]["functionName"], "f");
    assert_eq!(a[0]["record"]["instanceId"], "2026/01/01/[$LATEST]abc");
    assert_eq!(a[0]["record"]["instanceMaxMemory"], 268_435_456);
    assert_eq!(a[1]["record"], "printed during init");
    assert_eq!(a[2]["record"]["name"], "a");
    assert_eq!(a[3]["record"]["name"], "b");
    assert_eq!(a[3]["record"]["types"], serde_json::json!(["platform"]));
    assert_eq!(
        a[5]["record"],
        serde_json::json!({"name": "a", "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]})
    );
    assert_eq!(a[7]["record"]["metrics"]["durationMs"], 40.0);
    assert_eq!(a[7]["record"]["status"], "success");
    // b came later, and asked for no lines: the same init, replayed.
    let b = received(&mut b);
    assert_eq!(
        kinds(&b),
        kinds(&a[..1])
            .into_iter()
            .chain(kinds(&a[2..]))
            .collect::<Vec<_>>()
    );
    assert_eq!(b[0]["time"], a[0]["time"], "replayed with its own time");
}

#[tokio::test]
async fn subscriptions_close_with_init_and_take_one_api_per_extension() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let (_writer, pump) = log();
    let mut t = telemetry(&pump, false);
    let telemetry_body = body(addr, r#"["platform"]"#);
    t.subscribe(Api::Telemetry, "a", &telemetry_body).unwrap();
    // The same request again changes nothing; the other API is refused.
    t.subscribe(Api::Telemetry, "a", &telemetry_body).unwrap();
    let logs_body = br#"{"types":["platform"],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1234"}}"#;
    let e = t.subscribe(Api::Logs, "a", logs_body).unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.error_type),
        (403, "Logs.SubscriptionConflict")
    );
    let e = t.subscribe(Api::Telemetry, "b", b"{}").unwrap_err();
    assert_eq!((e.status.as_u16(), e.error_type), (400, "ValidationError"));
    t.init_done(&[], None);
    let e = t
        .subscribe(Api::Telemetry, "c", &telemetry_body)
        .unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.error_type, e.message.as_str()),
        (
            403,
            "Telemetry.SubscriptionClosed",
            "Telemetry API subscription is closed"
        )
    );
    assert_eq!(
        t.subscribe(Api::Logs, "c", logs_body)
            .unwrap_err()
            .error_type,
        "Logs.SubscriptionClosed"
    );
    flush(&t).await;
    let records = received(&mut got);
    assert_eq!(
        kinds(&records)
            .iter()
            .filter(|k| *k == "platform.telemetrySubscription")
            .count(),
        1
    );
}

#[tokio::test]
async fn an_invocation_as_the_telemetry_api_tells_it() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let (writer, pump) = log();
    let mut t = telemetry(&pump, true);
    t.subscribe(
        Api::Telemetry,
        "a",
        &body(addr, r#"["platform","function"]"#),
    )
    .unwrap();
    t.init_done(
        &[("a".into(), vec!["INVOKE"])],
        Some(Duration::from_millis(30)),
    );
    flush(&t).await;
    received(&mut got);
    let delivered = Instant::now();
    t.start("r1", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1");
    writer.write(b"hello from the handler\n");
    let answered = Instant::now();
    let outcome = InvokeOutcome::Response(Bytes::from_static(b"{\"ok\":1}"));
    let told = t.told("r1", &outcome);
    t.runtime_done(told, &report("r1"), Some(delivered), Some(answered));
    tokio::time::sleep(Duration::from_millis(20)).await;
    t.report();
    flush(&t).await;
    let records = received(&mut got);
    assert_eq!(
        kinds(&records),
        [
            "platform.start",
            "function",
            "platform.runtimeDone",
            "platform.report"
        ]
    );
    let start = &records[0]["record"];
    assert_eq!(start["requestId"], "r1");
    assert_eq!(start["version"], "$LATEST");
    assert_eq!(start["tracing"]["type"], "X-Amzn-Trace-Id");
    assert_eq!(start["tracing"]["spanId"].as_str().unwrap().len(), 16);
    assert_eq!(records[1]["record"], "hello from the handler");
    let done = &records[2]["record"];
    assert_eq!(done["status"], "success");
    assert_eq!(done["metrics"]["producedBytes"], 8);
    assert_eq!(done["metrics"]["durationMs"], 12.0);
    let spans: Vec<&str> = done["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(spans, ["responseLatency", "responseDuration"]);
    let report = &records[3]["record"];
    assert_eq!(report["status"], "success");
    let overhead = &report["spans"][0];
    assert_eq!(overhead["name"], "extensionOverhead");
    let overhead_ms = overhead["durationMs"].as_f64().unwrap();
    assert!(overhead_ms >= 20.0, "{overhead_ms}");
    let metrics = &report["metrics"];
    assert!((metrics["durationMs"].as_f64().unwrap() - (12.0 + overhead_ms)).abs() < 0.002);
    assert_eq!(metrics["initDurationMs"], 30.0);
    assert_eq!(metrics["memorySizeMB"], 256);
    assert_eq!(metrics["maxMemoryUsedMB"], 40);
    let billed = metrics["billedDurationMs"].as_u64().unwrap();
    assert_eq!(billed, (42.0 + overhead_ms).ceil() as u64);
}

#[tokio::test]
async fn the_logs_api_gets_start_end_report_and_no_init_records() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let (_writer, pump) = log();
    let mut t = telemetry(&pump, true);
    let logs = format!(
        r#"{{"schemaVersion":"2021-03-18","types":["platform"],"buffering":{{"timeoutMs":25}},"destination":{{"protocol":"HTTP","URI":"http://sandbox:{}"}}}}"#,
        addr.port()
    );
    t.subscribe(Api::Logs, "a", logs.as_bytes()).unwrap();
    t.init_done(&[("a".into(), vec!["INVOKE"])], None);
    t.start("r1", "");
    let failure = InvokeOutcome::Failure(Failure::Exited(crate::error::ExitStatus::Code(1)));
    let told = t.told("r1", &failure);
    t.runtime_done(told, &report("r1"), Some(Instant::now()), None);
    t.report();
    flush(&t).await;
    let records = received(&mut got);
    assert_eq!(
        kinds(&records),
        [
            "platform.logsSubscription",
            "platform.extension",
            "platform.start",
            "platform.runtimeDone",
            "platform.fault",
            "platform.end",
            "platform.report"
        ]
    );
    assert_eq!(records[3]["record"]["status"], "failure");
    assert_eq!(
        records[4]["record"],
        "RequestId: r1 Process exited before completing request"
    );
}

#[tokio::test]
async fn a_timeout_and_a_failed_init_have_their_status() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let (_writer, pump) = log();
    let mut t = telemetry(&pump, true);
    t.subscribe(Api::Telemetry, "a", &body(addr, r#"["platform"]"#))
        .unwrap();
    // Init never ends well: the first invocation fails in it, with a timeout.
    let outcome = InvokeOutcome::Failure(Failure::InitTimeout(Duration::from_secs(10)));
    let told = t.told("r1", &outcome);
    t.runtime_done(told, &report("r1"), None, None);
    t.report();
    flush(&t).await;
    let records = received(&mut got);
    assert_eq!(
        kinds(&records),
        [
            "platform.initStart",
            "platform.telemetrySubscription",
            "platform.initRuntimeDone",
            "platform.initReport",
            "platform.start",
            "platform.runtimeDone",
            "platform.report"
        ]
    );
    for i in [2, 3, 5, 6] {
        assert_eq!(records[i]["record"]["status"], "timeout", "{}", records[i]);
        assert!(records[i]["record"].get("errorType").is_none());
    }
    assert_eq!(records[3]["record"]["metrics"]["durationMs"], 30.0);
}

#[tokio::test]
async fn without_a_subscriber_nothing_is_said_or_tapped_after_init() {
    let (writer, pump) = log();
    let mut t = telemetry(&pump, true);
    assert!(
        t.owner.is_some(),
        "extensions were launched: the relay runs"
    );
    t.init_done(&[], None);
    assert!(t.owner.is_none());
    assert!(!t.live());
    writer.write(b"no one listens\n");
    t.start("r1", "Root=1");
    let outcome = InvokeOutcome::Response(Bytes::new());
    assert!(t.told("r1", &outcome).is_none());
    t.runtime_done(None, &report("r1"), Some(Instant::now()), None);
    assert!(t.pending_report.is_none());
    // Without extensions launched, no relay ever starts.
    let (_writer, pump) = log();
    let mut t = telemetry(&pump, false);
    assert!(t.owner.is_none());
    t.init_done(&[], None);
    assert!(t.kept.is_empty() && t.owner.is_none());
}

#[tokio::test]
async fn after_init_only_the_subscribed_sources_are_tapped() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let (writer, pump) = log();
    let mut t = telemetry(&pump, true);
    t.subscribe(Api::Telemetry, "a", &body(addr, r#"["extension"]"#))
        .unwrap();
    t.init_done(&[], None);
    writer.write(b"a function line\n");
    assert!(!t.switch.wants(crate::logs::Source::Function));
    assert!(t.switch.wants(crate::logs::Source::Extension));
    flush(&t).await;
    assert!(
        received(&mut got).is_empty(),
        "no platform records, no function lines"
    );
}

#[tokio::test]
async fn a_reset_while_the_extensions_finish_says_so_and_reports_at_once() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let (_writer, pump) = log();
    let mut t = telemetry(&pump, true);
    t.subscribe(Api::Telemetry, "a", &body(addr, r#"["platform"]"#))
        .unwrap();
    t.init_done(&[("a".into(), vec!["INVOKE"])], None);
    let crash = Failure::Extension(crate::error::Fatal {
        error_type: "Extension.Crash",
        message: "extension a crashed".into(),
    });
    for (request_id, failure) in [
        ("r1", Failure::Timeout(Duration::from_secs(3))),
        ("r2", crash),
    ] {
        // The runtime answered; the extensions are still at work on the invocation.
        let delivered = Instant::now();
        t.start(request_id, "");
        let told = t.told(request_id, &InvokeOutcome::Response(Bytes::new()));
        t.runtime_done(
            told,
            &report(request_id),
            Some(delivered),
            Some(Instant::now()),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        // They overran the deadline (or one crashed): the environment resets.
        t.reset(&failure);
        // What tearing it down takes is not the extensions' time.
        tokio::time::sleep(Duration::from_millis(200)).await;
        t.report();
    }
    flush(&t).await;
    let records = received(&mut got);
    let reports: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "platform.report")
        .map(|r| &r["record"])
        .collect();
    assert_eq!(reports.len(), 2, "{records:?}");
    assert_eq!(reports[0]["requestId"], "r1");
    assert_eq!(reports[0]["status"], "timeout");
    assert!(reports[0].get("errorType").is_none());
    assert_eq!(reports[1]["requestId"], "r2");
    assert_eq!(reports[1]["status"], "error");
    assert_eq!(reports[1]["errorType"], "Extension.Crash");
    for report in reports {
        let overhead = report["spans"][0]["durationMs"].as_f64().unwrap();
        assert!((20.0..200.0).contains(&overhead), "{report}");
    }
    // The runtime's own records said it answered.
    let done: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "platform.runtimeDone")
        .collect();
    assert!(done.iter().all(|d| d["record"]["status"] == "success"));
}
