//! `lamina events`: the asynchronous queue of a state directory, from outside the server.
//! `ls` counts, per function, the events queued, those waiting for a retry and the records of
//! the failure files; it reads the store read-only, so it works beside a running `lamina
//! serve`, and reads the shared queue in PostgreSQL when the configuration puts it there
//! (`[serve] queue`). `replay` ([`replay`]) sends the records of a failure-destination or
//! dead-letter file back to a running server as new `Event` invocations. `purge` deletes
//! queued events, and only from an embedded store no server holds: a running server keeps its
//! queue in memory too, and would run what was deleted under it anyway.

mod replay;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::file::{Destination, Manifest, QueueSetting};
use crate::serve::event_store::listing::{FunctionQueue, QueuedEvent};
use crate::serve::event_store::postgres::{PostgresReader, redacted};
use crate::serve::event_store::sqlite::{self, OpenError, ReadOnlyStore, SqliteStore};
use crate::serve::event_store::{StoreError, epoch_ms, from_epoch_ms};

pub use replay::ReplayArgs;

/// `lamina events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Count, per function, the Event invocations queued (due now), waiting for a retry and
    /// failed (the records in the dead-letter and failure-destination files); with
    /// --function, list that function's events. Works while `lamina serve` runs.
    Ls(LsArgs),
    /// Send each record of a failure-destination or dead-letter file (JSON Lines) to a
    /// running `lamina serve` again: an Event invocation of its function with its
    /// requestPayload.
    Replay(ReplayArgs),
    /// Delete queued Event invocations (all, or one function's) from a state directory no
    /// `lamina serve` is running on.
    Purge(PurgeArgs),
}

