//! The application interface: PEP 3333 (WSGI) carried over to Rust types.
//!
//! waitress serves any Python callable `app(environ, start_response)`. Here an application is
//! anything that implements [`App`]; plain closures of the right shape do. The server builds an
//! [`Environ`] per request, hands the application a [`StartResponse`] handle, and sends the
//! [`Body`] the application returns. Nothing in this module touches a socket: the task module
//! (a worker thread) drives it, which is why every type here is `Send`.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead, Read, Seek};
use std::sync::{Arc, Weak};

/// The error an application (or a body iterator) may return. Any error type converts into it
/// with `?`. The server answers `500 Internal Server Error` for it (when headers were not sent
/// yet) and logs it; with `expose_tracebacks` the error text and its source chain become the
/// body of the 500.
pub type AppError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What an application returns: a body to send, or an error.
pub type AppResult = Result<Body, AppError>;

/// A WSGI-style application.
///
/// waitress: the `application(environ, start_response)` callable of PEP 3333.
///
/// The server calls [`App::respond`] once per request on a worker thread (waitress calls
/// `application(environ, start_response)`); many worker threads may call the same application
/// at once, hence `Send + Sync`. A panic inside `respond` (or inside the body iterator or its
/// `Drop`) is caught and answered like an error: the worker thread survives.
///
/// The method is not named `call`: on a closure, `app.call(…)` would collide with the unstable
/// `Fn::call` and warn (`unstable_name_collisions`).
///
/// ```
/// use waitress::{App, Body, Environ, StartResponse, AppResult};
///
/// fn hello(_environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
///     start_response.start("200 OK", [("Content-Type", "text/plain")])?;
///     Ok(Body::from("Hello, World!"))
/// }
/// // Functions and closures of that shape are applications:
/// fn takes_app(_app: impl App) {}
/// takes_app(hello);
/// takes_app(|_env: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
///     sr.start("204 No Content", Vec::<(String, String)>::new())?;
///     Ok(Body::empty())
/// });
/// ```
pub trait App: Send + Sync + 'static {
    /// Handle one request: call `start_response` once (again only with an error, see
    /// [`StartResponse::start_with_error`]) and return the body.
    fn respond(&self, environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult;
}

impl<F> App for F
where
    F: Fn(&mut Environ, &mut StartResponse<'_>) -> AppResult + Send + Sync + 'static,
{
    fn respond(&self, environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
        self(environ, start_response)
    }
}

/// An application shared by all worker threads (and wrapped by middleware).
pub type SharedApp = Arc<dyn App>;

// ---------------------------------------------------------------------------------------------
// Latin-1: PEP 3333's "native strings"
// ---------------------------------------------------------------------------------------------

/// Decode bytes the way PEP 3333 asks for environ values: each byte becomes the char with the
/// same code point (ISO-8859-1), so no byte is ever lost and [`string_to_latin1`] gives the
/// exact bytes back.
pub fn latin1_to_string(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    push_latin1_decoded(&mut text, bytes);
    text
}

/// Append `bytes`, decoded as [`latin1_to_string`] decodes them, to `text` (Rust-only: into a
/// string whose memory is reused).
pub(crate) fn push_latin1_decoded(text: &mut String, bytes: &[u8]) {
    // Fast path: ASCII is the same in both encodings and needs no per-char work. Char by char
    // instead: 11,461 user-space instructions per hello request against 11,287, and 31,594–
    // 31,605 against 28,018–28,032 with a browser's nine headers (callgrind, 6 Dec 2026).
    match std::str::from_utf8(bytes) {
        Ok(ascii) if bytes.is_ascii() => text.push_str(ascii),
        _ => text.extend(bytes.iter().map(|&b| char::from(b))),
    }
}

/// `text` as the one of `fixed` that reads the same, else as `copy(text)`. Rust-only: for the
/// short values that nearly every request or response carries (the method, the version, the
/// URL scheme, `200 OK`), which then cost no allocation; `copy` says how text of its kind
/// becomes a string (bytes from the wire are latin-1). Each copied instead: 12,424 and
/// 12,425 user-space instructions per hello request against 11,287 (callgrind, 6 Dec 2026).
pub(crate) fn fixed_or<T: AsRef<[u8]> + ?Sized>(
    text: &T,
    fixed: &[&'static str],
    copy: impl FnOnce(&T) -> String,
) -> Cow<'static, str> {
    let bytes = text.as_ref();
    match fixed.iter().find(|candidate| candidate.as_bytes() == bytes) {
        Some(&candidate) => Cow::Borrowed(candidate),
        None => Cow::Owned(copy(text)),
    }
}

/// Encode a native string back to bytes, one byte per char. Returns `None` when a char is
/// outside latin-1 (above U+00FF): such a string cannot go on the wire as WSGI requires.
pub fn string_to_latin1(s: &str) -> Option<Vec<u8>> {
    if s.is_ascii() {
        return Some(s.as_bytes().to_vec());
    }
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

// ---------------------------------------------------------------------------------------------
// The environ
// ---------------------------------------------------------------------------------------------

/// The per-request environment: the CGI-style string variables of PEP 3333 plus the typed
/// objects that are not strings (`wsgi.input`, `wsgi.errors`, `waitress.client_disconnected`).
///
/// waitress: the `environ` dict built by `WSGITask.get_environment`.
///
/// String variables keep PEP 3333's rules: values are "native strings" whose chars are the
/// latin-1 decoding of the bytes on the wire (see [`latin1_to_string`]). `wsgi.version`,
/// `wsgi.multithread`, `wsgi.multiprocess` and `wsgi.run_once` are stored as strings too
/// (`"1.0"`, `"true"`, `"false"`).
pub struct Environ {
    /// The string variables, in the order they were set. Rust-only: a `Vec` rather than a
    /// map, and values that may be `&'static str`. With a `BTreeMap<_, String>`, building the
    /// environ made about 20 of the 50 allocations of a hello-world request (`perf probe` on
    /// `malloc`): the map's nodes, and a `String` for each fixed value such as `"1.0"`. Now it
    /// is one `Vec` and the values that vary. Unsorted, because a search by length and then
    /// bytes rarely compares bytes at all, where keeping ~25 names sorted cost ~100 `memcmp`
    /// calls per request (a tenth of the server's samples); `vars` and `keys` sort.
    vars: Vec<Var>,
    input: Input,
    errors: Errors,
    client_disconnected: Option<DisconnectCheck>,
}

/// One string variable of an [`Environ`]: its name and its value.
pub(crate) type Var = (Cow<'static, str>, Text);

/// A variable's value. Rust-only: besides text of its own, a value may be fixed text (`"1.0"`,
/// or a server's `SERVER_NAME`, kept once for good) or text that the requests of one
/// connection share, such as its `REMOTE_ADDR`, counted rather than copied. Seven of the 38
/// allocations and frees that `perf probe` counted on `malloc` for a hello-world request were
/// such copies (see `Task::get_environment` for what this bought).
#[derive(Clone)]
pub(crate) enum Text {
    Static(&'static str),
    Owned(String),
    Shared(Arc<str>),
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Text::Static(text) => text,
            Text::Owned(text) => text,
            Text::Shared(text) => text,
        }
    }
}

/// Texts compare as the text they read, whatever their kind.
impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        **self == **other
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl Text {
    fn into_string(self) -> String {
        match self {
            Text::Owned(text) => text,
            other => other.to_string(),
        }
    }

    /// The text as a `String` to change, copied first unless it is owned already (as
    /// `Cow::to_mut`).
    pub(crate) fn to_mut(&mut self) -> &mut String {
        if !matches!(self, Text::Owned(_)) {
            *self = Text::Owned(self.to_string());
        }
        match self {
            Text::Owned(text) => text,
            _ => unreachable!("made owned just above"),
        }
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text::Owned(text)
    }
}

impl From<&'static str> for Text {
    fn from(text: &'static str) -> Self {
        Text::Static(text)
    }
}

impl From<Cow<'static, str>> for Text {
    fn from(text: Cow<'static, str>) -> Self {
        match text {
            Cow::Borrowed(text) => Text::Static(text),
            Cow::Owned(text) => Text::Owned(text),
        }
    }
}

