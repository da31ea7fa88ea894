//! Port of waitress/utilities.py.
//!
//! Small helpers shared by the whole server: the logger, the HTTP error responses that the
//! parser and the tasks send (`400`, `413`, `431`, `500`, `501`), the `Date` header, the unquoting
//! of proxy header values and the removal of stale Unix socket files. Everything here is safe to call
//! from any thread.

use std::fmt;
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

    /// The level called `name` in any case: `debug`, `info`, `warning` (or `warn`), `error`,
    /// `critical`.
    pub fn from_name(name: &str) -> Option<Level> {
        match name.trim().to_ascii_lowercase().as_str() {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }
}

/// Where log records go. The default writes `LEVEL:name:message` lines to standard error, the
/// shape of Python's `logging.basicConfig()`; an embedding program installs its own with
/// [`set_log_sink`].
pub trait LogSink: Send + Sync {
    /// Record one message from the logger called `logger` (one of [`LOGGER_NAMES`]).
    fn log(&self, level: Level, logger: &str, message: &str);

    /// Record each line of `lines` as a message of its own (the access log hands over what
    /// piled up since its last write). By default, one [`LogSink::log`] per line.
    fn log_lines(&self, level: Level, logger: &str, lines: &str) {
        for line in lines.split_terminator('\n') {
            self.log(level, logger, line);
        }
    }
}

/// The default sink: one `LEVEL:name:message` line per record on standard error.
///
/// It writes with `eprint!`, not through `std::io::stderr()`, because the macro is what the
/// test harness captures: a server started by a test (and every thread it spawns) logs into
/// that test's captured output, shown only when the test fails.
#[derive(Debug, Default)]
pub struct StderrSink;

impl LogSink for StderrSink {
    fn log(&self, level: Level, logger: &str, message: &str) {
        // One formatted write per record: `eprint!` holds standard error's lock for the whole
        // line, so lines from several threads do not interleave. The macro panics when the
        // write fails (a closed pipe); a log record is not worth a worker thread, so the panic
        // is caught and the record dropped.
        let mut line = String::new();
        push_record(&mut line, level, logger, message);
        let _ = std::panic::catch_unwind(|| eprint!("{line}"));
    }

    /// The same lines, in one write: a busy access log would otherwise cost a system call per
    /// response (it cost 8–10 % of hello-world throughput under `compare.sh`).
    fn log_lines(&self, level: Level, logger: &str, lines: &str) {
        let mut text = String::with_capacity(lines.len() + lines.len() / 4);
        for line in lines.split_terminator('\n') {
            push_record(&mut text, level, logger, line);
        }
        let _ = std::panic::catch_unwind(|| eprint!("{text}"));
    }
}

/// Append one `LEVEL:name:message` line, the shape of Python's `logging.basicConfig()`.
fn push_record(out: &mut String, level: Level, logger: &str, message: &str) {
    out.push_str(level.name());
    out.push(':');
    out.push_str(logger);
    out.push(':');
    out.push_str(message);
    out.push('\n');
}

static LOG_SINK: RwLock<Option<Arc<dyn LogSink>>> = RwLock::new(None);

/// Replace the sink that receives every record (the default is [`StderrSink`]).
pub fn set_log_sink(sink: Arc<dyn LogSink>) {
    // A poisoned lock only means another thread panicked while swapping sinks; the slot itself
    // is still a valid Option, so carry on with it.
    *LOG_SINK.write().unwrap_or_else(|e| e.into_inner()) = Some(sink);
}

/// The loggers of the server, by name (a [`Logger`] knows its place in this table).
pub const LOGGER_NAMES: [&str; 3] = ["waitress", "waitress.access", "waitress.queue"];

/// Each logger's lowest level written, kept apart from [`LOG_LEVELS`] so that the check made
/// before every record is one atomic load. Relaxed is enough: a new setting that a thread
/// sees a little late only lets a record or two through under the old threshold.
static THRESHOLDS: [AtomicU8; 3] = [
    AtomicU8::new(Level::Info as u8),
    AtomicU8::new(Level::Info as u8),
    AtomicU8::new(Level::Info as u8),
];

/// The levels as last set, from which [`THRESHOLDS`] is computed. Writers hold it while they
/// update the thresholds, so two settings made at once cannot mix.
static LOG_LEVELS: RwLock<LogLevels> = RwLock::new(LogLevels {
    default: Level::Info,
    loggers: Vec::new(),
});

/// Which records are written: a default level and levels for single loggers, as the
/// `log_level` setting and `--log-level` give them (`info,waitress.queue=error`). The level of
/// a logger is its own, else its nearest parent's (`waitress` for `waitress.queue`), else the
/// default: the way Python's logging finds a logger's effective level.
///
/// ```
/// use waitress::utilities::{Level, LogLevels};
///
/// let levels: LogLevels = "warning,waitress.queue=error".parse().unwrap();
/// assert_eq!(levels.level_for("waitress"), Level::Warning);
/// assert_eq!(levels.level_for("waitress.queue"), Level::Error);
/// assert!("loud".parse::<LogLevels>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevels {
    /// The level of every logger not named in `loggers` (default `Info`, as waitress's runner
    /// sets it).
    pub default: Level,
    /// Levels of single loggers, by name.
    pub loggers: Vec<(String, Level)>,
}

