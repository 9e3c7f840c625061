//! A subscription request (`PUT /2022-07-01/telemetry` or `PUT /2020-08-15/logs`) parsed at
//! the edge into one typed [`Subscription`], or every problem with it at once, answered as
//! Lambda answers them: 400 with `ValidationError` (Telemetry API) or `Logs.ValidationError`
//! (Logs API) and the problems joined by `"; "`, as in AWS's own example ("URI port is not
//! provided; types should not be empty").
//!
//! The limits are Lambda's (telemetry-api.md, runtimes-logs-api.md): `maxItems` 1,000–10,000,
//! by default 1,000 through the Telemetry API and 10,000 through the Logs API, as AWS's two
//! reference pages give them; `maxBytes` 262,144–1,048,576 (default 262,144); `timeoutMs`
//! 25–30,000 (default 1,000). A destination is `http://sandbox.localdomain:PORT/path`
//! (host `sandbox` too; the port is required; 9001 is the Runtime API's) or TCP, given as
//! `{"protocol":"TCP","port":N}` (the emulator's shape) or with a `URI` (the reference page's).

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::runtime_api::wire::ApiError;

/// Which of the two subscription APIs a request came through: the route says, so the type is
/// the Runtime API's; its rules are here.
pub use crate::runtime_api::wire::SubscriptionApi as Api;

impl Api {
    /// The `errorType` of a refused request body.
    pub fn validation_error_type(self) -> &'static str {
        match self {
            Api::Telemetry => "ValidationError",
            Api::Logs => "Logs.ValidationError",
        }
    }

    /// 403 after init: Lambda takes subscriptions during init only.
    pub fn closed(self) -> ApiError {
        let (error_type, message) = match self {
            Api::Telemetry => (
                "Telemetry.SubscriptionClosed",
                "Telemetry API subscription is closed",
            ),
            Api::Logs => ("Logs.SubscriptionClosed", "Logs API subscription is closed"),
        };
        ApiError {
            status: StatusCode::FORBIDDEN,
            error_type,
            message: message.to_owned(),
        }
    }

    /// 403 for an extension that subscribed through the other API. Lambda says only that
    /// this "returns an error"; its type is not documented, so lamina names it in Lambda's
    /// style after the API called (design note 007).
    pub fn conflict(self, extension: &str) -> ApiError {
        let (error_type, other) = match self {
            Api::Telemetry => ("Telemetry.SubscriptionConflict", "Logs"),
            Api::Logs => ("Logs.SubscriptionConflict", "Telemetry"),
        };
        ApiError {
            status: StatusCode::FORBIDDEN,
            error_type,
            message: format!(
                "extension {extension} is subscribed to the {other} API; an extension may use only one of the Logs and Telemetry APIs"
            ),
        }
    }

    /// The schema versions this API accepts, the first being the default where one may be
    /// left out.
    fn schema_versions(self) -> &'static [&'static str] {
        match self {
            Api::Telemetry => &["2022-07-01", "2022-12-13", "2025-01-29"],
            Api::Logs => &["2020-08-15", "2021-03-18"],
        }
    }
}

/// Which streams a subscriber wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Types {
    /// `platform`: the platform's records (`platform.start`, `platform.report`, …).
    pub platform: bool,
    /// `function`: each line the function writes.
    pub function: bool,
    /// `extension`: each line the extensions write.
    pub extension: bool,
}

impl Types {
    /// The names, in Lambda's order, as `platform.telemetrySubscription` lists them.
    pub fn names(self) -> Vec<&'static str> {
        [
            (self.platform, "platform"),
            (self.function, "function"),
            (self.extension, "extension"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }

    /// Both sets together.
    pub fn union(self, other: Types) -> Types {
        Types {
            platform: self.platform || other.platform,
            function: self.function || other.function,
            extension: self.extension || other.extension,
        }
    }
}

/// How a subscriber's records are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    /// A batch goes out once it holds this many records.
    pub max_items: usize,
    /// … or this many bytes.
    pub max_bytes: usize,
    /// … or this long after its first record.
    pub timeout: Duration,
}

