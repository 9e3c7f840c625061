//! Managed runtimes: a function that names `python3.N` or `nodejsN.x` runs without a
//! `bootstrap` of its own, as on Lambda. lamina supplies the runtime from two parts: the host's
//! interpreter of that version ([`interpreter`]), and AWS's official runtime interface client
//! (`awslambdaric` from PyPI, `aws-lambda-ric` from npm, pinned) installed once into the cache
//! as a tree of its own ([`install`]). In the jail the client is `/var/runtime` and an
//! interpreter living outside `/usr` is `/var/lang`, where Lambda has them; the interpreter is
//! the bootstrap, and the environment is Lambda's (`AWS_EXECUTION_ENV`, `PATH`, `PYTHONPATH` or
//! `NODE_PATH`). `provided.al2023` and `provided.al2` are what lamina always ran: the
//! function's own bootstrap.

pub mod install;
pub mod interpreter;

use std::fmt;
use std::path::{Path, PathBuf};

pub use interpreter::Interpreter;

/// The pinned version of Python's runtime interface client.
pub const AWSLAMBDARIC: &str = "4.2.2";
/// The pinned version of Node.js's runtime interface client. (4.x needs Node.js ≥ 22; 3.3.0
/// runs on 18 and later.)
pub const AWS_LAMBDA_RIC: &str = "3.3.0";

/// A function's `Runtime`, by Lambda's identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeName {
    /// `provided.al2023`, `provided.al2` or `provided`: the function's own bootstrap.
    Provided,
    /// `python3.N`.
    Python {
        /// N.
        minor: u32,
    },
    /// `nodejsN.x`.
    Node {
        /// N.
        major: u32,
    },
}

impl std::str::FromStr for RuntimeName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let unknown = || {
            format!(
                "{s:?} is not a runtime lamina runs: python3.N (python3.12), nodejsN.x \
                 (nodejs20.x), provided.al2023 or provided.al2"
            )
        };
        if matches!(s, "provided" | "provided.al2" | "provided.al2023") {
            return Ok(Self::Provided);
        }
        let number = |digits: &str| {
            (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        };
        if let Some(minor) = s.strip_prefix("python3.").and_then(number) {
            return Ok(Self::Python { minor });
        }
        if let Some(major) = s
            .strip_prefix("nodejs")
            .and_then(|rest| rest.strip_suffix(".x"))
            .and_then(number)
        {
            return Ok(Self::Node { major });
        }
        Err(unknown())
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Provided => f.write_str("provided.al2023"),
            Self::Python { minor } => write!(f, "python3.{minor}"),
            Self::Node { major } => write!(f, "nodejs{major}.x"),
        }
    }
}

impl RuntimeName {
    /// The handler a function gets when it names none: the Lambda console's.
    pub fn default_handler(self) -> &'static str {
        match self {
            Self::Provided => "bootstrap",
            Self::Python { .. } => "lambda_function.lambda_handler",
            Self::Node { .. } => "index.handler",
        }
    }

    /// The language's name and the version it asks for, for messages ("Python 3.12").
    pub fn language(self) -> String {
        match self {
            Self::Provided => "a bootstrap".into(),
            Self::Python { minor } => format!("Python 3.{minor}"),
            Self::Node { major } => format!("Node.js {major}"),
        }
    }
}

/// A managed runtime, resolved: the interpreter that runs it and the client's cached tree.
#[derive(Debug)]
pub struct Managed {
    /// The runtime the function asked for.
    pub name: RuntimeName,
    /// The host's interpreter.
    pub interpreter: Interpreter,
    /// The runtime interface client's tree in the cache: what `/var/runtime` shows.
    pub runtime_dir: PathBuf,
}

/// How the function sees a managed runtime's paths: inside the jail (`/var/runtime`,
/// `/var/lang`), or the host's own for the unisolated process backend.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `LAMBDA_RUNTIME_DIR`: where the client is.
    pub runtime_dir: String,
    /// The interpreter, as a path the function's process can exec.
    pub interpreter: String,
    /// The interpreter's `bin` directory, first on `PATH`.
    pub lang_bin: String,
    /// `LAMBDA_TASK_ROOT`.
    pub task_root: String,
}

impl Managed {
    /// The interpreter's installation when the jail must show it at `/var/lang` (it lives
    /// outside `/usr`, which the jail shows as it is).
    pub fn lang_mount(&self) -> Option<&Path> {
        (!self.interpreter.under_usr()).then_some(self.interpreter.prefix.as_path())
    }

    /// The paths as the jail shows them.
    pub fn seen_in_jail(&self) -> Seen {
        let (interpreter, lang_bin) = match self.lang_mount() {
            Some(prefix) => {
                let relative = self
                    .interpreter
                    .executable
                    .strip_prefix(prefix)
                    .unwrap_or(&self.interpreter.executable);
                (
                    Path::new("/var/lang").join(relative).display().to_string(),
                    "/var/lang/bin".to_owned(),
                )
            }
            None => (
                self.interpreter.executable.display().to_string(),
                self.interpreter.bin_dir().display().to_string(),
            ),
        };
        Seen {
            runtime_dir: "/var/runtime".into(),
            interpreter,
            lang_bin,
            task_root: "/var/task".into(),
        }
    }

    /// The paths as they are on the host (no jail).
    pub fn seen_on_host(&self, code_dir: &Path) -> Seen {
        Seen {
            runtime_dir: self.runtime_dir.display().to_string(),
            interpreter: self.interpreter.executable.display().to_string(),
            lang_bin: self.interpreter.bin_dir().display().to_string(),
            task_root: code_dir.display().to_string(),
        }
    }

