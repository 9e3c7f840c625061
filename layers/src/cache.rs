//! The content-addressed store of extracted archives. An archive's tree lives at
//! `trees/<sha256 of the archive>`; a second use of the same bytes costs one hash (and the
//! hash itself is memoized by path, size, mtime and inode). Extraction goes to `tmp/` and is
//! renamed into place only when complete, so a refused or interrupted archive leaves nothing
//! behind and two processes extracting the same archive at once are safe: the second rename
//! finds the first's tree and discards its own.
//!
//! Layout: `trees/<digest>/` extracted archives, `opt/<chain>/` merged `/opt` trees,
//! `index/<sha256 of the path>` hash memos, `index/<entry>.origin` what an entry came from
//! (its modification time is the entry's last use), `tmp/` work in progress.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::extract::{ExtractError, extract};
use crate::limits::Limits;
use crate::problem::Problems;
use crate::scan::scan;

/// Why the cache could not serve an archive.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The archive is refused; every reason is listed.
    #[error(transparent)]
    Problems(#[from] Problems),
    /// The cache itself could not be read or written.
    #[error("cache {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl From<ExtractError> for CacheError {
    fn from(e: ExtractError) -> Self {
        match e {
            ExtractError::Problems(p) => CacheError::Problems(p),
            ExtractError::Write { path, source } => CacheError::Io { path, source },
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A cached tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The archive's SHA-256, hex.
    pub digest: String,
    /// The extracted tree.
    pub tree: PathBuf,
    /// Unzipped bytes of the tree's files.
    pub bytes: u64,
}

/// The cache at one root directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// `$XDG_CACHE_HOME/lamina`, else `$HOME/.cache/lamina`, else (no home) `/var/cache/lamina`
    /// for root and `/var/tmp/lamina-cache-<uid>` for others. The host checks whichever it uses
    /// before trusting it: another user must not be able to write code into it.
    pub fn default_root() -> PathBuf {
        if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(xdg).join("lamina");
        }
        if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(home).join(".cache").join("lamina");
        }
        // The effective uid, from the `Uid:` line (real, effective, saved, file system).
        let euid = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().nth(1)?.parse::<u32>().ok())
            });
        match euid {
            Some(0) | None => PathBuf::from("/var/cache/lamina"),
            Some(uid) => PathBuf::from(format!("/var/tmp/lamina-cache-{uid}")),
        }
    }

    /// Opens (creating) the cache at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Cache, CacheError> {
        let root = root.into();
        for sub in ["trees", "opt", "index", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(Cache { root })
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn tmp_dir(&self) -> Result<tempfile::TempDir, CacheError> {
        let tmp = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("work-")
            .tempdir_in(&tmp)
            .map_err(io_err(&tmp))
    }

    pub(crate) fn opt_dir(&self, chain: &str) -> PathBuf {
        self.root.join("opt").join(chain)
    }

    /// The archive's SHA-256 (hex), from the memo when the file is unchanged.
    pub fn digest(&self, archive: &Path) -> Result<String, CacheError> {
        let meta = fs::metadata(archive).map_err(io_err(archive))?;
        let canonical = archive.canonicalize().map_err(io_err(archive))?;
        let key = hex(&Sha256::digest(canonical.as_os_str().as_encoded_bytes()));
        let memo_path = self.root.join("index").join(key);
        let stamp = format!(
            "{} {} {} {}",
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino()
        );
        if let Ok(memo) = fs::read_to_string(&memo_path)
            && let Some((memo_stamp, digest)) = memo.rsplit_once(' ')
            && memo_stamp == stamp
        {
            return Ok(digest.to_owned());
        }
        let mut file = fs::File::open(archive).map_err(io_err(archive))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io_err(archive))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest = hex(&hasher.finalize());
        // The memo is an optimisation: failing to write it only costs a hash next time.
        let _ = write_atomically(&memo_path, format!("{stamp} {digest}").as_bytes());
        Ok(digest)
    }

    /// The extracted tree of `archive`, extracting it first when it is not cached.
    pub fn extract(
        &self,
        archive: &Path,
        limits: &Limits,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<CacheEntry, CacheError> {
        let digest = self.digest(archive)?;
        let tree = self.root.join("trees").join(&digest);
        let size_memo = self.memo_path(&digest, "bytes");
        self.record_use(&digest, &archive.display().to_string());
        if tree.is_dir() {
            let bytes = match fs::read_to_string(&size_memo)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                Some(bytes) => bytes,
                None => tree_size(&tree),
            };
            return Ok(CacheEntry {
                digest,
                tree,
                bytes,
            });
        }
        let plan = scan(archive, limits)?;
        let work = self.tmp_dir()?;
        let staged = work.path().join("tree");
        fs::create_dir(&staged).map_err(io_err(&staged))?;
        extract(&plan, &staged, limits, progress)?;
        publish(&staged, &tree)?;
        let _ = write_atomically(&size_memo, plan.total_bytes.to_string().as_bytes());
        Ok(CacheEntry {
            digest,
            tree,
            bytes: plan.total_bytes,
        })
    }

    /// A lone WebAssembly module as a function's code: a tree holding just `bootstrap.wasm`,
    /// stored under the module's digest like an extracted archive (so the function sees
    /// `/var/task/bootstrap.wasm`, and never the module's neighbours on the host).
    pub fn module_tree(&self, module: &Path) -> Result<CacheEntry, CacheError> {
        self.file_tree(module, "wasm", "bootstrap.wasm")
    }

    /// A lone file as a function's code (`lamina invoke app.py --runtime python3.12`): a tree
    /// holding just that file as `name`, stored as `trees/<kind>-<digest>`, so the function
    /// never sees the file's neighbours on the host.
    pub fn file_tree(&self, file: &Path, kind: &str, name: &str) -> Result<CacheEntry, CacheError> {
        let digest = self.digest(file)?;
        let tree = self.root.join("trees").join(format!("{kind}-{digest}"));
        self.record_use(&format!("{kind}-{digest}"), &file.display().to_string());
        if !tree.is_dir() {
            let work = self.tmp_dir()?;
            let staged = work.path().join("tree");
            fs::create_dir(&staged).map_err(io_err(&staged))?;
            let copy = staged.join(name);
            fs::copy(file, &copy).map_err(io_err(file))?;
            // Read-only, as every extracted file is.
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o444)).map_err(io_err(&copy))?;
            publish(&staged, &tree)?;
        }
        let bytes = tree_size(&tree);
        Ok(CacheEntry {
            digest,
            tree,
            bytes,
        })
    }

    /// A tree lamina builds itself, such as a managed runtime's client installed by pip or
    /// npm: `trees/<name>`, built once by `build` into an empty staging directory and
    /// published only when `build` succeeds (an interrupted build leaves only `tmp/`, which
    /// `prune` clears). `origin` is what `lamina cache ls` shows it came from.
    pub fn built_tree<E: From<CacheError>>(
        &self,
        name: &str,
        origin: &str,
        build: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, E> {
        let tree = self.root.join("trees").join(name);
        self.record_use(name, origin);
        if !tree.is_dir() {
            // One builder at a time (a build can take a minute): the others wait here, then
            // find the tree built.
            let lock_path = self.memo_path(name, "building");
            let lock = fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
            lock.lock().map_err(io_err(&lock_path))?;
            if tree.is_dir() {
                return Ok(tree);
            }
            let work = self.tmp_dir()?;
            let staged = work.path().join("tree");
            fs::create_dir(&staged).map_err(io_err(&staged))?;
            build(&staged)?;
            publish(&staged, &tree)?;
        }
        Ok(tree)
    }

    /// Notes that the entry `name` (a tree's directory name, or `opt-<chain>`) was used now,
    /// and what it came from. Best effort: a cache that cannot record this still serves.
    pub fn record_use(&self, name: &str, origin: &str) {
        let path = self.memo_path(name, "origin");
        let same = fs::read_to_string(&path).is_ok_and(|o| o == origin);
        if same {
            // Its modification time is the last use.
            let _ = fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        } else {
            let _ = write_atomically(&path, origin.as_bytes());
        }
    }

    /// Every cached tree: what it came from, its size (each file once, however many hard links
    /// share it: a merged `/opt` counts only what its layers' trees do not already hold) and
    /// when it was last used. Trees first, then merged `/opt` trees, each by name.
    pub fn list(&self) -> Result<Vec<Listed>, CacheError> {
        self.entries(true)
    }

    /// The entries, sized (a walk of every file) only when asked.
    fn entries(&self, sized: bool) -> Result<Vec<Listed>, CacheError> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for kind in ["trees", "opt"] {
            let dir = self.root.join(kind);
            let mut names: Vec<_> = fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()
                .map_err(io_err(&dir))?;
            names.sort();
            for name in names {
                let tree = dir.join(&name);
                let memo = memo_name(kind, &name);
                let origin_path = self.memo_path(&memo, "origin");
                let origin = fs::read_to_string(&origin_path).ok();
                let last_used = fs::metadata(&origin_path)
                    .or_else(|_| fs::metadata(&tree))
                    .and_then(|m| m.modified())
                    .ok();
                out.push(Listed {
                    name: format!("{kind}/{name}"),
                    bytes: if sized {
                        unique_size(&tree, &mut seen)
                    } else {
                        0
                    },
                    origin,
                    last_used,
                    tree,
                    memo,
                });
            }
        }
        Ok(out)
    }

    /// `index/<memo>.<suffix>`: an entry's memo (`origin`, `bytes`).
    fn memo_path(&self, memo: &str, suffix: &str) -> PathBuf {
        self.root.join("index").join(format!("{memo}.{suffix}"))
    }

    /// An entry's origin memo, open (made empty if missing): what holds and prunes lock.
    fn open_origin(&self, memo: &str) -> io::Result<fs::File> {
        fs::File::options()
            .create(true)
            .truncate(false)
            .append(true)
            .open(self.memo_path(memo, "origin"))
    }

    /// Removes every cached tree that no running lamina holds (see [`Cache::hold`]), with its
    /// memos, and every leftover of an interrupted extraction; returns how many trees went.
    pub fn prune(&self) -> Result<usize, CacheError> {
        let removed = self.prune_entries(self.entries(false)?)?.len();
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = entry.map_err(io_err(&tmp))?.path();
            remove_tree(&path).map_err(io_err(&path))?;
        }
        Ok(removed)
    }

    /// Keeps the tree at `tree` (one this cache returned: `trees/…` or `opt/…`) from being
    /// pruned for as long as the returned file is open: a shared lock on its origin memo,
    /// which a prune must lock exclusively first. A running function holds its trees so.
    pub fn hold(&self, tree: &Path) -> Option<fs::File> {
        let kind = tree.parent()?.file_name()?.to_str()?;
        let name = tree.file_name()?.to_str()?;
        let file = self.open_origin(&memo_name(kind, name)).ok()?;
        file.lock_shared().ok()?;
        Some(file)
    }

    /// Removes the trees (and their memos) last used before `cutoff` that no running lamina
    /// holds ([`Cache::hold`]); returns what went.
    pub fn prune_unused_since(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<Vec<Listed>, CacheError> {
        let old = self
            .list()?
            .into_iter()
            .filter(|entry| entry.last_used.is_none_or(|t| t < cutoff))
            .collect();
        self.prune_entries(old)
    }

    /// Removes `entries` that no running lamina holds, with their memos; returns what went.
    fn prune_entries(&self, entries: Vec<Listed>) -> Result<Vec<Listed>, CacheError> {
        let mut removed = Vec::new();
        for entry in entries {
            let origin = self.memo_path(&entry.memo, "origin");
            let lock = self.open_origin(&entry.memo).map_err(io_err(&origin))?;
            match lock.try_lock() {
                Ok(()) => {}
                // Held by a running function: in use, whatever its age.
                Err(fs::TryLockError::WouldBlock) => continue,
                Err(fs::TryLockError::Error(e)) => return Err(io_err(&origin)(e)),
            }
            remove_tree(&entry.tree).map_err(io_err(&entry.tree))?;
            for suffix in ["origin", "bytes"] {
                let _ = fs::remove_file(self.memo_path(&entry.memo, suffix));
            }
            removed.push(entry);
        }
        Ok(removed)
    }
}

