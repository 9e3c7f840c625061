//! WASM backend benchmark. Run with `cargo bench -p lamina-tests --bench wasm` (as root: each
//! environment mounts a tmpfs for /tmp); figures go in SPECIFICATION.md.
//!
//! 1. Warm: sequential invocations of the tests' echo guest (WASI p1, 1 KB event) through the
//!    pool, from a task on the runtime (as the HTTP front calls it), each in a fresh instance
//!    with a fresh `/tmp` (the default). Two figures: the invocation itself, from the event's
//!    hand-over to the sandbox until its outcome (REPORT's `Duration`: building the instance's
//!    WASI context, instantiating, running, classifying), and the whole in-process round trip,
//!    `FunctionPool::invoke` to its answer (adding the pool's and the environment's hand-offs
//!    and the log lines). The fresh `/tmp` is made after each answer, off both paths.
//! 2. Restart with a cached compile: a generated ~2 MB module, compiled once; then, repeatedly,
//!    a new `WasmSandbox` (a new engine and an empty in-memory code map, as after a restart,
//!    with the compiled code and the module's digest on disk) and the first invocation of a
//!    new pool: finding the module's digest by its file identity, loading the compiled code,
//!    mounting /tmp, instantiating, running.
//!
//! `BENCH_WARM` and `BENCH_COLD` set the counts; `BENCH_TARGET=wasm32-wasip2` runs the warm
//! part with the component build; `BENCH_GUEST=sdk` runs it with the SDK's echo example.

#[path = "../shared.rs"]
#[allow(dead_code, reason = "the benchmark uses part of the shared helpers")]
mod shared;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use lamina_runtime::config::FunctionConfig;
use lamina_runtime::invoke::{InvokeOutcome, InvokeRequest};
use lamina_runtime::pool::FunctionPool;
use lamina_runtime::sandbox::Sandbox;
use lamina_runtime::sandbox::wasm::WasmSandbox;
use shared::{Discard, percentile, summary};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pool(code: &std::path::Path, sandbox: Arc<dyn Sandbox>) -> FunctionPool {
    let spec = FunctionConfig {
        name: Some("bench".into()),
        code: code.to_owned(),
        cache_dir: Some(shared::target_dir().join("bench-cache")),
        ..Default::default()
    }
    .resolve()
    .expect("config");
    FunctionPool::start(Arc::new(spec), sandbox, Arc::new(Discard))
}

fn function_dir(module: &std::path::Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(module, dir.path().join("bootstrap.wasm")).unwrap();
    dir
}

/// One invocation; how long the sandbox had it.
async fn invoke(pool: &FunctionPool, payload: &Bytes) -> std::time::Duration {
    let done = pool
        .invoke(InvokeRequest {
            payload: payload.clone(),
            ..Default::default()
        })
        .await;
    match &done.outcome {
        InvokeOutcome::Response(body) if body.len() == payload.len() => done.duration,
        other => panic!("unexpected outcome: {other:?}"),
    }
}

