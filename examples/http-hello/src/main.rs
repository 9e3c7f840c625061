//! http-hello: an HTTP API handler for `GET /hello/{name}` that answers 200 with a greeting
//! for the path's name, and an optional `greeting` query parameter. It takes API Gateway
//! payload 2.0 and 1.0 events (and function URL and ALB ones) through `lamina_sdk::http`.

use lamina_sdk::http::{Body, Error, Request, RequestExt, Response, run, service_fn};
use serde_json::json;

/// The business logic, which knows nothing of Lambda or HTTP.
fn greet(name: &str, greeting: Option<&str>) -> String {
    format!("{}, {name}!", greeting.unwrap_or("Hello"))
}

/// The name: the route's `{name}` parameter, or the path's last segment when the route did
/// not name it (a `{proxy+}` route, a function URL).
fn name_of(request: &Request) -> Option<String> {
    if let Some(name) = request.path_parameters_ref().and_then(|p| p.first("name")) {
        return Some(name.to_owned());
    }
    request
        .uri()
        .path()
        .strip_prefix("/hello/")
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .map(str::to_owned)
}

/// The thin adapter between HTTP and the logic.
async fn hello(request: Request) -> Result<Response, Error> {
    let Some(name) = name_of(&request) else {
        let body = json!({"message": "try GET /hello/{name}"}).to_string();
        return Ok(Response::builder()
            .status(404)
            .header("content-type", "application/json")
            .body(Body::from(body))?);
    };
    let query = request.query_string_parameters();
    let body = json!({"message": greet(&name, query.first("greeting"))}).to_string();
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(body))?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(hello)).await
}
