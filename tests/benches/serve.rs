//! Load benchmark of `lamina serve`'s Invoke API. Run with
//! `cargo bench -p lamina-tests --bench serve` (as root: the native functions run in the jail;
//! wrk, the load generator, is installed with apt when missing). Figures go in
//! SPECIFICATION.md.
//!
//! The server is lamina's own (`serve::serve`, the pools, the sandboxes) in this process, on a
//! loopback port; the load comes from wrk, a separate process, over keep-alive connections,
//! each POSTing a 1 KB JSON event to `/2015-03-31/functions/NAME/invocations`. The function is
//! `examples/echo` (the SDK's echo), built natively (a Rust bootstrap in the native jail) and
//! for wasm32-wasip1 (in wasmtime, a fresh instance per invocation), `concurrency = 8`.
//! `wasm-std` is the tests' std-only echo (no SDK, no serde, no tokio in the guest): the
//! host's own cost, with the least guest; the WASM target is measured on it.
//! Each run is warmed up first so that every environment has started; wrk's requests per second
//! and its p50/p99 latency are printed, and any non-200 answer fails the run. First, for scale,
//! the same load against a bare hyper server in this process that answers 1 KB at once: the
//! floor of one HTTP round trip on this machine (an invocation of a native function makes two,
//! client → lamina and the bootstrap's `/next` … `/response`).
//!
//! `BENCH_SECONDS` sets each run's length (default 10); `BENCH_CASES=wasm:8,native:1` makes
//! only the runs named (function:connections); `BENCH_BARE=0` skips the bare hyper runs;
//! `BENCH_WASM_MODULE=path.wasm` runs that module as `wasm` (to compare two builds of a guest).

#[path = "../shared.rs"]
#[allow(dead_code, reason = "the benchmark uses part of the shared helpers")]
mod shared;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use lamina_runtime::cli::invoke::{NetworkKind, SandboxKind, native_sandbox};
use lamina_runtime::config::FunctionConfig;
use lamina_runtime::pool::FunctionPool;
use lamina_runtime::sandbox::Sandbox;
use lamina_runtime::sandbox::jail::Helper;
use lamina_runtime::sandbox::wasm::WasmSandbox;
use lamina_runtime::serve::event_queue::EventQueue;
use lamina_runtime::serve::routes::RouteTable;
use lamina_runtime::serve::{App, Function, Served};
use shared::Discard;

fn function(name: &str, code: &Path, sandbox: Arc<dyn Sandbox>) -> (String, Arc<Function>) {
    let spec = FunctionConfig {
        name: Some(name.into()),
        code: code.to_owned(),
        concurrency: Some(8),
        cache_dir: Some(shared::target_dir().join("bench-cache")),
        ..Default::default()
    }
    .resolve()
    .expect("config");
    let pool = FunctionPool::start(Arc::new(spec), sandbox, Arc::new(Discard));
    (
        name.to_owned(),
        Arc::new(Function {
            pool,
            asynchronous: Default::default(),
            identity: String::new(),
        }),
    )
}

/// wrk's figures of one run.
struct Run {
    per_second: f64,
    p50: String,
    p99: String,
}

fn wrk(url: &str, connections: u32, seconds: u32, script: &Path) -> Run {
    let threads = connections.min(2);
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "some invocations were not answered 200:\n{text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{text}"))
    };
    Run {
        per_second: field("Requests/sec:").parse().expect("a number"),
        p50: field("50%"),
        p99: field("99%"),
    }
}

/// The runs to make: `BENCH_CASES` (e.g. `wasm:8,native:1`, to profile one), or all five.
fn cases() -> Vec<(String, u32)> {
    let Ok(list) = std::env::var("BENCH_CASES") else {
        return [
            ("native", 1),
            ("native", 8),
            ("wasm", 1),
            ("wasm", 8),
            ("wasm-std", 8),
        ]
        .map(|(name, n)| (name.to_owned(), n))
        .to_vec();
    };
    list.split(',')
        .map(|case| {
            let (name, n) = case
                .split_once(':')
                .expect("BENCH_CASES: name:connections,…");
            (
                name.to_owned(),
                n.parse().expect("BENCH_CASES: a number of connections"),
            )
        })
        .collect()
}

