//! API Gateway's proxy integration: an HTTP request becomes a payload 2.0 (HTTP API, function
//! URL) or 1.0 (REST API) event, built with the `aws_lambda_events` types functions
//! deserialize; the function's answer becomes the HTTP response, or a 502 when it is not a
//! valid proxy response. No I/O: the front calls these around an invocation.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyRequestContext, ApiGatewayProxyResponse,
    ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext, ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::query_map::QueryMap;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::routes::{Matched, decode};
use crate::config::ACCOUNT_ID;
use crate::config::file::PayloadVersion;

/// The API id lamina's events carry (API Gateway's are ten random characters).
pub const API_ID: &str = "lamina";
/// The stage every route is served on.
pub const STAGE: &str = "$default";

/// Fields `ApiGatewayV2httpRequest` always writes because the type also models custom
/// authorizer payloads, which no 2.0 request event has.
pub const AUTHORIZER_ONLY_FIELDS: [&str; 6] = [
    "type",
    "methodArn",
    "httpMethod",
    "identitySource",
    "authorizationToken",
    "resource",
];

/// What the front knows of one HTTP request.
#[derive(Debug)]
pub struct HttpRequest<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path as sent, still percent-encoded.
    pub raw_path: &'a str,
    /// The query string as sent, without `?`.
    pub raw_query: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The body.
    pub body: &'a Bytes,
    /// The client's address.
    pub source_ip: String,
    /// The request id API Gateway would make (a UUID).
    pub request_id: &'a str,
    /// When the request arrived.
    pub time: SystemTime,
}

/// The event for `request` on the matched route, as JSON.
pub fn event(request: &HttpRequest<'_>, matched: &Matched<'_>) -> Vec<u8> {
    let value = match matched.route.payload {
        PayloadVersion::V2 => object(
            event_v2(request, matched),
            |e| e.body.take(),
            |o| {
                // The type also serves custom authorizer payloads; API Gateway's 2.0 events have
                // none of these fields, and omit empty maps.
                for key in AUTHORIZER_ONLY_FIELDS {
                    o.remove(key);
                }
                for key in ["stageVariables", "pathParameters", "queryStringParameters"] {
                    if o.get(key)
                        .is_some_and(|m| m.as_object().is_some_and(|m| m.is_empty()))
                    {
                        o.remove(key);
                    }
                }
            },
        ),
        PayloadVersion::V1 => object(
            event_v1(request, matched),
            |e| e.body.take(),
            |o| {
                // REST APIs send null, not an empty map, for what the request does not have.
                for (_, m) in o.iter_mut() {
                    if m.as_object().is_some_and(|m| m.is_empty()) {
                        *m = serde_json::Value::Null;
                    }
                }
            },
        ),
    };
    // The types hold only strings, maps and numbers made from valid UTF-8 above.
    value
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_else(|_| b"{}".to_vec())
}

