//! Watch-mode benchmark: from saving a Python handler (a managed `python3.11` function, the
//! runtime client cached) to the first answer of the new version, through `lamina serve
//! --watch` (release build, jailed). Run with `cargo bench -p lamina-tests --bench reload`;
//! figures go in SPECIFICATION.md (target: ≤ 500 ms).
//!
//! For scale, the same run measures the floor a reload cannot beat: the quiet period the
//! watcher waits for ([`QUIET_MS`]) plus the function's own cold start, taken as the first
//! invocation after `lamina serve` started. `BENCH_RELOADS` sets the count (default 20).

#[path = "../shared.rs"]
#[allow(dead_code, reason = "the benchmark uses part of the shared helpers")]
mod shared;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The watcher's quiet period (`lamina_runtime::serve::watch::QUIET`).
const QUIET_MS: u64 = 100;

/// One Invoke API call; the answer's body.
fn invoke(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let request = format!(
        "POST /2015-03-31/functions/py/invocations HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

fn main() {
    let reloads: usize = std::env::var("BENCH_RELOADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let lamina = shared::lamina_binary();
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("py");
    std::fs::create_dir(&code).unwrap();
    let handler = |v: usize| format!("def handler(event, context):\n    return {{\"v\": {v}}}\n");
    std::fs::write(code.join("app.py"), handler(0)).unwrap();
    std::fs::write(
        dir.path().join("lamina.toml"),
        "[functions.py]\ncode = \"py\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n",
    )
    .unwrap();
    let mut child = Command::new(&lamina)
        .current_dir(dir.path())
        .args(["serve", "--watch", "--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--cache-dir")
        .arg(shared::target_dir().join("bench-cache"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start lamina serve");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line
                .split("on http://")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
            {
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("lamina serve started");
    let started = Instant::now();
    assert!(invoke(addr).contains("\"v\": 0"));
    let cold = started.elapsed();

    let mut times = Vec::with_capacity(reloads);
    for v in 1..=reloads {
        // Let the previous version's environment settle, as between two saves by hand.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(code.join("app.py"), handler(v)).unwrap();
        let saved = Instant::now();
        let expected = format!("\"v\": {v}");
        loop {
            if invoke(addr).contains(&expected) {
                break;
            }
            assert!(
                saved.elapsed() < Duration::from_secs(10),
                "reload {v} never answered"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        times.push(saved.elapsed());
    }
    let _ = child.kill();
    let _ = child.wait();
    times.sort();
    println!(
        "reload: save → first answer of the new version, {reloads} reloads: {}  max {:?}",
        shared::summary(&times),
        times.last().unwrap()
    );
    println!(
        "floor: quiet period {QUIET_MS} ms + cold first invocation {cold:?} = {:?}",
        Duration::from_millis(QUIET_MS) + cold
    );
}
