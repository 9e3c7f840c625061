//! `lamina serve` as users run it: the binary, a real `lamina.toml`, real clients over loopback
//! HTTP: boto3 (the AWS SDK for Python) for the Invoke API, hyper for the HTTP front, the
//! official Python runtime interface client and the probe as functions.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::server::{Server, ended, header, json_of, send, send_events, wait_all_ended};
use crate::support::{
    boto3, function_from_files, function_with, lamina, process_alive, program, python_ric,
};

/// A `[functions.NAME]` table for the probe in `dir`.
fn probe_function(name: &str, dir: &Path, extra: &str) -> String {
    format!(
        "[functions.{name}]\ncode = {:?}\n{extra}\n",
        dir.display().to_string()
    )
}

/// Runs a Python `script` with boto3 against `server` (its address in `ENDPOINT`); the JSON
/// it prints.
fn run_boto3(server: &Server, script: &str) -> Value {
    let (python, site) = boto3();
    let output = Command::new(&python)
        .args(["-c", script])
        .env("PYTHONPATH", &site)
        .env("ENDPOINT", format!("http://{}", server.addr))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.logs()
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A Python function (the official runtime interface client) whose handler answers the HTTP
/// front by path, and the Invoke API with what it got.
fn python_function() -> TempDir {
    const APP: &str = r#"
import base64, json, time

def handler(event, context):
    if "requestContext" not in event:
        if event.get("fail"):
            raise ValueError("failed on purpose")
        return {"event": event, "request_id": context.aws_request_id,
                "client_context": getattr(context.client_context, "custom", None)}
    path = event.get("rawPath") or event.get("path")
    if path.endswith("/fail"):
        raise ValueError("boom")
    if path.endswith("/sleep"):
        time.sleep(3)
    if path.endswith("/binary"):
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if path.endswith("/cookies"):
        return {"statusCode": 201, "cookies": ["a=1; Path=/", "b=2"], "body": "ok",
                "headers": {"x-custom": "yes", "content-type": "text/plain"}}
    if path.endswith("/multi"):
        return {"statusCode": 200, "multiValueHeaders": {"x-m": ["1", "2"]}, "body": "m"}
    if path.endswith("/malformed"):
        return {"statusCode": "many", "body": 1}
    if path.endswith("/shorthand"):
        return {"hello": "world"}
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps(event)}
"#;
    function_from_files(&[
        (
            "bootstrap",
            "#!/bin/sh\nexec \"$PROBE_PYTHON\" -m awslambdaric \"$_HANDLER\"\n",
            true,
        ),
        ("app.py", APP, false),
    ])
}