/// The name of an entry's memos in `index/`: a tree's own name, `opt-<chain>` for a merged
/// `/opt` (chains and digests could otherwise meet).
fn memo_name(kind: &str, name: &str) -> String {
    match kind {
        "opt" => format!("opt-{name}"),
        _ => name.to_owned(),
    }
}

/// One cached tree, as [`Cache::list`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// `trees/<digest>` or `opt/<chain>`.
    pub name: String,
    /// Its directory.
    pub tree: PathBuf,
    /// What it came from (the archive's path, or the layers of a merged `/opt`), when known.
    pub origin: Option<String>,
    /// Bytes of the files no earlier entry of the listing already counted.
    pub bytes: u64,
    /// When it was last used, when known.
    pub last_used: Option<std::time::SystemTime>,
    /// The name of its memos in `index/`.
    memo: String,
}

/// Bytes of the files under `path` whose inodes are not in `seen` (which gains them): a file
/// with several hard links counts once.
fn unique_size(path: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !seen.insert((meta.dev(), meta.ino())) {
        return 0;
    }
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| unique_size(&e.path(), seen))
            .sum()
    })
}

/// Renames a finished tree into place. If another process got there first, its tree (the same
/// bytes) stays and ours goes with the work directory.
pub(crate) fn publish(staged: &Path, dest: &Path) -> Result<(), CacheError> {
    match fs::rename(staged, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.is_dir() => Ok(()),
        Err(e) => Err(CacheError::Io {
            path: dest.to_owned(),
            source: e,
        }),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// Removes a tree whose files may be read-only (directories stay writable in the cache).
fn remove_tree(path: &Path) -> io::Result<()> {
    if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Bytes of the files under `path` (links and directories count their own size).
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).map_or(0, |entries| {
        entries.flatten().map(|e| tree_size(&e.path())).sum()
    })
}

/// An identity for a directory layer, which is used as it is and not cached: a hash over every
/// entry's path, type, size, mode and mtime. A merged `/opt` built from it is rebuilt when it
/// changes.
pub fn dir_fingerprint(dir: &Path) -> io::Result<String> {
    fn walk(dir: &Path, rel: &Path, hasher: &mut Sha256) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let meta = entry.metadata()?;
            let rel = rel.join(entry.file_name());
            hasher.update(rel.as_os_str().as_encoded_bytes());
            hasher.update(format!(
                "\0{}:{}:{}:{}\n",
                meta.mode(),
                meta.len(),
                meta.mtime(),
                meta.mtime_nsec()
            ));
            if meta.is_dir() {
                walk(&entry.path(), &rel, hasher)?;
            }
        }
        Ok(())
    }
    let mut hasher = Sha256::new();
    walk(dir, Path::new(""), &mut hasher)?;
    Ok(format!("dir-{}", hex(&hasher.finalize())))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
