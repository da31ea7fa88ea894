//! Port of waitress/server.py.
//!
//! `create_server` builds the listening sockets (TCP on every resolved address, a Unix socket,
//! or sockets bound by the caller), the trigger, the worker pool and the socket map, and
//! returns a [`WsgiServer`] whose `run` is the I/O thread's loop. Each listening socket is a
//! dispatcher in the map: it accepts connections into channels, stops accepting at
//! `connection_limit`, and marks idle channels for closing every `cleanup_interval`. Everything
//! here runs on the I/O thread; other threads reach the server through a [`ShutdownHandle`].
//!
//! The items follow server.py's order. Where Rust gave a job to an item of another name:
//!
//! | waitress (server.py)                     | here |
//! |------------------------------------------|------|
//! | `create_server(application, **kw)`       | [`create_server`]; [`create_server_with`] takes ready `Adjustments` |
//! | `MultiSocketServer`                      | [`WsgiServer`], returned for one listener or many (waitress returns the single `TcpWSGIServer` when there is one) |
//! | `MultiSocketServer.print_listen`, `run`, `close` | `WsgiServer::print_listen`, `run`, `close` |
//! | `BaseWSGIServer`                         | `BaseWsgiServer`: one listening socket in the map |
//! | `BaseWSGIServer.bind_server_socket`      | `TcpWsgiServer::bind_server_socket`, `UnixWsgiServer::bind_server_socket` |
//! | `BaseWSGIServer.getsockname`             | `TcpWsgiServer::getsockname`, `UnixWsgiServer::getsockname` |
//! | `BaseWSGIServer.accept_connections`      | `accept_connections`: `listen` with `backlog` |
//! | `BaseWSGIServer.add_task`, `pull_trigger`| the channel calls the worker pool and the trigger through its `ChannelServer` |
//! | `readable`, `writable`, `handle_accept`, `set_socket_options`, `fix_addr`, `maintenance`, `close` | `BaseWsgiServer` methods of those names (`close` is `handle_close`) |
//! | `handle_read`, `handle_connect`          | none: a listener's read event is `handle_accept`, and it never connects |
//! | `BaseWSGIServer.run`, `print_listen`     | `WsgiServer::run`, `print_listen` |
//! | `TcpWSGIServer`, `UnixWSGIServer`        | `TcpWsgiServer`, `UnixWsgiServer`: the socket of a `BaseWsgiServer` |
//! | `sockets` (prebound)                     | `adopt` |
//! | `get_server_name` (waitress before 2.0)  | none: waitress 3 takes `server_name` from the setting, and so does `create_server_with` |
//! | `WSGIServer` (alias)                     | none |
//!
//! Rust-only: [`ServerError`] (waitress raises `OSError`/`ValueError`), [`ShutdownHandle`]
//! (waitress stops on `SystemExit`/`KeyboardInterrupt` raised inside the loop), `Drop`
//! (a dropped server closes itself), and the graceful shutdown (`shutdown_timeout`:
//! `ShutdownHandle::shutdown_gracefully`, with `Drain` and `WsgiServer::start_draining` and
//! `drained` in the loop).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
#[cfg(unix)]
use std::os::unix::net::UnixListener;
use std::path::Path;
#[cfg(unix)]
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::adjustments::{Adjustments, AdjustmentsError, PreboundSocket};
use crate::app::{App, SharedApp};
use crate::channel::{ChannelServer, ChannelStream, HttpChannel};
use crate::compat::{
    self, AsSocket, RawSocket, IPPROTO_IPV6, IPPROTO_TCP, IPV6_V6ONLY, SOL_SOCKET, SO_REUSEADDR,
    TCP_NODELAY,
};
use crate::profiling::{self, Stage};
use crate::proxy_headers::proxy_headers_middleware;
use crate::task::{PeerAddr, ServerInfo, ThreadedTaskDispatcher};
use crate::trigger::{Trigger, TriggerHandle};
use crate::utilities;
#[cfg(unix)]
use crate::utilities::cleanup_unix_socket;
use crate::utilities::LOGGER;
use crate::wasyncore::{self, Dispatcher, SocketMap, WeakSocketMap};

