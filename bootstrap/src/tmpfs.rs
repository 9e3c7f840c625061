//! `lamina __sandbox --tmpfs`: sized tmpfs filesystems for a rootless host, which may not mount
//! one itself. This helper enters a user and mount namespace of its own (the host user mapped
//! to itself, so files the host makes there are the user's), and for each request mounts a
//! fresh tmpfs, opens its root, detaches the mount at once and sends the open directory to the
//! host over its stdin (a Unix socket, `SCM_RIGHTS`). The host then works in it through that
//! descriptor (`/proc/self/fd/N`); the filesystem lives as long as something holds it open and
//! is mounted nowhere, so nothing is left to unmount even after `kill -9`. The size is the
//! tmpfs's own, enforced by the kernel as under root.
//!
//! Protocol, on stdin: the host writes a request (`u32` little-endian: size in MB, then `u64`:
//! the inode count); the helper answers with one byte, `K` carrying the descriptor or `E`
//! followed by nothing (its stderr says why). End of input ends the helper: the host closing its
//! end, or dying, which closes it too. (Not a parent-death signal: that fires when the host
//! thread that started the helper ends, not the host.)

use std::io::IoSlice;
use std::os::fd::AsRawFd;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::spec::IdMap;

/// The argument after `__sandbox` that starts this helper.
pub const TMPFS_ARG: &str = "--tmpfs";

/// Serves requests until the host closes the socket; returns the exit code.
pub fn serve() -> i32 {
    let map = IdMap {
        outside_uid: nix::unistd::geteuid().as_raw(),
        outside_gid: nix::unistd::getegid().as_raw(),
    };
    if let Err(e) = crate::jail::userns::enter(
        &map,
        map.outside_uid,
        map.outside_gid,
        CloneFlags::CLONE_NEWNS,
    )
    .and_then(|()| crate::jail::mounts::make_private())
    {
        eprintln!("lamina tmpfs helper: {e}");
        return 125;
    }
    let mut request = [0u8; 12];
    loop {
        match read_request(&mut request) {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                eprintln!("lamina tmpfs helper: reading a request: {e}");
                return 125;
            }
        }
        let size_mb = u32::from_le_bytes(request[..4].try_into().unwrap_or_default());
        let inodes = u64::from_le_bytes(request[4..].try_into().unwrap_or_default());
        let answer = match fresh_tmpfs(size_mb, inodes) {
            Ok(dir) => send(b"K", Some(&dir)),
            Err(e) => {
                eprintln!("lamina tmpfs helper: {e}");
                send(b"E", None)
            }
        };
        if let Err(e) = answer {
            eprintln!("lamina tmpfs helper: answering: {e}");
            return 125;
        }
    }
}

/// Reads one request from stdin; `false` at a clean end of input.
fn read_request(request: &mut [u8; 12]) -> std::io::Result<bool> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 0 is our stdin, open for the life of the process; ManuallyDrop keeps this
    // handle from closing it.
    let stdin = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    crate::spec::read_whole(&*stdin, request)
}

/// Mounts a tmpfs on `/tmp` of this helper's own mount namespace, opens its root and detaches
/// it again.
fn fresh_tmpfs(size_mb: u32, inodes: u64) -> Result<std::fs::File, String> {
    let target = "/tmp";
    let options = format!("size={size_mb}m,nr_inodes={inodes},mode=0700");
    mount(
        Some("lamina-wasm-tmp"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|e| format!("mounting a tmpfs of {size_mb} MB: {e}"))?;
    let root = std::fs::File::open(target).map_err(|e| format!("opening the tmpfs: {e}"));
    umount2(target, MntFlags::MNT_DETACH).map_err(|e| format!("detaching the tmpfs: {e}"))?;
    root
}

fn send(answer: &[u8], dir: Option<&std::fs::File>) -> nix::Result<()> {
    let fds: Vec<i32> = dir.iter().map(|d| d.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(0, &[IoSlice::new(answer)], control, MsgFlags::empty(), None).map(drop)
}