impl From<&Arc<str>> for Text {
    fn from(text: &Arc<str>) -> Self {
        Text::Shared(Arc::clone(text))
    }
}

/// The variables as a map, for `Debug`.
struct VarsDebug<'a>(Vec<(&'a str, &'a str)>);

impl fmt::Debug for VarsDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl Default for Environ {
    fn default() -> Self {
        Environ::new()
    }
}

impl fmt::Debug for Environ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environ")
            .field("vars", &VarsDebug(self.sorted()))
            .field("client_disconnected", &self.client_disconnected.is_some())
            .finish_non_exhaustive()
    }
}

impl Environ {
    /// An empty environ with an empty `wsgi.input`; the server fills it, tests may too.
    pub fn new() -> Self {
        Environ {
            vars: Vec::new(),
            input: Input::empty(),
            errors: Errors::default(),
            client_disconnected: None,
        }
    }

    /// An empty environ with room for `variables` variables, made in the memory of `kept`,
    /// an emptied list of an earlier environ (see [`into_vars`](Self::into_vars)). Rust-only:
    /// the server knows how many it sets, and one allocation of the right size, or none, is
    /// the cheapest. A wrk request (one header) needs 19 entries, 912 bytes, which glibc
    /// serves from its per-thread cache; 32 entries (1,536 bytes) went through
    /// `malloc_consolidate` each time (2.3 % of the server's samples under `wrk -c100`), as
    /// long as each environ had a new list.
    pub(crate) fn with_kept(mut kept: Vec<Var>, variables: usize) -> Self {
        kept.clear();
        kept.reserve_exact(variables);
        Environ {
            vars: kept,
            ..Environ::new()
        }
    }

    /// The environ's list of variables, for their memory to make the next environ in; the
    /// rest of the environ (its input, its error stream) is dropped.
    pub(crate) fn into_vars(mut self) -> Vec<Var> {
        std::mem::take(&mut self.vars)
    }

    /// The value of a string variable (`environ.get(key)`).
    pub fn get(&self, key: &str) -> Option<&str> {
        let at = self.find(key)?;
        Some(&self.vars[at].1)
    }