impl Buffering {
    /// What a subscription through `api` gets where it leaves `buffering` (or a field of it)
    /// out. `maxItems` differs between the APIs on AWS's pages: 1,000 for the Telemetry API,
    /// 10,000 for the Logs API. The Runtime Interface Emulator (and `lambda-apis-wave2.md`
    /// §2.3, after it) uses 10,000 for both; AWS's own reference page wins.
    pub fn defaults(api: Api) -> Buffering {
        Buffering {
            max_items: match api {
                Api::Telemetry => 1_000,
                Api::Logs => 10_000,
            },
            max_bytes: 262_144,
            timeout: Duration::from_millis(1_000),
        }
    }
}

/// Where a subscriber listens, inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `POST` a JSON array of records to this port and path.
    Http {
        /// The listener's port on the sandbox's own address.
        port: u16,
        /// `Host` header, as the URI gave it (`sandbox.localdomain:PORT`).
        host: String,
        /// Path and query, `/` when the URI had none.
        path: String,
    },
    /// Write newline-delimited JSON on a kept connection to this port.
    Tcp {
        /// The listener's port on the sandbox's own address.
        port: u16,
    },
}

/// A valid subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Which API it came through (decides the record types it gets).
    pub api: Api,
    /// The schema version asked for.
    pub schema_version: &'static str,
    /// What it wants.
    pub types: Types,
    /// How its batches are made.
    pub buffering: Buffering,
    /// Where they go.
    pub destination: Destination,
}

impl Subscription {
    /// Whether a Logs API subscriber gets `platform.runtimeDone` (schema `2021-03-18`).
    pub fn logs_runtime_done(&self) -> bool {
        self.api == Api::Logs && self.schema_version == "2021-03-18"
    }
}

/// The port Lambda keeps for the Runtime API itself.
const RESERVED_PORT: u16 = 9001;

/// One thing wrong with a subscription request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    /// The body is JSON but not an object.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// `schemaVersion` is required (Telemetry API).
    #[error("schemaVersion is not provided")]
    MissingSchemaVersion,
    /// An unknown `schemaVersion`.
    #[error("schemaVersion {given} is not supported; use one of {supported}")]
    SchemaVersion {
        /// What was sent.
        given: String,
        /// What is accepted.
        supported: String,
    },
    /// `types` is required.
    #[error("types is not provided")]
    MissingTypes,
    /// `types` is not an array of strings.
    #[error("types must be an array of strings")]
    TypesNotArray,
    /// `types` is empty.
    #[error("types should not be empty")]
    EmptyTypes,
    /// A type that is not `platform`, `function` or `extension`.
    #[error("types: {0} is not one of platform, function, extension")]
    UnknownType(String),
    /// `buffering` is not an object.
    #[error("buffering must be an object")]
    BufferingNotObject,
    /// A buffering value out of range or not an integer.
    #[error("buffering.{field} must be an integer from {min} to {max}")]
    Buffering {
        /// `maxItems`, `maxBytes` or `timeoutMs`.
        field: &'static str,
        /// The least accepted.
        min: u64,
        /// The most accepted.
        max: u64,
    },
    /// `destination` is required.
    #[error("destination is not provided")]
    MissingDestination,
    /// `destination` is not an object.
    #[error("destination must be an object")]
    DestinationNotObject,
    /// `destination.protocol` is neither `HTTP` nor `TCP`.
    #[error("destination.protocol must be HTTP or TCP")]
    Protocol,
    /// `destination.URI` is required for HTTP.
    #[error("destination.URI is not provided")]
    MissingUri,
    /// `destination.URI` does not parse.
    #[error("destination.URI {0:?} is not a valid URI")]
    BadUri(String),
    /// Only plain `http` is delivered (no HTTPS), `tcp` for TCP.
    #[error("destination.URI scheme must be {0}")]
    Scheme(&'static str),
    /// The host is not the sandbox's.
    #[error("destination.URI host must be sandbox.localdomain")]
    Host,
    /// The port is missing (Lambda's own wording).
    #[error("URI port is not provided")]
    MissingPort,
    /// A port outside 1–65535.
    #[error("destination port must be an integer from 1 to 65535")]
    BadPort,
    /// 9001 is the Runtime API's.
    #[error("destination port 9001 is reserved for the Runtime API")]
    ReservedPort,
}

