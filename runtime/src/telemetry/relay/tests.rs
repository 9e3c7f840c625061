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