    /// Whether a string variable is present (`key in environ`).
    pub fn contains(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// Set a string variable. Static keys (`"REQUEST_METHOD"`) cost no allocation.
    pub fn set(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) {
        self.set_text(key.into(), Text::Owned(value.into()));
    }

    /// Add a variable the environ does not hold, without searching for it first. For the
    /// server, which sets its own distinct names and then the headers' into a new environ (see
    /// `Task::get_environment` for why none can clash): through `set`, which searches first,
    /// its own were 8 % of the user-space instructions per request (`callgrind`). A debug
    /// build checks that the name is new.
    pub(crate) fn push_new(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Text>) {
        let key = key.into();
        debug_assert!(self.find(&key).is_none(), "{key} is set twice");
        self.vars.push((key, value.into()));
    }

    fn set_text(&mut self, key: Cow<'static, str>, value: Text) {
        match self.find(&key) {
            Some(at) => self.vars[at].1 = value,
            None => self.push_new(key, value),
        }
    }

    /// Whether any variable's name satisfies `test`.
    pub(crate) fn any_key(&self, test: impl Fn(&str) -> bool) -> bool {
        self.vars.iter().any(|(key, _)| test(key))
    }

    /// Where `key` is in the list.
    fn find(&self, key: &str) -> Option<usize> {
        self.vars.iter().position(|(k, _)| k == key)
    }

    /// The variables sorted by name.
    fn sorted(&self) -> Vec<(&str, &str)> {
        let mut vars: Vec<(&str, &str)> =
            self.vars.iter().map(|(k, v)| (k.as_ref(), &**v)).collect();
        vars.sort_unstable_by_key(|&(k, _)| k);
        vars
    }

    /// Remove a string variable, returning its value (`environ.pop(key, None)`).
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.find(key)?;
        Some(self.vars.swap_remove(at).1.into_string())
    }

    /// Every string variable, sorted by name.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.sorted().into_iter()
    }

    /// The names of the string variables, sorted; handy for middleware that rewrites headers.
    pub fn keys(&self) -> Vec<String> {
        self.sorted()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect()
    }

    /// `wsgi.input`: the request body.
    pub fn input(&mut self) -> &mut Input {
        &mut self.input
    }

    /// Take `wsgi.input` out of the environ (leaving an empty one), for a body that reads the
    /// request lazily after `respond` has returned.
    pub fn take_input(&mut self) -> Input {
        std::mem::replace(&mut self.input, Input::empty())
    }

    /// Replace `wsgi.input`.
    pub fn set_input(&mut self, input: Input) {
        self.input = input;
    }

    /// `wsgi.errors`: a text stream for the application's error output (the process's stderr,
    /// as in waitress).
    pub fn errors(&mut self) -> &mut Errors {
        &mut self.errors
    }

    /// `waitress.client_disconnected`: calling it tells whether the client has gone away while
    /// the request was being served. The server always sets it, as waitress does; while a
    /// request runs it can only see the client go when `channel_request_lookahead > 0` (the
    /// connection is read meanwhile) or, with `poll()` semantics, when the client resets it.
    pub fn client_disconnected(&self) -> Option<&DisconnectCheck> {
        self.client_disconnected.as_ref()
    }

    /// Install the `waitress.client_disconnected` check (the server does this).
    pub fn set_client_disconnected(&mut self, check: DisconnectCheck) {
        self.client_disconnected = Some(check);
    }

    /// `wsgi.file_wrapper`: wrap a seekable file so that the server streams it straight from
    /// the file (see [`FileWrapper`]).
    pub fn file_wrapper<R>(&self, file: R, block_size: usize) -> Body
    where
        R: Read + Seek + Send + 'static,
    {
        Body::File(FileWrapper::new(file, block_size))
    }
}

/// `wsgi.input`: the request body as a buffered reader.
///
/// The server hands over its request buffer (memory, or an anonymous temporary file for a large
/// body); it owns no socket, so reading never blocks on the network and an application may move
/// it into a lazy [`Body`] to read after `respond` has returned.
pub struct Input {
    reader: Box<dyn BufRead + Send>,
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Input { .. }")
    }
}

impl Input {
    /// Wrap any buffered reader as `wsgi.input`.
    pub fn new(reader: impl BufRead + Send + 'static) -> Self {
        Input {
            reader: Box::new(reader),
        }
    }

    /// An input with no bytes (a request without a body).
    pub fn empty() -> Self {
        Input::new(io::empty())
    }

    /// An input over bytes held in memory.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Input::new(io::Cursor::new(bytes.into()))
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.reader.consume(amt)
    }
}

/// `wsgi.errors`: writes go to the process's standard error, unbuffered, as in waitress (where
/// it is `sys.stderr`).
#[derive(Debug, Default)]
pub struct Errors {
    _private: (),
}

impl io::Write for Errors {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `waitress.client_disconnected`: a cheap check an application may call during a long
/// request to learn whether the client has closed its connection.
#[derive(Clone)]
pub struct DisconnectCheck {
    check: Check,
}

/// How a [`DisconnectCheck`] finds its answer.
#[derive(Clone)]
enum Check {
    /// A closure of the embedding program's (or a test's).
    Closure(Arc<dyn Fn() -> bool + Send + Sync>),
    /// Rust-only: a connection of this server, asked directly. The server puts a check in
    /// every request's environ, and a clone of the connection's weak pointer costs no
    /// allocation where a closure in an `Arc` cost one per request.
    Connection(Weak<dyn ClientConnection>),
}

/// A connection that can tell whether its client has gone (see [`DisconnectCheck`]).
pub(crate) trait ClientConnection: Send + Sync {
    /// `True` once the client has disconnected.
    fn client_disconnected(&self) -> bool;
}

impl fmt::Debug for DisconnectCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DisconnectCheck { .. }")
    }
}

