//! The sandbox helper: which program builds each jail (`lamina __sandbox`), its start-up check
//! (`--check`), and starting it with the sandbox's half of the spec.

use std::path::PathBuf;
use std::process::Stdio;

use lamina_bootstrap::ShellSpec;

use crate::error::Failure;
use crate::run_dir::RunDir;

/// The program that builds each sandbox: a `lamina` binary, started as `lamina __sandbox`
/// (`lamina_bootstrap::entry`). The helper is part of lamina itself, so nothing beside the
/// binary has to be found, built or installed.
#[derive(Debug, Clone)]
pub struct Helper {
    program: PathBuf,
    /// What messages call it.
    shown: String,
}

impl Helper {
    /// The running executable, which must be `lamina` (the CLI's choice). Started through
    /// `/proc/self/exe`, so a binary replaced on disk while lamina runs (a rebuild) still
    /// starts the helper that matches this host.
    pub fn this_executable() -> Helper {
        let shown = std::env::current_exe()
            .map_or_else(|_| "lamina".to_owned(), |p| p.display().to_string());
        Helper {
            program: PathBuf::from("/proc/self/exe"),
            shown,
        }
    }

    /// The `lamina` binary at `path`: for programs that run the host as a library (tests,
    /// benchmarks), whose own executable is not lamina.
    pub fn lamina_at(path: impl Into<PathBuf>) -> Helper {
        let program = path.into();
        Helper {
            shown: program.display().to_string(),
            program,
        }
    }

    /// The helper binary's identity (device, inode, size, modification time): a rebuilt or
    /// replaced binary is another helper.
    fn identity(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.program).ok()?;
        Some(format!(
            "{}:{}:{}:{}.{}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        ))
    }

    pub(crate) fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.arg(lamina_bootstrap::entry::HELPER_ARG);
        command
    }
}

impl std::fmt::Display for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.shown, lamina_bootstrap::entry::HELPER_ARG)
    }
}

/// What the host's check found missing: from `cache` when this very helper already passed it
/// since the machine booted, else by running it (and remembering a pass there). The check forks
/// and tries namespaces, mounts and seccomp, which costs a `lamina invoke` several
/// milliseconds; what it finds changes only with the kernel (a boot) or the binary, which the
/// key holds. A failure is never remembered: it is run again and said again.
pub(super) fn check_cached(helper: &Helper, cache: Option<&RunDir>) -> Vec<String> {
    let key = helper.identity().and_then(|helper| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(format!(
            "boot {} uid {} helper {helper}\n",
            boot.trim(),
            nix::unistd::Uid::effective()
        ))
    });
    // One memo per key: several lamina binaries on a host (a build and an installed one) do
    // not undo each other's. /run is emptied at boot, which ends them all.
    let file = cache.zip(key.as_ref()).map(|(dir, key)| {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        dir.path().join(format!("host-check-{name}"))
    });
    if let (Some(key), Some(file)) = (&key, &file)
        && std::fs::read_to_string(file).is_ok_and(|k| &k == key)
    {
        return Vec::new();
    }
    let missing = check_with(helper);
    if let (true, Some(key), Some(file)) = (missing.is_empty(), &key, &file) {
        // Best effort: without the memo the check just runs again next time.
        let staged = file.with_extension(format!("{}", std::process::id()));
        if std::fs::write(&staged, key).is_ok() {
            let _ = std::fs::rename(&staged, file);
        }
    }
    missing
}

/// Runs `lamina __sandbox --check`, which tries namespaces, mounts and seccomp for real in
/// throwaway children, and returns what it found missing.
pub(super) fn check_with(helper: &Helper) -> Vec<String> {
    let output = match helper
        .command()
        .arg("--check")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(output) => output,
        Err(e) => return vec![format!("running {helper} --check: {e}")],
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut missing: Vec<String> = text
        .lines()
        .filter_map(lamina_bootstrap::check::Finding::parse)
        .filter_map(|(feature, problem)| problem.map(|p| format!("{feature}: {p}")))
        .collect();
    if missing.is_empty() && !output.status.success() {
        missing.push(format!(
            "{helper} --check failed ({}) without saying why",
            output.status
        ));
    }
    missing
}

/// Starts the sandbox helper with the first half of the spec on its stdin: one end of a socket
/// pair, over which the Runtime API listener comes back in network mode `none` (SCM_RIGHTS).
pub(super) fn spawn_helper(
    helper: &Helper,
    shell: &ShellSpec,
) -> Result<
    (
        tokio::process::Child,
        i32,
        std::os::unix::net::UnixStream,
        std::io::PipeReader,
    ),
    Failure,
> {
    let spec_json =
        serde_json::to_vec(shell).map_err(|e| host_failure("encoding the jail spec", e))?;
    let (reader, writer, writer2) = crate::sandbox::log_pipe()?;
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| host_failure("creating the control socket", e))?;
    let mut command = crate::sandbox::base_command(helper.command(), writer, writer2);
    command.stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
    let child = command
        .spawn()
        .map_err(|e| host_failure(&format!("starting {helper}"), e))?;
    drop(command);
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| Failure::Sandbox("the jail exited before it could be tracked".into()))?;
    // A few hundred bytes into an empty socket buffer: this does not block.
    std::io::Write::write_all(&mut ours, &lamina_bootstrap::spec::frame(&spec_json))
        .map_err(|e| host_failure("sending the jail spec", e))?;
    Ok((child, pid, ours, reader))
}

/// PID 1 of a sandbox, seen from the host: the helper's only child.
pub(super) fn pid1_of(helper: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{helper}/task/{helper}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A host-side step of starting a sandbox failed.
pub(super) fn host_failure(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::Sandbox(format!("{what}: {e}"))
}
