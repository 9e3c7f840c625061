//! The HTTP events: API Gateway's HTTP API (payload 2.0) and REST API (payload 1.0) proxy
//! requests, and an Application Load Balancer's request to a Lambda target group. All three
//! describe one request from `curl` at a documentation address (203.0.113.7), taking `--path`
//! (with an optional `?query`), `--method` and `--body`.

use std::collections::HashMap;

use aws_lambda_events::alb::{AlbTargetGroupRequest, AlbTargetGroupRequestContext, ElbContext};
use aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyRequestContext, ApiGatewayRequestIdentity,
    ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext,
    ApiGatewayV2httpRequestContextHttpDescription,
};
use aws_lambda_events::http::{HeaderMap, HeaderName, HeaderValue, Method};
use aws_lambda_events::query_map::QueryMap;
use base64::Engine;
use serde_json::Value;

use super::{
    ACCOUNT, Built, DIGITS, LOWER_ALNUM, Options, Sample, SampleEventError, header_case, invalid,
    random_bytes, random_hex, random_of, remove, set, uuid,
};

const SOURCE_IP: &str = "203.0.113.7";
const USER_AGENT: &str = "curl/8.5.0";
/// The methods API Gateway routes and a load balancer forwards to a function.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The request the options describe.
struct Request {
    method: Method,
    /// The path without its query.
    path: String,
    /// The query as written, without `?`; empty when there is none.
    query: String,
    body: Option<String>,
}

impl Request {
    fn from(options: &Options) -> Result<Request, SampleEventError> {
        let full = options.path.as_deref().unwrap_or("/");
        if !full.starts_with('/') || full.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "--path",
                full,
                "a path starting with / and an optional ?query, without spaces (percent-encode \
                 them)",
            ));
        }
        let (path, query) = full.split_once('?').unwrap_or((full, ""));
        let method = match &options.method {
            Some(given) => {
                let upper = given.to_ascii_uppercase();
                let expected = "one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
                if !METHODS.contains(&upper.as_str()) {
                    return Err(invalid("--method", given, expected));
                }
                Method::from_bytes(upper.as_bytes())
                    .map_err(|_| invalid("--method", given, expected))?
            }
            // A request with a body and no method named is most likely a POST.
            None if options.body.is_some() => Method::POST,
            None => Method::GET,
        };
        Ok(Request {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            body: options.body.clone(),
        })
    }

    /// The headers `curl` sends and the proxy in front adds, spelled as the client sends them.
    fn headers(&self, sample: &Sample<'_>, host: &str, proto: &str) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("Accept", "*/*".to_owned()),
            ("Host", host.to_owned()),
            ("User-Agent", USER_AGENT.to_owned()),
            ("X-Amzn-Trace-Id", sample.trace_id()),
            ("X-Forwarded-For", SOURCE_IP.to_owned()),
            (
                "X-Forwarded-Port",
                if proto == "https" { "443" } else { "80" }.to_owned(),
            ),
            ("X-Forwarded-Proto", proto.to_owned()),
        ];
        if let Some(body) = &self.body {
            let json = serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok();
            headers.push(("Content-Length", body.len().to_string()));
            headers.push((
                "Content-Type",
                if json {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                }
                .to_owned(),
            ));
        }
        headers
    }

    /// The query's parameters, decoded, as API Gateway gives them.
    fn decoded_query(&self) -> QueryMap {
        match self.query.parse() {
            Ok(map) => map,
            Err(never) => match never {},
        }
    }
}

