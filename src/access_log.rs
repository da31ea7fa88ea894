//! The access log: one line per response to the `waitress.access` logger (not in waitress,
//! whose users wrap their application in Paste's `TransLogger`; waitress issue #347).
//!
//! A worker thread serving a request keeps a small tally for it in a thread-local slot: the
//! task notes the status line when the head goes out and every body byte it hands to the
//! connection, and the application's `REMOTE_ADDR`/`REMOTE_USER` once the proxy-headers
//! middleware has set them. When the response is done, the channel's `service` turns the
//! tally into a line in [`AccessLogFormat`], appended to that worker's own buffer of pending
//! lines. A writer thread takes every worker's buffer each 50 ms and sends the lines to
//! [`ACCESS_LOGGER`] at INFO: the worker never waits for standard error, never takes a lock
//! another worker holds, and wakes nobody per line.
//!
//! The line is built only when `access_log` is on and the logger writes INFO records; with the
//! log off the hooks cost a thread-local check.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::adjustments::{Adjustments, DEFAULT_ACCESS_LOG_FORMAT};
use crate::app::Environ;
use crate::parser::HttpRequestParser;
use crate::task::PeerAddr;
use crate::utilities::{civil_from_days, Level, ACCESS_LOGGER, LOGGER, MONTH_NAMES};

// ---------------------------------------------------------------------------------------------
// The format
// ---------------------------------------------------------------------------------------------

/// One piece of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    /// Text copied as it is (`%%` gives a `%`).
    Literal(String),
    /// `%h`, `%a`: the client's address after trusted-proxy processing (`REMOTE_ADDR`).
    RemoteAddr,
    /// `%l`: the remote logname (identd), always `-`.
    Ident,
    /// `%u`: `REMOTE_USER` as the application left it, else `-`.
    User,
    /// `%t`: when the request was taken up, `[10/Oct/2000:13:55:36 +0000]` (UTC).
    Time,
    /// `%r`: the request line as received.
    RequestLine,
    /// `%m`: the method.
    Method,
    /// `%U`: the path, without the query.
    Path,
    /// `%q`: `?` and the query string, or nothing.
    Query,
    /// `%H`: the request's protocol, `HTTP/1.1`.
    Protocol,
    /// `%s`, `%>s`: the status code sent.
    Status,
    /// `%b`: body bytes sent, `-` for none.
    BytesClf,
    /// `%B`: body bytes sent, `0` for none.
    Bytes,
    /// `%D`: microseconds taken.
    Micros,
    /// `%T`: seconds taken (whole).
    Seconds,
    /// `%X`: how the connection stood when the response was done: `X` the client went away
    /// before it was all handed over, `+` kept alive, `-` closed.
    ConnectionStatus,
    /// `%{Name}i`: a request header (the environ's spelling of the name: `USER_AGENT`).
    RequestHeader(String),
    /// `%{remote}p`: the port of the connection's peer (the proxy's, behind one), `-` on a
    /// Unix socket.
    RemotePort,
}

/// A parsed `access_log_format`. The fields (Apache's `mod_log_config` letters):
///
/// | field | what |
/// |---|---|
/// | `%h`, `%a` | client address, after trusted-proxy processing (`REMOTE_ADDR` as the app saw it) |
/// | `%l` | remote logname: always `-` |
/// | `%u` | `REMOTE_USER` as the application left it, else `-` |
/// | `%t` | when the request was taken up, `[10/Oct/2000:13:55:36 +0000]` (UTC) |
/// | `%r` | the request line as received |
/// | `%m`, `%U`, `%q`, `%H` | method, path, `?query` (or nothing), protocol |
/// | `%s`, `%>s` | status code sent, `-` when no response went out |
/// | `%b`, `%B` | response body bytes handed to the connection (`-` or `0` for none) |
/// | `%D`, `%T` | time taken in microseconds, in whole seconds |
/// | `%X` | `X` client went away before the response was all handed over, `+` kept alive, `-` closed |
/// | `%{Name}i` | the request header `Name`, `-` when absent |
/// | `%{remote}p` | the port of the connection's peer (the proxy's, behind one), `-` on a Unix socket |
/// | `%%` | a `%` |
///
/// ```
/// use waitress::access_log::AccessLogFormat;
///
/// assert!("%h %s %{User-Agent}i".parse::<AccessLogFormat>().is_ok());
/// assert!("%h %Z".parse::<AccessLogFormat>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogFormat {
    fields: Vec<Field>,
}

