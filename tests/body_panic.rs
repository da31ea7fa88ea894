//! A panic inside a lazy response body never hangs the connection (issue 9, defect 1).
//!
//! An application may return a body whose iterator panics after a chunk, on its first
//! `next()`, or in its `Drop` (WSGI's `close()`). A panic before any byte of the response was
//! written is answered with a 500, as for an application that panics; once the head went out
//! the connection is closed, as waitress does when `execute` raises after the headers. Either
//! way the channel is freed and the worker carries on. The same holds for an error the body
//! yields whose `Display` or `Drop` panics: the server formats it for the log and the 500.
//!
//! The fault test counts the process's descriptors, so every test of this binary holds
//! `SERIAL` while it runs: nothing else opens sockets meanwhile.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use support::{serve_fn, ServerGuard, Transport};
use waitress::{AppError, AppResult, Body, Environ, StartResponse};

/// Serialises the tests of this binary (see the module doc).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every panic this binary provokes on purpose starts with this text.
const DELIBERATE: &str = "body panicked";

/// Keep the deliberate panics (thousands in the fault test) out of the output; any other
/// panic is reported as usual.
fn hide_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !message.starts_with(DELIBERATE) {
                default(info);
            }
        }));
    });
}

/// How a body misbehaves.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Yields one chunk, then panics.
    AfterOneChunk,
    /// Panics on the first `next()`.
    FirstNext,
    /// Yields one chunk and ends; its `Drop` panics.
    InDrop,
    /// Yields nothing; its `Drop` panics.
    InDropEmpty,
    /// Yields an error whose `Display` panics (the server formats it for the log and the 500).
    ErrorDisplay,
    /// Yields an error whose `Drop` panics.
    ErrorDrop,
    /// A file wrapper over a seekable file whose reads panic.
    FileRead,
}

const FAULTS: [Fault; 7] = [
    Fault::AfterOneChunk,
    Fault::FirstNext,
    Fault::InDrop,
    Fault::InDropEmpty,
    Fault::ErrorDisplay,
    Fault::ErrorDrop,
    Fault::FileRead,
];

impl Fault {
    fn path(self) -> &'static str {
        match self {
            Fault::AfterOneChunk => "/after_one_chunk",
            Fault::FirstNext => "/first_next",
            Fault::InDrop => "/in_drop",
            Fault::InDropEmpty => "/in_drop_empty",
            Fault::ErrorDisplay => "/error_display",
            Fault::ErrorDrop => "/error_drop",
            Fault::FileRead => "/file_read",
        }
    }

    /// Whether the head goes out before the panic (then the connection is closed; otherwise
    /// the answer is a 500).
    fn after_head(self) -> bool {
        matches!(self, Fault::AfterOneChunk | Fault::InDrop | Fault::FileRead)
    }
}

struct FaultyBody {
    fault: Fault,
    yielded: bool,
}

/// An application's error that misbehaves when the server formats or drops it.
#[derive(Debug)]
struct FaultyError {
    panic_in_display: bool,
}

impl std::fmt::Display for FaultyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.panic_in_display {
            panic!("{DELIBERATE} in the error's Display");
        }
        f.write_str("a faulty error")
    }
}

impl std::error::Error for FaultyError {}

impl Drop for FaultyError {
    fn drop(&mut self) {
        if !self.panic_in_display {
            panic!("{DELIBERATE} in the error's drop");
        }
    }
}

impl Iterator for FaultyBody {
    type Item = Result<Vec<u8>, AppError>;

    fn next(&mut self) -> Option<Self::Item> {
        match (self.fault, self.yielded) {
            (Fault::FirstNext, _) => panic!("{DELIBERATE} on the first next()"),
            (Fault::AfterOneChunk, true) => panic!("{DELIBERATE} after one chunk"),
            (Fault::ErrorDisplay | Fault::ErrorDrop, _) => Some(Err(FaultyError {
                panic_in_display: matches!(self.fault, Fault::ErrorDisplay),
            }
            .into())),
            (Fault::InDropEmpty | Fault::FileRead, _) | (Fault::InDrop, true) => None,
            (Fault::AfterOneChunk | Fault::InDrop, false) => {
                self.yielded = true;
                Some(Ok(b"first".to_vec()))
            }
        }
    }
}

/// A seekable file of ten bytes whose reads panic, or, with `panic_in_drop`, whose reads give
/// `0123456789` and whose `Drop` panics.
struct FaultyFile {
    position: u64,
    panic_in_drop: bool,
}

