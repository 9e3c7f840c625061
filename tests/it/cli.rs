//! `lamina invoke` as a user runs it: where the event comes from, what goes to stdout and
//! stderr, and the exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{lamina, program};

fn probe_dir() -> tempfile::TempDir {
    crate::support::function_with(&program("probe"))
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(lamina())
        .args(args)
        .env("LAMINA_CACHE_DIR", crate::support::test_cache())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

#[test]
fn success_prints_exactly_the_payload_and_exits_0() {
    let dir = probe_dir();
    let out = run(
        &[
            "invoke",
            dir.path().to_str().unwrap(),
            "--payload",
            r#"{"action":"echo","x":1}"#,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        out.stdout, br#"{"action":"echo","x":1}"#,
        "exactly the bytes the function returned"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("START RequestId: ") && l.ends_with(" Version: $LATEST"))
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("REPORT RequestId: ") && l.contains("\tInit Duration: "))
    );
}

#[test]
fn event_from_a_file_and_from_stdin() {
    let dir = probe_dir();
    let event = dir.path().join("event.json");
    std::fs::write(&event, r#"{"action":"echo","from":"file"}"#).unwrap();
    let out = run(
        &[
            "invoke",
            dir.path().to_str().unwrap(),
            "--event",
            event.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.stdout, br#"{"action":"echo","from":"file"}"#);
    let out = run(
        &["invoke", dir.path().to_str().unwrap(), "--event", "-"],
        Some(br#"{"action":"echo","from":"stdin"}"#),
    );
    assert_eq!(out.stdout, br#"{"action":"echo","from":"stdin"}"#);
}

#[test]
fn repeat_uses_one_warm_environment_and_prints_a_line_each() {
    let dir = probe_dir();
    let out = run(
        &[
            "invoke",
            dir.path().to_str().unwrap(),
            "--repeat",
            "3",
            "--env",
            "GREETING=hi",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let reports: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 3);
    assert!(
        reports
            .iter()
            .all(|r| r["pid"] == reports[0]["pid"] && r["env"]["GREETING"] == "hi")
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.matches("Init Duration").count(), 1);
}

#[test]
fn an_invocation_error_exits_1_with_the_error_json_on_stdout() {
    let dir = probe_dir();
    let out = run(
        &[
            "invoke",
            dir.path().to_str().unwrap(),
            "--payload",
            r#"{"action":"exit","code":4}"#,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["errorType"], "Runtime.ExitError");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Runtime exited with error: exit status 4")
    );
}

#[test]
fn usage_and_configuration_errors_exit_2_naming_the_problem() {
    let dir = probe_dir();
    let d = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["invoke", "/no/such/function"], "/no/such/function"),
        (&["invoke", d, "--payload", "{not json"], "--payload"),
        (&["invoke", d, "--memory", "100"], "memory"),
        (&["invoke", d, "--timeout", "0"], "timeout"),
        (&["invoke", d, "--env", "NOEQUALS"], "NOEQUALS"),
        (
            &["invoke", d, "--env", "AWS_LAMBDA_RUNTIME_API=x"],
            "AWS_LAMBDA_RUNTIME_API",
        ),
        (
            &["invoke", d, "--event", "/no/such/event.json"],
            "/no/such/event.json",
        ),
        (&["invoke", d, "--bogus-flag"], "--bogus-flag"),
    ];
    for (args, named) in cases {
        let out = run(args, None);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} should name {named}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_zip_package_is_extracted_and_keeps_bootstrap_executable() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("fn.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let exec = zip::write::SimpleFileOptions::default().unix_permissions(0o4755);
    zip.start_file("bootstrap", exec).unwrap();
    zip.write_all(&std::fs::read(program("probe")).unwrap())
        .unwrap();
    zip.start_file("data/readme.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"hello").unwrap();
    zip.finish().unwrap();
    // Unjailed, LAMBDA_TASK_ROOT is the host path, which shows where the code came from.
    let out = run(
        &["invoke", zip_path.to_str().unwrap(), "--sandbox", "process"],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["env"]["AWS_LAMBDA_FUNCTION_NAME"], "fn",
        "named after the zip"
    );
    let task_root = std::path::PathBuf::from(report["env"]["LAMBDA_TASK_ROOT"].as_str().unwrap());
    assert!(
        task_root.starts_with(crate::support::test_cache().join("trees")),
        "served from the cache"
    );
    let meta = std::fs::metadata(task_root.join("bootstrap")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
    assert_eq!(mode & 0o7777, 0o555, "setuid dropped, executable kept");
}

#[test]
fn a_zip_escaping_its_root_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("evil.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    zip.start_file("../escaped", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"x").unwrap();
    zip.finish().unwrap();
    // Unjailed, LAMBDA_TASK_ROOT is the host path, which shows where the code came from.
    let out = run(
        &["invoke", zip_path.to_str().unwrap(), "--sandbox", "process"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("evil.zip") && stderr.contains("../escaped"),
        "{stderr}"
    );
    assert!(!dir.path().parent().unwrap().join("escaped").exists());
}

/// The jail's default network is `outbound` (slirp4netns); on a host without slirp4netns the
/// default falls back to `none`, saying what is missing, while an explicit `--network
/// outbound` is refused with the same words.
#[test]
fn outbound_is_the_default_network_and_a_missing_slirp4netns_is_named() {
    let dir = probe_dir();
    let path = dir.path().to_str().unwrap();
    let with_path = |search: &str, extra: &[&str]| {
        Command::new(lamina())
            .args(["invoke", "--payload", r#"{"action":"jail"}"#])
            .args(extra)
            .arg(path)
            .env("PATH", search)
            .env("LAMINA_CACHE_DIR", crate::support::test_cache())
            .output()
            .unwrap()
    };
    let system_path = std::env::var("PATH").unwrap();
    let out = with_path(&system_path, &[]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("no network"), "{stderr}");
    // A directory without slirp4netns on PATH.
    let empty = tempfile::tempdir().unwrap();
    let out = with_path(empty.path().to_str().unwrap(), &[]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "lamina: functions get no network (--network none): network mode outbound needs \
             slirp4netns, which is not on PATH"
        ),
        "{stderr}"
    );
    let out = with_path(empty.path().to_str().unwrap(), &["--network", "outbound"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("network mode outbound needs slirp4netns")
            && stderr.contains("apt install slirp4netns"),
        "{stderr}"
    );
}

#[test]
fn the_jail_is_the_default_and_process_mode_warns() {
    let dir = probe_dir();
    let path = dir.path().to_str().unwrap();
    let out = run(&["invoke", path, "--payload", r#"{"action":"jail"}"#], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["uid"], "993", "jailed by default: {report}");
    assert_eq!(report["hostname"], "lamina");

    let out = run(
        &[
            "invoke",
            path,
            "--sandbox",
            "process",
            "--payload",
            r#"{"action":"jail"}"#,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["uid"], "0", "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("WARNING: --sandbox process: ") && stderr.contains("no isolation"),
        "{stderr}"
    );
}

/// On a host where the jail cannot run (here: as `nobody`, with no place for lamina's state:
/// no `XDG_RUNTIME_DIR`, and not root for `/run/lamina`), lamina says what is missing before
/// doing anything else.
#[test]
fn a_host_without_what_the_jail_needs_is_told_what_is_missing() {
    use std::os::unix::fs::PermissionsExt;
    // Copies an unprivileged user can execute (the build tree may not be reachable for them).
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(lamina(), bin.path().join("lamina")).unwrap();
    let dir = probe_dir();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin.path().join("lamina"))
        .args(["invoke", dir.path().to_str().unwrap()])
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the native jail cannot run on this host:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\n  - run directory: ") && stderr.contains("XDG_RUNTIME_DIR"),
        "{stderr}"
    );
    assert!(stderr.contains("--sandbox process"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// `lamina doctor` says what the host allows and which jail results: as root here, the root
/// jail with cgroup limits (exit 0); as an unprivileged user, the rootless jail (exit 0), or
/// what is missing (exit 1).
#[test]
fn doctor_shows_what_the_host_allows_and_the_resulting_jail() {
    use std::os::unix::fs::PermissionsExt;
    let out = Command::new(lamina()).arg("doctor").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "user                   root",
        "tmpfs                  supported",
        "run directory",
    ] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
    assert!(
        stdout.contains("jail                   available: root jail")
            && (stdout.contains("cgroup v1: memory, pids, cpu enforced")
                || stdout.contains("cgroup v2: memory, pids, cpu enforced")),
        "{stdout}"
    );
    // As an unprivileged user with a run directory of its own: the rootless jail, and WASM.
    let (uid, gid) = crate::rootless::test_user();
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let as_user = |xdg: bool| {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(lamina());
        command.arg("doctor").env_clear().uid(uid).gid(gid);
        if xdg {
            command.env("XDG_RUNTIME_DIR", home.path());
        }
        command.output().unwrap()
    };
    let out = as_user(true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for line in [
        format!("user                   uid {uid} (not root)"),
        "jail                   available: rootless jail (user, mount".into(),
        "memory by lamina's watchdog, processes by RLIMIT_NPROC".into(),
        "wasm                   available: wasmtime".into(),
    ] {
        assert!(stdout.contains(&line), "{line:?} in {stdout}");
    }
    // Without any place for its state, the jail cannot run, and doctor names why (exit 1).
    let out = as_user(false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("jail                   NOT available here:"),
        "{stdout}"
    );
    assert!(stdout.contains("- run directory: "), "{stdout}");
}
