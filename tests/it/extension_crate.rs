//! Extensions written with the official Rust `lambda-extension` crate (issue 24), shipped as a
//! ZIP layer holding `extensions/NAME`, in front of a Python function served by `lamina serve`,
//! under both native backends (`process` and `jail`): `extension-rs` is told of every
//! invocation (`INVOKE` with its request id) and of the shutdown with its reason (`spindown`
//! when the server stops, `timeout` after an overrun); `telemetry-rs`, subscribed through the
//! crate's telemetry processor, receives Lambda's `platform.*` records for init and for every
//! invocation, and the function's own log lines as `function` records.
//!
//! Both programs print what they get on stdout (tests/programs/), which lamina carries to the
//! function's log, here the server's stderr: the tests read the lines back from it. The crate
//! parses every telemetry batch into its own types, so these tests also hold lamina's records
//! to the shape the crate (and Lambda) gives them.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tempfile::TempDir;

use crate::server::{Server, header, json_of};

/// Each scenario as one test per native backend: `extension_crate::<scenario>::process` and
/// `…::jail`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread")]
            async fn process() {
                super::$scenario("process").await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn jail() {
                super::$scenario("jail").await;
            }
        }
    )*};
}

on_both_backends!(
    the_extension_sees_every_invoke_and_a_spindown_shutdown,
    a_timeout_shuts_the_extension_down_with_reason_timeout,
    the_telemetry_subscriber_gets_platform_and_function_records,
);

/// The function: prints a line naming its request id (a `function` telemetry record), sleeps
/// `event.sleep` seconds, returns its request id.
const HANDLER: &str = "import time\n\
def handler(event, context):\n    \
    print('handler-says ' + context.aws_request_id, flush=True)\n    \
    time.sleep(event.get('sleep', 0))\n    \
    return {'id': context.aws_request_id}\n";

/// What stdout line prefix each program uses.
const EXTENSION: &str = "lamina-test-extension ";
const TELEMETRY: &str = "lamina-test-telemetry ";

/// A project directory: function `f` (Python 3.11, [`HANDLER`]) with one ZIP layer holding
/// `extensions/<name>` = the built `program`; `extra` is added to the function's table.
fn project(program: &Path, name: &str, extra: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("f")).unwrap();
    std::fs::write(root.join("f/app.py"), HANDLER).unwrap();
    // The layer as a user builds it: the binary under extensions/, zipped with its mode.
    let tree = tempfile::tempdir().unwrap();
    let file = tree.path().join("extensions").join(name);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::copy(program, &file).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let zip = std::fs::File::create(root.join("layer.zip")).unwrap();
    crate::shared::zip_dir(zip, tree.path(), "");
    std::fs::write(
        root.join("lamina.toml"),
        format!(
            "[functions.f]\ncode = \"f\"\nlayers = [\"layer.zip\"]\nruntime = \"python3.11\"\n\
             handler = \"app.handler\"\n{extra}\n"
        ),
    )
    .unwrap();
    dir
}

fn serve(dir: TempDir, backend: &str) -> Server {
    Server::start_in(dir, &["--sandbox", backend])
}

/// A synchronous invocation answered 200 with no function error: its request id (the
/// `x-amzn-RequestId` header) and the response. The environment is busy until its extensions
/// are back at `/next`, a moment after the answer: a 429 meanwhile is retried, as the SDKs do.
async fn invoke(server: &Server, payload: &str) -> (String, http::Response<Bytes>) {
    let r = server.invoke_when_free("f", payload.to_owned()).await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    assert_eq!(
        header(&r, "x-amz-function-error"),
        None,
        "{:?}\n{}",
        r.body(),
        server.logs()
    );
    let id = header(&r, "x-amzn-RequestId")
        .expect("a request id header")
        .to_owned();
    (id, r)
}

