//! Slowloris: clients that trickle a request head one byte at a time. Each byte counts as
//! activity for `channel_timeout`, so without `request_header_timeout` they hold their
//! connections (and places under `connection_limit`) for as long as they like; with it, each
//! is closed once its head has taken longer than the deadline, and normal clients get in.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{serve_fn, Client, ServerGuard, Transport};
use waitress::{AppResult, Body, Environ, StartResponse};

const TRICKLERS: usize = 50;

fn hello(_env: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    sr.start("200 OK", [("Content-Length", "5")])?;
    Ok(Body::from("hello"))
}

fn port(server: &ServerGuard) -> u16 {
    server.tcp_port()
}

/// Whether the server has closed `conn` (read sees the end, or an error).
fn closed(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Open `TRICKLERS` connections, say so on `ready`, then send each one header byte every
/// 100 ms for at most `limit`, stopping early once the server has closed them all. Returns
/// how many the server closed.
fn trickle(port: u16, limit: Duration, ready: mpsc::Sender<()>) -> usize {
    let mut conns: Vec<(TcpStream, bool)> = (0..TRICKLERS)
        .map(|_| {
            let conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            conn.set_nonblocking(true).unwrap();
            (conn, false)
        })
        .collect();
    for (conn, _) in &mut conns {
        conn.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").unwrap();
    }
    ready.send(()).unwrap();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && conns.iter().any(|(_, gone)| !gone) {
        for (conn, gone) in &mut conns {
            if !*gone {
                *gone = conn.write_all(b"a").is_err() || closed(conn);
            }
        }
        // Pacing the attack, not waiting for the server.
        std::thread::sleep(Duration::from_millis(100));
    }
    conns.iter().filter(|(_, gone)| *gone).count()
}

#[test]
fn trickling_heads_are_closed_and_a_normal_client_is_served() {
    let server = serve_fn(
        hello,
        &[
            ("request_header_timeout", "1"),
            ("connection_limit", &TRICKLERS.to_string()),
        ],
        Transport::Tcp,
    );
    let port = port(&server);
    let (ready_tx, ready_rx) = mpsc::channel();
    let attack = std::thread::spawn(move || trickle(port, Duration::from_secs(8), ready_tx));
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the trickling clients connected");
    // Every place under connection_limit is taken: this client gets in only once the
    // trickling ones are thrown out.
    let started = Instant::now();
    let mut client = Client::connect(&server.target);
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let response = client.read_response().expect("a response");
    // Without the deadline the attack holds every place until it stops, 8 s from now.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "served only after {:?}",
        started.elapsed()
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello");
    let closed = attack.join().expect("the attack thread");
    assert_eq!(closed, TRICKLERS, "every trickling connection was closed");
}

#[test]
fn without_the_deadline_trickling_heads_stay_open() {
    let server = serve_fn(hello, &[], Transport::Tcp);
    let port = port(&server);
    let (ready_tx, _ready_rx) = mpsc::channel();
    let closed = trickle(port, Duration::from_millis(2500), ready_tx);
    assert_eq!(closed, 0, "waitress's behaviour: no deadline for a head");
}
