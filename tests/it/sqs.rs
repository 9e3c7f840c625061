//! Amazon SQS against an implementation nobody here wrote: moto's server mode (PyPI, pinned),
//! started by each test on a free loopback port and killed when the test ends; queues are
//! made, filled and read with boto3 (a dependency of moto's). lamina meets it as it would meet
//! SQS: destinations of asynchronous invocations, and event source mappings (batches, partial
//! batch failures, redrive to a dead-letter queue after the visibility timeout, a queue that
//! is not there).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::server::{Server, send_events};
use crate::shared::{pip_install, target_dir};
use crate::support::python_ric;

/// moto's version; its `server` extra brings Flask (and boto3, which the tests use too).
const MOTO: &str = "moto[server]==5.2.5";

/// The account moto answers for with any key that is not a 12-digit number.
const ACCOUNT: &str = "123456789012";

/// moto with its server extra, installed once per target directory by pip.
/// Returns (python interpreter, site directory).
fn moto_site() -> (PathBuf, PathBuf) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (python, _) = python_ric();
    let site = target_dir()
        .join("test-deps")
        .join("python-moto-server-5.2.5");
    if !site.join("moto").exists() {
        let staging = tempfile::tempdir_in(target_dir()).expect("staging dir");
        pip_install(&python, staging.path(), &[MOTO]);
        std::fs::create_dir_all(site.parent().unwrap()).unwrap();
        let _ = std::fs::rename(staging.keep(), &site);
    }
    (python, site)
}

/// A moto server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    addr: SocketAddr,
    python: PathBuf,
    site: PathBuf,
    log: TempDir,
}

impl Moto {
    fn start() -> Moto {
        let (python, site) = moto_site();
        let port = free_port();
        let log = tempfile::tempdir().unwrap();
        let out = std::fs::File::create(log.path().join("moto.log")).unwrap();
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("PYTHONPATH", &site)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start moto");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut moto = Moto {
            child,
            addr,
            python,
            site,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited ({status}):\n{}", moto.log());
            }
            assert!(
                Instant::now() < deadline,
                "moto did not listen:\n{}",
                moto.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn url(&self, queue: &str) -> String {
        format!("{}/{ACCOUNT}/{queue}", self.endpoint())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path().join("moto.log")).unwrap_or_default()
    }

    /// Runs a Python `script` with boto3's SQS client as `sqs`, `ENDPOINT` set; the JSON it
    /// prints.
    fn boto3(&self, script: &str) -> Value {
        const PRELUDE: &str = "import json, os, sys, time\nimport boto3\n\
            sqs = boto3.client('sqs', endpoint_url=os.environ['ENDPOINT'], region_name='us-east-1', \
            aws_access_key_id='testing', aws_secret_access_key='testing')\n";
        let output = Command::new(&self.python)
            .args(["-c", &format!("{PRELUDE}{script}")])
            .env("PYTHONPATH", &self.site)
            .env("ENDPOINT", self.endpoint())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}\nmoto:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
    }

    /// Makes a queue with `attributes`; its URL.
    fn create_queue(&self, name: &str, attributes: Value) -> String {
        let made = self.boto3(&format!(
            "print(json.dumps(sqs.create_queue(QueueName={name:?}, Attributes=json.loads({:?}))['QueueUrl']))",
            attributes.to_string()
        ));
        made.as_str().unwrap().to_owned()
    }

    /// Sends each body (with a message attribute `n`, its index).
    fn send(&self, queue: &str, bodies: &[String]) {
        self.boto3(&format!(
            "for i, body in enumerate(json.loads({:?})):\n    \
             sqs.send_message(QueueUrl={:?}, MessageBody=body, MessageAttributes={{'n': {{'DataType': 'Number', 'StringValue': str(i)}}}})\n\
             print('null')",
            serde_json::to_string(bodies).unwrap(),
            self.url(queue)
        ));
    }

    /// Receives every message that becomes visible within `wait`, deleting each; their
    /// bodies.
    fn drain(&self, queue: &str, wait: Duration) -> Vec<String> {
        let got = self.boto3(&format!(
            "bodies = []\nend = time.time() + {}\n\
             while time.time() < end:\n    \
                 r = sqs.receive_message(QueueUrl={:?}, MaxNumberOfMessages=10, WaitTimeSeconds=1)\n    \
                 for m in r.get('Messages', []):\n        \
                     bodies.append(m['Body'])\n        \
                     sqs.delete_message(QueueUrl={:?}, ReceiptHandle=m['ReceiptHandle'])\n\
             print(json.dumps(bodies))",
            wait.as_secs_f64(),
            self.url(queue),
            self.url(queue)
        ));
        serde_json::from_value(got).unwrap()
    }

    /// Visible plus in-flight messages.
    fn count(&self, queue: &str) -> u64 {
        let got = self.boto3(&format!(
            "a = sqs.get_queue_attributes(QueueUrl={:?}, AttributeNames=['All'])['Attributes']\n\
             print(int(a['ApproximateNumberOfMessages']) + int(a['ApproximateNumberOfMessagesNotVisible']))",
            self.url(queue)
        ));
        got.as_u64().unwrap()
    }

    /// Waits until `queue` holds `n` messages (visible or not).
    fn wait_for_count(&self, queue: &str, n: u64, server: &Server) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.count(queue);
            if now == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{queue} holds {now} messages, not {n}:\n{}",
                server.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory with one Python function per `(name, app.py)`, and the `lamina.toml` that
