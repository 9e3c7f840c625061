//! `lamina init [DIR]`: a new project that `lamina serve` serves and `lamina invoke` runs as
//! soon as it is written (after `cargo build --release` for Rust): a SAM template with one
//! function, `HelloFunction`, routed from `GET /hello`; its handler in the chosen runtime; a
//! sample HTTP API event for that route; and a README naming the commands. The files
//! themselves are in [`project`]. A directory that already holds anything is refused, and no
//! file is ever overwritten.

mod project;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;

use project::{Kind, Project};

/// Arguments of `lamina init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to create; it must be missing or empty [default: the current directory]
    pub dir: Option<PathBuf>,
    /// The runtime: python3.N, nodejsN.x, provided.al2023 or rust; `python` and `node` take
    /// the host's version [default: python3.N of the host's python3, else python3.12]
    #[arg(long, value_name = "RUNTIME")]
    pub runtime: Option<String>,
    /// The project's name: the template's Description and the Rust package's name [default:
    /// the directory's name]
    #[arg(long)]
    pub name: Option<String>,
}

/// The Python written when the host has no `python3` to take the version of (a guess either
/// way; this is the version `--help` and lamina's messages use as the example).
const FALLBACK_PYTHON_MINOR: u32 = 12;
/// The Node.js written when the host has no `node` (likewise).
const FALLBACK_NODE_MAJOR: u32 = 20;

/// Runs `lamina init`.
pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let kind = choose_runtime(args.runtime.as_deref(), host_python_minor, host_node_major)?;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("reading the current directory")?,
    };
    refuse_if_occupied(&dir)?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&dir)?,
    };
    let project = Project::new(kind, &name)?;
    // The event is built before anything is written, so that a failure leaves no half project.
    let event = project.event()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for file in project.files(&event) {
        write_new(&dir, file.path, &file.text, file.executable)?;
        written.push(file.path);
    }
    report(&dir, args.dir.is_some(), &project, &written)?;
    warn_if_host_lacks(kind);
    Ok(ExitCode::SUCCESS)
}

/// Warns when the host has no interpreter for the template's managed runtime (an explicit
/// `--runtime python3.12` on a host with 3.11), by the very check `lamina serve` makes, so
/// that the warning says what serve would. The project is written as asked all the same: it
/// may be meant for Lambda, or for another machine.
fn warn_if_host_lacks(kind: Kind) {
    let Some(name) = kind.managed() else {
        return;
    };
    if let Err(e) = crate::managed::interpreter::find(name, false, None) {
        eprintln!("lamina: warning: {e}");
    }
}

/// The runtime `given` asks for (`None`: the default), with the host's versions asked for
/// only when a shorthand or the default needs them.
fn choose_runtime(
    given: Option<&str>,
    python_minor: impl FnOnce() -> Option<u32>,
    node_major: impl FnOnce() -> Option<u32>,
) -> anyhow::Result<Kind> {
    let python = || Kind::Python {
        minor: python_minor().unwrap_or(FALLBACK_PYTHON_MINOR),
    };
    let Some(given) = given else {
        return Ok(python());
    };
    let kind = match given {
        "python" | "python3" => python(),
        "node" | "nodejs" => Kind::Node {
            major: node_major().unwrap_or(FALLBACK_NODE_MAJOR),
        },
        "rust" => Kind::Rust,
        "provided" | "provided.al2023" => Kind::Provided { al2: false },
        "provided.al2" => Kind::Provided { al2: true },
        other => match other.parse::<crate::managed::RuntimeName>() {
            Ok(crate::managed::RuntimeName::Python { minor }) => Kind::Python { minor },
            Ok(crate::managed::RuntimeName::Node { major }) => Kind::Node { major },
            _ => bail!(
                "--runtime {other:?}: expected python3.N (python3.12), nodejsN.x (nodejs20.x), \
                 provided.al2023, rust, or python, node, provided"
            ),
        },
    };
    Ok(kind)
}

/// The minor version of the host's `python3`, if it runs.
fn host_python_minor() -> Option<u32> {
    // -I: the caller's PYTHON* variables cannot change what is printed.
    ask(
        "python3",
        &["-I", "-c", "import sys; print(sys.version_info[1])"],
    )
}

