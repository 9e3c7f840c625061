//! Managed runtimes through `lamina invoke`, as a user runs it: Python and Node.js functions
//! with no bootstrap of their own, jailed, run by this host's interpreters and AWS's official
//! runtime interface clients (`awslambdaric`, `aws-lambda-ric`), which lamina installs into the
//! cache from the package registries on first use. (`lamina serve` with managed runtimes is in
//! `serve.rs`.)

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{lamina, lamina_in, text};

/// `lamina invoke ARGS` with the tests' cache.
fn invoke(args: &[&str]) -> Output {
    let argv: Vec<&str> = std::iter::once("invoke")
        .chain(args.iter().copied())
        .collect();
    lamina_in(Path::new("."), &argv)
}

/// The payload of a successful invocation, as JSON.
fn answer(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

fn write(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Zips `dir`'s files (no bootstrap in it: nothing needs a mode).
fn zipped(dir: &Path) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(out.path().join("function.zip")).unwrap();
    crate::shared::zip_dir(file, dir, "").flush().unwrap();
    out
}

/// A Python handler that reports what it sees of its environment, and imports a module a
/// layer may provide.
const PYTHON_APP: &str = r#"
import os, sys

def handler(event, context):
    try:
        import greeting
        greeting = greeting.TEXT
    except ImportError:
        greeting = None
    if event.get("fail"):
        raise ValueError("failed on purpose")
    return {
        "event": event,
        "python": "%d.%d" % sys.version_info[:2],
        "execution_env": os.environ.get("AWS_EXECUTION_ENV"),
        "task_root": os.environ.get("LAMBDA_TASK_ROOT"),
        "runtime_dir": os.environ.get("LAMBDA_RUNTIME_DIR"),
        "cwd": os.getcwd(),
        "task_files": sorted(os.listdir(os.environ["LAMBDA_TASK_ROOT"])),
        "uid": os.getuid(),
        "host_root_visible": os.path.exists("/root") or os.path.exists("/home"),
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "greeting": greeting,
    }
"#;

#[test]
fn python_runs_without_a_bootstrap_from_a_file_a_directory_and_a_zip() {
    // A lone file: the function sees it alone in /var/task.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", PYTHON_APP);
    let file = dir.path().join("app.py");
    let out = invoke(&[
        file.to_str().unwrap(),
        "--runtime",
        "python3.11",
        "--handler",
        "app.handler",
        "--payload",
        r#"{"n":1}"#,
    ]);
    let got = answer(&out);
    assert_eq!(got["event"], serde_json::json!({"n": 1}));
    assert_eq!(got["python"], "3.11");
    assert_eq!(got["execution_env"], "AWS_Lambda_python3.11");
    assert_eq!(got["task_root"], "/var/task");
    assert_eq!(got["runtime_dir"], "/var/runtime");
    assert_eq!(got["cwd"], "/var/task");
    assert_eq!(got["task_files"], serde_json::json!(["app.py"]));
    assert_ne!(got["uid"], 0, "the function is not root");
    assert_eq!(got["host_root_visible"], false, "it is jailed");
    assert_eq!(got["function_name"], "app");
    let stderr = text(&out.stderr);
    let request_id = got["request_id"].as_str().unwrap();
    assert!(
        stderr.contains(&format!("START RequestId: {request_id} Version: $LATEST"))
            && stderr.contains(&format!("REPORT RequestId: {request_id}")),
        "{stderr}"
    );

    // A directory with Lambda's default handler file, and a layer laid out as Lambda's
    // Python layers are (`python/`): the runtime finds both.
    let code = tempfile::tempdir().unwrap();
    write(
        code.path(),
        "lambda_function.py",
        &PYTHON_APP.replace("def handler", "def lambda_handler"),
    );
    let layer = tempfile::tempdir().unwrap();
    write(
        layer.path(),
        "python/greeting.py",
        "TEXT = 'from the layer'\n",
    );
    let got = answer(&invoke(&[
        code.path().to_str().unwrap(),
        "--runtime",
        "python3.11",
        "--layer",
        layer.path().to_str().unwrap(),
    ]));
    assert_eq!(got["greeting"], "from the layer");
    assert_eq!(got["task_files"], serde_json::json!(["lambda_function.py"]));

    // The same code as a .zip.
    let zip = zipped(code.path());
    let got = answer(&invoke(&[
        zip.path().join("function.zip").to_str().unwrap(),
        "--runtime",
        "python3.11",
        "--payload",
        r#"{"from":"zip"}"#,
    ]));
    assert_eq!(got["event"], serde_json::json!({"from": "zip"}));
    assert_eq!(got["greeting"], Value::Null);

    // Unjailed (`--sandbox process`) the paths are the host's, and it still runs.
    let got = answer(&invoke(&[
        code.path().to_str().unwrap(),
        "--runtime",
        "python3.11",
        "--sandbox",
        "process",
    ]));
    assert_eq!(got["python"], "3.11");
    assert_eq!(got["execution_env"], "AWS_Lambda_python3.11");
}

#[test]
fn a_python_handlers_exception_is_lambdas_error_payload() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", PYTHON_APP);
    let out = invoke(&[
        dir.path().to_str().unwrap(),
        "--runtime",
        "python3.11",
        "--handler",
        "app.handler",
        "--payload",
        r#"{"fail":true}"#,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["errorType"], "ValueError");
    assert_eq!(error["errorMessage"], "failed on purpose");
    // A handler that does not exist is the client's own error, reported by the runtime.
    let out = invoke(&[
        dir.path().to_str().unwrap(),
        "--runtime",
        "python3.11",
        "--handler",
        "app.missing",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["errorType"], "Runtime.HandlerNotFound", "{error}");
}

/// This host's Node.js major version (the tests run the runtime it can run).
fn node_major() -> u32 {
    let out = Command::new("node")
        .args(["-p", "process.versions.node"])
        .output()
        .expect("node runs");
    text(&out.stdout)
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

const NODE_APP: &str = r#"
import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
// CommonJS resolution, which follows NODE_PATH into a layer's nodejs/node_modules.
const require = createRequire(import.meta.url);
export const handler = async (event, context) => {
  if (event.fail) throw new TypeError("failed on purpose");
  let greeting = null;
  try { greeting = require("greeting"); } catch (e) {}
  return {
    event,
    node: process.versions.node.split(".")[0],
    execution_env: process.env.AWS_EXECUTION_ENV,
    task_files: readdirSync("/var/task").sort(),
    uid: process.getuid(),
    request_id: context.awsRequestId,
    greeting,
  };
};
"#;

#[test]
fn node_runs_without_a_bootstrap_from_a_directory_and_a_zip() {
    let major = node_major();
    let runtime = format!("nodejs{major}.x");
    let code = tempfile::tempdir().unwrap();
    write(code.path(), "index.mjs", NODE_APP);
    let layer = tempfile::tempdir().unwrap();
    write(
        layer.path(),
        "nodejs/node_modules/greeting/index.js",
        "module.exports = 'from the layer';\n",
    );
    let out = invoke(&[
        code.path().to_str().unwrap(),
        "--runtime",
        &runtime,
        "--layer",
        layer.path().to_str().unwrap(),
        "--payload",
        r#"{"n":2}"#,
    ]);
    let got = answer(&out);
    assert_eq!(got["event"], serde_json::json!({"n": 2}));
    assert_eq!(got["node"], major.to_string());
    assert_eq!(got["execution_env"], format!("AWS_Lambda_{runtime}"));
    assert_eq!(got["task_files"], serde_json::json!(["index.mjs"]));
    assert_eq!(got["greeting"], "from the layer");
    assert_ne!(got["uid"], 0);
    // Lambda's log lines, and nothing of the client's command-line wrapper.
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("Executing '"), "{stderr}");
    assert!(stderr.contains("REPORT RequestId: "), "{stderr}");

    let zip = zipped(code.path());
    let out = invoke(&[
        zip.path().join("function.zip").to_str().unwrap(),
        "--runtime",
        &runtime,
        "--payload",
        r#"{"fail":true}"#,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["errorType"], "TypeError", "{error}");
    assert_eq!(error["errorMessage"], "failed on purpose");
}

#[test]
fn a_version_this_host_lacks_is_named_with_the_way_on() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", PYTHON_APP);
    let host = Command::new("python3")
        .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        .output()
        .unwrap();
    let host = text(&host.stdout).trim().to_owned();
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            dir.path().to_str().unwrap().to_owned(),
            "--handler".into(),
            "app.handler".into(),
            "--runtime".into(),
            "python3.99".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let refused = invoke(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(refused.status.code(), Some(2));
    let stderr = text(&refused.stderr);
    for needed in [
        "runtime python3.99",
        "Python 3.99",
        &format!("Python {host}"),
        "--accept-host-runtime",
    ] {
        assert!(stderr.contains(needed), "{needed:?} not in: {stderr}");
    }
    assert!(refused.stdout.is_empty());
    // Accepted: it runs with the host's Python, and says so.
    let accepted = invoke(
        &args(&["--accept-host-runtime"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let got = answer(&accepted);
    assert_eq!(got["execution_env"], "AWS_Lambda_python3.99");
    let stderr = text(&accepted.stderr);
    assert!(
        stderr.contains("--accept-host-runtime") && stderr.contains(&host),
        "{stderr}"
    );
    // A runtime lamina does not run is named as such.
    let out = invoke(&[dir.path().to_str().unwrap(), "--runtime", "java21"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("java21") && stderr.contains("python3.N"),
        "{stderr}"
    );
}

#[test]
fn the_runtime_client_installs_once_from_a_local_package_without_the_registry() {
    // The wheels of awslambdaric and its dependencies, downloaded beforehand as a user with no
    // registry at hand would bring them.
    let wheels = tempfile::tempdir().unwrap();
    let download = Command::new("python3.11")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(wheels.path())
        .arg("awslambdaric==4.2.2")
        .output()
        .unwrap();
    assert!(download.status.success(), "{}", text(&download.stderr));
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", PYTHON_APP);
    // A cache of its own, empty: the client must be installed now, from the wheels only
    // (pip is told --no-index, so the registry is not asked).
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(lamina())
            .arg("invoke")
            .arg(dir.path())
            .args(["--runtime", "python3.11", "--handler", "app.handler"])
            .arg("--runtime-package")
            .arg(wheels.path())
            .env("LAMINA_CACHE_DIR", cache.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(answer(&first)["python"], "3.11");
    let stderr = text(&first.stderr);
    assert!(
        stderr.contains(&format!(
            "lamina: installing awslambdaric for python3.11, from {} into the cache (once)",
            wheels.path().display()
        )) && stderr.contains("lamina: awslambdaric installed in "),
        "{stderr}"
    );
    // Once: the second run finds it.
    let second = run();
    assert_eq!(answer(&second)["python"], "3.11");
    assert!(
        !text(&second.stderr).contains("installing"),
        "{}",
        text(&second.stderr)
    );
    // `lamina cache ls` shows where it came from.
    let ls = Command::new(lamina())
        .args(["cache", "ls"])
        .env("LAMINA_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert!(
        text(&ls.stdout).contains("awslambdaric for python3.11, from"),
        "{}",
        text(&ls.stdout)
    );
    // A package that is not there is named, with the way on.
    let missing = Command::new(lamina())
        .arg("invoke")
        .arg(dir.path())
        .args(["--runtime", "python3.11", "--handler", "app.handler"])
        .args(["--runtime-package", "/nonexistent/wheels"])
        .env("LAMINA_CACHE_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("/nonexistent/wheels"),
        "{}",
        text(&missing.stderr)
    );
}
