//! Port of waitress/task.py.
//!
//! The worker side of the server. `ThreadedTaskDispatcher` is a pool of worker threads fed
//! from a `Mutex`-guarded queue (idle workers park, and the last to fall asleep is woken
//! first, where waitress waits on a condition variable); a `Task` serves one request on a
//! worker: it builds the environ, calls the application, and turns the status, headers and
//! body into bytes queued on the channel (the socket itself belongs to the I/O thread and the
//! channel's flush logic).
//!
//! | waitress (task.py) | here |
//! |---|---|
//! | `ThreadedTaskDispatcher` (`handler_thread`, `set_thread_count`, `add_task`, `shutdown`) | [`ThreadedTaskDispatcher`], same methods; `start_new_thread` is the spawn inside `set_thread_count` |
//! | `Task` (`service`, `has_body`, `set_close_on_finish`, `build_response_header`, `remove_content_length_header`, `finish`, `write`) | [`Task`], same methods; `start` has no counterpart (the `Date` header comes from a per-second cache) |
//! | `ErrorTask.execute` | [`Task::error`] and `Task::execute_error` |
//! | `WSGITask.execute`, `get_environment` | [`Task::wsgi`], `Task::execute_wsgi`, [`Task::get_environment`]; the `start_response` closure is [`StartResponse`] in the app module |
//!
//! Beyond waitress, every call into the application's code is guarded where it happens (see
//! `execute_wsgi`), and no body goes out for HEAD, 1xx, 204 or 304 (see `sends_body`).

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::access_log;
use crate::adjustments::Adjustments;
use crate::app::{
    fixed_or, AppError, Body, ChunkIter, ClientDisconnected, DisconnectCheck, Environ, FileSource,
    FileWrapper, ResponseSink, SharedApp, StartResponse, StartResponseError, Text, Var,
};
use crate::buffers::ReadOnlyFileBasedBuffer;
use crate::parser::{HttpRequestParser, COMMON_METHODS};
use crate::profiling::{self, Stage};
use crate::utilities::{
    error_chain, http_date_now, keep_for_next, take_kept, Level, SpareStrings, LOGGER, QUEUE_LOGGER,
};

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
    /// Workers notified and not yet back to the queue. At most one wake-up is in flight at a
    /// time: the woken worker passes it on if work is still queued. Waking every idle worker
    /// for a burst of small tasks costs a system call each way per task; on a busy server
    /// the workers already awake drain the queue faster than new ones can be scheduled.
    /// Rust-only (waitress notifies its condition variable for each task). With a wake-up
    /// for each task instead (one core for the server, one for `wrk -t1`, two 4 s runs each,
    /// 6 Dec 2026): 1.27–1.35 `futex` calls and 1.00–1.07 context switches per response at
    /// 16 connections, against 0.18–0.27 and 0.18–0.25; at 100, 1.07 and 0.86 against
    /// 0.06–0.09 and 0.07–0.09; 96–103 k requests a second against 113–132 k at 16, and
    /// 97–116 k against 147–152 k at 100.
    waking: usize,
    /// The workers asleep (waitress's idle threads, which wait on its condition variable), by
    /// number, the last to fall asleep at the end. Rust-only: a wake-up goes to that last one,
    /// whose stack, kept buffers and CPU are still warm, where a condition variable wakes the
    /// one that has slept longest; a trickle of work then keeps one worker busy rather than
    /// each in turn. Eight interleaved 4 s runs each under `wrk -t1`: 9.8 → 8.8 µs of CPU per
    /// response at 16 connections, 11.3 → 9.9 at 100; 0.42 → 0.28 `futex` calls and 0.36 →
    /// 0.28 context switches per response at 16. The same parking with the longest sleeper
    /// woken first gained nothing (six runs each).
    sleepers: Vec<(usize, Thread)>,
}

/// A pool of worker threads serving a queue of [`Service`]s.
///
/// waitress: `ThreadedTaskDispatcher`.
pub struct ThreadedTaskDispatcher {
    /// Guards the queue and the thread counts. Held only for queue operations, never while a
    /// task runs.
    state: Mutex<DispatcherState>,
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
                waking: 0,
                sleepers: Vec::new(),
            }),
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
        let me = std::thread::current();
        loop {
            let (task, queued_at) = {
                let mut state = self.lock();
                while state.queue.is_empty() && state.stop_count == 0 {
                    state.active_count -= 1;
                    state.sleepers.push((thread_no, me.clone()));
                    drop(state);
                    // An `unpark` that comes before this `park` is not lost: it leaves a token
                    // that makes `park` return at once.
                    std::thread::park();
                    state = self.lock();
                    state.active_count += 1;
                    match state.sleepers.iter().position(|(n, _)| *n == thread_no) {
                        // Woken by someone else (`park` allows that): not a wake-up of ours.
                        Some(at) => drop(state.sleepers.remove(at)),
                        None => state.waking = state.waking.saturating_sub(1),
                    }
                }
                if state.stop_count > 0 {
                    state.active_count -= 1;
                    state.stop_count -= 1;
                    state.threads.remove(&thread_no);
                    self.thread_exit_cv.notify_all();
                    return;
                }
                let item = match state.queue.pop_front() {
                    Some(item) => item,
                    None => continue,
                };
                // Pass the wake-up on when work is left behind for a sleeping worker.
                let wake_another = if state.queue.is_empty() {
                    None
                } else {
                    self.should_wake(&mut state)
                };
                drop(state);
                if let Some(worker) = wake_another {
                    worker.unpark();
                }
                item
            };
            profiling::finish(Stage::QueueWait, queued_at);
            // A panic in a task must not take the worker with it.
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| task.service())) {
                LOGGER.error(&format!(
                    "Exception when servicing task: {}",
                    panic_message(&*panic)
                ));
                drop_panic(panic);
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
            Self::wake_all(&mut state);
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
        let (depth, wake) = {
            let mut state = self.lock();
            state.queue.push_back((task, profiling::start()));
            let depth = state.queue.len().saturating_sub(Self::idle(&state));
            (depth, self.should_wake(&mut state))
        };
        // Woken after the lock is released, so the worker does not wake into a held lock; the
        // task is already queued, so the wake-up cannot be missed.
        if let Some(worker) = wake {
            worker.unpark();
        }
        // Logged after the lock is released too: a woken worker must not wait on our write.
        if depth > 0 && QUEUE_LOGGER.enabled(Level::Warning) {
            log_queue_depth(depth);
        }
    }

    /// Workers asleep, the ones already woken and not yet running included.
    fn idle(state: &DispatcherState) -> usize {
        state
            .threads
            .len()
            .saturating_sub(state.stop_count + state.active_count)
    }

    /// The worker to wake now, if one sleeps and no other wake-up is in flight (the worker it
    /// reaches passes it on if work is still queued): the last to fall asleep, taken off the
    /// sleepers. Records the wake-up; the caller unparks the worker once the lock is released.
    fn should_wake(&self, state: &mut DispatcherState) -> Option<Thread> {
        if state.waking > 0 {
            return None;
        }
        let (_, worker) = state.sleepers.pop()?;
        state.waking += 1;
        Some(worker)
    }

    /// Wake every sleeping worker: to exit, or to look at the queue once more (waitress:
    /// `notify_all`).
    fn wake_all(state: &mut DispatcherState) {
        for (_, worker) in state.sleepers.drain(..) {
            worker.unpark();
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
            Self::wake_all(&mut state);
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

/// Run application code, turning a panic into the application's error: the text a 500 shows
/// with `expose_tracebacks` on. The unwind stops here, so whatever called the application
/// carries on with its bookkeeping.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T, TaskError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| TaskError::App(panicked(panic).into()))
}

/// What a 500 says of a caught panic; the panic is dropped.
fn panicked(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = format!("application panicked: {}", panic_message(&*panic));
    drop_panic(panic);
    text
}

/// Drop a caught panic's payload. It may be a value of the application's own (`panic_any`)
/// whose `Drop` panics in turn; that second payload is leaked rather than dropped, so the
/// unwind ends here.
fn drop_panic(panic: Box<dyn std::any::Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(panic))) {
        std::mem::forget(again);
    }
}

/// The application's file inside a [`FileWrapper`], every call into it guarded. The channel
/// reads a seekable file when it sends it (on the I/O thread, or on a worker that flushes)
/// and drops it once sent, so a panic there would unwind through the channel's bookkeeping:
/// here a panic in a read or a seek becomes an I/O error (the connection is closed, as for
/// any failed read), and one in the file's `Drop` is logged.
struct GuardedFile<F> {
    /// Taken by `Drop`.
    file: Option<F>,
}

/// The application's file wrapper with its file behind a [`GuardedFile`].
fn guard_file(wrapper: FileWrapper) -> FileWrapper {
    let (source, block_size) = wrapper.into_parts();
    match source {
        FileSource::Seekable(file) => {
            FileWrapper::new(GuardedFile { file: Some(file) }, block_size)
        }
        FileSource::Stream(reader) => {
            FileWrapper::from_reader(GuardedFile { file: Some(reader) }, block_size)
        }
    }
}

impl<F> GuardedFile<F> {
    /// Run `f` on the file; a panic comes back as an I/O error.
    fn call<T>(&mut self, f: impl FnOnce(&mut F) -> io::Result<T>) -> io::Result<T> {
        let file = self.file.as_mut().expect("the file is only taken by Drop");
        catch_unwind(AssertUnwindSafe(|| f(file)))
            .unwrap_or_else(|panic| Err(io::Error::new(io::ErrorKind::Other, panicked(panic))))
    }
}

impl<F: Read> Read for GuardedFile<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.call(|file| file.read(buf))
    }
}

impl<F: Seek> Seek for GuardedFile<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.call(|file| file.seek(to))
    }
}

impl<F> Drop for GuardedFile<F> {
    fn drop(&mut self) {
        let file = self.file.take();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(move || drop(file))) {
            LOGGER.error(&format!(
                "Exception while closing the application's file: {}",
                panicked(panic)
            ));
        }
    }
}

/// What a task knows of its server (waitress: `channel.server`).
pub struct ServerInfo {
    /// The application (already wrapped by the proxy-headers middleware when configured).
    pub application: SharedApp,
    /// The settings.
    pub adj: Arc<Adjustments>,
    /// The environ's values that are the same for every request, its server name and port
    /// among them.
    shared: SharedVars,
    /// Requests whose task is done, waiting for the I/O thread to reuse or free them (see
    /// [`ServerInfo::retire`]).
    // Boxed on purpose: a request moves between lists as a pointer (see `channel::State`).
    #[allow(clippy::vec_box)]
    pub(crate) retired: Mutex<Vec<Box<HttpRequestParser>>>,
}

/// The most finished requests that wait for the I/O thread to reuse or free them (see
/// [`ServerInfo::retire`]): more than a poll round finishes under `bench --scenario
/// hello-10000` with `poll` (with `epoll`, a round there can finish 7,000: the rest are freed
/// by their workers). A finished request still holds what its head took, about 1 KiB for a
/// short one (4 MiB for the whole list) and up to `max_request_header_size` for a large one:
/// memory the request held while it was served, kept until the I/O thread's next round.
pub(crate) const MOST_RETIRED: usize = 4096;

/// The environ values that are the same for every request of a server, as fixed text (see
/// [`intern`]).
struct SharedVars {
    /// `SERVER_NAME` when the request has no `Host`.
    server_name: &'static str,
    /// The port the listener is bound to (`SERVER_PORT`).
    server_port: &'static str,
    /// The `ident` setting: the `Server` header and, or empty, `SERVER_SOFTWARE`.
    ident: Option<&'static str>,
    script_name: &'static str,
    url_scheme: &'static str,
}

