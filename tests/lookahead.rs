//! With `channel_request_lookahead` on, a client that half-closes its connection
//! (`shutdown(SHUT_WR)`) right after sending its requests still gets the response to every
//! request it sent: a plain GET, a slow application, a 32 MiB download, pipelined requests.
//! (waitress takes the end of the client's stream for a disconnect and drops them all.)

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use support::{serve_fn, ServerGuard, Transport};
use waitress::{AppResult, Body, Environ, StartResponse};

const BIG: usize = 32 << 20;

fn app(env: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    let path = env.get("PATH_INFO").unwrap_or("").to_string();
    match path.as_str() {
        "/slow" => {
            // The client's end of stream arrives while the application still runs.
            std::thread::sleep(Duration::from_millis(300));
            sr.start("200 OK", [("Content-Length", "4")])?;
            Ok(Body::from("slow"))
        }
        "/big" => {
            sr.start("200 OK", [("Content-Length", BIG.to_string())])?;
            let chunks = (0..BIG / (1 << 20)).map(|_| Ok(vec![b'x'; 1 << 20]));
            Ok(Body::from_chunks(chunks.collect::<Vec<_>>()))
        }
        _ => {
            sr.start("200 OK", [("Content-Length", path.len().to_string())])?;
            Ok(Body::from(path))
        }
    }
}

fn server() -> ServerGuard {
    serve_fn(app, &[("channel_request_lookahead", "5")], Transport::Tcp)
}

/// The same with `poll()` semantics, where a hang-up is its own event.
fn server_with_poll() -> ServerGuard {
    serve_fn(
        app,
        &[
            ("channel_request_lookahead", "5"),
            ("asyncore_use_poll", "true"),
        ],
        Transport::Tcp,
    )
}

/// Send `requests`, half-close, and read everything until the server closes.
fn half_closed_exchange(server: &ServerGuard, requests: &[u8]) -> Vec<u8> {
    let port = server.tcp_port();
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(requests).expect("send");
    conn.shutdown(Shutdown::Write).expect("half-close");
    let mut out = Vec::new();
    conn.read_to_end(&mut out)
        .expect("the server closes after answering");
    out
}

/// The bodies of the responses in `wire`, each framed by its Content-Length.
fn bodies(mut wire: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let head_end = wire
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head")
            + 4;
        let head = String::from_utf8_lossy(&wire[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200 ok"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a Content-Length")
            .trim()
            .parse()
            .expect("a number");
        let end = head_end + length;
        assert!(end <= wire.len(), "a response cut short");
        out.push(wire[head_end..end].to_vec());
        wire = &wire[end..];
    }
    out
}

#[test]
fn half_closed_client_gets_a_plain_get() {
    let server = server();
    let wire = half_closed_exchange(&server, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(bodies(&wire), [b"/plain".to_vec()]);
}

#[test]
fn half_closed_client_gets_a_slow_response() {
    let server = server();
    let wire = half_closed_exchange(&server, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(bodies(&wire), [b"slow".to_vec()]);
}

#[test]
fn half_closed_client_gets_a_32_mib_download() {
    let server = server();
    let wire = half_closed_exchange(&server, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    let got = bodies(&wire);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), BIG);
}

#[test]
fn half_closed_client_gets_every_pipelined_response() {
    let server = server();
    let wire = half_closed_exchange(
        &server,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /bb HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(
        bodies(&wire),
        [b"/a".to_vec(), b"slow".to_vec(), b"/bb".to_vec()]
    );
}

#[test]
fn half_closed_client_gets_a_download_and_pipelined_responses_with_poll() {
    let server = server_with_poll();
    let wire = half_closed_exchange(
        &server,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let got = bodies(&wire);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], b"/a");
    assert_eq!(got[1].len(), BIG);
}
