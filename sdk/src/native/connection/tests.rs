//! The client's HTTP/1.1 against a scripted server on a loopback socket that answers as other
//! servers may: in pieces, chunked, without a length, closing kept-alive connections, or not
//! in HTTP at all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::native::{Client, ClientError};
use http::{Method, StatusCode};

/// What the server does with one request.
struct Step {
    /// The answer, written piece by piece with a pause between (so that the client's reads
    /// see it split).
    pieces: Vec<&'static [u8]>,
    /// Close the connection after the answer.
    close: bool,
}

fn step(pieces: &[&'static [u8]], close: bool) -> Step {
    Step {
        pieces: pieces.to_vec(),
        close,
    }
}

/// What the server saw: each request's head and body, and how many connections it accepted.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, Vec<u8>)>,
    connections: usize,
}

/// Serves `steps` in order, over as many connections as the client opens.
fn server(steps: Vec<Step>) -> (Client, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = Arc::clone(&seen);
    thread::spawn(move || {
        let mut steps = steps.into_iter().peekable();
        while steps.peek().is_some() {
            let (stream, _) = listener.accept().unwrap();
            record.lock().unwrap().connections += 1;
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            for step in steps.by_ref() {
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 {
                        return;
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                record.lock().unwrap().requests.push((head, body));
                for piece in step.pieces {
                    writer.write_all(piece).unwrap();
                    writer.flush().unwrap();
                    thread::sleep(Duration::from_millis(5));
                }
                if step.close {
                    break;
                }
            }
        }
    });
    (Client::new(addr.to_string()), seen)
}

#[tokio::test]
async fn answers_in_pieces_chunked_or_until_the_end_are_read_whole() {
    let (mut client, seen) = server(vec![
        // The head split mid-line, then a chunked body with an extension and a trailer.
        step(
            &[
                b"HTTP/1.1 200 OK\r\nlambda-runtime-aws-re",
                b"quest-id: a\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhel",
                b"lo\r\n7\r\n, world\r\n0\r\ntrailer: t\r\n\r\n",
            ],
            false,
        ),
        // An interim answer first.
        step(
            &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"],
            false,
        ),
        // No length: the body is what comes until the server closes.
        step(&[b"HTTP/1.1 200 OK\r\n\r\nall of ", b"this"], true),
        // The next call is on a new connection.
        step(&[b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc"], false),
    ]);
    let (status, headers, body) = client
        .call(Method::GET, "/one", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["lambda-runtime-aws-request-id"], "a");
    assert_eq!(&body[..], b"hello, world");
    let (status, _, body) = client
        .call(Method::POST, "/two", &[("x-a", "b")], b"{\"k\":1}".to_vec())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(&body[..], b"{}");
    let (_, _, body) = client
        .call(Method::GET, "/three", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(&body[..], b"all of this");
    let (_, _, body) = client
        .call(Method::GET, "/four", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(&body[..], b"abc");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.connections, 2);
    let (head, body) = &seen.requests[1];
    assert!(head.starts_with("POST /two HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-length: 7\r\n"), "{head}");
    assert!(head.contains("\r\nx-a: b\r\n"), "{head}");
    assert_eq!(body, b"{\"k\":1}");
    let (head, _) = &seen.requests[0];
    assert!(
        !head.contains("content-length"),
        "a GET has no body: {head}"
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced_and_the_call_made_again() {
    let (mut client, seen) = server(vec![
        // Kept alive as far as the client can tell, then closed by the server.
        step(&[b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1"], true),
        step(&[b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n2"], false),
    ]);
    for expected in [b"1", b"2"] {
        let (_, _, body) = client
            .call(Method::GET, "/next", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(&body[..], expected);
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.connections, 2);
    assert_eq!(seen.requests.len(), 2, "the first connection saw one call");
}

#[tokio::test]
async fn an_answer_cut_short_or_not_http_is_an_error_naming_what_failed() {
    let cases: [(&'static [u8], &str); 4] = [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            "the connection closed in the middle of the answer's body",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-le",
            "in the middle of the answer's head",
        ),
        (b"HELLO\r\n\r\n", "the answer is not HTTP/1.1"),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "chunk size is invalid",
        ),
    ];
    for (answer, expected) in cases {
        let (mut client, _) = server(vec![step(&[answer], true)]);
        let err = client
            .call(Method::GET, "/next", &[], Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    // A server that hangs up on a new connection before answering is not asked again.
    let (mut client, seen) = server(vec![step(&[], true)]);
    let err = client
        .call(Method::GET, "/next", &[], Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("closed before an answer"), "{err}");
    assert_eq!(seen.lock().unwrap().requests.len(), 1);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_memory_is_set_aside_for_it() {
    let cases: [&'static [u8]; 3] = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffff\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 67108865\r\n\r\n",
    ];
    for answer in cases {
        let (mut client, _) = server(vec![step(&[answer], true)]);
        let err = client
            .call(Method::GET, "/next", &[], Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("over the client's limit"), "{err}");
    }
}