/// serves them with the managed runtime (`extra` appended to each table, then `tail`).
fn project(functions: &[(&str, &str, &str)], tail: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::new();
    for (name, app, extra) in functions {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("app.py"), app).unwrap();
        config.push_str(&format!(
            "[functions.{name}]\ncode = \"{name}\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n{extra}\n\n"
        ));
    }
    config.push_str(tail);
    std::fs::write(dir.path().join("lamina.toml"), config).unwrap();
    dir
}

/// `lamina serve` of `dir`, calling SQS as the tests' boto3 does.
fn serve(dir: TempDir, moto: &Moto) -> Server {
    let endpoint = PathBuf::from(moto.endpoint());
    let env: [(&str, &Path); 5] = [
        ("AWS_ACCESS_KEY_ID", Path::new("testing")),
        ("AWS_SECRET_ACCESS_KEY", Path::new("testing")),
        ("AWS_REGION", Path::new("us-east-1")),
        ("AWS_ENDPOINT_URL_SQS", &endpoint),
        ("RUST_LOG", Path::new("warn")),
    ];
    Server::start_with_env(dir, &["--sandbox", "process"], &env)
}

/// The JSON documents the functions printed after `marker` in the server's log.
fn printed(logs: &str, marker: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| l.split_once(marker))
        .map(|(_, doc)| serde_json::from_str(doc).unwrap())
        .collect()
}

const WORKER: &str = "def handler(event, context):\n    if event.get('fail'):\n        raise ValueError('no')\n    return {'done': event['n']}\n";

