//! Port of waitress/channel.py.
//!
//! An `HttpChannel` is one client connection. The I/O thread reads from the socket, feeds the
//! bytes to a request parser and hands complete requests to the worker pool; a worker runs
//! them and queues the response, which whoever gets there first sends on the non-blocking
//! socket: usually the worker itself, at once.
//!
//! Who touches what:
//! - the socket, the peer's address and the settings never change after [`HttpChannel::create`]:
//!   both threads use them without a lock;
//! - everything else the I/O thread and a worker share is one `State` behind
//!   `HttpChannel::state`, the one lock that stands for waitress's `requests_lock` and
//!   `outbuf_lock`. It is held for bookkeeping only: never while the application runs, never
//!   across a `send` or a trigger pull (one exception: appending to an output buffer that has
//!   overflowed into a temporary file writes to that file);
//! - to send without the lock, a flusher marks `State::flushing`, moves the queued buffers out,
//!   sends them, and puts back what the socket did not take. Nobody else sends meanwhile, so
//!   bytes leave in order; writers queue behind in `State::outbufs`;
//! - `HttpChannel::room` is the condition waitress's `outbuf_lock` carries: a worker whose
//!   output is past `outbuf_high_watermark` waits on it;
//! - the socket-map entry ([`ChannelDispatcher`]) belongs to the I/O thread alone; it does
//!   waitress's `add_channel`/`del_channel` (in `create` and its `handle_close`);
//! - a request is made on the I/O thread and, once its worker is done with it, handed back
//!   after the next poll round (`ServerInfo::retire`), to be reset there and read the next
//!   request with, or freed (`ChannelServer::recycle_requests`).
//!
//! No atomics: the lock is uncontended in the common case (the I/O thread takes it each time
//! it asks a channel what it wants, which is every poll round or, with epoll, around each
//! event, and twice per read; a worker a few times per request), and an uncontended lock
//! costs no system call.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Instant;

use crate::access_log;
use crate::adjustments::Adjustments;
use crate::app::{ClientConnection, ClientDisconnected, DisconnectCheck};
use crate::buffers::{OverflowableBuffer, ReadOnlyFileBasedBuffer};
use crate::compat::{self, RawSocket};
use crate::parser::HttpRequestParser;
use crate::profiling::{self, Stage};
use crate::task::{
    PeerAddr, ServerInfo, Service, Task, TaskChannel, TaskError, ThreadedTaskDispatcher,
};
use crate::trigger::TriggerHandle;
use crate::utilities::{error_chain, Error, LOGGER};
use crate::wasyncore::{is_disconnected, Dispatcher, SocketMap};

/// The most bytes handed to one `send` (waitress asks the socket for `SO_SNDBUF`, which says
/// 4 MiB on this machine's loopback). Rust-only: a fixed bound, as a chunk of a buffer kept in
/// a file is read into memory before it is sent. With 4 MiB chunks, `bench --scenario
/// download` held 7.8 MiB of resident memory against 2.9–3.0 MiB, at 1,897–2,807 MB/s
/// against 2,520–2,847 (three interleaved runs each, 6 Dec 2026).
const SEND_CHUNK: usize = 256 * 1024;

/// The interim response sent for `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// An accepted connection, switched to non-blocking mode.
#[derive(Debug)]
pub enum ChannelStream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain connection.
    #[cfg(unix)]
    Unix(UnixStream),
}

impl ChannelStream {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ChannelStream::Tcp(s) => (&*s).read(buf),
            #[cfg(unix)]
            ChannelStream::Unix(s) => (&*s).read(buf),
        }
    }

    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ChannelStream::Tcp(s) => (&*s).write(buf),
            #[cfg(unix)]
            ChannelStream::Unix(s) => (&*s).write(buf),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            ChannelStream::Tcp(s) => s.shutdown(Shutdown::Both),
            #[cfg(unix)]
            ChannelStream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl ChannelStream {
    /// The socket's handle, the channel's key in the socket map.
    pub(crate) fn raw_socket(&self) -> RawSocket {
        match self {
            ChannelStream::Tcp(s) => compat::raw_socket(s),
            #[cfg(unix)]
            #[cfg(unix)]
            ChannelStream::Unix(s) => compat::raw_socket(s),
        }
    }
}

/// One pending piece of output: bytes, or a file the application handed over.
#[derive(Debug)]
enum OutBuf {
    Bytes(OverflowableBuffer),
    File(ReadOnlyFileBasedBuffer),
}

impl OutBuf {
    fn len(&self) -> usize {
        match self {
            OutBuf::Bytes(b) => b.len(),
            OutBuf::File(f) => usize::try_from(f.len()).unwrap_or(usize::MAX),
        }
    }

    fn peek(&mut self, max: usize) -> io::Result<&[u8]> {
        match self {
            OutBuf::Bytes(b) => b.peek(max),
            OutBuf::File(f) => f.peek(max),
        }
    }

    fn skip(&mut self, n: usize) -> io::Result<()> {
        match self {
            OutBuf::Bytes(b) => b.skip(n, true),
            OutBuf::File(f) => f.skip(n),
        }
    }

    fn close(&mut self) {
        match self {
            OutBuf::Bytes(b) => b.close(),
            OutBuf::File(f) => f.close(),
        }
    }
}

/// Bytes held by some output buffers (a file past `usize` counts as `usize::MAX`).
fn outbufs_len(bufs: &VecDeque<OutBuf>) -> usize {
    bufs.iter()
        .fold(0, |total, b| total.saturating_add(b.len()))
}

/// How a flush ended badly.
enum FlushError {
    /// The peer has gone.
    Disconnected,
    /// Any other socket error.
    Other(io::Error),
}

/// What one round of sending did: the bytes sent, and whether everything went (`Ok(true)`) or
/// the socket is full (`Ok(false)`).
type Sent = (usize, Result<bool, FlushError>);

