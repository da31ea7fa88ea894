//! Port of waitress/task.py.
//!
//! The worker side of the server. `ThreadedTaskDispatcher` is a pool of worker threads fed
//! from a `Mutex`/`Condvar` queue; a `Task` serves one request on a worker: it builds the
//! environ, calls the application, and turns the status, headers and body into bytes queued
//! on the channel (the socket itself belongs to the I/O thread and the channel's flush logic).

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::access_log;
use crate::adjustments::Adjustments;
use crate::app::{
    validate_header, validate_status, AppError, Body, ClientDisconnected, DisconnectCheck, Environ,
    ResponseSink, SharedApp, StartResponse, StartResponseError,
};
use crate::buffers::ReadOnlyFileBasedBuffer;
use crate::parser::HttpRequestParser;
use crate::profiling::{self, Stage};
use crate::utilities::{http_date_now, LOGGER, QUEUE_LOGGER};

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

/// The dispatcher's shared state, guarded by `ThreadedTaskDispatcher::state`.
struct DispatcherState {
    /// Thread numbers in use (waitress: `threads`).
    threads: BTreeSet<usize>,
    /// Work waiting for a thread, with the moment it was queued (for the profiler).
    queue: VecDeque<(Arc<dyn Service>, Option<Instant>)>,
    /// Threads asked to exit and not gone yet (waitress: `stop_count`).
    stop_count: usize,
    /// Threads not waiting for work (waitress: `active_count`).
    active_count: usize,
}

/// A pool of worker threads serving a queue of [`Service`]s.
///
/// waitress: `ThreadedTaskDispatcher`.
pub struct ThreadedTaskDispatcher {
    /// Guards the queue and the thread counts. Held only for queue operations, never while a
    /// task runs.
    state: Mutex<DispatcherState>,
    /// Waited on by idle workers; notified by `add_task` (one) and by shrinking or shutdown
    /// (all).
    queue_cv: Condvar,
    /// Waited on by `shutdown`; notified by each worker as it exits.
    thread_exit_cv: Condvar,
}

impl std::fmt::Debug for ThreadedTaskDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadedTaskDispatcher { .. }")
    }
}

impl ThreadedTaskDispatcher {
    /// A dispatcher with no threads yet (see [`set_thread_count`](Self::set_thread_count)).
    pub fn new() -> Arc<Self> {
        Arc::new(ThreadedTaskDispatcher {
            state: Mutex::new(DispatcherState {
                threads: BTreeSet::new(),
                queue: VecDeque::new(),
                stop_count: 0,
                active_count: 0,
            }),
            queue_cv: Condvar::new(),
            thread_exit_cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, DispatcherState> {
        // A worker never panics while holding the lock (tasks run outside it), so a poisoned
        // lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body of each worker thread (waitress: `handler_thread`).
    fn handler_thread(self: Arc<Self>, thread_no: usize) {
        loop {
            let (task, queued_at) = {
                let mut state = self.lock();
                while state.queue.is_empty() && state.stop_count == 0 {
                    state.active_count -= 1;
                    state = self.queue_cv.wait(state).unwrap_or_else(|e| e.into_inner());
                    state.active_count += 1;
                }
                if state.stop_count > 0 {
                    state.active_count -= 1;
                    state.stop_count -= 1;
                    state.threads.remove(&thread_no);
                    self.thread_exit_cv.notify_all();
                    return;
                }
                match state.queue.pop_front() {
                    Some(item) => item,
                    None => continue,
                }
            };
            profiling::finish(Stage::QueueWait, queued_at);
            // A panic in a task must not take the worker with it.
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| task.service())) {
                LOGGER.error(&format!(
                    "Exception when servicing task: {}",
                    panic_message(&panic)
                ));
            }
        }
    }

    /// Grow or shrink the pool to `count` threads. Surplus threads exit once they finish
    /// their current task.
    pub fn set_thread_count(self: &Arc<Self>, count: usize) {
        let mut state = self.lock();
        let mut running = state.threads.len() - state.stop_count;
        let mut thread_no = 0;
        while running < count {
            while state.threads.contains(&thread_no) {
                thread_no += 1;
            }
            let worker = Arc::clone(self);
            let number = thread_no;
            let spawned = std::thread::Builder::new()
                .name(format!("waitress-{number}"))
                .spawn(move || worker.handler_thread(number));
            if let Err(e) = spawned {
                LOGGER.error(&format!("could not start worker thread: {e}"));
                break;
            }
            state.threads.insert(thread_no);
            state.active_count += 1;
            running += 1;
            thread_no += 1;
        }
        if running > count {
            state.stop_count += running - count;
            self.queue_cv.notify_all();
        }
    }

    /// How many worker threads exist (for tests and diagnostics).
    pub fn thread_count(&self) -> usize {
        self.lock().threads.len()
    }

    /// Queue work and wake one idle worker; logs "Task queue depth is N" on the
    /// `waitress.queue` logger when there are more tasks than idle threads.
    pub fn add_task(&self, task: Arc<dyn Service>) {
        task.defer();
        let depth = {
            let mut state = self.lock();
            state.queue.push_back((task, profiling::start()));
            let idle = state
                .threads
                .len()
                .saturating_sub(state.stop_count + state.active_count);
            state.queue.len().saturating_sub(idle)
        };
        // Woken after the lock is released, so the worker does not wake into a held lock; the
        // task is already queued, so the wake-up cannot be missed.
        self.queue_cv.notify_one();
        // Logged after the lock is released too: a woken worker must not wait on our write.
        if depth > 0 {
            QUEUE_LOGGER.warning(&format!("Task queue depth is {depth}"));
        }
    }

    /// Stop every thread, cancelling queued work when `cancel_pending`; waits up to `timeout`
    /// for running tasks to end. Returns whether the queue was cancelled (waitress returns
    /// True then).
    pub fn shutdown(self: &Arc<Self>, cancel_pending: bool, timeout: Duration) -> bool {
        self.set_thread_count(0);
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.threads.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                LOGGER.warning(&format!("{} thread(s) still running", state.threads.len()));
                break;
            }
            state = self
                .thread_exit_cv
                .wait_timeout(state, (deadline - now).min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if cancel_pending {
            if !state.queue.is_empty() {
                LOGGER.warning(&format!("Canceling {} pending task(s)", state.queue.len()));
            }
            let cancelled: Vec<_> = state.queue.drain(..).collect();
            self.queue_cv.notify_all();
            drop(state);
            for (task, _) in cancelled {
                task.cancel();
            }
            return true;
        }
        false
    }
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
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

impl From<ClientDisconnected> for TaskError {
    fn from(_: ClientDisconnected) -> Self {
        TaskError::ClientDisconnected
    }
}

impl From<AppError> for TaskError {
    fn from(error: AppError) -> Self {
        if error.downcast_ref::<ClientDisconnected>().is_some() {
            TaskError::ClientDisconnected
        } else {
            TaskError::App(error)
        }
    }
}

/// Which of waitress's task classes a [`Task`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `WSGITask`: runs the application.
    Wsgi,
    /// `ErrorTask`: answers `request.error`.
    Error,
}

/// `CONTENT_LENGTH` and `CONTENT_TYPE` keep their names in the environ; every other header
/// gets the `HTTP_` prefix (waitress: `rename_headers`).
fn environ_key(header: &str) -> std::borrow::Cow<'static, str> {
    match header {
        "CONTENT_LENGTH" => "CONTENT_LENGTH".into(),
        "CONTENT_TYPE" => "CONTENT_TYPE".into(),
        other => format!("HTTP_{other}").into(),
    }
}

/// One request being served on a worker (waitress: `Task`, with `WSGITask` and `ErrorTask`).
pub struct Task<'a> {
    /// Close the connection once this response is sent.
    pub close_on_finish: bool,
    /// The status line and headers have been queued.
    pub wrote_header: bool,
    channel: &'a dyn TaskChannel,
    request: &'a mut HttpRequestParser,
    kind: Kind,
    /// `"1.0"` or `"1.1"`: any other request version is answered as 1.0.
    version: &'static str,
    status: String,
    response_headers: Vec<(String, String)>,
    content_length: Option<u64>,
    content_bytes_written: u64,
    logged_write_excess: bool,
    logged_write_no_body: bool,
    /// `start_response` has been called (waitress: `complete`).
    complete: bool,
    chunked_response: bool,
}

