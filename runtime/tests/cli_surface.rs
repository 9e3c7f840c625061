//! The `lamina` binary's surface: version, help, and usage errors exiting 2. (Because this
//! package has an integration test, `cargo test --workspace` builds the binary before any test
//! runs; the end-to-end CLI tests in `tests/it/cli.rs` rely on that.)

use std::process::Command;

fn lamina(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lamina"))
        .args(args)
        .output()
        .expect("run lamina")
}

#[test]
fn version_and_help() {
    let out = lamina(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("lamina {}", env!("CARGO_PKG_VERSION"))
    );
    let out = lamina(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("invoke"));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["invoke"][..],
        &["no-such-verb"][..],
        &["invoke", "x", "--repeat", "0"][..],
    ] {
        let out = lamina(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
}