/// Send `data` until it is all gone or the socket is full; no lock may be held.
fn send_from(stream: &ChannelStream, data: &[u8]) -> Sent {
    let mut sent = 0;
    while sent < data.len() {
        match stream.send(&data[sent..]) {
            Ok(0) => return (sent, Ok(false)),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (sent, Ok(false)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_disconnected(&e) => return (sent, Err(FlushError::Disconnected)),
            Err(e) => return (sent, Err(FlushError::Other(e))),
        }
    }
    (sent, Ok(true))
}

/// Send buffers front to back, closing each as it empties (the inner loops of waitress's
/// `_flush_some`); no lock may be held.
fn send_outbufs(stream: &ChannelStream, bufs: &mut VecDeque<OutBuf>) -> Sent {
    let mut total = 0;
    while let Some(outbuf) = bufs.front_mut() {
        if outbuf.len() == 0 {
            // Emptied buffers are dropped at once, the last one too (waitress keeps the last
            // one for the next write): an idle connection then holds no output memory (0.68
            // KiB in all per idle connection, `bench --scenario idle-10000`, 6 Dec 2026).
            if let Some(mut done) = bufs.pop_front() {
                done.close();
            }
            continue;
        }
        let chunk = match outbuf.peek(SEND_CHUNK) {
            Ok(chunk) => chunk,
            Err(e) => return (total, Err(FlushError::Other(e))),
        };
        if chunk.is_empty() {
            // A file that ended early: nothing more will come from it.
            outbuf.close();
            continue;
        }
        let (sent, result) = send_from(stream, chunk);
        total += sent;
        if let Err(e) = outbuf.skip(sent) {
            return (total, Err(FlushError::Other(e)));
        }
        match result {
            Ok(true) => {}
            other => return (total, other),
        }
    }
    (total, Ok(true))
}

/// What a channel needs of its server (waitress: `channel.server`).
pub struct ChannelServer {
    /// The application, names and settings.
    pub info: Arc<ServerInfo>,
    /// The worker pool (`add_task`).
    pub dispatcher: Arc<ThreadedTaskDispatcher>,
    /// Wakes the I/O thread (`pull_trigger`).
    pub trigger: TriggerHandle,
    /// Open channels by descriptor, for the idle sweep (waitress: `active_channels`).
    pub active_channels: RefCell<BTreeMap<RawSocket, Arc<HttpChannel>>>,
    /// What the I/O thread reads into, shared by every channel of the server.
    reading: RefCell<Reading>,
    /// The I/O thread's half of the retired requests' list (see [`ServerInfo::retire`]).
    // Boxed on purpose: a request moves between lists as a pointer (see `State::request`).
    #[allow(clippy::vec_box)]
    retired_spare: RefCell<Vec<Box<HttpRequestParser>>>,
}

/// The most parsers of finished requests kept for reuse (see
/// [`ChannelServer::recycle_requests`]): as many requests as a poll round at a few hundred
/// connections finishes, at about 1 KiB each for a short request; the rest are freed.
const MOST_SPARE_REQUESTS: usize = 256;

/// What a channel reads into on the I/O thread: one receive buffer for every channel (a
/// connection costs no read buffer of its own while idle: 0.68 KiB of the server's memory in
/// all per idle connection, `bench --scenario idle-10000`, 6 Dec 2026), and the parsers of
/// finished requests, reset, for the next requests to be read with.
struct Reading {
    buffer: Vec<u8>,
    #[allow(clippy::vec_box)]
    spare_requests: Vec<Box<HttpRequestParser>>,
}

impl ChannelServer {
    /// The channel side of a server.
    pub fn new(
        info: Arc<ServerInfo>,
        dispatcher: Arc<ThreadedTaskDispatcher>,
        trigger: TriggerHandle,
    ) -> Self {
        let recv_bytes = info.adj.recv_bytes.max(1);
        ChannelServer {
            info,
            dispatcher,
            trigger,
            active_channels: RefCell::new(BTreeMap::new()),
            reading: RefCell::new(Reading {
                buffer: vec![0; recv_bytes],
                spare_requests: Vec::new(),
            }),
            retired_spare: RefCell::new(Vec::new()),
        }
    }

    /// Take back the requests the workers have finished with (see [`ServerInfo::retire`]);
    /// the server calls this after every poll round. Up to [`MOST_SPARE_REQUESTS`] are reset
    /// (see [`HttpRequestParser::reset`]) and kept to read the next requests with, the rest
    /// freed.
    ///
    /// Rust-only: reading a request with a new parser was eight allocations on the I/O
    /// thread (the parser, its header table, a header's name and value, the start line, the
    /// target, the path, the list of header lines; the first six are kept now, and so is a
    /// plain target's path, and the I/O thread keeps the spans of the header lines instead
    /// of a list: see `parser::split_header_lines`), and freeing
    /// a round's worth at once overflowed glibc's per-thread cache of freed blocks, so both
    /// the frees and the next mallocs took glibc's slow paths (`_int_free`, `_int_malloc` and
    /// `malloc` were 6.8 % of the server's samples under `wrk -t1 -c16`, perf). callgrind:
    /// 13,995 user-space instructions per hello request before, 13,008-13,074 after.
    pub(crate) fn recycle_requests(&self) {
        let mut retired = self.retired_spare.borrow_mut();
        self.info.take_retired(&mut retired);
        let spare = &mut self.reading.borrow_mut().spare_requests;
        for mut request in retired.drain(..) {
            if spare.len() < MOST_SPARE_REQUESTS {
                request.reset();
                spare.push(request);
            }
        }
    }
}

/// What the I/O thread and a worker share for one channel, behind `HttpChannel::state`. The
/// first fields are waitress's class attributes, in its order.
struct State {
    /// The request being read (waitress: `request`). I/O thread, and a worker at the end of
    /// `service` when it sends a deferred `100 Continue`.
    ///
    /// Rust-only: requests are boxed, here and in `requests`. A parser is 600 bytes, moved
    /// from here to the queue, to the worker and back to the I/O thread (`ServerInfo::retire`);
    /// boxed, each move is a pointer. callgrind: 15,895 and 15,935 user-space instructions per
    /// hello-world request unboxed, 15,308 and 15,309 boxed. An idle connection keeps 8 bytes
    /// here rather than 600, and its queue, which the first request gives room for four, 32
    /// rather than 2,400: `bench --scenario idle` measured 3.55 and 3.58 KiB per idle
    /// connection unboxed, 0.56 boxed.
    request: Option<Box<HttpRequestParser>>,
    /// Last time bytes were read or sent, for the idle sweep (waitress: `last_activity`).
    last_activity: Instant,
    /// Close at the next chance (waitress: `will_close`).
    will_close: bool,
    /// Close once the output is sent (waitress: `close_when_flushed`).
    close_when_flushed: bool,
    /// `100 Continue` went out for `request` (waitress: `sent_continue`).
    sent_continue: bool,
    /// Bytes appended to the last output buffer since it was started; from
    /// `outbuf_high_watermark` on, the next write starts a new buffer (waitress:
    /// `current_outbuf_count`).
    current_outbuf_count: usize,
    /// Cleared when the peer is gone or the channel closed (waitress: `connected`).
    connected: bool,
    /// Complete requests no worker has taken yet (waitress: `requests`, less the one being
    /// served).
    requests: VecDeque<Box<HttpRequestParser>>,
    /// A worker is serving the request it took from `requests` (waitress keeps it as
    /// `requests[0]` until it is done).
    serving: bool,
    /// Output not handed to a flusher yet, front first (waitress: `outbufs`).
    outbufs: VecDeque<OutBuf>,
    /// The bytes a flusher took out of `outbufs` and is sending without the lock; `None` while
    /// nobody sends. Only the flusher sends, so the bytes leave in order.
    flushing: Option<usize>,
    /// A worker waits on `HttpChannel::room`: a flush that makes room must notify it.
    waiting_for_room: bool,
    /// `handle_close` ran: the I/O thread has let the channel go.
    closed: bool,
    /// Rust-only: the client ended its stream (a half-close looks the same as a close) while
    /// requests were still due: read no more, answer those, then close. waitress closes at
    /// once and drops them.
    read_eof: bool,
    /// Rust-only: when the first byte of the request head being read arrived, while that head
    /// is incomplete; `request_header_timeout` runs from here.
    head_started: Option<Instant>,
    /// Rust-only: a graceful shutdown is under way: read no more, answer the requests already
    /// read, then close.
    draining: bool,
    /// Rust-only: the I/O thread's current round watches the socket for input (what
    /// `interest` last answered). A worker ending a request wakes the I/O thread only when
    /// it must act, and input it already watches for is not such a case (see `service`).
    watched_for_input: bool,
    /// Rust-only: input came while a request was in flight and was left in the socket; the
    /// I/O thread stops watching for more until the worker is done (see `watch_for_input`).
    input_parked: bool,
}

impl State {
    fn new(now: Instant) -> Self {
        State {
            request: None,
            last_activity: now,
            will_close: false,
            close_when_flushed: false,
            sent_continue: false,
            current_outbuf_count: 0,
            connected: true,
            requests: VecDeque::new(),
            serving: false,
            outbufs: VecDeque::new(),
            flushing: None,
            waiting_for_room: false,
            closed: false,
            read_eof: false,
            head_started: None,
            draining: false,
            watched_for_input: false,
            input_parked: false,
        }
    }

    /// `len(self.requests)` in waitress: the requests waiting plus the one being served.
    fn request_count(&self) -> usize {
        self.requests.len() + usize::from(self.serving)
    }

    /// Bytes waiting to be sent, including those a flusher is sending (waitress:
    /// `total_outbufs_len`, kept by hand there).
    fn total_outbufs_len(&self) -> usize {
        outbufs_len(&self.outbufs).saturating_add(self.flushing.unwrap_or(0))
    }

    /// waitress: `readable`.
    fn readable(&self, adj: &Adjustments) -> bool {
        !(self.will_close
            || self.close_when_flushed
            || self.read_eof
            || self.draining
            || self.request_count() > adj.channel_request_lookahead
            || self.total_outbufs_len() > 0)
    }

    /// Rust-only: whether the I/O thread watches the socket for input. When `readable`, and
    /// also while the requests in flight are all that keep it from reading: waitress stops
    /// watching then, so that the worker that ends the request must wake the I/O thread (the
    /// trigger) for it to watch again, which was a `send` on the trigger, a `recv` of it and
    /// often a poll round of their own per keep-alive request. A client that waits for its
    /// response sends nothing meanwhile, so the watch costs nothing; should input come
    /// anyway (pipelining, a hang-up), `handle_read_event` leaves it in the socket and parks
    /// the watch, and the worker wakes the I/O thread as before.
    fn watch_for_input(&self, adj: &Adjustments) -> bool {
        self.readable(adj) || (!self.input_parked && self.only_busy(adj))
    }

    /// Rust-only: not `readable` only because the requests in flight reach
    /// `channel_request_lookahead`. Bytes a worker is sending without the lock (`flushing`)
    /// do not count against it: that worker is the one serving, and when it is done the
    /// channel is readable again. Counting them left the socket unwatched whenever a poll
    /// round began during that send, and the worker had to pull the trigger after: for 5.8 %
    /// of the requests under `wrk -t1 -c16` (23,370 of 405,662, counted in a build
    /// instrumented for it), 0.1 % since. Most of those pulls found a wake-up already on its
    /// way, so the sends on the trigger they cost were few (about 0.001 per request, either
    /// way).
    fn only_busy(&self, adj: &Adjustments) -> bool {
        !(self.will_close
            || self.close_when_flushed
            || self.read_eof
            || self.draining
            || outbufs_len(&self.outbufs) > 0)
            && self.request_count() > adj.channel_request_lookahead
    }

    /// waitress: `writable` is "output waits, or a close does". Output that `handle_write`
    /// would leave alone is not asked for here, so that `poll` does not return at once, round
    /// after round, for a socket with room: bytes a worker is sending (it hands the rest to
    /// the I/O thread with the trigger) and, while a request runs, fewer than `send_bytes`.
    fn writable(&self, adj: &Adjustments) -> bool {
        let total = self.total_outbufs_len();
        self.will_close
            || (self.flushing.is_none()
                && (self.close_when_flushed
                    || (total > 0 && (self.request_count() == 0 || total >= adj.send_bytes))))
    }
}

/// One client connection (waitress: `HTTPChannel`).
pub struct HttpChannel {
    stream: ChannelStream,
    fd: RawSocket,
    addr: PeerAddr,
    adj: Arc<Adjustments>,
    info: Arc<ServerInfo>,
    dispatcher: Arc<ThreadedTaskDispatcher>,
    trigger: TriggerHandle,
    /// Ourselves, to queue ourselves as a task.
    me: Weak<HttpChannel>,
    /// Everything the I/O thread and a worker share (waitress: `requests_lock` and
    /// `outbuf_lock`, with the state they guard). Held briefly, see the module doc.
    state: Mutex<State>,
    /// waitress's `outbuf_lock` as a condition: a worker whose output is past
    /// `outbuf_high_watermark` waits here with `State::waiting_for_room` set; a flush that
    /// brings the output below it and `handle_close` notify.
    room: Condvar,
}

impl std::fmt::Debug for HttpChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpChannel")
            .field("fd", &self.fd)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpChannel {
    /// Wrap an accepted connection and register it in `map` and in the server's
    /// `active_channels` (waitress: `HTTPChannel.__init__` with `add_channel`).
    pub fn create(
        server: &Rc<ChannelServer>,
        stream: ChannelStream,
        addr: PeerAddr,
        adj: Arc<Adjustments>,
        map: &SocketMap,
    ) -> io::Result<Arc<HttpChannel>> {
        match &stream {
            ChannelStream::Tcp(s) => s.set_nonblocking(true)?,
            #[cfg(unix)]
            ChannelStream::Unix(s) => s.set_nonblocking(true)?,
        }
        let fd = stream.raw_socket();
        let channel = Arc::new_cyclic(|me| HttpChannel {
            stream,
            fd,
            addr,
            adj,
            info: Arc::clone(&server.info),
            dispatcher: Arc::clone(&server.dispatcher),
            trigger: server.trigger.clone(),
            me: me.clone(),
            state: Mutex::new(State::new(Instant::now())),
            room: Condvar::new(),
        });
        let dispatcher = Rc::new(ChannelDispatcher {
            channel: Arc::clone(&channel),
            server: Rc::clone(server),
            map: Rc::clone(map),
            writable: Cell::new(None),
        });
        map.borrow_mut().insert(fd, dispatcher);
        // The loop asks a channel only when told (see `interest_is_reported`).
        server.trigger.report_change(fd);
        server
            .active_channels
            .borrow_mut()
            .insert(fd, Arc::clone(&channel));
        Ok(channel)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No application code runs under the lock. Should the parser or a buffer panic under
        // it, the loop's `handle_error` closes the channel, and closing must still get in: so
        // a poisoned lock is taken anyway (its state is at worst a request half parsed).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `waitress.client_disconnected`: true once the peer is gone (waitress:
    /// `check_client_disconnected`), or has ended its stream, which is all waitress can see of
    /// a client that went away.
    pub fn check_client_disconnected(&self) -> bool {
        let st = self.lock();
        !st.connected || st.read_eof
    }

    /// Whether there is output to send or a close to carry out (waitress: `writable`).
    pub fn writable(&self) -> bool {
        self.lock().writable(&self.adj)
    }

    /// The I/O thread may send (waitress: `handle_write`). Returns whether to close now.
    fn handle_write(&self) -> bool {
        let st = self.lock();
        let (st, flushed) = if st.request_count() == 0 {
            // No task runs: send whatever is left of the last response or a `100 Continue`.
            self.flush_some(st)
        } else if st.total_outbufs_len() >= self.adj.send_bytes {
            self.flush_some_if_lockable(st)
        } else {
            (st, Ok(false))
        };
        let (mut st, _) = self.flush_exception(st, flushed);
        if st.close_when_flushed && st.total_outbufs_len() == 0 {
            st.close_when_flushed = false;
            st.will_close = true;
        }
        st.will_close
    }

    /// Turn a failed flush into the decision to close, logging socket errors (waitress:
    /// `_flush_exception`). Returns the guard and whether the flush failed.
    fn flush_exception<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        flushed: Result<bool, FlushError>,
    ) -> (MutexGuard<'a, State>, bool) {
        let error = match flushed {
            Ok(_) => return (st, false),
            Err(error) => error,
        };
        if let FlushError::Other(e) = error {
            if self.adj.log_socket_errors {
                LOGGER.error(&format!("Socket error\n{e}"));
            }
        }
        // A socket that failed a send is of no further use: stop the application from queueing
        // more for it, and wake a worker waiting for room, while the I/O thread closes it.
        st.connected = false;
        st.will_close = true;
        if st.waiting_for_room {
            self.room.notify_all();
        }
        (st, true)
    }

    /// Whether to read more: not while closing, not while more requests wait than
    /// `channel_request_lookahead` allows, not while output is pending (waitress: `readable`).
    pub fn readable(&self) -> bool {
        self.lock().readable(&self.adj)
    }

    /// `readable` and `writable` with one lock, for the poll loop; also where a request head
    /// past its deadline closes the channel.
    fn interest(&self) -> (bool, bool) {
        let mut st = self.lock();
        self.check_header_deadline(&mut st);
        if st.readable(&self.adj) {
            st.input_parked = false;
        }
        st.watched_for_input = st.watch_for_input(&self.adj);
        (st.watched_for_input, st.writable(&self.adj))
    }

    /// Rust-only: whether an input event is to be read now; false when the channel watched
    /// for input only while busy (`watch_for_input`): the input stays in the socket, and the
    /// watch is parked until the worker has finished.
    fn take_input_now(&self) -> bool {
        let mut st = self.lock();
        // (`only_busy` is never true of a readable channel.)
        if st.only_busy(&self.adj) {
            st.input_parked = true;
            st.watched_for_input = false;
            return false;
        }
        true
    }

    /// Rust-only (`request_header_timeout`): a request head must arrive whole within this many
    /// seconds of its first byte, else the connection is closed without a response. Against
    /// slowloris: `channel_timeout` counts each trickled byte as activity, so a client sending
    /// one header byte a second holds a connection (and a place under `connection_limit`)
    /// forever. Checked on every poll round, so the deadline is kept to within
    /// `asyncore_loop_timeout`.
    fn check_header_deadline(&self, st: &mut State) {
        let timeout = self.adj.request_header_timeout;
        let started = match st.head_started {
            Some(started) => started,
            None => return,
        };
        if timeout == 0 || st.will_close || started.elapsed().as_secs() < timeout {
            return;
        }
        st.will_close = true;
        st.head_started = None;
        LOGGER.info(&format!(
            "closing the connection from {}: no complete request head within {timeout} s (request_header_timeout)",
            self.addr.host()
        ));
    }

    /// One `recv` into `buffer` (the server's shared one), then parse (waitress:
    /// `handle_read`). Returns whether the channel must close: the peer hung up or failed.
    fn handle_read(&self, reading: &mut Reading) -> ReadOutcome {
        let Reading {
            buffer,
            spare_requests,
        } = reading;
        match self.stream.recv(buffer) {
            Ok(0) => {
                if self.end_of_stream() {
                    ReadOutcome::Close
                } else {
                    ReadOutcome::Drained
                }
            }
            Ok(n) => {
                // A completed request ends the event's reads, as waitress's one read per event
                // does; only the middle of a long request (a body streaming in) reads on.
                let completed = self.receive(&buffer[..n], spare_requests);
                if n == buffer.len() && !completed {
                    ReadOutcome::Full
                } else {
                    ReadOutcome::Drained
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadOutcome::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadOutcome::Drained,
            Err(e) => {
                if !is_disconnected(&e) && self.adj.log_socket_errors {
                    LOGGER.error(&format!("Socket error\n{e}"));
                }
                ReadOutcome::Close
            }
        }
    }

    /// The client ended its stream; returns whether to close now. Rust-only: waitress closes at
    /// once, so a client that half-closes after pipelining its requests (with
    /// `channel_request_lookahead`, which lets it get ahead) loses every response. Here the
    /// requests already read are served and their responses sent first.
    fn end_of_stream(&self) -> bool {
        let mut st = self.lock();
        if st.request_count() == 0 && st.total_outbufs_len() == 0 {
            return true;
        }
        st.read_eof = true;
        // A request cut short by the end of the stream can never complete.
        let partial = Self::stop_reading(&mut st);
        drop(st);
        if let Some(mut partial) = partial {
            partial.close();
        }
        false
    }

    /// Read no more (the caller sets why): forget a request half read, and with no request
    /// left to answer, close once the output is sent. Returns the forgotten request, to be
    /// closed without the lock.
    fn stop_reading(st: &mut State) -> Option<Box<HttpRequestParser>> {
        st.head_started = None;
        if st.request_count() == 0 {
            st.close_when_flushed = true;
        }
        st.request.take()
    }

    /// Queue `100 Continue`; the caller sends it once it has let the lock go (waitress:
    /// `send_continue`, which sends under the lock).
    fn send_continue(&self, st: &mut State) {
        if let Some(request) = st.request.as_mut() {
            request.expect_continue = false;
        }
        // Appending to memory cannot fail: a 26-byte append never overflows to a file.
        let _ = self.append(st, CONTINUE);
        st.sent_continue = true;
    }

    /// Bytes arrived (waitress: `received`): feed them to the parser, queue each complete
    /// request, send `100 Continue` when the client waits for it and no response is due
    /// before it.
    ///
    /// Returns whether a request was completed by these bytes (Rust-only, for the read loop of
    /// `handle_read_event`).
    pub fn received(&self, data: &[u8]) -> bool {
        self.receive(data, &mut Vec::new())
    }

    /// [`received`](Self::received), reading new requests with the parsers in `spare` (reset
    /// ones, see [`ChannelServer::recycle_requests`]) while there are any.
    #[allow(clippy::vec_box)]
    fn receive(&self, mut data: &[u8], spare: &mut Vec<Box<HttpRequestParser>>) -> bool {
        if data.is_empty() {
            return false;
        }
        let mut st = self.lock();
        st.last_activity = Instant::now();
        // The worker may have decided to close (an error response) after `readable` said yes:
        // these bytes are not for us.
        if st.will_close || st.close_when_flushed {
            return false;
        }
        let mut any_completed = false;
        let mut needs_task = false;
        let mut continue_queued = false;
        let now = st.last_activity;
        loop {
            if st.request.is_none() && self.adj.request_header_timeout > 0 {
                st.head_started = Some(now);
            }
            let adj = &self.adj;
            let request = st.request.get_or_insert_with(|| {
                spare
                    .pop()
                    .unwrap_or_else(|| Box::new(HttpRequestParser::new(Arc::clone(adj))))
            });
            let n = request.received(data);
            let wants_continue = request.expect_continue && request.headers_finished;
            let completed = request.completed;
            if request.headers_finished || completed {
                st.head_started = None;
            }
            // With responses still due, the continue must wait for them (see `service`).
            if wants_continue && st.request_count() == 0 && !st.sent_continue {
                self.send_continue(&mut st);
                continue_queued = true;
            }
            if completed {
                any_completed = true;
                st.sent_continue = false;
                if let Some(request) = st.request.take() {
                    if !request.empty {
                        st.requests.push_back(request);
                        // The first request starts a task; later ones are queued by `service`.
                        needs_task |= st.request_count() == 1;
                    }
                }
            }
            if n >= data.len() {
                break;
            }
            data = &data[n..];
        }
        if continue_queued {
            let (st, flushed) = self.flush_some(st);
            drop(self.flush_exception(st, flushed));
        } else {
            drop(st);
        }
        if needs_task {
            self.add_self_as_task();
        }
        any_completed
    }

    fn add_self_as_task(&self) {
        if let Some(me) = self.me.upgrade() {
            self.dispatcher.add_task(me);
        }
    }

    /// waitress: `_flush_some_if_lockable`, for the I/O thread while a task runs. waitress
    /// tries the lock so as not to wait for a worker that is appending; here nobody holds the
    /// lock for long, and a worker that is sending has set `flushing`, which `flush_some`
    /// respects. So this is `flush_some`, which also wakes a worker waiting for room.
    fn flush_some_if_lockable<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
    ) -> (MutexGuard<'a, State>, Result<bool, FlushError>) {
        self.flush_some(st)
    }

    /// Send as much as the socket takes, with the lock let go across each `send`; returns the
    /// guard again and whether anything was sent (waitress: `_flush_some`). Does nothing while
    /// someone else is sending: that flusher sends what was queued behind it too.
    fn flush_some<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> (MutexGuard<'a, State>, Result<bool, FlushError>) {
        let mut sent_any = false;
        let mut result = Ok(false);
        while st.flushing.is_none() && !st.outbufs.is_empty() {
            let mut taken = std::mem::take(&mut st.outbufs);
            st.flushing = Some(outbufs_len(&taken));
            drop(st);
            let started = profiling::start();
            let (sent, flushed) = send_outbufs(&self.stream, &mut taken);
            profiling::finish(Stage::Flush, started);
            st = self.lock();
            st.flushing = None;
            if st.connected {
                // What the socket did not take goes back in front of what was queued meanwhile.
                taken.extend(st.outbufs.drain(..));
                st.outbufs = taken;
            } else {
                // Closed meanwhile: `handle_close` dropped the rest; drop ours too.
                taken.iter_mut().for_each(OutBuf::close);
            }
            if sent > 0 {
                sent_any = true;
                st.last_activity = Instant::now();
            }
            if st.waiting_for_room && st.total_outbufs_len() <= self.adj.outbuf_high_watermark {
                self.room.notify_all();
            }
            match flushed {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        (st, result.map(|_: bool| sent_any))
    }

    /// The I/O thread closes the channel (waitress: `handle_close`): drop the output, mark it
    /// disconnected, wake a waiting worker, and shut the socket so the peer sees the end.
    fn handle_close(&self) {
        let mut st = self.lock();
        let mut dropped = std::mem::take(&mut st.outbufs);
        st.connected = false;
        st.closed = true;
        if st.waiting_for_room {
            self.room.notify_all();
        }
        drop(st);
        dropped.iter_mut().for_each(OutBuf::close);
        self.stream.shutdown();
    }

    /// Append bytes to the last output buffer, starting a new one past the watermark or after
    /// a file (the bytes branch of waitress's `write_soon`).
    fn append(&self, st: &mut State, data: &[u8]) -> io::Result<()> {
        let rotate = st.current_outbuf_count >= self.adj.outbuf_high_watermark
            || !matches!(st.outbufs.back(), Some(OutBuf::Bytes(_)));
        if rotate {
            // A new buffer, so a full one can be dropped as soon as it is sent.
            st.outbufs.push_back(OutBuf::Bytes(OverflowableBuffer::new(
                self.adj.outbuf_overflow,
            )));
            st.current_outbuf_count = 0;
        }
        if let Some(OutBuf::Bytes(last)) = st.outbufs.back_mut() {
            last.append(data)?;
        }
        st.current_outbuf_count += data.len();
        Ok(())
    }

    /// Queue bytes for the client (waitress: `write_soon`), waiting first while the output is
    /// past `outbuf_high_watermark`.
    ///
    /// Rust-only fast path: when nothing is queued and nobody is sending, the bytes go
    /// straight from the caller's slice to the socket, without a copy and without the lock;
    /// only what the socket does not take is queued, for the I/O thread. A hello-world
    /// response is then one `send` from the worker and no work for the I/O thread but the
    /// trigger that re-arms reading. Without it (the bytes copied into the queue, which the
    /// worker then sends at the end of its task, so the system calls are the same): 12,213 and
    /// 12,215 user-space instructions per hello request against 11,287 in both runs
    /// (callgrind, `tools/instructions_per_request.sh`, 6 Dec 2026).
    pub fn write_soon(&self, data: &[u8]) -> Result<usize, ClientDisconnected> {
        let mut st = self.outbufs_with_room()?;
        if data.is_empty() {
            return Ok(0);
        }
        if st.flushing.is_none() && st.outbufs.is_empty() && data.len() >= self.adj.send_bytes {
            st.flushing = Some(data.len());
            drop(st);
            let started = profiling::start();
            let (sent, flushed) = send_from(&self.stream, data);
            profiling::finish(Stage::Flush, started);
            st = self.lock();
            st.flushing = None;
            if sent > 0 {
                st.last_activity = Instant::now();
            }
            let rest = &data[sent..];
            let (mut st, failed) = self.flush_exception(st, flushed.map(|_| sent > 0));
            if !failed && !rest.is_empty() && st.connected {
                // Nothing can have been queued meanwhile (one worker per channel, and the I/O
                // thread queues only a `100 Continue`, never while a task runs), so the rest
                // starts the queue.
                let mut buf = OverflowableBuffer::new(self.adj.outbuf_overflow);
                if let Err(e) = buf.append(rest) {
                    LOGGER.error(&format!("could not buffer the response: {e}"));
                    return Err(ClientDisconnected);
                }
                st.outbufs.push_front(OutBuf::Bytes(buf));
                st.current_outbuf_count = rest.len();
            }
            let hand_over = failed || !rest.is_empty();
            drop(st);
            if hand_over {
                self.trigger.pull_trigger_for(self.fd);
            }
            return Ok(data.len());
        }
        if let Err(e) = self.append(&mut st, data) {
            LOGGER.error(&format!("could not buffer the response: {e}"));
            return Err(ClientDisconnected);
        }
        self.flush_queued(st);
        Ok(data.len())
    }

    /// Queue a file to stream after what is already queued (waitress: `write_soon` with a
    /// `ReadOnlyFileBasedBuffer`); returns the bytes it will send.
    pub fn write_soon_file(
        &self,
        file: ReadOnlyFileBasedBuffer,
    ) -> Result<u64, ClientDisconnected> {
        let len = file.len();
        let mut st = self.outbufs_with_room()?;
        st.outbufs.push_back(OutBuf::File(file));
        st.current_outbuf_count = 0;
        self.flush_queued(st);
        Ok(len)
    }

    /// The start of `write_soon`: refused when the client is gone, before or after waiting
    /// for room.
    fn outbufs_with_room(&self) -> Result<MutexGuard<'_, State>, ClientDisconnected> {
        let st = self.lock();
        if !st.connected {
            // Interrupt the task, so that it can clean up before its body is exhausted.
            return Err(ClientDisconnected);
        }
        let st = self.flush_outbufs_below_high_watermark(st);
        if !st.connected {
            return Err(ClientDisconnected);
        }
        Ok(st)
    }

    /// The end of `write_soon`: from `send_bytes` on, try to send now; leave to the I/O thread
    /// what the socket does not take (or what someone else is sending).
    fn flush_queued(&self, st: MutexGuard<'_, State>) {
        if st.total_outbufs_len() < self.adj.send_bytes {
            return;
        }
        let (st, flushed) = self.flush_some(st);
        let sent_some = matches!(flushed, Ok(true));
        let (st, failed) = self.flush_exception(st, flushed);
        let hand_over = failed || !sent_some || st.total_outbufs_len() >= self.adj.send_bytes;
        drop(st);
        if hand_over {
            self.trigger.pull_trigger_for(self.fd);
        }
    }

    /// Wait while more than `outbuf_high_watermark` bytes are pending, so a fast application
    /// cannot pile up a huge response for a slow client (waitress:
    /// `_flush_outbufs_below_high_watermark`). Never waits on a closed channel.
    fn flush_outbufs_below_high_watermark<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
    ) -> MutexGuard<'a, State> {
        if st.total_outbufs_len() <= self.adj.outbuf_high_watermark {
            return st;
        }
        let (st, flushed) = self.flush_some(st);
        let (mut st, failed) = self.flush_exception(st, flushed);
        if failed {
            // As waitress does, let the I/O thread close the channel; `connected` is already
            // false, so the caller gives up.
            drop(st);
            self.trigger.pull_trigger_for(self.fd);
            return self.lock();
        }
        while st.connected && st.total_outbufs_len() > self.adj.outbuf_high_watermark {
            // Set before the lock is let go, so a flush that makes room from now on notifies;
            // the condition is checked again under the lock before waiting.
            st.waiting_for_room = true;
            drop(st);
            self.trigger.pull_trigger_for(self.fd);
            st = self.lock();
            if st.connected && st.total_outbufs_len() > self.adj.outbuf_high_watermark {
                st = self.room.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        st.waiting_for_room = false;
        st
    }

    /// Serve the first waiting request, then queue ourselves again if more wait (waitress:
    /// `HTTPChannel.service`).
    pub fn service(&self) {
        let mut request = {
            let mut st = self.lock();
            match st.requests.pop_front() {
                Some(request) => {
                    st.serving = true;
                    request
                }
                None => return,
            }
        };
        let access = access_log::begin(&self.adj);
        let close = self.run_task(&mut request);
        if let Some(access) = access {
            let connected = self.lock().connected;
            access.finish(&self.adj, &request, &self.addr, close, connected);
        }
        let mut st = self.lock();
        let mut dropped = VecDeque::new();
        let mut next = false;
        if close {
            st.close_when_flushed = true;
            dropped = std::mem::take(&mut st.requests);
            st.serving = false;
        } else {
            // Before the next request, make sure the output is not piling up (readable() is
            // false meanwhile, so no request comes in that this would have to account for).
            if st.request_count() > 1 {
                st = self.flush_outbufs_below_high_watermark(st);
            }
            // The next response starts a fresh buffer, so this one can be freed as soon as it
            // is sent.
            if st.current_outbuf_count > 0 {
                st.current_outbuf_count = self.adj.outbuf_high_watermark;
            }
            st.serving = false;
            if st.connected && !st.requests.is_empty() {
                next = true;
            } else if st.read_eof || st.draining {
                // The client sent all it will send, or the server is shutting down, and this
                // was the last request read.
                st.close_when_flushed = true;
            } else if st.connected
                && !st.sent_continue
                && st
                    .request
                    .as_ref()
                    .map_or(false, |r| r.expect_continue && r.headers_finished)
            {
                // A request waits for its `100 Continue`, held back until now to keep the
                // responses in order.
                self.send_continue(&mut st);
            }
        }
        // The worker sends what is still queued itself rather than leave it to the I/O thread:
        // usually nothing (`write_soon` sent it straight away); else what the socket did not
        // take of a large response (Rust-only: waitress leaves that to its I/O thread), or the
        // `100 Continue` queued just above, which waitress's `send_continue` sends on the spot
        // too (ported as `test_lookahead_continue`). For speed it buys nothing the bench
        // shows: left to the I/O thread (6 Dec 2026), `bench --scenario download` ran at
        // 2,726–3,515 MB/s against 2,677–3,505 (three interleaved runs each), and a hello
        // request took 11,201 user-space instructions against 11,287 (callgrind).
        let (st, flushed) = self.flush_some(st);
        let (mut st, _) = self.flush_exception(st, flushed);
        st.last_activity = Instant::now();
        // Rust-only: the I/O thread is woken only when it must act: to send or to close, or
        // to read when it is not watching for input (see `State::watch_for_input`). With
        // `hello` under `wrk -c100` this took the trigger from about 0.15 sends per request
        // to 0.01, and the I/O thread's poll rounds from 0.22 per request to 0.02.
        let wake = !st.closed
            && (st.writable(&self.adj) || (st.readable(&self.adj) && !st.watched_for_input));
        drop(st);
        // Closing a request may remove its body's temporary file: done without the lock.
        request.close();
        dropped.iter_mut().for_each(|r| r.close());
        // Reused or freed by the I/O thread, which made it (see `ServerInfo::retire`).
        self.info.retire(request);
        if next {
            self.add_self_as_task();
        }
        if wake {
            // The I/O thread must look at this channel again: read the next request, send
            // what is left, or close.
            self.trigger.pull_trigger_for(self.fd);
        }
    }

    /// Drop everything at shutdown (waitress: `cancel`).
    pub fn cancel(&self) {
        let mut st = self.lock();
        st.will_close = true;
        st.connected = false;
        st.last_activity = Instant::now();
        let mut dropped = std::mem::take(&mut st.requests);
        st.serving = false;
        drop(st);
        dropped.iter_mut().for_each(|r| r.close());
    }

    // ---- Rust-only helpers of the methods above ----

    /// Start a graceful shutdown of this channel (on the I/O thread): read nothing more,
    /// drop a request half read, answer the requests already read, close once their
    /// responses are sent; an idle connection closes at once. Returns how many requests
    /// are in flight here (a response still being sent counts as one).
    pub fn drain(&self) -> usize {
        self.trigger.report_change(self.fd);
        let mut st = self.lock();
        st.draining = true;
        let requests = st.request_count();
        let sending = st.total_outbufs_len() > 0;
        let partial = Self::stop_reading(&mut st);
        drop(st);
        if let Some(mut partial) = partial {
            partial.close();
        }
        requests.max(usize::from(sending))
    }

    /// Whether the channel will close at the next chance.
    pub fn will_close(&self) -> bool {
        self.lock().will_close
    }

    /// Ask the channel to close (the idle sweep does this).
    pub fn set_will_close(&self) {
        self.lock().will_close = true;
        self.trigger.report_change(self.fd);
    }

    /// The last time bytes were read or sent.
    pub fn last_activity(&self) -> Instant {
        self.lock().last_activity
    }

    /// Whether requests are queued or being served.
    pub fn has_requests(&self) -> bool {
        self.lock().request_count() > 0
    }

    /// Build the 500 answer for a failed application (waitress: the `except Exception` branch
    /// of `service`).
    fn internal_error_request(
        &self,
        request: &HttpRequestParser,
        error: &TaskError,
    ) -> HttpRequestParser {
        let body = match error {
            TaskError::App(e) if self.adj.expose_tracebacks => error_chain(e.as_ref()),
            _ => "The server encountered an unexpected internal server error".to_string(),
        };
        let mut err_request = HttpRequestParser::new(Arc::clone(&self.adj));
        err_request.error = Some(Error::internal_server_error(body));
        err_request.version = request.version.clone();
        err_request.command = request.command.clone();
        if let Some(connection) = request.headers.get("CONNECTION") {
            err_request
                .headers
                .insert("CONNECTION".to_string(), connection.clone());
        }
        err_request
    }

    /// Run one task for `request` (the middle of waitress's `service`); returns whether to
    /// close after it.
    fn run_task(&self, request: &mut HttpRequestParser) -> bool {
        let is_error = request.error.is_some();
        let connected = self.lock().connected;
        let (result, wrote_header, close) = {
            let mut task = if is_error {
                Task::error(self, request)
            } else {
                Task::wsgi(self, request)
            };
            let result = if connected {
                task.service()
            } else {
                task.close_on_finish = true;
                Ok(())
            };
            (result, task.wrote_header, task.close_on_finish)
        };
        // The task's path is the request's (read here, not copied per request for the logs).
        let path = &request.path;
        match result {
            Ok(()) => close,
            Err(TaskError::ClientDisconnected) => {
                access_log::note_disconnected();
                LOGGER.info(&format!("Client disconnected while serving {path}"));
                true
            }
            Err(error) => {
                if let TaskError::App(e) = &error {
                    LOGGER.exception(&format!("Exception while serving {path}"), e.as_ref());
                }
                if wrote_header {
                    return true;
                }
                let mut err_request = self.internal_error_request(request, &error);
                let mut task = Task::error(self, &mut err_request);
                match task.service() {
                    Ok(()) => task.close_on_finish,
                    Err(_) => true,
                }
            }
        }
    }
}

impl TaskChannel for HttpChannel {
    fn server(&self) -> &ServerInfo {
        &self.info
    }

    fn addr(&self) -> &PeerAddr {
        &self.addr
    }

    fn write_soon(&self, data: &[u8]) -> Result<usize, ClientDisconnected> {
        HttpChannel::write_soon(self, data)
    }

    fn write_soon_file(&self, buffer: ReadOnlyFileBasedBuffer) -> Result<u64, ClientDisconnected> {
        HttpChannel::write_soon_file(self, buffer)
    }

    fn connected(&self) -> bool {
        self.lock().connected
    }

    fn disconnect_check(&self) -> DisconnectCheck {
        let me: Weak<dyn ClientConnection> = self.me.clone();
        DisconnectCheck::for_connection(me)
    }
}

impl ClientConnection for HttpChannel {
    fn client_disconnected(&self) -> bool {
        self.check_client_disconnected()
    }
}

impl Service for HttpChannel {
    fn service(&self) {
        HttpChannel::service(self);
    }

    fn cancel(&self) {
        HttpChannel::cancel(self);
    }
}

/// The most `recv` calls one readiness event makes (see `handle_read_event`): 16 × the
/// default 8 KiB `recv_bytes` is 128 KiB, enough to keep a bulk upload off `poll` without
/// letting one busy connection hold the I/O thread for long.
const READS_PER_EVENT: usize = 16;

/// What one `recv` came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadOutcome {
    /// It filled the buffer: more may be waiting.
    Full,
    /// The socket had no more for now (or the client ended its stream with work still due).
    Drained,
    /// The connection is to close.
    Close,
}

/// The channel's entry in the socket map, on the I/O thread (waitress: the channel as a
/// `wasyncore.dispatcher`).
pub struct ChannelDispatcher {
    channel: Arc<HttpChannel>,
    server: Rc<ChannelServer>,
    map: SocketMap,
    /// `writable` as `readable` computed it a moment before, in the same poll round: one
    /// lock for both questions. The loop always asks the two in that order, one after the
    /// other; a `writable` without a `readable` before it asks the channel.
    writable: Cell<Option<bool>>,
}

impl Dispatcher for ChannelDispatcher {
    fn fileno(&self) -> RawSocket {
        self.channel.fd
    }

    fn readable(&self) -> bool {
        let (readable, writable) = self.channel.interest();
        self.writable.set(Some(writable));
        readable
    }

    fn writable(&self) -> bool {
        self.writable
            .take()
            .unwrap_or_else(|| self.channel.writable())
    }

    /// The answers change in the channel's handlers, when a worker pulls the trigger for it
    /// (every change a worker makes that the I/O thread must act on comes with a pull), when
    /// the idle sweep or a graceful shutdown reports it, and with time
    /// (`request_header_timeout`, kept to within a round's timeout). Entering and leaving
    /// the map are reported too.
    fn interest_is_reported(&self) -> bool {
        true
    }

    /// Rust-only: while each `recv` fills the whole buffer, completes no request, and the
    /// channel still wants input, read again (up to `READS_PER_EVENT` times) instead of going back to `poll` for every
    /// `recv_bytes`. waitress reads once per event; each call here still asks for `recv_bytes`,
    /// and the channel's `readable()` is asked before every further read, so pipelined
    /// requests are taken in exactly as one read per round takes them. A 1 GiB upload spent a
    /// `poll` per 8 KiB before this. With one read per event again (`bench --scenario
    /// upload`, three interleaved runs each, 6 Dec 2026): 1,436–1,494 MB/s with
    /// `Content-Length` and 1,440–1,648 chunked, against 1,716–1,864 and 1,690–1,769.
    fn handle_read_event(&self) {
        let started = profiling::start();
        let close = {
            let mut reading = self.server.reading.borrow_mut();
            if !self.channel.take_input_now() {
                return;
            }
            let mut outcome = self.channel.handle_read(&mut reading);
            let mut reads = 1;
            while outcome == ReadOutcome::Full && reads < READS_PER_EVENT && self.channel.readable()
            {
                outcome = self.channel.handle_read(&mut reading);
                reads += 1;
            }
            outcome == ReadOutcome::Close
        };
        profiling::finish(Stage::ReadParse, started);
        if close {
            self.handle_close();
        }
    }

    fn handle_write_event(&self) {
        if self.channel.handle_write() {
            self.handle_close();
        }
    }

    /// waitress: `handle_close` with `del_channel`.
    fn handle_close(&self) {
        self.channel.handle_close();
        let fd = self.channel.fd;
        self.map.borrow_mut().remove(&fd);
        self.server.trigger.report_change(fd);
        self.server.active_channels.borrow_mut().remove(&fd);
    }
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_channel.py (both `TestHTTPChannel` and `TestHTTPChannelLookahead`)
    //! over a real `UnixStream` pair instead of waitress's `DummySock`, with a worker pool of
    //! no threads, so that the test thread plays the worker (`service`) and the I/O thread
    //! (`handle_read`, `handle_write`) by turns. Where waitress makes `send` return 0, the
    //! socket is filled first (`fill_socket`); where it swaps in a dummy task or parser, a
    //! real application or request produces the same situation. Not carried over:
    // test_total_outbufs_len_an_outbuf_size_gt_sys_maxint: Python's OverflowError for a `__len__` past a C long; lengths are `usize` and `outbufs_len` saturates
    // test__flush_some_outbuf_len_gt_sys_maxint: the same OverflowError, in `_flush_some`
    // test_handle_read_error: mocks `recv` to raise an error that is not a disconnect, which a real socket cannot be made to do; a failed read closing the channel is test_handle_read_peer_gone
    // test_flush_some_multiple_buffers_close_raises: closing a buffer cannot fail in Rust (`close` returns nothing)
    // test_handle_close_outbuf_raises_on_close: the same, in `handle_close`
    // test_received_preq_completed_connection_close: drives a dummy parser that reports an empty request as complete with `connection_close`; a real parser never does (an empty request has no headers)
    // test_client_disconnect_immediate: deliberate difference: the end of a client's stream may be a half-close, so the request already read is served, not dropped (README "Differences from waitress", tests/lookahead.rs)
    use super::*;
    use crate::app::{AppResult, Body, Environ, FileWrapper, StartResponse};
    use crate::compat::{poll_fds, PollFd, POLLIN};
    use crate::trigger::{socket_pair, PairStream, Trigger};
    use crate::wasyncore::new_map;
    use std::io::{Read, Seek, SeekFrom};
    use std::time::Duration;

    struct Fixture {
        channel: Arc<HttpChannel>,
        peer: PairStream,
        map: SocketMap,
        trigger: Rc<Trigger>,
        server: Rc<ChannelServer>,
    }

    /// One end of a socket pair as a connection: a Unix-domain one, or TCP on Windows.
    fn channel_stream(stream: PairStream) -> ChannelStream {
        #[cfg(unix)]
        return ChannelStream::Unix(stream);
        #[cfg(windows)]
        return ChannelStream::Tcp(stream);
    }

    fn fixture_with(
        app: impl Fn(&mut Environ, &mut StartResponse<'_>) -> AppResult + Send + Sync + 'static,
        change: impl FnOnce(&mut Adjustments),
    ) -> Fixture {
        let mut adj = Adjustments::default();
        change(&mut adj);
        let adj = Arc::new(adj);
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        // As an epoll loop reads it.
        trigger.change_log().start_reading();
        let info = Arc::new(ServerInfo::new(
            Arc::new(app),
            "localhost",
            "80",
            Arc::clone(&adj),
        ));
        let server = Rc::new(ChannelServer::new(
            info,
            ThreadedTaskDispatcher::new(),
            trigger.handle(),
        ));
        let (ours, peer) = socket_pair().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let channel = HttpChannel::create(
            &server,
            channel_stream(ours),
            PeerAddr::new("127.0.0.1", None),
            adj,
            &map,
        )
        .unwrap();
        // Entering the map is reported; start the tests with an empty change log.
        assert!(!trigger.change_log().take(&mut Vec::new()));
        Fixture {
            channel,
            peer,
            map,
            trigger,
            server,
        }
    }

    fn hello(_e: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
        sr.start("200 OK", [("Content-Length", "5")])?;
        Ok(Body::from("hello"))
    }

    fn fixture() -> Fixture {
        fixture_with(hello, |_| {})
    }

    impl Fixture {
        fn dispatcher(&self) -> Rc<dyn Dispatcher> {
            self.map.borrow().get(&self.channel.fd).cloned().unwrap()
        }

        /// Queue `data` as an output buffer of its own (waitress's tests set `outbufs`).
        fn queue(&self, data: &[u8]) {
            let mut buf = OverflowableBuffer::new(self.channel.adj.outbuf_overflow);
            buf.append(data).unwrap();
            self.channel.lock().outbufs.push_back(OutBuf::Bytes(buf));
        }

        /// Whether a worker pulled the trigger (its pipe has a byte to read) for this channel
        /// (the change log names it, so that an epoll loop asks it).
        fn trigger_pulled(&self) -> bool {
            let mut fds = [PollFd {
                fd: self.trigger.fileno(),
                events: POLLIN,
                revents: 0,
            }];
            let pulled = poll_fds(&mut fds, Duration::ZERO).unwrap() == 1;
            let mut changed = Vec::new();
            let everyone = self.trigger.change_log().take(&mut changed);
            pulled && (everyone || changed.contains(&self.channel.fd))
        }

        /// Whether the channel queued itself as a task: cancelling the queue cancels it.
        fn task_queued(&self) -> bool {
            self.server.dispatcher.shutdown(true, Duration::ZERO);
            self.channel.will_close()
        }

        /// The bytes of each queued output buffer.
        fn outbufs(&self) -> Vec<Vec<u8>> {
            let mut st = self.channel.lock();
            st.outbufs
                .iter_mut()
                .map(|b| {
                    let len = b.len();
                    b.peek(len).unwrap().to_vec()
                })
                .collect()
        }

        /// Make the last activity long ago, so that a change shows.
        fn age(&self) -> Instant {
            let then = Instant::now() - Duration::from_secs(60);
            self.channel.lock().last_activity = then;
            then
        }
    }

    /// Makes the channel's next `send` fail as it does once the client has gone. On a Unix
    /// socket pair the peer shuts its end (EPIPE). Over loopback TCP (the pair on Windows) a
    /// closed peer shows only after a round trip, so the channel's own side is shut for
    /// writing instead (WSAESHUTDOWN, a disconnect as well).
    struct Hangup(PairStream);

    impl Hangup {
        fn of(f: &Fixture) -> Hangup {
            #[cfg(unix)]
            return Hangup(f.peer.try_clone().unwrap());
            #[cfg(windows)]
            return match &f.channel.stream {
                ChannelStream::Tcp(ours) => Hangup(ours.try_clone().unwrap()),
            };
        }

        fn now(&self) {
            let how = if cfg!(unix) {
                Shutdown::Both
            } else {
                Shutdown::Write
            };
            self.0.shutdown(how).unwrap();
        }
    }

    /// Fill the channel's socket until it takes no more: from then on a `send` sends nothing
    /// (waitress's tests make `send` return 0).
    fn fill_socket(channel: &HttpChannel) {
        let junk = [0u8; 65536];
        while channel.stream.send(&junk).is_ok() {}
    }

    fn read_available(peer: &mut PairStream) -> Vec<u8> {
        peer.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = peer.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        peer.set_nonblocking(false).unwrap();
        out
    }

    /// Whether the channel's side of the pair has been shut (the peer reads the end).
    fn peer_sees_close(peer: &mut PairStream) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    #[test]
    fn test_ctor() {
        let f = fixture();
        assert_eq!(f.channel.addr.host(), "127.0.0.1");
        assert!(Arc::ptr_eq(
            &f.server.active_channels.borrow()[&f.channel.fd],
            &f.channel
        ));
        assert_eq!(f.dispatcher().fileno(), f.channel.fd);
    }

    #[test]
    fn test_writable_something_in_outbuf() {
        let f = fixture();
        f.queue(b"abc");
        assert!(f.channel.writable());
    }

    #[test]
    fn test_writable_nothing_in_outbuf() {
        let f = fixture();
        assert!(!f.channel.writable());
    }

    #[test]
    fn test_writable_nothing_in_outbuf_will_close() {
        let f = fixture();
        f.channel.set_will_close();
        assert!(f.channel.writable());
    }

    #[test]
    fn test_handle_write_not_connected() {
        let f = fixture();
        f.channel.lock().connected = false;
        assert!(!f.channel.handle_write());
    }

    #[test]
    fn test_handle_write_with_requests() {
        let f = fixture();
        f.channel.lock().serving = true;
        let then = f.age();
        assert!(!f.channel.handle_write());
        assert_eq!(f.channel.last_activity(), then);
    }

    #[test]
    fn test_handle_write_no_request_with_outbuf() {
        let mut f = fixture();
        f.queue(b"abc");
        let then = f.age();
        assert!(!f.channel.handle_write());
        assert_ne!(f.channel.last_activity(), then);
        assert_eq!(read_available(&mut f.peer), b"abc");
    }

    /// A file whose reads fail with `kind`; it claims three bytes.
    struct FailingFile(io::ErrorKind);

    impl Read for FailingFile {
        fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(self.0, "failing file"))
        }
    }

    impl Seek for FailingFile {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            Ok(if pos == SeekFrom::End(0) { 3 } else { 0 })
        }
    }

    /// waitress's `DummyBuffer(b"abc", error)`: an output buffer whose reads fail.
    fn handle_write_with_failing_outbuf(kind: io::ErrorKind) {
        let mut f = fixture();
        let mut file = ReadOnlyFileBasedBuffer::new(FileWrapper::new(FailingFile(kind), 8192));
        assert_eq!(file.prepare(None).unwrap(), 3);
        f.channel.lock().outbufs.push_back(OutBuf::File(file));
        let then = f.age();
        assert!(f.channel.handle_write(), "an error while flushing closes");
        assert_eq!(f.channel.last_activity(), then);
        assert_eq!(read_available(&mut f.peer), b"");
        f.dispatcher().handle_close();
        assert_eq!(
            f.channel.lock().total_outbufs_len(),
            0,
            "the outbuf was closed"
        );
    }

    #[test]
    fn test_handle_write_outbuf_raises_socketerror() {
        handle_write_with_failing_outbuf(io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn test_handle_write_outbuf_raises_othererror() {
        handle_write_with_failing_outbuf(io::ErrorKind::InvalidData);
    }

    #[test]
    fn test_handle_write_no_requests_no_outbuf_will_close() {
        let mut f = fixture();
        f.queue(b"");
        f.channel.set_will_close();
        let then = f.age();
        assert!(f.channel.handle_write(), "closes");
        f.dispatcher().handle_write_event();
        assert!(!f.channel.connected());
        assert!(peer_sees_close(&mut f.peer));
        assert_eq!(f.channel.last_activity(), then);
        assert!(f.channel.lock().outbufs.is_empty(), "the outbuf was closed");
    }

    #[test]
    fn test_handle_write_no_requests_outbuf_gt_send_bytes() {
        let mut f = fixture_with(hello, |a| a.send_bytes = 2);
        f.channel.lock().serving = true;
        f.queue(b"abc");
        assert!(!f.channel.handle_write());
        assert!(!f.channel.will_close());
        assert_eq!(read_available(&mut f.peer), b"abc");
    }

    #[test]
    fn test_handle_write_close_when_flushed() {
        let mut f = fixture();
        f.queue(b"abc");
        f.channel.lock().close_when_flushed = true;
        assert!(f.channel.handle_write(), "flushed: now close");
        assert!(f.channel.will_close());
        assert!(!f.channel.lock().close_when_flushed);
        assert_eq!(read_available(&mut f.peer), b"abc");
        assert!(f.channel.lock().outbufs.is_empty(), "the outbuf was closed");
    }

    #[test]
    fn test_readable_no_requests_not_will_close() {
        let f = fixture();
        assert!(f.channel.readable());
    }

    #[test]
    fn test_readable_no_requests_will_close() {
        let f = fixture();
        f.channel.set_will_close();
        assert!(!f.channel.readable());
    }

    #[test]
    fn test_readable_with_requests() {
        let f = fixture();
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        assert!(f.channel.has_requests());
        assert!(
            !f.channel.readable(),
            "no lookahead: the response comes first"
        );
    }

    #[test]
    fn test_handle_read_no_error() {
        let mut f = fixture();
        let then = f.age();
        f.peer.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        f.dispatcher().handle_read_event();
        assert_ne!(f.channel.last_activity(), then);
        assert!(f.channel.has_requests(), "the bytes went to `received`");
    }

    #[test]
    fn test_handle_read_peer_gone() {
        let f = fixture();
        f.peer.shutdown(Shutdown::Both).unwrap();
        f.dispatcher().handle_read_event();
        assert!(!f.map.borrow().contains_key(&f.channel.fd));
    }

    #[test]
    fn test_write_soon_empty_byte() {
        let f = fixture();
        assert_eq!(f.channel.write_soon(b""), Ok(0));
        assert!(f.outbufs().iter().all(Vec::is_empty));
    }

    #[test]
    fn test_write_soon_nonempty_byte() {
        let f = fixture();
        fill_socket(&f.channel);
        assert_eq!(f.channel.write_soon(b"a"), Ok(1));
        assert_eq!(f.outbufs(), [b"a".to_vec()]);
    }

    #[test]
    fn test_write_soon_filewrapper() {
        let f = fixture();
        fill_socket(&f.channel);
        let mut file =
            ReadOnlyFileBasedBuffer::new(FileWrapper::new(io::Cursor::new(b"abc".to_vec()), 8192));
        file.prepare(None).unwrap();
        assert_eq!(f.channel.write_soon_file(file), Ok(3));
        assert!(matches!(
            f.channel.lock().outbufs.iter().collect::<Vec<_>>()[..],
            [OutBuf::File(_)]
        ));
        // waitress appends an empty byte buffer behind the file; here the next write starts
        // one.
        assert_eq!(f.channel.write_soon(b"d"), Ok(1));
        assert!(matches!(
            f.channel.lock().outbufs.iter().collect::<Vec<_>>()[..],
            [OutBuf::File(_), OutBuf::Bytes(_)]
        ));
    }

    #[test]
    fn test_write_soon_disconnected() {
        let f = fixture();
        f.channel.lock().connected = false;
        assert_eq!(f.channel.write_soon(b"stuff"), Err(ClientDisconnected));
        assert!(f.channel.check_client_disconnected());
    }

    #[test]
    fn test_write_soon_rotates_outbuf_on_overflow() {
        let f = fixture_with(hello, |a| a.outbuf_high_watermark = 3);
        fill_socket(&f.channel);
        f.queue(b"");
        f.channel.lock().current_outbuf_count = 4;
        assert_eq!(f.channel.write_soon(b"xyz"), Ok(3));
        assert_eq!(f.outbufs(), [b"xyz".to_vec()]);
    }

    /// Loopback TCP (the socket pair on Windows) can hold several MiB in its buffers.
    const BIG: usize = if cfg!(windows) { 32 << 20 } else { 4 << 20 };

    /// A 4 MiB response (32 MiB on Windows), sent in 64 KiB chunks, with a 256 KiB high
    /// watermark: far more than a socket buffer holds, so the worker has to wait for the I/O
    /// side.
    fn big_response_fixture() -> Fixture {
        fixture_with(
            |_e, sr| {
                sr.start("200 OK", [("Content-Length", BIG.to_string())])?;
                let chunks = (0..BIG / (64 * 1024)).map(|_| Ok(vec![b'x'; 64 * 1024]));
                Ok(Body::from_chunks(chunks.collect::<Vec<_>>()))
            },
            |a| a.outbuf_high_watermark = 256 * 1024,
        )
    }

    #[test]
    fn test_write_soon_waits_on_backpressure() {
        // A response far bigger than the socket buffer and the watermark: the worker must
        // wait for the "I/O thread" (this test) to drain the socket, and must not be lost.
        let mut f = big_response_fixture();
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        let worker_channel = Arc::clone(&f.channel);
        let worker = std::thread::spawn(move || worker_channel.service());
        let mut received = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        f.peer.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !worker.is_finished() || f.channel.writable() {
            assert!(Instant::now() < deadline, "the response never drained");
            f.channel.handle_write();
            match f.peer.read(&mut buf) {
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        worker.join().unwrap();
        received.extend(read_available(&mut f.peer));
        let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(received.len() - head_end, BIG);
    }

    #[test]
    fn test_write_soon_disconnected_while_over_watermark() {
        let f = big_response_fixture();
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        let worker_channel = Arc::clone(&f.channel);
        let worker = std::thread::spawn(move || worker_channel.service());
        // Wait until the worker is stuck behind the watermark, then close under it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while f.channel.lock().total_outbufs_len() <= f.channel.adj.outbuf_high_watermark {
            assert!(
                Instant::now() < deadline,
                "the worker never filled the buffers"
            );
            std::thread::yield_now();
        }
        f.dispatcher().handle_close();
        worker.join().unwrap();
        assert!(!f.channel.connected());
    }

    #[test]
    fn test_write_soon_attempts_flush_high_water_and_exception() {
        let f = fixture_with(hello, |a| a.outbuf_high_watermark = 3);
        f.queue(b"test");
        // The peer is gone: the flush that tries to get under the watermark fails.
        Hangup::of(&f).now();
        assert_eq!(f.channel.write_soon(b"xyz"), Err(ClientDisconnected));
        assert!(f.trigger_pulled(), "the I/O thread is woken to close");
        assert!(f.channel.will_close());
    }

    #[test]
    fn test_write_soon_flush_and_exception() {
        let f = fixture();
        Hangup::of(&f).now();
        assert_eq!(f.channel.write_soon(b"xyz"), Ok(3));
        assert!(f.trigger_pulled(), "the I/O thread is woken to close");
        assert!(!f.channel.connected());
    }

    /// A worker blocked in `write_soon` behind the watermark (2 bytes, "abc" queued, the
    /// socket full), as a thread.
    fn worker_waiting_for_room(f: &Fixture) -> std::thread::JoinHandle<bool> {
        f.channel.lock().serving = true;
        fill_socket(&f.channel);
        f.queue(b"abc");
        let worker_channel = Arc::clone(&f.channel);
        let worker = std::thread::spawn(move || worker_channel.write_soon(b"d").is_ok());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f.channel.lock().waiting_for_room {
            assert!(Instant::now() < deadline, "the worker never waited");
            std::thread::yield_now();
        }
        worker
    }

    #[test]
    fn test_handle_write_notify_after_flush() {
        let mut f = fixture_with(hello, |a| a.outbuf_high_watermark = 2);
        let worker = worker_waiting_for_room(&f);
        // Drain the junk the socket was filled with, so that the flush gets through.
        let mut received = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !received.ends_with(b"abcd") {
            assert!(
                Instant::now() < deadline,
                "abc, then the worker's d, never arrived"
            );
            received.extend(read_available(&mut f.peer));
            assert!(!f.channel.handle_write());
        }
        assert!(!f.channel.will_close());
        assert!(
            worker.join().unwrap(),
            "the waiting worker was woken and wrote"
        );
    }

    #[test]
    fn test_handle_write_no_notify_after_flush() {
        let f = fixture_with(hello, |a| a.outbuf_high_watermark = 2);
        let worker = worker_waiting_for_room(&f);
        assert!(!f.channel.handle_write());
        assert!(!f.channel.will_close());
        assert_eq!(f.channel.lock().total_outbufs_len(), 3, "nothing went out");
        assert!(f.channel.lock().waiting_for_room, "still waiting");
        f.dispatcher().handle_close();
        assert!(!worker.join().unwrap(), "closing wakes it, disconnected");
    }

    fn flush_some(f: &Fixture) -> bool {
        let (_st, flushed) = f.channel.flush_some(f.channel.lock());
        matches!(flushed, Ok(true))
    }

    #[test]
    fn test_flush_some_empty_outbuf() {
        let f = fixture();
        assert!(!flush_some(&f));
    }

    #[test]
    fn test_flush_some_full_outbuf_socket_returns_nonzero() {
        let f = fixture();
        f.queue(b"abc");
        assert!(flush_some(&f));
    }

    #[test]
    fn test_flush_some_full_outbuf_socket_returns_zero() {
        let f = fixture();
        fill_socket(&f.channel);
        f.queue(b"abc");
        assert!(!flush_some(&f));
    }

    #[test]
    fn test_flush_some_multiple_buffers_first_empty() {
        let mut f = fixture();
        f.queue(b"");
        f.queue(b"abc");
        assert!(flush_some(&f));
        assert_eq!(read_available(&mut f.peer), b"abc");
        // waitress keeps the emptied last buffer for the next write; here it is dropped, so
        // that an idle connection holds no output memory.
        assert!(f.outbufs().is_empty());
    }

    #[test]
    fn test_handle_close() {
        let mut f = fixture();
        f.dispatcher().handle_close();
        assert!(!f.channel.connected());
        assert!(peer_sees_close(&mut f.peer));
    }

    #[test]
    fn test_add_channel() {
        let f = fixture();
        assert!(f.map.borrow().contains_key(&f.channel.fd));
        assert!(f
            .server
            .active_channels
            .borrow()
            .contains_key(&f.channel.fd));
    }

    #[test]
    fn test_del_channel() {
        let f = fixture();
        f.dispatcher().handle_close();
        assert!(!f.map.borrow().contains_key(&f.channel.fd));
        assert!(f.server.active_channels.borrow().is_empty());
    }

    /// Feed `data` to a fresh channel and check what `received` left: a request still being
    /// read, how many complete requests (and whether the first is an error), whether a task
    /// was queued for them.
    fn received_leaves(data: &[u8], reading: bool, requests: usize, error: bool, task: bool) {
        let f = fixture();
        f.channel.received(data);
        let st = f.channel.lock();
        assert_eq!(st.request.is_some(), reading, "a request being read");
        assert_eq!(st.request_count(), requests, "complete requests");
        let first_is_error = st.requests.front().map_or(false, |r| r.error.is_some());
        assert_eq!(first_is_error, error, "the request is an error");
        drop(st);
        assert_eq!(f.task_queued(), task, "a task queued");
    }

    #[test]
    fn test_received() {
        received_leaves(b"GET / HTTP/1.1\r\n\r\n", false, 1, false, true);
    }

    #[test]
    fn test_received_no_chunk() {
        received_leaves(b"", false, 0, false, false);
    }

    #[test]
    fn test_received_preq_not_completed() {
        received_leaves(b"GET / HTTP/1.1\r\n", true, 0, false, false);
    }

    #[test]
    fn test_received_preq_completed_empty() {
        received_leaves(b"\r\n\r\n", false, 0, false, false);
    }

    #[test]
    fn test_received_preq_error() {
        received_leaves(b"GET / HTTP/1.1\r\nfoo : bar\r\n\r\n", false, 1, true, true);
    }

    #[test]
    fn test_received_while_closing_is_ignored() {
        let f = fixture();
        f.channel.set_will_close();
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        assert!(!f.channel.has_requests());
    }

    const POST_HEAD: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
    const EXPECT_HEAD: &[u8] =
        b"POST / HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";

    #[test]
    fn test_received_headers_finished_expect_continue_false() {
        let mut f = fixture();
        f.channel.received(POST_HEAD);
        assert!(f.channel.lock().request.is_some());
        assert!(!f.task_queued());
        assert!(f.outbufs().is_empty());
        assert_eq!(read_available(&mut f.peer), b"");
    }

    #[test]
    fn test_received_headers_finished_expect_continue_true() {
        let mut f = fixture();
        f.channel.received(EXPECT_HEAD);
        assert_eq!(read_available(&mut f.peer), CONTINUE);
        assert!(f.channel.lock().sent_continue);
        assert!(!f.channel.lock().request.as_ref().unwrap().completed);
        f.channel.received(b"ok");
        assert!(f.channel.has_requests());
    }

    #[test]
    fn test_received_headers_finished_expect_continue_true_sent_true() {
        let mut f = fixture();
        f.channel.lock().sent_continue = true;
        f.channel.received(EXPECT_HEAD);
        assert_eq!(read_available(&mut f.peer), b"");
        assert!(f.channel.lock().sent_continue);
        assert!(!f.channel.lock().request.as_ref().unwrap().completed);
        assert!(!f.task_queued());
    }

    #[test]
    fn test_service_with_one_request() {
        let mut f = fixture();
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        f.channel.service();
        assert!(!f.channel.has_requests());
        let out = read_available(&mut f.peer);
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(out.ends_with(b"\r\n\r\nhello"));
        assert!(f.channel.readable());
        assert!(!f.channel.lock().close_when_flushed);
    }

    #[test]
    fn test_service_with_one_error_request() {
        let mut f = fixture();
        f.channel.received(b"GET / HTTP/1.1\r\nfoo : bar\r\n\r\n");
        f.channel.service();
        assert!(!f.channel.has_requests());
        let out = String::from_utf8(read_available(&mut f.peer)).unwrap();
        // The header fails before the start line is read, so the answer is HTTP/1.0, as in
        // waitress.
        assert!(out.starts_with("HTTP/1.0 400 Bad Request"), "{out}");
        assert!(out.contains("Connection: close"));
        assert!(f.channel.lock().close_when_flushed);
        assert!(f.channel.handle_write(), "flushed: now close");
    }

    #[test]
    fn test_service_with_multiple_requests() {
        let mut f = fixture_with(
            |e, sr| {
                let path = e.get("PATH_INFO").unwrap_or("").to_string();
                sr.start("200 OK", [("Content-Length", path.len().to_string())])?;
                Ok(Body::from(path))
            },
            |_| {},
        );
        f.channel
            .received(b"GET /a HTTP/1.1\r\n\r\nGET /bb HTTP/1.1\r\n\r\n");
        assert_eq!(f.channel.lock().request_count(), 2);
        f.channel.service();
        f.channel.service();
        assert!(!f.channel.has_requests());
        let out = String::from_utf8(read_available(&mut f.peer)).unwrap();
        let a = out.find("\r\n\r\n/a").unwrap();
        let b = out.find("\r\n\r\n/bb").unwrap();
        assert!(a < b);
    }

    /// A channel whose application fails before its headers.
    fn failing_app(expose_tracebacks: bool) -> Fixture {
        fixture_with(
            |_e, _sr| Err("nope".into()),
            move |a| a.expose_tracebacks = expose_tracebacks,
        )
    }

    #[test]
    fn test_service_with_request_raises() {
        let mut f = failing_app(false);
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        let then = f.age();
        f.channel.service();
        assert!(!f.channel.has_requests());
        assert!(f.trigger_pulled());
        assert_ne!(f.channel.last_activity(), then);
        assert!(!f.channel.will_close());
        let out = String::from_utf8(read_available(&mut f.peer)).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 500 Internal Server Error"),
            "the error task ran"
        );
    }

    #[test]
    fn test_service_with_requests_raises_already_wrote_header() {
        let mut f = fixture_with(
            |_e, sr| {
                sr.start("200 OK", [("Content-Length", "10")])?;
                Ok(Body::from_chunks(vec![
                    Ok(b"abc".to_vec()),
                    Err("nope".into()),
                ]))
            },
            |_| {},
        );
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        let then = f.age();
        f.channel.service();
        assert!(!f.channel.has_requests());
        assert!(f.trigger_pulled());
        assert_ne!(f.channel.last_activity(), then);
        assert!(f.channel.lock().close_when_flushed);
        let out = String::from_utf8(read_available(&mut f.peer)).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(
            !out.contains(" 500 "),
            "no error task once the headers went out"
        );
    }

    #[test]
    fn test_service_with_requests_raises_didnt_write_header_expose_tbs() {
        let mut f = failing_app(true);
        f.channel.received(b"GET / HTTP/1.0\r\n\r\n");
        f.channel.service();
        assert!(!f.channel.will_close());
        assert!(!f.channel.has_requests());
        assert!(f.trigger_pulled());
        let out = String::from_utf8(read_available(&mut f.peer)).unwrap();
        assert!(out.starts_with("HTTP/1.0 500 Internal Server Error"));
        assert!(out.contains("\r\n\r\nnope\r\n\r\n"));
    }

    #[test]
    fn test_service_with_requests_raises_didnt_write_header() {
        let mut f = failing_app(false);
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        f.channel.service();
        assert!(!f.channel.has_requests());
        assert!(f.trigger_pulled());
        assert!(f.channel.lock().close_when_flushed);
        let out = String::from_utf8(read_available(&mut f.peer)).unwrap();
        assert!(out.starts_with("HTTP/1.1 500 Internal Server Error"));
        assert!(out.ends_with("The server encountered an unexpected internal server error\r\n\r\n(generated by waitress)"));
    }

    #[test]
    fn test_service_with_request_raises_disconnect() {
        let mut f = fixture_with(|_e, _sr| Err(ClientDisconnected.into()), |_| {});
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        let then = f.age();
        f.channel.service();
        assert!(!f.channel.has_requests());
        assert!(f.trigger_pulled());
        assert_ne!(f.channel.last_activity(), then);
        assert!(!f.channel.will_close());
        assert!(f.channel.lock().close_when_flushed);
        assert_eq!(read_available(&mut f.peer), b"", "no error task");
    }

    #[test]
    fn test_service_with_request_error_raises_disconnect() {
        // The application fails, and the client is gone by the time the 500 is written.
        let peer_slot: Arc<Mutex<Option<Hangup>>> = Arc::default();
        let slot = Arc::clone(&peer_slot);
        let called = Arc::new(Mutex::new(false));
        let app_called = Arc::clone(&called);
        let f = fixture_with(
            move |_e, _sr| {
                *app_called.lock().unwrap() = true;
                if let Some(hangup) = slot.lock().unwrap().take() {
                    hangup.now();
                }
                Err("nope".into())
            },
            |_| {},
        );
        *peer_slot.lock().unwrap() = Some(Hangup::of(&f));
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        let then = f.age();
        f.channel.service();
        assert!(*called.lock().unwrap(), "the task ran");
        assert!(!f.channel.has_requests());
        assert!(f.trigger_pulled());
        assert_ne!(f.channel.last_activity(), then);
        // The error task's write failed on the gone client: waitress's real `_flush_some`
        // sets `will_close` then too (its test's dummy task writes nothing).
        assert!(!f.channel.connected());
        assert!(f.channel.will_close() || f.channel.lock().close_when_flushed);
    }

    /// What the lookahead application saw.
    #[derive(Default)]
    struct Seen {
        started: bool,
        detected: bool,
        body: Vec<u8>,
    }

    /// waitress's `app_check_disconnect`: reads the body, and on `/sleep` polls
    /// `waitress.client_disconnected` for a while; answers "finished".
    fn lookahead_fixture(recv_bytes: usize) -> (Fixture, Arc<Mutex<Seen>>) {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let app_seen = Arc::clone(&seen);
        let f = fixture_with(
            move |e, sr| {
                app_seen.lock().unwrap().started = true;
                let mut body = Vec::new();
                e.input().read_to_end(&mut body)?;
                let check = e.client_disconnected().cloned();
                let mut detected = false;
                if e.get("PATH_INFO") == Some("/sleep") {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while let Some(check) = &check {
                        if check.is_disconnected() {
                            detected = true;
                            break;
                        }
                        if Instant::now() > deadline {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                *app_seen.lock().unwrap() = Seen {
                    started: true,
                    detected,
                    body,
                };
                sr.start(
                    "200 OK",
                    [("Content-Length", "8"), ("Content-Type", "text/plain")],
                )?;
                Ok(Body::from("finished"))
            },
            move |a| {
                a.recv_bytes = recv_bytes;
                a.channel_request_lookahead = 5;
            },
        );
        (f, seen)
    }

    #[test]
    fn test_client_disconnect() {
        let (f, seen) = lookahead_fixture(8192);
        let mut peer = f.peer.try_clone().unwrap();
        peer.write_all(b"GET /sleep HTTP/1.1\r\nHost: localhost:8080\r\n\r\n")
            .unwrap();
        assert!(f.channel.readable());
        f.dispatcher().handle_read_event();
        assert_eq!(f.channel.lock().request_count(), 1);
        let worker_channel = Arc::clone(&f.channel);
        let worker = std::thread::spawn(move || worker_channel.service());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !seen.lock().unwrap().started {
            assert!(Instant::now() < deadline, "the application never started");
            std::thread::yield_now();
        }
        // Close the client: thanks to the lookahead the channel still reads, and sees it.
        drop(peer);
        f.peer.shutdown(Shutdown::Both).unwrap();
        assert!(f.channel.readable());
        let dispatcher = f.map.borrow().get(&f.channel.fd).cloned().unwrap();
        dispatcher.handle_read_event();
        worker.join().unwrap();
        assert!(
            seen.lock().unwrap().detected,
            "the application saw the disconnect"
        );
    }

    #[test]
    fn test_lookahead_continue() {
        let (mut f, seen) = lookahead_fixture(8192);
        f.peer
            .write_all(
                b"POST / HTTP/1.1\r\nHost: localhost:8080\r\nContent-Length: 1\r\n\r\nx\
                  POST / HTTP/1.1\r\nHost: localhost:8080\r\nContent-Length: 1\r\n\
                  Expect: 100-continue\r\n\r\n",
            )
            .unwrap();
        f.dispatcher().handle_read_event();
        assert_eq!(f.channel.lock().request_count(), 1);
        f.channel.service();
        let data = String::from_utf8(read_available(&mut f.peer)).unwrap();
        assert!(data.ends_with("HTTP/1.1 100 Continue\r\n\r\n"), "{data:?}");
        f.peer.write_all(b"x").unwrap();
        f.dispatcher().handle_read_event();
        assert_eq!(f.channel.lock().request_count(), 1);
        f.channel.service();
        let data = String::from_utf8(read_available(&mut f.peer)).unwrap();
        assert_eq!(data.split("\r\n").last(), Some("finished"));
        assert_eq!(seen.lock().unwrap().body, b"x");
    }

    #[test]
    fn test_lookahead_bad_request_drop_extra_data() {
        // Two requests, the first one bad, split at `recv_bytes`; then reads that race with
        // the worker cleaning up after the error.
        let invalid = b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nContent-length: -1\r\n\r\n";
        let second = b"POST / HTTP/1.1\r\nHost: localhost:8080\r\nContent-Length: 1\r\n\r\nx";
        let (mut f, _seen) = lookahead_fixture(invalid.len());
        f.peer.write_all(invalid).unwrap();
        f.peer.write_all(second).unwrap();
        f.dispatcher().handle_read_event();
        assert_eq!(f.channel.lock().request_count(), 1);
        f.channel.service();
        assert!(f.channel.lock().close_when_flushed);
        // Read all of the next request: it is dropped, no request is made of it.
        f.dispatcher().handle_read_event();
        f.dispatcher().handle_read_event();
        let mut rest = [0u8; 1];
        let ours = match &f.channel.stream {
            #[cfg(unix)]
            ChannelStream::Unix(s) => s,
            #[cfg(unix)]
            ChannelStream::Tcp(_) => unreachable!(),
            #[cfg(windows)]
            ChannelStream::Tcp(s) => s,
        };
        assert!(
            (&*ours).read(&mut rest).is_err(),
            "no more data to be read (WouldBlock)"
        );
        assert_eq!(f.channel.lock().request_count(), 0);
        let data = String::from_utf8(read_available(&mut f.peer)).unwrap();
        assert!(data.starts_with("HTTP/1.1 400 Bad Request"), "{data:?}");
        assert!(!f.channel.readable());
        assert!(f.channel.writable());
        // The write closes the socket.
        f.dispatcher().handle_write_event();
        assert!(peer_sees_close(&mut f.peer));
    }

    #[test]
    fn test_cancel_no_requests() {
        let f = fixture();
        f.channel.cancel();
        assert!(!f.channel.has_requests());
    }

    #[test]
    fn test_cancel_with_requests() {
        let f = fixture();
        f.channel.received(b"GET / HTTP/1.1\r\n\r\n");
        f.channel.cancel();
        assert!(f.channel.will_close());
        assert!(!f.channel.connected());
        assert!(!f.channel.has_requests());
    }

    // ---- Rust-only behaviour ----

    #[test]
    fn end_of_stream_with_requests_due_serves_them_then_closes() {
        let mut f = fixture_with(hello, |a| a.channel_request_lookahead = 5);
        f.channel
            .received(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n");
        f.peer.shutdown(Shutdown::Write).unwrap();
        f.dispatcher().handle_read_event();
        assert!(f.map.borrow().contains_key(&f.channel.fd), "still open");
        assert!(!f.channel.readable());
        assert!(
            f.channel.check_client_disconnected(),
            "as waitress reports it"
        );
        assert!(
            f.channel.lock().request.is_none(),
            "the half request is dropped"
        );
        f.channel.service();
        assert!(read_available(&mut f.peer).ends_with(b"hello"));
        assert!(f.channel.handle_write(), "answered: now close");
    }

    #[test]
    fn end_of_stream_with_nothing_due_closes_at_once() {
        let f = fixture_with(hello, |a| a.channel_request_lookahead = 5);
        f.peer.shutdown(Shutdown::Write).unwrap();
        f.dispatcher().handle_read_event();
        assert!(!f.map.borrow().contains_key(&f.channel.fd));
    }

    #[test]
    fn request_header_timeout_closes_a_head_past_its_deadline() {
        let f = fixture_with(hello, |a| a.request_header_timeout = 1);
        f.channel.received(b"GET / HTTP/1.1\r\nX: ");
        assert!(!f.channel.interest().1, "within the deadline");
        let started = f
            .channel
            .lock()
            .head_started
            .expect("the head's first byte");
        f.channel.lock().head_started = Some(started - Duration::from_secs(2));
        assert_eq!(f.channel.interest(), (false, true), "past it: close");
        assert!(f.channel.will_close());
    }

    #[test]
    fn request_header_timeout_stops_at_the_end_of_the_head() {
        let f = fixture_with(hello, |a| a.request_header_timeout = 1);
        f.channel
            .received(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
        assert!(
            f.channel.lock().head_started.is_none(),
            "a slow body is not timed"
        );
    }

    #[test]
    fn drain_closes_an_idle_channel_and_finishes_a_busy_one() {
        let idle = fixture();
        assert_eq!(idle.channel.drain(), 0);
        assert!(idle.channel.handle_write(), "idle: closes at once");

        let mut busy = fixture_with(hello, |a| a.channel_request_lookahead = 5);
        busy.channel
            .received(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET /");
        assert_eq!(busy.channel.drain(), 2, "two requests read");
        assert!(!busy.channel.readable());
        busy.channel.service();
        assert!(!busy.channel.handle_write(), "one request still due");
        busy.channel.service();
        let out = read_available(&mut busy.peer);
        assert_eq!(out.windows(5).filter(|w| w == b"hello").count(), 2);
        assert!(busy.channel.handle_write(), "both answered: now close");
    }

    /// A fixture whose channel has read `request` from its socket, and its dispatcher.
    fn request_read(request: &[u8]) -> (Fixture, Rc<dyn Dispatcher>) {
        let mut f = fixture();
        let dispatcher = f.dispatcher();
        f.peer.write_all(request).unwrap();
        dispatcher.handle_read_event();
        (f, dispatcher)
    }

    #[test]
    fn a_finished_request_wakes_the_io_thread_only_when_it_must() {
        // Rust-only (`State::watch_for_input`): while a request is in flight the socket stays
        // watched for input, so the worker that ends it need not wake the I/O thread.
        let (mut f, dispatcher) = request_read(b"GET / HTTP/1.1\r\n\r\n");
        assert!(!f.channel.readable(), "a request is in flight");
        assert!(
            dispatcher.readable(),
            "and the socket is watched for input all the same"
        );
        f.channel.service();
        assert!(read_available(&mut f.peer).starts_with(b"HTTP/1.1 200 OK"));
        assert!(!f.trigger_pulled());
        // The same request with the round not watching for input (it never asked): the worker
        // must wake the I/O thread, as waitress's does.
        let (mut g, _) = request_read(b"GET / HTTP/1.1\r\n\r\n");
        g.channel.service();
        assert!(read_available(&mut g.peer).starts_with(b"HTTP/1.1 200 OK"));
        assert!(g.trigger_pulled());
    }

    #[test]
    fn a_served_request_is_reset_by_the_io_thread_and_reads_the_next() {
        // Rust-only (`ServerInfo::retire`, `ChannelServer::recycle_requests`): the worker
        // hands the request back; the I/O thread, after its round, resets it and reads the
        // connection's next request with it, which sees nothing of the first.
        let (mut f, dispatcher) =
            request_read(b"POST /retired?a=1 HTTP/1.1\r\nX-Old: 1\r\nContent-Length: 2\r\n\r\nhi");
        f.channel.service();
        assert!(read_available(&mut f.peer).starts_with(b"HTTP/1.1 200 OK"));
        {
            let retired = f.server.info.retired.lock().unwrap();
            assert_eq!(retired.len(), 1);
            assert_eq!(retired[0].path, "/retired");
        }
        f.server.recycle_requests();
        assert!(f.server.info.retired.lock().unwrap().is_empty());
        assert_eq!(f.server.reading.borrow().spare_requests.len(), 1);

        f.peer
            .write_all(b"GET /next HTTP/1.0\r\nHost: h\r\n\r\n")
            .unwrap();
        dispatcher.handle_read_event();
        assert!(f.server.reading.borrow().spare_requests.is_empty());
        let st = f.channel.lock();
        let next = &st.requests[0];
        let fresh = {
            let mut fresh = HttpRequestParser::new(Arc::clone(&f.server.info.adj));
            fresh.received(b"GET /next HTTP/1.0\r\nHost: h\r\n\r\n");
            fresh
        };
        assert_eq!(next.headers, fresh.headers);
        assert_eq!(
            (&*next.command, &next.path, &next.query, &*next.version),
            ("GET", &"/next".to_string(), &String::new(), "1.0")
        );
        assert!(next.body_rcv.is_none() && next.connection_close && next.completed);
    }

    #[test]
    fn the_socket_stays_watched_while_the_serving_worker_sends() {
        // A poll round that begins while the worker is sending its response, without the
        // lock, still watches for input, so the worker need not wake the I/O thread after.
        let (f, dispatcher) = request_read(b"GET / HTTP/1.1\r\n\r\n");
        {
            let mut st = f.channel.lock();
            let taken = st.requests.pop_front();
            assert!(taken.is_some());
            st.serving = true;
            st.flushing = Some(100);
        }
        assert!(dispatcher.readable());
        // Output still queued is another matter: the I/O thread may have to send it.
        f.channel.lock().outbufs.push_back(OutBuf::Bytes({
            let mut buf = OverflowableBuffer::new(1 << 20);
            buf.append(b"HTTP/1.1 200 OK\r\n").unwrap();
            buf
        }));
        assert!(!dispatcher.readable());
    }

    #[test]
    fn input_while_busy_stays_in_the_socket_until_the_request_is_done() {
        let (mut f, dispatcher) = request_read(b"GET /1 HTTP/1.1\r\n\r\n");
        assert!(dispatcher.readable());
        // The next request comes while the first waits for a worker: it is not read, and
        // the socket is no longer watched.
        f.peer.write_all(b"GET /2 HTTP/1.1\r\n\r\n").unwrap();
        dispatcher.handle_read_event();
        assert_eq!(f.channel.lock().requests.len(), 1);
        assert!(!dispatcher.readable());
        // The worker that ends the first request wakes the I/O thread, which reads on.
        f.channel.service();
        assert!(f.trigger_pulled());
        assert!(dispatcher.readable());
        dispatcher.handle_read_event();
        let st = f.channel.lock();
        assert_eq!(st.requests.len(), 1);
        assert_eq!(st.requests[0].path, "/2");
        drop(st);
        assert!(read_available(&mut f.peer).starts_with(b"HTTP/1.1 200 OK"));
    }
}