/// Why a server could not be built or run.
#[derive(Debug)]
pub enum ServerError {
    /// A setting was refused.
    Adjustments(AdjustmentsError),
    /// A listening socket could not be created or bound.
    Bind {
        /// The address (or Unix socket path) that failed.
        address: String,
        /// What the system said.
        source: io::Error,
    },
    /// Any other system error.
    Io(io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Adjustments(e) => write!(f, "{e}"),
            ServerError::Bind { address, source } => {
                write!(f, "could not listen on {address}: {source}")
            }
            ServerError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Adjustments(e) => Some(e),
            ServerError::Bind { source, .. } => Some(source),
            ServerError::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for ServerError {
    fn from(e: io::Error) -> Self {
        ServerError::Io(e)
    }
}

impl From<AdjustmentsError> for ServerError {
    fn from(e: AdjustmentsError) -> Self {
        ServerError::Adjustments(e)
    }
}

/// Build a server for `app` from waitress's settings as name/value pairs (waitress:
/// `create_server(application, **kw)`). The server does not run until [`WsgiServer::run`].
///
/// ```
/// use waitress::{AppResult, Body, Environ, StartResponse};
///
/// fn hello(_env: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
///     sr.start("200 OK", [("Content-Type", "text/plain")])?;
///     Ok(Body::from("Hello"))
/// }
///
/// let server = waitress::create_server(hello, [("listen", "127.0.0.1:0")]).unwrap();
/// let port = server.effective_port().tcp().unwrap();
/// assert!(port > 0);
/// let stop = server.shutdown_handle();
/// stop.shutdown();
/// server.run().unwrap(); // returns at once: shutdown was already asked for
/// ```
pub fn create_server<A, I, K, V>(app: A, kw: I) -> Result<WsgiServer, ServerError>
where
    A: App,
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let adj = Adjustments::new(kw)?;
    create_server_with(Arc::new(app), adj)
}

/// Build a server from a shared application and ready settings.
pub fn create_server_with(app: SharedApp, mut adj: Adjustments) -> Result<WsgiServer, ServerError> {
    let sockets = std::mem::take(&mut adj.sockets);
    let adj = Arc::new(adj);
    // waitress wraps the application in BaseWSGIServer's constructor; once here is the same.
    let application = if adj.trusted_proxy.is_some() || adj.clear_untrusted_proxy_headers {
        proxy_headers_middleware(app, &adj)
    } else {
        app
    };
    // Bind everything before starting anything: a bind that fails leaves nothing behind.
    let mut bound: Vec<ServerSocket> = Vec::new();
    if let Some(path) = &adj.unix_socket {
        bound.push(bind_unix_socket(path, &adj)?);
    } else if sockets.is_empty() {
        for addr in &adj.listen {
            bound.push(ServerSocket::Tcp(TcpWsgiServer::bind_server_socket(
                *addr,
                adj.backlog,
            )?));
        }
    } else {
        for socket in sockets {
            bound.push(adopt(socket, adj.backlog)?);
        }
    }
    let map = wasyncore::new_map();
    let trigger = Trigger::new(&map)?;
    let dispatcher = ThreadedTaskDispatcher::new();
    dispatcher.set_thread_count(adj.threads);
    let mut listeners = Vec::new();
    let mut effective_listen = Vec::new();
    for socket in bound {
        let (host, port) = socket.getsockname();
        let info = Arc::new(ServerInfo::new(
            Arc::clone(&application),
            &adj.server_name,
            &port.to_string(),
            Arc::clone(&adj),
        ));
        let channel_server = Rc::new(ChannelServer::new(
            info,
            Arc::clone(&dispatcher),
            trigger.handle(),
        ));
        let listener = BaseWsgiServer::new(socket, channel_server, &map, Arc::clone(&adj));
        effective_listen.push((host, port));
        listeners.push(listener);
    }
    Ok(WsgiServer {
        map,
        listeners,
        trigger,
        dispatcher,
        adj,
        effective_listen,
        stop: Arc::new(AtomicBool::new(false)),
        drain: Arc::new(Drain::default()),
        closed: Cell::new(false),
    })
}

/// Where a listener listens, as waitress's `effective_port` says it: a TCP port number, or
/// the path of a Unix socket. Displays as waitress prints it (the number, or the path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EffectivePort {
    /// A TCP listener's port.
    Tcp(u16),
    /// A Unix-domain listener's socket path.
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

impl EffectivePort {
    /// The TCP port number; `None` for a Unix socket.
    pub fn tcp(&self) -> Option<u16> {
        match self {
            EffectivePort::Tcp(port) => Some(*port),
            #[cfg(unix)]
            EffectivePort::Unix(_) => None,
        }
    }
}

impl std::fmt::Display for EffectivePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EffectivePort::Tcp(port) => write!(f, "{port}"),
            #[cfg(unix)]
            EffectivePort::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A server: listeners, worker pool and event loop (waitress: `MultiSocketServer`, and the
/// single `TcpWSGIServer` or `UnixWSGIServer` that `create_server` returns for one listener).
/// Not `Send`: its socket map belongs to the thread that runs it, so build it on that thread.
pub struct WsgiServer {
    map: SocketMap,
    listeners: Vec<Rc<BaseWsgiServer>>,
    trigger: Rc<Trigger>,
    dispatcher: Arc<ThreadedTaskDispatcher>,
    adj: Arc<Adjustments>,
    effective_listen: Vec<(String, EffectivePort)>,
    stop: Arc<AtomicBool>,
    /// A graceful shutdown asked for by a [`ShutdownHandle`], and its outcome.
    drain: Arc<Drain>,
    /// `close` has run: a second call (from `drop` after `run`) does nothing.
    closed: Cell<bool>,
}

impl fmt::Debug for WsgiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsgiServer")
            .field("effective_listen", &self.effective_listen)
            .finish_non_exhaustive()
    }
}

impl WsgiServer {
    /// Log `format` with each listening host and port, e.g. `"Serving on http://{}:{}"`;
    /// IPv6 hosts get brackets (waitress: `print_listen`).
    pub fn print_listen(&self, format: &str) {
        for (host, port) in &self.effective_listen {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            let line = format
                .replacen("{}", &host, 1)
                .replacen("{}", &port.to_string(), 1);
            LOGGER.info(&line);
        }
    }

    /// Run the event loop on this thread until [`ShutdownHandle::shutdown`] (waitress: `run`).
    /// Then everything is closed: listeners (a Unix socket file this server created is
    /// removed), connections, and the worker pool.
    pub fn run(&self) -> io::Result<()> {
        let loop_timeout = Duration::from_secs(self.adj.asyncore_loop_timeout);
        let mut result = Ok(());
        let mut drain_deadline = None;
        let selector =
            wasyncore::Selector::new(self.adj.asyncore_use_poll, self.adj.asyncore_use_epoll);
        let mut selector = match selector {
            Ok(selector) => selector,
            Err(e) => {
                self.close();
                return Err(e);
            }
        };
        selector.track_changes(self.trigger.change_log());
        while !self.stop.load(Ordering::Acquire) && !self.map.borrow().is_empty() {
            let mut timeout = loop_timeout;
            if drain_deadline.is_none() {
                drain_deadline = self.start_draining();
            }
            if let Some(deadline) = drain_deadline {
                if self.drained(deadline) {
                    break;
                }
                timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
            }
            // The records of a round go out together at its end (see `hold_records`).
            let round = utilities::hold_records(|| selector.round(timeout, &self.map));
            if let Err(e) = round {
                result = Err(e);
                break;
            }
            for listener in &self.listeners {
                listener.server.recycle_requests();
            }
        }
        self.close();
        result
    }

