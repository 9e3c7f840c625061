//! Text helpers the tests' guest programs share (the native probe and the WASM guest, which
//! carry no JSON crate), and the Runtime API reachability check the probe and the tests make.

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of `"key":` in a flat JSON object, good enough for the tests' own events.
pub fn field<'a>(event: &'a str, key: &str) -> Option<&'a str> {
    let at = event.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = event[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}

/// What a fresh connection to the Runtime API at `addr` gets for a request no API serves:
/// `answered` (an HTTP response), `closed` (hung up on unread), or the error.
pub fn http_answer(addr: &str) -> String {
    use std::io::{Read, Write};
    use std::time::Duration;
    let connected = addr
        .parse::<std::net::SocketAddr>()
        .map_err(|e| e.to_string())
        .and_then(|a| {
            std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2))
                .map_err(|e| e.to_string())
        });
    let mut stream = match connected {
        Ok(stream) => stream,
        Err(e) => return e,
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.write_all(b"GET /2018-06-01/runtime/probe HTTP/1.1\r\nHost: probe\r\n\r\n");
    let mut head = [0u8; 5];
    match stream.read(&mut head) {
        Ok(n) if head[..n].starts_with(b"HTTP/") => "answered".to_owned(),
        Ok(_) => "closed".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "closed".to_owned(),
        Err(e) => e.kind().to_string(),
    }
}
