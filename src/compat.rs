//! Port of waitress/compat.py.
//!
//! waitress keeps its platform facts in one file; so does the port. Every `extern`
//! declaration, platform constant and `unsafe` call of the crate lives here, each behind a
//! small safe function, so the rest of the crate is safe Rust over `std` types (the crate root
//! denies `unsafe_code` everywhere else). The event loop (`poll`), the server (sockets whose
//! options must be set before `bind`, the `listen` backlog) and the runner (SIGINT/SIGTERM, or
//! Ctrl-C and console close on Windows) call in here.
//!
//! The constants are given for each supported system with the header they come from; any
//! other target fails to build rather than run with guessed numbers. The file reads top to
//! bottom: which targets, the constants per system, the C declarations, then one section per
//! use (errors, poll, sockets, signals, resource limits). Unix (the C library) and Windows
//! (`ws2_32` and `kernel32`, waitress's `WIN`) each have their own constants and declarations;
//! the safe functions have the same signatures on both, over [`RawSocket`] and [`AsSocket`].

use std::io;
use std::net::SocketAddr;
use std::os::raw::{c_int, c_short, c_void};
#[cfg(unix)]
use std::os::unix::io::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
#[cfg(windows)]
use std::os::windows::io::{AsRawSocket, AsSocket as AsWinSocket, FromRawSocket, OwnedSocket};
use std::time::Duration;

// ---- which targets ----

#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "freebsd",
    windows
)))]
compile_error!(
    "waitress-rs knows the system constants of Linux, macOS, FreeBSD and Windows only; add \
     this target's constants to src/compat.rs"
);

// A Winsock `SOCKET` is pointer-sized; `WSAPOLLFD` below is laid out for 64-bit Windows.
#[cfg(all(windows, not(target_pointer_width = "64")))]
compile_error!("src/compat.rs has the constants and structs of 64-bit Windows only");

// Linux on MIPS and SPARC numbers its socket options, errors and resource limits differently
// (asm/socket.h, asm/errno.h and asm/resource.h of those architectures); refuse rather than
// guess.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "mips32r6",
        target_arch = "mips64r6",
        target_arch = "sparc",
        target_arch = "sparc64"
    )
))]
compile_error!(
    "src/compat.rs has the generic Linux constants; MIPS and SPARC differ: add theirs first"
);

/// Whether this is Windows (waitress: `WIN`).
pub const WIN: bool = cfg!(windows);

// ---- the handle of a socket ----

/// What the event loop keys its sockets by: a file descriptor on Unix, a Winsock `SOCKET` on
/// Windows.
#[cfg(unix)]
pub type RawSocket = std::os::unix::io::RawFd;
/// What the event loop keys its sockets by: a file descriptor on Unix, a Winsock `SOCKET` on
/// Windows.
#[cfg(windows)]
pub type RawSocket = std::os::windows::io::RawSocket;

/// A socket borrowed for a system call (std's `AsFd` on Unix, `AsSocket` on Windows).
#[cfg(unix)]
pub use std::os::unix::io::AsFd as AsSocket;
/// A socket borrowed for a system call (std's `AsFd` on Unix, `AsSocket` on Windows).
#[cfg(windows)]
pub use std::os::windows::io::AsSocket;

/// A socket that closes on drop (`OwnedFd` on Unix, `OwnedSocket` on Windows); std's
/// `TcpListener` and `TcpStream` convert from it.
#[cfg(unix)]
pub type OwnedSocketHandle = OwnedFd;
/// A socket that closes on drop (`OwnedFd` on Unix, `OwnedSocket` on Windows); std's
/// `TcpListener` and `TcpStream` convert from it.
#[cfg(windows)]
pub type OwnedSocketHandle = OwnedSocket;

/// The raw handle of `socket`, as the socket map keys it.
#[cfg(unix)]
pub fn raw_socket(socket: &impl AsFd) -> RawSocket {
    socket.as_fd().as_raw_fd()
}
/// The raw handle of `socket`, as the socket map keys it.
#[cfg(windows)]
pub fn raw_socket(socket: &impl AsWinSocket) -> RawSocket {
    socket.as_socket().as_raw_socket()
}

// ---- constants shared by every supported system ----

/// `AF_INET`, 2 in Linux `bits/socket.h`, macOS and FreeBSD `sys/socket.h`, Windows
/// `ws2def.h`.
pub const AF_INET: c_int = 2;
/// `SOCK_STREAM`, 1 in Linux `bits/socket_type.h`, macOS and FreeBSD `sys/socket.h`, Windows
/// `winsock2.h`.
pub const SOCK_STREAM: c_int = 1;
/// `IPPROTO_TCP` (waitress's `SOL_TCP`), 6 in `netinet/in.h` and Windows `ws2def.h`.
pub const IPPROTO_TCP: c_int = 6;
/// `IPPROTO_IPV6`, 41 in `netinet/in.h` and Windows `ws2def.h` (waitress's compat.py spells
/// it out for Windows).
pub const IPPROTO_IPV6: c_int = 41;
/// `TCP_NODELAY`, 1 in `netinet/tcp.h` and Windows `ws2def.h`.
pub const TCP_NODELAY: c_int = 1;

// ---- constants shared by every supported Unix ----

/// `poll(2)` events, from `<poll.h>` (Linux `asm-generic/poll.h`, macOS and FreeBSD
/// `sys/poll.h`): the same values on all three.
#[cfg(unix)]
pub const POLLIN: c_short = 0x001;
/// Urgent input.
#[cfg(unix)]
pub const POLLPRI: c_short = 0x002;
/// Room to write.
#[cfg(unix)]
pub const POLLOUT: c_short = 0x004;
/// An error on the descriptor.
#[cfg(unix)]
pub const POLLERR: c_short = 0x008;
/// The peer hung up.
#[cfg(unix)]
pub const POLLHUP: c_short = 0x010;
/// Not an open descriptor.
#[cfg(unix)]
pub const POLLNVAL: c_short = 0x020;

/// `select()`'s descriptor limit: 1024 in Linux `bits/typesizes.h` (`__FD_SETSIZE`), macOS
/// `sys/_types/_fd_setsize.h` and FreeBSD `sys/select.h`. (Windows' `select` limits the
/// number of sockets, not their values; the port polls there with `WSAPoll`, see
/// `wasyncore::can_watch`.)
#[cfg(unix)]
pub const FD_SETSIZE: RawSocket = 1024;

/// `EINTR`, 4 in Linux `asm-generic/errno-base.h` and in macOS and FreeBSD `sys/errno.h`.
#[cfg(unix)]
pub const EINTR: c_int = 4;
/// `EBADF`, 9 in the same headers.
#[cfg(unix)]
pub const EBADF: c_int = 9;