/// `text` as a `&'static str`: each distinct text is copied once and kept for the life of the
/// process. Rust-only, for the environ values fixed per server ([`SharedVars`]), which are then
/// neither copied nor counted per request. With one `Arc<str>` per value shared by every
/// request, the workers' atomic increments and decrements of the same counts went back and
/// forth between the cores: under `wrk -t1 -c1000`, `Environ::push_new` and the environ's drop
/// took 3.6 % of the server's samples (2.3 % now), and four alternating rounds served 102 k
/// requests per second at 12.3 µs of CPU each, against 108 k at 11.5 µs now. What is kept is
/// a few short strings per server setting; a process that starts servers on ever new ports
/// keeps each port's digits.
fn intern(text: &str) -> &'static str {
    // A `Vec`, as a `static` needs a `const` constructor (`BTreeSet::new` is `const` only
    // from Rust 1.66); there are a handful of entries.
    static INTERNED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut interned = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = interned.iter().find(|&&known| known == text) {
        return known;
    }
    let kept: &'static str = Box::leak(text.to_owned().into_boxed_str());
    interned.push(kept);
    kept
}

impl ServerInfo {
    /// What tasks need of a server serving `application` as `server_name` on
    /// `effective_port` with the settings `adj`.
    pub fn new(
        application: SharedApp,
        server_name: &str,
        effective_port: &str,
        adj: Arc<Adjustments>,
    ) -> Self {
        let shared = SharedVars {
            server_name: intern(server_name),
            server_port: intern(effective_port),
            ident: adj.ident.as_deref().map(intern),
            script_name: intern(&adj.url_prefix),
            url_scheme: intern(&adj.url_scheme),
        };
        ServerInfo {
            application,
            adj,
            shared,
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Rust-only: hand a request whose task is done back to the I/O thread, which built it,
    /// to be freed or reused there (by `ChannelServer::recycle_requests`, after its next poll
    /// round).
    ///
    /// Why: glibc's `malloc` keeps a cache of freed blocks per thread. A request's strings
    /// and header table, freed by a worker, went to the worker's cache, where they were never
    /// reused (workers build no requests), and once that was full back to the shared heap,
    /// under its lock; the I/O thread, its own cache empty, took the slow path for every
    /// block of the next request. Freed where they were made, the blocks serve that thread's
    /// next request from its cache. callgrind (`tools/instructions_per_request.sh`) counted
    /// 16,597 and 16,601 user-space instructions per hello-world request before, 15,898 and
    /// 15,979 after.
    ///
    /// At most [`MOST_RETIRED`] wait; past that the worker frees the request itself, so that
    /// a loop that never calls for them (an embedding program's own, with
    /// [`ChannelServer`](crate::channel::ChannelServer)) costs speed, not memory.
    pub(crate) fn retire(&self, request: Box<HttpRequestParser>) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        if retired.len() < MOST_RETIRED {
            retired.push(request);
            return;
        }
        drop(retired);
        drop(request);
    }

    /// Rust-only, on the I/O thread: take the requests retired since the last call into
    /// `taken` (empty, kept by the caller, which empties it again). The lists are swapped, so
    /// that neither thread allocates for them once both have grown to the number retired per
    /// round.
    #[allow(clippy::vec_box)]
    pub(crate) fn take_retired(&self, taken: &mut Vec<Box<HttpRequestParser>>) {
        std::mem::swap(
            &mut *self.retired.lock().unwrap_or_else(|e| e.into_inner()),
            taken,
        );
    }
}

/// The client's address (waitress: `channel.addr`): an IP and port for TCP, `localhost` and no
/// port for a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    host: Arc<str>,
    port: Option<u16>,
    /// `REMOTE_PORT` as text, made once per connection (`None` without a port, as waitress
    /// writes it).
    port_text: Arc<str>,
}

impl PeerAddr {
    /// The peer `host` (an IP, or `localhost` for a Unix socket) at `port`.
    pub fn new(host: &str, port: Option<u16>) -> Self {
        let port_text = port.map_or_else(|| "None".to_string(), |p| p.to_string());
        PeerAddr {
            host: host.into(),
            port,
            port_text: port_text.into(),
        }
    }

    /// The host part (`REMOTE_ADDR`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (`REMOTE_PORT`); none for a Unix socket.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
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

impl TaskError {
    /// The application's error as text (its `source()` chain included, in `error_chain`'s
    /// form), the error itself dropped. Formatting and dropping run the application's code
    /// (its `Display`, `source` and `Drop`), so they happen here under [`guard`] rather than
    /// in the channel, which logs the error and answers with it: a panic there would skip
    /// the channel's bookkeeping.
    fn settle(self) -> TaskError {
        let error = match self {
            TaskError::App(error) => error,
            other => return other,
        };
        let text = guard(|| error_chain(error.as_ref()));
        let dropped = guard(move || drop(error));
        match (text, dropped) {
            (Ok(text), Ok(())) => TaskError::App(text.into()),
            (Ok(text), Err(TaskError::App(panicked))) => {
                TaskError::App(format!("{text}\nand dropping it: {panicked}").into())
            }
            (Err(TaskError::App(panicked)), _) => {
                TaskError::App(format!("the error's text: {panicked}").into())
            }
            (Err(other), _) | (_, Err(other)) => other,
        }
    }
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

/// "Task queue depth is N", formatted into a buffer the thread keeps: under load nearly every
/// request queued logs it (as in waitress), and a fresh `String` each time was an allocation
/// per request.
fn log_queue_depth(depth: usize) {
    use std::fmt::Write as _;
    thread_local! {
        static MESSAGE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    MESSAGE.with(|message| match message.try_borrow_mut() {
        Ok(mut message) => {
            message.clear();
            let _ = write!(message, "Task queue depth is {depth}");
            QUEUE_LOGGER.warning(&message);
        }
        // Only if a log sink queued a task while logging this: format afresh.
        Err(_) => QUEUE_LOGGER.warning(&format!("Task queue depth is {depth}")),
    });
}

/// The statuses most responses carry, kept as fixed text (see `app::fixed_or`).
const COMMON_STATUSES: [&str; 4] = ["200 OK", "304 Not Modified", "404 Not Found", "302 Found"];

/// How many variables `get_environment` sets besides the headers' (`REMOTE_ADDR` to
/// `wsgi.input_terminated`).
const SERVER_VARIABLES: usize = 18;

/// `CONTENT_LENGTH` and `CONTENT_TYPE` keep their names in the environ; every other header
/// gets the `HTTP_` prefix (waitress: `rename_headers`).
///
/// Rust-only: the names browsers, clients and proxies commonly send are spelled out, so that
/// they cost no allocation (a key made for another name is freed with the environ; a client
/// chooses its names, so they are never kept). With every key made (6 Dec 2026, callgrind,
/// two runs each): 11,691 user-space instructions per hello request against 11,287, and
/// 34,080–34,086 against 28,018–28,032 with a browser's nine headers.
fn environ_key(header: &str) -> std::borrow::Cow<'static, str> {
    let key = match header {
        "CONTENT_LENGTH" => "CONTENT_LENGTH",
        "CONTENT_TYPE" => "CONTENT_TYPE",
        "HOST" => "HTTP_HOST",
        "USER_AGENT" => "HTTP_USER_AGENT",
        "ACCEPT" => "HTTP_ACCEPT",
        "ACCEPT_ENCODING" => "HTTP_ACCEPT_ENCODING",
        "ACCEPT_LANGUAGE" => "HTTP_ACCEPT_LANGUAGE",
        "CONNECTION" => "HTTP_CONNECTION",
        "COOKIE" => "HTTP_COOKIE",
        "AUTHORIZATION" => "HTTP_AUTHORIZATION",
        "CACHE_CONTROL" => "HTTP_CACHE_CONTROL",
        "PRAGMA" => "HTTP_PRAGMA",
        "REFERER" => "HTTP_REFERER",
        "ORIGIN" => "HTTP_ORIGIN",
        "IF_MODIFIED_SINCE" => "HTTP_IF_MODIFIED_SINCE",
        "IF_NONE_MATCH" => "HTTP_IF_NONE_MATCH",
        "UPGRADE_INSECURE_REQUESTS" => "HTTP_UPGRADE_INSECURE_REQUESTS",
        "SEC_FETCH_DEST" => "HTTP_SEC_FETCH_DEST",
        "SEC_FETCH_MODE" => "HTTP_SEC_FETCH_MODE",
        "SEC_FETCH_SITE" => "HTTP_SEC_FETCH_SITE",
        "SEC_FETCH_USER" => "HTTP_SEC_FETCH_USER",
        "X_FORWARDED_FOR" => "HTTP_X_FORWARDED_FOR",
        "X_FORWARDED_PROTO" => "HTTP_X_FORWARDED_PROTO",
        "X_FORWARDED_HOST" => "HTTP_X_FORWARDED_HOST",
        "X_REQUESTED_WITH" => "HTTP_X_REQUESTED_WITH",
        other => return format!("HTTP_{other}").into(),
    };
    key.into()
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
    status: Cow<'static, str>,
    response_headers: Vec<(Text, Text)>,
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
            status: Cow::Borrowed("200 OK"),
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
    /// An application's error comes back as its text (see `TaskError::settle`).
    pub fn service(&mut self) -> Result<(), TaskError> {
        let executed = match self.kind {
            Kind::Wsgi => self.execute_wsgi(),
            Kind::Error => self.execute_error(),
        };
        executed
            .and_then(|()| self.finish())
            .map_err(TaskError::settle)
    }

    /// Statuses 1xx, 204 and 304 carry no body: no `Content-Length`, no chunked framing.
    fn has_body(&self) -> bool {
        !(self.status.starts_with('1')
            || self.status.starts_with("204")
            || self.status.starts_with("304"))
    }

    /// Whether body bytes go on the wire. Never for a status without a body, nor for a
    /// response to HEAD (RFC 9110 §9.3.2), whatever the application returns: a client reads no
    /// body there, so stray bytes would be taken for the next response. waitress leaves HEAD
    /// to the application; the port keeps the head of a HEAD response as the application
    /// gave it (its `Content-Length` included) and drops the body.
    fn sends_body(&self) -> bool {
        self.has_body() && self.request.command != "HEAD"
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
            self.add_header("Connection", "close");
        }
        self.close_on_finish = true;
    }

