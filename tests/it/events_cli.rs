//! `lamina events ls | replay | purge` against a real `lamina serve` on the same state
//! directory: the queue listed while the server runs, a purge refused until it has stopped,
//! and a dead-letter file replayed into a running server.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{Server, send_events};
use crate::shared::Postgres;
use crate::support::{function_with, lamina_in, program, text};

/// `lamina events ARGS` in `dir`: its exit code, stdout and stderr.
fn events(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = lamina_in(dir, &[&["events"], args].concat());
    (status.code(), text(&stdout), text(&stderr))
}

/// `lamina events ls --json` for `function`'s entry.
fn ls_json(dir: &Path, state: &str, function: &str) -> Value {
    let (code, out, err) = events(dir, &["ls", "--state-dir", state, "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let all: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    all["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == function)
        .cloned()
        .unwrap_or(Value::Null)
}

/// `ls --function`'s table has a line for each of `ids`: 1 attempt made, the next due later,
/// the 18-byte payload `{"action":"error"}`.
fn assert_waiting_after_one_attempt(out: &str, ids: &[String]) {
    for id in ids {
        let line = out
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} in {out}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[2], "1", "attempts: {line}");
        assert!(line.ends_with(" 18 B"), "payload size: {line}");
        assert!(line.contains("(in "), "due later: {line}");
    }
}

