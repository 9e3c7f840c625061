//! What a handler knows about its invocation and its function: [`Context`] (one per event)
//! and [`Config`] (the function's configuration, read once from Lambda's environment
//! variables). The field names are `lambda_runtime`'s, so handlers port unchanged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The function's configuration, from the environment Lambda (or lamina) sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub function_name: String,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, MB.
    pub memory: i32,
    /// `AWS_LAMBDA_FUNCTION_VERSION`.
    pub version: String,
    /// `AWS_LAMBDA_LOG_STREAM_NAME`.
    pub log_stream: String,
    /// `AWS_LAMBDA_LOG_GROUP_NAME`.
    pub log_group: String,
}

/// A variable the function's configuration needs is missing or malformed. Reported as an
/// init error (`Runtime.InvalidConfig`), never a panic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set (or not Unicode).
    #[error("the environment variable {0} is not set")]
    Missing(&'static str),
    /// A variable's value cannot be read.
    #[error("the environment variable {name} is {value:?}, not {expected}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
}

impl Config {
    /// Reads the configuration from the process's environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let required = |name: &'static str| lookup(name).ok_or(ConfigError::Missing(name));
        let memory_var = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE";
        let memory = required(memory_var)?;
        Ok(Config {
            function_name: required("AWS_LAMBDA_FUNCTION_NAME")?,
            memory: memory.parse().map_err(|_| ConfigError::Invalid {
                name: memory_var,
                value: memory.clone(),
                expected: "a number of megabytes",
            })?,
            version: lookup("AWS_LAMBDA_FUNCTION_VERSION").unwrap_or_else(|| "$LATEST".into()),
            log_stream: lookup("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default(),
            log_group: lookup("AWS_LAMBDA_LOG_GROUP_NAME").unwrap_or_default(),
        })
    }
}

/// The client context an AWS Mobile SDK caller sends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientContext {
    /// The calling application.
    #[serde(default)]
    pub client: ClientApplication,
    /// Custom values set by the caller.
    #[serde(default)]
    pub custom: HashMap<String, String>,
    /// The caller's environment.
    #[serde(default)]
    pub environment: HashMap<String, String>,
}

/// The application an AWS Mobile SDK caller runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientApplication {
    /// Installation id.
    #[serde(default, alias = "installation_id")]
    pub installation_id: String,
    /// Title.
    #[serde(default, alias = "app_title")]
    pub app_title: String,
    /// Version name.
    #[serde(default, alias = "app_version_name")]
    pub app_version_name: String,
    /// Version code.
    #[serde(default, alias = "app_version_code")]
    pub app_version_code: String,
    /// Package name.
    #[serde(default, alias = "app_package_name")]
    pub app_package_name: String,
}

/// The Amazon Cognito identity of the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CognitoIdentity {
    /// The identity id.
    #[serde(default, alias = "cognitoIdentityId", alias = "identity_id")]
    pub identity_id: String,
    /// The identity pool id.
    #[serde(default, alias = "cognitoIdentityPoolId", alias = "identity_pool_id")]
    pub identity_pool_id: String,
}

/// One invocation's context.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Context {
    /// The request id.
    pub request_id: String,
    /// When the invocation times out, milliseconds since the Unix epoch.
    pub deadline: u64,
    /// The ARN the function was invoked by.
    pub invoked_function_arn: String,
    /// The X-Ray trace header.
    pub xray_trace_id: Option<String>,
    /// The caller's client context, when it sent one.
    pub client_context: Option<ClientContext>,
    /// The caller's Cognito identity, when it has one.
    pub identity: Option<CognitoIdentity>,
    /// The function's configuration.
    pub env_config: Arc<Config>,
}

/// What the transport read for one invocation, before it is a [`Context`]: the Runtime API's
/// headers, or the guest ABI's variables of the same names.
#[derive(Debug, Default)]
pub(crate) struct Invocation<'a> {
    pub request_id: Option<&'a str>,
    pub deadline_ms: Option<&'a str>,
    pub function_arn: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub client_context: Option<&'a str>,
    pub cognito_identity: Option<&'a str>,
}

/// A JSON header (or variable), when present and not empty.
fn json<T: serde::de::DeserializeOwned>(
    field: &'static str,
    text: Option<&str>,
) -> Result<Option<T>, InvocationError> {
    text.filter(|t| !t.is_empty())
        .map(|t| {
            serde_json::from_str(t).map_err(|e| InvocationError {
                field,
                problem: format!("not the expected JSON: {e}"),
            })
        })
        .transpose()
}

/// The invocation's metadata is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the invocation's {field} is {problem}")]
pub struct InvocationError {
    /// The header (or variable) at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl Context {
    pub(crate) fn new(
        invocation: &Invocation<'_>,
        config: Arc<Config>,
    ) -> Result<Context, InvocationError> {
        let request_id = invocation.request_id.ok_or(InvocationError {
            field: "request id",
            problem: "missing".into(),
        })?;
        let deadline = match invocation.deadline_ms {
            Some(ms) => ms.parse().map_err(|_| InvocationError {
                field: "deadline",
                problem: format!("{ms:?}, not milliseconds"),
            })?,
            None => 0,
        };
        Ok(Context {
            request_id: request_id.to_owned(),
            deadline,
            invoked_function_arn: invocation.function_arn.unwrap_or_default().to_owned(),
            xray_trace_id: invocation.trace_id.map(str::to_owned),
            client_context: json("client context", invocation.client_context)?,
            identity: json("Cognito identity", invocation.cognito_identity)?,
            env_config: config,
        })
    }

    /// The deadline as a point in time.
    pub fn deadline(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.deadline)
    }

    /// The time left before the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.deadline()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn configuration_names_what_is_missing_or_malformed() {
        let config = Config::from_lookup(vars(&[
            ("AWS_LAMBDA_FUNCTION_NAME", "f"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ]))
        .unwrap();
        assert_eq!((config.function_name.as_str(), config.memory), ("f", 256));
        assert_eq!(config.version, "$LATEST");
        assert_eq!(
            Config::from_lookup(vars(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1")])),
            Err(ConfigError::Missing("AWS_LAMBDA_FUNCTION_NAME"))
        );
        let err = Config::from_lookup(vars(&[
            ("AWS_LAMBDA_FUNCTION_NAME", "f"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
            "{err}"
        );
    }

    #[test]
    fn a_deadline_in_the_past_leaves_no_time_and_no_panic() {
        let invocation = Invocation {
            request_id: Some("r"),
            deadline_ms: Some("1000"),
            ..Default::default()
        };
        let context = Context::new(&invocation, Arc::default()).unwrap();
        assert_eq!(context.remaining(), Duration::ZERO);
        assert_eq!(context.deadline(), UNIX_EPOCH + Duration::from_secs(1));
    }

    #[test]
    fn client_context_and_identity_are_parsed_and_bad_json_named() {
        let invocation = Invocation {
            request_id: Some("r"),
            client_context: Some(r#"{"client":{"appTitle":"t"},"custom":{"k":"v"}}"#),
            cognito_identity: Some(r#"{"cognitoIdentityId":"i","cognitoIdentityPoolId":"p"}"#),
            ..Default::default()
        };
        let context = Context::new(&invocation, Arc::default()).unwrap();
        assert_eq!(context.client_context.unwrap().client.app_title, "t");
        assert_eq!(context.identity.unwrap().identity_pool_id, "p");
        let bad = Invocation {
            request_id: Some("r"),
            cognito_identity: Some("{"),
            ..Default::default()
        };
        let err = Context::new(&bad, Arc::default()).unwrap_err();
        assert_eq!(err.field, "Cognito identity");
    }
}