impl DisconnectCheck {
    /// Build a check from a closure that answers "has the client disconnected?".
    pub fn new(check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        DisconnectCheck {
            check: Check::Closure(Arc::new(check)),
        }
    }

    /// The check of one of the server's connections; a connection that is gone counts as
    /// disconnected.
    pub(crate) fn for_connection(connection: Weak<dyn ClientConnection>) -> Self {
        DisconnectCheck {
            check: Check::Connection(connection),
        }
    }

    /// `True` once the client has disconnected.
    pub fn is_disconnected(&self) -> bool {
        match &self.check {
            Check::Closure(check) => check(),
            Check::Connection(connection) => connection
                .upgrade()
                .map_or(true, |connection| connection.client_disconnected()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// start_response
// ---------------------------------------------------------------------------------------------

/// Why `start_response` (or `write`) refused what the application asked for.
///
/// waitress raises `AssertionError` or `ValueError` for these; the messages are waitress's,
/// except for a bad `Content-Length`, where waitress shows Python's `int()` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartResponseError {
    /// `start_response` was called a second time without an error (`exc_info`).
    CalledTwice,
    /// The status line holds a CR or LF.
    CrLfInStatus,
    /// A header name holds a CR or LF.
    CrLfInHeaderName,
    /// A header value holds a CR or LF.
    CrLfInHeaderValue,
    /// A hop-by-hop header (`Connection`, `Transfer-Encoding`, …) was given; PEP 3333 forbids
    /// them. Holds the header name as given.
    HopByHop(String),
    /// `Content-Length` is not a whole number. Holds the value as given.
    BadContentLength(String),
    /// `write` (or a body chunk) came before `start_response`.
    NotStarted,
}

impl fmt::Display for StartResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartResponseError::CalledTwice => f.write_str(
                "start_response called a second time without providing exc_info.",
            ),
            StartResponseError::CrLfInStatus => {
                f.write_str("carriage return/line feed character present in status")
            }
            StartResponseError::CrLfInHeaderName => {
                f.write_str("carriage return/line feed character present in header name")
            }
            StartResponseError::CrLfInHeaderValue => {
                f.write_str("carriage return/line feed character present in header value")
            }
            StartResponseError::HopByHop(name) => write!(
                f,
                "{name} is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)"
            ),
            StartResponseError::BadContentLength(value) => {
                write!(f, "Content-Length '{value}' is not a whole number of bytes")
            }
            StartResponseError::NotStarted => {
                f.write_str("start_response was not called before body written")
            }
        }
    }
}

impl std::error::Error for StartResponseError {}

/// Raised (returned) when the application writes to a client that has gone away.
///
/// waitress: `waitress.channel.ClientDisconnected`. The server recognises it in an
/// application's error and logs "Client disconnected while serving …" instead of a 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientDisconnected;

impl fmt::Display for ClientDisconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("client disconnected")
    }
}

impl std::error::Error for ClientDisconnected {}

/// The headers PEP 3333 keeps for the server alone (waitress: `utilities.hop_by_hop`).
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Check a status line as waitress's `start_response` does: no CR or LF.
pub fn validate_status(status: &str) -> Result<(), StartResponseError> {
    if has_cr_or_lf(status) {
        return Err(StartResponseError::CrLfInStatus);
    }
    Ok(())
}

/// Check one response header as waitress's `start_response` does, in its order: CR/LF in the
/// value, CR/LF in the name, then `Content-Length` must be a whole number (returned) and no
/// hop-by-hop header is allowed.
pub fn validate_header(name: &str, value: &str) -> Result<Option<u64>, StartResponseError> {
    if has_cr_or_lf(value) {
        return Err(StartResponseError::CrLfInHeaderValue);
    }
    if has_cr_or_lf(name) {
        return Err(StartResponseError::CrLfInHeaderName);
    }
    if name.eq_ignore_ascii_case("content-length") {
        return parse_content_length(value)
            .map(Some)
            .ok_or_else(|| StartResponseError::BadContentLength(value.to_string()));
    }
    if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return Err(StartResponseError::HopByHop(name.to_string()));
    }
    Ok(None)
}

/// Whether `text` holds a CR or an LF. Rust-only: a byte scan, as both are ASCII; a search
/// with a pattern of two chars cost about 1 % more of a hello-world request's user-space
/// instructions (`callgrind`).
fn has_cr_or_lf(text: &str) -> bool {
    text.bytes().any(|b| b == b'\r' || b == b'\n')
}

/// Python's `int(v)` as waitress applies it to an application's `Content-Length`: surrounding
/// whitespace and a `+` sign are accepted, and so are `_` separators between digits. A negative
/// length is refused here (Python would accept it and then send a broken response).
fn parse_content_length(value: &str) -> Option<u64> {
    let trimmed = value.trim();
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut n: u64 = 0;
    for b in digits.bytes() {
        match b {
            b'0'..=b'9' => n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?,
            b'_' => {}
            _ => return None,
        }
    }
    Some(n)
}

/// What stands behind a [`StartResponse`] handle: the server's task, or a
/// [`RecordedResponse`] in a test. Implement it to drive an application without a server.
///
/// A sink only keeps what it is given: the rules of `start_response` (a second call only with
/// an error, every check made before anything is recorded) live in [`StartResponse`], once for
/// every sink.
pub trait ResponseSink {
    /// Whether a `start_response` call has been accepted (waitress: `Task.complete`).
    fn started(&self) -> bool;