impl<'a> Task<'a> {
    fn new(channel: &'a dyn TaskChannel, request: &'a mut HttpRequestParser, kind: Kind) -> Self {
        let version = if request.version == "1.1" {
            "1.1"
        } else {
            "1.0"
        };
        Task {
            close_on_finish: false,
            wrote_header: false,
            channel,
            request,
            kind,
            version,
            status: "200 OK".to_string(),
            response_headers: Vec::new(),
            content_length: None,
            content_bytes_written: 0,
            logged_write_excess: false,
            logged_write_no_body: false,
            complete: kind == Kind::Error,
            chunked_response: false,
        }
    }

    /// A task that runs the application (waitress: `WSGITask`).
    pub fn wsgi(channel: &'a dyn TaskChannel, request: &'a mut HttpRequestParser) -> Self {
        Task::new(channel, request, Kind::Wsgi)
    }

    /// A task that answers `request.error` (waitress: `ErrorTask`).
    pub fn error(channel: &'a dyn TaskChannel, request: &'a mut HttpRequestParser) -> Self {
        Task::new(channel, request, Kind::Error)
    }

    /// The request path, for log messages.
    pub fn path(&self) -> &str {
        &self.request.path
    }

    /// Serve the request: start, execute, finish.
    pub fn service(&mut self) -> Result<(), TaskError> {
        match self.kind {
            Kind::Wsgi => self.execute_wsgi()?,
            Kind::Error => self.execute_error()?,
        }
        self.finish()
    }

    /// Statuses 1xx, 204 and 304 carry no body.
    fn has_body(&self) -> bool {
        !(self.status.starts_with('1')
            || self.status.starts_with("204")
            || self.status.starts_with("304"))
    }

