//! Port of waitress/wasyncore.py.
//!
//! The event loop of the I/O thread. A [`SocketMap`] maps descriptors to [`Dispatcher`]s (the
//! listeners, one channel per connection, the trigger). One round asks each dispatcher whether
//! it is `readable` and `writable`, hands those that want something to `poll(2)` (a dispatcher
//! that wants nothing is not watched; when none wants anything the round just sleeps for the
//! timeout), and calls the handlers of the ready ones through [`readwrite`]. A handler may add
//! or remove map entries; the round works on a snapshot and looks each object up again before
//! calling it.
//!
//! [`poll`] gives waitress's `select()` semantics (the default, `asyncore_use_poll=false`):
//! descriptors from `FD_SETSIZE` on are an error, and a hang-up is reported as readable. [`poll2`]
//! gives `poll()` semantics: no limit, and a hang-up or error calls `handle_close`. An
//! interrupted `poll(2)` is retried (waitress returns from the round instead). [`loop_`] runs
//! rounds until the map is empty or a count is reached; the server runs its own rounds so it
//! can stop on request. [`close_all`] closes every dispatcher.
//!
//! Only the I/O thread touches the map, so it is an `Rc<RefCell<…>>`; state that other threads
//! reach (a channel's buffers) sits behind the dispatcher's own locks. asyncore's `dispatcher`
//! base class and its socket methods are not ported: std's sockets do that work, and each
//! dispatcher handles its own I/O errors. A panic in a handler is caught and reported to
//! `handle_error`, which closes that dispatcher, as waitress does with an uncaught exception.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::os::unix::io::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::compat::{
    self, PollFd, EBADF, ESHUTDOWN, FD_SETSIZE, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT,
    POLLPRI,
};
use crate::task::panic_message;
use crate::utilities::LOGGER;

/// Every dispatcher of one loop, by file descriptor (waitress: `socket_map`).
pub type SocketMap = Rc<RefCell<BTreeMap<RawFd, Rc<dyn Dispatcher>>>>;

/// A reference to a map that does not keep it alive: what the dispatchers inside a map hold,
/// so that the map and its entries do not keep each other alive.
pub type WeakSocketMap = Weak<RefCell<BTreeMap<RawFd, Rc<dyn Dispatcher>>>>;

/// An empty map.
pub fn new_map() -> SocketMap {
    Rc::new(RefCell::new(BTreeMap::new()))
}

/// One readiness-driven object in the loop (waitress: `wasyncore.dispatcher`). Methods take
/// `&self`: implementors keep I/O-thread state in `Cell`/`RefCell` and shared state behind locks.
pub trait Dispatcher {
    /// The descriptor polled for this object.
    fn fileno(&self) -> RawFd;
    /// Whether to wait for input.
    fn readable(&self) -> bool;
    /// Whether to wait for room to write.
    fn writable(&self) -> bool;
    /// Input is ready (or, for a listener, a connection to accept).
    fn handle_read_event(&self);
    /// Room to write.
    fn handle_write_event(&self);
    /// Urgent data (`POLLPRI`); nothing uses it, as in waitress.
    fn handle_expt_event(&self) {}
    /// The peer hung up or the descriptor failed: close and leave the map.
    fn handle_close(&self);
    /// A handler panicked: log it and close this dispatcher; the loop carries on (waitress:
    /// `handle_error`, called for an uncaught exception).
    fn handle_error(&self, message: &str) {
        LOGGER.error(&format!(
            "uncaptured panic, closing descriptor {}: {message}",
            self.fileno()
        ));
        self.handle_close();
    }
}

/// Whether an error means the peer has gone (waitress: `_DISCONNECTED`: ECONNRESET,
/// ENOTCONN, ESHUTDOWN, ECONNABORTED, EPIPE, EBADF).
pub fn is_disconnected(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    ) || matches!(error.raw_os_error(), Some(code) if code == ESHUTDOWN || code == EBADF)
}

/// Call the handlers a `poll` result asks for, in waitress's order: read, write, urgent, then
/// close on hang-up or error. A panic in a handler stops the sequence and goes to
/// `handle_error` (the handlers deal with their own I/O errors, using [`is_disconnected`]).
pub fn readwrite(obj: &dyn Dispatcher, flags: i16) {
    let dispatched = catch_unwind(AssertUnwindSafe(|| {
        if flags & POLLIN != 0 {
            obj.handle_read_event();
        }
        if flags & POLLOUT != 0 {
            obj.handle_write_event();
        }
        if flags & POLLPRI != 0 {
            obj.handle_expt_event();
        }
        if flags & (POLLHUP | POLLERR | POLLNVAL) != 0 {
            obj.handle_close();
        }
    }));
    if let Err(panic) = dispatched {
        obj.handle_error(&panic_message(&*panic));
    }
}

