//! Port of waitress/buffers.py.
//!
//! The byte buffers behind request bodies and responses. `OverflowableBuffer` keeps bytes in
//! memory until `overflow` bytes are held, then moves them to an anonymous temporary file, so a
//! large upload or a slow reader of a large response never pins that much memory. The
//! `ReadOnlyFileBasedBuffer` serves a file handed over with `wsgi.file_wrapper` by offset and
//! length. Buffers are owned by one channel at a time and are not shared between threads.

use std::fs::File;
use std::io::{self, BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::app::{FileSource, FileWrapper, Input};

/// Once this many bytes at the front of a memory buffer have been consumed (and they are at
/// least half of it), they are dropped so the vector does not grow without end.
const COMPACT_AT: usize = 64 * 1024;

/// A temporary file that no other process can open (waitress: `TempfileBasedBuffer.newfile`,
/// which uses Python's private `TemporaryFile`). On Linux it is created without a name at all
/// (`O_TMPFILE`); elsewhere, or where the file system lacks that, under an unpredictable name
/// with mode 0600 and removed at once. Either way nothing is left on disk, even if the process
/// dies, and no other user ever gets to read a request body. Windows cannot remove an open
/// file: there it is opened exclusively (no sharing) and deleted by the system when closed.
pub fn anonymous_tempfile() -> io::Result<File> {
    let dir = std::env::temp_dir();
    #[cfg(target_os = "linux")]
    if let Some(flag) = crate::compat::tmpfile::O_TMPFILE {
        use std::os::unix::fs::OpenOptionsExt;
        let unnamed = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(flag)
            .open(&dir);
        match unnamed {
            Err(e) if o_tmpfile_unsupported(&e) => {}
            result => return result,
        }
    }
    #[cfg(unix)]
    return named_tempfile_unlinked(&dir);
    #[cfg(windows)]
    return tempfile_deleted_on_close(&dir);
}

/// Whether opening with `O_TMPFILE` failed because the kernel or the file system lacks it
/// (then a named file is used instead) rather than because the directory is unusable.
#[cfg(target_os = "linux")]
fn o_tmpfile_unsupported(e: &io::Error) -> bool {
    e.raw_os_error().map_or(false, |code| {
        crate::compat::tmpfile::O_TMPFILE_UNSUPPORTED.contains(&code)
    })
}

/// A file in `dir` under a name nobody can guess, created exclusively with mode 0600 (so no
/// other user can open it, even in the instant before it is removed) and removed at once.
#[cfg(unix)]
fn named_tempfile_unlinked(dir: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create_new(true).mode(0o600);
    let (file, path) = create_unguessable(dir, &options)?;
    std::fs::remove_file(path)?;
    Ok(file)
}

/// A file in `dir` under a name nobody can guess, created exclusively, shared with nobody
/// (no other handle can open it, not even this process's) and deleted by Windows when its
/// handle closes, whether the process ends normally or not.
#[cfg(windows)]
fn tempfile_deleted_on_close(dir: &std::path::Path) -> io::Result<File> {
    use crate::compat::tmpfile::{FILE_ATTRIBUTE_TEMPORARY, FILE_FLAG_DELETE_ON_CLOSE};
    use std::os::windows::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create_new(true)
        .share_mode(0)
        .attributes(FILE_ATTRIBUTE_TEMPORARY)
        .custom_flags(FILE_FLAG_DELETE_ON_CLOSE);
    create_unguessable(dir, &options).map(|(file, _)| file)
}

/// Open a new file in `dir` with `options` (which create exclusively) under an unpredictable
/// name, trying another name in the unlikely case that one exists.
fn create_unguessable(
    dir: &std::path::Path,
    options: &std::fs::OpenOptions,
) -> io::Result<(File, std::path::PathBuf)> {
    loop {
        let path = dir.join(format!("waitress-{}.buf", unpredictable_name()));
        match options.open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// 32 hex digits no other process can predict. std has no random number generator, but each
/// `RandomState` carries keys seeded from the operating system's randomness; hashing the time,
/// the process id, a counter and a stack address with two of them gives 128 unguessable bits.
fn unpredictable_name() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hash, Hasher};
    // `BuildHasher::hash_one` arrived in Rust 1.71; this is what it does.
    fn hash_one(keys: RandomState, value: impl Hash) -> u64 {
        let mut hasher = keys.build_hasher();
        value.hash(&mut hasher);
        hasher.finish()
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let on_stack = 0u8;
    let address = &on_stack as *const u8 as usize;
    let seed = (nanos, std::process::id(), count, address);
    // Two states, two independent keys: 128 bits.
    let high = hash_one(RandomState::new(), seed);
    let low = hash_one(RandomState::new(), seed);
    format!("{high:016x}{low:016x}")
}

/// A file length as a memory length: an error past what this platform can address (a file
/// buffer of more than 4 GiB on a 32-bit target), instead of a silent truncation.
fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("{n} bytes do not fit in memory on this platform"),
        )
    })
}