/// `event` as a JSON object, with `fix` applied. The body (up to 10 MB, base64 or text) is
/// taken out first and moved into the object after, not copied by `to_value`.
fn object<E: serde::Serialize>(
    mut event: E,
    take_body: fn(&mut E) -> Option<String>,
    fix: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> serde_json::Result<serde_json::Value> {
    let body = take_body(&mut event);
    let mut value = serde_json::to_value(event)?;
    if let Some(o) = value.as_object_mut() {
        fix(o);
        if let Some(body) = body {
            o.insert("body".to_owned(), serde_json::Value::String(body));
        }
    }
    Ok(value)
}

fn event_v2(request: &HttpRequest<'_>, matched: &Matched<'_>) -> ApiGatewayV2httpRequest {
    let (time, epoch_ms) = times(request.time);
    let mut headers = HeaderMap::new();
    let mut cookies = Vec::new();
    for name in request.headers.keys() {
        let values = request
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok());
        if name == http::header::COOKIE {
            // 2.0 moves cookies out of the headers into `cookies`.
            cookies.extend(
                values
                    .flat_map(|v| v.split(';'))
                    .map(|c| c.trim().to_owned()),
            );
            continue;
        }
        // Duplicate headers are joined with commas.
        let joined = values.collect::<Vec<_>>().join(",");
        if let Ok(v) = HeaderValue::from_str(&joined) {
            headers.insert(name.clone(), v);
        }
    }
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some(matched.route.key.clone());
    context.account_id = Some(ACCOUNT_ID.to_owned());
    context.stage = Some(STAGE.to_owned());
    context.request_id = Some(request.request_id.to_owned());
    context.apiid = Some(API_ID.to_owned());
    let (domain_name, domain_prefix) = domain(request.headers);
    context.domain_name = Some(domain_name);
    context.domain_prefix = Some(domain_prefix);
    context.time = Some(time);
    context.time_epoch = epoch_ms;
    context.http.method = request.method.parse().unwrap_or_default();
    context.http.path = Some(request.raw_path.to_owned());
    context.http.protocol = Some("HTTP/1.1".to_owned());
    context.http.source_ip = Some(request.source_ip.clone());
    context.http.user_agent = Some(header(request.headers, "user-agent"));
    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".to_owned());
    event.route_key = Some(matched.route.key.clone());
    event.raw_path = Some(request.raw_path.to_owned());
    event.raw_query_string = Some(request.raw_query.to_owned());
    event.cookies = (!cookies.is_empty()).then_some(cookies);
    event.headers = headers;
    event.query_string_parameters = QueryMap::from(query(request.raw_query));
    event.path_parameters = matched.params.iter().cloned().collect();
    event.request_context = context;
    (event.body, event.is_base64_encoded) = body(request);
    event
}

fn event_v1(request: &HttpRequest<'_>, matched: &Matched<'_>) -> ApiGatewayProxyRequest {
    let (time, epoch_ms) = times(request.time);
    let mut single = HeaderMap::new();
    for (name, value) in request.headers {
        // The single-value map holds the last value of each header.
        single.insert(name.clone(), value.clone());
    }
    let multi_query = query(request.raw_query);
    let single_query: HashMap<String, Vec<String>> = multi_query
        .iter()
        .map(|(k, v)| (k.clone(), v.last().cloned().into_iter().collect()))
        .collect();
    let path = decode(request.raw_path);
    let mut context = ApiGatewayProxyRequestContext::default();
    context.account_id = Some(ACCOUNT_ID.to_owned());
    context.resource_id = Some(API_ID.to_owned());
    context.stage = Some(STAGE.to_owned());
    let (domain_name, domain_prefix) = domain(request.headers);
    context.domain_name = Some(domain_name);
    context.domain_prefix = Some(domain_prefix);
    context.request_id = Some(request.request_id.to_owned());
    context.protocol = Some("HTTP/1.1".to_owned());
    context.identity.source_ip = Some(request.source_ip.clone());
    context.identity.user_agent = Some(header(request.headers, "user-agent"));
    context.resource_path = Some(matched.route.path.clone());
    context.path = Some(path.clone());
    context.http_method = request.method.parse().unwrap_or_default();
    context.request_time = Some(time);
    context.request_time_epoch = epoch_ms;
    context.apiid = Some(API_ID.to_owned());
    let mut event = ApiGatewayProxyRequest::default();
    event.resource = Some(matched.route.path.clone());
    event.path = Some(path);
    event.http_method = request.method.parse().unwrap_or_default();
    event.headers = single;
    event.multi_value_headers = request.headers.clone();
    event.query_string_parameters = QueryMap::from(single_query);
    event.multi_value_query_string_parameters = QueryMap::from(multi_query);
    event.path_parameters = matched.params.iter().cloned().collect();
    event.request_context = context;
    (event.body, event.is_base64_encoded) = body(request);
    event
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `Host` as the domain name, and its first label as the prefix.
fn domain(headers: &HeaderMap) -> (String, String) {
    let host = header(headers, "host");
    let name = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
    let name = if name.is_empty() { "localhost" } else { name };
    let prefix = name.split('.').next().unwrap_or(name);
    (name.to_owned(), prefix.to_owned())
}

/// `12/Mar/2020:19:03:58 +0000` and epoch milliseconds.
fn times(at: SystemTime) -> (String, i64) {
    // httpdate's `Thu, 12 Mar 2020 19:03:58 GMT`, rearranged.
    let http = httpdate::fmt_http_date(at);
    let parts: Vec<&str> = http.split_whitespace().collect();
    let formatted = match parts.as_slice() {
        [_, day, month, year, time, _] => format!("{day}/{month}/{year}:{time} +0000"),
        _ => http.clone(),
    };
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    (formatted, ms)
}

/// The query string's parameters, decoded, every value of each.
fn query(raw: &str) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| decode(&s.replace('+', " "));
        map.entry(dec(k)).or_default().push(dec(v));
    }
    map
}