/// A format that names an unknown field or ends inside one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogFormatError(String);

impl fmt::Display for AccessLogFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AccessLogFormatError {}

impl FromStr for AccessLogFormat {
    type Err = AccessLogFormatError;

    fn from_str(format: &str) -> Result<Self, Self::Err> {
        let mut fields = Vec::new();
        let mut literal = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let field = match chars.next() {
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                Some('h' | 'a') => Field::RemoteAddr,
                Some('l') => Field::Ident,
                Some('u') => Field::User,
                Some('t') => Field::Time,
                Some('r') => Field::RequestLine,
                Some('m') => Field::Method,
                Some('U') => Field::Path,
                Some('q') => Field::Query,
                Some('H') => Field::Protocol,
                Some('s') => Field::Status,
                Some('>') if chars.next() == Some('s') => Field::Status,
                Some('b') => Field::BytesClf,
                Some('B') => Field::Bytes,
                Some('D') => Field::Micros,
                Some('T') => Field::Seconds,
                Some('X') => Field::ConnectionStatus,
                Some('{') => {
                    let rest = chars.as_str();
                    let end = match rest.find('}') {
                        Some(end) => end,
                        None => {
                            return Err(AccessLogFormatError(format!(
                                "unclosed %{{ in access log format {format:?}"
                            )))
                        }
                    };
                    let name = &rest[..end];
                    chars = rest[end + 1..].chars();
                    match chars.next() {
                        Some('i') if !name.is_empty() => {
                            Field::RequestHeader(name.to_ascii_uppercase().replace('-', "_"))
                        }
                        Some('p') if name == "remote" => Field::RemotePort,
                        _ => {
                            return Err(AccessLogFormatError(format!(
                                "only %{{Header}}i and %{{remote}}p are known among the access log's %{{…}} fields, in {format:?}"
                            )))
                        }
                    }
                }
                other => {
                    let shown =
                        other.map_or_else(|| "end of text".to_string(), |c| format!("%{c}"));
                    return Err(AccessLogFormatError(format!(
                        "unknown access log field {shown} in {format:?} (known: %h %a %l %u %t %r %m %U %q %H %s %b %B %D %T %X %{{Header}}i %{{remote}}p %%)"
                    )));
                }
            };
            if !literal.is_empty() {
                fields.push(Field::Literal(std::mem::take(&mut literal)));
            }
            fields.push(field);
        }
        if !literal.is_empty() {
            fields.push(Field::Literal(literal));
        }
        Ok(AccessLogFormat { fields })
    }
}

/// Check an `access_log_format` value (the `access_log_format` setting's converter).
pub fn check_format(format: &str) -> Result<(), String> {
    format
        .parse::<AccessLogFormat>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// How the connection stood once the response was done (`%X`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// The client went away before the whole response was handed over.
    Aborted,
    /// The connection stays open for another request.
    KeepAlive,
    /// The server closes the connection after this response.
    Close,
}

/// What one access-log line is made of.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// The client address after trusted-proxy processing.
    pub remote_addr: &'a str,
    /// `REMOTE_USER`, if the application set one.
    pub remote_user: Option<&'a str>,
    /// The port of the connection's peer; none on a Unix socket.
    pub remote_port: Option<u16>,
    /// When the request was taken up.
    pub received: SystemTime,
    /// The request line as received (latin-1 bytes).
    pub request_line: &'a [u8],
    /// The method.
    pub method: &'a str,
    /// The path (latin-1 chars).
    pub path: &'a str,
    /// The query string.
    pub query: &'a str,
    /// `"1.1"`, `"1.0"`…
    pub version: &'a str,
    /// The status code sent; none when no response head went out.
    pub status: Option<u16>,
    /// Response body bytes handed to the connection.
    pub body_bytes: u64,
    /// Time from taking the request up to handing over the end of the response.
    pub duration: Duration,
    /// How the connection stood afterwards.
    pub connection: ConnectionStatus,
    /// The request headers, by environ name (`USER_AGENT`).
    pub headers: &'a HashMap<String, String>,
}