/// `SIGINT`, 2 in Linux `bits/signum-generic.h` and in macOS and FreeBSD `sys/signal.h`.
#[cfg(unix)]
pub const SIGINT: c_int = 2;
/// `SIGTERM`, 15 in the same headers.
#[cfg(unix)]
pub const SIGTERM: c_int = 15;

// ---- constants per system ----

/// Linux (glibc and musl agree on these), generic architectures.
#[cfg(target_os = "linux")]
mod os {
    use std::os::raw::{c_int, c_ulong};

    /// `nfds_t`: `unsigned long int` in `sys/poll.h`.
    pub type NfdsT = c_ulong;
    /// `sa_family_t`: `unsigned short int` in `bits/sockaddr.h`; no `sin_len` field.
    pub type SaFamily = u16;
    /// `rlim_t`: `unsigned long` in glibc's `bits/resource.h` (`getrlimit`, not
    /// `getrlimit64`), `unsigned long long` in musl's `bits/alltypes.h`.
    #[cfg(not(target_env = "musl"))]
    pub type RlimT = c_ulong;
    #[cfg(target_env = "musl")]
    pub type RlimT = u64;

    /// `ESHUTDOWN`, `asm-generic/errno.h`.
    pub const ESHUTDOWN: c_int = 108;
    /// `AF_INET6`, `bits/socket.h`.
    pub const AF_INET6: c_int = 10;
    /// `SOCK_CLOEXEC` (= `O_CLOEXEC`, 02000000), `bits/socket_type.h`.
    pub const SOCK_CLOEXEC: c_int = 0o2000000;
    /// `SOL_SOCKET`, `asm-generic/socket.h`.
    pub const SOL_SOCKET: c_int = 1;
    /// `SO_REUSEADDR`, `asm-generic/socket.h`.
    pub const SO_REUSEADDR: c_int = 2;
    /// `IPV6_V6ONLY`, `linux/in6.h` (glibc `bits/in.h`).
    pub const IPV6_V6ONLY: c_int = 26;
    /// `RLIMIT_NOFILE`, `asm-generic/resource.h`.
    pub const RLIMIT_NOFILE: c_int = 7;
}

/// macOS and FreeBSD: the BSD socket numbers they share, then the few they do not.
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
mod os {
    use std::os::raw::{c_int, c_uint};

    /// `nfds_t`: `unsigned int` in `sys/poll.h` on both.
    pub type NfdsT = c_uint;
    /// `sa_family_t`: `__uint8_t` (macOS `sys/_types/_sa_family_t.h`, FreeBSD
    /// `sys/_types.h`), after a `sin_len` byte.
    pub type SaFamily = u8;

    /// `ESHUTDOWN`, `sys/errno.h`.
    pub const ESHUTDOWN: c_int = 58;
    /// `SOL_SOCKET`, `sys/socket.h`.
    pub const SOL_SOCKET: c_int = 0xffff;
    /// `SO_REUSEADDR`, `sys/socket.h`.
    pub const SO_REUSEADDR: c_int = 0x0004;
    /// `IPV6_V6ONLY`, `netinet6/in6.h`.
    pub const IPV6_V6ONLY: c_int = 27;
    /// `RLIMIT_NOFILE`, `sys/resource.h`.
    pub const RLIMIT_NOFILE: c_int = 8;

    /// `AF_INET6`, macOS `sys/socket.h`.
    #[cfg(target_os = "macos")]
    pub const AF_INET6: c_int = 30;
    /// `AF_INET6`, FreeBSD `sys/socket.h`.
    #[cfg(target_os = "freebsd")]
    pub const AF_INET6: c_int = 28;

    /// `rlim_t`: `__uint64_t` in macOS `sys/resource.h`.
    #[cfg(target_os = "macos")]
    pub type RlimT = u64;
    /// `rlim_t`: `__int64_t` (signed) in FreeBSD `sys/_types.h`.
    #[cfg(target_os = "freebsd")]
    pub type RlimT = i64;

    /// `SOCK_CLOEXEC`, FreeBSD `sys/socket.h`.
    #[cfg(target_os = "freebsd")]
    pub const SOCK_CLOEXEC: c_int = 0x1000_0000;
    /// `F_SETFD`, macOS `sys/fcntl.h`: macOS has no `SOCK_CLOEXEC`, so close-on-exec is set
    /// after `socket()`.
    #[cfg(target_os = "macos")]
    pub const F_SETFD: c_int = 2;
    /// `FD_CLOEXEC`, macOS `sys/fcntl.h`.
    #[cfg(target_os = "macos")]
    pub const FD_CLOEXEC: c_int = 1;
}

/// Windows (64-bit), from the Windows SDK's `winsock2.h`, `ws2def.h`, `ws2ipdef.h` and
/// `winerror.h` (MinGW-w64's copies have the same values).
#[cfg(windows)]
mod os {
    use std::os::raw::{c_int, c_short, c_ulong};

    /// `WSAPoll`'s count: `ULONG`.
    pub type NfdsT = c_ulong;
    /// `ADDRESS_FAMILY`: `USHORT` in `ws2def.h`; no `sin_len` field.
    pub type SaFamily = u16;
    /// The `int` that `bind` and `setsockopt` take for a length.
    pub type SockLen = c_int;

    /// `WSAPoll` events (`winsock2.h`): `POLLIN` is `POLLRDNORM | POLLRDBAND`.
    pub const POLLIN: c_short = 0x0100 | 0x0200;
    /// Urgent input. Never asked for: Winsock's `WSAPoll` fails with `WSAEINVAL` when it is.
    pub const POLLPRI: c_short = 0x0400;
    /// Room to write (`POLLWRNORM`).
    pub const POLLOUT: c_short = 0x0010;
    /// An error on the socket.
    pub const POLLERR: c_short = 0x0001;
    /// The peer hung up.
    pub const POLLHUP: c_short = 0x0002;
    /// Not a socket.
    pub const POLLNVAL: c_short = 0x0004;

    /// `WSAEINTR`, `winerror.h`: an interrupted blocking call.
    pub const EINTR: c_int = 10004;
    /// `WSAEBADF`, `winerror.h`.
    pub const EBADF: c_int = 10009;
    /// `WSAESHUTDOWN`, `winerror.h`.
    pub const ESHUTDOWN: c_int = 10058;
    /// `AF_INET6`, `ws2def.h`.
    pub const AF_INET6: c_int = 23;
    /// `SOL_SOCKET`, `winsock2.h`.
    pub const SOL_SOCKET: c_int = 0xffff;
    /// `SO_REUSEADDR`, `winsock2.h` (waitress's `set_reuse_addr` sets it on Windows too).
    pub const SO_REUSEADDR: c_int = 0x0004;
    /// `IPV6_V6ONLY`, `ws2ipdef.h` (27, as waitress's compat.py has it).
    pub const IPV6_V6ONLY: c_int = 27;

