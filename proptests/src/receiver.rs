//! Property of src/receiver.rs: any chunking of any body, fed in any slices, decodes to the
//! body.
use proptest::prelude::*;
use waitress::buffers::OverflowableBuffer;
use waitress::receiver::ChunkedReceiver;

fn body(receiver: ChunkedReceiver) -> Vec<u8> {
    receiver.into_buf().get(None, false).unwrap()
}

/// Encode `body` with the given chunk sizes, extensions and trailer.
fn encode(body: &[u8], sizes: &[usize], ext: bool, trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        out.extend_from_slice(format!("{n:x}").as_bytes());
        if ext {
            out.extend_from_slice(b";name=\"v\\\"al\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(b"0\r\n");
    if trailer {
        out.extend_from_slice(b"X-Sum: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// (c) Any chunking of any body, fed in any slices, decodes to the body.
    #[test]
    fn chunked_round_trip(
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        sizes in proptest::collection::vec(1usize..64, 1..5),
        ext in any::<bool>(),
        trailer in any::<bool>(),
        cuts in proptest::collection::vec(1usize..20, 1..10),
    ) {
        let mut wire = encode(&payload, &sizes, ext, trailer);
        let encoded_len = wire.len();
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut inst = ChunkedReceiver::new(OverflowableBuffer::new(64));
        let mut pos = 0;
        let mut i = 0;
        while !inst.completed && pos < wire.len() {
            let end = (pos + cuts[i % cuts.len()]).min(wire.len());
            pos += inst.received(&wire[pos..end]);
            i += 1;
        }
        prop_assert!(inst.completed);
        prop_assert_eq!(inst.error.clone(), None);
        prop_assert_eq!(pos, encoded_len);
        prop_assert_eq!(body(inst), payload);
    }
}
