//! Installs a managed runtime's interface client into the cache, once per client version and
//! interpreter version (its native part is built for one): `trees/runtime-python3.12-awslambdaric-4.2.2`
//! by the interpreter's own pip, `trees/runtime-nodejs20-aws-lambda-ric-3.3.0` by npm (which
//! builds the client's native addon). One line on stderr says it is happening, since it takes
//! seconds (pip) to a minute (npm). Offline, a local package replaces the registry.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use lamina_layers::Cache;

use super::{AWS_LAMBDA_RIC, AWSLAMBDARIC, Interpreter, ManagedError, RuntimeName};

/// The client's tree for `name` run by `interpreter`, installed on first use.
pub fn ensure(
    cache: &Cache,
    name: RuntimeName,
    interpreter: &Interpreter,
    package: Option<&Path>,
) -> Result<std::path::PathBuf, ManagedError> {
    let (client, version) = match name {
        RuntimeName::Node { .. } => ("aws-lambda-ric", AWS_LAMBDA_RIC),
        _ => ("awslambdaric", AWSLAMBDARIC),
    };
    let language = match name {
        RuntimeName::Node { .. } => format!("nodejs{}", interpreter.major()),
        _ => format!("python3.{}", interpreter.minor()),
    };
    // A local package is its own entry: its digest, not the pinned version, names it.
    let source = match package {
        Some(p) => format!(
            "local-{}",
            match p.is_dir() {
                true => lamina_layers::dir_fingerprint(p).map_err(|e| {
                    lamina_layers::CacheError::Io {
                        path: p.to_owned(),
                        source: e,
                    }
                })?,
                false => cache.digest(p)?,
            }
            .get(..16)
            .unwrap_or_default()
        ),
        None => version.to_owned(),
    };
    let tree_name = format!("runtime-{language}-{client}-{source}");
    let origin = match package {
        Some(p) => format!("{client} for {language}, from {}", p.display()),
        None => format!("{client} {version} for {language}, from the package registry"),
    };
    cache.built_tree(&tree_name, &origin, |staged| {
        let started = Instant::now();
        eprintln!("lamina: installing {origin} into the cache (once) …");
        match name {
            RuntimeName::Node { .. } => npm(name, interpreter, staged, package),
            _ => pip(name, interpreter, staged, package),
        }?;
        // The sandbox's user reads the tree: the staging directory is its creator's alone.
        let _ =
            std::fs::set_permissions(staged, std::os::unix::fs::PermissionsExt::from_mode(0o755));
        eprintln!(
            "lamina: {client} installed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

/// `python -m pip install --target STAGED awslambdaric==PIN` with the runtime's own
/// interpreter, so that the client's compiled part is built for it.
fn pip(
    name: RuntimeName,
    interpreter: &Interpreter,
    staged: &Path,
    package: Option<&Path>,
) -> Result<(), ManagedError> {
    let mut cmd = Command::new(&interpreter.executable);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--target",
    ])
    .arg(staged);
    match package {
        // A directory of wheels (the client and its dependencies), or one wheel beside them.
        Some(p) if p.is_dir() => {
            cmd.args(["--no-index", "--find-links"])
                .arg(p)
                .arg(format!("awslambdaric=={AWSLAMBDARIC}"));
        }
        Some(p) => {
            cmd.args(["--no-index", "--find-links"])
                .arg(p.parent().unwrap_or(Path::new(".")))
                .arg(p);
        }
        None => {
            cmd.arg(format!("awslambdaric=={AWSLAMBDARIC}"));
        }
    }
    run(name, cmd, "awslambdaric", || {
        format!(
            "pip needs the package registry (PyPI) or a local package: give a wheel, or a \
             directory of wheels with awslambdaric {AWSLAMBDARIC} and its dependencies (pip \
             download awslambdaric=={AWSLAMBDARIC}), as --runtime-package or runtime_package \
             in lamina.toml; {} needs pip ({} -m ensurepip)",
            interpreter.executable.display(),
            interpreter.executable.display()
        )
    })
}

/// `npm install --prefix STAGED aws-lambda-ric@PIN` with the runtime's own Node.js first on
/// `PATH` (the client's addon is built against it). The addon's bundled build sources are
/// removed afterwards (150 MB the runtime never reads).
fn npm(
    name: RuntimeName,
    interpreter: &Interpreter,
    staged: &Path,
    package: Option<&Path>,
) -> Result<(), ManagedError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(interpreter.bin_dir().to_owned()).chain(std::env::split_paths(&path)),
    )
    .unwrap_or(path);
    let mut cmd = Command::new("npm");
    cmd.env("PATH", path)
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--omit=dev",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(staged);
    match package {
        Some(p) => cmd.arg(p),
        None => cmd.arg(format!("aws-lambda-ric@{AWS_LAMBDA_RIC}")),
    };
    run(name, cmd, "aws-lambda-ric", || {
        "aws-lambda-ric builds a native addon on install: it needs npm, cmake, make, a C++ \
         compiler, autoconf, automake and libtool (Debian: apt-get install npm cmake make g++ \
         autoconf automake libtool), and the npm registry or a local tarball (npm pack \
         aws-lambda-ric) given as --runtime-package or runtime_package in lamina.toml"
            .to_owned()
    })?;
    let ric = staged.join("node_modules/aws-lambda-ric");
    let _ = std::fs::remove_dir_all(ric.join("deps"));
    let addon = ric.join("dist/rapid-client.node");
    if !addon.is_file() {
        return Err(ManagedError::Install {
            runtime: name,
            client: format!("aws-lambda-ric {AWS_LAMBDA_RIC}"),
            command: "npm install".into(),
            output: format!("npm finished, but {} is missing", addon.display()),
            hint: "npm did not run the package's install scripts (check npm's ignore-scripts \
                   setting)"
                .into(),
        });
    }
    Ok(())
}

/// Runs an installer; a failure carries the end of its output and `hint`.
fn run(
    name: RuntimeName,
    mut cmd: Command,
    client: &str,
    hint: impl FnOnce() -> String,
) -> Result<(), ManagedError> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let fail = |output: String, hint: String| ManagedError::Install {
        runtime: name,
        client: client.to_owned(),
        command: shown.clone(),
        output,
        hint,
    };
    let out = match cmd.stdin(std::process::Stdio::null()).output() {
        Ok(out) => out,
        Err(e) => return Err(fail(e.to_string(), hint())),
    };
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    Err(fail(tail, hint()))
}
