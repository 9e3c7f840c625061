//! Unmodified real runtime clients answer invocations: a shell runtime with curl, the official
//! Rust `lambda_runtime` crate, and Python's official `awslambdaric`.

use lamina_runtime::invoke::InvokeOutcome;
use serde_json::{Value, json};

use crate::support::{
    Harness, function_from_files, function_with, lamina, program, python_ric, repo_root,
};
use crate::zipcraft;

#[test]
fn shell_runtime_example_answers_through_the_cli() {
    let out = std::process::Command::new(lamina())
        .arg("invoke")
        .arg(repo_root().join("examples/shell-runtime"))
        .args(["--payload", r#"{"name":"world"}"#, "--repeat", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for line in lines {
        assert_eq!(line["event"], json!({"name":"world"}));
    }
    assert_eq!(stderr.matches("START RequestId: ").count(), 2, "{stderr}");
    assert_eq!(stderr.matches("END RequestId: ").count(), 2);
    assert_eq!(stderr.matches("Init Duration").count(), 1);
    assert!(
        stderr.contains(r#"received: {"name":"world"}"#),
        "the handler's own log line: {stderr}"
    );
    // Shut down only once back at /next: nothing of the runtime's is cut short (bash would
    // print "Terminated" for a curl killed while posting the last response).
    assert!(!stderr.contains("Terminated"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_lambda_runtime_crate_answers_warm_invocations() {
    let h = Harness::start(function_with(&program("echo-rs")), |_| {});
    for n in 0..3 {
        let payload = json!({"n": n, "text": "ünïcödé"}).to_string();
        let done = h.invoke(&payload).await;
        match done.outcome {
            InvokeOutcome::Response(body) => {
                assert_eq!(
                    serde_json::from_slice::<Value>(&body).unwrap(),
                    json!({"n": n, "text": "ünïcödé"})
                )
            }
            other => panic!("echo-rs failed: {other:?}"),
        }
    }
    let logs = h.finish().await;
    assert_eq!(
        logs.iter().filter(|l| l.contains("Init Duration")).count(),
        1,
        "one cold start for three"
    );
}

const PYTHON_HANDLER: &str = r#"
import os

def handler(event, context):
    print("python handler ran")
    if event.get("fail"):
        raise ValueError("bad input")
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_positive": context.get_remaining_time_in_millis() > 0,
        "arn": context.invoked_function_arn,
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
    }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn python_awslambdaric_answers_and_reports_errors() {
    let (python, site) = python_ric();
    let code = function_from_files(&[
        (
            "bootstrap",
            "#!/bin/sh\nexec \"$PROBE_PYTHON\" -m awslambdaric \"$_HANDLER\"\n",
            true,
        ),
        ("app.py", PYTHON_HANDLER, false),
    ]);
    let h = Harness::start(code, |c| {
        c.name = Some("py-fn".into());
        c.handler = Some("app.handler".into());
        c.timeout_secs = Some(30);
        c.environment = vec![
            ("PROBE_PYTHON".into(), python.display().to_string()),
            ("PYTHONPATH".into(), site.display().to_string()),
        ];
    });
    let (done, body) = h.invoke_json(r#"{"hello":"python"}"#).await;
    assert!(matches!(done.outcome, InvokeOutcome::Response(_)), "{body}");
    assert_eq!(body["event"], json!({"hello":"python"}));
    assert_eq!(body["request_id"], done.request_id.as_str());
    assert_eq!(body["function_name"], "py-fn");
    assert_eq!(body["memory"], "128");
    assert_eq!(body["remaining_positive"], true);
    assert_eq!(
        body["arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:py-fn"
    );
    assert!(
        body["trace"].as_str().unwrap().starts_with("Root=1-"),
        "the client copies the trace header"
    );

    let (failed, error) = h.invoke_json(r#"{"fail":true}"#).await;
    assert_eq!(failed.error_type(), Some("ValueError"));
    assert_eq!(error["errorType"], "ValueError");
    assert_eq!(error["errorMessage"], "bad input");
    assert!(error["stackTrace"].is_array());
    let logs = h.finish().await;
    assert!(logs.iter().any(|l| l.contains("python handler ran")));
}

/// Jail tests share the host's cgroup counts with the native sandbox tests.
use crate::sandbox_native::JAIL;

/// The official clients jailed as on Lambda's `provided` runtimes: the function's package
/// holds only its code; the runtime (a `bootstrap` and the client library) comes in layers,
/// real ZIPs extracted to `/opt`.
#[tokio::test(flavor = "multi_thread")]
async fn python_awslambdaric_runs_jailed_from_layers() {
    let _serial = JAIL.lock().await;
    let (_, site) = python_ric();
    let layers = tempfile::tempdir().unwrap();
    // The interpreter is the host's /usr/bin/python3 (the jail shows /usr read-only); the
    // client library, built for the same CPython 3.11 ABI, is the layer's python/ directory.
    let runtime = zipcraft::write(
        layers.path(),
        "python-runtime.zip",
        &zipcraft::build(&[zipcraft::Item::File(
            "bootstrap",
            b"#!/bin/sh\nexport PYTHONPATH=/opt/python\nexec /usr/bin/python3 -m awslambdaric \"$_HANDLER\"\n",
            0o755,
        )]),
    );
    let library = zipcraft::write(
        layers.path(),
        "awslambdaric.zip",
        &crate::shared::zip_dir(std::io::Cursor::new(Vec::new()), &site, "python/").into_inner(),
    );
    let code = function_from_files(&[("app.py", PYTHON_HANDLER, false)]);
    let h = Harness::jailed(code, |c| {
        c.name = Some("py-jailed".into());
        c.handler = Some("app.handler".into());
        c.timeout_secs = Some(30);
        c.memory_mb = Some(256);
        c.layers = vec![runtime, library];
    });
    for n in 0..2 {
        let (done, body) = h.invoke_json(&json!({"n": n}).to_string()).await;
        assert!(matches!(done.outcome, InvokeOutcome::Response(_)), "{body}");
        assert_eq!(body["event"], json!({"n": n}));
        assert_eq!(body["request_id"], done.request_id.as_str());
        assert_eq!(body["function_name"], "py-jailed");
        assert_eq!(body["memory"], "256");
    }
    let (failed, error) = h.invoke_json(r#"{"fail":true}"#).await;
    assert_eq!(failed.error_type(), Some("ValueError"));
    assert_eq!(error["errorMessage"], "bad input");
    let logs = h.finish().await;
    assert_eq!(
        logs.iter()
            .filter(|l| l.contains("python handler ran"))
            .count(),
        3,
        "{logs:?}"
    );
    assert_eq!(
        logs.iter().filter(|l| l.contains("Init Duration")).count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_lambda_runtime_runs_jailed_as_a_layer() {
    let _serial = JAIL.lock().await;
    let layers = tempfile::tempdir().unwrap();
    let binary = std::fs::read(program("echo-rs")).unwrap();
    let runtime = zipcraft::write(
        layers.path(),
        "echo-rs.zip",
        &zipcraft::build(&[zipcraft::Item::File("bootstrap", &binary, 0o755)]),
    );
    let code = function_from_files(&[]);
    let h = Harness::jailed(code, |c| c.layers = vec![runtime]);
    for n in 0..3 {
        let done = h.invoke(&json!({"n": n}).to_string()).await;
        match done.outcome {
            InvokeOutcome::Response(body) => assert_eq!(
                serde_json::from_slice::<Value>(&body).unwrap(),
                json!({"n": n})
            ),
            other => panic!("echo-rs failed in the jail: {other:?}"),
        }
    }
    h.finish().await;
}
