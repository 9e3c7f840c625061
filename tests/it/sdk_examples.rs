//! The SDK's examples (`examples/echo`, `http-hello`, `sqs-batch`) built from source as a
//! native `bootstrap` and as a wasm32-wasip1 module, and run through `lamina invoke` as a
//! user would: the same source must give the same answers on both.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::shared::build_example as build;
use crate::support::{lamina, test_cache};

/// Both builds of an example, as functions: a directory with `bootstrap`, and a `.wasm`.
struct Builds {
    native: tempfile::TempDir,
    wasm: PathBuf,
}

fn builds(package: &str) -> Builds {
    let native = tempfile::tempdir().unwrap();
    // The jail's function user must be able to enter the code directory.
    std::fs::set_permissions(
        native.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::copy(build(package, None), native.path().join("bootstrap")).unwrap();
    Builds {
        native,
        wasm: build(package, Some("wasm32-wasip1")),
    }
}

/// `lamina invoke`: the payload printed, and the log.
fn invoke(code: &Path, payload: &Value) -> (Value, String) {
    let out = Command::new(lamina())
        .arg("invoke")
        .arg(code)
        .args(["--payload", &payload.to_string()])
        .env("LAMINA_CACHE_DIR", test_cache())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} with {payload}: {log}",
        code.display()
    );
    let answer = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {:?}", code.display(), out.stdout));
    (answer, log)
}

/// The answer of both builds, which must be the same.
fn both(builds: &Builds, payload: &Value) -> Value {
    let (native, _) = invoke(builds.native.path(), payload);
    let (wasm, _) = invoke(&builds.wasm, payload);
    assert_eq!(native, wasm, "native and WASM builds differ for {payload}");
    native
}

#[test]
fn echo_answers_the_event_the_same_natively_and_in_wasm() {
    let builds = builds("echo");
    let event = json!({"hello": "world", "n": [1, 2.5, null], "deep": {"x": "ü"}});
    assert_eq!(both(&builds, &event), event);
}

#[test]
fn http_hello_greets_the_path_name_for_payload_2_0_and_1_0() {
    let builds = builds("http-hello");
    let v2 = json!({
        "version": "2.0", "routeKey": "GET /hello/{name}", "rawPath": "/hello/ada",
        "rawQueryString": "greeting=Howdy", "headers": {"host": "localhost"},
        "queryStringParameters": {"greeting": "Howdy"}, "pathParameters": {"name": "ada"},
        "requestContext": {"http": {"method": "GET", "path": "/hello/ada", "sourceIp": "127.0.0.1"},
                           "requestId": "r", "stage": "$default", "routeKey": "GET /hello/{name}"},
        "isBase64Encoded": false
    });
    let answer = both(&builds, &v2);
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["message"], "Howdy, ada!");

    let v1 = json!({
        "resource": "/hello/{name}", "path": "/hello/grace", "httpMethod": "GET",
        "headers": {"Host": "localhost"}, "multiValueHeaders": {"Host": ["localhost"]},
        "queryStringParameters": null, "multiValueQueryStringParameters": null,
        "pathParameters": {"name": "grace"},
        "requestContext": {"httpMethod": "GET", "requestId": "r", "stage": "prod",
                           "identity": {"sourceIp": "127.0.0.1"}},
        "body": null, "isBase64Encoded": false
    });
    let answer = both(&builds, &v1);
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["message"], "Hello, grace!");
    assert_eq!(
        answer["multiValueHeaders"]["content-type"],
        json!(["application/json"])
    );
}

#[test]
fn sqs_batch_reports_just_the_messages_that_are_not_json() {
    let builds = builds("sqs-batch");
    let record = |id: &str, body: &str| {
        json!({"messageId": id, "receiptHandle": "h", "body": body, "attributes": {},
               "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
               "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:q", "awsRegion": "us-east-1"})
    };
    let batch = json!({"Records": [
        record("m-1", r#"{"order": 1}"#),
        record("m-2", "{not json"),
        record("m-3", "[1, 2, 3]"),
        record("m-4", ""),
    ]});
    let answer = both(&builds, &batch);
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "m-2"}, {"itemIdentifier": "m-4"}]})
    );
    let (_, log) = invoke(&builds.wasm, &batch);
    assert!(log.contains("message m-2 failed"), "{log}");
}

/// Compiling a module is the platform's work, not the function's init: a module that takes
/// longer to compile than the init timeout still starts (the `http-hello` module, ~5 MB,
/// compiles for seconds; the init timeout here is one second, the cache empty).
#[tokio::test(flavor = "multi_thread")]
async fn compiling_a_module_does_not_count_against_the_init_timeout() {
    use std::sync::Arc;

    use lamina_runtime::invoke::{InvokeOutcome, InvokeRequest};
    use lamina_runtime::sandbox::wasm::WasmSandbox;

    let module = build("http-hello", Some("wasm32-wasip1"));
    let cache = tempfile::tempdir().unwrap();
    let sandbox = Arc::new(
        WasmSandbox::new(cache.path(), &crate::support::lamina_helper())
            .expect("the WASM backend runs here"),
    );
    let code = crate::support::function_with_module(&module);
    let harness = crate::support::Harness::start_in(sandbox, code, |config| {
        config.init_timeout_secs = Some(1);
        config.cache_dir = Some(cache.path().to_owned());
    });
    let event = json!({"version": "2.0", "rawPath": "/hello/x", "pathParameters": {"name": "x"},
                       "requestContext": {"http": {"method": "GET"}}});
    let started = std::time::Instant::now();
    let done = harness
        .pool
        .invoke(InvokeRequest {
            payload: event.to_string().into(),
            ..Default::default()
        })
        .await;
    let took = started.elapsed();
    let InvokeOutcome::Response(body) = &done.outcome else {
        panic!("after {took:?}: {:?}", done.outcome);
    };
    let answer: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(answer["statusCode"], 200);
    // The premise: the compile did take longer than the init timeout.
    assert!(
        took > std::time::Duration::from_secs(1),
        "compiled in {took:?}: the test proves nothing"
    );
    harness.pool.shutdown().await;
}
