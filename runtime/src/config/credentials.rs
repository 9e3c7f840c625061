//! AWS credentials for the functions, as Lambda gives its execution role's
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`): taken from the
//! caller's own AWS configuration, as SAM local does. With no `--profile`, the caller's
//! environment variables first; then the profile (`--profile`, `AWS_PROFILE`, else
//! `default`) in `~/.aws/credentials` and `~/.aws/config` (or `AWS_SHARED_CREDENTIALS_FILE`,
//! `AWS_CONFIG_FILE`). Static keys only: a profile that gets its keys from SSO, a role or a
//! process is named with the command that exports them. They are never logged (`Debug` shows
//! only the key id's first characters).
//!
//! Not `aws-config`: it would bring a large part of the AWS SDK into every build, and reach
//! out to STS or SSO on the user's behalf at start-up, which a local runner should not do
//! unasked; the files' static keys are a small, documented INI subset.

use std::path::{Path, PathBuf};

/// A set of credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = self.access_key_id.chars().take(4).collect();
        write!(f, "Credentials({shown}…, secret and token hidden)")
    }
}

impl Credentials {
    /// The variables Lambda sets for them.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            ("AWS_ACCESS_KEY_ID".to_owned(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                self.secret_access_key.clone(),
            ),
        ];
        if let Some(token) = &self.session_token {
            vars.push(("AWS_SESSION_TOKEN".to_owned(), token.clone()));
        }
        vars
    }
}

/// Why credentials could not be had from the profile asked for.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The profile is in neither file.
    #[error("--profile {profile}: no such profile in {credentials} or {config}")]
    NoProfile {
        /// The profile.
        profile: String,
        /// The credentials file looked in.
        credentials: String,
        /// The config file looked in.
        config: String,
    },
    /// The profile has no static keys.
    #[error(
        "--profile {profile}: it gets its keys from {via}, which lamina does not call; export \
         them first (eval \"$(aws configure export-credentials --profile {profile} --format \
         env)\") and run lamina without --profile, or run with --no-credentials"
    )]
    NotStatic {
        /// The profile.
        profile: String,
        /// What it uses instead (`sso_session`, `role_arn`, `credential_process`, …).
        via: String,
    },
}

/// Where the caller's configuration is.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The caller's environment, as `(name, value)`.
    pub env: Vec<(String, String)>,
    /// The home directory.
    pub home: Option<PathBuf>,
}

impl Sources {
    /// This process's environment and home.
    pub fn of_this_process() -> Sources {
        Sources {
            env: std::env::vars().collect(),
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn file(&self, variable: &str, default: &str) -> Option<PathBuf> {
        self.var(variable)
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|h| h.join(default)))
    }
}

/// The caller's credentials: `Ok(None)` when there are none (and none were asked for by
/// name).
pub fn from_caller(
    profile: Option<&str>,
    sources: &Sources,
) -> Result<Option<Credentials>, CredentialsError> {
    if profile.is_none()
        && let (Some(id), Some(secret)) = (
            sources.var("AWS_ACCESS_KEY_ID"),
            sources.var("AWS_SECRET_ACCESS_KEY"),
        )
    {
        return Ok(Some(Credentials {
            access_key_id: id.to_owned(),
            secret_access_key: secret.to_owned(),
            session_token: sources.var("AWS_SESSION_TOKEN").map(str::to_owned),
        }));
    }
    let explicit = profile.is_some() || sources.var("AWS_PROFILE").is_some();
    let name = profile
        .or_else(|| sources.var("AWS_PROFILE"))
        .unwrap_or("default")
        .to_owned();
    let credentials_file = sources.file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let config_file = sources.file("AWS_CONFIG_FILE", ".aws/config");
    let config_section = match name.as_str() {
        "default" => "default".to_owned(),
        other => format!("profile {other}"),
    };
    let sections = [
        credentials_file.as_deref().and_then(|f| section(f, &name)),
        config_file
            .as_deref()
            .and_then(|f| section(f, &config_section)),
    ];
    let mut found_any = false;
    let mut not_static = None;
    for keys in sections.into_iter().flatten() {
        found_any = true;
        let get = |k: &str| {
            keys.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        if let (Some(id), Some(secret)) = (get("aws_access_key_id"), get("aws_secret_access_key")) {
            return Ok(Some(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: get("aws_session_token"),
            }));
        }
        for source in [
            "sso_session",
            "sso_start_url",
            "role_arn",
            "credential_process",
            "web_identity_token_file",
        ] {
            if get(source).is_some() && not_static.is_none() {
                not_static = Some(source.to_owned());
            }
        }
    }
    match (found_any, not_static, explicit) {
        (_, Some(via), true) => Err(CredentialsError::NotStatic { profile: name, via }),
        (false, _, true) => Err(CredentialsError::NoProfile {
            profile: name,
            credentials: shown(credentials_file.as_deref()),
            config: shown(config_file.as_deref()),
        }),
        // The default profile, absent or not static: the functions get no credentials, as
        // they would not on a machine with no AWS configuration.
        _ => Ok(None),
    }
}

fn shown(path: Option<&Path>) -> String {
    path.map_or_else(
        || "(no home directory)".to_owned(),
        |p| p.display().to_string(),
    )
}

/// The `key = value` pairs of `[name]` in an INI-style AWS file.
fn section(path: &Path, name: &str) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut inside = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = header.trim() == name;
            if inside {
                found.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            found
                .get_or_insert_with(Vec::new)
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(credentials: &str, config: &str) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(home.path().join(".aws/credentials"), credentials).unwrap();
        std::fs::write(home.path().join(".aws/config"), config).unwrap();
        home
    }

    fn sources(home: &Path, env: &[(&str, &str)]) -> Sources {
        Sources {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            home: Some(home.to_owned()),
        }
    }

    const CREDENTIALS: &str = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n\n[dev]\naws_access_key_id=AKIADEV\naws_secret_access_key=s2\naws_session_token=t2\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n[profile cfg]\naws_access_key_id = AKIACFG\naws_secret_access_key = s3\n[profile sso]\nsso_session = corp\n";

    #[test]
    fn the_callers_usual_configuration_is_followed() {
        let h = home(CREDENTIALS, CONFIG);
        let env = [
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "s0"),
        ];
        let from_env = from_caller(None, &sources(h.path(), &env))
            .unwrap()
            .unwrap();
        assert_eq!(from_env.access_key_id, "AKIAENV");
        // --profile wins over the environment's keys.
        let dev = from_caller(Some("dev"), &sources(h.path(), &env))
            .unwrap()
            .unwrap();
        assert_eq!(
            (dev.access_key_id.as_str(), dev.session_token.as_deref()),
            ("AKIADEV", Some("t2"))
        );
        let default = from_caller(None, &sources(h.path(), &[])).unwrap().unwrap();
        assert_eq!(default.access_key_id, "AKIADEFAULT");
        let by_env = from_caller(None, &sources(h.path(), &[("AWS_PROFILE", "cfg")]))
            .unwrap()
            .unwrap();
        assert_eq!(by_env.access_key_id, "AKIACFG");
        let err = from_caller(Some("sso"), &sources(h.path(), &[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sso_session") && err.contains("export-credentials"),
            "{err}"
        );
        let err = from_caller(Some("nope"), &sources(h.path(), &[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope") && err.contains(".aws/credentials"),
            "{err}"
        );
        // Nothing configured, nothing asked for: no credentials, no error.
        let empty = home("", "");
        assert_eq!(
            from_caller(None, &sources(empty.path(), &[])).unwrap(),
            None
        );
        // The secret never shows in Debug.
        let shown = format!("{dev:?}");
        assert!(
            !shown.contains("s2") && !shown.contains("t2") && !shown.contains("AKIADEV"),
            "{shown}"
        );
    }
}
