//! A function as its user wrote it ([`FunctionConfig`]), and the immutable [`FunctionSpec`]
//! it resolves to: defaults filled in, limits checked against Lambda's, code and layers located
//! (archives extracted once into the content-addressed cache), `/opt` composed, environment
//! validated. Resolution is where bad input is refused, with
//! the field at fault named; nothing after it re-checks.
//!
//! Scope: a `FunctionSpec` lives as long as its function is loaded and is shared by `Arc`
//! between the pool and every environment.

pub mod credentials;
pub mod env_file;
pub mod file;
pub mod lambda_env;
pub mod logging;
pub mod sqs_address;
pub mod template;

use std::path::{Path, PathBuf};
use std::time::Duration;

use lamina_layers::{Cache, CacheError, Composed, Limits};

use crate::managed::RuntimeName;

/// Lambda's memory range, MB.
pub const MEMORY_RANGE_MB: std::ops::RangeInclusive<u32> = 128..=10_240;
/// Lambda's timeout range, seconds.
pub const TIMEOUT_RANGE_SECS: std::ops::RangeInclusive<u32> = 1..=900;
/// The most environments one function may have; Lambda's default account limit.
pub const MAX_CONCURRENCY: u32 = 1000;
/// Lambda's cap on the function's own environment variables, in bytes of `KEY=VALUE` text.
pub const MAX_ENVIRONMENT_BYTES: usize = 4 * 1024;

/// A function as written by its user: command-line flags, or a `[functions.NAME]` table of
/// `lamina.toml` ([`file`]).
#[derive(Debug, Clone, Default)]
pub struct FunctionConfig {
    /// The function's name; derived from the code path when absent.
    pub name: Option<String>,
    /// A directory or `.zip` holding the function's code, or a lone `.wasm` module.
    pub code: PathBuf,
    /// `_HANDLER`.
    pub handler: Option<String>,
    /// Memory size in MB (128–10240, default 128).
    pub memory_mb: Option<u32>,
    /// Timeout in seconds (1–900, default 3).
    pub timeout_secs: Option<u32>,
    /// How long init may take before the first `/next` (default 10 s, as on Lambda).
    pub init_timeout_secs: Option<u32>,
    /// The function's own environment variables, in order.
    pub environment: Vec<(String, String)>,
    /// `AWS_REGION` (default `us-east-1`).
    pub region: Option<String>,
    /// At most this many environments at once (default 1).
    pub concurrency: Option<u32>,
    /// Seconds an environment may stay idle before it is shut down (default 300).
    pub idle_timeout_secs: Option<u32>,
    /// Layers, directories or `.zip`s, in Lambda's order: later ones win.
    pub layers: Vec<PathBuf>,
    /// Where extracted archives are cached (default: the user's cache directory).
    pub cache_dir: Option<PathBuf>,
    /// Told how a first-time extraction advances: (archive, bytes written, bytes in all).
    pub progress: Option<Progress>,
    /// Size of `/tmp` in MB (512–10240, default 512).
    pub ephemeral_storage_mb: Option<u32>,
    /// Whether `/tmp` survives across warm invocations (Lambda's behaviour) instead of being
    /// fresh for each (lamina's default, in the jail).
    pub tmp_per_environment: bool,
    /// Lambda's `Runtime`: `python3.N` and `nodejsN.x` run without a bootstrap
    /// ([`crate::managed`]); `provided.al2023` (the default) runs the function's own.
    pub runtime: Option<String>,
    /// Run a managed runtime with the host's interpreter even when its version differs.
    pub accept_host_runtime: bool,
    /// A local package to install the managed runtime's client from, instead of the registry.
    pub runtime_package: Option<PathBuf>,
    /// The AWS credentials the function gets, as Lambda gives its role's.
    pub credentials: Option<credentials::Credentials>,
    /// Lambda's `LoggingConfig`: log format, application and system log levels.
    pub logging: logging::LoggingConfig,
}