/// Waits for a whole first line in `path` (the file is made, then the line written).
fn first_lines(path: &Path, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') && text.lines().count() >= n {
            return text;
        }
        assert!(Instant::now() < deadline, "{} lines of {path:?}: {text}", n);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_shows_events_waiting_to_retry_while_serve_runs_and_purge_waits_for_it_to_stop() {
    let probe = function_with(&program("probe"));
    let config = format!(
        "[functions.failing]\ncode = {:?}\n\n[serve]\nstate_dir = \"state\"\nretry_delay = 30\n",
        probe.path().display().to_string()
    );
    let mut server = Server::start(&config, &["--sandbox", "process"]);
    // Kept past the server's stop, when the purge runs.
    let kept = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let dir = kept.path().to_owned();
    let state = dir.join("state").display().to_string();
    let ids = send_events(&server, "failing", 2, r#"{"action":"error"}"#).await;
    for id in &ids {
        server.wait_for_log(&format!("END RequestId: {id}"), 1);
    }
    // The retries are recorded without waiting: they show once committed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let failing = loop {
        let failing = ls_json(&dir, &state, "failing");
        if failing["retrying"] == 2 {
            break failing;
        }
        assert!(Instant::now() < deadline, "{failing}\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(failing["queued"], 0, "{failing}");
    assert_eq!(failing["retrying_by_attempts"]["1"], 2, "{failing}");
    assert_eq!(failing["failed"], 0, "{failing}");
    // The table, the state directory found through lamina.toml's [serve] state_dir.
    let (code, out, err) = events(&dir, &["ls"]);
    assert_eq!(code, Some(0), "{err}");
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("failing "))
        .unwrap_or_else(|| panic!("{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["failing", "0", "2", "0"], "{out}");
    assert!(out.contains("(2 after 1 attempt)"), "{out}");
    // One line per event.
    let (code, out, err) = events(
        &dir,
        &["ls", "--state-dir", &state, "--function", "failing"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_waiting_after_one_attempt(&out, &ids);
    // Purge refuses while the server holds the store, with --yes or without.
    for args in [
        &["purge", "--state-dir", &state][..],
        &["purge", "--state-dir", &state, "--yes"],
    ] {
        let (code, out, err) = events(&dir, args);
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains("a lamina serve is running on the state directory")
                && err.contains(&state),
            "{err}"
        );
    }
    assert_eq!(ls_json(&dir, &state, "failing")["retrying"], 2);
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
    // Stopped: without --yes it says what it would delete, and deletes nothing.
    let (code, out, err) = events(&dir, &["purge", "--state-dir", &state]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("would delete 2 events"), "{out}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(ls_json(&dir, &state, "failing")["retrying"], 2);
    let (code, out, err) = events(
        &dir,
        &[
            "purge",
            "--state-dir",
            &state,
            "--function",
            "other",
            "--yes",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("nothing to purge"), "{out}");
    let (code, out, err) = events(&dir, &["purge", "--state-dir", &state, "--yes"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("deleted 2 events"), "{out}");
    let failing = ls_json(&dir, &state, "failing");
    assert_eq!(
        (&failing["queued"], &failing["retrying"]),
        (&0.into(), &0.into()),
        "{failing}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_of_a_dead_letter_file_runs_the_function_again_with_the_same_payload() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("worker")).unwrap();
    std::fs::write(
        dir.path().join("worker/app.py"),
        "import json\ndef handler(event, context):\n    print('GOT ' + json.dumps(event, sort_keys=True))\n    raise ValueError('no')\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        "[functions.worker]\ncode = \"worker\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
         maximum_retry_attempts = 0\n",
    )
    .unwrap();
    let mut server = Server::start_in(dir, &["--sandbox", "process"]);
    let kept = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let dir = kept.path().to_owned();
    let state = dir.join("state").display().to_string();
    let payload = r#"{"fail": true, "n": 1}"#;
    let first = send_events(&server, "worker", 1, payload).await;
    let letters = dir.join("state/dead-letters/worker.jsonl");
    let record = first_lines(&letters, 1);
    assert!(record.contains(first[0].as_str()), "{record}");
    assert_eq!(ls_json(&dir, &state, "worker")["failed"], 1);
    // The dead letter, a line that is no record, and a record of a function not served.
    let replay = dir.join("replay.jsonl");
    let missing = record.replace(":function:worker:", ":function:missing:");
    std::fs::write(&replay, format!("{record}not JSON at all\n{missing}")).unwrap();
    let (code, out, err) = events(&dir, &["replay", "replay.jsonl", "--dry-run"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!(
            "replay.jsonl:1: would replay {} to worker: {{\"fail\":true,\"n\":1}}",
            first[0]
        )),
        "{out}"
    );
    assert!(out.contains("would replay 2, failed 1"), "{out}");
    let endpoint = format!("http://{}", server.addr);
    let (code, out, err) = events(
        &dir,
        &[
            "replay",
            "replay.jsonl",
            "--endpoint",
            &endpoint,
            "--remove",
        ],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!(
            "replay.jsonl:1: replayed {} to worker as ",
            first[0]
        )),
        "{out}"
    );
    assert!(err.contains("replay.jsonl:2: skipped: not JSON"), "{err}");
    assert!(
        err.contains("replay.jsonl:3: failed:")
            && err.contains("404")
            && err.contains("ResourceNotFoundException"),
        "{err}"
    );
    assert!(out.contains("replayed 1, failed 2"), "{out}");
    // Only the replayed record left the file.
    assert_eq!(
        std::fs::read_to_string(&replay).unwrap(),
        format!("not JSON at all\n{missing}")
    );
    // The function ran again, with the same event, under the new request id.
    let again = out
        .lines()
        .find_map(|l| l.split(" to worker as ").nth(1))
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(again, first[0]);
    let logs = server.wait_for_log(&format!("END RequestId: {again}"), 1);
    assert_eq!(
        logs.matches(r#"GOT {"fail": true, "n": 1}"#).count(),
        2,
        "{logs}"
    );
    // It failed again: a second dead letter, and ls counts both.
    let records = first_lines(&letters, 2);
    assert!(
        records.lines().nth(1).unwrap().contains(&again),
        "{records}"
    );
    assert_eq!(ls_json(&dir, &state, "worker")["failed"], 2);
    // No server there: each record fails, naming the address.
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
    let (code, out, err) = events(
        &dir,
        &[
            "replay",
            "state/dead-letters/worker.jsonl",
            "--endpoint",
            &endpoint,
        ],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("cannot reach lamina serve at {endpoint}")),
        "{err}"
    );
    assert!(out.contains("replayed 0, failed 2"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_reads_the_shared_postgres_queue_and_purge_refuses_it_by_name() {
    let postgres = Postgres::start();
    // A password in the URL, which `ls` never shows (the test's server trusts loopback).
    let url = postgres.url().replace("lamina@", "lamina:s3cret@");
    let probe = function_with(&program("probe"));
    let config = format!(
        "[functions.failing]\ncode = {:?}\n\n[serve]\nstate_dir = \"state\"\nretry_delay = 30\n\
         queue = {url:?}\n",
        probe.path().display().to_string()
    );
    // Before any server has made the queue's table: nothing queued, and no table made.
    let before = tempfile::tempdir().unwrap();
    std::fs::write(before.path().join("lamina.toml"), &config).unwrap();
    let (code, out, err) = events(before.path(), &["ls", "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let all: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(all["functions"][0]["function"], "failing", "{all}");
    assert_eq!(all["functions"][0]["queued"], 0, "{all}");
    assert_eq!(all["functions"][0]["retrying"], 0, "{all}");
    let (code, out, err) = events(before.path(), &["ls", "--function", "failing"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("no events of failing queued or waiting to retry in postgres://lamina@")
            && !out.contains("s3cret"),
        "{out}"
    );
    let server = Server::start(&config, &["--sandbox", "process"]);
    let dir = server.dir.path().to_owned();
    let ids = send_events(&server, "failing", 2, r#"{"action":"error"}"#).await;
    for id in &ids {
        server.wait_for_log(&format!("END RequestId: {id}"), 1);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = loop {
        let (code, out, err) = events(&dir, &["ls", "--json"]);
        assert_eq!(code, Some(0), "{out}{err}");
        let all: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let failing = all["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == "failing")
            .cloned()
            .unwrap_or(Value::Null);
        if failing["retrying"] == 2 {
            assert_eq!(failing["queued"], 0, "{failing}");
            assert_eq!(failing["retrying_by_attempts"]["1"], 2, "{failing}");
            break all;
        }
        assert!(Instant::now() < deadline, "{all}\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    let queue = all["queue"].as_str().unwrap_or_default();
    assert!(
        queue.starts_with("postgres://lamina@127.0.0.1:") && !queue.contains("s3cret"),
        "{all}"
    );
    // One line per event, from the table.
    let (code, out, err) = events(&dir, &["ls", "--function", "failing"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!out.contains("s3cret"), "{out}");
    assert_waiting_after_one_attempt(&out, &ids);
    // Purge is the embedded store's only: refused like any error (exit 2), naming the
    // configuration and PostgreSQL.
    let (code, out, err) = events(&dir, &["purge", "--yes"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("lamina.toml") && err.contains("PostgreSQL ([serve] queue)"),
        "{err}"
    );
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
}
