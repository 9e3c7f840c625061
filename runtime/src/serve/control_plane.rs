//! The Lambda control-plane reads that tools make against an endpoint (`aws lambda
//! list-functions --endpoint-url …`, an SDK's `get_function`, deploy and test tools checking a
//! function exists): `ListFunctions` (`GET /2015-03-31/functions/`), `GetFunction`
//! (`GET …/functions/{name}`) and `GetFunctionConfiguration` (`GET …/{name}/configuration`),
//! in Lambda's JSON, from each served function's resolved spec. lamina has no control-plane
//! writes: a function is what its configuration says.

use std::time::SystemTime;

use base64::Engine;
use http::StatusCode;
use serde_json::{Value, json};

use super::invoke_api::{PREFIX, ServiceError, function_name};
use super::{App, Function, Reply, reply};
use crate::config::lambda_env::FUNCTION_VERSION;
use crate::config::{ACCOUNT_ID, FunctionSpec};

/// Whether a `GET` of `path` is one of these reads.
pub fn answers(path: &str) -> bool {
    match path.strip_prefix("/2015-03-31/functions") {
        Some("" | "/") => true,
        Some(rest) => {
            let rest = rest.trim_start_matches('/');
            let name = rest.strip_suffix("/configuration").unwrap_or(rest);
            !name.is_empty() && !name.contains('/')
        }
        None => false,
    }
}

/// Answers one read; `answers(path)` holds.
pub fn handle(app: &App, parts: &http::request::Parts) -> Reply {
    match read(app, parts) {
        Ok(body) => reply(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-amzn-RequestId", uuid::Uuid::new_v4().to_string())
            .body(body.to_string()),
        Err(e) => e.into_reply(),
    }
}

fn read(app: &App, parts: &http::request::Parts) -> Result<Value, ServiceError> {
    let path = parts.uri.path();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), super::routes::decode(v)))
        .collect();
    let param = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let rest = path
        .strip_prefix(PREFIX)
        .or_else(|| path.strip_prefix("/2015-03-31/functions"))
        .unwrap_or_default();
    if rest.is_empty() {
        return list(app, param("MaxItems"), param("Marker"));
    }
    let (name_part, configuration_only) = match rest.strip_suffix("/configuration") {
        Some(name) => (name, true),
        None => (rest, false),
    };
    let (name, mut qualifier) = function_name(&super::routes::decode(name_part));
    if let Some(q) = param("Qualifier") {
        qualifier = Some(q.to_owned());
    }
    let served = app.served();
    let Some(function) = served.functions.get(&name) else {
        let arn = crate::config::function_arn(&app.region(), &name, qualifier.as_deref());
        return Err(ServiceError::not_found(&arn));
    };
    if let Some(q) = qualifier.as_deref().filter(|q| *q != FUNCTION_VERSION) {
        let arn = crate::config::function_arn(&function.pool.spec().region, &name, Some(q));
        return Err(ServiceError::not_found(&arn));
    }
    let configuration = configuration(function);
    if configuration_only {
        return Ok(configuration);
    }
    let spec = function.pool.spec();
    Ok(json!({
        "Configuration": configuration,
        // Lambda answers a presigned S3 URL of the deployment package; lamina's package is
        // a local tree, named as such.
        "Code": {
            "RepositoryType": "Local",
            "Location": format!("file://{}", spec.code_dir.display()),
        },
        "Concurrency": { "ReservedConcurrentExecutions": spec.concurrency },
        "Tags": {},
    }))
}

/// `ListFunctions`: every function, by name, `MaxItems` (1–10,000, default 50) at a time
/// after `Marker`.
fn list(app: &App, max_items: Option<&str>, marker: Option<&str>) -> Result<Value, ServiceError> {
    let max = match max_items {
        None => 50,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                return Err(ServiceError::invalid_parameter(format!(
                    "MaxItems {text:?} is not a number from 1 to 10000"
                )));
            }
        },
    };
    let served = app.served();
    let mut names: Vec<&String> = served.functions.keys().collect();
    names.sort();
    let start = match marker {
        Some(marker) => names
            .iter()
            .position(|n| n.as_str() > marker)
            .unwrap_or(names.len()),
        None => 0,
    };
    let page: Vec<&String> = names[start..].iter().take(max).copied().collect();
    let mut body = json!({
        "Functions": page.iter().map(|n| configuration(&served.functions[*n])).collect::<Vec<_>>(),
    });
    if start + page.len() < names.len()
        && let Some(last) = page.last()
    {
        body["NextMarker"] = Value::String((*last).clone());
    }
    Ok(body)
}

