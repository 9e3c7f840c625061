//! What Lambda extensions cost an invocation (issue 24), through `lamina serve` as users run it
//! (the release binary, a child process) under `--sandbox process` and `--sandbox jail`. Run
//! with `cargo bench -p lamina-tests --bench extensions` (as root for the jail; wrk, the load
//! generator, is installed with apt when missing). Figures go in SPECIFICATION.md.
//!
//! The function is echo-rs (the official `lambda_runtime` crate, tests/programs/) with a 1 KB
//! event, and its extensions are the official `lambda-extension` crate's, each in a ZIP layer:
//!
//! - (a) Warm latency at 1 connection, without and with `extension-next-rs` (registered for
//!   `INVOKE` and `SHUTDOWN`; it calls `/next` again at once). A client in this process sends
//!   invocations one after another over one keep-alive connection and times each. Rounds
//!   alternate between the two functions, so that load from elsewhere on the machine falls on
//!   both alike. Target: p50 with − p50 without ≤ 100 µs. Each function has concurrency 2:
//!   the caller has its answer when the runtime posts it, but the environment is free again
//!   only once the extension is back at `/next`; an invocation sent in that moment goes to a
//!   second warm environment, as Lambda would send it. Any 429 is retried after 100 µs,
//!   counted in that invocation's time, and the 429s are printed. A third row runs the
//!   extension's function with concurrency 1, where every such invocation is answered 429
//!   until the extension is back: the whole of an invocation's cycle, extension included.
//! - (b) Throughput at 8 connections (wrk, concurrency 8), without and with `telemetry-rs`
//!   subscribed to `platform` and `function` records (the crate's 1 s buffering), in quiet mode:
//!   it counts what it receives and says so at `SHUTDOWN`, so what is measured is lamina's
//!   delivery, not the subscriber writing records out again. Target, under the jail (lamina's
//!   default backend, where an environment's processes share its CPU weight as on Lambda):
//!   with ≥ 90 % of without. The process backend's figure is printed beside it and not held to
//!   the target: there every subscriber takes the host's CPU on equal terms with lamina and
//!   the runtimes (docs/design/007, "What telemetry costs", session 25).
//!   Runs alternate too, the first of each pair in turn (without, with; with, without; …), so
//!   that a machine speeding up or slowing down over the run weighs on both alike. Two figures:
//!   the ratio of each case's mean, and the median of the rounds' ratios (each of a pair run
//!   back to back), which one round on a machine briefly slowed by its neighbours moves least;
//!   beside them the lowest and highest of the rounds' ratios, the noise they are read against
//!   (on this VM 10 s of the same load can run 10 % faster or slower than the 10 s before).
//!   Where the difference goes is printed beside it: the CPU time per invocation of `lamina
//!   serve` itself and of the subscribers (from /proc), and how many of the records due (3 per
//!   invocation: `platform.start`, `platform.runtimeDone`, `platform.report`) arrived, and how
//!   many lamina said it dropped (`platform.logsDropped`): the ratio shows the cost of
//!   telemetry only while that is ~0.
//!
//! Environment: `BENCH_SANDBOXES` (default `process,jail`), `BENCH_INVOCATIONS` per function for
//! (a) (default 4000), `BENCH_SECONDS` per wrk run (default 10), `BENCH_ROUNDS` wrk runs per case
//! (default 4: an even number, so that each case goes first as often). A backend that fails is
//! reported and the others still run; the run then fails.

#[path = "../shared.rs"]
#[allow(dead_code, reason = "the benchmark uses part of the shared helpers")]
mod shared;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// The figures of one backend, for the closing table.
struct Figures {
    backend: String,
    without_p50: Duration,
    with_p50: Duration,
    without_p99: Duration,
    with_p99: Duration,
    too_many: u32,
    serial_p50: Duration,
    plain: Load,
    telemetry: Load,
    /// Each round's with / without, sorted.
    round_ratios: Vec<f64>,
    records: u64,
    due: u64,
    dropped: u64,
}

/// The mean of the wrk runs of one case.
#[derive(Default)]
struct Load {
    per_second: f64,
    /// `lamina serve`'s own CPU time per invocation, µs.
    lamina_cpu_us: f64,
    /// The subscribers' CPU time per invocation, µs.
    subscribers_cpu_us: f64,
    requests: u64,
}

