//! A running sandbox from the host's side: its control socket to PID 1 (the Runtime API
//! listener handed over, `/tmp` resets), its `/tmp` as the host checks it, and stopping it.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use lamina_bootstrap::control::{REPORT_LEN, Report};

use super::shell::HostTraces;
use crate::sandbox::{BoxFuture, Control, Stop};

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
    pub(super) commands: tokio::sync::mpsc::UnboundedSender<JailCommand>,
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
        let _ = self.commands.send(JailCommand::ResetTmp(ack));
        done
    }
}

/// What the host's side of a sandbox asks of its PID 1, through the task that owns the
/// control socket ([`lamina_bootstrap::control::Command`] on the wire).
#[derive(Debug)]
pub(super) enum JailCommand {
    /// A fresh `/tmp`; the answer says whether it was made.
    ResetTmp(oneshot::Sender<std::io::Result<()>>),
    /// A connection to a port on the sandbox's loopback.
    Connect(u16, oneshot::Sender<std::io::Result<std::net::TcpStream>>),
    /// A signal for the runtime and what it started, sparing the extensions.
    SignalRuntime(Stop),
    /// Start the runtime, which PID 1 holds while extensions register.
    ReleaseRuntime,
    /// Kill the external extension at this index of the spec's extensions.
    KillExtension(u16),
}

/// PID 1's reports as they arrive on the control socket: fixed-size messages, with the
/// descriptors some carry. Its state lives here, not in the future reading it, so a read
/// cancelled by `select!` loses nothing.
#[derive(Debug, Default)]
pub(super) struct Reports {
    bytes: Vec<u8>,
    fds: std::collections::VecDeque<OwnedFd>,
    ended: bool,
}

impl Reports {
    /// The next report, with the descriptor it carried; `None` once the socket has ended
    /// (it then stays pending, so a `select!` stops polling it).
    pub(super) async fn next(
        &mut self,
        control: &tokio::net::UnixStream,
    ) -> std::io::Result<(Report, Option<OwnedFd>)> {
        use std::os::fd::AsRawFd;
        loop {
            if self.bytes.len() >= REPORT_LEN {
                let mut message = [0u8; REPORT_LEN];
                message.copy_from_slice(&self.bytes[..REPORT_LEN]);
                self.bytes.drain(..REPORT_LEN);
                let Some(report) = Report::decode(message) else {
                    return Err(std::io::Error::other(format!(
                        "the jail's PID 1 sent an unknown report {:#04x}",
                        message[0]
                    )));
                };
                let fd = match report {
                    Report::Connected => self.fds.pop_front(),
                    _ => None,
                };
                return Ok((report, fd));
            }
            if self.ended {
                return std::future::pending().await;
            }
            control.readable().await?;
            let received = control.try_io(tokio::io::Interest::READABLE, || {
                receive(control.as_raw_fd())
            });
            match received {
                Ok((bytes, fds)) if bytes.is_empty() => {
                    self.fds.extend(fds);
                    self.ended = true;
                }
                Ok((bytes, fds)) => {
                    self.bytes.extend_from_slice(&bytes);
                    self.fds.extend(fds);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// One `recvmsg`: the bytes and the descriptors that came.
fn receive(socket: std::os::fd::RawFd) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = [0u8; 16 * REPORT_LEN];
    let (len, fds) = lamina_bootstrap::control::receive(socket, &mut buf)?;
    Ok((buf[..len].to_vec(), fds))
}

/// Writes `bytes` whole to the control socket, through a shared reference (the reports are
/// read through another at the same time).
pub(super) async fn send(
    control: &tokio::net::UnixStream,
    mut bytes: &[u8],
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        control.writable().await?;
        match control.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends the byte that precedes the function's spec, with the extensions' log pipe attached
/// when there is one.
pub(super) async fn send_header(
    control: &tokio::net::UnixStream,
    extension_log: Option<&OwnedFd>,
) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let byte = [lamina_bootstrap::control::SPEC_FOLLOWS];
    let fds: Vec<i32> = extension_log.iter().map(|fd| fd.as_raw_fd()).collect();
    loop {
        control.writable().await?;
        let sent = control.try_io(tokio::io::Interest::WRITABLE, || {
            let cmsgs: &[ControlMessage<'_>] = match fds.is_empty() {
                true => &[],
                false => &[ControlMessage::ScmRights(&fds)],
            };
            sendmsg::<()>(
                control.as_raw_fd(),
                &[std::io::IoSlice::new(&byte)],
                cmsgs,
                MsgFlags::empty(),
                None,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
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
    /// To the task that owns the control socket.
    pub(super) commands: tokio::sync::mpsc::UnboundedSender<JailCommand>,
    /// The file names of the external extensions, in the spec's order (PID 1 knows them by
    /// index). With any, signals for the runtime go through PID 1, which spares them.
    pub(super) extensions: Vec<String>,
    /// Whether the sandbox shares the host's network namespace (its loopback is the host's).
    pub(super) host_network: bool,
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

    fn stop_runtime(&self, how: Stop) {
        // SIGKILL to the helper's group would end PID 1, and the extensions with it.
        match self.extensions.is_empty() {
            false => {
                let _ = self.commands.send(JailCommand::SignalRuntime(how));
            }
            true => self.stop(how),
        }
    }

    fn kill_extension(&self, name: &str) {
        if let Some(index) = self.extensions.iter().position(|n| n == name)
            && let Ok(index) = u16::try_from(index)
        {
            let _ = self.commands.send(JailCommand::KillExtension(index));
        }
    }

    fn release_runtime(&self) {
        if !self.extensions.is_empty() {
            let _ = self.commands.send(JailCommand::ReleaseRuntime);
        }
    }

    fn connect(&self, port: u16) -> BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> {
        if self.host_network {
            return Box::pin(tokio::net::TcpStream::connect((
                std::net::Ipv4Addr::LOCALHOST,
                port,
            )));
        }
        let (ack, connected) = oneshot::channel();
        let sent = self.commands.send(JailCommand::Connect(port, ack));
        Box::pin(async move {
            if sent.is_err() {
                return Err(std::io::Error::other("the sandbox has ended"));
            }
            let stream = connected
                .await
                .map_err(|_| std::io::Error::other("the sandbox has ended"))??;
            stream.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(stream)
        })
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        self.traces.limits()?.max_memory_bytes()
    }

    fn out_of_memory(&self) -> bool {
        self.traces.limits().is_some_and(|l| l.out_of_memory())
    }
}
