//! Lambda's advanced logging controls, its `LoggingConfig`: the log format (`Text` or `JSON`),
//! the application log level the runtime is told (`AWS_LAMBDA_LOG_LEVEL`) and the system log
//! level lamina's own platform records are filtered by (`telemetry::platform_format`).
//!
//! The values are read from `lamina.toml`, SAM templates and `lamina invoke`'s flags with
//! Lambda's spellings, whatever their case (the API's own spellings are `JSON`, `Text`, `INFO`,
//! …), into the enums here. [`LoggingConfig`] is what the user wrote, each part optional;
//! [`Logging`] is what a [`super::FunctionSpec`] holds, defaults filled in.

use std::fmt;
use std::str::FromStr;

use super::ConfigError;

/// `LogFormat`: how the function's log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Lambda's plain text lines (`START RequestId: …`); Lambda's default.
    #[default]
    Text,
    /// Lambda's JSON records (`{"type":"platform.start",…}`); log levels apply.
    Json,
}

impl LogFormat {
    /// As Lambda spells it, in the API and in `AWS_LAMBDA_LOG_FORMAT`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "Text",
            LogFormat::Json => "JSON",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TEXT" => Ok(LogFormat::Text),
            "JSON" => Ok(LogFormat::Json),
            _ => Err(format!("{s:?} is not a log format: \"Text\" or \"JSON\"")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ApplicationLogLevel`: the least severe level of the function's own log lines that are
/// kept, from the most detailed (`TRACE`) to the least (`FATAL`). The runtime applies it (AWS's
/// clients read `AWS_LAMBDA_LOG_LEVEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ApplicationLogLevel {
    /// `TRACE`.
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`, Lambda's default with the JSON format.
    Info,
    /// `WARN`.
    Warn,
    /// `ERROR`.
    Error,
    /// `FATAL`.
    Fatal,
}

impl ApplicationLogLevel {
    /// As Lambda spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationLogLevel::Trace => "TRACE",
            ApplicationLogLevel::Debug => "DEBUG",
            ApplicationLogLevel::Info => "INFO",
            ApplicationLogLevel::Warn => "WARN",
            ApplicationLogLevel::Error => "ERROR",
            ApplicationLogLevel::Fatal => "FATAL",
        }
    }
}

impl FromStr for ApplicationLogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TRACE" => Ok(ApplicationLogLevel::Trace),
            "DEBUG" => Ok(ApplicationLogLevel::Debug),
            "INFO" => Ok(ApplicationLogLevel::Info),
            "WARN" => Ok(ApplicationLogLevel::Warn),
            "ERROR" => Ok(ApplicationLogLevel::Error),
            "FATAL" => Ok(ApplicationLogLevel::Fatal),
            _ => Err(format!(
                "{s:?} is not an application log level: TRACE, DEBUG, INFO, WARN, ERROR or FATAL"
            )),
        }
    }
}

impl fmt::Display for ApplicationLogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `SystemLogLevel`: the least severe level of the platform's own records that are kept, from
/// the most detailed (`DEBUG`) to the least (`WARN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum SystemLogLevel {
    /// `DEBUG`.
    Debug,
    /// `INFO`, Lambda's default with the JSON format.
    #[default]
    Info,
    /// `WARN`.
    Warn,
}

impl SystemLogLevel {
    /// As Lambda spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SystemLogLevel::Debug => "DEBUG",
            SystemLogLevel::Info => "INFO",
            SystemLogLevel::Warn => "WARN",
        }
    }
}

impl FromStr for SystemLogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "DEBUG" => Ok(SystemLogLevel::Debug),
            "INFO" => Ok(SystemLogLevel::Info),
            "WARN" => Ok(SystemLogLevel::Warn),
            _ => Err(format!(
                "{s:?} is not a system log level: DEBUG, INFO or WARN"
            )),
        }
    }
}

impl fmt::Display for SystemLogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A function's `LoggingConfig` as its user wrote it: each part may be absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoggingConfig {
    /// `log_format` / `LogFormat` / `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `application_log_level` / `ApplicationLogLevel` / `--application-log-level`.
    pub application_log_level: Option<ApplicationLogLevel>,
    /// `system_log_level` / `SystemLogLevel` / `--system-log-level`.
    pub system_log_level: Option<SystemLogLevel>,
}

