//! The WASM backend, with a guest built from source (`tests/wasm-guest`) for WASI preview 1
//! (a core module) and preview 2 (a component): the guest ABI, confinement, limits, failures
//! and parallel runs, through the same pool and log stream as native functions.

use std::io::Write;

use serde_json::Value;

use crate::support::{Harness, function_with_module, lamina, test_cache, wasm_guest};

const TARGETS: [&str; 2] = ["wasm32-wasip1", "wasm32-wasip2"];

fn harness(
    target: &str,
    tweak: impl FnOnce(&mut lamina_runtime::config::FunctionConfig),
) -> Harness {
    Harness::wasm(function_with_module(&wasm_guest(target)), tweak)
}

fn message(body: &Value) -> &str {
    body["errorMessage"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_is_the_same_for_a_module_and_a_component() {
    let event = r#"{"action":"echo","greeting":"hello","n":[1,2,3]}"#;
    for target in TARGETS {
        let h = harness(target, |_| {});
        let done = h.invoke(event).await;
        assert_eq!(done.error_type(), None, "{target}");
        assert_eq!(&done.body()[..], event.as_bytes(), "{target}");
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_has_lambdas_variables_and_the_invocations() {
    for target in TARGETS {
        let h = harness(target, |c| {
            c.name = Some("wasm-env".into());
            c.environment = vec![("GREETING".into(), "hi".into())];
        });
        let mut seen_ids = Vec::new();
        for _ in 0..2 {
            let (done, env) = h.invoke_json(r#"{"action":"env"}"#).await;
            assert_eq!(
                env["LAMBDA_RUNTIME_AWS_REQUEST_ID"],
                done.request_id.as_str()
            );
            seen_ids.push(done.request_id.clone());
            assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "wasm-env");
            assert_eq!(env["GREETING"], "hi");
            assert_eq!(env["LAMBDA_TASK_ROOT"], "/var/task");
            assert_eq!(
                env["LAMBDA_RUNTIME_INVOKED_FUNCTION_ARN"],
                "arn:aws:lambda:us-east-1:000000000000:function:wasm-env"
            );
            let trace = env["LAMBDA_RUNTIME_TRACE_ID"].as_str().unwrap();
            assert!(trace.starts_with("Root=1-"), "{trace}");
            assert_eq!(env["_X_AMZN_TRACE_ID"], trace);
            let deadline: u128 = env["LAMBDA_RUNTIME_DEADLINE_MS"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            assert!(
                deadline > now && deadline <= now + 3_000,
                "{deadline} vs {now}"
            );
            assert!(
                env.get("AWS_LAMBDA_RUNTIME_API").is_none(),
                "no Runtime API: {env}"
            );
            assert!(env.get("LAMBDA_RUNTIME_CLIENT_CONTEXT").is_none());
        }
        assert_ne!(
            seen_ids[0], seen_ids[1],
            "{target}: each invocation its own id"
        );
        // Client context and identity appear when the caller gives them.
        let done = h
            .invoke_request(lamina_runtime::invoke::InvokeRequest {
                payload: bytes::Bytes::from_static(br#"{"action":"env"}"#),
                client_context: Some(r#"{"custom":{"k":"v"}}"#.into()),
                cognito_identity: Some(r#"{"cognitoIdentityId":"id"}"#.into()),
                ..Default::default()
            })
            .await;
        let env: Value = serde_json::from_slice(&done.body()).unwrap();
        assert_eq!(
            env["LAMBDA_RUNTIME_CLIENT_CONTEXT"],
            r#"{"custom":{"k":"v"}}"#
        );
        assert_eq!(
            env["LAMBDA_RUNTIME_COGNITO_IDENTITY"],
            r#"{"cognitoIdentityId":"id"}"#
        );
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tmp_is_empty_for_every_invocation_unless_asked_to_persist() {
    for target in TARGETS {
        let h = harness(target, |_| {});
        for tag in ["a", "b", "c"] {
            let (_, r) = h
                .invoke_json(&format!(r#"{{"action":"tmp","tag":"{tag}"}}"#))
                .await;
            assert_eq!(r["before"], serde_json::json!([]), "{target} {tag}: {r}");
            assert_eq!(r["write"], "ok");
            assert_eq!(r["read_back"], tag);
        }
        h.finish().await;
        // The control: kept per environment, the earlier file is there.
        let h = harness(target, |c| c.tmp_per_environment = true);
        h.invoke_json(r#"{"action":"tmp","tag":"a"}"#).await;
        let (_, r) = h.invoke_json(r#"{"action":"tmp","tag":"b"}"#).await;
        assert_eq!(
            r["before"],
            serde_json::json!(["left-by-a"]),
            "{target}: {r}"
        );
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_task_opt_and_tmp_are_there_and_only_tmp_is_writable() {
    for target in TARGETS {
        let h = harness(target, |_| {});
        let attempt = |action: &'static str, path: &'static str| {
            let h = &h;
            async move {
                let (done, r) = h
                    .invoke_json(&format!(r#"{{"action":"{action}","path":"{path}"}}"#))
                    .await;
                assert_eq!(done.error_type(), None, "{r}");
                r[action].as_str().unwrap().to_owned()
            }
        };
        // Host files that are not preopened do not exist for the guest.
        for path in [
            "/etc/passwd",
            "/root",
            "/proc/self/status",
            "../../etc/passwd",
        ] {
            assert_ne!(attempt("read", path).await, "ok", "{target}: {path}");
        }
        assert_eq!(
            attempt("read", "/var/task/bootstrap.wasm").await,
            "ok",
            "{target}"
        );
        assert_eq!(
            attempt("write", "/var/task/x").await,
            "permission denied",
            "{target}"
        );
        assert_eq!(attempt("write", "/tmp/x").await, "ok", "{target}");
        // Escaping /tmp through `..` stays inside the preopen.
        assert_ne!(attempt("write", "/tmp/../etc/x").await, "ok", "{target}");
        let (_, r) = h.invoke_json(r#"{"action":"socket"}"#).await;
        assert_ne!(r["socket"], "ok", "{target}: no sockets");
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn opt_holds_the_layers_read_only() {
    let layer = tempfile::tempdir().unwrap();
    std::fs::write(layer.path().join("data.txt"), "from a layer").unwrap();
    let h = harness("wasm32-wasip1", |c| {
        c.layers = vec![layer.path().to_owned()]
    });
    let (_, r) = h
        .invoke_json(r#"{"action":"read","path":"/opt/data.txt"}"#)
        .await;
    assert_eq!(r["read"], "ok");
    let (_, r) = h.invoke_json(r#"{"action":"write","path":"/opt/x"}"#).await;
    assert_eq!(r["write"], "permission denied");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_storage_bounds_tmp() {
    let h = harness("wasm32-wasip1", |c| {
        c.ephemeral_storage_mb = Some(512);
        c.timeout_secs = Some(60);
    });
    let (_, r) = h.invoke_json(r#"{"action":"fill","mb":600}"#).await;
    assert_ne!(r["fill"], "ok", "600 MB into a 512 MB /tmp: {r}");
    let (_, r) = h.invoke_json(r#"{"action":"fill","mb":8}"#).await;
    assert_eq!(
        r["fill"], "ok",
        "and the next invocation has all of it again: {r}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_infinite_loop_times_out_and_the_next_invocation_works() {
    for target in TARGETS {
        let h = harness(target, |c| c.timeout_secs = Some(1));
        let started = std::time::Instant::now();
        let (done, body) = h.invoke_json(r#"{"action":"loop"}"#).await;
        assert_eq!(done.error_type(), Some("Sandbox.Timedout"), "{target}");
        assert!(
            message(&body).ends_with("Task timed out after 1.00 seconds"),
            "{body}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
        let done = h.invoke(r#"{"action":"echo"}"#).await;
        assert_eq!(done.error_type(), None, "{target}: the next one runs");
        let logs = h.finish().await;
        assert!(
            logs.iter()
                .any(|l| l.contains("Task timed out after 1.00 seconds"))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_waiting_in_a_host_call_is_stopped_at_its_timeout() {
    for target in TARGETS {
        let h = harness(target, |c| c.timeout_secs = Some(1));
        // The environment is up (the module compiled) before the clock starts.
        let (done, body) = h.invoke_json(r#"{"action":"sleep","ms":10}"#).await;
        assert_eq!(done.error_type(), None, "{target}: {body}");
        let started = std::time::Instant::now();
        let (done, body) = h.invoke_json(r#"{"action":"sleep","ms":60000}"#).await;
        assert_eq!(
            done.error_type(),
            Some("Sandbox.Timedout"),
            "{target}: {body}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{target}: stopped at the deadline, not when the sleep ends"
        );
        let (done, body) = h.invoke_json(r#"{"action":"sleep","ms":10}"#).await;
        assert_eq!(
            done.error_type(),
            None,
            "{target}: the next one runs: {body}"
        );
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn allocating_past_the_memory_limit_is_out_of_memory() {
    for target in TARGETS {
        let h = harness(target, |c| c.memory_mb = Some(128));
        let (done, r) = h.invoke_json(r#"{"action":"alloc","mb":64}"#).await;
        assert_eq!(done.error_type(), None, "{target}: within the limit: {r}");
        let (done, _) = h.invoke_json(r#"{"action":"alloc","mb":200}"#).await;
        assert_eq!(done.error_type(), Some("Runtime.OutOfMemory"), "{target}");
        let done = h.invoke(r#"{"action":"echo"}"#).await;
        assert_eq!(done.error_type(), None, "{target}: the next one runs");
        let logs = h.finish().await;
        // REPORT's Max Memory Used is the largest linear memory: over 64 MB, at most 128.
        let report = logs
            .iter()
            .find(|l| l.contains("Runtime.OutOfMemory"))
            .expect("a REPORT with the error");
        let used = crate::support::max_memory_used_mb(report);
        assert!((64..=128).contains(&used), "{report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_a_function_error_that_names_the_trap() {
    for target in TARGETS {
        let h = harness(target, |_| {});
        let (done, body) = h.invoke_json(r#"{"action":"trap"}"#).await;
        assert_eq!(done.error_type(), Some("Runtime.WasmTrap"), "{target}");
        let message = message(&body);
        assert!(
            message.contains("wasm `unreachable` instruction executed"),
            "{message}"
        );
        assert!(
            message.contains("lamina_wasm_guest"),
            "with the backtrace: {message}"
        );
        assert!(
            h.invoke(r#"{"action":"echo"}"#)
                .await
                .error_type()
                .is_none()
        );
        let logs = h.finish().await;
        assert!(logs.iter().any(|l| l == "about to trap"), "{logs:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nonzero_exit_is_the_guests_error_document_or_an_exit_error() {
    for target in TARGETS {
        let h = harness(target, |_| {});
        let (done, body) = h
            .invoke_json(r#"{"action":"exit","code":3,"json":true}"#)
            .await;
        assert_eq!(done.error_type(), Some("GuestError"), "{target}");
        assert_eq!(body["errorMessage"], "failed on purpose");
        let (done, body) = h.invoke_json(r#"{"action":"exit","code":3}"#).await;
        assert_eq!(done.error_type(), Some("Runtime.ExitError"), "{target}");
        // A component's `wasi:cli/run` can only say failure, which is status 1.
        let status = if target == "wasm32-wasip1" { 3 } else { 1 };
        assert!(
            message(&body).ends_with(&format!("Runtime exited with error: exit status {status}")),
            "{body}"
        );
        // Exit 0 with output is a response.
        let (done, _) = h
            .invoke_json(r#"{"action":"exit","code":0,"json":true}"#)
            .await;
        assert_eq!(done.error_type(), None);
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stderr_lines_are_in_the_log_between_start_and_end() {
    let h = harness("wasm32-wasip2", |_| {});
    let done = h.invoke(r#"{"action":"log"}"#).await;
    assert_eq!(&done.body()[..], b"\"logged\"");
    let logs = h.finish().await;
    let at = |prefix: &str| {
        logs.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {logs:?}"))
    };
    let start = at(&format!("START RequestId: {}", done.request_id));
    let (one, two) = (at("guest stderr line one"), at("guest stderr line two"));
    let end = at(&format!("END RequestId: {}", done.request_id));
    let report = at(&format!("REPORT RequestId: {}", done.request_id));
    assert!(
        start < one && one < two && two < end && end < report,
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_logs_more_than_the_host_buffers_loses_no_line() {
    // About 2 MB of log in several small writes a line, more than may wait for the log sink:
    // the guest is held back, not its lines dropped or reordered.
    const LINES: usize = 40_000;
    for target in TARGETS {
        let h = harness(target, |c| c.timeout_secs = Some(60));
        let done = h
            .invoke(&format!(r#"{{"action":"log","lines":{LINES}}}"#))
            .await;
        assert_eq!(&done.body()[..], b"\"logged\"", "{target}");
        let logs = h.finish().await;
        let start = logs
            .iter()
            .position(|l| l.starts_with(&format!("START RequestId: {}", done.request_id)))
            .expect("START");
        let end = logs
            .iter()
            .position(|l| l.starts_with(&format!("END RequestId: {}", done.request_id)))
            .expect("END");
        let numbered: Vec<&String> = logs[start..end]
            .iter()
            .filter(|l| l.starts_with("guest line "))
            .collect();
        assert_eq!(
            numbered.len(),
            LINES,
            "{target}: every line, between START and END"
        );
        for (i, line) in numbered.iter().enumerate() {
            assert!(
                line.starts_with(&format!("guest line {i:07} ")),
                "{target}: line {i} is {line:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_response_is_refused() {
    let h = harness("wasm32-wasip1", |_| {});
    let (done, body) = h.invoke_json(r#"{"action":"big","bytes":7000000}"#).await;
    assert_eq!(
        done.error_type(),
        Some("Function.ResponseSizeTooLarge"),
        "{body}"
    );
    let done = h.invoke(r#"{"action":"big","bytes":6000000}"#).await;
    assert_eq!(done.error_type(), None, "just under the limit");
    assert_eq!(done.body().len(), 6_000_000);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_parallel_invocations_each_have_their_own_tmp() {
    let h = std::sync::Arc::new(harness("wasm32-wasip1", |c| c.concurrency = Some(16)));
    let runs = (0..16).map(|i| {
        let h = std::sync::Arc::clone(&h);
        tokio::spawn(async move {
            h.invoke_json(&format!(r#"{{"action":"tmp","tag":"t{i}","hold_ms":300}}"#))
                .await
        })
    });
    let started = std::time::Instant::now();
    for (i, run) in futures_join(runs.collect()).await.into_iter().enumerate() {
        let (done, r) = run;
        assert_eq!(done.error_type(), None, "{r}");
        assert_eq!(r["before"], serde_json::json!([]), "{i}: {r}");
        assert_eq!(
            r["after"],
            serde_json::json!([format!("left-by-t{i}")]),
            "{i}: {r}"
        );
        assert_eq!(r["read_back"], format!("t{i}"));
    }
    // 16 × 300 ms one after another would take 4.8 s: they ran side by side.
    assert!(started.elapsed() < std::time::Duration::from_millis(4000));
    std::sync::Arc::try_unwrap(h).ok().unwrap().finish().await;
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn something_that_is_not_a_command_is_an_invalid_entrypoint() {
    // WASM's magic, then nonsense.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bootstrap.wasm"),
        b"\0asm\x01\0\0\0\xff\xff",
    )
    .unwrap();
    let h = Harness::wasm(dir, |_| {});
    let (done, body) = h.invoke_json("{}").await;
    assert_eq!(done.error_type(), Some("Runtime.InvalidEntrypoint"));
    assert!(
        message(&body).contains("/var/task/bootstrap.wasm"),
        "{body}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_code_is_cached_on_disk_and_a_damaged_entry_is_recompiled() {
    let module = wasm_guest("wasm32-wasip1");
    let name = sha256_hex(&module);
    let cached = || {
        std::fs::read_dir(test_cache().join("wasm"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&name))
            .collect::<Vec<_>>()
    };
    let h = harness("wasm32-wasip1", |_| {});
    assert!(h.invoke("{}").await.error_type().is_none());
    h.finish().await;
    let entries = cached();
    assert_eq!(
        entries.len(),
        1,
        "one compiled artifact named by the module's hash"
    );
    // Damage it: a new lamina process (here, `lamina invoke`) recompiles instead of failing.
    // (Replaced, as lamina itself writes entries: this test process still maps the original,
    // and a file changed in place under a mapping is a SIGBUS.)
    let damaged = entries[0].with_extension("damaged");
    std::fs::write(&damaged, b"not compiled code").unwrap();
    std::fs::rename(&damaged, &entries[0]).unwrap();
    let out = std::process::Command::new(lamina())
        .arg("invoke")
        .arg(&module)
        .args(["--payload", r#"{"action":"echo","ok":1}"#])
        .env("LAMINA_CACHE_DIR", test_cache())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, br#"{"action":"echo","ok":1}"#);
    assert!(
        std::fs::read(&entries[0]).unwrap().len() > 1000,
        "rewritten"
    );
}

/// The module's SHA-256 as hex, as the cache names compiled code (`sha256sum`, so the test
/// does not share the code under test).
fn sha256_hex(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn lamina_invoke_runs_a_lone_module_and_a_runtime_shipped_as_a_layer() {
    let module = wasm_guest("wasm32-wasip2");
    let out = std::process::Command::new(lamina())
        .arg("invoke")
        .arg(&module)
        .args(["--payload", r#"{"action":"log"}"#])
        .env("LAMINA_CACHE_DIR", test_cache())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"\"logged\"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("guest stderr line one") && stderr.contains("REPORT RequestId: "),
        "{stderr}"
    );

    // The runtime as a layer (a real ZIP holding bootstrap.wasm), the function as data only.
    let layer_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&module, layer_dir.path().join("bootstrap.wasm")).unwrap();
    let zips = tempfile::tempdir().unwrap();
    let layer = zips.path().join("wasm-runtime.zip");
    crate::shared::zip_dir(std::fs::File::create(&layer).unwrap(), layer_dir.path(), "")
        .flush()
        .unwrap();
    let function = tempfile::tempdir().unwrap();
    std::fs::write(function.path().join("data.txt"), "the function's own file").unwrap();
    let out = std::process::Command::new(lamina())
        .arg("invoke")
        .arg(function.path())
        .arg("--layer")
        .arg(&layer)
        .args([
            "--payload",
            r#"{"action":"read","path":"/var/task/data.txt"}"#,
        ])
        .env("LAMINA_CACHE_DIR", test_cache())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, br#"{"read":"ok"}"#);
}