/// The interest flags for one dispatcher; 0 when it wants nothing (then it is not polled at
/// all, as in waitress, so a hang-up is noticed when it next wants something).
fn interest(obj: &dyn Dispatcher) -> i16 {
    let mut flags = 0;
    if obj.readable() {
        flags |= POLLIN | POLLPRI;
    }
    if obj.writable() {
        flags |= POLLOUT;
    }
    flags
}

/// Whether the loop can watch `fd`: always with `poll`, below `FD_SETSIZE` with `select`
/// semantics. The server refuses connections it could not watch, rather than let one
/// descriptor stop the loop for everybody.
pub fn can_watch(fd: RawFd, use_poll: bool) -> bool {
    use_poll || fd < FD_SETSIZE
}

/// One round with `select()` semantics (waitress: `poll`): only descriptors that want
/// something are watched, and descriptors at or above `FD_SETSIZE` (1024) are refused as
/// `select` would refuse them.
pub fn poll(timeout: Duration, map: &SocketMap) -> io::Result<()> {
    poll_round(timeout, map, false)
}

/// One round with `poll()` semantics (waitress: `poll2`): no descriptor limit.
pub fn poll2(timeout: Duration, map: &SocketMap) -> io::Result<()> {
    poll_round(timeout, map, true)
}

fn poll_round(timeout: Duration, map: &SocketMap, use_poll: bool) -> io::Result<()> {
    let mut fds: Vec<PollFd> = Vec::with_capacity(map.borrow().len());
    // Snapshot the interest list first: the handlers below add and remove map entries.
    let entries: Vec<(RawFd, Rc<dyn Dispatcher>)> = map
        .borrow()
        .iter()
        .map(|(fd, obj)| (*fd, Rc::clone(obj)))
        .collect();
    for (fd, obj) in &entries {
        let flags = interest(obj.as_ref());
        if flags == 0 {
            continue;
        }
        if !can_watch(*fd, use_poll) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("filedescriptor out of range in select() ({fd}); set asyncore_use_poll"),
            ));
        }
        fds.push(PollFd {
            fd: *fd,
            events: flags,
            revents: 0,
        });
    }
    drop(entries);
    if fds.is_empty() {
        std::thread::sleep(timeout);
        return Ok(());
    }
    compat::poll_fds(&mut fds, timeout)?;
    for pfd in fds.iter().filter(|p| p.revents != 0) {
        // Look the object up again: an earlier handler in this round may have closed it.
        let obj = map.borrow().get(&pfd.fd).cloned();
        if let Some(obj) = obj {
            let flags = if use_poll {
                pfd.revents
            } else {
                select_flags(pfd.revents)
            };
            readwrite(obj.as_ref(), flags);
        }
    }
    Ok(())
}

/// What `select()` would have reported: a hang-up or error shows as readable (the next
/// `recv` then sees it), never as a separate close.
fn select_flags(revents: i16) -> i16 {
    let mut flags = revents & (POLLIN | POLLOUT | POLLPRI);
    if revents & (POLLHUP | POLLERR | POLLNVAL) != 0 {
        flags |= POLLIN;
    }
    flags
}

/// Run rounds until the map is empty, or `count` rounds are done (waitress: `loop`).
pub fn loop_(
    timeout: Duration,
    use_poll: bool,
    map: &SocketMap,
    count: Option<usize>,
) -> io::Result<()> {
    let mut rounds = 0;
    while !map.borrow().is_empty() {
        if count.is_some_and(|c| rounds >= c) {
            break;
        }
        if use_poll {
            poll2(timeout, map)?;
        } else {
            poll(timeout, map)?;
        }
        rounds += 1;
    }
    Ok(())
}

/// Close every dispatcher in the map and empty it (waitress: `close_all`).
pub fn close_all(map: &SocketMap) {
    let all: Vec<Rc<dyn Dispatcher>> = map.borrow().values().cloned().collect();
    for obj in all {
        obj.handle_close();
    }
    map.borrow_mut().clear();
}

#[cfg(test)]
mod tests {
    //! Ports of the tests of tests/test_wasyncore.py that concern the loop: `Test_readwrite`,
    //! `Test_poll`, `Test_poll2`, `close_all` and the disconnect classification. Skipped on
    //! purpose: the tests of asyncore's socket API surface (`DispatcherTests`,
    //! `BaseTestAPI_*`, `FileWrapperTest`, `Test_dispatcher`, `Test__strerror`,
    //! `Test__exception`, `Test_read`/`Test_write` helpers): that API does not exist here:
    //! std sockets take its place and the channel and server tests cover them.
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::io::Write;
    use std::os::unix::io::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[derive(Default)]
    struct Recorder {
        fd: RawFd,
        readable: bool,
        writable: bool,
        events: RefCell<Vec<&'static str>>,
        map: RefCell<Option<SocketMap>>,
        closes: Cell<usize>,
    }

