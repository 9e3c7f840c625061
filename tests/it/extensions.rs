//! Lambda extensions as AWS documents them: external extensions shipped in a layer's
//! `extensions/` directory, started beside the runtime, talking to the Extensions API with
//! curl (the shape of AWS's own shell examples). Their lifecycle: `INVOKE` with every
//! invocation, `SHUTDOWN` with its reason (`spindown` when idle or stopping, `timeout`),
//! Lambda's shutdown budget, and the errors that reset an environment (`Extension.Crash`).
//! Each case runs under both native backends: the jail's PID 1 starts the extensions there.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tempfile::TempDir;

use crate::server::{Server, header, json_of};

/// The native backends, each of which runs every case.
const BACKENDS: [&str; 2] = ["process", "jail"];

/// An extension written against the documented API with curl: registers for `events`, then
/// prints each event it gets (one line each, after [`EVENT`]) and, after a `SHUTDOWN`, runs
/// `$ON_SHUTDOWN` (default: exit 0). `on_invoke` is shell run after each `INVOKE`.
fn shell_extension(events: &str, on_invoke: &str) -> String {
    registered("recorder", events)
        + &format!(
            r#"while true; do
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

/// A project: a Python function `f` (sleeps `event.sleep` seconds, returns its request id;
/// its process exits at once when `event.exit` is set)
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
        "import os, time\ndef handler(event, context):\n    if event.get('exit'):\n        os._exit(3)\n    time.sleep(event.get('sleep', 0))\n    return {'id': context.aws_request_id}\n",
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

/// The start of a curl extension whose file is `name`: registers for `events`, and leaves the
/// API's base in `$API` and its identifier in `$ID`.
fn registered(name: &str, events: &str) -> String {
    format!(
        r#"#!/bin/bash
set -euo pipefail
API="http://${{AWS_LAMBDA_RUNTIME_API}}/2020-01-01/extension"
HEADERS="$(mktemp)"
curl -sS -D "$HEADERS" -XPOST "$API/register" -H "Lambda-Extension-Name: {name}" \
  -d '{{"events": [{events}]}}' > /dev/null
ID=$(grep -Fi Lambda-Extension-Identifier "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
rm -f "$HEADERS"
"#
    )
}

/// Adds a second extension, `layer/extensions/{name}`, to a [`project`].
fn add_extension(dir: &TempDir, name: &str, script: &str) {
    let path = dir.path().join("layer/extensions").join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
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
        let r = server.invoke_when_free("f", "{}").await;
        assert_eq!(r.status(), 200, "{}", server.logs());
        ids.push(json_of(&r)["id"].as_str().unwrap().to_owned());
        assert_eq!(
            header(&r, "x-amzn-RequestId"),
            Some(ids.last().unwrap().as_str())
        );
    }
    let stopping = unix_ms(SystemTime::now());
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
    // Lambda's budget with an external extension: 2,000 ms from the start of the shutdown.
    let deadline = events[2]["deadlineMs"].as_u64().unwrap();
    assert!(
        (stopping + 2_000..stopping + 7_000).contains(&deadline),
        "{backend}: deadlineMs {deadline}, the stop asked for at {stopping}"
    );
}

/// Milliseconds since the Unix epoch, as `deadlineMs` counts them.
fn unix_ms(t: SystemTime) -> u64 {
    u64::try_from(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
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
    let took = stopping.elapsed();
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(10)).contains(&took),
        "{backend}: stopping took {took:?}\n{logs}"
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn an_extension_not_registered_for_shutdown_is_killed_at_once() {
    for backend in BACKENDS {
        killed_at_once(backend).await;
    }
}

async fn killed_at_once(backend: &str) {
    // `recorder` takes a second over its SHUTDOWN (well within what the 2 s budget has left
    // after the runtime's share); `beater`, registered for INVOKE only, prints a line every
    // 100 ms from a child of its own.
    let recorder = registered("recorder", r#""SHUTDOWN""#)
        + r#"curl -sS "$API/event/next" -H "Lambda-Extension-Identifier: $ID" > /dev/null
echo SHUTDOWN-BEGIN
sleep 1
echo SHUTDOWN-END
"#;
    let dir = project(&recorder, "");
    let beater = registered("beater", r#""INVOKE""#)
        + r#"( while true; do echo BEAT; sleep 0.1; done ) &
while true; do curl -sS "$API/event/next" -H "Lambda-Extension-Identifier: $ID" > /dev/null; done
"#;
    add_extension(&dir, "beater", &beater);
    let server = Server::start_in(dir, &["--sandbox", backend]);
    let r = server.invoke_when_free("f", "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    server.wait_for_log("BEAT", 1);
    let (_, logs) = server.stop();
    let lines: Vec<&str> = logs.lines().collect();
    let at = |text: &str| {
        lines
            .iter()
            .position(|l| l.contains(text))
            .unwrap_or_else(|| panic!("{backend}: no {text}\n{logs}"))
    };
    let (begin, end) = (at("SHUTDOWN-BEGIN"), at("SHUTDOWN-END"));
    // Killed when the SHUTDOWN went out, before `recorder` had it: a line already written may
    // still come through, not ten.
    let beats = lines[begin..end]
        .iter()
        .filter(|l| l.contains("BEAT"))
        .count();
    assert!(
        beats <= 2,
        "{backend}: {beats} beats while recorder handled its SHUTDOWN\n{logs}"
    );
    assert!(
        !logs.contains("did not exit within the shutdown budget"),
        "{backend}: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_caller_is_answered_before_a_busy_extension_is_back_and_the_environment_waits() {
    for backend in BACKENDS {
        busy_extension(backend).await;
    }
}

async fn busy_extension(backend: &str) {
    let dir = project(
        &shell_extension(r#""INVOKE", "SHUTDOWN""#, "sleep 2; echo EXTENSION-BACK"),
        "concurrency = 1\n",
    );
    let server = Server::start_in(dir, &["--sandbox", backend]);
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    assert_eq!(header(&r, "x-amz-function-error"), None);
    // The answer came when the runtime posted it, the extension still at its INVOKE.
    assert!(
        !server.logs().contains("EXTENSION-BACK"),
        "{backend}: answered after the extension was back\n{}",
        server.logs()
    );
    // The one environment takes no invocation until the extension is back at `/next`.
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(r.status(), 429, "{backend}: {}", server.logs());
    let r = server.invoke_when_free("f", "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    server.wait_for_log("EXTENSION-BACK", 1);
    // The second INVOKE's line is printed as the runtime answers it, not before.
    let events = wait_logged(&server, "INVOKE", 1);
    assert_eq!(events.len(), 2, "{backend}: {events:?}");
    assert!(events.iter().all(|e| e["eventType"] == "INVOKE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn time_an_extension_takes_counts_against_the_timeout_and_a_timeout_mid_invoke_says_so() {
    for backend in BACKENDS {
        busy_extension_timeouts(backend).await;
    }
}

async fn busy_extension_timeouts(backend: &str) {
    let dir = project(
        &shell_extension(r#""INVOKE", "SHUTDOWN""#, "sleep 1.5"),
        "timeout = 1\n",
    );
    let server = Server::start_in(dir, &["--sandbox", backend]);
    // The runtime answers at once; the extension's 1.5 s over the INVOKE run past the 1 s
    // timeout: the caller has its answer, and the environment is reset for the timeout.
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    assert_eq!(header(&r, "x-amz-function-error"), None);
    let events = wait_logged(&server, "SHUTDOWN", 1);
    assert_eq!(
        events.last().unwrap()["shutdownReason"],
        "timeout",
        "{backend}: {events:?}"
    );
    let seen = events.len();
    // The function overruns while the (new) extension is still at its INVOKE: it gets its
    // SHUTDOWN when it comes back for the next event.
    let r = server.invoke_when_free("f", r#"{"sleep": 3}"#).await;
    assert_eq!(
        json_of(&r)["errorType"],
        "Sandbox.Timedout",
        "{}",
        server.logs()
    );
    let events = wait_logged(&server, "SHUTDOWN", seen + 1);
    assert_eq!(events[seen]["eventType"], "INVOKE");
    assert_eq!(
        events.last().unwrap()["shutdownReason"],
        "timeout",
        "{backend}: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_that_exits_mid_invoke_tells_the_extensions_failure() {
    for backend in BACKENDS {
        runtime_exits(backend).await;
    }
}

async fn runtime_exits(backend: &str) {
    let dir = project(&shell_extension(r#""INVOKE", "SHUTDOWN""#, ""), "");
    let server = Server::start_in(dir, &["--sandbox", backend]);
    let r = server.invoke("f", &[], r#"{"exit": true}"#).await;
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        json_of(&r)["errorType"],
        "Runtime.ExitError",
        "{}",
        server.logs()
    );
    let events = wait_logged(&server, "SHUTDOWN", 1);
    assert_eq!(
        events.last().unwrap()["shutdownReason"],
        "failure",
        "{backend}: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn init_includes_the_extensions_time_and_they_get_the_environment_less_the_runtimes() {
    for backend in BACKENDS {
        init_and_environment(backend).await;
    }
}

async fn init_and_environment(backend: &str) {
    // Prints its environment, registers, and takes a second before its first `/next`.
    let script = "#!/bin/bash\nenv | sed 's/^/EXT-ENV /'\n".to_owned()
        + registered("recorder", r#""INVOKE""#).trim_start_matches("#!/bin/bash\n")
        + r#"sleep 1
while true; do curl -sS "$API/event/next" -H "Lambda-Extension-Identifier: $ID" > /dev/null; done
"#;
    let dir = project_with_env(&script, "", "MY_SETTING = \"on\"");
    let server = Server::start_in(dir, &["--sandbox", backend]);
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let (_, logs) = server.stop();
    let init_ms: f64 = logs
        .lines()
        .find_map(|l| l.split("Init Duration: ").nth(1))
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{backend}: no REPORT with an Init Duration\n{logs}"));
    assert!(
        init_ms >= 1000.0,
        "{backend}: Init Duration {init_ms} ms\n{logs}"
    );
    let env: Vec<&str> = logs
        .lines()
        .filter_map(|l| l.split_once("EXT-ENV ").map(|(_, v)| v))
        .collect();
    let has = |key: &str| env.iter().any(|v| v.starts_with(&format!("{key}=")));
    for key in [
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_REGION",
        "MY_SETTING",
    ] {
        assert!(has(key), "{backend}: the extension has no {key}: {env:?}");
    }
    // Lambda gives these to the runtime only.
    for key in ["_HANDLER", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR"] {
        assert!(!has(key), "{backend}: the extension has {key}: {env:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn extension_errors_fail_init_or_the_invocation_with_their_types() {
    for backend in BACKENDS {
        reports_init_error(backend).await;
    }
}

async fn reports_init_error(backend: &str) {
    let script = registered("recorder", r#""INVOKE""#)
        + r#"curl -sS -XPOST "$API/init/error" -H "Lambda-Extension-Identifier: $ID" \
  -H "Lambda-Extension-Function-Error-Type: Extension.ConfigInvalid" -d '{}' > /dev/null
exit 1
"#;
    let dir = project(&script, "");
    let server = Server::start_in(dir, &["--sandbox", backend]);
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    let body = json_of(&r);
    assert_eq!(
        body["errorType"], "Extension.InitError",
        "{backend}: {body}"
    );
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("extension recorder reported init/error: Extension.ConfigInvalid"),
        "{backend}: {body}"
    );
    drop(server);
    // `exit/error` at an INVOKE fails that invocation with `Extension.ExitError`.
    let script = registered("recorder", r#""INVOKE""#)
        + r#"curl -sS "$API/event/next" -H "Lambda-Extension-Identifier: $ID" > /dev/null
curl -sS -XPOST "$API/exit/error" -H "Lambda-Extension-Identifier: $ID" \
  -H "Lambda-Extension-Function-Error-Type: Extension.Broken" -d '{}' > /dev/null
exit 1
"#;
    let server = Server::start_in(project(&script, ""), &["--sandbox", backend]);
    let r = server.invoke("f", &[], r#"{"sleep": 0.5}"#).await;
    assert_eq!(header(&r, "x-amz-function-error"), Some("Unhandled"));
    let body = json_of(&r);
    assert_eq!(
        body["errorType"], "Extension.ExitError",
        "{backend}: {body}"
    );
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("extension recorder reported exit/error: Extension.Broken"),
        "{backend}: {body}"
    );
    drop(server);
    // One that starts and exits during init, before registering: `Extension.Crash`.
    let server = Server::start_in(project("#!/bin/sh\nexit 7\n", ""), &["--sandbox", backend]);
    let r = server.invoke("f", &[], "{}").await;
    let body = json_of(&r);
    assert_eq!(body["errorType"], "Extension.Crash", "{backend}: {body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("extension recorder exited (exit status 7)"),
        "{backend}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn extensions_get_shutdown_only_once_the_runtime_is_gone() {
    for backend in BACKENDS {
        runtime_first(backend).await;
    }
}

async fn runtime_first(backend: &str) {
    // Whether this function's runtime is alive: a Python process with the function's own mark
    // in its environment (extensions get the function's variables too, but are not Python).
    let script = registered("recorder", r#""INVOKE", "SHUTDOWN""#)
        + r#"runtime_alive() {
  # One grep over every process (the host's, under the process backend), then the few hits.
  local alive=no e
  for e in $(grep -lasF "LAMINA_TEST_MARK=$LAMINA_TEST_MARK" /proc/[0-9]*/environ || true); do
    if grep -qa python "${e%/environ}/cmdline" 2>/dev/null; then
      alive=yes
    fi
  done
  echo "$1 $alive"
}
while true; do
  EVENT=$(curl -sS "$API/event/next" -H "Lambda-Extension-Identifier: $ID")
  if [[ "$EVENT" == *SHUTDOWN* ]]; then
    runtime_alive RUNTIME-AT-SHUTDOWN
    exit 0
  fi
  runtime_alive RUNTIME-AT-INVOKE
done
"#;
    let mark = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = project_with_env(&script, "", &format!("LAMINA_TEST_MARK = \"{mark}\""));
    let server = Server::start_in(dir, &["--sandbox", backend]);
    let r = server.invoke("f", &[], "{}").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    server.wait_for_log("RUNTIME-AT-INVOKE", 1);
    let (_, logs) = server.stop();
    // The check sees the runtime while it runs...
    assert!(logs.contains("RUNTIME-AT-INVOKE yes"), "{backend}: {logs}");
    // ...and at SHUTDOWN it has gone: SIGTERM, its share of the budget, SIGKILL, reaped.
    assert!(logs.contains("RUNTIME-AT-SHUTDOWN no"), "{backend}: {logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_internal_extension_registered_by_the_runtime_gets_invoke_events() {
    for backend in BACKENDS {
        internal_extension(backend).await;
    }
}

async fn internal_extension(backend: &str) {
    let bootstrap = runtime_with_internal_extension("");
    let server = Server::start_in(shell_runtime(&bootstrap), &["--sandbox", backend]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = server.invoke_when_free("g", "{}").await;
        assert_eq!(r.status(), 200, "{backend}: {}", server.logs());
        assert_eq!(json_of(&r)["ok"], true);
        ids.push(header(&r, "x-amzn-RequestId").unwrap().to_owned());
    }
    // Not the request id, which lamina's own START line carries first.
    server.wait_for_log("INNER-EVENT", 2);
    let (_, logs) = server.stop();
    let events: Vec<Value> = logs
        .lines()
        .filter_map(|l| l.split_once("INNER-EVENT ").map(|(_, json)| json))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(events.len(), 2, "{backend}: {events:?}\n{logs}");
    for (event, id) in events.iter().zip(&ids) {
        assert_eq!(event["eventType"], "INVOKE");
        assert_eq!(event["requestId"], id.as_str());
    }
}

/// A shell runtime in the shape of AWS's tutorial that registers an internal extension
/// (`inner`, for INVOKE) from its own process tree before its first `/next`, and serves that
/// extension's events from a child, printing each after `INNER-EVENT `; `before_loop` runs
/// before the runtime's loop.
fn runtime_with_internal_extension(before_loop: &str) -> String {
    format!(
        r#"#!/bin/bash
API="http://${{AWS_LAMBDA_RUNTIME_API}}"
HEADERS="$(mktemp)"
curl -sS -D "$HEADERS" -XPOST "$API/2020-01-01/extension/register" \
  -H "Lambda-Extension-Name: inner" -d '{{"events": ["INVOKE"]}}' > /dev/null
ID=$(grep -Fi Lambda-Extension-Identifier "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
( while true; do
    EVENT=$(curl -sS "$API/2020-01-01/extension/event/next" -H "Lambda-Extension-Identifier: $ID")
    echo "INNER-EVENT $EVENT"
  done ) &
{before_loop}
while true; do
  curl -sS -D "$HEADERS" "$API/2018-06-01/runtime/invocation/next" > /dev/null
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  curl -sS -XPOST "$API/2018-06-01/runtime/invocation/$REQUEST_ID/response" -d '{{"ok": true}}' > /dev/null
done
"#
    )
}

/// A project whose function `g` is the shell runtime `bootstrap`, readable by the jail's user.
fn shell_runtime(bootstrap: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("g")).unwrap();
    std::fs::write(root.join("g/bootstrap"), bootstrap).unwrap();
    for path in [root.to_path_buf(), root.join("g"), root.join("g/bootstrap")] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    std::fs::write(root.join("lamina.toml"), "[functions.g]\ncode = \"g\"\n").unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn with_internal_extensions_only_the_shutdown_budget_is_500_ms() {
    for backend in BACKENDS {
        internal_budget(backend).await;
    }
}

async fn internal_budget(backend: &str) {
    // A runtime with an internal extension that, told to stop, takes 300 ms more before it
    // would exit. Its share of Lambda's 500 ms budget (30 %, as the emulator splits it) ends
    // before that, and SIGKILL comes; without an extension it would have lamina's 500 ms
    // grace and say it was still there.
    let bootstrap = runtime_with_internal_extension(
        "trap 'echo GOT-TERM; sleep 0.3; echo STILL-HERE-AFTER-TERM; exit 0' TERM",
    );
    let server = Server::start_in(shell_runtime(&bootstrap), &["--sandbox", backend]);
    let r = server.invoke_when_free("g", "{}").await;
    assert_eq!(r.status(), 200, "{backend}: {}", server.logs());
    let (_, logs) = server.stop();
    assert!(
        logs.contains("GOT-TERM"),
        "{backend}: never told to stop\n{logs}"
    );
    assert!(
        !logs.contains("STILL-HERE-AFTER-TERM"),
        "{backend}: the runtime outlived the internal extensions' budget\n{logs}"
    );
}
