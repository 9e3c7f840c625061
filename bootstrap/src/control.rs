//! The control socket between the host and a sandbox's PID 1, once the function's spec has
//! been sent (see [`crate::spec`]): the host's [`Command`]s, fixed [`COMMAND_LEN`] bytes each,
//! and PID 1's [`Report`]s, fixed [`REPORT_LEN`] bytes each, some carrying a descriptor
//! (`SCM_RIGHTS`). Fixed sizes keep both readers trivial on a stream socket; a report is
//! written whole under one lock in PID 1, so two threads' reports never interleave.
//!
//! Before the function's spec frame the host sends one byte, [`SPEC_FOLLOWS`], carrying the
//! write end of the extensions' log pipe when the function has external extensions.

/// Receives from a Unix socket into `buf`: how many bytes came (0 at the end of the stream)
/// and the descriptors that came with them (`SCM_RIGHTS`, close-on-exec). The one way both
/// sides of a sandbox's control socket, and the helpers that hand the host what they made
/// inside their namespaces, read it. A non-blocking socket gives `WouldBlock` as any read does.
#[cfg(target_os = "linux")]
pub fn receive(
    socket: std::os::fd::RawFd,
    buf: &mut [u8],
) -> std::io::Result<(usize, Vec<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let message = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for c in message.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: SCM_RIGHTS gave us new descriptors that nothing else owns.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((message.bytes, fds))
}

/// The byte sent before the function's spec frame.
pub const SPEC_FOLLOWS: u8 = b'F';

/// Bytes in one command.
pub const COMMAND_LEN: usize = 3;
/// Bytes in one report.
pub const REPORT_LEN: usize = 6;

/// What the host asks of PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Replace `/tmp` with a fresh, empty tmpfs; answered [`Report::TmpReset`].
    ResetTmp,
    /// Open a TCP connection to this port on the sandbox's loopback (where its extensions
    /// listen for telemetry) and send it over; answered [`Report::Connected`] (with the
    /// descriptor) or [`Report::ConnectFailed`].
    Connect(u16),
    /// Send this signal to the runtime and every process it started, sparing the external
    /// extensions (each leads a process group of its own). Not answered: the runtime's end
    /// comes as [`Report::RuntimeExited`].
    SignalRuntime(u8),
    /// Start the runtime: with external extensions, PID 1 holds it until every extension
    /// has registered, as Lambda does. Not answered.
    ReleaseRuntime,
    /// Kill (SIGKILL) the process group of the external extension at this index of the
    /// spec's `extensions`: at shutdown, one not registered for `SHUTDOWN` is killed at once,
    /// as on Lambda. Not answered: its end comes as [`Report::ExtensionExited`].
    KillExtension(u16),
}

impl Command {
    /// The command's bytes.
    pub fn encode(self) -> [u8; COMMAND_LEN] {
        let (tag, arg) = match self {
            Command::ResetTmp => (b'T', 0),
            Command::Connect(port) => (b'C', port),
            Command::SignalRuntime(signal) => (b'S', u16::from(signal)),
            Command::ReleaseRuntime => (b'G', 0),
            Command::KillExtension(index) => (b'K', index),
        };
        let [a, b] = arg.to_le_bytes();
        [tag, a, b]
    }

    /// The command in `bytes`; `None` for one this side does not know.
    pub fn decode(bytes: [u8; COMMAND_LEN]) -> Option<Command> {
        let arg = u16::from_le_bytes([bytes[1], bytes[2]]);
        match bytes[0] {
            b'T' => Some(Command::ResetTmp),
            b'C' => Some(Command::Connect(arg)),
            b'S' => u8::try_from(arg).ok().map(Command::SignalRuntime),
            b'G' => Some(Command::ReleaseRuntime),
            b'K' => Some(Command::KillExtension(arg)),
            _ => None,
        }
    }
}

/// How a process of the sandbox ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Status {
    fn encode(self) -> i32 {
        match self {
            Status::Code(code) => code.max(0),
            Status::Signal(signal) => -signal.max(1),
        }
    }

    fn decode(value: i32) -> Status {
        match value {
            v if v < 0 => Status::Signal(-v),
            v => Status::Code(v),
        }
    }
}

/// What PID 1 tells the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The answer to [`Command::ResetTmp`]: whether `/tmp` is fresh.
    TmpReset(bool),
    /// The answer to [`Command::Connect`]: the connection is attached.
    Connected,
    /// The answer to [`Command::Connect`]: connecting failed with this errno.
    ConnectFailed(i32),
    /// External extension number `index` (in the order of the spec) could not be started:
    /// its `execve` failed with this errno.
    ExtensionLaunchFailed {
        /// Its place in [`crate::FunctionSpec::extensions`].
        index: u8,
        /// The errno.
        errno: i32,
    },
    /// External extension number `index` ended.
    ExtensionExited {
        /// Its place in [`crate::FunctionSpec::extensions`].
        index: u8,
        /// How.
        status: Status,
    },
    /// The runtime ended while extensions still run (without extensions, the sandbox ends
    /// with the runtime and the helper's own exit says how).
    RuntimeExited(Status),
}

impl Report {
    /// The report's bytes.
    pub fn encode(self) -> [u8; REPORT_LEN] {
        let (tag, index, value) = match self {
            Report::TmpReset(true) => (b'K', 0, 0),
            Report::TmpReset(false) => (b'E', 0, 0),
            Report::Connected => (b'C', 0, 0),
            Report::ConnectFailed(errno) => (b'c', 0, errno),
            Report::ExtensionLaunchFailed { index, errno } => (b'L', index, errno),
            Report::ExtensionExited { index, status } => (b'X', index, status.encode()),
            Report::RuntimeExited(status) => (b'R', 0, status.encode()),
        };
        let [a, b, c, d] = value.to_le_bytes();
        [tag, index, a, b, c, d]
    }

    /// The report in `bytes`; `None` for one this side does not know.
    pub fn decode(bytes: [u8; REPORT_LEN]) -> Option<Report> {
        let index = bytes[1];
        let value = i32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        Some(match bytes[0] {
            b'K' => Report::TmpReset(true),
            b'E' => Report::TmpReset(false),
            b'C' => Report::Connected,
            b'c' => Report::ConnectFailed(value),
            b'L' => Report::ExtensionLaunchFailed {
                index,
                errno: value,
            },
            b'X' => Report::ExtensionExited {
                index,
                status: Status::decode(value),
            },
            b'R' => Report::RuntimeExited(Status::decode(value)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_reports_survive_the_wire() {
        for command in [
            Command::ResetTmp,
            Command::Connect(9003),
            Command::SignalRuntime(15),
            Command::ReleaseRuntime,
            Command::KillExtension(3),
        ] {
            assert_eq!(Command::decode(command.encode()), Some(command));
        }
        for report in [
            Report::TmpReset(true),
            Report::TmpReset(false),
            Report::Connected,
            Report::ConnectFailed(111),
            Report::ExtensionLaunchFailed {
                index: 3,
                errno: 13,
            },
            Report::ExtensionExited {
                index: 9,
                status: Status::Code(0),
            },
            Report::ExtensionExited {
                index: 1,
                status: Status::Signal(9),
            },
            Report::RuntimeExited(Status::Code(2)),
        ] {
            assert_eq!(Report::decode(report.encode()), Some(report));
        }
        assert_eq!(Report::decode(*b"?\0\0\0\0\0"), None);
        assert_eq!(Command::decode(*b"?\0\0"), None);
    }
}