    /// `INVALID_SOCKET`, `winsock2.h`: `(SOCKET)(~0)`.
    pub const INVALID_SOCKET: usize = !0;
    /// `WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT` (`winsock2.h`): the flags std's own
    /// sockets are made with; the second keeps child processes from inheriting the socket.
    pub const WSA_FLAGS: u32 = 0x01 | 0x80;
    /// Winsock 2.2, the version `WSAStartup` asks for.
    pub const WINSOCK_VERSION: u16 = 0x0202;

    /// `SetConsoleCtrlHandler` events (`wincon.h`) that ask the process to stop: Ctrl-C,
    /// Ctrl-Break and closing the console window.
    pub const CTRL_C_EVENT: u32 = 0;
    pub const CTRL_BREAK_EVENT: u32 = 1;
    pub const CTRL_CLOSE_EVENT: u32 = 2;
}

#[cfg(unix)]
use os::{NfdsT, RlimT, SaFamily, RLIMIT_NOFILE};
#[cfg(unix)]
pub use os::{AF_INET6, ESHUTDOWN, IPV6_V6ONLY, SOL_SOCKET, SO_REUSEADDR};

/// `socklen_t`: `unsigned int` (Linux `bits/types.h`), `__uint32_t` (macOS, FreeBSD).
#[cfg(unix)]
type SockLen = u32;

#[cfg(windows)]
use os::{NfdsT, SaFamily, SockLen};
#[cfg(windows)]
pub use os::{
    AF_INET6, EBADF, EINTR, ESHUTDOWN, IPV6_V6ONLY, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT,
    POLLPRI, SOL_SOCKET, SO_REUSEADDR,
};

// ---- the C functions ----

// Unix: all in the C library std already links.
#[cfg(unix)]
extern "C" {
    fn poll(fds: *mut PollFd, nfds: NfdsT, timeout: c_int) -> c_int;
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        value: *const c_void,
        len: SockLen,
    ) -> c_int;
    fn bind(fd: c_int, addr: *const c_void, len: SockLen) -> c_int;
    fn listen(fd: c_int, backlog: c_int) -> c_int;
    #[cfg(target_os = "macos")]
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn getrlimit(resource: c_int, rlim: *mut Rlimit) -> c_int;
    fn setrlimit(resource: c_int, rlim: *const Rlimit) -> c_int;
    #[cfg(target_os = "linux")]
    #[link_name = "__errno_location"]
    fn errno_location() -> *mut c_int;
    #[cfg(any(target_os = "macos", target_os = "freebsd"))]
    #[link_name = "__error"]
    fn errno_location() -> *mut c_int;
}

// Windows: Winsock (`ws2_32`, which std links already). A `SOCKET` is a `usize`.
#[cfg(windows)]
#[link(name = "ws2_32")]
extern "system" {
    fn WSAStartup(version: u16, data: *mut WsaData) -> c_int;
    fn WSAGetLastError() -> c_int;
    #[cfg(test)]
    fn WSASetLastError(code: c_int);
    fn WSAPoll(fds: *mut PollFd, nfds: NfdsT, timeout: c_int) -> c_int;
    fn WSASocketW(
        af: c_int,
        ty: c_int,
        protocol: c_int,
        info: *mut c_void,
        group: u32,
        flags: u32,
    ) -> usize;
    fn setsockopt(s: usize, level: c_int, name: c_int, value: *const c_void, len: SockLen)
        -> c_int;
    fn bind(s: usize, addr: *const c_void, len: SockLen) -> c_int;
    fn listen(s: usize, backlog: c_int) -> c_int;
    fn send(s: usize, buf: *const c_void, len: c_int, flags: c_int) -> c_int;
}

// Windows: the console (`kernel32`, which std links already).
#[cfg(windows)]
#[link(name = "kernel32")]
extern "system" {
    fn SetConsoleCtrlHandler(handler: Option<extern "system" fn(u32) -> i32>, add: i32) -> i32;
}

// ---- errors ----

/// The error of the failed call just made: `errno` on Unix, `WSAGetLastError()` on Windows.
fn last_error() -> io::Error {
    #[cfg(unix)]
    return io::Error::last_os_error();
    // SAFETY: WSAGetLastError takes nothing and reads this thread's last error.
    #[cfg(windows)]
    return io::Error::from_raw_os_error(unsafe { WSAGetLastError() });
}

/// Run a system call until it is not interrupted by a signal, turning its `-1` (Winsock's
/// `SOCKET_ERROR`, also -1) into the `io::Error` of `errno` (`WSAGetLastError()`). Every call of this
/// file that can fail goes through here.
pub(crate) fn retry(mut call: impl FnMut() -> c_int) -> io::Result<c_int> {
    loop {
        let ret = call();
        if ret != -1 {
            return Ok(ret);
        }
        let error = last_error();
        // By code: std 1.63 has no `ErrorKind::Interrupted` for Winsock's WSAEINTR.
        if error.raw_os_error() != Some(EINTR) {
            return Err(error);
        }
    }
}

/// Set this thread's `errno`, so tests can make a call fail with a chosen error.
#[cfg(all(test, unix))]
pub(crate) fn set_errno(code: c_int) {
    // SAFETY: the errno location of the current thread is always a valid int pointer.
    unsafe { *errno_location() = code };
}

/// Set this thread's Winsock error, so tests can make a call fail with a chosen error.
#[cfg(all(test, windows))]
pub(crate) fn set_errno(code: c_int) {
    // SAFETY: WSASetLastError only stores the code for this thread.
    unsafe { WSASetLastError(code) };
}

// ---- poll ----

/// `struct pollfd` of `<poll.h>` (the same layout on every supported Unix), Winsock's
/// `WSAPOLLFD` on Windows (a `SOCKET` in place of the `int`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollFd {
    /// The descriptor.
    pub fd: RawSocket,
    /// What to wait for.
    pub events: c_short,
    /// What happened (filled in by the kernel).
    pub revents: c_short,
}

/// `poll(2)` (`WSAPoll` on Windows, waitress's `select` there) over `fds` for at most
/// `timeout` (rounded down to milliseconds, capped at `i32::MAX`); returns how many
/// descriptors have events. Interrupted calls are retried with the same timeout.
pub fn poll_fds(fds: &mut [PollFd], timeout: Duration) -> io::Result<usize> {
    let millis = poll_millis(timeout);
    let nfds = NfdsT::try_from(fds.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"))?;
    #[cfg(unix)]
    // SAFETY: `fds` is an exclusively borrowed slice of `repr(C)` pollfd structs and `nfds` is
    // its exact length, so the kernel reads and writes only inside it.
    let ready = retry(|| unsafe { poll(fds.as_mut_ptr(), nfds, millis) })?;
    #[cfg(windows)]
    // SAFETY: as for poll(2): a slice of `repr(C)` WSAPOLLFD structs and its exact length.
    let ready = retry(|| unsafe { WSAPoll(fds.as_mut_ptr(), nfds, millis) })?;
    Ok(usize::try_from(ready).unwrap_or(0))
}

/// A timeout in whole milliseconds, as `poll` and `epoll_wait` take it: rounded down, capped
/// at `i32::MAX`.
fn poll_millis(timeout: Duration) -> c_int {
    c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX)
}