/// Called with (archive, bytes written, bytes in all).
pub type ProgressFn = dyn Fn(&Path, u64, u64) + Send + Sync;

/// A progress callback for long extractions (the CLI draws it on a terminal).
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<ProgressFn>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// A resolved function. Immutable; shared by `Arc`.
#[derive(Debug)]
pub struct FunctionSpec {
    /// The function's name.
    pub name: String,
    /// Host path of the function's code (what `/var/task` shows).
    pub code_dir: PathBuf,
    /// The composed layers (what `/opt` shows), when there are any.
    pub opt: Option<Composed>,
    /// The external extensions: every file in `/opt/extensions` (as Lambda, each is an
    /// executable to start; directories are skipped), sorted by name, as host paths. Read once
    /// here: the layers do not change under a resolved function, and every cold start needs it.
    pub extensions: Vec<PathBuf>,
    /// `_HANDLER`.
    pub handler: String,
    /// Memory size, MB.
    pub memory_mb: u32,
    /// The invocation timeout.
    pub timeout: Duration,
    /// The init phase's limit.
    pub init_timeout: Duration,
    /// The function's own environment variables (validated, none reserved).
    pub environment: Vec<(String, String)>,
    /// The region the function claims to run in.
    pub region: String,
    /// The function's ARN, `arn:aws:lambda:REGION:ACCOUNT:function:NAME`.
    pub arn: String,
    /// At most this many environments at once.
    pub concurrency: u32,
    /// Size of `/tmp`, MB.
    pub ephemeral_storage_mb: u32,
    /// A fresh `/tmp` for every invocation (else per environment, as on Lambda).
    pub tmp_per_invocation: bool,
    /// How long a runtime gets between SIGTERM and SIGKILL at shutdown.
    pub shutdown_grace: Duration,
    /// How long an environment may stay idle before it is shut down.
    pub idle_timeout: Duration,
    /// The managed runtime that runs the function, when it names one (no bootstrap then).
    pub managed: Option<crate::managed::Managed>,
    /// The AWS credentials the function gets (never logged).
    pub credentials: Option<credentials::Credentials>,
    /// The log format and levels (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL`, and how
    /// the platform's lines are written).
    pub logging: logging::Logging,
    /// The cached trees this function runs from, held so that `lamina cache prune` leaves
    /// them while it may still start environments (`lamina_layers::Cache::hold`).
    pub cache_holds: Vec<std::sync::Arc<std::fs::File>>,
}

/// The account id lamina's ARNs carry; there is no account, and this is the one AWS's own
/// local tools use.
pub const ACCOUNT_ID: &str = "000000000000";

/// The region of a function that names none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// A function's ARN, `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`: the one
/// place lamina spells one.
pub fn function_arn(region: &str, name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}:{q}"),
        None => format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"),
    }
}

