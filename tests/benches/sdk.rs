//! SDK start-up benchmark. Run with `cargo bench -p lamina-tests --bench sdk`; figures go in
//! SPECIFICATION.md.
//!
//! From spawning a native bootstrap to its first `GET /2018-06-01/runtime/invocation/next`
//! arriving at a Runtime API socket on loopback: the `examples/echo` bootstrap (on
//! `lamina-sdk`, release) and, for scale, the tests' echo on the official `lambda_runtime`
//! crate. No jail: this is the SDK's own start-up. `BENCH_STARTS` sets the count.

#[path = "../shared.rs"]
#[allow(dead_code, reason = "the benchmark uses part of the shared helpers")]
mod shared;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shared::summary;

/// Spawn → the first request's line read.
fn start_up(bootstrap: &Path, listener: &TcpListener) -> Duration {
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let mut child = Command::new(bootstrap)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "s")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "g")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the bootstrap");
    let (mut stream, _) = listener.accept().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0; 512];
    while !seen.windows(5).any(|w| w == b"/next") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the bootstrap closed before asking for an event");
        seen.extend_from_slice(&buf[..n]);
    }
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    took
}

fn main() {
    let n: usize = std::env::var("BENCH_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sdk = shared::build_example("echo", None);
    let official = shared::target_dir().join("release/echo-rs");
    let mut rows = vec![("lamina-sdk examples/echo", sdk)];
    if official.exists() {
        rows.push(("lambda_runtime echo-rs (for scale)", official));
    }
    for (name, bootstrap) in rows {
        for _ in 0..20 {
            start_up(&bootstrap, &listener);
        }
        let mut times: Vec<_> = (0..n).map(|_| start_up(&bootstrap, &listener)).collect();
        times.sort();
        println!(
            "{name}: spawn → first /next, {n} starts: {}",
            summary(&times)
        );
    }
}