// ---- sockets ----

/// A new TCP socket, IPv6 or IPv4, not inherited by child processes (`SOCK_CLOEXEC` where
/// `socket()` takes it, `FD_CLOEXEC` right after on macOS), closed on drop.
#[cfg(unix)]
pub fn tcp_socket(ipv6: bool) -> io::Result<OwnedFd> {
    let domain = if ipv6 { AF_INET6 } else { AF_INET };
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    let ty = SOCK_STREAM | os::SOCK_CLOEXEC;
    #[cfg(target_os = "macos")]
    let ty = SOCK_STREAM;
    // SAFETY: socket(2) takes no pointers.
    let fd = retry(|| unsafe { socket(domain, ty, 0) })?;
    // SAFETY: `fd` was just returned by socket(2): an open descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    #[cfg(target_os = "macos")]
    {
        // SAFETY: fcntl(F_SETFD) takes an int argument and no pointers; `owned` is open.
        retry(|| unsafe { fcntl(owned.as_raw_fd(), os::F_SETFD, os::FD_CLOEXEC) })?;
    }
    Ok(owned)
}

/// `WSADATA` (`winsock2.h`), which `WSAStartup` fills in; nothing here reads it, so it is
/// room enough for the 64-bit layout (408 bytes), suitably aligned.
#[cfg(windows)]
#[repr(C, align(8))]
struct WsaData([u8; 512]);

/// A new TCP socket, IPv6 or IPv4, not inherited by child processes, closed on drop. Winsock
/// must be started before the first socket call of a process; std does that for its own
/// sockets, this does it for ours (it is counted, so once more is harmless).
#[cfg(windows)]
pub fn tcp_socket(ipv6: bool) -> io::Result<OwnedSocket> {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let mut data = WsaData([0; 512]);
        // SAFETY: `data` is a live buffer larger than WSADATA, which the call fills in. A
        // failure shows again as the error of WSASocketW below.
        unsafe { WSAStartup(os::WINSOCK_VERSION, &mut data) };
    });
    let domain = if ipv6 { AF_INET6 } else { AF_INET };
    // SAFETY: no protocol info (a null pointer is allowed), no group, plain flags.
    let socket = unsafe {
        WSASocketW(
            domain,
            SOCK_STREAM,
            0,
            std::ptr::null_mut(),
            0,
            os::WSA_FLAGS,
        )
    };
    if socket == os::INVALID_SOCKET {
        return Err(last_error());
    }
    let raw = RawSocket::try_from(socket).expect("a SOCKET fits a RawSocket");
    // SAFETY: `raw` was just returned by WSASocketW: an open socket that nothing else owns.
    Ok(unsafe { OwnedSocket::from_raw_socket(raw) })
}

/// The `SOCKET` (or descriptor) of `socket` as the C declarations above take it.
#[cfg(unix)]
fn c_socket(socket: &impl AsSocket) -> c_int {
    raw_socket(socket)
}
/// The `SOCKET` (or descriptor) of `socket` as the C declarations above take it.
#[cfg(windows)]
fn c_socket(socket: &impl AsSocket) -> usize {
    usize::try_from(raw_socket(socket)).expect("64-bit Windows: a SOCKET is a usize")
}

/// `setsockopt` with an int value (`SO_REUSEADDR`, `IPV6_V6ONLY`, `TCP_NODELAY`, …).
pub fn set_int_option(
    socket: &impl AsSocket,
    level: c_int,
    name: c_int,
    value: c_int,
) -> io::Result<()> {
    let fd = c_socket(socket);
    let len = SockLen::try_from(std::mem::size_of::<c_int>()).expect("an int fits socklen_t");
    // SAFETY: the value pointer refers to a live c_int for the duration of the call and `len`
    // is exactly its size; `fd` is borrowed open for the call.
    retry(|| unsafe { setsockopt(fd, level, name, (&value as *const c_int).cast(), len) })?;
    Ok(())
}

/// `struct sockaddr_in` (`netinet/in.h`, Windows `ws2def.h`); the BSDs start it with a length
/// byte.
#[repr(C)]
struct SockaddrIn {
    #[cfg(any(target_os = "macos", target_os = "freebsd"))]
    sin_len: u8,
    sin_family: SaFamily,
    sin_port: u16,
    sin_addr: [u8; 4],
    sin_zero: [u8; 8],
}

/// `struct sockaddr_in6` (`netinet/in.h`, `netinet6/in6.h`, Windows `ws2ipdef.h`).
#[repr(C)]
struct SockaddrIn6 {
    #[cfg(any(target_os = "macos", target_os = "freebsd"))]
    sin6_len: u8,
    sin6_family: SaFamily,
    sin6_port: u16,
    sin6_flowinfo: u32,
    sin6_addr: [u8; 16],
    sin6_scope_id: u32,
}

/// A socket address in the C layout `bind(2)` reads.
enum RawSockaddr {
    V4(SockaddrIn),
    V6(SockaddrIn6),
}