impl AccessLogFormat {
    /// Append the line for `record` to `out` (no newline). Text from the client (the request
    /// line, headers, user) is escaped as Apache does: `"` and `\` get a backslash, control
    /// and non-ASCII characters become `\xHH`, so a line can never be split or forged.
    pub fn write_line(&self, record: &Record<'_>, out: &mut String) {
        for field in &self.fields {
            // Writing to a String cannot fail.
            let _: fmt::Result = match field {
                Field::Literal(text) => {
                    out.push_str(text);
                    Ok(())
                }
                Field::RemoteAddr => {
                    escape_str(out, record.remote_addr);
                    Ok(())
                }
                Field::Ident => {
                    out.push('-');
                    Ok(())
                }
                Field::User => {
                    match record.remote_user {
                        Some(user) if !user.is_empty() => escape_str(out, user),
                        _ => out.push('-'),
                    }
                    Ok(())
                }
                Field::Time => {
                    push_clf_time(out, record.received);
                    Ok(())
                }
                Field::RequestLine => {
                    if record.request_line.is_empty() {
                        out.push('-');
                    } else {
                        escape_bytes(out, record.request_line);
                    }
                    Ok(())
                }
                Field::Method => {
                    escape_str(out, record.method);
                    Ok(())
                }
                Field::Path => {
                    escape_str(out, record.path);
                    Ok(())
                }
                Field::Query => {
                    if !record.query.is_empty() {
                        out.push('?');
                        escape_str(out, record.query);
                    }
                    Ok(())
                }
                Field::Protocol => {
                    out.push_str("HTTP/");
                    escape_str(out, record.version);
                    Ok(())
                }
                Field::Status => {
                    push_optional_number(out, record.status.map(u64::from));
                    Ok(())
                }
                Field::BytesClf if record.body_bytes == 0 => {
                    out.push('-');
                    Ok(())
                }
                Field::BytesClf | Field::Bytes => {
                    push_number(out, record.body_bytes);
                    Ok(())
                }
                Field::Micros => {
                    let micros = record.duration.as_micros();
                    push_number(out, u64::try_from(micros).unwrap_or(u64::MAX));
                    Ok(())
                }
                Field::Seconds => {
                    push_number(out, record.duration.as_secs());
                    Ok(())
                }
                Field::ConnectionStatus => {
                    out.push(match record.connection {
                        ConnectionStatus::Aborted => 'X',
                        ConnectionStatus::KeepAlive => '+',
                        ConnectionStatus::Close => '-',
                    });
                    Ok(())
                }
                Field::RequestHeader(name) => {
                    match record.headers.get(name) {
                        Some(value) => escape_str(out, value),
                        None => out.push('-'),
                    }
                    Ok(())
                }
                Field::RemotePort => {
                    push_optional_number(out, record.remote_port.map(u64::from));
                    Ok(())
                }
            };
        }
    }
}

/// A byte that goes into a line as it is.
fn is_plain(b: u8) -> bool {
    (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\'
}

/// [`escape_into`] for text, copied whole when nothing needs escaping (the usual case).
fn escape_str(out: &mut String, text: &str) {
    if text.bytes().all(is_plain) {
        out.push_str(text);
    } else {
        escape_into(out, text.chars());
    }
}

/// [`escape_into`] for latin-1 bytes, copied whole when nothing needs escaping.
fn escape_bytes(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) if bytes.iter().copied().all(is_plain) => out.push_str(text),
        _ => escape_into(out, bytes.iter().map(|&b| char::from(b))),
    }
}

