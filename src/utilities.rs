//! Port of waitress/utilities.py.
//!
//! Small helpers shared by the whole server: the logger, the HTTP error responses that the
//! parser and the tasks send (`400`, `413`, `431`, `500`, `501`), and (below, ported by the
//! utilities work) the date, quoting and Unix-socket helpers. Everything here is safe to call
//! from any thread.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

// ---------------------------------------------------------------------------------------------
// Logging (waitress: `logger = logging.getLogger("waitress")`, `queue_logger`)
// ---------------------------------------------------------------------------------------------

/// A log level, with Python's numbers so that the thresholds compare the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `logging.DEBUG`
    Debug = 10,
    /// `logging.INFO`
    Info = 20,
    /// `logging.WARNING`
    Warning = 30,
    /// `logging.ERROR`
    Error = 40,
    /// `logging.CRITICAL`
    Critical = 50,
}

impl Level {
    /// The name Python's logging prints for the level (`WARNING`, …).
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    fn from_u8(n: u8) -> Level {
        match n {
            0..=10 => Level::Debug,
            11..=20 => Level::Info,
            21..=30 => Level::Warning,
            31..=40 => Level::Error,
            _ => Level::Critical,
        }
    }
}

/// Where log records go. The default writes `LEVEL:name:message` lines to standard error, the
/// shape of Python's `logging.basicConfig()`; an embedding program installs its own with
/// [`set_log_sink`].
pub trait LogSink: Send + Sync {
    /// Record one message from the logger called `logger` (`waitress` or `waitress.queue`).
    fn log(&self, level: Level, logger: &str, message: &str);
}

/// The default sink: one `LEVEL:name:message` line per record on standard error.
#[derive(Debug, Default)]
pub struct StderrSink;

impl LogSink for StderrSink {
    fn log(&self, level: Level, logger: &str, message: &str) {
        // One write call per record, so that lines from several threads do not interleave.
        let line = format!("{}:{}:{}\n", level.name(), logger, message);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

static LOG_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static LOG_SINK: RwLock<Option<Arc<dyn LogSink>>> = RwLock::new(None);

/// Replace the sink that receives every record (the default is [`StderrSink`]).
pub fn set_log_sink(sink: Arc<dyn LogSink>) {
    // A poisoned lock only means another thread panicked while swapping sinks; the slot itself
    // is still a valid Option, so carry on with it.
    *LOG_SINK.write().unwrap_or_else(|e| e.into_inner()) = Some(sink);
}

/// Records below `level` are dropped. The default is `Info`, as waitress's runner sets it.
pub fn set_log_level(level: Level) {
    LOG_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The current threshold.
pub fn log_level() -> Level {
    Level::from_u8(LOG_LEVEL.load(Ordering::Relaxed))
}

/// A named logger, like Python's `logging.getLogger(name)`.
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    name: &'static str,
}

/// waitress: `logging.getLogger("waitress")`.
pub static LOGGER: Logger = Logger { name: "waitress" };

/// waitress: `logging.getLogger("waitress.queue")`, for the task-queue depth warnings.
pub static QUEUE_LOGGER: Logger = Logger {
    name: "waitress.queue",
};

impl Logger {
    /// The logger's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether a record at `level` would be written (skip building costly messages otherwise).
    pub fn enabled(&self, level: Level) -> bool {
        level >= log_level()
    }

    /// Log `message` at `level`.
    pub fn log(&self, level: Level, message: &str) {
        if !self.enabled(level) {
            return;
        }
        let sink = LOG_SINK.read().unwrap_or_else(|e| e.into_inner()).clone();
        match sink {
            Some(sink) => sink.log(level, self.name, message),
            None => StderrSink.log(level, self.name, message),
        }
    }

    /// `logger.debug(message)`
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message)
    }

