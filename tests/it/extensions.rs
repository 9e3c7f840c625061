//! Lambda extensions as AWS documents them: external extensions shipped in a layer's
//! `extensions/` directory, started beside the runtime, talking to the Extensions API with
//! curl (the shape of AWS's own shell examples). Their lifecycle: `INVOKE` with every
//! invocation, `SHUTDOWN` with its reason (`spindown` when idle or stopping, `timeout`),
//! Lambda's shutdown budget, and the errors that reset an environment (`Extension.Crash`).
//! Each case runs under both native backends: the jail's PID 1 starts the extensions there.

use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::server::{Server, header, json_of};

/// The native backends, each of which runs every case.
const BACKENDS: [&str; 2] = ["process", "jail"];

/// An extension written against the documented API with curl: registers for `events`, then
/// prints each event it gets (one line each, after [`EVENT`]) and, after a `SHUTDOWN`, runs
/// `$ON_SHUTDOWN` (default: exit 0). `on_invoke` is shell run after each `INVOKE`.
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
  echo "EXTENSION-EVENT $EVENT"
  if [[ "$EVENT" == *SHUTDOWN* ]]; then
    ${{ON_SHUTDOWN:-exit 0}}
  fi
  {on_invoke}
done
"#
    )
}

/// What the test extension prints before each event it gets.
const EVENT: &str = "EXTENSION-EVENT ";

/// A project: a Python function `f` (sleeps `event.sleep` seconds, returns its request id)
/// with a layer holding `extensions/recorder` = `script`; `extra` is added to its table.
fn project(script: &str, extra: &str) -> TempDir {
    project_with_env(script, extra, "")
}

/// [`project`], with the function's environment (`KEY = "value"`).
fn project_with_env(script: &str, extra: &str, env: &str) -> TempDir {
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
    // The jail's unprivileged user must reach the code.
    for d in [
        root,
        &root.join("f"),
        &root.join("layer"),
        &root.join("layer/extensions"),
    ] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        root.join("lamina.toml"),
        format!(
            "[functions.f]\ncode = \"f\"\nlayers = [\"layer\"]\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
             environment = {{ {env} }}\n{extra}\n"
        ),
    )
    .unwrap();
    dir
}

