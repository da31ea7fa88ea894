//! Port of waitress/task.py.
//!
//! The worker side of the server. `ThreadedTaskDispatcher` is a fixed pool of worker threads
//! fed from a `Mutex`/`Condvar` queue; a `Task` runs one request on a worker: it builds the
//! environ, calls the application, and writes the status line, headers and body into the
//! channel's buffers (never onto the socket, which belongs to the I/O thread).

use std::sync::Arc;
use std::time::Duration;

use crate::adjustments::Adjustments;
use crate::app::{AppError, ClientDisconnected, DisconnectCheck, SharedApp};
use crate::buffers::ReadOnlyFileBasedBuffer;
use crate::parser::HttpRequestParser;

/// Work the dispatcher runs on a worker thread: in the server, a channel with requests.
///
/// waitress: the duck-typed "task" of `ThreadedTaskDispatcher` (`service`, `cancel`, `defer`).
pub trait Service: Send + Sync {
    /// Run (on a worker thread).
    fn service(&self);
    /// Called instead of `service` for work still queued at shutdown.
    fn cancel(&self);
    /// Called when the work is queued.
    fn defer(&self) {}
}

/// A fixed pool of worker threads serving a queue of [`Service`]s.
///
/// waitress: `ThreadedTaskDispatcher`.
pub struct ThreadedTaskDispatcher {}

impl ThreadedTaskDispatcher {
    /// A dispatcher with no threads yet (see [`set_thread_count`](Self::set_thread_count)).
    pub fn new() -> Arc<Self> {
        todo!("task work")
    }

    /// Grow or shrink the pool to `count` threads.
    pub fn set_thread_count(self: &Arc<Self>, count: usize) {
        let _ = count;
        todo!("task work")
    }

    /// Queue work; warns "Task queue depth is N" when every thread is busy.
    pub fn add_task(&self, task: Arc<dyn Service>) {
        let _ = task;
        todo!("task work")
    }

    /// Stop every thread, cancelling queued work when `cancel_pending`; waits up to `timeout`.
    /// Returns whether every thread stopped in time.
    pub fn shutdown(&self, cancel_pending: bool, timeout: Duration) -> bool {
        let _ = (cancel_pending, timeout);
        todo!("task work")
    }
}

/// What a task knows of its server (waitress: `channel.server`).
pub struct ServerInfo {
    /// The application (already wrapped by the proxy-headers middleware when configured).
    pub application: SharedApp,
    /// `SERVER_NAME` when the request has no `Host`.
    pub server_name: String,
    /// The port the listener is bound to, as the environ's `SERVER_PORT` string.
    pub effective_port: String,
    /// The settings.
    pub adj: Arc<Adjustments>,
}

/// The client's address (waitress: `channel.addr`): an IP and port for TCP, `localhost` and no
/// port for a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// The host part (`REMOTE_ADDR`).
    pub host: String,
    /// The port (`REMOTE_PORT`); none for a Unix socket.
    pub port: Option<u16>,
}

/// What a task needs from its channel (waitress: `task.channel`). The channel implements it;
/// tests use a dummy that records what was written.
pub trait TaskChannel: Send + Sync {
    /// The server the connection belongs to.
    fn server(&self) -> &ServerInfo;
    /// The peer's address.
    fn addr(&self) -> &PeerAddr;
    /// Queue bytes for sending; refused once the client has gone (waitress: `write_soon`).
    fn write_soon(&self, data: &[u8]) -> Result<usize, ClientDisconnected>;
    /// Queue a file to be streamed by the I/O thread (waitress: `write_soon` with a
    /// `ReadOnlyFileBasedBuffer`); returns the bytes it will send.
    fn write_soon_file(&self, buffer: ReadOnlyFileBasedBuffer) -> Result<u64, ClientDisconnected>;
    /// Whether the client is still connected (waitress: `channel.connected`).
    fn connected(&self) -> bool;
    /// The `waitress.client_disconnected` check for the environ.
    fn disconnect_check(&self) -> DisconnectCheck;
}

/// Why a task stopped short.
#[derive(Debug)]
pub enum TaskError {
    /// The client went away while the response was being written.
    ClientDisconnected,
    /// The application failed (an error or a panic, turned into an error).
    App(AppError),
}

/// One request being served on a worker (waitress: `Task`, with `WSGITask` and `ErrorTask`).
pub struct Task<'a> {
    /// Close the connection once this response is sent.
    pub close_on_finish: bool,
    /// The status line and headers have been queued.
    pub wrote_header: bool,
    channel: &'a dyn TaskChannel,
    request: &'a mut HttpRequestParser,
}

impl<'a> Task<'a> {
    /// A task that runs the application (waitress: `WSGITask`).
    pub fn wsgi(channel: &'a dyn TaskChannel, request: &'a mut HttpRequestParser) -> Self {
        let _ = (channel, request);
        todo!("task work")
    }

    /// A task that answers `request.error` (waitress: `ErrorTask`).
    pub fn error(channel: &'a dyn TaskChannel, request: &'a mut HttpRequestParser) -> Self {
        let _ = (channel, request);
        todo!("task work")
    }

    /// Serve the request: start, execute, finish.
    pub fn service(&mut self) -> Result<(), TaskError> {
        let _ = (&self.channel, &self.request);
        todo!("task work")
    }
}
