//! Port of waitress/parser.py.
//!
//! `HttpRequestParser` turns the bytes of one request, fed in slices of any size, into a
//! request: the start line, the headers (as the upper-cased, underscored names of the environ)
//! and a body receiver. It runs on the I/O thread, allocates per request only what it keeps
//! (and less once [`HttpRequestParser::reset`] lets it keep its memory for the next), and
//! refuses everything waitress refuses, recording an [`Error`] for the task to answer.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::adjustments::Adjustments;
use crate::app::{fixed_or, latin1_to_string, push_latin1_decoded, Input};
use crate::buffers::OverflowableBuffer;
use crate::receiver::{ChunkedReceiver, FixedStreamReceiver};
use crate::rfc7230::{header_field, is_only_digit, is_tchar};
use crate::utilities::{
    find_crlf, find_double_newline, keep_for_next, take_kept, Error, SpareStrings,
};

/// A request head waitress refuses with 400 (waitress: `ParsingError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsingError(pub String);

impl fmt::Display for ParsingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParsingError {}

/// A transfer coding waitress does not implement, answered with 501 (waitress:
/// `TransferEncodingNotImplemented`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferEncodingNotImplemented(pub String);

impl fmt::Display for TransferEncodingNotImplemented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransferEncodingNotImplemented {}

/// What `parse_header` can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// 400.
    Parsing(ParsingError),
    /// 501.
    TransferEncoding(TransferEncodingNotImplemented),
}

/// The body receiver chosen by the headers.
#[derive(Debug)]
pub enum BodyReceiver {
    /// `Content-Length`.
    Fixed(FixedStreamReceiver),
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkedReceiver),
}

/// One HTTP request being read (waitress: `HTTPRequestParser`).
///
/// The public fields carry waitress's attribute names; the task reads them to build the environ.
#[derive(Debug)]
pub struct HttpRequestParser {
    /// Set once the request is complete (or has failed).
    pub completed: bool,
    /// Set when the "request" was only blank lines.
    pub empty: bool,
    /// The client sent `Expect: 100-continue` (HTTP/1.1).
    pub expect_continue: bool,
    /// The head has been read.
    pub headers_finished: bool,
    /// The body is chunked.
    pub chunked: bool,
    /// The declared `Content-Length`, or 0.
    pub content_length: u64,
    /// Bytes of the head read so far.
    pub header_bytes_received: usize,
    /// Bytes of the body read so far.
    pub body_bytes_received: u64,
    /// The body receiver, once the head asked for a body.
    pub body_rcv: Option<BodyReceiver>,
    /// The HTTP version, `"1.0"` by default (`"1.1"`, …): fixed text for those two, a copy of
    /// another (Rust-only, as for `command` and `url_scheme`: see `app::fixed_or`).
    pub version: Cow<'static, str>,
    /// Why the request is refused, if it is.
    pub error: Option<Error>,
    /// The connection must close after this request.
    pub connection_close: bool,
    /// The start line, without its CRLF.
    pub first_line: Vec<u8>,
    /// The headers: upper-cased names with `-` turned to `_`, latin-1 values; repeated headers
    /// joined with `", "`.
    pub headers: HashMap<String, String>,
    /// The method, upper-case as received (fixed text for the common ones: GET, POST, HEAD,
    /// PUT).
    pub command: Cow<'static, str>,
    /// The request target as received (latin-1).
    pub request_uri: String,
    /// The scheme of an absolute-form target (`http`), else empty.
    pub proxy_scheme: String,
    /// The authority of an absolute-form target, else empty.
    pub proxy_netloc: String,
    /// The `%`-decoded path, latin-1 (PEP 3333's `PATH_INFO`).
    pub path: String,
    /// The query string, undecoded, latin-1.
    pub query: String,
    /// The fragment, latin-1.
    pub fragment: String,
    /// `wsgi.url_scheme` (from the adjustments; fixed text for `http` and `https`).
    pub url_scheme: Cow<'static, str>,
    /// The head so far, until its blank line arrives (waitress: `header_plus`). Only a head
    /// that spans several reads is gathered here (see `received_head`).
    header_plus: Vec<u8>,
    /// Rust-only: emptied strings of an earlier request's header names and values, reused
    /// for this one's (see [`HttpRequestParser::reset`]).
    spare_strings: SpareStrings,
    adj: Arc<Adjustments>,
}

/// The largest buffer a reset parser keeps: with the bound below and the spare strings' (see
/// [`SpareStrings`]), a parser kept for reuse stays a few KiB however large the request it
/// last read.
const LARGEST_KEPT: usize = 1024;
/// The most entries a reset parser's header table keeps room for.
const MOST_KEPT_HEADERS: usize = 64;

/// Which of the headers that frame a request (and that `parse_header` looks up after reading
/// them all) came with it. Rust-only: each look-up hashes its name (SipHash, as every
/// `HashMap` in std), and most requests carry none of them, or only `Connection`; asking the
/// map only for those that came took a hello-world request (a GET with a `Host` header alone)
/// from 14,991 and 15,086 user-space instructions to 13,998 and 14,091 (callgrind).
#[derive(Debug, Default)]
struct FramingHeaders {
    transfer_encoding: bool,
    content_length: bool,
    connection: bool,
    expect: bool,
}

impl FramingHeaders {
    /// Note `name` (as the map keys it) if it is one of them.
    fn note(&mut self, name: &str) {
        match name {
            "TRANSFER_ENCODING" => self.transfer_encoding = true,
            "CONTENT_LENGTH" => self.content_length = true,
            "CONNECTION" => self.connection = true,
            "EXPECT" => self.expect = true,
            _ => {}
        }
    }
}

/// Append header name `key` (a token, so ASCII) as the map keys it: upper case, `-` as `_`.
/// Rust-only: mapped in a buffer on the stack and appended whole, where it went a char at a
/// time (as a name longer than the buffer still does). callgrind, two runs each: 29,157 →
/// 28,034 user-space instructions per request with a browser's nine headers; 11,248 → 11,290
/// for wrk's lone `Host`, too short a name to gain.
fn push_environ_name(name: &mut String, key: &[u8]) {
    let map = |b: u8| match b {
        b'-' => b'_',
        b => b.to_ascii_uppercase(),
    };
    let mut buffer = [0u8; 64];
    if let Some(mapped) = buffer.get_mut(..key.len()) {
        for (to, &from) in mapped.iter_mut().zip(key) {
            *to = map(from);
        }
        if let Ok(text) = std::str::from_utf8(mapped) {
            name.push_str(text);
            return;
        }
    }
    name.extend(key.iter().map(|&b| char::from(map(b))));
}

/// The methods most requests use, kept as fixed text (see `app::fixed_or`).
pub(crate) const COMMON_METHODS: [&str; 4] = ["GET", "POST", "HEAD", "PUT"];

/// Headers that may appear only once (waitress: `SINGLETON_FIELDS`, after RFC 9112).
pub const SINGLETON_FIELDS: [&str; 3] = ["HOST", "CONTENT_LENGTH", "CONTENT_TYPE"];

/// `%XX`-decode a request path and read the bytes as latin-1, as PEP 3333 wants `PATH_INFO`
/// (waitress: `unquote_bytes_to_wsgi`). A `%` not followed by two hex digits stays as it is.
pub fn unquote_bytes_to_wsgi(bytes: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push(char::from(hi * 16 + lo));
                i += 3;
                continue;
            }
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

impl HeaderError {
    /// The HTTP error the server answers with: 400 or 501.
    pub fn into_error(self) -> Error {
        match self {
            HeaderError::Parsing(ParsingError(message)) => Error::bad_request(message),
            HeaderError::TransferEncoding(TransferEncodingNotImplemented(message)) => {
                Error::server_not_implemented(message)
            }
        }
    }
}

fn parsing_error<T>(message: impl Into<String>) -> Result<T, HeaderError> {
    Err(HeaderError::Parsing(ParsingError(message.into())))
}

fn not_implemented<T>(message: &str) -> Result<T, HeaderError> {
    Err(HeaderError::TransferEncoding(
        TransferEncodingNotImplemented(message.to_string()),
    ))
}

/// The whitespace Python's `bytes.strip()` removes.
fn is_py_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `text` made the latin-1 reading of `bytes` (see [`latin1_to_string`]), in its own memory.
fn set_latin1(text: &mut String, bytes: &[u8]) {
    text.clear();
    push_latin1_decoded(text, bytes);
}

/// `buffer` emptied (by `empty`), its memory kept unless its `room` grew past
/// [`LARGEST_KEPT`].
fn keep_emptied<T: Default>(buffer: &mut T, room: fn(&T) -> usize, empty: fn(&mut T)) {
    if room(buffer) > LARGEST_KEPT {
        *buffer = T::default();
    } else {
        empty(buffer);
    }
}

thread_local! {
    /// The spans of the last header block this thread split (see `add_header_lines`).
    static KEPT_LINE_SPANS: Cell<Vec<LineSpan>> = const { Cell::new(Vec::new()) };
}

/// The most line spans a thread keeps between requests: a block with more lines (up to
/// `max_request_header_size` allows) has its spans freed.
const MOST_KEPT_LINE_SPANS: usize = 256;

