//! Subscription requests: AWS's example accepted, defaults, both destination shapes, the Logs
//! API's own schema and error type, and every validation error.

use super::*;

fn ok(api: Api, body: &str) -> Subscription {
    parse(api, body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
}

fn refused(api: Api, body: &str) -> ApiError {
    parse(api, body.as_bytes())
        .map(|s| panic!("{body} accepted: {s:?}"))
        .unwrap_err()
        .into_api_error()
}

#[test]
fn awss_example_request_is_accepted_with_its_values() {
    let s = ok(
        Api::Telemetry,
        r#"{"schemaVersion":"2022-12-13","types":["platform","function","extension"],
            "buffering":{"maxItems":1000,"maxBytes":262144,"timeoutMs":100},
            "destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:8080"}}"#,
    );
    assert_eq!(s.schema_version, "2022-12-13");
    assert_eq!(s.types.names(), ["platform", "function", "extension"]);
    assert_eq!(
        s.buffering,
        Buffering {
            max_items: 1000,
            max_bytes: 262_144,
            timeout: Duration::from_millis(100)
        }
    );
    assert_eq!(
        s.destination,
        Destination::Http {
            port: 8080,
            host: "sandbox.localdomain:8080".into(),
            path: "/".into()
        }
    );
}

#[test]
fn defaults_paths_and_the_short_host() {
    let s = ok(
        Api::Telemetry,
        r#"{"schemaVersion":"2025-01-29","types":["function"],
            "destination":{"protocol":"HTTP","URI":"http://sandbox:4243/lambda/logs?x=1"}}"#,
    );
    assert_eq!(s.buffering, Buffering::defaults(Api::Telemetry));
    // AWS's Telemetry API page: `maxItems` 1,000 by default (the emulator says 10,000).
    assert_eq!(s.buffering.max_items, 1_000);
    assert_eq!(s.buffering.max_bytes, 262_144);
    assert_eq!(s.buffering.timeout, Duration::from_millis(1000));
    assert_eq!(
        s.destination,
        Destination::Http {
            port: 4243,
            host: "sandbox:4243".into(),
            path: "/lambda/logs?x=1".into()
        }
    );
}

#[test]
fn the_default_max_items_depends_on_the_api() {
    let body = r#"{"schemaVersion":"2021-03-18","types":["platform"],"buffering":{"timeoutMs":100},
        "destination":{"protocol":"HTTP","URI":"http://sandbox:4243"}}"#;
    let logs = ok(Api::Logs, body);
    assert_eq!(logs.buffering.max_items, 10_000);
    assert_eq!(logs.buffering.timeout, Duration::from_millis(100));
    let telemetry = ok(Api::Telemetry, &body.replace("2021-03-18", "2022-12-13"));
    assert_eq!(telemetry.buffering.max_items, 1_000);
    // A value in range is taken as given, through either API.
    let given = ok(
        Api::Telemetry,
        &body
            .replace("2021-03-18", "2022-12-13")
            .replace(r#""timeoutMs":100"#, r#""maxItems":10000"#),
    );
    assert_eq!(given.buffering.max_items, 10_000);
}

