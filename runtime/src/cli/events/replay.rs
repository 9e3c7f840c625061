//! `lamina events replay FILE`: each record of a failure-destination or dead-letter file
//! (JSON Lines of Lambda's destination record) sent to a running `lamina serve` again, as a new
//! `Event` invocation of the function its `requestContext.functionArn` names (or `--function`)
//! with its `requestPayload` as the event, through the Invoke API (`202` expected). Every
//! line's outcome is reported by file and line number; a line that is no record is skipped,
//! and counts as failed. With `--remove`, the file is rewritten atomically without the records
//! that were replayed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

use crate::cli::serve::DEFAULT_LISTEN;

/// How long one invocation (connecting included) may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `lamina events replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A failure-destination (`on_failure = "file:PATH"`) or dead-letter
    /// (`<state dir>/dead-letters/FUNCTION.jsonl`) file.
    pub file: PathBuf,
    /// The running `lamina serve`'s address [default: http:// and the [serve] listen of the
    /// configuration, else http://127.0.0.1:9000]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Invoke this function instead of the one each record's functionArn names.
    #[arg(long, value_name = "NAME")]
    pub function: Option<String>,
    /// Read the file and say what would be sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rewrite the file without the records that were replayed (atomically, by rename).
    #[arg(long, conflicts_with = "dry_run")]
    pub remove: bool,
    /// The lamina.toml whose [serve] listen is the default endpoint [default: ./lamina.toml,
    /// when there is one]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// A record, ready to be sent again.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    /// The request id it failed under, if it says.
    request_id: Option<String>,
    /// The function its `functionArn` names.
    function: Option<String>,
    /// `requestPayload`, as JSON.
    payload: Vec<u8>,
}

/// Reads one line of a destination file. The payload is `requestPayload` serialized again:
/// the event as it was for a JSON event (all Lambda accepts); an event that was not JSON is
/// recorded as a JSON string, and goes back as that string.
fn parse_record(line: &[u8]) -> Result<Record, String> {
    let record: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    if !record.is_object() {
        return Err("not a destination record (a JSON object)".into());
    }
    let payload = record
        .get("requestPayload")
        .ok_or("no requestPayload: not a destination record")?;
    let context = &record["requestContext"];
    let function = match context.get("functionArn") {
        None => None,
        Some(arn) => Some(
            arn.as_str()
                .and_then(function_of_arn)
                .ok_or_else(|| format!("requestContext.functionArn {arn} is no function's ARN"))?,
        ),
    };
    Ok(Record {
        request_id: context["requestId"].as_str().map(str::to_owned),
        function,
        payload: serde_json::to_vec(payload).map_err(|e| e.to_string())?,
    })
}

/// The function an ARN names: `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
pub(super) fn function_of_arn(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", _, _, "function", name, ..] if is_function_name(name) => {
            Some((*name).to_owned())
        }
        _ => None,
    }
}

/// Lambda's function names: letters, digits, hyphens and underscores (what may go in the
/// Invoke API's path as it is).
fn is_function_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The server's `HOST:PORT`: `--endpoint`, else the configuration's `[serve] listen` (an
/// unspecified address, such as 0.0.0.0, reached on loopback), else lamina serve's default.
fn endpoint(args: &ReplayArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.endpoint {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("--endpoint {url:?}: not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                bail!("--endpoint {url}: {other} is not supported; lamina serve speaks http")
            }
            None => bail!("--endpoint {url:?}: expected a URL such as http://127.0.0.1:9000"),
        }
        if !matches!(uri.path(), "" | "/") {
            bail!("--endpoint {url}: expected the server's address, without a path");
        }
        let host = uri.host().context("--endpoint: no host")?;
        return Ok(format!("{host}:{}", uri.port_u16().unwrap_or(80)));
    }
    let listen = super::manifest(args.config.as_deref())?
        .and_then(|m| m.serve.listen)
        .map_or_else(|| DEFAULT_LISTEN.to_owned(), |l| l.to_string());
    let (host, port) = listen
        .rsplit_once(':')
        .context("the configured listen address has no port")?;
    if port == "0" {
        bail!("lamina serve listens on port 0 (a free port, picked at start): give --endpoint");
    }
    let host = match host {
        "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        other => other,
    };
    Ok(format!("{host}:{port}"))
}