    /// Whether the status line and headers have gone out (waitress: `Task.wrote_header`);
    /// from then on `start_response` with an error hands the error back.
    fn headers_sent(&self) -> bool;

    /// Keep an accepted `start_response` call: the status and headers replace whatever an
    /// earlier call recorded; `content_length` is the value of its last `Content-Length`
    /// header, when it has one.
    fn record_start(
        &mut self,
        status: &str,
        headers: Vec<(String, String)>,
        content_length: Option<u64>,
    );

    /// The legacy `write` callable returned by `start_response`: send body bytes now. Called
    /// only once `start_response` has been accepted.
    fn write(&mut self, data: &[u8]) -> Result<(), AppError>;
}

/// The `start_response` handle given to an application, which also carries the legacy `write`
/// callable (in WSGI, `start_response` returns `write`).
///
/// waitress: the `start_response` closure of `WSGITask.execute`, for the server and for
/// [`RecordedResponse`] alike.
pub struct StartResponse<'a> {
    sink: &'a mut dyn ResponseSink,
}

impl fmt::Debug for StartResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StartResponse { .. }")
    }
}

impl<'a> StartResponse<'a> {
    /// A handle over a sink: the server's task, or a [`RecordedResponse`].
    pub fn new(sink: &'a mut dyn ResponseSink) -> Self {
        StartResponse { sink }
    }

    /// `start_response(status, headers)`.
    ///
    /// Fails with [`StartResponseError`] for a CR/LF in the status or a header, a hop-by-hop
    /// header, a bad `Content-Length`, or a second call. A refused call records nothing, so
    /// the application may call again with a valid response.
    pub fn start<I, K, V>(&mut self, status: &str, headers: I) -> Result<(), StartResponseError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        if self.sink.started() {
            return Err(StartResponseError::CalledTwice);
        }
        self.accept(status, collect_headers(headers))
    }

    /// `start_response(status, headers, exc_info)`: replace the response after an error. Before
    /// the headers are sent this replaces them; afterwards the error comes back to be returned
    /// from the application, as waitress re-raises `exc_info`.
    pub fn start_with_error<I, K, V>(
        &mut self,
        status: &str,
        headers: I,
        error: AppError,
    ) -> Result<(), AppError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        if self.sink.headers_sent() {
            return Err(error);
        }
        self.accept(status, collect_headers(headers))
            .map_err(AppError::from)
    }

    /// The legacy `write(data)` callable: send body bytes before returning the body.
    pub fn write(&mut self, data: &[u8]) -> Result<(), AppError> {
        if !self.sink.started() {
            return Err(StartResponseError::NotStarted.into());
        }
        self.sink.write(data)
    }

    /// waitress's checks, in its order, all of them before anything is recorded (waitress
    /// marks the response started first, so a refused header leaves it half-started).
    fn accept(
        &mut self,
        status: &str,
        headers: Vec<(String, String)>,
    ) -> Result<(), StartResponseError> {
        validate_status(status)?;
        let mut content_length = None;
        for (name, value) in &headers {
            if let Some(length) = validate_header(name, value)? {
                content_length = Some(length);
            }
        }
        self.sink.record_start(status, headers, content_length);
        Ok(())
    }
}

/// Room the list keeps for the headers the server adds to a response (`Server` and `Date`
/// always, at times `Content-Length` or `Transfer-Encoding`, `Connection`), so that adding
/// them does not grow the list: one allocation per response fewer (valgrind's `dhat`).
const HEADERS_THE_SERVER_ADDS: usize = 4;

fn collect_headers<I, K, V>(headers: I) -> Vec<(String, String)>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let headers = headers.into_iter();
    let mut collected = Vec::with_capacity(headers.size_hint().0 + HEADERS_THE_SERVER_ADDS);
    collected.extend(headers.map(|(k, v)| (k.into(), v.into())));
    collected
}

/// A [`ResponseSink`] that records what an application did, for testing applications and
/// middleware without a server. It applies the same checks as the server.
///
/// ```
/// use waitress::{App, Body, Environ, RecordedResponse, StartResponse, AppResult};
///
/// let app = |_env: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
///     sr.start("200 OK", [("Content-Type", "text/plain")])?;
///     Ok(Body::from("hi"))
/// };
/// let mut recorded = RecordedResponse::default();
/// let body = app.respond(&mut Environ::new(), &mut StartResponse::new(&mut recorded)).unwrap();
/// assert_eq!(recorded.status.as_deref(), Some("200 OK"));
/// assert_eq!(body.into_bytes().unwrap(), b"hi");
/// ```
#[derive(Debug, Default)]
pub struct RecordedResponse {
    /// The status given to the last accepted `start_response` call.
    pub status: Option<String>,
    /// The headers given to the last accepted `start_response` call.
    pub headers: Vec<(String, String)>,
    /// Bytes passed to `write`.
    pub written: Vec<u8>,
    /// `write` has been called: a server would have sent the head.
    wrote: bool,
}

impl ResponseSink for RecordedResponse {
    fn started(&self) -> bool {
        self.status.is_some()
    }

    fn headers_sent(&self) -> bool {
        self.wrote
    }

