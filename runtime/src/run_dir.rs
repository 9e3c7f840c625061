//! lamina's directories on the host, and the one set of rules for making, trusting, sweeping and
//! removing anything in them. Live state (the WASM environments' `/tmp` mounts, the jails' root
//! mount points, uid leases) lives in the run directory: `/run/lamina` for root,
//! `$XDG_RUNTIME_DIR/lamina` for anyone else, `LAMINA_RUN_DIR` to move it. Never a fixed name
//! in a world-writable directory: whoever makes such a directory first owns it, and a root
//! lamina cleaning "its" entries there would unmount or remove whatever they point to.
//!
//! Every directory lamina writes in (the run directory, the state and cache directories) is
//! checked when lamina starts by [`trusted_dir`]: it is a real directory (not a symlink) owned
//! by lamina's own user and writable by nobody else, and no directory above it can be
//! rewritten by another user (each is owned by root or by lamina's user, and writable by
//! others only when sticky, as `/tmp` is). Below a trusted directory nobody else can plant
//! anything, and lamina still never follows a link when it cleans: it works through a
//! directory handle with `*at` calls and `O_NOFOLLOW`, and unmounts only what
//! `/proc/self/mountinfo` shows as a mount lamina made, at the exact place it made it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Uid, UnlinkatFlags, unlinkat};

/// The environment variable that moves the run directory.
pub const RUN_DIR_ENV: &str = "LAMINA_RUN_DIR";

/// A directory lamina may not use, and why.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// The directory, or one above it, could be changed by another user.
    #[error(
        "{path}: {reason}; lamina refuses to keep its state there, since another user could \
         replace or plant entries in it. {advice}"
    )]
    Untrusted {
        /// The directory at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// How to proceed.
        advice: String,
    },
    /// The directory could not be made, opened or inspected.
    #[error("{path}: {source}")]
    Io {
        /// The directory involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// No place for the run directory could be chosen.
    #[error(
        "no run directory: XDG_RUNTIME_DIR is not set for uid {uid}; set it (a directory only \
         you can write, as systemd's /run/user/{uid}) or set {RUN_DIR_ENV}"
    )]
    NoPlace {
        /// lamina's user.
        uid: u32,
    },
}

fn io_error(path: &Path) -> impl FnOnce(Errno) -> RunDirError + '_ {
    move |e| RunDirError::Io {
        path: path.to_owned(),
        source: io::Error::from(e),
    }
}