/// A refused subscription request: every problem found, for one API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join(.problems))]
pub struct SubscribeError {
    /// The API the request came through (decides the error type).
    pub api: Api,
    /// What is wrong, in the order the fields were checked.
    pub problems: Vec<Problem>,
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SubscribeError {
    /// 400 with Lambda's error type for the API.
    pub fn into_api_error(self) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error_type: self.api.validation_error_type(),
            message: self.to_string(),
        }
    }
}

/// Parses and checks a subscription request's body, reporting every problem.
pub fn parse(api: Api, body: &[u8]) -> Result<Subscription, SubscribeError> {
    let fail = |problems| SubscribeError { api, problems };
    let request: Value =
        serde_json::from_slice(body).map_err(|e| fail(vec![Problem::Json(e.to_string())]))?;
    let Some(request) = request.as_object() else {
        return Err(fail(vec![Problem::NotAnObject]));
    };
    let mut problems = Vec::new();
    let supported = api.schema_versions();
    let schema_version = match request.get("schemaVersion") {
        None | Some(Value::Null) if api == Api::Logs => Some(supported[0]),
        None | Some(Value::Null) => {
            problems.push(Problem::MissingSchemaVersion);
            None
        }
        Some(given) => {
            let found = given
                .as_str()
                .and_then(|g| supported.iter().copied().find(|s| *s == g));
            if found.is_none() {
                problems.push(Problem::SchemaVersion {
                    given: given.to_string(),
                    supported: supported.join(", "),
                });
            }
            found
        }
    };
    // The destination before the types: Lambda's own example message names them so.
    let destination = destination(request.get("destination"), &mut problems);
    let types = types(request.get("types"), &mut problems);
    let buffering = buffering(api, request.get("buffering"), &mut problems);
    match (schema_version, types, destination) {
        (Some(schema_version), Some(types), Some(destination)) if problems.is_empty() => {
            Ok(Subscription {
                api,
                schema_version,
                types,
                buffering,
                destination,
            })
        }
        _ => Err(fail(problems)),
    }
}

fn types(value: Option<&Value>, problems: &mut Vec<Problem>) -> Option<Types> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        problems.push(Problem::MissingTypes);
        return None;
    };
    let Some(list) = value.as_array() else {
        problems.push(Problem::TypesNotArray);
        return None;
    };
    if list.is_empty() {
        problems.push(Problem::EmptyTypes);
        return None;
    }
    let mut types = Types::default();
    let before = problems.len();
    for item in list {
        match item.as_str() {
            Some("platform") => types.platform = true,
            Some("function") => types.function = true,
            Some("extension") => types.extension = true,
            Some(other) => problems.push(Problem::UnknownType(other.to_owned())),
            None => problems.push(Problem::UnknownType(item.to_string())),
        }
    }
    (problems.len() == before).then_some(types)
}

