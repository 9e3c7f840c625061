//! The delivery task against real listeners on the loopback: batching by count, bytes and
//! time, a full buffer that drops without waiting, retries and give-ups told as
//! `platform.logsDropped` (the drops a lost batch told included), the answer timeout, flushes,
//! and TCP (a batch cut off partway is not sent again).

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::net::TcpListener;

use super::*;
use crate::telemetry::subscription::Api;
use crate::telemetry::tests::{Loopback, listener, listener_answering};

const AUDIENCE: Audience = Audience {
    api: Api::Telemetry,
    logs_runtime_done: false,
};

fn http(addr: SocketAddr) -> Destination {
    Destination::Http {
        port: addr.port(),
        host: format!("sandbox.localdomain:{}", addr.port()),
        path: "/telemetry".into(),
    }
}

fn record(n: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"time":"t","type":"function","record":"line {n}"}}"#
    ))
}

fn small(max_items: usize, max_bytes: usize, timeout_ms: u64) -> Buffering {
    Buffering {
        max_items,
        max_bytes,
        timeout: Duration::from_millis(timeout_ms),
    }
}

/// A subscriber `ext` of the Telemetry API that reports drops, on the host's loopback, tried
/// again [`quick`]ly.
fn feed_to(destination: Destination, buffering: Buffering) -> (Feed, tokio::task::JoinHandle<()>) {
    spawn(
        "ext".into(),
        destination,
        buffering,
        AUDIENCE,
        true,
        Arc::new(Loopback),
        quick(),
    )
}

fn quick() -> Retry {
    Retry {
        attempts: 3,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_millis(300),
    }
}

fn lines(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["type"] == "function")
        .map(|r| r["record"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_full_batch_goes_out_at_once_and_the_rest_after_the_timeout() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let (feed, _task) = feed_to(http(addr), small(3, 1 << 20, 300));
    let started = Instant::now();
    for n in 0..3 {
        assert!(feed.offer(record(n)));
    }
    let (at, first) = got.recv().await.unwrap();
    assert_eq!(lines(&first), ["line 0", "line 1", "line 2"]);
    assert!(
        at - started < Duration::from_millis(250),
        "{:?}",
        at - started
    );
    let started = Instant::now();
    assert!(feed.offer(record(3)));
    let (at, second) = got.recv().await.unwrap();
    assert_eq!(lines(&second), ["line 3"]);
    assert!(
        at - started >= Duration::from_millis(300),
        "{:?}",
        at - started
    );
}

/// The feed wakes its task for a batch's first record and for a batch's worth, not for each
/// record: records that trickle in after the task has gone back to waiting on the first's
/// timer still close the batch the moment it is full, and what a batch leaves behind goes out
/// on its own first record's timer with nothing more offered.
#[tokio::test]
async fn records_offered_one_by_one_close_a_batch_when_it_is_full() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let (feed, _task) = feed_to(http(addr), small(3, 1 << 20, 400));
    let started = Instant::now();
    assert!(feed.offer(record(0)));
    // The task has the first record and waits on its timer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(feed.offer(record(1)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    for n in 2..5 {
        assert!(feed.offer(record(n)));
    }
    let (at, first) = got.recv().await.unwrap();
    assert_eq!(lines(&first), ["line 0", "line 1", "line 2"]);
    assert!(
        at - started < Duration::from_millis(300),
        "the full batch waited for its timer: {:?}",
        at - started
    );
    let (at, second) = got.recv().await.unwrap();
    assert_eq!(lines(&second), ["line 3", "line 4"]);
    assert!(
        at - started >= Duration::from_millis(400),
        "{:?}",
        at - started
    );
}

#[tokio::test]
async fn max_bytes_closes_a_batch() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let size = record(0).len();
    let (feed, _task) = feed_to(http(addr), small(100, size * 2, 10_000));
    for n in 0..2 {
        assert!(feed.offer(record(n)));
    }
    let (_, batch) = got.recv().await.unwrap();
    assert_eq!(lines(&batch), ["line 0", "line 1"]);
}