/// Where the run directory is: `LAMINA_RUN_DIR`, else `/run/lamina` for root, else
/// `$XDG_RUNTIME_DIR/lamina`.
pub fn default_run_dir() -> Result<PathBuf, RunDirError> {
    if let Some(dir) = std::env::var_os(RUN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let uid = Uid::effective();
    if uid.is_root() {
        return Ok(PathBuf::from("/run/lamina"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir).join("lamina")),
        None => Err(RunDirError::NoPlace { uid: uid.as_raw() }),
    }
}

/// Opens the cache of extracted archives at `root` once [`trusted_dir`] trusts it: the code
/// lamina runs comes from there, so nobody else may be able to write in it.
pub fn open_cache(root: &Path) -> Result<lamina_layers::Cache, CacheDirError> {
    // The resolved path from here on: a link above it that was checked through cannot be
    // swapped later to send the cache elsewhere.
    let (resolved, _) = trusted_dir(root)?;
    Ok(lamina_layers::Cache::open(resolved)?)
}

/// The cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheDirError {
    /// It could be changed by another user.
    #[error(
        "cache directory {0} (a cache of lamina's own: --cache-dir or LAMINA_CACHE_DIR; \
         under sudo, whose HOME may still be yours, one that root owns)"
    )]
    Untrusted(#[from] RunDirError),
    /// It could not be made or read.
    #[error(transparent)]
    Cache(#[from] lamina_layers::CacheError),
}

/// A trusted directory, open. Entries are made, inspected and removed relative to its handle.
#[derive(Debug)]
pub struct RunDir {
    /// The directory's path as the kernel resolves it (symlinks above it resolved), which is
    /// how `/proc/self/mountinfo` names mounts below it.
    path: PathBuf,
    fd: OwnedFd,
}

impl RunDir {
    /// Opens the run directory (see [`default_run_dir`]), making it if needed, after
    /// [`trusted_dir`]'s checks.
    pub fn open_default() -> Result<RunDir, RunDirError> {
        let path = default_run_dir()?;
        RunDir::open(&path)
    }

    /// Opens `path` as a trusted directory, making it (mode 0700) if it does not exist.
    pub fn open(path: &Path) -> Result<RunDir, RunDirError> {
        let (path, fd) = trusted_dir(path)?;
        Ok(RunDir { path, fd })
    }

    /// The directory's resolved path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory `name` (one component), made if needed, held to the same rules: a
    /// symlink or another user's directory there is refused, not followed.
    pub fn subdir(&self, name: &str) -> Result<RunDir, RunDirError> {
        let path = self.path.join(name);
        match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
        let fd = open_dir_at(&self.fd, OsStr::new(name)).map_err(io_error(&path))?;
        check_own(&path, &fstat(&fd).map_err(io_error(&path))?, &fd)?;
        Ok(RunDir { path, fd })
    }

    /// Makes a new empty directory named `<this process's pid>-<n>` (mode 0700), `n` from
    /// `sequence`. A name that exists already is skipped: a lamina that ran before with the
    /// same pid (a container's lamina often has the same pid at every start) may have left it.
    pub fn make_own_entry(
        &self,
        sequence: &std::sync::atomic::AtomicU64,
    ) -> io::Result<(String, PathBuf)> {
        let pid = std::process::id();
        for _ in 0..1000 {
            let name = format!(
                "{pid}-{}",
                sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            match mkdirat(
                self.fd.as_fd(),
                name.as_str(),
                Mode::from_bits_truncate(0o700),
            ) {
                Ok(()) => {
                    let path = self.path.join(&name);
                    return Ok((name, path));
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(with_path(&self.path.join(&name), e)),
            }
        }
        Err(io::Error::other(format!(
            "{}: a thousand names of this process's taken already",
            self.path.display()
        )))
    }

    /// Removes the empty directory `name` from this one, never following a link.
    pub fn remove_entry(&self, name: &str) -> io::Result<()> {
        unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir)
            .map_err(|e| with_path(&self.path.join(name), e))
    }

    /// The directory handle, for `*at` calls.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Removes what lamina processes that are gone left here: entries named `<pid>-<n>` whose
    /// pid no longer runs. An entry is unmounted first only if `/proc/self/mountinfo` lists a
    /// mount at exactly its path whose source is `mount_source` (what lamina names its own
    /// mounts); then it is removed if it is an empty directory. Anything else (a link, a file,
    /// another's mount, a directory with contents) is left alone and named in the returned
    /// notes, so the caller can say what it skipped.
    pub fn sweep_dead(&self, mount_source: Option<&str>) -> Vec<String> {
        let mut notes = Vec::new();
        // Read once, and only if something is to be swept: most starts find nothing.
        let mut mounts: Option<Vec<Mount>> = None;
        for name in self.entry_names(&mut notes) {
            let Some(pid) = dead_owner(&name) else {
                continue;
            };
            let path = self.path.join(&name);
            let stat = match fstatat(
                self.fd.as_fd(),
                name.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(stat) => stat,
                Err(e) => {
                    notes.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                notes.push(format!(
                    "{}: left alone: not a directory (a link or a file lamina never makes), \
                     though named like an entry of the lamina process {pid}, which is gone",
                    path.display()
                ));
                continue;
            }
            let mounts =
                mounts.get_or_insert_with(|| match std::fs::read("/proc/self/mountinfo") {
                    Ok(text) => parse_mountinfo(&text),
                    Err(e) => {
                        // Nothing is known to be a mount of lamina's, so nothing is unmounted; an
                        // entry with a mount on it then fails to be removed, and is named.
                        tracing::warn!("reading /proc/self/mountinfo: {e}");
                        Vec::new()
                    }
                });
            let mounted_here: Vec<&Mount> = mounts.iter().filter(|m| m.point == path).collect();
            let ours = mounted_here
                .iter()
                .all(|m| mount_source.is_some_and(|s| m.source == s));
            if !ours {
                notes.push(format!(
                    "{}: left alone: something other than lamina is mounted there",
                    path.display()
                ));
                continue;
            }
            for _ in &mounted_here {
                // MNT_DETACH: a process of the dead lamina's may still hold a file there.
                let flags =
                    nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW;
                if let Err(e) = nix::mount::umount2(&path, flags) {
                    notes.push(format!("{}: unmounting: {e}", path.display()));
                }
            }
            if let Err(e) = self.remove_entry(&name.to_string_lossy()) {
                notes.push(format!("{e}; left alone"));
            }
        }
        notes
    }

    fn entry_names(&self, notes: &mut Vec<String>) -> Vec<OsString> {
        // A second handle: reading a directory moves its offset.
        let dup = match openat(
            self.fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                notes.push(format!("{}: {e}", self.path.display()));
                return Vec::new();
            }
        };
        match nix::dir::Dir::from_fd(dup) {
            Ok(mut dir) => dir
                .iter()
                .flatten()
                .map(|e| OsString::from_vec(e.file_name().to_bytes().to_vec()))
                .filter(|n| n != "." && n != "..")
                .collect(),
            Err(e) => {
                notes.push(format!("{}: {e}", self.path.display()));
                Vec::new()
            }
        }
    }
}

/// The pid of a `<pid>-<n>` entry whose process is gone (this process's own are never).
pub(crate) fn dead_owner(name: &OsStr) -> Option<u32> {
    let (pid, n) = name.to_str()?.split_once('-')?;
    let pid: u32 = pid.parse().ok()?;
    n.parse::<u64>().ok()?;
    (pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()).then_some(pid)
}

fn with_path(path: &Path, e: Errno) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn open_dir_at(dir: &impl AsFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Checks that `path` is a directory lamina may trust, making it (mode 0700, and any missing
/// parents the same way) if it does not exist; returns its resolved path and an open handle.
///
/// Trusted: every directory from `/` down to it is owned by root or lamina's user and
/// writable by no one else unless sticky; the directory itself is not a symlink, is owned by
/// lamina's user and is writable by no one else (a group- or world-readable one is made
/// 0700). The walk opens each component relative to the one above with `O_NOFOLLOW`, so what
/// is checked is what is opened.
pub fn trusted_dir(path: &Path) -> Result<(PathBuf, OwnedFd), RunDirError> {
    let me = Uid::effective();
    let absolute = match path.is_absolute() {
        true => path.to_owned(),
        false => std::env::current_dir()
            .map_err(|source| RunDirError::Io {
                path: path.to_owned(),
                source,
            })?
            .join(path),
    };
    // The parent's symlinks (`/var/run` → `/run`) are resolved first: links above the
    // directory are the system's layout, and each directory they lead through is checked.
    let (parent, leaf) = match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(leaf)) => (parent.to_owned(), leaf.to_owned()),
        _ => {
            return Err(RunDirError::Untrusted {
                path: absolute,
                reason: "not a directory lamina can own".into(),
                advice: "Choose a directory of its own for lamina.".into(),
            });
        }
    };
    let parent = resolve_or_make(&parent)?;
    let mut fd = openat(
        nix::fcntl::AT_FDCWD,
        "/",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_error(Path::new("/")))?;
    let mut walked = PathBuf::from("/");
    check_ancestor(&walked, &fstat(&fd).map_err(io_error(&walked))?, me)?;
    for component in parent.components().skip(1) {
        walked.push(component);
        fd = open_dir_at(&fd, component.as_os_str()).map_err(|e| untrusted_open(&walked, e))?;
        check_ancestor(&walked, &fstat(&fd).map_err(io_error(&walked))?, me)?;
    }
    let full = parent.join(&leaf);
    match mkdirat(
        fd.as_fd(),
        leaf.as_os_str(),
        Mode::from_bits_truncate(0o700),
    ) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(io_error(&full)(e)),
    }
    let dir = open_dir_at(&fd, &leaf).map_err(|e| untrusted_open(&full, e))?;
    check_own(&full, &fstat(&dir).map_err(io_error(&full))?, &dir)?;
    Ok((full, dir))
}

/// An `O_NOFOLLOW` open that met a symlink says so.
fn untrusted_open(path: &Path, e: Errno) -> RunDirError {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => RunDirError::Untrusted {
            path: path.to_owned(),
            reason: "is a symbolic link or not a directory".into(),
            advice: "Remove it, or choose another directory.".into(),
        },
        e => io_error(path)(e),
    }
}