    fn record_start(
        &mut self,
        status: &str,
        headers: Vec<(String, String)>,
        _content_length: Option<u64>,
    ) {
        self.status = Some(status.to_string());
        self.headers = headers;
    }

    fn write(&mut self, data: &[u8]) -> Result<(), AppError> {
        // The server sends the head with the first write, even an empty one.
        self.wrote = true;
        self.written.extend_from_slice(data);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The body
// ---------------------------------------------------------------------------------------------

/// A lazy body: an iterator of chunks. Its `Drop` is WSGI's `close()`: the server drops it when
/// the response is done or the connection goes away, on whichever thread holds it last.
pub type ChunkIter = Box<dyn Iterator<Item = Result<Vec<u8>, AppError>> + Send>;

/// What an application returns (PEP 3333's iterable).
pub enum Body {
    /// One buffer. Like a one-element list in waitress, its length becomes the
    /// `Content-Length` when the application did not set one.
    Bytes(Cow<'static, [u8]>),
    /// Chunks produced lazily; each is sent as it comes. An `Err` chunk ends the response (a 500
    /// if nothing was sent yet, otherwise the connection is closed).
    Chunks(ChunkIter),
    /// `wsgi.file_wrapper`: a file the server streams itself.
    File(FileWrapper),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Bytes(b) => f.debug_tuple("Bytes").field(&b.len()).finish(),
            Body::Chunks(_) => f.write_str("Chunks(..)"),
            Body::File(w) => f.debug_tuple("File").field(w).finish(),
        }
    }
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body::Bytes(Cow::Borrowed(b""))
    }

    /// A lazy body from any iterator of chunks.
    pub fn from_chunks<I>(chunks: I) -> Self
    where
        I: IntoIterator<Item = Result<Vec<u8>, AppError>>,
        I::IntoIter: Send + 'static,
    {
        Body::Chunks(Box::new(chunks.into_iter()))
    }

    /// Read the whole body into memory (for tests and small bodies): joins the chunks, or reads
    /// the file wrapper to its end.
    pub fn into_bytes(self) -> Result<Vec<u8>, AppError> {
        match self {
            Body::Bytes(b) => Ok(b.into_owned()),
            Body::Chunks(chunks) => {
                let mut out = Vec::new();
                for chunk in chunks {
                    out.extend_from_slice(&chunk?);
                }
                Ok(out)
            }
            Body::File(mut wrapper) => {
                let mut out = Vec::new();
                wrapper.reader_mut().read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body::Bytes(Cow::Owned(bytes))
    }
}

impl From<&'static [u8]> for Body {
    fn from(bytes: &'static [u8]) -> Self {
        Body::Bytes(Cow::Borrowed(bytes))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Body::Bytes(Cow::Borrowed(text.as_bytes()))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Body::Bytes(Cow::Owned(text.into_bytes()))
    }
}

/// A reader that can also seek: what a seekable [`FileWrapper`] holds.
pub trait ReadSeek: Read + Seek {}

impl<T: Read + Seek> ReadSeek for T {}

/// Where a [`FileWrapper`]'s bytes come from.
pub enum FileSource {
    /// A seekable file: the server serves it from the current position to the end (or to the
    /// `Content-Length` the application gave), straight from the file, on the I/O thread.
    Seekable(Box<dyn ReadSeek + Send>),
    /// A plain reader: the server iterates over it in `block_size` reads, like a lazy body.
    Stream(Box<dyn Read + Send>),
}

/// `wsgi.file_wrapper`: a file (plus a block size) handed to the server to stream.
///
/// waitress: `ReadOnlyFileBasedBuffer` as the `wsgi.file_wrapper` class.
pub struct FileWrapper {
    source: FileSource,
    block_size: usize,
}

impl fmt::Debug for FileWrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.source {
            FileSource::Seekable(_) => "seekable",
            FileSource::Stream(_) => "stream",
        };
        f.debug_struct("FileWrapper")
            .field("source", &kind)
            .field("block_size", &self.block_size)
            .finish()
    }
}

impl FileWrapper {
    /// The block size waitress's `ReadOnlyFileBasedBuffer` uses when none is given.
    pub const DEFAULT_BLOCK_SIZE: usize = 32768;

