//! The native jail, probed from inside. Every check runs the same probe unjailed too: the
//! contrast shows each assertion would fail without the jail.

use serde_json::Value;

use crate::support::{Harness, function_with, program};

async fn probe_report(harness: &Harness) -> Value {
    let (done, report) = harness.invoke_json(r#"{"action":"jail"}"#).await;
    assert!(done.error_type().is_none(), "{report}");
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jail_confines_the_function() {
    let jailed = Harness::jailed(function_with(&program("probe")), |_| {});
    let inside = probe_report(&jailed).await;
    let unjailed = Harness::start(function_with(&program("probe")), |_| {});
    let outside = probe_report(&unjailed).await;

    // Not root (the tests run as root, so unjailed the probe is uid 0).
    assert_eq!(inside["uid"], "993", "{inside}");
    assert_eq!(outside["uid"], "0");
    // Host secrets and home directories are not there.
    assert_ne!(inside["read_shadow"], "ok", "{inside}");
    assert_eq!(outside["read_shadow"], "ok");
    assert_ne!(inside["list_host_root"], "ok");
    assert_eq!(outside["list_host_root"], "ok");
    // The code and the layers are read-only; /tmp is writable.
    assert_eq!(
        inside["write_task"], "read-only filesystem or storage medium",
        "{inside}"
    );
    assert_eq!(outside["write_task"], "ok", "{outside}");
    assert_eq!(
        inside["write_opt"],
        "read-only filesystem or storage medium"
    );
    assert_eq!(inside["write_tmp"], "ok");
    // Its own PID namespace: a handful of processes, PID 1 among them, none of the host's.
    let pids: Vec<u32> = inside["pids"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids.contains(&1) && pids.len() < 10, "{pids:?}");
    assert!(
        !pids.contains(&std::process::id()),
        "the host's processes are invisible"
    );
    assert!(outside["pids"].as_str().unwrap().split(',').count() > 10);
    // No new namespaces, no mounts (seccomp, and no capabilities anyway).
    assert_eq!(inside["unshare"], "permission denied", "{inside}");
    assert_eq!(inside["mount"], "permission denied");
    assert_eq!(outside["unshare"], "ok");
    assert_eq!(inside["hostname"], "lamina");
    jailed.finish().await;
    unjailed.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jailed_runtime_sees_lambdas_paths_and_exits_cleanly() {
    let jailed = Harness::jailed(function_with(&program("probe")), |_| {});
    let (_, report) = jailed.invoke_json("{}").await;
    assert_eq!(report["env"]["LAMBDA_TASK_ROOT"], "/var/task");
    assert_eq!(report["cwd"], "/var/task");
    // A runtime exit inside the jail is reported with its real status.
    let done = jailed.invoke(r#"{"action":"exit","code":4}"#).await;
    assert_eq!(done.error_type(), Some("Runtime.ExitError"));
    assert!(String::from_utf8_lossy(&done.body()).contains("exit status 4"));
    // The jail's mounts live in its own mount namespace: the host never sees one.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains("lamina-jails"),
        "a jail mount leaked to the host"
    );
    jailed.finish().await;
}
