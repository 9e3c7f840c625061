//! Events as API Gateway, function URLs and ALB send them, through `parse` and `respond`.

use serde_json::{Value, json};

use super::*;

fn parsed(event: Value) -> (Request, Origin) {
    parse(event.to_string().as_bytes(), Context::default()).expect("parsed")
}

fn answer(origin: Origin, response: Response) -> Value {
    serde_json::from_slice(&origin.respond(response)).unwrap()
}

#[test]
fn payload_2_0_with_cookies_a_binary_body_and_parameters() {
    let (request, origin) = parsed(json!({
        "version": "2.0",
        "routeKey": "POST /hello/{name}",
        "rawPath": "/hello/ada",
        "rawQueryString": "greeting=hi&x=1&x=2",
        "cookies": ["a=1", "b=2"],
        "headers": {"host": "api.example.com", "content-type": "application/octet-stream"},
        "queryStringParameters": {"greeting": "hi", "x": "1,2"},
        "pathParameters": {"name": "ada"},
        "requestContext": {
            "http": {"method": "POST", "path": "/hello/ada", "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "t"},
            "domainName": "api.example.com", "requestId": "r1", "stage": "$default",
            "routeKey": "POST /hello/{name}", "time": "23/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795428000000i64
        },
        "body": "AAEC/w==",
        "isBase64Encoded": true
    }));
    assert_eq!(origin, Origin::V2);
    assert_eq!(request.method(), Method::POST);
    assert_eq!(
        request.uri().to_string(),
        "https://api.example.com/hello/ada?greeting=hi&x=1&x=2"
    );
    assert_eq!(request.headers()["cookie"], "a=1; b=2");
    assert_eq!(request.body().as_ref(), &[0, 1, 2, 255]);
    assert_eq!(request.path_parameters().first("name"), Some("ada"));
    assert_eq!(
        request.query_string_parameters().first("greeting"),
        Some("hi")
    );
    assert!(matches!(
        request.request_context_ref(),
        Some(RequestContext::ApiGatewayV2(_))
    ));

    let response = ::http::Response::builder()
        .status(201)
        .header("set-cookie", "s=1; Path=/")
        .header("set-cookie", "t=2")
        .header("x-many", "a")
        .header("x-many", "b")
        .body(Body::Binary(vec![9, 8, 7]))
        .unwrap();
    let json = answer(origin, response);
    assert_eq!(json["statusCode"], 201);
    assert_eq!(json["cookies"], json!(["s=1; Path=/", "t=2"]));
    assert_eq!(json["headers"]["x-many"], "a, b");
    assert!(json["headers"].get("set-cookie").is_none(), "{json}");
    assert_eq!(json["isBase64Encoded"], true);
    assert_eq!(json["body"], "CQgH");
}

#[test]
fn payload_1_0_with_multi_value_query_and_a_decoded_path() {
    let (request, origin) = parsed(json!({
        "resource": "/hello/{name}",
        "path": "/hello/jo hn",
        "httpMethod": "GET",
        "headers": {"Host": "x.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"Host": ["x.execute-api.us-east-1.amazonaws.com"], "Accept": ["a/b", "c/d"]},
        "queryStringParameters": {"q": "b"},
        "multiValueQueryStringParameters": {"q": ["a b", "b"]},
        "pathParameters": {"name": "jo hn"},
        "stageVariables": null,
        "requestContext": {"httpMethod": "GET", "requestId": "r", "stage": "prod", "path": "/prod/hello/jo hn",
                           "identity": {"sourceIp": "127.0.0.1"}},
        "body": "{\"k\":1}",
        "isBase64Encoded": false
    }));
    assert_eq!(origin, Origin::V1);
    assert_eq!(request.uri().path(), "/hello/jo%20hn");
    assert_eq!(request.uri().query(), Some("q=a%20b&q=b"));
    assert_eq!(request.headers().get_all("accept").iter().count(), 2);
    assert_eq!(
        request.query_string_parameters().all("q"),
        Some(vec!["a b", "b"])
    );
    assert_eq!(request.path_parameters().first("name"), Some("jo hn"));
    assert_eq!(request.payload::<Value>().unwrap(), Some(json!({"k": 1})));

    let response = ::http::Response::builder()
        .header("set-cookie", "a=1")
        .header("set-cookie", "b=2")
        .body(Body::from("ok"))
        .unwrap();
    let json = answer(origin, response);
    assert_eq!(json["statusCode"], 200);
    assert_eq!(
        json["multiValueHeaders"]["set-cookie"],
        json!(["a=1", "b=2"])
    );
    assert_eq!(json["body"], "ok");
    assert_eq!(json["isBase64Encoded"], false);
}

#[test]
fn alb_events_answer_in_the_header_mode_they_came_in() {
    let single = json!({
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:t"}},
        "httpMethod": "GET", "path": "/p", "queryStringParameters": {"a": "x%20y"},
        "headers": {"host": "lb"}, "body": "", "isBase64Encoded": false
    });
    let (request, origin) = parsed(single);
    assert_eq!(origin, Origin::Alb { multi: false });
    assert_eq!(request.uri().to_string(), "https://lb/p?a=x%20y");
    let json = answer(origin, "hi".into_response());
    assert_eq!(json["statusDescription"], "200 OK");
    assert_eq!(json["headers"]["content-type"], "text/plain; charset=utf-8");

    let multi = json!({
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:t"}},
        "httpMethod": "GET", "path": "/p", "multiValueQueryStringParameters": {},
        "multiValueHeaders": {"host": ["lb"]}, "body": null, "isBase64Encoded": false
    });
    let (_, origin) = parsed(multi);
    assert_eq!(origin, Origin::Alb { multi: true });
    let json = answer(origin, (StatusCode::NOT_FOUND, "no").into_response());
    assert_eq!(json["multiValueHeaders"], json!({}));
    assert_eq!(json["statusCode"], 404);
}

#[test]
fn anything_else_is_an_unmarshal_error_naming_what_was_expected() {
    let err = parse(br#"{"Records":[]}"#, Context::default()).unwrap_err();
    assert_eq!(err.error_type, "Runtime.UnmarshalError");
    assert!(err.error_message.contains("not an HTTP request"), "{err:?}");
    let err = parse(b"[1", Context::default()).unwrap_err();
    assert!(err.error_message.contains("not JSON"), "{err:?}");
    let err = parse(
        br#"{"version":"2.0","requestContext":{"http":{"method":"GET"}},"body":"***","isBase64Encoded":true}"#,
        Context::default(),
    )
    .unwrap_err();
    assert!(err.error_message.contains("base64"), "{err:?}");
}
