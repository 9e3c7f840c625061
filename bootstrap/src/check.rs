//! `lamina __sandbox --check`: what this host lets the jail do, tried for real rather than
//! guessed from version numbers. Each check runs in a forked child (so that nothing it
//! changes, such as namespaces or a seccomp filter, sticks) and reports the first step that
//! failed. The host runs this once at startup and refuses `--sandbox jail` with the list.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::unshare;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

/// One capability of the host and, if the jail cannot use it, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked (`root`, `namespaces`, `mounts`, `seccomp`).
    pub feature: &'static str,
    /// `None` when it works; else the step that failed and the error.
    pub problem: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            None => write!(f, "ok {}", self.feature),
            Some(problem) => write!(f, "missing {}: {problem}", self.feature),
        }
    }
}

impl Finding {
    /// Parses one line of [`Finding`]'s `Display` output (the host reads the helper's stdout).
    pub fn parse(line: &str) -> Option<(String, Option<String>)> {
        if let Some(feature) = line.strip_prefix("ok ") {
            return Some((feature.to_owned(), None));
        }
        let (feature, problem) = line.strip_prefix("missing ")?.split_once(": ")?;
        Some((feature.to_owned(), Some(problem.to_owned())))
    }
}

/// Runs every check. Must be called while the process is single-threaded (it forks).
pub fn run() -> Vec<Finding> {
    let root = nix::unistd::geteuid().is_root();
    let mut findings = vec![Finding {
        feature: "root",
        problem: (!root).then(|| {
            format!(
                "running as uid {}; the jail needs root to mount, join cgroups and switch to the \
                 sandbox user (rootless operation through user namespaces is not supported yet)",
                nix::unistd::geteuid()
            )
        }),
    }];
    findings.push(Finding {
        feature: "namespaces",
        problem: in_child(namespaces).err(),
    });
    findings.push(Finding {
        feature: "mounts",
        problem: in_child(|| {
            namespaces()?;
            mounts()
        })
        .err(),
    });
    findings.push(Finding {
        feature: "seccomp",
        problem: in_child(seccomp).err(),
    });
    findings
}

/// Runs `check` in a child process and returns its verdict.
fn in_child(check: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let (read, write) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: `run`'s caller guarantees this process is single-threaded, so the child may run
    // any code after fork.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(read);
            let code = match check() {
                Ok(()) => 0,
                Err(problem) => {
                    let _ = File::from(write).write_all(problem.as_bytes());
                    1
                }
            };
            // Skips destructors and atexit handlers that belong to the parent.
            // SAFETY: _exit only ends this process.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write);
            let mut problem = String::new();
            let _ = File::from(read).read_to_string(&mut problem);
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(WaitStatus::Exited(..)) => Err(problem),
                Ok(other) => Err(format!("the check ended abnormally: {other:?}")),
                Err(e) => Err(format!("waitpid: {e}")),
            }
        }
    }
}

fn namespaces() -> Result<(), String> {
    unshare(crate::jail::namespaces(crate::spec::Network::None))
        .map_err(|e| format!("unshare(mount, pid, ipc, uts, net): {e}"))?;
    crate::jail::network::loopback_up().map_err(|e| e.to_string())?;
    std::net::TcpListener::bind(crate::jail::network::RUNTIME_API_ADDR)
        .map_err(|e| format!("binding the Runtime API in a new network namespace: {e}"))?;
    Ok(())
}

/// Needs the mount namespace `namespaces` made: nothing here reaches the host's mounts.
fn mounts() -> Result<(), String> {
    crate::jail::mounts::make_private().map_err(|e| e.to_string())?;
    let target = Path::new("/tmp");
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=64k"),
    )
    .map_err(|e| format!("mounting a tmpfs: {e}"))?;
    mount(
        Some("/usr"),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind-mounting /usr: {e}"))?;
    Ok(())
}

fn seccomp() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Seccomp:")) {
        return Err(
            "the kernel was built without seccomp (no Seccomp: in /proc/self/status)".into(),
        );
    }
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: {e}"))?;
    let filter = seccompiler::SeccompFilter::new(
        std::collections::BTreeMap::from([(libc::SYS_acct, Vec::new())]),
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("building a filter: {e}"))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e| format!("compiling a filter: {e}"))?;
    seccompiler::apply_filter(&program).map_err(|e| format!("installing a filter: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_round_trip_through_their_lines() {
        let ok = Finding {
            feature: "seccomp",
            problem: None,
        };
        let missing = Finding {
            feature: "root",
            problem: Some("running as uid 1000: needs root".into()),
        };
        assert_eq!(
            Finding::parse(&ok.to_string()),
            Some(("seccomp".into(), None))
        );
        assert_eq!(
            Finding::parse(&missing.to_string()),
            Some((
                "root".into(),
                Some("running as uid 1000: needs root".into())
            ))
        );
        assert_eq!(Finding::parse("garbage"), None);
    }
}