fn buffering(api: Api, value: Option<&Value>, problems: &mut Vec<Problem>) -> Buffering {
    let mut buffering = Buffering::defaults(api);
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return buffering;
    };
    let Some(fields) = value.as_object() else {
        problems.push(Problem::BufferingNotObject);
        return buffering;
    };
    let mut field = |name: &'static str, min: u64, max: u64| -> Option<u64> {
        let value = fields.get(name).filter(|v| !v.is_null())?;
        match value.as_u64().filter(|n| (min..=max).contains(n)) {
            Some(n) => Some(n),
            None => {
                problems.push(Problem::Buffering {
                    field: name,
                    min,
                    max,
                });
                None
            }
        }
    };
    // The ranges fit in usize on every target lamina builds for.
    if let Some(n) = field("maxItems", 1_000, 10_000) {
        buffering.max_items = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(n) = field("maxBytes", 262_144, 1_048_576) {
        buffering.max_bytes = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(n) = field("timeoutMs", 25, 30_000) {
        buffering.timeout = Duration::from_millis(n);
    }
    buffering
}

fn destination(value: Option<&Value>, problems: &mut Vec<Problem>) -> Option<Destination> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        problems.push(Problem::MissingDestination);
        return None;
    };
    let Some(fields) = value.as_object() else {
        problems.push(Problem::DestinationNotObject);
        return None;
    };
    let uri = fields.get("URI").filter(|v| !v.is_null());
    match fields.get("protocol").and_then(Value::as_str) {
        Some("HTTP") => {
            let Some(uri) = uri else {
                problems.push(Problem::MissingUri);
                return None;
            };
            let (host, port, path) = sandbox_uri(uri, "http", problems)?;
            Some(Destination::Http {
                port,
                host: format!("{host}:{port}"),
                path,
            })
        }
        Some("TCP") => {
            let port = match (fields.get("port").filter(|v| !v.is_null()), uri) {
                (Some(port), _) => checked_port(port.as_u64(), problems)?,
                (None, Some(uri)) => sandbox_uri(uri, "tcp", problems)?.1,
                (None, None) => {
                    problems.push(Problem::MissingPort);
                    return None;
                }
            };
            Some(Destination::Tcp { port })
        }
        _ => {
            problems.push(Problem::Protocol);
            None
        }
    }
}

/// A port in 1–65535 that is not the Runtime API's.
fn checked_port(port: Option<u64>, problems: &mut Vec<Problem>) -> Option<u16> {
    match port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) {
        None => {
            problems.push(Problem::BadPort);
            None
        }
        Some(RESERVED_PORT) => {
            problems.push(Problem::ReservedPort);
            None
        }
        Some(port) => Some(port),
    }
}

/// `scheme://sandbox.localdomain:PORT/path` → (host, port, path and query). A TCP URI may also
/// leave the scheme out (`sandbox.localdomain:PORT`).
fn sandbox_uri(
    uri: &Value,
    scheme: &'static str,
    problems: &mut Vec<Problem>,
) -> Option<(String, u16, String)> {
    let Some(text) = uri.as_str().filter(|t| !t.is_empty()) else {
        problems.push(Problem::BadUri(uri.to_string()));
        return None;
    };
    let Ok(parsed) = text.parse::<http::Uri>() else {
        problems.push(Problem::BadUri(text.to_owned()));
        return None;
    };
    let scheme_ok = match parsed.scheme_str() {
        Some(given) => given.eq_ignore_ascii_case(scheme),
        None => scheme == "tcp",
    };
    let Some(host) = parsed.host() else {
        problems.push(Problem::BadUri(text.to_owned()));
        return None;
    };
    let before = problems.len();
    if !scheme_ok {
        problems.push(Problem::Scheme(scheme));
    }
    let host = host.to_ascii_lowercase();
    if host != "sandbox.localdomain" && host != "sandbox" {
        problems.push(Problem::Host);
    }
    // `Uri::port_u16` cannot tell a missing port from one out of range; the authority can.
    let port_text = parsed
        .authority()
        .and_then(|a| a.as_str().rsplit_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty() && !p.contains(']'));
    let port = match port_text {
        None => {
            problems.push(Problem::MissingPort);
            None
        }
        Some(p) => checked_port(p.parse::<u64>().ok(), problems),
    };
    let path = parsed
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_owned();
    match port {
        Some(port) if problems.len() == before => Some((host, port, path)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