/// Where an [`OverflowableBuffer`] keeps its bytes.
#[derive(Debug)]
enum Storage {
    /// The bytes are `data[start..]`; `data[..start]` was already consumed (waitress's
    /// `strbuf`/`BytesIOBasedBuffer` stages).
    Memory { data: Vec<u8>, start: usize },
    /// The bytes are `file[read_pos..end]` (waitress: `TempfileBasedBuffer`). `cursor` is
    /// where the file's own position stands, so a run of appends (a body arriving) or of
    /// reads (a response going out) seeks only when it switches from one to the other: a
    /// 256 MiB upload made an `lseek` per 8 KiB before. With the write-behind blocks (see
    /// `staged`), a 1 GiB `bench --scenario upload-cl` makes 4 `lseek` calls, and 4,098 if
    /// every access seeks, at no difference in MB/s the bench can see (6 Dec 2026).
    File {
        file: File,
        read_pos: u64,
        end: u64,
        cursor: u64,
    },
}

/// Memory until `overflow` bytes, then an anonymous temporary file.
///
/// waitress: `OverflowableBuffer`. Appending is amortised O(1) per byte: memory is one vector
/// with a read offset, compacted only when the consumed prefix is large.
#[derive(Debug)]
pub struct OverflowableBuffer {
    overflow: usize,
    storage: Storage,
    /// Bytes read from the file for [`OverflowableBuffer::peek`].
    scratch: Vec<u8>,
    /// Rust-only: bytes appended to a file buffer and not written to the file yet (their
    /// place in the file ends at `end`). A body arriving `recv_bytes` at a time was a
    /// `write` per 8 KiB at offsets that fall inside the kernel's page-cache blocks, and for
    /// a block that a write does not cover whole the kernel first zeroes the rest (up to
    /// 17 % of a 1 GiB upload's samples went to `memset`). Appends now go out in whole,
    /// aligned `WRITE_BEHIND` blocks, and everything before anything reads the file. With a
    /// block of one byte (each append written at once; `bench --scenario upload`, three
    /// interleaved runs each, 6 Dec 2026): 912–1,102 MB/s with `Content-Length` and 820–1,048
    /// chunked, against 1,315–1,557 and 1,463–1,602.
    staged: Vec<u8>,
}

/// Rust-only: a file buffer writes appended bytes in blocks of this size, at offsets that are
/// multiples of it (see `OverflowableBuffer::staged`).
const WRITE_BEHIND: usize = 256 * 1024;

/// How much a request body kept in a temporary file is read at a time for `wsgi.input`.
/// Rust-only (std's `BufReader` reads 8 KiB). With 8 KiB instead (`bench --scenario upload`,
/// whose application copies the body out, five runs each, 6 Dec 2026): 1,390–1,842 MB/s with
/// `Content-Length` against 1,640–1,864 with 64 KiB; chunked, 1,711–1,861 against
/// 1,551–1,769, where 64 KiB gains nothing.
const INPUT_READ_SIZE: usize = 64 * 1024;

/// Move `file`'s position to `pos` unless `cursor` says it is there already.
fn seek_to(file: &mut File, cursor: &mut u64, pos: u64) -> io::Result<()> {
    if *cursor != pos {
        file.seek(SeekFrom::Start(pos))?;
        *cursor = pos;
    }
    Ok(())
}

impl OverflowableBuffer {
    /// An empty buffer that moves to a temporary file past `overflow` bytes.
    pub fn new(overflow: usize) -> Self {
        OverflowableBuffer {
            overflow,
            storage: Storage::Memory {
                data: Vec::new(),
                start: 0,
            },
            scratch: Vec::new(),
            staged: Vec::new(),
        }
    }

    /// Write all the staged bytes to the file (before it is read).
    fn write_staged(&mut self) -> io::Result<()> {
        self.write_staged_up_to(u64::MAX)
    }

    /// Write the staged bytes that end at or before `limit` in the file.
    fn write_staged_up_to(&mut self, limit: u64) -> io::Result<()> {
        if let Storage::File {
            file, end, cursor, ..
        } = &mut self.storage
        {
            let start = *end - self.staged.len() as u64;
            let n = usize::try_from(limit.min(*end).saturating_sub(start)).unwrap_or(usize::MAX);
            if n > 0 {
                seek_to(file, cursor, start)?;
                file.write_all(&self.staged[..n])?;
                *cursor = start + n as u64;
                self.staged.drain(..n);
            }
        }
        Ok(())
    }

    /// Write the staged bytes up to the last `WRITE_BEHIND` boundary, once a whole block
    /// (or, the first time, whatever reaches the first boundary) is staged.
    fn write_staged_blocks(&mut self, end: u64) -> io::Result<()> {
        let block = WRITE_BEHIND as u64;
        let boundary = end - end % block;
        let start = end - self.staged.len() as u64;
        if boundary > start && (boundary - start >= block || start % block != 0) {
            self.write_staged_up_to(boundary)?;
        }
        Ok(())
    }