    /// Close the listeners and connections and stop the workers (waitress: `close`). Dropping
    /// the server does the same; closing twice does nothing the second time.
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        for listener in &self.listeners {
            listener.handle_close();
        }
        self.trigger.close();
        wasyncore::close_all(&self.map);
        self.dispatcher.shutdown(true, Duration::from_secs(5));
        self.drain.closed();
        crate::access_log::flush(Duration::from_secs(5));
    }

    /// When a graceful shutdown has been asked for (on the I/O thread, from `run`): close the
    /// listeners at once, and have every channel read nothing more, finish the requests it
    /// has read and then close (idle ones close at once). Returns the deadline for that.
    fn start_draining(&self) -> Option<Instant> {
        let timeout = self.drain.asked()?;
        for listener in &self.listeners {
            listener.handle_close();
        }
        let mut in_flight = 0;
        for listener in &self.listeners {
            for channel in listener.server.active_channels.borrow().values() {
                in_flight += channel.drain();
            }
        }
        LOGGER.info(&format!(
            "Shutting down: {}",
            plural(in_flight, "request", "in flight")
        ));
        Some(Instant::now() + timeout)
    }

    /// Whether a graceful shutdown is over: every connection closed, or the deadline passed
    /// (what is left is then closed by `close`).
    fn drained(&self, deadline: Instant) -> bool {
        let open: usize = self
            .listeners
            .iter()
            .map(|l| l.server.active_channels.borrow().len())
            .sum();
        if open == 0 {
            LOGGER.info("Shutting down: finished");
            self.drain.finished_in_time();
            return true;
        }
        if Instant::now() >= deadline {
            LOGGER.warning(&format!(
                "Shutting down: timed out, {}",
                plural(open, "connection", "closed")
            ));
            return true;
        }
        false
    }

    /// Every (host, port) listened on.
    pub fn effective_listen(&self) -> Vec<(String, EffectivePort)> {
        self.effective_listen.clone()
    }

    /// The host of the first listener (`unix` for a Unix socket).
    pub fn effective_host(&self) -> String {
        self.effective_listen
            .first()
            .map(|(h, _)| h.clone())
            .unwrap_or_default()
    }

    /// The port of the first listener, or its socket path for a Unix socket (waitress:
    /// `effective_port`, an int or the path). Over TCP, [`EffectivePort::tcp`] gives the
    /// number: with port 0 in the settings, the one the system chose.
    pub fn effective_port(&self) -> EffectivePort {
        self.effective_listen
            .first()
            .map(|(_, p)| p.clone())
            .unwrap_or(EffectivePort::Tcp(0))
    }

    /// A handle that stops the server from another thread (or a signal watcher).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            stop: Arc::clone(&self.stop),
            trigger: self.trigger.handle(),
            drain: Arc::clone(&self.drain),
        }
    }

    /// The settings in use.
    pub fn adj(&self) -> &Adjustments {
        &self.adj
    }
}

/// A server dropped without [`WsgiServer::close`] closes itself: its listeners (the port is
/// free again), connections, trigger and worker threads are all released.
impl Drop for WsgiServer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Stops a running server from any thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    stop: Arc<AtomicBool>,
    trigger: TriggerHandle,
    drain: Arc<Drain>,
}

impl ShutdownHandle {
    /// Ask the server to stop: its `run` closes the listeners and connections, stops the
    /// workers and returns.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.trigger.pull_trigger();
    }

    /// Shut the server down gracefully and wait until it has closed (not in waitress, whose
    /// issue #198 asks for it): it stops accepting and closes its listeners at once, reads no
    /// new request, lets every request it has read finish and its response be sent, and
    /// closes idle connections; after `timeout` it closes what is left. A zero `timeout`
    /// stops at once, as [`shutdown`](Self::shutdown) does. Returns whether every request
    /// finished in time.
    ///
    /// Call it from another thread than the one running the server. If that server never
    /// runs (nor is dropped), this gives up waiting `timeout` plus ten seconds from now.
    pub fn shutdown_gracefully(&self, timeout: Duration) -> bool {
        self.begin_graceful_shutdown(timeout);
        self.drain.wait_closed(timeout + Duration::from_secs(10))
    }

    /// Start what [`shutdown_gracefully`](Self::shutdown_gracefully) does, without waiting
    /// (a signal watcher uses it, so that a second signal can still stop the server at once).
    /// A second call keeps the first timeout.
    pub fn begin_graceful_shutdown(&self, timeout: Duration) {
        if timeout.is_zero() {
            self.shutdown();
            return;
        }
        self.drain.ask(timeout);
        self.trigger.pull_trigger();
    }
}

/// A graceful shutdown, shared by the [`ShutdownHandle`]s and the server's loop.
#[derive(Debug, Default)]
struct Drain {
    /// What was asked and how it ended. Taken once per loop round by the I/O thread, and by
    /// the handles.
    state: Mutex<DrainState>,
    /// Waited on by `shutdown_gracefully`; notified by `close` once everything is closed.
    closed: Condvar,
}

#[derive(Debug, Default)]
struct DrainState {
    /// How long requests in flight may take; set by the first ask.
    timeout: Option<Duration>,
    /// Every request finished before the deadline.
    finished_in_time: bool,
    /// The server has closed.
    closed: bool,
}

impl Drain {
    fn lock(&self) -> std::sync::MutexGuard<'_, DrainState> {
        // Nothing panics while holding this lock: a poisoned one still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ask(&self, timeout: Duration) {
        self.lock().timeout.get_or_insert(timeout);
    }

    /// The timeout, once a graceful shutdown has been asked for.
    fn asked(&self) -> Option<Duration> {
        self.lock().timeout
    }

    fn finished_in_time(&self) {
        self.lock().finished_in_time = true;
    }

    fn closed(&self) {
        self.lock().closed = true;
        self.closed.notify_all();
    }

    /// Wait until the server has closed, at most `limit`; returns whether every request
    /// finished in time.
    fn wait_closed(&self, limit: Duration) -> bool {
        let state = self
            .closed
            .wait_timeout_while(self.lock(), limit, |s| !s.closed)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        state.closed && state.finished_in_time
    }
}

/// "3 requests in flight", "1 connection closed".
fn plural(count: usize, noun: &str, tail: &str) -> String {
    let s = if count == 1 { "" } else { "s" };
    format!("{count} {noun}{s} {tail}")
}