    /// The status line and headers, with waitress's keep-alive decisions, `Content-Length`
    /// or chunked framing, `Server`/`Via` and `Date`, sorted by name.
    pub fn build_response_header(&mut self) -> Vec<u8> {
        let has_body = self.has_body();
        // The application's Content-Length, reduced to what is asked of it: there, and not
        // empty (a copy of its value was an allocation per response).
        let mut content_length_header: Option<bool> = None;
        let mut date_header = false;
        let mut server_header = false;
        // Rust-only: filtered in place, where waitress builds a new list. Into a new list,
        // grown as it is filled, a hello request took 11,538 user-space instructions against
        // 11,287 (callgrind, two runs each, 6 Dec 2026).
        self.response_headers.retain_mut(|(name, value)| {
            if !is_capitalized(name) {
                capitalize_header_name(name.to_mut());
            }
            match &**name {
                "Content-Length" if !has_body => return false,
                "Content-Length" => content_length_header = Some(!value.is_empty()),
                "Date" => date_header = true,
                "Server" => server_header = true,
                _ => {}
            }
            true
        });
        if content_length_header.is_none() && has_body {
            if let Some(cl) = self.content_length {
                content_length_header = Some(true);
                self.add_header("Content-Length", cl.to_string());
            }
        }
        let has_length = content_length_header == Some(true);
        if self.version == "1.0" {
            if self.request.connection_is("keep-alive") && has_length {
                self.add_header("Connection", "Keep-Alive");
            } else {
                self.set_close_on_finish();
            }
        } else {
            if self.request.connection_is("close") {
                self.set_close_on_finish();
            }
            if !has_length {
                if self.sends_body() {
                    self.add_header("Transfer-Encoding", "chunked");
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
        // The ident is kept once per server (see `intern`), not copied.
        let ident = self.channel.server().shared.ident;
        if !server_header {
            if let Some(ident) = ident {
                self.add_header("Server", ident);
            }
        } else {
            self.add_header("Via", ident.unwrap_or("waitress"));
        }
        if !date_header {
            self.add_header("Date", Text::Shared(http_date_now()));
        }
        self.response_headers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut head = take_kept_head();
        // Rust-only: the text is copied as it is and the head checked once, as ASCII reads
        // the same in latin-1; only a head with other text is written again, char by char.
        // Checking each of its pieces instead cost 11,400 user-space instructions per hello
        // request rather than 11,247 (callgrind).
        self.write_head(&mut head, |out, text| {
            out.extend_from_slice(text.as_bytes())
        });
        if !head.is_ascii() {
            head.clear();
            self.write_head(&mut head, push_latin1);
        }
        head
    }

    /// The status line and the headers, each text written by `push`, and the blank line.
    fn write_head(&self, head: &mut Vec<u8>, push: impl Fn(&mut Vec<u8>, &str)) {
        head.extend_from_slice(b"HTTP/");
        head.extend_from_slice(self.version.as_bytes());
        head.push(b' ');
        push(head, &self.status);
        for (name, value) in &self.response_headers {
            head.extend_from_slice(b"\r\n");
            push(head, name);
            head.extend_from_slice(b": ");
            push(head, value);
        }
        head.extend_from_slice(b"\r\n\r\n");
    }

    /// One header the server adds. Rust-only: the headers are [`Text`], so that the names and
    /// most values the server adds (`Server`, `Date`, ...) are fixed or shared text, not
    /// copies. valgrind's `dhat` counted 27 allocations per keep-alive hello-world request
    /// with `String`s here and 23 with `Text` (the `Vec` that waitress's rebuilt header list
    /// needed is now the one that turns the application's `String`s into `Text`).
    fn add_header(&mut self, name: &'static str, value: impl Into<Text>) {
        self.response_headers
            .push((Text::Static(name), value.into()));
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
        // Rust-only (waitress queues them apart). Sent apart, a hello response took 1.97
        // `sendto` calls instead of 0.99 (`perf stat`, one core each, `wrk -t1 -c16`) and
        // 11,583 user-space instructions instead of 11,287 (callgrind), 6 Dec 2026.
        let mut head = self.build_response_header();
        access_log::note_status(&self.status);
        let body = self.body_bytes(data);
        access_log::note_body(self.chunked_response, data, &body);
        head.extend_from_slice(&body);
        let sent = self.channel.write_soon(&head);
        keep_head(head);
        sent?;
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
        if !self.sends_body() {
            self.discard(data.len() as u64);
            return Cow::Borrowed(&[]);
        }
        if self.chunked_response {
            let mut framed = Vec::with_capacity(data.len() + 12);
            framed.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
            framed.extend_from_slice(data);
            framed.extend_from_slice(b"\r\n");
            return Cow::Owned(framed);
        }
        let cl = match self.content_length {
            Some(cl) => cl,
            None => return Cow::Borrowed(data),
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

    /// Body bytes that do not go on the wire count as written, as in waitress, so that the
    /// `Content-Length` check does not close the connection for them. A status that may not
    /// carry a body is logged once (waitress's warning); HEAD is not, since an application
    /// that answers HEAD like GET is doing nothing wrong.
    fn discard(&mut self, len: u64) {
        self.content_bytes_written += len;
        if !self.has_body() && !self.logged_write_no_body {
            LOGGER.warning(&format!(
                "application-written content was ignored due to HTTP response that may not contain a message-body: ({})",
                self.status
            ));
            self.logged_write_no_body = true;
        }
    }

    /// `ErrorTask.execute`: the error's status, headers and body, then close.
    fn execute_error(&mut self) -> Result<(), TaskError> {
        let ident = self.channel.server().shared.ident;
        let error = match self.request.error.clone() {
            Some(error) => error,
            None => return Ok(()),
        };
        let (status, headers, body) = error.to_response(ident);
        self.status = status.into();
        self.response_headers.extend(as_text(headers));
        self.set_close_on_finish();
        self.content_length = Some(body.len() as u64);
        self.write(&body)
    }

    /// `WSGITask.execute`: call the application and send what it returns.
    ///
    /// Every call into the application's code (the call itself, each `next()` of a lazy body,
    /// and the `Drop` of the body and of the environ, which may hold the application's own
    /// `wsgi.input`) runs under [`guard`], and a file wrapper's file sits behind a
    /// [`GuardedFile`], so a panic anywhere comes back as an error like any other: a 500 if
    /// nothing was sent yet, otherwise the connection is closed (waitress: an exception raised
    /// from `execute`). The application's error is settled into text here too (see
    /// `TaskError::settle`). An unwind never leaves the task, so the channel's bookkeeping
    /// always runs.
    fn execute_wsgi(&mut self) -> Result<(), TaskError> {
        let mut environ = self.get_environment()?;
        // Borrowed through the channel, which outlives the task, rather than cloned: a clone
        // was an atomic increment and decrement per request on the one count all the workers
        // share.
        let channel = self.channel;
        let application = &channel.server().application;
        let started = profiling::start();
        let called = guard(|| application.respond(&mut environ, &mut StartResponse::new(self)));
        access_log::note_environ(&environ);
        let result = match called {
            Ok(Ok(body)) => self.send_body(body),
            Ok(Err(error)) => Err(TaskError::from(error)),
            Err(panicked) => Err(panicked),
        };
        let dropped = guard(move || keep_environ(environ.into_vars()));
        profiling::finish(Stage::Application, started);
        result.and(dropped)
    }

    /// Send the application's body (the loop over `app_iter` in `WSGITask.execute`). The body
    /// is dropped, which is WSGI's `close()`, before this returns (whether sending succeeded
    /// or not), except a file handed to the I/O thread, which closes it when sent.
    fn send_body(&mut self, body: Body) -> Result<(), TaskError> {
        match body {
            Body::Bytes(bytes) => {
                // Like waitress's one-element list: its length is the Content-Length.
                if self.content_length.is_none() {
                    self.content_length = Some(bytes.len() as u64);
                }
                self.write(&bytes)?;
            }
            Body::Chunks(mut chunks) => {
                let sent = self.send_chunks(&mut chunks);
                // `close()` runs even when sending failed; the first error wins.
                let closed = guard(move || drop(chunks));
                sent.and(closed)?;
            }
            Body::File(wrapper) => {
                let mut buffer = ReadOnlyFileBasedBuffer::new(guard_file(wrapper));
                if self.send_file(&mut buffer)? {
                    // From here the channel streams the file and drops it once sent.
                    let sent = self.channel.write_soon_file(buffer)?;
                    access_log::note_body_bytes(sent);
                    return Ok(());
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

    /// Serve a file wrapper. A seekable file with bytes to send is left for the I/O thread to
    /// stream whole (returns `true`, the head already queued), or, when no body goes out, is
    /// closed unread; anything else is read here, block by block, like a lazy body.
    fn send_file(&mut self, buffer: &mut ReadOnlyFileBasedBuffer) -> Result<bool, TaskError> {
        if buffer.is_seekable() {
            let content_length = self.content_length;
            let size = buffer
                .prepare(content_length)
                .map_err(|e| TaskError::App(e.into()))?;
            if size > 0 {
                if self.content_length != Some(size) {
                    if self.content_length.is_some() {
                        self.remove_content_length_header();
                    }
                    self.content_length = Some(size);
                }
                self.write(b"")?;
                if !self.sends_body() {
                    // The head alone: the file is closed unread.
                    self.discard(size);
                    return Ok(false);
                }
                return Ok(true);
            }
        }
        while let Some(block) = buffer.next_block() {
            self.write(&block.map_err(|e| TaskError::App(e.into()))?)?;
        }
        Ok(false)
    }

    /// Write each chunk of a lazy body as it comes; an `Err` chunk or a panic in `next()` ends
    /// the body with that error. Empty chunks are skipped, so the head goes out with the first
    /// chunk that has bytes (PEP 3333; until then a failure can still become a 500).
    fn send_chunks(&mut self, chunks: &mut ChunkIter) -> Result<(), TaskError> {
        while let Some(chunk) = guard(|| chunks.next())? {
            let chunk = chunk?;
            if !chunk.is_empty() {
                self.write(&chunk)?;
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
        // Leading slashes fold into one (waitress: `"/" + path.lstrip("/")`).
        let folded;
        let mut path = request.path.as_str();
        if path.starts_with("//") {
            folded = format!("/{}", path.trim_start_matches('/'));
            path = &folded;
        }
        if !url_prefix.is_empty() {
            if path == url_prefix {
                path = "";
            } else if path.starts_with(url_prefix) && path[url_prefix.len()..].starts_with('/') {
                path = &path[url_prefix.len()..];
            }
        }
        let addr = channel.addr();
        // Rust-only: the server's own names, each set once into a new environ, are added
        // without a search, and what is the same for every request of a server (fixed text,
        // see `intern`) or of a connection (counted, see `app::Text`) is not copied. Under
        // `callgrind`, 2,000 keep-alive requests to `hello` went from 24,000-24,400 user-space
        // instructions each to 20,200-21,200 with both (four runs).
        let shared = &server.shared;
        // Made in the memory this worker kept of its last environ (see `keep_environ`).
        let mut kept = KEPT_ENVIRON.with(Cell::take);
        let vars = std::mem::take(&mut kept.vars);
        let mut environ = Environ::with_kept(vars, SERVER_VARIABLES + request.headers.len());
        environ.push_new("REMOTE_ADDR", &addr.host);
        environ.push_new("REMOTE_HOST", &addr.host);
        environ.push_new("REMOTE_PORT", &addr.port_text);
        environ.push_new("REQUEST_METHOD", request_method(&request.command));
        environ.push_new("SERVER_PORT", shared.server_port);
        environ.push_new("SERVER_NAME", shared.server_name);
        environ.push_new("SERVER_SOFTWARE", shared.ident.unwrap_or(""));
        environ.push_new(
            "SERVER_PROTOCOL",
            if self.version == "1.1" {
                "HTTP/1.1"
            } else {
                "HTTP/1.0"
            },
        );
        environ.push_new("SCRIPT_NAME", shared.script_name);
        environ.push_new("PATH_INFO", kept.copy(path));
        environ.push_new("REQUEST_URI", kept.copy(&request.request_uri));
        environ.push_new("QUERY_STRING", kept.copy(&request.query));
        if request.url_scheme == shared.url_scheme {
            environ.push_new("wsgi.url_scheme", shared.url_scheme);
        } else {
            environ.push_new("wsgi.url_scheme", request.url_scheme.clone());
        }
        environ.push_new("wsgi.version", "1.0");
        environ.push_new("wsgi.multithread", "true");
        environ.push_new("wsgi.multiprocess", "false");
        environ.push_new("wsgi.run_once", "false");
        environ.push_new("wsgi.input_terminated", "true");
        // waitress adds a header's variable only `if key not in environ`. Rust-only: no
        // search, as no header's key can be there. `environ_key` gives each header name its
        // own key (the names are distinct, and none with `_` is kept), and every key it gives
        // starts `HTTP_` or `CONTENT_`, which none of the server's own names above does.
        for (name, value) in &request.headers {
            environ.push_new(environ_key(name), kept.copy(value));
        }
        KEPT_ENVIRON.with(|slot| slot.set(kept));
        let input = request
            .get_body_stream()
            .map_err(|e| TaskError::App(e.into()))?;
        environ.set_input(input);
        environ.set_client_disconnected(channel.disconnect_check());
        Ok(environ)
    }
}

/// Rust-only: what a worker keeps of its last environ for the next (see [`keep_environ`]):
/// the list of variables and the strings of their values, emptied.
#[derive(Default)]
struct KeptEnviron {
    vars: Vec<Var>,
    strings: SpareStrings,
}

impl KeptEnviron {
    /// A copy of `text` as a value, in a kept string if there is one.
    fn copy(&mut self, text: &str) -> Text {
        let mut copy = self.strings.take();
        copy.push_str(text);
        Text::Owned(copy)
    }
}

thread_local! {
    static KEPT_ENVIRON: Cell<KeptEnviron> = const {
        Cell::new(KeptEnviron {
            vars: Vec::new(),
            strings: SpareStrings::new(),
        })
    };
}

/// What a worker keeps: a list with room for at most 256 variables (12 KiB), and strings
/// within [`SpareStrings`]' bounds (4 KiB); what a request with more or larger headers needs
/// beyond that is freed.
const MOST_KEPT_VARS: usize = 256;

/// Keep the memory of `vars` (an environ's list, once the application is done with it) for
/// this worker's next environ. Rust-only: the list, and the strings its values were copied
/// into. A new list per request took glibc's slow path once the request had four headers or
/// more (22 variables of 48 bytes are 1,056 bytes, past the 1,032 that glibc's per-thread
/// cache holds, so `malloc_consolidate` ran each time; a browser's nine headers make 27), and
/// a new string per value did once more than seven of one size class were freed at once.
/// Freed instead of kept (6 Dec 2026, callgrind, two runs each): 11,822 user-space
/// instructions per hello request against 11,287, and 32,621–32,757 against 28,018–28,032
/// with a browser's nine headers.
fn keep_environ(mut vars: Vec<Var>) {
    let mut kept = KEPT_ENVIRON.with(Cell::take);
    for (_, value) in vars.drain(..) {
        if let Text::Owned(string) = value {
            kept.strings.keep(string);
        }
    }
    if vars.capacity() <= MOST_KEPT_VARS {
        kept.vars = vars;
    }
    KEPT_ENVIRON.with(|slot| slot.set(kept));
}

thread_local! {
    /// Rust-only: the buffer this worker's last response head was built in, emptied (see
    /// [`keep_head`]).
    static KEPT_HEAD: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Room a new head buffer starts with: a status line and a handful of headers.
const HEAD_ROOM: usize = 256;

/// What a worker keeps of a head buffer: the head and the first body bytes sent with it are
/// usually far less; a buffer grown past this by a large first write is freed.
const MOST_KEPT_HEAD: usize = 16 << 10;

/// An empty buffer for a response head: the one this worker kept, or a new one.
fn take_kept_head() -> Vec<u8> {
    let head = take_kept(&KEPT_HEAD);
    if head.capacity() == 0 {
        return Vec::with_capacity(HEAD_ROOM);
    }
    head
}

/// Keep `head` (sent, or failed to send) for this worker's next response. Rust-only: a new
/// buffer per response was one of the seven allocations of a keep-alive hello-world request
/// (valgrind's `dhat`); kept, callgrind counts 12,431 user-space instructions per hello
/// request rather than 12,556, and 31,302 per browser request rather than 31,443.
fn keep_head(head: Vec<u8>) {
    keep_for_next(&KEPT_HEAD, head, MOST_KEPT_HEAD);
}

/// Headers as an application or an error gives them, as the task keeps them (no copy).
fn as_text(headers: Vec<(String, String)>) -> impl Iterator<Item = (Text, Text)> {
    headers
        .into_iter()
        .map(|(name, value)| (Text::Owned(name), Text::Owned(value)))
}

/// `REQUEST_METHOD`: the method upper-cased (waitress: `request.command.upper()`). Rust-only:
/// the common methods, already upper-case on the wire, are fixed text rather than a copy.
fn request_method(command: &str) -> Text {
    Text::from(fixed_or(command, &COMMON_METHODS, str::to_ascii_uppercase))
}

/// Whether [`capitalize_header_name`] would leave `name` as it is, as it does the names most
/// applications write (`Content-Type`). Rust-only: a look is cheaper than the rewrite, which
/// took 3 % of the server's instructions for a hello-world response's two headers.
fn is_capitalized(name: &str) -> bool {
    let mut starts_a_word = true;
    name.bytes().all(|b| {
        let fits = b.is_ascii()
            && if starts_a_word {
                !b.is_ascii_lowercase()
            } else {
                !b.is_ascii_uppercase()
            };
        starts_a_word = b == b'-';
        fits
    })
}

/// `content-TYPE` → `Content-Type` (waitress: `"-".join(x.capitalize() ...)`).
///
/// Rust-only: done in place, as a header name is ASCII (`validate_header` sees to that), which
/// keeps an allocation per response header off the path; anything else is rebuilt char by char.
fn capitalize_header_name(name: &mut String) {
    if name.is_ascii() {
        name.make_ascii_lowercase();
        let mut word = 0;
        loop {
            if let Some(first) = name.get_mut(word..word + 1) {
                first.make_ascii_uppercase();
            }
            match name[word..].find('-') {
                Some(dash) => word += dash + 1,
                None => return,
            }
        }
    }
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
    *name = out;
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
    fn started(&self) -> bool {
        self.complete
    }

    fn headers_sent(&self) -> bool {
        self.wrote_header
    }

    /// As waitress, a `Content-Length` given earlier stays in force when a replacement (with
    /// an error) names none.
    fn record_start(
        &mut self,
        status: &str,
        headers: Vec<(String, String)>,
        content_length: Option<u64>,
    ) {
        self.complete = true;
        self.status = fixed_or(status, &COMMON_STATUSES, str::to_owned);
        self.response_headers = as_text(headers).collect();
        if content_length.is_some() {
            self.content_length = content_length;
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), AppError> {
        Task::write(self, data).map_err(|e| match e {
            TaskError::ClientDisconnected => AppError::from(ClientDisconnected),
            TaskError::App(e) => e,
        })
    }
}

#[cfg(test)]
mod tests {
    // Ports of waitress's tests/test_task.py, under their names, over a recording
    // `DummyChannel`. TestWSGITask's tests call `execute_wsgi` where waitress calls `execute`,
    // and `service` where it calls `service`. The waitress tests that do not carry over:
    // test_build_response_header_bad_http_version: the version is "1.0" or "1.1" by construction (a `&'static str` chosen in `Task::new`, see test_ctor_version_not_in_known), so there is no third to refuse
    // test_start: no start time is kept; the Date header comes from the per-second cache
    // test_service_server_raises_socket_error: write_soon cannot raise a socket error here (socket errors stay with the channel; a gone client is `ClientDisconnected`, see client_disconnected_is_reported)
    // test_execute_bad_header_key, test_execute_bad_header_value, test_execute_bad_status_value: Python type checks; names, values and the status are `String`s here
    // test_get_environment_already_cached: the environ is built once per task, by construction
    use super::*;
    use crate::app::{AppResult, Body, FileWrapper};
    use crate::utilities::{capture_logs, peek, Error, ErrorKind};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[test]
    fn retired_requests_wait_up_to_a_bound_and_are_taken_on_request() {
        let adj = Arc::new(Adjustments::default());
        let info = ServerInfo::new(Arc::new(crate::apps::hello), "localhost", "80", adj.clone());
        for _ in 0..MOST_RETIRED + 3 {
            info.retire(Box::new(HttpRequestParser::new(Arc::clone(&adj))));
        }
        // Past the bound the worker frees a request itself rather than let the list grow.
        assert_eq!(info.retired.lock().unwrap().len(), MOST_RETIRED);
        let mut taken = Vec::with_capacity(1);
        info.take_retired(&mut taken);
        assert!(info.retired.lock().unwrap().is_empty());
        assert_eq!(taken.len(), MOST_RETIRED);
        // The lists swapped: the list keeps the room of the caller's for the next swap.
        assert!(info.retired.lock().unwrap().capacity() >= 1);
    }

    #[test]
    fn intern_keeps_one_copy_of_each_text() {
        let a = intern(&String::from("intern-test-1"));
        let b = intern(&String::from("intern-test-1"));
        let c = intern("intern-test-2");
        assert_eq!((a, c), ("intern-test-1", "intern-test-2"));
        assert!(std::ptr::eq(a, b));
    }

    #[test]
    fn request_method_is_the_method_upper_cased_common_ones_fixed() {
        assert!(matches!(request_method("GET"), Text::Static("GET")));
        assert!(matches!(request_method("HEAD"), Text::Static("HEAD")));
        assert_eq!(&*request_method("PATCH"), "PATCH");
        assert_eq!(&*request_method("Get"), "GET");
    }

    #[test]
    fn environ_key_is_http_and_the_name_but_for_content_length_and_type() {
        let spelled_out = [
            "CONTENT_LENGTH",
            "CONTENT_TYPE",
            "HOST",
            "USER_AGENT",
            "ACCEPT",
            "ACCEPT_ENCODING",
            "ACCEPT_LANGUAGE",
            "CONNECTION",
            "COOKIE",
            "AUTHORIZATION",
            "CACHE_CONTROL",
            "PRAGMA",
            "REFERER",
            "ORIGIN",
            "IF_MODIFIED_SINCE",
            "IF_NONE_MATCH",
            "UPGRADE_INSECURE_REQUESTS",
            "SEC_FETCH_DEST",
            "SEC_FETCH_MODE",
            "SEC_FETCH_SITE",
            "SEC_FETCH_USER",
            "X_FORWARDED_FOR",
            "X_FORWARDED_PROTO",
            "X_FORWARDED_HOST",
            "X_REQUESTED_WITH",
        ];
        for name in spelled_out
            .iter()
            .chain(&["X_CUSTOM", "DNT", "CONTENT_MD5"])
        {
            let expected = match *name {
                "CONTENT_LENGTH" | "CONTENT_TYPE" => name.to_string(),
                other => format!("HTTP_{other}"),
            };
            let key = environ_key(name);
            assert_eq!(key, expected);
            // Spelled out: no allocation.
            assert_eq!(
                matches!(key, Cow::Borrowed(_)),
                spelled_out.contains(name),
                "{name}"
            );
        }
    }

    #[test]
    fn capitalize_header_name_is_python_capitalize_per_dash_word() {
        let cases = [
            ("content-TYPE", "Content-Type"),
            ("X-FORWARDED-FOR", "X-Forwarded-For"),
            ("x--y", "X--Y"),
            ("-a-", "-A-"),
            ("", ""),
            ("éTAG-x", "Étag-X"),
        ];
        for (name, capitalized) in cases {
            // The shortcut says "unchanged" only where the rewrite changes nothing (and, being
            // for ASCII, says "change" for any other text).
            assert_eq!(is_capitalized(name), name.is_ascii() && name == capitalized);
            assert_eq!(is_capitalized(capitalized), capitalized.is_ascii());
            let mut name = name.to_string();
            capitalize_header_name(&mut name);
            assert_eq!(name, capitalized);
        }
        assert!(is_capitalized("Content-Type") && is_capitalized("X-9-Www"));
        assert!(!is_capitalized("Content-type") && !is_capitalized("CONTENT-TYPE"));
    }

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

    impl DummyChannel {
        fn written(&self) -> Vec<u8> {
            self.written.lock().unwrap().clone()
        }
    }

    fn channel_with(app: SharedApp, change: impl FnOnce(&mut Adjustments)) -> DummyChannel {
        let mut adj = Adjustments::default();
        change(&mut adj);
        DummyChannel {
            info: ServerInfo::new(app, "localhost", "80", Arc::new(adj)),
            addr: PeerAddr::new("127.0.0.1", Some(39830)),
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

    /// waitress's `DummyParser`: a GET of `/` in the given version.
    fn request(version: &str) -> HttpRequestParser {
        let mut r = HttpRequestParser::new(Arc::new(Adjustments::default()));
        r.version = version.to_string().into();
        r.command = "GET".into();
        r.path = "/".to_string();
        r.request_uri = "/".to_string();
        r.url_scheme = "http".into();
        r
    }

    fn ok_app(_e: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
        sr.start("200 OK", [("Content-Length", "0")])?;
        Ok(Body::empty())
    }

    /// Bytes split at CRLF, blank lines dropped (waitress: `filter_lines`).
    fn filter_lines(bytes: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(bytes)
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn lines(channel: &DummyChannel) -> Vec<String> {
        filter_lines(&channel.written())
    }

    fn head(channel: &DummyChannel) -> String {
        let text = String::from_utf8_lossy(&channel.written()).to_string();
        text.split("\r\n\r\n").next().unwrap().to_string()
    }

    /// What `build_response_header` made of a task in a given state.
    struct Built {
        lines: Vec<String>,
        close_on_finish: bool,
        response_headers: Vec<(String, String)>,
    }

    impl Built {
        fn has_header(&self, name: &str, value: &str) -> bool {
            self.response_headers
                .iter()
                .any(|(n, v)| n == name && v == value)
        }
    }

    /// Build only the response head of a task (waitress's DummyParser: version 1.0, no
    /// headers) after `setup`.
    fn build(version: &str, setup: impl FnOnce(&mut Task<'_>)) -> Built {
        let ch = channel(ok_app);
        let mut req = request(version);
        let mut task = Task::wsgi(&ch, &mut req);
        task.complete = true;
        setup(&mut task);
        let head = task.build_response_header();
        Built {
            lines: filter_lines(&head),
            close_on_finish: task.close_on_finish,
            response_headers: owned(&task.response_headers),
        }
    }

    fn set_connection(task: &mut Task<'_>, value: &str) {
        task.request
            .headers
            .insert("CONNECTION".into(), value.into());
    }

    // TestThreadedTaskDispatcher

    /// waitress's `DummyTask`, with counters instead of flags.
    #[derive(Default)]
    struct DummyTask {
        serviced: AtomicUsize,
        cancelled: AtomicUsize,
    }

    impl Service for DummyTask {
        fn service(&self) {
            self.serviced.fetch_add(1, Ordering::SeqCst);
        }
        fn cancel(&self) {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The dispatcher believes it has these threads, though none was started (waitress's tests
    /// fill `inst.threads` the same way).
    fn dispatcher_with_threads(threads: &[usize]) -> Arc<ThreadedTaskDispatcher> {
        let dispatcher = ThreadedTaskDispatcher::new();
        dispatcher.lock().threads.extend(threads.iter().copied());
        dispatcher
    }

    fn thread_numbers(dispatcher: &ThreadedTaskDispatcher) -> Vec<usize> {
        dispatcher.lock().threads.iter().copied().collect()
    }

    #[test]
    fn test_handler_thread_task_raises() {
        struct BadDummyTask(Arc<ThreadedTaskDispatcher>);
        impl Service for BadDummyTask {
            fn service(&self) {
                // Ask the running thread to stop once this task is done, then fail.
                self.0.lock().stop_count += 1;
                panic!("task raised");
            }
            fn cancel(&self) {}
        }
        let inst = dispatcher_with_threads(&[0]);
        let task = Arc::new(BadDummyTask(Arc::clone(&inst)));
        {
            let mut state = inst.lock();
            state.queue.push_back((task, None));
            state.active_count += 1;
        }
        // The loop of worker 0, run on this thread: it serves the task, survives its panic,
        // then sees the stop request and returns.
        let ((), logged) = capture_logs(|| Arc::clone(&inst).handler_thread(0));
        let state = inst.lock();
        assert_eq!(state.stop_count, 0);
        assert_eq!(state.active_count, 0);
        assert!(state.threads.is_empty());
        assert_eq!(
            logged,
            vec!["ERROR:waitress:Exception when servicing task: task raised"]
        );
    }

    #[test]
    fn test_set_thread_count_increase() {
        let inst = ThreadedTaskDispatcher::new();
        inst.set_thread_count(1);
        assert_eq!(thread_numbers(&inst), vec![0]);
        assert!(inst.shutdown(true, Duration::from_secs(5)));
        assert!(inst.lock().threads.is_empty(), "the thread was real");
    }

    #[test]
    fn test_set_thread_count_increase_with_existing() {
        let inst = dispatcher_with_threads(&[0]);
        inst.set_thread_count(2);
        // One thread started, numbered 1 (each start takes a number).
        assert_eq!(thread_numbers(&inst), vec![0, 1]);
        // Forget the pretend thread 0 and stop the real thread 1.
        inst.lock().threads.remove(&0);
        assert!(inst.shutdown(true, Duration::from_secs(5)));
        assert!(inst.lock().threads.is_empty());
    }

    #[test]
    fn test_set_thread_count_decrease() {
        let inst = dispatcher_with_threads(&[0, 1]);
        inst.set_thread_count(1);
        assert_eq!(inst.lock().stop_count, 1);
    }

    #[test]
    fn test_set_thread_count_same() {
        let inst = dispatcher_with_threads(&[0]);
        inst.set_thread_count(1);
        assert_eq!(thread_numbers(&inst), vec![0], "no thread started");
        assert_eq!(inst.lock().stop_count, 0);
    }

    #[test]
    fn test_add_task_with_idle_threads() {
        // Thread 0 exists and is not active: it is idle.
        let inst = dispatcher_with_threads(&[0]);
        let ((), logged) = capture_logs(|| inst.add_task(Arc::new(DummyTask::default())));
        assert_eq!(inst.lock().queue.len(), 1);
        assert_eq!(logged, Vec::<String>::new());
    }

    #[test]
    fn test_add_task_with_all_busy_threads() {
        let inst = ThreadedTaskDispatcher::new();
        let task = Arc::new(DummyTask::default());
        let ((), logged) = capture_logs(|| inst.add_task(task.clone()));
        assert_eq!(logged, vec!["WARNING:waitress.queue:Task queue depth is 1"]);
        let ((), logged) = capture_logs(|| inst.add_task(task));
        assert_eq!(logged, vec!["WARNING:waitress.queue:Task queue depth is 2"]);
    }

    #[test]
    fn test_shutdown_one_thread() {
        // A pretend thread that never exits: shutdown gives up on it after the timeout.
        let inst = dispatcher_with_threads(&[0]);
        let task = Arc::new(DummyTask::default());
        inst.lock().queue.push_back((task.clone(), None));
        let (cancelled, logged) = capture_logs(|| inst.shutdown(true, Duration::from_millis(10)));
        assert!(cancelled);
        assert_eq!(
            logged,
            vec![
                "WARNING:waitress:1 thread(s) still running",
                "WARNING:waitress:Canceling 1 pending task(s)",
            ]
        );
        assert_eq!(task.cancelled.load(Ordering::SeqCst), 1);
        assert_eq!(task.serviced.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn test_shutdown_no_threads() {
        let inst = ThreadedTaskDispatcher::new();
        assert!(inst.shutdown(true, Duration::from_millis(10)));
    }

    #[test]
    fn test_shutdown_no_cancel_pending() {
        let inst = ThreadedTaskDispatcher::new();
        assert!(!inst.shutdown(false, Duration::from_millis(10)));
    }

    /// Beyond waitress's tests: real workers serve queued work, and a panicking task leaves
    /// its worker serving.
    #[test]
    fn workers_serve_tasks_after_a_panicking_one() {
        struct Panicking;
        impl Service for Panicking {
            fn service(&self) {
                panic!("task raised");
            }
            fn cancel(&self) {}
        }
        let inst = ThreadedTaskDispatcher::new();
        inst.set_thread_count(1);
        let task = Arc::new(DummyTask::default());
        inst.add_task(Arc::new(Panicking));
        inst.add_task(task.clone());
        wait_until("the task is served", || {
            task.serviced.load(Ordering::SeqCst) > 0
        });
        assert!(inst.shutdown(true, Duration::from_secs(5)));
    }

    /// Wait for `done` (a worker's doing), failing the test after 10 s.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::yield_now();
        }
    }

    /// Beyond waitress's tests: a wake-up goes to the worker that fell asleep last, so work
    /// that comes one task at a time is served by one worker, not by each in turn.
    #[test]
    fn the_worker_that_fell_asleep_last_is_woken_first() {
        /// Records the name of the worker that serves it.
        #[derive(Default)]
        struct Where(Mutex<Vec<String>>);
        impl Service for Where {
            fn service(&self) {
                let name = std::thread::current().name().unwrap_or("?").to_owned();
                self.0.lock().unwrap().push(name);
            }
            fn cancel(&self) {}
        }
        let inst = ThreadedTaskDispatcher::new();
        inst.set_thread_count(3);
        let served = Arc::new(Where::default());
        for round in 0..5 {
            wait_until("all three workers sleep", || {
                inst.lock().sleepers.len() == 3
            });
            let last = inst.lock().sleepers.last().map(|(number, _)| *number);
            inst.add_task(served.clone());
            wait_until("the task is served", || {
                served.0.lock().unwrap().len() == round + 1
            });
            let by = served.0.lock().unwrap()[round].clone();
            assert_eq!(
                Some(by),
                last.map(|n| format!("waitress-{n}")),
                "round {round}"
            );
        }
        let names = served.0.lock().unwrap().clone();
        assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
        assert!(inst.shutdown(true, Duration::from_secs(5)));
        assert!(inst.lock().sleepers.is_empty());
    }

    /// Beyond waitress's tests: `park` may return with no wake-up of ours (an application
    /// that unparks its own thread leaves a token behind). The worker then goes back to sleep,
    /// once on the stack, and the next task still wakes it.
    #[test]
    fn a_worker_woken_by_a_stray_unpark_sleeps_again_and_still_serves() {
        /// Leaves an unpark token on the thread that serves it.
        #[derive(Default)]
        struct Stray(AtomicUsize);
        impl Service for Stray {
            fn service(&self) {
                std::thread::current().unpark();
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            fn cancel(&self) {}
        }
        let inst = ThreadedTaskDispatcher::new();
        inst.set_thread_count(1);
        let task = Arc::new(Stray::default());
        for served in 1..=20 {
            wait_until("the worker sleeps", || inst.lock().sleepers.len() == 1);
            inst.add_task(task.clone());
            wait_until("the task is served", || {
                task.0.load(Ordering::SeqCst) == served
            });
        }
        wait_until("the worker sleeps", || {
            let state = inst.lock();
            state.sleepers.len() == 1 && state.active_count == 0
        });
        let state = inst.lock();
        assert_eq!(state.waking, 0);
        assert_eq!(ThreadedTaskDispatcher::idle(&state), 1);
        drop(state);
        assert!(inst.shutdown(true, Duration::from_secs(5)));
    }

    // TestTask

    #[test]
    fn test_ctor_version_not_in_known() {
        let ch = channel(ok_app);
        let mut req = request("8.4");
        assert_eq!(Task::wsgi(&ch, &mut req).version, "1.0");
    }

    #[test]
    fn test_build_response_header_v10_keepalive_no_content_length() {
        let built = build("1.0", |t| set_connection(t, "keep-alive"));
        let lines = &built.lines;
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "HTTP/1.0 200 OK");
        assert_eq!(lines[1], "Connection: close");
        assert!(lines[2].starts_with("Date:"));
        assert_eq!(lines[3], "Server: waitress");
        assert!(built.close_on_finish);
        assert!(built.has_header("Connection", "close"));
    }

    #[test]
    fn test_build_response_header_v10_keepalive_with_content_length() {
        let built = build("1.0", |t| {
            set_connection(t, "keep-alive");
            t.response_headers = vec![("Content-Length".into(), "10".into())];
            t.content_length = Some(0);
        });
        let lines = &built.lines;
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(lines[0], "HTTP/1.0 200 OK");
        assert_eq!(lines[1], "Connection: Keep-Alive");
        assert_eq!(lines[2], "Content-Length: 10");
        assert!(lines[3].starts_with("Date:"));
        assert_eq!(lines[4], "Server: waitress");
        assert!(!built.close_on_finish);
    }

    /// The five lines of an HTTP/1.1 200 without a length: closed and chunked.
    fn assert_v11_chunked_and_closed(built: &Built) {
        let lines = &built.lines;
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(lines[0], "HTTP/1.1 200 OK");
        assert_eq!(lines[1], "Connection: close");
        assert!(lines[2].starts_with("Date:"));
        assert_eq!(lines[3], "Server: waitress");
        assert_eq!(lines[4], "Transfer-Encoding: chunked");
        assert!(built.has_header("Connection", "close"));
        assert!(built.close_on_finish);
    }

    #[test]
    fn test_build_response_header_v11_connection_closed_by_client() {
        assert_v11_chunked_and_closed(&build("1.1", |t| set_connection(t, "close")));
    }

    #[test]
    fn test_build_response_header_v11_connection_keepalive_by_client() {
        assert_v11_chunked_and_closed(&build("1.1", |t| set_connection(t, "keep-alive")));
    }

    #[test]
    fn test_build_response_header_v11_200_no_content_length() {
        assert_v11_chunked_and_closed(&build("1.1", |_| {}));
    }

    /// RFC 9112: no `Content-Length` or `Transfer-Encoding` for a status without a body; with
    /// no length the connection closes.
    fn assert_v11_no_body_status(status: &str) {
        let built = build("1.1", |t| t.status = status.to_string().into());
        let lines = &built.lines;
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], format!("HTTP/1.1 {status}"));
        assert_eq!(lines[1], "Connection: close");
        assert!(lines[2].starts_with("Date:"));
        assert_eq!(lines[3], "Server: waitress");
        assert!(built.close_on_finish);
        assert!(built.has_header("Connection", "close"));
    }

    #[test]
    fn test_build_response_header_v11_204_no_content_length_or_transfer_encoding() {
        assert_v11_no_body_status("204 No Content");
    }

    #[test]
    fn test_build_response_header_v11_1xx_no_content_length_or_transfer_encoding() {
        assert_v11_no_body_status("100 Continue");
    }

    #[test]
    fn test_build_response_header_v11_304_no_content_length_or_transfer_encoding() {
        assert_v11_no_body_status("304 Not Modified");
    }

    #[test]
    fn test_build_response_header_via_added() {
        let built = build("1.0", |t| {
            t.response_headers = vec![("Server".into(), "abc".into())];
        });
        let lines = &built.lines;
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(lines[0], "HTTP/1.0 200 OK");
        assert_eq!(lines[1], "Connection: close");
        assert!(lines[2].starts_with("Date:"));
        assert_eq!(lines[3], "Server: abc");
        assert_eq!(lines[4], "Via: waitress");
    }

    /// Rust-only: the head goes out in latin-1, as waitress encodes it, whichever piece holds
    /// the text beyond ASCII; a char beyond latin-1 becomes `?`.
    #[test]
    fn a_response_head_goes_out_in_latin1() {
        let ch = channel(ok_app);
        let mut req = request("1.1");
        let mut task = Task::wsgi(&ch, &mut req);
        task.complete = true;
        task.status = "200 Tr\u{e8}s bien".to_string().into();
        task.response_headers = vec![
            ("X-Text".into(), "caf\u{e9} \u{2615}".into()),
            ("Content-Length".into(), "0".into()),
        ];
        task.content_length = Some(0);
        let head = task.build_response_header();
        let has = |bytes: &[u8]| head.windows(bytes.len()).any(|w| w == bytes);
        assert!(
            head.starts_with(b"HTTP/1.1 200 Tr\xe8s bien\r\n"),
            "{head:?}"
        );
        assert!(has(b"\r\nX-Text: caf\xe9 ?\r\n"), "{head:?}");
        assert!(has(b"\r\nContent-Length: 0\r\n"), "{head:?}");
        assert!(head.ends_with(b"\r\n\r\n"), "{head:?}");
    }

    #[test]
    fn test_build_response_header_date_exists() {
        let built = build("1.0", |t| {
            t.response_headers = vec![("Date".into(), "date".into())];
        });
        let lines = &built.lines;
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "HTTP/1.0 200 OK");
        assert_eq!(lines[1], "Connection: close");
        assert_eq!(lines[2], "Date: date");
        assert_eq!(lines[3], "Server: waitress");
    }

    #[test]
    fn test_build_response_header_preexisting_content_length() {
        let built = build("1.1", |t| t.content_length = Some(100));
        let lines = &built.lines;
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "HTTP/1.1 200 OK");
        assert_eq!(lines[1], "Content-Length: 100");
        assert!(lines[2].starts_with("Date:"));
        assert_eq!(lines[3], "Server: waitress");
    }

    fn content_length_removed(headers: &[(&str, &str)]) -> Vec<(String, String)> {
        let ch = channel(ok_app);
        let mut req = request("1.0");
        let mut task = Task::wsgi(&ch, &mut req);
        task.response_headers = headers
            .iter()
            .map(|(k, v)| (Text::from(k.to_string()), Text::from(v.to_string())))
            .collect();
        task.remove_content_length_header();
        owned(&task.response_headers)
    }

    /// A task's response headers as plain strings, to compare.
    fn owned(headers: &[(Text, Text)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn test_remove_content_length_header() {
        assert_eq!(content_length_removed(&[("Content-Length", "70")]), vec![]);
    }

    #[test]
    fn test_remove_content_length_header_with_other() {
        assert_eq!(
            content_length_removed(&[("Content-Length", "70"), ("Content-Type", "text/html")]),
            vec![("Content-Type".to_string(), "text/html".to_string())]
        );
    }

    /// A task of waitress's `TestTask` (a GET in HTTP/1.0) on `ch`, set up by `setup`, then
    /// `act`; returns what `act` returned.
    fn with_task<T>(
        ch: &DummyChannel,
        setup: impl FnOnce(&mut Task<'_>),
        act: impl FnOnce(&mut Task<'_>) -> T,
    ) -> T {
        let mut req = request("1.0");
        let mut task = Task::wsgi(ch, &mut req);
        setup(&mut task);
        act(&mut task)
    }

    #[test]
    fn test_finish_didnt_write_header() {
        let ch = channel(ok_app);
        with_task(&ch, |t| t.complete = true, |t| t.finish().unwrap());
        assert!(!ch.written().is_empty());
    }

    #[test]
    fn test_finish_wrote_header() {
        let ch = channel(ok_app);
        with_task(&ch, |t| t.wrote_header = true, |t| t.finish().unwrap());
        assert_eq!(ch.written(), b"");
    }

    #[test]
    fn test_finish_chunked_response() {
        let ch = channel(ok_app);
        with_task(
            &ch,
            |t| {
                t.wrote_header = true;
                t.chunked_response = true;
            },
            |t| t.finish().unwrap(),
        );
        assert_eq!(ch.written(), b"0\r\n\r\n");
    }

    #[test]
    fn test_write_wrote_header() {
        let ch = channel(ok_app);
        with_task(
            &ch,
            |t| {
                t.wrote_header = true;
                t.complete = true;
                t.content_length = Some(3);
            },
            |t| t.write(b"abc").unwrap(),
        );
        assert_eq!(ch.written(), b"abc");
    }

    #[test]
    fn test_write_header_not_written() {
        let ch = channel(ok_app);
        let wrote_header = with_task(
            &ch,
            |t| t.complete = true,
            |t| {
                t.write(b"abc").unwrap();
                t.wrote_header
            },
        );
        assert!(!ch.written().is_empty());
        assert!(wrote_header);
    }

    #[test]
    fn test_write_start_response_uncalled() {
        let ch = channel(ok_app);
        match with_task(&ch, |_| {}, |t| t.write(b"")) {
            Err(TaskError::App(e)) => assert_eq!(
                e.to_string(),
                "start_response was not called before body written"
            ),
            _ => panic!("write before start_response must fail"),
        }
    }

    #[test]
    fn test_write_chunked_response() {
        let ch = channel(ok_app);
        with_task(
            &ch,
            |t| {
                t.wrote_header = true;
                t.chunked_response = true;
                t.complete = true;
            },
            |t| t.write(b"abc").unwrap(),
        );
        assert_eq!(ch.written(), b"3\r\nabc\r\n");
    }

    #[test]
    fn test_write_preexisting_content_length() {
        let ch = channel(ok_app);
        let (excess, logged) = capture_logs(|| {
            with_task(
                &ch,
                |t| {
                    t.wrote_header = true;
                    t.complete = true;
                    t.content_length = Some(1);
                },
                |t| {
                    t.write(b"abc").unwrap();
                    t.logged_write_excess
                },
            )
        });
        assert_eq!(ch.written(), b"a");
        assert!(excess);
        assert_eq!(logged.len(), 1, "{logged:?}");
    }

    // TestWSGITask

    /// What a task looked like after it ran.
    struct Ran {
        result: Result<(), TaskError>,
        close_on_finish: bool,
        complete: bool,
        status: String,
        content_length: Option<u64>,
        response_headers: Vec<(String, String)>,
        logged: Vec<String>,
    }

    /// Run waitress's `inst.execute()` (or `inst.service()` when `service`) on a GET in
    /// HTTP/1.0 after `setup`, capturing the log.
    fn run(ch: &DummyChannel, service: bool, setup: impl FnOnce(&mut Task<'_>)) -> Ran {
        let mut req = request("1.0");
        let (ran, logged) = capture_logs(|| {
            let mut task = Task::wsgi(ch, &mut req);
            setup(&mut task);
            let result = if service {
                task.service()
            } else {
                task.execute_wsgi()
            };
            (
                result,
                task.close_on_finish,
                task.complete,
                task.status.to_string(),
                task.content_length,
                owned(&task.response_headers),
            )
        });
        let (result, close_on_finish, complete, status, content_length, response_headers) = ran;
        Ran {
            result,
            close_on_finish,
            complete,
            status,
            content_length,
            response_headers,
            logged,
        }
    }

    /// `execute` on a fresh task.
    fn execute(ch: &DummyChannel) -> Ran {
        run(ch, false, |_| {})
    }

    /// `service` on a fresh task of the given request version; the result and whether the
    /// connection closes.
    fn serve(ch: &DummyChannel, version: &'static str) -> (Result<(), TaskError>, bool) {
        let ran = run(ch, true, |t| t.version = version);
        (ran.result, ran.close_on_finish)
    }

    fn app_error(ran: Ran) -> String {
        match ran.result {
            Err(TaskError::App(e)) => e.to_string(),
            Err(TaskError::ClientDisconnected) => panic!("expected an application error"),
            Ok(()) => panic!("expected an application error, the task succeeded"),
        }
    }

    #[test]
    fn test_service() {
        let executed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&executed);
        let ch = channel(move |_e, sr| {
            flag.store(true, Ordering::SeqCst);
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            Ok(Body::from_chunks(Vec::new()))
        });
        let ran = run(&ch, true, |_| {});
        ran.result.unwrap();
        assert!(ran.close_on_finish);
        assert!(!ch.written().is_empty());
        assert!(executed.load(Ordering::SeqCst));
    }

    #[test]
    fn test_execute_app_calls_start_response_twice_wo_exc_info() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            Ok(Body::empty())
        });
        assert_eq!(
            app_error(execute(&ch)),
            "start_response called a second time without providing exc_info."
        );
    }

    #[test]
    fn test_execute_app_calls_start_response_w_exc_info_complete() {
        let ch = channel(|_e, sr| {
            sr.start_with_error("200 OK", Vec::<(String, String)>::new(), "boom".into())?;
            Ok(Body::from("a"))
        });
        let ran = run(&ch, false, |t| t.complete = true);
        ran.result.unwrap();
        assert!(ran.complete);
        assert_eq!(ran.status, "200 OK");
        assert!(!ch.written().is_empty());
    }

    #[test]
    fn test_execute_app_calls_start_response_w_excinf_headers_unwritten() {
        let ch = channel(|_e, sr| {
            sr.start_with_error("200 OK", Vec::<(String, String)>::new(), "boom".into())?;
            Ok(Body::from("a"))
        });
        let ran = run(&ch, false, |t| {
            t.wrote_header = false;
            t.response_headers = vec![("a".into(), "b".into())];
        });
        ran.result.unwrap();
        assert!(ran.complete);
        assert_eq!(ran.status, "200 OK");
        assert!(!ch.written().is_empty());
        assert!(!ran
            .response_headers
            .contains(&("a".to_string(), "b".to_string())));
    }

    #[test]
    fn test_execute_app_calls_start_response_w_excinf_headers_written() {
        let ch = channel(|_e, sr| {
            sr.start_with_error("200 OK", Vec::<(String, String)>::new(), "boom".into())?;
            Ok(Body::empty())
        });
        let ran = run(&ch, false, |t| {
            t.complete = true;
            t.wrote_header = true;
        });
        assert_eq!(app_error(ran), "boom", "the error comes back");
    }

    /// The application calls `start_response(status, headers)` and returns the error it got.
    fn start_response_error(
        status: &'static str,
        headers: &[(&'static str, &'static str)],
    ) -> String {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ch = channel(move |_e, sr| {
            sr.start(status, headers.clone())?;
            Ok(Body::empty())
        });
        app_error(execute(&ch))
    }

    #[test]
    fn test_execute_hopbyhop_header() {
        assert_eq!(
            start_response_error("200 OK", &[("Connection", "close")]),
            "Connection is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)"
        );
    }

    #[test]
    fn test_execute_bad_header_value_control_characters() {
        assert_eq!(
            start_response_error("200 OK", &[("a", "\n")]),
            "carriage return/line feed character present in header value"
        );
    }

    #[test]
    fn test_execute_bad_header_name_control_characters() {
        assert_eq!(
            start_response_error("200 OK", &[("a\r", "value")]),
            "carriage return/line feed character present in header name"
        );
    }

    #[test]
    fn test_execute_bad_status_control_characters() {
        assert_eq!(
            start_response_error("200 OK\r", &[]),
            "carriage return/line feed character present in status"
        );
    }

    #[test]
    fn test_preserve_header_value_order() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("C", "b"), ("A", "b"), ("A", "a")])?;
            sr.write(b"abc")?;
            Ok(Body::from_chunks(Vec::new()))
        });
        execute(&ch).result.unwrap();
        let written = String::from_utf8_lossy(&ch.written()).to_string();
        assert!(written.contains("A: b\r\nA: a\r\nC: b\r\n"), "{written}");
    }

    #[test]
    fn test_execute_with_content_length_header() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "1")])?;
            Ok(Body::from("a"))
        });
        assert_eq!(execute(&ch).content_length, Some(1));
    }

    #[test]
    fn test_execute_app_calls_write() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "3")])?;
            sr.write(b"abc")?;
            Ok(Body::from_chunks(Vec::new()))
        });
        execute(&ch).result.unwrap();
        assert!(ch.written().ends_with(b"abc"));
    }

