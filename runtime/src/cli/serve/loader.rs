//! What `lamina serve` serves, made from its configuration: read the file (`lamina.toml` or a
//! SAM template), apply the env file and credentials, resolve every function, start a pool
//! for each, and build the route table. At start-up, once; under `--watch`, again after every
//! change, when each function whose configuration and files are unchanged keeps its pool (and
//! its warm environments) and only the others get new ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;

use super::super::invoke::{NetworkKind, SandboxKind, Sandboxes, native_sandbox};
use super::super::{EnvArgs, TemplateArgs};
use crate::config::FunctionConfig;
use crate::config::file::{AsyncConfig, EventSourceEntry, Manifest, NetworkMode};
use crate::logs::NamedStderrSink;
use crate::pool::FunctionPool;
use crate::sandbox::jail::Helper;
use crate::serve::routes::RouteTable;
use crate::serve::schedule::Schedule;
use crate::serve::{Function, Served};

/// Everything needed to (re)load the configuration.
#[derive(Debug, Clone)]
pub struct Loader {
    /// The configuration file.
    pub path: PathBuf,
    /// Template parameters and layer mappings.
    pub template: TemplateArgs,
    /// Env file and credentials.
    pub env: EnvArgs,
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// The cache's root.
    pub cache_root: PathBuf,
    /// `--sandbox`.
    pub sandbox: SandboxKind,
    /// `--network`.
    pub network: Option<NetworkKind>,
    /// `--watch`: only then is each function's identity (a walk of its code and layers)
    /// worth taking, for the next reload to compare.
    pub watch: bool,
}

/// One load's result.
#[derive(Debug)]
pub struct Loaded {
    /// What to serve.
    pub served: Served,
    /// The manifest as read (its `[serve]` settings and routes).
    pub manifest: Manifest,
    /// Every file and directory the result depends on: what `--watch` watches.
    pub watched: Vec<PathBuf>,
    /// What differs from the previous version: `name (new)`, `name (changed)`,
    /// `name (removed)`.
    pub changes: Vec<String>,
    /// The functions' schedules.
    pub schedules: Vec<Schedule>,
    /// The SQS queues polled for functions.
    pub event_sources: Vec<EventSourceEntry>,
}

/// A function's identity for reuse: its configuration as written and the state of its files.
fn identity(config: &FunctionConfig, asynchronous: &AsyncConfig) -> String {
    let mut id = format!("{config:?}|{asynchronous:?}");
    for path in std::iter::once(&config.code)
        .chain(&config.layers)
        .chain(&config.runtime_package)
    {
        id.push('|');
        id.push_str(&fingerprint(path));
    }
    id
}

/// A path's state: a directory's tree fingerprint, a file's size, time and inode.
fn fingerprint(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => lamina_layers::dir_fingerprint(path).unwrap_or_default(),
        Ok(m) => format!("{}:{}:{}:{}", m.ino(), m.len(), m.mtime(), m.mtime_nsec()),
        Err(e) => format!("missing: {e}"),
    }
}