/// One listening socket in the map (waitress: `BaseWSGIServer` as a dispatcher).
struct BaseWsgiServer {
    /// The socket's descriptor, its key in the map (kept after the socket is closed).
    fd: RawSocket,
    /// The socket; `None` once closed.
    socket: RefCell<Option<ServerSocket>>,
    /// What the channels of this listener share: application, worker pool, trigger, and the
    /// open channels (`active_channels`).
    server: Rc<ChannelServer>,
    /// The map this listener sits in; weak, since the map holds the listener.
    map: WeakSocketMap,
    adj: Arc<Adjustments>,
    /// Accepting is paused at `connection_limit` (waitress: `in_connection_overflow`).
    in_connection_overflow: Cell<bool>,
    /// When `readable` next runs `maintenance` (waitress: `next_channel_cleanup`).
    next_channel_cleanup: Cell<Instant>,
}

impl BaseWsgiServer {
    /// Wrap a bound, listening socket and add it to `map`.
    fn new(
        socket: ServerSocket,
        server: Rc<ChannelServer>,
        map: &SocketMap,
        adj: Arc<Adjustments>,
    ) -> Rc<BaseWsgiServer> {
        let listener = Rc::new(BaseWsgiServer {
            fd: socket.raw_socket(),
            socket: RefCell::new(Some(socket)),
            server,
            map: Rc::downgrade(map),
            adj,
            in_connection_overflow: Cell::new(false),
            next_channel_cleanup: Cell::new(Instant::now()),
        });
        map.borrow_mut()
            .insert(listener.fd, Rc::clone(&listener) as Rc<dyn Dispatcher>);
        listener
    }

