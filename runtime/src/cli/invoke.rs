//! `lamina invoke`: run one function locally, `--repeat N` times in one warm environment.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};

use crate::config::logging::{ApplicationLogLevel, LogFormat, LoggingConfig, SystemLogLevel};
use crate::config::{FunctionConfig, FunctionSpec, Progress};
use crate::error::MAX_PAYLOAD_BYTES;
use crate::invoke::InvokeRequest;
use crate::logs::StderrSink;
use crate::pool::FunctionPool;
use crate::sandbox::jail::{Helper, JailSandbox};
use crate::sandbox::process::ProcessSandbox;
use crate::sandbox::wasm::WasmSandbox;
use crate::sandbox::{BootstrapKind, Sandbox, bootstrap_kind};

/// Arguments of `lamina invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function: a directory or .zip holding an executable `bootstrap` or a
    /// `bootstrap.wasm` (or whose layers do), a lone `.wasm` module, with `--runtime python3.N`
    /// or `nodejsN.x` a directory, .zip or lone source file of handler code, or the name of a
    /// function in lamina.toml (flags given here override its settings).
    pub function: PathBuf,
    /// The configuration a function name is looked up in [default: ./lamina.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A layer (directory or .zip); repeatable, at most 5, later ones win in /opt.
    #[arg(long = "layer", value_name = "LAYER")]
    pub layers: Vec<PathBuf>,
    /// Where unpacked .zip archives are kept for reuse [default: $XDG_CACHE_HOME/lamina or
    /// ~/.cache/lamina]
    #[arg(long, env = "LAMINA_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Read the event from this file (`-` for stdin).
    #[arg(long, conflicts_with = "payload")]
    pub event: Option<PathBuf>,
    /// The event as a JSON string [default: {}]
    #[arg(long)]
    pub payload: Option<String>,
    /// A sample event of this kind as the payload (`lamina event generate NAME` shows it):
    /// apigw-v2, apigw-v1, alb, sqs, sns, s3, dynamodb, eventbridge, schedule,
    /// s3-object-lambda, kinesis.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["payload", "event"])]
    pub event_template: Option<String>,
    /// How long one invocation may run, in seconds (1–900) [default: 3]
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u32>,
    /// Memory size in MB (128–10240); also sets the function's CPU share [default: 128]
    #[arg(long, value_name = "MB")]
    pub memory: Option<u32>,
    /// An environment variable for the function, `KEY=VALUE`; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env_vars: Vec<String>,
    /// The handler setting, passed to the runtime as `_HANDLER`: `app.handler` for a managed
    /// runtime [default: bootstrap; lambda_function.lambda_handler for python3.N;
    /// index.handler for nodejsN.x]
    #[arg(long)]
    pub handler: Option<String>,
    /// Lambda's runtime: `python3.N` or `nodejsN.x` run the function without a bootstrap, with
    /// this host's interpreter and AWS's runtime client (installed once into the cache);
    /// `provided.al2023` runs its own bootstrap [default: provided.al2023]
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<String>,
    /// Run a managed runtime with the host's interpreter even when its version is not the one
    /// asked for (a warning says so).
    #[arg(long)]
    pub accept_host_runtime: bool,
    /// Install the managed runtime's client from this local package instead of the registry:
    /// a wheel or a directory of wheels (Python), a tarball (Node.js).
    #[arg(long, value_name = "PATH")]
    pub runtime_package: Option<PathBuf>,
    /// The function's name (default: from the code path).
    #[arg(long)]
    pub name: Option<String>,
    /// Invoke this many times, in order, in one warm environment; one payload per line.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// How long the runtime may take to start, in seconds (1–900) [default: 10, as on Lambda]
    #[arg(long, value_name = "SECONDS")]
    pub init_timeout: Option<u32>,
    /// The region the function is told it runs in [default: us-east-1]
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// How a native bootstrap is isolated: the jail, or a plain child process with no isolation
    /// at all (development only). A WebAssembly function always runs in wasmtime.
    #[arg(long, value_enum, default_value_t = SandboxKind::Jail)]
    pub sandbox: SandboxKind,
    /// Size of /tmp in MB (512–10240) [default: 512]
    #[arg(long, value_name = "MB")]
    pub ephemeral_storage: Option<u32>,
    /// In the jail, a fresh /tmp for every invocation, or one that lasts as long as the
    /// environment (warm invocations see what earlier ones left, as on Lambda).
    #[arg(long, value_enum, default_value_t = TmpMode::PerInvocation)]
    pub tmp: TmpMode,
    /// The function's network in the jail: `outbound` reaches out as a Lambda function outside
    /// a VPC does (not the host's loopback, nor other sandboxes; needs slirp4netns), `none`
    /// reaches nothing outside its own sandbox, `host` is the host's network, its loopback
    /// services included [default: outbound]
    #[arg(long, value_enum)]
    pub network: Option<NetworkKind>,
    /// Lambda's log format: `Text` (the classic START/END/REPORT lines) or `JSON` (Lambda's
    /// `platform.*` records; the runtime is told, through `AWS_LAMBDA_LOG_FORMAT`, to log JSON
    /// too) [default: Text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// With `--log-format JSON`: the least severe of the function's own log lines its runtime
    /// keeps (`AWS_LAMBDA_LOG_LEVEL`): TRACE, DEBUG, INFO, WARN, ERROR or FATAL [default: INFO]
    #[arg(long, value_name = "LEVEL")]
    pub application_log_level: Option<ApplicationLogLevel>,
    /// With `--log-format JSON`: the least severe of lamina's platform records shown: DEBUG,
    /// INFO or WARN [default: INFO]
    #[arg(long, value_name = "LEVEL")]
    pub system_log_level: Option<SystemLogLevel>,
    /// A SAM template (FUNCTION is then a logical id), its parameters and layer mappings.
    #[command(flatten)]
    pub template: super::TemplateArgs,
    /// The env file and AWS credentials.
    #[command(flatten)]
    pub env: super::EnvArgs,
}