    /// The interpreter's arguments: the runtime client, then the handler.
    pub fn args(&self, seen: &Seen, handler: &str) -> Vec<String> {
        match self.name {
            // The client's own entry point, without the line its command-line wrapper prints
            // ("Executing 'index.handler' in function directory …"), which Lambda's logs lack.
            RuntimeName::Node { .. } => vec![
                "--input-type=module".into(),
                "-e".into(),
                format!(
                    "import {{ run }} from '{}/node_modules/aws-lambda-ric/dist/index.mjs'; \
                     await run(process.cwd(), process.argv[1]);",
                    seen.runtime_dir
                ),
                handler.to_owned(),
            ],
            _ => vec!["-m".into(), "awslambdaric".into(), handler.to_owned()],
        }
    }

    /// `AWS_EXECUTION_ENV`, which Lambda sets for its managed runtimes only.
    pub fn execution_env(&self) -> String {
        format!("AWS_Lambda_{}", self.name)
    }

    /// The runtime's own variables, Lambda's values with `seen`'s paths: `PATH` with the
    /// interpreter first, and where the language finds `/opt`'s packages and the client.
    /// (A function may override them, as on Lambda.)
    pub fn environment(&self, seen: &Seen) -> Vec<(String, String)> {
        let path = format!("{}:/usr/local/bin:/usr/bin/:/bin:/opt/bin", seen.lang_bin);
        let search = match self.name {
            RuntimeName::Node { major } => (
                "NODE_PATH",
                format!(
                    "/opt/nodejs/node{major}/node_modules:/opt/nodejs/node_modules:{rt}/node_modules:{rt}:{task}",
                    rt = seen.runtime_dir,
                    task = seen.task_root
                ),
            ),
            _ => {
                let minor = self.interpreter.minor();
                (
                    "PYTHONPATH",
                    format!(
                        "/opt/python/lib/python3.{minor}/site-packages:/opt/python:{}",
                        seen.runtime_dir
                    ),
                )
            }
        };
        vec![("PATH".into(), path), (search.0.into(), search.1)]
    }
}

/// A managed runtime that cannot be had here. Each names the runtime and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    /// No interpreter of the language at all.
    #[error(
        "runtime {runtime}: needs {language}, and none of {tried} is on PATH; install {language}"
    )]
    NoInterpreter {
        /// The runtime asked for.
        runtime: RuntimeName,
        /// "Python 3.12".
        language: String,
        /// The commands looked for.
        tried: String,
    },
    /// Interpreters, but none of the version asked for.
    #[error(
        "runtime {runtime}: needs {language}, but this host has {found}; install {language} \
         (as {command} on PATH), or accept the host's version with --accept-host-runtime \
         (accept_host_runtime = true in lamina.toml), which warns on every start"
    )]
    VersionMismatch {
        /// The runtime asked for.
        runtime: RuntimeName,
        /// "Python 3.12".
        language: String,
        /// "Python 3.11.7 (/usr/bin/python3.11)".
        found: String,
        /// The command lamina looks for first (`python3.12`).
        command: String,
    },
    /// The interpreter's installation cannot be shown in the jail.
    #[error("runtime {runtime}: interpreter {executable}: {reason}")]
    Unplaceable {
        /// The runtime asked for.
        runtime: RuntimeName,
        /// The interpreter.
        executable: PathBuf,
        /// Why.
        reason: String,
    },
    /// Installing the runtime interface client failed.
    #[error("runtime {runtime}: installing {client} failed ({command}):\n{output}\n{hint}")]
    Install {
        /// The runtime asked for.
        runtime: RuntimeName,
        /// "awslambdaric 4.2.2".
        client: String,
        /// The command run.
        command: String,
        /// The end of what it printed.
        output: String,
        /// What to do.
        hint: String,
    },
    /// The cache could not be used.
    #[error(transparent)]
    Cache(#[from] lamina_layers::CacheError),
}

/// Resolves a managed runtime: finds the interpreter, then the client's tree (installing it
/// on first use). `package` is a local wheel, directory of wheels or npm tarball to install
/// from instead of the registry.
pub fn resolve(
    name: RuntimeName,
    cache: &lamina_layers::Cache,
    accept_host: bool,
    package: Option<&Path>,
) -> Result<Option<Managed>, ManagedError> {
    if name == RuntimeName::Provided {
        return Ok(None);
    }
    let interpreter = interpreter::find(name, accept_host, Some(&cache.root().join("index")))?;
    let runtime_dir = install::ensure(cache, name, &interpreter, package)?;
    Ok(Some(Managed {
        name,
        interpreter,
        runtime_dir,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambdas_runtime_names_parse_and_print_back() {
        for (text, name) in [
            ("python3.12", RuntimeName::Python { minor: 12 }),
            ("python3.9", RuntimeName::Python { minor: 9 }),
            ("nodejs20.x", RuntimeName::Node { major: 20 }),
            ("nodejs22.x", RuntimeName::Node { major: 22 }),
            ("provided.al2023", RuntimeName::Provided),
        ] {
            assert_eq!(text.parse::<RuntimeName>(), Ok(name));
            assert_eq!(name.to_string(), text);
        }
        assert_eq!("provided.al2".parse(), Ok(RuntimeName::Provided));
        for bad in [
            "python3",
            "python3.",
            "python2.7",
            "nodejs20",
            "nodejs.x",
            "java21",
            "python3.1x",
        ] {
            let err = bad.parse::<RuntimeName>().unwrap_err();
            assert!(err.contains(bad) && err.contains("python3.N"), "{err}");
        }
    }
}