/// Keeps the courier's thread (where delivery tasks run) busy until the answer is dropped:
/// records offered meanwhile are all in the buffer when their task next looks, as if offered
/// at one instant.
fn hold_the_courier() -> std::sync::mpsc::Sender<()> {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (held, holding) = std::sync::mpsc::channel();
    drop(super::super::courier::spawn(async move {
        let _ = held.send(());
        let _ = released.recv();
    }));
    holding.recv().unwrap();
    release
}

/// A record of exactly `len` bytes, numbered `n`.
fn sized(n: usize, len: usize) -> Bytes {
    let text = format!(r#"{{"time":"t","type":"function","record":"line {n} "#);
    Bytes::from(format!("{text}{}\"}}", "x".repeat(len - text.len() - 2)))
}

/// Under a `maxBytes` above [`EAGER_BATCH_BYTES`], a batch goes out at that many bytes when
/// none is in flight, not at `maxBytes` nor after the timer; what piles up while it is in
/// flight goes out next as one batch, past [`EAGER_BATCH_BYTES`], up to `maxBytes`.
#[tokio::test]
async fn a_batch_goes_out_at_64_kib_short_of_a_larger_max_bytes_and_grows_while_one_is_in_flight() {
    // The listener answers after 150 ms, within `quick`'s timeout of 300 ms.
    let (addr, mut got) = listener(200, Duration::from_millis(150)).await;
    let (feed, _task) = feed_to(http(addr), small(10_000, 256 * 1024, 60_000));
    let kib = 64;
    for n in 0..kib - 1 {
        assert!(feed.offer(sized(n, 1024)));
    }
    let early = tokio::time::timeout(Duration::from_millis(500), got.recv()).await;
    assert!(
        early.is_err(),
        "a batch short of 64 KiB went out: {early:?}"
    );
    assert!(feed.offer(sized(kib - 1, 1024)));
    // The first batch is in flight: these wait for it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for n in kib..kib + 150 {
        assert!(feed.offer(sized(n, 1024)));
    }
    let (_, first) = tokio::time::timeout(Duration::from_secs(5), got.recv())
        .await
        .expect("a batch at 64 KiB, not after the 60 s timer")
        .unwrap();
    assert_eq!(first.len(), kib, "{:?}", lines(&first).last());
    let (_, second) = tokio::time::timeout(Duration::from_secs(5), got.recv())
        .await
        .expect("what piled up, at once after the first")
        .unwrap();
    assert_eq!(second.len(), 150, "{:?}", lines(&second).last());
    assert!(lines(&second)[149].starts_with(&format!("line {} ", kib + 149)));
}

#[tokio::test]
async fn a_full_buffer_drops_without_waiting_and_says_so_next_time() {
    // The listener takes 400 ms per batch: the buffer (two batches of 3 records) fills
    // meanwhile.
    let (addr, mut got) = listener(200, Duration::from_millis(400)).await;
    let (feed, _task) = spawn(
        "ext".into(),
        http(addr),
        small(3, 1 << 20, 25),
        AUDIENCE,
        true,
        Arc::new(Loopback),
        Retry {
            timeout: Duration::from_secs(5),
            ..quick()
        },
    );
    assert!(feed.offer(record(0)));
    tokio::time::sleep(Duration::from_millis(100)).await; // now in flight
    let started = Instant::now();
    let accepted: Vec<bool> = (1..=9).map(|n| feed.offer(record(n))).collect();
    // The listener takes 400 ms: offering did not wait for it.
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        accepted,
        [true, true, true, true, true, true, false, false, false]
    );
    let (_, first) = got.recv().await.unwrap();
    assert_eq!(lines(&first), ["line 0"]);
    let (_, second) = got.recv().await.unwrap();
    assert_eq!(second[0]["type"], "platform.logsDropped");
    assert_eq!(second[0]["record"]["droppedRecords"], 3);
    assert_eq!(
        second[0]["record"]["droppedBytes"],
        3 * record(7).len() as u64
    );
    assert_eq!(second[0]["record"]["reason"], SLOW_CONSUMER);
    assert_eq!(lines(&second), ["line 1", "line 2", "line 3"]);
    let (_, third) = got.recv().await.unwrap();
    assert_eq!(lines(&third), ["line 4", "line 5", "line 6"]);
}