/// The body as the event carries it: text as it is, anything else base64.
fn body(request: &HttpRequest<'_>) -> (Option<String>, bool) {
    if request.body.is_empty() {
        return (None, false);
    }
    let content_type = header(request.headers, "content-type");
    let encoded = request.headers.contains_key(http::header::CONTENT_ENCODING);
    if !encoded
        && (content_type.is_empty() || is_text(&content_type))
        && let Ok(text) = std::str::from_utf8(request.body)
    {
        return (Some(text.to_owned()), false);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(request.body);
    (Some(b64), true)
}

/// Content types whose bodies travel as text, as in lambda_http.
fn is_text(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || [
            "application/json",
            "application/javascript",
            "application/xml",
            "application/yaml",
            "application/x-www-form-urlencoded",
        ]
        .contains(&mime.as_str())
        || [&"+json", &"+xml", &"+yaml"]
            .iter()
            .any(|s| mime.ends_with(*s))
}

/// An HTTP response as the front sends it.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status.
    pub status: StatusCode,
    /// Headers, repeated names allowed.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Bytes,
}

/// Maps the function's answer back to HTTP, or says why it is not a valid proxy response
/// (API Gateway then answers 502).
pub fn response(version: PayloadVersion, payload: &[u8]) -> Result<HttpResponse, String> {
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| format!("the function's response is not JSON: {e}"))?;
    match version {
        PayloadVersion::V2 => response_v2(value, payload),
        PayloadVersion::V1 => response_v1(value),
    }
}

fn response_v2(value: serde_json::Value, payload: &[u8]) -> Result<HttpResponse, String> {
    let has_status = value.get("statusCode").is_some();
    if !has_status {
        // The 2.0 shorthand: any JSON without statusCode is a 200 JSON body; a string is the
        // body itself.
        let body = match &value {
            serde_json::Value::String(s) => Bytes::from(s.clone()),
            _ => Bytes::copy_from_slice(payload.trim_ascii()),
        };
        return Ok(HttpResponse {
            status: StatusCode::OK,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        });
    }
    let mut value = value;
    if let Some(o) = value.as_object_mut() {
        // The type requires the list; a function may well have no cookies to set.
        o.entry("cookies").or_insert_with(|| serde_json::json!([]));
    }
    let r: ApiGatewayV2httpResponse =
        serde_json::from_value(value).map_err(|e| format!("malformed 2.0 response: {e}"))?;
    let mut headers = merged(&r.headers, &r.multi_value_headers);
    for cookie in &r.cookies {
        let v = HeaderValue::from_str(cookie)
            .map_err(|_| format!("cookie {cookie:?} is not a valid Set-Cookie value"))?;
        headers.push((http::header::SET_COOKIE, v));
    }
    finish(r.status_code, headers, r.body, r.is_base64_encoded)
}

fn response_v1(value: serde_json::Value) -> Result<HttpResponse, String> {
    let Some(object) = value.as_object() else {
        return Err("a 1.0 response must be a JSON object with statusCode".into());
    };
    const KEYS: &[&str] = &[
        "statusCode",
        "body",
        "headers",
        "multiValueHeaders",
        "isBase64Encoded",
    ];
    if let Some(key) = object.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("unexpected key {key:?} in a 1.0 response"));
    }
    if !object.contains_key("statusCode") {
        return Err("a 1.0 response must have statusCode".into());
    }
    let r: ApiGatewayProxyResponse =
        serde_json::from_value(value).map_err(|e| format!("malformed 1.0 response: {e}"))?;
    let headers = merged(&r.headers, &r.multi_value_headers);
    finish(r.status_code, headers, r.body, r.is_base64_encoded)
}

