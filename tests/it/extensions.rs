//! Lambda extensions as AWS documents them: external extensions shipped in a layer's
//! `extensions/` directory, started beside the runtime, talking to the Extensions API with
//! curl (the shape of AWS's own shell examples). Their lifecycle: `INVOKE` with every
//! invocation, `SHUTDOWN` with its reason (`spindown` when idle or stopping, `timeout`),
//! Lambda's shutdown budget, and the errors that reset an environment (`Extension.Crash`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::server::{Server, header, json_of};

/// An extension written against the documented API with curl: registers for `events`, then
/// appends each event it gets to `$RECORD` (one JSON line each) and, after a `SHUTDOWN`,
/// runs `$ON_SHUTDOWN` (default: exit 0). `on_invoke` is shell run after each `INVOKE`.
fn shell_extension(events: &str, on_invoke: &str) -> String {
    format!(
        r#"#!/bin/bash
set -euo pipefail
NAME="$(basename "$0")"
API="http://${{AWS_LAMBDA_RUNTIME_API}}/2020-01-01/extension"
HEADERS="$(mktemp)"
curl -sS -D "$HEADERS" -XPOST "$API/register" -H "Lambda-Extension-Name: $NAME" \
  -d '{{"events": [{events}]}}' > /dev/null
ID=$(grep -Fi Lambda-Extension-Identifier "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
rm -f "$HEADERS"
while true; do
  EVENT=$(curl -sS -XGET "$API/event/next" -H "Lambda-Extension-Identifier: $ID")
  echo "$EVENT" >> "$RECORD"
  if [[ "$EVENT" == *SHUTDOWN* ]]; then
    ${{ON_SHUTDOWN:-exit 0}}
  fi
  {on_invoke}
done
"#
    )
}

/// A project: a Python function `f` (sleeps `event.sleep` seconds, returns its request id)
/// with a layer holding `extensions/NAME` = `script`; `extra` is added to its table.
fn project(script: &str, extra: &str) -> (TempDir, Record) {
    project_with_env(script, extra, "")
}

/// Where an extension records its events: outside the project, which a stopped server's
/// directory takes with it.
struct Record {
    _dir: TempDir,
    path: std::path::PathBuf,
}

impl std::ops::Deref for Record {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

/// [`project`], with more of the function's environment (`, KEY = "value"`).
fn project_with_env(script: &str, extra: &str, env: &str) -> (TempDir, Record) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("f")).unwrap();
    std::fs::write(
        root.join("f/app.py"),
        "import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return {'id': context.aws_request_id}\n",
    )
    .unwrap();
    let ext = root.join("layer/extensions/recorder");
    std::fs::create_dir_all(ext.parent().unwrap()).unwrap();
    std::fs::write(&ext, script).unwrap();
    std::fs::set_permissions(&ext, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let record_dir = tempfile::tempdir().unwrap();
    let record = Record {
        path: record_dir.path().join("record.jsonl"),
        _dir: record_dir,
    };
    std::fs::write(
        root.join("lamina.toml"),
        format!(
            "[functions.f]\ncode = \"f\"\nlayers = [\"layer\"]\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
             environment = {{ RECORD = {:?}{env} }}\n{extra}\n",
            record.path.display().to_string()
        ),
    )
    .unwrap();
    (dir, record)
}

/// The events recorded so far.
fn recorded(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Waits until `record` holds an event of `kind`; all events.
fn wait_recorded(record: &Path, kind: &str, server_logs: impl Fn() -> String) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = recorded(record);
        if events.iter().any(|e| e["eventType"] == kind) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} in {events:?}\n{}",
            server_logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_extension_gets_invoke_events_and_a_spindown_shutdown() {
    let (dir, record) = project(&shell_extension(r#""INVOKE", "SHUTDOWN""#, ""), "");
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        // The one environment is busy until the extension is back at `/next`, a moment after
        // the answer: a 429 meanwhile, as Lambda answers (and as the SDKs retry).
        let mut r = server.invoke("f", &[], "{}").await;
        while r.status() == 429 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            r = server.invoke("f", &[], "{}").await;
        }
        assert_eq!(r.status(), 200, "{}", server.logs());
        ids.push(json_of(&r)["id"].as_str().unwrap().to_owned());
        assert_eq!(
            header(&r, "x-amzn-RequestId"),
            Some(ids.last().unwrap().as_str())
        );
    }
    let (ok, logs) = server.stop();
    assert!(ok, "{logs}");
    let events = recorded(&record);
    assert_eq!(events.len(), 3, "{events:?}\n{logs}");
    for (event, id) in events.iter().zip(&ids) {
        assert_eq!(event["eventType"], "INVOKE");
        assert_eq!(event["requestId"], id.as_str());
        assert_eq!(
            event["invokedFunctionArn"],
            "arn:aws:lambda:us-east-1:000000000000:function:f"
        );
        assert!(event["deadlineMs"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(event["tracing"]["type"], "X-Amzn-Trace-Id");
    }
    assert_eq!(events[2]["eventType"], "SHUTDOWN");
    assert_eq!(events[2]["shutdownReason"], "spindown");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_reaping_says_spindown_and_a_timeout_says_timeout() {
    let (dir, record) = project(
        &shell_extension(r#""INVOKE", "SHUTDOWN""#, ""),
        "idle_timeout = 1\ntimeout = 1\n",
    );
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let events = wait_recorded(&record, "SHUTDOWN", || server.logs());
    assert_eq!(events.last().unwrap()["shutdownReason"], "spindown");
    std::fs::remove_file(&*record).unwrap();
    // An invocation that overruns its timeout: the environment resets, the extension is
    // told why.
    let r = server.invoke("f", &[], r#"{"sleep": 3}"#).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(json_of(&r)["errorType"], "Sandbox.Timedout");
    let events = wait_recorded(&record, "SHUTDOWN", || server.logs());
    assert_eq!(events.last().unwrap()["shutdownReason"], "timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_extension_that_crashes_mid_invoke_fails_it_with_extension_crash() {
    // Exits 1 as soon as it has the INVOKE; the function takes half a second.
    let (dir, _) = project(&shell_extension(r#""INVOKE""#, "exit 1"), "");
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let r = server.invoke("f", &[], r#"{"sleep": 0.5}"#).await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    let body = json_of(&r);
    assert_eq!(body["errorType"], "Extension.Crash", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("extension recorder exited (exit status 1)"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_extension_that_never_calls_next_holds_init_until_its_timeout() {
    let script = "#!/bin/bash\nH=$(mktemp)\ncurl -sS -D \"$H\" -XPOST \"http://${AWS_LAMBDA_RUNTIME_API}/2020-01-01/extension/register\" \
                  -H 'Lambda-Extension-Name: recorder' -d '{\"events\": [\"INVOKE\"]}' > /dev/null\nexec sleep 600\n";
    let (dir, _) = project(script, "init_timeout = 1\n");
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let started = Instant::now();
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        json_of(&r)["errorType"],
        "Sandbox.Timedout",
        "{}",
        server.logs()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_extension_that_overruns_its_shutdown_budget_is_killed() {
    let (dir, record) = project_with_env(
        &shell_extension(r#""SHUTDOWN""#, ""),
        "",
        ", ON_SHUTDOWN = \"sleep 600\"",
    );
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let stopping = Instant::now();
    let (_, logs) = server.stop();
    // Lambda's budget with an external extension: 2 s, then SIGKILL.
    assert!(stopping.elapsed() < Duration::from_secs(10), "{logs}");
    assert!(
        logs.contains("extensions recorder did not exit within the shutdown budget; killed"),
        "{logs}"
    );
    assert_eq!(
        recorded(&record).last().unwrap()["shutdownReason"],
        "spindown"
    );
}

#[test]
fn a_webassembly_function_with_an_extensions_layer_is_refused_naming_the_layer() {
    let module = crate::support::wasm_guest("wasm32-wasip1");
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("agent-layer");
    std::fs::create_dir_all(layer.join("extensions")).unwrap();
    std::fs::write(layer.join("extensions/agent"), "#!/bin/sh\n").unwrap();
    let out = crate::support::lamina_in(
        dir.path(),
        &[
            "invoke",
            module.to_str().unwrap(),
            "--layer",
            "agent-layer",
            "--payload",
            "{}",
        ],
    );
    let stderr = crate::support::text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("layer agent-layer: it holds extensions/")
            && stderr.contains("WebAssembly function runs no extensions"),
        "{stderr}"
    );
}