/// The words after `prefix` on each log line that holds it, in order.
fn lines_of(logs: &str, prefix: &str) -> Vec<Vec<String>> {
    logs.lines()
        .filter_map(|l| l.split_once(prefix).map(|(_, rest)| rest))
        .map(|rest| rest.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Epoch milliseconds now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn the_extension_sees_every_invoke_and_a_spindown_shutdown(backend: &str) {
    let program = Path::new(env!("CARGO_BIN_EXE_extension-rs"));
    let server = serve(project(program, "extension-rs", ""), backend);
    let before = now_ms();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (id, r) = invoke(&server, "{}").await;
        assert_eq!(json_of(&r)["id"], id.as_str(), "{}", server.logs());
        ids.push(id);
    }
    let after = now_ms();
    let (ok, logs) = server.stop();
    assert!(ok, "lamina serve did not stop cleanly:\n{logs}");
    let lines = lines_of(&logs, EXTENSION);
    assert_eq!(lines.len(), ids.len() + 1, "{lines:?}\n{logs}");
    for (line, id) in lines.iter().zip(&ids) {
        assert_eq!(line[..2], ["INVOKE", id.as_str()], "{logs}");
        // The invocation's deadline: its start plus the default 3 s timeout.
        let deadline: u64 = line[2].parse().unwrap();
        assert!(
            deadline > before && deadline <= after + 3_000,
            "deadline {deadline} not in ({before}, {after} + 3 s]\n{logs}"
        );
    }
    assert_eq!(lines.last().unwrap(), &["SHUTDOWN", "spindown"], "{logs}");
    // A clean exit after SHUTDOWN: nothing was killed, nothing counted as a crash.
    assert!(
        !logs.contains("did not exit within the shutdown budget"),
        "{logs}"
    );
    assert!(!logs.contains("Extension.Crash"), "{logs}");
}

async fn a_timeout_shuts_the_extension_down_with_reason_timeout(backend: &str) {
    let program = Path::new(env!("CARGO_BIN_EXE_extension-rs"));
    let server = serve(project(program, "extension-rs", "timeout = 1\n"), backend);
    let r = server.invoke("f", &[], r#"{"sleep": 3}"#).await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        json_of(&r)["errorType"],
        "Sandbox.Timedout",
        "{}",
        server.logs()
    );
    let timed_out = header(&r, "x-amzn-RequestId").unwrap().to_owned();
    let logs = server.wait_for_log(&format!("{EXTENSION}SHUTDOWN timeout"), 1);
    let lines = lines_of(&logs, EXTENSION);
    assert_eq!(lines[0][..2], ["INVOKE", timed_out.as_str()], "{logs}");
    assert_eq!(lines[1], ["SHUTDOWN", "timeout"], "{logs}");
    // The environment was reset: the next invocation starts a new one, whose extension
    // registers afresh and is told of it.
    let (id, _) = invoke(&server, "{}").await;
    let (ok, logs) = server.stop();
    assert!(ok, "{logs}");
    let lines = lines_of(&logs, EXTENSION);
    assert_eq!(lines.len(), 4, "{lines:?}\n{logs}");
    assert_eq!(lines[2][..2], ["INVOKE", id.as_str()], "{logs}");
    assert_eq!(lines[3], ["SHUTDOWN", "spindown"], "{logs}");
}

async fn the_telemetry_subscriber_gets_platform_and_function_records(backend: &str) {
    let program = Path::new(env!("CARGO_BIN_EXE_telemetry-rs"));
    // The crate listens on 0.0.0.0:9003 by default. In the jail that is the sandbox's own
    // network; the process backend shares the host's, where a fixed port would clash with any
    // other test's environment: there the program takes a free one.
    let extra = if backend == "process" {
        "environment = { LAMINA_TEST_TELEMETRY_PORT = \"0\" }\n"
    } else {
        ""
    };
    let server = serve(project(program, "telemetry-rs", extra), backend);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (id, _) = invoke(&server, "{}").await;
        ids.push(id);
    }
    // Records arrive in batches (the crate asks for 1 s buffering): wait for the last report.
    for id in &ids {
        server.wait_for_log(&format!("{TELEMETRY}platform.report {id}"), 1);
    }
    let (ok, logs) = server.stop();
    assert!(ok, "{logs}");
    let lines = lines_of(&logs, TELEMETRY);
    let position = |words: &[&str]| {
        let found: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.len() >= words.len() && l[..words.len()] == *words)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{words:?} should be received once, not {} times\n{lines:?}\n{logs}",
            found.len()
        );
        found[0]
    };
    // Init, once (one environment, concurrency 1 by default, served the three), in Lambda's
    // order.
    let init_start = position(&["platform.initStart", "-", "on-demand", "init"]);
    let init_done = position(&["platform.initRuntimeDone", "-", "success"]);
    let extension = position(&["platform.extension", "-", "telemetry-rs", "Ready"]);
    let init_report = position(&["platform.initReport", "-", "init"]);
    assert!(
        init_start < init_done && init_done < extension && extension < init_report,
        "{lines:?}"
    );
    for id in &ids {
        let start = position(&["platform.start", id]);
        let said = position(&["function", "-", "handler-says", id]);
        let done = position(&["platform.runtimeDone", id, "success"]);
        let report = position(&["platform.report", id, "success"]);
        assert!(
            init_report < start && start < said && said < done && done < report,
            "records of {id} out of order: {lines:?}"
        );
    }
    assert!(
        lines.iter().all(|l| l[0] != "platform.logsDropped"),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap(), &["SHUTDOWN", "spindown"], "{logs}");
}
