//! Port of waitress/adjustments.py.
//!
//! `Adjustments` holds every tunable setting of the server with waitress's name, default and
//! converter. It is built once, from key/value string pairs (waitress's `**kw`) or from the
//! command line (`parse_args`), validated, and then shared read-only by every thread.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crate::utilities::{LogLevels, LOGGER};

/// A socket handed to the server already bound (waitress: the `sockets` setting, used for
/// socket activation).
#[derive(Debug)]
pub enum PreboundSocket {
    /// A bound TCP socket (IPv4 or IPv6).
    Tcp(TcpListener),
    /// A bound Unix-domain socket (Unix only: std has none on Windows).
    #[cfg(unix)]
    Unix(UnixListener),
}

/// The access log's default line: Apache's combined format plus the microseconds taken and
/// how the connection stood (`X`: the client went away before the whole response was handed
/// over); see `waitress::access_log::AccessLogFormat` for every `%` field.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    "%h %l %u %t \"%r\" %s %b \"%{Referer}i\" \"%{User-Agent}i\" %D %X";

/// Every setting of the server.
///
/// waitress: `Adjustments`. The fields appear in the order of waitress's class attributes; the
/// comment on each gives waitress's converter. Build it with [`Adjustments::new`] from
/// name/value pairs, which applies the converters and every check waitress makes:
///
/// ```
/// let adj = waitress::Adjustments::new([("listen", "127.0.0.1:0"), ("threads", "2")]).unwrap();
/// assert_eq!(adj.threads, 2);
/// assert_eq!(adj.listen[0].ip().to_string(), "127.0.0.1");
/// assert!(waitress::Adjustments::new([("nope", "1")]).is_err());
/// ```
#[derive(Debug)]
pub struct Adjustments {
    /// Host to listen on (`str`, default `0.0.0.0`). Mutually exclusive with `listen`.
    pub host: String,
    /// TCP port to listen on (`int`, default 8080). Mutually exclusive with `listen`.
    pub port: u16,
    /// Whether `host` or `port` was given (waitress tells by the `_str_marker`/`_int_marker`
    /// types of the defaults).
    pub host_or_port_set: bool,
    /// Listen on IPv4 addresses (`asbool`, default true).
    pub ipv4: bool,
    /// Listen on IPv6 addresses (`asbool`, default true).
    pub ipv6: bool,
    /// Where to listen, resolved to concrete addresses (`aslist`, default `0.0.0.0:8080`).
    pub listen: Vec<SocketAddr>,
    /// Number of worker threads (`int`, default 4).
    pub threads: usize,
    /// The peer allowed to set proxy headers (`str_iftruthy`, default none).
    pub trusted_proxy: Option<String>,
    /// How many proxies in a chain are trusted (`int`, default none, meaning 1).
    pub trusted_proxy_count: Option<usize>,
    /// Which proxy headers are trusted, lower-case (`asset`, default empty).
    pub trusted_proxy_headers: BTreeSet<String>,
    /// Log untrusted proxy headers that were removed (`asbool`, default false).
    pub log_untrusted_proxy_headers: bool,
    /// Remove proxy headers that are not trusted (`asbool`, default true).
    pub clear_untrusted_proxy_headers: bool,
    /// Default `wsgi.url_scheme` (`str`, default `http`).
    pub url_scheme: String,
    /// Default `SCRIPT_NAME` (`slash_fixed_str`, default empty).
    pub url_prefix: String,
    /// Server identity, sent in the `Server` header (`str_iftruthy`, default `waitress`).
    pub ident: Option<String>,
    /// The `listen(2)` backlog (`int`, default 1024).
    pub backlog: i32,
    /// Bytes asked of each `recv` (`int`, default 8192).
    pub recv_bytes: usize,
    /// Deprecated: bytes buffered before a flush (`int`, default 1).
    pub send_bytes: usize,
    /// Output bytes kept in memory before a temporary file is used (`int`, default 1 MiB).
    pub outbuf_overflow: usize,
    /// Pending output at which the application is paused (`int`, default 16 MiB).
    pub outbuf_high_watermark: usize,
    /// Request-body bytes kept in memory before a temporary file is used (`int`, 512 KiB).
    pub inbuf_overflow: usize,
    /// Stop accepting when this many connections are open (`int`, default 100).
    pub connection_limit: usize,
    /// Seconds between sweeps for idle connections (`int`, default 30).
    pub cleanup_interval: u64,
    /// Seconds an idle connection is kept (`int`, default 120).
    pub channel_timeout: u64,
    /// Seconds a client may take to send a whole request head, from its first byte; 0 turns
    /// the deadline off (not in waitress; default 0, as waitress has none). Defends against
    /// slowloris clients that trickle a head byte by byte to stay clear of `channel_timeout`.
    pub request_header_timeout: u64,
    /// Seconds a graceful shutdown waits for requests already read to finish and flush
    /// before the remaining connections are closed; 0 closes at once, as waitress does (not in
    /// waitress; default 0).
    pub shutdown_timeout: u64,
    /// Log one line per response to the `waitress.access` logger (not in waitress; default
    /// false).
    pub access_log: bool,
    /// The format of an access-log line (not in waitress; default Apache's combined format
    /// plus the time taken, see the README's access-log section).
    pub access_log_format: String,
    /// Which log records are written: a default level and levels of single loggers,
    /// `info,waitress.queue=error` (not in waitress, where Python's logging configuration
    /// does this; default none: the logging setup is left as it is, `info` unless changed).
    /// `serve` and `waitress-serve` apply it before anything is logged; a program that calls
    /// `create_server` itself applies it with [`crate::utilities::set_log_levels`].
    pub log_level: Option<LogLevels>,
    /// Log socket errors such as premature disconnects (`asbool`, default true).
    pub log_socket_errors: bool,
    /// Largest request head, in bytes (`int`, default 256 KiB).
    pub max_request_header_size: usize,
    /// Largest request body, in bytes (`int`, default 1 GiB).
    pub max_request_body_size: u64,
    /// Show the error text of a failing application in the 500 body (`asbool`, default false).
    pub expose_tracebacks: bool,
    /// Seconds the event loop waits in `poll` (`int`, default 1).
    pub asyncore_loop_timeout: u64,
    /// Use `poll` rather than `select` semantics (`asbool`, default false).
    pub asyncore_use_poll: bool,
    /// Rust-only: run the event loop over Linux's `epoll(7)` rather than `poll(2)`, with
    /// `poll` semantics whatever `asyncore_use_poll` says (`asbool`, default false). A round
    /// then costs what is ready rather than what is open, which counts with thousands of
    /// connections: under `wrk -t1 -c1000` the I/O thread spent 2.50 and 3.22 µs per
    /// response with it against 4.33 and 4.65 with `poll` (two runs each, 6 Dec 2026; the
    /// README's Performance section has the rest). Setting it true anywhere but Linux is an
    /// error.
    pub asyncore_use_epoll: bool,
    /// Path of a Unix-domain socket to listen on (`str`, default none).
    pub unix_socket: Option<PathBuf>,
    /// Permissions of the Unix-domain socket file (`asoctal`, default `0o600`).
    pub unix_socket_perms: u32,
    /// Sockets already bound by the caller (`as_socket_list`, default none).
    pub sockets: Vec<PreboundSocket>,
    /// Requests read ahead while one is being served (`int`, default 0).
    pub channel_request_lookahead: usize,
    /// `SERVER_NAME` when the request has no `Host` (`str`, default `waitress.invalid`).
    pub server_name: String,
    /// Options set on each accepted socket as (level, name, value); default `TCP_NODELAY` on.
    pub socket_options: Vec<(i32, i32, i32)>,
}

