//! Step 4: the new root. Everything from the host is bind-mounted read-only, `nosuid` and
//! `nodev`; the function's writable space is one sized tmpfs at `/tmp`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{chdir, pivot_root};

use super::{BootstrapError, io_step_err, step_err};
use crate::spec::{FunctionSpec, Network, OptMount, ShellSpec};

/// Host directories the function sees read-only (a symlink on the host, as with merged
/// `/usr`, becomes the same symlink).
const HOST_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// `/etc` entries runtimes need: the dynamic loader's cache, name resolution, certificates,
/// time zones, Debian's alternatives links.
const ETC_ENTRIES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "localtime",
    "ssl",
    "ca-certificates",
    "alternatives",
    "mime.types",
];
/// Device nodes the function gets.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

const RO: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);

pub(crate) fn bind_ro(source: &Path, target: &Path) -> Result<(), BootstrapError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step_err(
        "bind",
        format!("{} on {}", source.display(), target.display()),
    ))?;
    // A bind mount ignores MS_RDONLY; read-only takes a second, remounting call. It keeps the
    // flags the source mount already has: in a user namespace (rootless) those of a host mount
    // are locked, and a remount that would clear one (`noexec`, an atime mode) is refused.
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | RO | kept_flags(target),
        None::<&str>,
    )
    .map_err(step_err("remount read-only", target.display()))
}

/// The flags of the mount at `path` that a read-only remount must keep.
fn kept_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(stat) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    let has = stat.flags();
    [
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(st, _)| has.contains(*st))
    .fold(MsFlags::empty(), |all, (_, ms)| all | ms)
}

fn mkdir(path: &Path) -> Result<(), BootstrapError> {
    fs::create_dir_all(path).map_err(io_step_err("mkdir", path.display()))
}

/// Makes every mount of this (new) mount namespace private: nothing mounted here may
/// propagate back to the host.
pub(crate) fn make_private() -> Result<(), BootstrapError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step_err("make mounts private", "/"))
}

/// Builds the function-independent part of the new root at `spec.root`: everything but
/// `/var/task`, `/opt`, `/tmp` and a managed runtime's `/var/runtime` and `/var/lang`, whose
/// mount points it leaves empty.
pub(crate) fn prepare_root(spec: &ShellSpec) -> Result<(), BootstrapError> {
    make_private()?;
    let root = spec.root.as_path();
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=4m,mode=755"),
    )
    .map_err(step_err("mount root tmpfs", root.display()))?;
    for dir in HOST_DIRS {
        let host = Path::new("/").join(dir);
        let inside = root.join(dir);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target =
                    fs::read_link(&host).map_err(io_step_err("readlink", host.display()))?;
                symlink(&target, &inside).map_err(io_step_err("symlink", inside.display()))?;
            }
            Ok(m) if m.is_dir() => {
                mkdir(&inside)?;
                bind_ro(&host, &inside)?;
            }
            _ => {}
        }
    }
    let etc = root.join("etc");
    mkdir(&etc)?;
    for entry in ETC_ENTRIES {
        let host = Path::new("/etc").join(entry);
        let inside = etc.join(entry);
        if *entry == "resolv.conf" && spec.network == Network::Outbound {
            // The host's may name a resolver on its own loopback (systemd-resolved's
            // 127.0.0.53), which is not the sandbox's: slirp4netns forwards this one there.
            let text = format!("nameserver {}\n", crate::spec::OUTBOUND_NAMESERVER);
            fs::write(&inside, text).map_err(io_step_err("write", inside.display()))?;
            continue;
        }
        if *entry == "hosts" {
            // The host's names, and the one Lambda gives the sandbox itself: extensions
            // subscribe to telemetry at `sandbox.localdomain`, which is this loopback.
            let mut text = fs::read_to_string(&host).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("127.0.0.1\tsandbox.localdomain sandbox\n");
            fs::write(&inside, text).map_err(io_step_err("write", inside.display()))?;
            continue;
        }
        // Follow links (resolv.conf often is one): the file they name is what is bound.
        let Ok(meta) = fs::metadata(&host) else {
            continue;
        };
        if meta.is_dir() {
            mkdir(&inside)?;
        } else {
            fs::write(&inside, b"").map_err(io_step_err("create", inside.display()))?;
        }
        bind_ro(&host, &inside)?;
    }
    // Lambda's sandbox user, and nobody else.
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nsbx_user1051:x:{uid}:{gid}::/tmp:/sbin/nologin\n",
        uid = spec.uid,
        gid = spec.gid
    );
    fs::write(etc.join("passwd"), passwd).map_err(io_step_err("write", "/etc/passwd"))?;
    let group = format!("root:x:0:\nsbx_user1051:x:{}:\n", spec.gid);
    fs::write(etc.join("group"), group).map_err(io_step_err("write", "/etc/group"))?;

    for dir in ["var/task", "var/runtime", "var/lang", "opt", "tmp"] {
        mkdir(&root.join(dir))?;
    }
    let dev = root.join("dev");
    mkdir(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=755"),
    )
    .map_err(step_err("mount /dev", dev.display()))?;
    for device in DEVICES {
        let inside = dev.join(device);
        fs::write(&inside, b"").map_err(io_step_err("create", inside.display()))?;
        mount(
            Some(&Path::new("/dev").join(device)),
            &inside,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(step_err("bind device", inside.display()))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(io_step_err("symlink", name))?;
    }
    let proc = root.join("proc");
    mkdir(&proc)?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(step_err("mount /proc", proc.display()))?;
    Ok(())
}

