//! `lamina.toml`: functions, routes and server settings as the user wrote them, checked key by
//! key. Every problem in the file is reported, each with the file and the dotted key at fault
//! (`lamina.toml: functions.hello.memory: expected an integer, found a string`), before
//! anything starts. Paths in the file are relative to the file's own directory.
//!
//! The result is a [`Manifest`] of [`FunctionConfig`]s and [`RouteConfig`]s; resolving the
//! functions (extracting archives, composing `/opt`) is [`FunctionConfig::resolve`]'s job, and
//! matching routes is the HTTP front's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::FunctionConfig;
use super::logging::{LogFormat, LoggingConfig};

/// `[[event_sources]]`: SQS event source mappings.
pub mod event_source;

pub use event_source::EventSourceEntry;

/// The file `lamina serve` and `lamina invoke NAME` look for in the current directory.
pub const FILE_NAME: &str = "lamina.toml";

/// A whole `lamina.toml`, checked.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it came from.
    pub path: PathBuf,
    /// The functions, by name.
    pub functions: BTreeMap<String, FunctionEntry>,
    /// The HTTP front's routes, in the order written.
    pub routes: Vec<RouteConfig>,
    /// The functions with a function URL (`function_url = true`, a template's
    /// `FunctionUrlConfig`): served at `/lambda-url/NAME/` with payload 2.0 events.
    pub function_urls: Vec<String>,
    /// The SQS queues polled for functions (`[[event_sources]]`, a template's `SQS` events).
    pub event_sources: Vec<EventSourceEntry>,
    /// `[serve]`.
    pub serve: ServeSettings,
}

/// One `[functions.NAME]` table.
#[derive(Debug, Clone)]
pub struct FunctionEntry {
    /// What resolves into the function's spec.
    pub config: FunctionConfig,
    /// Lambda's asynchronous invocation configuration.
    pub asynchronous: AsyncConfig,
    /// When the function is invoked on a schedule.
    pub schedules: Vec<ScheduleEntry>,
    /// Whether it has a function URL.
    pub function_url: bool,
}

/// Lambda's asynchronous invocation configuration of a function (`PutFunctionEventInvokeConfig`,
/// a template's `EventInvokeConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncConfig {
    /// Retries after a function error: 0–2, default 2.
    pub maximum_retry_attempts: u32,
    /// How long an event may wait for a successful attempt: 60 s–6 h, default 6 h; older ones
    /// go to the failure destination (`EventAgeExceeded`).
    pub maximum_event_age: Duration,
    /// Where a record of each success goes.
    pub on_success: Option<Destination>,
    /// Where a record of each event that cannot succeed goes (else the dead-letter file).
    pub on_failure: Option<Destination>,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        AsyncConfig {
            maximum_retry_attempts: 2,
            maximum_event_age: Duration::from_secs(MAX_EVENT_AGE_SECS),
            on_success: None,
            on_failure: None,
        }
    }
}

/// Lambda's limit on `maximum_event_age`, seconds.
pub const MAX_EVENT_AGE_SECS: u64 = 21_600;

/// A destination of asynchronous invocation records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `function:NAME`: another served function, invoked asynchronously with the record.
    Function(String),
    /// `file:PATH`: a JSON Lines file, one record per line.
    File(PathBuf),
    /// An SQS queue, by its URL (an ARN is turned into one): the record is sent as a message.
    Sqs(String),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Function(name) => write!(f, "function:{name}"),
            Destination::File(path) => write!(f, "file:{}", path.display()),
            Destination::Sqs(queue) => f.write_str(queue),
        }
    }
}

impl Destination {
    /// Parses `function:NAME`, `file:PATH` (relative to `base`), or a function's ARN.
    pub fn parse(text: &str, base: &Path) -> Result<Destination, String> {
        if let Some(name) = text.strip_prefix("function:") {
            return Ok(Destination::Function(name.to_owned()));
        }
        if let Some(path) = text.strip_prefix("file:") {
            return Ok(Destination::File(base.join(path)));
        }
        if let Some((_, rest)) = text.split_once(":function:") {
            let name = rest.split(':').next().unwrap_or(rest);
            return Ok(Destination::Function(name.to_owned()));
        }
        if let Some(queue) = super::sqs_address::queue_url(text) {
            return Ok(Destination::Sqs(queue));
        }
        Err(format!(
            "{text:?}: expected function:NAME, file:PATH, a function's ARN, or an SQS queue's URL or ARN"
        ))
    }
}

