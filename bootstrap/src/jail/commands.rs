//! PID 1's side of the control socket (fd 0; the protocol is [`crate::control`]): the host's
//! commands, answered by a thread of PID 1, and PID 1's reports, written whole under one lock
//! by whichever thread has one. The socket also ends the sandbox: the host holds its end for
//! as long as the environment lives, so when it closes, PID 1 leaves and takes every process
//! of the sandbox with it.

use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::control::{COMMAND_LEN, Command, Report};

/// The control socket: PID 1's stdin.
const SOCKET: RawFd = 0;

/// Held while a report is written, so that two threads' reports never interleave.
static WRITING: Mutex<()> = Mutex::new(());

/// The socket as a file; never closed through this handle.
fn socket() -> ManuallyDrop<File> {
    // SAFETY: fd 0 is the control socket, open for the life of PID 1; ManuallyDrop keeps this
    // handle from closing it.
    ManuallyDrop::new(unsafe { File::from_raw_fd(SOCKET) })
}

/// Sends `report` to the host, with `fd` attached if given. A host that is gone cannot be
/// told; the closed socket ends the sandbox anyway.
pub(crate) fn report(report: Report, fd: Option<RawFd>) {
    let bytes = report.encode();
    let _held = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    match fd {
        Some(fd) => {
            let fds = [fd];
            let _ = sendmsg::<()>(
                SOCKET,
                &[IoSlice::new(&bytes)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            );
        }
        None => {
            let _ = socket().write_all(&bytes);
        }
    }
}

/// Waits for the byte that precedes the function's spec, and the descriptor it may carry
/// (the extensions' log pipe). `None` when the host closed the socket first: the sandbox was
/// never used.
pub(crate) fn receive_header() -> std::io::Result<Option<Option<OwnedFd>>> {
    let mut byte = [0u8; 1];
    let (bytes, fds) = loop {
        match crate::control::receive(SOCKET, &mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if bytes == 0 {
        return Ok(None);
    }
    let fd = fds.into_iter().next();
    if byte[0] != crate::control::SPEC_FOLLOWS {
        return Err(std::io::Error::other(format!(
            "expected the spec's header byte, got {:#04x}",
            byte[0]
        )));
    }
    Ok(Some(fd))
}

/// The runtime's spec, held back until the host releases the runtime: the write end of the
/// pipe the function's process waits on, and the frame to write there.
pub(crate) type HeldRuntime = (OwnedFd, Vec<u8>);

/// Answers the host's commands until it closes the socket, then ends PID 1 (and so the
/// sandbox). `extensions` are the external extensions' indexes in the spec and their process
/// groups, which the runtime's signals spare; `held`, the runtime to start on
/// [`Command::ReleaseRuntime`].
pub(crate) fn serve(
    tmp_bytes: u64,
    extensions: Vec<(u8, i32)>,
    mut held: Option<HeldRuntime>,
) -> ! {
    let mut command = [0u8; COMMAND_LEN];
    while socket().read_exact(&mut command).is_ok() {
        match Command::decode(command) {
            Some(Command::ResetTmp) => {
                let ok = match super::mounts::reset_tmp(tmp_bytes) {
                    Ok(()) => true,
                    Err(e) => {
                        eprintln!("lamina sandbox helper: {e}");
                        false
                    }
                };
                report(Report::TmpReset(ok), None);
            }
            Some(Command::Connect(port)) => connect(port),
            Some(Command::SignalRuntime(signal)) => signal_runtime(signal, &extensions),
            Some(Command::KillExtension(index)) => {
                // Its group, so that whatever it started goes with it; a group already gone
                // answers ESRCH.
                if let Some((_, group)) = extensions.iter().find(|(i, _)| u16::from(*i) == index) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(*group),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            Some(Command::ReleaseRuntime) => {
                if let Some((go, frame)) = held.take() {
                    // A runtime that cannot be told to go stays waiting: the host's init
                    // timeout ends it.
                    if let Err(e) = File::from(go).write_all(&frame) {
                        eprintln!("lamina sandbox helper: starting the runtime: {e}");
                    }
                }
            }
            None => {}
        }
    }
    std::process::exit(0);
}

/// Connects to `port` on the sandbox's loopback and hands the connection over.
fn connect(port: u16) {
    match std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)) {
        Ok(stream) => report(Report::Connected, Some(stream.as_raw_fd())),
        Err(e) => report(
            Report::ConnectFailed(e.raw_os_error().unwrap_or(libc::EIO)),
            None,
        ),
    }
}

/// Signals every process of the sandbox but PID 1 and the extensions' groups: the runtime and
/// all it started, wherever it put them.
fn signal_runtime(signal: u8, extensions: &[(u8, i32)]) {
    let Ok(signal) = nix::sys::signal::Signal::try_from(i32::from(signal)) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == 1 {
            continue;
        }
        let pid = nix::unistd::Pid::from_raw(pid);
        // A group whose leader is outside the namespace (the runtime's, which it shares with
        // the helper) reads as 0 here; the extensions' are their own pids.
        let group = nix::unistd::getpgid(Some(pid)).map_or(0, |g| g.as_raw());
        if !extensions.iter().any(|(_, g)| *g == group) {
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }
}
