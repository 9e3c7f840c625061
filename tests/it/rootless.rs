//! The jail's tests once more, rootless: this test binary runs its `sandbox_native` tests again
//! as an unprivileged user that the test creates (`lamina-rootless`), with a home, run
//! directory, cache and temporary directory of that user's own. There the jail is the rootless
//! one (a user namespace per sandbox, the watchdog and RLIMIT_NPROC for limits), and every
//! isolation probe must hold as it does under root. The official Python client runs rootless
//! too (`clients::python_awslambdaric_runs_jailed_from_layers`), and the Rust one.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// The user the rootless run is made as.
const USER: &str = "lamina-rootless";

/// The user's uid and gid, creating the user (a system user without a home or shell) if this
/// machine does not have it yet.
pub fn test_user() -> (u32, u32) {
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, USER])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
    };
    if id("-u").is_none() {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .expect("useradd runs");
        // Another test process may have made it meanwhile: only its absence is a failure.
        assert!(status.success() || id("-u").is_some(), "useradd {USER}");
    }
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

#[test]
fn the_jails_tests_pass_rootless() {
    use std::os::unix::process::CommandExt;
    let (uid, gid) = test_user();
    // Installed and built by root beforehand: the test user may read the target directory, not
    // write it (LAMINA_TESTS_PREBUILT).
    crate::support::python_ric();
    for target in ["wasm32-wasip1", "wasm32-wasip2"] {
        crate::support::wasm_guest(target);
    }
    let home = tempfile::tempdir().unwrap();
    // Only its user may enter it, as a real home; the tests' binaries are read from the target
    // directory, which others may read.
    for dir in ["run", "cache", "tmp"] {
        std::fs::create_dir(home.path().join(dir)).unwrap();
    }
    for entry in ["", "run", "cache", "tmp"] {
        let path = home.path().join(entry);
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let me = std::env::current_exe().unwrap();
    let mut command = Command::new(&me);
    command
        .args([
            "sandbox_native::",
            "clients::python_awslambdaric_runs_jailed_from_layers",
            "clients::rust_lambda_runtime_runs_jailed_as_a_layer",
            "extensions::a_shell_extension_gets_invoke_events_and_a_spindown_shutdown",
            "extensions::an_extension_that_crashes_mid_invoke_fails_it_with_extension_crash",
            "wasm::",
            "--test-threads",
            "1",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.path().join("run"))
        .env("TMPDIR", home.path().join("tmp"))
        .env("LAMINA_TESTS_CACHE", home.path().join("cache"))
        .env("LAMINA_TESTS_PREBUILT", "1")
        // Made by root (a veth pair), served by a thread of this process while the run lasts.
        .env(
            "LAMINA_TESTS_TEST_HOST",
            crate::support::test_host().to_string(),
        )
        .current_dir(home.path())
        .uid(uid)
        .gid(gid);
    for passed in [
        "LAMINA_TESTS_EMULATED",
        "CARGO_TARGET_DIR",
        "RUST_BACKTRACE",
    ] {
        if let Some(value) = std::env::var_os(passed) {
            command.env(passed, value);
        }
    }
    let output = command
        .output()
        .expect("the test binary runs as the test user");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the jail's tests failed rootless ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // Every test of the module ran (none filtered away by a typo or a missing binary).
    let passed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 12, "only {passed} tests ran rootless:\n{stdout}");
}
