//! A function's `LoggingConfig` in a SAM template (`Globals.Function` merged in, as any map):
//! `LogFormat`, `ApplicationLogLevel`, `SystemLogLevel` as Lambda's API takes them, into the
//! same [`LoggingConfig`] `lamina.toml` gives; `LogGroup` is noted as unused.

use serde_json::Value;

use super::Reader;
use crate::config::logging::{LogFormat, LoggingConfig};

impl Reader {
    /// The function `id`'s `LoggingConfig`, `value` with its intrinsics evaluated. Every value
    /// that is not one of Lambda's is a problem naming its property, and so is a level without
    /// `LogFormat: JSON` (CloudFormation refuses it: "LogLevel is not supported when LogFormat
    /// is set to "Text"").
    pub(super) fn logging_config(&mut self, id: &str, value: &Value) -> LoggingConfig {
        let at = |key: &str| format!("Resources.{id}.Properties.LoggingConfig.{key}");
        let Some(map) = value.as_object() else {
            self.problem(
                &format!("Resources.{id}.Properties.LoggingConfig"),
                format!("expected a map, found {value}"),
            );
            return LoggingConfig::default();
        };
        let mut logging = LoggingConfig::default();
        for (key, value) in map {
            let text = match value {
                Value::String(s) => s.as_str(),
                other if key != "LogGroup" => {
                    self.problem(&at(key), format!("expected a string, found {other}"));
                    continue;
                }
                _ => "",
            };
            let parsed = match key.as_str() {
                "LogFormat" => text.parse().map(|f| logging.log_format = Some(f)),
                "ApplicationLogLevel" => text
                    .parse()
                    .map(|l| logging.application_log_level = Some(l)),
                "SystemLogLevel" => text.parse().map(|l| logging.system_log_level = Some(l)),
                "LogGroup" => {
                    self.note(
                        &at(key),
                        "not used by lamina: the function's lines go to lamina's stderr, and \
                         AWS_LAMBDA_LOG_GROUP_NAME stays /aws/lambda/NAME",
                    );
                    Ok(())
                }
                _ => {
                    self.note(&at(key), "not a property lamina knows; ignored");
                    Ok(())
                }
            };
            if let Err(e) = parsed {
                self.problem(&at(key), e);
            }
        }
        let text = match map.get("LogFormat") {
            None => true,
            Some(_) => logging.log_format == Some(LogFormat::Text),
        };
        if text {
            let levels = [
                (
                    "ApplicationLogLevel",
                    logging.application_log_level.is_some(),
                ),
                ("SystemLogLevel", logging.system_log_level.is_some()),
            ];
            for (key, set) in levels {
                if set {
                    self.problem(
                        &at(key),
                        "needs LogFormat: JSON: Lambda refuses a log level with the Text format",
                    );
                }
            }
        }
        logging
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Options, parse};
    use crate::config::logging::{ApplicationLogLevel, LogFormat, LoggingConfig, SystemLogLevel};

    fn read(logging: &str) -> Result<super::super::Loaded, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let template = format!(
            "Transform: AWS::Serverless-2016-10-31\n\
             Globals:\n  Function:\n    LoggingConfig:\n      LogFormat: JSON\n\
             Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n\
             \x20     CodeUri: .\n      Runtime: provided.al2023\n      LoggingConfig:\n{logging}"
        );
        parse(
            &dir.path().join("template.yaml"),
            &template,
            &Options::default(),
        )
        .map_err(|e| e.problems)
    }

    #[test]
    fn logging_config_is_read_with_its_globals_and_checked() {
        let loaded = read(
            "        ApplicationLogLevel: debug\n        SystemLogLevel: WARN\n        \
             LogGroup: /custom\n",
        )
        .unwrap();
        assert_eq!(
            loaded.manifest.functions["Fn"].config.logging,
            LoggingConfig {
                log_format: Some(LogFormat::Json),
                application_log_level: Some(ApplicationLogLevel::Debug),
                system_log_level: Some(SystemLogLevel::Warn),
            }
        );
        assert!(
            loaded
                .notes
                .iter()
                .any(|n| n.contains("Fn.Properties.LoggingConfig.LogGroup: not used by lamina")),
            "{:?}",
            loaded.notes
        );

        let problems = read("        LogFormat: Text\n        SystemLogLevel: INFO\n").unwrap_err();
        assert!(
            problems.iter().any(|p| p.ends_with(
                "Resources.Fn.Properties.LoggingConfig.SystemLogLevel: needs LogFormat: JSON: \
                 Lambda refuses a log level with the Text format"
            )),
            "{problems:?}"
        );
        let problems = read("        ApplicationLogLevel: LOUD\n").unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains(
                "Resources.Fn.Properties.LoggingConfig.ApplicationLogLevel: \"LOUD\" is not an \
                 application log level"
            )),
            "{problems:?}"
        );
    }
}
