//! With `select()` semantics (the default `asyncore_use_poll=false`) descriptors from 1024 on
//! cannot be watched: such a connection is refused, and the server goes on serving the others.
//! A test binary of its own, because it fills the process's descriptor table.

mod support;

use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use support::{Client, Transport};

#[test]
fn a_connection_past_the_select_limit_is_refused_and_the_server_survives() {
    let server = support::serve(Arc::new(support::echo_body_only), &[], Transport::Tcp);
    // Push the next descriptor numbers past 1024 (skipped where the process may not open that
    // many files).
    let mut filler = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) if f.as_raw_fd() < 1030 => filler.push(f),
            Ok(f) => {
                filler.push(f);
                break;
            }
            Err(e) => {
                eprintln!("skipped: cannot open enough files ({e})");
                return;
            }
        }
    }
    let mut refused = Client::connect(&server.target);
    refused.send_unchecked(b"GET / HTTP/1.0\r\n\r\n");
    assert!(
        refused.read_response().is_err(),
        "the connection is closed unanswered"
    );
    drop(refused);
    drop(filler);
    let mut client = Client::connect(&server.target);
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(client.read_response().unwrap().body, b"ok");
}