    /// Bytes held (`__len__`).
    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Memory { data, start } => data.len() - start,
            // `append` keeps a file buffer within `usize`, so this never saturates.
            Storage::File { read_pos, end, .. } => {
                usize::try_from(end - read_pos).unwrap_or(usize::MAX)
            }
        }
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the bytes live in a temporary file (waitress: `overflowed`).
    pub fn overflowed(&self) -> bool {
        matches!(self.storage, Storage::File { .. })
    }

    /// Add bytes at the end (amortised: never copies the whole buffer).
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.storage {
            Storage::Memory { data: mem, .. } => {
                mem.extend_from_slice(data);
                if self.len() >= self.overflow {
                    self.move_to_file()?;
                }
            }
            Storage::File { read_pos, end, .. } => {
                to_usize(*end - *read_pos + data.len() as u64)?;
                if self.staged.capacity() == 0 {
                    self.staged.reserve_exact(WRITE_BEHIND);
                }
                self.staged.extend_from_slice(data);
                *end += data.len() as u64;
                let end = *end;
                self.write_staged_blocks(end)?;
            }
        }
        Ok(())
    }

    /// Up to `numbytes` bytes from the front (all when `None`), removed when `skip`.
    pub fn get(&mut self, numbytes: Option<usize>, skip: bool) -> io::Result<Vec<u8>> {
        let n = numbytes.map_or(self.len(), |n| n.min(self.len()));
        let bytes = self.peek_exact(n)?;
        if skip {
            self.skip(bytes.len(), false)?;
        }
        Ok(bytes)
    }

    fn peek_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.write_staged()?;
        match &mut self.storage {
            Storage::Memory { data, start } => Ok(data[*start..*start + n].to_vec()),
            Storage::File {
                file,
                read_pos,
                cursor,
                ..
            } => {
                let mut out = vec![0; n];
                seek_to(file, cursor, *read_pos)?;
                file.read_exact(&mut out)?;
                *cursor += n as u64;
                Ok(out)
            }
        }
    }

    /// A view of up to `max` bytes at the front, without removing them (the send path uses
    /// it to avoid a copy per send).
    pub fn peek(&mut self, max: usize) -> io::Result<&[u8]> {
        let n = max.min(self.len());
        self.write_staged()?;
        match &mut self.storage {
            Storage::Memory { data, start } => Ok(&data[*start..*start + n]),
            Storage::File {
                file,
                read_pos,
                cursor,
                ..
            } => {
                self.scratch.resize(n, 0);
                seek_to(file, cursor, *read_pos)?;
                file.read_exact(&mut self.scratch)?;
                *cursor += n as u64;
                Ok(&self.scratch)
            }
        }
    }

    /// Drop `numbytes` bytes from the front. Asking for more than is held is an error, as in
    /// waitress. `allow_prune` lets a memory buffer release its space at once when it empties.
    pub fn skip(&mut self, numbytes: usize, allow_prune: bool) -> io::Result<()> {
        let held = self.len();
        if numbytes > held {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("Can't skip {numbytes} bytes in buffer of {held} bytes"),
            ));
        }
        match &mut self.storage {
            Storage::Memory { data, start } => {
                *start += numbytes;
                if *start == data.len() && (allow_prune || *start >= COMPACT_AT) {
                    data.clear();
                    *start = 0;
                } else if *start >= COMPACT_AT && *start * 2 >= data.len() {
                    data.drain(..*start);
                    *start = 0;
                }
            }
            Storage::File { read_pos, .. } => *read_pos += numbytes as u64,
        }
        Ok(())
    }

    /// Forget the bytes already read, reclaiming their space; a file buffer whose remainder
    /// fits under `overflow` goes back to memory (waitress: `prune`).
    pub fn prune(&mut self) -> io::Result<()> {
        self.write_staged()?;
        match &mut self.storage {
            Storage::Memory { data, start } => {
                data.drain(..*start);
                *start = 0;
            }
            Storage::File {
                file,
                read_pos,
                end,
                ..
            } => {
                let remaining = *end - *read_pos;
                file.seek(SeekFrom::Start(*read_pos))?;
                let fits = usize::try_from(remaining)
                    .ok()
                    .filter(|&n| n < self.overflow);
                if let Some(len) = fits {
                    let mut data = Vec::with_capacity(len);
                    file.take(remaining).read_to_end(&mut data)?;
                    self.storage = Storage::Memory { data, start: 0 };
                } else {
                    let mut fresh = anonymous_tempfile()?;
                    io::copy(&mut file.take(remaining), &mut fresh)?;
                    self.storage = Storage::File {
                        file: fresh,
                        read_pos: 0,
                        end: remaining,
                        cursor: remaining,
                    };
                }
            }
        }
        Ok(())
    }

    /// The remaining bytes as a reader, for `wsgi.input` (waitress: `getfile`).
    pub fn into_input(mut self) -> io::Result<Input> {
        self.write_staged()?;
        match self.storage {
            Storage::Memory { mut data, start } => {
                data.drain(..start);
                Ok(Input::new(Cursor::new(data)))
            }
            Storage::File {
                mut file,
                read_pos,
                end,
                ..
            } => {
                file.seek(SeekFrom::Start(read_pos))?;
                // 64 KiB reads rather than BufReader's 8 KiB default: a body in a file is a
                // large one, and the application reads it in a loop.
                let reader = BufReader::with_capacity(INPUT_READ_SIZE, file.take(end - read_pos));
                Ok(Input::new(reader))
            }
        }
    }

    /// Release the memory or the temporary file.
    pub fn close(&mut self) {
        self.storage = Storage::Memory {
            data: Vec::new(),
            start: 0,
        };
        self.scratch = Vec::new();
        self.staged = Vec::new();
    }

    /// Copy everything to a fresh temporary file (waitress: `_set_large_buffer`).
    fn move_to_file(&mut self) -> io::Result<()> {
        if let Storage::Memory { data, start } = &self.storage {
            let mut file = anonymous_tempfile()?;
            file.write_all(&data[*start..])?;
            let end = (data.len() - start) as u64;
            self.storage = Storage::File {
                file,
                read_pos: 0,
                end,
                cursor: end,
            };
        }
        Ok(())
    }
}

