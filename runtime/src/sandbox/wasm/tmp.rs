//! `/tmp` for WASM environments. Each environment gets a tmpfs of its own, sized by
//! `--ephemeral-storage` (so a guest cannot fill the host's disk), mounted under lamina's state
//! directory. Within it, each invocation gets an empty directory: an untouched one is reused as
//! it is, a used one is emptied after the response has gone out, off the invocation's path.
//! "Untouched" is one `fstatfs`: the filesystem holds only the directory, so any file, link or
//! directory made in it (and still there) shows as an inode in use.
//!
//! Under root, mounts are `wasm/<host pid>-<n>` in lamina's run directory
//! ([`crate::run_dir`]): at start-up, those of lamina processes that are gone (killed before
//! they could unmount) are unmounted and removed, and nothing else is touched. Rootless, lamina
//! may not mount: a helper in a user namespace of its own mounts each tmpfs and hands over its
//! root, open, with the mount already detached ([`TmpfsHelper`], `lamina_bootstrap::tmpfs`);
//! lamina works in it through that descriptor, and nothing is mounted anywhere.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::run_dir::RunDir;

/// The source name of every tmpfs lamina mounts here: how a sweep tells its own mounts from
/// anything else mounted in their place.
pub const MOUNT_SOURCE: &str = "lamina-wasm-tmp";

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Where environments' tmpfs filesystems come from.
#[derive(Debug)]
pub enum TmpSource {
    /// Mounted by lamina in its run directory's `wasm/` (root).
    Mount(Arc<RunDir>),
    /// Made by the tmpfs helper (rootless).
    Helper(TmpfsHelper),
}

/// One environment's tmpfs, unmounted and removed when dropped (rootless: closed, which ends
/// it, as it was never mounted anywhere).
#[derive(Debug)]
pub struct EnvTmp {
    /// The directory the mount point is in and its name there; `None` for a detached tmpfs.
    mounted: Option<(Arc<RunDir>, String)>,
    /// The mount point, or `/proc/self/fd/<root>` for a detached tmpfs.
    mount: PathBuf,
    /// The directory the guest sees as `/tmp`.
    dir: PathBuf,
    /// The mount's root, open: its filesystem's inode count, without a path walk.
    root: OwnedFd,
    /// Free inodes when the directory is empty.
    free_inodes: u64,
}

/// Inodes per MB of `/tmp`, as an ext4 of Lambda's kind has about (one per 4 KB); the bound
/// also keeps a guest from making kernel objects without limit in empty files.
const INODES_PER_MB: u64 = 256;

fn with_path(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl EnvTmp {
    /// A fresh tmpfs of `size_mb` for one environment, from `source`.
    pub fn new(source: &TmpSource, size_mb: u32) -> io::Result<EnvTmp> {
        match source {
            TmpSource::Mount(state) => EnvTmp::mount(state, size_mb),
            TmpSource::Helper(helper) => {
                let root = helper.tmpfs(size_mb)?;
                let mount = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&root)
                ));
                EnvTmp::finish(None, mount, root)
            }
        }
    }

    /// Mounts a tmpfs of `size_mb` for one environment in `state`.
    pub fn mount(state: &Arc<RunDir>, size_mb: u32) -> io::Result<EnvTmp> {
        let (name, mount_point) = state.make_own_entry(&SEQUENCE)?;
        let inodes = inodes_for(size_mb);
        let options = format!("size={size_mb}m,nr_inodes={inodes},mode=0700");
        if let Err(e) = mount(
            Some(MOUNT_SOURCE),
            &mount_point,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(options.as_str()),
        ) {
            let _ = state.remove_entry(&name);
            return Err(with_path(&mount_point)(io::Error::from(e)));
        }
        // Unmounted again if anything below fails.
        let root = match std::fs::File::open(&mount_point) {
            Ok(root) => OwnedFd::from(root),
            Err(e) => {
                let _ = umount2(
                    &mount_point,
                    MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
                );
                let _ = state.remove_entry(&name);
                return Err(with_path(&mount_point)(e));
            }
        };
        EnvTmp::finish(Some((Arc::clone(state), name)), mount_point, root)
    }

    /// Makes the guest's directory in a new tmpfs.
    fn finish(
        mounted: Option<(Arc<RunDir>, String)>,
        mount: PathBuf,
        root: OwnedFd,
    ) -> io::Result<EnvTmp> {
        let mut tmp = EnvTmp {
            mounted,
            dir: mount.join("tmp"),
            mount,
            root,
            free_inodes: 0,
        };
        std::fs::create_dir(&tmp.dir).map_err(with_path(&tmp.dir))?;
        tmp.free_inodes = tmp.free_inodes()?;
        Ok(tmp)
    }

    fn free_inodes(&self) -> io::Result<u64> {
        nix::sys::statfs::fstatfs(&self.root)
            .map(|s| s.files_free())
            .map_err(|e| with_path(&self.mount)(io::Error::from(e)))
    }

    /// The directory the guest sees as `/tmp`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether anything is in the directory (once the run that used it has closed its files).
    pub fn used(&self) -> io::Result<bool> {
        Ok(self.free_inodes()? != self.free_inodes)
    }

    /// Makes the directory empty again.
    pub fn empty(&self) -> io::Result<()> {
        std::fs::remove_dir_all(&self.dir).map_err(with_path(&self.dir))?;
        std::fs::create_dir(&self.dir).map_err(with_path(&self.dir))
    }

    /// Makes the directory empty again, if the last invocation used it.
    #[cfg(test)]
    fn reset(&self) -> io::Result<()> {
        if self.used()? {
            self.empty()?;
        }
        Ok(())
    }
}

