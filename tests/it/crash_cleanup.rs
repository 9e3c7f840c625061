//! Nothing is left behind after `kill -9`: a `lamina serve` killed under load leaves cgroups
//! and directories that the next start removes (without touching what a live lamina owns),
//! its sandboxes end with it, and a SIGTERM'd one reaps every process it started.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{function_with, lamina, program, test_cache};

/// A `lamina serve` of `config`, and the address it listens on.
fn serve(config: &std::path::Path, state: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(lamina())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .env("LAMINA_CACHE_DIR", test_cache())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines
        .find_map(|l| {
            let l = l.ok()?;
            let at = l.split("on http://").nth(1)?;
            at.split_whitespace().next()?.parse().ok()
        })
        .expect("lamina serve says where it listens");
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// One synchronous invocation over a fresh connection; the status code (0 if the connection
/// broke, as it does when the server is killed).
fn invoke(addr: SocketAddr, payload: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let request = format!(
        "POST /2015-03-31/functions/probe/invocations HTTP/1.1\r\nhost: x\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{payload}",
        payload.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Everything on the host named for lamina process `pid`: its cgroups in every hierarchy and
/// its entries in the run directory.
fn traces_of(pid: u32) -> Vec<String> {
    let prefix = format!("{pid}-");
    let run = lamina_runtime::run_dir::default_run_dir().unwrap();
    let mut dirs: Vec<std::path::PathBuf> = ["memory", "pids", "cpu", ""]
        .iter()
        .map(|c| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(c)
                .join("lamina")
        })
        .collect();
    dirs.push(run.join("jails"));
    dirs.push(run.join("wasm"));
    dirs.iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Sandbox helpers (`lamina __sandbox`) that lost their host: reparented to init.
fn orphaned_helpers() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat.rsplit(") ").next()?.split(' ').nth(1)?.parse().ok()?;
            let helper = cmdline.split(|b| *b == 0).any(|a| a == b"__sandbox");
            (helper && ppid == 1).then(|| format!("{pid}: {}", String::from_utf8_lossy(&cmdline)))
        })
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_kill_9_under_load_leaves_nothing_after_a_restart_and_a_sigterm() {
    let probe = function_with(&program("probe"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lamina.toml");
    std::fs::write(
        &config,
        format!(
            "[functions.probe]\ncode = {:?}\nconcurrency = 4\ntimeout = 10\n",
            probe.path()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");

    // Load: four clients invoking a function that sleeps, then kill -9 mid-flight.
    let (mut first, addr) = serve(&config, &state);
    let first_pid = first.id();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| invoke(addr, r#"{"action":"sleep","ms":300}"#))
                    .take_while(|status| *status != 0)
                    .count()
            })
        })
        .collect();
    wait_until("sandboxes in use", Duration::from_secs(20), || {
        traces_of(first_pid).len() >= 4
    });
    std::thread::sleep(Duration::from_millis(400));
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    for client in clients {
        client.join().unwrap();
    }
    assert!(
        !traces_of(first_pid).is_empty(),
        "a killed lamina cannot clean up itself (else this test shows nothing)"
    );
    // Its sandboxes end with it: each PID 1 sees its control socket close.
    wait_until(
        "the killed lamina's sandboxes end",
        Duration::from_secs(10),
        || orphaned_helpers().is_empty(),
    );

    // A restart removes what the dead one left, then serves.
    let (mut second, addr) = serve(&config, &state);
    let second_pid = second.id();
    assert_eq!(
        traces_of(first_pid),
        Vec::<String>::new(),
        "the dead lamina's cgroups and directories are gone"
    );
    assert_eq!(invoke(addr, r#"{"action":"echo"}"#), 200);
    // SIGTERM: it stops in order and reaps everything it started.
    // SAFETY: kill(2) on our own child, which we wait for below.
    unsafe { libc::kill(second_pid as i32, libc::SIGTERM) };
    let status = second.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(traces_of(second_pid), Vec::<String>::new());
    assert_eq!(orphaned_helpers(), Vec::<String>::new());
}
