//! The `_profile` switch (waitress: `profile`): with it, every stage of a request's life is
//! counted; the table is printed when the server stops. A test binary of its own, because the
//! profiler's counters are process-wide.

mod support;

use std::sync::Arc;

use support::{Client, Transport};
use waitress::profiling::{self, Stage};

#[test]
fn every_stage_is_counted_while_profiling() {
    profiling::set_enabled(true);
    {
        let server = support::serve(Arc::new(support::echo_body_only), &[], Transport::Tcp);
        let mut client = Client::connect(&server.target);
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
        assert_eq!(client.read_response().unwrap().body, b"hi");
    }
    let rows = profiling::snapshot(&[]);
    for stage in [
        Stage::Accept,
        Stage::ReadParse,
        Stage::QueueWait,
        Stage::Application,
        Stage::Flush,
    ] {
        let row = rows
            .iter()
            .find(|r| r.stage == stage)
            .expect("a row per stage");
        assert!(row.calls > 0, "{} was not counted", stage.name());
    }
    let table = profiling::format_table(&rows);
    assert!(table.contains("application"), "{table}");
}