/// A number in decimal, without the formatting machinery (it runs for every line).
fn push_number(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// A number, or `-` for none.
fn push_optional_number(out: &mut String, n: Option<u64>) {
    match n {
        Some(n) => push_number(out, n),
        None => out.push('-'),
    }
}

/// Copy text from the client into a log line, escaped the way Apache's `mod_log_config`
/// does.
fn escape_into(out: &mut String, text: impl Iterator<Item = char>) {
    for c in text {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            // Latin-1 chars stand for bytes (PEP 3333); anything wider is written per byte.
            _ => {
                let mut buf = [0u8; 4];
                let bytes: &[u8] = if (c as u32) < 256 {
                    buf[0] = c as u8;
                    &buf[..1]
                } else {
                    c.encode_utf8(&mut buf).as_bytes()
                };
                for b in bytes {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
        }
    }
}

/// `[10/Oct/2000:13:55:36 +0000]`, in UTC. Each thread keeps the text of the last second it
/// wrote, as the `Date` header does, so a busy server formats it once a second per worker.
fn push_clf_time(out: &mut String, when: SystemTime) {
    thread_local! {
        static CACHE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let secs = when
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
            let in_day = secs.rem_euclid(86_400);
            cache.0 = secs;
            cache.1 = format!(
                "[{:02}/{}/{}:{:02}:{:02}:{:02} +0000]",
                day,
                MONTH_NAMES[month as usize - 1],
                year,
                in_day / 3600,
                in_day % 3600 / 60,
                in_day % 60
            );
        }
        out.push_str(&cache.1);
    });
}

// ---------------------------------------------------------------------------------------------
// The tally a worker keeps while it serves one request
// ---------------------------------------------------------------------------------------------

/// What the task reports about the response it is sending.
#[derive(Debug, Default)]
struct Tally {
    status: Option<u16>,
    body_bytes: u64,
    remote_addr: Option<String>,
    remote_user: Option<String>,
    disconnected: bool,
}

thread_local! {
    /// The tally of the request this worker is serving, present only while an access-log
    /// line is being collected ([`begin`] to [`Pending::finish`]). Only this thread touches it.
    static CURRENT: RefCell<Option<Tally>> = const { RefCell::new(None) };
}

fn with_tally(f: impl FnOnce(&mut Tally)) {
    CURRENT.with(|current| {
        if let Some(tally) = current.borrow_mut().as_mut() {
            f(tally);
        }
    });
}

/// The task is sending the status line `status` (`"200 OK"`). A later call (the 500 written
/// after an application failed before its head went out) replaces it.
pub(crate) fn note_status(status: &str) {
    with_tally(|tally| tally.status = status.get(..3).and_then(|code| code.parse().ok()));
}

/// The task handed `data` to the connection as body, framed or cut as `sent`: the body bytes
/// are `sent` less the chunk framing.
pub(crate) fn note_body(chunked: bool, data: &[u8], sent: &[u8]) {
    let bytes = if chunked && !sent.is_empty() {
        data.len()
    } else {
        sent.len()
    };
    note_body_bytes(bytes as u64);
}

/// The task handed `bytes` body bytes to the connection (a file streamed by the I/O thread).
pub(crate) fn note_body_bytes(bytes: u64) {
    with_tally(|tally| tally.body_bytes += bytes);
}

/// The application has returned: keep `REMOTE_ADDR` and `REMOTE_USER` as it saw them (after
/// the proxy-headers middleware rewrote them for a trusted proxy).
pub(crate) fn note_environ(environ: &Environ) {
    with_tally(|tally| {
        tally.remote_addr = environ.get("REMOTE_ADDR").map(str::to_string);
        tally.remote_user = environ.get("REMOTE_USER").map(str::to_string);
    });
}

/// The response was cut short: the client went away while it was being handed over.
pub(crate) fn note_disconnected() {
    with_tally(|tally| tally.disconnected = true);
}

/// An access-log line being collected for one request.
#[derive(Debug)]
pub(crate) struct Pending {
    started: Instant,
    received: SystemTime,
}

/// Start collecting the line for the request this worker is about to serve; none when the
/// access log is off (or its logger drops INFO records).
pub(crate) fn begin(adj: &Adjustments) -> Option<Pending> {
    if !adj.access_log || !ACCESS_LOGGER.enabled(Level::Info) {
        return None;
    }
    CURRENT.with(|current| *current.borrow_mut() = Some(Tally::default()));
    Some(Pending {
        started: Instant::now(),
        received: SystemTime::now(),
    })
}

