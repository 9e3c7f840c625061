//! The Runtime API as a runtime sees it: environment variables, `/next` headers, and the status
//! codes and bodies of every rejected call.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lamina_runtime::invoke::{InvokeOutcome, InvokeRequest};
use serde_json::Value;

use crate::support::Harness;

#[tokio::test(flavor = "multi_thread")]
async fn probe_sees_lambdas_environment_and_next_headers() {
    let h = Harness::probe(|c| {
        c.memory_mb = Some(256);
        c.timeout_secs = Some(7);
        c.handler = Some("app.handler".into());
        c.environment = vec![
            ("GREETING".into(), "hi".into()),
            ("TZ".into(), ":Europe/Paris".into()),
        ];
    });
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let done = h
        .invoke_request(InvokeRequest {
            payload: Bytes::from_static(br#"{"k":1}"#),
            client_context: Some(r#"{"custom":{"a":"b"}}"#.into()),
            cognito_identity: Some(
                r#"{"cognitoIdentityId":"id1","cognitoIdentityPoolId":"pool1"}"#.into(),
            ),
            trace_id: Some(
                "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1".into(),
            ),
            ..Default::default()
        })
        .await;
    let report: Value = serde_json::from_slice(&done.body()).unwrap();
    let env = &report["env"];
    let headers = &report["headers"];
    assert_eq!(report["status"], 200);
    assert_eq!(report["event"], serde_json::json!({"k": 1}));

    // Environment variables, as on Lambda.
    assert_eq!(env["_HANDLER"], "app.handler");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "probe");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/probe");
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert_eq!(env["AWS_DEFAULT_REGION"], "us-east-1");
    assert_eq!(env["AWS_LAMBDA_INITIALIZATION_TYPE"], "on-demand");
    assert_eq!(env["LANG"], "en_US.UTF-8");
    assert_eq!(env["GREETING"], "hi");
    assert_eq!(
        env["TZ"], ":Europe/Paris",
        "TZ is a default a function may override"
    );
    assert!(env["PATH"].as_str().unwrap().contains("/usr/bin"));
    assert!(
        env["LD_LIBRARY_PATH"]
            .as_str()
            .unwrap()
            .contains("/opt/lib")
    );
    let api = env["AWS_LAMBDA_RUNTIME_API"].as_str().unwrap();
    assert!(api.starts_with("127.0.0.1:"), "{api}");
    let stream = env["AWS_LAMBDA_LOG_STREAM_NAME"].as_str().unwrap();
    assert!(
        stream.contains("/[$LATEST]") && stream.len() == "2024/01/31/[$LATEST]".len() + 32,
        "{stream}"
    );
    assert_eq!(
        env["LAMBDA_TASK_ROOT"].as_str(),
        report["cwd"].as_str(),
        "cwd is the task root"
    );
    assert!(env.get("LAMBDA_RUNTIME_DIR").is_some());
    // Nothing of the host's environment leaks in.
    for host_var in ["HOME", "CARGO", "CARGO_MANIFEST_DIR", "RUST_LOG", "USER"] {
        assert!(
            env.get(host_var).is_none(),
            "{host_var} leaked into the function"
        );
    }
    assert!(
        env.get("_X_AMZN_TRACE_ID").is_none(),
        "the trace id travels in the /next header"
    );

    // /next headers.
    assert_eq!(
        headers["lambda-runtime-aws-request-id"],
        done.request_id.as_str()
    );
    assert_eq!(
        headers["lambda-runtime-invoked-function-arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:probe"
    );
    assert_eq!(
        headers["lambda-runtime-trace-id"],
        "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"
    );
    assert_eq!(
        headers["lambda-runtime-client-context"],
        r#"{"custom":{"a":"b"}}"#
    );
    assert_eq!(
        headers["lambda-runtime-cognito-identity"],
        r#"{"cognitoIdentityId":"id1","cognitoIdentityPoolId":"pool1"}"#
    );
    assert_eq!(headers["content-type"], "application/json");
    let deadline: u64 = headers["lambda-runtime-deadline-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        deadline > before && deadline <= before + 7_000 + 1_000,
        "deadline {deadline} vs start {before}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_trace_id_is_made_and_optional_headers_are_absent() {
    let h = Harness::probe(|_| {});
    let (_, report) = h.invoke_json("{}").await;
    let headers = &report["headers"];
    let trace = headers["lambda-runtime-trace-id"].as_str().unwrap();
    assert!(
        trace.starts_with("Root=1-") && trace.contains(";Parent=") && trace.ends_with(";Sampled=0"),
        "{trace}"
    );
    assert!(headers.get("lambda-runtime-client-context").is_none());
    assert!(headers.get("lambda-runtime-cognito-identity").is_none());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_calls_get_aws_statuses_and_change_nothing() {
    let h = Harness::probe(|_| {});
    let (done, report) = h.invoke_json(r#"{"action":"api_errors"}"#).await;
    // After all the bad calls, the invocation still ended with the runtime's real answer.
    assert!(matches!(done.outcome, InvokeOutcome::Response(_)));
    let body =
        |k: &str| -> Value { serde_json::from_str(report[k]["body"].as_str().unwrap()).unwrap() };
    assert_eq!(report["unknown_id"]["status"], 400);
    assert_eq!(
        body("unknown_id"),
        serde_json::json!({"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"})
    );
    assert_eq!(report["wrong_method"]["status"], 405);
    assert_eq!(report["not_found"]["status"], 404);
    assert_eq!(report["init_error_late"]["status"], 403);
    assert_eq!(
        body("init_error_late")["errorType"],
        "InvalidStateTransition"
    );
    assert_eq!(report["next_in_flight"]["status"], 403);

    // Answering an invocation a second time: 403, for a response and for an error.
    let (_, replay) = h.invoke_json(r#"{"action":"replay"}"#).await;
    assert_eq!(replay["response"]["status"], 403, "{replay}");
    assert_eq!(replay["error"]["status"], 403, "{replay}");
    // And the environment is still healthy.
    let (done, _) = h.invoke_json(r#"{"action":"report"}"#).await;
    assert!(matches!(done.outcome, InvokeOutcome::Response(_)));
    h.finish().await;
}
