//! Rust-only: a keep-alive connection stays watched for input while its request is served
//! (`State::watch_for_input` in `channel.rs`), and the worker wakes the I/O thread at the end of
//! a request only when it must. Input that arrives while a request runs (the next request of a
//! pipelining client) is left in the socket and read once the response is done: each of the
//! three event loops answers both requests, in order; a client that sends its requests one
//! after the other on one connection is answered every time; and with `poll()` semantics a
//! client that resets its connection while its request runs is seen by the application.

mod support;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use support::{serve_fn, Client, ServerGuard, Transport};
use waitress::{AppResult, Body, Environ, StartResponse};

/// Holds `/gate` requests until the test opens it, and says when one has started.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    /// In the application: mark the request started, then wait for the gate to open.
    fn pass(&self) {
        self.start();
        self.wait_until(|state| state.1, "the test never opened the gate");
    }

    /// In the application: mark the request started.
    fn start(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    /// In the test: wait until a request is inside the application.
    fn wait_started(&self) {
        self.wait_until(|state| state.0, "the request never reached the application");
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }

    /// Wait (at most 20 s, else fail with `failure`) until `done` holds of the state.
    fn wait_until(&self, done: impl Fn(&(bool, bool)) -> bool, failure: &str) {
        let mut state = self.state.lock().unwrap();
        while !done(&state) {
            let (next, timeout) = self
                .changed
                .wait_timeout(state, Duration::from_secs(20))
                .unwrap();
            state = next;
            assert!(!timeout.timed_out(), "{failure}");
        }
    }
}

/// A server whose loop waits up to a minute for events: a wake-up the worker owes the I/O
/// thread and does not give shows as a response that never comes (the client gives up after
/// 20 s), not as one a second late.
fn server(gate: &Arc<Gate>, kw: &[(&str, &str)]) -> ServerGuard {
    let gate = Arc::clone(gate);
    let mut kw = kw.to_vec();
    kw.push(("asyncore_loop_timeout", "60"));
    serve_fn(
        move |env: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
            let path = env.get("PATH_INFO").unwrap_or("").to_string();
            if path == "/gate" {
                gate.pass();
            }
            sr.start("200 OK", [("Content-Length", path.len().to_string())])?;
            Ok(Body::from(path))
        },
        &kw,
        Transport::Tcp,
    )
}

/// The next request arrives while the first is inside the application; both are answered,
/// in order, on the same connection.
fn input_while_busy_is_answered_after(kw: &[(&str, &str)]) {
    let gate = Arc::new(Gate::default());
    let server = server(&gate, kw);
    let mut client = Client::connect(&server.target);
    client.send(b"GET /gate HTTP/1.1\r\nHost: x\r\n\r\n");
    gate.wait_started();
    client.send(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n");
    gate.open();
    for body in [&b"/gate"[..], b"/second"] {
        let response = client.read_response().expect("a response");
        response.assert_line(200, "OK", "HTTP/1.1");
        assert_eq!(response.body, body);
    }
    // And the connection is still good for another.
    client.send(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.read_response().expect("a response").body, b"/third");
}

#[test]
fn input_while_busy_is_answered_after_with_select() {
    input_while_busy_is_answered_after(&[]);
}

#[test]
fn input_while_busy_is_answered_after_with_poll() {
    input_while_busy_is_answered_after(&[("asyncore_use_poll", "true")]);
}

#[cfg(target_os = "linux")]
#[test]
fn input_while_busy_is_answered_after_with_epoll() {
    input_while_busy_is_answered_after(&[("asyncore_use_epoll", "true")]);
}

/// One request after another on one connection: each answer comes without the I/O thread
/// being woken by the trigger in between, and none is lost.
#[test]
fn sequential_keep_alive_requests_are_all_answered() {
    let gate = Arc::new(Gate::default());
    gate.open();
    for kw in [
        &[][..],
        &[("asyncore_use_poll", "true")][..],
        #[cfg(target_os = "linux")]
        &[("asyncore_use_epoll", "true")][..],
    ] {
        let server = server(&gate, kw);
        let mut client = Client::connect(&server.target);
        for i in 0..500 {
            let path = format!("/r{i}");
            client.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            let response = client.read_response().expect("a response");
            assert_eq!(response.body, path.as_bytes(), "{kw:?}");
        }
    }
}

/// With `poll()` semantics a hang-up is an event of its own: a client that resets its
/// connection while its request runs is seen at once, because the socket stays watched, and
/// `waitress.client_disconnected` says so to the application (Rust-only: waitress watches the
/// socket again only after the response, so with `channel_request_lookahead` at 0 its
/// application never sees it).
#[cfg(target_os = "linux")]
fn reset_while_busy_is_seen_by_the_application(kw: &[(&str, &str)]) {
    use std::io::Write;
    use std::os::unix::io::AsRawFd;
    let started = Arc::new(Gate::default());
    let app_started = Arc::clone(&started);
    let (app_seen, seen) = std::sync::mpsc::channel();
    let app_seen = Mutex::new(app_seen);
    let server = serve_fn(
        move |env: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
            let check = env.client_disconnected().cloned().expect("the check");
            app_started.start();
            // The check is a question to ask again and again, as in waitress's own test.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !check.is_disconnected() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = app_seen.lock().unwrap().send(check.is_disconnected());
            sr.start("200 OK", [("Content-Length", "0")])?;
            Ok(Body::empty())
        },
        kw,
        Transport::Tcp,
    );
    let port = match server.target {
        support::Target::Tcp(port) => port,
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    };
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    (&client)
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    started.wait_started();
    // Close with a reset (linger on, zero seconds), not a FIN.
    let linger: [i32; 2] = [1, 0];
    // SAFETY: `client` is an open socket for the duration of the call, and `linger` is a
    // `struct linger` (two C ints) that lives across it; the length passed is its size.
    let set = unsafe {
        setsockopt(
            client.as_raw_fd(),
            1,  // SOL_SOCKET
            13, // SO_LINGER
            linger.as_ptr().cast(),
            std::mem::size_of_val(&linger) as u32,
        )
    };
    assert_eq!(set, 0, "setsockopt(SO_LINGER)");
    drop(client);
    let detected = seen
        .recv_timeout(Duration::from_secs(20))
        .expect("the application finished");
    assert!(detected, "the application saw the reset");
}

#[cfg(target_os = "linux")]
extern "C" {
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
}

#[cfg(target_os = "linux")]
#[test]
fn reset_while_busy_is_seen_by_the_application_with_poll() {
    reset_while_busy_is_seen_by_the_application(&[("asyncore_use_poll", "true")]);
}

#[cfg(target_os = "linux")]
#[test]
fn reset_while_busy_is_seen_by_the_application_with_epoll() {
    reset_while_busy_is_seen_by_the_application(&[("asyncore_use_epoll", "true")]);
}