impl Loader {
    /// Reads and resolves the configuration. `previous` is what is being served now: its
    /// unchanged functions are carried over as they are. Nothing is changed on failure.
    pub async fn load(
        &self,
        sandboxes: &mut Option<Sandboxes>,
        previous: Option<&Served>,
    ) -> anyhow::Result<Loaded> {
        let mut manifest = super::super::load_config(&self.path, &self.template, None)?;
        let is_template = crate::config::template::is_template(&self.path);
        if manifest.functions.is_empty() {
            match is_template {
                true => bail!(
                    "{}: no AWS::Serverless::Function to serve",
                    self.path.display()
                ),
                false => bail!("{}: no [functions] to serve", self.path.display()),
            }
        }
        let mut entries = std::mem::take(&mut manifest.functions);
        let credentials = self.env.credentials()?;
        let mut watched = vec![self.path.clone()];
        if let Some(env_file) = self.env.env_file()? {
            watched.extend(self.env.env_file.clone());
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
        // Each function: carried over when nothing about it changed, else resolved anew.
        // A destination names a function served here.
        let names: Vec<String> = entries
            .iter()
            .map(|(key, e)| e.config.name.clone().unwrap_or_else(|| key.clone()))
            .collect();
        let mut problems = Vec::new();
        for (key, entry) in &entries {
            let a = &entry.asynchronous;
            for (which, d) in [("on_success", &a.on_success), ("on_failure", &a.on_failure)] {
                if let Some(crate::config::file::Destination::Function(target)) = d
                    && !names.contains(target)
                {
                    problems.push(format!(
                        "{}: {key}: {which}: function:{target} is not served here",
                        self.path.display()
                    ));
                }
            }
        }
        for source in &manifest.event_sources {
            if !names.contains(&source.function) {
                problems.push(format!(
                    "{}: function {} is not served here",
                    source.at, source.function
                ));
            }
        }
        let mut kept: HashMap<String, Arc<Function>> = HashMap::new();
        let mut fresh = Vec::new();
        let mut schedules = Vec::new();
        for (key, entry) in &entries {
            let function = entry.config.name.clone().unwrap_or_else(|| key.clone());
            let region = entry
                .config
                .region
                .clone()
                .unwrap_or_else(|| crate::config::DEFAULT_REGION.to_owned());
            for written in &entry.schedules {
                match written.expression.parse() {
                    Ok(expression) => schedules.push(Schedule {
                        function: function.clone(),
                        name: written.name.clone(),
                        expression,
                        input: written.input.clone(),
                        region: region.clone(),
                    }),
                    Err(e) => problems.push(format!("{}: {e}", written.at)),
                }
            }
        }
        for (key, entry) in entries {
            let config = FunctionConfig {
                cache_dir: self.cache_dir.clone(),
                credentials: credentials.clone(),
                ..entry.config
            };
            watched.push(config.code.clone());
            watched.extend(config.layers.iter().cloned());
            let id = match self.watch {
                true => identity(&config, &entry.asynchronous),
                false => String::new(),
            };
            let name = config.name.clone().unwrap_or_else(|| key.clone());
            let same = previous
                .and_then(|p| p.functions.get(&name))
                .filter(|f| f.identity == id);
            match same {
                Some(function) => {
                    kept.insert(name, Arc::clone(function));
                }
                None => fresh.push((key, id, entry.asynchronous.clone(), config)),
            }
        }
        let file = self.path.display().to_string();
        let resolved = tokio::task::spawn_blocking(move || {
            fresh
                .into_iter()
                .map(|(key, id, retries, config)| (key, id, retries, config.resolve()))
                .collect::<Vec<_>>()
        })
        .await?;
        let mut specs = Vec::new();
        for (key, id, retries, spec) in resolved {
            match spec {
                Ok(spec) => specs.push((Arc::new(spec), id, retries)),
                Err(e) if is_template => problems.push(format!("{file}: Resources.{key}: {e}")),
                Err(e) => problems.push(format!("{file}: functions.{key}: {e}")),
            }
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        let network = self
            .network
            .or(manifest.serve.network.map(|mode| match mode {
                NetworkMode::Outbound => NetworkKind::Outbound,
                NetworkMode::None => NetworkKind::None,
                NetworkMode::Host => NetworkKind::Host,
            }));
        let specs_only = specs.iter().map(|(s, _, _)| s.as_ref());
        let make_native = || native_sandbox(self.sandbox, network, Helper::this_executable());
        match sandboxes {
            Some(existing) => {
                existing.cover(specs_only, self.sandbox, make_native, &self.cache_root)?
            }
            None => {
                *sandboxes = Some(Sandboxes::for_functions(
                    specs_only,
                    self.sandbox,
                    make_native,
                    &self.cache_root,
                )?);
            }
        }
        let backends = sandboxes.as_ref().expect("made above");
        let mut changes = Vec::new();
        let mut functions = kept;
        for (spec, id, asynchronous) in specs {
            let name = spec.name.clone();
            let existed = previous.is_some_and(|p| p.functions.contains_key(&name));
            if previous.is_some() {
                changes.push(format!(
                    "{name} ({})",
                    if existed { "changed" } else { "new" }
                ));
            }
            let sandbox = backends.for_spec(&spec);
            let pool = FunctionPool::start(spec, sandbox, Arc::new(NamedStderrSink::new(&name)));
            functions.insert(
                name,
                Arc::new(Function {
                    pool,
                    asynchronous,
                    identity: id,
                }),
            );
        }
        if let Some(previous) = previous {
            for name in previous.functions.keys() {
                if !functions.contains_key(name) {
                    changes.push(format!("{name} (removed)"));
                }
            }
            let before: Vec<String> = previous.routes.keys();
            let after =
                RouteTable::new(&manifest.routes).with_function_urls(&manifest.function_urls);
            if before != after.keys() {
                changes.push("routes".into());
            }
            if previous.schedules != schedules {
                changes.push("schedules".into());
            }
        }
        changes.sort();
        Ok(Loaded {
            served: Served {
                functions,
                routes: RouteTable::new(&manifest.routes)
                    .with_function_urls(&manifest.function_urls),
                schedules: schedules.clone(),
            },
            event_sources: manifest.event_sources.clone(),
            manifest,
            watched,
            changes,
            schedules,
        })
    }
}