fn main() {
    shared::ensure_wrk();
    let backends = std::env::var("BENCH_SANDBOXES").unwrap_or_else(|_| "process,jail".into());
    let invocations = env_number("BENCH_INVOCATIONS", 4000);
    let seconds = env_number("BENCH_SECONDS", 10);
    let rounds = env_number("BENCH_ROUNDS", 4);
    let lamina = shared::lamina_binary();
    let mut figures = Vec::new();
    let mut failed = Vec::new();
    for backend in backends.split(',').map(str::to_owned) {
        let lamina = lamina.clone();
        let run = std::thread::spawn({
            let backend = backend.clone();
            move || bench_backend(&lamina, &backend, invocations, seconds, rounds)
        });
        match run.join() {
            Ok(f) => figures.push(f),
            // The panic's message is on stderr already.
            Err(_) => failed.push(backend),
        }
    }
    println!();
    println!("issue 24, extensions' cost through lamina serve (echo-rs, 1 KB):");
    println!("  (a) 1 connection, without and with an extension that only calls /next:");
    println!(
        "  {:<8} {:>12} {:>12} {:>10} {:>12} {:>12} {:>6} {:>14}",
        "sandbox",
        "p50 without",
        "p50 with",
        "Δ p50",
        "p99 without",
        "p99 with",
        "429s",
        "p50 with, c=1"
    );
    for f in &figures {
        println!(
            "  {:<8} {:>12} {:>12} {:>10} {:>12} {:>12} {:>6} {:>14}",
            f.backend,
            micros(f.without_p50),
            micros(f.with_p50),
            delta(f.with_p50, f.without_p50),
            micros(f.without_p99),
            micros(f.with_p99),
            f.too_many,
            micros(f.serial_p50)
        );
    }
    println!("  (b) 8 connections, without and with one telemetry subscriber:");
    println!(
        "  {:<8} {:>11} {:>11} {:>6} {:>6} {:>13} {:>15} {:>15} {:>15} {:>9} {:>9}",
        "sandbox",
        "without",
        "with",
        "ratio",
        "median",
        "rounds",
        "lamina CPU/inv",
        "+ telemetry",
        "subscribers",
        "records",
        "dropped"
    );
    for f in &figures {
        println!(
            "  {:<8} {:>9.0}/s {:>9.0}/s {:>6.3} {:>6.3} {:>13} {:>12.1} µs {:>12.1} µs {:>12.1} µs {:>8.1}% {:>8.1}%",
            f.backend,
            f.plain.per_second,
            f.telemetry.per_second,
            f.telemetry.per_second / f.plain.per_second,
            median(&f.round_ratios),
            spread(&f.round_ratios),
            f.plain.lamina_cpu_us,
            f.telemetry.lamina_cpu_us,
            f.telemetry.subscribers_cpu_us,
            100.0 * f.records as f64 / f.due.max(1) as f64,
            100.0 * f.dropped as f64 / f.due.max(1) as f64
        );
    }
    println!(
        "  targets: (a) Δ p50 ≤ 100 µs; (b) ratio ≥ 0.90 under the jail, the process backend's \
         reported beside it (\"ratio\": of the means; \"median\": of the rounds' ratios, each \
         of a pair run back to back; \"rounds\": the lowest and the highest of them, this \
         machine's noise). \"records\": of those due (3 per \
         invocation), the share the subscribers received by their SHUTDOWN, and the share \
         platform.logsDropped said was dropped"
    );
    assert!(failed.is_empty(), "failed under: {failed:?}");
}

