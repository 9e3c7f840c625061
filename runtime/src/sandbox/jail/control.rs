//! A running sandbox from the host's side: its control socket to PID 1 (the Runtime API
//! listener handed over, `/tmp` resets), its `/tmp` as the host checks it, and stopping it.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::shell::HostTraces;
use crate::sandbox::{Control, Stop};

use super::helper::pid1_of;

/// A handle on the sandbox's PID 1 (a pidfd), found once the helper has started it: polled
/// for a few milliseconds at most, since the helper forks PID 1 first thing.
pub(super) async fn pid1_handle(helper: i32) -> Option<tokio::io::unix::AsyncFd<OwnedFd>> {
    for _ in 0..200 {
        if let Some(pid1) = pid1_of(helper) {
            // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
            let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid1, 0) };
            let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
            // SAFETY: the descriptor was just returned to us and nothing else owns it.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            // SAFETY: an OwnedFd stays open, on the same pidfd, for as long as the AsyncFd
            // holds it.
            return unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            }
            .ok();
        }
        if std::fs::metadata(format!("/proc/{helper}")).is_err() {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    None
}

/// Waits (up to 5 s: a process stuck in the kernel must not hold the environment forever)
/// until the process behind `pidfd` has exited; a pidfd turns readable then.
pub(super) async fn wait_exit(pidfd: tokio::io::unix::AsyncFd<OwnedFd>) {
    let waited = tokio::time::timeout(std::time::Duration::from_secs(5), pidfd.readable()).await;
    if waited.is_err() {
        tracing::warn!("the sandbox's PID 1 still runs 5 s after its helper ended");
    }
}

/// `path` opened only as a place (`O_PATH`): enough to ask about its filesystem.
pub(super) fn open_path(path: &str) -> Option<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()).ok()
}

/// A jailed environment's `/tmp`: checked from the host, reset by PID 1 over the control
/// socket (by the task that owns it).
#[derive(Debug)]
pub(super) struct JailTmp {
    /// The sandbox's helper process; PID 1 is its only child.
    pub(super) helper: i32,
    /// The sandbox's `/tmp` as the host reaches it (through PID 1's root), held open: asking
    /// it is one `fstatvfs`, not a path walk through `/proc`. Opened at the first check (by
    /// then the function has run, so PID 1 exists) and after each reset (a new tmpfs).
    pub(super) seen_from_host: Option<std::os::fd::OwnedFd>,
    pub(super) resets: tokio::sync::mpsc::UnboundedSender<oneshot::Sender<std::io::Result<()>>>,
}

impl crate::sandbox::ResetTmp for JailTmp {
    fn untouched(&mut self) -> bool {
        if self.seen_from_host.is_none() {
            self.seen_from_host =
                pid1_of(self.helper).and_then(|p| open_path(&format!("/proc/{p}/root/tmp")));
        }
        let untouched = self
            .seen_from_host
            .as_ref()
            .is_some_and(lamina_bootstrap::jail::tmp_untouched_fd);
        if !untouched {
            // The one held is the tmpfs about to be replaced.
            self.seen_from_host = None;
        }
        untouched
    }

    fn reset(&mut self) -> oneshot::Receiver<std::io::Result<()>> {
        let (ack, done) = oneshot::channel();
        // When the sandbox has ended, the request and its `ack` are dropped: `done` then
        // reports that no fresh /tmp was made.
        let _ = self.resets.send(ack);
        done
    }
}

/// Asks PID 1 for a fresh `/tmp` (command `T`) and waits for its one-byte answer.
pub(super) async fn reset_tmp_over(control: &mut tokio::net::UnixStream) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    control.write_all(b"T").await?;
    let mut answer = [0u8; 1];
    control.read_exact(&mut answer).await?;
    match &answer {
        b"K" => Ok(()),
        _ => Err(std::io::Error::other(
            "the jail could not make a fresh /tmp",
        )),
    }
}

/// Receives the listening socket the helper made inside the sandbox's network namespace.
pub(super) async fn receive_listener(
    control: &tokio::net::UnixStream,
) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::AsRawFd;
    loop {
        control.readable().await?;
        let received = control.try_io(tokio::io::Interest::READABLE, || {
            crate::sandbox::receive_fd(control.as_raw_fd())
        });
        match received {
            Ok((_, Some(fd))) => return Ok(std::net::TcpListener::from(fd)),
            Ok((_, None)) => {
                return Err(std::io::Error::other(
                    "the jail closed its control socket without a listener",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug)]
pub(super) struct JailControl {
    pub(super) pid: i32,
    pub(super) reaped: Arc<AtomicBool>,
    pub(super) traces: HostTraces,
}

impl Control for JailControl {
    fn stop(&self, how: Stop) {
        // The helper, PID 1 and the function share this process group. PID 1 dies with the
        // helper, and every process of the sandbox with PID 1, so once the helper is reaped
        // nothing is left, and the group id may belong to someone else: leave it alone.
        if !self.reaped.load(Ordering::Acquire) {
            crate::sandbox::signal_group(self.pid, how);
        }
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        self.traces.limits()?.max_memory_bytes()
    }

    fn out_of_memory(&self) -> bool {
        self.traces.limits().is_some_and(|l| l.out_of_memory())
    }
}
