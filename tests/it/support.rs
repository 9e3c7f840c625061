//! Shared test support: functions made from the guest programs, an in-process pool with a
//! log sink the tests can read, and the paths of built binaries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lamina_runtime::config::FunctionConfig;
use lamina_runtime::invoke::{Completed, InvokeRequest};
use lamina_runtime::logs::MemorySink;
use lamina_runtime::pool::FunctionPool;
use lamina_runtime::sandbox::Sandbox;
use lamina_runtime::sandbox::jail::JailSandbox;
use lamina_runtime::sandbox::process::ProcessSandbox;
use lamina_runtime::sandbox::wasm::WasmSandbox;
use tempfile::TempDir;

/// A built guest program (a bin of this package).
pub fn program(name: &str) -> PathBuf {
    match name {
        "probe" => PathBuf::from(env!("CARGO_BIN_EXE_probe")),
        "echo-rs" => PathBuf::from(env!("CARGO_BIN_EXE_echo-rs")),
        other => panic!("no guest program {other}"),
    }
}

pub use crate::shared::target_dir;

/// The jail's sandbox helper for tests that run the host in process: the `lamina` binary.
pub fn lamina_helper() -> lamina_runtime::sandbox::jail::Helper {
    lamina_runtime::sandbox::jail::Helper::lamina_at(lamina())
}

/// The `lamina` binary. `cargo test --workspace` builds it before running any test because
/// `lamina-runtime` has an integration test of its own (`runtime/tests/cli_surface.rs`).
pub fn lamina() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile dir")
        .join("lamina");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A cache directory for tests that do not look at the cache itself: the target directory's,
/// or, for the rootless run (`crate::rootless`), one its user owns.
pub fn test_cache() -> PathBuf {
    match std::env::var_os("LAMINA_TESTS_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => target_dir().join("test-cache"),
    }
}

/// Whether these tests run without root (the rootless run of the jail's tests): the jail is
/// then the rootless one.
pub fn rootless() -> bool {
    // SAFETY: geteuid only reads this process's credentials.
    unsafe { libc::geteuid() != 0 }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// A function directory whose `bootstrap` is a copy of `program`.
pub fn function_with(program_path: &Path) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(program_path, dir.path().join("bootstrap")).expect("copy bootstrap");
    dir
}

pub use crate::shared::wasm_guest;

/// A function directory holding `module` as `bootstrap.wasm`.
pub fn function_with_module(module: &Path) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(module, dir.path().join("bootstrap.wasm")).expect("copy module");
    dir
}

/// A function directory with a script `bootstrap` and extra files.
pub fn function_from_files(files: &[(&str, &str, bool)]) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text, executable) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write function file");
        let mode = if *executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    dir
}

/// A pool for one function, running in this process, with its logs kept in memory.
pub struct Harness {
    pub pool: FunctionPool,
    pub logs: Arc<MemorySink>,
    _code: TempDir,
}

impl Harness {
    pub fn start(code: TempDir, tweak: impl FnOnce(&mut FunctionConfig)) -> Harness {
        Harness::start_in(Arc::new(ProcessSandbox), code, tweak)
    }

    /// The same, in the native jail.
    pub fn jailed(code: TempDir, tweak: impl FnOnce(&mut FunctionConfig)) -> Harness {
        // One sandbox kept ready, as `lamina serve` does: the environments take built-ahead
        // sandboxes (a cold start without any ready is what `jailed_cold` runs).
        let jail = JailSandbox::new(lamina_helper())
            .expect("the native jail runs here (as root, lamina built by cargo test --workspace)")
            .with_ready(1);
        Harness::start_in(Arc::new(jail), code, tweak)
    }

    /// Jailed, each environment's sandbox built when it starts, nothing ahead: what is on the
    /// host then belongs to the environments alone.
    pub fn jailed_cold(code: TempDir, tweak: impl FnOnce(&mut FunctionConfig)) -> Harness {
        let jail = JailSandbox::new(lamina_helper())
            .expect("the native jail runs here (as root, lamina built by cargo test --workspace)");
        Harness::start_in(Arc::new(jail), code, tweak)
    }

    /// In wasmtime: one WASM backend shared by every test of this binary, as one lamina
    /// process has one.
    pub fn wasm(code: TempDir, tweak: impl FnOnce(&mut FunctionConfig)) -> Harness {
        static WASM: std::sync::OnceLock<Arc<WasmSandbox>> = std::sync::OnceLock::new();
        let sandbox = WASM.get_or_init(|| {
            Arc::new(
                WasmSandbox::new(&test_cache(), &lamina_helper())
                    .expect("the WASM backend runs here"),
            )
        });
        Harness::start_in(sandbox.clone(), code, tweak)
    }