/// A `HeaderMap` of `pairs`. Every name and value here is lamina's own ASCII text (the body
/// never goes into a header, only its length), so none is refused; one that were would be
/// left out rather than fail the sample.
fn header_map(pairs: &[(&'static str, String)]) -> HeaderMap {
    pairs
        .iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect()
}

/// An API id: ten lower-case letters and digits.
fn api_id() -> String {
    random_of(LOWER_ALNUM, 10)
}

/// API Gateway's short request ids (`LV7fzho-PHcEJPw=`): URL-safe base64 of 11 bytes.
fn short_request_id() -> String {
    base64::engine::general_purpose::URL_SAFE.encode(random_bytes(11))
}

/// `lamina event generate apigw-v2`: an HTTP API request, payload format 2.0, on the
/// `$default` route and stage.
pub(super) fn apigw_v2(sample: &Sample<'_>, options: &Options) -> Built {
    let request = Request::from(options)?;
    let api = api_id();
    let domain = format!("{api}.execute-api.{}.amazonaws.com", sample.region);

    let mut http = ApiGatewayV2httpRequestContextHttpDescription::default();
    http.method = request.method.clone();
    http.path = Some(request.path.clone());
    http.protocol = Some("HTTP/1.1".into());
    http.source_ip = Some(SOURCE_IP.into());
    http.user_agent = Some(USER_AGENT.into());

    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some("$default".into());
    context.account_id = Some(ACCOUNT.into());
    context.stage = Some("$default".into());
    context.request_id = Some(short_request_id());
    context.apiid = Some(api.clone());
    context.domain_name = Some(domain.clone());
    context.domain_prefix = Some(api);
    context.time = Some(sample.clf());
    context.time_epoch = i64::try_from(sample.now_ms).unwrap_or(i64::MAX);
    context.http = http;

    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".into());
    event.route_key = Some("$default".into());
    event.raw_path = Some(request.path.clone());
    event.raw_query_string = Some(request.query.clone());
    event.headers = header_map(&request.headers(sample, &domain, "https"));
    event.query_string_parameters = request.decoded_query();
    event.request_context = context;
    event.is_base64_encoded = false;
    event.body = request.body;

    let mut json = serde_json::to_value(event)?;
    // The type also models custom authorizer (v1) payloads and always writes their fields
    // (`type`, `methodArn`, a top-level `httpMethod` that is always GET, …), which a 2.0
    // request never has; and an HTTP API sends `stageVariables` only when the stage has some.
    remove(&mut json, "", &crate::serve::apigw::AUTHORIZER_ONLY_FIELDS);
    remove(&mut json, "", &["stageVariables"]);
    Ok(json)
}

/// `lamina event generate apigw-v1`: a REST API proxy request (payload format 1.0) on a
/// `/{proxy+}` resource (or `/` for the root) of stage `prod`, through a regional endpoint.
pub(super) fn apigw_v1(sample: &Sample<'_>, options: &Options) -> Built {
    let request = Request::from(options)?;
    let api = api_id();
    let domain = format!("{api}.execute-api.{}.amazonaws.com", sample.region);
    let stage = "prod";
    let root = request.path == "/";
    let resource = if root { "/" } else { "/{proxy+}" };

    let mut identity = ApiGatewayRequestIdentity::default();
    identity.source_ip = Some(SOURCE_IP.into());
    identity.user_agent = Some(USER_AGENT.into());

    let mut context = ApiGatewayProxyRequestContext::default();
    context.account_id = Some(ACCOUNT.into());
    context.resource_id = Some(random_of(LOWER_ALNUM, 6));
    context.stage = Some(stage.into());
    context.domain_name = Some(domain.clone());
    context.domain_prefix = Some(api.clone());
    context.request_id = Some(uuid());
    context.protocol = Some("HTTP/1.1".into());
    context.identity = identity;
    context.resource_path = Some(resource.into());
    context.path = Some(format!("/{stage}{}", request.path));
    context.http_method = request.method.clone();
    context.request_time = Some(sample.clf());
    context.request_time_epoch = i64::try_from(sample.now_ms).unwrap_or(i64::MAX);
    context.apiid = Some(api);

    let header_pairs = request.headers(sample, &domain, "https");
    let headers = header_map(&header_pairs);
    let mut event = ApiGatewayProxyRequest::default();
    event.resource = Some(resource.into());
    event.path = Some(request.path.clone());
    event.http_method = request.method.clone();
    event.headers = headers.clone();
    event.multi_value_headers = headers;
    event.query_string_parameters = request.decoded_query();
    event.multi_value_query_string_parameters = request.decoded_query();
    if !root {
        event.path_parameters = HashMap::from([(
            "proxy".to_owned(),
            request.path.trim_start_matches('/').to_owned(),
        )]);
    }
    event.request_context = context;
    event.is_base64_encoded = false;
    event.body = request.body;

    let mut json = serde_json::to_value(event)?;
    let names: Vec<&str> = header_pairs.iter().map(|(name, _)| *name).collect();
    header_case(&mut json, "/headers", &names);
    header_case(&mut json, "/multiValueHeaders", &names);
    // A REST API writes an absent map as null, where the type writes {}; and its single-value
    // query parameters keep the last of repeated values, where the type keeps the first.
    if request.query.is_empty() {
        set(&mut json, "", "queryStringParameters", Value::Null);
        set(
            &mut json,
            "",
            "multiValueQueryStringParameters",
            Value::Null,
        );
    } else if let Some(Value::Object(multi)) = json.get("multiValueQueryStringParameters") {
        let last: serde_json::Map<String, Value> = multi
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_array()?.last()?.clone())))
            .collect();
        set(&mut json, "", "queryStringParameters", Value::Object(last));
    }
    if root {
        set(&mut json, "", "pathParameters", Value::Null);
    }
    set(&mut json, "", "stageVariables", Value::Null);
    // The type has no field for the extended request id every REST API request carries.
    set(
        &mut json,
        "/requestContext",
        "extendedRequestId",
        Value::String(short_request_id()),
    );
    Ok(json)
}

/// `lamina event generate alb`: a request through an HTTPS listener to a Lambda target group
/// without multi-value headers.
pub(super) fn alb(sample: &Sample<'_>, options: &Options) -> Built {
    let request = Request::from(options)?;
    let host = format!(
        "lambda-alb-{}.{}.elb.amazonaws.com",
        random_of(DIGITS, 10),
        sample.region
    );

    let mut elb = ElbContext::default();
    elb.target_group_arn = Some(format!(
        "arn:aws:elasticloadbalancing:{}:{ACCOUNT}:targetgroup/lambda-target/{}",
        sample.region,
        random_hex(16)
    ));
    let mut context = AlbTargetGroupRequestContext::default();
    context.elb = elb;

    // A load balancer passes query parameters on as the client encoded them, undecoded.
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for pair in request.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        query.entry(k.to_owned()).or_default().push(v.to_owned());
    }

    let mut event = AlbTargetGroupRequest::default();
    event.http_method = request.method.clone();
    event.path = Some(request.path.clone());
    event.query_string_parameters = QueryMap::from(query);
    event.headers = header_map(&request.headers(sample, &host, "https"));
    event.request_context = context;
    event.is_base64_encoded = false;
    // A load balancer sends an empty body as "", not null.
    event.body = Some(request.body.unwrap_or_default());

    let mut json = serde_json::to_value(event)?;
    // A target group sends either single-value or multi-value fields (its
    // `lambda.multi_value_headers.enabled` attribute), never both as the type writes them.
    remove(
        &mut json,
        "",
        &["multiValueHeaders", "multiValueQueryStringParameters"],
    );
    Ok(json)
}