/// A guest crate whose module is about 2 MB: the echo plus a few thousand generated
/// functions, all reachable (so none is dropped) and unoptimised (so they stay large).
fn big_module() -> std::path::PathBuf {
    let dir = shared::target_dir().join("wasm-guest-src").join("big");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"lamina-bench-big\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
         publish = false\n\n[workspace]\n\n[profile.big]\ninherits = \"dev\"\ndebug = false\n",
    )
    .unwrap();
    let mut source = String::from(
        "use std::io::{Read, Write};\n\
         fn main() {\n    let mut e = Vec::new();\n    std::io::stdin().read_to_end(&mut e).unwrap();\n\
         \x20   let k = e.len() as u64;\n    let mut acc = 0u64;\n    for f in FUNCTIONS { acc = acc.wrapping_add(f(k)); }\n\
         \x20   if acc == 42 { eprintln!(\"{acc}\"); }\n    std::io::stdout().write_all(&e).unwrap();\n}\n",
    );
    let n = 420;
    for i in 0..n {
        source.push_str(&format!(
            "#[inline(never)] fn f{i}(x: u64) -> u64 {{ let s = format!(\"{{}}-{i}\", x); \
             let v: Vec<u64> = s.bytes().map(|b| b as u64 * {i}).collect(); \
             v.iter().fold(x ^ {i}, |a, b| a.rotate_left(3).wrapping_add(*b)) }}\n"
        ));
    }
    source.push_str("static FUNCTIONS: &[fn(u64) -> u64] = &[");
    for i in 0..n {
        source.push_str(&format!("f{i},"));
    }
    source.push_str("];\n");
    let main = dir.join("src/main.rs");
    if std::fs::read_to_string(&main).ok().as_deref() != Some(source.as_str()) {
        std::fs::write(&main, source).unwrap();
    }
    shared::build_wasm(&dir.join("Cargo.toml"), "wasm32-wasip1", "big")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = std::env::var("BENCH_TARGET").unwrap_or_else(|_| "wasm32-wasip1".into());
    // The tests' std-only echo, or with `BENCH_GUEST=sdk` the SDK's (`examples/echo`: serde,
    // a tokio current-thread runtime, the handler service), as `lamina serve`'s bench runs it.
    let sdk = std::env::var("BENCH_GUEST").is_ok_and(|g| g == "sdk");
    let echo = if sdk {
        shared::build_example("echo", Some(&target))
    } else {
        shared::wasm_guest(&target)
    };
    let cache = shared::target_dir().join("bench-cache");
    let payload = Bytes::from(format!(
        r#"{{"action":"echo","pad":"{}"}}"#,
        "x".repeat(1024 - 29)
    ));

    // 1. Warm.
    let warm_n = count("BENCH_WARM", 20_000);
    let sandbox: Arc<dyn Sandbox> = Arc::new(
        WasmSandbox::new(
            &cache,
            &lamina_runtime::sandbox::jail::Helper::this_executable(),
        )
        .expect("wasm backend"),
    );
    let code = function_dir(&echo);
    let pool_sandbox = Arc::clone(&sandbox);
    let warm_payload = payload.clone();
    let (mut warm, mut inside) = runtime
        .block_on(runtime.spawn(async move {
            let (payload, pool) = (warm_payload, pool(code.path(), pool_sandbox));
            for _ in 0..500 {
                invoke(&pool, &payload).await;
            }
            let mut times = Vec::with_capacity(warm_n);
            let mut inside = Vec::with_capacity(warm_n);
            for _ in 0..warm_n {
                let started = Instant::now();
                inside.push(invoke(&pool, &payload).await);
                times.push(started.elapsed());
            }
            pool.shutdown().await;
            (times, inside)
        }))
        .expect("the benchmark task");
    warm.sort();
    inside.sort();
    println!(
        "wasm warm ({target}{}, fresh instance + fresh /tmp, {warm_n} sequential, 1 KB): invocation (hand-over to outcome) {}",
        if sdk { ", SDK echo" } else { "" },
        summary(&inside)
    );
    println!(
        "wasm warm ({target}): round trip through the pool {}",
        summary(&warm)
    );

    // 2. First invocation after a restart, the compile cached on disk.
    let big = big_module();
    let size = std::fs::metadata(&big).unwrap().len();
    let code = function_dir(&big);
    let cold_n = count("BENCH_COLD", 30);
    let first_invocation = |cache: &std::path::Path| {
        // A new engine and code map each time, as a new lamina process would have.
        let sandbox: Arc<dyn Sandbox> = Arc::new(
            WasmSandbox::new(
                cache,
                &lamina_runtime::sandbox::jail::Helper::this_executable(),
            )
            .expect("wasm backend"),
        );
        runtime.block_on(async {
            let pool = pool(code.path(), sandbox);
            let started = Instant::now();
            invoke(&pool, &payload).await;
            let took = started.elapsed();
            pool.shutdown().await;
            took
        })
    };
    // Into an empty cache: the compile itself.
    let empty = tempfile::tempdir().unwrap();
    println!(
        "wasm compile of the {:.1} MB module (cache miss): {:?}",
        size as f64 / 1e6,
        first_invocation(empty.path())
    );
    // Fills the benchmark's cache if this is its first run; not counted.
    first_invocation(&cache);
    let mut cold: Vec<_> = (0..cold_n).map(|_| first_invocation(&cache)).collect();
    cold.sort();
    println!(
        "wasm first invocation after restart, compile cached ({:.1} MB module, {cold_n} runs): p50 {:?}  p90 {:?}  max {:?}",
        size as f64 / 1e6,
        percentile(&cold, 0.5),
        percentile(&cold, 0.9),
        cold[cold.len() - 1]
    );
}