impl RawSockaddr {
    fn new(addr: &SocketAddr) -> RawSockaddr {
        // The length bytes of the BSDs hold the struct sizes, 16 and 28.
        match addr {
            SocketAddr::V4(a) => RawSockaddr::V4(SockaddrIn {
                #[cfg(any(target_os = "macos", target_os = "freebsd"))]
                sin_len: std::mem::size_of::<SockaddrIn>() as u8,
                sin_family: AF_INET as SaFamily,
                sin_port: a.port().to_be(),
                sin_addr: a.ip().octets(),
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => RawSockaddr::V6(SockaddrIn6 {
                #[cfg(any(target_os = "macos", target_os = "freebsd"))]
                sin6_len: std::mem::size_of::<SockaddrIn6>() as u8,
                sin6_family: AF_INET6 as SaFamily,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: a.ip().octets(),
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    /// The pointer and length to hand to the kernel; valid while `self` lives.
    fn as_ptr_len(&self) -> (*const c_void, SockLen) {
        match self {
            RawSockaddr::V4(raw) => (
                (raw as *const SockaddrIn).cast(),
                std::mem::size_of::<SockaddrIn>() as SockLen,
            ),
            RawSockaddr::V6(raw) => (
                (raw as *const SockaddrIn6).cast(),
                std::mem::size_of::<SockaddrIn6>() as SockLen,
            ),
        }
    }
}

/// `bind(2)` a socket to an IPv4 or IPv6 address.
pub fn bind_to(socket: &impl AsSocket, addr: &SocketAddr) -> io::Result<()> {
    let fd = c_socket(socket);
    let raw = RawSockaddr::new(addr);
    let (ptr, len) = raw.as_ptr_len();
    // SAFETY: `ptr` points into `raw`, a sockaddr in the layout of this system that lives
    // across the call, and `len` is the size of that struct.
    retry(|| unsafe { bind(fd, ptr, len) })?;
    Ok(())
}

/// `listen(2)` with `backlog` (on a listening socket it sets the backlog again).
pub fn listen_on(socket: &impl AsSocket, backlog: c_int) -> io::Result<()> {
    let fd = c_socket(socket);
    // SAFETY: listen(2) takes no pointers; `fd` is borrowed open for the call.
    retry(|| unsafe { listen(fd, backlog) })?;
    Ok(())
}

// ---- signals ----

/// The descriptor the signal handler writes to; -1 until [`write_byte_on_signals`].
#[cfg(unix)]
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// The handler: one byte to the pipe, nothing else (write(2) is async-signal-safe). `errno` is
/// put back afterwards, so the interrupted code never sees the handler's error.
#[cfg(unix)]
extern "C" fn write_signal_byte(_signum: c_int) {
    write_byte_keeping_errno(SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed));
}

/// The body of the handler: write one byte to `fd` (if it is one), leaving `errno` as it was.
#[cfg(unix)]
fn write_byte_keeping_errno(fd: RawSocket) {
    if fd < 0 {
        return;
    }
    // SAFETY: the errno location of the current thread is always a valid int pointer.
    let saved = unsafe { *errno_location() };
    let byte = 1u8;
    // SAFETY: the pointer is to a live local byte and the count is 1. A full pipe (a byte is
    // already waiting) or a closed descriptor only makes it fail, harmlessly.
    unsafe { write(fd, (&byte as *const u8).cast(), 1) };
    // SAFETY: as above.
    unsafe { *errno_location() = saved };
}

/// From now on each of `signals` writes one byte to `pipe` (made non-blocking here), which
/// the caller reads from the other end on an ordinary thread. The pipe stays open for the
/// life of the process: a handler may run at any moment. A second call replaces the pipe; the
/// first one stays open too (closing it under a running handler would race).
#[cfg(unix)]
pub fn write_byte_on_signals(signals: &[c_int], pipe: UnixStream) -> io::Result<()> {
    pipe.set_nonblocking(true)?;
    SIGNAL_PIPE.store(pipe.into_raw_fd(), std::sync::atomic::Ordering::SeqCst);
    for &signum in signals {
        // SAFETY: `write_signal_byte` is an `extern "C" fn(c_int)` that only performs an
        // async-signal-safe write(2) and restores errno; installing it touches no memory of
        // ours.
        let previous = unsafe { signal(signum, write_signal_byte) };
        if previous == usize::MAX {
            // SIG_ERR
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The socket the console handler writes to; `INVALID_SOCKET` until
/// [`write_byte_on_console_events`].
#[cfg(windows)]
static CONSOLE_PIPE: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(os::INVALID_SOCKET);

/// The console control handler. Windows runs it on a thread of its own (not in a signal
/// context): one byte to the socket, then "handled" for the events that ask to stop, so the
/// process is not ended at once. For the other events (log-off, shutdown: a service's
/// business) the next handler, the default one, decides.
#[cfg(windows)]
extern "system" fn write_console_byte(event: u32) -> i32 {
    if !matches!(
        event,
        os::CTRL_C_EVENT | os::CTRL_BREAK_EVENT | os::CTRL_CLOSE_EVENT
    ) {
        return 0;
    }
    let socket = CONSOLE_PIPE.load(std::sync::atomic::Ordering::SeqCst);
    if socket != os::INVALID_SOCKET {
        let byte = 1u8;
        // SAFETY: the pointer is to a live local byte and the length is 1; the socket stays
        // open for the life of the process. A full buffer only makes the send fail.
        unsafe { send(socket, (&byte as *const u8).cast(), 1, 0) };
    }
    1
}

/// From now on Ctrl-C, Ctrl-Break and closing the console window (what stops a console
/// program on Windows, where SIGINT and SIGTERM do not exist) write one byte to `pipe` (one
/// end of a connected socket pair, made non-blocking here), which the caller reads from the
/// other end. As on Unix, the socket stays open for the life of the process. When the
/// console window closes, Windows ends the process as soon as the handler has returned,
/// whatever the server is doing.
#[cfg(windows)]
pub fn write_byte_on_console_events(pipe: std::net::TcpStream) -> io::Result<()> {
    use std::os::windows::io::IntoRawSocket;
    pipe.set_nonblocking(true)?;
    let socket = usize::try_from(pipe.into_raw_socket()).expect("a SOCKET is a usize");
    CONSOLE_PIPE.store(socket, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: `write_console_byte` is an `extern "system" fn(u32) -> i32` that only sends one
    // byte on a socket that is never closed; adding it touches no memory of ours.
    if unsafe { SetConsoleCtrlHandler(Some(write_console_byte), 1) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---- resource limits ----

/// `struct rlimit` of `sys/resource.h`.
#[cfg(unix)]
#[repr(C)]
struct Rlimit {
    rlim_cur: RlimT,
    rlim_max: RlimT,
}

#[cfg(unix)]
fn nofile_limit() -> io::Result<Rlimit> {
    let mut limit = Rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live, exclusively borrowed struct rlimit for the kernel to fill.
    retry(|| unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) })?;
    Ok(limit)
}

/// Raise this process's soft limit of open descriptors (`RLIMIT_NOFILE`) to `wanted`, or to
/// the hard limit if that is lower; never lowers it. Returns the soft limit now in force.
/// (Windows has no such limit on sockets.)
// `rlim_t` is `u64` on some systems only: the conversions are not useless everywhere.
#[allow(clippy::useless_conversion)]
#[cfg(unix)]
pub fn raise_open_files_limit(wanted: u64) -> io::Result<u64> {
    let mut limit = nofile_limit()?;
    let as_u64 = |value: RlimT| u64::try_from(value).unwrap_or(u64::MAX);
    let current = as_u64(limit.rlim_cur);
    if current >= wanted {
        return Ok(current);
    }
    let target = wanted.min(as_u64(limit.rlim_max));
    limit.rlim_cur = RlimT::try_from(target).unwrap_or(limit.rlim_max);
    // SAFETY: `limit` is a live struct rlimit that the kernel only reads.
    retry(|| unsafe { setrlimit(RLIMIT_NOFILE, &limit) })?;
    Ok(as_u64(nofile_limit()?.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    /// Two connected TCP sockets over loopback (what exists on every supported system).
    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    #[test]
    fn struct_sizes_match_the_c_headers() {
        // pollfd holds an int; WSAPOLLFD a 64-bit SOCKET, padded.
        let pollfd = if cfg!(windows) { 16 } else { 8 };
        assert_eq!(std::mem::size_of::<PollFd>(), pollfd);
        assert_eq!(std::mem::size_of::<SockaddrIn>(), 16);
        assert_eq!(std::mem::size_of::<SockaddrIn6>(), 28);
    }

    #[test]
    fn poll_reports_a_readable_socket() {
        let (mut a, b) = tcp_pair();
        std::io::Write::write_all(&mut a, b"x").unwrap();
        let mut fds = [PollFd {
            fd: raw_socket(&b),
            events: POLLIN,
            revents: 0,
        }];
        assert_eq!(poll_fds(&mut fds, Duration::from_secs(5)).unwrap(), 1);
        assert_ne!(fds[0].revents & POLLIN, 0);
        let mut quiet = [PollFd {
            fd: raw_socket(&a),
            events: POLLIN,
            revents: 0,
        }];
        assert_eq!(poll_fds(&mut quiet, Duration::from_millis(1)).unwrap(), 0);
    }

    #[test]
    fn tcp_sockets_bind_listen_and_are_close_on_exec() {
        for (ipv6, address) in [(false, "127.0.0.1:0"), (true, "[::1]:0")] {
            let addr: SocketAddr = address.parse().unwrap();
            let fd = tcp_socket(ipv6).unwrap();
            set_int_option(&fd, SOL_SOCKET, SO_REUSEADDR, 1).unwrap();
            if ipv6 {
                set_int_option(&fd, IPPROTO_IPV6, IPV6_V6ONLY, 1).unwrap();
            }
            bind_to(&fd, &addr).unwrap_or_else(|e| panic!("{address} (needs IPv6 loopback): {e}"));
            listen_on(&fd, 5).unwrap();
            let listener = TcpListener::from(fd);
            let port = listener.local_addr().unwrap().port();
            assert_ne!(port, 0);
            let target = SocketAddr::new(addr.ip(), port);
            let _client = TcpStream::connect(target).unwrap();
            listener.accept().unwrap();
            #[cfg(target_os = "linux")]
            {
                let status =
                    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", listener.as_raw_fd()))
                        .unwrap();
                let flags = status
                    .lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
                    .unwrap();
                assert_ne!(flags & 0o2000000, 0, "O_CLOEXEC is set");
            }
        }
    }

    #[test]
    fn system_errors_become_io_errors() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // A UDP socket has no TCP options: the system refuses, and the error carries its code.
        let err = set_int_option(&a, IPPROTO_TCP, TCP_NODELAY, 1).unwrap_err();
        assert!(err.raw_os_error().is_some(), "{err}");
        // It is bound already: binding it again fails the same way.
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(bind_to(&a, &addr).unwrap_err().raw_os_error().is_some());
    }

    #[test]
    #[cfg(unix)]
    fn the_signal_handler_keeps_errno() {
        let (mut reader, writer) = UnixStream::pair().unwrap();
        // The write fails (a bad descriptor), then succeeds: errno is 1234 after both.
        for fd in [RawSocket::MAX, writer.as_raw_fd()] {
            // SAFETY: the errno location of this thread is a valid int pointer.
            unsafe { *errno_location() = 1234 };
            write_byte_keeping_errno(fd);
            // SAFETY: as above.
            let after = unsafe { *errno_location() };
            assert_eq!(after, 1234);
        }
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).unwrap();
        assert_eq!(byte, [1]);
    }

    #[test]
    #[cfg(windows)]
    fn the_console_handler_writes_a_byte_for_the_stop_events_only() {
        let (mut reader, writer) = tcp_pair();
        write_byte_on_console_events(writer).unwrap();
        assert_eq!(write_console_byte(os::CTRL_C_EVENT), 1, "handled");
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).unwrap();
        assert_eq!(byte, [1]);
        // CTRL_LOGOFF_EVENT (5) is left to the default handler.
        assert_eq!(write_console_byte(5), 0);
    }

    #[test]
    #[cfg(unix)]
    #[allow(clippy::useless_conversion)] // as in raise_open_files_limit
    fn raising_the_open_files_limit_never_lowers_it() {
        let before = nofile_limit().unwrap();
        let current = u64::try_from(before.rlim_cur).unwrap_or(u64::MAX);
        assert_eq!(raise_open_files_limit(1).unwrap(), current);
        let raised = raise_open_files_limit(current.saturating_add(1)).unwrap();
        assert!(raised >= current);
    }
}

// ---- buffers ----

/// What `buffers::anonymous_tempfile` needs to create a temporary file that never has a name:
/// `open(dir, O_TMPFILE | O_RDWR, 0600)` (Linux 3.11). `O_TMPFILE` is `None` on the
/// architectures whose value is not listed here; the caller then falls back to a random name,
/// removed at once.
#[cfg(target_os = "linux")]
pub mod tmpfile {
    /// `__O_TMPFILE | O_DIRECTORY` from `<asm-generic/fcntl.h>` (`O_DIRECTORY` is `0o200000`).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64", target_arch = "riscv64"))]
    pub const O_TMPFILE: Option<i32> = Some(0o20000000 | 0o200000);
    /// `__O_TMPFILE | O_DIRECTORY`: arm's and arm64's `<asm/fcntl.h>` make `O_DIRECTORY`
    /// `0o40000`.
    #[cfg(any(target_arch = "arm", target_arch = "aarch64"))]
    pub const O_TMPFILE: Option<i32> = Some(0o20000000 | 0o40000);
    /// Not known for this architecture.
    #[cfg(not(any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "riscv64",
        target_arch = "arm",
        target_arch = "aarch64"
    )))]
    pub const O_TMPFILE: Option<i32> = None;
    /// How a kernel or file system without `O_TMPFILE` refuses it (`<asm-generic/errno-base.h>`,
    /// `<asm-generic/errno.h>`, the values of every architecture above): an old kernel opens
    /// the directory itself (`EISDIR`) or rejects the flags (`EINVAL`); a file system without
    /// support answers `EOPNOTSUPP`.
    pub const O_TMPFILE_UNSUPPORTED: [i32; 3] = [EISDIR, EINVAL, EOPNOTSUPP];
    const EISDIR: i32 = 21;
    const EINVAL: i32 = 22;
    const EOPNOTSUPP: i32 = 95;
}

/// What `buffers::anonymous_tempfile` needs on Windows, from `winnt.h` and `winbase.h`: the
/// file is deleted when its last handle closes, and kept in memory where the cache allows.
#[cfg(windows)]
pub mod tmpfile {
    /// `FILE_FLAG_DELETE_ON_CLOSE`, `winbase.h`.
    pub const FILE_FLAG_DELETE_ON_CLOSE: u32 = 0x0400_0000;
    /// `FILE_ATTRIBUTE_TEMPORARY`, `winnt.h`.
    pub const FILE_ATTRIBUTE_TEMPORARY: u32 = 0x0000_0100;
}

// ---- epoll ----

/// Linux's `epoll(7)`, for the event loop's `asyncore_use_epoll` backend
/// (`wasyncore::EpollSelector`): an interest set kept in the kernel, so a round costs what is
/// ready rather than what is open. Level-triggered only, as `poll(2)` is.
#[cfg(target_os = "linux")]
pub mod epoll {
    use super::{retry, RawSocket};
    use std::io;
    use std::os::raw::c_int;
    use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    // The event bits of `<linux/eventpoll.h>` (`<sys/epoll.h>`): the same values as `POLL*`.
    /// `EPOLLIN`: input is waiting.
    pub const EPOLLIN: u32 = 0x001;
    /// `EPOLLPRI`: urgent data.
    pub const EPOLLPRI: u32 = 0x002;
    /// `EPOLLOUT`: room to write.
    pub const EPOLLOUT: u32 = 0x004;
    /// `EPOLLERR`: an error; always reported while registered.
    pub const EPOLLERR: u32 = 0x008;
    /// `EPOLLHUP`: hang-up; always reported while registered.
    pub const EPOLLHUP: u32 = 0x010;

    /// `EPOLL_CLOEXEC` (= `O_CLOEXEC`, 02000000 on the generic and x86 ABIs), `<bits/epoll.h>`.
    const EPOLL_CLOEXEC: c_int = 0o2000000;
    /// `EPOLL_CTL_ADD`, `EPOLL_CTL_DEL`, `EPOLL_CTL_MOD`, `<linux/eventpoll.h>`.
    const EPOLL_CTL_ADD: c_int = 1;
    const EPOLL_CTL_DEL: c_int = 2;
    const EPOLL_CTL_MOD: c_int = 3;
    /// `ENOENT`, `<asm-generic/errno-base.h>`: `epoll_ctl`'s "not registered".
    pub const ENOENT: c_int = 2;
    /// `EEXIST`, `<asm-generic/errno-base.h>`: `epoll_ctl`'s "already registered".
    pub const EEXIST: c_int = 17;

    /// `struct epoll_event` of `<linux/eventpoll.h>`: `__u32 events; __u64 data;`, packed on
    /// x86_64 only (`EPOLL_PACKED` there; glibc's `__EPOLL_PACKED` in `<bits/epoll.h>`), so 12
    /// bytes there and 16 elsewhere. `data` holds the descriptor it was registered for.
    #[cfg_attr(target_arch = "x86_64", repr(C, packed))]
    #[cfg_attr(not(target_arch = "x86_64"), repr(C))]
    #[derive(Clone, Copy, Default)]
    pub struct EpollEvent {
        /// `EPOLL*` bits: what to wait for, or what happened.
        pub events: u32,
        /// The caller's word (here: the descriptor).
        pub data: u64,
    }

    extern "C" {
        fn epoll_create1(flags: c_int) -> c_int;
        fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut EpollEvent) -> c_int;
        fn epoll_wait(
            epfd: c_int,
            events: *mut EpollEvent,
            maxevents: c_int,
            timeout: c_int,
        ) -> c_int;
    }

    /// An epoll instance, closed on drop and not inherited by child processes.
    #[derive(Debug)]
    pub struct Epoll {
        fd: OwnedFd,
    }

    impl Epoll {
        /// `epoll_create1(EPOLL_CLOEXEC)`.
        pub fn new() -> io::Result<Epoll> {
            // SAFETY: epoll_create1 takes a flag word and touches no memory of ours.
            let fd = retry(|| unsafe { epoll_create1(EPOLL_CLOEXEC) })?;
            // SAFETY: `fd` was just returned by epoll_create1, is open, and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            Ok(Epoll { fd })
        }

        fn ctl(&self, op: c_int, fd: RawSocket, events: u32) -> io::Result<()> {
            let mut event = EpollEvent {
                events,
                data: u64::try_from(fd).unwrap_or(u64::MAX),
            };
            // SAFETY: `event` is a live, exclusively borrowed epoll_event of the kernel's layout
            // (the kernel only reads it; DEL ignores it); the descriptors are plain integers and
            // a bad one is an error, not undefined behaviour.
            retry(|| unsafe { epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) })?;
            Ok(())
        }

        /// `EPOLL_CTL_ADD`: watch `fd` for `events` (level-triggered).
        pub fn add(&self, fd: RawSocket, events: u32) -> io::Result<()> {
            self.ctl(EPOLL_CTL_ADD, fd, events)
        }

        /// `EPOLL_CTL_MOD`: watch the registered `fd` for `events` instead.
        pub fn modify(&self, fd: RawSocket, events: u32) -> io::Result<()> {
            self.ctl(EPOLL_CTL_MOD, fd, events)
        }

        /// `EPOLL_CTL_DEL`: stop watching `fd`.
        pub fn delete(&self, fd: RawSocket) -> io::Result<()> {
            self.ctl(EPOLL_CTL_DEL, fd, 0)
        }

        /// `epoll_wait(2)`: fill the front of `events` with what is ready, waiting at most
        /// `timeout` (as [`super::poll_fds`] rounds it); returns how many were filled.
        /// Interrupted calls are retried with the same timeout.
        pub fn wait(&self, events: &mut [EpollEvent], timeout: Duration) -> io::Result<usize> {
            let millis = super::poll_millis(timeout);
            let max = c_int::try_from(events.len()).unwrap_or(c_int::MAX);
            // SAFETY: `events` is an exclusively borrowed slice of epoll_event structs of the
            // kernel's layout and `max` is at most its length, so the kernel writes inside it.
            let ready = retry(|| unsafe {
                epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, millis)
            })?;
            Ok(usize::try_from(ready).unwrap_or(0))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::io::Write;
        use std::os::unix::net::UnixStream;

        #[test]
        fn epoll_event_has_the_kernel_layout() {
            let size = if cfg!(target_arch = "x86_64") { 12 } else { 16 };
            assert_eq!(std::mem::size_of::<EpollEvent>(), size);
        }

        #[test]
        fn epoll_reports_what_is_registered_and_nothing_after_delete() {
            let epoll = Epoll::new().unwrap();
            let (mut a, b) = UnixStream::pair().unwrap();
            let fd = b.as_raw_fd();
            let mut events = [EpollEvent::default(); 4];
            epoll.add(fd, EPOLLIN).unwrap();
            let err = epoll.add(fd, EPOLLIN).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(EEXIST));
            assert_eq!(epoll.wait(&mut events, Duration::ZERO).unwrap(), 0);
            a.write_all(b"x").unwrap();
            assert_eq!(epoll.wait(&mut events, Duration::from_secs(30)).unwrap(), 1);
            let (bits, data) = (events[0].events, events[0].data);
            assert_eq!((bits, data), (EPOLLIN, fd as u64));
            // MOD to "room to write" only: the waiting input no longer shows.
            epoll.modify(fd, EPOLLOUT).unwrap();
            assert_eq!(epoll.wait(&mut events, Duration::ZERO).unwrap(), 1);
            let bits = events[0].events;
            assert_eq!(bits, EPOLLOUT);
            epoll.delete(fd).unwrap();
            assert_eq!(epoll.wait(&mut events, Duration::ZERO).unwrap(), 0);
            let err = epoll.delete(fd).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(ENOENT));
        }
    }
}

