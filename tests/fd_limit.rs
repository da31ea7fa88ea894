//! With `select()` semantics (the default `asyncore_use_poll=false`) descriptors from 1024 on
//! cannot be watched: such a connection is refused, and the server goes on serving the others.
//! A test binary of its own, because it fills the process's descriptor table. Unix only: a
//! Windows `SOCKET` is a handle, not an index into a table, and there is no such limit.
#![cfg(unix)]

mod support;

use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use support::{Client, Transport};
use waitress::compat;

/// Descriptors past `FD_SETSIZE`, with room for the server's own.
const FILES_NEEDED: u64 = 1100;

#[test]
fn a_connection_past_the_select_limit_is_refused_and_the_server_survives() {
    // The test needs descriptors past 1024: raise this process's own soft limit (many
    // systems start at 1024) up to the hard limit.
    let limit = compat::raise_open_files_limit(FILES_NEEDED).expect("getrlimit/setrlimit");
    assert!(
        limit >= FILES_NEEDED,
        "this test needs {FILES_NEEDED} open files; the hard limit (ulimit -Hn) allows {limit}"
    );
    let server = support::serve(Arc::new(support::echo_body_only), &[], Transport::Tcp);
    // Push the next descriptor numbers past 1024.
    let mut filler = Vec::new();
    loop {
        let f = std::fs::File::open("/dev/null").expect("a descriptor below the raised limit");
        let past = f.as_raw_fd() >= 1030;
        filler.push(f);
        if past {
            break;
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
