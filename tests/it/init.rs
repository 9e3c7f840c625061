//! `lamina init` as a user runs it: each runtime's project is accepted by AWS's SAM translator,
//! and `lamina invoke` and `lamina serve`, started in it, run it as it was written (the Rust
//! one after `cargo build --release`); a directory that holds anything is refused and left as
//! it was.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{lamina, lamina_in, test_cache, text};
use crate::templates::{node_major, sam_accepts};

fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `lamina init hello-app ARGS` in a fresh directory; the project's path.
fn init(parent: &TempDir, args: &[&str]) -> PathBuf {
    let mut argv = vec!["init", "hello-app"];
    argv.extend_from_slice(args);
    let out = lamina_in(parent.path(), &argv);
    succeeded(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("cd hello-app"), "{stdout}");
    assert!(
        stdout.contains("lamina invoke HelloFunction --event events/event.json"),
        "{stdout}"
    );
    parent.path().join("hello-app")
}

/// Asserts the project holds exactly `files` (and the directories they are in).
fn assert_files(dir: &Path, files: &[&str]) {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    let mut expected: Vec<String> = files.iter().map(|f| (*f).to_owned()).collect();
    expected.sort();
    assert_eq!(found, expected);
}

fn template_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("template.yaml")).unwrap()
}

/// The message in an API Gateway proxy response with status 200.
fn message_of(response: &Value) -> String {
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    body["message"].as_str().unwrap().to_owned()
}

/// `lamina invoke HelloFunction --event events/event.json` in the project answers 200, with
/// the template's greeting, and says nothing of the template: lamina uses all of it.
fn assert_invoke_answers(dir: &Path) {
    let out = lamina_in(
        dir,
        &["invoke", "HelloFunction", "--event", "events/event.json"],
    );
    succeeded(&out);
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(message_of(&response), "hello world");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("template.yaml"), "{stderr}");
}

/// A `lamina serve` started in a project, its stderr collected.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    _state: TempDir,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let state = tempfile::tempdir().unwrap();
        let mut child = Command::new(lamina())
            .current_dir(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state.path())
            .env("LAMINA_CACHE_DIR", test_cache())
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
                    .and_then(|s| s.parse::<SocketAddr>().ok())
                {
                    let _ = tx.send(addr);
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lamina serve did not start:\n{}", stderr.lock().unwrap());
        };
        Server {
            child,
            addr,
            stderr,
            _state: state,
        }
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `GET path` on a plain connection: the status line and the body.
    fn get(&self, path: &str) -> (String, String) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.lines().next().unwrap_or_default().to_owned();
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked { unchunk(body) } else { body.into() };
        (status, body)
    }

    /// SIGTERM, then waits for the exit; returns whether it exited 0.
    fn stop(mut self) -> bool {
        // SAFETY: kill(2) on our own child's pid, which it keeps until we wait for it.
        let sent = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to lamina serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "lamina serve did not stop:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chunked HTTP/1.1 body, decoded.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `lamina serve` in the project answers `GET /hello` with 200 and the greeting.
fn assert_serve_answers(dir: &Path) {
    let server = Server::start(dir);
    let (status, body) = server.get("/hello");
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "{status}\n{body}\n{}",
        server.logs()
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["message"], "hello world");
    // Only the template's route is served.
    let (status, _) = server.get("/other");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let logs = server.logs();
    assert!(server.stop(), "{logs}");
}

#[test]
fn init_without_a_runtime_writes_a_python_project_of_the_hosts_version_that_runs_as_is() {
    let host_minor = Command::new("python3")
        .args(["-c", "import sys; print(sys.version_info[1])"])
        .output()
        .unwrap();
    let host_minor = text(&host_minor.stdout).trim().to_owned();
    // In the current directory, empty, named by it.
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("my-service");
    std::fs::create_dir(&project).unwrap();
    let out = lamina_in(&project, &["init"]);
    succeeded(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("(python3.{host_minor})")),
        "{stdout}"
    );
    assert!(!stdout.contains("cd "), "{stdout}");
    assert_files(
        &project,
        &[
            "template.yaml",
            "hello/app.py",
            "events/event.json",
            "README.md",
        ],
    );
    let template = template_of(&project);
    for line in [
        "Transform: AWS::Serverless-2016-10-31",
        "Description: \"my-service: a hello-world function, made by lamina init\"",
        "  HelloFunction:\n    Type: AWS::Serverless::Function\n",
        "      CodeUri: hello/\n",
        "      Handler: app.lambda_handler\n",
        &format!("      Runtime: python3.{host_minor}\n"),
        "      MemorySize: 128\n",
        "          Type: HttpApi\n          Properties:\n            Path: /hello\n            Method: GET\n",
    ] {
        assert!(template.contains(line), "{line:?} not in:\n{template}");
    }
    sam_accepts(&project.join("template.yaml"));
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(project.join("events/event.json")).unwrap())
            .unwrap();
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["rawPath"], "/hello");
    assert_eq!(event["routeKey"], "GET /hello");
    assert_eq!(event["requestContext"]["http"]["method"], "GET");
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    for command in [
        "lamina serve ",
        "curl localhost:9000/hello",
        "lamina invoke HelloFunction --event events/event.json",
        "lamina serve --watch",
    ] {
        assert!(readme.contains(command), "{command:?} not in:\n{readme}");
    }
    assert_invoke_answers(&project);
    assert_serve_answers(&project);
}