/// How long `/tmp` lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TmpMode {
    /// Fresh and empty for every invocation.
    PerInvocation,
    /// Kept across the warm invocations of one environment.
    PerEnvironment,
}

/// The jail's network modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkKind {
    /// Outbound access through the sandbox's own network namespace (slirp4netns).
    Outbound,
    /// No network: only the sandbox's own loopback.
    None,
    /// The host's network: the internet, and the host's own loopback services too.
    Host,
}

/// The sandbox backends `--sandbox` chooses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxKind {
    /// A plain child process: no isolation.
    Process,
    /// The jail: the function sees only its code, its layers and a fresh /tmp, runs as an
    /// unprivileged user with memory and process limits; the best one this host allows, as
    /// root or rootless (`lamina doctor` shows which).
    Jail,
}

/// Runs `lamina invoke`.
pub async fn run(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let payload = read_payload(&args)?;
    let configured = configured(&args)?;
    let code = configured
        .as_ref()
        .map_or(args.function.clone(), |(_, c)| c.code.clone());
    let lone_module = code
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wasm"));
    let cache_root = args
        .cache_dir
        .clone()
        .unwrap_or_else(lamina_layers::Cache::default_root);
    let environment = args
        .env_vars
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--env {pair:?}: expected KEY=VALUE"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (key, base) = configured.unwrap_or_default();
    let name = args.name.or(base.name);
    // The env file's values, then --env's: the command line wins.
    let mut env = base.environment;
    if let Some(file) = args.env.env_file()? {
        let shown = name
            .clone()
            .unwrap_or_else(|| crate::config::derive_name(&code));
        let key = if key.is_empty() { shown.clone() } else { key };
        file.apply(&key, &shown, &mut env);
    }
    for (k, v) in environment {
        env.retain(|(existing, _)| *existing != k);
        env.push((k, v));
    }
    let config = FunctionConfig {
        name,
        code,
        handler: args.handler.or(base.handler),
        memory_mb: args.memory.or(base.memory_mb),
        timeout_secs: args.timeout.or(base.timeout_secs),
        init_timeout_secs: args.init_timeout.or(base.init_timeout_secs),
        environment: env,
        region: args.region.or(base.region),
        concurrency: Some(1),
        idle_timeout_secs: None,
        layers: base.layers.into_iter().chain(args.layers).collect(),
        cache_dir: args.cache_dir,
        progress: std::io::stderr().is_terminal().then(terminal_progress),
        ephemeral_storage_mb: args.ephemeral_storage.or(base.ephemeral_storage_mb),
        tmp_per_environment: args.tmp == TmpMode::PerEnvironment,
        runtime: args.runtime.or(base.runtime),
        accept_host_runtime: args.accept_host_runtime || base.accept_host_runtime,
        runtime_package: args.runtime_package.or(base.runtime_package),
        credentials: args.env.credentials()?,
        // Flag by flag over the configuration's, as every other setting.
        logging: LoggingConfig {
            log_format: args.log_format.or(base.logging.log_format),
            application_log_level: args
                .application_log_level
                .or(base.logging.application_log_level),
            system_log_level: args.system_log_level.or(base.logging.system_log_level),
        },
    };
    // Every flag is checked before anything is started: a usage error is one line, with no
    // sandbox half-built behind it.
    config.check_values()?;
    // The native backend is made (and its first jail started) before the function's archives
    // are extracted, so that the two overlap; a lone `.wasm` needs none of it. Its failure is
    // reported only if the function turns out to be native.
    let native_ahead = (!lone_module)
        .then(|| native_sandbox(args.sandbox, args.network, Helper::this_executable()));
    // Extracting a large archive the first time is long, blocking work.
    let spec = Arc::new(tokio::task::spawn_blocking(move || config.resolve()).await??);
    let native = || {
        native_ahead.unwrap_or_else(|| {
            native_sandbox(args.sandbox, args.network, Helper::this_executable())
        })
    };
    let sandbox = Sandboxes::for_functions([spec.as_ref()], args.sandbox, native, &cache_root)?
        .for_spec(&spec);
    let pool = FunctionPool::start(spec, sandbox, Arc::new(StderrSink));
    let invocations = async {
        let mut failed = false;
        let mut stdout = std::io::stdout();
        for _ in 0..args.repeat {
            let done = pool
                .invoke(InvokeRequest {
                    payload: payload.clone(),
                    ..Default::default()
                })
                .await;
            failed |= done.error_type().is_some();
            let mut out = done.body().to_vec();
            if args.repeat > 1 {
                out.push(b'\n');
            }
            stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .context("writing the payload to stdout")?;
        }
        anyhow::Ok(failed)
    };
    let failed = tokio::select! {
        failed = invocations => failed?,
        _ = tokio::signal::ctrl_c() => {
            pool.shutdown().await;
            return Ok(ExitCode::from(130));
        }
    };
    pool.shutdown().await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The configured function `lamina invoke NAME` names, when NAME is not a path: looked up in
/// `--config`, `./lamina.toml` or the bundled examples.
/// The function named in the configuration (its key there, and its settings), when the
/// argument is a name rather than a path.
fn configured(args: &InvokeArgs) -> anyhow::Result<Option<(String, FunctionConfig)>> {
    let given = &args.function;
    let is_name = given.components().count() == 1 && given.extension().is_none();
    // Named with --template, it is a logical id even where a file of that name exists.
    if args.template.template.is_none() && (given.exists() || !is_name) {
        return Ok(None);
    }
    let name = given.to_string_lossy();
    let path = super::find_config(args.template.template.as_deref().or(args.config.as_deref()))
        .with_context(|| format!("{name}: no such file or directory"))?;
    let mut manifest = super::load_config(&path, &args.template, args.region.as_deref())?;
    // A template's functions go by logical id; its FunctionName finds them too.
    let key = manifest
        .functions
        .iter()
        .find(|(key, entry)| *key == &name || entry.config.name.as_deref() == Some(&name))
        .map(|(key, _)| key.clone());
    match key.and_then(|k| Some((k.clone(), manifest.functions.remove(&k)?))) {
        Some((key, entry)) => Ok(Some((key, entry.config))),
        None if crate::config::template::is_template(&path) => bail!(
            "{name}: no such file or directory, and {} has no AWS::Serverless::Function {name}",
            path.display()
        ),
        None => bail!(
            "{name}: no such file or directory, and {} has no [functions.{name}]",
            path.display()
        ),
    }
}

/// One backend of each kind some functions need (the native one of the kind chosen), shared
/// by all of them: `lamina invoke` and `lamina serve` choose alike.
pub(crate) struct Sandboxes {
    native: Option<Arc<dyn Sandbox>>,
    wasm: Option<Arc<dyn Sandbox>>,
}

impl Sandboxes {
    /// Checks that this host can run each kind of bootstrap among `specs`, and sets that
    /// kind's backend up (the native one of kind `native`, from `make_native`: normally
    /// [`native_sandbox`]); a kind no function needs is neither checked nor set up.
    pub(crate) fn for_functions<'a>(
        specs: impl IntoIterator<Item = &'a FunctionSpec>,
        native: SandboxKind,
        make_native: impl FnOnce() -> anyhow::Result<Arc<dyn Sandbox>>,
        cache_root: &Path,
    ) -> anyhow::Result<Self> {
        let kinds: Vec<BootstrapKind> = specs.into_iter().map(bootstrap_kind).collect();
        let native = match kinds.contains(&BootstrapKind::Native) {
            true => {
                if native == SandboxKind::Process {
                    warn_unisolated();
                }
                Some(make_native()?)
            }
            false => None,
        };
        let wasm = match kinds.contains(&BootstrapKind::Wasm) {
            true => Some(wasm_sandbox(cache_root)?),
            false => None,
        };
        Ok(Sandboxes { native, wasm })
    }

    /// Sets up each kind of backend `specs` need that is not set up yet (a reload may bring
    /// the first WebAssembly function).
    pub(crate) fn cover<'a>(
        &mut self,
        specs: impl IntoIterator<Item = &'a FunctionSpec>,
        native: SandboxKind,
        make_native: impl FnOnce() -> anyhow::Result<Arc<dyn Sandbox>>,
        cache_root: &Path,
    ) -> anyhow::Result<()> {
        let kinds: Vec<BootstrapKind> = specs.into_iter().map(bootstrap_kind).collect();
        if self.native.is_none() && kinds.contains(&BootstrapKind::Native) {
            if native == SandboxKind::Process {
                warn_unisolated();
            }
            self.native = Some(make_native()?);
        }
        if self.wasm.is_none() && kinds.contains(&BootstrapKind::Wasm) {
            self.wasm = Some(wasm_sandbox(cache_root)?);
        }
        Ok(())
    }

    /// The backend for `spec`, one of those [`Sandboxes::for_functions`] was given.
    pub(crate) fn for_spec(&self, spec: &FunctionSpec) -> Arc<dyn Sandbox> {
        let chosen = match bootstrap_kind(spec) {
            BootstrapKind::Native => &self.native,
            BootstrapKind::Wasm => &self.wasm,
        };
        Arc::clone(
            chosen
                .as_ref()
                .expect("made for every kind the functions need"),
        )
    }
}