/// One backend: a `lamina serve` with the five functions, (a), (b), then a stop (which sends the
/// extensions `SHUTDOWN`, and the subscribers say how much they received).
fn bench_backend(
    lamina: &Path,
    backend: &str,
    invocations: usize,
    seconds: u32,
    rounds: usize,
) -> Figures {
    let dir = project(backend);
    let server = Serve::start(lamina, dir.path(), backend);
    let addr = server.addr;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let payload = Bytes::from(serde_json::json!({ "data": "x".repeat(1010) }).to_string());

    println!("--sandbox {backend}:");
    println!("  (a) warm invocations, 1 connection, {invocations} per function:");
    let (without, with, too_many, serial, serial_429s) = runtime.block_on(async {
        let mut client = Client::connect(addr).await;
        // Warm-up: the environments started, and their first, slower invocations past.
        for name in ["plain", "next", "next1"] {
            client.timed(name, &payload, 200, &server).await;
        }
        let (mut without, mut with, mut too_many) = (Vec::new(), Vec::new(), 0);
        let (mut serial, mut serial_429s) = (Vec::new(), 0);
        let round = (invocations / 8).max(1);
        for _ in 0..invocations.div_ceil(round) {
            without.extend(client.timed("plain", &payload, round, &server).await.0);
            let (samples, retried) = client.timed("next", &payload, round, &server).await;
            with.extend(samples);
            too_many += retried;
            let (samples, retried) = client.timed("next1", &payload, round, &server).await;
            serial.extend(samples);
            serial_429s += retried;
        }
        without.sort();
        with.sort();
        serial.sort();
        (without, with, too_many, serial, serial_429s)
    });
    println!("    without extension      {}", shared::summary(&without));
    println!(
        "    with extension-next-rs {}  ({too_many} answered 429 first)",
        shared::summary(&with)
    );
    println!(
        "    the same, concurrency 1 {}  ({serial_429s} answered 429 first)",
        shared::summary(&serial)
    );
    let (without_p50, with_p50) = (
        shared::percentile(&without, 0.5),
        shared::percentile(&with, 0.5),
    );
    println!(
        "    the extension adds {} at p50 (target ≤ 100 µs)",
        delta(with_p50, without_p50)
    );

    println!("  (b) wrk, 8 connections, {seconds} s per run, {rounds} runs per case:");
    let script = dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = {:?}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
            std::str::from_utf8(&payload).unwrap()
        ),
    )
    .unwrap();
    let url = |name: &str| format!("http://{addr}/2015-03-31/functions/{name}/invocations");
    // Records due to the subscribers: 3 per invocation of `telemetry8`, warm-ups included. A
    // floor: wrk counts the answers it read, not the up to 8 requests in flight that it
    // abandons at a run's end, which lamina still runs (and tells).
    let mut due = 0;
    for name in ["plain8", "telemetry8"] {
        // wrk counts a function error answered 200 (an extension that crashed) as a success:
        // one invocation checked first, then a warm-up that starts all 8 environments.
        runtime.block_on(async {
            let mut client = Client::connect(addr).await;
            client.timed(name, &payload, 1, &server).await;
        });
        let warm = wrk(&url(name), 8, 2, &script, &server);
        if name == "telemetry8" {
            due += 3 * (warm.requests + 1);
        }
    }
    let (mut plain, mut telemetry) = (Load::default(), Load::default());
    let mut round_ratios = Vec::new();
    for round in 0..rounds {
        // Which case goes first alternates (without, with; with, without; …): a machine that
        // speeds up or slows down over the run then weighs on both alike.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut round = [0.0; 2];
        for with_subscriber in order {
            if with_subscriber {
                let (run, load) = measured_wrk(&url("telemetry8"), seconds, &script, &server);
                round[1] = load.per_second;
                println!(
                    "    with telemetry-rs   {run}  lamina {:.1} µs, subscribers {:.1} µs CPU/invocation",
                    load.lamina_cpu_us, load.subscribers_cpu_us
                );
                telemetry.add(&load, rounds);
                due += 3 * load.requests;
            } else {
                let (run, load) = measured_wrk(&url("plain8"), seconds, &script, &server);
                round[0] = load.per_second;
                println!(
                    "    without subscriber  {run}  lamina {:.1} µs CPU/invocation",
                    load.lamina_cpu_us
                );
                plain.add(&load, rounds);
            }
        }
        round_ratios.push(round[1] / round[0]);
    }
    round_ratios.sort_by(f64::total_cmp);
    // The target is the jail's; see the module's note.
    let target = if backend == "jail" {
        "target ≥ 0.90"
    } else {
        "reported, the target is the jail's"
    };
    println!(
        "    with / without: {:.3} of the means, {:.3} the median of the rounds' ({}; {target})",
        telemetry.per_second / plain.per_second,
        median(&round_ratios),
        spread(&round_ratios)
    );
    let logs = server.stop();
    // "lamina-test-telemetry received N dropped M", one line per subscriber.
    let counts: Vec<(u64, u64)> = logs
        .iter()
        .filter_map(|l| l.split("lamina-test-telemetry received ").nth(1))
        .filter_map(|rest| {
            let (received, dropped) = rest.split_once(" dropped ")?;
            Some((received.trim().parse().ok()?, dropped.trim().parse().ok()?))
        })
        .collect();
    let records: u64 = counts.iter().map(|c| c.0).sum();
    let dropped: u64 = counts.iter().map(|c| c.1).sum();
    assert!(
        records > 0,
        "the telemetry subscribers received nothing: {logs:?}"
    );
    println!(
        "    the {} subscribers received {records} of the at least {due} records due; lamina \
         said it dropped {dropped}",
        counts.len()
    );
    Figures {
        backend: backend.to_owned(),
        without_p50,
        with_p50,
        without_p99: shared::percentile(&without, 0.99),
        with_p99: shared::percentile(&with, 0.99),
        too_many,
        serial_p50: shared::percentile(&serial, 0.5),
        plain,
        telemetry,
        round_ratios,
        records,
        due,
        dropped,
    }
}