/// One kept-alive connection to the server's Invoke API, made again when it closes.
struct Client {
    authority: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// Sends `payload` as an `Event` invocation of `function`; the new request id on `202`,
    /// else what the server said.
    async fn invoke_event(&mut self, function: &str, payload: Vec<u8>) -> Result<String, String> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.try_invoke_event(function, payload))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
    }

    async fn try_invoke_event(
        &mut self,
        function: &str,
        payload: Vec<u8>,
    ) -> Result<String, String> {
        let authority = self.authority.clone();
        let sender = self.ready().await?;
        let request = http::Request::post(format!("/2015-03-31/functions/{function}/invocations"))
            .header(http::header::HOST, authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-amz-invocation-type", "Event")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| {
            self.sender = None;
            format!("http://{}: {e}", self.authority)
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if parts.status != http::StatusCode::ACCEPTED {
            // Lambda's service errors: the type in a header, `{"Type", "Message"}` as the body.
            let kind = parts
                .headers
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok());
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|b| b["Message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
            return Err(match kind {
                Some(kind) => format!("{}: {kind}: {message}", parts.status),
                None => format!("{}: {message}", parts.status),
            });
        }
        Ok(parts
            .headers
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(no request id)")
            .to_owned())
    }

    /// The connection, made if there is none or the last one was closed.
    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_ok()
        {
            return Ok(self.sender.as_mut().expect("just checked"));
        }
        let unreachable = |e: &dyn std::fmt::Display| {
            format!(
                "cannot reach lamina serve at http://{}: {e}",
                self.authority
            )
        };
        let stream = tokio::net::TcpStream::connect(self.authority.as_str())
            .await
            .map_err(|e| unreachable(&e))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(&e))?;
        tokio::spawn(connection);
        Ok(self.sender.insert(sender))
    }
}

