//! A running `lamina serve` for the tests: the binary on a free loopback port with its own
//! state directory, its log collected, and the requests the tests send it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::{lamina, test_cache};

/// A running `lamina serve`, its stderr collected.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    pub dir: TempDir,
}

impl Server {
    /// Writes `config` as `lamina.toml` in a fresh directory and serves it on a free port.
    pub fn start(config: &str, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lamina.toml"), config).unwrap();
        Server::start_in(dir, args)
    }

    pub fn start_in(dir: TempDir, args: &[&str]) -> Server {
        Server::start_with_env(dir, args, &[])
    }

    pub fn start_with_env(dir: TempDir, args: &[&str], env: &[(&str, &Path)]) -> Server {
        let mut child = Command::new(lamina())
            .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
            .current_dir(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--cache-dir")
            .arg(test_cache())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line
                    .split("on http://")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    // Other lines may hold "…on http://" too (a destination's URL).
                    .and_then(|s| s.parse::<SocketAddr>().ok())
                {
                    let _ = tx.send(addr);
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lamina serve did not start:\n{}", stderr.lock().unwrap());
            }
        };
        Server {
            child,
            addr,
            stderr,
            dir,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log holds `needle` `times` times.
    pub fn wait_for_log(&self, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = self.logs();
            if logs.matches(needle).count() >= times {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not {times} times in:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit; returns whether it exited 0 and the whole log.
    pub fn stop(self) -> (bool, String) {
        let (ok, logs, _) = self.stop_keeping_dir();
        (ok, logs)
    }

    /// [`Server::stop`], keeping its directory (for a restart on the same state).
    pub fn stop_keeping_dir(mut self) -> (bool, String, TempDir) {
        // SAFETY: kill(2) on our own child's pid, which it keeps until we wait for it.
        let sent = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to lamina serve");
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status.success(), self.logs(), dir)
    }

    pub async fn request(&self, request: http::Request<Full<Bytes>>) -> http::Response<Bytes> {
        send(self.addr, request).await
    }

    /// `POST` to the Invoke API.
    pub async fn invoke(
        &self,
        function: &str,
        headers: &[(&str, &str)],
        payload: impl Into<Bytes>,
    ) -> http::Response<Bytes> {
        let mut request =
            http::Request::post(format!("/2015-03-31/functions/{function}/invocations"))
                .header("host", self.addr.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.request(request.body(Full::new(payload.into())).unwrap())
            .await
    }

    /// [`Server::invoke`], again while the answer is 429 (an environment busy until its
    /// extensions are back at `/next`, or being replaced), as the SDKs retry; for up to 30 s.
    pub async fn invoke_when_free(
        &self,
        function: &str,
        payload: impl Into<Bytes>,
    ) -> http::Response<Bytes> {
        let payload = payload.into();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.invoke(function, &[], payload.clone()).await;
            if r.status() != 429 || Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get(&self, path: &str) -> http::Response<Bytes> {
        self.request(
            http::Request::get(path)
                .header("host", self.addr.to_string())
                .body(Full::default())
                .unwrap(),
        )
        .await
    }
}

impl Server {
    /// `kill -9`, as a crash or the OOM killer ends a server: nothing of lamina's own shutdown
    /// runs. Returns its log and its directory (for a restart on the same state).
    pub fn kill9(mut self) -> (String, TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The log's last lines are in the pipe when the process dies.
        std::thread::sleep(Duration::from_millis(100));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (self.logs(), dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh connection.
pub async fn send(addr: SocketAddr, request: http::Request<Full<Bytes>>) -> http::Response<Bytes> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    http::Response::from_parts(parts, body)
}

pub fn json_of(response: &http::Response<Bytes>) -> Value {
    serde_json::from_slice(response.body()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {:?}",
            String::from_utf8_lossy(response.body())
        )
    })
}

pub fn header<'a>(response: &'a http::Response<Bytes>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The request ids whose invocation ended (`END RequestId: …`) in `logs`.
pub fn ended(logs: &str) -> std::collections::BTreeSet<String> {
    logs.lines()
        .filter_map(|l| l.split("END RequestId: ").nth(1))
        .map(|id| id.trim().to_owned())
        .collect()
}

/// Sends `n` `Event` invocations with `payload`; the request ids of their 202s.
pub async fn send_events(server: &Server, function: &str, n: usize, payload: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = server
            .invoke(
                function,
                &[("x-amz-invocation-type", "Event")],
                payload.to_owned(),
            )
            .await;
        assert_eq!(r.status(), 202, "{}", server.logs());
        ids.push(header(&r, "x-amzn-RequestId").unwrap().to_owned());
    }
    ids
}

/// Waits until every id in `ids` has ended in `before` or in the server's log.
pub fn wait_all_ended(server: &Server, before: &str, ids: &[String]) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let logs = server.logs();
        let done: std::collections::BTreeSet<String> =
            ended(before).union(&ended(&logs)).cloned().collect();
        let missing: Vec<&String> = ids.iter().filter(|id| !done.contains(*id)).collect();
        if missing.is_empty() {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} accepted events never ran: {missing:?}\n{logs}",
            missing.len(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks Lambda's destination record of a successful event `{"n": 7}` of the tests' `worker`
/// function (which answers `{"done": 7}`), accepted as `request_id`.
pub fn assert_success_record(record: &Value, request_id: &str) {
    assert_eq!(record["version"], "1.0");
    assert_eq!(record["requestContext"]["requestId"], request_id);
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(
        record["requestContext"]["functionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:worker:$LATEST"
    );
    assert_eq!(record["requestPayload"], serde_json::json!({"n": 7}));
    assert_eq!(
        record["responseContext"],
        serde_json::json!({"statusCode": 200, "executedVersion": "$LATEST"})
    );
    assert_eq!(record["responsePayload"], serde_json::json!({"done": 7}));
}
