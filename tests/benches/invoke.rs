//! Invocation benchmark: warm sequential invocations of a Rust echo bootstrap (the official
//! `lambda_runtime` crate) through the host, 1 KB payload, and cold starts (spawn → first
//! `/next`). Run with `cargo bench -p lamina-tests --bench invoke`; figures go in
//! SPECIFICATION.md.
//!
//! For scale it first measures the floor on the same machine in the same run: one HTTP/1.1
//! round trip over loopback between a bare hyper server and a blocking keep-alive client. A
//! runtime makes two requests per invocation (`GET /next`, `POST /response`), and in sequence
//! the next event cannot go out before the runtime asks for it, so the floor of a warm
//! invocation is two round trips: host overhead = warm p50 − 2 × baseline p50.
//!
//! `BENCH_SANDBOX=jail` runs the same in the native jail (per-invocation `/tmp` included).
//! `BENCH_BOOTSTRAP=probe` runs the std-only probe instead of `lambda_runtime`, which takes the
//! runtime client's own cost out of the figure; `BENCH_BOOTSTRAP=sdk` runs `examples/echo` on
//! lamina's own SDK. `BENCH_WARM` and `BENCH_COLD` set the counts. `BENCH_HELPER=PATH` makes
//! the jail's helper another binary than the release `lamina` (to compare helpers).

#[path = "../shared.rs"]
#[allow(dead_code, reason = "the benchmark uses part of the shared helpers")]
mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lamina_runtime::config::FunctionConfig;
use lamina_runtime::invoke::{InvokeOutcome, InvokeRequest};
use lamina_runtime::pool::FunctionPool;
use lamina_runtime::sandbox::Sandbox;
use lamina_runtime::sandbox::jail::{Helper, JailSandbox};
use lamina_runtime::sandbox::process::ProcessSandbox;
use shared::{Discard, percentile};

/// `BENCH_SANDBOX=jail` runs the environments in the native jail (as root), with
/// `BENCH_READY` sandboxes (default 1) built ahead as `lamina serve` keeps them; 0 builds each
/// one when its environment starts.
fn sandbox() -> Arc<dyn Sandbox> {
    match std::env::var("BENCH_SANDBOX").as_deref() {
        Ok("jail") => {
            let ready = std::env::var("BENCH_READY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            Arc::new(
                JailSandbox::new(Helper::lamina_at(helper_binary()))
                    .expect("the native jail")
                    .with_ready(ready),
            )
        }
        _ => Arc::new(ProcessSandbox),
    }
}

/// The jail's helper: the release `lamina`, or `BENCH_HELPER` (another build of it, or an older
/// standalone helper, to compare what exec'ing the helper costs).
fn helper_binary() -> std::path::PathBuf {
    std::env::var_os("BENCH_HELPER").map_or_else(shared::lamina_binary, Into::into)
}

fn pool_for(dir: &std::path::Path, sandbox: &Arc<dyn Sandbox>) -> FunctionPool {
    let spec = FunctionConfig {
        // BENCH_TMP=per-environment keeps /tmp across invocations (no reset between them).
        tmp_per_environment: std::env::var("BENCH_TMP").is_ok_and(|t| t == "per-environment"),
        name: Some("bench".into()),
        code: dir.to_owned(),
        ..Default::default()
    }
    .resolve()
    .expect("config");
    FunctionPool::start(Arc::new(spec), Arc::clone(sandbox), Arc::new(Discard))
}

/// p50 of one HTTP/1.1 round trip (1 KB body each way) between a bare hyper server that
/// answers at once and a blocking keep-alive client in its own thread.
fn baseline_round_trip(runtime: &tokio::runtime::Runtime, n: usize) -> (Duration, Duration) {
    use std::io::{BufRead, BufReader, Read, Write};
    let addr = shared::bare_hyper_server(runtime);
    let client = std::thread::spawn(move || {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let request = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n{}",
            "y".repeat(1024)
        );
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 500 {
            let t = Instant::now();
            writer.write_all(request.as_bytes()).unwrap();
            let mut line = String::new();
            let mut len = 0;
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            if i >= 500 {
                samples.push(t.elapsed());
            }
        }
        samples
    });
    let mut samples = client.join().unwrap();
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn main() {
    let warm_n: usize = std::env::var("BENCH_WARM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let cold_n: usize = std::env::var("BENCH_COLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let choice = std::env::var("BENCH_BOOTSTRAP").unwrap_or_default();
    let probe = choice == "probe";
    let bootstrap = match choice.as_str() {
        "probe" => env!("CARGO_BIN_EXE_probe").into(),
        "sdk" => shared::build_example("echo", None),
        _ => std::path::PathBuf::from(env!("CARGO_BIN_EXE_echo-rs")),
    };
    std::fs::copy(bootstrap, dir.path().join("bootstrap")).unwrap();
    let payload = if probe {
        Bytes::from(format!(
            "{{\"action\":\"echo\",\"data\":\"{}\"}}",
            "x".repeat(1024 - 27)
        ))
    } else {
        Bytes::from(format!("{{\"data\":\"{}\"}}", "x".repeat(1024 - 11)))
    };
    assert_eq!(payload.len(), 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (base50, base99) = baseline_round_trip(&runtime, warm_n);
    println!(
        "baseline  one loopback HTTP round trip, bare hyper: p50={:.1}µs  p99={:.1}µs",
        base50.as_secs_f64() * 1e6,
        base99.as_secs_f64() * 1e6
    );
    runtime.block_on(async {
        let sandbox = sandbox();
        // Warm: one environment, sequential invocations.
        let pool = pool_for(dir.path(), &sandbox);
        let request = || InvokeRequest {
            payload: payload.clone(),
            ..Default::default()
        };
        for _ in 0..500 {
            pool.invoke(request()).await;
        }
        let mut samples = Vec::with_capacity(warm_n);
        let all = Instant::now();
        for _ in 0..warm_n {
            let t = Instant::now();
            let done = pool.invoke(request()).await;
            samples.push(t.elapsed());
            assert!(matches!(done.outcome, InvokeOutcome::Response(ref b) if b.len() == 1024));
        }
        let total = all.elapsed();
        pool.shutdown().await;
        samples.sort();
        let p50 = percentile(&samples, 0.50);
        println!(
            "warm  n={warm_n}  p50={:.1}µs  p99={:.1}µs  throughput={:.0} invocations/s  host overhead≈{:.1}µs (p50 − 2×baseline)",
            p50.as_secs_f64() * 1e6,
            percentile(&samples, 0.99).as_secs_f64() * 1e6,
            warm_n as f64 / total.as_secs_f64(),
            (p50.as_secs_f64() - 2.0 * base50.as_secs_f64()) * 1e6
        );

        // Cold: a new pool (so a new environment) per invocation; the first invocation's time
        // is spawn + the runtime's start-up + its first /next + one warm round trip.
        let mut cold = Vec::with_capacity(cold_n);
        for _ in 0..cold_n {
            let pool = pool_for(dir.path(), &sandbox);
            // Sandboxes built ahead are part of the steady state, not of the cold start.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let t = Instant::now();
            let done = pool.invoke(request()).await;
            cold.push(t.elapsed());
            assert!(matches!(done.outcome, InvokeOutcome::Response(_)));
            pool.shutdown().await;
        }
        cold.sort();
        println!(
            "cold  n={cold_n}  p50={:.2}ms  p99={:.2}ms  (spawn → first /next → response)",
            percentile(&cold, 0.50).as_secs_f64() * 1e3,
            percentile(&cold, 0.99).as_secs_f64() * 1e3
        );
    });
}