// ---- socket activation ----

/// What `socket_activation` needs to take over the listening sockets a service manager passed
/// in (systemd's `sd_listen_fds` protocol): check that each descriptor is a stream socket in
/// the listening state, learn its family, mark it close-on-exec, and own it. Unix only.
#[cfg(unix)]
pub mod activation {
    use super::retry;
    use std::io;
    use std::net::TcpListener;
    use std::os::raw::{c_int, c_void};
    use std::os::unix::io::{FromRawFd, OwnedFd, RawFd};
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Linux: `asm-generic/socket.h` (`SOL_SOCKET`, `SO_TYPE`, `SO_ACCEPTCONN`),
    /// `bits/socket.h` (`AF_UNIX`, `SOCK_STREAM`), `asm-generic/fcntl.h` (`F_SETFD`,
    /// `FD_CLOEXEC`), `asm-generic/errno.h` (`ENOTSOCK`).
    #[cfg(target_os = "linux")]
    mod os {
        use std::os::raw::c_int;
        pub const SO_TYPE: c_int = 3;
        pub const SO_ACCEPTCONN: c_int = 30;
        pub const ENOTSOCK: c_int = 88;
    }

    /// macOS and FreeBSD: `sys/socket.h`, `sys/errno.h`.
    #[cfg(any(target_os = "macos", target_os = "freebsd"))]
    mod os {
        use std::os::raw::c_int;
        pub const SO_TYPE: c_int = 0x1008;
        pub const SO_ACCEPTCONN: c_int = 0x0002;
        pub const ENOTSOCK: c_int = 38;
    }