#[test]
fn tcp_takes_a_port_or_a_uri() {
    let tcp = |d: &str| {
        ok(
            Api::Telemetry,
            &format!(r#"{{"schemaVersion":"2022-07-01","types":["platform"],"destination":{d}}}"#),
        )
        .destination
    };
    assert_eq!(
        tcp(r#"{"protocol":"TCP","port":4244}"#),
        Destination::Tcp { port: 4244 }
    );
    assert_eq!(
        tcp(r#"{"protocol":"TCP","URI":"tcp://sandbox.localdomain:4245"}"#),
        Destination::Tcp { port: 4245 }
    );
    assert_eq!(
        tcp(r#"{"protocol":"TCP","URI":"sandbox.localdomain:4246"}"#),
        Destination::Tcp { port: 4246 }
    );
}

#[test]
fn the_logs_api_defaults_its_schema_and_has_its_own_error_type() {
    let s = ok(
        Api::Logs,
        r#"{"types":["platform"],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1234/logs"}}"#,
    );
    assert_eq!(s.schema_version, "2020-08-15");
    assert!(!s.logs_runtime_done());
    let s = ok(
        Api::Logs,
        r#"{"schemaVersion":"2021-03-18","types":["platform"],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1234"}}"#,
    );
    assert!(s.logs_runtime_done());
    let e = refused(
        Api::Logs,
        r#"{"types":[],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:1234"}}"#,
    );
    assert_eq!(
        (e.status.as_u16(), e.error_type, e.message.as_str()),
        (400, "Logs.ValidationError", "types should not be empty")
    );
}

#[test]
fn lambdas_own_example_error_is_reproduced() {
    let e = refused(
        Api::Telemetry,
        r#"{"schemaVersion":"2022-12-13","types":[],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain"}}"#,
    );
    assert_eq!(e.status, 400);
    assert_eq!(e.error_type, "ValidationError");
    assert_eq!(
        e.message,
        "URI port is not provided; types should not be empty"
    );
}

#[test]
fn every_validation_error() {
    let base = |schema: &str, types: &str, dest: &str, buffering: &str| {
        format!(r#"{{{schema}"types":{types},"destination":{dest}{buffering}}}"#)
    };
    let good_dest = r#"{"protocol":"HTTP","URI":"http://sandbox.localdomain:8080"}"#;
    let v = r#""schemaVersion":"2022-07-01","#;
    let cases: Vec<(String, Problem)> = vec![
        ("not json".into(), Problem::Json(String::new())),
        ("[1]".into(), Problem::NotAnObject),
        (
            base("", r#"["platform"]"#, good_dest, ""),
            Problem::MissingSchemaVersion,
        ),
        (
            base(
                r#""schemaVersion":"2020-08-15","#,
                r#"["platform"]"#,
                good_dest,
                "",
            ),
            Problem::SchemaVersion {
                given: "\"2020-08-15\"".into(),
                supported: "2022-07-01, 2022-12-13, 2025-01-29".into(),
            },
        ),
        (
            format!(r#"{{{v}"destination":{good_dest}}}"#),
            Problem::MissingTypes,
        ),
        (
            base(v, r#""platform""#, good_dest, ""),
            Problem::TypesNotArray,
        ),
        (base(v, "[]", good_dest, ""), Problem::EmptyTypes),
        (
            base(v, r#"["metrics"]"#, good_dest, ""),
            Problem::UnknownType("metrics".into()),
        ),
        (
            base(v, r#"["platform"]"#, good_dest, r#","buffering":5"#),
            Problem::BufferingNotObject,
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                good_dest,
                r#","buffering":{"maxItems":999}"#,
            ),
            Problem::Buffering {
                field: "maxItems",
                min: 1000,
                max: 10000,
            },
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                good_dest,
                r#","buffering":{"maxItems":10001}"#,
            ),
            Problem::Buffering {
                field: "maxItems",
                min: 1000,
                max: 10000,
            },
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                good_dest,
                r#","buffering":{"maxBytes":262143}"#,
            ),
            Problem::Buffering {
                field: "maxBytes",
                min: 262_144,
                max: 1_048_576,
            },
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                good_dest,
                r#","buffering":{"maxBytes":1048577}"#,
            ),
            Problem::Buffering {
                field: "maxBytes",
                min: 262_144,
                max: 1_048_576,
            },
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                good_dest,
                r#","buffering":{"timeoutMs":24}"#,
            ),
            Problem::Buffering {
                field: "timeoutMs",
                min: 25,
                max: 30_000,
            },
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                good_dest,
                r#","buffering":{"timeoutMs":30001}"#,
            ),
            Problem::Buffering {
                field: "timeoutMs",
                min: 25,
                max: 30_000,
            },
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                good_dest,
                r#","buffering":{"timeoutMs":"100"}"#,
            ),
            Problem::Buffering {
                field: "timeoutMs",
                min: 25,
                max: 30_000,
            },
        ),
        (
            format!(r#"{{{v}"types":["platform"]}}"#),
            Problem::MissingDestination,
        ),
        (
            base(v, r#"["platform"]"#, "7", ""),
            Problem::DestinationNotObject,
        ),
        (
            base(v, r#"["platform"]"#, r#"{"protocol":"UDP","port":5}"#, ""),
            Problem::Protocol,
        ),
        (
            base(v, r#"["platform"]"#, r#"{"protocol":"HTTP"}"#, ""),
            Problem::MissingUri,
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                r#"{"protocol":"HTTP","URI":"http://"}"#,
                "",
            ),
            Problem::BadUri("http://".into()),
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                r#"{"protocol":"HTTP","URI":"https://sandbox.localdomain:8080"}"#,
                "",
            ),
            Problem::Scheme("http"),
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                r#"{"protocol":"HTTP","URI":"http://example.com:8080"}"#,
                "",
            ),
            Problem::Host,
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                r#"{"protocol":"HTTP","URI":"http://sandbox.localdomain/x"}"#,
                "",
            ),
            Problem::MissingPort,
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                r#"{"protocol":"HTTP","URI":"http://sandbox.localdomain:9001"}"#,
                "",
            ),
            Problem::ReservedPort,
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                r#"{"protocol":"TCP","port":70000}"#,
                "",
            ),
            Problem::BadPort,
        ),
        (
            base(v, r#"["platform"]"#, r#"{"protocol":"TCP","port":0}"#, ""),
            Problem::BadPort,
        ),
        (
            base(v, r#"["platform"]"#, r#"{"protocol":"TCP"}"#, ""),
            Problem::MissingPort,
        ),
        (
            base(
                v,
                r#"["platform"]"#,
                r#"{"protocol":"TCP","port":9001}"#,
                "",
            ),
            Problem::ReservedPort,
        ),
    ];
    for (body, expected) in cases {
        let e = parse(Api::Telemetry, body.as_bytes()).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{body}: {:?}", e.problems);
        match (&e.problems[0], &expected) {
            // serde's wording is its own.
            (Problem::Json(_), Problem::Json(_)) => {}
            (got, expected) => assert_eq!(got, expected, "{body}"),
        }
        let api = e.into_api_error();
        assert_eq!(
            (api.status.as_u16(), api.error_type),
            (400, "ValidationError")
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = parse(
        Api::Telemetry,
        br#"{"types":["x"],"buffering":{"maxItems":1},"destination":{"protocol":"HTTP","URI":"https://elsewhere"}}"#,
    )
    .unwrap_err();
    assert_eq!(
        e.problems,
        [
            Problem::MissingSchemaVersion,
            Problem::Scheme("http"),
            Problem::Host,
            Problem::MissingPort,
            Problem::UnknownType("x".into()),
            Problem::Buffering {
                field: "maxItems",
                min: 1000,
                max: 10000
            },
        ]
    );
}

#[test]
fn closed_and_conflicting_subscriptions_have_lambda_style_errors() {
    let closed = Api::Telemetry.closed();
    assert_eq!(
        (closed.status.as_u16(), closed.error_type),
        (403, "Telemetry.SubscriptionClosed")
    );
    assert_eq!(Api::Logs.closed().error_type, "Logs.SubscriptionClosed");
    let conflict = Api::Logs.conflict("agent");
    assert_eq!(
        (conflict.status.as_u16(), conflict.error_type),
        (403, "Logs.SubscriptionConflict")
    );
    assert!(
        conflict
            .message
            .contains("agent is subscribed to the Telemetry API")
    );
}