impl Drop for EnvTmp {
    fn drop(&mut self) {
        let Some((state, name)) = &self.mounted else {
            return;
        };
        // Lazily: a run still holding a preopened directory keeps nothing mounted in view.
        let _ = umount2(
            &self.mount,
            MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
        );
        let _ = state.remove_entry(name);
    }
}

fn inodes_for(size_mb: u32) -> u64 {
    u64::from(size_mb.max(1)) * INODES_PER_MB
}

/// The rootless source of tmpfs filesystems: `lamina __sandbox --tmpfs`, started once per
/// backend, asked over a socket (one request at a time).
#[derive(Debug)]
pub struct TmpfsHelper {
    socket: std::sync::Mutex<std::os::unix::net::UnixStream>,
    child: std::sync::Mutex<std::process::Child>,
}

impl TmpfsHelper {
    /// Starts the helper (`program __sandbox --tmpfs`) and checks it works with one tmpfs.
    pub fn start(mut command: std::process::Command) -> io::Result<TmpfsHelper> {
        use std::process::Stdio;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let child = command
            .arg(lamina_bootstrap::tmpfs::TMPFS_ARG)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .spawn()?;
        let helper = TmpfsHelper {
            socket: std::sync::Mutex::new(ours),
            child: std::sync::Mutex::new(child),
        };
        helper.tmpfs(1)?;
        Ok(helper)
    }

    /// A fresh tmpfs of `size_mb`, its root open and mounted nowhere.
    pub fn tmpfs(&self, size_mb: u32) -> io::Result<OwnedFd> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let mut socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let mut request = size_mb.to_le_bytes().to_vec();
        request.extend_from_slice(&inodes_for(size_mb).to_le_bytes());
        socket.write_all(&request)?;
        match crate::sandbox::receive_fd(socket.as_raw_fd())? {
            (1, Some(fd)) => Ok(fd),
            (0, _) => Err(io::Error::other("the tmpfs helper has exited")),
            _ => Err(io::Error::other(
                "the tmpfs helper could not make a tmpfs (its message above says why)",
            )),
        }
    }
}

impl Drop for TmpfsHelper {
    fn drop(&mut self) {
        // Closing our end ends it; reaped here so that it does not stay a zombie.
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Opens `wasm/` in the run directory and removes the mounts of lamina processes that are
/// gone (what it leaves alone is logged, once, with why); fails when this host cannot mount a
/// tmpfs there.
pub fn prepare(run_dir: &RunDir) -> Result<TmpSource, super::WasmUnavailable> {
    let state = Arc::new(run_dir.subdir("wasm")?);
    for note in state.sweep_dead(Some(MOUNT_SOURCE)) {
        tracing::warn!("cleaning up after lamina processes that are gone: {note}");
    }
    // One real mount shows the privilege is there.
    EnvTmp::mount(&state, 1).map_err(super::WasmUnavailable::Tmp)?;
    Ok(TmpSource::Mount(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_used_tmp_is_emptied_and_an_unused_one_kept() {
        let base = tempfile::tempdir().unwrap();
        let state = Arc::new(RunDir::open(&base.path().join("wasm")).unwrap());
        let tmp = EnvTmp::mount(&state, 1).unwrap();
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(tmp.dir());
        tmp.reset().unwrap();
        assert_eq!(inode(tmp.dir()), before, "an untouched /tmp is reused");
        std::fs::create_dir_all(tmp.dir().join("a/b")).unwrap();
        std::fs::write(tmp.dir().join("a/b/c"), b"x").unwrap();
        assert!(tmp.used().unwrap());
        tmp.reset().unwrap();
        assert_eq!(std::fs::read_dir(tmp.dir()).unwrap().count(), 0);
        assert!(!tmp.used().unwrap(), "emptied is unused again");
        // A file made and removed again leaves it empty.
        std::fs::write(tmp.dir().join("gone"), b"x").unwrap();
        std::fs::remove_file(tmp.dir().join("gone")).unwrap();
        assert!(!tmp.used().unwrap());
        // The size limit is the tmpfs's.
        let big = vec![0u8; 2 * 1024 * 1024];
        let err = std::fs::write(tmp.dir().join("big"), &big).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::ENOSPC as i32));
        let mount = tmp.mount.clone();
        drop(tmp);
        assert!(!mount.exists(), "unmounted and removed");
    }
}