    #[test]
    fn test_execute_app_returns_len1_chunk_without_cl() {
        // waitress's one-element list is `Body::Bytes` here.
        let ch = channel(|_e, sr| {
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            Ok(Body::from("abc"))
        });
        assert_eq!(execute(&ch).content_length, Some(3));
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
        assert_eq!(execute(&ch).content_length, None);
    }

    #[test]
    fn test_execute_app_returns_too_many_bytes() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "1")])?;
            Ok(Body::from_chunks(vec![Ok(b"abc".to_vec())]))
        });
        let ran = execute(&ch);
        ran.result.unwrap();
        assert!(ran.close_on_finish);
        assert_eq!(
            ran.logged,
            vec!["WARNING:waitress:application-written content exceeded the number of bytes specified by Content-Length header (1)"]
        );
        assert!(ch.written().ends_with(b"\r\n\r\na"));
    }

    #[test]
    fn test_execute_app_returns_too_few_bytes() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "3")])?;
            Ok(Body::from_chunks(vec![Ok(b"a".to_vec())]))
        });
        let ran = execute(&ch);
        ran.result.unwrap();
        assert!(ran.close_on_finish);
        assert_eq!(
            ran.logged,
            vec!["WARNING:waitress:application returned too few bytes (1) for specified Content-Length (3) via app_iter"]
        );
        // HTTP/1.0 closes anyway; in HTTP/1.1 it is the short body that closes.
        let (result, close) = serve(&ch, "1.1");
        result.unwrap();
        assert!(close, "too few bytes closes an HTTP/1.1 connection");
    }

    #[test]
    fn test_execute_app_head_with_content_length() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "3")])?;
            Ok(Body::from_chunks(vec![Ok(b"".to_vec())]))
        });
        let ran = run(&ch, false, |t| t.request.command = "HEAD".into());
        ran.result.unwrap();
        assert!(!ran.close_on_finish);
        assert_eq!(ran.logged, Vec::<String>::new());
    }

    /// A status without a body: the body the application returns is dropped, its
    /// `Content-Length` too, nothing is chunked, and the drop is logged once.
    fn assert_without_body_logged(status: &'static str) {
        let ch = channel(move |_e, sr| {
            sr.start(status, [("Content-Length", "3")])?;
            Ok(Body::from_chunks(vec![Ok(b"abc".to_vec())]))
        });
        let ran = execute(&ch);
        ran.result.unwrap();
        assert!(ran.close_on_finish);
        let written = String::from_utf8_lossy(&ch.written()).to_string();
        assert!(!written.contains("abc"), "{written}");
        assert!(!written.contains("Content-Length"), "{written}");
        assert!(!written.contains("Transfer-Encoding"), "{written}");
        assert_eq!(
            ran.logged,
            vec![format!("WARNING:waitress:application-written content was ignored due to HTTP response that may not contain a message-body: ({status})")]
        );
    }

    #[test]
    fn test_execute_app_without_body_204_logged() {
        assert_without_body_logged("204 No Content");
    }

    #[test]
    fn test_execute_app_without_body_304_logged() {
        assert_without_body_logged("304 Not Modified");
    }

    #[test]
    fn test_execute_app_returns_closeable() {
        struct Closeable {
            chunks: Vec<Vec<u8>>,
            closed: Arc<AtomicBool>,
        }
        impl Iterator for Closeable {
            type Item = Result<Vec<u8>, AppError>;
            fn next(&mut self) -> Option<Self::Item> {
                self.chunks.pop().map(Ok)
            }
        }
        impl Drop for Closeable {
            fn drop(&mut self) {
                self.closed.store(true, Ordering::SeqCst);
            }
        }
        let closed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closed);
        let ch = channel(move |_e, sr| {
            sr.start("200 OK", [("Content-Length", "3")])?;
            Ok(Body::from_chunks(Closeable {
                chunks: vec![b"abc".to_vec()],
                closed: Arc::clone(&flag),
            }))
        });
        execute(&ch).result.unwrap();
        assert!(closed.load(Ordering::SeqCst));
    }

    fn filewrapper_app(
        content_length: Option<&'static str>,
    ) -> impl Fn(&mut Environ, &mut StartResponse<'_>) -> AppResult + Send + Sync + 'static {
        move |_e, sr| {
            let headers: Vec<(&str, &str)> = content_length
                .map(|cl| vec![("Content-Length", cl)])
                .unwrap_or_default();
            sr.start("200 OK", headers)?;
            Ok(Body::File(FileWrapper::new(
                std::io::Cursor::new(b"abc".to_vec()),
                8192,
            )))
        }
    }

    #[test]
    fn test_execute_app_returns_filewrapper_prepare_returns_true() {
        let ch = channel(filewrapper_app(Some("3")));
        execute(&ch).result.unwrap();
        assert!(
            head(&ch).starts_with("HTTP/1.0 200 OK"),
            "the head was written"
        );
        assert_eq!(
            ch.files.load(Ordering::SeqCst),
            1,
            "the file went to the channel"
        );
    }

    #[test]
    fn test_execute_app_returns_filewrapper_prepare_returns_true_nocl() {
        let ch = channel(filewrapper_app(None));
        let ran = execute(&ch);
        ran.result.unwrap();
        assert!(
            head(&ch).starts_with("HTTP/1.0 200 OK"),
            "the head was written"
        );
        assert_eq!(
            ch.files.load(Ordering::SeqCst),
            1,
            "the file went to the channel"
        );
        assert_eq!(ran.content_length, Some(3));
    }

    #[test]
    fn test_execute_app_returns_filewrapper_prepare_returns_true_badcl() {
        let ch = channel(filewrapper_app(None));
        let ran = run(&ch, false, |t| {
            t.content_length = Some(10);
            t.response_headers = vec![("Content-Length".into(), "10".into())];
        });
        ran.result.unwrap();
        assert!(
            head(&ch).starts_with("HTTP/1.0 200 OK"),
            "the head was written"
        );
        assert_eq!(
            ch.files.load(Ordering::SeqCst),
            1,
            "the file went to the channel"
        );
        assert_eq!(ran.content_length, Some(3));
        assert!(ran
            .response_headers
            .contains(&("Content-Length".to_string(), "3".to_string())));
        assert_eq!(head(&ch).matches("Content-Length").count(), 1);
    }

    /// Beyond waitress's tests: a file shorter or longer than the application's
    /// `Content-Length`, and a reader that cannot seek.
    #[test]
    fn filewrapper_lengths_and_streams() {
        for (cl, expected_cl) in [(Some("9"), "3"), (Some("2"), "2")] {
            let ch = channel(filewrapper_app(cl));
            execute(&ch).result.unwrap();
            let head = head(&ch);
            assert!(
                head.contains(&format!("Content-Length: {expected_cl}")),
                "{cl:?}: {head}"
            );
            assert_eq!(head.matches("Content-Length").count(), 1);
        }
        let ch = channel(|_e, sr| {
            sr.start("200 OK", [("Content-Length", "6")])?;
            Ok(Body::File(FileWrapper::from_reader(
                std::io::Cursor::new(b"abcdef".to_vec()),
                4,
            )))
        });
        execute(&ch).result.unwrap();
        assert_eq!(ch.files.load(Ordering::SeqCst), 0, "streamed by the task");
        assert!(ch.written().ends_with(b"\r\n\r\nabcdef"));
    }

    /// The environ of a GET of `path?query` with `url_prefix` set holds `expected`.
    fn assert_environ(path: &str, url_prefix: &str, query: &str, expected: &[(&str, &str)]) {
        let prefix = url_prefix.to_string();
        let ch = channel_with(Arc::new(ok_app), move |a| a.url_prefix = prefix);
        let mut req = request("1.0");
        req.path = path.to_string();
        req.query = query.to_string();
        let environ = Task::wsgi(&ch, &mut req).get_environment().unwrap();
        for &(key, value) in expected {
            assert_eq!(
                environ.get(key),
                Some(value),
                "{key} for {path:?} under {url_prefix:?}"
            );
        }
    }

    #[test]
    fn test_get_environment_path_startswith_more_than_one_slash() {
        assert_environ("///abc", "", "", &[("PATH_INFO", "/abc")]);
    }

    #[test]
    fn test_get_environment_path_empty() {
        assert_environ("", "", "", &[("PATH_INFO", "")]);
    }

    #[test]
    fn test_get_environment_no_query() {
        assert_environ("/", "", "", &[("QUERY_STRING", "")]);
    }

    #[test]
    fn test_get_environment_with_query() {
        assert_environ("/", "", "abc", &[("QUERY_STRING", "abc")]);
    }

    #[test]
    fn test_get_environ_with_url_prefix_miss() {
        assert_environ(
            "/bar",
            "/foo",
            "",
            &[("PATH_INFO", "/bar"), ("SCRIPT_NAME", "/foo")],
        );
    }

    #[test]
    fn test_get_environ_with_url_prefix_hit() {
        assert_environ(
            "/foo/fuz",
            "/foo",
            "",
            &[("PATH_INFO", "/fuz"), ("SCRIPT_NAME", "/foo")],
        );
    }

    #[test]
    fn test_get_environ_with_url_prefix_empty_path() {
        assert_environ(
            "/foo",
            "/foo",
            "",
            &[("PATH_INFO", ""), ("SCRIPT_NAME", "/foo")],
        );
    }

    /// Beyond waitress's tests: a path that only starts like the prefix is not cut.
    #[test]
    fn url_prefix_is_cut_only_at_a_segment() {
        assert_environ(
            "/foobar",
            "/foo",
            "",
            &[("PATH_INFO", "/foobar"), ("SCRIPT_NAME", "/foo")],
        );
    }

    #[test]
    fn a_worker_makes_its_next_environ_in_the_memory_of_the_last() {
        // Rust-only (`keep_environ`): on a thread of its own, as what is kept is per thread.
        std::thread::spawn(|| {
            // The room of the kept list, and how many strings are kept.
            let kept = || {
                peek(&KEPT_ENVIRON, |kept| {
                    assert!(kept.vars.is_empty());
                    (kept.vars.capacity(), kept.strings.len())
                })
            };
            assert_eq!(kept(), (0, 0));
            let ch = channel(ok_app);
            with_task(&ch, |_| {}, |t| t.service().unwrap());
            // PATH_INFO, REQUEST_URI and QUERY_STRING were copied into strings of their own.
            let (room, strings) = kept();
            assert!(
                room >= SERVER_VARIABLES,
                "the served request's list is kept"
            );
            assert_eq!(strings, 3, "and its strings");
            let mut req = request("1.0");
            req.headers.insert("X_FOO".into(), "bar".into());
            let environ = Task::wsgi(&ch, &mut req).get_environment().unwrap();
            assert_eq!(kept(), (0, 0), "and taken by the next environ");
            assert_eq!(environ.get("HTTP_X_FOO"), Some("bar"));
            assert_eq!(environ.get("REQUEST_METHOD"), Some("GET"));
            keep_environ(environ.into_vars());
            let (room, strings) = kept();
            assert!(
                room > SERVER_VARIABLES,
                "the list, with room for the header"
            );
            assert_eq!(strings, 4, "and the four strings");
            // A list with room past the bound is left to be freed, and so is a long string.
            let long = Text::Owned("x".repeat(SpareStrings::MOST_ROOM + 1));
            let mut too_long = Vec::with_capacity(MOST_KEPT_VARS + 1);
            too_long.push((Cow::Borrowed("X"), long));
            keep_environ(too_long);
            assert_eq!(kept(), (room, 4));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_worker_reuses_its_head_buffer_within_a_bound() {
        // A thread of its own, so that its kept buffer starts empty.
        std::thread::spawn(|| {
            let kept = || {
                peek(&KEPT_HEAD, |head| {
                    (head.len(), head.capacity(), head.as_ptr())
                })
            };
            let ch = channel(ok_app);
            let mut req = request("1.1");
            let respond = |req: &mut HttpRequestParser, body: &[u8]| {
                let mut task = Task::wsgi(&ch, req);
                task.complete = true;
                task.content_length = Some(body.len() as u64);
                task.write(body).unwrap();
            };
            assert_eq!(kept().1, 0);
            respond(&mut req, b"first");
            let (len, room, at) = kept();
            assert_eq!((len, room), (0, HEAD_ROOM), "kept, emptied");
            respond(&mut req, b"second");
            assert_eq!(kept(), (0, HEAD_ROOM, at), "the same buffer again");
            let written = ch.written();
            let text = String::from_utf8_lossy(&written);
            assert!(text.ends_with("\r\n\r\nsecond"), "{text}");
            // An uncleared buffer would send the first response again before the second.
            assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
            // A first write that grows the buffer past the bound leaves it to be freed.
            respond(&mut req, &vec![b'x'; MOST_KEPT_HEAD]);
            assert_eq!(kept().1, 0);
        })
        .join()
        .unwrap();
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
        // waitress's `wsgi.errors`, `wsgi.input`, `wsgi.file_wrapper` and
        // `waitress.client_disconnected` are typed members of `Environ`, not string keys.
        assert_eq!(
            environ.keys(),
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
        // Rust-only: the environ is sized from this count, so it must be exact.
        assert_eq!(environ.keys().len(), SERVER_VARIABLES + 4);
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
            ("wsgi.version", "1.0"),
            ("wsgi.url_scheme", "http"),
            ("wsgi.multithread", "true"),
            ("wsgi.multiprocess", "false"),
            ("wsgi.run_once", "false"),
            ("wsgi.input_terminated", "true"),
        ] {
            assert_eq!(environ.get(key), Some(value), "{key}");
        }
        assert!(environ.client_disconnected().is_some());
    }

    // TestErrorTask

    /// An `ErrorTask` for a 400 with the body "body" (waitress's test uses a made-up
    /// "432 Too Ugly"; the port's errors are a closed set, so the numbers differ).
    fn error_lines(version: &str, connection: Option<&str>) -> (Vec<String>, bool) {
        let ch = channel(ok_app);
        let mut req = request(version);
        req.error = Some(Error::new(ErrorKind::BadRequest, "body"));
        if let Some(c) = connection {
            req.headers.insert("CONNECTION".into(), c.into());
        }
        let mut task = Task::error(&ch, &mut req);
        task.execute_error().unwrap();
        let close = task.close_on_finish;
        (lines(&ch), close)
    }

    fn assert_error_response(version: &str, connection: Option<&str>) {
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

    #[test]
    fn test_execute_http_10() {
        assert_error_response("1.0", None);
    }

    #[test]
    fn test_execute_http_11() {
        assert_error_response("1.1", None);
    }

    #[test]
    fn test_execute_http_11_close() {
        assert_error_response("1.1", Some("close"));
    }

    #[test]
    fn test_execute_http_11_keep_forces_close() {
        assert_error_response("1.1", Some("keep-alive"));
    }

    // Beyond waitress's tests

    /// One `start_response` for both sinks: a refused call leaves the task unstarted, so the
    /// application can answer properly on its second try.
    #[test]
    fn refused_start_response_leaves_the_task_unstarted() {
        let ch = channel(|_e, sr| {
            let refused = sr.start("200 OK", [("Content-Length", "9"), ("Upgrade", "x")]);
            assert_eq!(
                refused,
                Err(StartResponseError::HopByHop("Upgrade".to_string()))
            );
            assert!(sr.write(b"early").is_err(), "not started");
            sr.start("404 Not Found", [("Content-Length", "2")])?;
            Ok(Body::from("no"))
        });
        serve(&ch, "1.1").0.unwrap();
        let written = ch.written.lock().unwrap().clone();
        let text = String::from_utf8_lossy(&written);
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 2\r\n"), "{text}");
        assert!(!text.contains("Upgrade"), "{text}");
        assert!(text.ends_with("\r\n\r\nno"), "{text}");
    }

    #[test]
    fn head_response_keeps_content_length_and_sends_no_body() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            Ok(Body::from("abc"))
        });
        let mut req = request("1.1");
        req.command = "HEAD".into();
        let mut task = Task::wsgi(&ch, &mut req);
        task.service().unwrap();
        assert!(!task.close_on_finish);
        assert!(
            !task.logged_write_no_body,
            "HEAD answered like GET is no fault"
        );
        let written = ch.written.lock().unwrap().clone();
        assert!(written.ends_with(b"\r\n\r\n"), "no body for HEAD");
        assert!(head(&ch).contains("\r\nContent-Length: 3\r\n"));
    }

    /// An empty chunk sends nothing, not even the head (waitress writes only chunks with
    /// bytes), so an error after it can still be answered with a 500.
    #[test]
    fn empty_first_chunk_then_error_leaves_the_head_unsent() {
        let ch = channel(|_e, sr| {
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            Ok(Body::from_chunks(vec![Ok(b"".to_vec()), Err("bad".into())]))
        });
        let mut req = request("1.1");
        let mut task = Task::wsgi(&ch, &mut req);
        match task.service() {
            Err(TaskError::App(e)) => assert_eq!(e.to_string(), "bad"),
            _ => panic!("the chunk's error comes back"),
        }
        assert!(!task.wrote_header);
        assert_eq!(ch.written(), b"");
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

    /// A body whose `next()` panics and whose `Drop` panics too: each panic is caught where
    /// it happens (a panic during the first one's unwind would abort the process), and the
    /// first comes back as the application's error.
    #[test]
    fn body_panics_in_next_and_in_drop_are_errors() {
        struct Bad;
        impl Iterator for Bad {
            type Item = Result<Vec<u8>, AppError>;
            fn next(&mut self) -> Option<Self::Item> {
                panic!("next failed")
            }
        }
        impl Drop for Bad {
            fn drop(&mut self) {
                panic!("drop failed")
            }
        }
        let ch = channel(|_e, sr| {
            sr.start("200 OK", Vec::<(String, String)>::new())?;
            Ok(Body::from_chunks(Bad))
        });
        match serve(&ch, "1.1").0 {
            Err(TaskError::App(e)) => {
                assert_eq!(e.to_string(), "application panicked: next failed")
            }
            other => panic!("expected the panic as an error, got {other:?}"),
        }
        assert!(ch.written.lock().unwrap().is_empty(), "nothing was sent");
    }
}
