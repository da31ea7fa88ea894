//! Properties of src/parser.rs: arbitrary bytes never panic the parser, and a valid request
//! split anywhere parses as it does whole.
use proptest::prelude::*;
use std::io::Read;
use std::sync::Arc;
use waitress::parser::HttpRequestParser;
use waitress::Adjustments;

fn parser() -> HttpRequestParser {
    HttpRequestParser::new(Arc::new(Adjustments::default()))
}

fn parser_with(change: impl FnOnce(&mut Adjustments)) -> HttpRequestParser {
    let mut adj = Adjustments::default();
    change(&mut adj);
    HttpRequestParser::new(Arc::new(adj))
}

/// Feed `data` until the request is complete (the parser may take it in several calls).
fn feed(p: &mut HttpRequestParser, mut data: &[u8]) {
    for _ in 0..100 {
        let n = p.received(data);
        data = &data[n..];
        if p.completed {
            return;
        }
    }
    panic!("the parser stopped taking bytes before the request was complete");
}

fn body(p: &mut HttpRequestParser) -> Vec<u8> {
    let mut out = Vec::new();
    p.get_body_stream().unwrap().read_to_end(&mut out).unwrap();
    out
}

/// A request in pieces, with its expected body.
fn request_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT")],
        "/[a-z0-9/%]{0,12}",
        proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,8}", "[ -~]{0,12}"), 0..4),
        proptest::collection::vec(any::<u8>(), 0..80),
        any::<bool>(),
    )
        .prop_map(|(method, path, headers, body, chunked)| {
            let mut head = format!("{method} {path} HTTP/1.1\r\n");
            for (i, (name, value)) in headers.iter().enumerate() {
                head.push_str(&format!("X{i}{name}: {}\r\n", value.trim()));
            }
            let mut wire;
            if chunked {
                head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                wire = head.into_bytes();
                for piece in body.chunks(7) {
                    wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    wire.extend_from_slice(piece);
                    wire.extend_from_slice(b"\r\n");
                }
                wire.extend_from_slice(b"0\r\n\r\n");
            } else {
                head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                wire = head.into_bytes();
                wire.extend_from_slice(&body);
            }
            (wire, body)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// (a) Any bytes in any slices: no panic, and the parser either completes or has
    /// consumed everything it was given.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), cut in 1usize..50) {
        let mut p = parser_with(|a| a.max_request_header_size = 300);
        let mut rest = &data[..];
        while !rest.is_empty() && !p.completed {
            let end = cut.min(rest.len());
            let n = p.received(&rest[..end]);
            prop_assert!(p.completed || n == end);
            rest = &rest[n..];
        }
    }

    /// (b) Splitting a valid request anywhere gives the same request as feeding it whole.
    #[test]
    fn split_requests_parse_the_same((wire, expected) in request_strategy(), cuts in proptest::collection::vec(1usize..30, 1..8)) {
        let mut whole = parser();
        feed(&mut whole, &wire);
        prop_assert!(whole.completed);
        prop_assert!(whole.error.is_none(), "{:?}", whole.error);
        let mut pieces = parser();
        let mut pos = 0;
        let mut i = 0;
        while !pieces.completed {
            let end = (pos + cuts[i % cuts.len()]).min(wire.len());
            pos += pieces.received(&wire[pos..end]);
            i += 1;
        }
        prop_assert_eq!(pos, wire.len());
        prop_assert_eq!(&pieces.headers, &whole.headers);
        prop_assert_eq!(&pieces.path, &whole.path);
        prop_assert_eq!(&pieces.command, &whole.command);
        prop_assert_eq!(body(&mut pieces), expected.clone());
        prop_assert_eq!(body(&mut whole), expected);
    }
}
