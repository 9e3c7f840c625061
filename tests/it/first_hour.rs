//! What a new user meets in their first hour, message by message: usage errors are one line
//! with nothing behind them, a bootstrap that is not executable is said so with the fix, a
//! missing layer is named as a layer, ranges are quoted, counts read as English, and
//! `--listen` takes a host name.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use crate::support::{function_from_files, function_with, lamina, program, test_cache};

fn lamina_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(lamina())
        .current_dir(dir)
        .args(args)
        .env("LAMINA_CACHE_DIR", test_cache())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A usage error is one line on stderr and exit 2, checked before any sandbox is built; an
/// invocation that fails early exits without an internal warning.
#[test]
fn usage_errors_are_one_line_and_no_warning_follows_an_orderly_exit() {
    let probe = function_with(&program("probe"));
    let dir = probe.path().to_str().unwrap();
    for (flags, says) in [
        (
            &["--memory", "99999"][..],
            "memory: 99999 MB is outside Lambda's 128–10240 MB",
        ),
        (
            &["--timeout", "0"][..],
            "timeout: 0 s is outside Lambda's 1–900 s",
        ),
        (
            &["--env", "NOEQUALS"][..],
            "--env \"NOEQUALS\": expected KEY=VALUE",
        ),
        (&["--env", "=x"][..], "--env \"=x\": expected KEY=VALUE"),
    ] {
        let mut args = vec!["invoke", dir];
        args.extend(flags);
        let out = lamina_in(probe.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {out:?}");
        let text = stderr(&out);
        assert_eq!(text, format!("lamina: error: {says}\n"), "{flags:?}");
    }
    // No bootstrap at all: the invocation fails (exit 1) with Lambda's error and the log
    // lines, and nothing of lamina's own.
    let empty = tempfile::tempdir().unwrap();
    let out = lamina_in(empty.path(), &["invoke", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stderr(&out);
    assert!(!text.contains("WARN"), "{text}");
    assert!(!text.contains("lamina_runtime"), "{text}");
}

/// A bootstrap that is there but not executable, in a directory or a zip, is
/// `Runtime.InvalidEntrypoint` saying so and how to fix it; `lamina layers check` warns of it.
#[test]
fn a_bootstrap_that_is_not_executable_is_said_so_with_the_fix() {
    let code = function_from_files(&[("bootstrap", "#!/bin/sh\necho hi\n", false)]);
    let zip_dir = tempfile::tempdir().unwrap();
    let archive = zip_dir.path().join("fn.zip");
    crate::shared::zip_dir(std::fs::File::create(&archive).unwrap(), code.path(), "");
    for function in [code.path(), archive.as_path()] {
        let out = lamina_in(
            zip_dir.path(),
            &["invoke", function.to_str().unwrap(), "--sandbox", "process"],
        );
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(error["errorType"], "Runtime.InvalidEntrypoint");
        let message = error["errorMessage"].as_str().unwrap();
        assert!(
            message.contains(
                "fork/exec /var/task/bootstrap: permission denied: the bootstrap is not executable"
            ),
            "{message}"
        );
        assert!(message.contains("chmod +x bootstrap"), "{message}");
        assert!(!message.contains("Couldn't find"), "{message}");
    }
    let out = lamina_in(
        zip_dir.path(),
        &["layers", "check", archive.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning is not a problem: {out:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("(1 entry, 18 bytes unzipped)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{}: warning: bootstrap is not executable",
            archive.display()
        )),
        "{stdout}"
    );
    // An executable one draws no warning.
    std::fs::set_permissions(
        code.path().join("bootstrap"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    crate::shared::zip_dir(std::fs::File::create(&archive).unwrap(), code.path(), "");
    let out = lamina_in(
        zip_dir.path(),
        &["layers", "check", archive.to_str().unwrap()],
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("warning"),
        "{out:?}"
    );
}

/// A missing layer is named as a layer, not as the code.
#[test]
fn a_missing_layer_is_named_as_the_layer() {
    let probe = function_with(&program("probe"));
    let out = lamina_in(
        probe.path(),
        &[
            "invoke",
            probe.path().to_str().unwrap(),
            "--layer",
            "missing.zip",
            "--sandbox",
            "process",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        stderr(&out),
        "lamina: error: layer missing.zip: No such file or directory (os error 2)\n"
    );
}

/// A number outside a key's range quotes the range, whatever the number.
#[test]
fn range_errors_in_lamina_toml_quote_the_range() {
    let probe = function_with(&program("probe"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        format!(
            "[functions.a]\ncode = {:?}\nconcurrency = -1\nmemory = 99999999999\n\
             max_retry_attempts = -3\n",
            probe.path()
        ),
    )
    .unwrap();
    let out = lamina_in(dir.path(), &["serve"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = stderr(&out);
    for line in [
        "lamina.toml: functions.a.concurrency: -1 is outside 1–1000",
        "lamina.toml: functions.a.memory: 99999999999 is outside Lambda's 128–10240 MB",
        "lamina.toml: functions.a.max_retry_attempts: -3 is outside Lambda's 0–2",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
}

/// `--listen` takes a host name, and one route is "1 route".
#[test]
fn serve_listens_on_a_host_name_and_counts_in_english() {
    let probe = function_with(&program("probe"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        format!(
            "[functions.a]\ncode = {:?}\n[[routes]]\npath = \"/a\"\nfunction = \"a\"\n",
            probe.path()
        ),
    )
    .unwrap();
    let mut child = Command::new(lamina())
        .current_dir(dir.path())
        .args(["serve", "--sandbox", "process", "--listen", "localhost:0"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("LAMINA_CACHE_DIR", test_cache())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serving = lines
        .find_map(|l| l.ok().filter(|l| l.starts_with("lamina: serving")))
        .expect("a serving line");
    // SAFETY: kill(2) on our own child, which we wait for below.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    assert!(
        serving.contains(" on http://127.0.0.1:") || serving.contains(" on http://[::1]:"),
        "{serving}"
    );
    assert!(serving.contains("; 1 route;"), "{serving}");
    // A malformed one names the key and the form.
    let out = lamina_in(dir.path(), &["serve", "--listen", "localhost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("\"localhost\" is not an address such as 127.0.0.1:9000 or localhost:9000"),
        "{}",
        stderr(&out)
    );
}

/// `lamina cache ls` names what each entry came from, its size with hard links counted once,
/// and its last use; `lamina cache prune --older-than` removes only what was not used since.
#[test]
fn the_cache_listing_names_origins_and_prunes_by_age() {
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let code = function_with(&program("probe"));
    let function = work.path().join("fn.zip");
    crate::shared::zip_dir(std::fs::File::create(&function).unwrap(), code.path(), "");
    let layer_files = function_from_files(&[("data.txt", &"x".repeat(5000), false)]);
    let layer = work.path().join("layer.zip");
    crate::shared::zip_dir(
        std::fs::File::create(&layer).unwrap(),
        layer_files.path(),
        "",
    );
    let run = |args: &[&str]| {
        let out = Command::new(lamina())
            .args(args)
            .arg("--cache-dir")
            .arg(cache.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "invoke",
        function.to_str().unwrap(),
        "--layer",
        layer.to_str().unwrap(),
        "--sandbox",
        "process",
        "--payload",
        r#"{"action":"echo"}"#,
    ]);
    let listing = run(&["cache", "ls"]);
    let line_of = |text: &str, needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} in\n{text}"))
            .to_owned()
    };
    assert!(listing.starts_with("     SIZE  LAST USED"), "{listing}");
    let layer_line = line_of(&listing, &format!("  {}", layer.display()));
    assert!(layer_line.contains("4.9 KiB"), "{layer_line}");
    line_of(&listing, &format!("  {}", function.display()));
    // The merged /opt is hard links to the layer's tree: it adds nothing.
    let opt_line = line_of(&listing, "/opt of ");
    assert!(opt_line.trim_start().starts_with("0 B"), "{opt_line}");
    assert!(
        listing.contains("(3 entries, each file counted once)"),
        "{listing}"
    );

    // The function's archive was last used ten days ago; the layer today.
    let index = cache.path().join("index");
    let origin = std::fs::read_dir(&index)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t == function.display().to_string()))
        .expect("the function archive's origin is recorded");
    let ten_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&origin)
        .unwrap()
        .set_modified(ten_days_ago)
        .unwrap();
    let pruned = run(&["cache", "prune", "--older-than", "7d"]);
    assert!(pruned.contains(&function.display().to_string()), "{pruned}");
    assert!(
        pruned.contains("removed 1 cached tree not used for 7days"),
        "{pruned}"
    );
    let listing = run(&["cache", "ls"]);
    assert!(
        !listing.contains(&function.display().to_string()),
        "{listing}"
    );
    line_of(&listing, &format!("  {}", layer.display()));
}

/// `--help` speaks to users and shows every default.
#[test]
fn help_shows_every_default_in_plain_words() {
    let help = |args: &[&str]| {
        let out = Command::new(lamina()).args(args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    assert!(!top.contains("pools"), "{top}");
    assert!(
        top.contains("Runs AWS Lambda functions on your own machine"),
        "{top}"
    );
    let invoke = help(&["invoke", "--help"]);
    for shown in [
        "[default: 3]",
        "[default: 128]",
        "[default: 512]",
        "[default: 10, as on Lambda]",
        "[default: outbound]",
        "[default: per-invocation]",
        "[default: jail]",
        "not the host's loopback",
    ] {
        assert!(invoke.contains(shown), "{shown:?} in {invoke}");
    }
    let serve = help(&["serve", "--help"]);
    for shown in [
        "[default: 127.0.0.1:9000]",
        "[default: `network` in lamina.toml's [serve], else outbound]",
        "[default: ./lamina.toml, else ./template.yaml]",
    ] {
        assert!(serve.contains(shown), "{shown:?} in {serve}");
    }
}