impl HttpRequestParser {
    /// A parser for the next request on a connection.
    pub fn new(adj: Arc<Adjustments>) -> Self {
        HttpRequestParser {
            completed: false,
            empty: false,
            expect_continue: false,
            headers_finished: false,
            chunked: false,
            content_length: 0,
            header_bytes_received: 0,
            body_bytes_received: 0,
            body_rcv: None,
            version: Cow::Borrowed("1.0"),
            error: None,
            connection_close: false,
            first_line: Vec::new(),
            headers: HashMap::new(),
            command: Cow::Borrowed(""),
            request_uri: String::new(),
            proxy_scheme: String::new(),
            proxy_netloc: String::new(),
            path: String::new(),
            query: String::new(),
            fragment: String::new(),
            url_scheme: Cow::Borrowed(""),
            header_plus: Vec::new(),
            spare_strings: SpareStrings::new(),
            adj,
        }
    }

    /// Rust-only: make this parser as [`new`](Self::new) makes one, for the next request, but
    /// keep its memory: the emptied buffers, the header table, and the header names and values
    /// as spare strings. The I/O thread resets the parsers of finished requests (see
    /// `ChannelServer::recycle_requests`) so that reading a request allocates little; the
    /// fields are listed whole, so that a field added later cannot be left out unnoticed.
    pub fn reset(&mut self) {
        let HttpRequestParser {
            completed,
            empty,
            expect_continue,
            headers_finished,
            chunked,
            content_length,
            header_bytes_received,
            body_bytes_received,
            body_rcv,
            version,
            error,
            connection_close,
            first_line,
            headers,
            command,
            request_uri,
            proxy_scheme,
            proxy_netloc,
            path,
            query,
            fragment,
            url_scheme,
            header_plus,
            spare_strings,
            adj: _,
        } = self;
        *completed = false;
        *empty = false;
        *expect_continue = false;
        *headers_finished = false;
        *chunked = false;
        *content_length = 0;
        *header_bytes_received = 0;
        *body_bytes_received = 0;
        *body_rcv = None;
        *version = Cow::Borrowed("1.0");
        *error = None;
        *connection_close = false;
        *command = Cow::Borrowed("");
        *url_scheme = Cow::Borrowed("");
        for (name, value) in headers.drain() {
            spare_strings.keep(name);
            spare_strings.keep(value);
        }
        if headers.capacity() > MOST_KEPT_HEADERS {
            *headers = HashMap::new();
        }
        // `parse_header` copies the target, and the path and query of a plain one (see
        // `split_plain_target`), into the kept memory; it assigns the parts of other targets
        // whole.
        keep_emptied(request_uri, String::capacity, String::clear);
        for part in [proxy_scheme, proxy_netloc, path, query, fragment] {
            keep_emptied(part, String::capacity, String::clear);
        }
        for bytes in [first_line, header_plus] {
            keep_emptied(bytes, Vec::capacity, Vec::clear);
        }
    }

    /// Feed bytes; returns how many were consumed (the rest belongs to the next request).
    /// Sets `completed` once the head and the body are in, or once an `error` is recorded.
    pub fn received(&mut self, data: &[u8]) -> usize {
        if self.completed {
            return 0;
        }
        if self.body_rcv.is_some() {
            self.received_body(data)
        } else {
            self.received_head(data)
        }
    }

    fn received_head(&mut self, data: &[u8]) -> usize {
        let max_header = self.adj.max_request_header_size;
        let before = self.header_plus.len();
        // Rust-only: a head that arrives whole (the usual case) is parsed straight from `data`,
        // never copied into `header_plus`; only a head split over several reads is gathered
        // there. The copy was one allocation per request (perf probe on malloc, wrk -c100).
        let whole = before == 0;
        let found = if whole {
            find_double_newline(data)
        } else {
            // Only the new bytes, and the three before them, can complete the blank line: the
            // search never rescans the whole head, however small the slices.
            let search_from = before.saturating_sub(3);
            self.header_plus.extend_from_slice(data);
            find_double_newline(&self.header_plus[search_from..]).map(|i| i + search_from)
        };
        let consumed = match found {
            Some(end) => {
                self.header_bytes_received = end;
                self.header_plus.truncate(end);
                end - before
            }
            None => {
                if whole {
                    self.header_plus.extend_from_slice(data);
                }
                self.header_bytes_received += data.len();
                data.len()
            }
        };
        if self.header_bytes_received >= max_header {
            // A stand-in request line, so the error task has something to answer.
            let _ = self.parse_header(b"GET / HTTP/1.0\r\n");
            self.error = Some(Error::request_header_fields_too_large(format!(
                "exceeds max_header of {max_header}"
            )));
            self.header_plus = Vec::new();
            self.completed = true;
            return consumed;
        }
        if found.is_none() {
            return consumed;
        }
        let gathered = std::mem::take(&mut self.header_plus);
        let head = match found {
            Some(end) if whole => &data[..end],
            _ => &gathered[..],
        };
        // Blank lines before a request are allowed (RFC 7230 section 3.5).
        let start = head
            .iter()
            .position(|&b| !is_py_space(b))
            .unwrap_or(head.len());
        if start == head.len() {
            self.empty = true;
            self.completed = true;
        } else {
            match self.parse_header(&head[start..]) {
                Err(e) => {
                    self.error = Some(e.into_error());
                    self.completed = true;
                }
                Ok(()) => self.check_declared_length(),
            }
        }
        self.headers_finished = true;
        consumed
    }

    /// After a good head: complete when there is no body; refuse a declared body that is too
    /// large before reading any of it.
    fn check_declared_length(&mut self) {
        if self.body_rcv.is_none() {
            self.completed = true;
        }
        let max_body = self.adj.max_request_body_size;
        if self.content_length > 0 && self.content_length >= max_body {
            self.error = Some(Error::request_entity_too_large(format!(
                "exceeds max_body of {max_body}"
            )));
            self.completed = true;
        }
    }

    fn received_body(&mut self, data: &[u8]) -> usize {
        let (consumed, error, done, len) = match self.body_rcv.as_mut() {
            Some(BodyReceiver::Fixed(r)) => {
                (r.received(data), r.error.clone(), r.completed, r.len())
            }
            Some(BodyReceiver::Chunked(r)) => {
                (r.received(data), r.error.clone(), r.completed, r.len())
            }
            None => return 0,
        };
        self.body_bytes_received += consumed as u64;
        let max_body = self.adj.max_request_body_size;
        if self.body_bytes_received >= max_body {
            // Only a chunked body gets here: a declared length was checked with the head.
            self.error = Some(Error::request_entity_too_large(format!(
                "exceeds max_body of {max_body}"
            )));
            self.completed = true;
        } else if let Some(error) = error {
            self.error = Some(error);
            self.completed = true;
        } else if done {
            self.completed = true;
            if self.chunked {
                // The body is de-chunked now: the application sees a plain length.
                self.headers
                    .insert("CONTENT_LENGTH".to_string(), len.to_string());
            }
        }
        consumed
    }

    /// Parse the head (start line plus headers, up to the blank line). Header problems are
    /// found before start-line problems, in waitress's order.
    pub fn parse_header(&mut self, header_plus: &[u8]) -> Result<(), HeaderError> {
        let index = match find_crlf(header_plus) {
            Some(index) => index,
            None => return parsing_error("HTTP message header invalid"),
        };
        let mut first_line = &header_plus[..index];
        while let Some((&last, rest)) = first_line.split_last() {
            if !is_py_space(last) {
                break;
            }
            first_line = rest;
        }
        if first_line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return parsing_error("Bare CR or LF found in HTTP message");
        }
        self.first_line.clear();
        self.first_line.extend_from_slice(first_line);
        let came = self.add_header_lines(&header_plus[index + 2..])?;
        let (command, uri, version) = crack_first_line(first_line)?;
        if command.is_empty() && uri.is_empty() && version.is_empty() {
            return parsing_error("Start line is invalid");
        }
        set_latin1(&mut self.request_uri, uri);
        self.command = fixed_or(command, &COMMON_METHODS, latin1_to_string);
        self.version = fixed_or(version, &["1.1", "1.0"], latin1_to_string);
        if let Some((path, query)) = split_plain_target(uri) {
            // Rust-only: what `split_uri` makes of such a target, without its work and its
            // allocations, and without freeing the old parts (420 user-space instructions of
            // a hello-world request's 13,000, callgrind).
            for part in [
                &mut self.proxy_scheme,
                &mut self.proxy_netloc,
                &mut self.fragment,
            ] {
                part.clear();
            }
            set_latin1(&mut self.path, path);
            set_latin1(&mut self.query, query);
        } else {
            let parts = split_uri(uri)?;
            self.proxy_scheme = parts.scheme;
            self.proxy_netloc = parts.netloc;
            self.path = parts.path;
            self.query = parts.query;
            self.fragment = parts.fragment;
        }
        self.url_scheme = fixed_or(
            self.adj.url_scheme.as_str(),
            &["http", "https"],
            str::to_owned,
        );