/// The project: echo-rs as `code/bootstrap`; the extensions as ZIP layers; five functions.
fn project(backend: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("code")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_echo-rs"),
        root.join("code").join("bootstrap"),
    )
    .unwrap();
    layer(
        root,
        "next.zip",
        "extension-next-rs",
        env!("CARGO_BIN_EXE_extension-next-rs"),
    );
    layer(
        root,
        "telemetry.zip",
        "telemetry-rs",
        env!("CARGO_BIN_EXE_telemetry-rs"),
    );
    // The crate's listener is 0.0.0.0:9003; without a network namespace of their own the
    // process backend's 8 environments would all want it: each takes a free port instead.
    let port = if backend == "process" {
        ", LAMINA_TEST_TELEMETRY_PORT = \"0\""
    } else {
        ""
    };
    std::fs::write(
        root.join("lamina.toml"),
        format!(
            "[functions.plain]\ncode = \"code\"\nconcurrency = 2\n\n\
             [functions.next]\ncode = \"code\"\nconcurrency = 2\nlayers = [\"next.zip\"]\n\n\
             [functions.next1]\ncode = \"code\"\nconcurrency = 1\nlayers = [\"next.zip\"]\n\n\
             [functions.plain8]\ncode = \"code\"\nconcurrency = 8\n\n\
             [functions.telemetry8]\ncode = \"code\"\nconcurrency = 8\nlayers = [\"telemetry.zip\"]\n\
             environment = {{ LAMINA_TEST_TELEMETRY_QUIET = \"1\"{port} }}\n"
        ),
    )
    .unwrap();
    dir
}

/// `root/zip`: a layer holding `extensions/name` = `program`.
fn layer(root: &Path, zip: &str, name: &str, program: &str) {
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir(tree.path().join("extensions")).unwrap();
    std::fs::copy(program, tree.path().join("extensions").join(name)).unwrap();
    shared::zip_dir(
        std::fs::File::create(root.join(zip)).unwrap(),
        tree.path(),
        "",
    );
}

/// A running `lamina serve`; its log's last lines kept for failure messages, and the lines the
/// subscribers print.
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    drained: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Log {
    tail: VecDeque<String>,
    kept: Vec<String>,
}

impl Serve {
    fn start(lamina: &Path, dir: &Path, backend: &str) -> Serve {
        let mut child = Command::new(lamina)
            .current_dir(dir)
            .args(["serve", "--sandbox", backend, "--listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--cache-dir")
            .arg(shared::target_dir().join("bench-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lamina serve");
        // Every invocation writes START/END/REPORT lines: the pipe is drained all along, or
        // the server would block on it.
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        let drained = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split("on http://")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse::<SocketAddr>().ok())
                {
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                if line.contains("lamina-test-telemetry received") {
                    log.kept.push(line.clone());
                }
                log.tail.push_back(line);
                if log.tail.len() > 60 {
                    log.tail.pop_front();
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "lamina serve --sandbox {backend} did not start:\n{}",
                log.lock()
                    .unwrap()
                    .tail
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        };
        Serve {
            child,
            addr,
            log,
            drained: Some(drained),
        }
    }

    /// The log's last lines.
    fn tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, and waits for the exit and the log's end; the subscribers' lines.
    fn stop(mut self) -> Vec<String> {
        // SAFETY: kill(2) on our own child, which we have not waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        // The log ends when the last holder of lamina's stderr is gone; a stray one must not
        // hold the benchmark up.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.drained.as_ref().is_some_and(|d| !d.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            status.success(),
            "lamina serve exited {status}:\n{}",
            self.tail()
        );
        self.log.lock().unwrap().kept.clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection to the Invoke API.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        Client { sender, addr }
    }

    /// `n` invocations of `function` in sequence: each one's time (429s retried within it)
    /// and how many 429s there were. Every answer must be the echoed event.
    async fn timed(
        &mut self,
        function: &str,
        payload: &Bytes,
        n: usize,
        server: &Serve,
    ) -> (Vec<Duration>, u32) {
        let path = format!("/2015-03-31/functions/{function}/invocations");
        let mut samples = Vec::with_capacity(n);
        let mut too_many = 0;
        for _ in 0..n {
            let started = Instant::now();
            loop {
                let request = http::Request::post(&path)
                    .header("host", self.addr.to_string())
                    .body(Full::new(payload.clone()))
                    .unwrap();
                let response = self.sender.send_request(request).await.unwrap();
                let (parts, body) = response.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                if parts.status == 429 {
                    too_many += 1;
                    tokio::time::sleep(Duration::from_micros(100)).await;
                    continue;
                }
                assert!(
                    parts.status == 200
                        && !parts.headers.contains_key("x-amz-function-error")
                        && body == *payload,
                    "{function}: {} {:?}\n{}",
                    parts.status,
                    String::from_utf8_lossy(&body),
                    server.tail()
                );
                break;
            }
            samples.push(started.elapsed());
        }
        (samples, too_many)
    }
}

/// wrk's figures of one run.
struct Run {
    per_second: f64,
    requests: u64,
    p50: String,
    p99: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0} invocations/s  p50 {}  p99 {}",
            self.per_second, self.p50, self.p99
        )
    }
}

