//! Network mode `outbound` on the host's side: a sandbox's own network namespace (its Runtime
//! API on its loopback, as in mode `none`) gets outbound access from slirp4netns, a user-mode
//! network stack attached from outside: it makes `tap0` in the namespace with `10.0.2.100`, a
//! default route through `10.0.2.2` and a DNS forwarder at `10.0.2.3`, and turns the sandbox's
//! connections into ordinary sockets of its own on the host. With `--disable-host-loopback`
//! the host's `127.0.0.1` is refused; another sandbox's Runtime API sits on that sandbox's own
//! loopback, which no address reaches.
//!
//! Why slirp4netns, and for root too rather than a veth pair with NAT: it needs no privilege
//! (the rootless jail has none to give), changes nothing host-wide (no `ip_forward`, no
//! firewall rules to add, order and remove, no addresses to allocate), and keeps the host's
//! loopback out by itself. What it costs: one small process per sandbox, a few milliseconds
//! when the sandbox is built (ahead of use in `lamina serve`), and user-mode copying, slower
//! than a kernel path for bulk transfers, which a function's calls to services rarely are.
//! (docs/design/001, "Network".)

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The program, looked up on `PATH`.
const PROGRAM: &str = "slirp4netns";

/// How long a sandbox's network may take to come up.
const READY_WAIT: Duration = Duration::from_secs(5);

/// Finds slirp4netns, or says what is missing and how to get it.
pub fn find() -> Result<PathBuf, String> {
    if !Path::new("/dev/net/tun").exists() {
        return Err(
            "network mode outbound needs /dev/net/tun, which this host lacks: load the tun \
             module (modprobe tun), or choose --network none (no network) or host"
                .to_owned(),
        );
    }
    use std::os::unix::fs::PermissionsExt;
    // Rootless, slirp4netns opens the device as the user's own uid (the sandbox's namespace
    // root is that uid outside): the device must be open to it. Most distributions make it
    // 0666; some hosts have it 0600, and slirp4netns then dies with only "Permission denied".
    let tun = Path::new("/dev/net/tun");
    if !nix::unistd::geteuid().is_root()
        && nix::unistd::access(
            tun,
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        )
        .is_err()
    {
        let mode = std::fs::metadata(tun).map_or(0, |m| m.permissions().mode() & 0o7777);
        return Err(format!(
            "network mode outbound needs /dev/net/tun open to your user, and here it is mode              {mode:04o}: an administrator can make it 0666, its usual mode (chmod 0666              /dev/net/tun), or choose --network none (no network) or host"
        ));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(PROGRAM))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            "network mode outbound needs slirp4netns, which is not on PATH: install it \
             (apt install slirp4netns; dnf install slirp4netns), or choose --network none \
             (no network) or host"
                .to_owned()
        })
}

/// One sandbox's user-mode network; ended (and reaped) when dropped.
#[derive(Debug)]
pub(super) struct Slirp {
    child: Child,
    /// slirp4netns exits when this, the write end of its `--exit-fd`, closes.
    _exit: OwnedFd,
    /// Its ready pipe, until someone waits on it ([`Slirp::take_ready`]).
    ready: Option<OwnedFd>,
}