/// `SOL_TCP` / `IPPROTO_TCP`.
pub const SOL_TCP: i32 = 6;
/// `TCP_NODELAY`.
pub const TCP_NODELAY: i32 = 1;

impl Default for Adjustments {
    fn default() -> Self {
        Adjustments {
            host: "0.0.0.0".to_string(),
            port: 8080,
            host_or_port_set: false,
            ipv4: true,
            ipv6: true,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
            threads: 4,
            trusted_proxy: None,
            trusted_proxy_count: None,
            trusted_proxy_headers: BTreeSet::new(),
            log_untrusted_proxy_headers: false,
            clear_untrusted_proxy_headers: true,
            url_scheme: "http".to_string(),
            url_prefix: String::new(),
            ident: Some("waitress".to_string()),
            backlog: 1024,
            recv_bytes: 8192,
            send_bytes: 1,
            outbuf_overflow: 1_048_576,
            outbuf_high_watermark: 16_777_216,
            inbuf_overflow: 524_288,
            connection_limit: 100,
            cleanup_interval: 30,
            channel_timeout: 120,
            request_header_timeout: 0,
            shutdown_timeout: 0,
            access_log: false,
            access_log_format: DEFAULT_ACCESS_LOG_FORMAT.to_string(),
            log_level: None,
            log_socket_errors: true,
            max_request_header_size: 262_144,
            max_request_body_size: 1_073_741_824,
            expose_tracebacks: false,
            asyncore_loop_timeout: 1,
            asyncore_use_poll: false,
            asyncore_use_epoll: false,
            unix_socket: None,
            unix_socket_perms: 0o600,
            sockets: Vec::new(),
            channel_request_lookahead: 0,
            server_name: "waitress.invalid".to_string(),
            socket_options: vec![(SOL_TCP, TCP_NODELAY, 1)],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Converters (waitress: module-level functions of adjustments.py)
// ---------------------------------------------------------------------------------------------

/// The spellings of "true" (lower-cased, surrounding whitespace removed).
const TRUTHY: [&str; 6] = ["t", "true", "y", "yes", "on", "1"];

/// The proxy header names `trusted_proxy_headers` may hold (waitress: `KNOWN_PROXY_HEADERS`).
pub const KNOWN_PROXY_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-by",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
];

/// `true` for `t`, `true`, `y`, `yes`, `on` and `1` in any case; `false` for anything else.
pub fn asbool(s: &str) -> bool {
    let s = s.trim().to_ascii_lowercase();
    TRUTHY.contains(&s.as_str())
}

/// An octal number such as `777` or `0o600`.
pub fn asoctal(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t
        .strip_prefix("0o")
        .or_else(|| t.strip_prefix("0O"))
        .unwrap_or(t);
    u32::from_str_radix(digits, 8)
        .map_err(|_| format!("'{s}' is not an octal number (such as 600 or 0o600)"))
}

/// One entry per non-blank line, trimmed.
pub fn aslist_cronly(value: &str) -> Vec<String> {
    value
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// One entry per whitespace-separated word, across lines.
pub fn aslist(value: &str) -> Vec<String> {
    aslist_cronly(value)
        .iter()
        .flat_map(|line| line.split_whitespace().map(str::to_string))
        .collect()
}

/// The words of [`aslist`], as a set.
pub fn asset(value: &str) -> BTreeSet<String> {
    aslist(value).into_iter().collect()
}

/// A path prefix with exactly one leading slash and no trailing one; empty stays empty.
pub fn slash_fixed_str(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("/{}", s.trim_start_matches('/').trim_end_matches('/'))
    }
}

/// `None` for an empty string.
pub fn str_iftruthy(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The integer types settings are held in, with their bounds for error messages.
trait IntSetting: TryFrom<i128> {
    const LOWEST: i128;
    const HIGHEST: i128;
}

macro_rules! int_setting {
    ($($t:ty),*) => {$(
        impl IntSetting for $t {
            const LOWEST: i128 = <$t>::MIN as i128;
            const HIGHEST: i128 = <$t>::MAX as i128;
        }
    )*};
}
int_setting!(u16, i32, u64, usize);

/// A decimal integer as Python's `int()` reads it (surrounding whitespace and a `+` allowed),
/// within the bounds of the setting's type.
fn asint<T: IntSetting>(s: &str) -> Result<T, String> {
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    let n = match t.parse::<i128>() {
        Ok(n) => n,
        Err(_) => return Err(format!("'{s}' is not a whole number")),
    };
    T::try_from(n).map_err(|_| format!("{n} is out of range ({} to {})", T::LOWEST, T::HIGHEST))
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A setting that was refused.
///
/// `Display` names the settings as [`Adjustments::new`] knows them (`channel_timeout`);
/// [`AdjustmentsError::command_line_message`] names the options of `waitress-serve`
/// (`--channel-timeout`) instead, so that each user reads back what they typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdjustmentsError {
    /// No setting has this name (waitress: `Unknown adjustment 'name'`).
    UnknownSetting(String),
    /// The value does not convert (a number that is not one, …).
    BadValue {
        /// The setting.
        setting: String,
        /// What is wrong with the value, quoting it.
        reason: String,
    },
    /// Settings that exclude each other, or a setting that needs another one: waitress's
    /// message, with each setting name written `{name}` so it can be spelled either way.
    Conflict(String),
    /// A `listen`/`host`/`port` entry that does not resolve to an address to bind.
    InvalidListen(String),
}

/// How an error spells a setting: `channel_timeout` or `--channel-timeout`.
#[derive(Clone, Copy)]
enum Spelling {
    Setting,
    Option,
}

impl Spelling {
    fn name(self, setting: &str) -> String {
        match self {
            Spelling::Setting => setting.to_string(),
            Spelling::Option => format!("--{}", setting.replace('_', "-")),
        }
    }
}

impl AdjustmentsError {
    /// The message with command-line options in place of setting names (`--port` for
    /// `port`), as `waitress-serve` prints it.
    pub fn command_line_message(&self) -> String {
        self.message(Spelling::Option)
    }

    fn message(&self, spelling: Spelling) -> String {
        match self {
            AdjustmentsError::UnknownSetting(name) => format!("Unknown adjustment '{name}'"),
            AdjustmentsError::BadValue { setting, reason } => {
                format!("bad value for {}: {reason}", spelling.name(setting))
            }
            AdjustmentsError::Conflict(template) => fill_setting_names(template, spelling),
            AdjustmentsError::InvalidListen(entry) => {
                format!("Invalid host/port specified. ({entry})")
            }
        }
    }
}

/// Replace each `{name}` of a known setting in `template` by its spelling; other braces
/// (`X-Forwarded-{By,Host}`) stay as they are.
fn fill_setting_names(template: &str, spelling: Spelling) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if setting_names().any(|name| name == &after[..close]) => {
                out.push_str(&spelling.name(&after[..close]));
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

impl fmt::Display for AdjustmentsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(Spelling::Setting))
    }
}

impl std::error::Error for AdjustmentsError {}

fn conflict(message: &str) -> AdjustmentsError {
    AdjustmentsError::Conflict(message.to_string())
}

/// Wrap a converter's failure with the setting's name.
fn bad<T>(setting: &str, result: Result<T, String>) -> Result<T, AdjustmentsError> {
    result.map_err(|reason| AdjustmentsError::BadValue {
        setting: setting.to_string(),
        reason,
    })
}

// ---------------------------------------------------------------------------------------------
// Building and checking (waitress: Adjustments.__init__)
// ---------------------------------------------------------------------------------------------

impl Adjustments {
    /// Build the settings from name/value pairs (waitress: `Adjustments(**kw)`), converting
    /// each value as waitress does, resolving `listen`, and making every check waitress makes.
    pub fn new<I, K, V>(kw: I) -> Result<Adjustments, AdjustmentsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Adjustments::with_sockets(kw, Vec::new())
    }

