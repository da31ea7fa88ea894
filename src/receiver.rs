//! Port of waitress/receiver.py.
//!
//! Request-body receivers fed by the parser on the I/O thread: `FixedStreamReceiver` for a
//! `Content-Length` body and `ChunkedReceiver` for `Transfer-Encoding: chunked`. Both store the
//! decoded body in an `OverflowableBuffer` and report malformed input as an `Error` (400). Each
//! call to `received` says how many bytes it consumed, so the parser can hand the rest (a
//! pipelined request) onward.

use crate::buffers::OverflowableBuffer;
use crate::rfc7230::{is_chunk_ext, is_only_hexdig};
use crate::utilities::{find_double_newline, Error};

/// The longest chunk-size line accepted, size and extensions without the CRLF. waitress
/// bounds it only by `max_request_body_size` (its `max_control_line` is commented out), so a
/// peer sending an endless size line could hold that much memory; past this the request is a
/// 400 and the connection closes. Real clients send a few hex digits.
pub const MAX_CONTROL_LINE: usize = 4096;

/// The longest trailer section accepted, from the end of the last chunk's size line to the end
/// of its blank line (waitress's commented-out `max_trailer`); past this, a 400 and a close.
pub const MAX_TRAILER: usize = 65536;

/// The error for a body that could not be stored (a full disk under the temporary file).
fn store_failed(e: std::io::Error) -> Error {
    Error::internal_server_error(format!("The request body could not be stored: {e}"))
}

/// A `Content-Length` body (waitress: `FixedStreamReceiver`).
#[derive(Debug)]
pub struct FixedStreamReceiver {
    /// Set once every byte has arrived.
    pub completed: bool,
    /// Set on malformed input (or when the body cannot be stored).
    pub error: Option<Error>,
    remain: u64,
    buf: OverflowableBuffer,
}

impl FixedStreamReceiver {
    /// Expect `cl` bytes, stored in `buf`.
    pub fn new(cl: u64, buf: OverflowableBuffer) -> Self {
        FixedStreamReceiver {
            completed: false,
            error: None,
            remain: cl,
            buf,
        }
    }

    /// Feed bytes; returns how many were consumed.
    pub fn received(&mut self, data: &[u8]) -> usize {
        if self.remain == 0 {
            // Nothing is expected: never claim bytes, so the caller cannot spin on us.
            self.completed = true;
            return 0;
        }
        let take = data
            .len()
            .min(usize::try_from(self.remain).unwrap_or(usize::MAX));
        if let Err(e) = self.buf.append(&data[..take]) {
            self.error = Some(store_failed(e));
            return take;
        }
        self.remain -= take as u64;
        if self.remain == 0 {
            self.completed = true;
        }
        take
    }

    /// The decoded body so far, in bytes (`__len__`).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no body bytes were stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hand over the body buffer (waitress: `getbuf`).
    pub fn into_buf(self) -> OverflowableBuffer {
        self.buf
    }
}

/// A chunked body (waitress: `ChunkedReceiver`).
///
/// Partial control lines and trailers are kept between calls; the search for their end only
/// looks at the new bytes (plus the few before them that could start a `\r\n`), so a peer that
/// trickles a long line one byte at a time costs linear, not quadratic, work.
#[derive(Debug)]
pub struct ChunkedReceiver {
    /// Set once the last chunk and the trailer have arrived.
    pub completed: bool,
    /// Set on malformed input.
    pub error: Option<Error>,
    chunk_remainder: u64,
    validate_chunk_end: bool,
    control_line: Vec<u8>,
    chunk_end: Vec<u8>,
    all_chunks_received: bool,
    trailer: Vec<u8>,
    buf: OverflowableBuffer,
}

impl ChunkedReceiver {
    /// Decode into `buf`.
    pub fn new(buf: OverflowableBuffer) -> Self {
        ChunkedReceiver {
            completed: false,
            error: None,
            chunk_remainder: 0,
            validate_chunk_end: false,
            control_line: Vec::new(),
            chunk_end: Vec::new(),
            all_chunks_received: false,
            trailer: Vec::new(),
            buf,
        }
    }