    /// Close after this response, announcing it with `Connection: close` unless the headers
    /// already went out or name a `Connection` already.
    fn set_close_on_finish(&mut self) {
        if !self.wrote_header
            && !self
                .response_headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("connection"))
        {
            self.response_headers
                .push(("Connection".to_string(), "close".to_string()));
        }
        self.close_on_finish = true;
    }

    /// The status line and headers, with waitress's keep-alive decisions, `Content-Length`
    /// or chunked framing, `Server`/`Via` and `Date`, sorted by name.
    pub fn build_response_header(&mut self) -> Vec<u8> {
        let connection = self
            .request
            .headers
            .get("CONNECTION")
            .map(|c| c.to_ascii_lowercase())
            .unwrap_or_default();
        let has_body = self.has_body();
        let mut content_length_header: Option<String> = None;
        let mut date_header = false;
        let mut server_header = false;
        let mut headers = Vec::with_capacity(self.response_headers.len() + 4);
        for (name, value) in std::mem::take(&mut self.response_headers) {
            let name = capitalize_header_name(&name);
            match name.as_str() {
                "Content-Length" if !has_body => continue,
                "Content-Length" => content_length_header = Some(value.clone()),
                "Date" => date_header = true,
                "Server" => server_header = true,
                _ => {}
            }
            headers.push((name, value));
        }
        self.response_headers = headers;
        if content_length_header.is_none() && has_body {
            if let Some(cl) = self.content_length {
                content_length_header = Some(cl.to_string());
                self.response_headers
                    .push(("Content-Length".to_string(), cl.to_string()));
            }
        }
        let has_length = content_length_header.is_some_and(|v| !v.is_empty());
        if self.version == "1.0" {
            if connection == "keep-alive" && has_length {
                self.response_headers
                    .push(("Connection".to_string(), "Keep-Alive".to_string()));
            } else {
                self.set_close_on_finish();
            }
        } else {
            if connection == "close" {
                self.set_close_on_finish();
            }
            if !has_length {
                if has_body {
                    self.response_headers
                        .push(("Transfer-Encoding".to_string(), "chunked".to_string()));
                    self.chunked_response = true;
                }
                if !self.close_on_finish {
                    self.set_close_on_finish();
                }
            }
        }
        // A request framed both by Content-Length and chunked must not be followed by another
        // on this connection (RFC 9112; waitress sets the flag but never reads it).
        if self.request.connection_close && !self.close_on_finish {
            self.set_close_on_finish();
        }
        let ident = self.channel.server().adj.ident.clone();
        if !server_header {
            if let Some(ident) = ident {
                self.response_headers.push(("Server".to_string(), ident));
            }
        } else {
            let via = ident.unwrap_or_else(|| "waitress".to_string());
            self.response_headers.push(("Via".to_string(), via));
        }
        if !date_header {
            self.response_headers
                .push(("Date".to_string(), http_date_now()));
        }
        self.response_headers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"HTTP/");
        head.extend_from_slice(self.version.as_bytes());
        head.push(b' ');
        push_latin1(&mut head, &self.status);
        for (name, value) in &self.response_headers {
            head.extend_from_slice(b"\r\n");
            push_latin1(&mut head, name);
            head.extend_from_slice(b": ");
            push_latin1(&mut head, value);
        }
        head.extend_from_slice(b"\r\n\r\n");
        head
    }

    /// Drop any `Content-Length` the application gave (waitress:
    /// `remove_content_length_header`).
    pub fn remove_content_length_header(&mut self) {
        self.response_headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-length"));
    }

    /// Send the headers if nothing was sent, then the last chunk of a chunked response.
    fn finish(&mut self) -> Result<(), TaskError> {
        if !self.wrote_header {
            self.write(b"")?;
        }
        if self.chunked_response {
            self.channel.write_soon(b"0\r\n\r\n")?;
        }
        Ok(())
    }

    /// Queue body bytes, sending the headers first; frames chunks for a chunked response,
    /// cuts what goes past the declared `Content-Length`, and drops bytes for a status that
    /// has no body, logging each of the last two once as waitress does.
    pub fn write(&mut self, data: &[u8]) -> Result<(), TaskError> {
        if !self.complete {
            return Err(TaskError::App(StartResponseError::NotStarted.into()));
        }
        if self.wrote_header {
            let body = self.body_bytes(data);
            access_log::note_body(self.chunked_response, data, &body);
            if !body.is_empty() {
                self.channel.write_soon(&body)?;
            }
            return Ok(());
        }
        // The head goes out together with the first body bytes: one buffer, one send.
        let mut head = self.build_response_header();
        access_log::note_status(&self.status);
        let body = self.body_bytes(data);
        access_log::note_body(self.chunked_response, data, &body);
        head.extend_from_slice(&body);
        self.channel.write_soon(&head)?;
        self.wrote_header = true;
        Ok(())
    }

    /// What goes on the wire for `data`: framed as a chunk for a chunked response, cut at the
    /// declared `Content-Length`, or nothing for a status without a body; the last two are
    /// logged once each, as waitress does.
    fn body_bytes<'d>(&mut self, data: &'d [u8]) -> Cow<'d, [u8]> {
        if data.is_empty() {
            return Cow::Borrowed(data);
        }
        if !self.has_body() {
            self.content_bytes_written += data.len() as u64;
            if !self.logged_write_no_body {
                LOGGER.warning(&format!(
                    "application-written content was ignored due to HTTP response that may not contain a message-body: ({})",
                    self.status
                ));
                self.logged_write_no_body = true;
            }
            return Cow::Borrowed(&[]);
        }
        if self.chunked_response {
            let mut framed = Vec::with_capacity(data.len() + 12);
            framed.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
            framed.extend_from_slice(data);
            framed.extend_from_slice(b"\r\n");
            return Cow::Owned(framed);
        }
        let Some(cl) = self.content_length else {
            return Cow::Borrowed(data);
        };
        let room = cl.saturating_sub(self.content_bytes_written);
        let take = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.content_bytes_written += take as u64;
        if take != data.len() && !self.logged_write_excess {
            LOGGER.warning(&format!(
                "application-written content exceeded the number of bytes specified by Content-Length header ({cl})"
            ));
            self.logged_write_excess = true;
        }
        Cow::Borrowed(&data[..take])
    }

    /// `ErrorTask.execute`: the error's status, headers and body, then close.
    fn execute_error(&mut self) -> Result<(), TaskError> {
        let ident = self.channel.server().adj.ident.clone();
        let Some(error) = self.request.error.clone() else {
            return Ok(());
        };
        let (status, headers, body) = error.to_response(ident.as_deref());
        self.status = status;
        self.response_headers.extend(headers);
        self.set_close_on_finish();
        self.content_length = Some(body.len() as u64);
        self.write(&body)
    }

    /// `WSGITask.execute`: call the application and send what it returns.
    fn execute_wsgi(&mut self) -> Result<(), TaskError> {
        let mut environ = self.get_environment()?;
        let application = Arc::clone(&self.channel.server().application);
        let started = profiling::start();
        let called = catch_unwind(AssertUnwindSafe(|| {
            application.call(&mut environ, &mut StartResponse::new(self))
        }));
        access_log::note_environ(&environ);
        let body = match called {
            Ok(result) => result,
            Err(panic) => Err(format!("application panicked: {}", panic_message(&*panic)).into()),
        };
        let result = body
            .map_err(TaskError::from)
            .and_then(|body| self.send_body(body));
        profiling::finish(Stage::Application, started);
        result
    }

    /// Send the application's body (the loop over `app_iter` in `WSGITask.execute`). The body
    /// is dropped, which is WSGI's `close()`, when this returns, except a file handed to the
    /// I/O thread, which closes it when sent.
    fn send_body(&mut self, body: Body) -> Result<(), TaskError> {
        match body {
            Body::Bytes(bytes) => {
                // Like waitress's one-element list: its length is the Content-Length.
                if self.content_length.is_none() {
                    self.content_length = Some(bytes.len() as u64);
                }
                self.write(&bytes)?;
            }
            Body::Chunks(chunks) => {
                for chunk in chunks {
                    let chunk = chunk.map_err(TaskError::from)?;
                    self.write(&chunk)?;
                }
            }
            Body::File(wrapper) => {
                let mut buffer = ReadOnlyFileBasedBuffer::new(wrapper);
                if buffer.is_seekable() {
                    let size = buffer
                        .prepare(self.content_length)
                        .map_err(|e| TaskError::App(e.into()))?;
                    if size > 0 {
                        if self.content_length != Some(size) {
                            if self.content_length.is_some() {
                                self.remove_content_length_header();
                            }
                            self.content_length = Some(size);
                        }
                        self.write(b"")?;
                        let sent = self.channel.write_soon_file(buffer)?;
                        access_log::note_body_bytes(sent);
                        return Ok(());
                    }
                }
                while let Some(block) = buffer.next_block() {
                    let block = block.map_err(|e| TaskError::App(e.into()))?;
                    self.write(&block)?;
                }
            }
        }
        if let Some(cl) = self.content_length {
            if self.content_bytes_written != cl && self.request.command != "HEAD" {
                self.set_close_on_finish();
                LOGGER.warning(&format!(
                    "application returned too few bytes ({}) for specified Content-Length ({}) via app_iter",
                    self.content_bytes_written, cl
                ));
            }
        }
        Ok(())
    }

    /// The environ of the request, with waitress's keys and values.
    pub fn get_environment(&mut self) -> Result<Environ, TaskError> {
        let channel = self.channel;
        let server = channel.server();
        let adj = &server.adj;
        let request = &mut *self.request;
        let url_prefix = adj.url_prefix.as_str();
        let mut path = request.path.clone();
        if path.starts_with('/') {
            path = format!("/{}", path.trim_start_matches('/'));
        }
        if !url_prefix.is_empty() {
            if path == url_prefix {
                path.clear();
            } else if path.starts_with(url_prefix) && path[url_prefix.len()..].starts_with('/') {
                path = path[url_prefix.len()..].to_string();
            }
        }
        let addr = channel.addr();
        let port = addr
            .port
            .map_or_else(|| "None".to_string(), |p| p.to_string());
        let mut environ = Environ::new();
        environ.set("REMOTE_ADDR", addr.host.clone());
        environ.set("REMOTE_HOST", addr.host.clone());
        environ.set("REMOTE_PORT", port);
        environ.set("REQUEST_METHOD", request.command.to_ascii_uppercase());
        environ.set("SERVER_PORT", server.effective_port.clone());
        environ.set("SERVER_NAME", server.server_name.clone());
        environ.set("SERVER_SOFTWARE", adj.ident.clone().unwrap_or_default());
        environ.set("SERVER_PROTOCOL", format!("HTTP/{}", self.version));
        environ.set("SCRIPT_NAME", url_prefix.to_string());
        environ.set("PATH_INFO", path);
        environ.set("REQUEST_URI", request.request_uri.clone());
        environ.set("QUERY_STRING", request.query.clone());
        environ.set("wsgi.url_scheme", request.url_scheme.clone());
        environ.set("wsgi.version", "1.0");
        environ.set("wsgi.multithread", "true");
        environ.set("wsgi.multiprocess", "false");
        environ.set("wsgi.run_once", "false");
        environ.set("wsgi.input_terminated", "true");
        for (name, value) in &request.headers {
            let key = environ_key(name);
            if !environ.contains(&key) {
                environ.set(key, value.clone());
            }
        }
        let input = request
            .get_body_stream()
            .map_err(|e| TaskError::App(e.into()))?;
        environ.set_input(input);
        environ.set_client_disconnected(channel.disconnect_check());
        Ok(environ)
    }
}

