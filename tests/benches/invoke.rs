//! Invocation benchmark: warm sequential invocations of a Rust echo bootstrap (the official
//! `lambda_runtime` crate) through the host, 1 KB payload, and cold starts (spawn → first
//! `/next`). Run with `cargo bench -p lamina-tests --bench invoke`; figures go in
//! SPECIFICATION.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lamina_runtime::config::FunctionConfig;
use lamina_runtime::invoke::{InvokeOutcome, InvokeRequest};
use lamina_runtime::logs::LogSink;
use lamina_runtime::pool::FunctionPool;
use lamina_runtime::sandbox::process::ProcessSandbox;

/// Logs are dropped: the benchmark measures the host, not the terminal.
#[derive(Debug)]
struct Discard;

impl LogSink for Discard {
    fn line(&self, _: &[u8]) {}
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn pool_for(dir: &std::path::Path) -> FunctionPool {
    let spec = FunctionConfig {
        name: Some("bench".into()),
        code: dir.to_owned(),
        ..Default::default()
    }
    .resolve()
    .expect("config");
    FunctionPool::start(Arc::new(spec), Arc::new(ProcessSandbox), Arc::new(Discard))
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
    std::fs::copy(env!("CARGO_BIN_EXE_echo-rs"), dir.path().join("bootstrap")).unwrap();
    let payload = Bytes::from(format!("{{\"data\":\"{}\"}}", "x".repeat(1024 - 11)));
    assert_eq!(payload.len(), 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Warm: one environment, sequential invocations.
        let pool = pool_for(dir.path());
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
        println!(
            "warm  n={warm_n}  p50={:.1}µs  p99={:.1}µs  throughput={:.0} invocations/s",
            percentile(&samples, 0.50).as_secs_f64() * 1e6,
            percentile(&samples, 0.99).as_secs_f64() * 1e6,
            warm_n as f64 / total.as_secs_f64()
        );

        // Cold: a new pool (so a new environment) per invocation; the first invocation's time
        // is spawn + the runtime's start-up + its first /next + one warm round trip.
        let mut cold = Vec::with_capacity(cold_n);
        for _ in 0..cold_n {
            let pool = pool_for(dir.path());
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
