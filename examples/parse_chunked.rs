//! A benchmark, not a test: parse a 1 MiB and a 16 MiB chunked request body fed 8 KiB at a
//! time, as the I/O thread would receive it, and print how long each took. Sixteen times the
//! bytes should take about sixteen times as long: a parser that rescanned what it had already
//! seen would take far longer.
//!
//!     cargo run --release --example parse_chunked

use std::sync::Arc;
use std::time::Instant;

use waitress::adjustments::Adjustments;
use waitress::parser::HttpRequestParser;

/// A chunked request whose body is `size` bytes in 4000-byte chunks.
fn chunked_request(size: usize) -> Vec<u8> {
    let mut wire =
        b"POST /upload HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'x'; 4000];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        wire.extend_from_slice(&chunk[..n]);
        wire.extend_from_slice(b"\r\n");
        left -= n;
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    wire
}

/// Feed the request in 8 KiB slices; returns the seconds taken.
fn parse(wire: &[u8], adj: &Arc<Adjustments>) -> f64 {
    let started = Instant::now();
    let mut parser = HttpRequestParser::new(Arc::clone(adj));
    let mut rest = wire;
    while !parser.completed {
        let end = rest.len().min(8192);
        let used = parser.received(&rest[..end]);
        rest = &rest[used..];
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(parser.error.is_none(), "{:?}", parser.error);
    elapsed
}

fn main() {
    // Keep the body in memory so the numbers measure parsing, not the temporary file.
    let adj = Arc::new(Adjustments {
        inbuf_overflow: 64 << 20,
        ..Default::default()
    });
    let mut previous = None;
    for mib in [1usize, 16] {
        let wire = chunked_request(mib << 20);
        let best = (0..5)
            .map(|_| parse(&wire, &adj))
            .fold(f64::INFINITY, f64::min);
        println!(
            "{mib:>2} MiB chunked body in 8 KiB reads: {:.2} ms ({:.0} MiB/s)",
            best * 1e3,
            mib as f64 / best
        );
        if let Some((prev_mib, prev_time)) = previous {
            println!(
                "   {}x the bytes took {:.1}x the time",
                mib / prev_mib,
                best / prev_time
            );
        }
        previous = Some((mib, best));
    }
}
