//! The README's commands, as a new user runs them: on a fresh clone with an empty target
//! directory (nothing built before), in the order written. The first command must build
//! everything it needs by itself; the Python and WebAssembly tours must work after it, as
//! written. (`lamina serve`'s block is exercised by `serve.rs`; the AWS CLI is not installed
//! here, and boto3 stands in for it there.)
//!
//! This is the suite's one full release build (several minutes on two cores); it runs at the
//! lowest CPU priority so that the tests beside it keep their pace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::repo_root;

/// The fenced code blocks of the README, in order.
fn code_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start().starts_with("```")) {
            (None, true) => current = Some(String::new()),
            (Some(block), true) => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), false) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, false) => {}
        }
    }
    blocks
}

/// The block that follows `heading` (the first fenced block after it).
fn block_after(readme: &str, heading: &str) -> String {
    let at = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has {heading:?}"));
    code_blocks(&readme[at..])
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("a command after {heading:?}"))
}

/// What a clone of the repository has: the files git tracks, plus new ones it does not
/// ignore (so that a change is tested before it is committed), copied as they are now.
fn fresh_clone(root: &Path) -> tempfile::TempDir {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git ls-files: {out:?}");
    let clone = tempfile::tempdir().unwrap();
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let relative = PathBuf::from(String::from_utf8(name.to_vec()).unwrap());
        let from = root.join(&relative);
        let Ok(meta) = std::fs::symlink_metadata(&from) else {
            continue; // deleted in the work tree, not yet in git
        };
        let to = clone.path().join(&relative);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if meta.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    clone
}

/// Runs one README block with `sh` in `dir`, as a user's shell would: their environment, but
/// none of cargo's test-time variables that would steer the build elsewhere.
fn run_block(dir: &Path, block: &str) -> Output {
    let mut command = Command::new("nice");
    command
        .args(["-n", "19", "sh", "-ec", block])
        .current_dir(dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO") && key != "CARGO_HOME" {
            command.env_remove(key.as_ref());
        }
    }
    command.env_remove("RUSTFLAGS").output().unwrap()
}

#[test]
fn the_readmes_commands_work_on_a_fresh_clone_in_the_order_written() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let clone = fresh_clone(&root);
    assert!(
        !clone.path().join("target").exists(),
        "nothing is built yet"
    );

    // 1. Build lamina and invoke the bundled example: one command, nothing built before.
    let first = block_after(&readme, "## Two commands");
    assert!(first.contains("cargo run --release"), "{first}");
    let out = run_block(clone.path(), &first);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{first}\n{stderr}");
    let payload: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        payload["message"], "hello from a shell runtime",
        "{payload}"
    );
    assert_eq!(payload["event"], serde_json::json!({"name": "world"}));
    assert!(stderr.contains("START RequestId: "), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("REPORT RequestId: ")),
        "{stderr}"
    );
    // What was built is the stripped release binary the README promises.
    let binary = clone.path().join("target/release/lamina");
    let size = std::fs::metadata(&binary).unwrap().len();
    assert!(
        size < 40 * 1024 * 1024,
        "the release binary is stripped ({size} bytes)"
    );
    // Stripped: no symbol table section (readelf, binutils, comes with the C toolchain).
    let sections = Command::new("readelf")
        .args(["-S", "-W"])
        .arg(&binary)
        .output()
        .expect("readelf (binutils) runs");
    let sections = String::from_utf8_lossy(&sections.stdout);
    assert!(sections.contains(".dynsym"), "{sections}");
    assert!(!sections.contains(".symtab"), "stripped: {sections}");
    assert!(
        !sections.contains(".debug_line"),
        "no debug info: {sections}"
    );

    // 2. The Python tour: the official runtime interface client as a hand-written bootstrap.
    let python = block_after(&readme, "Try the Python runtime interface client");
    assert!(python.contains("cargo run --release"), "{python}");
    let out = run_block(clone.path(), &python);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{python}\n{stderr}");
    // pip and `cd -` speak on stdout before lamina does: the payload is the last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let payload: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(payload, serde_json::json!({"hi": {"a": 1}}), "{stderr}");

    // 3. The WebAssembly tour: build the example module, invoke it.
    let wasm = block_after(&readme, "## WebAssembly functions");
    let tour = code_blocks(&readme[readme.find("## Writing functions in Rust").unwrap()..])
        .into_iter()
        .next()
        .unwrap();
    assert!(tour.contains("--target wasm32-wasip1"), "{tour}");
    assert!(!wasm.is_empty());
    let out = run_block(clone.path(), &tour);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{tour}\n{stderr}");
    let payload: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(payload, serde_json::json!({"hello": "world"}), "{stderr}");
}