    impl Dispatcher for Recorder {
        fn fileno(&self) -> RawFd {
            self.fd
        }
        fn readable(&self) -> bool {
            self.readable
        }
        fn writable(&self) -> bool {
            self.writable
        }
        fn handle_read_event(&self) {
            self.events.borrow_mut().push("read");
        }
        fn handle_write_event(&self) {
            self.events.borrow_mut().push("write");
        }
        fn handle_expt_event(&self) {
            self.events.borrow_mut().push("expt");
        }
        fn handle_close(&self) {
            self.events.borrow_mut().push("close");
            self.closes.set(self.closes.get() + 1);
            if let Some(map) = self.map.borrow().as_ref() {
                map.borrow_mut().remove(&self.fd);
            }
        }
    }

    impl Recorder {
        fn new(fd: RawFd, readable: bool, writable: bool) -> Recorder {
            Recorder {
                fd,
                readable,
                writable,
                ..Default::default()
            }
        }
    }

    #[test]
    fn test_readwrite_dispatches_each_flag() {
        let obj = Recorder::default();
        readwrite(&obj, POLLIN);
        readwrite(&obj, POLLOUT);
        readwrite(&obj, POLLPRI);
        readwrite(&obj, POLLHUP);
        readwrite(&obj, POLLERR);
        readwrite(&obj, POLLNVAL);
        assert_eq!(
            *obj.events.borrow(),
            vec!["read", "write", "expt", "close", "close", "close"]
        );
    }

    fn register(map: &SocketMap, obj: Recorder) -> Rc<Recorder> {
        let obj = Rc::new(obj);
        *obj.map.borrow_mut() = Some(Rc::clone(map));
        map.borrow_mut()
            .insert(obj.fd, Rc::clone(&obj) as Rc<dyn Dispatcher>);
        obj
    }

    #[test]
    fn test_poll2_reports_ready_descriptors() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let map = new_map();
        let reader = register(&map, Recorder::new(b.as_raw_fd(), true, false));
        a.write_all(b"x").unwrap();
        poll2(Duration::from_secs(5), &map).unwrap();
        assert_eq!(*reader.events.borrow(), vec!["read"]);
    }

    #[test]
    fn test_poll_select_semantics_hangup_reads() {
        let (a, b) = UnixStream::pair().unwrap();
        let map = new_map();
        let reader = register(&map, Recorder::new(b.as_raw_fd(), true, false));
        drop(a);
        poll(Duration::from_secs(5), &map).unwrap();
        // select() shows a hang-up as readable; the next recv sees the end.
        assert_eq!(*reader.events.borrow(), vec!["read"]);
    }

    #[test]
    fn test_poll_refuses_descriptors_beyond_fd_setsize() {
        let map = new_map();
        register(&map, Recorder::new(FD_SETSIZE + 5, true, false));
        let err = poll(Duration::from_millis(1), &map).unwrap_err();
        assert!(err.to_string().contains("asyncore_use_poll"));
    }

    #[test]
    fn test_poll2_writable_and_uninterested() {
        let (_a, b) = UnixStream::pair().unwrap();
        let map = new_map();
        let writer = register(&map, Recorder::new(b.as_raw_fd(), false, true));
        poll2(Duration::from_secs(5), &map).unwrap();
        assert_eq!(*writer.events.borrow(), vec!["write"]);
    }

    #[test]
    fn test_loop_ends_when_the_map_empties() {
        let (_a, b) = UnixStream::pair().unwrap();
        let map = new_map();
        let obj = register(&map, Recorder::new(b.as_raw_fd(), false, true));
        loop_(Duration::from_millis(10), true, &map, Some(3)).unwrap();
        assert_eq!(obj.events.borrow().len(), 3);
        close_all(&map);
        assert!(map.borrow().is_empty());
        assert_eq!(obj.closes.get(), 1);
        loop_(Duration::from_millis(10), true, &map, None).unwrap();
    }

    #[test]
    fn can_watch_follows_select_limit() {
        assert!(can_watch(1023, false));
        assert!(!can_watch(1024, false));
        assert!(can_watch(5000, true));
    }

    #[test]
    fn test_is_disconnected() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::NotConnected,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
        ] {
            assert!(is_disconnected(&io::Error::from(kind)));
        }
        assert!(is_disconnected(&io::Error::from_raw_os_error(EBADF)));
        assert!(is_disconnected(&io::Error::from_raw_os_error(ESHUTDOWN)));
        assert!(!is_disconnected(&io::Error::from(
            io::ErrorKind::WouldBlock
        )));
    }
}