    pub fn start_in(
        sandbox: Arc<dyn Sandbox>,
        code: TempDir,
        tweak: impl FnOnce(&mut FunctionConfig),
    ) -> Harness {
        let mut config = FunctionConfig {
            name: Some("probe".into()),
            code: code.path().to_owned(),
            cache_dir: Some(test_cache()),
            // Under software emulation (the cgroup v2 guest sets LAMINA_TESTS_EMULATED) work
            // is several times slower: a test that does not set its own timeout gets room.
            timeout_secs: std::env::var_os("LAMINA_TESTS_EMULATED").map(|_| 60),
            ..Default::default()
        };
        tweak(&mut config);
        let spec = Arc::new(config.resolve().expect("valid config"));
        let logs = Arc::new(MemorySink::default());
        let pool = FunctionPool::start(spec, sandbox, logs.clone());
        Harness {
            pool,
            logs,
            _code: code,
        }
    }

    pub fn probe(tweak: impl FnOnce(&mut FunctionConfig)) -> Harness {
        Harness::start(function_with(&program("probe")), tweak)
    }

    pub async fn invoke(&self, payload: &str) -> Completed {
        self.invoke_request(InvokeRequest {
            payload: Bytes::from(payload.to_owned()),
            ..Default::default()
        })
        .await
    }

    pub async fn invoke_request(&self, request: InvokeRequest) -> Completed {
        self.pool.invoke(request).await
    }

    /// The invocation's body parsed as JSON.
    pub async fn invoke_json(&self, payload: &str) -> (Completed, serde_json::Value) {
        let done = self.invoke(payload).await;
        let value = serde_json::from_slice(&done.body()).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&done.body())
            )
        });
        (done, value)
    }

    /// Log lines, after shutting the pool down so that every REPORT has been written.
    pub async fn finish(self) -> Vec<String> {
        self.pool.shutdown().await;
        self.logs.lines()
    }
}

/// The `Max Memory Used` figure (MB) of a REPORT line.
pub fn max_memory_used_mb(report: &str) -> u64 {
    report
        .split("Max Memory Used: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Max Memory Used in {report:?}"))
}

/// Whether a process still exists (a zombie counts as gone).
pub fn process_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Python's official runtime interface client, installed once per target directory by pip
/// (the project's own test setup; pinned). Returns (python interpreter, site directory).
pub fn python_ric() -> (PathBuf, PathBuf) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is installed");
    let python = PathBuf::from(String::from_utf8(python.stdout).expect("utf8").trim());
    let site = target_dir()
        .join("test-deps")
        .join("python-awslambdaric-4.2.2");
    if !site.join("awslambdaric").exists() {
        let staging = tempfile::tempdir_in(target_dir()).expect("staging dir");
        crate::shared::pip_install(&python, staging.path(), &["awslambdaric==4.2.2"]);
        std::fs::create_dir_all(site.parent().unwrap()).unwrap();
        // Another test binary may have won the race; its copy is as good as ours.
        let _ = std::fs::rename(staging.keep(), &site);
    }
    // A temporary directory is its owner's alone: the rootless run's user reads it too.
    let _ = std::fs::set_permissions(&site, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    (python, site)
}

/// boto3, the AWS SDK for Python, installed once per target directory by pip (pinned).
/// Returns (python interpreter, site directory).
pub fn boto3() -> (PathBuf, PathBuf) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (python, _) = python_ric();
    let site = target_dir().join("test-deps").join("python-boto3-1.44.5");
    if !site.join("boto3").exists() {
        let staging = tempfile::tempdir_in(target_dir()).expect("staging dir");
        crate::shared::pip_install(&python, staging.path(), &["boto3==1.44.5"]);
        let _ = std::fs::rename(staging.keep(), &site);
    }
    (python, site)
}

/// A host of the tests' own on a network of its own: a network namespace made by a thread of
/// this process (so it ends with the process, with nothing to clean up), joined to the host by
/// a veth pair (`10.203.N.1` here, `10.203.N.2` there), with an HTTP server that answers every
/// request `200 test-host`. Returns the server's address. The rootless run gets the one its
/// root parent made (`LAMINA_TESTS_TEST_HOST`): an unprivileged user may not make a veth pair.
pub fn test_host() -> std::net::SocketAddr {
    static HOST: std::sync::OnceLock<std::net::SocketAddr> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| {
        if let Some(addr) = std::env::var_os("LAMINA_TESTS_TEST_HOST") {
            return addr
                .to_str()
                .unwrap()
                .parse()
                .expect("LAMINA_TESTS_TEST_HOST");
        }
        make_test_host()
    })
}