        // Rust-only: the map is asked only for the headers that came (see `FramingHeaders`).
        if self.version == "1.0" && !(came.connection && self.connection_is("keep-alive")) {
            self.connection_close = true;
        }
        if self.version == "1.1" {
            if came.transfer_encoding {
                self.parse_transfer_encoding()?;
            }
            self.expect_continue = came.expect
                && self
                    .headers
                    .get("EXPECT")
                    .map_or(false, |e| e.eq_ignore_ascii_case("100-continue"));
            if came.connection && self.connection_is("close") {
                self.connection_close = true;
            }
        }
        if !self.chunked && came.content_length {
            self.parse_content_length()?;
        }
        Ok(())
    }

    /// waitress: `get_header_lines`, then each line into `headers`; returns which of the
    /// headers that frame a request came. Rust-only: the lines are split into spans this
    /// thread keeps (see `split_header_lines`), and joined into a list only when a header is
    /// folded.
    fn add_header_lines(&mut self, header: &[u8]) -> Result<FramingHeaders, HeaderError> {
        let mut lines = take_kept(&KEPT_LINE_SPANS);
        let mut came = FramingHeaders::default();
        let added = split_header_lines(header, &mut lines).and_then(|headers| {
            // Rust-only: the map is sized once, one allocation rather than one per growth (3
            // for a browser's nine headers). A header may be dropped, so this can be more.
            self.headers.reserve(headers);
            if headers == lines.len() {
                for span in &lines {
                    self.add_header_line(&header[span.clone()], &mut came)?;
                }
            } else {
                for line in join_header_lines(header, &lines, headers) {
                    self.add_header_line(&line, &mut came)?;
                }
            }
            Ok(())
        });
        keep_for_next(&KEPT_LINE_SPANS, lines, MOST_KEPT_LINE_SPANS);
        added.map(|()| came)
    }

    /// One `name: value` line into `headers`, noting in `came` a header that frames the
    /// request.
    fn add_header_line(
        &mut self,
        line: &[u8],
        came: &mut FramingHeaders,
    ) -> Result<(), HeaderError> {
        let (key, value) = match header_field(line) {
            Some(field) => field,
            None => return parsing_error("Invalid header"),
        };
        if key.contains(&b'_') {
            // `X_Foo` and `X-Foo` would be the same environ key: such names are dropped.
            return Ok(());
        }
        // A token is ASCII (`header_field` saw to that): the bytes map one to one.
        let mut name = self.spare_strings.take();
        push_environ_name(&mut name, key);
        let singleton = SINGLETON_FIELDS.contains(&name.as_str());
        came.note(&name);
        // Rust-only: one look-up of the map (its entry) where there were two or three; the
        // order of the checks is waitress's. With a look-up to ask and another to insert:
        // 11,333 and 11,335 user-space instructions per hello request against 11,287, and
        // 30,264 and 30,267 against 28,018–28,032 with a browser's nine headers (callgrind,
        // 6 Dec 2026).
        match self.headers.entry(name) {
            Entry::Occupied(_) if singleton => {
                parsing_error(format!("Duplicate header: {}", latin1_to_string(key)))
            }
            Entry::Occupied(mut existing) => {
                let existing = existing.get_mut();
                existing.push_str(", ");
                push_latin1_decoded(existing, value);
                Ok(())
            }
            Entry::Vacant(slot) => {
                let mut text = self.spare_strings.take();
                push_latin1_decoded(&mut text, value);
                slot.insert(text);
                Ok(())
            }
        }
    }

    /// HTTP/1.1's `Transfer-Encoding`: only `chunked`, once, and last (else 501). The header
    /// is removed: the application sees a de-chunked body with a `Content-Length`.
    fn parse_transfer_encoding(&mut self) -> Result<(), HeaderError> {
        let te = self.headers.remove("TRANSFER_ENCODING").unwrap_or_default();
        // Rust-only: the codings are compared ignoring case and counted, not collected
        // lower-cased into a list (two allocations for each chunked request).
        let encodings = te
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| e.trim_matches(|c| c == ' ' || c == '\t'));
        if encodings
            .clone()
            .any(|e| !e.eq_ignore_ascii_case("chunked"))
        {
            return not_implemented("Transfer-Encoding requested is not supported.");
        }
        let count = encodings.count();
        if count > 0 {
            if count != 1 {
                return not_implemented(
                    "Transfer-Encoding is invalid. Multiple chunked encodings requested.",
                );
            }
            self.chunked = true;
            let buf = OverflowableBuffer::new(self.adj.inbuf_overflow);
            self.body_rcv = Some(BodyReceiver::Chunked(ChunkedReceiver::new(buf)));
            // RFC 9112: a message framed both ways must not keep its connection.
            if self.headers.remove("CONTENT_LENGTH").is_some() {
                self.connection_close = true;
            }
        }
        Ok(())
    }

    fn parse_content_length(&mut self) -> Result<(), HeaderError> {
        let cl = self
            .headers
            .get("CONTENT_LENGTH")
            .map(String::as_str)
            .unwrap_or("0");
        if !is_only_digit(cl.as_bytes()) {
            return parsing_error("Content-Length is invalid");
        }
        // Digits only, so the one way to fail is a length past 64 bits: far over any
        // max_request_body_size, so it is answered as too large.
        self.content_length = cl.parse().unwrap_or(u64::MAX);
        if self.content_length > 0 {
            let buf = OverflowableBuffer::new(self.adj.inbuf_overflow);
            self.body_rcv = Some(BodyReceiver::Fixed(FixedStreamReceiver::new(
                self.content_length,
                buf,
            )));
        }
        Ok(())
    }

    /// Whether the request's `Connection` header is `token`, in any case (the parser and the
    /// task both ask). Rust-only: compared ignoring case rather than lower-cased, which was a
    /// copy of the header (one allocation for each HTTP/1.0 keep-alive request).
    pub fn connection_is(&self, token: &str) -> bool {
        self.headers
            .get("CONNECTION")
            .map_or(false, |c| c.eq_ignore_ascii_case(token))
    }

    /// The body as `wsgi.input`: the receiver's buffer, or an empty input.
    pub fn get_body_stream(&mut self) -> std::io::Result<Input> {
        match self.body_rcv.take() {
            Some(BodyReceiver::Fixed(r)) => r.into_buf().into_input(),
            Some(BodyReceiver::Chunked(r)) => r.into_buf().into_input(),
            None => Ok(Input::empty()),
        }
    }

    /// Release the body buffer.
    pub fn close(&mut self) {
        self.body_rcv = None;
    }

    /// The settings this parser applies.
    pub fn adj(&self) -> &Arc<Adjustments> {
        &self.adj
    }
}

/// The parts of a request target (waitress: the tuple `split_uri` returns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UriParts {
    /// Scheme of an absolute-form target, lower-cased.
    pub scheme: String,
    /// Authority of an absolute-form target.
    pub netloc: String,
    /// The `%`-decoded path (latin-1).
    pub path: String,
    /// The query, undecoded.
    pub query: String,
    /// The fragment, undecoded.
    pub fragment: String,
}

/// The path and the query of a target that [`split_uri`] would split into those two alone,
/// the path unchanged: one that starts with one `/` (so it has no scheme or authority), holds
/// only visible ASCII and no `#` (no fragment), and has no `%` before its `?` (nothing in the
/// path to decode; the query is not decoded).
fn split_plain_target(uri: &[u8]) -> Option<(&[u8], &[u8])> {
    if !uri.starts_with(b"/") || uri.starts_with(b"//") {
        return None;
    }
    if !uri.iter().all(|&b| b.is_ascii_graphic() && b != b'#') {
        return None;
    }
    let (path, query) = split_once(uri, b'?');
    if path.contains(&b'%') {
        return None;
    }
    Some((path, query))
}

