//! Port of waitress/receiver.py.
//!
//! Request-body receivers fed by the parser: `FixedStreamReceiver` for a `Content-Length`
//! body and `ChunkedReceiver` for `Transfer-Encoding: chunked`. Both store the decoded body in
//! an `OverflowableBuffer` and report malformed input as an `Error` (400).

use crate::buffers::OverflowableBuffer;
use crate::utilities::Error;

/// A `Content-Length` body (waitress: `FixedStreamReceiver`).
#[derive(Debug)]
pub struct FixedStreamReceiver {
    /// Set once every byte has arrived.
    pub completed: bool,
    /// Set on malformed input.
    pub error: Option<Error>,
}

impl FixedStreamReceiver {
    /// Expect `cl` bytes, stored in `buf`.
    pub fn new(cl: u64, buf: OverflowableBuffer) -> Self {
        let _ = (cl, buf);
        todo!("receiver work")
    }

    /// Feed bytes; returns how many were consumed.
    pub fn received(&mut self, data: &[u8]) -> usize {
        let _ = data;
        todo!("receiver work")
    }

    /// The decoded body so far, in bytes (`__len__`).
    pub fn len(&self) -> usize {
        todo!("receiver work")
    }

    /// Whether no body bytes were stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hand over the body buffer (waitress: `getbuf`).
    pub fn into_buf(self) -> OverflowableBuffer {
        todo!("receiver work")
    }
}

/// A chunked body (waitress: `ChunkedReceiver`).
#[derive(Debug)]
pub struct ChunkedReceiver {
    /// Set once the last chunk and the trailer have arrived.
    pub completed: bool,
    /// Set on malformed input.
    pub error: Option<Error>,
}

impl ChunkedReceiver {
    /// Decode into `buf`.
    pub fn new(buf: OverflowableBuffer) -> Self {
        let _ = buf;
        todo!("receiver work")
    }

    /// Feed bytes; returns how many were consumed.
    pub fn received(&mut self, data: &[u8]) -> usize {
        let _ = data;
        todo!("receiver work")
    }

    /// The decoded body so far, in bytes (`__len__`).
    pub fn len(&self) -> usize {
        todo!("receiver work")
    }

    /// Whether no body bytes were stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hand over the body buffer (waitress: `getbuf`).
    pub fn into_buf(self) -> OverflowableBuffer {
        todo!("receiver work")
    }
}