#[test]
fn init_nodejs_writes_an_es_module_for_the_hosts_node_that_runs_as_is() {
    let parent = tempfile::tempdir().unwrap();
    let project = init(&parent, &["--runtime", "nodejs", "--name", "greeter"]);
    assert_files(
        &project,
        &[
            "template.yaml",
            "hello/app.mjs",
            "events/event.json",
            "README.md",
        ],
    );
    let template = template_of(&project);
    assert!(
        template.contains(&format!("      Runtime: nodejs{}.x\n", node_major())),
        "{template}"
    );
    assert!(
        template.contains("      Handler: app.handler\n"),
        "{template}"
    );
    assert!(template.contains("Description: \"greeter: "), "{template}");
    sam_accepts(&project.join("template.yaml"));
    assert_invoke_answers(&project);
    assert_serve_answers(&project);
}

#[test]
fn init_provided_writes_an_executable_shell_bootstrap_that_runs_as_is() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let project = init(&parent, &["--runtime", "provided.al2023"]);
    assert_files(
        &project,
        &[
            "template.yaml",
            "hello/bootstrap",
            "events/event.json",
            "README.md",
        ],
    );
    let mode = std::fs::metadata(project.join("hello/bootstrap"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let template = template_of(&project);
    assert!(
        template.contains("      Runtime: provided.al2023\n"),
        "{template}"
    );
    assert!(
        template.contains("Description: \"hello-app: "),
        "{template}"
    );
    sam_accepts(&project.join("template.yaml"));
    assert_invoke_answers(&project);
    assert_serve_answers(&project);
}

#[test]
fn init_rust_writes_a_cargo_project_whose_release_build_runs_as_is() {
    let parent = tempfile::tempdir().unwrap();
    let project = init(&parent, &["--runtime", "rust", "--name", "Hello Rust"]);
    assert_files(
        &project,
        &[
            "template.yaml",
            "Cargo.toml",
            "src/main.rs",
            ".gitignore",
            "events/event.json",
            "README.md",
        ],
    );
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"hello-rust\"\n"), "{manifest}");
    let template = template_of(&project);
    for line in [
        "    Metadata:\n      BuildMethod: rust-cargolambda\n",
        "      CodeUri: target/release/\n",
        "      Handler: bootstrap\n",
        "      Runtime: provided.al2023\n",
    ] {
        assert!(template.contains(line), "{line:?} not in:\n{template}");
    }
    sam_accepts(&project.join("template.yaml"));
    // Before the build there is nothing to run, and lamina says where it looked.
    let out = lamina_in(
        &project,
        &["invoke", "HelloFunction", "--event", "events/event.json"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("CodeUri") && stderr.contains("target/release"),
        "{stderr}"
    );

    // As the user builds it: in the project, into its own target/ (not this workspace's
    // CARGO_TARGET_DIR, which the template does not look in).
    let started = Instant::now();
    let out = Command::new("cargo")
        .current_dir(&project)
        .args(["build", "--release", "--target-dir"])
        .arg(project.join("target"))
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    succeeded(&out);
    eprintln!(
        "the generated Rust project's release build took {:.1?}",
        started.elapsed()
    );
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(project.join("target/release/bootstrap").is_file());
    assert_invoke_answers(&project);
    assert_serve_answers(&project);
}

#[test]
fn init_refuses_a_directory_that_holds_anything_and_leaves_it_as_it_was() {
    let parent = tempfile::tempdir().unwrap();
    let project = parent.path().join("taken");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("template.yaml"), "mine\n").unwrap();
    let out = lamina_in(parent.path(), &["init", "taken", "--runtime", "node"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("taken is not empty") && stderr.contains("overwrites nothing"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_files(&project, &["template.yaml"]);
    assert_eq!(
        std::fs::read_to_string(project.join("template.yaml")).unwrap(),
        "mine\n"
    );

    // An unknown runtime is refused before anything is made.
    let out = lamina_in(parent.path(), &["init", "new", "--runtime", "cobol"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--runtime \"cobol\": expected python3.N"),
        "{stderr}"
    );
    assert!(!parent.path().join("new").exists());
}

#[test]
fn an_explicit_runtime_version_is_written_as_asked_and_one_the_host_lacks_is_warned_of() {
    let parent = tempfile::tempdir().unwrap();
    let out = lamina_in(parent.path(), &["init", "p", "--runtime", "python3.99"]);
    succeeded(&out);
    let template = template_of(&parent.path().join("p"));
    assert!(
        template.contains("      Runtime: python3.99\n"),
        "{template}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: runtime python3.99: needs Python 3.99"),
        "{stderr}"
    );
    // The host's own version: no warning.
    let node = format!("nodejs{}.x", node_major());
    let out = lamina_in(parent.path(), &["init", "n", "--runtime", &node]);
    succeeded(&out);
    assert_eq!(text(&out.stderr), "");
    let template = template_of(&parent.path().join("n"));
    assert!(
        template.contains(&format!("      Runtime: {node}\n")),
        "{template}"
    );
}
