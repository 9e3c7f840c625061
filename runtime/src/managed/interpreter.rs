//! Finds the host's interpreter for a managed runtime: `python3.N`, then `python3`, on `PATH`
//! (or `node`), each asked for its real executable, installation prefix and version, since a
//! name on `PATH` may be a version manager's shim or a virtual environment's link. The first
//! of the version asked for wins; with none, the error names what was found and how to go on.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ManagedError, RuntimeName};

/// A host interpreter, as it reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// The real executable (links resolved).
    pub executable: PathBuf,
    /// Its installation: `sys.base_prefix`, or the directory above Node.js's `bin`.
    pub prefix: PathBuf,
    /// Its full version, `3.11.7` or `20.20.2`.
    pub version: String,
}

impl Interpreter {
    /// Whether it lives in the host's `/usr`, which the jail shows anyway.
    pub fn under_usr(&self) -> bool {
        self.executable.starts_with("/usr") && self.prefix.starts_with("/usr")
    }

    /// The directory its executable is in.
    pub fn bin_dir(&self) -> &Path {
        self.executable.parent().unwrap_or(Path::new("/"))
    }

    /// The second number of its version (Python's minor).
    pub fn minor(&self) -> u32 {
        self.number(1)
    }

    /// The first number of its version (Node.js's major).
    pub fn major(&self) -> u32 {
        self.number(0)
    }

    fn number(&self, at: usize) -> u32 {
        self.version
            .split('.')
            .nth(at)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Whether it is the version `name` asks for.
    pub fn matches(&self, name: RuntimeName) -> bool {
        match name {
            RuntimeName::Provided => true,
            RuntimeName::Python { minor } => self.major() == 3 && self.minor() == minor,
            RuntimeName::Node { major } => self.major() == major,
        }
    }

    /// "Python 3.11.7 (/usr/bin/python3.11)".
    fn describe(&self, name: RuntimeName) -> String {
        let language = match name {
            RuntimeName::Node { .. } => "Node.js",
            _ => "Python",
        };
        format!(
            "{language} {} ({})",
            self.version,
            self.executable.display()
        )
    }
}

/// The commands tried for `name`, in order.
fn commands(name: RuntimeName) -> Vec<String> {
    match name {
        RuntimeName::Python { minor } => vec![format!("python3.{minor}"), "python3".into()],
        RuntimeName::Node { .. } => vec!["node".into(), "nodejs".into()],
        RuntimeName::Provided => Vec::new(),
    }
}

/// Asks `command` what it is; `None` when it does not run (absent, or a shim with no such
/// version behind it).
fn probe(command: &str, name: RuntimeName) -> Option<Interpreter> {
    let mut cmd = Command::new(command);
    match name {
        // -I: nothing from the caller's PYTHON* variables or user site changes the answer.
        RuntimeName::Python { .. } => cmd.args([
            "-I",
            "-c",
            "import sys; print(sys.executable); print(sys.base_prefix); \
             print('%d.%d.%d' % sys.version_info[:3])",
        ]),
        _ => cmd.args(["-p", "process.execPath + '\\n\\n' + process.versions.node"]),
    };
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let executable = PathBuf::from(lines.next()?).canonicalize().ok()?;
    let prefix = match lines.next()? {
        "" => executable.parent()?.parent()?.to_owned(),
        prefix => PathBuf::from(prefix).canonicalize().ok()?,
    };
    let version = lines.next()?.trim().to_owned();
    Some(Interpreter {
        executable,
        prefix,
        version,
    })
}

/// Where the interpreter that answered for `name` under this `PATH` is remembered: asking
/// costs a process start, and through a version manager's shim (pyenv's are shell scripts)
/// ~70 ms, more than the rest of a cold `lamina invoke`.
fn memo_path(memos: &Path, name: RuntimeName) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    std::env::var_os("PATH").hash(&mut hasher);
    memos.join(format!("interpreter-{name}-{:016x}", hasher.finish()))
}

/// The executable's identity as the memo checks it: a rebuilt or replaced interpreter at the
/// same path is asked again.
fn stamp(executable: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(executable).ok()?;
    Some(format!(
        "{} {} {}",
        meta.ino(),
        meta.size(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    ))
}

fn remembered(memo: &Path, name: RuntimeName) -> Option<Interpreter> {
    let text = std::fs::read_to_string(memo).ok()?;
    let mut lines = text.lines();
    let interpreter = Interpreter {
        executable: PathBuf::from(lines.next()?),
        prefix: PathBuf::from(lines.next()?),
        version: lines.next()?.to_owned(),
    };
    (stamp(&interpreter.executable)? == lines.next()? && interpreter.matches(name))
        .then_some(interpreter)
}

fn remember(memo: &Path, interpreter: &Interpreter) {
    let Some(stamp) = stamp(&interpreter.executable) else {
        return;
    };
    let text = format!(
        "{}\n{}\n{}\n{stamp}\n",
        interpreter.executable.display(),
        interpreter.prefix.display(),
        interpreter.version
    );
    let tmp = memo.with_extension(format!("tmp{}", std::process::id()));
    // Best effort: without the memo the next start asks again.
    let _ = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, memo));
}

