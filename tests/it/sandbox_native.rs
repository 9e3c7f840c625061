//! The native jail, probed from inside. Every check runs the same probe unjailed too: the
//! contrast shows each assertion would fail without the jail.

use serde_json::Value;

use crate::support::{Harness, function_with, lamina_helper, process_alive, program, rootless};

/// Jail tests run one at a time, so that counting cgroups before and after means something.
pub static JAIL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The environments' cgroups that exist now (v1 layout on our machines).
/// lamina's environment groups: `<controller>/lamina/*` on cgroup v1, `lamina/*` on v2.
fn lamina_cgroups() -> Vec<String> {
    ["memory/", "pids/", "cpu/", ""]
        .iter()
        .flat_map(|c| {
            std::fs::read_dir(format!("/sys/fs/cgroup/{c}lamina"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Whether this host has the unified hierarchy (our machines: v1; the v2 guest: v2).
fn cgroup_v2() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok()
}

async fn probe_report(harness: &Harness) -> Value {
    let (done, report) = harness.invoke_json(r#"{"action":"jail"}"#).await;
    assert!(done.error_type().is_none(), "{report}");
    report
}

fn euid() -> u32 {
    // SAFETY: geteuid only reads this process's credentials.
    unsafe { libc::geteuid() }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jail_confines_the_function() {
    let _serial = JAIL.lock().await;
    let jailed = Harness::jailed(function_with(&program("probe")), |_| {});
    let inside = probe_report(&jailed).await;
    let unjailed = Harness::start(function_with(&program("probe")), |_| {});
    let outside = probe_report(&unjailed).await;

    // Lambda's sandbox user (the tests run as root, so unjailed the probe is uid 0; in the
    // rootless run, the test's user, which the jail maps to 993).
    assert_eq!(inside["uid"], "993", "{inside}");
    let me = euid();
    assert_eq!(outside["uid"], me.to_string());
    // Host secrets and home directories are not there (unjailed, root reads them).
    assert_ne!(inside["read_shadow"], "ok", "{inside}");
    assert_eq!(outside["read_shadow"] == "ok", me == 0);
    assert_ne!(inside["list_host_root"], "ok");
    assert_eq!(outside["list_host_root"] == "ok", me == 0);
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
    assert_eq!(inside["unshare_user"], "permission denied", "{inside}");
    assert_eq!(outside["unshare"] == "ok", me == 0);
    assert_eq!(
        outside["unshare_user"], "ok",
        "this host allows user namespaces"
    );
    assert_eq!(inside["hostname"], "lamina");
    // No capability of any kind, none to regain: no_new_privs and a seccomp filter on; PID 1
    // (which keeps its capabilities to serve the host) is out of the function's reach.
    for set in ["cap_eff", "cap_prm", "cap_bnd", "cap_amb"] {
        assert_eq!(inside[set], "0000000000000000", "{set}: {inside}");
    }
    assert_eq!(inside["no_new_privs"], "1");
    assert_eq!(inside["seccomp"], "2", "filter mode");
    assert_eq!(inside["pid1_root"], "permission denied", "{inside}");
    assert_eq!(outside["no_new_privs"], "0");
    // Rootless, no pids cgroup can be had: RLIMIT_NPROC caps the sandbox's processes (counted
    // in its own user namespace); under root the cgroup does.
    if rootless() {
        assert_eq!(inside["nproc"], "1024", "{inside}");
    }
    // Batch scheduling (3, SCHED_BATCH): a woken function does not preempt the host.
    assert_eq!(inside["sched_policy"], "3", "{inside}");
    assert_eq!(outside["sched_policy"], "0", "{outside}");
    jailed.finish().await;
    unjailed.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn code_the_sandbox_user_may_not_read_is_an_invalid_entrypoint_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = JAIL.lock().await;
    let code = function_with(&program("probe"));
    let bootstrap = code.path().join("bootstrap");
    let mode = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // The sandbox's user is unprivileged under root (neither owner nor group), and lamina's
    // own user rootless (the owner): what it may not enter or run differs.
    let (closed_dir, closed_file) = if rootless() {
        // Searchable (so the host finds the bootstrap) but not readable.
        (0o100, 0o055)
    } else {
        (0o700, 0o700)
    };
    mode(code.path(), closed_dir);
    let dir = code.path().display().to_string();
    let jailed = Harness::jailed(code, |_| {});
    let done = jailed.invoke("{}").await;
    assert_eq!(done.error_type(), Some("Runtime.InvalidEntrypoint"));
    let message = String::from_utf8_lossy(&done.body()).into_owned();
    assert!(
        message.contains(&format!(
            "fork/exec /var/task/bootstrap: permission denied: {dir} is mode {closed_dir:04o}"
        )),
        "{message}"
    );
    // A bootstrap only its owner may run.
    mode(std::path::Path::new(&dir), 0o755);
    mode(&bootstrap, closed_file);
    let done = jailed.invoke("{}").await;
    assert_eq!(done.error_type(), Some("Runtime.InvalidEntrypoint"));
    let message = String::from_utf8_lossy(&done.body()).into_owned();
    assert!(
        message.contains(&format!("bootstrap is mode {closed_file:04o}")),
        "{message}"
    );
    // Readable again: it runs.
    mode(&bootstrap, 0o755);
    let done = jailed.invoke("{}").await;
    assert!(done.error_type().is_none(), "{:?}", done.body());
    jailed.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jailed_runtime_sees_lambdas_paths_and_exits_cleanly() {
    let _serial = JAIL.lock().await;
    let jailed = Harness::jailed(function_with(&program("probe")), |_| {});
    let (done, report) = jailed.invoke_json("{}").await;
    assert_eq!(
        report["env"]["LAMBDA_TASK_ROOT"],
        "/var/task",
        "{:?}: {report}",
        done.error_type()
    );
    assert_eq!(report["cwd"], "/var/task");
    // A runtime exit inside the jail is reported with its real status.
    let done = jailed.invoke(r#"{"action":"exit","code":4}"#).await;
    assert_eq!(done.error_type(), Some("Runtime.ExitError"));
    assert!(String::from_utf8_lossy(&done.body()).contains("exit status 4"));
    // The jail's mounts live in its own mount namespace: the host never sees one.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let jails = jails_dir();
    assert!(
        !host_mounts.contains(jails.to_str().unwrap()),
        "a jail mount leaked to the host"
    );
    jailed.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_report_has_the_environments_peak_memory_so_far() {
    let _serial = JAIL.lock().await;
    let jailed = Harness::jailed_cold(function_with(&program("probe")), |c| {
        c.memory_mb = Some(256)
    });
    // One warm environment: the peak is read again after each invocation, not once.
    for mb in [8, 96, 8] {
        let (_, ok) = jailed
            .invoke_json(&format!(r#"{{"action":"alloc","mb":{mb}}}"#))
            .await;
        assert_eq!(ok["allocated_mb"], mb);
    }
    let logs = jailed.finish().await;
    let used: Vec<u64> = logs
        .iter()
        .filter(|l| l.starts_with("REPORT"))
        .map(|l| crate::support::max_memory_used_mb(l))
        .collect();
    assert_eq!(used.len(), 3, "{logs:#?}");
    assert!(used[0] < 64, "before the 96 MB allocation: {used:?}");
    assert!(
        used[1] >= 96 && used[2] == used[1],
        "the peak after it, and kept: {used:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn allocating_past_the_memory_limit_is_out_of_memory() {
    let _serial = JAIL.lock().await;
    // A generous timeout: the limit is what is tested (allocating is slow under emulation).
    let jailed = Harness::jailed_cold(function_with(&program("probe")), |c| {
        c.memory_mb = Some(128);
        c.timeout_secs = Some(60);
    });
    let done = jailed.invoke(r#"{"action":"alloc","mb":400}"#).await;
    assert_eq!(
        done.error_type(),
        Some("Runtime.OutOfMemory"),
        "{:?}",
        String::from_utf8_lossy(&done.body())
    );
    let body: Value = serde_json::from_slice(&done.body()).unwrap();
    assert_eq!(
        body["errorMessage"],
        format!(
            "RequestId: {} Error: Runtime exited with error: signal: killed",
            done.request_id
        )
    );
    // The next invocation gets a fresh environment and works.
    let (_, ok) = jailed.invoke_json(r#"{"action":"alloc","mb":16}"#).await;
    assert_eq!(ok["allocated_mb"], 16);
    let logs = jailed.finish().await;
    let report = logs
        .iter()
        .find(|l| l.contains("Error Type: Runtime.OutOfMemory"))
        .expect("a REPORT for the OOM");
    let used = crate::support::max_memory_used_mb(report);
    // Rootless, the watchdog's limit: it looks every millisecond near the limit, and what the
    // function allocates in between (a few MB at most) shows, truthfully, in the figure.
    let ceiling = if rootless() { 140 } else { 130 };
    assert!(
        (100..=ceiling).contains(&used),
        "Max Memory Used {used} MB should be near the 128 MB limit: {report}"
    );
    // Unjailed, the same allocation succeeds: the limit is the jail's.
    let unjailed = Harness::start(function_with(&program("probe")), |c| {
        c.memory_mb = Some(128);
        c.timeout_secs = Some(60);
    });
    let (_, free) = unjailed.invoke_json(r#"{"action":"alloc","mb":400}"#).await;
    assert_eq!(free["allocated_mb"], 400);
    unjailed.finish().await;
    assert!(
        host_traces().cgroups.is_empty(),
        "cgroups left behind: {:?}",
        host_traces()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_hits_the_pids_limit_not_the_host() {
    let _serial = JAIL.lock().await;
    // A generous timeout: what is tested is the limit, and under software emulation (the
    // cgroup v2 guest) starting a thousand threads takes seconds.
    let jailed = Harness::jailed_cold(function_with(&program("probe")), |c| {
        c.timeout_secs = Some(60)
    });
    let (_, pid_report) = jailed.invoke_json("{}").await;
    let (_, bomb) = jailed
        .invoke_json(r#"{"action":"threads","max":5000}"#)
        .await;
    let started = bomb["started"]
        .as_u64()
        .unwrap_or_else(|| panic!("no thread count in the answer {bomb}"));
    assert!(started < 1024, "{bomb}");
    assert_eq!(bomb["error"], "operation would block", "{bomb}");
    // The environment still answers, and everything it started goes with it.
    let (done, _) = jailed.invoke_json("{}").await;
    assert!(done.error_type().is_none());
    assert!(pid_report["pid"].as_u64().is_some());
    jailed.finish().await;
    assert!(
        host_traces().cgroups.is_empty(),
        "cgroups left behind: {:?}",
        host_traces()
    );
    // Unjailed, the same bomb is not stopped at 1,024.
    let unjailed = Harness::start(function_with(&program("probe")), |c| {
        c.timeout_secs = Some(60)
    });
    let (_, free) = unjailed
        .invoke_json(r#"{"action":"threads","max":1500}"#)
        .await;
    assert_eq!(free["started"], 1500, "{free}");
    let (_, report) = unjailed.invoke_json("{}").await;
    let pid = report["pid"].as_u64().unwrap();
    unjailed.finish().await;
    assert!(!process_alive(pid));
}

#[tokio::test(flavor = "multi_thread")]
async fn network_none_reaches_nothing_outside_the_sandbox() {
    let _serial = JAIL.lock().await;
    // A server on the host's loopback, and an unjailed environment whose Runtime API listens
    // there too.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let unjailed = Harness::start(function_with(&program("probe")), |_| {});
    let (_, other) = unjailed.invoke_json("{}").await;
    let other_api = other["env"]["AWS_LAMBDA_RUNTIME_API"]
        .as_str()
        .unwrap()
        .to_owned();

    let jailed = Harness::jailed(function_with(&program("probe")), |_| {});
    let (_, inside) = jailed.invoke_json("{}").await;
    assert_eq!(
        inside["env"]["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001",
        "its own API, inside its namespace"
    );
    // Loopback only: plain Reno, whatever the host's default (BBR on our machines).
    let (_, jail) = jailed.invoke_json(r#"{"action":"jail"}"#).await;
    assert_eq!(jail["congestion_control"], "reno", "{jail}");
    for addr in [server_addr.to_string(), other_api.clone()] {
        let (_, r) = jailed
            .invoke_json(&format!(r#"{{"action":"connect","addr":"{addr}"}}"#))
            .await;
        assert_eq!(
            r["connect"], "connection refused",
            "{addr} must be unreachable from the jail"
        );
        // The control: unjailed, the same address answers.
        let (_, r) = unjailed
            .invoke_json(&format!(r#"{{"action":"connect","addr":"{addr}"}}"#))
            .await;
        assert_eq!(r["connect"], "ok", "{addr}");
    }
    jailed.finish().await;
    unjailed.finish().await;
    drop(server);
}

/// Network mode `outbound`, the CLI's default: the function reaches a host of the tests' own
/// on a network of its own (never an outside address), as it would an AWS service or a
/// database, but not the host's loopback (directly or through slirp4netns's gateway), nor
/// another environment's Runtime API. Its Runtime API is its own, inside its namespace.
#[tokio::test(flavor = "multi_thread")]
async fn network_outbound_reaches_out_but_not_the_hosts_loopback_nor_other_sandboxes() {
    let _serial = JAIL.lock().await;
    let test_host = crate::support::test_host();
    let loopback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let loopback_port = loopback.local_addr().unwrap().port();
    let unjailed = Harness::start(function_with(&program("probe")), |_| {});
    let (_, other) = unjailed.invoke_json("{}").await;
    let other_api = other["env"]["AWS_LAMBDA_RUNTIME_API"]
        .as_str()
        .unwrap()
        .to_owned();
    let jail = lamina_runtime::sandbox::jail::JailSandbox::new(lamina_helper())
        .expect("the native jail runs here")
        .with_outbound_network(
            lamina_runtime::sandbox::jail::network::find()
                .expect("slirp4netns is installed (scripts/test)"),
        )
        .with_ready(1);
    let jailed = Harness::start_in(
        std::sync::Arc::new(jail),
        function_with(&program("probe")),
        |_| {},
    );
    let (_, inside) = jailed.invoke_json("{}").await;
    assert_eq!(
        inside["env"]["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001",
        "{inside}"
    );
    let ask = |action: &str, addr: String| format!(r#"{{"action":"{action}","addr":"{addr}"}}"#);
    // Out: the test host answers.
    let (_, r) = jailed
        .invoke_json(&ask("http", test_host.to_string()))
        .await;
    assert_eq!(r["http"], "answered", "the test host at {test_host}");
    // Not the host's loopback, whether asked for directly or through the gateway.
    for addr in [
        format!("127.0.0.1:{loopback_port}"),
        format!("10.0.2.2:{loopback_port}"),
        other_api.clone(),
    ] {
        let (_, r) = jailed.invoke_json(&ask("connect", addr.clone())).await;
        // slirp4netns refuses its gateway's loopback as unreachable.
        assert!(
            ["connection refused", "network unreachable"].contains(&r["connect"].as_str().unwrap()),
            "{addr}: {r}"
        );
    }
    // The controls: unjailed, the same host loopback addresses answer.
    for addr in [format!("127.0.0.1:{loopback_port}"), other_api] {
        let (_, r) = unjailed.invoke_json(&ask("connect", addr.clone())).await;
        assert_eq!(r["connect"], "ok", "{addr}");
    }
    // And the jail's own API is still served to its own runtime.
    let (_, r) = jailed
        .invoke_json(&ask("http", "127.0.0.1:9001".into()))
        .await;
    assert_eq!(r["http"], "answered");
    jailed.finish().await;
    unjailed.finish().await;
    drop(loopback);
}

#[tokio::test(flavor = "multi_thread")]
async fn network_host_reaches_out_but_its_api_serves_only_its_own_sandbox() {
    let _serial = JAIL.lock().await;
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let host_jail = || {
        let jail = lamina_runtime::sandbox::jail::JailSandbox::new(lamina_helper())
            .expect("the native jail runs here")
            .with_host_network()
            .with_ready(1);
        std::sync::Arc::new(jail)
    };
    let a = Harness::start_in(host_jail(), function_with(&program("probe")), |_| {});
    let b = Harness::start_in(host_jail(), function_with(&program("probe")), |_| {});
    let (_, a_env) = a.invoke_json("{}").await;
    let a_api = a_env["env"]["AWS_LAMBDA_RUNTIME_API"]
        .as_str()
        .unwrap()
        .to_owned();
    let (a_report, b_report) = (probe_report(&a).await, probe_report(&b).await);
    if rootless() {
        // Rootless, every sandbox is this user on the host (one id is all it may map): the
        // sandbox's API serves this user's sockets only, which other users are refused by,
        // but not one sandbox from another (SECURITY.md; network mode `none` separates them).
        assert_eq!(a_report["uid"], "993");
        let (_, r) = a
            .invoke_json(&format!(r#"{{"action":"connect","addr":"{server_addr}"}}"#))
            .await;
        assert_eq!(r["connect"], "ok");
        let (_, r) = a
            .invoke_json(&format!(r#"{{"action":"http","addr":"{a_api}"}}"#))
            .await;
        assert_eq!(r["http"], "answered", "a's own sandbox is served");
        a.finish().await;
        b.finish().await;
        return;
    }
    // Each sandbox on the host's network runs as a uid of its own, still not root.
    assert_ne!(a_report["uid"], b_report["uid"]);
    for uid in [&a_report["uid"], &b_report["uid"]] {
        assert!(!["0", "993"].contains(&uid.as_str().unwrap()), "{uid}");
    }
    // Egress: the host's loopback is reachable, as it is not in mode `none`.
    let (_, r) = a
        .invoke_json(&format!(r#"{{"action":"connect","addr":"{server_addr}"}}"#))
        .await;
    assert_eq!(r["connect"], "ok");
    // The sandbox's own runtime gets answers on a new connection...
    let http_to_a = format!(r#"{{"action":"http","addr":"{a_api}"}}"#);
    let (_, r) = a.invoke_json(&http_to_a).await;
    assert_eq!(r["http"], "answered", "a's own uid is served");
    // ...another sandbox and another host user (this test, as root) are hung up on unread.
    let (_, r) = b.invoke_json(&http_to_a).await;
    assert_eq!(r["http"], "closed", "another sandbox is refused");
    assert_eq!(
        crate::flat_json::http_answer(&a_api),
        "closed",
        "a host user is refused"
    );
    // And the sandbox's own work goes on.
    let (done, r) = a.invoke_json(r#"{"action":"echo","n":1}"#).await;
    assert!(done.error_type().is_none(), "{r}");
    a.finish().await;
    b.finish().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn tmp_is_fresh_for_every_invocation_unless_asked_to_persist() {
    let _serial = JAIL.lock().await;
    let jailed = Harness::jailed(function_with(&program("probe")), |_| {});
    let (_, first) = jailed.invoke_json(r#"{"action":"jail"}"#).await;
    assert_eq!(first["tmp_before"], "", "{first}");
    assert_eq!(first["write_tmp"], "ok");
    let (_, second) = jailed.invoke_json(r#"{"action":"jail"}"#).await;
    assert_eq!(
        second["tmp_before"], "",
        "the previous invocation's file is gone: {second}"
    );
    // The reset happens between the answer and its acknowledgement: what the runtime writes
    // after its answer was accepted is its own, not swept away while it waits for the next
    // event (it was, racily, when the reset overlapped the runtime's return to /next).
    for _ in 0..3 {
        jailed.invoke_json(r#"{"action":"tmp-after-answer"}"#).await;
        let (_, next) = jailed.invoke_json(r#"{"action":"jail"}"#).await;
        assert_eq!(next["tmp_before"], "after-answer", "{next}");
    }
    jailed.finish().await;
    let persistent = Harness::jailed(function_with(&program("probe")), |c| {
        c.tmp_per_environment = true
    });
    persistent.invoke_json(r#"{"action":"jail"}"#).await;
    let (_, second) = persistent.invoke_json(r#"{"action":"jail"}"#).await;
    assert_eq!(
        second["tmp_before"], "probe-was-here",
        "Lambda's behaviour: /tmp survives warm invocations"
    );
    persistent.finish().await;
}

/// What one jailed environment of this test process leaves on the host: its cgroups and state
/// directories (named `<our pid>-<environment>`), and the host's own mount table.
#[derive(Debug, PartialEq)]
struct HostTraces {
    cgroups: Vec<String>,
    state_dirs: Vec<String>,
    mounts: usize,
}

/// Where the jail keeps its sandboxes' root mount points.
fn jails_dir() -> std::path::PathBuf {
    lamina_runtime::run_dir::default_run_dir()
        .expect("a run directory")
        .join("jails")
}

fn host_traces() -> HostTraces {
    let ours = format!("{}-", std::process::id());
    let state = jails_dir();
    HostTraces {
        cgroups: lamina_cgroups()
            .into_iter()
            .filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with(&ours)))
            .collect(),
        state_dirs: std::fs::read_dir(state)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&ours))
            .collect(),
        mounts: std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count(),
    }
}

/// Host pids of every process in this test process's jails, from their pids cgroups; rootless
/// (no cgroups, and only this module's tests run, one at a time) every process of this user in
/// a PID namespace below ours.
fn sandbox_processes() -> Vec<u64> {
    if rootless() {
        return std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
            .filter(|pid| {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let field = |name: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or("")
                        .split_whitespace()
                        .count()
                };
                let own = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|l| l.split_whitespace().next())
                    == Some(&euid().to_string());
                own && field("NSpid:") > 1
            })
            .collect();
    }
    host_traces()
        .cgroups
        .iter()
        .filter(|p| p.contains("/pids/") || cgroup_v2())
        .flat_map(|dir| {
            std::fs::read_to_string(format!("{dir}/cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// A runtime that leaves processes behind (in its group, in a new session, one ignoring
/// SIGTERM) and a file in /tmp, then hangs or crashes on request.
const LITTERING_RUNTIME: &str = r#"#!/bin/bash
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
sleep 1000 &
setsid sleep 1000 &
( trap '' TERM; sleep 1000 ) &
while :; do
  curl -sS -D /tmp/headers -o /tmp/body "$api/invocation/next" || exit 1
  id=$(sed -n 's/^[Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d: *\([^[:space:]]*\).*/\1/p' /tmp/headers)
  case "$(cat /tmp/body)" in
    *hang*) sleep 1000 ;;
    *crash*) kill -9 $$ ;;
  esac
  curl -sS -X POST "$api/invocation/$id/response" -d '{"ok":true}' >/dev/null
done
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_or_a_crash_destroys_the_whole_sandbox() {
    let _serial = JAIL.lock().await;
    let before = host_traces();
    assert!(
        before.cgroups.is_empty() && before.state_dirs.is_empty(),
        "{before:?}"
    );
    let code = crate::support::function_from_files(&[("bootstrap", LITTERING_RUNTIME, true)]);
    // 3 s, not 1: the ordinary invocation first must fit in it, and under an emulated CPU
    // (the cgroup v2 guest runs without KVM) its curls once took longer than 1 s.
    let jailed = Harness::jailed_cold(code, |c| c.timeout_secs = Some(3));
    for (trigger, error_type) in [
        (r#"{"hang":1}"#, "Sandbox.Timedout"),
        (r#"{"crash":1}"#, "Runtime.ExitError"),
    ] {
        let (done, _) = jailed.invoke_json("{}").await;
        assert!(
            done.error_type().is_none(),
            "before {trigger}: {:?}",
            done.error_type()
        );
        let during = host_traces();
        // v1: one group per controller (memory, pids, cpu); v2: one group with all three;
        // rootless, none (the watchdog and RLIMIT_NPROC hold the limits).
        let groups = match (rootless(), cgroup_v2()) {
            (true, _) => 0,
            (false, true) => 1,
            (false, false) => 3,
        };
        assert_eq!(during.cgroups.len(), groups, "{during:?}");
        assert_eq!(during.state_dirs.len(), 1, "{during:?}");
        // The helper, PID 1, bash, three sleepers, and whatever bash forked just now (rootless
        // the helper, outside the PID namespace, is not counted).
        let processes = sandbox_processes();
        assert!(processes.len() >= 5, "{processes:?}");

        let done = jailed.invoke(trigger).await;
        assert_eq!(done.error_type(), Some(error_type), "{trigger}");
        // Killed and reaped before the caller heard of it: every process, including the one
        // in its own session and the one ignoring SIGTERM.
        let alive: Vec<_> = processes.iter().filter(|&&p| process_alive(p)).collect();
        assert!(alive.is_empty(), "{trigger}: still running: {alive:?}");
        // The environment's cgroups and directory go as soon as it is dropped, just after.
        let mut after = host_traces();
        for _ in 0..250 {
            if after == before {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            after = host_traces();
        }
        assert_eq!(after, before, "{trigger}: left behind");
    }
    jailed.finish().await;
    assert_eq!(host_traces(), before);
}

/// The host check (the helper tried for real in throwaway children) runs once per helper
/// binary and boot: a second start skips it, a changed binary runs it again.
#[tokio::test(flavor = "multi_thread")]
async fn the_host_check_runs_once_per_helper_binary() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = JAIL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("checks");
    let wrapper = dir.path().join("lamina-wrapper");
    let write_wrapper = |extra: &str| {
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n# {extra}\ncase \"$2\" in --check) echo x >> {};; esac\nexec {} \"$@\"\n",
                count.display(),
                crate::support::lamina().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let checks = || {
        std::fs::read_to_string(&count)
            .unwrap_or_default()
            .lines()
            .count()
    };
    write_wrapper("first");
    let helper = || lamina_runtime::sandbox::jail::Helper::lamina_at(&wrapper);
    drop(lamina_runtime::sandbox::jail::JailSandbox::new(helper()).expect("the jail runs here"));
    assert_eq!(checks(), 1);
    drop(lamina_runtime::sandbox::jail::JailSandbox::new(helper()).expect("the jail runs here"));
    assert_eq!(checks(), 1, "the second start used the memo");
    // Another binary (rebuilt, replaced): checked again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_wrapper("second, a different size too");
    drop(lamina_runtime::sandbox::jail::JailSandbox::new(helper()).expect("the jail runs here"));
    assert_eq!(checks(), 2);
}
