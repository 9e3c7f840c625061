//! `--env-file FILE`: environment variables for the functions from a file, in one of two
//! shapes. SAM's `--env-vars` JSON, `{"LogicalId": {"KEY": "value"}, "Parameters": {"KEY":
//! "value"}}`, where `Parameters` applies to every function and a function's own object (by
//! logical id or function name) wins over it; or a `.env` file of `KEY=VALUE` lines for every
//! function (`#` comments, an optional `export `, values optionally in single or double
//! quotes). The file's values win over the configuration's.
//!
//! One deviation from SAM, on purpose: SAM ignores a variable the template does not declare;
//! lamina sets it, since a variable that silently does nothing is the harder surprise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// A read env file.
#[derive(Debug, Clone, Default)]
pub struct EnvFile {
    /// For every function.
    all: Vec<(String, String)>,
    /// By logical id or function name.
    per_function: BTreeMap<String, Vec<(String, String)>>,
}

/// An env file that cannot be used, naming the file and the line or key.
#[derive(Debug, thiserror::Error)]
#[error("--env-file {path}: {reason}")]
pub struct EnvFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and where.
    pub reason: String,
}

impl EnvFile {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<EnvFile, EnvFileError> {
        let err = |reason: String| EnvFileError {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        match text.trim_start().starts_with('{') {
            true => Self::from_json(&text).map_err(err),
            false => Self::from_dotenv(&text).map_err(err),
        }
    }

    fn from_json(text: &str) -> Result<EnvFile, String> {
        let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let Some(root) = root.as_object() else {
            return Err("expected an object of functions' variables".into());
        };
        let mut file = EnvFile::default();
        for (key, vars) in root {
            let Some(vars) = vars.as_object() else {
                return Err(format!("{key}: expected an object of variables"));
            };
            let mut out = Vec::new();
            for (name, value) in vars {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    other => return Err(format!("{key}.{name}: expected a string, found {other}")),
                };
                out.push((name.clone(), text));
            }
            match key.as_str() {
                "Parameters" => file.all = out,
                _ => {
                    file.per_function.insert(key.clone(), out);
                }
            }
        }
        Ok(file)
    }

    fn from_dotenv(text: &str) -> Result<EnvFile, String> {
        let mut all = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected KEY=VALUE", i + 1));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("line {}: no name before =", i + 1));
            }
            let value = value.trim();
            let value = match (value.chars().next(), value.chars().last()) {
                (Some(q @ ('"' | '\'')), Some(end)) if value.len() >= 2 && end == q => {
                    value[1..value.len() - 1].to_owned()
                }
                _ => value
                    .split(" #")
                    .next()
                    .unwrap_or_default()
                    .trim_end()
                    .to_owned(),
            };
            all.push((key.to_owned(), value));
        }
        Ok(EnvFile {
            all,
            per_function: BTreeMap::new(),
        })
    }

    /// The variables for the function known as `key` (a logical id or a `[functions]` name)
    /// and named `name`: the file's common ones, then its own.
    pub fn for_function(&self, key: &str, name: &str) -> Vec<(String, String)> {
        let own = self
            .per_function
            .get(key)
            .or_else(|| self.per_function.get(name));
        self.all
            .iter()
            .chain(own.into_iter().flatten())
            .cloned()
            .collect()
    }

    /// Applies the file to a function's variables: a variable it names takes its value (in
    /// place), a new one is added.
    pub fn apply(&self, key: &str, name: &str, environment: &mut Vec<(String, String)>) {
        for (k, v) in self.for_function(key, name) {
            environment.retain(|(existing, _)| *existing != k);
            environment.push((k, v));
        }
    }

    /// The function keys the file names that `known` does not contain: a typo there would
    /// otherwise go unnoticed.
    pub fn unknown_functions<'a>(&'a self, known: &[(&str, &str)]) -> Vec<&'a str> {
        self.per_function
            .keys()
            .filter(|k| !known.iter().any(|(key, name)| key == k || name == k))
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sams_shape_gives_common_then_own_values() {
        let file = EnvFile::from_json(
            r#"{"Parameters": {"STAGE": "test", "N": 3}, "HelloFunction": {"STAGE": "own", "X": true}}"#,
        )
        .unwrap();
        let mut env = vec![
            ("STAGE".into(), "template".into()),
            ("KEEP".into(), "k".into()),
        ];
        file.apply("HelloFunction", "hello", &mut env);
        assert_eq!(
            env,
            vec![
                ("KEEP".to_owned(), "k".to_owned()),
                ("N".to_owned(), "3".to_owned()),
                ("STAGE".to_owned(), "own".to_owned()),
                ("X".to_owned(), "true".to_owned()),
            ]
        );
        assert_eq!(file.for_function("Other", "hello-by-name").len(), 2);
        assert_eq!(
            file.unknown_functions(&[("Other", "x")]),
            vec!["HelloFunction"]
        );
        assert!(
            EnvFile::from_json(r#"{"F": {"A": {"nested": 1}}}"#)
                .unwrap_err()
                .contains("F.A")
        );
    }

    #[test]
    fn dotenv_lines_are_read_as_shells_write_them() {
        let file = EnvFile::from_dotenv(
            "# comment\nA=1\nexport B=two words\nC=\"quoted # not a comment\"\nD='single'\nE=x # trailing\n\nF=\n",
        )
        .unwrap();
        assert_eq!(
            file.for_function("any", "any"),
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "two words".to_owned()),
                ("C".to_owned(), "quoted # not a comment".to_owned()),
                ("D".to_owned(), "single".to_owned()),
                ("E".to_owned(), "x".to_owned()),
                ("F".to_owned(), String::new()),
            ]
        );
        assert!(
            EnvFile::from_dotenv("A=1\nnonsense\n")
                .unwrap_err()
                .contains("line 2")
        );
    }
}