/// Mounts the function's code, layers and `/tmp` into the root [`prepare_root`] made, and
/// pivots into it.
pub(crate) fn finish_root(root: &Path, spec: &FunctionSpec) -> Result<(), BootstrapError> {
    bind_ro(&spec.code_dir, &root.join("var/task"))?;
    match &spec.opt {
        Some(OptMount::Merged(tree)) => bind_ro(tree, &root.join("opt"))?,
        None => {}
    }
    if let Some(runtime) = &spec.runtime_dir {
        bind_ro(runtime, &root.join("var/runtime"))?;
    }
    if let Some(lang) = &spec.lang_dir {
        bind_ro(lang, &root.join("var/lang"))?;
    }
    mount_tmp(&root.join("tmp"), spec.tmp_bytes)?;
    chdir(root).map_err(step_err("chdir", root.display()))?;
    pivot_root(".", ".").map_err(step_err("pivot_root", root.display()))?;
    // The old root now sits under the new one: detach it so nothing of the host stays reachable.
    umount2(".", MntFlags::MNT_DETACH).map_err(step_err("detach old root", "/"))?;
    chdir("/").map_err(step_err("chdir", "/"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | RO,
        None::<&str>,
    )
    .map_err(step_err("remount root read-only", "/"))?;
    Ok(())
}

/// A fresh, empty, sized `/tmp`.
pub(crate) fn mount_tmp(tmp: &Path, bytes: u64) -> Result<(), BootstrapError> {
    let options = format!("size={bytes},mode=1777");
    mount(
        Some("tmpfs"),
        tmp,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(step_err("mount /tmp", tmp.display()))
}

/// Whether `/tmp` is exactly as a fresh tmpfs is: no block in use and no inode but its root.
/// That also rules out files unlinked but still held open, which keep their blocks. (The
/// directory itself is root's, mode 1777: the function cannot have changed it.)
pub fn tmp_untouched(tmp: &Path) -> bool {
    nix::sys::statvfs::statvfs(tmp).is_ok_and(|s| fresh(&s))
}

/// [`tmp_untouched`] of the filesystem `tmp` is open on: how the host asks, holding the
/// sandbox's `/tmp` open (a path walk through `/proc/<pid 1>/root` per invocation cost more
/// than the check).
pub fn tmp_untouched_fd(tmp: impl std::os::fd::AsFd) -> bool {
    nix::sys::statvfs::fstatvfs(tmp).is_ok_and(|s| fresh(&s))
}

fn fresh(s: &nix::sys::statvfs::Statvfs) -> bool {
    s.blocks() == s.blocks_free() && s.files() - s.files_free() <= 1
}

/// Replaces `/tmp` (inside the jail) with a fresh, empty tmpfs. The old one is detached: files a
/// process still holds open stay readable to it until closed, but no path reaches them.
pub(crate) fn reset_tmp(bytes: u64) -> Result<(), BootstrapError> {
    let tmp = Path::new("/tmp");
    if tmp_untouched(tmp) {
        return Ok(());
    }
    umount2(tmp, MntFlags::MNT_DETACH).map_err(step_err("detach /tmp", "/tmp"))?;
    mount_tmp(tmp, bytes)
}
