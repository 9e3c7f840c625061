//! The relay's own bookkeeping: what lines cost against the budgets (empty ones too), lines
//! the tap dropped told by source and to later subscribers, and an extension that subscribes
//! again and again during init.

use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::telemetry::subscription::{self, Api};
use crate::telemetry::tests::{Loopback, listener};

const ALL: Types = Types {
    platform: true,
    function: true,
    extension: true,
};

fn quick() -> Retry {
    Retry {
        attempts: 2,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_millis(300),
    }
}

/// A relay whose messages the test hands it, one by one, and the sender of its channel.
fn relay() -> (Relay, mpsc::UnboundedSender<Msg>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let relay = Relay {
        rx,
        switch: Arc::new(Switch::default()),
        control: Arc::new(Loopback),
        retry: quick(),
        subscribers: Vec::new(),
        replaced: Vec::new(),
        kept: Some(Kept::default()),
        rendering: Rendering::default(),
    };
    (relay, tx)
}

/// Handles every message sent so far.
fn drain(relay: &mut Relay) {
    while let Ok(msg) = relay.rx.try_recv() {
        relay.handle(msg);
    }
}

fn subscription(port: u16, types: &str, timeout_ms: u64) -> Subscription {
    let body = format!(
        r#"{{"schemaVersion":"2022-12-13","types":{types},"buffering":{{"timeoutMs":{timeout_ms}}},
            "destination":{{"protocol":"HTTP","URI":"http://sandbox.localdomain:{port}/t"}}}}"#
    );
    subscription::parse(Api::Telemetry, body.as_bytes()).unwrap()
}

/// Asks every subscriber to send what it holds, and waits until they have.
async fn flush(tx: &mpsc::UnboundedSender<Msg>) {
    let (reply, flushed) = oneshot::channel();
    tx.send(Msg::Flush(reply)).unwrap();
    for subscriber in flushed.await.unwrap() {
        tokio::time::timeout(Duration::from_secs(5), subscriber)
            .await
            .unwrap()
            .unwrap();
    }
}

fn received(got: &mut mpsc::UnboundedReceiver<(std::time::Instant, Vec<Value>)>) -> Vec<Value> {
    let mut all = Vec::new();
    while let Ok((_, batch)) = got.try_recv() {
        all.extend(batch);
    }
    all
}