impl std::io::Read for FaultyFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.panic_in_drop {
            panic!("{DELIBERATE} in a file's read");
        }
        let data = b"0123456789";
        let start = data.len().min(self.position as usize);
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl Drop for FaultyFile {
    fn drop(&mut self) {
        if self.panic_in_drop {
            panic!("{DELIBERATE} in a file's drop");
        }
    }
}

impl std::io::Seek for FaultyFile {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.position = match to {
            std::io::SeekFrom::Start(n) => n,
            std::io::SeekFrom::End(n) => (10 + n) as u64,
            std::io::SeekFrom::Current(n) => (self.position as i64 + n) as u64,
        };
        Ok(self.position)
    }
}

impl Drop for FaultyBody {
    fn drop(&mut self) {
        if matches!(self.fault, Fault::InDrop | Fault::InDropEmpty) {
            panic!("{DELIBERATE} in drop");
        }
    }
}

/// Counts requests to `/together` until `threads` of them wait at once.
#[derive(Default)]
struct Rendezvous {
    waiting: Mutex<usize>,
    all_here: Condvar,
}

impl Rendezvous {
    /// Wait until `count` requests are here (true) or the deadline passes (false).
    fn meet(&self, count: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut waiting = self.waiting.lock().unwrap();
        *waiting += 1;
        self.all_here.notify_all();
        while *waiting < count {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            waiting = self
                .all_here
                .wait_timeout(waiting, deadline - now)
                .unwrap()
                .0;
        }
        true
    }
}

const THREADS: usize = 4;

fn server(expose_tracebacks: bool) -> ServerGuard {
    hide_deliberate_panics();
    let rendezvous = Arc::new(Rendezvous::default());
    let app = move |env: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
        let path = env.get("PATH_INFO").unwrap_or("").to_string();
        sr.start("200 OK", [("Content-Type", "text/plain")])?;
        if path == "/together" {
            let met = rendezvous.meet(THREADS);
            return Ok(Body::from(if met { "together" } else { "alone" }));
        }
        match FAULTS.iter().find(|f| f.path() == path) {
            Some(Fault::FileRead) => Ok(Body::File(waitress::FileWrapper::new(
                FaultyFile {
                    position: 0,
                    panic_in_drop: false,
                },
                4,
            ))),
            Some(&fault) => Ok(Body::from_chunks(FaultyBody {
                fault,
                yielded: false,
            })),
            None if path == "/file_drop" => Ok(Body::File(waitress::FileWrapper::new(
                FaultyFile {
                    position: 0,
                    panic_in_drop: true,
                },
                4,
            ))),
            None => Ok(Body::from("ok")),
        }
    };
    let expose = if expose_tracebacks { "true" } else { "false" };
    let threads = THREADS.to_string();
    serve_fn(
        app,
        &[("threads", &threads), ("expose_tracebacks", expose)],
        Transport::Tcp,
    )
}

fn port(server: &ServerGuard) -> u16 {
    server.tcp_port()
}

/// Send one request (keep-alive unless `path` is `/together`) and read until the server
/// closes the connection; a connection still open after a few seconds is the hang this file
/// is about, and fails the test.
fn exchange(port: u16, path: &str) -> String {
    let connection = if path == "/together" {
        "Connection: close\r\n"
    } else {
        ""
    };
    let mut stream = connect(port);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n{connection}\r\n").expect("send");
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "GET {path}: the connection neither answered nor closed ({e}); got {:?}",
            String::from_utf8_lossy(&received)
        ),
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// A connection to the server whose reads give up after a few seconds.
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// A good request on a fresh connection is answered in full.
fn assert_served(port: u16) {
    assert_served_on(connect(port));
}

/// A good request on `stream` is answered in full, and the connection closed.
fn assert_served_on(mut stream: TcpStream) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut received = String::new();
    stream.read_to_string(&mut received).expect("a response");
    assert!(received.starts_with("HTTP/1.1 200 OK\r\n"), "{received}");
    assert!(received.ends_with("\r\n\r\nok"), "{received}");
}

/// What each fault must produce.
fn assert_answer(fault: Fault, answer: &str) {
    if let Fault::FileRead = fault {
        // The head went out with the file's length; then the connection was closed without
        // a byte of the file.
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{fault:?}: {answer}"
        );
        assert!(answer.contains("\r\nContent-Length: 10\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n"), "{fault:?}: {answer}");
    } else if fault.after_head() {
        // The head and the first chunk went out; then the connection was closed without the
        // last chunk, so the client sees a truncated response.
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{fault:?}: {answer}"
        );
        assert!(
            answer.contains("\r\n\r\n5\r\nfirst\r\n"),
            "{fault:?}: {answer}"
        );
        assert!(!answer.ends_with("0\r\n\r\n"), "{fault:?}: {answer}");
    } else {
        assert!(
            answer.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{fault:?}: {answer}"
        );
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    }
}

