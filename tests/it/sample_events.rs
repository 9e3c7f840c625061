//! `lamina event generate` and `lamina event list` as a user runs them: every sample reads
//! back into the `aws_lambda_events` type a function would use, carries what its service
//! sends, and takes the options that make sense for it (refusing the others); and `lamina
//! invoke --event-template` hands the same sample to a function.

use std::process::{Command, Output};

use aws_lambda_events::alb::AlbTargetGroupRequest;
use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use aws_lambda_events::dynamodb;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::http::Method;
use aws_lambda_events::kinesis::KinesisEvent;
use aws_lambda_events::s3::S3Event;
use aws_lambda_events::s3::object_lambda::S3ObjectLambdaEvent;
use aws_lambda_events::sns::SnsEvent;
use aws_lambda_events::sqs::SqsEvent;
use serde_json::{Value, json};

use crate::support::{lamina, program};

/// Every sample, in `lamina event list`'s order; a sample added without a test here fails
/// `the_samples_are_the_ones_listed`.
const NAMES: [&str; 11] = [
    "apigw-v2",
    "apigw-v1",
    "alb",
    "sqs",
    "sns",
    "s3",
    "dynamodb",
    "eventbridge",
    "schedule",
    "s3-object-lambda",
    "kinesis",
];

fn event(args: &[&str]) -> Output {
    Command::new(lamina())
        .arg("event")
        .args(args)
        .output()
        .expect("run lamina")
}