    /// Like [`Adjustments::new`], serving the already-bound `sockets` (waitress: the `sockets`
    /// setting); then `listen`, `host`, `port` and `unix_socket` may not be given.
    pub fn with_sockets<I, K, V>(
        kw: I,
        sockets: Vec<PreboundSocket>,
    ) -> Result<Adjustments, AdjustmentsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let kw: Vec<(String, String)> = kw
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let given = |name: &str| kw.iter().any(|(k, _)| k == name);
        let has_sockets = !sockets.is_empty();
        let host_or_port = given("host") || given("port");
        if given("listen") && host_or_port {
            return Err(conflict(
                "{host} or {port} may not be set if {listen} is set.",
            ));
        }
        if given("listen") && has_sockets {
            return Err(conflict("{sockets} may not be set if {listen} is set."));
        }
        if has_sockets && host_or_port {
            return Err(conflict(
                "{host} or {port} may not be set if {sockets} is set.",
            ));
        }
        if has_sockets && given("unix_socket") {
            return Err(conflict("{unix_socket} may not be set if {sockets} is set"));
        }
        if given("unix_socket") && host_or_port {
            return Err(conflict(
                "{unix_socket} may not be set if {host} or {port} is set",
            ));
        }
        if given("unix_socket") && given("listen") {
            return Err(conflict("{unix_socket} may not be set if {listen} is set"));
        }
        if given("send_bytes") {
            LOGGER.warning("send_bytes will be removed in a future release");
        }

        let mut adj = Adjustments::default();
        let mut listen = vec![format!("{}:{}", adj.host, adj.port)];
        let mut proxy_count_given = false;
        for (name, value) in &kw {
            if name == "listen" {
                listen = aslist(value);
            } else if name == "trusted_proxy_count" {
                proxy_count_given = true;
                adj.apply(name, value)?;
            } else {
                adj.apply(name, value)?;
            }
        }
        if cfg!(windows) && adj.unix_socket.is_some() {
            // waitress's help says "Not available on Windows", and there it quietly serves
            // TCP on the default address instead; the port says so.
            return Err(conflict(
                "{unix_socket}: Unix domain sockets are not available on Windows",
            ));
        }
        adj.host_or_port_set = host_or_port;
        if host_or_port {
            listen = vec![format!("{}:{}", adj.host, adj.port)];
        }
        adj.listen = resolve_listen(&listen, adj.port, adj.ipv4, adj.ipv6)?;
        adj.check_proxy_settings(proxy_count_given)?;
        check_sockets(&sockets)?;
        adj.sockets = sockets;
        Ok(adj)
    }

    /// Set one setting from its string value, with its converter.
    fn apply(&mut self, name: &str, value: &str) -> Result<(), AdjustmentsError> {
        match name {
            "host" => self.host = value.to_string(),
            "port" => self.port = bad(name, asint(value))?,
            "ipv4" => self.ipv4 = asbool(value),
            "ipv6" => self.ipv6 = asbool(value),
            "threads" => {
                self.threads = bad(name, asint(value))?;
                if self.threads == 0 {
                    // waitress would start no worker and never answer; refuse instead.
                    return bad(name, Err("at least one thread is needed".to_string()));
                }
            }
            "trusted_proxy" => self.trusted_proxy = str_iftruthy(value),
            "trusted_proxy_count" => self.trusted_proxy_count = Some(bad(name, asint(value))?),
            "trusted_proxy_headers" => self.trusted_proxy_headers = asset(value),
            "log_untrusted_proxy_headers" => self.log_untrusted_proxy_headers = asbool(value),
            "clear_untrusted_proxy_headers" => self.clear_untrusted_proxy_headers = asbool(value),
            "url_scheme" => self.url_scheme = value.to_string(),
            "url_prefix" => self.url_prefix = slash_fixed_str(value),
            "backlog" => self.backlog = bad(name, asint(value))?,
            "recv_bytes" => self.recv_bytes = bad(name, asint(value))?,
            "send_bytes" => self.send_bytes = bad(name, asint(value))?,
            "outbuf_overflow" => self.outbuf_overflow = bad(name, asint(value))?,
            "outbuf_high_watermark" => self.outbuf_high_watermark = bad(name, asint(value))?,
            "inbuf_overflow" => self.inbuf_overflow = bad(name, asint(value))?,
            "connection_limit" => self.connection_limit = bad(name, asint(value))?,
            "cleanup_interval" => self.cleanup_interval = bad(name, asint(value))?,
            "channel_timeout" => self.channel_timeout = bad(name, asint(value))?,
            "request_header_timeout" => self.request_header_timeout = bad(name, asint(value))?,
            "shutdown_timeout" => self.shutdown_timeout = bad(name, asint(value))?,
            "access_log" => self.access_log = asbool(value),
            "access_log_format" => {
                // Checked here so a bad format fails at start, not at the first request.
                bad(name, crate::access_log::check_format(value))?;
                self.access_log_format = value.to_string();
            }
            "log_level" => self.log_level = Some(bad(name, LogLevels::parse(value))?),
            "log_socket_errors" => self.log_socket_errors = asbool(value),
            "max_request_header_size" => self.max_request_header_size = bad(name, asint(value))?,
            "max_request_body_size" => self.max_request_body_size = bad(name, asint(value))?,
            "expose_tracebacks" => self.expose_tracebacks = asbool(value),
            "ident" => self.ident = str_iftruthy(value),
            "asyncore_loop_timeout" => self.asyncore_loop_timeout = bad(name, asint(value))?,
            "asyncore_use_poll" => self.asyncore_use_poll = asbool(value),
            "asyncore_use_epoll" => {
                self.asyncore_use_epoll = asbool(value);
                if self.asyncore_use_epoll && !cfg!(target_os = "linux") {
                    return bad(name, Err("epoll is only available on Linux".to_string()));
                }
            }
            "unix_socket" => self.unix_socket = str_iftruthy(value).map(PathBuf::from),
            "unix_socket_perms" => self.unix_socket_perms = bad(name, asoctal(value))?,
            "sockets" => {
                return Err(conflict(
                    "{sockets} can only be given as bound sockets (Adjustments::with_sockets)",
                ))
            }
            "channel_request_lookahead" => {
                self.channel_request_lookahead = bad(name, asint(value))?
            }
            "server_name" => self.server_name = value.to_string(),
            _ => return Err(AdjustmentsError::UnknownSetting(name.to_string())),
        }
        Ok(())
    }

    /// The proxy checks of waitress, in its order.
    fn check_proxy_settings(&mut self, count_given: bool) -> Result<(), AdjustmentsError> {
        if count_given && self.trusted_proxy.is_none() {
            return Err(conflict(
                "{trusted_proxy_count} has no meaning without setting {trusted_proxy}",
            ));
        }
        if self.trusted_proxy_count.is_none() {
            self.trusted_proxy_count = Some(1);
        }
        if !self.trusted_proxy_headers.is_empty() && self.trusted_proxy.is_none() {
            return Err(conflict(
                "{trusted_proxy_headers} has no meaning without setting {trusted_proxy}",
            ));
        }
        if !self.trusted_proxy_headers.is_empty() {
            self.trusted_proxy_headers = self
                .trusted_proxy_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            let unknown: Vec<&str> = self
                .trusted_proxy_headers
                .iter()
                .map(String::as_str)
                .filter(|h| !KNOWN_PROXY_HEADERS.contains(h))
                .collect();
            if !unknown.is_empty() {
                return Err(AdjustmentsError::Conflict(format!(
                    "Received unknown {{trusted_proxy_headers}} value ({}) expected one of {}",
                    unknown.join(", "),
                    KNOWN_PROXY_HEADERS.join(", ")
                )));
            }
            if self.trusted_proxy_headers.contains("forwarded")
                && self.trusted_proxy_headers.len() > 1
            {
                return Err(conflict(
                    "The Forwarded proxy header and the X-Forwarded-{By,Host,Proto,Port,For} \
                     headers are mutually exclusive. Can't trust both!",
                ));
            }
        } else if self.trusted_proxy.is_some() {
            LOGGER.warning(
                "No proxy headers were marked as trusted, but trusted_proxy was set. \
                 Implicitly trusting X-Forwarded-Proto for backwards compatibility. \
                 This will be removed in future versions of waitress.",
            );
            self.trusted_proxy_headers = BTreeSet::from(["x-forwarded-proto".to_string()]);
        }
        Ok(())
    }

    /// Split the command line into settings (waitress: `Adjustments.parse_args`), as Python's
    /// `getopt` does: `--name=value` or `--name value`, `--flag` / `--no-flag` for booleans,
    /// unique prefixes of option names, `--help`, `--call`, `--app NAME`, and one positional
    /// application name. Values are not converted here; [`Adjustments::new`] does that.
    pub fn parse_args(argv: &[String]) -> Result<ParsedArgs, ArgsError> {
        let mut parsed = ParsedArgs::default();
        let mut app = None;
        let mut args = argv.iter();
        let mut positional: Vec<String> = Vec::new();
        while let Some(arg) = args.next() {
            if arg == "--" {
                positional.extend(args.by_ref().cloned());
                break;
            }
            let option = match arg.strip_prefix("--") {
                Some(option) => option,
                None => {
                    if arg.starts_with('-') && arg.len() > 1 {
                        return Err(ArgsError(format!("option {} not recognized", &arg[..2])));
                    }
                    // getopt stops at the first argument that is not an option.
                    positional.push(arg.clone());
                    positional.extend(args.by_ref().cloned());
                    break;
                }
            };
            let (name, inline_value) = match option.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (option, None),
            };
            let (name, takes_value) = long_option(name)?;
            let value = match (takes_value, inline_value) {
                (true, Some(value)) => Some(value),
                (true, None) => Some(
                    args.next()
                        .cloned()
                        .ok_or_else(|| ArgsError(format!("option --{name} requires argument")))?,
                ),
                (false, Some(_)) => {
                    return Err(ArgsError(format!(
                        "option --{name} must not have an argument"
                    )))
                }
                (false, None) => None,
            };
            let param = name.replace('-', "_");
            match (param.as_str(), value) {
                ("help", _) => parsed.help = true,
                ("call", _) => parsed.call = true,
                ("app", value) => app = value,
                ("listen", Some(value)) => {
                    let joined = format!("{} {}", parsed.get("listen").unwrap_or(""), value);
                    parsed.set("listen", joined);
                }
                (_, Some(value)) => parsed.set(&param, value),
                (flag, None) => match flag.strip_prefix("no_") {
                    Some(flag) => parsed.set(flag, "false".to_string()),
                    None => parsed.set(flag, "true".to_string()),
                },
            }
        }
        if !parsed.help {
            if app.is_none() && !positional.is_empty() {
                app = Some(positional.remove(0));
            }
            if !positional.is_empty() {
                return Err(ArgsError("Provide only one WSGI app".to_string()));
            }
            parsed.app = app;
        }
        Ok(parsed)
    }
}