/// Resolves a parent directory's symlinks, making it (0700 per missing component, through
/// trusted parents) when it does not exist yet.
fn resolve_or_make(parent: &Path) -> Result<PathBuf, RunDirError> {
    match parent.canonicalize() {
        Ok(resolved) => Ok(resolved),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Made one level at a time, each through `trusted_dir`'s own checks.
            trusted_dir(parent).map(|(path, _)| path)
        }
        Err(source) => Err(RunDirError::Io {
            path: parent.to_owned(),
            source,
        }),
    }
}

fn mode_of(stat: &FileStat) -> u32 {
    stat.st_mode & 0o7777
}

fn check_ancestor(path: &Path, stat: &FileStat, me: Uid) -> Result<(), RunDirError> {
    let owner = stat.st_uid;
    let mode = mode_of(stat);
    if owner != 0 && owner != me.as_raw() {
        return Err(RunDirError::Untrusted {
            path: path.to_owned(),
            reason: format!(
                "a directory above lamina's is owned by uid {owner}, neither root nor lamina's \
                 user (uid {me})"
            ),
            advice: "Choose a directory under one that only root or you control.".into(),
        });
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(RunDirError::Untrusted {
            path: path.to_owned(),
            reason: format!(
                "a directory above lamina's is writable by other users (mode {mode:04o}) and \
                 not sticky"
            ),
            advice: "Choose a directory under one that only root or you can write.".into(),
        });
    }
    Ok(())
}

