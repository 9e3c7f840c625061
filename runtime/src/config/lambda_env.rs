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

/// The log format the runtime is told: `Text` or `JSON`.
pub const LOG_FORMAT: &str = "AWS_LAMBDA_LOG_FORMAT";
/// The application log level the runtime is told, with the JSON format.
pub const LOG_LEVEL: &str = "AWS_LAMBDA_LOG_LEVEL";

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

/// Variables Lambda gives the runtime only, not its extensions (with every key that starts
/// with `_`).
const RUNTIME_ONLY: &[&str] = &[
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_XRAY_CONTEXT_MISSING",
    "AWS_XRAY_DAEMON_ADDRESS",
    "LAMBDA_RUNTIME_DIR",
    "LAMBDA_TASK_ROOT",
];

/// The environment of an environment's external extensions: the runtime's, less what Lambda
/// gives the runtime only.
pub fn extension_environment(runtime: &[(String, String)]) -> Vec<(String, String)> {
    runtime
        .iter()
        .filter(|(k, _)| !k.starts_with('_') && !RUNTIME_ONLY.contains(&k.as_str()))
        .cloned()
        .collect()
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
    // The logging controls. Lambda's reserved list does not name these two, so a function
    // may set them, but what the configuration says wins, as a reserved variable does: the
    // runtime's clients must log as the platform's lines are written. The format is always
    // set, `Text` by default (observed in environments dumped on Lambda, 2024 and 2025; the
    // log-level page only says Lambda sets it); the level only with JSON, where it applies.
    let logging = &spec.logging;
    let mut controls = vec![(LOG_FORMAT, logging.format.as_str())];
    if let Some(level) = logging.application_level {
        controls.push((LOG_LEVEL, level.as_str()));
    }
    for (key, value) in controls {
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_owned(), value.to_owned()));
    }
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
    fn the_logging_controls_are_set_as_configured() {
        use crate::config::FunctionConfig;
        use crate::config::logging::{ApplicationLogLevel, LogFormat, LoggingConfig};
        let code = tempfile::tempdir().unwrap();
        let paths = Paths {
            task_root: "/var/task".into(),
            runtime_dir: "/var/runtime".into(),
            managed: None,
        };
        let env_of = |logging: LoggingConfig| {
            let spec = FunctionConfig {
                code: code.path().to_owned(),
                environment: vec![(LOG_LEVEL.into(), "ERROR".into())],
                logging,
                ..Default::default()
            }
            .resolve()
            .unwrap();
            let vars = environment(&spec, "127.0.0.1:1", "stream", &paths);
            let get = |key: &str| {
                let found: Vec<&str> = vars
                    .iter()
                    .filter(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
                    .collect();
                assert!(found.len() <= 1, "{key} set twice: {found:?}");
                found.first().map(|v| (*v).to_owned())
            };
            (get(LOG_FORMAT), get(LOG_LEVEL))
        };
        // Text: the format is said, the function's own level passes (Lambda sets none).
        assert_eq!(
            env_of(LoggingConfig::default()),
            (Some("Text".into()), Some("ERROR".into()))
        );
        // JSON: the configured level wins over the function's own, INFO by default.
        let json = LoggingConfig {
            log_format: Some(LogFormat::Json),
            ..Default::default()
        };
        assert_eq!(env_of(json), (Some("JSON".into()), Some("INFO".into())));
        let debug = LoggingConfig {
            application_log_level: Some(ApplicationLogLevel::Debug),
            ..json
        };
        assert_eq!(env_of(debug), (Some("JSON".into()), Some("DEBUG".into())));
    }

    #[test]
    fn user_cannot_override_reserved_and_size_is_capped() {
        assert!(check_user_environment(&[("GREETING".into(), "hi".into())]).is_ok());
        assert!(check_user_environment(&[("_HANDLER".into(), "x".into())]).is_err());
        assert!(check_user_environment(&[("1BAD".into(), "x".into())]).is_err());
        assert!(check_user_environment(&[("BIG".into(), "x".repeat(5000))]).is_err());
    }
}