    /// Wrap a seekable file (`std::fs::File`, `io::Cursor`, …).
    pub fn new<R: Read + Seek + Send + 'static>(file: R, block_size: usize) -> Self {
        FileWrapper {
            source: FileSource::Seekable(Box::new(file)),
            block_size: block_size.max(1),
        }
    }

    /// Wrap a reader that cannot seek; the server falls back to iterating over it.
    pub fn from_reader<R: Read + Send + 'static>(reader: R, block_size: usize) -> Self {
        FileWrapper {
            source: FileSource::Stream(Box::new(reader)),
            block_size: block_size.max(1),
        }
    }

    /// The size of each read.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Whether the wrapped file can seek (and so be served by offset and length).
    pub fn is_seekable(&self) -> bool {
        matches!(self.source, FileSource::Seekable(_))
    }

    /// Take the wrapper apart: the server does this to serve it.
    pub fn into_parts(self) -> (FileSource, usize) {
        (self.source, self.block_size)
    }

    fn reader_mut(&mut self) -> &mut dyn Read {
        match &mut self.source {
            FileSource::Seekable(r) => r,
            FileSource::Stream(r) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_check_asks_the_connection_and_counts_a_gone_one_as_disconnected() {
        use std::sync::atomic::{AtomicBool, Ordering};
        struct Connection(AtomicBool);
        impl ClientConnection for Connection {
            fn client_disconnected(&self) -> bool {
                self.0.load(Ordering::SeqCst)
            }
        }
        let connection = Arc::new(Connection(AtomicBool::new(false)));
        let weak: Weak<Connection> = Arc::downgrade(&connection);
        let check = DisconnectCheck::for_connection(weak);
        assert!(!check.clone().is_disconnected());
        connection.0.store(true, Ordering::SeqCst);
        assert!(check.is_disconnected());
        let gone = Arc::new(Connection(AtomicBool::new(false)));
        let weak: Weak<Connection> = Arc::downgrade(&gone);
        let check = DisconnectCheck::for_connection(weak);
        drop(gone);
        assert!(check.is_disconnected());
    }

    #[test]
    fn latin1_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let s = latin1_to_string(&all);
        assert_eq!(s.chars().count(), 256);
        assert_eq!(string_to_latin1(&s).unwrap(), all);
    }

    #[test]
    fn latin1_refuses_chars_above_ff() {
        assert_eq!(string_to_latin1("caf\u{e9}"), Some(b"caf\xe9".to_vec()));
        assert_eq!(string_to_latin1("\u{20ac}"), None);
    }

    #[test]
    fn environ_get_set_remove() {
        let mut env = Environ::new();
        env.set("REQUEST_METHOD", "GET");
        env.set(String::from("HTTP_X_DYNAMIC"), "1");
        assert_eq!(env.get("REQUEST_METHOD"), Some("GET"));
        assert!(env.contains("HTTP_X_DYNAMIC"));
        assert_eq!(env.remove("HTTP_X_DYNAMIC").as_deref(), Some("1"));
        assert!(!env.contains("HTTP_X_DYNAMIC"));
        assert_eq!(
            env.vars().collect::<Vec<_>>(),
            vec![("REQUEST_METHOD", "GET")]
        );
    }

    #[test]
    fn environ_values_may_be_fixed_shared_or_owned_and_read_the_same() {
        let shared: Arc<str> = "example.com".into();
        let mut env = Environ::new();
        env.push_new("SERVER_NAME", &shared);
        env.push_new("wsgi.version", "1.0");
        env.push_new("PATH_INFO", String::from("/a"));
        env.push_new(Cow::Borrowed("HTTP_HOST"), String::from("h"));
        assert_eq!(
            env.vars().collect::<Vec<_>>(),
            vec![
                ("HTTP_HOST", "h"),
                ("PATH_INFO", "/a"),
                ("SERVER_NAME", "example.com"),
                ("wsgi.version", "1.0"),
            ]
        );
        // A shared value is the server's text, not a copy; taking it out gives a string.
        assert_eq!(Arc::strong_count(&shared), 2);
        assert_eq!(env.remove("SERVER_NAME").as_deref(), Some("example.com"));
        assert_eq!(Arc::strong_count(&shared), 1);
        env.set("wsgi.version", "1.1");
        assert_eq!(env.get("wsgi.version"), Some("1.1"));
    }

    #[test]
    fn fixed_or_gives_fixed_text_for_a_listed_value_and_a_copy_otherwise() {
        let methods = ["GET", "POST"];
        assert!(matches!(
            fixed_or("GET", &methods, str::to_owned),
            Cow::Borrowed("GET")
        ));
        assert!(matches!(
            fixed_or(&b"POST"[..], &methods, latin1_to_string),
            Cow::Borrowed("POST")
        ));
        // Anything else goes through `copy`: here latin-1 bytes, upper-cased text.
        let copied = fixed_or(&b"G\xc9T"[..], &methods, latin1_to_string);
        assert!(matches!(&copied, Cow::Owned(text) if text == "G\u{c9}T"));
        assert_eq!(fixed_or("get", &methods, str::to_ascii_uppercase), "GET");
        assert!(matches!(
            fixed_or("get", &methods, str::to_ascii_uppercase),
            Cow::Owned(_)
        ));
    }

    #[test]
    fn text_to_mut_copies_fixed_or_shared_text_and_changes_owned_text_in_place() {
        let shared: Arc<str> = "date".into();
        let mut texts = [
            Text::from("Server"),
            Text::from(&shared),
            Text::from(String::from("x-a")),
        ];
        for text in &mut texts {
            text.to_mut().make_ascii_uppercase();
            assert!(matches!(text, Text::Owned(_)));
        }
        let read: Vec<&str> = texts.iter().map(|text| &**text).collect();
        assert_eq!(read, ["SERVER", "DATE", "X-A"]);
        // The shared text itself is left as it was.
        assert_eq!(&*shared, "date");
        assert_eq!(Arc::strong_count(&shared), 1);
        // Kinds do not matter to comparisons.
        assert!(Text::from(&shared) == Text::from(String::from("date")));
        assert!(Text::from("Date") < Text::from(String::from("Server")));
    }

    #[test]
    fn environ_input_can_be_taken_for_a_lazy_body() {
        let mut env = Environ::new();
        env.set_input(Input::from_bytes(b"abc".to_vec()));
        let mut input = env.take_input();
        let mut s = String::new();
        input.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
        assert_eq!(env.input().fill_buf().unwrap(), b"");
    }

    #[test]
    fn validate_status_rejects_crlf() {
        assert_eq!(validate_status("200 OK"), Ok(()));
        assert_eq!(
            validate_status("200 OK\r\nSet-Cookie: a"),
            Err(StartResponseError::CrLfInStatus)
        );
        assert_eq!(
            validate_status("200 OK\n"),
            Err(StartResponseError::CrLfInStatus)
        );
    }

    #[test]
    fn validate_header_checks_in_waitress_order() {
        assert_eq!(validate_header("X-A", "b"), Ok(None));
        assert_eq!(
            validate_header("X\r\nA", "b\n"),
            Err(StartResponseError::CrLfInHeaderValue)
        );
        assert_eq!(
            validate_header("X\nA", "b"),
            Err(StartResponseError::CrLfInHeaderName)
        );
        assert_eq!(validate_header("Content-Length", " 12 "), Ok(Some(12)));
        assert_eq!(
            validate_header("content-length", "abc"),
            Err(StartResponseError::BadContentLength("abc".into()))
        );
        assert_eq!(
            StartResponseError::BadContentLength("abc".into()).to_string(),
            "Content-Length 'abc' is not a whole number of bytes"
        );
        assert_eq!(
            validate_header("Transfer-Encoding", "chunked"),
            Err(StartResponseError::HopByHop("Transfer-Encoding".into()))
        );
        assert_eq!(
            validate_header("Connection", "close"),
            Err(StartResponseError::HopByHop("Connection".into()))
        );
    }

    #[test]
    fn content_length_follows_python_int() {
        assert_eq!(parse_content_length("+5"), Some(5));
        assert_eq!(parse_content_length("1_000"), Some(1000));
        assert_eq!(parse_content_length("-1"), None);
        assert_eq!(parse_content_length("_1"), None);
        assert_eq!(parse_content_length("1__0"), None);
        assert_eq!(parse_content_length(""), None);
        assert_eq!(parse_content_length("99999999999999999999999"), None);
    }

    #[test]
    fn recorded_response_refuses_second_start_without_error() {
        let mut rec = RecordedResponse::default();
        let mut sr = StartResponse::new(&mut rec);
        sr.start("200 OK", [("A", "b")]).unwrap();
        assert_eq!(
            sr.start("500 Oops", Vec::<(String, String)>::new()),
            Err(StartResponseError::CalledTwice)
        );
        sr.start_with_error("500 Oops", [("C", "d")], "boom".into())
            .unwrap();
        assert_eq!(rec.status.as_deref(), Some("500 Oops"));
        assert_eq!(rec.headers, vec![("C".to_string(), "d".to_string())]);
    }

    #[test]
    fn recorded_response_reraises_after_body_written() {
        let mut rec = RecordedResponse::default();
        let mut sr = StartResponse::new(&mut rec);
        assert!(sr.write(b"x").is_err());
        sr.start("200 OK", [("A", "b")]).unwrap();
        sr.write(b"x").unwrap();
        let err = sr
            .start_with_error("500 Oops", [("C", "d")], "boom".into())
            .unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }

    #[test]
    fn recorded_response_refused_start_records_nothing() {
        let mut rec = RecordedResponse::default();
        let mut sr = StartResponse::new(&mut rec);
        assert_eq!(
            sr.start("200 OK", [("A", "b"), ("Connection", "close")]),
            Err(StartResponseError::HopByHop("Connection".into()))
        );
        assert!(sr.write(b"x").is_err(), "a refused start starts nothing");
        sr.start("200 OK", [("A", "b")]).unwrap();
        let err = sr
            .start_with_error("500 Oops", [("C\r", "d")], "boom".into())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "carriage return/line feed character present in header name"
        );
        assert_eq!(rec.status.as_deref(), Some("200 OK"));
        assert_eq!(rec.headers, vec![("A".to_string(), "b".to_string())]);
    }

    #[test]
    fn recorded_response_empty_write_sends_the_head() {
        let mut rec = RecordedResponse::default();
        let mut sr = StartResponse::new(&mut rec);
        sr.start("200 OK", [("A", "b")]).unwrap();
        sr.write(b"").unwrap();
        let err = sr
            .start_with_error("500 Oops", [("C", "d")], "boom".into())
            .unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }

    #[test]
    fn body_into_bytes_joins_chunks_and_reads_files() {
        let chunks = Body::from_chunks(vec![Ok(b"ab".to_vec()), Ok(b"c".to_vec())]);
        assert_eq!(chunks.into_bytes().unwrap(), b"abc");
        let file = Body::File(FileWrapper::new(io::Cursor::new(b"xyz".to_vec()), 2));
        assert_eq!(file.into_bytes().unwrap(), b"xyz");
        let err = Body::from_chunks(vec![Ok(b"ab".to_vec()), Err("bad".into())]);
        assert!(err.into_bytes().is_err());
    }

    #[test]
    fn body_drop_is_close() {
        use std::sync::atomic::{AtomicBool, Ordering};
        struct Closing(Arc<AtomicBool>);
        impl Iterator for Closing {
            type Item = Result<Vec<u8>, AppError>;
            fn next(&mut self) -> Option<Self::Item> {
                None
            }
        }
        impl Drop for Closing {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let closed = Arc::new(AtomicBool::new(false));
        let body = Body::from_chunks(Closing(closed.clone()));
        assert!(!closed.load(Ordering::SeqCst));
        drop(body);
        assert!(closed.load(Ordering::SeqCst));
    }
}
