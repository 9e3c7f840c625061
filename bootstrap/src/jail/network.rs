//! Network mode `none`: the sandbox's own network namespace holds only a loopback interface,
//! and the Runtime API listener is created inside it and handed to the host, which serves it.
//! Sockets keep the namespace they were made in, so only this sandbox's processes can connect.

use std::io::IoSlice;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use super::{BootstrapError, io_step_err, step_err};

/// Where the Runtime API listens inside the sandbox.
pub const RUNTIME_API_ADDR: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9001),
);

/// Brings up `lo` in the current (fresh) network namespace.
pub(crate) fn loopback_up() -> Result<(), BootstrapError> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0");
    // A fresh namespace has `lo` down; binding still works on the wildcard address.
    let socket = socket.map_err(io_step_err("socket", "lo"))?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value for it.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own, for the interface it names.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io_step_err("get flags", "lo")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS filled in.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io_step_err("bring up", "lo")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Gives the namespace's TCP the kernel's built-in Reno congestion control. A new namespace
/// inherits the host's default, which may be one that models the path and paces sends (BBR on
/// our machines); between two sockets on one loopback there is no path to model, and that work
/// was 2–4% of a loaded host's CPU. Best effort: where `/proc/sys` cannot be written, the
/// inherited one works as well, only slower.
pub(crate) fn plain_congestion_control() {
    let _ = std::fs::write("/proc/sys/net/ipv4/tcp_congestion_control", "reno");
}

/// Binds the Runtime API listener inside the sandbox and sends it to the host over `channel`
/// (the helper's stdin, a Unix socket). The helper keeps no copy.
pub(crate) fn hand_over_listener(channel: i32) -> Result<(), BootstrapError> {
    let listener =
        TcpListener::bind(RUNTIME_API_ADDR).map_err(io_step_err("bind", RUNTIME_API_ADDR))?;
    let fds = [listener.as_raw_fd()];
    sendmsg::<()>(
        channel,
        &[IoSlice::new(b"L")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(step_err("send listener", "stdin"))?;
    Ok(())
}
