//! `lamina serve`: reads `lamina.toml` or a SAM template (or serves the bundled examples when
//! there is none), resolves every function before anything starts ([`loader`]), and serves
//! the Invoke API and the HTTP front until Ctrl-C or SIGTERM; with `--watch`, reloading on
//! every change.

mod loader;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::invoke::{NetworkKind, SandboxKind, Sandboxes};
use crate::config::file::QueueSetting;
use crate::config::file::{EventSourceEntry, ListenAddr};
use crate::serve::App;
use crate::serve::event_queue::EventQueue;
use crate::serve::event_store::postgres::PostgresStore;
use crate::serve::event_store::sqlite::SqliteStore;
use crate::serve::event_store::{Committer, StoredEvent, Volatile};
use crate::serve::sqs::Pollers;
use crate::serve::watch::Watcher;
use loader::{Loaded, Loader};

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
    /// Reload when a function's code or layers, the configuration or the env file change:
    /// new invocations go to the new version, the old one's environments finish what they
    /// are doing; a change that does not load leaves the previous version serving.
    #[arg(long)]
    pub watch: bool,
}

/// Runs `lamina serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Every invocation writes its log lines to stderr: a reader behind a pipe gets room to lag.
    if let Some(bytes) = crate::logs::widen_stderr_pipe() {
        tracing::debug!("stderr is a pipe of {bytes} bytes");
    }
    let given = args.template.template.as_deref().or(args.config.as_deref());
    let path = super::find_config(given)?;
    let cache_root = args
        .cache_dir
        .clone()
        .unwrap_or_else(lamina_layers::Cache::default_root);
    let loader = Loader {
        path: path.clone(),
        template: args.template.clone(),
        env: args.env.clone(),
        cache_dir: args.cache_dir.clone(),
        cache_root,
        sandbox: args.sandbox,
        network: args.network,
        watch: args.watch,
    };
    // Every function is resolved (archives extracted, layers composed) before anything
    // starts; every problem is reported.
    let mut sandboxes = None;
    let Loaded {
        served,
        manifest,
        watched,
        schedules,
        event_sources,
        ..
    } = loader.load(&mut sandboxes, None).await?;
    // lamina's own SQS calls (destinations, event sources) are made as the caller, with
    // --profile if given (--no-credentials is about the functions' keys only).
    crate::serve::sqs::configure(crate::serve::sqs::Settings::of_caller(
        args.env.profile.as_deref(),
    ));
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
    let retry_delay = manifest
        .serve
        .retry_delay
        .unwrap_or(Duration::from_secs(60));
    // The asynchronous queue's store: accepted events survive stops and crashes there, and
    // what a previous run left is resumed below.
    let (committer, pending) = open_event_store(&state_dir, &manifest.serve)?;
    let app = Arc::new(App::new(
        served,
        EventQueue::start(state_dir.clone(), retry_delay, committer),
    ));
    app.events.connect(&app);
    app.events.resume(pending, &app.served().functions);
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
    let scheduled = crate::serve::schedule::start(&app, schedules);
    // SQS event source mappings: their pollers run until the server stops (or a reload
    // changes them); stopping lets the batches being invoked finish.
    let pollers = Arc::new(tokio::sync::Mutex::new(crate::serve::sqs::start(
        &app,
        &event_sources,
    )));
    let mut names: Vec<_> = app.served().functions.keys().cloned().collect();
    names.sort();
    for source in &event_sources {
        eprintln!("lamina: {}", describe_event_source(source));
    }
    eprintln!(
        "lamina: serving {} from {} on http://{addr} (Invoke API at /2015-03-31/functions/NAME/invocations; {}; state in {})",
        names.join(", "),
        path.display(),
        super::plural(manifest.routes.len(), "route", "routes"),
        state_dir.display()
    );
    for name in &manifest.function_urls {
        eprintln!(
            "lamina: function URL of {name}: http://{addr}{}{name}/",
            crate::serve::routes::URL_PREFIX
        );
    }
    if !addr.ip().is_loopback() {
        eprintln!(
            "WARNING: listening on {addr}: lamina checks no credentials; anyone who can reach \
             this address can invoke these functions."
        );
    }
    let watching = match args.watch {
        true => {
            let mut watcher = Watcher::new()?;
            watcher.watch_only(&watched)?;
            eprintln!(
                "lamina: watching {} for changes",
                super::plural(watched.len(), "path", "paths")
            );
            Some(tokio::spawn(reload_on_change(
                Arc::clone(&app),
                loader,
                sandboxes,
                watcher,
                scheduled,
                Arc::clone(&pollers),
                event_sources,
            )))
        }
        false => {
            // Without reloads the schedules run for as long as the server does.
            drop(scheduled);
            None
        }
    };
    let stopping = async move {
        stop_signal().await;
        let running = std::mem::replace(&mut *pollers.lock().await, Pollers::none());
        running.stop().await;
    };
    crate::serve::serve(listener, Arc::clone(&app), stopping).await;
    if let Some(watching) = watching {
        watching.abort();
    }
    eprintln!("lamina: stopped");
    Ok(ExitCode::SUCCESS)
}