fn split_once(bytes: &[u8], at: u8) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == at) {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

/// Split a request target as waitress does with `urllib.parse.urlsplit`, except that a target
/// starting with `//` is all path (so `//foo` is not mistaken for an authority).
pub fn split_uri(uri: &[u8]) -> Result<UriParts, HeaderError> {
    let mut parts = UriParts::default();
    // urlsplit drops leading C0 controls and spaces, and every tab, CR and LF.
    let cleaned: Cow<'_, [u8]>;
    let mut url = uri;
    if !uri.starts_with(b"//") {
        // urlsplit decodes a bytes target as strict ASCII before anything else; waitress turns
        // the decoding error into "Bad URI", before it looks at the framing headers.
        if !uri.is_ascii() {
            return parsing_error("Bad URI");
        }
        let start = uri.iter().position(|&b| b > b' ').unwrap_or(uri.len());
        let is_dropped = |b: &u8| matches!(b, b'\t' | b'\r' | b'\n');
        // Rust-only: copied only when there is a byte to drop; the copy of every target was
        // one allocation per request.
        cleaned = if uri[start..].iter().any(is_dropped) {
            Cow::Owned(
                uri[start..]
                    .iter()
                    .copied()
                    .filter(|b| !is_dropped(b))
                    .collect(),
            )
        } else {
            Cow::Borrowed(&uri[start..])
        };
        url = &cleaned;
        if let Some(colon) = url.iter().position(|&b| b == b':') {
            let scheme = &url[..colon];
            let is_scheme = colon > 0
                && scheme[0].is_ascii_alphabetic()
                && scheme
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
            if is_scheme {
                parts.scheme = latin1_to_string(scheme);
                parts.scheme.make_ascii_lowercase();
                url = &url[colon + 1..];
            }
        }
        if let Some(after) = url.strip_prefix(b"//") {
            let end = after
                .iter()
                .position(|b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(after.len());
            let netloc = &after[..end];
            if netloc.contains(&b'[') != netloc.contains(&b']') {
                return parsing_error("Bad URI");
            }
            if let Some(open) = netloc.iter().position(|&b| b == b'[') {
                let inside = &netloc[open + 1..];
                let close = inside.iter().position(|&b| b == b']');
                if !is_bracketed_host(&inside[..close.unwrap_or(inside.len())]) {
                    return parsing_error("Bad URI");
                }
            }
            parts.netloc = latin1_to_string(netloc);
            url = &after[end..];
        }
    }
    let (before_hash, fragment) = split_once(url, b'#');
    let (path, query) = split_once(before_hash, b'?');
    parts.path = unquote_bytes_to_wsgi(path);
    parts.query = latin1_to_string(query);
    parts.fragment = latin1_to_string(fragment);
    Ok(parts)
}

/// What urlsplit accepts between `[` and `]` in an authority: an IPv6 address (with an
/// optional `%zone`) or an IPvFuture literal (`v1.x`), never an IPv4 address or a name.
fn is_bracketed_host(host: &[u8]) -> bool {
    if let Some(future) = host.strip_prefix(b"v") {
        // `v` HEXDIG+ `.` one or more characters.
        let digits = future.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        return digits > 0 && future.len() > digits + 1 && future[digits] == b'.';
    }
    let (address, zone) = split_once(host, b'%');
    if host.contains(&b'%') && (zone.is_empty() || zone.contains(&b'%')) {
        return false;
    }
    is_ipv6_address(address)
}

/// An IPv6 address in text form, checked the way Python's `ipaddress.IPv6Address` checks it:
/// eight hextets of one to four hex digits, one `::` standing for at least one zero hextet,
/// and optionally a dotted IPv4 address in place of the last two.
fn is_ipv6_address(text: &[u8]) -> bool {
    let mut parts: Vec<&[u8]> = text.split(|&b| b == b':').collect();
    if text.is_empty() || parts.len() < 3 {
        return false;
    }
    if parts.last().map_or(false, |p| p.contains(&b'.')) {
        if !parts.pop().map_or(false, is_ipv4_address) {
            return false;
        }
        // The dotted quad stands for two hextets.
        parts.push(b"0");
        parts.push(b"0");
    }
    if parts.len() > 9 {
        return false;
    }
    let inner_empty: Vec<usize> = (1..parts.len() - 1)
        .filter(|&i| parts[i].is_empty())
        .collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    let hextets: Vec<&[u8]> = match inner_empty[..] {
        [] => {
            if parts.len() != 8 {
                return false;
            }
            parts
        }
        [skip] => {
            // A leading or trailing empty part is only allowed as half of the `::`.
            let high = if first.is_empty() { skip - 1 } else { skip };
            let low = parts.len() - skip - 1 - usize::from(last.is_empty());
            if (first.is_empty() && high != 0) || (last.is_empty() && low != 0) {
                return false;
            }
            if high + low > 7 {
                return false;
            }
            parts[..skip]
                .iter()
                .chain(&parts[skip + 1..])
                .copied()
                .filter(|p| !p.is_empty())
                .collect()
        }
        _ => return false,
    };
    hextets
        .iter()
        .all(|h| (1..=4).contains(&h.len()) && h.iter().all(u8::is_ascii_hexdigit))
}

/// A dotted IPv4 address as Python's `ipaddress.IPv4Address` reads it: four decimal octets,
/// each at most 255, without leading zeros.
fn is_ipv4_address(text: &[u8]) -> bool {
    let octets: Vec<&[u8]> = text.split(|&b| b == b'.').collect();
    octets.len() == 4
        && octets.iter().all(|o| {
            (1..=3).contains(&o.len())
                && o.iter().all(u8::is_ascii_digit)
                && (o.len() == 1 || o[0] != b'0')
                && o.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 255
        })
}

/// Split the header block into lines, joining obs-fold continuation lines onto the line
/// before (waitress: `get_header_lines`). A continuation with nothing before it, or a bare CR
/// or LF, is refused.
///
/// Rust-only: a line is borrowed from `header` unless a continuation is joined onto it, and
/// the list is sized once. A copy of each line and the list's growth were allocations per
/// request (10 plus 2 reallocations for a browser's nine-header GET; counted with a counting
/// allocator). `parse_header` makes no list unless a header is folded (see
/// `split_header_lines`).
pub fn get_header_lines(header: &[u8]) -> Result<Vec<Cow<'_, [u8]>>, HeaderError> {
    let mut lines = Vec::new();
    let headers = split_header_lines(header, &mut lines)?;
    Ok(join_header_lines(header, &lines, headers))
}

/// Where each line of a header block lies in it.
type LineSpan = std::ops::Range<usize>;

/// Split a header block at each CRLF into `lines`, empty lines left out, and refuse it as
/// `get_header_lines` does: at the first line with a bare CR or LF, or a continuation with
/// nothing before it. Returns how many headers the block holds: as many as its lines unless a
/// header is folded.
///
/// Rust-only: the lines are found once and kept as spans, so that `parse_header` reads an
/// unfolded block in place, with no list of its lines: one allocation fewer per request, and
/// 12,519 → 12,248 user-space instructions per hello-world request, 31,384 → 30,659 with a
/// browser's nine headers (callgrind, `tools/instructions_per_request.sh`). Line ends are
/// found with `find_crlf`, and bare CRs and LFs with `contains` (std's `memchr`), not byte by
/// byte.
fn split_header_lines(header: &[u8], lines: &mut Vec<LineSpan>) -> Result<usize, HeaderError> {
    let mut headers = 0;
    let mut start = 0;
    while start < header.len() {
        let end = find_crlf(&header[start..]).map_or(header.len(), |i| start + i);
        let line = &header[start..end];
        let span = start..end;
        start = end + 2;
        if line.is_empty() {
            continue;
        }
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return parsing_error(format!(
                "Bare CR or LF found in header line \"{}\"",
                latin1_to_string(line)
            ));
        }
        if !is_continuation(line) {
            headers += 1;
        } else if headers == 0 {
            return parsing_error(format!(
                "Malformed header line \"{}\"",
                latin1_to_string(line)
            ));
        }
        lines.push(span);
    }
    Ok(headers)
}

/// An obs-fold line: it continues the header before it.
fn is_continuation(line: &[u8]) -> bool {
    line[0] == b' ' || line[0] == b'\t'
}

/// The `headers` headers of a block that `split_header_lines` split into `lines`, each
/// continuation joined onto the line before it.
fn join_header_lines<'h>(
    header: &'h [u8],
    lines: &[LineSpan],
    headers: usize,
) -> Vec<Cow<'h, [u8]>> {
    let mut joined: Vec<Cow<'h, [u8]>> = Vec::with_capacity(headers);
    for span in lines {
        let line = &header[span.clone()];
        match joined.last_mut() {
            Some(previous) if is_continuation(line) => previous.to_mut().extend_from_slice(line),
            _ => joined.push(Cow::Borrowed(line)),
        }
    }
    joined
}