impl Default for LogLevels {
    fn default() -> Self {
        LogLevels {
            default: Level::Info,
            loggers: Vec::new(),
        }
    }
}

impl LogLevels {
    /// Read `LEVEL`, `LOGGER=LEVEL` or both, separated by commas (`info,waitress.queue=error`).
    /// The error says what is wrong, quoting the part that is.
    pub fn parse(spec: &str) -> Result<LogLevels, String> {
        let level = |name: &str| {
            Level::from_name(name).ok_or_else(|| {
                format!("'{name}' is not a log level (debug, info, warning, error, critical)")
            })
        };
        let mut levels = LogLevels::default();
        let mut any = false;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            any = true;
            match part.split_once('=') {
                None => levels.default = level(part)?,
                Some((logger, value)) => {
                    let logger = logger.trim();
                    if !LOGGER_NAMES.contains(&logger) {
                        return Err(format!(
                            "unknown logger '{logger}' (the loggers are {})",
                            LOGGER_NAMES.join(", ")
                        ));
                    }
                    let value = level(value.trim())?;
                    levels.loggers.retain(|(name, _)| name != logger);
                    levels.loggers.push((logger.to_string(), value));
                }
            }
        }
        if !any {
            return Err("no level given (such as info or info,waitress.queue=error)".to_string());
        }
        Ok(levels)
    }

    /// The level in force for the logger called `name`.
    pub fn level_for(&self, name: &str) -> Level {
        let mut name = name;
        loop {
            if let Some((_, level)) = self.loggers.iter().find(|(n, _)| n == name) {
                return *level;
            }
            match name.rsplit_once('.') {
                Some((parent, _)) => name = parent,
                None => return self.default,
            }
        }
    }
}

impl std::str::FromStr for LogLevels {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        LogLevels::parse(spec)
    }
}

impl fmt::Display for LogLevels {
    /// The spec form, `info,waitress.queue=error`, in lower case.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.default.name().to_ascii_lowercase())?;
        for (logger, level) in &self.loggers {
            write!(f, ",{logger}={}", level.name().to_ascii_lowercase())?;
        }
        Ok(())
    }
}

/// Set which records are written, for every logger at once (the `log_level` setting; an
/// embedding program's logging setup). Records below a logger's level are dropped before the
/// message is built.
pub fn set_log_levels(levels: &LogLevels) {
    // A poisoned lock only means a thread panicked while setting levels; the value is whole.
    let mut current = LOG_LEVELS.write().unwrap_or_else(|e| e.into_inner());
    for (threshold, name) in THRESHOLDS.iter().zip(LOGGER_NAMES) {
        threshold.store(levels.level_for(name) as u8, Ordering::Relaxed);
    }
    *current = levels.clone();
}

/// The levels in force.
pub fn log_levels() -> LogLevels {
    LOG_LEVELS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Set the default level, keeping the levels of single loggers. The default is `Info`, as
/// waitress's runner sets it.
pub fn set_log_level(level: Level) {
    let mut levels = log_levels();
    levels.default = level;
    set_log_levels(&levels);
}

/// The default level.
pub fn log_level() -> Level {
    log_levels().default
}

/// A named logger, like Python's `logging.getLogger(name)`.
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    name: &'static str,
    /// Where the name sits in [`LOGGER_NAMES`].
    index: usize,
}

/// waitress: `logging.getLogger("waitress")`: everything but the two below.
pub static LOGGER: Logger = Logger {
    name: LOGGER_NAMES[0],
    index: 0,
};

/// The access log, one line per response when the `access_log` setting is on (not in
/// waitress, which leaves access logs to middleware such as PasteDeploy's `TransLogger`).
pub static ACCESS_LOGGER: Logger = Logger {
    name: LOGGER_NAMES[1],
    index: 1,
};

/// waitress: `logging.getLogger("waitress.queue")`, for the task-queue depth warnings.
pub static QUEUE_LOGGER: Logger = Logger {
    name: LOGGER_NAMES[2],
    index: 2,
};

impl Logger {
    /// The logger's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether a record at `level` would be written (skip building costly messages otherwise).
    pub fn enabled(&self, level: Level) -> bool {
        level as u8 >= THRESHOLDS[self.index].load(Ordering::Relaxed)
    }

    /// Log `message` at `level`.
    pub fn log(&self, level: Level, message: &str) {
        if !self.enabled(level) {
            return;
        }
        #[cfg(test)]
        if capture(level, self.name, message) {
            return;
        }
        if hold(level, self.name, message) {
            return;
        }
        with_sink(|sink| sink.log(level, self.name, message));
    }