/// How long a server's lease on an event of a shared queue lasts unrenewed (renewed every
/// third of it).
const DEFAULT_QUEUE_LEASE: Duration = Duration::from_secs(30);

/// The event store `[serve] queue` names: the embedded one in `state_dir` (the default), a
/// shared PostgreSQL queue, or, for the queue benchmark's floor only,
/// `LAMINA_TEST_QUEUE=volatile`: none. Its writer, and the events it still holds.
fn open_event_store(
    state_dir: &std::path::Path,
    settings: &crate::config::file::ServeSettings,
) -> anyhow::Result<(Committer, Vec<StoredEvent>)> {
    use crate::serve::event_store::EventStore as _;
    if std::env::var_os("LAMINA_TEST_QUEUE").is_some_and(|v| v == "volatile") {
        eprintln!(
            "WARNING: LAMINA_TEST_QUEUE=volatile: accepted events are not kept (a test switch)"
        );
        return Ok((Committer::start(Volatile), Vec::new()));
    }
    if let Some(QueueSetting::Postgres(url)) = &settings.queue {
        let shown = crate::serve::event_store::postgres::redacted(url);
        let url = url.clone();
        let lease = settings.queue_lease.unwrap_or(DEFAULT_QUEUE_LEASE);
        // The client runs a runtime of its own: it connects on a thread outside ours.
        let store = std::thread::spawn(move || PostgresStore::connect(&url, lease))
            .join()
            .map_err(|_| anyhow::anyhow!("connecting to the PostgreSQL queue panicked"))??;
        eprintln!(
            "lamina: asynchronous invocations are queued in {shown} (shared; this server leases as {})",
            store.owner()
        );
        return Ok((Committer::start(store), Vec::new()));
    }
    let mut store = SqliteStore::open(state_dir)?;
    let pending = store.pending()?;
    Ok((Committer::start(store), pending))
}

/// `--watch`: after each change, the configuration is loaded again; what loads replaces what
/// is served (unchanged functions keep their environments), what does not is reported and
/// the previous version goes on serving.
async fn reload_on_change(
    app: Arc<App>,
    loader: Loader,
    mut sandboxes: Option<Sandboxes>,
    mut watcher: Watcher,
    mut scheduled: Vec<tokio::task::JoinHandle<()>>,
    pollers: Arc<tokio::sync::Mutex<Pollers>>,
    mut event_sources: Vec<EventSourceEntry>,
) {
    loop {
        let changed = watcher.changed().await;
        if changed.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let current = app.served();
        match loader.load(&mut sandboxes, Some(&current)).await {
            Ok(loaded) => {
                drop(current);
                let mut changes = loaded.changes.clone();
                let sources_changed = loaded.event_sources != event_sources;
                if sources_changed {
                    changes.push("event sources".into());
                }
                let what = match changes.is_empty() {
                    true => "nothing that is served changed".to_owned(),
                    false => changes.join(", "),
                };
                let schedules_changed = loaded.changes.iter().any(|c| c == "schedules");
                app.replace(loaded.served);
                if schedules_changed {
                    for task in scheduled.drain(..) {
                        task.abort();
                    }
                    scheduled = crate::serve::schedule::start(&app, loaded.schedules);
                }
                if sources_changed {
                    let fresh = crate::serve::sqs::start(&app, &loaded.event_sources);
                    let old = std::mem::replace(&mut *pollers.lock().await, fresh);
                    // The old pollers finish their batches in flight meanwhile.
                    tokio::spawn(old.stop());
                    for source in &loaded.event_sources {
                        eprintln!("lamina: {}", describe_event_source(source));
                    }
                    event_sources = loaded.event_sources;
                }
                if let Err(e) = watcher.watch_only(&loaded.watched) {
                    eprintln!("lamina: {e}");
                }
                eprintln!(
                    "lamina: reloaded in {} ms after a change to {}: {what}",
                    started.elapsed().as_millis(),
                    shown_paths(&changed)
                );
            }
            Err(e) => eprintln!(
                "lamina: reload failed after a change to {}; still serving the previous \
                 version: {e:#}",
                shown_paths(&changed)
            ),
        }
    }
}

/// The start-up line of an event source mapping.
fn describe_event_source(source: &EventSourceEntry) -> String {
    let state = match source.enabled {
        true => format!(
            "batch size {}, window {} s",
            source.batch_size,
            source.maximum_batching_window.as_secs()
        ),
        false => "disabled".to_owned(),
    };
    format!(
        "SQS event source: {} -> {} ({state})",
        source.queue, source.function
    )
}

/// The first few changed paths, for the reload line.
fn shown_paths(paths: &[PathBuf]) -> String {
    let mut shown: Vec<String> = paths
        .iter()
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    if paths.len() > 3 {
        shown.push(format!("{} more", paths.len() - 3));
    }
    shown.join(", ")
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
pub(crate) fn default_state_dir() -> anyhow::Result<PathBuf> {
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