/// A function's logging, resolved. Per function, in its [`super::FunctionSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Logging {
    /// The format of the platform's lines, and what the runtime is told.
    pub format: LogFormat,
    /// `AWS_LAMBDA_LOG_LEVEL`: with the JSON format only (Lambda's default then, `INFO`).
    pub application_level: Option<ApplicationLogLevel>,
    /// What the platform's JSON records are filtered by (`INFO` unless set); the text lines
    /// are never filtered.
    pub system_level: SystemLogLevel,
}

impl LoggingConfig {
    /// Fills in Lambda's defaults. A log level needs the JSON format: Lambda refuses a level
    /// with `Text` (the API answers `LogLevel is not supported when LogFormat is set to
    /// "Text". Remove LogLevel from your request or change the LogFormat to "Json" and try
    /// again.`, as CloudFormation reports it; aws/aws-cdk#28045 checks the same at synthesis),
    /// and so does lamina, naming the level's key. An unset format is Text, as on Lambda.
    pub fn resolve(&self) -> Result<Logging, ConfigError> {
        let format = self.log_format.unwrap_or_default();
        if format == LogFormat::Text {
            let refuse = |field: &str, level: &dyn fmt::Display| {
                Err(super::invalid(
                    field,
                    format!(
                        "{level} needs the JSON log format: Lambda refuses a log level with \
                         the Text format"
                    ),
                ))
            };
            if let Some(level) = self.application_log_level {
                return refuse("application-log-level", &level);
            }
            if let Some(level) = self.system_log_level {
                return refuse("system-log-level", &level);
            }
            return Ok(Logging::default());
        }
        Ok(Logging {
            format,
            application_level: Some(
                self.application_log_level
                    .unwrap_or(ApplicationLogLevel::Info),
            ),
            system_level: self.system_log_level.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambdas_spellings_are_read_whatever_their_case() {
        assert_eq!("JSON".parse(), Ok(LogFormat::Json));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("Text".parse(), Ok(LogFormat::Text));
        assert_eq!("TEXT".parse(), Ok(LogFormat::Text));
        assert_eq!("trace".parse(), Ok(ApplicationLogLevel::Trace));
        assert_eq!("Fatal".parse(), Ok(ApplicationLogLevel::Fatal));
        assert_eq!("warn".parse(), Ok(SystemLogLevel::Warn));
        let loud = "LOUD".parse::<ApplicationLogLevel>().unwrap_err();
        assert!(
            loud.contains("\"LOUD\"") && loud.contains("TRACE, DEBUG"),
            "{loud}"
        );
        // TRACE and ERROR are application levels only.
        assert!("TRACE".parse::<SystemLogLevel>().is_err());
        assert!("ERROR".parse::<SystemLogLevel>().is_err());
        assert!(
            "yaml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("\"Text\" or \"JSON\"")
        );
        assert_eq!(LogFormat::Json.to_string(), "JSON");
        assert_eq!(ApplicationLogLevel::Warn.to_string(), "WARN");
    }

    #[test]
    fn defaults_are_lambdas_and_a_level_needs_json() {
        assert_eq!(
            LoggingConfig::default().resolve().unwrap(),
            Logging {
                format: LogFormat::Text,
                application_level: None,
                system_level: SystemLogLevel::Info,
            }
        );
        let json = LoggingConfig {
            log_format: Some(LogFormat::Json),
            ..Default::default()
        };
        assert_eq!(
            json.resolve().unwrap(),
            Logging {
                format: LogFormat::Json,
                application_level: Some(ApplicationLogLevel::Info),
                system_level: SystemLogLevel::Info,
            }
        );
        for (config, field) in [
            (
                LoggingConfig {
                    application_log_level: Some(ApplicationLogLevel::Debug),
                    ..Default::default()
                },
                "application-log-level",
            ),
            (
                LoggingConfig {
                    log_format: Some(LogFormat::Text),
                    system_log_level: Some(SystemLogLevel::Debug),
                    ..Default::default()
                },
                "system-log-level",
            ),
        ] {
            let err = config.resolve().unwrap_err().to_string();
            assert!(err.starts_with(field) && err.contains("JSON"), "{err}");
        }
    }
}