impl Slirp {
    /// Attaches slirp4netns to the network namespace of the sandbox whose helper is `helper`
    /// (rootless: through the sandbox's user namespace, which owns it). It configures the
    /// sandbox's side while the sandbox goes on being built; [`wait_ready`] waits for that,
    /// before the function is started.
    pub(super) fn attach(program: &Path, helper: i32, rootless: bool) -> std::io::Result<Slirp> {
        wait_for_own_namespace(helper)?;
        let pipe =
            || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from);
        let (ready_r, ready_w) = pipe()?;
        let (exit_r, exit_w) = pipe()?;
        let mut command = Command::new(program);
        command
            .args([
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--ready-fd=3",
                "--exit-fd=4",
                "--netns-type=path",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if rootless {
            command.arg(format!("--userns-path=/proc/{helper}/ns/user"));
        }
        command.arg(format!("/proc/{helper}/ns/net")).arg("tap0");
        let (ready_fd, exit_fd) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
        // SAFETY: between fork and exec the closure only calls fcntl and dup2, which are
        // async-signal-safe; the descriptors it names stay open until after spawn returns.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                // Copied out of the way first, so that neither lands on the other's number;
                // the copies and the final descriptors are inherited (no close-on-exec).
                let high = |fd| nix::libc::fcntl(fd, nix::libc::F_DUPFD, 10);
                let (ready, exit) = (high(ready_fd), high(exit_fd));
                for (from, to) in [(ready, 3), (exit, 4)] {
                    if from < 0 || nix::libc::dup2(from, to) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            std::io::Error::new(e.kind(), format!("starting {}: {e}", program.display()))
        })?;
        if let Some(stderr) = child.stderr.take() {
            relay_messages(stderr);
        }
        drop((ready_w, exit_r));
        Ok(Slirp {
            child,
            _exit: exit_w,
            ready: Some(ready_r),
        })
    }

    /// The ready pipe, to wait on with [`wait_ready`] (once).
    pub(super) fn take_ready(&mut self) -> Option<OwnedFd> {
        self.ready.take()
    }
}

/// Passes what slirp4netns says on to lamina's log, but for its routine lines about the tap
/// device, on a thread that ends when slirp4netns does.
fn relay_messages(stderr: std::process::ChildStderr) {
    use std::io::BufRead;
    let _ = std::thread::Builder::new()
        .name("lamina-slirp-log".into())
        .spawn(move || {
            // Set once slirp4netns found the sandbox's namespace gone: the sandbox ended
            // before it could attach (a runtime that fails at once). Nothing was left to
            // connect, the invocation's own error says why, and what slirp4netns says about it
            // is no warning.
            let mut sandbox_gone = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.starts_with("sent tapfd=") || line.starts_with("received tapfd=") {
                    continue;
                }
                sandbox_gone |= line.contains("existing path expected when --netns-type=path")
                    || (line.contains("/ns/net") && line.contains("No such file or directory"));
                if sandbox_gone {
                    tracing::debug!("{PROGRAM}: {line}");
                    continue;
                }
                tracing::warn!("{PROGRAM}: {line}");
            }
        });
}

/// Waits until slirp4netns has configured the sandbox's network (on a blocking thread).
pub(super) async fn wait_ready(ready: OwnedFd) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || read_ready(ready))
        .await
        .map_err(std::io::Error::other)?
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("{PROGRAM} did not bring the sandbox's network up: {e}"),
            )
        })
}

impl Drop for Slirp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // Reaped on a thread of its own: a killed slirp4netns takes ~15 ms to die (closing its
        // tap device unregisters a network device, which waits for RCU grace periods), which
        // a `lamina invoke` would otherwise add to every run. Nothing waits for that: the
        // sandbox is gone already, and the thread ends once the process has.
        let pid = self.child.id();
        let _ = std::thread::Builder::new()
            .name("lamina-slirp-reaper".into())
            .spawn(move || {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            });
    }
}

/// Waits until the helper has unshared its network namespace (it does so first thing):
/// attached earlier, slirp4netns would configure the host's.
fn wait_for_own_namespace(helper: i32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let ours = std::fs::metadata("/proc/self/ns/net")?.ino();
    let theirs = format!("/proc/{helper}/ns/net");
    let deadline = Instant::now() + READY_WAIT;
    loop {
        if std::fs::metadata(&theirs)?.ino() != ours {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the sandbox made no network namespace of its own",
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Waits for slirp4netns's one byte on its ready pipe.
fn read_ready(ready: OwnedFd) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(READY_WAIT.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    if poll(&mut fds, timeout).map_err(std::io::Error::from)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("not ready within {} s", READY_WAIT.as_secs()),
        ));
    }
    let mut byte = [0u8; 1];
    match std::fs::File::from(ready).read(&mut byte)? {
        1 => Ok(()),
        _ => Err(std::io::Error::other(
            "it exited before it was ready (its message, if any, is in lamina's log)",
        )),
    }
}