/// `content-TYPE` → `Content-Type` (waitress: `"-".join(x.capitalize() ...)`).
fn capitalize_header_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut start = true;
    for c in name.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        start = c == '-';
    }
    out
}

/// Header text goes out as latin-1, as waitress encodes it; a char beyond latin-1 (which an
/// application should not send) becomes `?`.
fn push_latin1(out: &mut Vec<u8>, text: &str) {
    if text.is_ascii() {
        out.extend_from_slice(text.as_bytes());
    } else {
        out.extend(
            text.chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')),
        );
    }
}

impl ResponseSink for Task<'_> {
    fn start_response(
        &mut self,
        status: &str,
        headers: Vec<(String, String)>,
    ) -> Result<(), StartResponseError> {
        if self.complete {
            return Err(StartResponseError::CalledTwice);
        }
        self.accept_response(status, headers)
    }

    fn start_response_with_error(
        &mut self,
        status: &str,
        headers: Vec<(String, String)>,
        error: AppError,
    ) -> Result<(), AppError> {
        if self.wrote_header {
            return Err(error);
        }
        self.response_headers.clear();
        self.accept_response(status, headers)
            .map_err(AppError::from)
    }

    fn write(&mut self, data: &[u8]) -> Result<(), AppError> {
        Task::write(self, data).map_err(|e| match e {
            TaskError::ClientDisconnected => AppError::from(ClientDisconnected),
            TaskError::App(e) => e,
        })
    }
}