    /// Log each line of `lines` at `level`, as one message each, handing the sink the whole
    /// batch (see [`LogSink::log_lines`]).
    pub fn log_lines(&self, level: Level, lines: &str) {
        if !self.enabled(level) {
            return;
        }
        // In unit tests, lines a test is capturing go to it, the rest to the sink.
        #[cfg(test)]
        let uncaptured: String = lines
            .split_terminator('\n')
            .filter(|line| !capture(level, self.name, line))
            .map(|line| format!("{line}\n"))
            .collect();
        #[cfg(test)]
        let lines = uncaptured.as_str();
        if lines.is_empty() {
            return;
        }
        release_held();
        with_sink(|sink| sink.log_lines(level, self.name, lines));
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

/// Call `f` with the sink in use.
fn with_sink(f: impl FnOnce(&dyn LogSink)) {
    let sink = LOG_SINK.read().unwrap_or_else(|e| e.into_inner()).clone();
    match sink {
        Some(sink) => f(sink.as_ref()),
        None => f(&StderrSink),
    }
}

/// Rust-only: records a thread holds back while it runs [`hold_records`], to hand them to the
/// sink in batches. Consecutive records of one logger at one level make one batch, so that the
/// order of the lines is the order of the calls.
#[derive(Debug, Default)]
struct HeldRecords {
    /// The logger and level of the batch in `lines`.
    batch: Option<(Level, &'static str)>,
    /// The messages of the batch, each ended by a newline.
    lines: String,
}

impl HeldRecords {
    /// Add a record to the batch; false when the record cannot be held: a message of several
    /// lines must stay one record, and [`LogSink::log_lines`] would split it.
    fn hold(
        &mut self,
        level: Level,
        logger: &'static str,
        message: &str,
        sink: &dyn LogSink,
    ) -> bool {
        if message.contains('\n') {
            self.release(sink);
            return false;
        }
        if self.batch != Some((level, logger)) {
            self.release(sink);
            self.batch = Some((level, logger));
        }
        self.lines.push_str(message);
        self.lines.push('\n');
        true
    }

    /// Hand the batch to `sink`, and start afresh (the buffer is kept for the next batch).
    fn release(&mut self, sink: &dyn LogSink) {
        if let Some((level, logger)) = self.batch.take() {
            sink.log_lines(level, logger, &self.lines);
            self.lines.clear();
        }
    }
}

thread_local! {
    /// This thread's held records; held only while it runs [`hold_records`].
    static HELD: std::cell::RefCell<(bool, HeldRecords)> =
        std::cell::RefCell::new((false, HeldRecords::default()));
}

/// Hold the record on this thread when it runs [`hold_records`]; false otherwise (and when a
/// sink logs while it is handed a batch: that record goes straight through).
fn hold(level: Level, logger: &'static str, message: &str) -> bool {
    HELD.with(|held| match held.try_borrow_mut() {
        Ok(mut held) if held.0 => {
            let mut holding = false;
            with_sink(|sink| holding = held.1.hold(level, logger, message, sink));
            holding
        }
        _ => false,
    })
}

/// Write what this thread holds now (before a record that bypasses the hold).
fn release_held() {
    HELD.with(|held| {
        if let Ok(mut held) = held.try_borrow_mut() {
            with_sink(|sink| held.1.release(sink));
        }
    });
}

/// Rust-only: run `f`, holding the records this thread logs meanwhile and writing them when it
/// returns (or unwinds), a batch per run of one logger and level. The I/O thread runs each poll
/// round so: under load it logs a "Task queue depth" warning for nearly every request it
/// queues, as waitress does, and a write to standard error for each cost 13 % of hello-world
/// throughput under `wrk -c100` (0.93 `write` calls per request; one per round after this).
/// The lines and their order are unchanged; they come out at the end of the round.
pub fn hold_records<T>(f: impl FnOnce() -> T) -> T {
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            release_held();
            HELD.with(|held| held.borrow_mut().0 = false);
        }
    }
    let outer = HELD.with(|held| std::mem::replace(&mut held.borrow_mut().0, true));
    if outer {
        return f();
    }
    let _release = Release;
    f()
}

#[cfg(test)]
thread_local! {
    /// The records of this thread while a unit test captures them with [`capture_logs`].
    static CAPTURED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Keep the record for [`capture_logs`] when this thread captures; false otherwise.
#[cfg(test)]
fn capture(level: Level, logger: &str, message: &str) -> bool {
    CAPTURED.with(|captured| match captured.borrow_mut().as_mut() {
        Some(records) => {
            records.push(format!("{}:{logger}:{message}", level.name()));
            true
        }
        None => false,
    })
}

/// Run `f` and return what it logged on this thread, as `LEVEL:logger:message` lines, instead
/// of sending it to the sink: unit tests check log records without touching the process-wide
/// sink that tests running beside them share.
#[cfg(test)]
pub(crate) fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(Vec::new()));
    let value = f();
    let records = CAPTURED.with(|captured| captured.borrow_mut().take());
    (value, records.unwrap_or_default())
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
// Request-head search, HTTP dates, quoting, Unix sockets
// ---------------------------------------------------------------------------------------------

/// The offset just past the first `\r\n\r\n` in `s`, or `None` when the head is not complete
/// yet (waitress returns -1).
///
/// Rust-only: found by `find_ending_in_lf` rather than by comparing every four-byte
/// window: the head of each request is searched here.
pub fn find_double_newline(s: &[u8]) -> Option<usize> {
    find_ending_in_lf(s, b"\r\n\r\n").map(|at| at + 4)
}

/// The offset of the first `\r\n` in `s` (the searches of the start line and of each header
/// line; Rust-only, found as [`find_double_newline`] finds its blank line).
pub fn find_crlf(s: &[u8]) -> Option<usize> {
    find_ending_in_lf(s, b"\r\n")
}

/// The offset of the first `pattern` (which ends in LF) in `s`: each LF is found with
/// [`find_byte`] and the bytes before it compared with the rest of the pattern. (Its length
/// is a constant so that the comparison compiles to a fixed-size one: with a slice pattern a
/// hello request took 16,950 user-space instructions under callgrind rather than 16,605.)
fn find_ending_in_lf<const N: usize>(s: &[u8], pattern: &[u8; N]) -> Option<usize> {
    let before = N - 1;
    let mut from = before;
    while let Some(i) = s.get(from..).and_then(|rest| find_byte(b'\n', rest)) {
        let lf = from + i;
        if s[lf - before..=lf] == pattern[..] {
            return Some(lf - before);
        }
        from = lf + 1;
    }
    None
}

/// The offset of the first `needle` in `haystack`: std has no public `memchr`, and request
/// heads are searched for line ends several times over. Rust-only.
///
/// Eight bytes are looked at at a time: with `x` a word XOR the needle repeated, `(x - 0x01…)
/// & !x & 0x80…` is non-zero exactly when some byte of `x` is zero, that is when the needle is
/// among the eight. That word is then searched byte by byte. With it, and the searches built
/// on it, a nine-header browser request took 46,600 user-space instructions under callgrind
/// rather than 52,400 (the four-byte windows and byte-by-byte scans before).
pub fn find_byte(needle: u8, haystack: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let repeated = ONES * u64::from(needle);
    let mut checked = 0;
    for word in haystack.chunks_exact(8) {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes) ^ repeated;
        if x.wrapping_sub(ONES) & !x & HIGHS != 0 {
            break;
        }
        checked += 8;
    }
    haystack[checked..]
        .iter()
        .position(|&b| b == needle)
        .map(|i| checked + i)
}

const WEEKDAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
pub(crate) const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const LONG_DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Days since 1970-01-01 to a proleptic Gregorian (year, month 1-12, day 1-31).
/// Howard Hinnant's `civil_from_days`: exact for every day, no tables, no loops.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`] (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `when` (seconds since the epoch) in the RFC 1123 form used by the `Date` header:
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn build_http_date(when: i64) -> String {
    let days = when.div_euclid(86_400);
    let secs = when.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday, index 3 in a Monday-first week.
    let weekday = (days + 3).rem_euclid(7) as usize;
    format!(
        "{}, {:02} {} {:4} {:02}:{:02}:{:02} GMT",
        WEEKDAY_NAMES[weekday],
        day,
        MONTH_NAMES[month as usize - 1],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The `Date` header value for the current second. Every response needs it, so each thread
/// keeps the text of the current second and rebuilds it only when the second changes (no
/// lock shared between the workers). Rust-only: the text is counted rather than copied per
/// response; only the thread that made it touches its count, so no other core sees it.
/// waitress formats the date for each response; built for each here, a hello request took
/// 14,565 user-space instructions instead of 11,287 (callgrind, two runs each, 6 Dec 2026).
pub fn http_date_now() -> Arc<str> {
    thread_local! {
        static CACHE: std::cell::RefCell<Option<(i64, Arc<str>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        match &*cache {
            Some((second, date)) if *second == now => Arc::clone(date),
            _ => {
                let date: Arc<str> = build_http_date(now).into();
                *cache = Some((now, Arc::clone(&date)));
                date
            }
        }
    })
}

/// Parse an HTTP date in any of the three forms HTTP/1.1 allows, case-insensitively, to
/// seconds since the epoch: RFC 1123 (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`). Anything else
/// gives 0, as in waitress. (waitress itself stops at the first two; the server never parses
/// dates, so the third only helps applications that use this function.)
pub fn parse_http_date(d: &str) -> i64 {
    let d = d.to_ascii_lowercase();
    parse_rfc850(&d)
        .or_else(|| parse_rfc822(&d))
        .or_else(|| parse_asctime(&d))
        .unwrap_or(0)
}

/// `sun nov  6 08:49:37 1994` (the day is padded with a space to two characters).
fn parse_asctime(d: &str) -> Option<i64> {
    let fields: Vec<&str> = d.split_whitespace().collect();
    let (day_name, month, day, hms, year) = match fields[..] {
        [day_name, month, day, hms, year] => (day_name, month, day, hms, year),
        _ => return None,
    };
    if !WEEKDAY_NAMES
        .iter()
        .any(|n| n.eq_ignore_ascii_case(day_name))
    {
        return None;
    }
    let month = month_number(month)?;
    let day = digits(day, 1, 2)?;
    let year = digits(year, 4, 4)?;
    Some(timegm(year, month, day, parse_hms(hms)?))
}

fn digits(s: &str, min: usize, max: usize) -> Option<i64> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_number(name: &str) -> Option<u32> {
    MONTH_NAMES
        .iter()
        .position(|m| m.eq_ignore_ascii_case(name))
        .map(|i| i as u32 + 1)
}

/// `hh:mm:ss`, two digits each.
fn parse_hms(s: &str) -> Option<i64> {
    let mut parts = s.split(':');
    let mut total = 0;
    for _ in 0..3 {
        total = total * 60 + digits(parts.next()?, 2, 2)?;
    }
    parts.next().is_none().then_some(total)
}

fn timegm(year: i64, month: u32, day: i64, hms: i64) -> i64 {
    // Like calendar.timegm, out-of-range days simply roll over.
    (days_from_civil(year, month, 1) + day - 1) * 86_400 + hms
}

fn parse_rfc822(d: &str) -> Option<i64> {
    let fields: Vec<&str> = d.split(' ').collect();
    let (day_name, day, month, year, hms) = match fields[..] {
        [day_name, day, month, year, hms, "gmt"] => (day_name, day, month, year, hms),
        _ => return None,
    };
    let day_name = day_name.strip_suffix(',')?;
    if !WEEKDAY_NAMES
        .iter()
        .any(|n| n.eq_ignore_ascii_case(day_name))
    {
        return None;
    }
    let day = digits(day, 1, 2)?;
    let month = month_number(month)?;
    let year = digits(year, 1, 9)?;
    Some(timegm(year, month, day, parse_hms(hms)?))
}

fn parse_rfc850(d: &str) -> Option<i64> {
    let fields: Vec<&str> = d.split(' ').collect();
    let (day_name, date, hms) = match fields[..] {
        [day_name, date, hms, "gmt"] => (day_name, date, hms),
        _ => return None,
    };
    if !LONG_DAY_NAMES.contains(&day_name.strip_suffix(',')?) {
        return None;
    }
    let date: Vec<&str> = date.split('-').collect();
    let (day, month, year) = match date[..] {
        [day, month, year] => (day, month, year),
        _ => return None,
    };
    let day = digits(day, 1, 2)?;
    let month = month_number(month)?;
    let year = if year.len() == 2 {
        1900 + digits(year, 2, 2)?
    } else {
        digits(year, 1, 9)?
    };
    Some(timegm(year, month, day, parse_hms(hms)?))
}

/// Why [`undquote`] refused a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidQuoting;

impl fmt::Display for InvalidQuoting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Invalid quoting in value")
    }
}