    /// Accept one connection (waitress: `handle_accept`). A failed `accept` or socket option
    /// is logged (with `log_socket_errors`) and the server carries on.
    fn handle_accept(&self) {
        let started = profiling::start();
        let accepted = match self.socket.borrow().as_ref() {
            None => return,
            Some(socket) => socket.accept(&self.adj),
        };
        match accepted {
            Ok((stream, _))
                if !wasyncore::can_watch(
                    stream.raw_socket(),
                    self.adj.asyncore_use_poll || self.adj.asyncore_use_epoll,
                ) =>
            {
                // Past select()'s limit the whole loop would fail; refuse this one connection.
                #[cfg(unix)]
                LOGGER.warning(&format!(
                    "refused a connection: descriptor {} is beyond select()'s limit of {}; set asyncore_use_poll to serve more connections",
                    stream.raw_socket(),
                    compat::FD_SETSIZE
                ));
            }
            Ok((stream, addr)) => {
                let created = match self.map.upgrade() {
                    Some(map) => {
                        HttpChannel::create(&self.server, stream, addr, Arc::clone(&self.adj), &map)
                    }
                    // The server is gone: the connection is dropped, hence closed.
                    None => return,
                };
                if let Err(e) = created {
                    LOGGER.warning(&format!("could not set up the connection: {e}"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                if self.adj.log_socket_errors {
                    LOGGER.warning(&format!("server accept() threw an exception\n{e}"));
                }
            }
        }
        profiling::finish(Stage::Accept, started);
    }

    /// Mark channels idle past `channel_timeout` for closing (waitress: `maintenance`).
    fn maintenance(&self, now: Instant) {
        let timeout = Duration::from_secs(self.adj.channel_timeout);
        for channel in self.server.active_channels.borrow().values() {
            if !channel.has_requests() && now.duration_since(channel.last_activity()) > timeout {
                channel.set_will_close();
            }
        }
    }
}

impl Dispatcher for BaseWsgiServer {
    fn fileno(&self) -> RawSocket {
        self.fd
    }

    /// Also the hook for the idle sweep, and where `connection_limit` pauses accepting; a
    /// closed listener is never readable.
    fn readable(&self) -> bool {
        let now = Instant::now();
        if now >= self.next_channel_cleanup.get() {
            self.next_channel_cleanup
                .set(now + Duration::from_secs(self.adj.cleanup_interval));
            self.maintenance(now);
        }
        if self.socket.borrow().is_none() {
            // Closed: no longer accepting (waitress: `accepting` is false).
            return false;
        }
        let open = self.map.upgrade().map_or(0, |map| map.borrow().len());
        if !self.in_connection_overflow.get() && open >= self.adj.connection_limit {
            self.in_connection_overflow.set(true);
            LOGGER.warning(
                "total open connections reached the connection limit, no longer accepting new connections",
            );
        } else if self.in_connection_overflow.get() && open < self.adj.connection_limit {
            self.in_connection_overflow.set(false);
            LOGGER
                .info("total open connections dropped below the connection limit, listening again");
        }
        !self.in_connection_overflow.get()
    }

    fn writable(&self) -> bool {
        false
    }

    fn handle_read_event(&self) {
        self.handle_accept();
    }

    fn handle_write_event(&self) {}

    /// Leave the map and close the socket, at once: the port (or socket file) is free when
    /// this returns (waitress: `close`). Closing twice does nothing the second time.
    fn handle_close(&self) {
        if let Some(map) = self.map.upgrade() {
            map.borrow_mut().remove(&self.fd);
        }
        // Dropping the socket closes it (and removes a Unix socket file this server made).
        drop(self.socket.borrow_mut().take());
    }
}

/// The socket of a `BaseWsgiServer`: waitress's two subclasses become two variants.
enum ServerSocket {
    Tcp(TcpWsgiServer),
    #[cfg(unix)]
    Unix(UnixWsgiServer),
}

impl ServerSocket {
    fn raw_socket(&self) -> RawSocket {
        match self {
            ServerSocket::Tcp(s) => compat::raw_socket(&s.listener),
            #[cfg(unix)]
            ServerSocket::Unix(s) => compat::raw_socket(&s.listener),
        }
    }

    /// The host and port as waitress reports them (waitress: `getsockname`).
    fn getsockname(&self) -> (String, EffectivePort) {
        match self {
            ServerSocket::Tcp(s) => s.getsockname(),
            #[cfg(unix)]
            ServerSocket::Unix(s) => s.getsockname(),
        }
    }

    /// One `accept`, with the socket options set and the peer address fixed up.
    fn accept(&self, adj: &Adjustments) -> io::Result<(ChannelStream, PeerAddr)> {
        match self {
            ServerSocket::Tcp(s) => {
                let (conn, addr) = s.listener.accept()?;
                TcpWsgiServer::set_socket_options(&conn, adj)?;
                Ok((ChannelStream::Tcp(conn), TcpWsgiServer::fix_addr(addr)))
            }
            #[cfg(unix)]
            ServerSocket::Unix(s) => {
                let (conn, _) = s.listener.accept()?;
                Ok((ChannelStream::Unix(conn), UnixWsgiServer::fix_addr()))
            }
        }
    }
}

/// Put a bound socket in listening mode with the configured backlog (waitress:
/// `accept_connections`). The caller makes it non-blocking, as waitress's `set_socket` does.
fn accept_connections(socket: &impl AsSocket, backlog: i32) -> io::Result<()> {
    compat::listen_on(socket, backlog)
}

/// A TCP listening socket (waitress: `TcpWSGIServer`).
struct TcpWsgiServer {
    listener: TcpListener,
}

impl TcpWsgiServer {
    /// Create, configure, bind and listen, IPv4 and IPv6 alike: `SO_REUSEADDR` always, and
    /// `IPV6_V6ONLY` for IPv6 so that `0.0.0.0` and `::` can both be bound on one port
    /// (waitress: `create_socket`, `set_reuse_addr`, `bind_server_socket`,
    /// `accept_connections`).
    fn bind_server_socket(addr: SocketAddr, backlog: i32) -> Result<TcpWsgiServer, ServerError> {
        let fail = |source| ServerError::Bind {
            address: addr.to_string(),
            source,
        };
        let socket = compat::tcp_socket(addr.is_ipv6()).map_err(fail)?;
        if addr.is_ipv6() {
            compat::set_int_option(&socket, IPPROTO_IPV6, IPV6_V6ONLY, 1).map_err(fail)?;
        }
        compat::set_int_option(&socket, SOL_SOCKET, SO_REUSEADDR, 1).map_err(fail)?;
        compat::bind_to(&socket, &addr).map_err(fail)?;
        accept_connections(&socket, backlog).map_err(fail)?;
        let listener = TcpListener::from(socket);
        listener.set_nonblocking(true).map_err(fail)?;
        Ok(TcpWsgiServer { listener })
    }

    /// The numeric host and port (waitress: `getnameinfo` with `NI_NUMERICHOST`).
    fn getsockname(&self) -> (String, EffectivePort) {
        match self.listener.local_addr() {
            Ok(addr) => (addr.ip().to_string(), EffectivePort::Tcp(addr.port())),
            Err(_) => (String::new(), EffectivePort::Tcp(0)),
        }
    }

    /// Apply `socket_options` to an accepted connection (waitress: `set_socket_options`).
    fn set_socket_options(conn: &TcpStream, adj: &Adjustments) -> io::Result<()> {
        for &(level, name, value) in &adj.socket_options {
            if level == IPPROTO_TCP && name == TCP_NODELAY {
                conn.set_nodelay(value != 0)?;
            } else {
                compat::set_int_option(conn, level, name, value)?;
            }
        }
        Ok(())
    }

    /// The peer as the channel reports it (waitress: `fix_addr`, which keeps it as it is).
    fn fix_addr(addr: SocketAddr) -> PeerAddr {
        PeerAddr::new(&addr.ip().to_string(), Some(addr.port()))
    }
}

/// The listener for the `unix_socket` setting.
#[cfg(unix)]
fn bind_unix_socket(path: &Path, adj: &Adjustments) -> Result<ServerSocket, ServerError> {
    Ok(ServerSocket::Unix(UnixWsgiServer::bind_server_socket(
        path, adj,
    )?))
}

/// The `unix_socket` setting on Windows, which has no Unix sockets to offer: `Adjustments`
/// refuses the setting already, this answers for settings built as a typed value.
#[cfg(windows)]
fn bind_unix_socket(path: &Path, _adj: &Adjustments) -> Result<ServerSocket, ServerError> {
    Err(ServerError::Bind {
        address: path.display().to_string(),
        source: io::Error::new(
            io::ErrorKind::Unsupported,
            "Unix domain sockets are not available on Windows",
        ),
    })
}

/// A Unix-domain listening socket (waitress: `UnixWSGIServer`).
#[cfg(unix)]
struct UnixWsgiServer {
    listener: UnixListener,
    path: PathBuf,
    /// The file was created here, so it is removed on close.
    owned: bool,
}

#[cfg(unix)]
impl UnixWsgiServer {
    /// Bind the socket file: a stale socket file is removed first, then `unix_socket_perms` is
    /// applied (waitress: `bind_server_socket`), then listen.
    fn bind_server_socket(path: &Path, adj: &Adjustments) -> Result<UnixWsgiServer, ServerError> {
        let fail = |source| ServerError::Bind {
            address: path.display().to_string(),
            source,
        };
        cleanup_unix_socket(path).map_err(fail)?;
        let listener = UnixListener::bind(path).map_err(fail)?;
        let server = UnixWsgiServer {
            listener,
            path: path.to_path_buf(),
            owned: true,
        };
        let ready =
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(adj.unix_socket_perms))
                .and_then(|()| accept_connections(&server.listener, adj.backlog))
                .and_then(|()| server.listener.set_nonblocking(true));
        // On failure `server` is dropped, which removes the file.
        ready.map(|()| server).map_err(fail)
    }

    /// `("unix", path)` (waitress: `getsockname`).
    fn getsockname(&self) -> (String, EffectivePort) {
        ("unix".to_string(), EffectivePort::Unix(self.path.clone()))
    }

    /// Unix peers have no address: `localhost`, no port (waitress: `fix_addr`).
    fn fix_addr() -> PeerAddr {
        PeerAddr::new("localhost", None)
    }
}

/// Closing a Unix listener removes its socket file if this server made it (waitress leaves
/// it, see the README), also when a later step of `create_server` fails.
#[cfg(unix)]
impl Drop for UnixWsgiServer {
    fn drop(&mut self) {
        if self.owned {
            let _ = cleanup_unix_socket(&self.path);
        }
    }
}

/// Serve a socket the caller bound (waitress: `sockets`); it is put in listening mode.
fn adopt(socket: PreboundSocket, backlog: i32) -> Result<ServerSocket, ServerError> {
    match socket {
        PreboundSocket::Tcp(listener) => {
            accept_connections(&listener, backlog)?;
            listener.set_nonblocking(true)?;
            Ok(ServerSocket::Tcp(TcpWsgiServer { listener }))
        }
        #[cfg(unix)]
        PreboundSocket::Unix(listener) => {
            accept_connections(&listener, backlog)?;
            listener.set_nonblocking(true)?;
            let path = listener
                .local_addr()?
                .as_pathname()
                .map(|p| p.to_path_buf())
                .unwrap_or_default();
            Ok(ServerSocket::Unix(UnixWsgiServer {
                listener,
                path,
                owned: false,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_server.py with real sockets on port 0 instead of waitress's dummy
    //! sockets and dummy dispatcher. Not carried over:
    // test_ctor_app_is_None: an application cannot be None in Rust (the type system refuses it)
    // test_ctor_start_false: no `_start` test shim; create_server always listens
    // test_handle_read: no such method; a listener's read event is handle_accept
    // test_handle_connect: no such method; a listener never connects
    // test_backward_compatibility: no `WSGIServer` alias or Python constructor to keep
    // test_creates_new_sockinfo: `sockinfo` is a Python tuple; test_unix checks the socket kind
    use super::*;
    use crate::app::{AppResult, Body, Environ, StartResponse};
    use crate::task::Service;
    use crate::utilities::capture_logs;
    use std::io::{Read, Write};
    #[cfg(unix)]
    use std::os::unix::net::UnixStream;

    fn hello(_e: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
        sr.start("200 OK", [("Content-Length", "5")])?;
        Ok(Body::from("hello"))
    }

    fn server(kw: &[(&str, &str)]) -> WsgiServer {
        let mut all = vec![("listen", "127.0.0.1:0")];
        all.extend_from_slice(kw);
        create_server(hello, all).unwrap()
    }

    fn listener(server: &WsgiServer) -> Rc<BaseWsgiServer> {
        Rc::clone(&server.listeners[0])
    }

    fn port(server: &WsgiServer) -> u16 {
        server.effective_port().tcp().unwrap()
    }

    /// Accept until the connection the kernel queued shows up as a channel.
    fn accept_one(l: &BaseWsgiServer) -> (RawSocket, Arc<HttpChannel>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            l.handle_accept();
            if let Some((fd, channel)) = l.server.active_channels.borrow().iter().next() {
                return (*fd, Arc::clone(channel));
            }
            assert!(Instant::now() < deadline, "the connection never arrived");
        }
    }

    #[test]
    fn test_ctor_start_true() {
        let s = server(&[]);
        assert!(listener(&s).readable(), "accepting");
        assert_eq!(s.adj().backlog, 1024);
        // Listening before `run`: the kernel completes the connection.
        TcpStream::connect(("127.0.0.1", port(&s))).expect("the socket listens");
    }

    #[test]
    fn test_ctor_makes_dispatcher() {
        let s = server(&[("threads", "2")]);
        assert_eq!(s.dispatcher.thread_count(), 2);
        assert_eq!(s.effective_host(), "127.0.0.1");
        s.close();
        assert_eq!(s.dispatcher.thread_count(), 0);
    }

    #[test]
    fn close_frees_the_port_at_once_and_twice_is_harmless() {
        let s = server(&[]);
        let port = port(&s);
        s.close();
        // The server value still exists, but its listener is closed already.
        drop(TcpListener::bind(("127.0.0.1", port)).expect("the port is free after close"));
        s.close();
        drop(s);
    }

    #[test]
    fn a_failed_create_keeps_no_cycle_alive() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let s = server(&[]);
        let map = Rc::downgrade(&s.map);
        drop(s);
        assert!(
            map.upgrade().is_none(),
            "a dropped server frees its socket map"
        );
        assert!(create_server(hello, [("listen", address.as_str())]).is_err());
    }

    #[test]
    fn test_get_server_multi() {
        let s = create_server(hello, [("listen", "127.0.0.1:0 127.0.0.1:0")]).unwrap();
        assert_eq!(s.effective_listen().len(), 2);
        assert_eq!(s.listeners.len(), 2);
    }

    #[test]
    fn test_bind_failure_names_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let err = create_server(hello, [("listen", address.as_str())]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("could not listen on {address}")),
            "{err}"
        );
    }

    #[test]
    fn test_run() {
        let s = server(&[("threads", "2")]);
        s.shutdown_handle().shutdown();
        s.run().unwrap();
        assert_eq!(s.dispatcher.thread_count(), 0, "the workers were shut down");
        assert!(!listener(&s).readable(), "the listener is closed");
    }

    #[test]
    fn test_run_base_server() {
        let s = create_server(hello, [("listen", "127.0.0.1:0 127.0.0.1:0")]).unwrap();
        s.shutdown_handle().shutdown();
        s.run().unwrap();
        assert_eq!(s.dispatcher.thread_count(), 0, "the workers were shut down");
        assert!(s.map.borrow().is_empty());
    }

    #[test]
    fn test_pull_trigger() {
        let s = server(&[]);
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        listener(&s)
            .server
            .trigger
            .pull_trigger_with(Box::new(move || flag.store(true, Ordering::SeqCst)));
        wasyncore::poll2(Duration::from_secs(30), &s.map).unwrap();
        assert!(ran.load(Ordering::SeqCst), "the pull woke the loop");
    }

    #[test]
    fn test_add_task() {
        struct DummyTask {
            deferred: AtomicBool,
            serviced: AtomicBool,
        }
        impl Service for DummyTask {
            fn service(&self) {
                self.serviced.store(true, Ordering::SeqCst);
            }
            fn cancel(&self) {}
            fn defer(&self) {
                self.deferred.store(true, Ordering::SeqCst);
            }
        }
        let s = server(&[("threads", "1")]);
        let task = Arc::new(DummyTask {
            deferred: AtomicBool::new(false),
            serviced: AtomicBool::new(false),
        });
        listener(&s).server.dispatcher.add_task(task.clone());
        assert!(task.deferred.load(Ordering::SeqCst), "queued");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !task.serviced.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "no worker ran the task");
            std::thread::yield_now();
        }
    }

    #[test]
    fn test_readable_not_accepting() {
        let s = server(&[]);
        let l = listener(&s);
        l.handle_close();
        assert!(!l.readable());
    }

    #[test]
    fn test_readable_maplen_gt_connection_limit() {
        // The map holds the listener and the trigger: 2 >= 1.
        let s = server(&[("connection_limit", "1")]);
        let l = listener(&s);
        assert!(!l.readable());
        assert!(l.in_connection_overflow.get());
    }

    #[test]
    fn test_readable_maplen_lt_connection_limit() {
        let s = server(&[("connection_limit", "3")]);
        let l = listener(&s);
        assert!(l.readable());
        assert!(!l.in_connection_overflow.get());
    }

    #[test]
    fn test_readable_maplen_toggles_connection_overflow() {
        let s = server(&[("connection_limit", "3")]);
        let l = listener(&s);
        // The map holds the listener and the trigger: 2 < 3.
        assert!(!l.in_connection_overflow.get());
        assert!(l.readable());
        let fake = Trigger::new(&s.map).unwrap();
        assert!(!l.readable(), "3 entries reach the limit");
        assert!(l.in_connection_overflow.get());
        fake.close();
        assert!(l.readable(), "below the limit again");
        assert!(!l.in_connection_overflow.get());
    }

    /// A server with one idle connection whose channel `maintenance` would mark.
    fn server_with_idle_channel() -> (WsgiServer, Rc<BaseWsgiServer>, Arc<HttpChannel>, TcpStream) {
        let s = server(&[("channel_timeout", "0")]);
        let l = listener(&s);
        let client = TcpStream::connect(("127.0.0.1", port(&s))).unwrap();
        let (_, channel) = accept_one(&l);
        // Idle for longer than the timeout of 0 seconds.
        let deadline = Instant::now() + Duration::from_secs(30);
        while channel.last_activity().elapsed() == Duration::ZERO {
            assert!(Instant::now() < deadline, "the clock stands still");
            std::thread::yield_now();
        }
        (s, l, channel, client)
    }

    #[test]
    fn test_readable_maintenance_false() {
        let (_s, l, channel, _client) = server_with_idle_channel();
        let then = Instant::now() + Duration::from_secs(1000);
        l.next_channel_cleanup.set(then);
        l.readable();
        assert!(!channel.will_close(), "maintenance did not run");
        assert_eq!(l.next_channel_cleanup.get(), then);
    }

    #[test]
    fn test_readable_maintenance_true() {
        let (_s, l, channel, _client) = server_with_idle_channel();
        let past = Instant::now();
        l.next_channel_cleanup.set(past);
        l.readable();
        assert!(channel.will_close(), "maintenance ran");
        assert!(l.next_channel_cleanup.get() > past);
    }

    #[test]
    fn test_writable() {
        let s = server(&[]);
        assert!(!listener(&s).writable());
    }

    #[test]
    fn test_handle_accept_wouldblock_socket_error() {
        let s = server(&[]);
        let l = listener(&s);
        let before = s.map.borrow().len();
        let (_, logged) = capture_logs(|| l.handle_accept()); // nothing pending: WouldBlock
        assert_eq!(s.map.borrow().len(), before, "nothing accepted");
        assert!(logged.is_empty(), "{logged:?}");
    }

    #[test]
    fn test_handle_accept_other_socket_error() {
        // An option the kernel refuses makes the accepted connection fail as waitress's
        // failing setsockopt does (its macOS case): logged once, no channel.
        let mut adj = Adjustments::new([("listen", "127.0.0.1:0")]).unwrap();
        adj.socket_options = vec![(IPPROTO_TCP, 0x7fff, 1)];
        let s = create_server_with(Arc::new(hello), adj).unwrap();
        let l = listener(&s);
        let _client = TcpStream::connect(("127.0.0.1", port(&s))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let logged = loop {
            let (_, logged) = capture_logs(|| l.handle_accept());
            if !logged.is_empty() {
                break logged;
            }
            assert!(Instant::now() < deadline, "the connection never arrived");
        };
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].starts_with("WARNING:waitress:server accept() threw an exception"));
        assert!(l.server.active_channels.borrow().is_empty());
    }