/// A wrk run (as benches/serve.rs runs it); any answer but 200 fails it.
fn wrk(url: &str, connections: u32, seconds: u32, script: &Path, server: &Serve) -> Run {
    let out = Command::new("wrk")
        .args(["-t", &connections.min(2).to_string()])
        .args(["-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !text.contains("Non-2xx"),
        "some invocations were not answered 200:\n{text}\n{}",
        server.tail()
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{text}"))
    };
    let requests = text
        .lines()
        .find_map(|l| {
            l.split_once(" requests in ")
                .map(|(n, _)| n.trim().to_owned())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    Run {
        per_second: field("Requests/sec:").parse().expect("a number"),
        requests,
        p50: field("50%"),
        p99: field("99%"),
    }
}

impl Load {
    /// Adds one run's share of the mean of `rounds`.
    fn add(&mut self, run: &Load, rounds: usize) {
        let n = rounds as f64;
        self.per_second += run.per_second / n;
        self.lamina_cpu_us += run.lamina_cpu_us / n;
        self.subscribers_cpu_us += run.subscribers_cpu_us / n;
        self.requests += run.requests;
    }
}

/// A wrk run at 8 connections with the CPU time `lamina serve` and the subscribers
/// (`telemetry-rs` processes) spent in it, per invocation.
fn measured_wrk(url: &str, seconds: u32, script: &Path, server: &Serve) -> (Run, Load) {
    let lamina = server.child.id();
    let (lamina_before, subscribers_before) = (cpu_of(lamina), cpu_of_named("telemetry-rs"));
    let run = wrk(url, 8, seconds, script, server);
    let per_invocation = |after: Duration, before: Duration| {
        (after - before).as_secs_f64() * 1e6 / run.requests.max(1) as f64
    };
    let load = Load {
        per_second: run.per_second,
        lamina_cpu_us: per_invocation(cpu_of(lamina), lamina_before),
        subscribers_cpu_us: per_invocation(cpu_of_named("telemetry-rs"), subscribers_before),
        requests: run.requests,
    };
    (run, load)
}

/// User + system CPU time of process `pid` so far (its own, not its children's).
fn cpu_of(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // After "pid (comm) ": state is field 3, utime 14, stime 15; comm may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// [`cpu_of`] summed over every process named `comm` (the jail's too: the host sees them).
fn cpu_of_named(comm: &str) -> Duration {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .map(cpu_of)
        .sum()
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// "lowest–highest" of sorted `values`.
fn spread(values: &[f64]) -> String {
    match (values.first(), values.last()) {
        (Some(low), Some(high)) => format!("{low:.3}–{high:.3}"),
        _ => "-".into(),
    }
}

/// The median of sorted `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// `with − without`, signed, in µs.
fn delta(with: Duration, without: Duration) -> String {
    let us = (with.as_secs_f64() - without.as_secs_f64()) * 1e6;
    format!("{us:+.1} µs")
}