#[tokio::test]
async fn records_of_uneven_sizes_close_a_batch_by_size_not_by_its_timer() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    // Records of 50, 60, 70, 80 and 90 bytes under a batch limit of 150 (the buffer holds two
    // batches, 300): the first two go out at once, by size, though they stop short of 150 (the
    // timer is a minute away); the third and fourth make the next batch, at once too; the
    // fifth does not fit the buffer, and is refused and told.
    let (feed, _task) = feed_to(http(addr), small(1000, 150, 60_000));
    let held = hold_the_courier();
    let accepted: Vec<bool> = [(0, 50), (1, 60), (2, 70), (3, 80), (4, 90)]
        .into_iter()
        .map(|(n, len)| feed.offer(sized(n, len)))
        .collect();
    drop(held);
    assert_eq!(accepted, [true, true, true, true, false]);
    let (_, batch) = tokio::time::timeout(Duration::from_secs(5), got.recv())
        .await
        .expect("a batch by size, not after the 60 s timer")
        .unwrap();
    assert_eq!(
        lines(&batch),
        ["line 0 x", "line 1 xxxxxxxxxxx"],
        "{batch:?}"
    );
    // All five were offered before the task first ran: the refusal is told in the first.
    assert_eq!(batch[0]["type"], "platform.logsDropped", "{batch:?}");
    assert_eq!(batch[0]["record"]["droppedRecords"], 1);
    assert_eq!(batch[0]["record"]["droppedBytes"], 90);
    let (_, batch) = tokio::time::timeout(Duration::from_secs(5), got.recv())
        .await
        .expect("the next batch by size too")
        .unwrap();
    assert_eq!(batch.len(), 2, "{batch:?}");
    assert!(lines(&batch)[1].starts_with("line 3 "), "{batch:?}");
}

#[tokio::test]
async fn a_failing_listener_is_retried_then_the_batch_is_dropped_and_told() {
    let (bad, mut bad_got) = listener(500, Duration::ZERO).await;
    let (feed, _task) = feed_to(http(bad), small(1000, 1 << 20, 25));
    assert!(feed.offer(record(0)));
    for _ in 0..3 {
        let (_, batch) = bad_got.recv().await.unwrap();
        assert_eq!(lines(&batch), ["line 0"]);
    }
    // Nothing more is tried until there is something to send …
    let quiet = tokio::time::timeout(Duration::from_millis(200), bad_got.recv()).await;
    assert!(quiet.is_err(), "{quiet:?}");
    // … and the news of the drop goes with it.
    assert!(feed.offer(record(1)));
    let (_, told) = bad_got.recv().await.unwrap();
    assert_eq!(told[0]["type"], "platform.logsDropped");
    assert_eq!(told[0]["record"]["droppedRecords"], 1);
    assert_eq!(told[0]["record"]["droppedBytes"], record(0).len() as u64);
    assert_eq!(
        told[0]["record"]["reason"],
        "could not send events: http request failed with status 500 Internal Server Error"
    );
    assert_eq!(lines(&told), ["line 1"]);
}

#[tokio::test]
async fn drops_told_in_a_batch_that_is_dropped_too_are_told_again() {
    // Every attempt at the first batch fails; the listener takes the ones after.
    let (addr, mut got) =
        listener_answering(|n| if n < 3 { 500 } else { 200 }, Duration::ZERO).await;
    let (feed, _task) = feed_to(http(addr), small(1000, 1 << 20, 25));
    // Lines it missed before it subscribed, say: told at the head of the first batch.
    feed.dropped(3, 300);
    assert!(feed.offer(record(0)));
    for _ in 0..3 {
        let (_, batch) = got.recv().await.unwrap();
        assert_eq!(batch[0]["record"]["droppedRecords"], 3);
        assert_eq!(lines(&batch), ["line 0"]);
    }
    // That batch is gone: its record, and the news it carried, are told with the next.
    assert!(feed.offer(record(1)));
    let (_, told) = got.recv().await.unwrap();
    assert_eq!(kinds_dropped(&told), 1, "{told:?}");
    assert_eq!(told[0]["type"], "platform.logsDropped");
    assert_eq!(told[0]["record"]["droppedRecords"], 3 + 1);
    assert_eq!(
        told[0]["record"]["droppedBytes"],
        300 + record(0).len() as u64
    );
    assert_eq!(
        told[0]["record"]["reason"],
        "could not send events: http request failed with status 500 Internal Server Error"
    );
    assert_eq!(lines(&told), ["line 1"]);
}

