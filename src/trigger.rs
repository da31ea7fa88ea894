//! Port of waitress/trigger.py.
//!
//! The trigger wakes the I/O thread out of `poll` when a worker thread has queued output or
//! finished a request: a non-blocking socket pair whose reading end sits in the socket map.
//! Workers hold a [`TriggerHandle`]; the I/O thread owns the [`Trigger`]. The pair is a Unix
//! socket pair, or on Windows two loopback TCP sockets connected to each other (waitress's
//! trigger for systems without POSIX pipes), made by [`socket_pair`].

use std::io::{self, Read, Write};
#[cfg(windows)]
use std::net::{TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::compat::{self, RawSocket};
use crate::task::panic_message;
use crate::utilities::LOGGER;
use crate::wasyncore::{ChangeLog, Dispatcher, SocketMap, WeakSocketMap};

/// One end of a [`socket_pair`].
#[cfg(unix)]
pub type PairStream = std::os::unix::net::UnixStream;
/// One end of a [`socket_pair`].
#[cfg(windows)]
pub type PairStream = TcpStream;

/// Two connected stream sockets: `socketpair(2)` on Unix.
#[cfg(unix)]
pub fn socket_pair() -> io::Result<(PairStream, PairStream)> {
    PairStream::pair()
}

/// Two connected stream sockets. Windows has no `socketpair`, so as waitress does there: a
/// listener on an ephemeral loopback port, a client connected to it, the accepted end, and
/// the listener closed. `TCP_NODELAY` on the writing end sends a wake-up byte at once.
/// waitress retries a connect that fails with `WSAEADDRINUSE` (a race that old Windows
/// versions showed), up to ten times; so does this.
#[cfg(windows)]
pub fn socket_pair() -> io::Result<(PairStream, PairStream)> {
    /// `WSAEADDRINUSE`, `winerror.h`.
    const WSAEADDRINUSE: i32 = 10048;
    for _ in 0..10 {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let writer = match TcpStream::connect(listener.local_addr()?) {
            Ok(writer) => writer,
            Err(e) if e.raw_os_error() == Some(WSAEADDRINUSE) => continue,
            Err(e) => return Err(e),
        };
        writer.set_nodelay(true)?;
        let (reader, _) = listener.accept()?;
        // Only the client just connected may become the other end (anyone else who reached
        // the port first is dropped with this attempt).
        if reader.peer_addr()? == writer.local_addr()? {
            return Ok((reader, writer));
        }
    }
    Err(io::Error::new(io::ErrorKind::Other, "Cannot bind trigger!"))
}

/// Work to run on the I/O thread at its next wake-up.
pub type Thunk = Box<dyn FnOnce() + Send>;

/// The half of the trigger that other threads use.
struct Shared {
    writer: PairStream,
    /// A wake-up byte is in the pipe and not yet read: further pulls need not write another,
    /// so a burst of pulls costs one byte and one wake-up. Rust-only (waitress writes on each
    /// pull). Under `wrk -t1 -c16 -H 'Connection: close'`, where each response ends in a pull
    /// (the I/O thread closes the connection), the server made 1.31 `sendto` calls per
    /// response with it and 1.96 without, one of them the response (`perf stat`, one run
    /// each, 6 Dec 2026).
    pending: AtomicBool,
    /// Guards the thunks; taken by pullers to add and by the I/O thread to run them.
    thunks: Mutex<Vec<Thunk>>,
    /// Rust-only: which dispatchers a pull is about, for a loop that asks only those (see
    /// `wasyncore::ChangeLog`).
    changes: Arc<ChangeLog>,
    closed: AtomicBool,
}

/// A way to wake the I/O thread from any thread (waitress: `trigger.pull_trigger`).
#[derive(Clone)]
pub struct TriggerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TriggerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TriggerHandle { .. }")
    }
}

impl TriggerHandle {
    /// Wake the I/O thread; pulls that come before it wakes are merged into one. Its next
    /// round asks every dispatcher what it wants.
    pub fn pull_trigger(&self) {
        self.shared.changes.changed_all();
        self.wake();
    }

    /// Rust-only: wake the I/O thread because the dispatcher under `fd` wants something else
    /// now; its next round need ask only that one (and those it always asks).
    pub fn pull_trigger_for(&self, fd: RawSocket) {
        self.shared.changes.changed(fd);
        self.wake();
    }

    /// Rust-only: tell the loop, without waking it, that the dispatcher under `fd` wants
    /// something else now (for the I/O thread itself, whose next round comes anyway).
    pub fn report_change(&self, fd: RawSocket) {
        self.shared.changes.changed(fd);
    }

