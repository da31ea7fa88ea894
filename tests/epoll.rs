//! The server with `asyncore_use_epoll` (Linux): a representative set of exchanges from the
//! functional suite — keep-alive, pipelining, large bodies both ways, a client that hangs up
//! mid-response, many clients at once — over TCP and a Unix socket, so the epoll round is
//! held to what the `poll` rounds do (the rest of the suite runs with the default).
#![cfg(target_os = "linux")]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Client, ServerGuard, Transport};
use waitress::{AppResult, Body, Environ, StartResponse};

const BIG: usize = 16 << 20;

/// `/big`: 16 MiB of `x`; anything else: the request body echoed.
fn app(env: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    if env.get("PATH_INFO") == Some("/big") {
        sr.start("200 OK", [("Content-Length", BIG.to_string())])?;
        let chunks = (0..BIG / (1 << 20)).map(|_| Ok(vec![b'x'; 1 << 20]));
        return Ok(Body::from_chunks(chunks.collect::<Vec<_>>()));
    }
    support::echo_body_only(env, sr)
}

fn server(t: Transport) -> ServerGuard {
    support::serve_fn(app, &[("asyncore_use_epoll", "true")], t)
}

fn post(body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn keep_alive_and_pipelining(t: Transport) {
    let server = server(t);
    let mut c = Client::connect(&server.target);
    for i in 0..3 {
        let body = format!("request {i}");
        c.send(&post(body.as_bytes()));
        let r = c
            .read_response()
            .expect("a response on the kept-alive connection");
        assert_eq!((r.status, r.body), (200, body.into_bytes()));
    }
    let pipelined: Vec<u8> = (0..3)
        .flat_map(|i| post(format!("p{i}").as_bytes()))
        .collect();
    c.send(&pipelined);
    for i in 0..3 {
        let r = c.read_response().expect("a pipelined response");
        assert_eq!(r.body, format!("p{i}").into_bytes());
    }
}

fn large_bodies(t: Transport) {
    let server = server(t);
    let mut c = Client::connect(&server.target);
    let upload: Vec<u8> = (0..4 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    c.send(&post(&upload));
    let r = c.read_response().expect("the upload echoed");
    assert!(r.body == upload, "the 4 MiB body came back intact");
    c.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response().expect("the download");
    assert_eq!(r.body.len(), BIG);
    assert!(r.body.iter().all(|&b| b == b'x'));
}

fn client_closes_mid_response(t: Transport) {
    let server = server(t);
    for _ in 0..3 {
        let mut c = Client::connect(&server.target);
        c.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
        let first = c.read_line().expect("the status line");
        assert!(first.starts_with(b"HTTP/1.1 200"));
    } // each hangs up with most of the 16 MiB unsent
    let started = Instant::now();
    let mut c = Client::connect(&server.target);
    c.send(&post(b"still here"));
    let r = c.read_response().expect("the loop serves on");
    assert_eq!(r.body, b"still here");
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn many_clients(t: Transport) {
    let server = server(t);
    let mut clients: Vec<Client> = (0..50).map(|_| Client::connect(&server.target)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&post(format!("client {i}").as_bytes()));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response().expect("every client answered");
        assert_eq!(r.body, format!("client {i}").into_bytes());
    }
}

/// Run `exchange` against a server over TCP, then over a Unix socket.
fn over_both(exchange: fn(Transport)) {
    exchange(Transport::Tcp);
    exchange(Transport::Unix);
}

#[test]
fn epoll_keep_alive_and_pipelining() {
    over_both(keep_alive_and_pipelining);
}

#[test]
fn epoll_large_bodies() {
    over_both(large_bodies);
}

#[test]
fn epoll_client_closes_mid_response() {
    over_both(client_closes_mid_response);
}

#[test]
fn epoll_many_clients() {
    over_both(many_clients);
}

#[test]
fn the_server_waits_in_epoll() {
    // Nothing else in this process makes an epoll instance: while a server with the setting
    // runs, one is open.
    let server = server(Transport::Tcp);
    let mut c = Client::connect(&server.target);
    c.send(&post(b"x"));
    c.read_response().expect("a response");
    let epolls = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy() == "anon_inode:[eventpoll]")
        .count();
    assert!(epolls >= 1, "no epoll descriptor open");
}

#[test]
fn epoll_closes_a_stalled_head_at_its_deadline() {
    // After the first bytes of its head the client sends nothing more: no event comes for
    // its connection, so only the round that asks every channel (once a loop timeout) sees
    // the deadline pass.
    let server = support::serve_fn(
        app,
        &[
            ("asyncore_use_epoll", "true"),
            ("request_header_timeout", "1"),
        ],
        Transport::Tcp,
    );
    let mut conn = TcpStream::connect(("127.0.0.1", server.tcp_port())).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = conn.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "closed without a response, not {read:?} after {:?}",
        started.elapsed()
    );
}
