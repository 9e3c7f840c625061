//! lamina's directories on the host against another local user: a root lamina keeps its state
//! in directories only it can write, refuses directories another user made or could change,
//! and when it cleans up after dead lamina processes it never follows a link, never unmounts a
//! mount it did not make, and never touches anything outside its own state.
//!
//! The other user is `nobody` (uid 65534), through `setpriv` (util-linux).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::{lamina, program, test_cache};

const NOBODY: &str = "--reuid=65534";

/// Runs `args` as `nobody`; panics if it fails.
fn as_nobody(args: &[&str]) {
    let out = Command::new("setpriv")
        .args([NOBODY, "--regid=65534", "--clear-groups"])
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs");
    assert!(out.status.success(), "as nobody: {args:?}: {out:?}");
}

/// A directory anyone may create entries in, as `/tmp` is (sticky, 1777).
fn shared_tmp() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// `n` pids that no process can have (above the kernel's `pid_max`), as names of entries of
/// lamina processes that are gone.
fn dead_pids() -> [u64; 3] {
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    [max + 1, max + 2, max + 3]
}

/// A fresh temporary directory by its resolved path (what lamina's messages and the mount
/// table name).
fn resolved_tempdir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    (dir, path)
}

/// A tmpfs mounted at `at` holding the file `precious`: what an attacker points links at.
struct Victim {
    at: std::path::PathBuf,
}

impl Victim {
    fn mount(at: &Path, source: &str) -> Victim {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", source])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs at {}", at.display());
        std::fs::write(at.join("precious"), b"keep me").unwrap();
        Victim { at: at.to_owned() }
    }

    fn assert_intact(&self) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let point = self.at.to_str().unwrap();
        assert!(
            mountinfo
                .lines()
                .any(|l| l.split(' ').nth(4) == Some(point)),
            "{point} is still mounted"
        );
        assert_eq!(
            std::fs::read(self.at.join("precious")).unwrap(),
            b"keep me",
            "the file there is untouched"
        );
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn invoke(function: &Path, env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(lamina());
    command
        .arg("invoke")
        .arg(function)
        .args(["--payload", "{}"])
        .env("LAMINA_CACHE_DIR", test_cache());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn wasm_function() -> std::path::PathBuf {
    crate::support::wasm_guest("wasm32-wasip1")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The attack seen: another user made lamina's directory in the shared temporary directory
/// first and planted links and dead-looking entries in it. lamina no longer keeps anything
/// there, so nothing there is looked at, let alone unmounted.
#[test]
fn what_another_user_planted_in_the_temporary_directory_is_never_touched() {
    let tmp = shared_tmp();
    let (_victim_dir, victim_path) = resolved_tempdir();
    let victim = Victim::mount(&victim_path.join("mnt"), "victim");
    let [a, b, c] = dead_pids().map(|pid| format!("{pid}-0"));
    // Where lamina kept state before: `$TMPDIR/lamina-jails`, and the fixed `/tmp/lamina-wasm`
    // (planted too when this machine has none, and removed after).
    let mut planted_dirs = vec![
        tmp.path().join("lamina-jails"),
        tmp.path().join("lamina-wasm"),
    ];
    let fixed = std::path::PathBuf::from("/tmp/lamina-wasm");
    let planted_fixed = !fixed.exists();
    if planted_fixed {
        planted_dirs.push(fixed.clone());
    }
    for planted in &planted_dirs {
        as_nobody(&["mkdir", planted.to_str().unwrap()]);
        for entry in [&a, &b] {
            let link = planted.join(entry);
            as_nobody(&[
                "ln",
                "-s",
                victim.at.to_str().unwrap(),
                link.to_str().unwrap(),
            ]);
        }
        as_nobody(&["mkdir", planted.join(&c).to_str().unwrap()]);
    }
    let native = crate::support::function_with(&program("probe"));
    for function in [native.path(), wasm_function().as_path()] {
        let out = invoke(function, &[("TMPDIR", tmp.path())]);
        assert_eq!(out.status.code(), Some(0), "{function:?}: {}", stderr(&out));
    }
    victim.assert_intact();
    for planted in &planted_dirs {
        for entry in [&a, &b, &c] {
            assert!(
                std::fs::symlink_metadata(planted.join(entry)).is_ok(),
                "{}/{entry} is left as it was",
                planted.display()
            );
        }
    }
    if planted_fixed {
        std::fs::remove_dir_all(&fixed).unwrap();
    }
}

/// A run, cache or state directory that another user made, or under a directory another user
/// controls, is refused with a message naming it, and nothing in it is followed.
#[test]
fn directories_another_user_made_or_controls_are_refused_naming_them() {
    let tmp = shared_tmp();
    let tmp_path = tmp.path().canonicalize().unwrap();
    let (_victim_dir, victim_path) = resolved_tempdir();
    let victim = Victim::mount(&victim_path.join("mnt"), "victim");
    // nobody makes the run directory first, with a link where lamina keeps its mounts.
    let run = tmp_path.join("run");
    as_nobody(&["mkdir", run.to_str().unwrap()]);
    as_nobody(&[
        "ln",
        "-s",
        victim.at.to_str().unwrap(),
        run.join("wasm").to_str().unwrap(),
    ]);
    as_nobody(&["mkdir", run.join("jails").to_str().unwrap()]);
    let native = crate::support::function_with(&program("probe"));
    for function in [native.path(), wasm_function().as_path()] {
        let out = invoke(function, &[("LAMINA_RUN_DIR", &run)]);
        assert_eq!(out.status.code(), Some(2), "{function:?}: {out:?}");
        let text = stderr(&out);
        assert!(
            text.contains(&format!(
                "{}: owned by uid 65534, not by lamina's user (uid 0)",
                run.display()
            )),
            "{text}"
        );
        assert!(!text.contains("WARN"), "{text}");
    }
    // A directory under one that nobody owns: nobody could swap it after the check.
    let theirs = tmp_path.join("theirs");
    as_nobody(&["mkdir", "-m", "0755", theirs.to_str().unwrap()]);
    let out = invoke(native.path(), &[("LAMINA_RUN_DIR", &theirs.join("run"))]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains(&format!(
            "{}: a directory above lamina's is owned by uid 65534",
            theirs.display()
        )),
        "{}",
        stderr(&out)
    );
    // A cache another user can write code into.
    let cache = tmp_path.join("cache");
    as_nobody(&["mkdir", cache.to_str().unwrap()]);
    let zip = tempfile::tempdir().unwrap();
    let archive = zip.path().join("fn.zip");
    crate::shared::zip_dir(std::fs::File::create(&archive).unwrap(), native.path(), "");
    let out = Command::new(lamina())
        .args(["invoke", archive.to_str().unwrap(), "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains(&format!(
            "cache directory {}: owned by uid 65534",
            cache.display()
        )),
        "{}",
        stderr(&out)
    );
    // A state directory (dead letters) of `lamina serve`.
    let state = tmp_path.join("state");
    as_nobody(&["mkdir", "-m", "0777", state.to_str().unwrap()]);
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("lamina.toml"),
        format!(
            "[functions.probe]\ncode = {:?}\n[serve]\nlisten = \"127.0.0.1:0\"\n",
            native.path()
        ),
    )
    .unwrap();
    let out = Command::new(lamina())
        .args(["serve", "--sandbox", "process", "--config"])
        .arg(config.path().join("lamina.toml"))
        .arg("--state-dir")
        .arg(&state)
        .env("LAMINA_CACHE_DIR", test_cache())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains(&format!(
            "state directory {}: owned by uid 65534",
            state.display()
        )),
        "{}",
        stderr(&out)
    );
    victim.assert_intact();
}