    /// `logger.info(message)`
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message)
    }

    /// `logger.warning(message)`
    pub fn warning(&self, message: &str) {
        self.log(Level::Warning, message)
    }

    /// `logger.error(message)`
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message)
    }

    /// `logger.exception(message)`: an error-level record followed by the error and its source
    /// chain, standing in for Python's traceback.
    pub fn exception(&self, message: &str, error: &(dyn std::error::Error + 'static)) {
        if self.enabled(Level::Error) {
            self.log(Level::Error, &format!("{message}\n{}", error_chain(error)));
        }
    }
}

/// An error and its `source()` chain, one per line: the closest thing Rust has to a traceback.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str("\nCaused by: ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The HTTP error responses (waitress: `Error` and its subclasses)
// ---------------------------------------------------------------------------------------------

/// Which of waitress's error classes an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `BadRequest`: 400.
    BadRequest,
    /// `RequestHeaderFieldsTooLarge`: 431.
    RequestHeaderFieldsTooLarge,
    /// `RequestEntityTooLarge`: 413.
    RequestEntityTooLarge,
    /// `InternalServerError`: 500.
    InternalServerError,
    /// `ServerNotImplemented`: 501.
    ServerNotImplemented,
}

impl ErrorKind {
    /// The status code.
    pub fn code(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::RequestHeaderFieldsTooLarge => 431,
            ErrorKind::RequestEntityTooLarge => 413,
            ErrorKind::InternalServerError => 500,
            ErrorKind::ServerNotImplemented => 501,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "Bad Request",
            ErrorKind::RequestHeaderFieldsTooLarge => "Request Header Fields Too Large",
            ErrorKind::RequestEntityTooLarge => "Request Entity Too Large",
            ErrorKind::InternalServerError => "Internal Server Error",
            ErrorKind::ServerNotImplemented => "Not Implemented",
        }
    }
}

/// An HTTP error the server answers itself, with a body that explains it.
///
/// waitress: `utilities.Error` and its subclasses; `to_response` builds the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Which error.
    pub kind: ErrorKind,
    /// The explanation placed in the body.
    pub body: String,
}

impl Error {
    /// An error of `kind` explained by `body`.
    pub fn new(kind: ErrorKind, body: impl Into<String>) -> Self {
        Error {
            kind,
            body: body.into(),
        }
    }

    /// `BadRequest(body)`: 400.
    pub fn bad_request(body: impl Into<String>) -> Self {
        Error::new(ErrorKind::BadRequest, body)
    }

    /// `RequestHeaderFieldsTooLarge(body)`: 431.
    pub fn request_header_fields_too_large(body: impl Into<String>) -> Self {
        Error::new(ErrorKind::RequestHeaderFieldsTooLarge, body)
    }

    /// `RequestEntityTooLarge(body)`: 413.
    pub fn request_entity_too_large(body: impl Into<String>) -> Self {
        Error::new(ErrorKind::RequestEntityTooLarge, body)
    }

    /// `InternalServerError(body)`: 500.
    pub fn internal_server_error(body: impl Into<String>) -> Self {
        Error::new(ErrorKind::InternalServerError, body)
    }

    /// `ServerNotImplemented(body)`: 501.
    pub fn server_not_implemented(body: impl Into<String>) -> Self {
        Error::new(ErrorKind::ServerNotImplemented, body)
    }

    /// The status code.
    pub fn code(&self) -> u16 {
        self.kind.code()
    }

    /// The reason phrase.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The status line, headers and body waitress sends for this error: the reason, a blank
    /// line, the explanation, a blank line and `(generated by IDENT)` (`server` when no ident),
    /// as `text/plain; charset=utf-8`.
    pub fn to_response(&self, ident: Option<&str>) -> (String, Vec<(String, String)>, Vec<u8>) {
        let status = format!("{} {}", self.code(), self.reason());
        let ident = match ident {
            Some(i) if !i.is_empty() => i,
            _ => "server",
        };
        let body = format!(
            "{}\r\n\r\n{}\r\n\r\n(generated by {})",
            self.reason(),
            self.body,
            ident
        );
        let headers = vec![(
            "Content-Type".to_string(),
            "text/plain; charset=utf-8".to_string(),
        )];
        (status, headers, body.into_bytes())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code(), self.reason(), self.body)
    }
}

impl std::error::Error for Error {}