fn make_test_host() -> std::net::SocketAddr {
    use std::process::Command;
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    let n = std::process::id() % 250 + 1;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: unshare and gettid change or read only this thread's own state.
        let tid = unsafe {
            assert_eq!(libc::unshare(libc::CLONE_NEWNET), 0, "unshare(net)");
            libc::gettid()
        };
        tid_tx.send(tid).unwrap();
        go_rx.recv().unwrap();
        let listener = std::net::TcpListener::bind(format!("10.203.{n}.2:0")).unwrap();
        addr_tx.send(listener.local_addr().unwrap()).unwrap();
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut stream = stream;
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntest-host",
                );
            });
        }
    });
    let tid = tid_rx.recv().unwrap().to_string();
    let (outside, netns) = (format!("ltest{n}"), format!("/proc/{tid}/ns/net"));
    let _ = Command::new("ip").args(["link", "del", &outside]).output();
    run(&[
        "ip", "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &tid,
    ]);
    run(&[
        "ip",
        "addr",
        "add",
        &format!("10.203.{n}.1/24"),
        "dev",
        &outside,
    ]);
    run(&["ip", "link", "set", &outside, "up"]);
    let inside =
        format!("ip addr add 10.203.{n}.2/24 dev eth0 && ip link set eth0 up && ip link set lo up");
    run(&["nsenter", &format!("--net={netns}"), "sh", "-c", &inside]);
    go_tx.send(()).unwrap();
    addr_rx.recv().unwrap()
}

/// AWS's own SAM translator (`aws-sam-translator` on PyPI, pinned, with PyYAML for its
/// template reader), installed once per target directory: the checker that every template
/// lamina's tests run is one SAM itself accepts.
pub fn sam_translator() -> (PathBuf, PathBuf) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (python, _) = python_ric();
    let site = target_dir()
        .join("test-deps")
        .join("python-aws-sam-translator-1.115.0");
    if !site.join("samtranslator").exists() {
        let staging = tempfile::tempdir_in(target_dir()).expect("staging dir");
        crate::shared::pip_install(
            &python,
            staging.path(),
            &["aws-sam-translator==1.115.0", "PyYAML==6.0.3"],
        );
        std::fs::create_dir_all(site.parent().unwrap()).unwrap();
        let _ = std::fs::rename(staging.keep(), &site);
    }
    (python, site)
}

/// What AWS's SAM translator says of the template at `path` with `parameters` (a JSON
/// object): `Ok(())` when it accepts it, else its reasons. Local `CodeUri` and `ContentUri`
/// paths stand for the S3 objects a deploy would upload, as `sam validate` treats them.
pub fn sam_translates(path: &Path, parameters: &str) -> Result<(), String> {
    const CHECK: &str = r#"
import json, sys
from samtranslator.yaml_helper import yaml_parse
from samtranslator.translator.transform import transform
from samtranslator.model.exceptions import InvalidDocumentException

class NoManagedPolicies:
    def load(self):
        return {}

template = yaml_parse(open(sys.argv[1]).read())
for resource in (template.get("Resources") or {}).values():
    props = resource.get("Properties") or {}
    for key in ("CodeUri", "ContentUri"):
        if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
            props[key] = "s3://bucket/key"
try:
    transform(template, json.loads(sys.argv[2]), NoManagedPolicies())
except InvalidDocumentException as e:
    print("; ".join(str(c) for c in e.causes))
    sys.exit(1)
"#;
    let (python, site) = sam_translator();
    let out = std::process::Command::new(python)
        .args(["-c", CHECK])
        .arg(path)
        .arg(parameters)
        .env("PYTHONPATH", site)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("run the SAM translator");
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(String::from_utf8_lossy(&out.stdout).into_owned()),
        _ => panic!(
            "the SAM translator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `lamina ARGS` run in `dir` with the tests' cache and no stdin, to its end.
pub fn lamina_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(lamina())
        .current_dir(dir)
        .args(args)
        .env("LAMINA_CACHE_DIR", test_cache())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run lamina")
}

/// Bytes a process wrote, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