/// A file the application handed over with `wsgi.file_wrapper`, served from its current
/// position (waitress: `ReadOnlyFileBasedBuffer`).
pub struct ReadOnlyFileBasedBuffer {
    source: FileSource,
    block_size: usize,
    remain: u64,
    /// Bytes read ahead for `peek`; `skip` consumes them first.
    pending: Vec<u8>,
    pending_start: usize,
}

impl std::fmt::Debug for ReadOnlyFileBasedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyFileBasedBuffer")
            .field("block_size", &self.block_size)
            .field("remain", &self.remain)
            .finish()
    }
}

impl ReadOnlyFileBasedBuffer {
    /// Wrap the application's file wrapper.
    pub fn new(wrapper: FileWrapper) -> Self {
        let (source, block_size) = wrapper.into_parts();
        ReadOnlyFileBasedBuffer {
            source,
            block_size,
            remain: 0,
            pending: Vec::new(),
            pending_start: 0,
        }
    }

    /// Whether the file can seek, and so be served by offset and length.
    pub fn is_seekable(&self) -> bool {
        matches!(self.source, FileSource::Seekable(_))
    }

    /// Measure what is left to send (at most `size` bytes when given) and remember it;
    /// returns that length, or 0 when the file cannot seek (then it is iterated instead).
    pub fn prepare(&mut self, size: Option<u64>) -> io::Result<u64> {
        if let FileSource::Seekable(file) = &mut self.source {
            let start = file.stream_position()?;
            let end = file.seek(SeekFrom::End(0))?;
            file.seek(SeekFrom::Start(start))?;
            let available = end.saturating_sub(start);
            self.remain = size.map_or(available, |s| s.min(available));
        }
        Ok(self.remain)
    }