    /// Feed bytes; returns how many were consumed. After an error the rest is consumed and
    /// ignored: the parser answers 400 and the connection closes.
    pub fn received(&mut self, data: &[u8]) -> usize {
        if self.completed {
            return 0;
        }
        let mut s = data;
        while !s.is_empty() && self.error.is_none() {
            if self.chunk_remainder > 0 {
                s = self.receive_chunk_data(s);
            } else if self.validate_chunk_end {
                s = self.receive_chunk_end(s);
            } else if !self.all_chunks_received {
                s = self.receive_control_line(s);
            } else {
                let start = data.len() - s.len();
                if let Some(used) = self.receive_trailer(s) {
                    self.completed = true;
                    return start + used;
                }
                s = &[];
            }
        }
        data.len()
    }

    fn receive_chunk_data<'a>(&mut self, s: &'a [u8]) -> &'a [u8] {
        let n = s
            .len()
            .min(usize::try_from(self.chunk_remainder).unwrap_or(usize::MAX));
        if let Err(e) = self.buf.append(&s[..n]) {
            self.error = Some(store_failed(e));
        }
        self.chunk_remainder -= n as u64;
        if self.chunk_remainder == 0 {
            self.validate_chunk_end = true;
        }
        &s[n..]
    }

    /// The `\r\n` that must follow each chunk's data.
    fn receive_chunk_end<'a>(&mut self, s: &'a [u8]) -> &'a [u8] {
        let needed = 2 - self.chunk_end.len();
        if s.len() < needed {
            self.chunk_end.extend_from_slice(s);
            return &[];
        }
        self.chunk_end.extend_from_slice(&s[..needed]);
        if self.chunk_end != b"\r\n" {
            self.error = Some(Error::bad_request("Chunk not properly terminated"));
            self.all_chunks_received = true;
        }
        self.chunk_end.clear();
        self.validate_chunk_end = false;
        &s[needed..]
    }

    /// A chunk-size line: `HEX[;ext]\r\n`. An empty line is skipped, as waitress does.
    fn receive_control_line<'a>(&mut self, s: &'a [u8]) -> &'a [u8] {
        let (line, rest): (Vec<u8>, &[u8]) =
            if self.control_line.last() == Some(&b'\r') && s[0] == b'\n' {
                let mut line = std::mem::take(&mut self.control_line);
                line.pop();
                (line, &s[1..])
            } else if let Some(pos) = s.windows(2).position(|w| w == b"\r\n") {
                let mut line = std::mem::take(&mut self.control_line);
                line.extend_from_slice(&s[..pos]);
                (line, &s[pos + 2..])
            } else {
                self.control_line.extend_from_slice(s);
                // A trailing CR may be the start of the CRLF: it does not count yet.
                let pending =
                    self.control_line.len() - usize::from(self.control_line.last() == Some(&b'\r'));
                if pending > MAX_CONTROL_LINE {
                    self.control_line = Vec::new();
                    self.fail("Chunk size line too long");
                }
                return &[];
            };
        if line.len() > MAX_CONTROL_LINE {
            self.fail("Chunk size line too long");
        } else if !line.is_empty() {
            self.start_chunk(&line);
        }
        rest
    }

    fn start_chunk(&mut self, line: &[u8]) {
        let size = match line.iter().position(|&b| b == b';') {
            Some(semi) if !is_chunk_ext(&line[semi..]) => {
                self.fail("Invalid chunk extension");
                return;
            }
            Some(semi) => &line[..semi],
            None => line,
        };
        if !is_only_hexdig(size) {
            self.fail("Invalid chunk size");
            return;
        }
        // Hex digits only, so the one way to fail is a size past 64 bits.
        let parsed = std::str::from_utf8(size)
            .ok()
            .and_then(|text| u64::from_str_radix(text, 16).ok());
        let size = match parsed {
            Some(size) => size,
            None => {
                self.fail("Invalid chunk size");
                return;
            }
        };
        if size > 0 {
            self.chunk_remainder = size;
        } else {
            self.all_chunks_received = true;
        }
    }

    fn fail(&mut self, message: &str) {
        self.error = Some(Error::bad_request(message));
        self.all_chunks_received = true;
    }

    /// The trailer after the last chunk, ended by an empty line. Returns how many bytes of
    /// `s` it used once complete; the trailer fields are read and dropped, as in waitress.
    fn receive_trailer(&mut self, s: &[u8]) -> Option<usize> {
        let before = self.trailer.len();
        let search_from = before.saturating_sub(3);
        self.trailer.extend_from_slice(s);
        if self.trailer.starts_with(b"\r\n") {
            self.trailer.clear();
            return Some(2 - before);
        }
        match find_double_newline(&self.trailer[search_from..]) {
            Some(end) if search_from + end <= MAX_TRAILER => {
                let end = search_from + end;
                self.trailer.truncate(end);
                Some(end - before)
            }
            found => {
                if found.is_some() || self.trailer.len() > MAX_TRAILER {
                    self.trailer = Vec::new();
                    self.fail("Chunked trailer too long");
                }
                None
            }
        }
    }

    /// The decoded body so far, in bytes (`__len__`).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no body bytes were stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hand over the body buffer (waitress: `getbuf`).
    pub fn into_buf(self) -> OverflowableBuffer {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_receiver.py, every test under its waitress name. waitress's
    //! `getfile`/`getbuf` return the buffer object itself; `into_buf` hands it over by value, so
    //! `test_getfile`/`test_getbuf` check it through its contents.
    use super::*;
    use std::io::Read;

    fn buf() -> OverflowableBuffer {
        OverflowableBuffer::new(1 << 20)
    }

    fn body(receiver: ChunkedReceiver) -> Vec<u8> {
        receiver.into_buf().get(None, false).unwrap()
    }

    #[test]
    fn test_received_remain_lt_1() {
        let mut inst = FixedStreamReceiver::new(0, buf());
        assert_eq!(inst.received(b"a"), 0);
        assert!(inst.completed);
    }

    #[test]
    fn test_received_remain_lte_datalen() {
        let mut inst = FixedStreamReceiver::new(1, buf());
        assert_eq!(inst.received(b"aa"), 1);
        assert!(inst.completed);
        assert_eq!(inst.remain, 0);
        assert_eq!(inst.into_buf().get(None, false).unwrap(), b"a");
    }

    #[test]
    fn test_received_remain_gt_datalen() {
        let mut inst = FixedStreamReceiver::new(10, buf());
        assert_eq!(inst.received(b"aa"), 2);
        assert!(!inst.completed);
        assert_eq!(inst.remain, 8);
        assert_eq!(inst.len(), 2);
    }

    // test_getfile, test_getbuf and test___len__ of both receivers.

    fn read_all(buf: OverflowableBuffer) -> Vec<u8> {
        let mut out = Vec::new();
        buf.into_input().unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn test_getfile() {
        let mut fixed = FixedStreamReceiver::new(10, buf());
        fixed.received(b"abc");
        assert_eq!(read_all(fixed.into_buf()), b"abc");
        let mut chunked = ChunkedReceiver::new(buf());
        chunked.received(b"3\r\nabc\r\n");
        assert_eq!(read_all(chunked.into_buf()), b"abc");
    }

    #[test]
    fn test_getbuf() {
        let mut fixed = FixedStreamReceiver::new(10, buf());
        fixed.received(b"abc");
        assert_eq!(fixed.into_buf().get(None, false).unwrap(), b"abc");
        let mut chunked = ChunkedReceiver::new(buf());
        chunked.received(b"3\r\nabc\r\n");
        assert_eq!(chunked.into_buf().get(None, false).unwrap(), b"abc");
    }

    #[test]
    #[allow(non_snake_case)]
    fn test___len__() {
        let stored = || {
            let mut stored = buf();
            stored.append(b"12").unwrap();
            stored
        };
        assert_eq!(FixedStreamReceiver::new(10, stored()).len(), 2);
        assert_eq!(ChunkedReceiver::new(stored()).len(), 2);
    }

    #[test]
    fn test_alreadycompleted() {
        let mut inst = ChunkedReceiver::new(buf());
        inst.completed = true;
        assert_eq!(inst.received(b"a"), 0);
        assert!(inst.completed);
    }

    #[test]
    fn test_received_remain_gt_zero() {
        let mut inst = ChunkedReceiver::new(buf());
        inst.chunk_remainder = 100;
        assert_eq!(inst.received(b"a"), 1);
        assert_eq!(inst.chunk_remainder, 99);
        assert!(!inst.completed);
    }

    #[test]
    fn test_received_control_line_notfinished() {
        let mut inst = ChunkedReceiver::new(buf());
        assert_eq!(inst.received(b"a"), 1);
        assert_eq!(inst.control_line, b"a");
        assert!(!inst.completed);
    }

    #[test]
    fn test_received_control_line_finished_garbage_in_input() {
        let mut inst = ChunkedReceiver::new(buf());
        assert_eq!(inst.received(b"garbage\r\n"), 9);
        assert_eq!(inst.error, Some(Error::bad_request("Invalid chunk size")));
    }

    #[test]
    fn test_received_control_line_finished_all_chunks_not_received() {
        let mut inst = ChunkedReceiver::new(buf());
        assert_eq!(inst.received(b"a;discard\r\n"), 11);
        assert_eq!(inst.control_line, b"");
        assert_eq!(inst.chunk_remainder, 10);
        assert!(!inst.all_chunks_received);
        assert!(!inst.completed);
    }

    #[test]
    fn test_received_control_line_finished_all_chunks_received() {
        let mut inst = ChunkedReceiver::new(buf());
        assert_eq!(inst.received(b"0;discard\r\n"), 11);
        assert_eq!(inst.control_line, b"");
        assert!(inst.all_chunks_received);
        assert!(!inst.completed);
    }

    #[test]
    fn test_received_trailer_startswith_crlf() {
        let mut inst = ChunkedReceiver::new(buf());
        inst.all_chunks_received = true;
        assert_eq!(inst.received(b"\r\n"), 2);
        assert!(inst.completed);
    }

    #[test]
    fn test_received_trailer_startswith_lf() {
        let mut inst = ChunkedReceiver::new(buf());
        inst.all_chunks_received = true;
        assert_eq!(inst.received(b"\n"), 1);
        assert!(!inst.completed);
    }

    #[test]
    fn test_received_trailer_not_finished() {
        let mut inst = ChunkedReceiver::new(buf());
        inst.all_chunks_received = true;
        assert_eq!(inst.received(b"a"), 1);
        assert!(!inst.completed);
    }

    #[test]
    fn test_received_trailer_finished() {
        let mut inst = ChunkedReceiver::new(buf());
        inst.all_chunks_received = true;
        assert_eq!(inst.received(b"abc\r\n\r\nNEXT"), 7);
        assert_eq!(inst.trailer, b"abc\r\n\r\n");
        assert!(inst.completed);
    }

    #[test]
    fn trailer_split_across_calls_leaves_the_next_request_alone() {
        let mut inst = ChunkedReceiver::new(buf());
        assert_eq!(inst.received(b"0\r\nX-T: 1\r"), 10);
        assert_eq!(inst.received(b"\n\r\nGET /"), 3);
        assert!(inst.completed);
    }

    #[test]
    fn test_len() {
        let mut inst = ChunkedReceiver::new(buf());
        inst.received(b"2\r\nab\r\n");
        assert_eq!(inst.len(), 2);
    }

    #[test]
    fn test_received_chunk_is_properly_terminated() {
        let mut inst = ChunkedReceiver::new(buf());
        let data = b"4\r\nWiki\r\n";
        assert_eq!(inst.received(data), data.len());
        assert!(!inst.completed);
        assert_eq!(body(inst), b"Wiki");
    }

    #[test]
    fn test_received_chunk_not_properly_terminated() {
        let mut inst = ChunkedReceiver::new(buf());
        let data = b"4\r\nWikibadchunk\r\n";
        assert_eq!(inst.received(data), data.len());
        assert!(!inst.completed);
        assert_eq!(
            inst.error,
            Some(Error::bad_request("Chunk not properly terminated"))
        );
        assert_eq!(body(inst), b"Wiki");
    }

    const WIKI: &[u8] = b"4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n";

    #[test]
    fn test_received_multiple_chunks() {
        let mut inst = ChunkedReceiver::new(buf());
        assert_eq!(inst.received(WIKI), WIKI.len());
        assert!(inst.completed);
        assert_eq!(inst.error, None);
        assert_eq!(body(inst), b"Wikipedia in\r\n\r\nchunks.");
    }

    #[test]
    fn test_received_multiple_chunks_split() {
        let mut inst = ChunkedReceiver::new(buf());
        // Cut between the CR and the LF that end the first chunk.
        let (one, two) = WIKI.split_at(8);
        assert_eq!(inst.received(one), one.len());
        assert_eq!(inst.received(two), two.len());
        assert!(inst.completed);
        assert_eq!(body(inst), b"Wikipedia in\r\n\r\nchunks.");
    }

    #[test]
    fn test_received_invalid_extensions() {
        for ext in [&b"\n"[..], b"invalid=", b"\r", b"invalid = true"] {
            let mut inst = ChunkedReceiver::new(buf());
            let data = [&b"4;"[..], ext, b"\r\ntest\r\n"].concat();
            assert_eq!(inst.received(&data), data.len());
            assert_eq!(
                inst.error,
                Some(Error::bad_request("Invalid chunk extension"))
            );
        }
    }

    #[test]
    fn test_received_valid_extensions() {
        for ext in [&b"test"[..], b"valid=true", b"valid=true;other=true"] {
            let mut inst = ChunkedReceiver::new(buf());
            let data = [&b"4;"[..], ext, b"\r\ntest\r\n"].concat();
            assert_eq!(inst.received(&data), data.len());
            assert_eq!(inst.error, None);
        }
    }

    #[test]
    fn test_received_invalid_size() {
        for size in [
            &b"0x04"[..],
            b"+0x04",
            b"x04",
            b"+04",
            b" 04",
            b" 0x04",
            b"04\n",
            b"1ffffffffffffffff",
        ] {
            let mut inst = ChunkedReceiver::new(buf());
            let data = [size, b"\r\ntest\r\n"].concat();
            assert_eq!(inst.received(&data), data.len());
            assert_eq!(inst.error, Some(Error::bad_request("Invalid chunk size")));
        }
    }

    #[test]
    fn control_line_is_bounded() {
        // Up to the limit, a size line (here mostly an extension) is read as usual...
        let line = [&b"4;"[..], &vec![b'x'; MAX_CONTROL_LINE - 2]].concat();
        let mut inst = ChunkedReceiver::new(buf());
        let data = [&line[..], b"\r\ntest\r\n"].concat();
        assert_eq!(inst.received(&data), data.len());
        assert_eq!(inst.error, None);
        // ...one byte more is refused, whether the line ends in the same slice or never ends.
        let line = [&line[..], b"x"].concat();
        let mut inst = ChunkedReceiver::new(buf());
        inst.received(&[&line[..], b"\r\n"].concat());
        assert_eq!(
            inst.error,
            Some(Error::bad_request("Chunk size line too long"))
        );
        let mut inst = ChunkedReceiver::new(buf());
        for _ in 0..MAX_CONTROL_LINE {
            inst.received(b"f");
            if inst.error.is_some() {
                break;
            }
        }
        assert_eq!(
            inst.error, None,
            "exactly the limit is still waiting for its CRLF"
        );
        inst.received(b"\r");
        assert_eq!(inst.error, None, "a CR may start the CRLF");
        assert_eq!(inst.received(b"ff"), 2);
        assert_eq!(
            inst.error,
            Some(Error::bad_request("Chunk size line too long"))
        );
        assert!(inst.control_line.is_empty(), "the line is released");
    }

    #[test]
    fn trailer_is_bounded() {
        let field = b"X-T: 0123456789abcdef\r\n";
        // A trailer of exactly MAX_TRAILER bytes (its blank line included) is read...
        let trailer = format!("X: {}\r\n\r\n", "y".repeat(MAX_TRAILER - 7)).into_bytes();
        assert_eq!(trailer.len(), MAX_TRAILER);
        let mut inst = ChunkedReceiver::new(buf());
        inst.all_chunks_received = true;
        assert_eq!(inst.received(&trailer), MAX_TRAILER);
        assert!(inst.completed);
        assert_eq!(inst.error, None);
        // ...a longer one is refused, whether it ends or not.
        let mut long = trailer.clone();
        long.insert(0, b'Z');
        let mut inst = ChunkedReceiver::new(buf());
        inst.all_chunks_received = true;
        inst.received(&long);
        assert_eq!(
            inst.error,
            Some(Error::bad_request("Chunked trailer too long"))
        );
        let mut inst = ChunkedReceiver::new(buf());
        inst.all_chunks_received = true;
        for _ in 0..=MAX_TRAILER / field.len() {
            inst.received(field);
        }
        assert_eq!(
            inst.error,
            Some(Error::bad_request("Chunked trailer too long"))
        );
        assert!(inst.trailer.is_empty(), "the trailer is released");
    }
}
