//! A WASM function for lamina's tests, written against the guest ABI only (std, no SDK): the
//! event on stdin, the response on stdout, logs on stderr, the exit status as the outcome.
//! The event's `action` says what to do; the response reports what happened, so each test can
//! tell a confined guest from an unconfined one.

use std::io::{Read, Write};

#[path = "../../programs/flat_json.rs"]
#[allow(dead_code, reason = "the guest makes no HTTP calls")]
mod flat_json;

use flat_json::{field, json_string};

/// "ok", or the error's kind (`permission denied`, `not found`, …).
fn attempt(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => e.kind().to_string(),
    }
}

fn respond(body: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(body.as_bytes()).expect("stdout");
    out.flush().expect("stdout");
}

fn main() {
    // Room up front, so that the event is one read (a host call) rather than one per doubling.
    let mut event = String::with_capacity(64 * 1024);
    std::io::stdin().read_to_string(&mut event).expect("stdin");
    let action = field(&event, "action").unwrap_or("echo").to_owned();
    let number = |key: &str| field(&event, key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    match action.as_str() {
        "echo" => respond(&event),
        "env" => {
            let vars: Vec<String> = std::env::vars()
                .map(|(k, v)| format!("{}:{}", json_string(&k), json_string(&v)))
                .collect();
            respond(&format!("{{{}}}", vars.join(",")));
        }
        "tmp" => {
            // What an earlier invocation may have left, then leave something behind.
            let mut before: Vec<String> = std::fs::read_dir("/tmp")
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            before.sort();
            let tag = field(&event, "tag").unwrap_or("x").to_owned();
            let write = attempt(std::fs::write(format!("/tmp/left-by-{tag}"), tag.as_bytes()));
            // Held a while, so that parallel invocations overlap: none may see another's file.
            std::thread::sleep(std::time::Duration::from_millis(number("hold_ms")));
            let read_back = std::fs::read_to_string(format!("/tmp/left-by-{tag}")).unwrap_or_default();
            let mut after: Vec<String> = std::fs::read_dir("/tmp")
                .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            after.sort();
            let list = |names: &[String]| names.iter().map(|n| json_string(n)).collect::<Vec<_>>().join(",");
            respond(&format!(
                "{{\"before\":[{}],\"after\":[{}],\"write\":{},\"read_back\":{}}}",
                list(&before),
                list(&after),
                json_string(&write),
                json_string(&read_back)
            ));
        }
        "read" => {
            let path = field(&event, "path").unwrap_or("/");
            let result = attempt(std::fs::read(path).map(drop));
            respond(&format!("{{\"read\":{}}}", json_string(&result)));
        }
        "write" => {
            let path = field(&event, "path").unwrap_or("/");
            let result = attempt(std::fs::write(path, b"guest was here"));
            respond(&format!("{{\"write\":{}}}", json_string(&result)));
        }
        "fill" => {
            // Write `mb` MB into /tmp: past the ephemeral storage, this fails.
            let chunk = vec![7u8; 1024 * 1024];
            let result = (|| {
                let mut file = std::fs::File::create("/tmp/fill")?;
                for _ in 0..number("mb") {
                    file.write_all(&chunk)?;
                }
                file.sync_all()
            })();
            respond(&format!("{{\"fill\":{}}}", json_string(&attempt(result))));
        }
        "loop" => {
            eprintln!("looping forever");
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            // Touch every page, so the memory is really used.
            let mut blocks = Vec::new();
            for _ in 0..number("mb") {
                let mut block = vec![0u8; 1024 * 1024];
                block[4096] = 1;
                blocks.push(block);
            }
            respond(&format!("{{\"allocated_mb\":{}}}", blocks.len()));
        }
        "trap" => {
            eprintln!("about to trap");
            // An explicit `unreachable` instruction: the guest crashes.
            #[cfg(target_family = "wasm")]
            core::arch::wasm32::unreachable();
            #[cfg(not(target_family = "wasm"))]
            std::process::abort();
        }
        "exit" => {
            if field(&event, "json") == Some("true") {
                respond(r#"{"errorType":"GuestError","errorMessage":"failed on purpose"}"#);
            } else {
                respond("not an error document");
            }
            std::process::exit(number("code") as i32);
        }
        "log" => {
            eprintln!("guest stderr line one");
            eprintln!("guest stderr line two");
            // Numbered lines, as many as asked for: a guest that logs more than the host
            // buffers.
            let mut err = std::io::stderr().lock();
            for i in 0..number("lines") {
                writeln!(err, "guest line {i:07} {}", "x".repeat(40)).expect("stderr");
            }
            respond("\"logged\"");
        }
        "sleep" => {
            // Waits in a host call (poll_oneoff), not in wasm code.
            std::thread::sleep(std::time::Duration::from_millis(number("ms")));
            respond("\"slept\"");
        }
        "big" => {
            let bytes = number("bytes") as usize;
            let mut out = std::io::stdout().lock();
            // Past lamina's limit the host stops taking output; the guest just stops too.
            let _ = out.write_all(&vec![b'a'; bytes]);
            let _ = out.flush();
        }
        "socket" => {
            let result = std::net::TcpStream::connect("127.0.0.1:9").map(drop);
            respond(&format!("{{\"socket\":{}}}", json_string(&attempt(result))));
        }
        other => {
            eprintln!("unknown action {other}");
            std::process::exit(2);
        }
    }
}
