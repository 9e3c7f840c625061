//! `lamina serve`: reads `lamina.toml` (or serves the bundled examples when there is none),
//! resolves every function before anything starts, and serves the Invoke API and the HTTP
//! front until Ctrl-C or SIGTERM.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::invoke::{NetworkKind, SandboxKind, Sandboxes, native_sandbox};
use crate::config::FunctionConfig;
use crate::config::file::ListenAddr;
use crate::config::file::NetworkMode;
use crate::logs::NamedStderrSink;
use crate::pool::FunctionPool;
use crate::sandbox::jail::Helper;
use crate::serve::event_queue::EventQueue;
use crate::serve::routes::RouteTable;
use crate::serve::{App, Function};

/// The listener's default address: loopback only, as the Invoke API checks no credentials.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

/// Arguments of `lamina serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration [default: ./lamina.toml, else ./template.yaml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to listen, HOST:PORT (an address or a name such as localhost; port 0 picks a
    /// free one) [default: 127.0.0.1:9000]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<ListenAddr>,
    /// Where failed asynchronous invocations are recorded [default: $XDG_STATE_HOME/lamina
    /// or ~/.local/state/lamina]
    #[arg(long, value_name = "DIR", env = "LAMINA_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where unpacked .zip archives are kept for reuse [default: $XDG_CACHE_HOME/lamina or
    /// ~/.cache/lamina]
    #[arg(long, env = "LAMINA_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// How native bootstraps are isolated (see `lamina invoke --help`).
    #[arg(long, value_enum, default_value_t = SandboxKind::Jail)]
    pub sandbox: SandboxKind,
    /// The functions' network in the jail (see `lamina invoke --help`): `outbound`, `none` or
    /// `host` [default: `network` in lamina.toml's [serve], else outbound]
    #[arg(long, value_enum)]
    pub network: Option<NetworkKind>,
    /// A SAM template, its parameters and layer mappings.
    #[command(flatten)]
    pub template: super::TemplateArgs,
    /// The env file and AWS credentials.
    #[command(flatten)]
    pub env: super::EnvArgs,
}