/// The events the test extension printed in `logs`.
fn logged(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| l.split_once(EVENT).map(|(_, json)| json))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Waits until the server's log holds more than `after` events, the last of `kind`; all.
fn wait_logged(server: &Server, kind: &str, after: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = server.logs();
        let events = logged(&logs);
        if events.len() > after && events.last().unwrap()["eventType"] == kind {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} after {after} events in {events:?}\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_extension_gets_invoke_events_and_a_spindown_shutdown() {
    for backend in BACKENDS {
        invoke_events_and_a_spindown_shutdown(backend).await;
    }
}

async fn invoke_events_and_a_spindown_shutdown(backend: &str) {
    let dir = project(&shell_extension(r#""INVOKE", "SHUTDOWN""#, ""), "");
    let server = Server::start_in(dir, &["--sandbox", backend]);
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
    let events = logged(&logs);
    assert_eq!(events.len(), 3, "{backend}: {events:?}\n{logs}");
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
    for backend in BACKENDS {
        spindown_and_timeout(backend).await;
    }
}

async fn spindown_and_timeout(backend: &str) {
    let dir = project(
        &shell_extension(r#""INVOKE", "SHUTDOWN""#, ""),
        "idle_timeout = 1\ntimeout = 1\n",
    );
    let server = Server::start_in(dir, &["--sandbox", backend]);
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let events = wait_logged(&server, "SHUTDOWN", 0);
    assert_eq!(events.last().unwrap()["shutdownReason"], "spindown");
    let seen = events.len();
    // An invocation that overruns its timeout: the environment resets, the extension is
    // told why.
    let r = server.invoke("f", &[], r#"{"sleep": 3}"#).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(json_of(&r)["errorType"], "Sandbox.Timedout");
    let events = wait_logged(&server, "SHUTDOWN", seen + 1);
    assert_eq!(
        events.last().unwrap()["shutdownReason"],
        "timeout",
        "{backend}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_extension_that_crashes_mid_invoke_fails_it_with_extension_crash() {
    for backend in BACKENDS {
        crash_mid_invoke(backend).await;
    }
}

async fn crash_mid_invoke(backend: &str) {
    // Exits 1 as soon as it has the INVOKE; the function takes half a second.
    let dir = project(&shell_extension(r#""INVOKE""#, "exit 1"), "");
    let server = Server::start_in(dir, &["--sandbox", backend]);
    let r = server.invoke("f", &[], r#"{"sleep": 0.5}"#).await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    let body = json_of(&r);
    assert_eq!(body["errorType"], "Extension.Crash", "{backend}: {body}");
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
    for backend in BACKENDS {
        never_calls_next(backend).await;
    }
}

async fn never_calls_next(backend: &str) {
    let script = "#!/bin/bash\nH=$(mktemp)\ncurl -sS -D \"$H\" -XPOST \"http://${AWS_LAMBDA_RUNTIME_API}/2020-01-01/extension/register\" \
                  -H 'Lambda-Extension-Name: recorder' -d '{\"events\": [\"INVOKE\"]}' > /dev/null\nexec sleep 600\n";
    let dir = project(script, "init_timeout = 1\n");
    let server = Server::start_in(dir, &["--sandbox", backend]);
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
    for backend in BACKENDS {
        overruns_shutdown_budget(backend).await;
    }
}

async fn overruns_shutdown_budget(backend: &str) {
    let dir = project_with_env(
        &shell_extension(r#""SHUTDOWN""#, ""),
        "",
        "ON_SHUTDOWN = \"sleep 600\"",
    );
    let server = Server::start_in(dir, &["--sandbox", backend]);
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
        logged(&logs).last().unwrap()["shutdownReason"],
        "spindown",
        "{backend}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_extension_that_cannot_be_started_fails_init_with_extension_launch_error() {
    for backend in BACKENDS {
        cannot_be_started(backend).await;
    }
}

async fn cannot_be_started(backend: &str) {
    // Not executable: the process backend's spawn fails, and in the jail its `execve`.
    let dir = project(&shell_extension(r#""INVOKE""#, ""), "");
    let ext = dir.path().join("layer/extensions/recorder");
    std::fs::set_permissions(&ext, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let server = Server::start_in(dir, &["--sandbox", backend]);
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    let body = json_of(&r);
    assert_eq!(
        body["errorType"], "Extension.LaunchError",
        "{backend}: {body}"
    );
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("extension recorder could not be started: permission denied"),
        "{backend}: {body}"
    );
}

/// The runtime starts only once every extension has registered, as on Lambda (an extension
/// may serve the function's init: a parameters cache, say), under both native backends.
#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_starts_after_the_extensions_have_registered() {
    for backend in BACKENDS {
        the_runtime_starts_after_the_extensions_have_registered_in(backend).await;
    }
}

async fn the_runtime_starts_after_the_extensions_have_registered_in(backend: &str) {
    // Registers a second after it starts, and says when it has.
    let script = "#!/bin/bash\nsleep 1\nH=$(mktemp)\ncurl -sS -D \"$H\" -XPOST \"http://${AWS_LAMBDA_RUNTIME_API}/2020-01-01/extension/register\" \
                  -H 'Lambda-Extension-Name: recorder' -d '{\"events\": [\"INVOKE\"]}' > /dev/null\n\
                  echo \"REGISTERED $(date +%s.%N)\"\n\
                  ID=$(grep -Fi Lambda-Extension-Identifier \"$H\" | tr -d '[:space:]' | cut -d: -f2)\n\
                  while true; do curl -sS \"http://${AWS_LAMBDA_RUNTIME_API}/2020-01-01/extension/event/next\" -H \"Lambda-Extension-Identifier: $ID\" > /dev/null; done\n";
    let dir = project(script, "");
    std::fs::write(
        dir.path().join("f/app.py"),
        "import time\nprint('LOADED', time.time(), flush=True)\ndef handler(event, context):\n    return {}\n",
    )
    .unwrap();
    let server = Server::start_in(dir, &["--sandbox", backend]);
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(r.status(), 200, "{backend}: {}", server.logs());
    let (_, logs) = server.stop();
    let at = |prefix: &str| -> f64 {
        logs.lines()
            .find_map(|l| l.split_once(prefix).map(|(_, t)| t.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{logs}"))
    };
    let (registered, loaded) = (at("REGISTERED "), at("LOADED "));
    assert!(
        loaded >= registered,
        "{backend}: the function loaded at {loaded}, the extension registered at {registered}\n{logs}"
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
