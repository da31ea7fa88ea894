//! systemd socket activation with the real `systemd-socket-activate` (Debian's `systemd`
//! package; `.ci/run` installs it when absent): it binds and listens, then on the first
//! connection executes `waitress-serve` with the socket as descriptor 3 and `LISTEN_FDS`/
//! `LISTEN_PID` set, which is what systemd does for a `.socket` unit.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const ACTIVATE: &str = "systemd-socket-activate";
const DEADLINE: Duration = Duration::from_secs(20);

/// `systemd-socket-activate ARGS… waitress-serve hello`, its standard error read line by line
/// on a thread; killed when dropped.
struct Activated {
    child: Child,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Activated {
    fn start(args: &[&str]) -> Activated {
        let mut child = Command::new(ACTIVATE)
            .args(args)
            .arg(env!("CARGO_BIN_EXE_waitress-serve"))
            .arg("hello")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{ACTIVATE} could not be started ({e}): install Debian's systemd package")
            });
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let line = match line {
                    Ok(line) => line,
                    Err(_) => break,
                };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Activated {
            child,
            stderr: rx,
            seen: Vec::new(),
        }
    }

    /// Wait for a standard-error line containing `text`; false if the program's stderr closed
    /// first.
    fn wait_for(&mut self, text: &str) -> bool {
        let deadline = Instant::now() + DEADLINE;
        if self.seen.iter().any(|l| l.contains(text)) {
            return true;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {text:?} on stderr within {DEADLINE:?}: {:?}", self.seen)
                }
            }
        }
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port free a moment ago (the activator must bind it itself).
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// Send a GET and read the answer to its end (the request asks for the connection to close).
fn get(mut stream: impl Read + Write, path: &str) -> String {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Start the activator on a free port, retrying if another process took the port between
/// the probe and the bind.
fn activated_tcp(extra: &[&str]) -> (Activated, u16) {
    for _ in 0..5 {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["-l", &listen]);
        let mut activated = Activated::start(&args);
        if activated.wait_for(&format!("Listening on {listen}")) {
            return (activated, port);
        }
    }
    panic!("{ACTIVATE} could not listen on a free port five times");
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

#[test]
fn serves_a_tcp_socket_passed_by_systemd_socket_activate() {
    let (mut activated, port) = activated_tcp(&[]);
    // The first connection makes the activator start waitress-serve on the socket; the
    // connection itself waits in the backlog and is served.
    let first = get(connect(port), "/");
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(first.ends_with("\r\n\r\nHello, World!"), "{first}");
    assert!(activated.wait_for(&format!("Serving on http://127.0.0.1:{port}")));
    for _ in 0..3 {
        assert!(get(connect(port), "/again").ends_with("Hello, World!"));
    }
}

#[test]
fn serves_every_socket_passed_with_their_names() {
    for _ in 0..5 {
        let (first, second) = (free_port(), free_port());
        if first == second {
            continue;
        }
        let (a, b) = (format!("127.0.0.1:{first}"), format!("127.0.0.1:{second}"));
        let mut activated = Activated::start(&["-l", &a, "-l", &b, "--fdname=web:admin"]);
        if !activated.wait_for(&format!("Listening on {b}")) {
            continue; // a port was taken meanwhile
        }
        for port in [first, second, first] {
            assert!(get(connect(port), "/").ends_with("\r\n\r\nHello, World!"));
        }
        assert!(activated.wait_for(&format!("Serving on http://{a}")));
        assert!(activated.wait_for(&format!("Serving on http://{b}")));
        return;
    }
    panic!("{ACTIVATE} could not listen on two free ports five times");
}

#[test]
fn serves_a_unix_socket_passed_by_systemd_socket_activate() {
    let dir = std::env::temp_dir().join(format!("waitress-activation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("web.sock");
    let mut activated = Activated::start(&["-l", path.to_str().unwrap()]);
    assert!(activated.wait_for("Listening on"));
    let stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let answer = get(stream, "/");
    assert!(answer.ends_with("\r\n\r\nHello, World!"), "{answer}");
    assert!(activated.wait_for(&format!("Serving on http://unix:{}", path.display())));
    drop(activated);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_passed_socket_that_is_not_listening_is_a_clear_error() {
    // --accept passes each accepted connection: a stream socket, but not a listening one.
    let (mut activated, port) = activated_tcp(&["--accept"]);
    let mut stream = connect(port);
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // (Without the "Error: " before it: the activator, writing on the same stderr, may put a
    // line of its own between the words of the child's.)
    assert!(activated.wait_for(
        "socket activation: descriptor 3 passed by the service manager is a stream socket that \
         is not listening"
    ));
}

#[test]
fn a_passed_datagram_socket_is_a_clear_error() {
    let (mut activated, port) = activated_tcp(&["--datagram"]);
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"wake up", ("127.0.0.1", port))
        .unwrap();
    assert!(activated.wait_for(
        "socket activation: descriptor 3 passed by the service manager is not a stream socket"
    ));
    // waitress-serve stopped: exec replaced the activator, so the child is the server.
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = activated.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "waitress-serve did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(1));
}