/// Runs `lamina serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let given = args.template.template.as_deref().or(args.config.as_deref());
    let path = super::find_config(given)?;
    let mut manifest = super::load_config(&path, &args.template, None)?;
    let is_template = crate::config::template::is_template(&path);
    if manifest.functions.is_empty() {
        match is_template {
            true => bail!("{}: no AWS::Serverless::Function to serve", path.display()),
            false => bail!("{}: no [functions] to serve", path.display()),
        }
    }
    let cache_root = args
        .cache_dir
        .clone()
        .unwrap_or_else(lamina_layers::Cache::default_root);
    let state_dir = match args.state_dir.clone().or(manifest.serve.state_dir.clone()) {
        Some(dir) => dir,
        None => default_state_dir()?,
    };
    // Dead letters are written there as lamina's user: nobody else may plant links in it.
    // Its resolved path from here on, so a link checked through cannot be swapped later.
    let state_dir = match crate::run_dir::trusted_dir(&state_dir) {
        Ok((resolved, _)) => resolved,
        Err(e) => bail!("state directory {e}"),
    };
    // Every function is resolved (archives extracted, layers composed) before anything
    // starts; every problem is reported.
    let file = path.display().to_string();
    let mut entries = std::mem::take(&mut manifest.functions);
    let cache_dir = args.cache_dir.clone();
    let credentials = args.env.credentials()?;
    if let Some(env_file) = args.env.env_file()? {
        let known: Vec<(String, String)> = entries
            .iter()
            .map(|(key, e)| {
                (
                    key.clone(),
                    e.config.name.clone().unwrap_or_else(|| key.clone()),
                )
            })
            .collect();
        let pairs: Vec<(&str, &str)> = known
            .iter()
            .map(|(k, n)| (k.as_str(), n.as_str()))
            .collect();
        for unknown in env_file.unknown_functions(&pairs) {
            eprintln!(
                "lamina: note: --env-file: {unknown}: no such function; its variables are not used"
            );
        }
        for (key, name) in &known {
            if let Some(entry) = entries.get_mut(key) {
                env_file.apply(key, name, &mut entry.config.environment);
            }
        }
    }
    let resolved = tokio::task::spawn_blocking(move || {
        entries
            .into_iter()
            .map(|(name, entry)| {
                let config = FunctionConfig {
                    cache_dir: cache_dir.clone(),
                    credentials: credentials.clone(),
                    ..entry.config
                };
                (name, entry.max_retry_attempts, config.resolve())
            })
            .collect::<Vec<_>>()
    })
    .await?;
    let mut problems = Vec::new();
    let mut specs = Vec::new();
    for (name, max_retry_attempts, spec) in resolved {
        match spec {
            Ok(spec) => specs.push((Arc::new(spec), max_retry_attempts)),
            Err(e) if is_template => problems.push(format!("{file}: Resources.{name}: {e}")),
            Err(e) => problems.push(format!("{file}: functions.{name}: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    let network = args
        .network
        .or(manifest.serve.network.map(|mode| match mode {
            NetworkMode::Outbound => NetworkKind::Outbound,
            NetworkMode::None => NetworkKind::None,
            NetworkMode::Host => NetworkKind::Host,
        }));
    let sandboxes = Sandboxes::for_functions(
        specs.iter().map(|(s, _)| s.as_ref()),
        args.sandbox,
        || native_sandbox(args.sandbox, network, Helper::this_executable()),
        &cache_root,
    )?;
    let mut functions = HashMap::new();
    for (spec, max_retry_attempts) in specs {
        let sandbox = sandboxes.for_spec(&spec);
        let name = spec.name.clone();
        let pool = FunctionPool::start(spec, sandbox, Arc::new(NamedStderrSink::new(&name)));
        functions.insert(
            name,
            Arc::new(Function {
                pool,
                max_retry_attempts,
            }),
        );
    }

    let retry_delay = manifest
        .serve
        .retry_delay
        .unwrap_or(Duration::from_secs(60));
    let app = Arc::new(App {
        functions,
        routes: RouteTable::new(&manifest.routes),
        events: EventQueue::start(state_dir.clone(), retry_delay),
    });
    let listen = args
        .listen
        .or(manifest.serve.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a valid address"));
    let bound = match listen.resolve().await {
        Ok(addrs) if addrs.is_empty() => Err(std::io::Error::other("the name has no address")),
        Ok(addrs) => tokio::net::TcpListener::bind(addrs.as_slice()).await,
        Err(e) => Err(e),
    };
    let listener = match bound {
        Ok(listener) => listener,
        Err(e) => {
            app.shutdown().await;
            bail!("cannot listen on {listen}: {e}");
        }
    };
    let addr = listener.local_addr().context("the listener's address")?;
    let mut names: Vec<_> = app.functions.keys().cloned().collect();
    names.sort();
    eprintln!(
        "lamina: serving {} from {} on http://{addr} (Invoke API at /2015-03-31/functions/NAME/invocations; {}; state in {})",
        names.join(", "),
        path.display(),
        super::plural(manifest.routes.len(), "route", "routes"),
        state_dir.display()
    );
    if !addr.ip().is_loopback() {
        eprintln!(
            "WARNING: listening on {addr}: lamina checks no credentials; anyone who can reach \
             this address can invoke these functions."
        );
    }
    crate::serve::serve(listener, Arc::clone(&app), stop_signal()).await;
    eprintln!("lamina: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match &mut term {
                Some(term) => { term.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
    eprintln!("lamina: stopping: finishing invocations in flight");
}

/// `$XDG_STATE_HOME/lamina`, else `~/.local/state/lamina`, else (no home) `/var/lib/lamina`
/// for root; never a fixed name in a world-writable directory.
fn default_state_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("lamina"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(home).join(".local/state/lamina"));
    }
    if nix::unistd::Uid::effective().is_root() {
        return Ok(PathBuf::from("/var/lib/lamina"));
    }
    bail!("no state directory: HOME and XDG_STATE_HOME are not set; give one with --state-dir")
}