impl Pending {
    /// The response to `request` is done: build its line and queue it for the writer.
    /// `close` is whether the connection closes after it, `connected` whether the client was
    /// still there (it counts only when nothing was sent: a client may well close as soon as
    /// it has a whole response).
    pub(crate) fn finish(
        self,
        adj: &Adjustments,
        request: &HttpRequestParser,
        peer: &PeerAddr,
        close: bool,
        connected: bool,
    ) {
        let tally = CURRENT
            .with(|current| current.borrow_mut().take())
            .unwrap_or_default();
        let connection = if tally.disconnected || (tally.status.is_none() && !connected) {
            ConnectionStatus::Aborted
        } else if close {
            ConnectionStatus::Close
        } else {
            ConnectionStatus::KeepAlive
        };
        let record = Record {
            remote_addr: tally.remote_addr.as_deref().unwrap_or(peer.host()),
            remote_user: tally.remote_user.as_deref(),
            remote_port: peer.port(),
            received: self.received,
            request_line: &request.first_line,
            method: &request.command,
            path: &request.path,
            query: &request.query,
            version: &request.version,
            status: tally.status,
            body_bytes: tally.body_bytes,
            duration: self.started.elapsed(),
            connection,
            headers: &request.headers,
        };
        with_format(&adj.access_log_format, |format| {
            append(|out| format.write_line(&record, out))
        });
    }
}

/// Run `f` with the parsed `text`, parsed once per thread while the text stays the same.
/// A format that does not parse (settings built without `Adjustments::new`, which checks it)
/// gives the default format.
fn with_format(text: &str, f: impl FnOnce(&AccessLogFormat)) {
    thread_local! {
        static PARSED: RefCell<Option<(String, Rc<AccessLogFormat>)>> = const { RefCell::new(None) };
    }
    let format = PARSED.with(|parsed| {
        let mut parsed = parsed.borrow_mut();
        match parsed.as_ref() {
            Some((cached, format)) if cached == text => Rc::clone(format),
            _ => {
                let format = text
                    .parse()
                    .or_else(|_| DEFAULT_ACCESS_LOG_FORMAT.parse())
                    .unwrap_or(AccessLogFormat { fields: Vec::new() });
                let format = Rc::new(format);
                *parsed = Some((text.to_string(), Rc::clone(&format)));
                format
            }
        }
    });
    f(&format)
}

// ---------------------------------------------------------------------------------------------
// The writer thread
// ---------------------------------------------------------------------------------------------

/// How often the writer collects the workers' lines. A line reaches the log at most this long
/// after its response; the writer sleeps in between, so a busy server pays no wake-up per line.
const TICK: Duration = Duration::from_millis(50);

/// Bytes of lines a worker keeps waiting for the writer; past it new lines are dropped and
/// counted (a log that cannot keep up must neither stall the workers nor eat the memory).
const MAX_PENDING_BYTES: usize = 4 << 20;

/// The lines one worker thread has formatted and the writer has not yet taken. Its lock is
/// shared by that worker (appending a line) and the writer (taking the whole text every
/// [`TICK`]), nobody else: the worker never waits for another worker, nor for the writing.
#[derive(Debug, Default)]
struct PendingLines {
    text: String,
    dropped: u64,
}

type WorkerLines = Arc<Mutex<PendingLines>>;

/// Every worker's lines, registered by the worker on its first line. The writer drops the
/// entries of threads that have ended once it has written what they left.
static WORKERS: Mutex<Vec<WorkerLines>> = Mutex::new(Vec::new());

/// Whether the writer thread runs. Read for every line, so an atomic: [`NOT_STARTED`],
/// [`RUNNING`], or [`FAILED`] (it could not be started; workers then write their lines
/// themselves).
static WRITER_STATE: AtomicU8 = AtomicU8::new(NOT_STARTED);
const NOT_STARTED: u8 = 0;
const RUNNING: u8 = 1;
const FAILED: u8 = 2;