/// The major version of the host's `node`, if it runs.
fn host_node_major() -> Option<u32> {
    ask("node", &["-p", "process.versions.node.split('.')[0]"])
}

/// What `command args` prints, as a number; `None` when it does not run or says something
/// else (a version manager's shim with no version behind it fails, and then the fallback is
/// as good a guess as any).
fn ask(command: &str, args: &[&str]) -> Option<u32> {
    let out = Command::new(command)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// Refuses a `dir` that is not a directory or holds anything at all: `lamina init` makes a new
/// project and must never mix its files into someone's own, nor overwrite one.
fn refuse_if_occupied(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: lamina init writes a new project into a missing or empty \
                     directory and overwrites nothing",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if dir.exists() && !dir.is_dir() => {
            Err(e).with_context(|| format!("{} exists and is not a directory", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// The project's name when `--name` is not given: the directory's own name.
fn default_name(dir: &Path) -> anyhow::Result<String> {
    // `.` and `..` have no name of their own until resolved (an existing directory) or made
    // absolute (a new one).
    let resolved = match dir.canonicalize() {
        Ok(path) => path,
        Err(_) => std::path::absolute(dir)
            .with_context(|| format!("making {} absolute", dir.display()))?,
    };
    Ok(resolved
        .file_name()
        .map_or_else(|| "hello".to_owned(), |n| n.to_string_lossy().into_owned()))
}

/// Writes `text` to `dir/path`, creating its parents; `create_new`, so that a file appearing
/// since the emptiness check is refused rather than overwritten.
fn write_new(dir: &Path, path: &str, text: &str, executable: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let full = dir.join(path);
    if let Some(parent) = full.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mode = if executable { 0o755 } else { 0o644 };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&full)
        .with_context(|| format!("creating {}", full.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", full.display()))?;
    // The process's umask may have taken bits from `mode`; a bootstrap must be executable.
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("making {} executable", full.display()))?;
    }
    Ok(())
}

/// Says what was written and what to run next.
fn report(dir: &Path, named: bool, project: &Project, written: &[&str]) -> anyhow::Result<()> {
    let mut out = String::new();
    out.push_str(&format!(
        "Created {} ({}) in {}:\n",
        project.name(),
        project.kind(),
        dir.display()
    ));
    for path in written {
        out.push_str(&format!("  {path}\n"));
    }
    out.push_str("\nNext:\n");
    if named {
        out.push_str(&format!("  cd {}\n", dir.display()));
    }
    for (command, comment) in project.next_commands() {
        out.push_str(&format!("  {command:<54}# {comment}\n"));
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(given: Option<&str>) -> String {
        choose_runtime(given, || Some(11), || Some(22))
            .map(|k| k.to_string())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn the_runtime_defaults_to_the_hosts_versions_and_takes_an_explicit_one_as_written() {
        assert_eq!(choose(None), "python3.11");
        assert_eq!(choose(Some("python")), "python3.11");
        assert_eq!(choose(Some("python3.12")), "python3.12");
        assert_eq!(choose(Some("node")), "nodejs22.x");
        assert_eq!(choose(Some("nodejs")), "nodejs22.x");
        assert_eq!(choose(Some("nodejs18.x")), "nodejs18.x");
        assert_eq!(choose(Some("provided")), "provided.al2023");
        assert_eq!(choose(Some("provided.al2")), "provided.al2");
        assert_eq!(choose(Some("rust")), "rust");
        assert!(choose(Some("cobol")).contains("--runtime \"cobol\": expected python3.N"));
        // No host interpreter: the fallbacks.
        let kind = choose_runtime(None, || None, || None).unwrap();
        assert_eq!(kind.to_string(), "python3.12");
        let kind = choose_runtime(Some("node"), || None, || None).unwrap();
        assert_eq!(kind.to_string(), "nodejs20.x");
    }

    #[test]
    fn the_default_name_is_the_directorys() {
        assert_eq!(default_name(Path::new("/srv/my-app")).unwrap(), "my-app");
        assert_eq!(default_name(Path::new("/srv/my-app/")).unwrap(), "my-app");
        assert_eq!(default_name(Path::new("/")).unwrap(), "hello");
    }
}
