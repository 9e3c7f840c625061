//! The client against a real HTTP server (hyper) on loopback playing the Runtime API: what it
//! asks for, what it posts, on one kept-alive connection. The client blocks the thread it runs
//! on, so the server runs on the multi-threaded runtime's workers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::*;
use crate::handler::Typed;
use crate::{Error, LambdaEvent, service_fn};

/// One call the runtime made.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    error_type: Option<String>,
    body: Bytes,
}

/// An event to hand out: its headers and payload.
type Event = (Vec<(&'static str, String)>, Vec<u8>);

#[derive(Default)]
struct Api {
    /// Events still to hand out: their headers and payload. When none is left, `next`
    /// answers 500 and the runtime ends.
    events: Mutex<VecDeque<Event>>,
    calls: Mutex<Vec<Call>>,
    connections: AtomicUsize,
    /// The status `/response` answers with.
    response_status: Mutex<Option<StatusCode>>,
}

async fn answer(
    api: Arc<Api>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let error_type = request
        .headers()
        .get("lambda-runtime-function-error-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = request.into_body().collect().await.unwrap().to_bytes();
    api.calls.lock().unwrap().push(Call {
        method: method.clone(),
        path: path.clone(),
        error_type,
        body,
    });
    let mut response = hyper::Response::builder();
    let body = if path.ends_with("/next") {
        match api.events.lock().unwrap().pop_front() {
            Some((headers, payload)) => {
                for (name, value) in headers {
                    response = response.header(name, value);
                }
                payload
            }
            None => {
                response = response.status(500);
                b"no more events".to_vec()
            }
        }
    } else {
        let status = if path.ends_with("/response") {
            api.response_status
                .lock()
                .unwrap()
                .unwrap_or(StatusCode::ACCEPTED)
        } else {
            StatusCode::ACCEPTED
        };
        response = response.status(status);
        b"{}".to_vec()
    };
    Ok(response.body(Full::new(Bytes::from(body))).unwrap())
}

async fn start(api: Arc<Api>) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            api.connections.fetch_add(1, Ordering::SeqCst);
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |r| answer(Arc::clone(&api), r));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Client::new(addr.to_string())
}

fn config() -> Result<Config, crate::ConfigError> {
    Ok(Config {
        function_name: "f".into(),
        memory: 128,
        ..Default::default()
    })
}

fn event(id: &str, deadline_ms: u64, payload: Value) -> Event {
    (
        vec![
            ("lambda-runtime-aws-request-id", id.to_owned()),
            ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-5f84c7a9-0123456789abcdef01234567".into(),
            ),
        ],
        payload.to_string().into_bytes(),
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    match payload["do"].as_str() {
        Some("fail") => Err("asked to fail".into()),
        Some("panic") => panic!("asked to panic"),
        Some("context") => Ok(json!({
            "expired": context.remaining().is_zero(),
            "request_id": context.request_id,
            "arn": context.invoked_function_arn,
            "trace": context.xray_trace_id,
            "function": context.env_config.function_name,
            "app": context.client_context.map(|c| c.client.app_title),
            "pool": context.identity.map(|i| i.identity_pool_id),
        })),
        _ => Ok(payload),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_gets_one_answer_on_one_connection() {
    let api = Arc::new(Api::default());
    let future = now_ms() + 60_000;
    let big = "x".repeat(5 * 1024 * 1024);
    let mut with_context = event("ctx", future, json!({"do": "context"}));
    with_context.0.push((
        "lambda-runtime-client-context",
        r#"{"client":{"appTitle":"app"}}"#.into(),
    ));
    with_context.0.push((
        "lambda-runtime-cognito-identity",
        r#"{"cognitoIdentityId":"i","cognitoIdentityPoolId":"pool"}"#.into(),
    ));
    api.events.lock().unwrap().extend([
        with_context,
        event("fail", future, json!({"do": "fail"})),
        event("panic", future, json!({"do": "panic"})),
        event("after-panic", future, json!({"n": 1})),
        event("bad", future, json!("not an object")),
        event("big", future, json!({"big": big})),
        // Already past its deadline: the handler still runs and its answer is posted.
        event("late", 1_000, json!({"do": "context"})),
    ]);
    let mut client = start(Arc::clone(&api)).await;
    let mut typed = Typed::new(service_fn(handler));
    let ended = serve_with(&mut client, &mut typed, config())
        .await
        .unwrap_err();
    assert!(ended.to_string().contains("500"), "{ended}");

    let calls = api.calls.lock().unwrap().clone();
    let posts: Vec<&Call> = calls.iter().filter(|c| c.method == Method::POST).collect();
    let paths: Vec<&str> = posts.iter().map(|c| c.path.as_str()).collect();
    let api_path = |id: &str, what: &str| format!("/2018-06-01/runtime/invocation/{id}/{what}");
    assert_eq!(
        paths,
        [
            api_path("ctx", "response"),
            api_path("fail", "error"),
            api_path("panic", "error"),
            api_path("after-panic", "response"),
            api_path("bad", "response"),
            api_path("big", "response"),
            api_path("late", "response"),
        ]
    );
    let json = |call: &Call| serde_json::from_slice::<Value>(&call.body).unwrap();
    assert_eq!(
        json(posts[0]),
        json!({"request_id": "ctx", "arn": "arn:aws:lambda:us-east-1:000000000000:function:f",
               "trace": "Root=1-5f84c7a9-0123456789abcdef01234567", "function": "f",
               "app": "app", "pool": "pool", "expired": false})
    );
    assert_eq!(posts[1].error_type.as_deref(), Some("Error"));
    assert_eq!(
        json(posts[1]),
        json!({"errorType": "Error", "errorMessage": "asked to fail"})
    );
    assert_eq!(posts[2].error_type.as_deref(), Some("Panic"));
    assert!(
        json(posts[2])["errorMessage"]
            .as_str()
            .unwrap()
            .contains("asked to panic")
    );
    assert_eq!(json(posts[3]), json!({"n": 1}));
    // A `Value` takes any JSON: the string is the answer.
    assert_eq!(json(posts[4]), json!("not an object"));
    assert_eq!(json(posts[5])["big"].as_str().unwrap().len(), big.len());
    assert_eq!(json(posts[6])["expired"], true);
    // Eight `next`s (the last one refused) and seven posts, all on one connection.
    assert_eq!(calls.len(), 15);
    assert_eq!(api.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_the_wrong_shape_is_an_unmarshal_error() {
    let api = Arc::new(Api::default());
    api.events.lock().unwrap().push_back(event(
        "typed",
        now_ms() + 60_000,
        json!({"not": "a number"}),
    ));
    let mut client = start(Arc::clone(&api)).await;
    let mut typed = Typed::new(service_fn(|e: LambdaEvent<u64>| async move {
        Ok::<_, Error>(e.payload + 1)
    }));
    let _ = serve_with(&mut client, &mut typed, config()).await;
    let calls = api.calls.lock().unwrap().clone();
    let error = calls
        .iter()
        .find(|c| c.path.ends_with("/typed/error"))
        .expect("an error post");
    assert_eq!(error.error_type.as_deref(), Some("Runtime.UnmarshalError"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_configuration_is_an_init_error_not_a_panic() {
    let api = Arc::new(Api::default());
    let mut client = start(Arc::clone(&api)).await;
    let mut typed = Typed::new(service_fn(handler));
    let missing = Err(crate::ConfigError::Missing("AWS_LAMBDA_FUNCTION_NAME"));
    let err = serve_with(&mut client, &mut typed, missing)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("AWS_LAMBDA_FUNCTION_NAME"),
        "{err}"
    );
    let calls = api.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "no event is asked for: {calls:?}");
    assert_eq!(calls[0].path, "/2018-06-01/runtime/init/error");
    assert_eq!(
        calls[0].error_type.as_deref(),
        Some("Runtime.InvalidConfig")
    );
    let body: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("AWS_LAMBDA_FUNCTION_NAME")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_answer_does_not_stop_the_runtime() {
    let api = Arc::new(Api::default());
    *api.response_status.lock().unwrap() = Some(StatusCode::PAYLOAD_TOO_LARGE);
    let future = now_ms() + 60_000;
    api.events.lock().unwrap().extend([
        event("one", future, json!({"a": 1})),
        event("two", future, json!({"a": 2})),
    ]);
    let mut client = start(Arc::clone(&api)).await;
    let mut typed = Typed::new(service_fn(handler));
    let _ = serve_with(&mut client, &mut typed, config()).await;
    let posts = api
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == Method::POST)
        .count();
    assert_eq!(posts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_api_address_run_says_so() {
    // This test process has no AWS_LAMBDA_RUNTIME_API.
    assert!(std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none());
    let err = crate::run(service_fn(handler)).await.unwrap_err();
    assert!(err.to_string().contains("AWS_LAMBDA_RUNTIME_API"), "{err}");
}
