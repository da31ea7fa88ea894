//! A client that goes away in the middle of a large response or of a large upload frees
//! everything the server held for it (issue 9, fault tests): the connection's socket, the
//! response's buffers (past `outbuf_overflow` they are a temporary file), the application's
//! body (dropped: WSGI's `close()`), a file-wrapper's file, and the temporary file of a request
//! body past `inbuf_overflow`. The process's descriptor count comes back to where it was, and
//! the one worker thread serves the next request.
//!
//! A test binary of its own with a single test, because it counts the descriptors of the whole
//! process (`/proc/self/fd`): nothing else may open any meanwhile.

mod support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{serve_fn, Client, Target, Transport};
use waitress::{AppResult, Body, Environ, StartResponse};

/// The streamed response: far more than the socket buffers and `outbuf_high_watermark`
/// (16 MiB) hold, so the server is still producing it when the client leaves.
const STREAM: usize = 64 << 20;
/// The file-wrapper response.
const FILE: usize = 32 << 20;
/// The declared upload, and how much of it the client sends before leaving: past
/// `inbuf_overflow` (512 KiB), so the body is in a temporary file by then.
const UPLOAD: usize = 16 << 20;
const UPLOAD_SENT: usize = 2 << 20;
/// How much of a response the client reads before it leaves.
const READ_BEFORE_LEAVING: usize = 1 << 20;
const CHUNK: usize = 1 << 20;
/// How long the server has to free everything.
const DEADLINE: Duration = Duration::from_secs(15);

/// Bodies (streams and files) the server has dropped.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// A lazy 64 MiB body that counts its drop.
struct Stream {
    left: usize,
}

impl Iterator for Stream {
    type Item = Result<Vec<u8>, waitress::AppError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let n = self.left.min(CHUNK);
        self.left -= n;
        Some(Ok(vec![b's'; n]))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

/// A temporary file for the file wrapper that counts its drop.
struct CountedFile(std::fs::File);

impl Read for CountedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Seek for CountedFile {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

impl Drop for CountedFile {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

fn app(env: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    match env.get("PATH_INFO").unwrap_or("") {
        "/stream" => {
            sr.start("200 OK", [("Content-Length", STREAM.to_string())])?;
            Ok(Body::from_chunks(Stream { left: STREAM }))
        }
        "/file" => {
            let mut file = waitress::buffers::anonymous_tempfile()?;
            let block = vec![b'f'; CHUNK];
            for _ in 0..FILE / CHUNK {
                file.write_all(&block)?;
            }
            file.seek(SeekFrom::Start(0))?;
            sr.start("200 OK", [("Content-Length", FILE.to_string())])?;
            Ok(env.file_wrapper(CountedFile(file), 64 << 10))
        }
        "/upload" => {
            let body = waitress::apps::read_body(env)?;
            let length = body.len().to_string();
            sr.start("200 OK", [("Content-Length", length.len().to_string())])?;
            Ok(Body::from(length))
        }
        _ => {
            sr.start("200 OK", [("Content-Length", "5")])?;
            Ok(Body::from("hello"))
        }
    }
}

/// The process's open descriptors, and how many of them are deleted files (temporary files:
/// `O_TMPFILE` ones read `/tmp/#123 (deleted)`, unlinked ones `... (deleted)`).
fn descriptors() -> (usize, usize) {
    let mut open = 0;
    let mut deleted = 0;
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let entry = entry.expect("a descriptor entry");
        open += 1;
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if target.to_string_lossy().ends_with("(deleted)") {
                deleted += 1;
            }
        }
    }
    (open, deleted)
}

/// Poll `done` until it holds or the deadline passes; then fail with `what` and `state()`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool, state: impl Fn() -> String) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: {}", state());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn port(target: &Target) -> u16 {
    match target {
        Target::Tcp(port) => *port,
        Target::Unix(_) => unreachable!("a TCP server"),
    }
}

/// Ask for `path`, read the start of its response, and leave.
fn leave_mid_response(port: u16, path: &str, deleted_before: usize) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("send the request");
    let mut start = vec![0; READ_BEFORE_LEAVING];
    conn.read_exact(&mut start).expect("the response has begun");
    assert!(
        start.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{path}: {:?}",
        String::from_utf8_lossy(&start[..64])
    );
    // The server goes on producing the response while this client reads no more: past
    // `outbuf_overflow` it holds it in a temporary file (for the file wrapper, the file
    // itself is one). Leave once it does.
    wait_for(
        &format!("{path}: the rest of the response waits in a temporary file"),
        || descriptors().1 > deleted_before,
        || format!("descriptors (open, deleted files): {:?}", descriptors()),
    );
    // Dropped with unread data: the kernel resets the connection.
}

/// Send the head and part of a large body, wait until the server holds that body in a
/// temporary file, and leave.
fn leave_mid_upload(port: u16, deleted_before: usize) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {UPLOAD}\r\n\r\n").as_bytes(),
    )
    .expect("send the head");
    conn.write_all(&vec![b'u'; UPLOAD_SENT])
        .expect("send part of the body");
    wait_for(
        "the partial upload is in a temporary file",
        || descriptors().1 > deleted_before,
        || format!("descriptors (open, deleted files): {:?}", descriptors()),
    );
}

/// The server answers a plain request on a fresh connection.
fn still_serves(target: &Target) {
    let mut client = Client::connect(target);
    client.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = client.read_response().expect("an answer");
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"hello"[..])
    );
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "counts descriptors through Linux's /proc/self/fd"
)]
fn a_client_gone_mid_response_or_mid_upload_leaves_nothing_behind() {
    // One worker: if a departed client kept it busy, the next request would not be served.
    let server = serve_fn(app, &[("threads", "1")], Transport::Tcp);
    let port = port(&server.target);
    let baseline = descriptors();
    let back_to_baseline = || {
        let now = descriptors();
        now.0 <= baseline.0 && now.1 <= baseline.1
    };
    let state = || {
        format!(
            "descriptors (open, deleted files) {baseline:?} -> {:?}",
            descriptors()
        )
    };
    // A request served in full leaves nothing open either (and sets up whatever is set up once).
    still_serves(&server.target);
    wait_for(
        "a complete exchange: its connection closed",
        back_to_baseline,
        state,
    );

    for (path, dropped) in [("/stream", 1), ("/file", 2)] {
        leave_mid_response(port, path, baseline.1);
        wait_for(
            &format!("{path}: the body is dropped and every descriptor closed"),
            || DROPPED.load(Ordering::SeqCst) == dropped && back_to_baseline(),
            || {
                format!(
                    "{} bodies dropped; {}",
                    DROPPED.load(Ordering::SeqCst),
                    state()
                )
            },
        );
        still_serves(&server.target);
        wait_for(
            &format!("{path}: the next client's connection closed"),
            back_to_baseline,
            state,
        );
    }

    leave_mid_upload(port, baseline.1);
    wait_for("the partial upload is freed", back_to_baseline, state);
    still_serves(&server.target);
    wait_for(
        "after the upload: the next client's connection closed",
        back_to_baseline,
        state,
    );
}