/// Single- and multi-value headers together; for a name in both, the multi-value ones win.
fn merged(single: &HeaderMap, multi: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out: Vec<(HeaderName, HeaderValue)> = single
        .iter()
        .filter(|(name, _)| !multi.contains_key(*name))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    out.extend(multi.iter().map(|(n, v)| (n.clone(), v.clone())));
    out
}

fn finish(
    status: i64,
    mut headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Body>,
    base64: bool,
) -> Result<HttpResponse, String> {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| (100..=599).contains(&s.as_u16()))
        .ok_or_else(|| format!("statusCode {status} is not an HTTP status"))?;
    let body = match body {
        None | Some(Body::Empty) => Bytes::new(),
        Some(Body::Text(text)) if base64 => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| format!("isBase64Encoded, but the body is not base64: {e}"))?,
        ),
        Some(Body::Text(text)) => Bytes::from(text),
        Some(Body::Binary(bytes)) => Bytes::from(bytes),
        Some(_) => Bytes::new(),
    };
    if !headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE) {
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
    }
    // The front sets the length of the body it actually sends.
    headers
        .retain(|(n, _)| n != http::header::CONTENT_LENGTH && n != http::header::TRANSFER_ENCODING);
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// API Gateway's own error answers.
pub fn gateway_error(status: StatusCode, version: PayloadVersion) -> HttpResponse {
    let message = match (status.as_u16(), version) {
        (404, _) => "Not Found",
        // REST APIs and HTTP APIs word this one differently.
        (502, PayloadVersion::V1) => "Internal server error",
        (502, PayloadVersion::V2) => "Internal Server Error",
        (504, _) => "Endpoint request timed out",
        (413, _) => "Request Entity Too Large",
        (429, _) => "Too Many Requests",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    HttpResponse {
        status,
        headers: vec![(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body: Bytes::from(serde_json::json!({ "message": message }).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::RouteConfig;
    use crate::serve::routes::RouteTable;

    fn request<'a>(headers: &'a HeaderMap, body: &'a Bytes) -> HttpRequest<'a> {
        HttpRequest {
            method: "POST",
            raw_path: "/hello/J%C3%BCrgen",
            raw_query: "a=1&a=2&b=x+y",
            headers,
            body,
            source_ip: "127.0.0.1".into(),
            request_id: "req-1",
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_583_348_117_123),
        }
    }

    fn table(payload: PayloadVersion) -> RouteTable {
        RouteTable::new(&[RouteConfig {
            method: "ANY".into(),
            path: "/hello/{name}".into(),
            function: "f".into(),
            payload,
        }])
    }

    #[test]
    fn a_2_0_event_has_what_api_gateway_sends() {
        let mut headers = HeaderMap::new();
        headers.append("host", HeaderValue::from_static("api.example.com:9000"));
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        headers.append("cookie", HeaderValue::from_static("a=1; b=2"));
        headers.append("content-type", HeaderValue::from_static("image/png"));
        let body = Bytes::from_static(&[0, 159, 146, 150]);
        let t = table(PayloadVersion::V2);
        let req = request(&headers, &body);
        let m = t.find("POST", req.raw_path).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&event(&req, &m)).unwrap();
        assert_eq!(v["version"], "2.0");
        assert_eq!(v["routeKey"], "ANY /hello/{name}");
        assert_eq!(v["rawPath"], "/hello/J%C3%BCrgen");
        assert_eq!(v["rawQueryString"], "a=1&a=2&b=x+y");
        assert_eq!(v["cookies"], serde_json::json!(["a=1", "b=2"]));
        assert_eq!(v["headers"]["x-many"], "1,2");
        assert!(v["headers"].get("cookie").is_none());
        assert_eq!(v["queryStringParameters"]["a"], "1,2");
        assert_eq!(v["queryStringParameters"]["b"], "x y");
        assert_eq!(v["pathParameters"]["name"], "Jürgen");
        assert_eq!(v["isBase64Encoded"], true);
        assert_eq!(v["body"], "AJ+Slg==");
        let c = &v["requestContext"];
        assert_eq!(c["requestId"], "req-1");
        assert_eq!(c["stage"], "$default");
        assert_eq!(c["domainName"], "api.example.com");
        assert_eq!(c["domainPrefix"], "api");
        assert_eq!(c["http"]["method"], "POST");
        assert_eq!(c["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(c["time"], "04/Mar/2020:18:55:17 +0000");
        assert_eq!(c["timeEpoch"], 1_583_348_117_123_i64);
    }

    #[test]
    fn a_1_0_event_has_single_and_multi_value_maps() {
        let mut headers = HeaderMap::new();
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        headers.append("content-type", HeaderValue::from_static("application/json"));
        let body = Bytes::from_static(b"{\"a\":1}");
        let t = table(PayloadVersion::V1);
        let req = request(&headers, &body);
        let m = t.find("POST", req.raw_path).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&event(&req, &m)).unwrap();
        assert_eq!(v["resource"], "/hello/{name}");
        assert_eq!(v["path"], "/hello/Jürgen");
        assert_eq!(v["httpMethod"], "POST");
        assert_eq!(v["headers"]["x-many"], "2");
        assert_eq!(
            v["multiValueHeaders"]["x-many"],
            serde_json::json!(["1", "2"])
        );
        assert_eq!(v["queryStringParameters"]["a"], "2");
        assert_eq!(
            v["multiValueQueryStringParameters"]["a"],
            serde_json::json!(["1", "2"])
        );
        assert_eq!(v["body"], "{\"a\":1}");
        assert_eq!(v["isBase64Encoded"], false);
        assert_eq!(v["requestContext"]["resourcePath"], "/hello/{name}");
        assert_eq!(v["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
    }

    #[test]
    fn responses_map_back() {
        let r = response(PayloadVersion::V2, br#"{"hello":"world"}"#).unwrap();
        assert_eq!(
            (r.status, &r.body[..]),
            (StatusCode::OK, &br#"{"hello":"world"}"#[..])
        );
        let r = response(PayloadVersion::V2, br#"{"statusCode":204}"#).unwrap();
        assert_eq!((r.status, r.body.len()), (StatusCode::NO_CONTENT, 0));
        let r = response(PayloadVersion::V2, br#""Hello""#).unwrap();
        assert_eq!(&r.body[..], b"Hello");
        let r = response(
            PayloadVersion::V2,
            br#"{"statusCode":201,"headers":{"x-a":"1"},"cookies":["s=1","t=2"],"body":"AAE=","isBase64Encoded":true}"#,
        )
        .unwrap();
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(&r.body[..], &[0, 1]);
        let cookies: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n == http::header::SET_COOKIE)
            .collect();
        assert_eq!(cookies.len(), 2);
        let r = response(
            PayloadVersion::V1,
            br#"{"statusCode":200,"headers":{"x-a":"single","x-b":"b"},"multiValueHeaders":{"x-a":["m1","m2"]},"body":"ok"}"#,
        )
        .unwrap();
        let xa: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "x-a")
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(xa, ["m1", "m2"]);
        assert!(r.headers.iter().any(|(n, v)| n == "x-b" && v == "b"));
    }

    #[test]
    fn malformed_responses_are_refused() {
        assert!(response(PayloadVersion::V2, b"not json").is_err());
        assert!(response(PayloadVersion::V1, br#"{"body":"x"}"#).is_err());
        assert!(response(PayloadVersion::V1, br#"{"statusCode":200,"extra":1}"#).is_err());
        assert!(response(PayloadVersion::V1, br#""text""#).is_err());
        assert!(response(PayloadVersion::V2, br#"{"statusCode":99999}"#).is_err());
        assert!(
            response(
                PayloadVersion::V2,
                br#"{"statusCode":200,"body":"!!","isBase64Encoded":true}"#
            )
            .is_err()
        );
    }
}