fn main() {
    shared::ensure_wrk();
    let seconds: u32 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let helper = Helper::lamina_at(shared::lamina_binary());
    let native = shared::build_example("echo", None);
    let module = std::env::var_os("BENCH_WASM_MODULE").map_or_else(
        || shared::build_example("echo", Some("wasm32-wasip1")),
        std::path::PathBuf::from,
    );
    let cases = cases();
    // The tests' std-only echo (no SDK): what the host costs with the least guest. Built only
    // when a run asks for it (a profile of another case should not wait for its build).
    let std_module = cases
        .iter()
        .any(|(name, _)| name == "wasm-std")
        .then(|| shared::wasm_guest("wasm32-wasip1"));
    let native_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&native, native_dir.path().join("bootstrap")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let payload = serde_json::json!({ "data": "x".repeat(1010) }).to_string();
    assert_eq!(payload.len(), 1021, "a 1 KB event");
    let script_dir = tempfile::tempdir().unwrap();
    let script = script_dir.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = {payload:?}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .unwrap();
    println!("lamina serve, Invoke API, 1 KB echo, keep-alive, wrk, {seconds} s per run:");
    // The floor on this machine: one round trip per request to a server that does nothing.
    let bare = shared::bare_hyper_server(&runtime);
    let bare_runs = if std::env::var("BENCH_BARE").is_ok_and(|v| v == "0") {
        &[][..]
    } else {
        &[1, 8][..]
    };
    for &connections in bare_runs {
        let run = wrk(&format!("http://{bare}/"), connections, seconds, &script);
        println!(
            "  bare hyper {connections} connection(s): {:>8.0} requests/s  p50 {}  p99 {}",
            run.per_second, run.p50, run.p99
        );
    }
    runtime.block_on(async {
        let jail = native_sandbox(SandboxKind::Jail, Some(NetworkKind::None), helper)
            .expect("the native jail");
        let wasm: Arc<dyn Sandbox> = Arc::new(
            WasmSandbox::new(
                &shared::target_dir().join("bench-cache"),
                &lamina_runtime::sandbox::jail::Helper::this_executable(),
            )
            .expect("wasm"),
        );
        let mut functions: HashMap<_, _> = [
            function("native", native_dir.path(), jail),
            function("wasm", &module, Arc::clone(&wasm)),
        ]
        .into_iter()
        .collect();
        if let Some(std_module) = &std_module {
            let (name, f) = function("wasm-std", std_module, wasm);
            functions.insert(name, f);
        }
        let state = tempfile::tempdir().unwrap();
        let app = Arc::new(App::new(
            Served {
                functions,
                routes: RouteTable::default(),
                schedules: Vec::new(),
            },
            EventQueue::start(
                state.path().to_owned(),
                std::time::Duration::from_secs(60),
                lamina_runtime::serve::event_store::Committer::start(
                    lamina_runtime::serve::event_store::Volatile,
                ),
            ),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(lamina_runtime::serve::serve(
            listener,
            Arc::clone(&app),
            async move {
                let _ = stopped.await;
            },
        ));
        for (name, connections) in cases {
            let url = format!("http://{addr}/2015-03-31/functions/{name}/invocations");
            let script = script.clone();
            let run = tokio::task::spawn_blocking(move || {
                // Warm-up: every environment the run will use has started.
                wrk(&url, 8, 2, &script);
                wrk(&url, connections, seconds, &script)
            })
            .await
            .unwrap();
            println!(
                "  {name:<6} {connections} connection(s): {:>8.0} invocations/s  p50 {}  p99 {}",
                run.per_second, run.p50, run.p99
            );
        }
        let _ = stop.send(());
        server.await.unwrap();
    });
}