/// One request that meets `fault` on a fresh server: the answer `assert_answer` expects,
/// holding each of `texts`; then a good request on a new connection is served.
fn check_fault(fault: Fault, expose_tracebacks: bool, texts: &[&str]) {
    let _serial = serial();
    let server = server(expose_tracebacks);
    let answer = exchange(port(&server), fault.path());
    assert_answer(fault, &answer);
    for text in texts {
        assert!(answer.contains(text), "{fault:?}: no {text:?} in {answer}");
    }
    assert_served(port(&server));
}

#[test]
fn body_panic_after_one_chunk_closes_the_connection() {
    check_fault(Fault::AfterOneChunk, false, &[]);
}

#[test]
fn body_panic_on_first_next_is_a_500() {
    check_fault(
        Fault::FirstNext,
        false,
        &["The server encountered an unexpected internal server error"],
    );
}

/// Without `expose_tracebacks` the panic's text stays out of the answer.
#[test]
fn body_panic_text_is_not_shown_by_default() {
    let _serial = serial();
    let server = server(false);
    let answer = exchange(port(&server), Fault::FirstNext.path());
    assert!(!answer.contains(DELIBERATE), "{answer}");
}

#[test]
fn body_panic_on_first_next_with_expose_tracebacks_shows_the_panic() {
    check_fault(
        Fault::FirstNext,
        true,
        &["application panicked: body panicked on the first next()"],
    );
}

#[test]
fn body_panic_in_drop_after_the_body_closes_the_connection() {
    check_fault(Fault::InDrop, false, &[]);
}

#[test]
fn body_panic_in_drop_before_any_byte_is_a_500() {
    check_fault(
        Fault::InDropEmpty,
        true,
        &["application panicked: body panicked in drop"],
    );
}

#[test]
fn file_wrapper_read_panic_closes_the_connection() {
    check_fault(Fault::FileRead, false, &[]);
}

#[test]
fn body_error_whose_display_panics_is_a_500() {
    check_fault(
        Fault::ErrorDisplay,
        true,
        &["body panicked in the error's Display"],
    );
}

#[test]
fn body_error_whose_drop_panics_is_a_500() {
    check_fault(
        Fault::ErrorDrop,
        true,
        &[
            "\r\n\r\na faulty error\n",
            "body panicked in the error's drop",
        ],
    );
}

/// The channel drops a file wrapper once it has sent it: a panic there is logged, and the
/// response and the connection are whole.
#[test]
fn file_wrapper_drop_panic_leaves_the_connection_alive() {
    let _serial = serial();
    let server = server(false);
    let mut stream = connect(port(&server));
    stream
        .write_all(b"GET /file_drop HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut received = Vec::new();
    while !received.ends_with(b"\r\n\r\n0123456789") {
        let mut buf = [0; 1024];
        let n = stream.read(&mut buf).expect("the whole response in time");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
    }
    assert_served_on(stream);
}

/// How many descriptors the process has open.
#[cfg(target_os = "linux")]
fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "counts descriptors through Linux's /proc/self/fd"
)]
fn a_thousand_body_panics_leave_every_worker_alive_and_nothing_open() {
    #[cfg(target_os = "linux")]
    {
        let _serial = serial();
        let server = server(false);
        let port = port(&server);
        assert_served(port);
        let before = descriptors();
        let started = Instant::now();
        for i in 0..1000 {
            let fault = FAULTS[i % FAULTS.len()];
            assert_answer(fault, &exchange(port, fault.path()));
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(60),
            "1000 requests took {elapsed:?}"
        );

        // Every worker is alive: THREADS requests run at the same time and meet.
        let waiting: Vec<_> = (0..THREADS)
            .map(|_| std::thread::spawn(move || exchange(port, "/together")))
            .collect();
        for handle in waiting {
            let answer = handle.join().expect("the client thread");
            assert!(answer.ends_with("together"), "{answer}");
        }
        assert_served(port);

        // Every channel was freed: the descriptors come back to what they were.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = descriptors();
            if now <= before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "descriptors {before} before the faults, {now} after"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
