//! Every way an invocation can fail, each ending exactly once with Lambda's error type, and
//! what happens to the environment afterwards.

use std::time::Duration;

use lamina_runtime::invoke::InvokeOutcome;
use serde_json::Value;

use crate::support::{Harness, function_from_files, process_alive};

fn reports(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.starts_with("REPORT ")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn function_error_is_passed_through_and_the_environment_stays_warm() {
    let h = Harness::probe(|_| {});
    let done = h.invoke(r#"{"action":"error"}"#).await;
    assert_eq!(done.error_type(), Some("ProbeError"));
    let body: Value = serde_json::from_slice(&done.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"errorMessage":"failed on purpose","errorType":"ProbeError","stackTrace":["probe.rs"]})
    );
    let (_, first) = h.invoke_json("{}").await;
    let (_, second) = h.invoke_json("{}").await;
    assert_eq!(
        first["pid"], second["pid"],
        "a function error does not cost the environment"
    );
    let logs = h.finish().await;
    let reports = reports(&logs);
    assert_eq!(reports.len(), 3);
    assert!(reports[0].contains("Init Duration"));
    assert!(!reports[1].contains("Init Duration") && !reports[2].contains("Init Duration"));
}

#[tokio::test(flavor = "multi_thread")]
async fn init_error_fails_the_invocation_and_init_is_retried() {
    let h = Harness::probe(|c| c.environment = vec![("PROBE_INIT".into(), "error".into())]);
    for _ in 0..2 {
        let done = h.invoke("{}").await;
        assert_eq!(done.error_type(), Some("Runtime.ProbeInitError"));
        let body: Value = serde_json::from_slice(&done.body()).unwrap();
        assert_eq!(body["errorMessage"], "init failed on purpose");
    }
    let logs = h.finish().await;
    assert!(
        logs.iter().any(|l| l == "probe: init/error answered 202"),
        "{logs:#?}"
    );
    assert_eq!(
        reports(&logs)
            .iter()
            .filter(|r| r.contains("Init Duration"))
            .count(),
        2,
        "each retry is a cold start"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_during_an_invocation_is_a_runtime_exit_error_and_the_next_is_cold() {
    let h = Harness::probe(|_| {});
    let (_, before) = h.invoke_json("{}").await;
    let done = h.invoke(r#"{"action":"exit","code":3}"#).await;
    assert_eq!(done.error_type(), Some("Runtime.ExitError"));
    let body: Value = serde_json::from_slice(&done.body()).unwrap();
    assert_eq!(
        body["errorMessage"],
        format!(
            "RequestId: {} Error: Runtime exited with error: exit status 3",
            done.request_id
        )
    );
    let (_, after) = h.invoke_json("{}").await;
    assert_ne!(
        before["pid"], after["pid"],
        "a new environment serves the next invocation"
    );
    let logs = h.finish().await;
    let reports = reports(&logs);
    assert!(
        reports[1].contains("Status: error\tError Type: Runtime.ExitError"),
        "{}",
        reports[1]
    );
    assert!(reports[2].contains("Init Duration"));
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_during_init_is_a_runtime_exit_error() {
    let h = Harness::probe(|c| c.environment = vec![("PROBE_INIT".into(), "exit".into())]);
    let done = h.invoke("{}").await;
    assert_eq!(done.error_type(), Some("Runtime.ExitError"));
    assert!(
        String::from_utf8_lossy(&done.body()).contains("Runtime exited with error: exit status 7")
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_kills_the_runtime_and_the_environment_is_never_reused() {
    let h = Harness::probe(|c| c.timeout_secs = Some(1));
    let (_, warm) = h.invoke_json("{}").await;
    let pid = warm["pid"].as_u64().unwrap();
    let done = h.invoke(r#"{"action":"sleep","ms":30000}"#).await;
    assert_eq!(done.error_type(), Some("Sandbox.Timedout"));
    let body: Value = serde_json::from_slice(&done.body()).unwrap();
    assert_eq!(
        body["errorMessage"],
        format!(
            "RequestId: {} Error: Task timed out after 1.00 seconds",
            done.request_id
        )
    );
    assert!(
        !process_alive(pid),
        "the timed-out runtime {pid} must be gone"
    );
    let (next, after) = h.invoke_json("{}").await;
    assert!(matches!(next.outcome, InvokeOutcome::Response(_)));
    assert_ne!(after["pid"].as_u64(), Some(pid));
    let logs = h.finish().await;
    assert!(logs.iter().any(|l| l.ends_with(&format!(
        "{} Task timed out after 1.00 seconds",
        done.request_id
    ))));
    assert!(reports(&logs)[1].contains("Status: timeout"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bootstrap_that_never_calls_next_times_out_in_init() {
    let h = Harness::probe(|c| {
        c.environment = vec![("PROBE_INIT".into(), "hang".into())];
        c.init_timeout_secs = Some(1);
    });
    let started = std::time::Instant::now();
    let done = h.invoke("{}").await;
    assert_eq!(done.error_type(), Some("Sandbox.Timedout"));
    assert!(started.elapsed() < Duration::from_secs(5));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_unexecutable_bootstrap_is_an_invalid_entrypoint() {
    let h = Harness::start(
        function_from_files(&[("handler.sh", "echo", false)]),
        |_| {},
    );
    let done = h.invoke("{}").await;
    assert_eq!(done.error_type(), Some("Runtime.InvalidEntrypoint"));
    let body: Value = serde_json::from_slice(&done.body()).unwrap();
    assert_eq!(
        body["errorMessage"],
        format!(
            "RequestId: {} Error: Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]",
            done.request_id
        )
    );
    h.finish().await;
    // There, but not executable: said so, with the fix (as Lambda's exec would fail).
    let h = Harness::start(
        function_from_files(&[("bootstrap", "#!/bin/sh\n", false)]),
        |_| {},
    );
    let done = h.invoke("{}").await;
    assert_eq!(done.error_type(), Some("Runtime.InvalidEntrypoint"));
    let body: Value = serde_json::from_slice(&done.body()).unwrap();
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "RequestId: {} Error: fork/exec /var/task/bootstrap: permission denied: the bootstrap \
             is not executable (mode 0644); make it executable (chmod +x bootstrap)",
            done.request_id
        )),
        "{message}"
    );
    h.finish().await;
    // Executable but not a program the kernel can start.
    let h = Harness::start(
        function_from_files(&[("bootstrap", "not a program", true)]),
        |_| {},
    );
    let done = h.invoke("{}").await;
    assert_eq!(done.error_type(), Some("Runtime.InvalidEntrypoint"));
    assert!(
        String::from_utf8_lossy(&done.body())
            .contains("fork/exec /var/task/bootstrap: exec format error")
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_over_6_mb_is_refused_with_413() {
    let h = Harness::probe(|_| {});
    let done = h.invoke(r#"{"action":"big","bytes":6291557}"#).await;
    assert_eq!(done.error_type(), Some("Function.ResponseSizeTooLarge"));
    let body: Value = serde_json::from_slice(&done.body()).unwrap();
    assert_eq!(
        body["errorMessage"],
        "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
    );
    // Exactly at the limit is fine.
    let done = h.invoke(r#"{"action":"big","bytes":6291556}"#).await;
    assert!(
        matches!(&done.outcome, InvokeOutcome::Response(b) if b.len() == 6_291_556),
        "{:?} {:?}",
        done.error_type(),
        String::from_utf8_lossy(&done.body()[..done.body().len().min(300)])
    );
    // The probe logs what its POST got after the invocation has ended; one more invocation
    // makes sure it has (it logs before its next /next).
    h.invoke("{}").await;
    let logs = h.finish().await;
    assert!(
        logs.iter().any(|l| l == "probe: big response answered 413"),
        "the runtime saw 413: {logs:#?}"
    );
    assert!(logs.iter().any(|l| l == "probe: big response answered 202"));
}

#[tokio::test(flavor = "multi_thread")]
async fn function_output_lands_between_start_and_end() {
    let h = Harness::probe(|_| {});
    let done = h.invoke(r#"{"action":"log"}"#).await;
    let logs = h.finish().await;
    let id = &done.request_id;
    let at = |line: &str| {
        logs.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("{line:?} missing in {logs:#?}"))
    };
    let start = at(&format!("START RequestId: {id} Version: $LATEST"));
    let end = at(&format!("END RequestId: {id}"));
    assert!(start < at("probe stdout line") && at("probe stdout line") < end);
    assert!(start < at("probe stderr line") && at("probe stderr line") < end);
    let report = logs
        .iter()
        .position(|l| l.starts_with(&format!("REPORT RequestId: {id}\t")))
        .unwrap();
    assert_eq!(report, end + 1);
    let fields: Vec<&str> = logs[report].split('\t').collect();
    assert!(fields[1].starts_with("Duration: ") && fields[1].ends_with(" ms"));
    assert!(fields[2].starts_with("Billed Duration: "));
    assert_eq!(fields[3], "Memory Size: 128 MB");
    assert!(
        fields[4].starts_with("Max Memory Used: ") && fields[4] != "Max Memory Used: 0 MB",
        "{}",
        fields[4]
    );
    assert!(fields[5].starts_with("Init Duration: "));
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_stops_the_runtime_and_its_children() {
    let h = Harness::probe(|_| {});
    let (_, report) = h.invoke_json("{}").await;
    let pid = report["pid"].as_u64().unwrap();
    assert!(process_alive(pid));
    h.finish().await;
    assert!(!process_alive(pid), "runtime {pid} survived shutdown");
}