/// In lamina's own run directory, a sweep after dead lamina processes unmounts and removes only
/// what it made: a link is not followed, a mount that is not lamina's stays, and each thing
/// left alone is said once.
#[test]
fn a_sweep_removes_only_lamina_s_own_leftovers() {
    let (_base, base_path) = resolved_tempdir();
    let run = base_path.join("run");
    let wasm = run.join("wasm");
    std::fs::create_dir_all(&wasm).unwrap();
    for dir in [&run, &wasm] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let (_victim_dir, victim_path) = resolved_tempdir();
    let victim = Victim::mount(&victim_path.join("mnt"), "victim");
    let [a, b, c] = dead_pids().map(|pid| format!("{pid}-0"));
    // A link named like a dead lamina's mount, pointing at a mounted file system.
    std::os::unix::fs::symlink(&victim.at, wasm.join(&a)).unwrap();
    // Someone else's mount at a dead-looking name.
    let foreign = Victim::mount(&wasm.join(&b), "foreign");
    // A real leftover of a lamina killed before it could unmount.
    let leftover = Victim::mount(&wasm.join(&c), "lamina-wasm-tmp");
    std::fs::remove_file(leftover.at.join("precious")).unwrap();
    let out = invoke(&wasm_function(), &[("LAMINA_RUN_DIR", &run)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "{}: left alone: not a directory",
            wasm.join(&a).display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}: left alone: something other than lamina is mounted there",
            wasm.join(&b).display()
        )),
        "{text}"
    );
    victim.assert_intact();
    foreign.assert_intact();
    assert!(
        std::fs::symlink_metadata(wasm.join(&a)).is_ok(),
        "the link stays"
    );
    assert!(
        !leftover.at.exists(),
        "lamina's own leftover is unmounted and removed"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(leftover.at.to_str().unwrap()),
        "{mountinfo}"
    );
}