/// The interpreter for `name`: the first found of its version; with `accept_host`, else the
/// first found at all (with a warning). An answer of the right version is remembered in
/// `memos` (the cache's index) for the same `PATH`.
pub fn find(
    name: RuntimeName,
    accept_host: bool,
    memos: Option<&Path>,
) -> Result<Interpreter, ManagedError> {
    let memo = memos.map(|dir| memo_path(dir, name));
    if let Some(found) = memo.as_deref().and_then(|m| remembered(m, name)) {
        return Ok(found);
    }
    let found = find_asking(name, accept_host)?;
    if let Some(memo) = memo.filter(|_| found.matches(name)) {
        remember(&memo, &found);
    }
    Ok(found)
}

fn find_asking(name: RuntimeName, accept_host: bool) -> Result<Interpreter, ManagedError> {
    let commands = commands(name);
    let mut found: Vec<Interpreter> = Vec::new();
    for command in &commands {
        let Some(interpreter) = probe(command, name) else {
            continue;
        };
        if interpreter.matches(name) {
            return placeable(name, interpreter);
        }
        if !found.contains(&interpreter) {
            found.push(interpreter);
        }
    }
    let Some(first) = found.first() else {
        return Err(ManagedError::NoInterpreter {
            runtime: name,
            language: name.language(),
            tried: commands.join(", "),
        });
    };
    if accept_host {
        tracing::warn!(
            "runtime {name}: running with {} (--accept-host-runtime); it is not the {} that \
             Lambda runs",
            first.describe(name),
            name.language()
        );
        return placeable(name, first.clone());
    }
    Err(ManagedError::VersionMismatch {
        runtime: name,
        language: name.language(),
        found: found
            .iter()
            .map(|i| i.describe(name))
            .collect::<Vec<_>>()
            .join(" and "),
        command: commands[0].clone(),
    })
}

/// Checks that the jail can show the interpreter: in `/usr`, or inside its own prefix (which
/// becomes `/var/lang`).
fn placeable(name: RuntimeName, interpreter: Interpreter) -> Result<Interpreter, ManagedError> {
    if interpreter.under_usr() || interpreter.executable.starts_with(&interpreter.prefix) {
        return Ok(interpreter);
    }
    Err(ManagedError::Unplaceable {
        runtime: name,
        reason: format!(
            "lives outside its installation {} (and outside /usr), so the jail cannot show \
             it at /var/lang",
            interpreter.prefix.display()
        ),
        executable: interpreter.executable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_python_reports_itself_and_a_wrong_version_is_named() {
        let found = probe("python3", RuntimeName::Python { minor: 0 }).expect("python3 runs");
        assert!(found.executable.is_absolute() && found.executable.exists());
        assert!(found.prefix.is_dir(), "{found:?}");
        assert_eq!(found.major(), 3, "{found:?}");
        let wrong = RuntimeName::Python { minor: 99 };
        let err = find(wrong, false, None).unwrap_err().to_string();
        assert!(
            err.contains("python3.99")
                && err.contains("Python 3.99")
                && err.contains(&found.version)
                && err.contains("--accept-host-runtime"),
            "{err}"
        );
        let accepted = find(wrong, true, None).unwrap();
        assert_eq!(accepted.major(), 3);
    }

    #[test]
    fn an_answer_is_remembered_and_checked_against_the_executable() {
        let memos = tempfile::tempdir().unwrap();
        let host = probe("python3", RuntimeName::Python { minor: 0 }).unwrap();
        let name = RuntimeName::Python {
            minor: host.minor(),
        };
        let found = find(name, false, Some(memos.path())).unwrap();
        assert!(found.matches(name));
        let memo = memo_path(memos.path(), name);
        assert_eq!(remembered(&memo, name).as_ref(), Some(&found));
        // A memo naming an executable that changed is not believed.
        let text = std::fs::read_to_string(&memo).unwrap();
        let stale = text.replace(&stamp(&found.executable).unwrap(), "1 2 3");
        std::fs::write(&memo, stale).unwrap();
        assert_eq!(remembered(&memo, name), None);
        // Nor one for another version.
        std::fs::write(&memo, text).unwrap();
        let other = RuntimeName::Python {
            minor: host.minor() + 1,
        };
        assert_eq!(remembered(&memo, other), None);
    }
}
