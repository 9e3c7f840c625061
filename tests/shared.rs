//! Helpers shared by the integration tests (`it/`) and the benchmarks (`benches/`), which are
//! separate crates: each includes this file as a module.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

/// The cargo target directory this binary was built into (`target/<profile>/deps/<bin>-…` →
/// `target`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .expect("target dir above deps")
        .to_owned()
}

/// `python -m pip install --target target packages…`, quietly; panics naming the packages if
/// pip fails.
pub fn pip_install(python: &Path, target: &Path, packages: &[&str]) {
    let status = std::process::Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(target)
        .args(packages)
        .status()
        .expect("run pip");
    assert!(status.success(), "pip install {packages:?} failed");
}

/// Zips the tree under `dir` into `writer`, every entry named `prefix` + its relative path
/// (e.g. `python/…`, as a Lambda layer is laid out), with the files' own permission bits and
/// names in sorted order: how a user zips a layer.
pub fn zip_dir<W: Write + Seek>(writer: W, dir: &Path, prefix: &str) -> W {
    let mut zip = zip::ZipWriter::new(writer);
    add_dir(&mut zip, dir, dir, prefix);
    zip.finish().expect("finish the zip")
}

fn add_dir<W: Write + Seek>(zip: &mut zip::ZipWriter<W>, root: &Path, dir: &Path, prefix: &str) {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let relative = path
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy();
        let name = format!("{prefix}{relative}");
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        let options = zip::write::SimpleFileOptions::default()
            .unix_permissions(meta.permissions().mode() & 0o777);
        if meta.is_dir() {
            zip.add_directory(format!("{name}/"), options)
                .expect("add dir");
            add_dir(zip, root, &path, prefix);
        } else if meta.is_file() {
            zip.start_file(name, options).expect("start file");
            zip.write_all(&std::fs::read(&path).expect("read file"))
                .expect("write file");
        }
    }
}

/// `cargo build --quiet` of `manifest` (a package in it when given) for `target` (None: the
/// host) with `profile`, into `dir` under `target_dir()`: the tests' own target directory is
/// locked by the running `cargo test`. Returns the profile's output directory.
fn cargo_build(
    manifest: &Path,
    package: Option<&str>,
    target: Option<&str>,
    profile: &str,
    dir: &str,
) -> PathBuf {
    let target_dir = target_dir().join(dir);
    let out = match target {
        Some(target) => target_dir.join(target),
        None => target_dir.clone(),
    }
    .join(if profile == "dev" { "debug" } else { profile });
    // The rootless test run (tests/it/rootless.rs) may read the target directory, not build
    // in it: root built everything it needs beforehand.
    if std::env::var_os("LAMINA_TESTS_PREBUILT").is_some() {
        return out;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .args(["build", "--quiet", "--profile", profile, "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    if let Some(package) = package {
        command.args(["-p", package]);
    }
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    let status = command.status().expect("cargo runs");
    assert!(
        status.success(),
        "building {} ({package:?}) for {target:?} failed",
        manifest.display()
    );
    out
}

/// Builds a WASM guest crate from source with cargo (`target`: `wasm32-wasip1` or
/// `wasm32-wasip2`, installed by rust-toolchain.toml) into `target_dir()/wasm-guest`; returns
/// the module.
pub fn build_wasm(manifest: &Path, target: &str, profile: &str) -> PathBuf {
    let name = std::fs::read_to_string(manifest)
        .expect("manifest")
        .lines()
        .find_map(|l| {
            l.strip_prefix("name = \"")
                .map(|n| n.trim_end_matches('"').to_owned())
        })
        .expect("a package name");
    cargo_build(manifest, None, Some(target), profile, "wasm-guest").join(format!("{name}.wasm"))
}

/// Builds one of the workspace's examples (`examples/<package>`) in release into
/// `target_dir()/examples`; `target` None is the host. Returns the executable, or the module
/// for a WASM target.
pub fn build_example(package: &str, target: Option<&str>) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = cargo_build(&root, Some(package), target, "release", "examples");
    match target {
        Some(_) => out.join(format!("{package}.wasm")),
        None => out.join(package),
    }
}

/// Builds the `lamina` binary (release), which is also the jail's sandbox helper, for a
/// benchmark that runs the host in process: its own executable is not lamina.
pub fn lamina_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    cargo_build(&root, Some("lamina-runtime"), None, "release", "examples").join("lamina")
}