/// Every setting name with whether it is a boolean (waitress: `Adjustments._params`).
const PARAMS: [(&str, bool); 40] = [
    ("host", false),
    ("port", false),
    ("ipv4", true),
    ("ipv6", true),
    ("listen", false),
    ("threads", false),
    ("trusted_proxy", false),
    ("trusted_proxy_count", false),
    ("trusted_proxy_headers", false),
    ("log_untrusted_proxy_headers", true),
    ("clear_untrusted_proxy_headers", true),
    ("url_scheme", false),
    ("url_prefix", false),
    ("backlog", false),
    ("recv_bytes", false),
    ("send_bytes", false),
    ("outbuf_overflow", false),
    ("outbuf_high_watermark", false),
    ("inbuf_overflow", false),
    ("connection_limit", false),
    ("cleanup_interval", false),
    ("channel_timeout", false),
    ("request_header_timeout", false),
    ("shutdown_timeout", false),
    ("access_log", true),
    ("access_log_format", false),
    ("log_level", false),
    ("log_socket_errors", true),
    ("max_request_header_size", false),
    ("max_request_body_size", false),
    ("expose_tracebacks", true),
    ("ident", false),
    ("asyncore_loop_timeout", false),
    ("asyncore_use_poll", true),
    ("asyncore_use_epoll", true),
    ("unix_socket", false),
    ("unix_socket_perms", false),
    ("sockets", false),
    ("channel_request_lookahead", false),
    ("server_name", false),
];

/// The `log_level` setting among `kw`, converted (the last one given wins, as in
/// [`Adjustments::new`]), for the callers that apply it before anything else is logged.
pub fn log_level_setting<K, V>(kw: &[(K, V)]) -> Result<Option<LogLevels>, AdjustmentsError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    match kw.iter().rev().find(|(k, _)| k.as_ref() == "log_level") {
        Some((_, spec)) => bad("log_level", LogLevels::parse(spec.as_ref())).map(Some),
        None => Ok(None),
    }
}

/// The names of every setting, in waitress's order (`host`, `port`, `ipv4`, …).
pub fn setting_names() -> impl Iterator<Item = &'static str> {
    PARAMS.iter().map(|(name, _)| *name)
}

/// The long options the command line knows, with whether each takes a value: `help`,
/// `call`, every setting (booleans also as `no-NAME`), and `app`.
fn long_options() -> Vec<(String, bool)> {
    let mut options = vec![("help".to_string(), false), ("call".to_string(), false)];
    for (name, boolean) in PARAMS {
        let name = name.replace('_', "-");
        if boolean {
            options.push((format!("no-{name}"), false));
            options.push((name, false));
        } else {
            options.push((name, true));
        }
    }
    options.push(("app".to_string(), true));
    options
}

/// Find a long option by its full name or a unique prefix, as getopt does.
fn long_option(name: &str) -> Result<(String, bool), ArgsError> {
    let options = long_options();
    if let Some(exact) = options.iter().find(|(o, _)| o == name) {
        return Ok(exact.clone());
    }
    let matches: Vec<&(String, bool)> = options
        .iter()
        .filter(|(o, _)| o.starts_with(name))
        .collect();
    match matches[..] {
        [only] => Ok(only.clone()),
        [] => Err(ArgsError(format!("option --{name} not recognized"))),
        _ => Err(ArgsError(format!("option --{name} not a unique prefix"))),
    }
}

/// What the command line asked for (waitress: the dict `parse_args` returns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedArgs {
    /// The settings, as name/value strings for [`Adjustments::new`].
    pub kw: Vec<(String, String)>,
    /// `--help` was given.
    pub help: bool,
    /// `--call` was given: the named application is a factory to call.
    pub call: bool,
    /// The application named with `--app` or as the positional argument.
    pub app: Option<String>,
}

impl ParsedArgs {
    /// The value given for a setting, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.kw
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Set a setting, replacing an earlier value (the last one given wins, as in a dict).
    fn set(&mut self, name: &str, value: String) {
        match self.kw.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.kw.push((name.to_string(), value)),
        }
    }
}

/// A command line that does not parse; `Display` is getopt's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError(pub String);

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgsError {}