/// Said wherever native functions are about to run under `--sandbox process`.
fn warn_unisolated() {
    eprintln!(
        "WARNING: --sandbox process: functions run as plain child processes with your user's \
         rights and no isolation. Use it for development only, with code you trust."
    );
}

/// The WASM backend, its compiled code cached under `cache_root`.
fn wasm_sandbox(cache_root: &Path) -> anyhow::Result<Arc<dyn Sandbox>> {
    Ok(Arc::new(
        WasmSandbox::new(cache_root, &Helper::this_executable())
            .context("the WASM backend cannot run on this host")?,
    ))
}

/// The chosen native backend, after checking that this host supports it; jails are built by
/// `helper` (the CLI's own executable, [`Helper::this_executable`]).
///
/// `network` is the mode chosen (`--network` or `lamina.toml`), `None` when nobody chose one:
/// the default, `outbound`, then falls back to `none`, saying so, on a host without
/// slirp4netns, so that a first run on a fresh machine works.
pub fn native_sandbox(
    kind: SandboxKind,
    network: Option<NetworkKind>,
    helper: Helper,
) -> anyhow::Result<Arc<dyn Sandbox>> {
    Ok(match kind {
        SandboxKind::Process => Arc::new(ProcessSandbox),
        SandboxKind::Jail => {
            let jail = JailSandbox::new(helper).map_err(|e| {
                anyhow::anyhow!(
                    "{e}\n`--sandbox process` runs functions without isolation, for development \
                     on such hosts."
                )
            })?;
            let jail = match network {
                Some(NetworkKind::Outbound) => {
                    let slirp = crate::sandbox::jail::network::find().map_err(|missing| {
                        crate::sandbox::jail::JailUnavailable {
                            missing: vec![missing],
                        }
                    })?;
                    jail.with_outbound_network(slirp)
                }
                None => match crate::sandbox::jail::network::find() {
                    Ok(slirp) => jail.with_outbound_network(slirp),
                    Err(missing) => {
                        eprintln!("lamina: functions get no network (--network none): {missing}");
                        jail
                    }
                },
                Some(NetworkKind::None) => jail,
                Some(NetworkKind::Host) => jail.with_host_network(),
            };
            // Built while the function's archives are checked and extracted.
            jail.prepare_one();
            Arc::new(jail)
        }
    })
}

