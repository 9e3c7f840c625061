//! The one place the execution environment's variables are derived: Lambda's reserved ones,
//! its overridable defaults, and the function's own.

use std::time::SystemTime;

use super::{ConfigError, FunctionSpec, MAX_ENVIRONMENT_BYTES};

/// Variables Lambda sets itself and a function may not override.
pub const RESERVED: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// Lambda's defaults that a function may override.
const DEFAULTS: &[(&str, &str)] = &[
    ("LANG", "en_US.UTF-8"),
    ("TZ", ":UTC"),
    ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin"),
    (
        "LD_LIBRARY_PATH",
        "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    ),
];

/// The function version every invocation runs; lamina has no published versions.
pub const FUNCTION_VERSION: &str = "$LATEST";

/// Checks the function's own variables: valid names, none reserved, at most 4 KB in all.
pub(super) fn check_user_environment(vars: &[(String, String)]) -> Result<(), ConfigError> {
    let mut total = 0;
    for (key, value) in vars {
        let field = format!("env {key}");
        let valid_name = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(super::invalid(
                field,
                "a name is a letter then letters, digits or '_'",
            ));
        }
        if RESERVED.contains(&key.as_str()) {
            return Err(super::invalid(
                field,
                "reserved by Lambda; a function cannot set it",
            ));
        }
        if value.contains('\0') {
            return Err(super::invalid(field, "value contains a NUL byte"));
        }
        total += key.len() + value.len() + 1;
    }
    if total > MAX_ENVIRONMENT_BYTES {
        return Err(super::invalid(
            "env",
            format!("{total} bytes in all, more than Lambda's {MAX_ENVIRONMENT_BYTES}"),
        ));
    }
    Ok(())
}

/// Where the environment's paths point: `/var/task` and `/var/runtime` inside a jail, real
/// host paths for the unisolated process backend.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `LAMBDA_TASK_ROOT`.
    pub task_root: String,
    /// `LAMBDA_RUNTIME_DIR`.
    pub runtime_dir: String,
    /// A managed runtime's paths as the function sees them (with `spec.managed`).
    pub managed: Option<crate::managed::Seen>,
}

/// The complete environment of one execution environment, in the order it is applied:
/// defaults, then the function's own, then the reserved variables (which always win).
pub fn environment(
    spec: &FunctionSpec,
    runtime_api: &str,
    log_stream: &str,
    paths: &Paths,
) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = DEFAULTS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let runtime_vars = match (&spec.managed, &paths.managed) {
        (Some(managed), Some(seen)) => managed.environment(seen),
        _ => Vec::new(),
    };
    for (key, value) in runtime_vars.iter().chain(&spec.environment) {
        vars.retain(|(k, _)| k != key);
        vars.push((key.clone(), value.clone()));
    }
    if let Some(managed) = &spec.managed {
        vars.push(("AWS_EXECUTION_ENV".to_owned(), managed.execution_env()));
    }
    let reserved = [
        ("_HANDLER", spec.handler.clone()),
        ("AWS_REGION", spec.region.clone()),
        ("AWS_DEFAULT_REGION", spec.region.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME", spec.name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", FUNCTION_VERSION.to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", spec.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream.to_owned()),
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("LAMBDA_TASK_ROOT", paths.task_root.clone()),
        ("LAMBDA_RUNTIME_DIR", paths.runtime_dir.clone()),
    ];
    vars.extend(reserved.into_iter().map(|(k, v)| (k.to_owned(), v)));
    if let Some(credentials) = &spec.credentials {
        vars.extend(credentials.environment());
    }
    vars
}

/// `2024/01/31/[$LATEST]0123456789abcdef0123456789abcdef`, as Lambda names a log stream: the
/// environment's start date and a per-environment hex id.
pub fn log_stream_name(started: SystemTime, env_hex: &str) -> String {
    let stamp = humantime::format_rfc3339_seconds(started).to_string();
    // "2024-01-31T12:00:00Z": the date is the first ten characters.
    let date = stamp.get(..10).unwrap_or("1970-01-01").replace('-', "/");
    format!("{date}/[{FUNCTION_VERSION}]{env_hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn log_stream_has_lambdas_shape() {
        let t = UNIX_EPOCH + Duration::from_secs(1_706_702_400); // 2024-01-31
        assert_eq!(log_stream_name(t, "ab12"), "2024/01/31/[$LATEST]ab12");
    }

    #[test]
    fn user_cannot_override_reserved_and_size_is_capped() {
        assert!(check_user_environment(&[("GREETING".into(), "hi".into())]).is_ok());
        assert!(check_user_environment(&[("_HANDLER".into(), "x".into())]).is_err());
        assert!(check_user_environment(&[("1BAD".into(), "x".into())]).is_err());
        assert!(check_user_environment(&[("BIG".into(), "x".repeat(5000))]).is_err());
    }
}