/// The tests' WASM guest (`tests/wasm-guest`) for `target`, built once per test binary.
pub fn wasm_guest(target: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, module)) = built.iter().find(|(t, _)| t == target) {
        return module.clone();
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm-guest/Cargo.toml");
    let module = build_wasm(&manifest, target, "release");
    built.push((target.to_owned(), module.clone()));
    module
}

/// A log sink that drops every line: benchmarks measure the host, not the terminal.
#[derive(Debug)]
pub struct Discard;

impl lamina_runtime::logs::LogSink for Discard {
    fn line(&self, _: &[u8]) {}
}

/// "p50 … p90 … p99 …" of sorted durations, as the benchmarks print them.
pub fn summary(sorted: &[std::time::Duration]) -> String {
    format!(
        "p50 {:?}  p90 {:?}  p99 {:?}",
        percentile(sorted, 0.5),
        percentile(sorted, 0.9),
        percentile(sorted, 0.99)
    )
}

/// The `p` quantile (0–1) of sorted durations.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// A bare hyper HTTP/1.1 server on a loopback port, spawned on `runtime`, that answers every
/// request at once with 1 KB: the floor the benchmarks measure lamina against.
pub fn bare_hyper_server(runtime: &tokio::runtime::Runtime) -> std::net::SocketAddr {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; 1024])),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The lamina binary's allocator, so that what runs lamina in process measures what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A private PostgreSQL server from the host's Debian packages (`postgresql`, which
/// `scripts/test` installs): a fresh cluster in a temporary directory, trusted on loopback,
/// on a free port; stopped and removed on drop. As root it runs as the `postgres` user the
/// package makes (PostgreSQL refuses to run as root).
pub struct Postgres {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    /// With TLS: the CA that signed the server's certificate (PEM).
    ca: Option<PathBuf>,
    /// With client certificates: the client's certificate and key (PEM), CN `lamina`.
    client: Option<(PathBuf, PathBuf)>,
    _dir: tempfile::TempDir,
}

/// What a [`Postgres`] asks of its clients' connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// Plain connections.
    Off,
    /// TLS only, with the server's certificate.
    Server,
    /// TLS only, and a client certificate instead of a password.
    ClientCerts,
}

impl Postgres {
    /// Makes and starts a cluster; waits until it answers.
    pub fn start() -> Postgres {
        Postgres::start_with(Tls::Off)
    }

    /// The same, taking connections over TLS only (`hostssl` in `pg_hba.conf`), its
    /// certificate for `127.0.0.1` signed by a CA made for it ([`Postgres::ca`]); made with
    /// the `openssl` command, which `scripts/test` installs.
    pub fn start_tls() -> Postgres {
        Postgres::start_with(Tls::Server)
    }

    /// The same, authenticating clients by certificate only (`cert` in `pg_hba.conf`): a
    /// certificate signed by the same CA whose CN is the user, `lamina`
    /// ([`Postgres::client_cert`]).
    pub fn start_tls_client_certs() -> Postgres {
        Postgres::start_with(Tls::ClientCerts)
    }

