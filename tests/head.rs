//! The server never writes a response body for HEAD, nor for 1xx, 204 and 304, whatever the
//! application returns (RFC 9110 §9.3.2, RFC 9112 §6.3; issue 12, item 1). waitress leaves this
//! to the application, and a body sent anyway is read by the client as the start of the next
//! response. The head stays as the application gave it (its `Content-Length` included, no
//! switch to chunked), and the application's body is still drained and closed.
//!
//! Raw sockets, so that every byte the server sends is seen.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{serve_fn, ServerGuard, Transport};
use waitress::{AppError, AppResult, Body, Environ, FileWrapper, StartResponse};

/// What the lazy bodies of the test application did.
#[derive(Default)]
struct Counts {
    /// Chunks handed to the server.
    chunks: AtomicUsize,
    /// Bodies dropped (WSGI's `close()`).
    closed: AtomicUsize,
}

struct CountedBody {
    left: Vec<&'static [u8]>,
    counts: Arc<Counts>,
}

impl Iterator for CountedBody {
    type Item = Result<Vec<u8>, AppError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left.is_empty() {
            return None;
        }
        self.counts.chunks.fetch_add(1, Ordering::SeqCst);
        Some(Ok(self.left.remove(0).to_vec()))
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.counts.closed.fetch_add(1, Ordering::SeqCst);
    }
}

fn server(counts: Arc<Counts>) -> ServerGuard {
    let app = move |env: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
        let path = env.get("PATH_INFO").unwrap_or("").to_string();
        let lazy = |left: Vec<&'static [u8]>| {
            Body::from_chunks(CountedBody {
                left,
                counts: Arc::clone(&counts),
            })
        };
        match path.as_str() {
            "/hello" => {
                sr.start("200 OK", [("Content-Type", "text/plain")])?;
                Ok(Body::from("Hello, World!"))
            }
            "/lazy_cl" => {
                sr.start("200 OK", [("Content-Length", "6")])?;
                Ok(lazy(vec![b"abc", b"def"]))
            }
            "/lazy_nocl" => {
                sr.start("200 OK", Vec::<(String, String)>::new())?;
                Ok(lazy(vec![b"abc", b"def"]))
            }
            "/write" => {
                sr.start("200 OK", [("Content-Length", "3")])?;
                sr.write(b"abc")?;
                Ok(Body::empty())
            }
            "/file" => {
                sr.start("200 OK", Vec::<(String, String)>::new())?;
                Ok(Body::File(FileWrapper::new(
                    std::io::Cursor::new(b"0123456789".to_vec()),
                    4,
                )))
            }
            "/error" => Err("the application failed".into()),
            "/204" => {
                sr.start("204 No Content", [("Content-Length", "3")])?;
                Ok(lazy(vec![b"abc"]))
            }
            "/304" => {
                sr.start("304 Not Modified", Vec::<(String, String)>::new())?;
                Ok(Body::from("abc"))
            }
            "/304_file" => {
                sr.start("304 Not Modified", Vec::<(String, String)>::new())?;
                Ok(Body::File(FileWrapper::new(
                    std::io::Cursor::new(b"0123456789".to_vec()),
                    4,
                )))
            }
            _ => {
                sr.start("404 Not Found", [("Content-Length", "0")])?;
                Ok(Body::empty())
            }
        }
    };
    serve_fn(app, &[], Transport::Tcp)
}

struct Connection {
    stream: TcpStream,
    /// Bytes received and not yet taken as a response.
    pending: Vec<u8>,
}

impl Connection {
    fn open(server: &ServerGuard) -> Connection {
        let port = server.tcp_port();
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Connection {
            stream,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, method: &str, path: &str, extra: &str) {
        write!(
            self.stream,
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"
        )
        .expect("send");
    }

    /// Read one response head (through the blank line).
    fn head(&mut self) -> String {
        loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.pending.drain(..end + 4).collect();
                return String::from_utf8(head).expect("an ASCII head");
            }
            let mut buf = [0; 4096];
            let n = self.stream.read(&mut buf).expect("a response head in time");
            assert!(n > 0, "closed before a full head: {:?}", self.pending);
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Read `n` body bytes.
    fn body(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            let mut buf = [0; 4096];
            let got = self.stream.read(&mut buf).expect("a body in time");
            assert!(got > 0, "closed inside a body");
            self.pending.extend_from_slice(&buf[..got]);
        }
        self.pending.drain(..n).collect()
    }

