//! Port of waitress/task.py.
//!
//! The worker side of the server. `ThreadedTaskDispatcher` is a pool of worker threads fed
//! from a `Mutex`/`Condvar` queue; a `Task` serves one request on a worker: it builds the
//! environ, calls the application, and turns the status, headers and body into bytes queued
//! on the channel (the socket itself belongs to the I/O thread and the channel's flush logic).

use std::collections::{BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

    /// Queue work and wake one idle worker; logs "Task queue depth is N" on the
    /// `waitress.queue` logger when there are more tasks than idle threads.
    pub fn add_task(&self, task: Arc<dyn Service>) {
        task.defer();
        let mut state = self.lock();
        state.queue.push_back((task, profiling::start()));
        self.queue_cv.notify_one();
        let queue_size = state.queue.len();
        let idle = state
            .threads
            .len()
            .saturating_sub(state.stop_count + state.active_count);
        if queue_size > idle {
            QUEUE_LOGGER.warning(&format!("Task queue depth is {}", queue_size - idle));
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
        if !self.wrote_header {
            let head = self.build_response_header();
            self.channel.write_soon(&head)?;
            self.wrote_header = true;
        }
        if data.is_empty() {
            return Ok(());
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
            return Ok(());
        }
        if self.chunked_response {
            let mut framed = Vec::with_capacity(data.len() + 12);
            framed.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
            framed.extend_from_slice(data);
            framed.extend_from_slice(b"\r\n");
            self.channel.write_soon(&framed)?;
        } else if let Some(cl) = self.content_length {
            let room = cl.saturating_sub(self.content_bytes_written);
            let take = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            self.content_bytes_written += take as u64;
            if take != data.len() && !self.logged_write_excess {
                LOGGER.warning(&format!(
                    "application-written content exceeded the number of bytes specified by Content-Length header ({cl})"
                ));
                self.logged_write_excess = true;
            }
            if take > 0 {
                self.channel.write_soon(&data[..take])?;
            }
        } else {
            self.channel.write_soon(data)?;
        }
        Ok(())
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
                        self.channel.write_soon_file(buffer)?;
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