/// Refuse a mix of TCP and Unix sockets (waitress: `Adjustments.check_sockets`). Sockets of
/// other kinds cannot be expressed by [`PreboundSocket`], so that check has nothing to do.
pub fn check_sockets(sockets: &[PreboundSocket]) -> Result<(), AdjustmentsError> {
    let tcp = sockets.iter().any(|s| matches!(s, PreboundSocket::Tcp(_)));
    // Any other kind is a Unix socket (a kind that exists on Unix only).
    let unix = sockets.iter().any(|s| !matches!(s, PreboundSocket::Tcp(_)));
    if tcp && unix {
        return Err(conflict("Internet and UNIX sockets may not be mixed."));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Resolving `listen`
// ---------------------------------------------------------------------------------------------

/// Turn `listen` entries (`host:port`, `[v6]:port`, `*:port`, a bare host) into the addresses
/// to bind, keeping only the enabled families and dropping repeats (a port 0 entry is never a
/// repeat: each binds its own free port).
pub fn resolve_listen(
    entries: &[String],
    default_port: u16,
    ipv4: bool,
    ipv6: bool,
) -> Result<Vec<SocketAddr>, AdjustmentsError> {
    let (ipv4, ipv6) = enabled_families(ipv4, ipv6, host_has_ipv6())?;
    let mut wanted: Vec<SocketAddr> = Vec::new();
    for entry in entries {
        let invalid = || AdjustmentsError::InvalidListen(entry.clone());
        let (host, port) = split_host_port(entry, default_port);
        if cfg!(windows) && port.trim().parse::<i64>().is_err() {
            return Err(conflict(
                "Windows does not support service names instead of port numbers",
            ));
        }
        let port = parse_port(&port).ok_or_else(invalid)?;
        let candidates: Vec<SocketAddr> = if host == "*" || host.is_empty() {
            vec![
                SocketAddr::from(([0, 0, 0, 0], port)),
                SocketAddr::from(([0u16; 8], port)),
            ]
        } else {
            (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|_| invalid())?
                .collect()
        };
        let before = wanted.len();
        let mut family_matched = false;
        for addr in candidates {
            if (addr.is_ipv4() && !ipv4) || (addr.is_ipv6() && !ipv6) {
                continue;
            }
            family_matched = true;
            let repeat = wanted
                .iter()
                .any(|w| w.ip() == addr.ip() && w.port() == addr.port());
            if addr.port() == 0 || !repeat {
                wanted.push(addr);
            }
        }
        if !family_matched && wanted.len() == before {
            return Err(invalid());
        }
    }
    Ok(wanted)
}

/// The address families `listen` may resolve to, as (IPv4, IPv6), from the `ipv4` and
/// `ipv6` settings (waitress: `enabled_families` in `Adjustments.__init__`). Only one switched
/// off narrows the choice; both switched off is the same as both on. Without IPv4, a host
/// without IPv6 has nothing to listen on, and that is the one case refused.
fn enabled_families(
    ipv4: bool,
    ipv6: bool,
    host_has_ipv6: bool,
) -> Result<(bool, bool), AdjustmentsError> {
    if !ipv4 && !host_has_ipv6 {
        return Err(conflict(
            "IPv4 is disabled but IPv6 is not available. Cowardly refusing to start.",
        ));
    }
    Ok(match (ipv4, ipv6) {
        (true, false) => (true, false),
        (false, true) => (false, true),
        _ => (true, true),
    })
}

/// Whether this host can make IPv6 sockets (waitress: `compat.HAS_IPV6`, which Python
/// decides when it is built; here it is asked of the running kernel, once).
pub fn host_has_ipv6() -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    // `Once` orders the store before every load that follows `call_once`.
    static ASKED: std::sync::Once = std::sync::Once::new();
    static HAS_IPV6: AtomicBool = AtomicBool::new(false);
    ASKED.call_once(|| {
        // Binding a UDP socket to an ephemeral port of `::` needs no listener and no
        // configured address: it fails only when the kernel has no IPv6 at all.
        let bound = std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).is_ok();
        HAS_IPV6.store(bound, Ordering::Relaxed);
    });
    HAS_IPV6.load(Ordering::Relaxed)
}

/// Split `host:port`; an entry without a port (`127.0.0.1`, `[::1]`) gets `default_port`, and
/// the brackets of an IPv6 literal are removed.
fn split_host_port(entry: &str, default_port: u16) -> (String, String) {
    let (host, port) = match entry.rsplit_once(':') {
        Some((_, port)) if port.contains(']') => (entry, default_port.to_string()),
        Some((host, port)) => (host, port.to_string()),
        None => (entry, default_port.to_string()),
    };
    let host = if host.contains('[') && host.contains(']') {
        host.trim_start_matches('[').trim_end_matches(']')
    } else {
        host
    };
    (host.to_string(), port)
}

