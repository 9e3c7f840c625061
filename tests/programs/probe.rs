//! probe: a custom runtime that reports what it sees, for tests. It speaks the Runtime API over
//! one keep-alive connection with nothing but the standard library, as a minimal runtime would,
//! so that every header and status lamina sends can be observed raw.
//!
//! Init behaviour comes from `PROBE_INIT` (`error`, `exit`, `hang`); each event's `action`
//! field picks what to do with it: `report` (default) answers with the environment, the `/next`
//! headers and the event; `echo`, `error`, `exit`, `sleep`, `big`, `log`, `api_errors` and
//! `replay` drive the error paths.

mod flat_json;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use flat_json::{field, http_answer, json_string};

struct Api {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Api {
    fn connect() -> Api {
        let host = std::env::var("AWS_LAMBDA_RUNTIME_API").expect("AWS_LAMBDA_RUNTIME_API is set");
        let stream = TcpStream::connect(&host).expect("connect to the runtime api");
        stream.set_nodelay(true).expect("nodelay");
        let writer = stream.try_clone().expect("clone stream");
        Api {
            reader: BufReader::new(stream),
            writer,
            host,
        }
    }

    fn call(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut head = format!(
            "{method} /2018-06-01/runtime/{path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.writer
            .write_all(head.as_bytes())
            .expect("write request head");
        self.writer.write_all(body).expect("write request body");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut headers = BTreeMap::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("read header");
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((k, v)) = trimmed.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).expect("read body");
        Reply {
            status,
            headers,
            body,
        }
    }
}

fn json_map(map: &BTreeMap<String, String>) -> String {
    let fields: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn status_report(reply: &Reply) -> String {
    format!(
        "{{\"status\":{},\"body\":{}}}",
        reply.status,
        json_string(&String::from_utf8_lossy(&reply.body))
    )
}

fn main() {
    let mut api = Api::connect();
    match std::env::var("PROBE_INIT").as_deref() {
        Ok("error") => {
            let body = br#"{"errorType":"Runtime.ProbeInitError","errorMessage":"init failed on purpose","stackTrace":[]}"#;
            let reply = api.call(
                "POST",
                "init/error",
                &[(
                    "Lambda-Runtime-Function-Error-Type",
                    "Runtime.ProbeInitError",
                )],
                body,
            );
            eprintln!("probe: init/error answered {}", reply.status);
            std::process::exit(1);
        }
        Ok("exit") => std::process::exit(7),
        Ok("hang") => loop {
            std::thread::sleep(Duration::from_secs(60));
        },
        _ => {}
    }
    let mut previous_id = String::new();
    loop {
        let next = api.call("GET", "invocation/next", &[], b"");
        let id = next
            .headers
            .get("lambda-runtime-aws-request-id")
            .cloned()
            .unwrap_or_default();
        let event = String::from_utf8_lossy(&next.body).into_owned();
        let action = field(&event, "action").unwrap_or("report").to_owned();
        let respond = |api: &mut Api, body: &[u8]| {
            api.call("POST", &format!("invocation/{id}/response"), &[], body)
        };
        match action.as_str() {
            "echo" => {
                respond(&mut api, event.as_bytes());
            }
            "error" => {
                let body = br#"{"errorMessage":"failed on purpose","errorType":"ProbeError","stackTrace":["probe.rs"]}"#;
                api.call(
                    "POST",
                    &format!("invocation/{id}/error"),
                    &[("Lambda-Runtime-Function-Error-Type", "Unhandled")],
                    body,
                );
            }
            "exit" => {
                let code = field(&event, "code")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                std::process::exit(code);
            }
            "sleep" => {
                let ms = field(&event, "ms")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                std::thread::sleep(Duration::from_millis(ms));
                respond(&mut api, format!("{{\"slept\":{ms}}}").as_bytes());
            }
            "big" => {
                let bytes = field(&event, "bytes")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let reply = respond(&mut api, &vec![b'a'; bytes]);
                eprintln!("probe: big response answered {}", reply.status);
            }
            "log" => {
                println!("probe stdout line");
                eprintln!("probe stderr line");
                respond(&mut api, b"\"logged\"");
            }
            "api_errors" => {
                let unknown = api.call("POST", "invocation/not-a-request-id/response", &[], b"{}");
                let method = api.call("GET", &format!("invocation/{id}/response"), &[], b"");
                let missing = api.call("GET", "nope", &[], b"");
                let init = api.call("POST", "init/error", &[], b"{}");
                let next_again = api.call("GET", "invocation/next", &[], b"");
                let report = format!(
                    "{{\"unknown_id\":{},\"wrong_method\":{},\"not_found\":{},\"init_error_late\":{},\"next_in_flight\":{}}}",
                    status_report(&unknown),
                    status_report(&method),
                    status_report(&missing),
                    status_report(&init),
                    status_report(&next_again),
                );
                respond(&mut api, report.as_bytes());
            }
            "alloc" => {
                // Touch every page, so the memory is really used.
                let mb: usize = field(&event, "mb")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let mut kept: Vec<Vec<u8>> = Vec::new();
                for _ in 0..mb {
                    kept.push(vec![1u8; 1024 * 1024]);
                }
                respond(
                    &mut api,
                    format!("{{\"allocated_mb\":{}}}", kept.len()).as_bytes(),
                );
            }
            "threads" => {
                // Start sleeping threads until the system says no: a fork bomb's worth of tasks.
                let limit: usize = field(&event, "max")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(5000);
                let mut started = 0;
                let mut error = String::from("none");
                while started < limit {
                    let spawned = std::thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(|| std::thread::sleep(Duration::from_secs(3600)));
                    match spawned {
                        Ok(_) => started += 1,
                        Err(e) => {
                            error = e.kind().to_string();
                            break;
                        }
                    }
                }
                respond(
                    &mut api,
                    format!(
                        "{{\"started\":{started},\"error\":{}}}",
                        json_string(&error)
                    )
                    .as_bytes(),
                );
            }
            "connect" => {
                // Only ever given loopback addresses by the tests.
                let addr = field(&event, "addr").unwrap_or("127.0.0.1:1").to_owned();
                let result = match addr.parse::<std::net::SocketAddr>() {
                    Ok(a) => match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
                        Ok(_) => "ok".to_owned(),
                        Err(e) => e.kind().to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                respond(
                    &mut api,
                    format!("{{\"connect\":{}}}", json_string(&result)).as_bytes(),
                );
            }
            "http" => {
                // A fresh connection to a Runtime API (only ever loopback): does it answer?
                // The path is one no API serves, so an accepted request is answered at once.
                let addr = field(&event, "addr").unwrap_or("127.0.0.1:1").to_owned();
                let result = http_answer(&addr);
                respond(
                    &mut api,
                    format!("{{\"http\":{}}}", json_string(&result)).as_bytes(),
                );
            }
            "jail" => {
                respond(&mut api, jail_report().as_bytes());
            }
            "tmp-after-answer" => {
                // A file in /tmp while answering, and another as soon as the answer is
                // accepted, as a shell runtime's `curl -D /tmp/…` for the next event does.
                let _ = std::fs::write("/tmp/during", b"x");
                respond(&mut api, b"{}");
                let _ = std::fs::write("/tmp/after-answer", b"x");
            }
            "replay" => {
                let again = api.call(
                    "POST",
                    &format!("invocation/{previous_id}/response"),
                    &[],
                    b"{}",
                );
                let error = api.call(
                    "POST",
                    &format!("invocation/{previous_id}/error"),
                    &[],
                    b"{}",
                );
                let report = format!(
                    "{{\"response\":{},\"error\":{}}}",
                    status_report(&again),
                    status_report(&error)
                );
                respond(&mut api, report.as_bytes());
            }
            _ => {
                let env: BTreeMap<String, String> = std::env::vars().collect();
                let cwd = std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default();
                let report = format!(
                    "{{\"env\":{},\"headers\":{},\"status\":{},\"cwd\":{},\"pid\":{},\"event\":{}}}",
                    json_map(&env),
                    json_map(&next.headers),
                    next.status,
                    json_string(&cwd),
                    std::process::id(),
                    if event.is_empty() {
                        "null".to_owned()
                    } else {
                        event.clone()
                    },
                );
                respond(&mut api, report.as_bytes());
            }
        }
        previous_id = id;
    }
}

/// What the sandbox lets this process do: each attempt reports "ok" or the error it met.
fn jail_report() -> String {
    let attempt = |r: std::io::Result<()>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.kind().to_string(),
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default();
    let tmp_before: Vec<String> = std::fs::read_dir("/tmp")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let fields = [
        ("uid", uid),
        // The scheduling policy, field 41 of /proc/self/stat (the 39th after the name).
        (
            "sched_policy",
            std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|s| {
                    let (_, after_name) = s.rsplit_once(')')?;
                    Some(after_name.split_whitespace().nth(38)?.to_owned())
                })
                .unwrap_or_default(),
        ),
        (
            "congestion_control",
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|e| e.kind().to_string()),
        ),
        (
            "read_shadow",
            attempt(std::fs::read("/etc/shadow").map(drop)),
        ),
        (
            "list_host_root",
            attempt(std::fs::read_dir("/root").map(drop)),
        ),
        (
            "write_task",
            attempt(std::fs::write(
                std::path::Path::new(&std::env::var("LAMBDA_TASK_ROOT").unwrap_or_default())
                    .join("probe-was-here"),
                b"x",
            )),
        ),
        (
            "write_opt",
            attempt(std::fs::write("/opt/probe-was-here", b"x")),
        ),
        (
            "write_tmp",
            attempt(std::fs::write("/tmp/probe-was-here", b"x")),
        ),
        ("tmp_before", tmp_before.join(",")),
        ("pids", pids.join(",")),
        ("own_pid", std::process::id().to_string()),
        (
            "hostname",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
    ];
    // Last, and harmless even unjailed: the mount targets a scratch directory of the probe's
    // own and is undone at once if it succeeds, so no host mount can be left behind; the new
    // mount namespace, if granted, is the probe's own.
    let syscall = |ret: i32| {
        if ret == 0 {
            "ok".to_owned()
        } else {
            std::io::Error::last_os_error().kind().to_string()
        }
    };
    let scratch = std::env::temp_dir().join(format!("probe-mount-{}", std::process::id()));
    let _ = std::fs::create_dir(&scratch);
    let target = std::ffi::CString::new(scratch.as_os_str().as_encoded_bytes()).unwrap_or_default();
    // SAFETY: plain system calls with valid, NUL-terminated arguments; failure is the point.
    let mount = syscall(unsafe {
        libc::mount(
            c"none".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    });
    if mount == "ok" {
        // SAFETY: as above.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir(&scratch);
    // SAFETY: as above.
    let unshare = syscall(unsafe { libc::unshare(libc::CLONE_NEWNS) });
    // A user namespace, tried in a child: granted, it would change this process's ids.
    // SAFETY: the probe is single-threaded; the child only makes system calls and exits.
    let unshare_user = match unsafe { libc::fork() } {
        0 => {
            // SAFETY: as above.
            let code = if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
                0
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(1)
            };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        -1 => std::io::Error::last_os_error().kind().to_string(),
        child => {
            let mut status = 0;
            // SAFETY: waits for the child just forked.
            unsafe { libc::waitpid(child, &mut status, 0) };
            match libc::WEXITSTATUS(status) {
                0 => "ok".to_owned(),
                errno => std::io::Error::from_raw_os_error(errno).kind().to_string(),
            }
        }
    };
    let status_field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let mut nproc = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut nproc) };
    let mut fields = fields.to_vec();
    fields.push(("unshare", unshare));
    fields.push(("unshare_user", unshare_user));
    fields.push(("mount", mount));
    for (key, line) in [
        ("cap_eff", "CapEff:"),
        ("cap_prm", "CapPrm:"),
        ("cap_bnd", "CapBnd:"),
        ("cap_amb", "CapAmb:"),
        ("no_new_privs", "NoNewPrivs:"),
        ("seccomp", "Seccomp:"),
    ] {
        fields.push((key, status_field(line)));
    }
    fields.push((
        "pid1_root",
        attempt(std::fs::read_dir("/proc/1/root").map(drop)),
    ));
    fields.push(("nproc", nproc.rlim_cur.to_string()));
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}