/// A schedule as written: `schedule = "rate(1 minute)"` (or a list), or a template's
/// `Schedule` event. The expression is checked where schedules are started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleEntry {
    /// The rule's name.
    pub name: String,
    /// `rate(…)` or `cron(…)`.
    pub expression: String,
    /// The event, when not EventBridge's "Scheduled Event".
    pub input: Option<String>,
    /// Where it was written, for messages (`functions.nightly.schedule`).
    pub at: String,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// An upper-case method, or `ANY`.
    pub method: String,
    /// `/literal/{param}/{proxy+}` or `$default`.
    pub path: String,
    /// The function it invokes.
    pub function: String,
    /// The event format.
    pub payload: PayloadVersion,
}

impl RouteConfig {
    /// API Gateway's route key: `$default`, or `METHOD /path`.
    pub fn key(&self) -> String {
        if self.path == "$default" {
            "$default".to_owned()
        } else {
            format!("{} {}", self.method, self.path)
        }
    }
}

/// API Gateway's payload format versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadVersion {
    /// REST API (proxy integration).
    V1,
    /// HTTP API and function URLs; the default.
    V2,
}

/// Where `lamina serve` listens, as written: `HOST:PORT`, the host an address or a name
/// (`localhost:9000`, `[::1]:9000`), looked up when the server binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr(String);

impl ListenAddr {
    /// Checks the form (a host and a port number); the host is resolved at bind time.
    pub fn parse(text: &str) -> Result<ListenAddr, String> {
        let bad = || format!("{text:?} is not an address such as 127.0.0.1:9000 or localhost:9000");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(ListenAddr(text.to_owned()))
    }

    /// The addresses it names.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host(self.0.as_str()).await?.collect())
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ListenAddr::parse(s)
    }
}

/// `[serve]`: settings of `lamina serve`; command-line flags override them.
#[derive(Debug, Clone, Default)]
pub struct ServeSettings {
    /// Where the server listens.
    pub listen: Option<ListenAddr>,
    /// Where dead letters and other state are kept.
    pub state_dir: Option<PathBuf>,
    /// The wait before the first retry of a failed `Event` invocation; the second waits twice
    /// as long. Lambda waits 1 and 2 minutes.
    pub retry_delay: Option<Duration>,
    /// The jailed functions' network.
    pub network: Option<NetworkMode>,
    /// Where accepted `Event` invocations are kept.
    pub queue: Option<QueueSetting>,
    /// How long a server's lease on an event of a shared queue lasts without renewal: how
    /// soon the events of a server that died are run by the others.
    pub queue_lease: Option<Duration>,
}

/// `queue` in `[serve]`: the asynchronous queue's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSetting {
    /// `"sqlite"`: the embedded store under the state directory (the default).
    Sqlite,
    /// `"postgres://…"`: a PostgreSQL database that several servers may share.
    Postgres(String),
}

/// `url` without its password, as logs may show it.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or(user);
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl std::str::FromStr for QueueSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "sqlite" {
            Ok(QueueSetting::Sqlite)
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(QueueSetting::Postgres(s.to_owned()))
        } else {
            Err(format!(
                "{:?} is not a queue: \"sqlite\" or a \"postgres://…\" URL",
                redacted(s)
            ))
        }
    }
}

/// A jailed function's network, as `network` in `[serve]` and `--network` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// Outbound access from the sandbox's own network namespace, as a Lambda function outside
    /// a VPC has; the host's loopback and other sandboxes out of reach. The default.
    Outbound,
    /// Nothing outside the sandbox's own loopback.
    None,
    /// The host's network, its loopback services included.
    Host,
}

impl std::str::FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "outbound" => Ok(NetworkMode::Outbound),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            other => Err(format!(
                "{other:?} is not a network mode: \"outbound\", \"none\" or \"host\""
            )),
        }
    }
}

/// Why a `lamina.toml` cannot be used: every problem found, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ManifestError {
    /// Each problem, `FILE: KEY: what is wrong`.
    pub problems: Vec<String>,
}

const FUNCTION_KEYS: &[&str] = &[
    "code",
    "layers",
    "handler",
    "memory",
    "timeout",
    "init_timeout",
    "ephemeral_storage",
    "environment",
    "concurrency",
    "idle_timeout",
    "region",
    "max_retry_attempts",
    "maximum_retry_attempts",
    "maximum_event_age",
    "on_success",
    "on_failure",
    "runtime",
    "accept_host_runtime",
    "runtime_package",
    "schedule",
    "function_url",
    "log_format",
    "application_log_level",
    "system_log_level",
];
const ROUTE_KEYS: &[&str] = &["method", "path", "function", "payload"];
const SERVE_KEYS: &[&str] = &[
    "listen",
    "state_dir",
    "retry_delay",
    "network",
    "queue",
    "queue_lease",
];
const METHODS: &[&str] = &[
    "ANY", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
];