fn dropped(records: &[Value]) -> Vec<(u64, u64)> {
    records
        .iter()
        .filter(|r| r["type"] == "platform.logsDropped")
        .map(|r| {
            let r = &r["record"];
            (
                r["droppedRecords"].as_u64().unwrap(),
                r["droppedBytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn empty_lines_are_not_free_in_the_queue_or_in_what_init_keeps() {
    let (mut relay, tx) = relay();
    relay.switch.want(ALL);
    let feed = LineFeed {
        tx,
        switch: Arc::clone(&relay.switch),
    };
    // A guest printing "\n" in a loop, faster than the relay reads.
    let fits = LINE_QUEUE_BYTES / LINE_OVERHEAD;
    for _ in 0..fits + 10 {
        feed.line(Source::Function, b"");
    }
    assert_eq!(
        relay
            .switch
            .dropped_function
            .records
            .load(Ordering::Acquire),
        10,
        "the queue is bounded for empty lines too"
    );
    // The relay takes them: what each was charged is given back, and init keeps its share.
    drain(&mut relay);
    assert_eq!(relay.switch.queued_bytes.load(Ordering::Acquire), 0);
    let kept = relay.kept.as_ref().unwrap();
    let lines = kept
        .events
        .iter()
        .filter(|e| matches!(e.event, Event::Line { .. }))
        .count();
    assert_eq!(lines, KEPT_LINE_BYTES / LINE_OVERHEAD);
    // The rest are missed, and will be told: those the tap dropped included.
    assert_eq!(
        kept.missed_function,
        Missed {
            records: (fits - lines + 10) as u64,
            bytes: 0
        }
    );
    assert_eq!(kept.missed_extension, Missed::default());
}

#[tokio::test]
async fn lines_the_tap_dropped_are_told_by_source_and_to_later_subscribers() {
    let (early_addr, mut early) = listener(200, Duration::ZERO).await;
    let (late_addr, mut late) = listener(200, Duration::ZERO).await;
    let (mut relay, tx) = relay();
    relay.switch.want(ALL);
    let feed = LineFeed {
        tx: tx.clone(),
        switch: Arc::clone(&relay.switch),
    };
    // Subscribed early to the extensions' lines only.
    tx.send(Msg::Subscribe {
        name: "early".into(),
        subscription: subscription(early_addr.port(), r#"["platform","extension"]"#, 25),
    })
    .unwrap();
    drain(&mut relay);
    // The queue is full: a function line is dropped by the tap.
    relay
        .switch
        .queued_bytes
        .store(LINE_QUEUE_BYTES, Ordering::Release);
    feed.line(Source::Function, b"lost");
    relay.switch.queued_bytes.store(0, Ordering::Release);
    // Someone who wants the function's lines subscribes later, still during init.
    tx.send(Msg::Subscribe {
        name: "late".into(),
        subscription: subscription(late_addr.port(), r#"["platform","function"]"#, 25),
    })
    .unwrap();
    tx.send(Msg::Close).unwrap();
    drain(&mut relay);
    let task = tokio::spawn(relay.run());
    flush(&tx).await;
    assert_eq!(
        dropped(&received(&mut early)),
        [],
        "not charged for lines it did not ask for"
    );
    assert_eq!(dropped(&received(&mut late)), [(1, 4)]);
    task.abort();
}

#[tokio::test]
async fn subscribing_again_and_again_leaves_one_predecessor_and_one_record() {
    // A listener that takes its time: each replaced subscription still has a batch to send.
    let (addr, _got) = listener(200, Duration::from_secs(30)).await;
    let (mut relay, _tx) = relay();
    for i in 0..50 {
        let subscription = subscription(addr.port(), r#"["platform"]"#, 25 + i);
        let types = subscription.types;
        relay.subscribe("ext".into(), subscription);
        relay.broadcast(
            Stamped::now(Event::Subscribed {
                name: "ext".into(),
                types,
            }),
            None,
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Another extension's predecessor is its own.
    relay.subscribe(
        "other".into(),
        subscription(addr.port(), r#"["platform"]"#, 25),
    );
    relay.subscribe(
        "other".into(),
        subscription(addr.port(), r#"["platform"]"#, 26),
    );
    assert_eq!(relay.subscribers.len(), 2);
    let names: Vec<&str> = relay.replaced.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ext", "other"]);
    let kept = relay.kept.as_ref().unwrap();
    let subscribed = kept
        .events
        .iter()
        .filter(|e| matches!(e.event, Event::Subscribed { .. }))
        .count();
    assert_eq!(subscribed, 1);
}

/// Subscribers of one API share an event's rendering and a subscriber of the other gets its
/// own: each gets its API's records, whether it took the rendered ones or copies of them,
/// also where one event is several records for one API and one for the other.
#[tokio::test]
async fn each_subscriber_gets_its_apis_records_of_one_rendering() {
    let (mut relay, tx) = relay();
    let mut received_by = Vec::new();
    for (name, api) in [
        ("first", Api::Telemetry),
        ("logs", Api::Logs),
        ("second", Api::Telemetry),
    ] {
        let (addr, got) = listener(200, Duration::ZERO).await;
        let subscription = match api {
            Api::Telemetry => subscription(addr.port(), r#"["platform"]"#, 25),
            Api::Logs => subscription::parse(
                Api::Logs,
                format!(
                    r#"{{"schemaVersion":"2021-03-18","types":["platform"],"buffering":{{"timeoutMs":25}},
                        "destination":{{"protocol":"HTTP","URI":"http://sandbox.localdomain:{}/l"}}}}"#,
                    addr.port()
                )
                .as_bytes(),
            )
            .unwrap(),
        };
        tx.send(Msg::Subscribe {
            name: name.into(),
            subscription,
        })
        .unwrap();
        received_by.push((name, got));
    }
    tx.send(Msg::Close).unwrap();
    tx.send(Msg::Event(Stamped::now(Event::Start {
        request_id: "r1".into(),
        version: "$LATEST".into(),
        trace_id: Some("Root=1-5e1b4151-5ac6c58f5b5daa6532e6a1d4".into()),
        span_id: Some("0123456789abcdef".into()),
    })))
    .unwrap();
    tx.send(Msg::Event(Stamped::now(Event::RuntimeDone {
        request_id: "r1".into(),
        status: crate::invoke::Status::Success,
        duration: Duration::from_millis(3),
        produced_bytes: Some(2),
        spans: Vec::new(),
        fault: None,
    })))
    .unwrap();
    drain(&mut relay);
    let task = tokio::spawn(relay.run());
    flush(&tx).await;
    for (name, mut got) in received_by {
        let records: Vec<Value> = received(&mut got)
            .into_iter()
            .filter(|r| r["record"]["requestId"] == "r1")
            .collect();
        let types: Vec<&str> = records
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        // The Logs API's runtimeDone (schema 2021-03-18) is followed by its platform.end.
        let expected: &[&str] = match name {
            "logs" => &["platform.start", "platform.runtimeDone", "platform.end"],
            _ => &["platform.start", "platform.runtimeDone"],
        };
        assert_eq!(types, expected, "{name}: {records:?}");
        // The Telemetry API's records carry the trace and the metrics; the Logs API's not.
        let start = &records[0]["record"];
        assert_eq!(
            start.get("tracing").is_some(),
            name != "logs",
            "{name}: {start}"
        );
        let done = &records[1]["record"];
        assert_eq!(
            done.get("metrics").is_some(),
            name != "logs",
            "{name}: {done}"
        );
    }
    task.abort();
}