    /// Write the wake-up byte, unless one is waiting already.
    fn wake(&self) {
        if self.shared.closed.load(Ordering::Acquire) {
            return;
        }
        if !self.shared.pending.swap(true, Ordering::AcqRel) {
            // The pipe is non-blocking: a full pipe already means a wake-up is coming.
            let _ = (&self.shared.writer).write(b"x");
        }
    }

    /// Run `thunk` on the I/O thread at its next wake-up, and wake it.
    pub fn pull_trigger_with(&self, thunk: Thunk) {
        self.shared
            .thunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(thunk);
        self.pull_trigger();
    }

    /// Stop waking: later pulls do nothing (the loop is going away).
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// The I/O-thread half: a dispatcher in the socket map (waitress: `trigger`).
pub struct Trigger {
    reader: PairStream,
    fd: RawSocket,
    handle: TriggerHandle,
    /// The map this trigger sits in; weak, since the map holds the trigger.
    map: WeakSocketMap,
}

impl Trigger {
    /// Create a trigger and add it to `map`.
    pub fn new(map: &SocketMap) -> io::Result<Rc<Trigger>> {
        let (reader, writer) = socket_pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let fd = compat::raw_socket(&reader);
        let trigger = Rc::new(Trigger {
            reader,
            fd,
            handle: TriggerHandle {
                shared: Arc::new(Shared {
                    writer,
                    pending: AtomicBool::new(false),
                    thunks: Mutex::new(Vec::new()),
                    changes: Arc::new(ChangeLog::default()),
                    closed: AtomicBool::new(false),
                }),
            },
            map: Rc::downgrade(map),
        });
        map.borrow_mut()
            .insert(fd, Rc::clone(&trigger) as Rc<dyn Dispatcher>);
        Ok(trigger)
    }

    /// A handle for other threads.
    pub fn handle(&self) -> TriggerHandle {
        self.handle.clone()
    }

    /// Rust-only: where the pulls name the dispatchers they are about, for
    /// `wasyncore::Selector::track_changes`.
    pub fn change_log(&self) -> Arc<ChangeLog> {
        Arc::clone(&self.handle.shared.changes)
    }

    /// Leave the map and stop accepting pulls (waitress: `close`).
    pub fn close(&self) {
        self.handle.close();
        if let Some(map) = self.map.upgrade() {
            map.borrow_mut().remove(&self.fd);
        }
    }
}

impl Dispatcher for Trigger {
    fn fileno(&self) -> RawSocket {
        self.fd
    }

    fn readable(&self) -> bool {
        true
    }

    fn writable(&self) -> bool {
        false
    }

    fn handle_read_event(&self) {
        let mut sink = [0u8; 512];
        while let Ok(n) = (&self.reader).read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        // Clear the latch only after draining. A pull before this point wrote nothing, but
        // its change of state is seen when the loop next asks who is readable or writable; a
        // pull after it writes a fresh byte. (Clearing first could drain that fresh byte and
        // leave the latch set with an empty pipe: every later pull would be lost.)
        self.handle.shared.pending.store(false, Ordering::Release);
        let thunks = std::mem::take(
            &mut *self
                .handle
                .shared
                .thunks
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for thunk in thunks {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(thunk)) {
                LOGGER.error(&format!(
                    "exception in trigger thunk: {}",
                    panic_message(&*panic)
                ));
            }
        }
    }

    fn handle_write_event(&self) {}

    fn handle_close(&self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_trigger.py (its POSIX `Test_trigger` class) over the real socket
    //! pair. Not carried over:
    // test__close: the pair closes when the Trigger and its last handle are dropped (Rust ownership), not in close(); test_close checks what close() does
    // test_handle_connect: no such method; the trigger never connects
    use super::*;
    use crate::utilities::capture_logs;
    use crate::wasyncore::{loop_, new_map};
    use std::time::Duration;

    /// The next byte waiting in the pipe, if any.
    fn read_byte(trigger: &Trigger) -> Option<u8> {
        let mut byte = [0u8; 1];
        match (&trigger.reader).read(&mut byte) {
            Ok(1) => Some(byte[0]),
            _ => None,
        }
    }

    fn thunk_count(trigger: &Trigger) -> usize {
        trigger.handle.shared.thunks.lock().unwrap().len()
    }

    #[test]
    fn test_physical_pull() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        trigger.handle().pull_trigger();
        assert_eq!(read_byte(&trigger), Some(b'x'));
    }

    #[test]
    fn a_pull_names_what_it_is_about() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        let log = trigger.change_log();
        log.start_reading();
        let mut fds = Vec::new();
        trigger.handle().pull_trigger_for(7);
        trigger.handle().report_change(8);
        assert!(!log.take(&mut fds));
        assert_eq!(fds, vec![7, 8]);
        // A plain pull may be about anything.
        trigger.handle().pull_trigger();
        assert!(log.take(&mut fds));
    }