/// Where the queue is: the flags `ls` and `purge` share.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The state directory of the `lamina serve` [default: [serve] state_dir of the
    /// configuration, else $XDG_STATE_HOME/lamina or ~/.local/state/lamina]
    #[arg(long, value_name = "DIR", env = "LAMINA_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The lamina.toml whose [serve] state_dir and failure destinations to use [default:
    /// ./lamina.toml, when there is one]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Arguments of `lamina events ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Where the queue is.
    #[command(flatten)]
    pub state: StateArgs,
    /// List this function's events, one line each.
    #[arg(long, value_name = "NAME")]
    pub function: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `lamina events purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Where the queue is.
    #[command(flatten)]
    pub state: StateArgs,
    /// Delete only this function's events.
    #[arg(long, value_name = "NAME")]
    pub function: Option<String>,
    /// Delete them; without it, say what would be deleted and exit 2.
    #[arg(long)]
    pub yes: bool,
}

/// Runs `lamina events …`.
pub async fn run(command: EventsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EventsCommand::Ls(args) => ls(&args).await,
        EventsCommand::Replay(args) => replay::run(args).await,
        EventsCommand::Purge(args) => purge(&args),
    }
}

/// A state directory and the configuration it was found through, if any; and the shared
/// queue's URL when that configuration puts the queue in PostgreSQL (the state directory
/// still holds the dead-letter files).
struct Place {
    state_dir: PathBuf,
    manifest: Option<Manifest>,
    queue: Option<String>,
}

impl Place {
    /// `--state-dir`, else `[serve] state_dir` of the configuration (`--config`, else
    /// `./lamina.toml`), else `lamina serve`'s default: the same order `lamina serve` uses.
    fn resolve(args: &StateArgs) -> anyhow::Result<Place> {
        let manifest = manifest(args.config.as_deref())?;
        let queue = manifest.as_ref().and_then(|m| match &m.serve.queue {
            Some(QueueSetting::Postgres(url)) => Some(url.clone()),
            _ => None,
        });
        let state_dir = match args
            .state_dir
            .clone()
            .or_else(|| manifest.as_ref().and_then(|m| m.serve.state_dir.clone()))
        {
            Some(dir) => dir,
            None => super::serve::default_state_dir()?,
        };
        // Absolute, for the messages that name it; links are left as they are.
        let state_dir = std::path::absolute(&state_dir).unwrap_or(state_dir);
        Ok(Place {
            state_dir,
            manifest,
            queue,
        })
    }

    /// Where the queue is, as `ls` names it: the state directory, or the shared queue's server
    /// (without its password).
    fn label(&self) -> String {
        match &self.queue {
            Some(url) => redacted(url),
            None => self.state_dir.display().to_string(),
        }
    }
}

/// What `ls` shows: every function's counts, or one function's events.
enum Read {
    Summary(Vec<FunctionQueue>),
    Events(String, Vec<QueuedEvent>),
}

/// Reads the queue of `place`: its embedded store (none yet: nothing queued), or the shared
/// queue in PostgreSQL, on a thread where the synchronous client may block.
async fn read(place: &Place, function: Option<&str>, now_ms: u64) -> anyhow::Result<Read> {
    let Some(url) = place.queue.clone() else {
        let store = ReadOnlyStore::open(&place.state_dir)?;
        return Ok(match (function, &store) {
            (None, Some(store)) => Read::Summary(store.summary(now_ms)?),
            (Some(function), Some(store)) => Read::Events(function.into(), store.list(function)?),
            (None, None) => Read::Summary(Vec::new()),
            (Some(function), None) => Read::Events(function.into(), Vec::new()),
        });
    };
    let function = function.map(str::to_owned);
    let read = tokio::task::spawn_blocking(move || -> Result<Read, StoreError> {
        let mut reader = PostgresReader::connect(&url)?;
        Ok(match function {
            None => Read::Summary(reader.summary(now_ms)?),
            Some(function) => {
                let events = reader.list(&function)?;
                Read::Events(function, events)
            }
        })
    })
    .await
    .context("reading the shared queue")??;
    Ok(read)
}

/// The configuration `--config` names, else `./lamina.toml` if there is one. A SAM template
/// has no `[serve]` and no file destinations: none is read.
pub(crate) fn manifest(given: Option<&Path>) -> anyhow::Result<Option<Manifest>> {
    use crate::config::file::FILE_NAME;
    let path = match given {
        Some(path) => path,
        None if Path::new(FILE_NAME).is_file() => Path::new(FILE_NAME),
        None => return Ok(None),
    };
    if crate::config::template::is_template(path) {
        return Ok(None);
    }
    Ok(Some(Manifest::load(path)?))
}

/// `lamina events ls`.
async fn ls(args: &LsArgs) -> anyhow::Result<ExitCode> {
    let place = Place::resolve(&args.state)?;
    let now_ms = epoch_ms(SystemTime::now());
    let read = read(&place, args.function.as_deref(), now_ms).await?;
    let failed = failed_records(&place);
    let label = place.label();
    let queue = place.queue.as_deref().map(redacted);
    let mut stdout = std::io::stdout().lock();
    match read {
        Read::Summary(queues) => {
            let rows = rows(&place, queues, &failed);
            match args.json {
                true => writeln!(
                    stdout,
                    "{}",
                    json!({
                        "state_dir": place.state_dir,
                        "queue": queue,
                        "functions": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
                    })
                ),
                false => write!(stdout, "{}", table(&label, &rows, now_ms)),
            }
        }
        Read::Events(function, events) => {
            let failed = failed.get(function.as_str());
            match args.json {
                true => writeln!(
                    stdout,
                    "{}",
                    json!({
                        "state_dir": place.state_dir,
                        "queue": queue,
                        "function": function,
                        "events": events.iter().map(|e| event_json(e, now_ms)).collect::<Vec<_>>(),
                        "failed": failed.map_or(0, |f| f.records),
                        "failed_files": failed.map(|f| f.files.clone()).unwrap_or_default(),
                    })
                ),
                false => write!(
                    stdout,
                    "{}",
                    event_table(&label, &function, &events, failed, now_ms)
                ),
            }
        }
    }
    .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `lamina events purge`.
fn purge(args: &PurgeArgs) -> anyhow::Result<ExitCode> {
    let place = Place::resolve(&args.state)?;
    if place.queue.is_some() {
        let config = place
            .manifest
            .as_ref()
            .map(|m| m.path.display().to_string());
        bail!(
            "{}: the queue is in PostgreSQL ([serve] queue), shared by the servers that hold its \
             events in memory as well; lamina events purge empties the embedded store of a state \
             directory only (with every server sharing the queue stopped, delete from \
             lamina_events with psql)",
            config.unwrap_or_default()
        );
    }
    let dir = place.state_dir.display();
    let which = match &args.function {
        Some(f) => format!("events of {f}"),
        None => "events".to_owned(),
    };
    if !place.state_dir.join(sqlite::FILE_NAME).is_file() {
        println!("no event store in {dir}: no {which} to purge");
        return Ok(ExitCode::SUCCESS);
    }
    // A writer makes its lock file there: the directory is checked as `lamina serve` checks it.
    let state_dir = match crate::run_dir::trusted_dir(&place.state_dir) {
        Ok((resolved, _)) => resolved,
        Err(e) => bail!("state directory {e}"),
    };
    // The store's lock is taken as a server takes it: while a server holds it, its events are
    // in its memory as well as in the file, and it would run a deleted one all the same.
    let mut store = match SqliteStore::open(&state_dir) {
        Ok(store) => store,
        Err(OpenError::InUse(_)) => {
            eprintln!(
                "lamina: error: refusing to purge: a lamina serve is running on the state \
                 directory {dir}, and it keeps the queued events in memory too; stop it \
                 (Ctrl-C or SIGTERM) and purge then"
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let now_ms = epoch_ms(SystemTime::now());
    let queues: Vec<FunctionQueue> = store
        .summary(now_ms)?
        .into_iter()
        .filter(|q| args.function.as_ref().is_none_or(|f| *f == q.function))
        .collect();
    let total: u64 = queues.iter().map(|q| q.queued + q.retrying()).sum();
    if total == 0 {
        println!("no {which} queued in {dir}: nothing to purge");
        return Ok(ExitCode::SUCCESS);
    }
    let counts: Vec<String> = queues
        .iter()
        .map(|q| {
            format!(
                "{}: {} queued, {} waiting to retry",
                q.function,
                q.queued,
                q.retrying()
            )
        })
        .collect();
    if !args.yes {
        println!(
            "would delete {} from {dir} ({})",
            super::plural(
                usize::try_from(total).unwrap_or(usize::MAX),
                "event",
                "events"
            ),
            counts.join("; ")
        );
        eprintln!("lamina: nothing deleted: add --yes to delete them");
        return Ok(ExitCode::from(super::EXIT_USAGE));
    }
    let deleted = store.purge(args.function.as_deref())?;
    println!(
        "deleted {} from {dir} ({})",
        super::plural(
            usize::try_from(deleted).unwrap_or(usize::MAX),
            "event",
            "events"
        ),
        counts.join("; ")
    );
    Ok(ExitCode::SUCCESS)
}

/// The records of one function in the failure files.
#[derive(Debug, Default)]
struct Failed {
    records: u64,
    files: BTreeSet<PathBuf>,
}

/// The records in the dead-letter files (`<state dir>/dead-letters/*.jsonl`) and the failure
/// destinations (`file:PATH`) of the configuration, by function: the one a record's
/// `functionArn` names, else the file's own (a line that is no record still counts).
fn failed_records(place: &Place) -> BTreeMap<String, Failed> {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(place.state_dir.join("dead-letters")) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "jsonl")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                files.push((path.clone(), stem.to_owned()));
            }
        }
    }
    if let Some(manifest) = &place.manifest {
        for (name, entry) in &manifest.functions {
            if let Some(Destination::File(path)) = &entry.asynchronous.on_failure
                && !files.iter().any(|(p, _)| p == path)
            {
                files.push((path.clone(), name.clone()));
            }
        }
    }
    let mut failed: BTreeMap<String, Failed> = BTreeMap::new();
    for (path, owner) in files {
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        for line in text.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let function = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|r| {
                    r["requestContext"]["functionArn"]
                        .as_str()
                        .and_then(replay::function_of_arn)
                })
                .unwrap_or_else(|| owner.clone());
            let entry = failed.entry(function).or_default();
            entry.records += 1;
            entry.files.insert(path.clone());
        }
    }
    failed
}

/// One function's line of `ls`.
#[derive(Debug)]
struct Row<'a> {
    queue: FunctionQueue,
    failed: Option<&'a Failed>,
}

impl Row<'_> {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "function": self.queue.function,
            "queued": self.queue.queued,
            "retrying": self.queue.retrying(),
            "retrying_by_attempts": self.queue.retrying_by_attempts.iter()
                .map(|(attempts, n)| (attempts.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
            "next_retry": self.queue.next_retry_ms.map(rfc3339),
            "failed": self.failed.map_or(0, |f| f.records),
            "failed_files": self.failed.map(|f| f.files.clone()).unwrap_or_default(),
        })
    }
}

/// Every function with something queued, waiting or failed, and every configured one.
fn rows<'a>(
    place: &Place,
    queues: Vec<FunctionQueue>,
    failed: &'a BTreeMap<String, Failed>,
) -> Vec<Row<'a>> {
    let mut by_name: BTreeMap<String, FunctionQueue> = queues
        .into_iter()
        .map(|q| (q.function.clone(), q))
        .collect();
    let configured = place.manifest.iter().flat_map(|m| m.functions.keys());
    for name in configured.chain(failed.keys()) {
        by_name
            .entry(name.clone())
            .or_insert_with(|| FunctionQueue {
                function: name.clone(),
                ..FunctionQueue::default()
            });
    }
    by_name
        .into_values()
        .map(|queue| Row {
            failed: failed.get(&queue.function),
            queue,
        })
        .collect()
}

/// `ls` as a table.
fn table(place: &str, rows: &[Row<'_>], now_ms: u64) -> String {
    if rows.is_empty() {
        return format!("nothing queued, waiting to retry or failed in {place}\n");
    }
    let width = rows
        .iter()
        .map(|r| r.queue.function.len())
        .max()
        .unwrap_or(0)
        .max("FUNCTION".len());
    let mut out = format!(
        "{:<width$}  {:>6}  {:>8}  {:>6}  NEXT RETRY\n",
        "FUNCTION", "QUEUED", "RETRYING", "FAILED"
    );
    for row in rows {
        let q = &row.queue;
        let next = match q.next_retry_ms {
            Some(due) => {
                let attempts: Vec<String> = q
                    .retrying_by_attempts
                    .iter()
                    .map(|(attempts, n)| {
                        format!(
                            "{n} after {}",
                            super::plural(*attempts as usize, "attempt", "attempts")
                        )
                    })
                    .collect();
                format!("{} ({})", from_now(due, now_ms), attempts.join(", "))
            }
            None => "-".to_owned(),
        };
        out += &format!(
            "{:<width$}  {:>6}  {:>8}  {:>6}  {next}\n",
            q.function,
            q.queued,
            q.retrying(),
            row.failed.map_or(0, |f| f.records),
        );
    }
    out
}

/// `ls --function` as a table, and a line for the failed records.
fn event_table(
    place: &str,
    function: &str,
    events: &[QueuedEvent],
    failed: Option<&Failed>,
    now_ms: u64,
) -> String {
    let mut out = String::new();
    if events.is_empty() {
        out += &format!("no events of {function} queued or waiting to retry in {place}\n");
    } else {
        let width = events
            .iter()
            .map(|e| e.request_id.len())
            .max()
            .unwrap_or(0)
            .max("REQUEST ID".len());
        out += &format!(
            "{:<width$}  {:<24}  {:>8}  {:<36}  PAYLOAD\n",
            "REQUEST ID", "ACCEPTED", "ATTEMPTS", "DUE"
        );
        for e in events {
            let due = match e.due_ms <= now_ms {
                true => "now".to_owned(),
                false => format!("{} ({})", rfc3339(e.due_ms), from_now(e.due_ms, now_ms)),
            };
            out += &format!(
                "{:<width$}  {:<24}  {:>8}  {due:<36}  {} B\n",
                e.request_id,
                rfc3339(e.accepted_ms),
                e.attempts,
                e.payload_bytes
            );
        }
    }
    if let Some(failed) = failed {
        let files: Vec<String> = failed
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        out += &format!(
            "failed: {} in {}\n",
            super::plural(
                usize::try_from(failed.records).unwrap_or(usize::MAX),
                "record",
                "records"
            ),
            files.join(", ")
        );
    }
    out
}

fn event_json(e: &QueuedEvent, now_ms: u64) -> serde_json::Value {
    json!({
        "request_id": e.request_id,
        "accepted": rfc3339(e.accepted_ms),
        "attempts": e.attempts,
        "due": rfc3339(e.due_ms.max(e.accepted_ms)),
        "due_now": e.due_ms <= now_ms,
        "payload_bytes": e.payload_bytes,
    })
}

/// A time as RFC 3339 with milliseconds, UTC.
fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(from_epoch_ms(ms)).to_string()
}

/// `in 29s`, or `now` for a time already past.
fn from_now(ms: u64, now_ms: u64) -> String {
    match ms.checked_sub(now_ms) {
        Some(ahead) if ahead > 0 => format!("in {}s", ahead.div_ceil(1000)),
        _ => "now".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(
        function: &str,
        queued: u64,
        retrying: &[(u32, u64)],
        next: Option<u64>,
    ) -> FunctionQueue {
        FunctionQueue {
            function: function.into(),
            queued,
            retrying_by_attempts: retrying.iter().copied().collect(),
            next_retry_ms: next,
        }
    }

    #[test]
    fn the_table_counts_each_function_with_its_retries_and_failed_records() {
        let place = Place {
            state_dir: "/s".into(),
            manifest: None,
            queue: None,
        };
        let mut failed = BTreeMap::new();
        failed.insert(
            "b".to_owned(),
            Failed {
                records: 3,
                files: [PathBuf::from("/s/dead-letters/b.jsonl")].into(),
            },
        );
        let rows = rows(
            &place,
            vec![queue("a", 2, &[(1, 2), (2, 1)], Some(40_000))],
            &failed,
        );
        let text = table(&place.label(), &rows, 10_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("FUNCTION  QUEUED  RETRYING  FAILED"),
            "{text}"
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "a",
                "2",
                "3",
                "0",
                "in",
                "30s",
                "(2",
                "after",
                "1",
                "attempt,",
                "1",
                "after",
                "2",
                "attempts)"
            ]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["b", "0", "0", "3", "-"]
        );
        assert!(table(&place.label(), &[], 0).contains("nothing queued"));
    }

    #[test]
    fn failed_records_are_counted_by_the_function_their_arn_names() {
        let dir = tempfile::tempdir().unwrap();
        let letters = dir.path().join("dead-letters");
        std::fs::create_dir(&letters).unwrap();
        std::fs::write(
            letters.join("a.jsonl"),
            "{\"requestContext\":{\"functionArn\":\"arn:aws:lambda:us-east-1:0:function:a:$LATEST\"}}\n\
             not a record\n\n\
             {\"requestContext\":{\"functionArn\":\"arn:aws:lambda:us-east-1:0:function:other:$LATEST\"}}\n",
        )
        .unwrap();
        let place = Place {
            state_dir: dir.path().to_owned(),
            manifest: None,
            queue: None,
        };
        let failed = failed_records(&place);
        assert_eq!(failed["a"].records, 2);
        assert_eq!(failed["other"].records, 1);
        assert_eq!(failed.len(), 2);
    }
}