/// Draws `extracting NAME  41% (90/218 MB)` on stderr, redrawn only when the percentage moves.
fn terminal_progress() -> Progress {
    let last = std::sync::Mutex::new((PathBuf::new(), u64::MAX));
    Progress(Arc::new(move |archive: &Path, done: u64, total: u64| {
        let percent = (done * 100).checked_div(total).unwrap_or(100).min(100);
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 == archive && last.1 == percent {
            return;
        }
        *last = (archive.to_owned(), percent);
        let name = archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let end = if percent == 100 { "\n" } else { "" };
        eprint!(
            "\rextracting {name} {percent:>3}% ({}/{} MB){end}",
            done / 1_000_000,
            total / 1_000_000
        );
    }))
}

/// The event: `--payload`, `--event FILE`, `--event -`, or `{}`. It must be JSON, as the
/// Invoke API requires, and within Lambda's 6 MB.
fn read_payload(args: &InvokeArgs) -> anyhow::Result<Bytes> {
    let (bytes, source) = match (&args.payload, &args.event) {
        (Some(p), _) => (p.clone().into_bytes(), "--payload".to_owned()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("--event -: reading stdin")?;
            (buf, "--event - (stdin)".to_owned())
        }
        (None, Some(path)) => (
            std::fs::read(path).with_context(|| format!("--event {}", path.display()))?,
            format!("--event {}", path.display()),
        ),
        (None, None) => match &args.event_template {
            Some(name) => {
                // In the region the function is told it runs in.
                let options = crate::sample_events::Options {
                    region: args.region.clone(),
                    ..Default::default()
                };
                let event = crate::sample_events::generate(name, &options)
                    .map_err(|e| anyhow::anyhow!("--event-template {name}: {e}"))?;
                (
                    serde_json::to_vec(&event)?,
                    format!("--event-template {name}"),
                )
            }
            None => (b"{}".to_vec(), String::new()),
        },
    };
    if bytes.len() > MAX_PAYLOAD_BYTES {
        bail!(
            "{source}: {} bytes is over Lambda's payload limit of {MAX_PAYLOAD_BYTES}",
            bytes.len()
        );
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        bail!("{source}: not valid JSON: {e}");
    }
    Ok(Bytes::from(bytes))
}