    fn start_with(tls: Tls) -> Postgres {
        use std::os::unix::process::CommandExt;
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server is not installed (Debian's postgresql; scripts/test installs it)")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("postgres").exists())
            .max()
            .expect("no /usr/lib/postgresql/*/bin/postgres");
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: getuid cannot fail.
        let root = unsafe { libc::getuid() } == 0;
        let (uid, gid) = if root {
            // SAFETY: getpwnam with a NUL-terminated name; the entry is read at once, before
            // any other call could reuse its static buffer.
            let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
            assert!(
                !entry.is_null(),
                "no postgres user (Debian's postgresql package makes it)"
            );
            // SAFETY: checked non-null above.
            unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
        } else {
            // SAFETY: getuid/getgid cannot fail.
            unsafe { (libc::getuid(), libc::getgid()) }
        };
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        let as_owner = |program: &str| {
            let mut c = std::process::Command::new(bin.join(program));
            c.uid(uid).gid(gid).current_dir(dir.path());
            c
        };
        let out = as_owner("initdb")
            .args(["-A", "trust", "-U", "lamina", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut settings = Vec::new();
        let mut client = None;
        let ca = (tls != Tls::Off).then(|| {
            let ca = make_certificates(dir.path(), uid, gid);
            let method = if tls == Tls::ClientCerts {
                client = Some(make_client_certificate(dir.path()));
                settings.push("-c".to_owned());
                settings.push(format!("ssl_ca_file={}", ca.display()));
                "cert"
            } else {
                "trust"
            };
            std::fs::write(
                data.join("pg_hba.conf"),
                format!("local all all trust\nhostssl all all 127.0.0.1/32 {method}\n"),
            )
            .unwrap();
            for (key, file) in [
                ("ssl_cert_file", "server.crt"),
                ("ssl_key_file", "server.key"),
            ] {
                settings.push("-c".to_owned());
                settings.push(format!("{key}={}", dir.path().join(file).display()));
            }
            settings.push("-c".to_owned());
            settings.push("ssl=on".to_owned());
            ca
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = as_owner("postgres")
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(dir.path())
            .args(&settings)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = Postgres {
            child,
            port,
            bin,
            ca,
            client,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while server.psql("SELECT 1").is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL did not start on port {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }

    /// The URL lamina is given.
    pub fn url(&self) -> String {
        format!("postgres://lamina@127.0.0.1:{}/postgres", self.port)
    }

    /// The CA of a server started with [`Postgres::start_tls`].
    pub fn ca(&self) -> &Path {
        self.ca.as_deref().expect("a server started with start_tls")
    }

    /// The client's certificate and key of a server started with
    /// [`Postgres::start_tls_client_certs`].
    pub fn client_cert(&self) -> (&Path, &Path) {
        let (cert, key) = self
            .client
            .as_ref()
            .expect("a server started with start_tls_client_certs");
        (cert, key)
    }

    /// Runs `sql` with psql; its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let mut psql = std::process::Command::new(self.bin.join("psql"));
        if let Some((cert, key)) = &self.client {
            psql.env("PGSSLMODE", "require")
                .env("PGSSLCERT", cert)
                .env("PGSSLKEY", key);
        }
        let out = psql
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "lamina",
                "-d",
                "postgres",
                "-At",
                "-c",
                sql,
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Stops it (a fast shutdown) and waits.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child, which we have not waited for.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// Runs `openssl` with `args` in `dir`; fails the test, with openssl's words, if it fails.
fn openssl_in(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client certificate for the user `lamina` signed by the CA [`make_certificates`] made in
/// `dir` (`client.crt`, `client.key`, the key readable by its owner only, as libpq insists).
fn make_client_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    sign(
        dir,
        "client",
        "/CN=lamina",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
    let key = dir.join("client.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (dir.join("client.crt"), key)
}

/// `NAME.key` and `NAME.crt` in `dir` for `subject`, signed by `ca.crt` with the X.509
/// extensions `extensions` (which also make it v3, the only version rustls takes).
fn sign(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let file = |ext: &str| format!("{name}.{ext}");
    let (key, csr, crt, extfile) = (file("key"), file("csr"), file("crt"), file("ext"));
    openssl_in(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ],
    );
    std::fs::write(dir.join(&extfile), extensions).unwrap();
    openssl_in(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &crt,
            "-extfile",
            &extfile,
        ],
    );
}

/// A CA and a server certificate for `127.0.0.1` and `localhost` signed by it, in `dir`
/// (`ca.crt`, `server.crt`, `server.key`, the key readable by `uid` only, as PostgreSQL
/// insists). Returns the CA's path.
fn make_certificates(dir: &Path, uid: u32, gid: u32) -> PathBuf {
    openssl_in(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=lamina test CA",
        ],
    );
    sign(
        dir,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    );
    let key = dir.join("server.key");
    std::os::unix::fs::chown(&key, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    dir.join("ca.crt")
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// wrk, the load generator of the benchmarks: installed with apt-get when missing.
pub fn ensure_wrk() {
    use std::process::Command;
    if Command::new("wrk").arg("--version").output().is_ok() {
        return;
    }
    eprintln!("wrk is missing; installing it with apt-get");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "wrk"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "wrk is needed: apt-get install wrk");
}