/// A port number, or a service name looked up in `/etc/services` as getaddrinfo would (on
/// Unix: `resolve_listen` refuses service names on Windows, as waitress does).
fn parse_port(port: &str) -> Option<u16> {
    if let Ok(number) = port.parse() {
        return Some(number);
    }
    if cfg!(windows) {
        return None;
    }
    let services = std::fs::read_to_string("/etc/services").ok()?;
    services.lines().find_map(|line| {
        let line = line.split('#').next()?;
        let mut fields = line.split_whitespace();
        let name = fields.next()?;
        let (number, protocol) = fields.next()?.split_once('/')?;
        let aliases: Vec<&str> = fields.collect();
        let named = name == port || aliases.contains(&port);
        (named && protocol == "tcp").then(|| number.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_adjustments.py, under waitress's names. Not carried over:
    // test_s_is_None: asbool takes a &str; there is no None to pass
    // test_s_is_True: asbool takes a &str; there is no bool to pass (test_s_is_true has "True")
    // test_s_is_False: asbool takes a &str; there is no bool to pass (test_s_is_false has "False")
    // test_only_sockets_in_list: PreboundSocket is typed; a list cannot hold a non-socket
    // test_not_only_sockets_in_list: PreboundSocket is typed; there is nothing to filter out
    // test_dont_use_unsupported_socket_types: PreboundSocket cannot hold a datagram socket
    use super::*;
    use crate::utilities::capture_logs;

    fn make(kw: &[(&str, &str)]) -> Result<Adjustments, AdjustmentsError> {
        Adjustments::new(kw.iter().copied())
    }

    fn pairs(adj: &Adjustments) -> Vec<(String, u16)> {
        adj.listen
            .iter()
            .map(|a| (a.ip().to_string(), a.port()))
            .collect()
    }

    fn has_ipv6() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }

    /// Test_asbool
    mod asbool_tests {
        use super::super::asbool;

        #[test]
        fn test_s_is_true() {
            assert!(asbool("True"));
        }

        #[test]
        fn test_s_is_false() {
            assert!(!asbool("False"));
        }

        #[test]
        fn test_s_is_yes() {
            assert!(asbool("yes"));
        }

        #[test]
        fn test_s_is_on() {
            assert!(asbool("on"));
        }

        #[test]
        fn test_s_is_1() {
            assert!(asbool(" 1 "));
        }

        #[test]
        fn empty_is_false() {
            assert!(!asbool(""));
        }
    }

    #[test]
    fn test_converters() {
        assert_eq!(asoctal("777"), Ok(0o777));
        assert_eq!(asoctal("0o600"), Ok(0o600));
        assert!(asoctal("9").is_err());
        assert_eq!(aslist("a b\n c\n\n d"), vec!["a", "b", "c", "d"]);
        assert_eq!(aslist_cronly("a b\n c\n\n"), vec!["a b", "c"]);
        assert_eq!(slash_fixed_str("///foo/"), "/foo");
        assert_eq!(slash_fixed_str("  "), "");
        assert_eq!(str_iftruthy(""), None);
    }

    #[test]
    fn test_goodvars() {
        let inst = make(&[
            ("host", "localhost"),
            ("port", "8080"),
            ("threads", "5"),
            ("trusted_proxy", "192.168.1.1"),
            ("trusted_proxy_headers", "forwarded"),
            ("trusted_proxy_count", "2"),
            ("log_untrusted_proxy_headers", "true"),
            ("url_scheme", "https"),
            ("backlog", "20"),
            ("recv_bytes", "200"),
            ("send_bytes", "300"),
            ("outbuf_overflow", "400"),
            ("inbuf_overflow", "500"),
            ("connection_limit", "1000"),
            ("cleanup_interval", "1100"),
            ("channel_timeout", "1200"),
            ("log_socket_errors", "true"),
            ("max_request_header_size", "1300"),
            ("max_request_body_size", "1400"),
            ("expose_tracebacks", "true"),
            ("ident", "abc"),
            ("asyncore_loop_timeout", "5"),
            ("asyncore_use_poll", "true"),
            ("unix_socket_perms", "777"),
            ("url_prefix", "///foo/"),
            ("ipv4", "true"),
            ("ipv6", "false"),
        ])
        .unwrap();
        assert_eq!(inst.host, "localhost");
        assert_eq!(inst.port, 8080);
        assert_eq!(inst.threads, 5);
        assert_eq!(inst.trusted_proxy.as_deref(), Some("192.168.1.1"));
        assert_eq!(inst.trusted_proxy_headers, asset("forwarded"));
        assert_eq!(inst.trusted_proxy_count, Some(2));
        assert!(inst.log_untrusted_proxy_headers);
        assert_eq!(inst.url_scheme, "https");
        assert_eq!(inst.backlog, 20);
        assert_eq!(inst.recv_bytes, 200);
        assert_eq!(inst.send_bytes, 300);
        assert_eq!(inst.outbuf_overflow, 400);
        assert_eq!(inst.inbuf_overflow, 500);
        assert_eq!(inst.connection_limit, 1000);
        assert_eq!(inst.cleanup_interval, 1100);
        assert_eq!(inst.channel_timeout, 1200);
        assert!(inst.log_socket_errors);
        assert_eq!(inst.max_request_header_size, 1300);
        assert_eq!(inst.max_request_body_size, 1400);
        assert!(inst.expose_tracebacks);
        assert_eq!(inst.asyncore_loop_timeout, 5);
        assert!(inst.asyncore_use_poll);
        assert_eq!(inst.ident.as_deref(), Some("abc"));
        assert_eq!(inst.unix_socket_perms, 0o777);
        assert_eq!(inst.url_prefix, "/foo");
        assert!(inst.ipv4);
        assert!(!inst.ipv6);
        let v4: Vec<_> = pairs(&inst);
        assert_eq!(v4[0], ("127.0.0.1".to_string(), 8080));
        assert!(inst.listen.iter().all(|a| a.is_ipv4()));
    }

    #[test]
    fn asyncore_use_epoll_is_linux_only() {
        let inst = make(&[("asyncore_use_epoll", "true")]);
        if cfg!(target_os = "linux") {
            assert!(inst.unwrap().asyncore_use_epoll);
        } else {
            let err = inst.unwrap_err().to_string();
            assert!(err.contains("only available on Linux"), "{err}");
        }
        assert!(!make(&[]).unwrap().asyncore_use_epoll);
        let off = make(&[("asyncore_use_epoll", "false")]).unwrap();
        assert!(!off.asyncore_use_epoll);
    }

    #[test]
    fn test_goodvar_listen() {
        let inst = make(&[("listen", "127.0.0.1")]).unwrap();
        assert_eq!(pairs(&inst), vec![("127.0.0.1".to_string(), 8080)]);
    }

    #[test]
    fn test_default_listen() {
        let inst = make(&[]).unwrap();
        assert_eq!(pairs(&inst), vec![("0.0.0.0".to_string(), 8080)]);
        assert_eq!(inst.trusted_proxy_count, Some(1));
    }

    #[test]
    fn test_multiple_listen() {
        let inst = make(&[("listen", "127.0.0.1:9090 127.0.0.1:8080")]).unwrap();
        assert_eq!(
            pairs(&inst),
            vec![
                ("127.0.0.1".to_string(), 9090),
                ("127.0.0.1".to_string(), 8080)
            ]
        );
    }

    #[test]
    fn repeated_listen_entries_are_dropped_but_port_zero_is_kept() {
        let inst = make(&[("listen", "127.0.0.1:9090 127.0.0.1:9090")]).unwrap();
        assert_eq!(inst.listen.len(), 1);
        let inst = make(&[("listen", "127.0.0.1:0 127.0.0.1:0")]).unwrap();
        assert_eq!(inst.listen.len(), 2);
    }

    #[test]
    fn test_wildcard_listen() {
        let inst = make(&[("listen", "*:8080")]).unwrap();
        assert!(!inst.listen.is_empty());
        let inst = make(&[("listen", "*:8080"), ("ipv6", "false")]).unwrap();
        assert_eq!(pairs(&inst), vec![("0.0.0.0".to_string(), 8080)]);
    }

    #[test]
    fn test_ipv6_no_port() {
        // An IPv6 literal resolves without asking the network, so this holds on any host.
        let inst = make(&[("listen", "[::1]")]).unwrap();
        assert_eq!(pairs(&inst), vec![("::1".to_string(), 8080)]);
        let inst = make(&[("listen", "[::1]:9000")]).unwrap();
        assert_eq!(pairs(&inst), vec![("::1".to_string(), 9000)]);
    }

    #[test]
    fn test_bad_port() {
        let err = make(&[("listen", "127.0.0.1:test")]).unwrap_err();
        if cfg!(windows) {
            // Not a number, so a service name: refused on Windows before any lookup.
            assert!(err
                .to_string()
                .starts_with("Windows does not support service names"));
            return;
        }
        assert!(matches!(err, AdjustmentsError::InvalidListen(_)));
        assert!(err.to_string().starts_with("Invalid host/port specified."));
    }

    #[test]
    fn test_service_port() {
        if cfg!(windows) {
            let err = make(&[("listen", "127.0.0.1:http")]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "Windows does not support service names instead of port numbers"
            );
            return;
        }
        if parse_port("http").is_none() || parse_port("https").is_none() {
            // Without an /etc/services entry a service name is no port: refused.
            let err = make(&[("listen", "127.0.0.1:http")]).unwrap_err();
            assert!(matches!(err, AdjustmentsError::InvalidListen(_)));
            return;
        }
        let inst = make(&[("listen", "127.0.0.1:http 0.0.0.0:https")]).unwrap();
        assert_eq!(
            pairs(&inst),
            vec![("127.0.0.1".to_string(), 80), ("0.0.0.0".to_string(), 443)]
        );
    }

    #[test]
    fn test_dont_mix_host_port_listen() {
        let err = make(&[
            ("host", "localhost"),
            ("port", "8080"),
            ("listen", "127.0.0.1:8080"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host or port may not be set if listen is set."
        );
    }

    fn tcp_socket() -> PreboundSocket {
        PreboundSocket::Tcp(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    #[test]
    fn test_good_sockets() {
        let mut sockets = vec![tcp_socket()];
        if has_ipv6() {
            sockets.push(PreboundSocket::Tcp(TcpListener::bind("[::1]:0").unwrap()));
        }
        let count = sockets.len();
        let inst = Adjustments::with_sockets(Vec::<(&str, &str)>::new(), sockets).unwrap();
        assert_eq!(inst.sockets.len(), count);
    }

    #[test]
    fn test_dont_mix_sockets_and_listen() {
        let err = Adjustments::with_sockets([("listen", "127.0.0.1:8080")], vec![tcp_socket()])
            .unwrap_err();
        assert_eq!(err.to_string(), "sockets may not be set if listen is set.");
    }

    #[test]
    fn test_dont_mix_sockets_and_host_port() {
        let err = Adjustments::with_sockets(
            [("host", "localhost"), ("port", "8080")],
            vec![tcp_socket()],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host or port may not be set if sockets is set."
        );
    }

    #[test]
    fn test_dont_mix_sockets_and_unix_socket() {
        let err = Adjustments::with_sockets([("unix_socket", "./tmp/test")], vec![tcp_socket()])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unix_socket may not be set if sockets is set"
        );
    }

    #[test]
    fn test_dont_mix_unix_socket_and_host_port() {
        let err = make(&[
            ("unix_socket", "./tmp/test"),
            ("host", "localhost"),
            ("port", "8080"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unix_socket may not be set if host or port is set"
        );
    }

    #[test]
    fn test_dont_mix_unix_socket_and_listen() {
        let err = make(&[("unix_socket", "./tmp/test"), ("listen", "127.0.0.1:8080")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unix_socket may not be set if listen is set"
        );
    }

    #[test]
    fn unix_socket_is_refused_on_windows_only() {
        let result = make(&[("unix_socket", "./tmp/test")]);
        if cfg!(windows) {
            assert_eq!(
                result.unwrap_err().command_line_message(),
                "--unix-socket: Unix domain sockets are not available on Windows"
            );
        } else {
            assert_eq!(
                result.unwrap().unix_socket,
                Some(PathBuf::from("./tmp/test"))
            );
        }
    }

    #[test]
    fn test_dont_mix_forwarded_with_x_forwarded() {
        let err = make(&[
            ("trusted_proxy", "localhost"),
            ("trusted_proxy_headers", "forwarded x-forwarded-for"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("The Forwarded proxy header"));
    }

    #[test]
    fn test_unknown_trusted_proxy_header() {
        let err = make(&[
            ("trusted_proxy", "localhost"),
            ("trusted_proxy_headers", "forwarded x-forwarded-unknown"),
        ])
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("unknown trusted_proxy_headers value (x-forwarded-unknown)"));
    }

    #[test]
    fn test_trusted_proxy_count_no_trusted_proxy() {
        let err = make(&[("trusted_proxy_count", "1")]).unwrap_err();
        assert!(err
            .to_string()
            .contains("trusted_proxy_count has no meaning"));
    }

    #[test]
    fn test_trusted_proxy_headers_no_trusted_proxy() {
        let err = make(&[("trusted_proxy_headers", "forwarded")]).unwrap_err();
        assert!(err
            .to_string()
            .contains("trusted_proxy_headers has no meaning"));
    }

    #[test]
    fn test_trusted_proxy_headers_string_list() {
        let inst = make(&[
            ("trusted_proxy", "localhost"),
            ("trusted_proxy_headers", "x-forwarded-for x-forwarded-by"),
        ])
        .unwrap();
        assert_eq!(
            inst.trusted_proxy_headers,
            asset("x-forwarded-for x-forwarded-by")
        );
    }

    #[test]
    fn test_trusted_proxy_headers_string_list_newlines() {
        let inst = make(&[
            ("trusted_proxy", "localhost"),
            (
                "trusted_proxy_headers",
                "x-forwarded-for\nx-forwarded-by\nx-forwarded-host",
            ),
        ])
        .unwrap();
        assert_eq!(inst.trusted_proxy_headers.len(), 3);
        assert!(inst.trusted_proxy_headers.contains("x-forwarded-host"));
    }

    #[test]
    fn test_no_trusted_proxy_headers_trusted_proxy() {
        // waitress warns with a DeprecationWarning; here the warning goes to the log.
        let (inst, logged) = capture_logs(|| make(&[("trusted_proxy", "localhost")]));
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].starts_with("WARNING:waitress:"));
        assert!(logged[0].contains("Implicitly trusting X-Forwarded-Proto"));
        assert_eq!(
            inst.unwrap().trusted_proxy_headers,
            asset("x-forwarded-proto")
        );
    }

    #[test]
    fn test_deprecated_send_bytes() {
        let (inst, logged) = capture_logs(|| make(&[("send_bytes", "1")]));
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].starts_with("WARNING:waitress:"));
        assert!(logged[0].contains("send_bytes"));
        assert_eq!(inst.unwrap().send_bytes, 1);
    }

    #[test]
    fn test_badvar() {
        let err = make(&[("nope", "True")]).unwrap_err();
        assert_eq!(err, AdjustmentsError::UnknownSetting("nope".to_string()));
        assert_eq!(err.to_string(), "Unknown adjustment 'nope'");
    }

    #[test]
    fn bad_numbers_are_refused_with_the_setting_name() {
        let message = |kw: &[(&str, &str)]| make(kw).unwrap_err().to_string();
        assert_eq!(
            message(&[("threads", "many")]),
            "bad value for threads: 'many' is not a whole number"
        );
        assert_eq!(
            message(&[("threads", "0")]),
            "bad value for threads: at least one thread is needed"
        );
        assert_eq!(
            message(&[("port", "70000")]),
            "bad value for port: 70000 is out of range (0 to 65535)"
        );
        assert_eq!(
            message(&[("port", "-1")]),
            "bad value for port: -1 is out of range (0 to 65535)"
        );
        assert_eq!(
            message(&[("unix_socket_perms", "9")]),
            "bad value for unix_socket_perms: '9' is not an octal number (such as 600 or 0o600)"
        );
        assert_eq!(make(&[("port", " +80 ")]).unwrap().port, 80);
    }

    #[test]
    fn errors_name_options_on_the_command_line() {
        let err = make(&[("channel_timeout", "abc")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad value for channel_timeout: 'abc' is not a whole number"
        );
        assert_eq!(
            err.command_line_message(),
            "bad value for --channel-timeout: 'abc' is not a whole number"
        );
        let err = make(&[("listen", "127.0.0.1:8080"), ("port", "1")]).unwrap_err();
        assert_eq!(
            err.command_line_message(),
            "--host or --port may not be set if --listen is set."
        );
        let err = make(&[
            ("trusted_proxy", "localhost"),
            ("trusted_proxy_headers", "forwarded x-forwarded-for"),
        ])
        .unwrap_err();
        // Braces that do not hold a setting name stay as they are.
        assert!(err
            .command_line_message()
            .contains("X-Forwarded-{By,Host,Proto,Port,For}"));
        let err = make(&[("trusted_proxy_headers", "forwarded")]).unwrap_err();
        assert_eq!(
            err.command_line_message(),
            "--trusted-proxy-headers has no meaning without setting --trusted-proxy"
        );
    }

    #[test]
    fn log_level_is_a_setting_and_an_option() {
        assert_eq!(make(&[]).unwrap().log_level, None);
        let inst = make(&[("log_level", "info,waitress.queue=error")]).unwrap();
        assert_eq!(
            inst.log_level,
            Some(LogLevels::parse("info,waitress.queue=error").unwrap())
        );
        let err = make(&[("log_level", "loud")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad value for log_level: 'loud' is not a log level (debug, info, warning, error, critical)"
        );
        assert!(err
            .command_line_message()
            .starts_with("bad value for --log-level: 'loud'"));
        let opts = parse(&["--log-level=error,waitress=info"]).unwrap();
        assert_eq!(opts.get("log_level"), Some("error,waitress=info"));
        // The callers that apply it early read the last one given, as `new` does.
        let kw = [("log_level", "loud"), ("log_level", "error")];
        assert_eq!(
            log_level_setting(&kw).unwrap(),
            Some(LogLevels::parse("error").unwrap())
        );
        assert_eq!(log_level_setting(&[("threads", "2")]).unwrap(), None);
        assert!(log_level_setting(&[("log_level", "")]).is_err());
    }

    #[test]
    fn no_message_speaks_python() {
        for kw in [
            &[("port", "abc")][..],
            &[("threads", "1.5")],
            &[("unix_socket_perms", "abc")],
            &[("backlog", "99999999999")],
        ] {
            let err = make(kw).unwrap_err();
            for text in [err.to_string(), err.command_line_message()] {
                assert!(!text.contains("int()"), "{text}");
                assert!(!text.contains("literal"), "{text}");
            }
        }
    }

    #[test]
    fn both_families_off_listens_on_both_as_waitress_does() {
        assert_eq!(enabled_families(false, false, true), Ok((true, true)));
        assert_eq!(enabled_families(true, true, true), Ok((true, true)));
        assert_eq!(enabled_families(true, false, true), Ok((true, false)));
        assert_eq!(enabled_families(false, true, true), Ok((false, true)));
        // Without IPv4, a host lacking IPv6 is refused, whatever `ipv6` says.
        for ipv6 in [false, true] {
            assert_eq!(
                enabled_families(false, ipv6, false)
                    .unwrap_err()
                    .to_string(),
                "IPv4 is disabled but IPv6 is not available. Cowardly refusing to start."
            );
        }
        assert_eq!(enabled_families(true, false, false), Ok((true, false)));
        assert_eq!(enabled_families(true, true, false), Ok((true, true)));
    }

    #[test]
    fn no_ipv4_no_ipv6_resolves_both_families() {
        let kw = [
            ("ipv4", "false"),
            ("ipv6", "false"),
            ("listen", "127.0.0.1:8080 [::1]:8080"),
        ];
        if host_has_ipv6() {
            let inst = make(&kw).unwrap();
            assert!(inst.listen.iter().any(|a| a.is_ipv4()));
            assert!(inst.listen.iter().any(|a| a.is_ipv6()));
        } else {
            assert!(make(&kw).unwrap_err().to_string().contains("Cowardly"));
        }
    }

    #[test]
    fn test_ipv4_disabled() {
        assert!(make(&[("ipv4", "false"), ("listen", "127.0.0.1:8080")]).is_err());
    }

    #[test]
    fn test_ipv6_disabled() {
        assert!(make(&[("ipv6", "false"), ("listen", "[::]:8080")]).is_err());
    }

    #[test]
    fn test_server_header_removable() {
        assert_eq!(make(&[("ident", "")]).unwrap().ident, None);
        assert_eq!(
            make(&[("ident", "specific_header")])
                .unwrap()
                .ident
                .as_deref(),
            Some("specific_header")
        );
    }

    #[test]
    #[cfg(unix)]
    fn test_dont_mix_internet_and_unix_sockets() {
        let dir = std::env::temp_dir().join(format!("waitress-adj-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mix.sock");
        let _ = std::fs::remove_file(&path);
        let unix = PreboundSocket::Unix(UnixListener::bind(&path).unwrap());
        let err = Adjustments::with_sockets(Vec::<(&str, &str)>::new(), vec![tcp_socket(), unix])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Internet and UNIX sockets may not be mixed."
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // TestCLI

    fn parse(argv: &[&str]) -> Result<ParsedArgs, ArgsError> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        Adjustments::parse_args(&argv)
    }

    #[test]
    fn test_noargs() {
        // waitress refuses with AppResolutionError; here no name is not an error: the runner
        // serves its default application (a difference listed in the README).
        let opts = parse(&[]).unwrap();
        assert_eq!(opts.app, None);
        assert!(!opts.help);
    }

    #[test]
    fn test_help() {
        let opts = parse(&["--help"]).unwrap();
        assert!(opts.help);
        assert_eq!(opts.app, None);
        assert!(opts.kw.is_empty());
    }

    // waitress resolves `module:object` while parsing; here the name is kept and the
    // runner's registry resolves it, so these check both steps.

    /// The application that `registry` builds for the name the command line chose.
    fn chosen_app(registry: &crate::runner::AppRegistry, argv: &[&str]) -> crate::app::SharedApp {
        let name = parse(argv).unwrap().app.expect("an application was named");
        registry.build(&name).unwrap()
    }

    #[test]
    fn test_app_flag() {
        let registry = crate::apps::registry();
        let expected = registry.build("hello").unwrap();
        for argv in [&["--app=hello"][..], &["--app", "hello"]] {
            assert!(std::sync::Arc::ptr_eq(
                &chosen_app(&registry, argv),
                &expected
            ));
        }
    }

    #[test]
    fn test_call() {
        let app: crate::app::SharedApp = std::sync::Arc::new(crate::apps::hello);
        let mut registry = crate::runner::AppRegistry::new();
        let returned = std::sync::Arc::clone(&app);
        registry.register("returns_app", "a factory", move || {
            std::sync::Arc::clone(&returned)
        });
        assert!(parse(&["--app=returns_app", "--call"]).unwrap().call);
        let chosen = chosen_app(&registry, &["--app=returns_app", "--call"]);
        assert!(std::sync::Arc::ptr_eq(&chosen, &app));
    }

    #[test]
    fn test_app_arg() {
        let registry = crate::apps::registry();
        let expected = registry.build("echo").unwrap();
        assert!(std::sync::Arc::ptr_eq(
            &chosen_app(&registry, &["echo"]),
            &expected
        ));
    }

    #[test]
    fn test_excess() {
        let err = parse(&["hello", "hello"]).unwrap_err();
        assert_eq!(err.to_string(), "Provide only one WSGI app");
    }

    #[test]
    fn test_positive_boolean() {
        let opts = parse(&["--expose-tracebacks", "app"]).unwrap();
        assert_eq!(opts.get("expose_tracebacks"), Some("true"));
    }

    #[test]
    fn test_negative_boolean() {
        let opts = parse(&["--no-expose-tracebacks", "app"]).unwrap();
        assert_eq!(opts.get("expose_tracebacks"), Some("false"));
    }

    #[test]
    fn test_cast_params() {
        let opts = parse(&[
            "--host=localhost",
            "--port",
            "80",
            "--unix-socket-perms=777",
            "app",
        ])
        .unwrap();
        assert_eq!(opts.get("host"), Some("localhost"));
        assert_eq!(opts.get("port"), Some("80"));
        assert_eq!(opts.get("unix_socket_perms"), Some("777"));
    }

    #[test]
    fn test_listen_params() {
        let opts = parse(&["--listen=test:80", "app"]).unwrap();
        assert_eq!(opts.get("listen"), Some(" test:80"));
    }

    #[test]
    fn test_multiple_listen_params() {
        let opts = parse(&["--listen=test:80", "--listen=test:8080", "app"]).unwrap();
        assert_eq!(opts.get("listen"), Some(" test:80 test:8080"));
    }

    #[test]
    fn test_bad_param() {
        let err = parse(&["--no-host"]).unwrap_err();
        assert_eq!(err.to_string(), "option --no-host not recognized");
        let err = parse(&["--port"]).unwrap_err();
        assert_eq!(err.to_string(), "option --port requires argument");
        let err = parse(&["--help=yes"]).unwrap_err();
        assert_eq!(err.to_string(), "option --help must not have an argument");
        let err = parse(&["-x"]).unwrap_err();
        assert_eq!(err.to_string(), "option -x not recognized");
    }

    #[test]
    fn unique_prefixes_are_accepted_as_getopt_does() {
        assert_eq!(parse(&["--thr=3"]).unwrap().get("threads"), Some("3"));
        let err = parse(&["--trusted"]).unwrap_err();
        assert!(err.to_string().contains("not a unique prefix"));
    }

    #[test]
    fn parsed_args_feed_new() {
        let opts = parse(&["--listen=127.0.0.1:0", "--threads=2", "--no-ipv6"]).unwrap();
        let adj = Adjustments::new(opts.kw).unwrap();
        assert_eq!(adj.threads, 2);
        assert!(!adj.ipv6);
        assert_eq!(adj.listen.len(), 1);
    }
}