impl std::error::Error for InvalidQuoting {}

/// Remove the double quotes and backslash escapes of an RFC 7230 quoted-string; a value that
/// is not quoted at all comes back as it is. Half-quoted or badly escaped values are refused.
/// Values are latin-1 strings (each char one byte), as in the environ.
pub fn undquote(value: &str) -> Result<String, InvalidQuoting> {
    let starts = value.starts_with('"');
    let ends = value.ends_with('"');
    if !starts && !ends {
        return Ok(value.to_string());
    }
    if starts && ends {
        let bytes = crate::app::string_to_latin1(value).ok_or(InvalidQuoting)?;
        if crate::rfc7230::quoted_string_len(&bytes) == Some(bytes.len()) {
            let inner = &bytes[1..bytes.len() - 1];
            return Ok(crate::app::latin1_to_string(
                &crate::rfc7230::unescape_quoted_pairs(inner),
            ));
        }
    }
    Err(InvalidQuoting)
}

/// Remove a Unix socket file left over by an earlier run so that `bind` can succeed. Anything
/// that is not a socket (a regular file given by mistake) is left alone, and a missing file is
/// fine. (Unix only, as Unix sockets are.)
#[cfg(unix)]
pub fn cleanup_unix_socket(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // Someone else may remove it at the same moment; that is what we wanted anyway.
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
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

/// A buffer a thread keeps from one request to the next (Rust-only): the I/O thread keeps the
/// spans of a header block's lines (`parser::add_header_lines`), a worker its last response
/// head (`task::keep_head`). Taken out with [`take_kept`], put back with [`keep_for_next`].
pub(crate) type KeptBuffer<T> = std::thread::LocalKey<std::cell::Cell<Vec<T>>>;

/// The buffer this thread kept in `slot`, empty; an empty new one if none was kept (or the
/// thread is exiting).
pub(crate) fn take_kept<T>(slot: &'static KeptBuffer<T>) -> Vec<T> {
    slot.try_with(std::cell::Cell::take).unwrap_or_default()
}

/// Keep `buffer`, emptied, in this thread's `slot` for its next use; one whose capacity grew
/// past `most` is freed instead, so that what a thread keeps stays small.
pub(crate) fn keep_for_next<T>(slot: &'static KeptBuffer<T>, mut buffer: Vec<T>, most: usize) {
    if buffer.capacity() <= most {
        buffer.clear();
        let _ = slot.try_with(|kept| kept.set(buffer));
    }
}

/// What this thread keeps in `slot`, looked at by `look` (taken out and put back; for tests).
#[cfg(test)]
pub(crate) fn peek<T: Default, R>(
    slot: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    look: impl FnOnce(&T) -> R,
) -> R {
    slot.with(|slot| {
        let kept = slot.take();
        let seen = look(&kept);
        slot.set(kept);
        seen
    })
}

/// Strings emptied for reuse, at most [`SpareStrings::MOST`] of them with room for at most
/// [`SpareStrings::MOST_ROOM`] bytes in all. Rust-only: the parser keeps the strings of a
/// request's header names and values for the next request it reads (see
/// `HttpRequestParser::reset`), and a worker those of its last environ's values (see
/// `task::keep_environ`), so that copying text into them costs no allocation; the bounds keep
/// what is kept small however large the request.
#[derive(Debug, Default)]
pub(crate) struct SpareStrings {
    strings: Vec<String>,
    /// The room of the strings kept.
    room: usize,
}

impl SpareStrings {
    /// The most strings kept.
    pub(crate) const MOST: usize = 64;
    /// The most room kept, in bytes: a browser's headers take 1–2 KiB.
    pub(crate) const MOST_ROOM: usize = 4096;

    /// None kept yet.
    pub(crate) const fn new() -> Self {
        SpareStrings {
            strings: Vec::new(),
            room: 0,
        }
    }

    /// Keep `text`, emptied, if it fits the bounds; else free it.
    pub(crate) fn keep(&mut self, mut text: String) {
        if self.strings.len() < Self::MOST && self.room + text.capacity() <= Self::MOST_ROOM {
            text.clear();
            self.room += text.capacity();
            self.strings.push(text);
        }
    }

    /// A kept string, or a new one.
    pub(crate) fn take(&mut self) -> String {
        match self.strings.pop() {
            Some(text) => {
                self.room -= text.capacity();
                text
            }
            None => String::new(),
        }
    }

    /// How many are kept (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.strings.len()
    }
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_utilities.py, under waitress's names (classes become modules where
    //! names repeat: `unpack_rfc850::test_it`). Every test carries over.
    use super::*;

    #[test]
    fn spare_strings_are_kept_emptied_within_their_bounds() {
        // Rust-only (`SpareStrings`).
        let mut spare = SpareStrings::new();
        spare.keep("abc".to_string());
        assert_eq!(spare.len(), 1);
        let taken = spare.take();
        assert!(taken.is_empty() && taken.capacity() >= 3);
        assert_eq!((spare.len(), spare.room), (0, 0));
        assert_eq!(spare.take().capacity(), 0, "a new one once none is kept");
        // The room in all is bounded...
        spare.keep(String::with_capacity(SpareStrings::MOST_ROOM - 10));
        spare.keep(String::with_capacity(11));
        assert_eq!(spare.len(), 1);
        spare.keep(String::with_capacity(10));
        assert_eq!((spare.len(), spare.room), (2, SpareStrings::MOST_ROOM));
        // ...and so is the number.
        let mut many = SpareStrings::new();
        for _ in 0..SpareStrings::MOST + 5 {
            many.keep(String::new());
        }
        assert_eq!(many.len(), SpareStrings::MOST);
    }

    /// A sink that keeps what it is given, one entry per record.
    #[derive(Default)]
    struct Recording(std::sync::Mutex<Vec<String>>);

    impl LogSink for Recording {
        fn log(&self, level: Level, logger: &str, message: &str) {
            let mut line = String::new();
            push_record(&mut line, level, logger, message);
            self.0.lock().unwrap().push(line);
        }
    }

    #[test]
    fn log_lines_is_one_record_per_line() {
        // A sink without its own log_lines gets each line as a record of its own.
        let sink = Recording::default();
        sink.log_lines(Level::Info, "waitress.access", "a b\nc d\n");
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec!["INFO:waitress.access:a b\n", "INFO:waitress.access:c d\n"]
        );
        // The stderr sink writes the same lines, in one piece.
        let mut batch = String::new();
        for line in ["a b", "c d"] {
            push_record(&mut batch, Level::Info, "waitress.access", line);
        }
        assert_eq!(batch, sink.0.lock().unwrap().concat());
    }

    #[test]
    fn held_records_go_out_in_batches_in_their_order() {
        let sink = Recording::default();
        let mut held = HeldRecords::default();
        assert!(held.hold(Level::Warning, "waitress.queue", "depth 1", &sink));
        assert!(held.hold(Level::Warning, "waitress.queue", "depth 2", &sink));
        // Nothing is written while the records are held.
        assert!(sink.0.lock().unwrap().is_empty());
        // Another logger starts a batch of its own; the first goes out before it.
        assert!(held.hold(Level::Info, "waitress", "hello", &sink));
        assert_eq!(sink.0.lock().unwrap().len(), 2);
        // A message of several lines is not held (it must stay one record), but what is held
        // goes out first, so that it keeps its place.
        assert!(!held.hold(Level::Error, "waitress", "one\ntwo", &sink));
        assert!(held.hold(Level::Warning, "waitress.queue", "depth 3", &sink));
        held.release(&sink);
        held.release(&sink);
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![
                "WARNING:waitress.queue:depth 1\n",
                "WARNING:waitress.queue:depth 2\n",
                "INFO:waitress:hello\n",
                "WARNING:waitress.queue:depth 3\n",
            ]
        );
    }

    #[test]
    fn hold_records_holds_only_inside_and_nests() {
        assert!(!hold(Level::Info, "waitress", "not held"));
        hold_records(|| {
            hold_records(|| assert!(HELD.with(|h| h.borrow().0)));
            // The inner call does not end the outer hold.
            assert!(HELD.with(|h| h.borrow().0));
        });
        assert!(!HELD.with(|h| h.borrow().0));
    }

    #[test]
    fn log_levels_parse_a_default_and_single_loggers() {
        let levels = LogLevels::parse("info,waitress.queue=error").unwrap();
        assert_eq!(levels.default, Level::Info);
        assert_eq!(
            levels.loggers,
            vec![("waitress.queue".to_string(), Level::Error)]
        );
        assert_eq!(levels.to_string(), "info,waitress.queue=error");
        // Any case, spaces around the parts, `warn` for `warning`, the last value wins.
        let levels =
            LogLevels::parse(" WARN , waitress.queue = Debug, waitress.queue=critical").unwrap();
        assert_eq!(levels.to_string(), "warning,waitress.queue=critical");
        // Only single loggers: the default stays info.
        let levels = LogLevels::parse("waitress=error").unwrap();
        assert_eq!(levels.default, Level::Info);
    }

    #[test]
    fn log_levels_follow_the_logger_hierarchy() {
        let levels = LogLevels::parse("debug,waitress=error,waitress.access=info").unwrap();
        assert_eq!(levels.level_for("waitress"), Level::Error);
        // No level of its own: its parent's.
        assert_eq!(levels.level_for("waitress.queue"), Level::Error);
        assert_eq!(levels.level_for("waitress.access"), Level::Info);
        // Outside the `waitress` tree: the default.
        assert_eq!(levels.level_for("other"), Level::Debug);
        assert_eq!(
            LogLevels::default().level_for("waitress.queue"),
            Level::Info
        );
    }

    #[test]
    fn log_levels_refuse_what_they_cannot_read() {
        assert_eq!(
            LogLevels::parse("loud").unwrap_err(),
            "'loud' is not a log level (debug, info, warning, error, critical)"
        );
        assert_eq!(
            LogLevels::parse("info,waitress.queue=").unwrap_err(),
            "'' is not a log level (debug, info, warning, error, critical)"
        );
        assert_eq!(
            LogLevels::parse("waitress.que=error").unwrap_err(),
            "unknown logger 'waitress.que' (the loggers are waitress, waitress.access, waitress.queue)"
        );
        assert!(LogLevels::parse(" , ")
            .unwrap_err()
            .starts_with("no level given"));
    }

    #[test]
    fn every_logger_has_its_place_in_the_table() {
        for logger in [LOGGER, ACCESS_LOGGER, QUEUE_LOGGER] {
            assert_eq!(LOGGER_NAMES[logger.index], logger.name());
        }
    }

    #[test]
    fn test_rfc850() {
        assert_eq!(
            parse_http_date("Tuesday, 08-Feb-94 14:15:29 GMT"),
            760716929
        );
    }

    #[test]
    fn test_rfc822() {
        assert_eq!(parse_http_date("Sun, 08 Feb 1994 14:15:29 GMT"), 760716929);
    }

    #[test]
    fn test_neither() {
        assert_eq!(parse_http_date(""), 0);
        assert_eq!(parse_http_date("Sun, 08 Feb 1994 14:15:29 GMT trailing"), 0);
    }

    #[test]
    fn asctime_dates_parse_too() {
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), 784111777);
        assert_eq!(
            parse_http_date("Sun Nov 16 08:49:37 1994"),
            784111777 + 10 * 86_400
        );
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 94"), 0);
    }

    #[test]
    fn test_rountdrip() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(parse_http_date(&build_http_date(now)), now);
    }

    #[test]
    fn build_http_date_known_values() {
        assert_eq!(build_http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(build_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(build_http_date(951782400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn http_date_now_is_a_parseable_current_date() {
        let parsed = parse_http_date(&http_date_now());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - parsed).abs() <= 1, "{parsed} vs {now}");
    }

    /// 1994-02-08 14:15:29 UTC, the fields waitress's `unpack_*` tests expect, in seconds.
    fn feb_8_1994_14_15_29() -> i64 {
        days_from_civil(1994, 2, 8) * 86_400 + 14 * 3600 + 15 * 60 + 29
    }

    /// Test_unpack_rfc850: the private parser on a lower-cased date, as waitress matches it.
    mod unpack_rfc850 {
        use super::super::parse_rfc850;

        #[test]
        fn test_it() {
            let value = "Tuesday, 08-Feb-94 14:15:29 GMT".to_lowercase();
            assert_eq!(parse_rfc850(&value), Some(super::feb_8_1994_14_15_29()));
        }
    }

    /// Test_unpack_rfc_822
    mod unpack_rfc_822 {
        use super::super::parse_rfc822;

        #[test]
        fn test_it() {
            let value = "Sun, 08 Feb 1994 14:15:29 GMT".to_lowercase();
            assert_eq!(parse_rfc822(&value), Some(super::feb_8_1994_14_15_29()));
        }
    }

    /// TestBadRequest: the error keeps the body it was given.
    mod bad_request {
        use super::super::{Error, ErrorKind};

        #[test]
        fn test_it() {
            let inst = Error::bad_request("1");
            assert_eq!(inst.body, "1");
            assert_eq!(inst.kind, ErrorKind::BadRequest);
        }
    }

    /// Rust-only: the word-at-a-time searches give what a plain scan of every byte or window
    /// gives: every place of the needle among fillers that differ from it by one bit, and every
    /// string of CR, LF and `a` up to nine bytes long.
    #[test]
    fn byte_searches_agree_with_a_plain_scan() {
        use super::{find_byte, find_crlf, find_double_newline};
        for needle in [b'\n', b'\r', 0x00, 0x80, 0xff] {
            for filler in [needle ^ 1, needle ^ 0x80, b'a'] {
                for len in 0..40 {
                    let mut hay = vec![filler; len];
                    assert_eq!(find_byte(needle, &hay), None);
                    for at in (0..len).rev() {
                        hay[at] = needle;
                        assert_eq!(find_byte(needle, &hay), Some(at), "{hay:?}");
                    }
                }
            }
        }
        let mut strings: Vec<Vec<u8>> = vec![vec![]];
        for _ in 0..9 {
            let longer: Vec<Vec<u8>> = strings
                .iter()
                .filter(|s| s.len() == strings.last().map_or(0, Vec::len))
                .flat_map(|s| {
                    [b'\r', b'\n', b'a'].map(|b| {
                        let mut s = s.clone();
                        s.push(b);
                        s
                    })
                })
                .collect();
            strings.extend(longer);
        }
        assert_eq!(strings.len(), (0..=9).map(|n| 3usize.pow(n)).sum::<usize>());
        for s in &strings {
            let crlf = s.windows(2).position(|w| w == b"\r\n");
            let blank = s.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
            assert_eq!(find_crlf(s), crlf, "{s:?}");
            assert_eq!(find_double_newline(s), blank, "{s:?}");
        }
    }

    /// Test_find_double_newline
    mod find_double_newline {
        use super::super::find_double_newline;

        #[test]
        fn test_empty() {
            assert_eq!(find_double_newline(b""), None);
        }

        #[test]
        fn test_one_linefeed() {
            assert_eq!(find_double_newline(b"\n"), None);
        }

        #[test]
        fn test_double_linefeed() {
            assert_eq!(find_double_newline(b"\n\n"), None);
        }

        #[test]
        fn test_one_crlf() {
            assert_eq!(find_double_newline(b"\r\n"), None);
        }

        #[test]
        fn test_double_crfl() {
            assert_eq!(find_double_newline(b"\r\n\r\n"), Some(4));
        }

        #[test]
        fn test_mixed() {
            assert_eq!(find_double_newline(b"\n\n00\r\n\r\n"), Some(8));
        }
    }

    /// Test_undquote
    mod undquote {
        use super::super::{undquote, InvalidQuoting};

        #[test]
        fn test_empty() {
            assert_eq!(undquote("").unwrap(), "");
        }

        #[test]
        fn test_quoted() {
            assert_eq!(undquote("\"test\"").unwrap(), "test");
        }

        #[test]
        fn test_unquoted() {
            assert_eq!(undquote("test").unwrap(), "test");
        }

        #[test]
        fn test_quoted_backslash_quote() {
            assert_eq!(undquote("\"\\\"\"").unwrap(), "\"");
        }

        #[test]
        fn test_quoted_htab() {
            assert_eq!(undquote("\"\t\"").unwrap(), "\t");
        }

        #[test]
        fn test_quoted_backslash_htab() {
            assert_eq!(undquote("\"\\\t\"").unwrap(), "\t");
        }

        #[test]
        fn test_quoted_backslash_invalid() {
            assert_eq!(undquote("\"\\\""), Err(InvalidQuoting));
        }

        #[test]
        fn test_invalid_quoting() {
            assert_eq!(undquote("\"test"), Err(InvalidQuoting));
        }

        #[test]
        fn test_invalid_quoting_single_quote() {
            assert_eq!(undquote("\""), Err(InvalidQuoting));
        }
    }

    #[test]
    fn error_to_response_matches_waitress() {
        let (status, headers, body) = Error::bad_request("oops").to_response(None);
        assert_eq!(status, "400 Bad Request");
        assert_eq!(headers[0].1, "text/plain; charset=utf-8");
        assert_eq!(
            body,
            b"Bad Request\r\n\r\noops\r\n\r\n(generated by server)"
        );
        let (status, _, body) = Error::request_header_fields_too_large("x").to_response(Some("w"));
        assert_eq!(status, "431 Request Header Fields Too Large");
        assert!(body.ends_with(b"(generated by w)"));
    }

    #[test]
    #[cfg(unix)]
    fn cleanup_unix_socket_removes_sockets_only() {
        let dir = std::env::temp_dir().join(format!("waitress-util-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(listener);
        assert!(sock.exists());
        cleanup_unix_socket(&sock).unwrap();
        assert!(!sock.exists());
        let file = dir.join("plain");
        std::fs::write(&file, b"keep").unwrap();
        cleanup_unix_socket(&file).unwrap();
        assert!(file.exists());
        cleanup_unix_socket(&dir.join("missing")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
