//! The durable asynchronous queue: how fast `lamina serve` (release build) accepts `Event`
//! invocations at 32 connections with every accept in SQLite before its `202`, against the same
//! run with durability off (`LAMINA_TEST_QUEUE=volatile`, a test switch); and, after a
//! `kill -9` with that backlog stored, how long a restart takes to the first resumed event.
//! Run with `cargo bench -p lamina-tests --bench queue`; figures go in SPECIFICATION.md
//! (targets: ≥ 10,000/s with p99 ≤ 10 ms, ≥ 50% of the volatile run; kill to first replayed
//! event ≤ 1 s). Then the same load on the shared PostgreSQL queue (no target; for the note).
//! wrk is the load generator (installed with apt when missing).

#[path = "../shared.rs"]
#[allow(dead_code, reason = "the benchmark uses part of the shared helpers")]
mod shared;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A started `lamina serve`, and its log lines as they come.
fn serve(
    lamina: &Path,
    dir: &Path,
    env: &[(&str, &str)],
) -> (Child, SocketAddr, mpsc::Receiver<String>) {
    let mut child = Command::new(lamina)
        .current_dir(dir)
        .args(["serve", "--sandbox", "process", "--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lamina serve");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lamina serve did not start");
        };
        if let Some(addr) = line
            .split("on http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
        {
            return (child, addr.parse().unwrap(), rx);
        }
    }
}

/// wrk's requests per second and latency percentiles.
fn wrk(url: &str, script: &Path) -> (f64, String, String) {
    let out = Command::new("wrk")
        .args(["-t", "2", "-c", "32", "-d", "5s", "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.contains("Non-2xx"),
        "some events were refused:\n{text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{text}"))
    };
    (
        field("Requests/sec:").parse().unwrap(),
        field("50%"),
        field("99%"),
    )
}

fn main() {
    shared::ensure_wrk();
    let lamina = shared::lamina_binary();
    let probe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_probe"));
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("sink");
    std::fs::create_dir(&code).unwrap();
    std::fs::copy(&probe, code.join("bootstrap")).unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        "[functions.sink]\ncode = \"sink\"\nconcurrency = 1\n",
    )
    .unwrap();
    let script = dir.path().join("event.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = '{\"action\":\"echo\"}'\n\
         wrk.headers[\"X-Amz-Invocation-Type\"] = \"Event\"\n",
    )
    .unwrap();
    let url = |addr: SocketAddr| format!("http://{addr}/2015-03-31/functions/sink/invocations");

    println!("lamina serve, Event invocations accepted at 32 connections, wrk, 5 s per run:");
    let mut rates = Vec::new();
    for (label, env) in [
        (
            "volatile (no store)",
            vec![("LAMINA_TEST_QUEUE", "volatile")],
        ),
        ("durable (SQLite, fsynced)", vec![]),
    ] {
        let run_dir = tempfile::tempdir_in(dir.path()).unwrap();
        std::fs::copy(
            dir.path().join("lamina.toml"),
            run_dir.path().join("lamina.toml"),
        )
        .unwrap();
        std::os::unix::fs::symlink(&code, run_dir.path().join("sink")).unwrap();
        let (mut child, addr, rx) = serve(&lamina, run_dir.path(), &env);
        let (per_second, p50, p99) = wrk(&url(addr), &script);
        println!("  {label:<28} {per_second:>9.0}/s  p50 {p50:>8}  p99 {p99:>8}");
        rates.push(per_second);
        if env.is_empty() {
            // The backlog is in the store: kill -9, restart, time to the first resumed event.
            let _ = child.kill();
            let _ = child.wait();
            drop(rx);
            let started = Instant::now();
            let (mut again, _, rx) = serve(&lamina, run_dir.path(), &[]);
            let first = loop {
                let line = rx
                    .recv_timeout(Duration::from_secs(60))
                    .expect("a resumed event");
                if line.contains("START RequestId: ") {
                    break started.elapsed();
                }
            };
            println!("  kill -9, restart → first resumed event: {first:?}");
            let _ = again.kill();
            let _ = again.wait();
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    println!(
        "  durable / volatile: {:.0}%",
        100.0 * rates[1] / rates[0].max(1.0)
    );

    // The shared queue (design note 006): the same load on a PostgreSQL queue, a fresh
    // cluster of the host's server on loopback with its default durability (fsync on).
    let postgres = shared::Postgres::start();
    let run_dir = tempfile::tempdir_in(dir.path()).unwrap();
    std::fs::write(
        run_dir.path().join("lamina.toml"),
        format!(
            "[functions.sink]\ncode = \"sink\"\nconcurrency = 1\n\n[serve]\nqueue = \"{}\"\n",
            postgres.url()
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(&code, run_dir.path().join("sink")).unwrap();
    let (mut child, addr, _rx) = serve(&lamina, run_dir.path(), &[]);
    let (per_second, p50, p99) = wrk(&url(addr), &script);
    println!(
        "  {:<28} {per_second:>9.0}/s  p50 {p50:>8}  p99 {p99:>8}",
        "shared (PostgreSQL)"
    );
    let _ = child.kill();
    let _ = child.wait();
}
