//! Port of waitress/adjustments.py.
//!
//! `Adjustments` holds every tunable setting of the server with waitress's name, default and
//! converter. It is built once, from key/value string pairs (waitress's `**kw`) or from the
//! command line (`parse_args`), validated, and then shared read-only by every thread.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// A socket handed to the server already bound (waitress: the `sockets` setting, used for
/// socket activation).
#[derive(Debug)]
pub enum PreboundSocket {
    /// A bound TCP socket (IPv4 or IPv6).
    Tcp(TcpListener),
    /// A bound Unix-domain socket.
    Unix(UnixListener),
}

/// Every setting of the server.
///
/// waitress: `Adjustments`. The fields appear in the order of waitress's class attributes; the
/// comment on each gives waitress's converter.
#[derive(Debug)]
pub struct Adjustments {
    /// Host to listen on (`str`, default `0.0.0.0`). Mutually exclusive with `listen`.
    pub host: String,
    /// TCP port to listen on (`int`, default 8080). Mutually exclusive with `listen`.
    pub port: u16,
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
            log_socket_errors: true,
            max_request_header_size: 262_144,
            max_request_body_size: 1_073_741_824,
            expose_tracebacks: false,
            asyncore_loop_timeout: 1,
            asyncore_use_poll: false,
            unix_socket: None,
            unix_socket_perms: 0o600,
            sockets: Vec::new(),
            channel_request_lookahead: 0,
            server_name: "waitress.invalid".to_string(),
            socket_options: vec![(SOL_TCP, TCP_NODELAY, 1)],
        }
    }
}