impl Manifest {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            problems: vec![format!("{}: {e}", path.display())],
        })?;
        Self::parse(path, &text)
    }

    /// Checks `text`, the contents of the file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let mut check = Checker {
            file: path.display().to_string(),
            base: path.parent().unwrap_or(Path::new(".")).to_owned(),
            problems: Vec::new(),
        };
        let table: toml::Table = match text.parse() {
            Ok(table) => table,
            Err(e) => {
                // toml's message carries the line and column and shows the line.
                return Err(ManifestError {
                    problems: vec![format!("{}: {}", check.file, e.to_string().trim_end())],
                });
            }
        };
        // Routes are checked against every declared function, also one with problems of its
        // own (those are reported once, at the function).
        let declared: Vec<String> = table
            .get("functions")
            .and_then(|f| f.as_table())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        let mut functions = BTreeMap::new();
        let mut routes = Vec::new();
        let mut event_sources = Vec::new();
        let mut serve = ServeSettings::default();
        for (key, value) in &table {
            match key.as_str() {
                "functions" => match value.as_table() {
                    Some(t) => {
                        for (name, f) in t {
                            if let Some(entry) = check.function(name, f) {
                                functions.insert(name.clone(), entry);
                            }
                        }
                    }
                    None => check.wrong("functions", "a table of functions", value),
                },
                "routes" => match value.as_array() {
                    Some(list) => {
                        for (i, r) in list.iter().enumerate() {
                            if let Some(route) = check.route(i, r, &declared) {
                                routes.push(route);
                            }
                        }
                    }
                    None => check.wrong("routes", "an array of tables ([[routes]])", value),
                },
                "event_sources" => match value.as_array() {
                    Some(list) => {
                        for (i, e) in list.iter().enumerate() {
                            if let Some(entry) = check.event_source(i, e, &declared) {
                                event_sources.push(entry);
                            }
                        }
                    }
                    None => check.wrong(
                        "event_sources",
                        "an array of tables ([[event_sources]])",
                        value,
                    ),
                },
                "serve" => serve = check.serve(value),
                other => check.problem(
                    other,
                    "unknown key (expected functions, routes, event_sources or serve)".into(),
                ),
            }
        }
        check.no_route_twice(&routes);
        for (name, entry) in &functions {
            let a = &entry.asynchronous;
            for (k, d) in [("on_success", &a.on_success), ("on_failure", &a.on_failure)] {
                if let Some(Destination::Function(target)) = d
                    && !declared.contains(target)
                {
                    check.problem(
                        &format!("functions.{name}.{k}"),
                        format!("function:{target}: no such function in this file"),
                    );
                }
            }
        }
        if !check.problems.is_empty() {
            return Err(ManifestError {
                problems: check.problems,
            });
        }
        let function_urls = functions
            .iter()
            .filter(|(_, entry)| entry.function_url)
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Manifest {
            path: path.to_owned(),
            functions,
            routes,
            function_urls,
            event_sources,
            serve,
        })
    }
}

struct Checker {
    file: String,
    base: PathBuf,
    problems: Vec<String>,
}