    #[test]
    fn test_readable() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        assert!(trigger.readable());
        assert!(map.borrow().contains_key(&trigger.fileno()));
    }

    #[test]
    fn test_writable() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        assert!(!trigger.writable());
    }

    #[test]
    fn test_close() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        trigger.close();
        assert!(trigger.handle.shared.closed.load(Ordering::SeqCst));
        assert!(map.borrow().is_empty());
        trigger.handle().pull_trigger(); // ignored, no panic
        assert_eq!(read_byte(&trigger), None, "a closed trigger is not pulled");
    }

    #[test]
    fn test_handle_close() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        trigger.handle_close();
        assert!(trigger.handle.shared.closed.load(Ordering::SeqCst));
        assert!(map.borrow().is_empty());
    }

    #[test]
    fn the_trigger_does_not_keep_its_map_alive() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        let weak = Rc::downgrade(&map);
        drop(map);
        assert!(weak.upgrade().is_none());
        trigger.close(); // the map is gone: nothing to leave, no panic
    }

    #[test]
    fn test_pull_trigger_nothunk() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        trigger.handle().pull_trigger();
        assert_eq!(thunk_count(&trigger), 0);
        assert_eq!(read_byte(&trigger), Some(b'x'));
    }

    #[test]
    fn test_pull_trigger_thunk() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        trigger.handle().pull_trigger_with(Box::new(|| {}));
        assert_eq!(thunk_count(&trigger), 1);
        assert_eq!(read_byte(&trigger), Some(b'x'));
    }

    #[test]
    fn test_handle_read_socket_error() {
        // Nothing to read: the non-blocking read fails with WouldBlock, which is not an error.
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        trigger.handle_read_event();
        assert!(map.borrow().contains_key(&trigger.fileno()));
    }

    #[test]
    fn test_handle_read_no_socket_error() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        trigger.handle().pull_trigger();
        trigger.handle_read_event();
        assert_eq!(read_byte(&trigger), None, "the wake-up byte was drained");
    }

    #[test]
    fn test_handle_read_thunk() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        trigger
            .handle()
            .pull_trigger_with(Box::new(move || flag.store(true, Ordering::SeqCst)));
        trigger.handle_read_event();
        assert!(ran.load(Ordering::SeqCst));
        assert_eq!(thunk_count(&trigger), 0);
    }

    #[test]
    fn test_handle_read_thunk_error() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        trigger
            .handle()
            .pull_trigger_with(Box::new(|| panic!("thunk failed")));
        let (_, logged) = capture_logs(|| trigger.handle_read_event());
        assert_eq!(
            logged,
            vec!["ERROR:waitress:exception in trigger thunk: thunk failed"]
        );
        assert_eq!(thunk_count(&trigger), 0);
    }

    #[test]
    fn test_pull_trigger_with_thunk_runs_on_the_loop() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let handle = trigger.handle();
        std::thread::spawn(move || {
            handle.pull_trigger_with(Box::new(move || flag.store(true, Ordering::SeqCst)))
        })
        .join()
        .unwrap();
        loop_(Duration::from_secs(5), true, &map, Some(1)).unwrap();
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn test_pulls_coalesce_and_a_panicking_thunk_is_contained() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        let handle = trigger.handle();
        handle.pull_trigger_with(Box::new(|| panic!("boom")));
        for _ in 0..1000 {
            handle.pull_trigger();
        }
        let (_, logged) =
            capture_logs(|| loop_(Duration::from_secs(5), true, &map, Some(1)).unwrap());
        assert_eq!(logged.len(), 1);
        assert!(!handle.shared.pending.load(Ordering::SeqCst));
        // Nothing left to read: the latch is clear and the pipe empty.
        assert_eq!(read_byte(&trigger), None);
    }

    #[test]
    fn a_pull_after_racing_pulls_still_wakes_the_loop() {
        let map = new_map();
        let trigger = Trigger::new(&map).unwrap();
        let handle = trigger.handle();
        let puller = std::thread::spawn(move || {
            for _ in 0..20_000 {
                handle.pull_trigger();
            }
        });
        while !puller.is_finished() {
            // Bounded by the puller, which always finishes.
            loop_(Duration::from_millis(1), true, &map, Some(1)).unwrap();
        }
        puller.join().unwrap();
        loop_(Duration::from_millis(1), true, &map, Some(2)).unwrap();
        trigger.handle().pull_trigger();
        let started = std::time::Instant::now();
        loop_(Duration::from_secs(30), true, &map, Some(1)).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the last pull was lost"
        );
    }
}