/// How many `platform.logsDropped` records `batch` has.
fn kinds_dropped(batch: &[Value]) -> usize {
    batch
        .iter()
        .filter(|r| r["type"] == "platform.logsDropped")
        .count()
}

#[tokio::test]
async fn a_tcp_batch_cut_off_partway_is_dropped_not_sent_again() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    // A batch of 32 MiB: more than the sockets' buffers hold, so the listener hangs up while
    // it is being written. One record, so that it is one batch however soon the delivery
    // task (on its own thread) sees it.
    let big = format!(
        r#"{{"time":"t","type":"function","record":"line 0 {}"}}"#,
        "x".repeat(32 << 20)
    );
    let (feed, _task) = feed_to(Destination::Tcp { port }, small(1000, 1 << 20, 25));
    assert!(feed.offer(Bytes::from(big)));
    let (mut stream, _) = socket.accept().await.unwrap();
    let mut first = vec![0u8; 64 * 1024];
    stream.read_exact(&mut first).await.unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(first.contains("line 0 x"), "{}", &first[..80]);
    drop(stream);
    // Sent again, the batch would reach the listener after a cut line, and twice over.
    let again = tokio::time::timeout(Duration::from_millis(600), socket.accept()).await;
    assert!(again.is_err(), "the cut batch was sent again");
    // It is told as dropped, whole, with the next batch.
    assert!(feed.offer(record(0)));
    let (stream, _) = socket.accept().await.unwrap();
    let mut lines = tokio::io::BufReader::new(stream).lines();
    let told: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(told["type"], "platform.logsDropped");
    assert_eq!(told["record"]["droppedRecords"], 1);
    let reason = told["record"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("could not send events: ") && reason.contains(" bytes were written"),
        "{reason}"
    );
    let next: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(next["record"], "line 0");
}

#[tokio::test]
async fn a_flush_tells_of_drops_even_with_nothing_else_to_send() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let (feed, _task) = feed_to(http(addr), small(1000, 1 << 20, 25));
    // Lines a subscriber missed before it subscribed, say.
    feed.dropped(3, 300);
    let quiet = tokio::time::timeout(Duration::from_millis(100), got.recv()).await;
    assert!(quiet.is_err(), "drops alone wait for company: {quiet:?}");
    tokio::time::timeout(Duration::from_secs(1), feed.flush())
        .await
        .unwrap()
        .unwrap();
    let (_, told) = got.try_recv().unwrap();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0]["record"]["droppedRecords"], 3);
    assert_eq!(told[0]["record"]["droppedBytes"], 300);
}