    const AF_UNIX: c_int = 1;
    const F_SETFD: c_int = 2;
    const FD_CLOEXEC: c_int = 1;

    extern "C" {
        fn getsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *mut c_void,
            len: *mut u32,
        ) -> c_int;
        fn getsockname(fd: c_int, addr: *mut c_void, len: *mut u32) -> c_int;
        fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    }

    /// A passed-in listening socket, owned.
    #[derive(Debug)]
    pub enum Inherited {
        /// An IPv4 or IPv6 stream socket.
        Tcp(TcpListener),
        /// A Unix-domain stream socket.
        Unix(UnixListener),
    }

    /// `getsockopt` for an int option of `SOL_SOCKET`.
    fn socket_int_option(fd: RawFd, name: c_int) -> io::Result<c_int> {
        let mut value: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as u32;
        // SAFETY: `value` and `len` are live locals for the call and `len` holds the size of
        // `value`; a descriptor that is not open makes the call fail with EBADF, nothing more.
        retry(|| unsafe {
            getsockopt(
                fd,
                super::SOL_SOCKET,
                name,
                (&mut value as *mut c_int).cast(),
                &mut len,
            )
        })?;
        Ok(value)
    }

    /// The address family of a socket, from `getsockname`.
    fn socket_family(fd: RawFd) -> io::Result<c_int> {
        // `struct sockaddr_storage`: 128 bytes, aligned for any address.
        let mut storage = [0u64; 16];
        let mut len = std::mem::size_of_val(&storage) as u32;
        // SAFETY: `storage` is a live 128-byte buffer and `len` says so; the kernel writes at
        // most `len` bytes into it.
        retry(|| unsafe { getsockname(fd, storage.as_mut_ptr().cast(), &mut len) })?;
        let bytes = storage[0].to_ne_bytes();
        // Linux starts with a 16-bit family; the BSDs with a length byte, then an 8-bit one.
        #[cfg(target_os = "linux")]
        let family = c_int::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        #[cfg(any(target_os = "macos", target_os = "freebsd"))]
        let family = c_int::from(bytes[1]);
        Ok(family)
    }

    /// Set only once: the passed descriptors are owned by one set of values per process.
    static TAKEN: AtomicBool = AtomicBool::new(false);

    /// Take ownership of the `count` descriptors from `first` on, as the `sd_listen_fds`
    /// protocol passes them: each is checked to be a listening stream socket, made
    /// close-on-exec, and returned owned; one that is not is an error naming it. Only the
    /// first call in a process takes anything (later ones give an error): the caller has
    /// checked that `LISTEN_PID` names this process, and the descriptors can be owned once.
    pub fn take_listen_fds(first: RawFd, count: usize) -> io::Result<Vec<Inherited>> {
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                "the sockets passed by the service manager were already taken",
            ));
        }
        let mut taken = Vec::with_capacity(count);
        for fd in (0..count).map(|i| first + i as RawFd) {
            taken.push(take_one(fd)?);
        }
        Ok(taken)
    }

    /// Check and own one passed descriptor.
    fn take_one(fd: RawFd) -> io::Result<Inherited> {
        let not = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {fd} passed by the service manager is {what}"),
            )
        };
        let ty = match socket_int_option(fd, os::SO_TYPE) {
            Ok(ty) => ty,
            Err(e) if e.raw_os_error() == Some(os::ENOTSOCK) => return Err(not("not a socket")),
            Err(e) if e.raw_os_error() == Some(super::EBADF) => return Err(not("not open")),
            Err(e) => return Err(e),
        };
        if ty != super::SOCK_STREAM {
            return Err(not(
                "not a stream socket (a datagram socket? use ListenStream=)",
            ));
        }
        if socket_int_option(fd, os::SO_ACCEPTCONN)? == 0 {
            return Err(not("a stream socket that is not listening"));
        }
        let family = socket_family(fd)?;
        if family != super::AF_INET && family != super::AF_INET6 && family != AF_UNIX {
            return Err(not(&format!(
                "a socket of address family {family}, not TCP or Unix"
            )));
        }
        // SAFETY: fcntl(F_SETFD) takes an int argument and no pointers; `fd` is open (the
        // getsockopt calls above succeeded on it).
        retry(|| unsafe { fcntl(fd, F_SETFD, FD_CLOEXEC) })?;
        // SAFETY: `fd` is an open socket that the service manager passed to this process for
        // it to own (the sd_listen_fds protocol); `TAKEN` lets this happen once per process,
        // so no other owner of it exists in this program.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(if family == AF_UNIX {
            Inherited::Unix(UnixListener::from(owned))
        } else {
            Inherited::Tcp(TcpListener::from(owned))
        })
    }
}