/// A function configuration that cannot be used. Each names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The code path does not exist or is neither a directory nor a `.zip`.
    #[error("code {path}: {reason}")]
    Code {
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A layer path does not exist or is neither a directory nor a `.zip`.
    #[error("layer {path}: {reason}")]
    Layer {
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A package or layer is refused, or the cache failed; every problem is listed.
    #[error(transparent)]
    Package(#[from] CacheError),
    /// A managed runtime that cannot be had on this host.
    #[error(transparent)]
    Runtime(#[from] crate::managed::ManagedError),
    /// A value outside its allowed range or form.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as the user wrote it (`memory`, `timeout`, `env GREETING`, …).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The numbers and names of a [`FunctionConfig`], checked, defaults filled in.
struct Checked {
    memory_mb: u32,
    timeout: u32,
    init_timeout: u32,
    ephemeral_storage_mb: u32,
    concurrency: u32,
    idle_timeout: u32,
    region: String,
    runtime: RuntimeName,
    logging: logging::Logging,
}

impl FunctionConfig {
    /// Checks every value that needs no file system: ranges, names, the environment. A
    /// configuration file calls it for each function up front; [`FunctionConfig::resolve`]
    /// calls it first.
    pub fn check_values(&self) -> Result<(), ConfigError> {
        self.checked().map(drop)
    }

    fn checked(&self) -> Result<Checked, ConfigError> {
        let memory_mb = self.memory_mb.unwrap_or(128);
        if !MEMORY_RANGE_MB.contains(&memory_mb) {
            return Err(invalid(
                "memory",
                format!("{memory_mb} MB is outside Lambda's 128–10240 MB"),
            ));
        }
        let timeout = self.timeout_secs.unwrap_or(3);
        if !TIMEOUT_RANGE_SECS.contains(&timeout) {
            return Err(invalid(
                "timeout",
                format!("{timeout} s is outside Lambda's 1–900 s"),
            ));
        }
        let init_timeout = self.init_timeout_secs.unwrap_or(10);
        if !(1..=900).contains(&init_timeout) {
            return Err(invalid(
                "init-timeout",
                format!("{init_timeout} s is outside 1–900 s"),
            ));
        }
        let ephemeral_storage_mb = self.ephemeral_storage_mb.unwrap_or(512);
        if !(512..=10_240).contains(&ephemeral_storage_mb) {
            return Err(invalid(
                "ephemeral-storage",
                format!("{ephemeral_storage_mb} MB is outside Lambda's 512–10240 MB"),
            ));
        }
        let concurrency = self.concurrency.unwrap_or(1);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(invalid(
                "concurrency",
                format!("{concurrency} is outside 1–{MAX_CONCURRENCY}"),
            ));
        }
        let idle_timeout = self.idle_timeout_secs.unwrap_or(300);
        if idle_timeout == 0 {
            return Err(invalid("idle_timeout", "must be at least 1 second"));
        }
        lambda_env::check_user_environment(&self.environment)?;
        let region = self
            .region
            .clone()
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(invalid(
                "region",
                format!("{region:?} is not a region name"),
            ));
        }
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        let limits = Limits::default();
        if self.layers.len() > limits.max_layers {
            return Err(invalid(
                "layer",
                format!(
                    "{} layers, more than Lambda's {}",
                    self.layers.len(),
                    limits.max_layers
                ),
            ));
        }
        let runtime = match &self.runtime {
            Some(text) => text.parse().map_err(|e: String| invalid("runtime", e))?,
            None => RuntimeName::Provided,
        };
        let logging = self.logging.resolve()?;
        Ok(Checked {
            runtime,
            logging,
            memory_mb,
            timeout,
            init_timeout,
            ephemeral_storage_mb,
            concurrency,
            idle_timeout,
            region,
        })
    }

    /// Resolves the configuration: checks every value and locates (or extracts) the code.
    pub fn resolve(self) -> Result<FunctionSpec, ConfigError> {
        let checked = self.checked()?;
        let name = match self.name {
            Some(name) => name,
            None => derive_name(&self.code),
        };
        check_name(&name)?;
        let limits = Limits::default();
        // The cache is touched only when there is an archive or a layer: a plain directory
        // function runs even where the user's cache directory cannot be written.
        let managed = checked.runtime != RuntimeName::Provided;
        let needs_cache =
            is_zip(&self.code) || is_wasm(&self.code) || !self.layers.is_empty() || managed;
        let cache = match needs_cache {
            true => Some(
                crate::run_dir::open_cache(&self.cache_dir.unwrap_or_else(Cache::default_root))
                    .map_err(|e| match e {
                        crate::run_dir::CacheDirError::Cache(e) => ConfigError::Package(e),
                        e => invalid("cache", e.to_string()),
                    })?,
            ),
            false => None,
        };
        let progress = self.progress.as_ref();
        let (code_dir, mut unzipped) = match (&cache, managed && is_lone_file(&self.code)) {
            // `lamina invoke app.py --runtime python3.12`: the file alone is the code.
            (Some(cache), true) => {
                let file_name = self.code.file_name().unwrap_or_default().to_string_lossy();
                let entry = cache.file_tree(&self.code, "file", &file_name)?;
                (entry.tree, entry.bytes)
            }
            _ => locate(&self.code, "code", cache.as_ref(), &limits, progress)?,
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (tree, bytes) = locate(layer, "layer", cache.as_ref(), &limits, progress)?;
            // A WebAssembly function has no processes beside it: an extension could never
            // start, and Lambda's promise (it runs) would be silently broken.
            if is_wasm(&self.code) && tree.join("extensions").is_dir() {
                return Err(ConfigError::Layer {
                    path: layer.clone(),
                    reason: "it holds extensions/, and a WebAssembly function runs no \
                             extensions (they are processes beside a native runtime)"
                        .into(),
                });
            }
            unzipped += bytes;
            let id = if is_zip(layer) {
                tree.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                lamina_layers::dir_fingerprint(&tree).map_err(|e| ConfigError::Layer {
                    path: layer.clone(),
                    reason: e.to_string(),
                })?
            };
            layers.push((id, tree));
        }
        if unzipped > limits.max_unzipped_bytes {
            return Err(invalid(
                "code",
                format!(
                    "function and layers are {unzipped} bytes unzipped, over Lambda's {} bytes",
                    limits.max_unzipped_bytes
                ),
            ));
        }
        let opt = match &cache {
            Some(cache) if !layers.is_empty() => Some(lamina_layers::compose(cache, &layers)?),
            _ => None,
        };
        let managed = match &cache {
            Some(cache) => crate::managed::resolve(
                checked.runtime,
                cache,
                self.accept_host_runtime,
                self.runtime_package.as_deref(),
            )?,
            None => None,
        };
        // Trees from the cache (a directory given as code or layer is used in place).
        let cache_holds = match &cache {
            Some(cache) => std::iter::once(&code_dir)
                .chain(layers.iter().map(|(_, tree)| tree))
                .chain(opt.iter().map(|o| &o.merged))
                .chain(managed.iter().map(|m| &m.runtime_dir))
                .filter(|tree| tree.starts_with(cache.root()))
                .filter_map(|tree| cache.hold(tree).map(std::sync::Arc::new))
                .collect(),
            None => Vec::new(),
        };
        Ok(FunctionSpec {
            arn: function_arn(&checked.region, &name, None),
            name,
            code_dir,
            extensions: external_extensions(opt.as_ref()),
            opt,
            handler: self
                .handler
                .unwrap_or_else(|| checked.runtime.default_handler().to_owned()),
            managed,
            credentials: self.credentials,
            logging: checked.logging,
            memory_mb: checked.memory_mb,
            timeout: Duration::from_secs(u64::from(checked.timeout)),
            init_timeout: Duration::from_secs(u64::from(checked.init_timeout)),
            environment: self.environment,
            region: checked.region,
            concurrency: checked.concurrency,
            ephemeral_storage_mb: checked.ephemeral_storage_mb,
            tmp_per_invocation: !self.tmp_per_environment,
            shutdown_grace: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(u64::from(checked.idle_timeout)),
            cache_holds,
        })
    }
}

/// `my-fn.zip` → `my-fn`, `path/to/dir/` → `dir`; characters Lambda refuses become `-`.
pub(crate) fn derive_name(code: &Path) -> String {
    let stem = code
        .canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(code)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "function".to_owned()
    } else {
        name
    }
}

/// Lambda's function name rule: 1–64 of `[a-zA-Z0-9-_]`.
fn check_name(name: &str) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!("{name:?} must be 1–64 letters, digits, '-' or '_'"),
        ))
    }
}