impl Task<'_> {
    /// The checks and bookkeeping of waitress's `start_response`.
    fn accept_response(
        &mut self,
        status: &str,
        headers: Vec<(String, String)>,
    ) -> Result<(), StartResponseError> {
        self.complete = true;
        validate_status(status)?;
        self.status = status.to_string();
        for (name, value) in &headers {
            if let Some(length) = validate_header(name, value)? {
                self.content_length = Some(length);
            }
        }
        self.response_headers.extend(headers);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_task.py with a recording `DummyChannel`. Skipped:
    //! `test_get_environment_already_cached` (the environ is built once per task here, by
    //! construction), `test_service_server_raises_socket_error` (write_soon cannot raise a
    //! socket error: socket errors stay on the channel), `test_execute_bad_header_key`/
    //! `_value` and `test_execute_bad_status_value` (Python type checks; names and values are
    //! `String`s here), `test_start` (no start time is kept: the Date header comes from the
    //! per-second cache) and `test_execute_app_returns_closeable` (closing is `Drop`, which
    //! Rust guarantees).
    use super::*;
    use crate::app::{AppResult, Body, FileWrapper};
    use crate::utilities::Error;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct DummyChannel {
        info: ServerInfo,
        addr: PeerAddr,
        written: Mutex<Vec<u8>>,
        files: AtomicUsize,
        connected: AtomicBool,
    }

    impl TaskChannel for DummyChannel {
        fn server(&self) -> &ServerInfo {
            &self.info
        }
        fn addr(&self) -> &PeerAddr {
            &self.addr
        }
        fn write_soon(&self, data: &[u8]) -> Result<usize, ClientDisconnected> {
            if !self.connected.load(Ordering::SeqCst) {
                return Err(ClientDisconnected);
            }
            self.written.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn write_soon_file(
            &self,
            mut buffer: ReadOnlyFileBasedBuffer,
        ) -> Result<u64, ClientDisconnected> {
            self.files.fetch_add(1, Ordering::SeqCst);
            let len = buffer.len();
            let bytes = buffer.peek(len as usize).unwrap().to_vec();
            self.written.lock().unwrap().extend_from_slice(&bytes);
            Ok(len)
        }
        fn connected(&self) -> bool {
            self.connected.load(Ordering::SeqCst)
        }
        fn disconnect_check(&self) -> DisconnectCheck {
            DisconnectCheck::new(|| false)
        }
    }

    fn channel_with(app: SharedApp, change: impl FnOnce(&mut Adjustments)) -> DummyChannel {
        let mut adj = Adjustments::default();
        change(&mut adj);
        DummyChannel {
            info: ServerInfo {
                application: app,
                server_name: "localhost".to_string(),
                effective_port: "80".to_string(),
                adj: Arc::new(adj),
            },
            addr: PeerAddr {
                host: "127.0.0.1".to_string(),
                port: Some(39830),
            },
            written: Mutex::new(Vec::new()),
            files: AtomicUsize::new(0),
            connected: AtomicBool::new(true),
        }
    }

    fn channel(
        app: impl Fn(&mut Environ, &mut StartResponse<'_>) -> AppResult + Send + Sync + 'static,
    ) -> DummyChannel {
        channel_with(Arc::new(app), |_| {})
    }

    fn request(version: &str) -> HttpRequestParser {
        let mut r = HttpRequestParser::new(Arc::new(Adjustments::default()));
        r.version = version.to_string();
        r.command = "GET".to_string();
        r.path = "/".to_string();
        r.url_scheme = "http".to_string();
        r
    }

    fn ok_app(_e: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
        sr.start("200 OK", [("Content-Length", "0")])?;
        Ok(Body::empty())
    }

    /// The written bytes split at CRLF, blank lines dropped (waitress: `filter_lines`).
    fn lines(channel: &DummyChannel) -> Vec<String> {
        let written = channel.written.lock().unwrap();
        String::from_utf8_lossy(&written)
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn head(channel: &DummyChannel) -> String {
        let written = channel.written.lock().unwrap();
        let text = String::from_utf8_lossy(&written).to_string();
        text.split("\r\n\r\n").next().unwrap().to_string()
    }

    /// Build only the response head for a task in a given state.
    fn build(version: &str, setup: impl FnOnce(&mut Task<'_>)) -> (String, bool) {
        let ch = channel(ok_app);
        let mut req = request(version);
        let mut task = Task::wsgi(&ch, &mut req);
        task.complete = true;
        setup(&mut task);
        let head = String::from_utf8(task.build_response_header()).unwrap();
        (head, task.close_on_finish)
    }

    // TestThreadedTaskDispatcher

    struct CountingTask {
        serviced: Arc<AtomicUsize>,
        cancelled: Arc<AtomicUsize>,
        panic: bool,
    }

    impl Service for CountingTask {
        fn service(&self) {
            if self.panic {
                panic!("task raised");
            }
            self.serviced.fetch_add(1, Ordering::SeqCst);
        }
        fn cancel(&self) {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wait_until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "condition not reached in time");
            std::thread::yield_now();
        }
    }

    #[test]
    fn test_handler_thread_task_raises() {
        let dispatcher = ThreadedTaskDispatcher::new();
        dispatcher.set_thread_count(1);
        let serviced = Arc::new(AtomicUsize::new(0));
        let cancelled = Arc::new(AtomicUsize::new(0));
        let task = |panic| {
            Arc::new(CountingTask {
                serviced: Arc::clone(&serviced),
                cancelled: Arc::clone(&cancelled),
                panic,
            })
        };
        dispatcher.add_task(task(true));
        dispatcher.add_task(task(false));
        wait_until(|| serviced.load(Ordering::SeqCst) == 1);
        assert!(dispatcher.shutdown(true, Duration::from_secs(5)));
    }

    #[test]
    fn test_set_thread_count_increase_and_decrease() {
        let dispatcher = ThreadedTaskDispatcher::new();
        dispatcher.set_thread_count(3);
        assert_eq!(dispatcher.lock().threads.len(), 3);
        dispatcher.set_thread_count(3);
        assert_eq!(dispatcher.lock().threads.len(), 3);
        dispatcher.set_thread_count(1);
        wait_until(|| dispatcher.lock().threads.len() == 1);
        dispatcher.set_thread_count(2);
        assert_eq!(
            dispatcher
                .lock()
                .threads
                .iter()
                .copied()
                .collect::<Vec<_>>()
                .len(),
            2
        );
        assert!(dispatcher.shutdown(true, Duration::from_secs(5)));
        assert!(dispatcher.lock().threads.is_empty());
    }

    #[test]
    fn test_shutdown_cancels_pending_tasks() {
        let dispatcher = ThreadedTaskDispatcher::new();
        let serviced = Arc::new(AtomicUsize::new(0));
        let cancelled = Arc::new(AtomicUsize::new(0));
        dispatcher.add_task(Arc::new(CountingTask {
            serviced: Arc::clone(&serviced),
            cancelled: Arc::clone(&cancelled),
            panic: false,
        }));
        assert!(dispatcher.shutdown(true, Duration::from_secs(1)));
        assert_eq!(cancelled.load(Ordering::SeqCst), 1);
        assert_eq!(serviced.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn test_shutdown_no_cancel_pending() {
        let dispatcher = ThreadedTaskDispatcher::new();
        assert!(!dispatcher.shutdown(false, Duration::from_millis(10)));
    }

    // TestTask

    #[test]
    fn test_ctor_version_not_in_known() {
        let ch = channel(ok_app);
        let mut req = request("8.4");
        assert_eq!(Task::wsgi(&ch, &mut req).version, "1.0");
    }

    #[test]
    fn test_build_response_header_bad_http_version() {
        let (head, close) = build("8.4", |_| {});
        assert!(head.starts_with("HTTP/1.0 200 OK"));
        assert!(close);
    }

    #[test]
    fn test_build_response_header_v10_keepalive_no_content_length() {
        let (head, close) = build("1.0", |t| {
            t.request
                .headers
                .insert("CONNECTION".into(), "keep-alive".into());
        });
        let lines: Vec<&str> = head.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 4, "{head}");
        assert_eq!(lines[0], "HTTP/1.0 200 OK");
        assert_eq!(lines[1], "Connection: close");
        assert!(lines[2].starts_with("Date:"));
        assert_eq!(lines[3], "Server: waitress");
        assert!(close);
    }

    #[test]
    fn test_build_response_header_v10_keepalive_with_content_length() {
        let (head, close) = build("1.0", |t| {
            t.request
                .headers
                .insert("CONNECTION".into(), "keep-alive".into());
            t.response_headers = vec![("Content-Length".into(), "10".into())];
            t.content_length = Some(0);
        });
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[1], "Connection: Keep-Alive");
        assert_eq!(lines[2], "Content-Length: 10");
        assert!(!close);
    }

    #[test]
    fn test_build_response_header_v11_connection_closed_by_client() {
        let (head, close) = build("1.1", |t| {
            t.request
                .headers
                .insert("CONNECTION".into(), "close".into());
        });
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 200 OK");
        assert_eq!(lines[1], "Connection: close");
        assert_eq!(lines[4], "Transfer-Encoding: chunked");
        assert!(close);
    }

    #[test]
    fn test_build_response_header_v11_connection_keepalive_by_client() {
        let (head, close) = build("1.1", |t| {
            t.request
                .headers
                .insert("CONNECTION".into(), "keep-alive".into());
        });
        assert!(head.contains("Connection: close"));
        assert!(head.contains("Transfer-Encoding: chunked"));
        assert!(close);
    }

    #[test]
    fn test_build_response_header_v11_200_no_content_length() {
        let (head, close) = build("1.1", |_| {});
        assert!(head.contains("Transfer-Encoding: chunked"));
        assert!(close);
    }

    #[test]
    fn test_build_response_header_v11_no_body_statuses() {
        for status in ["204 No Content", "100 Continue", "304 Not Modified"] {
            let (head, close) = build("1.1", |t| t.status = status.to_string());
            assert!(head.starts_with(&format!("HTTP/1.1 {status}")));
            assert!(!head.contains("Transfer-Encoding"), "{status}");
            assert!(!head.contains("Content-Length"), "{status}");
            assert!(head.contains("Connection: close"));
            assert!(close);
        }
    }

    #[test]
    fn test_build_response_header_via_added() {
        let (head, _) = build("1.0", |t| {
            t.response_headers = vec![("Server".into(), "abc".into())];
        });
        assert!(head.contains("Server: abc"));
        assert!(head.contains("Via: waitress"));
    }

    #[test]
    fn test_build_response_header_date_exists() {
        let (head, _) = build("1.0", |t| {
            t.response_headers = vec![("Date".into(), "date".into())];
        });
        assert!(head.contains("Date: date"));
        assert_eq!(head.matches("Date:").count(), 1);
    }

    #[test]
    fn test_build_response_header_preexisting_content_length() {
        let (head, _) = build("1.1", |t| {
            t.content_length = Some(100);
        });
        assert!(head.contains("Content-Length: 100"));
        assert!(!head.contains("Transfer-Encoding"));
    }

    #[test]
    fn test_remove_content_length_header() {
        let ch = channel(ok_app);
        let mut req = request("1.0");
        let mut task = Task::wsgi(&ch, &mut req);
        task.response_headers = vec![
            ("Content-Length".into(), "70".into()),
            ("Content-Type".into(), "text/html".into()),
        ];
        task.remove_content_length_header();
        assert_eq!(
            task.response_headers,
            vec![("Content-Type".to_string(), "text/html".to_string())]
        );
    }

    #[test]
    fn test_finish_didnt_write_header_and_chunked() {
        let ch = channel(ok_app);
        let mut req = request("1.1");
        let mut task = Task::wsgi(&ch, &mut req);
        task.complete = true;
        task.finish().unwrap();
        assert!(task.wrote_header);
        assert!(task.chunked_response);
        let written = ch.written.lock().unwrap().clone();
        assert!(written.ends_with(b"\r\n\r\n0\r\n\r\n"));
    }

    #[test]
    fn test_write_start_response_uncalled() {
        let ch = channel(ok_app);
        let mut req = request("1.1");
        let mut task = Task::wsgi(&ch, &mut req);
        match task.write(b"abc") {
            Err(TaskError::App(e)) => {
                assert_eq!(
                    e.to_string(),
                    "start_response was not called before body written"
                )
            }
            _ => panic!("write before start_response must fail"),
        }
    }

    #[test]
    fn test_write_chunked_response() {
        let ch = channel(ok_app);
        let mut req = request("1.1");
        let mut task = Task::wsgi(&ch, &mut req);
        task.complete = true;
        task.write(b"abc").unwrap();
        let written = ch.written.lock().unwrap().clone();
        assert!(written.ends_with(b"\r\n\r\n3\r\nabc\r\n"));
    }

    #[test]
    fn test_write_preexisting_content_length() {
        let ch = channel(ok_app);
        let mut req = request("1.1");
        let mut task = Task::wsgi(&ch, &mut req);
        task.complete = true;
        task.content_length = Some(1);
        task.write(b"abc").unwrap();
        let written = ch.written.lock().unwrap().clone();
        assert!(written.ends_with(b"\r\n\r\na"));
        assert!(task.logged_write_excess);
    }

    // TestWSGITask

    fn serve(ch: &DummyChannel, version: &str) -> (Result<(), TaskError>, bool) {
        let mut req = request(version);
        let mut task = Task::wsgi(ch, &mut req);
        let result = task.service();
        (result, task.close_on_finish)
    }

    #[test]
    fn test_service() {
        let ch = channel(ok_app);
        let (result, _) = serve(&ch, "1.1");
        assert!(result.is_ok());
        assert!(lines(&ch)[0].starts_with("HTTP/1.1 200 OK"));
    }

    #[test]
    fn test_execute_app_calls_start_response_twice_wo_exc_info() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            Ok(Body::empty())
        });
        match serve(&ch, "1.1").0 {
            Err(TaskError::App(e)) => assert_eq!(
                e.to_string(),
                "start_response called a second time without providing exc_info."
            ),
            _ => panic!("expected an application error"),
        }
    }

    #[test]
    fn test_execute_app_calls_start_response_w_excinf_headers_unwritten() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "0")])?;
            sr.start_with_error("500 Oops", [("Content-Length", "0")], "boom".into())?;
            Ok(Body::empty())
        });
        assert!(serve(&ch, "1.1").0.is_ok());
        assert!(lines(&ch)[0].starts_with("HTTP/1.1 500 Oops"));
    }

    #[test]
    fn test_execute_app_calls_start_response_w_excinf_headers_written() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "3")])?;
            sr.write(b"abc")?;
            sr.start_with_error("500 Oops", [("Content-Length", "0")], "boom".into())?;
            Ok(Body::empty())
        });
        match serve(&ch, "1.1").0 {
            Err(TaskError::App(e)) => assert_eq!(e.to_string(), "boom"),
            _ => panic!("the error comes back once the headers are written"),
        }
    }

    #[test]
    fn test_execute_bad_headers() {
        type Case = (
            Vec<(&'static str, &'static str)>,
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (vec![("Connection", "close")], "200 OK", "Connection is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)"),
            (vec![("a", "\nabc")], "200 OK", "carriage return/line feed character present in header value"),
            (vec![("a\r", "abc")], "200 OK", "carriage return/line feed character present in header name"),
            (vec![], "200 OK\r\nFoo: bar", "carriage return/line feed character present in status"),
        ];
        for (headers, status, message) in cases {
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let status = status.to_string();
            let ch = channel(move |_e, sr| {
                sr.start(&status, headers.clone())?;
                Ok(Body::empty())
            });
            match serve(&ch, "1.1").0 {
                Err(TaskError::App(e)) => assert_eq!(e.to_string(), message),
                _ => panic!("expected {message}"),
            }
        }
    }

    #[test]
    fn test_preserve_header_value_order() {
        let ch = channel(|_e, sr| {
            sr.start(
                "200 OK",
                [("C", "b"), ("A", "b"), ("A", "a"), ("Content-Length", "0")],
            )?;
            Ok(Body::empty())
        });
        serve(&ch, "1.1").0.unwrap();
        let head = head(&ch);
        assert!(head.contains("A: b\r\nA: a\r\nC: b"), "{head}");
    }

    #[test]
    fn test_execute_app_calls_write_and_len1_body() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "12")])?;
            sr.write(b"abc")?;
            Ok(Body::from("123456789"))
        });
        serve(&ch, "1.1").0.unwrap();
        assert!(ch.written.lock().unwrap().ends_with(b"abc123456789"));

        let ch = channel(|_e, sr| {
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            Ok(Body::from("abc"))
        });
        serve(&ch, "1.0").0.unwrap();
        assert!(head(&ch).contains("Content-Length: 3"));
    }

    #[test]
    fn test_execute_app_returns_empty_chunk_as_first() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            Ok(Body::from_chunks(vec![
                Ok(b"".to_vec()),
                Ok(b"abc".to_vec()),
            ]))
        });
        serve(&ch, "1.0").0.unwrap();
        assert!(!head(&ch).contains("Content-Length"));
        assert!(ch.written.lock().unwrap().ends_with(b"abc"));
    }

    #[test]
    fn test_execute_app_returns_too_many_and_too_few_bytes() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "1")])?;
            Ok(Body::from_chunks(vec![Ok(b"abc".to_vec())]))
        });
        let (result, close) = serve(&ch, "1.0");
        result.unwrap();
        assert!(ch.written.lock().unwrap().ends_with(b"\r\n\r\na"));
        assert!(close, "1.0 without keep-alive closes anyway");

        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "9")])?;
            Ok(Body::from_chunks(vec![Ok(b"abc".to_vec())]))
        });
        let (_, close) = serve(&ch, "1.1");
        assert!(close, "too few bytes closes the connection");
    }

    #[test]
    fn test_execute_app_head_with_content_length() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "9")])?;
            Ok(Body::from_chunks(Vec::new()))
        });
        let mut req = request("1.1");
        req.command = "HEAD".to_string();
        let mut task = Task::wsgi(&ch, &mut req);
        task.service().unwrap();
        assert!(!task.close_on_finish);
    }

    #[test]
    fn test_execute_app_without_body_204() {
        let ch = channel(|_e, sr| {
            sr.start("204 No Content", [("Content-Length", "3")])?;
            Ok(Body::from("abc"))
        });
        serve(&ch, "1.1").0.unwrap();
        let written = ch.written.lock().unwrap().clone();
        assert!(written.ends_with(b"\r\n\r\n"), "no body for 204");
        assert!(!head(&ch).contains("Content-Length"));
    }

    #[test]
    fn test_execute_app_returns_filewrapper() {
        for (cl, expected_cl) in [
            (None, "6"),
            (Some("6"), "6"),
            (Some("3"), "3"),
            (Some("9"), "6"),
        ] {
            let ch = channel(move |_e, sr| {
                let headers: Vec<(&str, &str)> =
                    cl.map(|c| vec![("Content-Length", c)]).unwrap_or_default();
                sr.start("200 OK", headers)?;
                Ok(Body::File(FileWrapper::new(
                    std::io::Cursor::new(b"abcdef".to_vec()),
                    2,
                )))
            });
            serve(&ch, "1.1").0.unwrap();
            assert_eq!(ch.files.load(Ordering::SeqCst), 1);
            let head = head(&ch);
            assert!(
                head.contains(&format!("Content-Length: {expected_cl}")),
                "{cl:?}: {head}"
            );
            assert_eq!(head.matches("Content-Length").count(), 1);
        }
    }

    #[test]
    fn test_get_environment_paths_and_prefix() {
        let cases = [
            ("//abc/def", "", "/abc/def", ""),
            ("", "", "", ""),
            ("/abc", "/foo", "/abc", "/foo"),
            ("/foo/abc", "/foo", "/abc", "/foo"),
            ("/foo", "/foo", "", "/foo"),
            ("/foobar", "/foo", "/foobar", "/foo"),
        ];
        for (path, prefix, path_info, script_name) in cases {
            let ch = channel_with(Arc::new(ok_app), |a| a.url_prefix = prefix.to_string());
            let mut req = request("1.0");
            req.path = path.to_string();
            let mut task = Task::wsgi(&ch, &mut req);
            let environ = task.get_environment().unwrap();
            assert_eq!(environ.get("PATH_INFO"), Some(path_info), "{path} {prefix}");
            assert_eq!(environ.get("SCRIPT_NAME"), Some(script_name));
        }
    }

    #[test]
    fn test_get_environment_values() {
        let ch = channel(ok_app);
        let mut req = request("1.0");
        for (k, v) in [
            ("CONTENT_TYPE", "abc"),
            ("CONTENT_LENGTH", "10"),
            ("X_FOO", "\u{a0}BAR\u{85}"),
            ("CONNECTION", "close"),
        ] {
            req.headers.insert(k.to_string(), v.to_string());
        }
        req.query = "abc".to_string();
        let mut task = Task::wsgi(&ch, &mut req);
        let environ = task.get_environment().unwrap();
        let keys = environ.keys();
        assert_eq!(
            keys,
            [
                "CONTENT_LENGTH",
                "CONTENT_TYPE",
                "HTTP_CONNECTION",
                "HTTP_X_FOO",
                "PATH_INFO",
                "QUERY_STRING",
                "REMOTE_ADDR",
                "REMOTE_HOST",
                "REMOTE_PORT",
                "REQUEST_METHOD",
                "REQUEST_URI",
                "SCRIPT_NAME",
                "SERVER_NAME",
                "SERVER_PORT",
                "SERVER_PROTOCOL",
                "SERVER_SOFTWARE",
                "wsgi.input_terminated",
                "wsgi.multiprocess",
                "wsgi.multithread",
                "wsgi.run_once",
                "wsgi.url_scheme",
                "wsgi.version",
            ]
        );
        for (key, value) in [
            ("REQUEST_METHOD", "GET"),
            ("SERVER_PORT", "80"),
            ("SERVER_NAME", "localhost"),
            ("SERVER_SOFTWARE", "waitress"),
            ("SERVER_PROTOCOL", "HTTP/1.0"),
            ("SCRIPT_NAME", ""),
            ("HTTP_CONNECTION", "close"),
            ("PATH_INFO", "/"),
            ("QUERY_STRING", "abc"),
            ("REMOTE_ADDR", "127.0.0.1"),
            ("REMOTE_HOST", "127.0.0.1"),
            ("REMOTE_PORT", "39830"),
            ("CONTENT_TYPE", "abc"),
            ("CONTENT_LENGTH", "10"),
            ("HTTP_X_FOO", "\u{a0}BAR\u{85}"),
            ("wsgi.url_scheme", "http"),
        ] {
            assert_eq!(environ.get(key), Some(value), "{key}");
        }
        assert!(environ.client_disconnected().is_some());
    }

    // TestErrorTask

    fn error_lines(version: &str, connection: Option<&str>) -> (Vec<String>, bool) {
        let ch = channel(ok_app);
        let mut req = request(version);
        req.error = Some(Error::new(crate::utilities::ErrorKind::BadRequest, "body"));
        if let Some(c) = connection {
            req.headers.insert("CONNECTION".into(), c.into());
        }
        let mut task = Task::error(&ch, &mut req);
        task.service().unwrap();
        let close = task.close_on_finish;
        (lines(&ch), close)
    }

    #[test]
    fn test_execute_http_10_and_11() {
        for (version, connection) in [
            ("1.0", None),
            ("1.1", None),
            ("1.1", Some("close")),
            ("1.1", Some("keep-alive")),
        ] {
            let (lines, close) = error_lines(version, connection);
            assert_eq!(lines.len(), 9, "{lines:?}");
            assert_eq!(lines[0], format!("HTTP/{version} 400 Bad Request"));
            assert_eq!(lines[1], "Connection: close");
            assert_eq!(lines[2], "Content-Length: 46");
            assert_eq!(lines[3], "Content-Type: text/plain; charset=utf-8");
            assert!(lines[4].starts_with("Date: "));
            assert_eq!(lines[5], "Server: waitress");
            assert_eq!(lines[6], "Bad Request");
            assert_eq!(lines[7], "body");
            assert_eq!(lines[8], "(generated by waitress)");
            assert!(close);
        }
    }

    #[test]
    fn client_disconnected_is_reported() {
        let ch = channel(ok_app);
        ch.connected.store(false, Ordering::SeqCst);
        assert!(matches!(
            serve(&ch, "1.1").0,
            Err(TaskError::ClientDisconnected)
        ));
    }
}