#[tokio::test(flavor = "multi_thread")]
async fn destinations_to_sqs_queues_get_lambdas_records() {
    let moto = Moto::start();
    let ok = moto.create_queue("ok-records", json!({}));
    moto.create_queue("failed-records", json!({}));
    // One destination by URL, the other by ARN (resolved at AWS_ENDPOINT_URL_SQS).
    let extra = format!(
        "maximum_retry_attempts = 0\non_success = {ok:?}\n\
         on_failure = \"arn:aws:sqs:us-east-1:{ACCOUNT}:failed-records\""
    );
    let server = serve(project(&[("worker", WORKER, &extra)], ""), &moto);
    let succeeded = send_events(&server, "worker", 1, r#"{"n": 7}"#).await;
    let failed = send_events(&server, "worker", 1, r#"{"fail": true}"#).await;
    let records = moto.drain("ok-records", Duration::from_secs(20));
    assert_eq!(records.len(), 1, "{records:?}\n{}", server.logs());
    let record: Value = serde_json::from_str(&records[0]).unwrap();
    crate::server::assert_success_record(&record, &succeeded[0]);
    let records = moto.drain("failed-records", Duration::from_secs(20));
    assert_eq!(records.len(), 1, "{records:?}\n{}", server.logs());
    let record: Value = serde_json::from_str(&records[0]).unwrap();
    assert_eq!(record["requestContext"]["requestId"], failed[0].as_str());
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["responsePayload"]["errorType"], "ValueError");
    assert_eq!(record["requestPayload"], json!({"fail": true}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_queue_that_does_not_exist_is_retried_then_reported() {
    let moto = Moto::start();
    let missing = moto.url("no-such-queue");
    let extra = format!("maximum_retry_attempts = 0\non_failure = {missing:?}");
    let server = serve(project(&[("worker", WORKER, &extra)], ""), &moto);
    let failed = send_events(&server, "worker", 1, r#"{"fail": true}"#).await;
    let logs = server.wait_for_log("not delivered after 3 attempts", 1);
    let line = logs
        .lines()
        .find(|l| l.contains("not delivered after"))
        .unwrap();
    assert!(
        line.contains(&format!("SQS queue {missing}: no such queue")),
        "{line}"
    );
    // The record is in the line, whole (the log's fields follow it).
    let after = line.split_once("the record: ").unwrap().1;
    let record: Value = serde_json::Deserializer::from_str(after)
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(record["requestContext"]["requestId"], failed[0].as_str());
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    // It was tried more than once.
    assert!(logs.matches("trying again in").count() >= 2, "{logs}");
    let metrics = server.get("/lamina/metrics").await;
    let text = String::from_utf8_lossy(metrics.body()).into_owned();
    let failures = text
        .lines()
        .find(|l| l.starts_with("lamina_destination_delivery_failures_total{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(failures.contains("function_name=\"worker\""), "{failures}");
    let count: f64 = failures.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{failures}");
}

/// Prints what each batch looked like, and answers as the message bodies ask.
const CONSUMER: &str = r#"
import hashlib, json

def handler(event, context):
    records = event["Records"]
    print("BATCH " + json.dumps([{
        "id": r["messageId"], "body": r["body"], "source": r["eventSource"],
        "arn": r["eventSourceARN"], "region": r["awsRegion"],
        "handle": r["receiptHandle"], "count": r["attributes"]["ApproximateReceiveCount"],
        "sent": r["attributes"].get("SentTimestamp"),
        "md5_ok": hashlib.md5(r["body"].encode()).hexdigest() == r["md5OfBody"],
        "n": r["messageAttributes"].get("n", {}).get("stringValue"),
    } for r in records]))
    if any(r["body"] == "always-fail" for r in records):
        raise ValueError("this batch fails")
    failures = [{"itemIdentifier": r["messageId"]} for r in records
                if r["body"].startswith("bad") and r["attributes"]["ApproximateReceiveCount"] == "1"]
    return {"batchItemFailures": failures}
"#;

fn event_source(queue: &str, extra: &str) -> String {
    format!(
        "[[event_sources]]\ntype = \"sqs\"\nqueue = {queue:?}\nfunction = \"consumer\"\n{extra}\n"
    )
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_source_mapping_invokes_in_batches_and_empties_the_queue() {
    let moto = Moto::start();
    let jobs = moto.create_queue("jobs", json!({}));
    moto.send("jobs", &bodies("job-", 25));
    let tail = event_source(&jobs, "batch_size = 10\nmaximum_batching_window = 1");
    let server = serve(project(&[("consumer", CONSUMER, "")], &tail), &moto);
    assert!(
        server.logs().contains(&format!(
            "SQS event source: {jobs} -> consumer (batch size 10"
        )),
        "{}",
        server.logs()
    );
    moto.wait_for_count("jobs", 0, &server);
    let batches = printed(&server.logs(), "BATCH ");
    let records: Vec<&Value> = batches.iter().flat_map(|b| b.as_array().unwrap()).collect();
    let mut seen: Vec<String> = records
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    let mut sent = bodies("job-", 25);
    sent.sort();
    assert_eq!(seen, sent, "each message once:\n{}", server.logs());
    assert!(
        batches.len() >= 3 && batches.iter().all(|b| b.as_array().unwrap().len() <= 10),
        "batches of at most 10: {batches:?}"
    );
    assert!(
        batches.iter().any(|b| b.as_array().unwrap().len() > 1),
        "some batch holds several messages: {batches:?}"
    );
    for r in records {
        assert_eq!(r["source"], "aws:sqs", "{r}");
        assert_eq!(
            r["arn"],
            format!("arn:aws:sqs:us-east-1:{ACCOUNT}:jobs"),
            "{r}"
        );
        assert_eq!(r["region"], "us-east-1", "{r}");
        assert_eq!(r["count"], "1", "{r}");
        assert!(!r["handle"].as_str().unwrap().is_empty(), "{r}");
        assert!(r["sent"].is_string(), "{r}");
        assert_eq!(r["md5_ok"], true, "{r}");
        let index: usize = r["body"].as_str().unwrap()["job-".len()..].parse().unwrap();
        assert_eq!(
            r["n"],
            index.to_string(),
            "message attributes are passed: {r}"
        );
    }
    // Stopping: the pollers end with the server, which exits cleanly.
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn report_batch_item_failures_returns_only_the_failed_messages() {
    let moto = Moto::start();
    let jobs = moto.create_queue("jobs", json!({"VisibilityTimeout": "5"}));
    let mut sent = bodies("good-", 4);
    sent.extend(bodies("bad-", 2));
    moto.send("jobs", &sent);
    let tail = event_source(
        &jobs,
        "batch_size = 10\nmaximum_batching_window = 1\nreport_batch_item_failures = true",
    );
    let server = serve(project(&[("consumer", CONSUMER, "")], &tail), &moto);
    // Each bad message comes back once, after the visibility timeout, and then succeeds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records: Vec<Value> = printed(&server.logs(), "BATCH ")
            .iter()
            .flat_map(|b| b.as_array().unwrap().clone())
            .collect();
        if records.len() >= 8 {
            break records;
        }
        assert!(Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    moto.wait_for_count("jobs", 0, &server);
    let deliveries = |body: &str| {
        records
            .iter()
            .filter(|r| r["body"] == body)
            .map(|r| r["count"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    for good in bodies("good-", 4) {
        assert_eq!(deliveries(&good), ["1"], "{good}: {records:?}");
    }
    for bad in bodies("bad-", 2) {
        assert_eq!(deliveries(&bad), ["1", "2"], "{bad}: {records:?}");
    }
    assert_eq!(records.len(), 8, "{records:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_batches_end_in_the_queues_dead_letter_queue() {
    let moto = Moto::start();
    moto.create_queue("jobs-dlq", json!({}));
    let redrive = json!({
        "deadLetterTargetArn": format!("arn:aws:sqs:us-east-1:{ACCOUNT}:jobs-dlq"),
        "maxReceiveCount": "2",
    });
    let jobs = moto.create_queue(
        "jobs",
        json!({"VisibilityTimeout": "1", "RedrivePolicy": redrive.to_string()}),
    );
    moto.send("jobs", &vec!["always-fail".to_owned(); 3]);
    let tail = event_source(&jobs, "batch_size = 10\nmaximum_batching_window = 1");
    let server = serve(project(&[("consumer", CONSUMER, "")], &tail), &moto);
    moto.wait_for_count("jobs-dlq", 3, &server);
    moto.wait_for_count("jobs", 0, &server);
    // Each was received (and failed) twice before the queue moved it.
    let records: Vec<Value> = printed(&server.logs(), "BATCH ")
        .iter()
        .flat_map(|b| b.as_array().unwrap().clone())
        .collect();
    let second: Vec<&Value> = records.iter().filter(|r| r["count"] == "2").collect();
    assert_eq!(second.len(), 3, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r["count"] == "1" || r["count"] == "2"),
        "{records:?}"
    );
    let dead = moto.drain("jobs-dlq", Duration::from_secs(2));
    assert_eq!(dead, vec!["always-fail"; 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mapping_to_a_missing_queue_is_reported_and_the_rest_keeps_serving() {
    let moto = Moto::start();
    let missing = moto.url("not-there");
    let unreachable = format!("http://127.0.0.1:{}/{ACCOUNT}/jobs", free_port());
    let tail = format!(
        "{}{}",
        event_source(&missing, ""),
        event_source(&unreachable, "")
    );
    let server = serve(project(&[("consumer", CONSUMER, "")], &tail), &moto);
    // Each is asked again (with backoff), and each failure names the queue.
    server.wait_for_log(&format!("SQS queue {missing}: no such queue"), 2);
    let logs = server.wait_for_log(&format!("SQS queue {unreachable}: cannot reach"), 1);
    assert!(logs.contains("Connection refused"), "{logs}");
    assert!(logs.contains("trying again in"), "{logs}");
    // Synchronous invocations go on.
    let answer = server
        .invoke(
            "consumer",
            &[],
            r#"{"Records": [{"messageId": "m", "body": "hi", "eventSource": "aws:sqs",
                "eventSourceARN": "a", "awsRegion": "r", "receiptHandle": "h",
                "md5OfBody": "49f68a5c8493ec2c0bf489821c21fc3b",
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}}]}"#,
        )
        .await;
    assert_eq!(answer.status(), 200, "{}", server.logs());
    let body: Value = serde_json::from_slice(answer.body()).unwrap();
    assert_eq!(body, json!({"batchItemFailures": []}));
    let (clean, logs) = server.stop();
    assert!(clean && !logs.contains("panicked"), "{logs}");
}

/// Says how big each batch was, not what was in it (its bodies are a quarter of a megabyte).
const SIZER: &str = r#"
import json

def handler(event, context):
    records = event["Records"]
    print("SIZE " + json.dumps({
        "ids": [r["body"][:12] for r in records],
        "bytes": len(json.dumps(event, separators=(",", ":"))),
    }))
"#;

/// Lambda's invocation payload is at most 6 MB: a batch that would pass it is cut, and the
/// rest goes in the next one, each message once.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_cut_before_it_passes_six_megabytes_and_the_rest_follows() {
    let moto = Moto::start();
    let jobs = moto.create_queue("jobs", json!({"VisibilityTimeout": "60"}));
    // 30 messages of 240,000 bytes: 7.2 MB in all, within SQS's 256 KiB per message (made
    // by Python: one is longer than an argument may be).
    moto.boto3(&format!(
        "for i in range(30):\n    \
         sqs.send_message(QueueUrl={jobs:?}, MessageBody=('big-%02d' % i).ljust(12) + 'x' * (240000 - 12))\n\
         print('null')"
    ));
    // Room for all 30 by count, and a window long enough to gather them: only size cuts.
    let tail = format!(
        "[[event_sources]]\ntype = \"sqs\"\nqueue = {jobs:?}\nfunction = \"sizer\"\n\
         batch_size = 100\nmaximum_batching_window = 10\n"
    );
    let server = serve(project(&[("sizer", SIZER, "")], &tail), &moto);
    moto.wait_for_count("jobs", 0, &server);
    let batches = printed(&server.logs(), "SIZE ");
    assert!(batches.len() >= 2, "cut into several: {batches:?}");
    for batch in &batches {
        let bytes = batch["bytes"].as_u64().unwrap();
        assert!(bytes <= 6 * 1024 * 1024, "a batch of {bytes} bytes");
    }
    assert!(
        batches[0]["ids"].as_array().unwrap().len() > 10,
        "the first batch was filled up to the limit, not cut by count: {batches:?}"
    );
    let mut seen: Vec<String> = batches
        .iter()
        .flat_map(|b| b["ids"].as_array().unwrap().clone())
        .map(|id| id.as_str().unwrap().trim().to_owned())
        .collect();
    seen.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("big-{i:02}")).collect();
    expected.sort();
    assert_eq!(seen, expected, "each message once");
}