/// A lone WebAssembly module given as the function (`lamina invoke handler.wasm`).
fn is_wasm(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wasm"))
        && path.is_file()
}

/// A file that is neither an archive nor a module: a managed runtime's lone source file.
fn is_lone_file(path: &Path) -> bool {
    path.is_file() && !is_zip(path) && !is_wasm(path)
}

fn is_zip(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

/// A directory is used as it is; a `.zip` is served from the cache (extracted on first use).
/// Returns the tree and its unzipped size.
fn locate(
    path: &Path,
    what: &str,
    cache: Option<&Cache>,
    limits: &Limits,
    progress: Option<&Progress>,
) -> Result<(PathBuf, u64), ConfigError> {
    let err = |reason: &str| match what {
        "layer" => ConfigError::Layer {
            path: path.to_owned(),
            reason: reason.to_owned(),
        },
        _ => ConfigError::Code {
            path: path.to_owned(),
            reason: reason.to_owned(),
        },
    };
    let meta = std::fs::metadata(path).map_err(|e| err(&e.to_string()))?;
    if meta.is_dir() {
        let dir = path.canonicalize().map_err(|e| err(&e.to_string()))?;
        let bytes = lamina_layers::tree_size(&dir);
        return Ok((dir, bytes));
    }
    if let Some(cache) = cache.filter(|_| is_zip(path)) {
        let report = |done, total| {
            if let Some(Progress(progress)) = progress {
                progress(path, done, total);
            }
        };
        let entry = cache.extract(path, limits, &report)?;
        return Ok((entry.tree, entry.bytes));
    }
    if let Some(cache) = cache.filter(|_| what == "code" && is_wasm(path)) {
        let entry = cache.module_tree(path)?;
        return Ok((entry.tree, entry.bytes));
    }
    Err(err(
        "not a directory, a .zip or (as the function) a .wasm file",
    ))
}

/// The files of `/opt/extensions` in the composed layers, sorted ([`FunctionSpec::extensions`]).
fn external_extensions(opt: Option<&Composed>) -> Vec<PathBuf> {
    let Some(entries) = opt.and_then(|o| std::fs::read_dir(o.merged.join("extensions")).ok())
    else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}
#[cfg(test)]
mod tests {
    use super::*;

    fn config(code: &Path) -> FunctionConfig {
        FunctionConfig {
            code: code.to_owned(),
            cache_dir: Some(std::env::temp_dir().join("lamina-config-tests-cache")),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_lambdas() {
        let dir = tempfile::tempdir().unwrap();
        let spec = config(dir.path()).resolve().unwrap();
        assert_eq!(spec.memory_mb, 128);
        assert_eq!(spec.timeout, Duration::from_secs(3));
        assert_eq!(spec.region, "us-east-1");
        assert_eq!(spec.logging.format, logging::LogFormat::Text);
        assert!(
            spec.arn
                .starts_with("arn:aws:lambda:us-east-1:000000000000:function:")
        );
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(FunctionConfig, &str)> = vec![
            (
                FunctionConfig {
                    memory_mb: Some(64),
                    ..config(dir.path())
                },
                "memory",
            ),
            (
                FunctionConfig {
                    timeout_secs: Some(901),
                    ..config(dir.path())
                },
                "timeout",
            ),
            (
                FunctionConfig {
                    name: Some("a b".into()),
                    ..config(dir.path())
                },
                "name",
            ),
            (
                FunctionConfig {
                    environment: vec![("AWS_REGION".into(), "x".into())],
                    ..config(dir.path())
                },
                "AWS_REGION",
            ),
            (
                FunctionConfig {
                    logging: logging::LoggingConfig {
                        application_log_level: Some(logging::ApplicationLogLevel::Debug),
                        ..Default::default()
                    },
                    ..config(dir.path())
                },
                "application-log-level",
            ),
            (config(&dir.path().join("missing")), "missing"),
        ];
        for (cfg, field) in cases {
            let err = cfg.resolve().unwrap_err().to_string();
            assert!(err.contains(field), "{err:?} should name {field}");
        }
    }
}
