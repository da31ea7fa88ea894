//! Graceful shutdown (`ShutdownHandle::shutdown_gracefully`, and `waitress-serve` on SIGTERM
//! with `--shutdown-timeout`): the listeners close at once, every request the server has read
//! gets its whole response, then the connections close.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use waitress::adjustments::Adjustments;
use waitress::server::{create_server_with, ShutdownHandle};
use waitress::{AppResult, Body, Environ, StartResponse};

const CLIENTS: usize = 100;
const WAIT: Duration = Duration::from_secs(20);

/// Poll `done` until it holds, failing with `what` after `WAIT`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What one client got: the bytes, and whether the stream ended with an error.
fn exchange(port: u16) -> Option<(Vec<u8>, bool)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(WAIT)).unwrap();
    if conn
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .is_err()
    {
        return Some((Vec::new(), true));
    }
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Some((bytes, false)),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                assert_ne!(
                    e.kind(),
                    ErrorKind::WouldBlock,
                    "no answer nor close in time"
                );
                return Some((bytes, true));
            }
        }
    }
}

/// Run `app` with `threads` workers on a server of its own thread; its port, its shutdown
/// handle and the thread, which ends when `run` returns.
fn serve_on_a_thread<A: waitress::App>(
    app: A,
    threads: &'static str,
) -> (u16, ShutdownHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let server_thread = std::thread::spawn(move || {
        let adj = Adjustments::new([("listen", "127.0.0.1:0"), ("threads", threads)]).unwrap();
        let server = create_server_with(Arc::new(app), adj).unwrap();
        tx.send((server.effective_port(), server.shutdown_handle()))
            .unwrap();
        server.run().unwrap();
    });
    let (port, handle) = rx.recv().unwrap();
    (port.tcp().unwrap(), handle, server_thread)
}