/// Runs `lamina events replay`.
pub(super) async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    if let Some(name) = &args.function
        && !is_function_name(name)
    {
        bail!("--function {name:?}: not a function name (letters, digits, - and _)");
    }
    let mut client = match args.dry_run {
        true => None,
        false => Some(Client {
            authority: endpoint(&args)?,
            sender: None,
        }),
    };
    let file = args.file.display();
    let mut stdout = std::io::stdout().lock();
    let (mut replayed, mut failed) = (Vec::new(), 0_usize);
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = format!("{file}:{}", index + 1);
        let record = match parse_record(line) {
            Ok(record) => record,
            Err(why) => {
                eprintln!("lamina: {at}: skipped: {why}");
                failed += 1;
                continue;
            }
        };
        let Some(function) = args.function.clone().or(record.function) else {
            eprintln!("lamina: {at}: skipped: no requestContext.functionArn (give --function)");
            failed += 1;
            continue;
        };
        let was = record.request_id.as_deref().unwrap_or("a record");
        let Some(client) = &mut client else {
            writeln!(
                stdout,
                "{at}: would replay {was} to {function}: {}",
                shortened(&record.payload)
            )?;
            replayed.push(index);
            continue;
        };
        match client.invoke_event(&function, record.payload).await {
            Ok(id) => {
                writeln!(stdout, "{at}: replayed {was} to {function} as {id}")?;
                replayed.push(index);
            }
            Err(why) => {
                eprintln!("lamina: {at}: failed: {was} to {function}: {why}");
                failed += 1;
            }
        }
    }
    let verb = if args.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    writeln!(stdout, "{verb} {}, failed {failed}", replayed.len())?;
    if args.remove && !replayed.is_empty() {
        remove_lines(&args.file, &text, &replayed)
            .with_context(|| format!("rewriting {file} without the replayed records"))?;
        writeln!(
            stdout,
            "removed {} from {file}",
            crate::cli::plural(replayed.len(), "replayed record", "replayed records")
        )?;
    }
    Ok(match failed {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// The first 200 characters of a payload, for `--dry-run`.
fn shortened(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.into_owned(),
    }
}

/// Rewrites `path` (whose contents were `read`) without the lines at `removed` (indexes,
/// ascending), by renaming a new file over it: a reader sees the old file or the new one.
/// What a server appended after `read` is carried over; a record appended between that last
/// look and the rename would be lost, a window of microseconds against a file the server
/// appends a line to per failed event.
fn remove_lines(path: &Path, read: &[u8], removed: &[usize]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut new = tempfile::NamedTempFile::new_in(dir)?;
    let mut removed = removed.iter().peekable();
    let lines: Vec<&[u8]> = read.split(|&b| b == b'\n').collect();
    let last = lines.len() - 1;
    for (index, line) in lines.into_iter().enumerate() {
        if removed.peek() == Some(&&index) {
            removed.next();
            continue;
        }
        new.write_all(line)?;
        if index < last {
            new.write_all(b"\n")?;
        }
    }
    let now = std::fs::read(path)?;
    if let Some(appended) = now.get(read.len()..) {
        new.write_all(appended)?;
    }
    let permissions = std::fs::metadata(path)?.permissions();
    new.as_file().set_permissions(permissions)?;
    new.as_file().sync_all()?;
    new.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_gives_its_function_payload_and_request_id() {
        let line = br#"{"version":"1.0","requestContext":{"requestId":"r1","functionArn":"arn:aws:lambda:us-east-1:000000000000:function:worker:$LATEST","condition":"RetriesExhausted"},"requestPayload":{"n":7}}"#;
        assert_eq!(
            parse_record(line),
            Ok(Record {
                request_id: Some("r1".into()),
                function: Some("worker".into()),
                payload: br#"{"n":7}"#.to_vec(),
            })
        );
        let text = br#"{"requestContext":{},"requestPayload":"plain text"}"#;
        assert_eq!(parse_record(text).unwrap().payload, br#""plain text""#);
        assert_eq!(parse_record(text).unwrap().function, None);
    }

    #[test]
    fn lines_that_are_no_records_say_why() {
        for (line, why) in [
            (&b"{\"requestContext\": {"[..], "not JSON"),
            (b"[1, 2]", "not a destination record"),
            (b"{\"requestContext\": {}}", "no requestPayload"),
            (
                b"{\"requestContext\": {\"functionArn\": \"arn:aws:s3:::bucket\"}, \"requestPayload\": 1}",
                "is no function's ARN",
            ),
        ] {
            let err = parse_record(line).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn function_names_come_from_arns_with_or_without_a_qualifier() {
        let arn = |s: &str| function_of_arn(s);
        assert_eq!(
            arn("arn:aws:lambda:eu-west-1:1:function:f").as_deref(),
            Some("f")
        );
        assert_eq!(
            arn("arn:aws:lambda:eu-west-1:1:function:f-2:$LATEST").as_deref(),
            Some("f-2")
        );
        assert_eq!(arn("arn:aws:lambda:eu-west-1:1:function:../x"), None);
        assert_eq!(arn("worker"), None);
    }

    #[test]
    fn removing_lines_keeps_the_others_and_what_was_appended_since() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failed.jsonl");
        let read = b"a\nb\nc\nd\n".to_vec();
        std::fs::write(&path, b"a\nb\nc\nd\ne\n").unwrap();
        remove_lines(&path, &read, &[0, 2]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\nd\ne\n");
        // A last line without its newline (being written) is kept as it is.
        std::fs::write(&path, b"a\nb").unwrap();
        remove_lines(&path, b"a\nb", &[0]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b");
    }
}