/// Where flush requests go, each answered once every line formatted before it is written. Set
/// once, when the writer starts; locked only to start the writer and to flush.
static WRITER: Mutex<Option<SyncSender<SyncSender<()>>>> = Mutex::new(None);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a line was being appended leaves a String that is still valid text.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the writer thread runs, starting it with the first line.
fn writer_running() -> bool {
    match WRITER_STATE.load(Ordering::Acquire) {
        RUNNING => true,
        FAILED => false,
        _ => start_writer(),
    }
}

fn start_writer() -> bool {
    let mut writer = lock(&WRITER);
    // Another worker may have started it while this one waited for the lock.
    match WRITER_STATE.load(Ordering::Acquire) {
        RUNNING => return true,
        FAILED => return false,
        _ => {}
    }
    let (sender, receiver) = mpsc::sync_channel(16);
    let started = std::thread::Builder::new()
        .name("waitress-access-log".to_string())
        .spawn(move || write_lines(receiver))
        .is_ok();
    if started {
        *writer = Some(sender);
    }
    WRITER_STATE.store(if started { RUNNING } else { FAILED }, Ordering::Release);
    started
}

/// Format a line with `write` into this worker's pending lines.
fn append(write: impl FnOnce(&mut String)) {
    thread_local! {
        static MINE: RefCell<Option<WorkerLines>> = const { RefCell::new(None) };
    }
    if !writer_running() {
        let mut line = String::new();
        write(&mut line);
        ACCESS_LOGGER.info(&line);
        return;
    }
    MINE.with(|mine| {
        let mut mine = mine.borrow_mut();
        let lines = mine.get_or_insert_with(|| {
            let lines = WorkerLines::default();
            lock(&WORKERS).push(Arc::clone(&lines));
            lines
        });
        let mut pending = lock(lines);
        if pending.text.len() >= MAX_PENDING_BYTES {
            pending.dropped += 1;
        } else {
            write(&mut pending.text);
            pending.text.push('\n');
        }
    });
}