#[test]
fn shutdown_gracefully_answers_every_request_read_and_refuses_new_connections() {
    support::quiet_logs();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let entered = Arc::new(AtomicUsize::new(0));
    let app = {
        let (gate, entered) = (Arc::clone(&gate), Arc::clone(&entered));
        move |_env: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
            entered.fetch_add(1, Ordering::SeqCst);
            let (lock, cv) = &*gate;
            let open = lock.lock().unwrap();
            drop(cv.wait_timeout_while(open, WAIT, |open| !*open).unwrap());
            sr.start("200 OK", [("Content-Length", "4")])?;
            Ok(Body::from("done"))
        }
    };
    let (port, handle, server_thread) = serve_on_a_thread(app, "4");

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| std::thread::spawn(move || exchange(port)))
        .collect();
    // Every worker is inside the application: the shutdown comes mid-way.
    wait_until("four requests in the application", || {
        entered.load(Ordering::SeqCst) == 4
    });
    let shutdown = std::thread::spawn(move || handle.shutdown_gracefully(WAIT));
    wait_until("new connections refused", || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    {
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    assert!(
        shutdown.join().unwrap(),
        "every request read finished before the timeout"
    );
    server_thread.join().unwrap();

    let mut answered = 0;
    for client in clients {
        let bytes = match client.join().unwrap() {
            Some((bytes, _error)) => bytes,
            None => continue, // connected after the listener closed: refused
        };
        if bytes.is_empty() {
            continue; // never read by the server: closed unanswered
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\ndone"),
            "a complete response or none: {text:?}"
        );
        answered += 1;
    }
    assert!(
        answered >= 4,
        "the requests in the application were answered ({answered})"
    );
    assert_eq!(
        entered.load(Ordering::SeqCst),
        answered,
        "every request that reached the application was answered"
    );
}

#[test]
fn shutdown_gracefully_closes_what_is_left_at_the_timeout() {
    support::quiet_logs();
    let entered = Arc::new(AtomicUsize::new(0));
    let app = {
        let entered = Arc::clone(&entered);
        move |_env: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
            entered.fetch_add(1, Ordering::SeqCst);
            // An application slower than the shutdown timeout.
            std::thread::sleep(Duration::from_millis(1500));
            sr.start("200 OK", [("Content-Length", "4")])?;
            Ok(Body::from("late"))
        }
    };
    let (port, handle, server_thread) = serve_on_a_thread(app, "1");
    let client = std::thread::spawn(move || exchange(port));
    wait_until("the request in the application", || {
        entered.load(Ordering::SeqCst) == 1
    });
    let started = Instant::now();
    assert!(
        !handle.shutdown_gracefully(Duration::from_millis(500)),
        "the request did not finish in time"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    server_thread.join().unwrap();
    let (bytes, _) = client.join().unwrap().expect("it had connected");
    assert_eq!(bytes, b"", "closed at the timeout, unanswered");
}

/// A `waitress-serve` process and its log, killed if the test ends before it exits.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `waitress-serve --shutdown-timeout=20 echo` on a free port.
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_waitress-serve"))
            .args(["--listen=127.0.0.1:0", "--shutdown-timeout=20", "echo"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let (lines_tx, lines) = mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut server = Server {
            child,
            lines,
            port: 0,
        };
        let serving = server.next_line_with("Serving on http://");
        server.port = serving.rsplit(':').next().unwrap().parse().unwrap();
        server
    }

    /// The next log line that contains `needle`.
    fn next_line_with(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn signal(&self, name: &str) {
        let kill = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send an 8 MiB body to echo and read only the status line: the request has been read,
    /// and its response (more than 8 MiB) waits on a client that does not read. Returns the
    /// reader and the response's Content-Length.
    fn stuck_response(&self) -> (BufReader<TcpStream>, usize) {
        let conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut writer = conn.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let head = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n");
            writer.write_all(head.as_bytes()).unwrap();
            writer.write_all(&vec![b'x'; BODY]).unwrap();
        });
        let mut reader = BufReader::new(conn);
        let mut length = None;
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK\r\n", "the request was read");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length: ") {
                length = Some(value.trim().parse::<usize>().unwrap());
            }
        }
        sender.join().unwrap();
        let length = length.expect("a Content-Length");
        assert!(length > BODY);
        (reader, length)
    }
}

/// The request body echoed in the binary tests.
const BODY: usize = 8 << 20;

/// Read to the end of the stream, whether it ends cleanly or with a reset.
fn read_until_closed(reader: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                assert_ne!(e.kind(), ErrorKind::WouldBlock, "never closed");
                return out;
            }
        }
    }
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGTERM/SIGINT with kill(1), which Windows does not have"
)]
fn sigterm_with_shutdown_timeout_lets_an_in_flight_response_finish() {
    let mut server = Server::start();
    let (mut reader, length) = server.stuck_response();
    server.signal("TERM");
    let line = server.next_line_with("Shutting down: ");
    assert!(
        line.ends_with("Shutting down: 1 request in flight"),
        "{line}"
    );
    // New connections are refused at once.
    wait_until("new connections refused", || {
        TcpStream::connect(("127.0.0.1", server.port)).is_err()
    });
    let body = read_until_closed(&mut reader);
    assert_eq!(body.len(), length, "the whole response, then the close");
    assert!(body.ends_with(&vec![b'x'; BODY]));
    let line = server.next_line_with("Shutting down: ");
    assert!(line.ends_with("Shutting down: finished"), "{line}");
    let status = server.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGTERM/SIGINT with kill(1), which Windows does not have"
)]
fn a_second_signal_stops_at_once() {
    let mut server = Server::start();
    let (mut reader, length) = server.stuck_response();
    server.signal("TERM");
    server.next_line_with("Shutting down: 1 request in flight");
    server.signal("INT");
    // The server exits with the response still unread (the client reads nothing meanwhile).
    let status = server.wait_exit();
    assert!(status.success(), "{status}");
    let body = read_until_closed(&mut reader);
    assert!(body.len() < length, "the response was cut short");
}