fn kind(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

impl Checker {
    fn problem(&mut self, key: &str, what: String) {
        self.problems.push(format!("{}: {key}: {what}", self.file));
    }

    fn wrong(&mut self, key: &str, expected: &str, found: &toml::Value) {
        self.problem(key, format!("expected {expected}, found {}", kind(found)));
    }

    /// `value` as a table whose keys are among `known`: one problem for a value that is not a
    /// table (then None), one per unknown key (the table is still checked).
    fn table<'v>(
        &mut self,
        at: &str,
        value: &'v toml::Value,
        known: &[&str],
    ) -> Option<&'v toml::Table> {
        let Some(table) = value.as_table() else {
            self.wrong(at, "a table", value);
            return None;
        };
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                self.problem(
                    &format!("{at}.{key}"),
                    format!("unknown key (known: {})", known.join(", ")),
                );
            }
        }
        Some(table)
    }

    fn string(&mut self, at: &str, value: &toml::Value) -> Option<String> {
        match value.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                self.wrong(at, "a string", value);
                None
            }
        }
    }

    fn number(&mut self, at: &str, value: &toml::Value) -> Option<u32> {
        match value.as_integer() {
            Some(n) => match u32::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problem(at, format!("{n} is outside {}", allowed_range(at)));
                    None
                }
            },
            None => {
                self.wrong(at, "an integer", value);
                None
            }
        }
    }

    fn path(&mut self, at: &str, value: &toml::Value) -> Option<PathBuf> {
        let written = self.string(at, value)?;
        let path = self.base.join(written);
        if !path.exists() {
            self.problem(at, format!("{} does not exist", path.display()));
            return None;
        }
        Some(path)
    }

    fn function(&mut self, name: &str, value: &toml::Value) -> Option<FunctionEntry> {
        let at = format!("functions.{name}");
        let t = self.table(&at, value, FUNCTION_KEYS)?;
        let before = self.problems.len();
        let key = |k: &str| format!("{at}.{k}");
        let code = match t.get("code") {
            Some(v) => self.path(&key("code"), v),
            None => {
                self.problem(
                    &key("code"),
                    "missing: a directory, .zip or .wasm holding the function".into(),
                );
                None
            }
        };
        let mut layers = Vec::new();
        if let Some(v) = t.get("layers") {
            match v.as_array() {
                Some(list) => {
                    for (i, layer) in list.iter().enumerate() {
                        if let Some(p) = self.path(&format!("{at}.layers[{i}]"), layer) {
                            layers.push(p);
                        }
                    }
                }
                None => self.wrong(&key("layers"), "an array of paths", v),
            }
        }
        let mut environment = Vec::new();
        if let Some(v) = t.get("environment") {
            match v.as_table() {
                Some(vars) => {
                    for (k, v) in vars {
                        // Lambda's variables are strings; numbers and booleans are written as
                        // their text, as SAM templates allow.
                        let text = match v {
                            toml::Value::String(s) => Some(s.clone()),
                            toml::Value::Integer(n) => Some(n.to_string()),
                            toml::Value::Float(f) => Some(f.to_string()),
                            toml::Value::Boolean(b) => Some(b.to_string()),
                            other => {
                                self.wrong(&format!("{at}.environment.{k}"), "a string", other);
                                None
                            }
                        };
                        if let Some(text) = text {
                            environment.push((k.clone(), text));
                        }
                    }
                }
                None => self.wrong(&key("environment"), "a table of strings", v),
            }
        }
        let mut opt_string = |k: &str| t.get(k).and_then(|v| self.string(&key(k), v));
        let handler = opt_string("handler");
        let region = opt_string("region");
        let runtime = opt_string("runtime");
        let runtime_package = t
            .get("runtime_package")
            .and_then(|v| self.path(&key("runtime_package"), v));
        let accept_host_runtime = match t.get("accept_host_runtime") {
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                self.wrong(&key("accept_host_runtime"), "true or false", other);
                false
            }
            None => false,
        };
        let logging = self.logging(&at, t);
        let mut opt_number = |k: &str| t.get(k).and_then(|v| self.number(&key(k), v));
        let memory_mb = opt_number("memory");
        let timeout_secs = opt_number("timeout");
        let init_timeout_secs = opt_number("init_timeout");
        let ephemeral_storage_mb = opt_number("ephemeral_storage");
        let concurrency = opt_number("concurrency");
        let idle_timeout_secs = opt_number("idle_timeout");
        // Lambda's name, and lamina's earlier one.
        let retries_key = match t.contains_key("maximum_retry_attempts") {
            true => "maximum_retry_attempts",
            false => "max_retry_attempts",
        };
        let max_retry_attempts = opt_number(retries_key).unwrap_or(2);
        let maximum_event_age =
            opt_number("maximum_event_age").map_or(MAX_EVENT_AGE_SECS, u64::from);
        if max_retry_attempts > 2 {
            self.problem(
                &key(retries_key),
                format!("{max_retry_attempts} is outside Lambda's 0–2"),
            );
        }
        if !(60..=MAX_EVENT_AGE_SECS).contains(&maximum_event_age) {
            self.problem(
                &key("maximum_event_age"),
                format!("{maximum_event_age} s is outside Lambda's 60–21600 s"),
            );
        }
        let mut destination = |k: &str| {
            let text = t.get(k).and_then(|v| self.string(&key(k), v))?;
            match Destination::parse(&text, &self.base.clone()) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.problem(&key(k), e);
                    None
                }
            }
        };
        let asynchronous = AsyncConfig {
            maximum_retry_attempts: max_retry_attempts,
            maximum_event_age: Duration::from_secs(maximum_event_age),
            on_success: destination("on_success"),
            on_failure: destination("on_failure"),
        };
        let mut schedules = Vec::new();
        let written = match t.get("schedule") {
            Some(toml::Value::String(s)) => vec![s.clone()],
            Some(toml::Value::Array(list)) => list
                .iter()
                .filter_map(|v| match v {
                    toml::Value::String(s) => Some(s.clone()),
                    other => {
                        self.wrong(&key("schedule"), "a string", other);
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.wrong(&key("schedule"), "a string or an array of strings", other);
                Vec::new()
            }
            None => Vec::new(),
        };
        for (i, expression) in written.into_iter().enumerate() {
            schedules.push(ScheduleEntry {
                name: format!("{name}-schedule-{}", i + 1),
                expression,
                input: None,
                at: format!("{}: {}", self.file, key("schedule")),
            });
        }
        if self.problems.len() > before {
            return None;
        }
        let config = FunctionConfig {
            name: Some(name.to_owned()),
            code: code?,
            handler,
            memory_mb,
            timeout_secs,
            init_timeout_secs,
            environment,
            region,
            concurrency,
            idle_timeout_secs,
            layers,
            ephemeral_storage_mb,
            runtime,
            accept_host_runtime,
            runtime_package,
            logging,
            ..Default::default()
        };
        // Ranges, names and the environment are checked where every function is checked; a
        // problem there is reported now, with this file and key, not at the first invocation.
        if let Err(e) = config.check_values() {
            self.problem(&at, e.to_string());
            return None;
        }
        let function_url = match t.get("function_url") {
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                self.wrong(&key("function_url"), "true or false", other);
                return None;
            }
            None => false,
        };
        Some(FunctionEntry {
            config,
            asynchronous,
            schedules,
            function_url,
        })
    }

    /// `log_format`, `application_log_level` and `system_log_level` of the function table at
    /// `at`: Lambda's values in any case. A level needs `log_format = "JSON"`, as on Lambda.
    fn logging(&mut self, at: &str, t: &toml::Table) -> LoggingConfig {
        fn parsed<T: std::str::FromStr<Err = String>>(
            this: &mut Checker,
            key: &str,
            value: Option<&toml::Value>,
        ) -> Option<T> {
            let text = this.string(key, value?)?;
            text.parse().map_err(|e| this.problem(key, e)).ok()
        }
        let key = |k: &str| format!("{at}.{k}");
        let logging = LoggingConfig {
            log_format: parsed(self, &key("log_format"), t.get("log_format")),
            application_log_level: parsed(
                self,
                &key("application_log_level"),
                t.get("application_log_level"),
            ),
            system_log_level: parsed(self, &key("system_log_level"), t.get("system_log_level")),
        };
        // (A format that is not one was reported already.)
        let text = match t.get("log_format") {
            None => true,
            Some(_) => logging.log_format == Some(LogFormat::Text),
        };
        if text {
            let levels = [
                (
                    "application_log_level",
                    logging.application_log_level.is_some(),
                ),
                ("system_log_level", logging.system_log_level.is_some()),
            ];
            for (level, set) in levels {
                if set {
                    self.problem(
                        &key(level),
                        "needs log_format = \"JSON\": Lambda refuses a log level with the Text \
                         format"
                            .into(),
                    );
                }
            }
        }
        logging
    }

    fn route(
        &mut self,
        index: usize,
        value: &toml::Value,
        declared: &[String],
    ) -> Option<RouteConfig> {
        let at = format!("routes[{index}]");
        let t = self.table(&at, value, ROUTE_KEYS)?;
        let before = self.problems.len();
        let key = |k: &str| format!("{at}.{k}");
        let mut required = |k: &str| match t.get(k) {
            Some(v) => self.string(&key(k), v),
            None => {
                self.problem(&key(k), "missing".into());
                None
            }
        };
        let function = required("function");
        let path = required("path");
        if let Some(f) = &function
            && !declared.contains(f)
        {
            self.problem(
                &key("function"),
                format!("no function {f:?} in [functions]"),
            );
        }
        let method = match t.get("method") {
            Some(v) => self
                .string(&key("method"), v)
                .map(|m| m.to_ascii_uppercase()),
            None => Some("ANY".to_owned()),
        };
        if let Some(m) = &method
            && !METHODS.contains(&m.as_str())
        {
            self.problem(
                &key("method"),
                format!("{m:?} is not one of {}", METHODS.join(", ")),
            );
        }
        if let Some(p) = &path
            && let Err(reason) = check_route_path(p)
        {
            self.problem(&key("path"), reason);
        }
        let payload = match t.get("payload").map(|v| (v.as_str(), v)) {
            None | Some((Some("2.0"), _)) => PayloadVersion::V2,
            Some((Some("1.0"), _)) => PayloadVersion::V1,
            Some((Some(other), _)) => {
                self.problem(
                    &key("payload"),
                    format!("{other:?} is not \"1.0\" or \"2.0\""),
                );
                PayloadVersion::V2
            }
            Some((None, v)) => {
                self.wrong(&key("payload"), "\"1.0\" or \"2.0\"", v);
                PayloadVersion::V2
            }
        };
        if self.problems.len() > before {
            return None;
        }
        Some(RouteConfig {
            method: method?,
            path: path?,
            function: function?,
            payload,
        })
    }

    fn serve(&mut self, value: &toml::Value) -> ServeSettings {
        let mut settings = ServeSettings::default();
        let Some(t) = self.table("serve", value, SERVE_KEYS) else {
            return settings;
        };
        if let Some(v) = t.get("listen")
            && let Some(s) = self.string("serve.listen", v)
        {
            match ListenAddr::parse(&s) {
                Ok(addr) => settings.listen = Some(addr),
                Err(e) => self.problem("serve.listen", e),
            }
        }
        if let Some(v) = t.get("network")
            && let Some(s) = self.string("serve.network", v)
        {
            match s.parse() {
                Ok(mode) => settings.network = Some(mode),
                Err(e) => self.problem("serve.network", e),
            }
        }
        if let Some(v) = t.get("queue")
            && let Some(s) = self.string("serve.queue", v)
        {
            match s.parse() {
                Ok(queue) => settings.queue = Some(queue),
                Err(e) => self.problem("serve.queue", e),
            }
        }
        if let Some(v) = t.get("queue_lease") {
            match v {
                toml::Value::Integer(n) if (1..=3600).contains(n) => {
                    settings.queue_lease = Some(Duration::from_secs(*n as u64));
                }
                toml::Value::Integer(_) => {
                    self.problem("serve.queue_lease", "must be 1 to 3600 seconds".into())
                }
                other => self.wrong("serve.queue_lease", "a number of seconds", other),
            }
        }
        if let Some(v) = t.get("state_dir") {
            let dir = self.string("serve.state_dir", v);
            settings.state_dir = dir.map(|s| self.base.join(s));
        }
        if let Some(v) = t.get("retry_delay") {
            let seconds = match v {
                toml::Value::Integer(n) => Some(*n as f64),
                toml::Value::Float(f) => Some(*f),
                other => {
                    self.wrong("serve.retry_delay", "a number of seconds", other);
                    None
                }
            };
            match seconds.map(Duration::try_from_secs_f64) {
                Some(Ok(d)) => settings.retry_delay = Some(d),
                Some(Err(_)) => self.problem(
                    "serve.retry_delay",
                    "must be a non-negative number of seconds".into(),
                ),
                None => {}
            }
        }
        settings
    }

    /// API Gateway refuses a second route with the same method and path.
    fn no_route_twice(&mut self, routes: &[RouteConfig]) {
        let mut seen = std::collections::HashSet::new();
        for (i, route) in routes.iter().enumerate() {
            let key = route.key();
            if !seen.insert(key.clone()) {
                self.problem(
                    &format!("routes[{i}]"),
                    format!("the route {key:?} is defined twice"),
                );
            }
        }
    }
}

