//! Port of waitress/parser.py.
//!
//! `HttpRequestParser` turns the bytes of one request, fed in slices of any size, into a
//! request: the start line, the headers (as the upper-cased, underscored names of the environ)
//! and a body receiver. It runs on the I/O thread, allocates per request only what it keeps,
//! and refuses everything waitress refuses, recording an [`Error`] for the task to answer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::adjustments::Adjustments;
use crate::app::Input;
use crate::receiver::{ChunkedReceiver, FixedStreamReceiver};
use crate::utilities::Error;

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
    /// The HTTP version, `"1.0"` by default (`"1.1"`, …).
    pub version: String,
    /// Why the request is refused, if it is.
    pub error: Option<Error>,
    /// The connection must close after this request.
    pub connection_close: bool,
    /// The start line, without its CRLF.
    pub first_line: Vec<u8>,
    /// The headers: upper-cased names with `-` turned to `_`, latin-1 values; repeated headers
    /// joined with `", "`.
    pub headers: HashMap<String, String>,
    /// The method, upper-case as received.
    pub command: String,
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
    /// `wsgi.url_scheme` (from the adjustments).
    pub url_scheme: String,
    adj: Arc<Adjustments>,
}

impl HttpRequestParser {
    /// A parser for the next request on a connection.
    pub fn new(adj: Arc<Adjustments>) -> Self {
        let _ = adj;
        todo!("parser work")
    }

    /// Feed bytes; returns how many were consumed (the rest belongs to the next request).
    pub fn received(&mut self, data: &[u8]) -> usize {
        let _ = data;
        todo!("parser work")
    }

    /// Parse the head (start line plus headers, up to the blank line).
    pub fn parse_header(&mut self, header_plus: &[u8]) -> Result<(), HeaderError> {
        let _ = header_plus;
        todo!("parser work")
    }

    /// The body as `wsgi.input`: the receiver's buffer, or an empty input.
    pub fn get_body_stream(&mut self) -> std::io::Result<Input> {
        todo!("parser work")
    }

    /// Release the body buffer.
    pub fn close(&mut self) {
        todo!("parser work")
    }

    /// The settings this parser applies.
    pub fn adj(&self) -> &Arc<Adjustments> {
        &self.adj
    }
}
