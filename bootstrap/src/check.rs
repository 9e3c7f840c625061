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
///
/// Under root the jail uses the host's privileges; otherwise it runs rootless, in a user
/// namespace of each sandbox's own, and the first finding says whether this host allows that.
pub fn run() -> Vec<Finding> {
    let rootless = !nix::unistd::geteuid().is_root();
    let mut findings = vec![match rootless {
        false => Finding {
            feature: "root",
            problem: None,
        },
        true => Finding {
            feature: "user namespaces",
            problem: in_child(user_namespace).err().map(|e| {
                format!(
                    "{e}; running as uid {} without root, the jail needs unprivileged user \
                     namespaces (sysctl kernel.unprivileged_userns_clone=1 on Debian before 11, \
                     user.max_user_namespaces > 0, and on Ubuntu 24.04 an AppArmor profile \
                     allowing userns for lamina; in a container, --security-opt \
                     seccomp=unconfined or a runtime that allows unshare)",
                    nix::unistd::geteuid()
                )
            }),
        },
    }];
    findings.push(Finding {
        feature: "namespaces",
        problem: in_child(|| namespaces(rootless)).err(),
    });
    findings.push(Finding {
        feature: "mounts",
        problem: in_child(|| {
            namespaces(rootless)?;
            // /proc is mounted by PID 1 of the new PID namespace, as in the jail.
            in_child(mounts)
        })
        .err(),
    });
    findings.push(Finding {
        feature: "seccomp",
        problem: in_child(seccomp).err(),
    });
    findings
}

/// The sandbox's ids inside its user namespace when rootless (any unprivileged pair will do
/// for the check).
const CHECK_IDS: (u32, u32) = (993, 990);

fn user_namespace() -> Result<(), String> {
    enter_user_namespace(nix::sched::CloneFlags::empty())
}

/// Unshares a user namespace with `namespaces` and maps this user into it, as the jail does.
fn enter_user_namespace(namespaces: nix::sched::CloneFlags) -> Result<(), String> {
    // Read before unsharing: inside, until mapped, every id reads as the overflow id.
    let map = crate::spec::IdMap {
        outside_uid: nix::unistd::geteuid().as_raw(),
        outside_gid: nix::unistd::getegid().as_raw(),
    };
    crate::jail::userns::enter(&map, CHECK_IDS.0, CHECK_IDS.1, namespaces)
        .map_err(|e| e.to_string())
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

fn namespaces(rootless: bool) -> Result<(), String> {
    let flags = crate::jail::namespaces(crate::spec::Network::None);
    match rootless {
        true => enter_user_namespace(flags)?,
        false => unshare(flags).map_err(|e| format!("unshare(mount, pid, ipc, uts, net): {e}"))?,
    }
    crate::jail::network::loopback_up().map_err(|e| e.to_string())?;
    std::net::TcpListener::bind(crate::jail::network::RUNTIME_API_ADDR)
        .map_err(|e| format!("binding the Runtime API in a new network namespace: {e}"))?;
    Ok(())
}

/// Needs the mount and PID namespaces `namespaces` made, as their PID 1: nothing here reaches
/// the host's mounts.
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
    for dir in ["usr", "proc"] {
        std::fs::create_dir(target.join(dir)).map_err(|e| format!("mkdir in a tmpfs: {e}"))?;
    }
    crate::jail::mounts::bind_ro(Path::new("/usr"), &target.join("usr"))
        .map_err(|e| e.to_string())?;
    mount(
        Some("proc"),
        &target.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("mounting /proc for a new PID namespace: {e}"))?;
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