#[tokio::test]
async fn an_unreachable_listener_costs_the_batch_and_then_recovers() {
    // A port nobody listens on, then the same port listening.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let destination = Destination::Http {
        port,
        host: format!("sandbox:{port}"),
        path: "/".into(),
    };
    let (feed, _task) = feed_to(destination, small(1000, 1 << 20, 25));
    assert!(feed.offer(record(0)));
    // 3 attempts 10 ms and 20 ms apart: dropped well within this.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let socket = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    assert!(feed.offer(record(1)));
    let (stream, _) = socket.accept().await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        reader.read_line(&mut head).await.unwrap();
    }
    assert!(head.starts_with("POST / HTTP/1.1\r\n"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    tokio::io::AsyncReadExt::read_exact(&mut reader, &mut body)
        .await
        .unwrap();
    let records: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(records[0]["type"], "platform.logsDropped");
    assert!(
        records[0]["record"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("could not send events: cannot connect to the listener on port"),
        "{records:?}"
    );
    assert_eq!(lines(&records), ["line 1"]);
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_a_failed_attempt() {
    let (addr, _got) = listener(200, Duration::from_secs(30)).await;
    let (feed, _task) = spawn(
        "ext".into(),
        http(addr),
        small(1000, 1 << 20, 25),
        AUDIENCE,
        false,
        Arc::new(Loopback),
        Retry {
            attempts: 2,
            backoff: Duration::from_millis(10),
            timeout: Duration::from_millis(100),
        },
    );
    let started = Instant::now();
    assert!(feed.offer(record(0)));
    // Both attempts time out; the flush answers once the batch is dropped.
    tokio::time::timeout(Duration::from_secs(2), feed.flush())
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn a_flush_sends_what_is_buffered_at_once() {
    let (addr, mut got) = listener(200, Duration::ZERO).await;
    let (feed, _task) = feed_to(http(addr), small(1000, 1 << 20, 30_000));
    for n in 0..5 {
        assert!(feed.offer(record(n)));
    }
    tokio::time::timeout(Duration::from_secs(1), feed.flush())
        .await
        .unwrap()
        .unwrap();
    let (_, batch) = got.try_recv().unwrap();
    assert_eq!(batch.len(), 5);
}

#[tokio::test]
async fn tcp_gets_newline_delimited_json_on_one_connection() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let (feed, _task) = feed_to(Destination::Tcp { port }, small(5, 1 << 20, 25));
    for n in 0..5 {
        assert!(feed.offer(record(n)));
    }
    let (stream, _) = socket.accept().await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream).lines();
    for n in 0..7 {
        let line = reader.next_line().await.unwrap().unwrap();
        let got: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(got["record"], format!("line {n}"));
        if n == 4 {
            // A second batch, on the same connection.
            assert!(feed.offer(record(5)) && feed.offer(record(6)));
        }
    }
    // One connection carried them all.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), socket.accept())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_kept_tcp_connection_the_listener_closed_is_not_written_to() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let (feed, _task) = feed_to(Destination::Tcp { port }, small(1000, 1 << 20, 25));
    assert!(feed.offer(record(0)));
    let (stream, _) = socket.accept().await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).await.unwrap();
    assert!(first.contains("line 0"), "{first}");
    // The listener hangs up; the next batch must not go down that connection (the write
    // would succeed once and the records vanish) but on a new one.
    drop(reader);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(feed.offer(record(1)));
    let (stream, _) = tokio::time::timeout(Duration::from_secs(2), socket.accept())
        .await
        .expect("a new connection for the next batch")
        .unwrap();
    let line = tokio::io::BufReader::new(stream)
        .lines()
        .next_line()
        .await
        .unwrap()
        .unwrap();
    let got: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(got["record"], "line 1");
}

#[test]
fn bodies_are_a_json_array_and_tcp_is_one_record_a_line() {
    let records = [
        Bytes::from_static(b"{\"a\":1}"),
        Bytes::from_static(b"\"x\""),
    ];
    assert_eq!(&json_array(&records)[..], b"[{\"a\":1},\"x\"]");
    assert_eq!(&json_array(&[])[..], b"[]");
    assert_eq!(&json_lines(&records)[..], b"{\"a\":1}\n\"x\"\n");
}

/// Deliveries run on the courier's thread, not on the runtime that offers the records: a batch
/// still goes out while the offering runtime's only worker is blocked, as a worker preempted by
/// the listener its batch woke would be (`courier.rs`). On the offering runtime, the batch
/// would wait until the worker is free again.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_goes_out_while_the_runtime_that_offered_it_is_blocked() {
    // The listener runs on a runtime of its own: this one is about to block.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let (addr, mut got) = listener(200, Duration::ZERO).await;
            addr_tx.send(addr).unwrap();
            while let Some((_, records)) = got.recv().await {
                if got_tx.send(records).is_err() {
                    return;
                }
            }
        });
    });
    let addr = addr_rx.recv().unwrap();
    let (feed, _task) = feed_to(http(addr), small(2, 1 << 20, 60_000));
    assert!(feed.offer(record(0)));
    assert!(feed.offer(record(1)));
    // Blocks this runtime's one thread until the batch arrives.
    let batch = got_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no batch while the runtime that offered it was blocked");
    assert_eq!(lines(&batch), ["line 0", "line 1"]);
}
