//! `lamina serve --watch`: the file system watch behind reloads. The watcher follows the
//! configuration, the env file and every function's code and layers (directories
//! recursively; a file through its directory, filtered to the file), and reports a change once
//! the files have been quiet for [`QUIET`], so that an editor's save (write, rename, touch) or
//! a build writing many files is one reload. Files nobody edits by hand (Python's bytecode
//! caches, version control, editors' swap files) are not changes. The reload itself is the
//! caller's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long the files must be still before a change is reported.
pub const QUIET: Duration = Duration::from_millis(100);
/// A stream of writes is reported after this long even if it has not stopped.
const LONGEST_WAIT: Duration = Duration::from_secs(2);

/// Watches a set of paths.
pub struct Watcher {
    inner: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Event>,
    /// What is being watched: (the path asked for, the path given to the OS, recursive).
    watched: Vec<(PathBuf, PathBuf, RecursiveMode)>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("watched", &self.watched)
            .finish()
    }
}

/// Why the watch could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("watching {path} for changes: {source}")]
pub struct WatchError {
    /// The path.
    pub path: PathBuf,
    /// The OS's answer.
    pub source: notify::Error,
}

impl Watcher {
    /// A watcher of nothing yet.
    pub fn new() -> Result<Watcher, WatchError> {
        let (tx, events) = mpsc::unbounded_channel();
        let inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                let _ = tx.send(event);
            }
        })
        .map_err(|source| WatchError {
            path: PathBuf::new(),
            source,
        })?;
        Ok(Watcher {
            inner,
            events,
            watched: Vec::new(),
        })
    }

    /// Watches exactly `paths` from now on (what a reload depends on changes with it).
    pub fn watch_only(&mut self, paths: &[PathBuf]) -> Result<(), WatchError> {
        for (_, os_path, _) in self.watched.drain(..) {
            let _ = self.inner.unwatch(&os_path);
        }
        let mut seen = BTreeSet::new();
        for path in paths {
            let path = path.canonicalize().unwrap_or_else(|_| path.clone());
            let (os_path, mode) = match path.is_dir() {
                true => (path.clone(), RecursiveMode::Recursive),
                // A file is replaced, not just written, by many editors: its directory sees
                // that; the events are filtered to the file.
                false => (
                    path.parent().unwrap_or(Path::new("/")).to_owned(),
                    RecursiveMode::NonRecursive,
                ),
            };
            if !seen.insert((os_path.clone(), mode == RecursiveMode::Recursive)) {
                self.watched.push((path, os_path, mode));
                continue;
            }
            self.inner
                .watch(&os_path, mode)
                .map_err(|source| WatchError {
                    path: os_path.clone(),
                    source,
                })?;
            self.watched.push((path, os_path, mode));
        }
        Ok(())
    }

    /// Whether an event at `path` is a change to what is watched.
    fn relevant(&self, path: &Path) -> bool {
        if ignored(path) {
            return false;
        }
        self.watched.iter().any(|(asked, _, mode)| match mode {
            RecursiveMode::Recursive => path.starts_with(asked),
            RecursiveMode::NonRecursive => path == asked,
        })
    }

    /// Waits for a change, then for the files to be quiet; returns the paths that changed.
    pub async fn changed(&mut self) -> Vec<PathBuf> {
        let mut changed = BTreeSet::new();
        loop {
            let Some(event) = self.events.recv().await else {
                return Vec::new();
            };
            self.take(event, &mut changed);
            if !changed.is_empty() {
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + LONGEST_WAIT;
        loop {
            let quiet = tokio::time::sleep(QUIET);
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.take(event, &mut changed),
                    None => break,
                },
                () = quiet => break,
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        changed.into_iter().collect()
    }

    fn take(&self, event: notify::Event, changed: &mut BTreeSet<PathBuf>) {
        if matches!(event.kind, EventKind::Access(_) | EventKind::Other) {
            return;
        }
        for path in event.paths {
            if self.relevant(&path) {
                changed.insert(path);
            }
        }
    }
}

/// Files that change without anyone editing the function: bytecode caches, version control,
/// editors' swap and backup files.
fn ignored(path: &Path) -> bool {
    path.components().any(|c| {
        matches!(
            c.as_os_str().to_str(),
            Some("__pycache__" | ".git" | ".hg" | ".svn" | ".aws-sam" | ".cache")
        )
    }) || path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|name| {
            name.ends_with(".pyc")
                || name.ends_with(".swp")
                || name.ends_with(".swx")
                || name.ends_with('~')
                || name.starts_with(".#")
                || name == "4913"
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_and_editor_files_are_not_changes() {
        assert!(ignored(Path::new("/p/fn/__pycache__/app.cpython-311.pyc")));
        assert!(ignored(Path::new("/p/fn/.app.py.swp")));
        assert!(ignored(Path::new("/p/fn/app.py~")));
        assert!(ignored(Path::new("/p/.git/index")));
        assert!(!ignored(Path::new("/p/fn/app.py")));
    }

    #[tokio::test]
    async fn an_edit_is_reported_once_the_files_are_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("fn");
        std::fs::create_dir(&code).unwrap();
        std::fs::write(code.join("app.py"), "a").unwrap();
        let config = dir.path().join("lamina.toml");
        std::fs::write(&config, "").unwrap();
        std::fs::write(dir.path().join("unrelated.txt"), "").unwrap();
        let mut watcher = Watcher::new().unwrap();
        watcher.watch_only(&[config.clone(), code.clone()]).unwrap();
        // Unwatched neighbours and caches stay silent; an edit and a save of the
        // configuration come as one report.
        std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
        std::fs::create_dir(code.join("__pycache__")).unwrap();
        std::fs::write(code.join("__pycache__/app.pyc"), "x").unwrap();
        std::fs::write(code.join("app.py"), "b").unwrap();
        std::fs::write(&config, "# saved").unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(5), watcher.changed())
            .await
            .expect("a change is reported");
        let code = code.canonicalize().unwrap();
        let config = config.canonicalize().unwrap();
        assert!(changed.contains(&code.join("app.py")), "{changed:?}");
        assert!(changed.contains(&config), "{changed:?}");
        assert!(
            changed.iter().all(|p| p.starts_with(&code) || *p == config),
            "{changed:?}"
        );
    }
}