/// The writer thread: every [`TICK`], or at once for a flush, the lines of every worker to
/// the logger.
fn write_lines(flushes: Receiver<SyncSender<()>>) {
    loop {
        let flush = flushes.recv_timeout(TICK);
        write_pending();
        match flush {
            Ok(done) => {
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Take and write what every worker has pending.
fn write_pending() {
    let workers: Vec<WorkerLines> = {
        let mut workers = lock(&WORKERS);
        // A thread that ended dropped its handle: once emptied below, its entry can go.
        workers.retain(|w| Arc::strong_count(w) > 1 || !lock(w).text.is_empty());
        workers.clone()
    };
    let mut dropped = 0;
    for worker in workers {
        let taken = std::mem::take(&mut *lock(&worker));
        dropped += taken.dropped;
        ACCESS_LOGGER.log_lines(Level::Info, &taken.text);
    }
    if dropped > 0 {
        LOGGER.warning(&format!(
            "access log: {dropped} line(s) dropped, the log could not keep up"
        ));
    }
}

/// Wait (at most `timeout`) until every access-log line formatted so far is written. A server
/// calls it when it closes, so a program that exits after `run` loses no line.
pub fn flush(timeout: Duration) {
    // Flushing must not start the thread: only a running writer can have lines waiting.
    let sender = match lock(&WRITER).clone() {
        Some(sender) => sender,
        None => return,
    };
    let (done, wait) = mpsc::sync_channel(1);
    if sender.send(done).is_ok() {
        let _ = wait.recv_timeout(timeout);
    }
}

#[cfg(test)]
mod tests {
    //! Not a port: waitress has no access log.

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn line(format: &str, record: &Record<'_>) -> String {
        let format: AccessLogFormat = format.parse().unwrap();
        let mut out = String::new();
        format.write_line(record, &mut out);
        out
    }

    fn record(headers: &HashMap<String, String>) -> Record<'_> {
        Record {
            remote_addr: "192.0.2.7",
            remote_user: None,
            remote_port: Some(50_123),
            // 2000-10-10 13:55:36 UTC
            received: UNIX_EPOCH + Duration::from_secs(971_186_136),
            request_line: b"GET /apache_pb.gif?x=1 HTTP/1.0",
            method: "GET",
            path: "/apache_pb.gif",
            query: "x=1",
            version: "1.0",
            status: Some(200),
            body_bytes: 2326,
            duration: Duration::from_micros(1_500_042),
            connection: ConnectionStatus::KeepAlive,
            headers,
        }
    }

    #[test]
    fn default_format_is_combined_plus_time_and_connection() {
        let h = headers(&[
            ("REFERER", "http://www.example.com/start.html"),
            ("USER_AGENT", "Mozilla/4.08 [en] (Win98; I ;Nav)"),
        ]);
        assert_eq!(
            line(DEFAULT_ACCESS_LOG_FORMAT, &record(&h)),
            "192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /apache_pb.gif?x=1 HTTP/1.0\" 200 2326 \
             \"http://www.example.com/start.html\" \"Mozilla/4.08 [en] (Win98; I ;Nav)\" 1500042 +"
        );
    }

    #[test]
    fn each_field() {
        let h = headers(&[("X_TRACE", "abc")]);
        let mut r = record(&h);
        r.remote_user = Some("ann");
        let cases = [
            ("%h|%a", "192.0.2.7|192.0.2.7"),
            ("%l", "-"),
            ("%u", "ann"),
            ("%t", "[10/Oct/2000:13:55:36 +0000]"),
            ("%r", "GET /apache_pb.gif?x=1 HTTP/1.0"),
            ("%m %U%q %H", "GET /apache_pb.gif?x=1 HTTP/1.0"),
            ("%s %>s", "200 200"),
            ("%b %B", "2326 2326"),
            ("%D %T", "1500042 1"),
            ("%X", "+"),
            ("%{X-Trace}i %{x-trace}i %{Missing}i", "abc abc -"),
            ("%{remote}p", "50123"),
            ("100%% %s", "100% 200"),
            ("", ""),
        ];
        for (format, expected) in cases {
            assert_eq!(line(format, &r), expected, "format {format:?}");
        }
    }

    #[test]
    fn nothing_sent_and_aborted() {
        let h = headers(&[]);
        let mut r = record(&h);
        r.status = None;
        r.body_bytes = 0;
        r.request_line = b"";
        r.query = "";
        r.connection = ConnectionStatus::Aborted;
        r.remote_port = None;
        assert_eq!(line("%s %b %B %r %q%X %{remote}p", &r), "- - 0 - X -");
        r.connection = ConnectionStatus::Close;
        assert_eq!(line("%X", &r), "-");
    }

    #[test]
    fn client_text_is_escaped() {
        let h = headers(&[("USER_AGENT", "a\"b\\c\r\nd\u{e9}")]);
        let mut r = record(&h);
        r.request_line = b"GET /\"\x01\xff HTTP/1.1";
        assert_eq!(
            line("%{User-Agent}i|%r", &r),
            "a\\\"b\\\\c\\x0d\\x0ad\\xe9|GET /\\\"\\x01\\xff HTTP/1.1"
        );
    }

    #[test]
    fn bad_formats_are_refused() {
        for format in [
            "%Z",
            "%",
            "%{User-Agent",
            "%{User-Agent}o",
            "%{}i",
            "%>x",
            "%{local}p",
        ] {
            let error = format.parse::<AccessLogFormat>().unwrap_err();
            assert!(
                error.to_string().contains("access log"),
                "{format}: {error}"
            );
        }
    }

    #[test]
    fn tally_follows_the_task_notes() {
        let adj = Adjustments {
            access_log: true,
            ..Adjustments::default()
        };
        let pending = begin(&adj).expect("log on");
        note_status("404 Not Found");
        note_body(true, b"hello", b"5\r\nhello\r\n");
        note_body(false, b"12345", b"123");
        note_body_bytes(10);
        let tally = CURRENT.with(|c| c.borrow_mut().take()).unwrap();
        assert_eq!(tally.status, Some(404));
        assert_eq!(tally.body_bytes, 18);
        let _ = pending;
        // With no line being collected the notes go nowhere.
        note_status("200 OK");
        assert!(CURRENT.with(|c| c.borrow().is_none()));
        let off = Adjustments::default();
        assert!(begin(&off).is_none());
    }
}
