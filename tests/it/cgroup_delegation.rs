//! A lamina started in a delegated cgroup v2 group (systemd's `Delegate=yes`, for a service or
//! a user's scope) keeps to that group: it moves itself into a leaf, puts the environments'
//! groups under `lamina/` inside it, and the kernel enforces their limits, rootless too. The
//! test makes the delegated group itself, as systemd would: marked `trusted.delegate` for root,
//! owned by the user for a user. On cgroup v1 (our machines) there is no delegation: the test
//! checks lamina keeps to `<controller>/lamina` there; the v2 guest runs the v2 half.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{function_with, lamina, program};

const CGROUP: &str = "/sys/fs/cgroup";

fn cgroup_v2() -> bool {
    Path::new(CGROUP).join("cgroup.controllers").exists()
}

/// A group for the test, as systemd makes a delegated one, removed (children first) on drop.
struct Delegated(PathBuf);

impl Delegated {
    fn new(name: &str, owner: Option<(u32, u32)>) -> Delegated {
        // The controllers must reach the group from the root, as systemd hands them down.
        let _ = std::fs::write(
            Path::new(CGROUP).join("cgroup.subtree_control"),
            "+memory +pids +cpu",
        );
        let group = Path::new(CGROUP).join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&group).unwrap();
        match owner {
            None => set_xattr(&group, "trusted.delegate", b"1"),
            Some((uid, gid)) => {
                for entry in [
                    "",
                    "cgroup.procs",
                    "cgroup.subtree_control",
                    "cgroup.threads",
                ] {
                    std::os::unix::fs::chown(group.join(entry), Some(uid), Some(gid)).unwrap();
                }
            }
        }
        Delegated(group)
    }

    /// `args` run by `lamina`, started inside the group (moved there by a shell, as root,
    /// before it drops to `user`).
    fn run(&self, user: Option<(u32, u32, &Path)>, args: &[&str]) -> Output {
        let mut script = format!("echo $$ > {}/cgroup.procs && exec ", self.0.display());
        if let Some((uid, gid, home)) = user {
            script += &format!(
                "setpriv --reuid={uid} --regid={gid} --clear-groups env -i PATH=/usr/bin:/bin XDG_RUNTIME_DIR={} ",
                home.display()
            );
        }
        script += "\"$@\"";
        Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(lamina())
            .args(args)
            .output()
            .unwrap()
    }

    /// The environment groups lamina left under `lamina/` (none once it has exited).
    fn environments(&self) -> Vec<String> {
        std::fs::read_dir(self.0.join("lamina"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        fn remove(dir: &Path) {
            for child in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&child.path());
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        remove(&self.0);
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: setxattr reads the C strings and the value we own.
    let ret = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(ret, 0, "setxattr: {}", std::io::Error::last_os_error());
}

/// `lamina invoke` of the probe allocating 400 MB under a 128 MB limit.
const OOM: &[&str] = &[
    "invoke",
    "--memory",
    "128",
    "--timeout",
    "60",
    "--payload",
    r#"{"action":"alloc","mb":400}"#,
];

/// A run's output and status, for a message.
fn everything(out: &Output) -> String {
    format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    )
}

fn assert_oom_by_the_kernel(out: &Output, group: &Path) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Runtime.OutOfMemory"), "{stdout}\n{stderr}");
    // The kernel's limit, not the watchdog's: nothing said of a missing cgroup.
    assert!(!stderr.contains("no cgroup is delegated"), "{stderr}");
    // lamina moved itself into its leaf; the environment's group is gone with it.
    assert!(group.join("lamina-supervisor").is_dir());
    assert!(group.join("lamina").is_dir(), "{stderr}");
}

#[test]
fn a_delegated_group_holds_the_environments_and_lamina_keeps_to_it() {
    let probe = function_with(&program("probe"));
    std::fs::set_permissions(probe.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = probe.path().to_str().unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .map(|s| s.to_string())
            .chain(std::iter::once(dir.to_owned()))
            .collect()
    };
    if !cgroup_v2() {
        // v1: no delegation; a root lamina's groups are `<controller>/lamina/<pid>-<n>`
        // whatever group it was started in, and they go with it.
        let out = Command::new(lamina())
            .args(args(&["invoke", "--payload", "{}"]))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let doctor = Command::new(lamina()).arg("doctor").output().unwrap();
        let doctor = String::from_utf8_lossy(&doctor.stdout);
        assert!(
            doctor.contains("cgroup v1: memory, pids, cpu enforced"),
            "{doctor}"
        );
        assert!(!doctor.contains("delegated ("), "{doctor}");
        // A root lamina on v1 has made moves into cgroups cheap for this boot: its own named
        // hierarchy, mounted with favordynmods, is listed for every process.
        assert!(
            doctor.contains("moves into cgroups favored (favordynmods"),
            "{doctor}"
        );
        let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert!(
            mine.lines().any(|l| l.contains(":name=lamina-dynmods:")),
            "{mine}"
        );
        return;
    }
    // Root, in a group systemd marked delegated.
    let root_group = Delegated::new("lamina-test-delegated", None);
    let argv = args(OOM);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = root_group.run(None, &argv);
    assert_oom_by_the_kernel(&out, &root_group.0);
    assert_eq!(root_group.environments(), Vec::<String>::new());
    // Each start in a group of its own, as systemd gives each start of a service (the group
    // of a stopped one is removed with everything below it).
    let root_again = Delegated::new("lamina-test-delegated-again", None);
    let doctor = root_again.run(None, &["doctor"]);
    let doctor = everything(&doctor);
    assert!(
        doctor.contains(&format!(
            "root jail (mount, PID, IPC, UTS, network namespaces; seccomp; cgroup v2 delegated ({})",
            root_again.0.display()
        )),
        "{doctor}"
    );

    // Rootless, in a group the user owns (as under user@UID.service).
    let (uid, gid) = crate::rootless::test_user();
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let user_group = Delegated::new("lamina-test-user-delegated", Some((uid, gid)));
    let out = user_group.run(Some((uid, gid, home.path())), &argv);
    assert_oom_by_the_kernel(&out, &user_group.0);
    assert_eq!(user_group.environments(), Vec::<String>::new());
    let user_again = Delegated::new("lamina-test-user-delegated-again", Some((uid, gid)));
    let doctor = user_again.run(Some((uid, gid, home.path())), &["doctor"]);
    let doctor = everything(&doctor);
    assert!(
        doctor.contains(&format!(
            "rootless jail (user, mount, PID, IPC, UTS, network namespaces; seccomp; cgroup v2 delegated ({})",
            user_again.0.display()
        )),
        "{doctor}"
    );
}