    #[test]
    fn test_handle_accept_noerror() {
        let s = server(&[]);
        let l = listener(&s);
        let client = TcpStream::connect(("127.0.0.1", port(&s))).unwrap();
        let (fd, _) = accept_one(&l);
        assert_eq!(l.server.active_channels.borrow().len(), 1);
        assert!(s.map.borrow().contains_key(&fd));
        // The socket options were applied to the accepted socket (default: TCP_NODELAY) and
        // the peer address is the client's.
        let other = TcpStream::connect(("127.0.0.1", port(&s))).unwrap();
        let socket = l.socket.borrow();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (stream, addr) = loop {
            match socket.as_ref().unwrap().accept(&l.adj) {
                Ok(accepted) => break accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < deadline, "the connection never arrived");
        };
        match stream {
            ChannelStream::Tcp(conn) => assert!(conn.nodelay().unwrap()),
            #[cfg(unix)]
            ChannelStream::Unix(_) => panic!("a TCP listener gave a Unix stream"),
        }
        let local = other.local_addr().unwrap();
        assert_eq!(addr.host(), local.ip().to_string());
        assert_eq!(addr.port(), Some(local.port()));
        drop(client);
    }

    #[test]
    fn test_maintenance() {
        let (_s, l, channel, _client) = server_with_idle_channel();
        assert!(!channel.will_close());
        l.maintenance(Instant::now());
        assert!(channel.will_close());
    }