/// The method, the target and the version digits (`1.1`) of a start line, as bytes.
pub type StartLine<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Split `METHOD SP target [SP HTTP/d.d]` (waitress: `crack_first_line` with `first_line_re`).
/// A line of another shape gives three empty parts; a method with lower-case letters is refused.
pub fn crack_first_line(line: &[u8]) -> Result<StartLine<'_>, HeaderError> {
    const NO_MATCH: StartLine<'static> = (b"", b"", b"");
    let space = match line.iter().position(|&b| b == b' ') {
        Some(space) => space,
        None => return Ok(NO_MATCH),
    };
    let (method, rest) = (&line[..space], &line[space + 1..]);
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Ok(NO_MATCH);
    }
    let (uri, version) = match rest.iter().position(|&b| b == b' ') {
        None => (rest, &b""[..]),
        Some(i) => {
            let version = &rest[i + 1..];
            let ok = version.len() == 8
                && version.starts_with(b"HTTP/")
                && version[5].is_ascii_digit()
                && version[6] == b'.'
                && version[7].is_ascii_digit();
            if !ok {
                return Ok(NO_MATCH);
            }
            (&rest[..i], &version[5..])
        }
    };
    if uri.is_empty() {
        return Ok(NO_MATCH);
    }
    if method.iter().any(u8::is_ascii_lowercase) {
        return parsing_error(format!(
            "Malformed HTTP method \"{}\"",
            latin1_to_string(method)
        ));
    }
    Ok((method, uri, version))
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_parser.py, under waitress's names (`testSimpleGET` becomes
    //! `test_simple_get`; the dummy receivers of `test_get_body_stream_nonNone` and
    //! `test_close_with_body_rcv` are real ones here). Tests without a waitress counterpart say
    //! what they check in their names.
    use super::*;
    use crate::utilities::{peek, ErrorKind};
    use std::io::Read;

    fn parser() -> HttpRequestParser {
        HttpRequestParser::new(Arc::new(Adjustments::default()))
    }

    /// Rust-only (`push_environ_name`): a name is keyed the same whether it fits the buffer on
    /// the stack or not, and through a parsed request too.
    #[test]
    fn a_header_name_is_keyed_upper_case_with_underscores_whatever_its_length() {
        for len in [1, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| b"a-Z9"[i % 4]).collect();
            let expected: String = key
                .iter()
                .map(|&b| {
                    if b == b'-' {
                        '_'
                    } else {
                        char::from(b.to_ascii_uppercase())
                    }
                })
                .collect();
            let mut name = String::from("kept:");
            push_environ_name(&mut name, &key);
            assert_eq!(name, format!("kept:{expected}"), "{len} bytes");
            let mut p = parser();
            let mut head = b"GET / HTTP/1.1\r\n".to_vec();
            head.extend_from_slice(&key);
            head.extend_from_slice(b": v\r\n\r\n");
            p.received(&head);
            assert!(p.error.is_none(), "{len} bytes");
            assert_eq!(p.headers.get(&expected).map(String::as_str), Some("v"));
        }
    }

    /// Feed `data` in slices of seven bytes, as reads that split the head would.
    fn feed_in_slices(parser: &mut HttpRequestParser, data: &[u8]) {
        for mut slice in data.chunks(7) {
            while !slice.is_empty() && !parser.completed {
                let n = parser.received(slice);
                slice = &slice[n..];
            }
        }
    }

    /// Every public field of `p`, the headers in name order.
    fn everything_read(p: &HttpRequestParser) -> Vec<String> {
        let headers: std::collections::BTreeMap<_, _> = p.headers.iter().collect();
        vec![
            format!(
                "{:?}",
                (p.completed, p.empty, p.expect_continue, p.headers_finished)
            ),
            format!(
                "{:?}",
                (p.chunked, p.content_length, p.header_bytes_received)
            ),
            format!(
                "{:?}",
                (p.body_bytes_received, &p.body_rcv, &p.version, &p.error)
            ),
            format!(
                "{:?}",
                (p.connection_close, &p.first_line, headers, &p.command)
            ),
            format!(
                "{:?}",
                (&p.request_uri, &p.proxy_scheme, &p.proxy_netloc, &p.path)
            ),
            format!("{:?}", (&p.query, &p.fragment, &p.url_scheme)),
        ]
    }

    #[test]
    fn a_plain_target_is_split_as_split_uri_splits_it() {
        // Rust-only (`split_plain_target`, the fast path of `parse_header`): every target of
        // up to four bytes from an alphabet of the bytes that matter; those it splits,
        // `split_uri` splits into the same path and query and nothing else.
        let alphabet: &[u8] = b"/a:%?#@[ \t\r\x00\x7f\x80";
        let mut targets: Vec<Vec<u8>> = vec![Vec::new()];
        let mut plain = 0;
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = targets
                .iter()
                .flat_map(|t| alphabet.iter().map(move |&b| [&t[..], &[b]].concat()))
                .collect();
            for target in &longer {
                if let Some((path, query)) = split_plain_target(target) {
                    plain += 1;
                    let expected = UriParts {
                        path: latin1_to_string(path),
                        query: latin1_to_string(query),
                        ..UriParts::default()
                    };
                    let target_text = String::from_utf8_lossy(target);
                    assert_eq!(split_uri(target).unwrap(), expected, "{target_text:?}");
                }
            }
            targets = longer;
        }
        assert!(plain > 200, "only {plain} plain targets were tried");
        for not_plain in [&b"//a"[..], b"a/", b"", b"/%41?", b"/a#b"] {
            assert_eq!(split_plain_target(not_plain), None);
        }
        assert_eq!(
            split_plain_target(b"/a?%41"),
            Some((&b"/a"[..], &b"%41"[..]))
        );
    }

    #[test]
    fn a_reset_parser_reads_as_a_new_one() {
        // Rust-only (`reset`): whatever request a parser read before, once reset it reads the
        // next exactly as a new parser would.
        let big = format!(
            "GET /{} HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "p".repeat(2000),
            "v".repeat(2000)
        );
        let requests: Vec<&[u8]> = vec![
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /p%20q?x=1#frag HTTP/1.1\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\nExpect: 100-continue\r\n\r\nabc",
            b"PUT http://example.com:8080/a?b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"\r\n\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Latin: caf\xe9\r\nX_Dropped: 1\r\n\r\n",
            big.as_bytes(),
        ];
        for first in &requests {
            for second in &requests {
                let mut used = parser();
                feed_in_slices(&mut used, first);
                used.reset();
                feed_in_slices(&mut used, second);
                let mut new = parser();
                feed_in_slices(&mut new, second);
                assert_eq!(
                    everything_read(&used),
                    everything_read(&new),
                    "{:?} after {:?}",
                    String::from_utf8_lossy(second),
                    String::from_utf8_lossy(first)
                );
            }
        }
    }

    #[test]
    fn a_reset_parser_keeps_no_large_buffer() {
        // Rust-only (`reset`): what a parser kept for reuse holds stays small however large
        // the request it read; a small request's memory is kept.
        let mut p = parser();
        p.received(b"GET /a?b HTTP/1.1\r\nHost: h\r\n\r\n");
        p.reset();
        assert!(p.request_uri.capacity() > 0 && p.first_line.capacity() > 0);
        assert!(p.headers.is_empty() && p.headers.capacity() > 0);
        let mut big = format!("GET /{} HTTP/1.1\r\n", "p".repeat(2000));
        for i in 0..100 {
            big.push_str(&format!("X-H{i}: {}\r\n", "v".repeat(100)));
        }
        big.push_str("\r\n");
        feed_in_slices(&mut p, big.as_bytes());
        assert_eq!(p.headers.len(), 100);
        p.reset();
        assert_eq!(p.request_uri.capacity(), 0);
        assert_eq!(p.first_line.capacity(), 0);
        assert_eq!(p.header_plus.capacity(), 0);
        assert_eq!(p.headers.capacity(), 0);
    }

    fn parser_with(change: impl FnOnce(&mut Adjustments)) -> HttpRequestParser {
        let mut adj = Adjustments::default();
        change(&mut adj);
        HttpRequestParser::new(Arc::new(adj))
    }

    fn error_kind(p: &HttpRequestParser) -> Option<ErrorKind> {
        p.error.as_ref().map(|e| e.kind)
    }

    fn parse_err(data: &[u8]) -> HeaderError {
        parser().parse_header(data).unwrap_err()
    }

    fn message(e: HeaderError) -> String {
        match e {
            HeaderError::Parsing(ParsingError(m)) => m,
            HeaderError::TransferEncoding(TransferEncodingNotImplemented(m)) => m,
        }
    }

    fn body(p: &mut HttpRequestParser) -> Vec<u8> {
        let mut out = Vec::new();
        p.get_body_stream().unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn test_get_body_stream_none() {
        assert_eq!(body(&mut parser()), b"");
    }

    #[test]
    fn test_received_get_no_headers() {
        let mut p = parser();
        assert_eq!(p.received(b"HTTP/1.0 GET /foobar\r\n\r\n"), 24);
        assert!(p.completed);
        assert!(p.headers.is_empty());
    }

    #[test]
    fn test_received_bad_host_header() {
        let mut p = parser();
        assert_eq!(
            p.received(b"HTTP/1.0 GET /foobar\r\n Host: foo\r\n\r\n"),
            36
        );
        assert!(p.completed);
        assert_eq!(error_kind(&p), Some(ErrorKind::BadRequest));
    }

    #[test]
    fn test_received_bad_transfer_encoding() {
        let mut p = parser();
        let data = b"GET /foobar HTTP/1.1\r\nTransfer-Encoding: foo\r\n\r\n1d;\r\nThis string has 29 characters\r\n0\r\n\r\n";
        assert_eq!(p.received(data), 48);
        assert!(p.completed);
        assert_eq!(error_kind(&p), Some(ErrorKind::ServerNotImplemented));
    }

    #[test]
    fn test_received_nonsense_nothing() {
        let mut p = parser();
        assert_eq!(p.received(b"\r\n\r\n"), 4);
        assert!(p.completed);
        assert!(p.empty);
        assert!(p.headers.is_empty());
    }

    #[test]
    fn test_received_no_doublecr() {
        let mut p = parser();
        assert_eq!(p.received(b"GET /foobar HTTP/8.4\r\n"), 22);
        assert!(!p.completed);
        assert!(p.headers.is_empty());
    }

    #[test]
    fn test_received_already_completed() {
        let mut p = parser();
        p.completed = true;
        assert_eq!(p.received(b"a"), 0);
    }

    #[test]
    fn test_received_cl_too_large() {
        let mut p = parser_with(|a| a.max_request_body_size = 2);
        assert_eq!(
            p.received(b"GET /foobar HTTP/8.4\r\nContent-Length: 10\r\n\r\n"),
            44
        );
        assert!(p.completed);
        assert_eq!(error_kind(&p), Some(ErrorKind::RequestEntityTooLarge));
    }

    #[test]
    fn content_length_past_64_bits_is_too_large() {
        let mut p = parser();
        p.received(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert!(p.completed);
        assert_eq!(error_kind(&p), Some(ErrorKind::RequestEntityTooLarge));
    }

    #[test]
    fn test_received_headers_not_too_large_multiple_chunks() {
        let data = b"GET /foobar HTTP/8.4\r\nX-Foo: 1\r\n";
        let data2 = b"X-Foo-Other: 3\r\n\r\n";
        let mut p = parser_with(|a| a.max_request_header_size = data.len() + data2.len() + 1);
        assert_eq!(p.received(data), 32);
        assert_eq!(p.received(data2), 18);
        assert!(p.completed);
        assert!(p.error.is_none());
    }

    #[test]
    fn test_received_headers_too_large() {
        let mut p = parser_with(|a| a.max_request_header_size = 2);
        assert_eq!(p.received(b"GET /foobar HTTP/8.4\r\nX-Foo: 1\r\n\r\n"), 34);
        assert!(p.completed);
        assert_eq!(error_kind(&p), Some(ErrorKind::RequestHeaderFieldsTooLarge));
        assert_eq!(p.error.unwrap().body, "exceeds max_header of 2");
    }

    const CHUNKED: &[u8] = b"GET /foobar HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Foo: 1\r\n\r\n1d;\r\nThis string has 29 characters\r\n0\r\n\r\n";

    #[test]
    fn test_received_body_too_large() {
        let mut p = parser_with(|a| a.max_request_body_size = 2);
        let n = p.received(CHUNKED);
        assert_eq!(n, 62);
        p.received(&CHUNKED[n..]);
        assert!(p.completed);
        assert_eq!(error_kind(&p), Some(ErrorKind::RequestEntityTooLarge));
    }

    #[test]
    fn test_received_error_from_parser() {
        let data =
            b"GET /foobar HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Foo: 1\r\n\r\ngarbage\r\n";
        let mut p = parser();
        let n = p.received(data);
        assert_eq!(p.received(&data[n..]), 9);
        assert!(p.completed);
        assert_eq!(error_kind(&p), Some(ErrorKind::BadRequest));
    }

    #[test]
    fn test_received_chunked_completed_sets_content_length() {
        let data = b"GET /foobar HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Foo: 1\r\n\r\n1d\r\nThis string has 29 characters\r\n0\r\n\r\n";
        let mut p = parser();
        let n = p.received(data);
        assert_eq!(n, 62);
        p.received(&data[n..]);
        assert!(p.completed);
        assert!(p.error.is_none());
        assert_eq!(p.headers["CONTENT_LENGTH"], "29");
        assert!(!p.headers.contains_key("TRANSFER_ENCODING"));
        assert_eq!(body(&mut p), b"This string has 29 characters");
    }

    #[test]
    fn test_parse_header_gardenpath() {
        let mut p = parser();
        p.parse_header(b"GET /foobar HTTP/8.4\r\nfoo: bar\r\n")
            .unwrap();
        assert_eq!(p.first_line, b"GET /foobar HTTP/8.4");
        assert_eq!(p.headers["FOO"], "bar");
    }

    #[test]
    fn test_parse_header_no_cr_in_headerplus() {
        assert!(matches!(
            parse_err(b"GET /foobar HTTP/8.4"),
            HeaderError::Parsing(_)
        ));
    }

    #[test]
    fn test_parse_header_multiple_content_length() {
        let e = parse_err(b"GET /foobar HTTP/8.4\r\ncontent-length: 10\r\ncontent-length: 20\r\n");
        assert!(message(e).starts_with("Duplicate header:"));
    }

    #[test]
    fn test_parse_header_11_te_chunked() {
        let mut p = parser();
        p.parse_header(b"GET /foobar HTTP/1.1\r\ntransfer-encoding: ChUnKed\r\n")
            .unwrap();
        assert!(matches!(p.body_rcv, Some(BodyReceiver::Chunked(_))));
    }

    #[test]
    fn test_parse_header_11_te_chunked_with_cl_close_connection() {
        let mut p = parser();
        p.parse_header(
            b"GET /foobar HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 10\r\n",
        )
        .unwrap();
        assert!(matches!(p.body_rcv, Some(BodyReceiver::Chunked(_))));
        assert!(p.connection_close);
        assert!(!p.headers.contains_key("CONTENT_LENGTH"));
    }

    #[test]
    fn test_parse_header_transfer_encoding_invalid_multiple_chunked() {
        let e = parse_err(
            b"GET /foobar HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
        );
        assert_eq!(
            message(e),
            "Transfer-Encoding is invalid. Multiple chunked encodings requested."
        );
    }

    #[test]
    fn transfer_encoding_is_ignored_before_http_1_1() {
        let mut p = parser();
        p.parse_header(b"GET / HTTP/1.0\r\ntransfer-encoding: gzip\r\n")
            .unwrap();
        assert!(!p.chunked);
        assert_eq!(p.headers["TRANSFER_ENCODING"], "gzip");
    }

    #[test]
    fn test_parse_header_11_expect_continue() {
        let mut p = parser();
        p.parse_header(b"GET /foobar HTTP/1.1\r\nexpect: 100-continue\r\n")
            .unwrap();
        assert!(p.expect_continue);
    }

    #[test]
    fn test_parse_header_connection_close() {
        let mut p = parser();
        p.parse_header(b"GET /foobar HTTP/1.1\r\nConnection: close\r\n")
            .unwrap();
        assert!(p.connection_close);
        let mut p = parser();
        p.parse_header(b"GET /foobar HTTP/1.0\r\n").unwrap();
        assert!(p.connection_close, "1.0 closes unless keep-alive");
        let mut p = parser();
        p.parse_header(b"GET /foobar HTTP/1.0\r\nConnection: Keep-Alive\r\n")
            .unwrap();
        assert!(!p.connection_close);
    }

    #[test]
    fn test_close_with_no_body_rcv() {
        parser().close();
    }

    #[test]
    fn test_parse_header_extra_lf_in_header() {
        let e = message(parse_err(b"GET /foobar HTTP/8.4\r\nfoo: \nbar\r\n"));
        assert!(e.contains("Bare CR or LF found in header line"), "{e}");
    }

    /// Beyond waitress's tests: as in waitress, every line is checked before any header is
    /// read, so a bare LF further down is the error, not the bad header before it.
    #[test]
    fn header_lines_are_checked_whole_before_any_is_read() {
        let e = message(parse_err(b"GET / HTTP/1.1\r\nno colon\r\nfoo: \nbar\r\n"));
        assert!(e.contains("Bare CR or LF found in header line"), "{e}");
        let e = message(parse_err(
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\tc\nd\r\n",
        ));
        assert!(e.contains("Bare CR or LF found in header line"), "{e}");
    }

    /// Beyond waitress's tests: the spans of a block's lines are kept for the next request on
    /// this thread, unless the block had more lines than the bound.
    #[test]
    fn a_thread_keeps_its_line_spans_within_a_bound() {
        let kept = || peek(&KEPT_LINE_SPANS, Vec::capacity);
        let mut long = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MOST_KEPT_LINE_SPANS {
            long.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        parser().parse_header(&long).unwrap();
        assert_eq!(kept(), 0, "past the bound, the spans are freed");
        let mut p = parser();
        p.parse_header(b"GET / HTTP/1.1\r\nHost: a\r\nfoo: b\r\n c\r\n")
            .unwrap();
        assert_eq!(p.headers["FOO"], "b c");
        let capacity = kept();
        assert!((3..=MOST_KEPT_LINE_SPANS).contains(&capacity), "{capacity}");
        p.reset();
        p.parse_header(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
        assert_eq!(kept(), capacity, "the same spans served the next block");
        assert_eq!(p.headers["HOST"], "a");
    }

    #[test]
    fn test_parse_header_extra_lf_in_first_line() {
        let e = message(parse_err(b"GET /foobar\n HTTP/8.4\r\n"));
        assert!(e.contains("Bare CR or LF found in HTTP message"), "{e}");
    }

    #[test]
    fn lowercase_method_is_refused() {
        let mut p = parser();
        p.received(b"get / HTTP/1.1\r\n\r\n");
        assert_eq!(p.error.unwrap().body, "Malformed HTTP method \"get\"");
    }

    // TestHTTPRequestParserIntegration

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn feed(p: &mut HttpRequestParser, mut data: &[u8]) {
        for _ in 0..100 {
            let n = p.received(data);
            data = &data[n..];
            if p.completed {
                return;
            }
        }
        panic!("looping");
    }

    #[test]
    fn test_simple_get() {
        let mut p = parser();
        feed(&mut p, b"GET /foobar HTTP/8.4\r\nFirstName: mickey\r\nlastname: Mouse\r\ncontent-length: 6\r\n\r\nHello.");
        assert!(p.completed);
        assert_eq!(p.version, "8.4");
        assert!(!p.empty);
        assert_eq!(p.headers.len(), 3);
        assert_eq!(p.headers["FIRSTNAME"], "mickey");
        assert_eq!(p.headers["LASTNAME"], "Mouse");
        assert_eq!(p.headers["CONTENT_LENGTH"], "6");
        assert_eq!(p.path, "/foobar");
        assert_eq!(p.command, "GET");
        assert_eq!(p.query, "");
        assert_eq!(p.proxy_scheme, "");
        assert_eq!(p.proxy_netloc, "");
        assert_eq!(body(&mut p), b"Hello.");
    }

    #[test]
    fn test_complex_get() {
        let mut p = parser();
        feed(&mut p, b"GET /foo/a+%2B%2F%C3%A4%3D%26a%3Aint?d=b+%2B%2F%3D%26b%3Aint&c+%2B%2F%3D%26c%3Aint=6 HTTP/8.4\r\nFirstName: mickey\r\nlastname: Mouse\r\ncontent-length: 10\r\n\r\nHello mickey.");
        assert_eq!(p.command, "GET");
        assert_eq!(p.version, "8.4");
        assert!(!p.empty);
        assert_eq!(
            p.headers,
            headers(&[
                ("FIRSTNAME", "mickey"),
                ("LASTNAME", "Mouse"),
                ("CONTENT_LENGTH", "10")
            ])
        );
        let path_bytes = crate::app::string_to_latin1(&p.path).unwrap();
        assert_eq!(String::from_utf8(path_bytes).unwrap(), "/foo/a++/ä=&a:int");
        assert_eq!(
            p.request_uri,
            "/foo/a+%2B%2F%C3%A4%3D%26a%3Aint?d=b+%2B%2F%3D%26b%3Aint&c+%2B%2F%3D%26c%3Aint=6"
        );
        assert_eq!(p.query, "d=b+%2B%2F%3D%26b%3Aint&c+%2B%2F%3D%26c%3Aint=6");
        assert_eq!(body(&mut p), b"Hello mick");
    }

    #[test]
    fn test_proxy_get() {
        let mut p = parser();
        feed(
            &mut p,
            b"GET https://example.com:8080/foobar HTTP/8.4\r\ncontent-length: 6\r\n\r\nHello.",
        );
        assert!(p.completed);
        assert_eq!(p.version, "8.4");
        assert!(!p.empty);
        assert_eq!(p.headers, headers(&[("CONTENT_LENGTH", "6")]));
        assert_eq!(p.path, "/foobar");
        assert_eq!(p.command, "GET");
        assert_eq!(p.proxy_scheme, "https");
        assert_eq!(p.proxy_netloc, "example.com:8080");
        assert_eq!(p.query, "");
        assert_eq!(body(&mut p), b"Hello.");
    }

    #[test]
    fn test_duplicate_headers() {
        let mut p = parser();
        feed(&mut p, b"GET /foobar HTTP/8.4\r\nx-forwarded-for: 10.11.12.13\r\nx-forwarded-for: unknown,127.0.0.1\r\nX-Forwarded_for: 255.255.255.255\r\nx-auth_user: bob\r\ncontent-length: 6\r\n\r\nHello.");
        assert!(p.completed);
        assert_eq!(
            p.headers,
            headers(&[
                ("CONTENT_LENGTH", "6"),
                ("X_FORWARDED_FOR", "10.11.12.13, unknown,127.0.0.1"),
            ])
        );
    }

    #[test]
    fn test_spoofed_headers_dropped() {
        let mut p = parser();
        feed(
            &mut p,
            b"GET /foobar HTTP/8.4\r\nx-auth_user: bob\r\ncontent-length: 6\r\n\r\nHello.",
        );
        assert!(p.completed);
        assert_eq!(p.headers, headers(&[("CONTENT_LENGTH", "6")]));
    }

    #[test]
    fn test_highorder() {
        assert_eq!(unquote_bytes_to_wsgi(b"/a%C5%9B"), "/a\u{c5}\u{9b}");
        assert_eq!(unquote_bytes_to_wsgi(b"/a%zz%4"), "/a%zz%4");
    }

    #[test]
    fn blank_lines_before_a_request_are_skipped() {
        let mut p = parser();
        feed(&mut p, b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        // The first blank pair ends an empty "request"; the channel starts a new parser.
        assert!(p.empty);
        let mut p = parser();
        feed(&mut p, b"\r\nGET / HTTP/1.1\r\n\r\n");
        assert!(!p.empty);
        assert_eq!(p.command, "GET");
    }

    macro_rules! refused {
        ($($name:ident: $data:expr => $kind:ident, $text:expr;)*) => {
            $(
                #[test]
                fn $name() {
                    let e = parse_err($data);
                    assert!(matches!(e, HeaderError::$kind(_)), "{e:?}");
                    let m = message(e);
                    assert!(m.contains($text), "{m}");
                }
            )*
        };
    }

    refused! {
        test_parse_header_bad_content_length: b"GET /foobar HTTP/8.4\r\ncontent-length: abc\r\n" => Parsing, "Content-Length is invalid";
        test_parse_header_bad_content_length_plus: b"GET /foobar HTTP/8.4\r\ncontent-length: +10\r\n" => Parsing, "Content-Length is invalid";
        test_parse_header_bad_content_length_minus: b"GET /foobar HTTP/8.4\r\ncontent-length: -10\r\n" => Parsing, "Content-Length is invalid";
        content_length_with_hex_or_spaces_is_invalid: b"GET / HTTP/1.1\r\ncontent-length: 0x10\r\ncontent-type: 1 0\r\n" => Parsing, "Content-Length is invalid";
        test_parse_header_transfer_encoding_invalid: b"GET /foobar HTTP/1.1\r\ntransfer-encoding: gzip\r\n" => TransferEncoding, "Transfer-Encoding requested is not supported.";
        test_parse_header_transfer_encoding_invalid_multiple: b"GET /foobar HTTP/1.1\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n" => TransferEncoding, "Transfer-Encoding requested is not supported.";
        test_parse_header_transfer_encoding_invalid_whitespace: b"GET /foobar HTTP/1.1\r\nTransfer-Encoding:\x85chunked\r\n" => TransferEncoding, "Transfer-Encoding requested is not supported.";
        test_parse_header_transfer_encoding_invalid_unicode: b"GET /foobar HTTP/1.1\r\nTransfer-Encoding: chun\xe2\x84\xaaed\r\n" => TransferEncoding, "Transfer-Encoding requested is not supported.";
        transfer_encoding_chunked_not_last: b"GET /foobar HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n" => TransferEncoding, "Transfer-Encoding requested is not supported.";
        test_parse_header_lf_only: b"GET /foobar HTTP/8.4\nfoo: bar" => Parsing, "HTTP message header invalid";
        test_parse_header_cr_only: b"GET /foobar HTTP/8.4\rfoo: bar" => Parsing, "HTTP message header invalid";
        test_parse_header_invalid_whitespace: b"GET /foobar HTTP/8.4\r\nfoo : bar\r\n" => Parsing, "Invalid header";
        test_parse_header_invalid_whitespace_vtab: b"GET /foobar HTTP/1.1\r\nfoo:\x0bbar\r\n" => Parsing, "Invalid header";
        test_parse_header_invalid_no_colon: b"GET /foobar HTTP/1.1\r\nfoo: bar\r\nnotvalid\r\n" => Parsing, "Invalid header";
        test_parse_header_invalid_folding_spacing: b"GET /foobar HTTP/1.1\r\nfoo: bar\r\n\t\x0bbaz\r\n" => Parsing, "Invalid header";
        test_parse_header_invalid_chars: b"GET /foobar HTTP/1.1\r\nfoo: bar\r\nfoo: \x0bbaz\r\n" => Parsing, "Invalid header";
        test_parse_header_invalid_backtrack_bad: b"GET /foobar HTTP/1.1\r\nfoo: bar\r\nfoo: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\x10\r\n" => Parsing, "Invalid header";
        nul_in_a_value_is_refused: b"GET /foobar HTTP/1.1\r\nfoo: a\x00b\r\n" => Parsing, "Invalid header";
        del_in_a_value_is_refused: b"GET /foobar HTTP/1.1\r\nfoo: a\x7fb\r\n" => Parsing, "Invalid header";
    }

    fn duplicate(data: &[u8]) {
        let mut p = parser();
        assert_eq!(p.received(data), data.len());
        assert!(p.completed);
        let error = p.error.unwrap();
        assert_eq!(error.kind, ErrorKind::BadRequest);
        assert!(
            error.body.starts_with("Duplicate header:"),
            "{}",
            error.body
        );
    }

    #[test]
    fn test_received_duplicate_host_header() {
        duplicate(b"GET / HTTP/1.1\r\nHOST: test1.com\r\nHost: test2.com\r\n\r\n");
    }

    #[test]
    fn test_received_duplicate_content_length_header() {
        duplicate(b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n");
    }

    #[test]
    fn test_received_duplicate_content_type_header() {
        duplicate(b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n\r\n");
    }

    fn header_value(data: &[u8], name: &str) -> String {
        let mut p = parser();
        p.parse_header(data).unwrap();
        p.headers[name].clone()
    }

    #[test]
    fn test_parse_header_other_whitespace() {
        assert_eq!(
            header_value(b"GET /foobar HTTP/1.1\r\nfoo: \xa0something\x85\r\n", "FOO"),
            "\u{a0}something\u{85}"
        );
    }

    #[test]
    fn test_parse_header_empty() {
        let data = b"GET /foobar HTTP/1.1\r\nfoo: bar\r\nempty:\r\n";
        assert_eq!(header_value(data, "EMPTY"), "");
        assert_eq!(header_value(data, "FOO"), "bar");
    }

    #[test]
    fn test_parse_header_multiple_values() {
        assert_eq!(
            header_value(
                b"GET /foobar HTTP/1.1\r\nfoo: bar, whatever, more, please, yes\r\n",
                "FOO"
            ),
            "bar, whatever, more, please, yes"
        );
    }

    #[test]
    fn test_parse_header_multiple_values_header_folded() {
        assert_eq!(
            header_value(
                b"GET /foobar HTTP/1.1\r\nfoo: bar, whatever,\r\n more, please, yes\r\n",
                "FOO"
            ),
            "bar, whatever, more, please, yes"
        );
    }

    #[test]
    fn test_parse_header_multiple_values_header_folded_multiple() {
        assert_eq!(
            header_value(
                b"GET /foobar HTTP/1.1\r\nfoo: bar, whatever,\r\n more\r\nfoo: please, yes\r\n",
                "FOO"
            ),
            "bar, whatever, more, please, yes"
        );
    }

    #[test]
    fn test_parse_header_multiple_values_extra_space() {
        assert_eq!(
            header_value(
                b"GET /foobar HTTP/1.1\r\nfoo: abrowser/0.001 (C O M M E N T)\r\n",
                "FOO"
            ),
            "abrowser/0.001 (C O M M E N T)"
        );
    }

    #[test]
    fn test_parse_header_short_values() {
        let data = b"GET /foobar HTTP/1.1\r\none: 1\r\ntwo: 22\r\n";
        assert_eq!(header_value(data, "ONE"), "1");
        assert_eq!(header_value(data, "TWO"), "22");
    }

    #[test]
    fn a_head_parses_the_same_whole_or_byte_by_byte() {
        // The whole head is parsed from the caller's slice; a split one is gathered first.
        let data: &[u8] = b"GET HTTP://h:1/a%20b\t?q#f HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\nConnection: CLOSE\r\nTransfer-Encoding:  Chunked \r\n\r\n0\r\n\r\n";
        let mut whole = parser();
        feed(&mut whole, data);
        let mut split = parser();
        let mut rest = data;
        while !split.completed {
            let n = split.received(&rest[..1]);
            rest = &rest[n..];
        }
        for p in [&whole, &split] {
            assert!(p.error.is_none(), "{:?}", p.error);
            assert_eq!(p.first_line, b"GET HTTP://h:1/a%20b\t?q#f HTTP/1.1");
            assert_eq!(
                (p.proxy_scheme.as_str(), p.proxy_netloc.as_str()),
                ("http", "h:1")
            );
            assert_eq!((p.path.as_str(), p.query.as_str()), ("/a b", "q"));
            assert_eq!(p.fragment, "f");
            assert_eq!(p.version, "1.1");
            assert_eq!(p.headers["X_FOLDED"], "a b");
            assert!(p.chunked && p.connection_close);
            assert_eq!(p.header_bytes_received, data.len() - 5);
        }
    }

    #[test]
    fn test_get_body_stream_non_none() {
        let mut p = parser();
        feed(&mut p, b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(body(&mut p), b"abc");
        assert!(p.body_rcv.is_none(), "the body buffer was handed over");
    }

    #[test]
    fn test_close_with_body_rcv() {
        let mut p = parser();
        p.received(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na");
        assert!(p.body_rcv.is_some());
        p.close();
        assert!(p.body_rcv.is_none());
    }

    // Test_split_uri

    fn split(uri: &[u8]) -> UriParts {
        split_uri(uri).unwrap()
    }

    #[test]
    fn test_split_uri_unquoting_unneeded() {
        assert_eq!(split(b"http://localhost:8080/abc def").path, "/abc def");
    }

    #[test]
    fn test_split_uri_unquoting_needed() {
        assert_eq!(split(b"http://localhost:8080/abc%20def").path, "/abc def");
    }

    #[test]
    fn test_split_url_with_query() {
        let p = split(b"http://localhost:8080/abc?a=1&b=2");
        assert_eq!((p.path.as_str(), p.query.as_str()), ("/abc", "a=1&b=2"));
    }

    #[test]
    fn test_split_url_with_query_empty() {
        let p = split(b"http://localhost:8080/abc?");
        assert_eq!((p.path.as_str(), p.query.as_str()), ("/abc", ""));
    }

    #[test]
    fn test_split_url_with_fragment() {
        let p = split(b"http://localhost:8080/#foo");
        assert_eq!((p.path.as_str(), p.fragment.as_str()), ("/", "foo"));
    }

    #[test]
    fn test_split_url_https() {
        let p = split(b"https://localhost:8080/");
        assert_eq!(p.path, "/");
        assert_eq!(p.scheme, "https");
        assert_eq!(p.netloc, "localhost:8080");
    }

    fn bad_uri(uri: &[u8]) -> bool {
        matches!(split_uri(uri), Err(HeaderError::Parsing(ParsingError(m))) if m == "Bad URI")
    }

    #[test]
    fn test_split_uri_unicode_error_raises_parsing_error() {
        // urlsplit decodes the target as ASCII: any byte past 0x7f is a "Bad URI", wherever
        // it is, unless the target starts with `//` (all path, never decoded).
        assert!(bad_uri(b"/\xd0"));
        assert!(bad_uri(b"/a?b#\x80"));
        assert!(bad_uri(b"http://h\xff/"));
        assert_eq!(split(b"//\xd0").path, "//\u{d0}");
        assert_eq!(split(b"/%d0").path, "/\u{d0}", "escaped, the byte is fine");
    }

    #[test]
    fn unbalanced_brackets_are_a_bad_uri() {
        assert!(bad_uri(b"http://[::1/"));
        assert!(bad_uri(b"http://::1]/"));
    }

    #[test]
    fn bracketed_host_must_be_ipv6_or_ipvfuture() {
        for good in [
            &b"http://[::1]/"[..],
            b"http://[::1]:8080/x",
            b"http://[::]/",
            b"http://[1:2:3:4:5:6:7:8]/",
            b"http://[1:2:3:4:5:6:7::]/",
            b"http://[::2:3:4:5:6:7:8]/",
            b"http://[fe80::1%25eth0]/",
            b"http://[::ffff:1.2.3.4]/",
            b"http://[1:2:3:4:5:6:1.2.3.4]/",
            b"http://[v1.x]/",
            b"http://[vAf.a:b]/",
            b"http://u@[::1]/",
        ] {
            assert!(split_uri(good).is_ok(), "{}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b"http://[zz]/"[..],
            b"ftp://[1.2.3.4]/x",
            b"http://[]/",
            b"http://[:]/",
            b"http://[:::]/",
            b"http://[1::2::3]/",
            b"http://[1:2:3:4:5:6:7:8:9]/",
            b"http://[1:2:3:4:5:6:7]/",
            b"http://[1:2:3:4:5:6:7:8::]/",
            b"http://[:1:2:3:4:5:6:7]/",
            b"http://[1:2:3:4:5:6:7:]/",
            b"http://[12345::]/",
            b"http://[::g]/",
            b"http://[::1%]/",
            b"http://[::1%a%b]/",
            b"http://[::01.2.3.4]/",
            b"http://[::1.2.3.256]/",
            b"http://[::1.2.3]/",
            b"http://[1:2:3:4:5:6:7:1.2.3.4]/",
            b"http://[v.x]/",
            b"http://[v1.]/",
            b"http://[v1x]/",
            b"http://[V1.x]/",
            b"http://]x[/",
        ] {
            assert!(bad_uri(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn test_split_uri_path() {
        let p = split(b"//testing/whatever");
        assert_eq!(
            p,
            UriParts {
                path: "//testing/whatever".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn test_split_uri_path_query() {
        let p = split(b"//testing/whatever?a=1&b=2");
        assert_eq!(p.path, "//testing/whatever");
        assert_eq!(p.query, "a=1&b=2");
        assert_eq!(
            (p.scheme.as_str(), p.netloc.as_str(), p.fragment.as_str()),
            ("", "", "")
        );
    }

    #[test]
    fn test_split_uri_path_query_fragment() {
        let p = split(b"//testing/whatever?a=1&b=2#fragment");
        assert_eq!(p.path, "//testing/whatever");
        assert_eq!(p.query, "a=1&b=2");
        assert_eq!(p.fragment, "fragment");
    }

    // Test_get_header_lines

    #[test]
    fn test_get_header_lines() {
        assert_eq!(
            get_header_lines(b"slam\r\nslim").unwrap(),
            vec![b"slam".to_vec(), b"slim".to_vec()]
        );
    }

    #[test]
    fn test_get_header_lines_folded() {
        assert_eq!(
            get_header_lines(b"slim\r\n slam").unwrap(),
            vec![b"slim slam".to_vec()]
        );
    }

    #[test]
    fn test_get_header_lines_tabbed() {
        assert_eq!(
            get_header_lines(b"slam\r\n\tslim").unwrap(),
            vec![b"slam\tslim".to_vec()]
        );
    }

    #[test]
    fn test_get_header_lines_malformed() {
        let e = get_header_lines(b" Host: localhost\r\n\r\n").unwrap_err();
        assert_eq!(message(e), "Malformed header line \" Host: localhost\"");
    }

    // Test_crack_first_line

    fn crack(line: &[u8]) -> StartLine<'_> {
        crack_first_line(line).unwrap()
    }

    const NO_MATCH: StartLine<'static> = (b"", b"", b"");

    #[test]
    fn test_crack_first_line_matchok() {
        assert_eq!(
            crack(b"GET / HTTP/1.0"),
            (&b"GET"[..], &b"/"[..], &b"1.0"[..])
        );
    }

    #[test]
    fn test_crack_first_line_lowercase_method() {
        let e = crack_first_line(b"get / HTTP/1.0").unwrap_err();
        assert_eq!(message(e), "Malformed HTTP method \"get\"");
    }

    #[test]
    fn test_crack_first_line_nomatch() {
        assert_eq!(crack(b"GET / bleh"), NO_MATCH);
        assert_eq!(crack(b"GET /info?txtAirPlay&txtRAOP RTSP/1.0"), NO_MATCH);
        assert_eq!(crack(b"GET  / HTTP/1.1"), NO_MATCH);
    }

    #[test]
    fn test_crack_first_line_missing_version() {
        assert_eq!(crack(b"GET /"), (&b"GET"[..], &b"/"[..], &b""[..]));
    }

    #[test]
    fn test_crack_first_line_bad_method() {
        assert_eq!(crack(b"GE\x00 /foobar HTTP/8.4"), NO_MATCH);
    }

    #[test]
    fn test_crack_first_line_bad_version() {
        assert_eq!(crack(b"GET /foobar HTTP/.1."), NO_MATCH);
    }
}