fn check_own(path: &Path, stat: &FileStat, fd: &OwnedFd) -> Result<(), RunDirError> {
    let me = Uid::effective();
    let owner = stat.st_uid;
    let mode = mode_of(stat);
    if owner != me.as_raw() {
        return Err(RunDirError::Untrusted {
            path: path.to_owned(),
            reason: format!("owned by uid {owner}, not by lamina's user (uid {me})"),
            advice: format!(
                "If nobody else should have it, remove it (lamina makes its own, mode 0700); \
                 else choose another directory{}.",
                match me.is_root() {
                    true => format!(" (for the run directory: {RUN_DIR_ENV})"),
                    false => String::new(),
                }
            ),
        });
    }
    if mode & 0o022 != 0 {
        return Err(RunDirError::Untrusted {
            path: path.to_owned(),
            reason: format!("writable by other users (mode {mode:04o})"),
            advice: "Others may have planted entries in it: remove it, and lamina makes its \
                     own (mode 0700)."
                .into(),
        });
    }
    if mode & 0o077 != 0 {
        // Ours and never writable by others: only its openness changes.
        fchmod(fd.as_fd(), Mode::from_bits_truncate(0o700)).map_err(io_error(path))?;
    }
    Ok(())
}

/// One line of `/proc/self/mountinfo`: where, and what was mounted.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    source: String,
}

/// Mount points and sources from `/proc/self/mountinfo` (fields 5 and the one after the
/// filesystem type, octal escapes decoded).
fn parse_mountinfo(text: &[u8]) -> Vec<Mount> {
    text.split(|b| *b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
            let point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == b"-")?;
            let source = fields.get(dash + 2)?;
            Some(Mount {
                point: PathBuf::from(OsString::from_vec(unescape(point))),
                source: String::from_utf8_lossy(&unescape(source)).into_owned(),
            })
        })
        .collect()
}

/// Decodes mountinfo's `\040`-style escapes (space, tab, newline, backslash).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(octal) = field.get(i + 1..i + 4)
            && let Ok(text) = std::str::from_utf8(octal)
            && let Ok(byte) = u8::from_str_radix(text, 8)
        {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_point_and_source() {
        let text = b"36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                     40 36 0:45 / /run/lamina/wasm/12-0 rw shared:2 - tmpfs lamina-wasm-tmp rw,size=1m\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts,
            vec![
                Mount {
                    point: "/mnt/with space".into(),
                    source: "/dev/root".into()
                },
                Mount {
                    point: "/run/lamina/wasm/12-0".into(),
                    source: "lamina-wasm-tmp".into()
                },
            ]
        );
    }

    #[test]
    fn only_entries_of_gone_processes_are_dead() {
        assert_eq!(
            dead_owner(OsStr::new(&format!("{}-0", std::process::id()))),
            None
        );
        assert_eq!(dead_owner(OsStr::new("1-0")), None, "init runs");
        assert_eq!(dead_owner(OsStr::new("uids")), None);
        assert_eq!(dead_owner(OsStr::new("999999999-x")), None);
        assert_eq!(dead_owner(OsStr::new("999999999-3")), Some(999_999_999));
    }

    #[test]
    fn a_world_writable_or_foreign_directory_is_refused_and_a_fresh_one_made_private() {
        let base = tempfile::tempdir().unwrap();
        let fresh = base.path().join("a/b");
        let (_, fd) = trusted_dir(&fresh).unwrap();
        assert_eq!(mode_of(&fstat(&fd).unwrap()), 0o700);
        // Ours but open to all: refused, not repaired (entries may have been planted).
        let open = base.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let err = trusted_dir(&open).unwrap_err().to_string();
        assert!(err.contains("writable by other users (mode 0777)"), "{err}");
        // A symlink to a good directory is refused, not followed.
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        let err = trusted_dir(&link).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        // Readable by others, never writable: made private.
        let readable = base.path().join("readable");
        std::fs::create_dir(&readable).unwrap();
        std::fs::set_permissions(
            &readable,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let (_, fd) = trusted_dir(&readable).unwrap();
        assert_eq!(mode_of(&fstat(&fd).unwrap()), 0o700);
    }
}