fn python_config(name: &str, dir: &Path, extra: &str) -> String {
    let (python, site) = python_ric();
    format!(
        "[functions.{name}]\ncode = {:?}\nhandler = \"app.handler\"\ntimeout = 2\n{extra}\n\
         environment = {{ PROBE_PYTHON = {:?}, PYTHONPATH = {:?} }}\n",
        dir.display().to_string(),
        python.display().to_string(),
        site.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_invokes_all_three_ways_and_sees_function_errors() {
    let code = python_function();
    let config = python_config("py", code.path(), "concurrency = 2");
    let server = Server::start(&config, &["--sandbox", "process"]);
    let script = r#"
import base64, json, os, sys, time
import boto3, botocore
from botocore.config import Config
client = boto3.client("lambda", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                      aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                      config=Config(retries={"max_attempts": 1}))
out = {}
r = client.invoke(FunctionName="py", Payload=json.dumps({"hello": "boto3"}), LogType="Tail",
                  ClientContext=base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode())
out["sync"] = {"status": r["StatusCode"], "version": r["ExecutedVersion"],
               "payload": json.loads(r["Payload"].read()), "log": base64.b64decode(r["LogResult"]).decode(),
               "error": r.get("FunctionError"), "request_id": r["ResponseMetadata"]["RequestId"]}
r = client.invoke(FunctionName="py", Payload=json.dumps({"fail": True}))
out["error"] = {"status": r["StatusCode"], "error": r.get("FunctionError"),
                "payload": json.loads(r["Payload"].read())}
r = client.invoke(FunctionName="py", InvocationType="Event", Payload=json.dumps({"async": 1}))
out["event"] = {"status": r["StatusCode"], "request_id": r["ResponseMetadata"]["RequestId"]}
r = client.invoke(FunctionName="py", InvocationType="DryRun", Payload=b"{}")
out["dry"] = {"status": r["StatusCode"]}
try:
    client.invoke(FunctionName="nope", Payload=b"{}")
    out["missing"] = "no error"
except client.exceptions.ResourceNotFoundException as e:
    out["missing"] = e.response["Error"]["Message"]
try:
    client.invoke(FunctionName="py", Payload=b"{not json")
    out["bad_json"] = "no error"
except client.exceptions.InvalidRequestContentException as e:
    out["bad_json"] = e.response["ResponseMetadata"]["HTTPStatusCode"]
print(json.dumps(out))
"#;
    let out = run_boto3(&server, script);
    let sync = &out["sync"];
    assert_eq!(sync["status"], 200);
    assert_eq!(sync["version"], "$LATEST");
    assert_eq!(sync["error"], Value::Null);
    assert_eq!(sync["payload"]["event"], json!({"hello": "boto3"}));
    assert_eq!(sync["payload"]["client_context"], json!({"k": "v"}));
    // The response's request id is the one the function saw.
    assert_eq!(sync["payload"]["request_id"], sync["request_id"]);
    let log = sync["log"].as_str().unwrap();
    let id = sync["request_id"].as_str().unwrap();
    assert!(log.starts_with(&format!("START RequestId: {id}")), "{log}");
    assert!(log.contains(&format!("END RequestId: {id}")), "{log}");
    assert!(log.contains(&format!("REPORT RequestId: {id}")), "{log}");
    assert_eq!(out["error"]["status"], 200);
    assert_eq!(out["error"]["error"], "Unhandled");
    assert_eq!(out["error"]["payload"]["errorType"], "ValueError");
    assert_eq!(out["error"]["payload"]["errorMessage"], "failed on purpose");
    assert_eq!(out["event"]["status"], 202);
    assert_eq!(out["dry"]["status"], 204);
    assert_eq!(
        out["missing"],
        "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope"
    );
    assert_eq!(out["bad_json"], 400);
    // The asynchronous invocation ran, under the request id returned with its 202.
    let event_id = out["event"]["request_id"].as_str().unwrap();
    server.wait_for_log(&format!("END RequestId: {event_id}"), 1);
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_api_service_errors_have_lambdas_status_and_type() {
    let probe = function_with(&program("probe"));
    let config = probe_function("probe", probe.path(), "timeout = 1\nregion = \"eu-west-1\"");
    let server = Server::start(&config, &["--sandbox", "process"]);
    let kind = |r: &http::Response<Bytes>| header(r, "x-amzn-ErrorType").map(str::to_owned);
    let text = |r: &http::Response<Bytes>| String::from_utf8_lossy(r.body()).into_owned();

    let r = server.invoke("missing", &[], "{}").await;
    assert_eq!(r.status(), 404);
    assert_eq!(kind(&r).as_deref(), Some("ResourceNotFoundException"));
    // The region every configured function is in.
    let missing = "arn:aws:lambda:eu-west-1:000000000000:function:missing";
    assert!(text(&r).contains(missing), "{}", text(&r));
    let r = server.invoke("probe:prod", &[], "{}").await;
    assert_eq!(r.status(), 404, "only $LATEST exists");
    let prod = "arn:aws:lambda:eu-west-1:000000000000:function:probe:prod";
    assert!(text(&r).contains(prod), "{}", text(&r));
    let r = server
        .invoke("probe:%24LATEST", &[], r#"{"action":"echo"}"#)
        .await;
    assert_eq!(r.status(), 200);
    let arn = "arn:aws:lambda:us-east-1:000000000000:function:probe";
    let r = server.invoke(arn, &[], r#"{"action":"echo"}"#).await;
    assert_eq!(r.status(), 200, "a function named by its ARN");

    let r = server.invoke("probe", &[], "{\"a\":").await;
    assert_eq!(r.status(), 400);
    assert_eq!(kind(&r).as_deref(), Some("InvalidRequestContentException"));

    let big = format!("\"{}\"", "a".repeat(6 * 1024 * 1024));
    let r = server.invoke("probe", &[], big).await;
    assert_eq!(r.status(), 413);
    assert_eq!(kind(&r).as_deref(), Some("RequestTooLargeException"));
    let event = [("X-Amz-Invocation-Type", "Event")];
    let over_async = format!("\"{}\"", "a".repeat(1024 * 1024));
    let r = server.invoke("probe", &event, over_async).await;
    assert_eq!(r.status(), 413, "1 MB is the limit for Event");
    let r = server
        .invoke("probe", &[("X-Amz-Invocation-Type", "Sometimes")], "{}")
        .await;
    assert_eq!(r.status(), 400);

    // A timeout is a function error, as on Lambda: 200 and Unhandled.
    let r = server
        .invoke("probe", &[], r#"{"action":"sleep","ms":5000}"#)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "X-Amz-Function-Error"), Some("Unhandled"));
    assert_eq!(json_of(&r)["errorType"], "Sandbox.Timedout");
    // Signed requests are accepted as they are.
    let r = server
        .invoke(
            "probe",
            &[(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=00",
            )],
            r#"{"action":"echo"}"#,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(&r), json!({"action":"echo"}));
    let r = server.get("/no/such/route").await;
    assert_eq!(r.status(), 404);
    // Each refused request is one line of lamina's own log, at the default level.
    let (_, logs) = server.stop();
    for line in [
        "404 GET /no/such/route from 127.0.0.1:",
        ": Not Found: no route matches",
        "404 POST /2015-03-31/functions/missing/invocations from 127.0.0.1:",
        ": Not Found: ResourceNotFoundException: Function not found: arn:aws:lambda:eu-west-1",
        "400 POST /2015-03-31/functions/probe/invocations from 127.0.0.1:",
        ": Bad Request: InvalidRequestContentException:",
        "413 POST /2015-03-31/functions/probe/invocations from 127.0.0.1:",
        ": Payload Too Large: RequestTooLargeException:",
    ] {
        assert!(logs.contains(line), "{line:?} in\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_event_invocations_are_retried_twice_then_dead_lettered() {
    let probe = function_with(&program("probe"));
    let config = format!(
        "{}\n[serve]\nretry_delay = 0.05\n",
        probe_function("failing", probe.path(), "")
    );
    let server = Server::start(&config, &["--sandbox", "process"]);
    let r = server
        .invoke(
            "failing",
            &[("X-Amz-Invocation-Type", "Event")],
            r#"{"action":"error"}"#,
        )
        .await;
    assert_eq!(r.status(), 202);
    let id = header(&r, "x-amzn-RequestId").unwrap().to_owned();
    // Three attempts, one request id.
    server.wait_for_log(&format!("END RequestId: {id}"), 3);
    let letters = server.dir.path().join("state/dead-letters/failing.jsonl");
    // The file is made, then the line written: wait for a whole line.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&letters).unwrap_or_default();
        if text.ends_with('\n') || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{text}");
    let record = &records[0];
    assert_eq!(record["requestContext"]["requestId"], id.as_str());
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["requestPayload"], json!({"action":"error"}));
    assert_eq!(record["responsePayload"]["errorType"], "ProbeError");
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
    assert_eq!(logs.matches(&format!("START RequestId: {id}")).count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_front_routes_requests_and_builds_api_gateway_events() {
    let code = python_function();
    let config = format!(
        "{}\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/items/{{id}}\"\nfunction = \"py\"\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/items/special\"\nfunction = \"py\"\n\
         [[routes]]\nmethod = \"ANY\"\npath = \"/files/{{proxy+}}\"\nfunction = \"py\"\n\
         [[routes]]\nmethod = \"ANY\"\npath = \"/v1/{{proxy+}}\"\nfunction = \"py\"\npayload = \"1.0\"\n",
        python_config("py", code.path(), "concurrency = 2")
    );
    let server = Server::start(&config, &["--sandbox", "process"]);

    // Path parameters, query strings with repeated keys, cookies; 2.0.
    let r = server
        .request(
            http::Request::get("/items/42?tag=a&tag=b&q=hello%20world")
                .header("host", "api.example.com")
                .header("cookie", "session=abc; theme=dark")
                .header("x-dup", "1")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    assert!(header(&r, "apigw-requestid").is_some());
    let event = json_of(&r);
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "GET /items/{id}");
    assert_eq!(event["pathParameters"], json!({"id": "42"}));
    assert_eq!(event["rawQueryString"], "tag=a&tag=b&q=hello%20world");
    assert_eq!(event["queryStringParameters"]["tag"], "a,b");
    assert_eq!(event["queryStringParameters"]["q"], "hello world");
    assert_eq!(event["cookies"], json!(["session=abc", "theme=dark"]));
    assert_eq!(event["requestContext"]["stage"], "$default");
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(event["requestContext"]["domainName"], "api.example.com");
    assert_eq!(
        event["requestContext"]["requestId"],
        header(&r, "apigw-requestid").unwrap()
    );
    // The exact route beats the parameterised one.
    let r = server.get("/items/special").await;
    assert_eq!(json_of(&r)["routeKey"], "GET /items/special");

    // {proxy+} takes the rest; a binary body arrives base64.
    let r = server
        .request(
            http::Request::put("/files/a/b/c.bin")
                .header("content-type", "application/octet-stream")
                .body(Full::new(Bytes::from_static(&[0, 255, 1, 254])))
                .unwrap(),
        )
        .await;
    let event = json_of(&r);
    assert_eq!(event["pathParameters"]["proxy"], "a/b/c.bin");
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(event["body"], "AP8B/g==");
    assert_eq!(event["requestContext"]["http"]["method"], "PUT");

    // Payload 1.0: multi-value maps.
    let r = server
        .request(
            http::Request::post("/v1/x?a=1&a=2")
                .header("x-m", "1")
                .header("x-m", "2")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{\"k\":1}")))
                .unwrap(),
        )
        .await;
    let event = json_of(&r);
    assert!(header(&r, "x-amzn-requestid").is_some());
    assert_eq!(event["httpMethod"], "POST");
    assert_eq!(event["resource"], "/v1/{proxy+}");
    assert_eq!(event["multiValueHeaders"]["x-m"], json!(["1", "2"]));
    assert_eq!(
        event["multiValueQueryStringParameters"]["a"],
        json!(["1", "2"])
    );
    assert_eq!(event["queryStringParameters"]["a"], "2");
    assert_eq!(event["body"], "{\"k\":1}");

    // Responses: binary, cookies, multi-value headers, the 2.0 shorthand.
    let r = server.get("/files/binary").await;
    assert_eq!(
        r.body().as_ref(),
        (0..=255u8).collect::<Vec<_>>().as_slice()
    );
    let r = server.get("/files/cookies").await;
    assert_eq!(r.status(), 201);
    let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
    assert_eq!(header(&r, "x-custom"), Some("yes"));
    assert_eq!(r.body().as_ref(), b"ok");
    let r = server.get("/v1/multi").await;
    let values: Vec<_> = r.headers().get_all("x-m").iter().collect();
    assert_eq!(values, ["1", "2"]);
    let r = server.get("/files/shorthand").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(json_of(&r), json!({"hello": "world"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_front_answers_errors_as_api_gateway_does() {
    let code = python_function();
    let config = format!(
        "{}\n\
         [[routes]]\npath = \"/{{proxy+}}\"\nfunction = \"py\"\n\
         [[routes]]\npath = \"/rest/{{proxy+}}\"\nfunction = \"py\"\npayload = \"1.0\"\n",
        python_config("py", code.path(), "concurrency = 1")
    );
    let server = Server::start(&config, &["--sandbox", "process"]);
    let message = |r: &http::Response<Bytes>| json_of(r)["message"].clone();

    let r = server.get("/nothing-here").await;
    assert_eq!(r.status(), 200, "the greedy route catches it");
    let r = server.get("/").await;
    assert_eq!(r.status(), 404);
    assert_eq!(message(&r), "Not Found");
    let r = server.get("/fail").await;
    assert_eq!(r.status(), 502);
    assert_eq!(message(&r), "Internal Server Error");
    let r = server.get("/rest/fail").await;
    assert_eq!(r.status(), 502);
    assert_eq!(message(&r), "Internal server error");
    let r = server.get("/malformed").await;
    assert_eq!(r.status(), 502);
    // A 1.0 route needs a proxy response; the shorthand is 2.0's alone.
    let r = server.get("/rest/shorthand").await;
    assert_eq!(r.status(), 502);
    let big = Bytes::from(vec![b'x'; 10 * 1024 * 1024 + 1]);
    let r = server
        .request(http::Request::post("/big").body(Full::new(big)).unwrap())
        .await;
    assert_eq!(r.status(), 413);

    // With concurrency 1, a second request while the first sleeps is throttled; the first
    // times out (2 s) and is a 504.
    let slow = tokio::spawn({
        let addr = server.addr;
        async move {
            send(
                addr,
                http::Request::get("/sleep").body(Full::default()).unwrap(),
            )
            .await
        }
    });
    server.wait_for_log("START RequestId", 6);
    let r = server.get("/other").await;
    assert_eq!(r.status(), 429);
    assert_eq!(message(&r), "Too Many Requests");
    let r = slow.await.unwrap();
    assert_eq!(r.status(), 504);
    // The timed-out environment was replaced; the function answers again.
    let r = server.get("/after").await;
    assert_eq!(r.status(), 200);
    // Each refused request is one line of lamina's own log, at the default level.
    let (_, logs) = server.stop();
    for line in [
        "413 POST /big from 127.0.0.1:",
        "the body is over API Gateway's 10485760 bytes",
        "429 GET /other from 127.0.0.1:",
        "is at its concurrency (1)",
    ] {
        assert!(logs.contains(line), "{line:?} in\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_concurrent_invocations_use_at_most_four_environments_and_none_is_lost() {
    let probe = function_with(&program("probe"));
    let config = probe_function("probe", probe.path(), "concurrency = 4\ntimeout = 10");
    let server = Server::start(&config, &["--sandbox", "process"]);
    // Every client retries a throttled invocation, as the AWS SDKs do, until it runs.
    let mut clients = Vec::new();
    for n in 0..64 {
        let addr = server.addr;
        clients.push(tokio::spawn(async move {
            let payload = format!(r#"{{"action":"sleep","ms":50,"n":{n}}}"#);
            let mut throttled = 0;
            loop {
                let r = send(
                    addr,
                    http::Request::post("/2015-03-31/functions/probe/invocations")
                        .body(Full::new(Bytes::from(payload.clone())))
                        .unwrap(),
                )
                .await;
                match r.status().as_u16() {
                    429 => {
                        assert_eq!(
                            header(&r, "x-amzn-ErrorType"),
                            Some("TooManyRequestsException")
                        );
                        throttled += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    200 => {
                        let id = header(&r, "x-amzn-RequestId").unwrap().to_owned();
                        return (json_of(&r), id, throttled);
                    }
                    other => panic!("unexpected {other}: {:?}", r.body()),
                }
            }
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut throttles = 0;
    for client in clients {
        let (body, id, throttled) = client.await.unwrap();
        assert_eq!(body, json!({"slept": 50}));
        assert!(ids.insert(id));
        throttles += throttled;
    }
    assert!(throttles > 0, "64 at once against 4 must throttle some");
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
    // Each invocation ran exactly once...
    for id in &ids {
        assert_eq!(logs.matches(&format!("START RequestId: {id}")).count(), 1);
        assert_eq!(logs.matches(&format!("END RequestId: {id}")).count(), 1);
    }
    assert_eq!(logs.matches("START RequestId").count(), 64, "{logs}");
    // ...in at most four environments (one cold start each).
    let cold = logs.matches("Init Duration").count();
    assert!((1..=4).contains(&cold), "{cold} environments:\n{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_mid_invocation_still_ends_it_once() {
    let probe = function_with(&program("probe"));
    let config = probe_function("probe", probe.path(), "timeout = 10");
    let server = Server::start(&config, &["--sandbox", "process"]);
    let body = r#"{"action":"sleep","ms":700}"#;
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "POST /2015-03-31/functions/probe/invocations HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    server.wait_for_log("START RequestId", 1);
    drop(stream);
    // The invocation runs to its end, once, and the environment is free again.
    server.wait_for_log("END RequestId", 1);
    let r = server.invoke("probe", &[], r#"{"action":"echo"}"#).await;
    assert_eq!(r.status(), 200);
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
    assert_eq!(logs.matches("START RequestId").count(), 2);
    assert_eq!(logs.matches("END RequestId").count(), 2);
    assert_eq!(
        logs.matches("Init Duration").count(),
        1,
        "one warm environment: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_invocation_in_flight_finish_and_leaves_nothing_behind() {
    let probe = function_with(&program("probe"));
    let config = probe_function("probe", probe.path(), "timeout = 10");
    let server = Server::start(&config, &["--sandbox", "process"]);
    let r = server.invoke("probe", &[], "{}").await;
    let pid = json_of(&r)["pid"].as_u64().unwrap();
    let addr = server.addr;
    let slow = tokio::spawn(async move {
        send(
            addr,
            http::Request::post("/2015-03-31/functions/probe/invocations")
                .body(Full::new(Bytes::from_static(
                    br#"{"action":"sleep","ms":800}"#,
                )))
                .unwrap(),
        )
        .await
    });
    server.wait_for_log("START RequestId", 2);
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
    let r = slow.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(&r), json!({"slept": 800}));
    assert!(!process_alive(pid), "the runtime is gone");
    assert!(logs.contains("lamina: stopped"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_environments_are_reaped_after_the_idle_timeout() {
    let probe = function_with(&program("probe"));
    let config = probe_function("probe", probe.path(), "idle_timeout = 1");
    let server = Server::start(&config, &["--sandbox", "process"]);
    let r = server.invoke("probe", &[], "{}").await;
    let pid = json_of(&r)["pid"].as_u64().unwrap();
    assert!(process_alive(pid));
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!process_alive(pid), "the idle runtime was shut down");
    // The next invocation starts a new environment.
    let r = server.invoke("probe", &[], "{}").await;
    assert_ne!(json_of(&r)["pid"].as_u64().unwrap(), pid);
    // REPORT is written by the log pump after the answer has gone out: wait for it.
    let logs = server.wait_for_log("Init Duration", 2);
    assert_eq!(logs.matches("Init Duration").count(), 2, "{logs}");
}

/// `lamina serve` grows a pipe on its stderr to 1 MiB: a reader that lags (`| tee`, a log
/// collector off the CPU for a moment under load) gets room before it holds every invocation up
/// (`logs::widen_stderr_pipe`).
#[test]
fn serve_grows_a_pipe_on_its_stderr_to_a_mebibyte() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let probe = function_with(&program("probe"));
    let config = probe_function("probe", probe.path(), "");
    // `Server` reads the server's stderr through a pipe, and starts once serving is said:
    // after the pipe was grown.
    let server = Server::start(&config, &["--sandbox", "process"]);
    // The same pipe, opened through the server's own descriptor 2 (a write end, which opens
    // at once while the test's reader holds the other end).
    let pipe = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{}/fd/2", server.pid()))
        .unwrap();
    // SAFETY: F_GETPIPE_SZ only reads the size of the pipe behind a descriptor this test owns.
    let size = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
    drop(pipe);
    let (_, logs) = server.stop();
    assert_eq!(size, 1024 * 1024, "{logs}");
}

#[test]
fn a_bad_config_is_refused_with_every_problem_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        "[functions.a]\ncode = \"nowhere\"\nmemory = 1\ncolour = \"red\"\n\
         [[routes]]\npath = \"/x\"\nfunction = \"b\"\n",
    )
    .unwrap();
    let out = Command::new(lamina())
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "lamina.toml: functions.a.colour: unknown key",
        "lamina.toml: functions.a.code: ",
        "nowhere does not exist",
        "lamina.toml: routes[0].function: no function \"b\"",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("serving"), "{stderr}");
}

#[test]
fn lamina_invoke_runs_a_configured_function_by_name() {
    let probe = function_with(&program("probe"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        probe_function(
            "configured",
            probe.path(),
            "memory = 256\nenvironment = { GREETING = \"hi\" }",
        ),
    )
    .unwrap();
    let out = Command::new(lamina())
        .current_dir(dir.path())
        .args([
            "invoke",
            "configured",
            "--sandbox",
            "process",
            "--env",
            "EXTRA=1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["env"]["AWS_LAMBDA_FUNCTION_NAME"], "configured");
    assert_eq!(v["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(v["env"]["GREETING"], "hi");
    assert_eq!(v["env"]["EXTRA"], "1");
    let out = Command::new(lamina())
        .current_dir(dir.path())
        .args(["invoke", "unknown"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no [functions.unknown]"));
}

/// Under `cargo run` (which sets `CARGO_MANIFEST_DIR` to where lamina was built from) and with
/// no `lamina.toml`, the bundled examples are served.
#[tokio::test(flavor = "multi_thread")]
async fn with_no_config_the_bundled_examples_are_served_in_the_jail() {
    let server = Server::start_with_env(
        tempfile::tempdir().unwrap(),
        &[],
        &[(
            "CARGO_MANIFEST_DIR",
            &crate::support::repo_root().join("runtime"),
        )],
    );
    let r = server.get("/shell/hello?x=1").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let body = json_of(&r);
    assert_eq!(body["message"], "hello from a shell runtime");
    assert_eq!(body["event"]["rawPath"], "/shell/hello");
    let r = server.invoke("shell", &[], r#"{"name":"world"}"#).await;
    assert_eq!(
        json_of(&r)["event"],
        json!({"name": "world"}),
        "{:?}\n{}",
        r.body(),
        server.logs()
    );
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
    assert!(logs.contains("examples/lamina.toml"), "{logs}");
}

/// A binary run on its own (copied or installed: not under `cargo run`) with no `lamina.toml`
/// says plainly that there is no configuration and where it looked.
#[test]
fn a_copied_binary_without_a_config_says_there_is_none_and_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["serve"][..], &["invoke", "shell"][..]] {
        let out = Command::new(lamina())
            .current_dir(dir.path())
            .env_remove("CARGO_MANIFEST_DIR")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "no --config or --template was given and there is no lamina.toml or \
                 template.yaml in {}",
                dir.path().canonicalize().unwrap().display()
            )),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_runtimes_named_in_lamina_toml_are_served_jailed() {
    let py = tempfile::tempdir().unwrap();
    std::fs::write(
        py.path().join("app.py"),
        "import sys\ndef handler(event, context):\n    \
         return {'event': event, 'python': '%d.%d' % sys.version_info[:2]}\n",
    )
    .unwrap();
    let js = tempfile::tempdir().unwrap();
    std::fs::write(
        js.path().join("index.mjs"),
        "export const handler = async (event) => ({ event, node: process.versions.node });\n",
    )
    .unwrap();
    let node = Command::new("node")
        .args(["-p", "process.versions.node.split('.')[0]"])
        .output()
        .unwrap();
    let major = String::from_utf8_lossy(&node.stdout).trim().to_owned();
    let config = format!(
        "[functions.py]\ncode = {:?}\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\n\
         [functions.js]\ncode = {:?}\nruntime = \"nodejs{major}.x\"\n",
        py.path().display().to_string(),
        js.path().display().to_string()
    );
    // The default backend: the jail.
    let server = Server::start(&config, &[]);
    let r = server.invoke("py", &[], r#"{"to":"python"}"#).await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let got = json_of(&r);
    assert_eq!(got["event"], json!({"to": "python"}));
    assert_eq!(got["python"], "3.11");
    let r = server.invoke("js", &[], r#"{"to":"node"}"#).await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let got = json_of(&r);
    assert_eq!(got["event"], json!({"to": "node"}));
    assert!(
        got["node"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{major}.")),
        "{got}"
    );
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sam_project_is_served_from_its_template_as_it_is() {
    // template.yaml in the directory lamina serve starts in; no lamina.toml.
    let project = crate::templates::project();
    let server = Server::start_in(project, &[]);
    let logs = server.logs();
    assert!(
        logs.contains(
            "template.yaml: Resources.Table: AWS::Serverless::SimpleTable: not created by lamina"
        ),
        "{logs}"
    );
    // An Api event: payload format 1.0, with its path parameter.
    let r = server.get("/hello/world").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    let body = json_of(&r);
    assert_eq!(body["method"], "GET");
    assert_eq!(body["name"], "world");
    assert_eq!(
        body["version"],
        Value::Null,
        "1.0 events have no version field"
    );
    assert_eq!(body["env"]["STAGE"], "dev");
    // An HttpApi event: format 2.0.
    let r = server
        .request(
            http::Request::post("/v2/hello")
                .header("host", server.addr.to_string())
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(&r)["version"], "2.0");
    // An HttpApi event without Path or Method: the catch-all, to the Node.js function.
    let r = server.get("/anything/else").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    assert_eq!(
        json_of(&r),
        json!({"node": true, "function": "lamina-node-dev", "route": "$default",
               "path": "/anything/else"})
    );
    // Its function URL: the path after the prefix, on the `$default` route.
    server.wait_for_log("function URL of lamina-node-dev: http://", 1);
    let r = server.get("/lambda-url/lamina-node-dev/x/y?z=1").await;
    assert_eq!(r.status(), 200, "{}", server.logs());
    assert_eq!(
        json_of(&r),
        json!({"node": true, "function": "lamina-node-dev", "route": "$default", "path": "/x/y"})
    );
    // A function without a URL has none: the path is an ordinary one (here the catch-all's).
    let r = server.get("/lambda-url/HelloFunction/").await;
    assert_eq!(json_of(&r)["path"], "/lambda-url/HelloFunction/");
    // The Invoke API, by the function's name.
    let r = server.invoke("HelloFunction", &[], "{}").await;
    assert_eq!(r.status(), 200);
    // The template's settings, as the control plane reports them.
    let r = server.get("/2015-03-31/functions/HelloFunction").await;
    let got = json_of(&r);
    let c = &got["Configuration"];
    assert_eq!(c["MemorySize"], 256, "{got}");
    assert_eq!(c["Timeout"], 5, "Globals.Function.Timeout");
    assert_eq!(c["Runtime"], "python3.11");
    assert_eq!(c["Handler"], "app.handler");
    assert_eq!(c["EphemeralStorage"], json!({"Size": 1024}));
    assert_eq!(got["Concurrency"]["ReservedConcurrentExecutions"], 2);
    let (clean, logs) = server.stop();
    assert!(clean, "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_reads_the_served_functions_configuration() {
    let code = python_function();
    let mut config = python_config("py", code.path(), "memory = 256");
    let probe = function_with(&program("probe"));
    for name in ["a1", "a2", "a3"] {
        config.push_str(&probe_function(name, probe.path(), ""));
    }
    let server = Server::start(&config, &["--sandbox", "process"]);
    let script = r#"
import json, os
import boto3
from botocore.config import Config
client = boto3.client("lambda", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                      aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                      config=Config(retries={"max_attempts": 1}))
out = {}
out["all"] = [f["FunctionName"] for f in client.list_functions()["Functions"]]
page = client.list_functions(MaxItems=2)
out["page1"] = [f["FunctionName"] for f in page["Functions"]]
out["page2"] = [f["FunctionName"] for f in client.list_functions(Marker=page["NextMarker"])["Functions"]]
out["paginated"] = [f["FunctionName"] for p in client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 1}) for f in p["Functions"]]
c = client.get_function_configuration(FunctionName="py")
out["configuration"] = {k: c[k] for k in ["FunctionName", "FunctionArn", "Handler", "MemorySize", "Timeout", "Runtime", "Version", "State", "PackageType", "Architectures", "EphemeralStorage", "Environment"]}
out["last_modified"] = c["LastModified"]
f = client.get_function(FunctionName="arn:aws:lambda:us-east-1:000000000000:function:py")
out["get"] = {"name": f["Configuration"]["FunctionName"], "code": f["Code"]["Location"], "concurrency": f["Concurrency"]["ReservedConcurrentExecutions"]}
try:
    client.get_function(FunctionName="nope")
    out["missing"] = "no error"
except client.exceptions.ResourceNotFoundException as e:
    out["missing"] = e.response["Error"]["Message"]
print(json.dumps(out))
"#;
    let out = run_boto3(&server, script);
    assert_eq!(out["all"], json!(["a1", "a2", "a3", "py"]));
    assert_eq!(out["page1"], json!(["a1", "a2"]));
    assert_eq!(out["page2"], json!(["a3", "py"]));
    assert_eq!(out["paginated"], json!(["a1", "a2", "a3", "py"]));
    let c = &out["configuration"];
    assert_eq!(c["FunctionName"], "py");
    assert_eq!(
        c["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:py"
    );
    assert_eq!(c["Handler"], "app.handler");
    assert_eq!(c["MemorySize"], 256);
    assert_eq!(c["Timeout"], 2);
    assert_eq!(c["Runtime"], "provided.al2023");
    assert_eq!(c["Version"], "$LATEST");
    assert_eq!(c["State"], "Active");
    assert_eq!(c["PackageType"], "Zip");
    assert_eq!(c["EphemeralStorage"], json!({"Size": 512}));
    assert!(
        c["Environment"]["Variables"]["PROBE_PYTHON"].is_string(),
        "{c}"
    );
    // Lambda's timestamp form, which botocore leaves as text.
    let modified = out["last_modified"].as_str().unwrap();
    assert!(
        modified.ends_with("+0000") && modified.len() == 28,
        "{modified}"
    );
    assert_eq!(out["get"]["name"], "py");
    assert_eq!(
        out["get"]["code"],
        format!("file://{}", code.path().canonicalize().unwrap().display())
    );
    assert_eq!(out["get"]["concurrency"], 1);
    assert_eq!(
        out["missing"],
        "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_mode_swaps_in_an_edited_handler_under_load_and_keeps_a_broken_edit_out() {
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("py");
    std::fs::create_dir(&code).unwrap();
    let handler = |version: u32| {
        format!("def handler(event, context):\n    return {{\"version\": {version}}}\n")
    };
    std::fs::write(code.join("app.py"), handler(1)).unwrap();
    let probe = function_with(&program("probe"));
    let config = format!(
        "[functions.py]\ncode = \"py\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
         concurrency = 4\n\n{}",
        probe_function("probe", probe.path(), "")
    );
    std::fs::write(dir.path().join("lamina.toml"), &config).unwrap();
    let server = Arc::new(Server::start_in(dir, &["--watch"]));
    server.wait_for_log("watching", 1);
    let pid_of_probe = |r: http::Response<Bytes>| json_of(&r)["pid"].as_u64().unwrap();
    let probe_pid = pid_of_probe(server.invoke("probe", &[], "{}").await);

    // Load: four clients invoking without pause, each answer recorded with when it came.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<(Instant, u16, Value)>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (server, stop, answers) =
            (Arc::clone(&server), Arc::clone(&stop), Arc::clone(&answers));
        clients.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = server.invoke("py", &[], "{}").await;
                let failed = header(&r, "x-amz-function-error").is_some();
                let status = if failed { 599 } else { r.status().as_u16() };
                let body = serde_json::from_slice(r.body()).unwrap_or(Value::Null);
                answers.lock().unwrap().push((Instant::now(), status, body));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let project = server.dir.path().to_owned();
    std::fs::write(project.join("py/app.py"), handler(2)).unwrap();
    let edited = Instant::now();
    let deadline = edited + Duration::from_secs(5);
    let first_new = loop {
        let seen = answers
            .lock()
            .unwrap()
            .iter()
            .find(|(at, _, body)| *at > edited && body["version"] == 2)
            .map(|(at, _, _)| *at);
        if let Some(at) = seen {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "no answer of the new version:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        first_new - edited < Duration::from_secs(1),
        "the new answer came {:?} after the edit",
        first_new - edited
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A broken configuration: reported, and the running version goes on.
    std::fs::write(project.join("lamina.toml"), format!("{config}\nbroken = [")).unwrap();
    server.wait_for_log("reload failed", 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    assert!(answers.len() > 20, "{} answers", answers.len());
    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "failed under reload: {failed:?}\n{}",
        server.logs()
    );
    // Once the new version answered, and the invocations already under way had ended, only
    // it answers, also after the broken edit.
    let settled = first_new + Duration::from_millis(300);
    let stale: Vec<_> = answers
        .iter()
        .filter(|(at, _, body)| *at > settled && body["version"] != 2)
        .collect();
    assert!(stale.is_empty(), "old answers after the switch: {stale:?}");
    let logs = server.logs();
    assert_eq!(
        logs.matches("lamina: reloaded in ").count(),
        1,
        "one reload for one edit:\n{logs}"
    );
    assert!(logs.contains("py (changed)"), "{logs}");
    assert!(
        logs.contains("still serving the previous version"),
        "{logs}"
    );
    // The function that did not change kept its warm environment.
    assert_eq!(
        pid_of_probe(server.invoke("probe", &[], "{}").await),
        probe_pid
    );
    // Fixed again: it loads.
    std::fs::write(project.join("lamina.toml"), &config).unwrap();
    server.wait_for_log("lamina: reloaded in ", 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_templates_schedule_invokes_its_function_with_eventbridges_event() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tick")).unwrap();
    std::fs::write(
        dir.path().join("tick/app.py"),
        "import json\ndef handler(event, context):\n    print('EVENT ' + json.dumps(event, sort_keys=True))\n",
    )
    .unwrap();
    let template = r#"
Transform: AWS::Serverless-2016-10-31
Resources:
  Tick:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: tick/
      Handler: app.handler
      Runtime: python3.11
      Events:
        EveryMinute:
          Type: Schedule
          Properties:
            Schedule: cron(* * * * ? *)
        WithInput:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: cron(* * * * ? *)
            Input: '{"from": "scheduler"}'
        Paused:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
            Enabled: false
"#;
    std::fs::write(dir.path().join("template.yaml"), template).unwrap();
    crate::templates::sam_accepts(&dir.path().join("template.yaml"));
    let server = Server::start_in(dir, &[]);
    assert!(
        server
            .logs()
            .contains("Events.Paused: Schedule: disabled, so not run"),
        "{}",
        server.logs()
    );
    // Both fire at the next minute; up to a minute and a little.
    let deadline = Instant::now() + Duration::from_secs(75);
    let logs = loop {
        let logs = server.logs();
        if logs.matches("EVENT ").count() >= 2 {
            break logs;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled invocations:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let events: Vec<Value> = logs
        .lines()
        .filter_map(|l| {
            l.split_once("EVENT ")
                .map(|(_, e)| serde_json::from_str(e).unwrap())
        })
        .collect();
    let scheduled = events
        .iter()
        .find(|e| e["detail-type"] == "Scheduled Event")
        .unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(scheduled["source"], "aws.events");
    assert_eq!(scheduled["detail"], json!({}));
    assert_eq!(
        scheduled["resources"],
        json!(["arn:aws:events:us-east-1:000000000000:rule/Tick-EveryMinute"])
    );
    // It fired on a minute boundary.
    assert!(
        scheduled["time"].as_str().unwrap().ends_with(":00Z"),
        "{scheduled}"
    );
    assert!(events.contains(&json!({"from": "scheduler"})), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn accepted_events_survive_kill_9_and_run_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("slow")).unwrap();
    std::fs::write(
        dir.path().join("slow/app.py"),
        "import time\ndef handler(event, context):\n    time.sleep(0.05)\n    return event\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        "[functions.slow]\ncode = \"slow\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n",
    )
    .unwrap();
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    // 40 accepted; one environment at 50 ms each: most are still queued at the kill.
    let ids = send_events(&server, "slow", 40, "{}").await;
    let (before, dir) = server.kill9();
    let ran_before = ended(&before).len();
    assert!(
        ran_before < 40,
        "all ran before the kill: the test shows nothing"
    );
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let logs = wait_all_ended(&server, &before, &ids);
    assert!(
        logs.contains("resuming")
            && logs.contains("asynchronous invocations accepted before the last stop"),
        "{logs}"
    );
    // Once all have run and the server has stopped (a kill -9 may come before the last
    // removal is committed: that event would run again, which at-least-once allows), the
    // store holds none: a third start resumes nothing.
    let (_, _, dir) = server.stop_keeping_dir();
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!server.logs().contains("resuming"), "{}", server.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn events_killed_mid_retry_are_retried_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flaky")).unwrap();
    let marker = dir.path().join("healed");
    std::fs::write(
        dir.path().join("flaky/app.py"),
        format!(
            "import os\ndef handler(event, context):\n    if not os.path.exists({:?}):\n        raise RuntimeError('not yet')\n    print('HEALED ' + context.aws_request_id)\n    return {{}}\n",
            marker.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        "[functions.flaky]\ncode = \"flaky\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
         concurrency = 4\n\n[serve]\nretry_delay = 1\n",
    )
    .unwrap();
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let ids = send_events(&server, "flaky", 10, "{}").await;
    // Every event has failed its first attempt and waits for its retry.
    server.wait_for_log("RuntimeError: not yet", 10);
    let (_, dir) = server.kill9();
    std::fs::write(&marker, "").unwrap();
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = server.logs();
        let healed = ids
            .iter()
            .filter(|id| logs.contains(&format!("HEALED {id}")))
            .count();
        if healed == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{healed} of {} retried:\n{logs}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !server
            .dir
            .path()
            .join("state/dead-letters/flaky.jsonl")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn destinations_get_lambdas_records_for_success_failure_and_age() {
    let dir = tempfile::tempdir().unwrap();
    for (name, app) in [
        (
            "worker",
            "def handler(event, context):\n    if event.get('fail'):\n        raise ValueError('no')\n    return {'done': event['n']}\n",
        ),
        (
            "audit",
            "import json\ndef handler(event, context):\n    print('AUDIT ' + json.dumps(event, sort_keys=True))\n",
        ),
    ] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("app.py"), app).unwrap();
    }
    let config = "[functions.worker]\ncode = \"worker\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
                  maximum_retry_attempts = 0\nmaximum_event_age = 60\non_success = \"function:audit\"\n\
                  on_failure = \"file:failed.jsonl\"\n\n\
                  [functions.audit]\ncode = \"audit\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n";
    std::fs::write(dir.path().join("lamina.toml"), config).unwrap();
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let ok = send_events(&server, "worker", 1, r#"{"n": 7}"#).await;
    let failed = send_events(&server, "worker", 1, r#"{"fail": true}"#).await;
    // Success: a record to the audit function, invoked asynchronously.
    let logs = server.wait_for_log("AUDIT ", 1);
    let record: Value = logs
        .lines()
        .find_map(|l| {
            l.split_once("AUDIT ")
                .map(|(_, r)| serde_json::from_str(r).unwrap())
        })
        .unwrap();
    crate::server::assert_success_record(&record, &ok[0]);
    // Failure, no retries: a record in the file, with the function's error.
    let file = server.dir.path().join("failed.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The file is made, then the line written: wait for a whole line.
    let text = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.ends_with('\n') {
            break text;
        }
        assert!(Instant::now() < deadline, "{}", server.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let record: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(record["requestContext"]["requestId"], failed[0].as_str());
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["responsePayload"]["errorType"], "ValueError");
    // An event older than maximum_event_age (60 s): accepted 2 minutes ago, found in the
    // store at a start, sent to the failure destination without running.
    let (_, dir) = server.kill9();
    let store = dir.path().join("state/events.sqlite3");
    let accepted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 120_000;
    let insert = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
             c.execute(\"INSERT INTO events (request_id, function, payload, client_context, trace_id, accepted_ms, attempts, due_ms) VALUES ('old-event', 'worker', ?, NULL, NULL, ?, 0, 0)\", (b'{\"n\": 1}', int(sys.argv[2])))\nc.commit()\n",
        ])
        .arg(&store)
        .arg(accepted.to_string())
        .output()
        .unwrap();
    assert!(
        insert.status.success(),
        "{}",
        String::from_utf8_lossy(&insert.stderr)
    );
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(server.dir.path().join("failed.jsonl")).unwrap();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("old-event") && l.ends_with('}'))
        {
            let record: Value = serde_json::from_str(line).unwrap();
            assert_eq!(record["requestContext"]["condition"], "EventAgeExceeded");
            assert_eq!(record["requestContext"]["approximateInvokeCount"], 0);
            assert!(record.get("responseContext").is_none(), "{record}");
            break;
        }
        assert!(Instant::now() < deadline, "{}", server.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !server.logs().contains("START RequestId: old-event"),
        "it never ran"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_events_wait_for_room_and_a_throttle_is_not_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("busy")).unwrap();
    std::fs::write(
        dir.path().join("busy/app.py"),
        "import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return event\n",
    )
    .unwrap();
    // One environment, no retries: an event throttled while a synchronous invocation holds
    // it would be lost if a throttle counted as a failed attempt.
    std::fs::write(
        dir.path().join("lamina.toml"),
        "[functions.busy]\ncode = \"busy\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
         concurrency = 1\nmaximum_retry_attempts = 0\non_success = \"file:ok.jsonl\"\n\
         on_failure = \"file:failed.jsonl\"\n",
    )
    .unwrap();
    let server = Server::start_in(dir, &["--sandbox", "process"]);
    let server = Arc::new(server);
    let holder = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.invoke("busy", &[], r#"{"sleep": 1.5}"#).await })
    };
    server.wait_for_log("START RequestId", 1);
    let ids = send_events(&server, "busy", 3, r#"{"n": 1}"#).await;
    // Held: a second synchronous caller is throttled, as Lambda answers it (429).
    let r = server.invoke("busy", &[], "{}").await;
    assert_eq!(r.status(), 429, "{}", server.logs());
    assert_eq!(holder.await.unwrap().status(), 200);
    let file = server.dir.path().join("ok.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.lines().count() == 3 && text.ends_with('\n') {
            break text;
        }
        assert!(Instant::now() < deadline, "{}", server.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert!(
            ids.contains(
                &record["requestContext"]["requestId"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            ),
            "{record}"
        );
        assert_eq!(
            record["requestContext"]["approximateInvokeCount"], 1,
            "{record}"
        );
    }
    assert!(!server.dir.path().join("failed.jsonl").exists());
}