    /// Bytes left to send (after `prepare`).
    pub fn len(&self) -> u64 {
        self.remain
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A view of up to `max` bytes at the current position.
    pub fn peek(&mut self, max: usize) -> io::Result<&[u8]> {
        let want = usize::try_from(self.remain).map_or(max, |remain| remain.min(max));
        let have = self.pending.len() - self.pending_start;
        if have < want {
            self.pending.drain(..self.pending_start);
            self.pending_start = 0;
            let mut reader = match &mut self.source {
                FileSource::Seekable(r) => (r as &mut dyn Read).take((want - have) as u64),
                FileSource::Stream(r) => (r as &mut dyn Read).take((want - have) as u64),
            };
            let got = reader.read_to_end(&mut self.pending)?;
            if got == 0 {
                // The file shrank under us: nothing more will come.
                self.remain = (self.pending.len()) as u64;
            }
        }
        let have = self.pending.len() - self.pending_start;
        let n = want.min(have);
        Ok(&self.pending[self.pending_start..self.pending_start + n])
    }

    /// Advance past `numbytes` bytes (already seen through `peek`).
    pub fn skip(&mut self, numbytes: usize) -> io::Result<()> {
        let from_pending = numbytes.min(self.pending.len() - self.pending_start);
        self.pending_start += from_pending;
        let rest = (numbytes - from_pending) as u64;
        if rest > 0 {
            if let FileSource::Seekable(file) = &mut self.source {
                let rest = i64::try_from(rest).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "skip past the end of a file")
                })?;
                file.seek(SeekFrom::Current(rest))?;
            }
        }
        self.remain = self.remain.saturating_sub(numbytes as u64);
        if self.pending_start == self.pending.len() {
            self.pending.clear();
            self.pending_start = 0;
        }
        Ok(())
    }

    /// The next block, for a file that cannot seek (waitress: `__next__`); `None` at the end.
    pub fn next_block(&mut self) -> Option<io::Result<Vec<u8>>> {
        let mut block = Vec::with_capacity(self.block_size);
        let reader: &mut dyn Read = match &mut self.source {
            FileSource::Seekable(r) => r,
            FileSource::Stream(r) => r,
        };
        match reader.take(self.block_size as u64).read_to_end(&mut block) {
            Ok(0) => None,
            Ok(_) => Some(Ok(block)),
            Err(e) => Some(Err(e)),
        }
    }

    /// Close the file (waitress: `close`): the file is dropped and nothing more is sent.
    pub fn close(&mut self) {
        self.source = FileSource::Stream(Box::new(io::empty()));
        self.remain = 0;
        self.pending = Vec::new();
        self.pending_start = 0;
    }
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_buffers.py. waitress's `FileBasedBuffer`/`TempfileBasedBuffer` and
    //! `BytesIOBasedBuffer` are the file and memory storages of `OverflowableBuffer` here, so
    //! their tests run against an `OverflowableBuffer` on the matching side of `overflow`
    //! (`in_file`, `in_memory`). Not ported under their own names:
    // test___nonzero__: Python truthiness of a FileBasedBuffer (always true); Rust has `is_empty`, tested by test___nonzero__ of OverflowableBuffer's tests below
    // test___nonzero___on_int_overflow_buffer: mocks `__len__` past a C long; lengths are `usize`
    // test_append_with_len_more_than_max_int: mocks `__len__` past a C long (Python 2's OverflowError)
    // test_prune_with_buflen_more_than_max_int: mocks `__len__` past a C long (Python 2's OverflowError)
    // test_ctor_from_buffer_none: a FileBasedBuffer wrapping any object; storages are built only by OverflowableBuffer
    // test_ctor_from_buffer_not_none: BytesIOBasedBuffer built from another buffer; memory storage is built only by OverflowableBuffer
    // test_prune_remain_zero_tell_zero: keeps the same file object; here a file buffer with nothing left goes back to memory (test_prune_remain_zero_tell_notzero)
    // test_prepare_not_seekable_closeable: checks that a `close` attribute is copied; closing is `Drop` here
    // test_append: also TestReadOnlyFileBasedBuffer's, which checks `append` raises; the read-only buffer has no `append`
    // test_newfile: also FileBasedBuffer's (raises NotImplementedError) and BytesIOBasedBuffer's (a BytesIO); only the temporary file exists here
    use super::*;

    fn filled(overflow: usize, data: &[u8]) -> OverflowableBuffer {
        let mut buf = OverflowableBuffer::new(overflow);
        buf.append(data).unwrap();
        buf
    }

    /// A buffer whose bytes live in a temporary file (waitress: a `TempfileBasedBuffer`).
    fn in_file(data: &[u8]) -> OverflowableBuffer {
        let buf = filled(1, data);
        assert!(buf.overflowed() || data.is_empty());
        buf
    }

    /// A buffer whose bytes live in memory (waitress: `strbuf` or a `BytesIOBasedBuffer`).
    fn in_memory(data: &[u8]) -> OverflowableBuffer {
        let buf = filled(1 << 20, data);
        assert!(!buf.overflowed());
        buf
    }

    /// The memory vector and its read offset.
    fn memory(buf: &OverflowableBuffer) -> (&Vec<u8>, usize) {
        match &buf.storage {
            Storage::Memory { data, start } => (data, *start),
            Storage::File { .. } => panic!("the buffer overflowed"),
        }
    }

    // TestFileBasedBuffer

    #[test]
    fn test_ctor_from_buffer() {
        // Overflowing moves what memory held into the new file.
        let mut buf = filled(5, b"data");
        assert!(!buf.overflowed());
        buf.append(b"!").unwrap();
        assert!(buf.overflowed());
        assert_eq!(buf.len(), 5);
        assert_eq!(buf.get(None, false).unwrap(), b"data!");
    }

    #[test]
    #[allow(non_snake_case)]
    fn test___len__() {
        let mut buf = in_file(b"0123456789");
        assert_eq!(buf.len(), 10);
        buf.skip(3, false).unwrap();
        assert_eq!(buf.len(), 7);
    }

    #[test]
    fn test_append() {
        let mut buf = in_file(b"data");
        buf.append(b"data2").unwrap();
        assert_eq!(buf.len(), 9);
        assert_eq!(buf.get(None, false).unwrap(), b"datadata2");
    }

    #[test]
    fn test_get_skip_true() {
        for mut buf in [in_file(b"data"), in_memory(b"data")] {
            assert_eq!(buf.get(Some(100), true).unwrap(), b"data");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn test_get_skip_false() {
        for mut buf in [in_file(b"data"), in_memory(b"data")] {
            assert_eq!(buf.get(Some(100), false).unwrap(), b"data");
            assert_eq!(buf.len(), 4);
        }
    }

    #[test]
    fn test_get_skip_bytes_less_than_zero() {
        // waitress's `get(-1)` is "everything": `None` here.
        for mut buf in [in_file(b"data"), in_memory(b"data")] {
            assert_eq!(buf.get(None, false).unwrap(), b"data");
            assert_eq!(buf.len(), 4);
        }
    }

    #[test]
    fn test_skip_remain_gt_bytes() {
        for mut buf in [in_file(b"d"), in_memory(b"d")] {
            buf.skip(1, false).unwrap();
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn test_skip_remain_lt_bytes() {
        for mut buf in [in_file(b"d"), in_memory(b"d")] {
            let err = buf.skip(2, false).unwrap_err();
            assert_eq!(err.to_string(), "Can't skip 2 bytes in buffer of 1 bytes");
            assert_eq!(buf.len(), 1);
        }
    }

    #[test]
    fn test_newfile() {
        // TestTempfileBasedBuffer's: a new temporary file is a real, empty, writable file.
        let mut file = anonymous_tempfile().unwrap();
        file.write_all(b"abc").unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut out = Vec::new();
        file.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
    }

    #[test]
    fn test_prune_remain_notzero() {
        // What is left is copied to a fresh file.
        let mut buf = filled(2, b"0123456789");
        buf.skip(7, false).unwrap();
        buf.prune().unwrap();
        assert!(buf.overflowed());
        assert_eq!(buf.get(None, false).unwrap(), b"789");
    }

    #[test]
    fn test_prune_remain_zero_tell_notzero() {
        // Everything was read: the old file is let go.
        let mut buf = in_file(b"d");
        buf.skip(1, false).unwrap();
        buf.prune().unwrap();
        assert!(!buf.overflowed());
        assert!(buf.is_empty());
    }

    #[test]
    fn test_close() {
        let mut buf = in_file(b"abc");
        buf.close();
        assert!(!buf.overflowed(), "the file is released");
        assert!(buf.is_empty());
    }

    // TestOverflowableBuffer

    #[test]
    #[allow(non_snake_case)]
    fn test___len__buf_is_none() {
        assert_eq!(OverflowableBuffer::new(10).len(), 0);
    }

    #[test]
    #[allow(non_snake_case)]
    fn test___len__buf_is_not_none() {
        assert_eq!(filled(10, b"abc").len(), 3);
    }

    #[test]
    #[allow(non_snake_case)]
    fn test___nonzero__() {
        let mut buf = filled(10, b"abc");
        assert!(!buf.is_empty());
        buf.skip(3, false).unwrap();
        assert!(buf.is_empty());
    }

    #[test]
    #[allow(non_snake_case)]
    fn test__create_buffer_large() {
        let mut buf = filled(10, &[b'x'; 11]);
        assert!(buf.overflowed());
        assert_eq!(buf.get(Some(100), false).unwrap(), [b'x'; 11]);
    }

    #[test]
    #[allow(non_snake_case)]
    fn test__create_buffer_small() {
        let mut buf = filled(10, &[b'x'; 5]);
        assert!(!buf.overflowed());
        assert_eq!(buf.get(Some(100), false).unwrap(), [b'x'; 5]);
    }

    #[test]
    fn test_append_buf_none_not_longer_than_srtbuf_limit() {
        let mut buf = filled(11, b"xxxxx");
        buf.append(b"hello").unwrap();
        assert_eq!(memory(&buf).0, b"xxxxxhello");
        // waitress keeps anything under STRBUF_LIMIT in memory whatever `overflow` says; here
        // `overflow` alone decides, so ten bytes with `overflow` 10 go to a file. Same bytes.
        let mut buf = filled(10, b"xxxxx");
        buf.append(b"hello").unwrap();
        assert!(buf.overflowed());
        assert_eq!(buf.get(None, false).unwrap(), b"xxxxxhello");
    }

    #[test]
    fn test_append_buf_none_longer_than_strbuf_limit() {
        // waitress's STRBUF_LIMIT (8192) has no counterpart: memory is one vector at any size,
        // and only `overflow` decides.
        let mut buf = filled(10000, &[b'x'; 8192]);
        buf.append(b"hello").unwrap();
        assert!(!buf.overflowed());
        assert_eq!(buf.len(), 8197);
    }

    #[test]
    fn test_append_overflow() {
        let mut buf = filled(10, b"xxxxx");
        assert!(!buf.overflowed());
        buf.append(&[b'x'; 8187]).unwrap();
        buf.append(b"hello").unwrap();
        assert!(buf.overflowed());
        assert_eq!(buf.len(), 8197);
    }

    #[test]
    fn test_append_sz_gt_overflow() {
        let mut buf = in_memory(b"data");
        buf.overflow = 2;
        buf.append(b"data2").unwrap();
        assert!(buf.overflowed());
        assert_eq!(buf.get(None, false).unwrap(), b"datadata2");
    }

    #[test]
    fn test_get_buf_none_skip_false() {
        let mut buf = in_memory(b"xxxxx");
        assert_eq!(buf.get(Some(5), false).unwrap(), b"xxxxx");
        assert_eq!(buf.len(), 5);
    }

    #[test]
    fn test_get_buf_none_skip_true() {
        let mut buf = in_memory(b"xxxxx");
        assert_eq!(buf.get(Some(5), true).unwrap(), b"xxxxx");
        assert!(buf.is_empty());
    }

    #[test]
    fn test_skip_buf_none() {
        // Without `allow_prune` the consumed bytes stay until they are worth compacting.
        let mut buf = in_memory(b"data");
        buf.skip(4, false).unwrap();
        assert!(buf.is_empty());
        assert_eq!(memory(&buf), (&b"data".to_vec(), 4));
    }

    #[test]
    fn test_skip_buf_none_allow_prune_true() {
        let mut buf = in_memory(b"data");
        buf.skip(4, true).unwrap();
        assert!(buf.is_empty());
        assert_eq!(memory(&buf), (&Vec::new(), 0), "released at once");
    }

    #[test]
    fn test_prune_buf_none() {
        let mut buf = OverflowableBuffer::new(10);
        buf.prune().unwrap();
        assert!(buf.is_empty());
        assert!(!buf.overflowed());
    }

    #[test]
    fn test_prune_with_buf() {
        let mut buf = in_memory(b"abcdef");
        buf.skip(2, false).unwrap();
        buf.prune().unwrap();
        assert_eq!(memory(&buf), (&b"cdef".to_vec(), 0));
    }

    #[test]
    fn test_prune_with_buf_overflow() {
        // A file buffer whose remainder fits under `overflow` again goes back to memory.
        let mut buf = filled(5, b"1234567890");
        assert!(buf.overflowed());
        buf.skip(7, false).unwrap();
        buf.prune().unwrap();
        assert!(!buf.overflowed());
        assert_eq!(buf.get(None, false).unwrap(), b"890");
    }

    #[test]
    fn test_getfile_buf_none() {
        let mut out = Vec::new();
        let mut input = OverflowableBuffer::new(10).into_input().unwrap();
        input.read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn test_getfile_buf_not_none() {
        for mut buf in [in_file(b"hello world"), in_memory(b"hello world")] {
            buf.skip(6, false).unwrap();
            let mut input = buf.into_input().unwrap();
            let mut out = String::new();
            input.read_to_string(&mut out).unwrap();
            assert_eq!(out, "world");
        }
    }

    #[test]
    fn test_close_nobuf() {
        let mut buf = OverflowableBuffer::new(10);
        buf.close();
        assert!(buf.is_empty());
    }

    #[test]
    fn test_close_withbuf() {
        let mut buf = in_file(b"abc");
        buf.close();
        assert!(buf.is_empty());
        assert!(!buf.overflowed());
    }

    #[test]
    fn peek_does_not_consume() {
        for mut buf in [in_file(b"abcdef"), in_memory(b"abcdef")] {
            assert_eq!(buf.peek(4).unwrap(), b"abcd");
            assert_eq!(buf.peek(100).unwrap(), b"abcdef");
            buf.skip(2, false).unwrap();
            assert_eq!(buf.peek(2).unwrap(), b"cd");
        }
    }

    #[test]
    fn appends_to_a_file_are_written_in_aligned_blocks_and_before_any_read() {
        let block = WRITE_BEHIND as u64;
        let mut buf = in_file(b"ab");
        let file_len = |buf: &OverflowableBuffer| match &buf.storage {
            Storage::File { file, .. } => file.metadata().unwrap().len(),
            Storage::Memory { .. } => panic!("the buffer did not overflow"),
        };
        assert_eq!(file_len(&buf), 2);
        // Small appends wait in memory...
        for _ in 0..10 {
            buf.append(b"0123456789").unwrap();
        }
        assert_eq!((buf.len(), file_len(&buf)), (102, 2));
        // ...until a read needs them,
        assert_eq!(buf.peek(4).unwrap(), b"ab01");
        assert_eq!(file_len(&buf), 102);
        // or until they reach a block boundary: then what lies before it goes out,
        buf.append(&vec![b'x'; WRITE_BEHIND - 200]).unwrap();
        assert_eq!(file_len(&buf), 102);
        buf.append(&[b'y'; 100]).unwrap();
        assert_eq!(file_len(&buf), block);
        // and from there on, whole blocks.
        buf.append(&vec![b'w'; WRITE_BEHIND - 3]).unwrap();
        assert_eq!(file_len(&buf), block);
        buf.append(b"v").unwrap();
        assert_eq!(file_len(&buf), 2 * block);
        buf.skip(100, false).unwrap();
        buf.append(b"z").unwrap();
        let mut rest = String::new();
        buf.into_input().unwrap().read_to_string(&mut rest).unwrap();
        let expected = format!(
            "89{}{}{}vz",
            "x".repeat(WRITE_BEHIND - 200),
            "y".repeat(100),
            "w".repeat(WRITE_BEHIND - 3)
        );
        assert_eq!(rest, expected);
    }

    /// The file behind an overflowed buffer.
    #[cfg(unix)]
    fn overflow_file(buf: &OverflowableBuffer) -> &File {
        match &buf.storage {
            Storage::File { file, .. } => file,
            Storage::Memory { .. } => panic!("the buffer did not overflow"),
        }
    }

    /// Mode 0600 and no name left on disk: no other process can open the file.
    #[cfg(unix)]
    fn assert_private(file: &File) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = file.metadata().unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.nlink(), 0, "no directory entry names the file");
    }

    #[test]
    #[cfg(unix)]
    fn tempfiles_leave_nothing_behind() {
        // Checked on the buffer's own file, not by listing the temporary directory (where
        // tests running in parallel create files of their own).
        let buf = filled(1, b"secret");
        assert!(buf.overflowed());
        assert_private(overflow_file(&buf));
        let mut buf = filled(2, b"0123456789");
        buf.skip(1, false).unwrap();
        buf.prune().unwrap();
        assert!(buf.overflowed(), "pruning into a fresh file");
        assert_private(overflow_file(&buf));
    }

    #[test]
    #[cfg(windows)]
    fn windows_tempfile_is_private_and_gone_once_closed() {
        let dir = std::env::temp_dir().join(format!("waitress-buf-{}", unpredictable_name()));
        std::fs::create_dir(&dir).unwrap();
        let mut file = tempfile_deleted_on_close(&dir).unwrap();
        file.write_all(b"secret").unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "named while open");
        let path = names[0].as_ref().unwrap().path();
        assert!(File::open(&path).is_err(), "shared with nobody");
        drop(file);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "deleted on close"
        );
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn named_fallback_tempfile_is_private_from_the_start() {
        let file = named_tempfile_unlinked(&std::env::temp_dir()).unwrap();
        assert_private(&file);
        let names: std::collections::HashSet<String> =
            (0..64).map(|_| unpredictable_name()).collect();
        assert_eq!(names.len(), 64);
        assert!(names.iter().all(|n| n.len() == 32));
    }

    /// `/proc/self/fd/N` of a file without a name ends in " (deleted)"; an `O_TMPFILE` file
    /// reads like `/tmp/#1234 (deleted)`.
    #[cfg(target_os = "linux")]
    fn proc_fd_link(file: &File) -> String {
        use std::os::unix::io::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    #[cfg_attr(not(target_os = "linux"), ignore = "O_TMPFILE and /proc are Linux's")]
    fn tempfile_never_has_a_name_on_linux() {
        #[cfg(target_os = "linux")]
        {
            let file = anonymous_tempfile().unwrap();
            assert_private(&file);
            let link = proc_fd_link(&file);
            assert!(link.ends_with(" (deleted)"), "{link}");
            if crate::compat::tmpfile::O_TMPFILE.is_some() {
                // A file made with O_TMPFILE is called `#<inode>`: it never had a name.
                let name = link.rsplit('/').next().unwrap_or("");
                assert!(name.starts_with('#'), "{link}");
            }
            let fallback = named_tempfile_unlinked(&std::env::temp_dir()).unwrap();
            let link = proc_fd_link(&fallback);
            assert!(link.ends_with(" (deleted)"), "{link}");
        }
    }

    // TestReadOnlyFileBasedBuffer

    /// A read-only buffer over `data` that can seek, prepared to send `remain` bytes.
    fn seekable(data: &'static [u8], remain: Option<u64>) -> ReadOnlyFileBasedBuffer {
        let mut buf = ReadOnlyFileBasedBuffer::new(FileWrapper::new(Cursor::new(data), 2));
        buf.prepare(remain).unwrap();
        buf
    }

    /// The read position of a seekable source.
    fn position(buf: &mut ReadOnlyFileBasedBuffer) -> u64 {
        match &mut buf.source {
            FileSource::Seekable(file) => file.stream_position().unwrap(),
            FileSource::Stream(_) => panic!("not seekable"),
        }
    }

    #[test]
    fn test_prepare_not_seekable() {
        let mut buf = ReadOnlyFileBasedBuffer::new(FileWrapper::from_reader(&b"abc"[..], 2));
        assert!(!buf.is_seekable());
        assert_eq!(buf.prepare(None).unwrap(), 0);
        assert_eq!(buf.len(), 0);
    }

    #[test]
    fn test_prepare_seekable() {
        assert_eq!(seekable(b"abc", None).len(), 3);
        assert_eq!(seekable(b"abc", Some(2)).len(), 2);
    }

    #[test]
    fn test_prepare_seekable_closeable() {
        // prepare measures up to the end and seeks back where the file was.
        let mut buf = seekable(b"0123456789", None);
        assert_eq!(buf.len(), 10);
        assert_eq!(position(&mut buf), 0);
    }

    #[test]
    fn test_prepare_from_current_position() {
        let mut file = Cursor::new(&b"abcdef"[..]);
        file.seek(SeekFrom::Start(2)).unwrap();
        let mut buf = ReadOnlyFileBasedBuffer::new(FileWrapper::new(file, 8));
        assert_eq!(buf.prepare(None).unwrap(), 4);
        assert_eq!(buf.peek(10).unwrap(), b"cdef");
    }

    // waitress's `get(numbytes, skip)` is `peek(numbytes)` followed, with `skip`, by `skip`.

    #[test]
    fn test_get_numbytes_neg_one() {
        let mut buf = seekable(b"abcdef", Some(2));
        assert_eq!(buf.peek(usize::MAX).unwrap(), b"ab");
        assert_eq!(buf.len(), 2);
    }

    #[test]
    fn test_get_numbytes_gt_remain() {
        let mut buf = seekable(b"abcdef", Some(2));
        assert_eq!(buf.peek(3).unwrap(), b"ab");
        assert_eq!(buf.len(), 2);
    }

    #[test]
    fn test_get_numbytes_lt_remain() {
        let mut buf = seekable(b"abcdef", Some(2));
        assert_eq!(buf.peek(1).unwrap(), b"a");
        assert_eq!(buf.len(), 2);
    }

    #[test]
    fn test_get_numbytes_gt_remain_withskip() {
        let mut buf = seekable(b"abcdef", Some(2));
        let got = buf.peek(3).unwrap().to_vec();
        buf.skip(got.len()).unwrap();
        assert_eq!(got, b"ab");
        assert_eq!(buf.len(), 0);
        assert_eq!(position(&mut buf), 2);
        assert_eq!(buf.peek(3).unwrap(), b"");
    }

    #[test]
    fn test_get_numbytes_lt_remain_withskip() {
        let mut buf = seekable(b"abcdef", Some(2));
        let got = buf.peek(1).unwrap().to_vec();
        buf.skip(got.len()).unwrap();
        assert_eq!(got, b"a");
        assert_eq!(buf.len(), 1);
        assert_eq!(buf.peek(3).unwrap(), b"b");
    }

    #[test]
    #[allow(non_snake_case)]
    fn test___iter__() {
        let data = vec![b'a'; 10000];
        let mut buf =
            ReadOnlyFileBasedBuffer::new(FileWrapper::from_reader(Cursor::new(data.clone()), 8192));
        let mut blocks = Vec::new();
        while let Some(block) = buf.next_block() {
            blocks.push(block.unwrap());
        }
        assert_eq!(
            blocks.iter().map(Vec::len).collect::<Vec<_>>(),
            [8192, 1808]
        );
        assert_eq!(blocks.concat(), data);
    }
}
