//! Dropping a server without `close()` releases everything it holds: its worker threads, its
//! listening sockets (the port can be bound again at once), its trigger and its socket map.
//! A `create_server` that fails to bind leaks nothing either.
//!
//! A test binary of its own with a single test, because it counts the threads and descriptors
//! of the whole process (`/proc/self/task`, `/proc/self/fd`): nothing else may run meanwhile.

mod support;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use waitress::{create_server, AppResult, Body, Environ, ServerError, StartResponse};

fn hello(_env: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    sr.start("200 OK", [("Content-Length", "5")])?;
    Ok(Body::from("hello"))
}

/// How many entries a `/proc/self` directory has.
fn entries(dir: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .count()
}

fn threads() -> usize {
    entries("/proc/self/task")
}

fn descriptors() -> usize {
    entries("/proc/self/fd")
}

/// Wait until the process is back to `threads` threads and `fds` descriptors. A worker leaves
/// the pool before its thread has quite finished, so the count may lag a moment behind; a leak
/// never comes back, and then this fails with the figures.
fn assert_back_to(what: &str, threads_before: usize, fds_before: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (t, f) = (threads(), descriptors());
        if t <= threads_before && f <= fds_before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: threads {threads_before} -> {t}, descriptors {fds_before} -> {f}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn port_of(server: &waitress::WsgiServer) -> u16 {
    server.effective_port().tcp().expect("a TCP port")
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "counts threads and descriptors through Linux's /proc/self"
)]
fn dropped_and_failed_servers_release_threads_and_descriptors() {
    support::quiet_logs();
    // One cycle first, so that whatever the process sets up once (the log sink, lazy statics)
    // is not counted as a leak.
    drop(create_server(hello, [("listen", "127.0.0.1:0")]).expect("a server"));
    assert_back_to("warm-up", usize::MAX, usize::MAX);
    let (threads_before, fds_before) = (threads(), descriptors());

    for _ in 0..50 {
        let server = create_server(hello, [("listen", "127.0.0.1:0"), ("threads", "4")])
            .expect("a server on a free port");
        let port = port_of(&server);
        // A client queued in the backlog is not a reason to keep the listener either.
        let queued = TcpStream::connect(("127.0.0.1", port)).expect("the listener listens");
        drop(server);
        drop(queued);
        // The port is free again: nothing listens, and a new listener can take it.
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still accepts connections after the drop"
        );
        drop(TcpListener::bind(("127.0.0.1", port)).expect("the port can be bound again"));
    }
    assert_back_to("50 create-and-drop cycles", threads_before, fds_before);

    // A server that ran and was closed by its own `run` is dropped afterwards: closing twice
    // is harmless.
    let server = create_server(hello, [("listen", "127.0.0.1:0")]).expect("a server");
    server.shutdown_handle().shutdown();
    server.run().expect("the loop ends at once");
    drop(server);
    assert_back_to("run, then drop", threads_before, fds_before);

    let taken = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = taken.local_addr().expect("its address").to_string();
    let (threads_before, fds_before) = (threads(), descriptors());
    // Half of them bind a first address before the taken one fails.
    let both = format!("127.0.0.1:0 {address}");
    for i in 0..20 {
        let listen = if i % 2 == 0 {
            address.as_str()
        } else {
            both.as_str()
        };
        match create_server(hello, [("listen", listen)]) {
            Err(ServerError::Bind { .. }) => {}
            Err(other) => panic!("expected a bind error, got {other}"),
            Ok(_) => panic!("{address} was bound twice"),
        }
    }
    assert_back_to("20 failed creates", threads_before, fds_before);
}