    #[test]
    fn test_run_serves_and_shuts_down() {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let s = server(&[]);
            tx.send((s.effective_port(), s.shutdown_handle())).unwrap();
            s.run().unwrap();
        });
        let (port, handle) = rx.recv().unwrap();
        let mut client = TcpStream::connect(("127.0.0.1", port.tcp().unwrap())).unwrap();
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(response.ends_with("\r\n\r\nhello"));
        handle.shutdown();
        thread.join().unwrap();
    }

    fn with_sockets(sockets: Vec<PreboundSocket>) -> WsgiServer {
        let adj = Adjustments::with_sockets(Vec::<(&str, &str)>::new(), sockets).unwrap();
        create_server_with(Arc::new(hello), adj).unwrap()
    }

    #[test]
    fn test_create_with_one_tcp_socket() {
        let bound = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = bound.local_addr().unwrap().port();
        let s = with_sockets(vec![PreboundSocket::Tcp(bound)]);
        assert_eq!(s.effective_port(), EffectivePort::Tcp(port));
        assert!(matches!(
            listener(&s).socket.borrow().as_ref(),
            Some(ServerSocket::Tcp(_))
        ));
    }

    #[test]
    fn test_create_with_multiple_tcp_sockets() {
        let s = with_sockets(vec![
            PreboundSocket::Tcp(TcpListener::bind("127.0.0.1:0").unwrap()),
            PreboundSocket::Tcp(TcpListener::bind("127.0.0.1:0").unwrap()),
        ]);
        assert_eq!(s.effective_listen().len(), 2);
    }

    #[test]
    fn test_create_with_one_socket_should_not_bind_socket() {
        let bound = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = bound.local_addr().unwrap();
        let s = with_sockets(vec![PreboundSocket::Tcp(bound)]);
        // Served where the caller bound it, not bound anew elsewhere.
        assert_eq!(
            s.effective_listen(),
            vec![(address.ip().to_string(), EffectivePort::Tcp(address.port()))]
        );
    }

    #[test]
    fn test_create_with_one_socket_handle_accept_noerror() {
        let bound = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = bound.local_addr().unwrap().port();
        let s = with_sockets(vec![PreboundSocket::Tcp(bound)]);
        let l = listener(&s);
        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (fd, _) = accept_one(&l);
        assert!(s.map.borrow().contains_key(&fd));
        drop(client);
    }

    /// A fresh directory for Unix sockets, removed with the value.
    #[cfg(unix)]
    struct TempDir(PathBuf);

    #[cfg(unix)]
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("waitress-server-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    #[cfg(unix)]
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    #[cfg(unix)]
    fn test_unix() {
        let dir = TempDir::new("unix");
        let path = dir.0.join("u.sock");
        let s = create_server(hello, [("unix_socket", path.to_str().unwrap())]).unwrap();
        assert!(matches!(
            listener(&s).socket.borrow().as_ref(),
            Some(ServerSocket::Unix(_))
        ));
        assert_eq!(s.effective_host(), "unix");
        assert_eq!(s.effective_port(), EffectivePort::Unix(path.clone()));
        assert_eq!(s.effective_port().to_string(), path.display().to_string());
    }

    #[test]
    #[cfg(unix)]
    fn test_handle_accept() {
        let dir = TempDir::new("accept");
        let path = dir.0.join("u.sock");
        let s = create_server(hello, [("unix_socket", path.to_str().unwrap())]).unwrap();
        let l = listener(&s);
        let client = UnixStream::connect(&path).unwrap();
        let (fd, _) = accept_one(&l);
        assert!(s.map.borrow().contains_key(&fd));
        // No socket options on a Unix socket, and the peer is ("localhost", None).
        let _other = UnixStream::connect(&path).unwrap();
        let socket = l.socket.borrow();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            match socket.as_ref().unwrap().accept(&l.adj) {
                Ok((_, addr)) => break addr,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < deadline, "the connection never arrived");
        };
        assert_eq!(addr.host(), "localhost");
        assert_eq!(addr.port(), None);
        drop(client);
    }

    #[test]
    #[cfg(unix)]
    fn test_create_with_unix_socket() {
        let dir = TempDir::new("prebound");
        let sockets = vec![
            PreboundSocket::Unix(UnixListener::bind(dir.0.join("a.sock")).unwrap()),
            PreboundSocket::Unix(UnixListener::bind(dir.0.join("b.sock")).unwrap()),
        ];
        let s = with_sockets(sockets);
        assert_eq!(s.listeners.len(), 2);
        for l in &s.listeners {
            assert!(matches!(
                l.socket.borrow().as_ref(),
                Some(ServerSocket::Unix(_))
            ));
        }
        assert_eq!(s.effective_host(), "unix");
        s.close();
        // The caller's socket files are the caller's: left in place.
        assert!(dir.0.join("a.sock").exists());
    }

    #[test]
    #[cfg(unix)]
    fn unix_socket_setting_replaces_a_stale_file_and_removes_it_on_close() {
        let dir = TempDir::new("stale");
        let path = dir.0.join("u.sock");
        // A stale file from an earlier run is replaced.
        drop(UnixListener::bind(&path).unwrap());
        let s = create_server(hello, [("unix_socket", path.to_str().unwrap())]).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        s.close();
        assert!(!path.exists());
    }

    #[test]
    fn test_ipv4_and_ipv6_wildcards_bind_the_same_port() {
        TcpListener::bind("[::1]:0").expect("this test needs IPv6 (a ::1 loopback)");
        // A free port is found by binding port 0 and letting it go; another process may take
        // it in between, so try a few.
        for _ in 0..10 {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = probe.local_addr().unwrap().port();
            drop(probe);
            let listen = format!("0.0.0.0:{port} [::]:{port}");
            match create_server(hello, [("listen", listen.as_str())]) {
                Ok(s) => {
                    assert_eq!(s.effective_listen().len(), 2);
                    return;
                }
                Err(ServerError::Bind { .. }) => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no port could be bound for 0.0.0.0 and :: at once in ten tries");
    }

    #[test]
    fn test_print_listen_brackets_ipv6() {
        let mut s = server(&[]);
        s.effective_listen = vec![
            ("::1".into(), EffectivePort::Tcp(80)),
            ("127.0.0.1".into(), EffectivePort::Tcp(81)),
        ];
        let (_, lines) = capture_logs(|| s.print_listen("Serving on http://{}:{}"));
        assert_eq!(
            lines,
            vec![
                "INFO:waitress:Serving on http://[::1]:80",
                "INFO:waitress:Serving on http://127.0.0.1:81"
            ]
        );
    }
}