    /// Everything left until the server closes the connection.
    fn rest(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.pending);
        self.stream
            .read_to_end(&mut rest)
            .expect("the server closes the connection");
        rest
    }
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(": ")?;
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// HEAD and then GET on one keep-alive connection: the HEAD answer is its head alone, with
/// the `Content-Length` a GET gets; the GET that follows is read correctly.
fn assert_head_then_get(server: &ServerGuard, path: &str, length: &str, body: &[u8]) {
    let mut c = Connection::open(server);
    c.send("HEAD", path, "");
    let head = c.head();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(header(&head, "Content-Length"), Some(length), "{head}");
    assert_eq!(header(&head, "Transfer-Encoding"), None, "{head}");
    assert_eq!(header(&head, "Connection"), None, "kept alive: {head}");

    c.send("GET", path, "Connection: close\r\n");
    let head = c.head();
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n"),
        "the GET's answer comes right after the HEAD's head: {head}"
    );
    assert_eq!(header(&head, "Content-Length"), Some(length), "{head}");
    assert_eq!(c.body(body.len()), body);
    assert_eq!(c.rest(), b"", "nothing after the GET's body");
}

#[test]
fn head_then_get_on_one_connection() {
    let server = server(Arc::default());
    assert_head_then_get(&server, "/hello", "13", b"Hello, World!");
}

#[test]
fn head_with_write_callable_then_get() {
    let server = server(Arc::default());
    assert_head_then_get(&server, "/write", "3", b"abc");
}

#[test]
fn head_with_file_wrapper_then_get() {
    let server = server(Arc::default());
    assert_head_then_get(&server, "/file", "10", b"0123456789");
}

#[test]
fn head_drains_and_closes_a_lazy_body() {
    let counts = Arc::new(Counts::default());
    let server = server(Arc::clone(&counts));
    assert_head_then_get(&server, "/lazy_cl", "6", b"abcdef");
    assert_eq!(
        counts.chunks.load(Ordering::SeqCst),
        4,
        "both bodies drained"
    );
    assert_eq!(
        counts.closed.load(Ordering::SeqCst),
        2,
        "both bodies closed"
    );
}

#[test]
fn head_without_length_is_not_chunked() {
    let counts = Arc::new(Counts::default());
    let server = server(Arc::clone(&counts));
    let mut c = Connection::open(&server);
    c.send("HEAD", "/lazy_nocl", "");
    let head = c.head();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(header(&head, "Transfer-Encoding"), None, "{head}");
    assert_eq!(header(&head, "Content-Length"), None, "{head}");
    // As for any HTTP/1.1 response without a length, the connection closes after it.
    assert_eq!(header(&head, "Connection"), Some("close"), "{head}");
    assert_eq!(c.rest(), b"", "no body, not even a last chunk");
    assert_eq!(counts.chunks.load(Ordering::SeqCst), 2, "drained");
    assert_eq!(counts.closed.load(Ordering::SeqCst), 1, "closed");
}

#[test]
fn head_error_answer_has_no_body() {
    let server = server(Arc::default());
    let mut c = Connection::open(&server);
    c.send("HEAD", "/error", "");
    let head = c.head();
    assert!(
        head.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{head}"
    );
    assert!(header(&head, "Content-Length").is_some(), "{head}");
    assert_eq!(c.rest(), b"", "no error text after the head");
}

/// A status without a body: no body bytes, no `Content-Length` or `Transfer-Encoding`, and
/// (there being no length) the connection closes; a new connection is served as usual.
fn assert_bodiless(server: &ServerGuard, path: &str, status: &str) {
    let mut c = Connection::open(server);
    c.send("GET", path, "");
    let head = c.head();
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status}\r\n")),
        "{head}"
    );
    assert_eq!(header(&head, "Content-Length"), None, "{head}");
    assert_eq!(header(&head, "Transfer-Encoding"), None, "{head}");
    assert_eq!(c.rest(), b"", "no body for {status}");

    let mut c = Connection::open(server);
    c.send("GET", "/hello", "Connection: close\r\n");
    let head = c.head();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(c.rest(), b"Hello, World!");
}

#[test]
fn no_body_for_204() {
    let counts = Arc::new(Counts::default());
    let server = server(Arc::clone(&counts));
    assert_bodiless(&server, "/204", "204 No Content");
    assert_eq!(counts.chunks.load(Ordering::SeqCst), 1, "drained");
    assert_eq!(counts.closed.load(Ordering::SeqCst), 1, "closed");
}

#[test]
fn no_body_for_304() {
    let server = server(Arc::default());
    assert_bodiless(&server, "/304", "304 Not Modified");
}

#[test]
fn no_file_for_304() {
    let server = server(Arc::default());
    assert_bodiless(&server, "/304_file", "304 Not Modified");
}