/// `$default`, or `/` followed by segments that are literals, `{name}` or (last) `{name+}`.
pub fn check_route_path(path: &str) -> Result<(), String> {
    if path == "$default" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{path:?} must start with '/' (or be \"$default\")"));
    };
    if rest.is_empty() {
        return Ok(());
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let mut names = std::collections::HashSet::new();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            return Err(format!("{path:?} has an empty segment"));
        }
        let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            if segment.contains(['{', '}']) {
                return Err(format!(
                    "{path:?}: a parameter must be a whole segment, as {{name}}"
                ));
            }
            continue;
        };
        let (name, greedy) = match inner.strip_suffix('+') {
            Some(name) => (name, true),
            None => (inner, false),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{path:?}: {segment} is not a parameter name (letters, digits, '_')"
            ));
        }
        if greedy && i + 1 != segments.len() {
            return Err(format!(
                "{path:?}: the greedy {segment} must be the last segment"
            ));
        }
        if !names.insert(name) {
            return Err(format!("{path:?}: the parameter {name} appears twice"));
        }
    }
    Ok(())
}

/// The allowed values of a numeric key, as its range errors quote them (the last segment of
/// the dotted key names it).
fn allowed_range(at: &str) -> String {
    use crate::config::{MAX_CONCURRENCY, MEMORY_RANGE_MB, TIMEOUT_RANGE_SECS};
    let range = |r: &std::ops::RangeInclusive<u32>| format!("{}–{}", r.start(), r.end());
    match at.rsplit('.').next().unwrap_or(at) {
        "memory" => format!("Lambda's {} MB", range(&MEMORY_RANGE_MB)),
        "timeout" => format!("Lambda's {} s", range(&TIMEOUT_RANGE_SECS)),
        "init_timeout" => "1–900 s".into(),
        "ephemeral_storage" => "Lambda's 512–10240 MB".into(),
        "concurrency" => format!("1–{MAX_CONCURRENCY}"),
        "idle_timeout" => format!("1–{} s", u32::MAX),
        "max_retry_attempts" | "maximum_retry_attempts" => "Lambda's 0–2".into(),
        "maximum_event_age" => "Lambda's 60–21600 s".into(),
        "batch_size" => "Lambda's 1–10000".into(),
        "maximum_batching_window" => "Lambda's 0–300 s".into(),
        "maximum_concurrency" => "Lambda's 2–1000".into(),
        _ => format!("0–{}", u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, dir: &Path) -> Result<Manifest, Vec<String>> {
        Manifest::parse(&dir.join(FILE_NAME), text).map_err(|e| e.problems)
    }

    #[test]
    fn a_full_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("fn")).unwrap();
        let m = parse(
            r#"
            [functions.hello]
            code = "fn"
            handler = "hello"
            memory = 256
            timeout = 5
            ephemeral_storage = 1024
            environment = { GREETING = "hi", N = 3 }
            concurrency = 10

            [[routes]]
            method = "get"
            path = "/hello/{name}"
            function = "hello"
            payload = "1.0"

            [serve]
            listen = "127.0.0.1:9999"
            retry_delay = 0.5
            network = "none"
            "#,
            dir.path(),
        )
        .unwrap();
        let hello = &m.functions["hello"].config;
        assert_eq!(hello.code, dir.path().join("fn"));
        assert_eq!(hello.memory_mb, Some(256));
        assert_eq!(
            hello.environment,
            [("GREETING".into(), "hi".into()), ("N".into(), "3".into())]
        );
        assert_eq!(m.functions["hello"].asynchronous.maximum_retry_attempts, 2);
        assert_eq!(m.routes[0].method, "GET");
        assert_eq!(m.routes[0].payload, PayloadVersion::V1);
        assert_eq!(m.serve.retry_delay, Some(Duration::from_millis(500)));
        assert_eq!(m.serve.network, Some(NetworkMode::None));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("fn")).unwrap();
        let problems = parse(
            r#"
            colour = "blue"
            [functions.a]
            code = "missing-dir"
            memory = "lots"
            retries = 1
            [functions.b]
            code = "fn"
            memory = 64
            [[routes]]
            path = "/x/{proxy+}/y"
            function = "nope"
            method = "FETCH"
            [serve]
            network = "vpc"
            "#,
            dir.path(),
        )
        .unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "lamina.toml: colour: unknown key",
            "functions.a.code: ",
            "missing-dir does not exist",
            "functions.a.memory: expected an integer, found a string",
            "functions.a.retries: unknown key",
            "functions.b: memory: 64 MB is outside",
            "routes[0].method: \"FETCH\"",
            "routes[0].path: ",
            "routes[0].function: no function \"nope\"",
            "serve.network: \"vpc\" is not a network mode: \"outbound\", \"none\" or \"host\"",
        ] {
            assert!(all.contains(expected), "{expected:?} not in:\n{all}");
        }
        assert!(problems.iter().all(|p| p.contains("lamina.toml: ")));
    }

    #[test]
    fn logging_controls_are_read_in_any_case_and_checked() {
        use crate::config::logging::{ApplicationLogLevel, SystemLogLevel};
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("fn")).unwrap();
        let m = parse(
            r#"
            [functions.a]
            code = "fn"
            log_format = "json"
            application_log_level = "debug"
            system_log_level = "WARN"
            [functions.b]
            code = "fn"
            "#,
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            m.functions["a"].config.logging,
            LoggingConfig {
                log_format: Some(LogFormat::Json),
                application_log_level: Some(ApplicationLogLevel::Debug),
                system_log_level: Some(SystemLogLevel::Warn),
            }
        );
        assert_eq!(m.functions["b"].config.logging, LoggingConfig::default());

        let problems = parse(
            r#"
            [functions.loud]
            code = "fn"
            log_format = "JSON"
            application_log_level = "LOUD"
            system_log_level = "TRACE"
            [functions.text]
            code = "fn"
            log_format = "Text"
            application_log_level = "INFO"
            [functions.unset]
            code = "fn"
            system_log_level = "DEBUG"
            [functions.yaml]
            code = "fn"
            log_format = "yaml"
            "#,
            dir.path(),
        )
        .unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "lamina.toml: functions.loud.application_log_level: \"LOUD\" is not an application \
             log level: TRACE, DEBUG, INFO, WARN, ERROR or FATAL",
            "lamina.toml: functions.loud.system_log_level: \"TRACE\" is not a system log level: \
             DEBUG, INFO or WARN",
            "lamina.toml: functions.text.application_log_level: needs log_format = \"JSON\"",
            "lamina.toml: functions.unset.system_log_level: needs log_format = \"JSON\"",
            "lamina.toml: functions.yaml.log_format: \"yaml\" is not a log format: \"Text\" or \
             \"JSON\"",
        ] {
            assert!(all.contains(expected), "{expected:?} not in:\n{all}");
        }
        assert_eq!(problems.len(), 5, "{all}");
    }

    #[test]
    fn a_syntax_error_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let problems = parse("[functions.a]\ncode = \n", dir.path()).unwrap_err();
        assert!(problems[0].contains("lamina.toml"), "{problems:?}");
        assert!(problems[0].contains("line 2"), "{problems:?}");
    }

    #[test]
    fn route_paths() {
        assert!(check_route_path("$default").is_ok());
        assert!(check_route_path("/").is_ok());
        assert!(check_route_path("/a/{b}/{proxy+}").is_ok());
        assert!(check_route_path("a").is_err());
        assert!(check_route_path("/a//b").is_err());
        assert!(check_route_path("/{proxy+}/b").is_err());
        assert!(check_route_path("/x{y}").is_err());
        assert!(check_route_path("/{a}/{a}").is_err());
    }
    #[test]
    fn schedules_are_read_as_one_or_a_list() {
        let text = "[functions.a]\ncode = \".\"\nschedule = \"rate(1 minute)\"\n\n[functions.b]\ncode = \".\"\nschedule = [\"cron(0 12 * * ? *)\", \"rate(2 hours)\"]\n";
        let manifest = Manifest::parse(Path::new("lamina.toml"), text).unwrap();
        let a = &manifest.functions["a"].schedules;
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].expression, "rate(1 minute)");
        assert_eq!(a[0].at, "lamina.toml: functions.a.schedule");
        let b: Vec<&str> = manifest.functions["b"]
            .schedules
            .iter()
            .map(|s| s.expression.as_str())
            .collect();
        assert_eq!(b, ["cron(0 12 * * ? *)", "rate(2 hours)"]);
        let urls = Manifest::parse(
            Path::new("lamina.toml"),
            "[functions.a]\ncode = \".\"\nfunction_url = true\n[functions.b]\ncode = \".\"\n",
        )
        .unwrap();
        assert_eq!(urls.function_urls, ["a"]);
        let bad = Manifest::parse(
            Path::new("lamina.toml"),
            "[functions.a]\ncode = \".\"\nschedule = 5\n",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("functions.a.schedule"), "{bad}");
    }

    #[test]
    fn sqs_event_sources_are_read_with_lambdas_defaults_and_limits() {
        let text = r#"
            [functions.worker]
            code = "."
            [[event_sources]]
            type = "sqs"
            queue = "http://127.0.0.1:5000/000000000000/jobs"
            function = "worker"
            batch_size = 100
            maximum_batching_window = 2
            report_batch_item_failures = true
            maximum_concurrency = 5
            [[event_sources]]
            type = "sqs"
            queue = "arn:aws:sqs:eu-west-1:123456789012:other"
            function = "worker"
            enabled = false
        "#;
        let m = Manifest::parse(Path::new("lamina.toml"), text).unwrap();
        let first = &m.event_sources[0];
        assert_eq!(first.queue, "http://127.0.0.1:5000/000000000000/jobs");
        assert_eq!(
            (first.batch_size, first.maximum_batching_window.as_secs()),
            (100, 2)
        );
        assert!(first.report_batch_item_failures && first.enabled);
        assert_eq!(first.maximum_concurrency, Some(5));
        assert_eq!(first.at, "lamina.toml: event_sources[0]");
        let second = &m.event_sources[1];
        assert_eq!(
            second.queue,
            "https://sqs.eu-west-1.amazonaws.com/123456789012/other"
        );
        assert_eq!((second.batch_size, second.enabled), (10, false));
        assert_eq!(second.maximum_batching_window, Duration::ZERO);
        assert!(!second.report_batch_item_failures);
        let bad = Manifest::parse(
            Path::new("lamina.toml"),
            r#"
            [functions.worker]
            code = "."
            [[event_sources]]
            type = "kinesis"
            queue = "jobs"
            function = "nobody"
            batch_size = 20
            maximum_concurrency = 1
            colour = "red"
            [[event_sources]]
            queue = "http://h/1/q.fifo"
            function = "worker"
            batch_size = 11
            maximum_batching_window = 301
            enabled = "yes"
            "#,
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "lamina.toml: event_sources[0].type: \"kinesis\": lamina runs \"sqs\"",
            "event_sources[0].queue: \"jobs\" is not an SQS queue URL",
            "event_sources[0].function: no function \"nobody\"",
            "event_sources[0].maximum_batching_window: a batch_size of 20 (over 10) needs",
            "event_sources[0].maximum_concurrency: 1 is outside Lambda's 2–1000",
            "event_sources[0].colour: unknown key",
            "event_sources[1].type: missing",
            "event_sources[1].batch_size: 11 is outside a FIFO queue's 1–10",
            "event_sources[1].maximum_batching_window: 301 s is outside",
            "event_sources[1].enabled: expected true or false, found a string",
        ] {
            assert!(bad.contains(expected), "{expected:?} not in:\n{bad}");
        }
    }
}