/// `lamina event generate ARGS…`, which must succeed with one JSON document on stdout.
fn generate(args: &[&str]) -> Value {
    let out = event(&[&["generate"], args].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "generate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("generate {args:?}: not JSON ({e}): {out:?}"))
}

/// `lamina event generate ARGS…`, which must be refused as a usage error; its stderr.
fn refused(args: &[&str]) -> String {
    let out = event(&[&["generate"], args].concat());
    assert_eq!(out.status.code(), Some(2), "generate {args:?}: {out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sample `$name` read back into the type the binding it is assigned to names.
macro_rules! read {
    ($name:expr, $event:expr) => {{
        let event: &Value = &$event;
        serde_json::from_value(event.clone()).unwrap_or_else(|e| {
            panic!("{} does not read back into its type: {e}\n{event:#}", $name)
        })
    }};
}

/// Reads `event` into sample `name`'s `aws_lambda_events` type and checks, on the typed value,
/// what its service always sends, in `region`.
fn check_typed(name: &str, event: &Value, region: &str) {
    let account_arn = |arn: &Option<String>, service: &str| {
        let arn = arn.as_deref().unwrap_or_default();
        assert!(
            arn.starts_with(&format!("arn:aws:{service}:{region}:000000000000:")),
            "{name}: {arn}"
        );
    };
    match name {
        "apigw-v2" => {
            let e: ApiGatewayV2httpRequest = read!(name, event);
            assert_eq!(e.version.as_deref(), Some("2.0"));
            assert_eq!(e.route_key.as_deref(), Some("$default"));
            let context = &e.request_context;
            assert!(
                context
                    .request_id
                    .as_deref()
                    .is_some_and(|id| !id.is_empty())
            );
            assert_eq!(context.account_id.as_deref(), Some("000000000000"));
            assert!(
                context.time_epoch > 1_600_000_000_000,
                "{}",
                context.time_epoch
            );
            assert_eq!(e.raw_path, context.http.path);
            let host = e.headers.get("host").and_then(|h| h.to_str().ok());
            assert_eq!(host, context.domain_name.as_deref());
            assert!(
                host.is_some_and(|h| h.ends_with(&format!(".execute-api.{region}.amazonaws.com")))
            );
            assert!(e.headers.contains_key("user-agent"));
            assert!(!e.is_base64_encoded);
            // A 2.0 payload has none of the authorizer-v1 fields the type can also hold.
            assert!(event.get("httpMethod").is_none() && event.get("methodArn").is_none());
        }
        "apigw-v1" => {
            let e: ApiGatewayProxyRequest = read!(name, event);
            let context = &e.request_context;
            assert_eq!(context.http_method, e.http_method);
            assert!(context.request_id.is_some() && context.request_time.is_some());
            assert_eq!(context.stage.as_deref(), Some("prod"));
            assert_eq!(context.resource_path, e.resource);
            assert!(e.headers.contains_key("host") && e.headers.contains_key("user-agent"));
            // REST APIs pass header names on as the client spelled them.
            assert!(event["headers"].get("Host").is_some(), "{event:#}");
            assert!(event["requestContext"]["extendedRequestId"].is_string());
        }
        "alb" => {
            let e: AlbTargetGroupRequest = read!(name, event);
            let arn = e
                .request_context
                .elb
                .target_group_arn
                .as_deref()
                .unwrap_or_default();
            assert!(
                arn.starts_with(&format!(
                    "arn:aws:elasticloadbalancing:{region}:000000000000:targetgroup/"
                )),
                "{arn}"
            );
            assert!(e.headers.contains_key("host") && e.headers.contains_key("x-forwarded-for"));
            assert!(e.body.is_some(), "a load balancer sends \"\" for no body");
        }
        "sqs" => {
            let e: SqsEvent = read!(name, event);
            let [m] = e.records.as_slice() else {
                panic!("one message: {event:#}")
            };
            assert_eq!(m.event_source.as_deref(), Some("aws:sqs"));
            account_arn(&m.event_source_arn, "sqs");
            assert_eq!(m.aws_region.as_deref(), Some(region));
            assert!(m.message_id.is_some() && m.receipt_handle.is_some() && m.body.is_some());
            assert_eq!(
                m.attributes
                    .get("ApproximateReceiveCount")
                    .map(String::as_str),
                Some("1")
            );
            assert!(m.attributes.contains_key("SentTimestamp"));
        }
        "sns" => {
            let e: SnsEvent = read!(name, event);
            let [r] = e.records.as_slice() else {
                panic!("one record: {event:#}")
            };
            assert_eq!(r.event_source, "aws:sns");
            assert_eq!(r.sns.sns_message_type, "Notification");
            assert!(
                r.sns
                    .topic_arn
                    .starts_with(&format!("arn:aws:sns:{region}:000000000000:"))
            );
            assert!(r.event_subscription_arn.starts_with(&r.sns.topic_arn));
            assert!(!r.sns.message_id.is_empty() && !r.sns.signature.is_empty());
        }
        "s3" => {
            let e: S3Event = read!(name, event);
            let [r] = e.records.as_slice() else {
                panic!("one record: {event:#}")
            };
            assert_eq!(r.event_source.as_deref(), Some("aws:s3"));
            assert_eq!(r.event_name.as_deref(), Some("ObjectCreated:Put"));
            assert_eq!(r.aws_region.as_deref(), Some(region));
            assert!(r.s3.bucket.name.is_some() && r.s3.object.key.is_some());
            assert_eq!(
                r.s3.bucket.arn,
                r.s3.bucket
                    .name
                    .as_ref()
                    .map(|n| format!("arn:aws:s3:::{n}"))
            );
            assert!(r.s3.object.size.is_some() && r.s3.object.e_tag.is_some());
            // The type's convenience field is not something S3 sends.
            assert!(
                event["Records"][0]["s3"]["object"]
                    .get("urlDecodedKey")
                    .is_none()
            );
        }
        "dynamodb" => {
            let e: dynamodb::Event = read!(name, event);
            let [r] = e.records.as_slice() else {
                panic!("one record: {event:#}")
            };
            assert_eq!(r.event_source.as_deref(), Some("aws:dynamodb"));
            assert_eq!(r.event_name, "INSERT");
            assert_eq!(r.aws_region, region);
            account_arn(&r.event_source_arn, "dynamodb");
            assert!(!r.change.keys.is_empty() && !r.change.new_image.is_empty());
            assert!(r.change.keys.contains_key("Id"));
            assert!(r.change.size_bytes > 0);
        }
        "eventbridge" | "schedule" => {
            let e: EventBridgeEvent<Value> = read!(name, event);
            assert_eq!(e.version.as_deref(), Some("0"));
            assert_eq!(e.account.as_deref(), Some("000000000000"));
            assert_eq!(e.region.as_deref(), Some(region));
            assert!(e.id.is_some() && e.time.is_some());
            if name == "schedule" {
                assert_eq!(e.source, "aws.events");
                assert_eq!(e.detail_type, "Scheduled Event");
                assert_eq!(e.detail, json!({}));
                let resources = e.resources.unwrap_or_default();
                assert!(
                    resources
                        .iter()
                        .any(|r| r
                            .starts_with(&format!("arn:aws:events:{region}:000000000000:rule/"))),
                    "{resources:?}"
                );
            } else {
                assert!(e.detail.is_object(), "{}", e.detail);
                assert_ne!(
                    e.source, "aws.events",
                    "only AWS services send aws.* sources"
                );
            }
        }
        "s3-object-lambda" => {
            let e: S3ObjectLambdaEvent<Value> = read!(name, event);
            let context = e.get_object_context.expect("a GetObject context");
            assert!(context.input_s3_url.starts_with("https://"));
            assert!(!context.output_route.is_empty() && !context.output_token.is_empty());
            assert!(e.configuration.access_point_arn.starts_with(&format!(
                "arn:aws:s3-object-lambda:{region}:000000000000:accesspoint/"
            )));
            assert!(e.user_request.headers.contains_key("host"));
            assert_eq!(e.protocol_version, "1.00");
            assert!(event.get("headObjectContext").is_none(), "{event:#}");
        }
        "kinesis" => {
            let e: KinesisEvent = read!(name, event);
            let [r] = e.records.as_slice() else {
                panic!("one record: {event:#}")
            };
            assert_eq!(r.event_source.as_deref(), Some("aws:kinesis"));
            assert_eq!(r.event_name.as_deref(), Some("aws:kinesis:record"));
            account_arn(&r.event_source_arn, "kinesis");
            assert!(!r.kinesis.sequence_number.is_empty() && !r.kinesis.data.is_empty());
            // Kinesis writes the arrival time as a number, data as base64.
            let kinesis = &event["Records"][0]["kinesis"];
            assert!(
                kinesis["approximateArrivalTimestamp"].is_number(),
                "{kinesis}"
            );
            assert!(kinesis["data"].is_string(), "{kinesis}");
        }
        other => panic!("no check for sample {other}"),
    }
}

#[test]
fn the_samples_are_the_ones_listed() {
    assert_eq!(lamina_runtime::sample_events::NAMES, NAMES);
    let out = event(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), NAMES.len(), "{stdout}");
    for (line, name) in lines.iter().zip(NAMES) {
        let (listed, description) = line.split_once(' ').unwrap_or((line, ""));
        assert_eq!(listed, name, "{stdout}");
        assert!(
            !description.trim().is_empty(),
            "{name} has a description: {stdout}"
        );
    }
}

#[test]
fn every_sample_reads_back_into_its_type_with_what_its_service_sends() {
    for name in NAMES {
        let event = generate(&[name]);
        check_typed(name, &event, "us-east-1");
    }
}

#[test]
fn every_sample_takes_its_options_and_the_region() {
    for name in NAMES {
        let options: &[&str] = match name {
            "apigw-v2" | "apigw-v1" | "alb" => {
                &["--path", "/x?q=1", "--method", "PUT", "--body", "hi"]
            }
            "sqs" | "sns" | "kinesis" => &["--body", "hi"],
            "eventbridge" => &["--body", r#"{"k":"v"}"#],
            "s3" | "s3-object-lambda" => &["--bucket", "b", "--key", "a b.txt"],
            _ => &[],
        };
        let args = [&[name, "--region", "eu-central-1"], options].concat();
        let event = generate(&args);
        check_typed(name, &event, "eu-central-1");
        let text = event.to_string();
        assert!(
            !text.contains("us-east-1"),
            "{name}: the region is everywhere the default was: {event:#}"
        );
    }
}

#[test]
fn http_options_land_where_each_service_puts_them() {
    let v2 = generate(&["apigw-v2", "--path", "/x", "--method", "POST"]);
    let e: ApiGatewayV2httpRequest = read!("apigw-v2", &v2);
    assert_eq!(e.raw_path.as_deref(), Some("/x"));
    assert_eq!(e.request_context.http.method, Method::POST);
    assert_eq!(v2["requestContext"]["http"]["method"], "POST");
    assert_eq!(e.body, None);

    // A query goes into the raw query and the decoded parameters; a body brings its headers,
    // and POST when no method is named.
    let v2 = generate(&[
        "apigw-v2",
        "--path",
        "/items?id=7&tag=a%20b",
        "--body",
        r#"{"n":1}"#,
    ]);
    let e: ApiGatewayV2httpRequest = read!("apigw-v2", &v2);
    assert_eq!(e.raw_path.as_deref(), Some("/items"));
    assert_eq!(e.raw_query_string.as_deref(), Some("id=7&tag=a%20b"));
    assert_eq!(e.query_string_parameters.first("tag"), Some("a b"));
    assert_eq!(e.request_context.http.method, Method::POST);
    assert_eq!(e.body.as_deref(), Some(r#"{"n":1}"#));
    assert_eq!(e.headers["content-type"], "application/json");
    assert_eq!(e.headers["content-length"], "7");

    let v1 = generate(&["apigw-v1", "--path", "/a/b?x=1&x=2", "--method", "delete"]);
    let e: ApiGatewayProxyRequest = read!("apigw-v1", &v1);
    assert_eq!(e.path.as_deref(), Some("/a/b"));
    assert_eq!(e.http_method, Method::DELETE);
    assert_eq!(e.resource.as_deref(), Some("/{proxy+}"));
    assert_eq!(e.path_parameters["proxy"], "a/b");
    assert_eq!(e.request_context.path.as_deref(), Some("/prod/a/b"));
    assert_eq!(
        v1["queryStringParameters"],
        json!({"x": "2"}),
        "the last value, as API Gateway"
    );
    assert_eq!(
        v1["multiValueQueryStringParameters"],
        json!({"x": ["1", "2"]})
    );
    // Without a query or path parameters, a REST API sends null maps.
    let v1 = generate(&["apigw-v1"]);
    assert_eq!(v1["path"], "/");
    assert!(v1["queryStringParameters"].is_null() && v1["pathParameters"].is_null());

    let alb = generate(&[
        "alb",
        "--path",
        "/lambda?q=a%20b",
        "--method",
        "PATCH",
        "--body",
        "x",
    ]);
    let e: AlbTargetGroupRequest = read!("alb", &alb);
    assert_eq!(e.path.as_deref(), Some("/lambda"));
    assert_eq!(e.http_method, Method::PATCH);
    assert_eq!(e.body.as_deref(), Some("x"));
    assert_eq!(e.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        alb["queryStringParameters"],
        json!({"q": "a%20b"}),
        "undecoded, as an ALB"
    );
}

#[test]
fn s3_keys_are_url_encoded_as_s3_encodes_them() {
    let s3 = generate(&["s3", "--bucket", "b", "--key", "a b.txt"]);
    let e: S3Event = read!("s3", &s3);
    let record = &e.records[0];
    assert_eq!(record.s3.bucket.name.as_deref(), Some("b"));
    assert_eq!(record.s3.bucket.arn.as_deref(), Some("arn:aws:s3:::b"));
    assert_eq!(record.s3.object.key.as_deref(), Some("a+b.txt"));
    let s3 = generate(&["s3", "--key", "logs/year=2024/x.json"]);
    assert_eq!(
        s3["Records"][0]["s3"]["object"]["key"],
        "logs/year%3D2024/x.json"
    );

    let olap = generate(&["s3-object-lambda", "--bucket", "b", "--key", "dir/a b.txt"]);
    let e: S3ObjectLambdaEvent<Value> = read!("s3-object-lambda", &olap);
    assert!(
        e.user_request.url.ends_with(".amazonaws.com/dir/a%20b.txt"),
        "{}",
        e.user_request.url
    );
    let input = e.get_object_context.expect("GetObject").input_s3_url;
    assert!(input.contains(".amazonaws.com/dir/a%20b.txt?"), "{input}");
    assert!(
        e.configuration
            .supporting_access_point_arn
            .ends_with(":accesspoint/b-ap"),
        "{}",
        e.configuration.supporting_access_point_arn
    );
}

#[test]
fn bodies_land_in_the_message_the_record_data_or_the_detail() {
    let sqs: SqsEvent = read!("sqs", &generate(&["sqs", "--body", "hi"]));
    assert_eq!(sqs.records[0].body.as_deref(), Some("hi"));
    // MD5("hi"), as SQS computes it.
    assert_eq!(
        sqs.records[0].md5_of_body.as_deref(),
        Some("49f68a5c8493ec2c0bf489821c21fc3b")
    );

    let sns: SnsEvent = read!("sns", &generate(&["sns", "--body", "hi"]));
    assert_eq!(sns.records[0].sns.message, "hi");

    let raw = generate(&["kinesis", "--body", "hi"]);
    assert_eq!(
        raw["Records"][0]["kinesis"]["data"], "aGk=",
        "base64, as Kinesis sends it"
    );
    let kinesis: KinesisEvent = read!("kinesis", &raw);
    assert_eq!(kinesis.records[0].kinesis.data.as_slice(), b"hi");

    let bus: EventBridgeEvent<Value> = read!(
        "eventbridge",
        &generate(&["eventbridge", "--body", r#"{"order":42}"#])
    );
    assert_eq!(bus.detail, json!({"order": 42}));
}

#[test]
fn an_unknown_name_is_refused_with_the_known_names() {
    let stderr = refused(&["sqs2"]);
    assert!(stderr.contains("sqs2"), "{stderr}");
    for name in NAMES {
        assert!(stderr.contains(name), "{name} listed: {stderr}");
    }
}

#[test]
fn an_option_an_event_does_not_take_is_refused_naming_both() {
    for (args, flag, name) in [
        (&["sqs", "--bucket", "b"][..], "--bucket", "sqs"),
        (&["s3", "--body", "x"][..], "--body", "s3"),
        (&["schedule", "--body", "{}"][..], "--body", "schedule"),
        (&["dynamodb", "--key", "k"][..], "--key", "dynamodb"),
        (&["apigw-v2", "--key", "k"][..], "--key", "apigw-v2"),
        (&["kinesis", "--path", "/x"][..], "--path", "kinesis"),
        (
            &["s3-object-lambda", "--method", "GET"][..],
            "--method",
            "s3-object-lambda",
        ),
    ] {
        let stderr = refused(args);
        assert!(
            stderr.contains(&format!("{flag} does not apply to {name} events")),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn values_no_service_would_send_are_refused() {
    for (args, flag) in [
        (&["apigw-v2", "--method", "FETCH"][..], "--method"),
        (&["alb", "--path", "no-slash"][..], "--path"),
        (&["apigw-v1", "--path", "/a b"][..], "--path"),
        (&["eventbridge", "--body", "not json"][..], "--body"),
        (&["eventbridge", "--body", "[1]"][..], "--body"),
        (&["s3", "--bucket", "Bad_Bucket"][..], "--bucket"),
        (&["s3", "--key", ""][..], "--key"),
        (&["sqs", "--region", "US East"][..], "--region"),
    ] {
        let stderr = refused(args);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn invoke_with_an_event_template_hands_the_sample_to_the_function() {
    // The probe answers with what it was given, the event included.
    let function = crate::support::function_with(&program("probe"));
    let out = Command::new(lamina())
        .args(["invoke", function.path().to_str().unwrap()])
        .args(["--sandbox", "process", "--event-template", "sqs"])
        .env("LAMINA_CACHE_DIR", crate::support::test_cache())
        .output()
        .expect("run lamina");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_typed("sqs", &report["event"], "us-east-1");
    assert_eq!(report["event"]["Records"][0]["body"], "Hello from SQS!");

    let out = Command::new(lamina())
        .args(["invoke", function.path().to_str().unwrap()])
        .args(["--sandbox", "process", "--event-template", "nope"])
        .output()
        .expect("run lamina");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--event-template nope") && stderr.contains("s3-object-lambda"),
        "{stderr}"
    );
}
