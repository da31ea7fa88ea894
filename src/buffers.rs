//! Port of waitress/buffers.py.
//!
//! The byte buffers behind request bodies and responses: memory first, then an anonymous
//! temporary file once a size is passed (`OverflowableBuffer`), and a read-only view of an
//! application's file for `wsgi.file_wrapper` (`ReadOnlyFileBasedBuffer`).

use std::io;

use crate::app::{FileWrapper, Input};

/// Memory until `overflow` bytes, then an anonymous temporary file.
///
/// waitress: `OverflowableBuffer`.
#[derive(Debug)]
pub struct OverflowableBuffer {}

impl OverflowableBuffer {
    /// An empty buffer that moves to a temporary file past `overflow` bytes.
    pub fn new(overflow: usize) -> Self {
        let _ = overflow;
        todo!("buffers work")
    }

    /// Bytes held (`__len__`).
    pub fn len(&self) -> usize {
        todo!("buffers work")
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add bytes at the end (amortised: never copies the whole buffer).
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let _ = data;
        todo!("buffers work")
    }

    /// Up to `numbytes` bytes from the front (all when `None`), removed when `skip`.
    pub fn get(&mut self, numbytes: Option<usize>, skip: bool) -> io::Result<Vec<u8>> {
        let _ = (numbytes, skip);
        todo!("buffers work")
    }

    /// A view of up to `max` bytes at the front, without removing them (the send path uses
    /// it to avoid a copy per send).
    pub fn peek(&mut self, max: usize) -> io::Result<&[u8]> {
        let _ = max;
        todo!("buffers work")
    }

    /// Drop `numbytes` bytes from the front.
    pub fn skip(&mut self, numbytes: usize, allow_prune: bool) -> io::Result<()> {
        let _ = (numbytes, allow_prune);
        todo!("buffers work")
    }

    /// Forget the bytes already read, reclaiming their space.
    pub fn prune(&mut self) -> io::Result<()> {
        todo!("buffers work")
    }

    /// The remaining bytes as a reader, for `wsgi.input` (waitress: `getfile`).
    pub fn into_input(self) -> io::Result<Input> {
        todo!("buffers work")
    }

    /// Release the memory or the temporary file.
    pub fn close(&mut self) {
        todo!("buffers work")
    }
}

/// A file the application handed over with `wsgi.file_wrapper`, served from its current
/// position (waitress: `ReadOnlyFileBasedBuffer`).
#[derive(Debug)]
pub struct ReadOnlyFileBasedBuffer {}

impl ReadOnlyFileBasedBuffer {
    /// Wrap the application's file wrapper.
    pub fn new(wrapper: FileWrapper) -> Self {
        let _ = wrapper;
        todo!("buffers work")
    }

    /// Measure what is left to send (at most `size` bytes when given) and remember it;
    /// returns that length, or 0 when the file cannot seek (then it is iterated instead).
    pub fn prepare(&mut self, size: Option<u64>) -> io::Result<u64> {
        let _ = size;
        todo!("buffers work")
    }

    /// Bytes left to send (after `prepare`).
    pub fn len(&self) -> u64 {
        todo!("buffers work")
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A view of up to `max` bytes at the current position.
    pub fn peek(&mut self, max: usize) -> io::Result<&[u8]> {
        let _ = max;
        todo!("buffers work")
    }

    /// Advance past `numbytes` bytes.
    pub fn skip(&mut self, numbytes: usize) -> io::Result<()> {
        let _ = numbytes;
        todo!("buffers work")
    }

    /// The next block, for a file that cannot seek (waitress: `__next__`); `None` at the end.
    pub fn next_block(&mut self) -> Option<io::Result<Vec<u8>>> {
        todo!("buffers work")
    }

    /// Close the file (waitress: `close`).
    pub fn close(&mut self) {
        todo!("buffers work")
    }
}