/// Lambda's `FunctionConfiguration` of one served function.
fn configuration(function: &Function) -> Value {
    let spec: &FunctionSpec = function.pool.spec();
    let runtime = spec
        .managed
        .as_ref()
        .map_or_else(|| "provided.al2023".to_owned(), |m| m.name.to_string());
    let architecture = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    };
    // The code's identity (names, sizes, modes, times): it changes when the code does, as
    // Lambda's hash of the package does.
    let fingerprint = lamina_layers::dir_fingerprint(&spec.code_dir).unwrap_or_default();
    let digest = hex_bytes(fingerprint.trim_start_matches("dir-")).unwrap_or_default();
    let code_sha256 = base64::engine::general_purpose::STANDARD.encode(&digest);
    let revision = digest
        .get(..16)
        .and_then(|b| uuid::Uuid::from_slice(b).ok())
        .unwrap_or_default();
    let modified = std::fs::metadata(&spec.code_dir)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut environment = serde_json::Map::new();
    for (k, v) in &spec.environment {
        environment.insert(k.clone(), Value::String(v.clone()));
    }
    json!({
        "FunctionName": spec.name,
        "FunctionArn": spec.arn,
        "Runtime": runtime,
        "Role": format!("arn:aws:iam::{ACCOUNT_ID}:role/lamina"),
        "Handler": spec.handler,
        "CodeSize": lamina_layers::tree_size(&spec.code_dir),
        "Description": "",
        "Timeout": spec.timeout.as_secs(),
        "MemorySize": spec.memory_mb,
        "LastModified": last_modified(modified),
        "CodeSha256": code_sha256,
        "Version": FUNCTION_VERSION,
        "Environment": { "Variables": environment },
        "TracingConfig": { "Mode": "PassThrough" },
        "RevisionId": revision.to_string(),
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [architecture],
        "EphemeralStorage": { "Size": spec.ephemeral_storage_mb },
        "SnapStart": { "ApplyOn": "None", "OptimizationStatus": "Off" },
        "LoggingConfig": logging_config(spec),
    })
}

/// `LoggingConfig` as Lambda answers it: the levels only with the JSON format.
fn logging_config(spec: &FunctionSpec) -> Value {
    let logging = &spec.logging;
    let mut config = json!({
        "LogFormat": logging.format.as_str(),
        "LogGroup": format!("/aws/lambda/{}", spec.name),
    });
    if logging.format == crate::config::logging::LogFormat::Json {
        config["ApplicationLogLevel"] = json!(logging.application_level.map(|l| l.as_str()));
        config["SystemLogLevel"] = json!(logging.system_level.as_str());
    }
    config
}

/// Lambda's `LastModified`: `2024-01-31T12:00:00.000+0000`.
fn last_modified(time: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_millis(time).to_string();
    // "2024-01-31T12:00:00.000Z"
    format!("{}+0000", stamp.trim_end_matches('Z'))
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reads_are_answered_here() {
        assert!(answers("/2015-03-31/functions/"));
        assert!(answers("/2015-03-31/functions"));
        assert!(answers("/2015-03-31/functions/hello"));
        assert!(answers("/2015-03-31/functions/hello/configuration"));
        assert!(!answers("/2015-03-31/functions/hello/invocations"));
        assert!(!answers("/2015-03-31/functions/hello/policy"));
        assert!(!answers("/hello"));
    }

    #[test]
    fn last_modified_is_lambdas_form() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_706_702_400_123);
        assert_eq!(last_modified(t), "2024-01-31T12:00:00.123+0000");
    }
}
