//! systemd socket activation (not in waitress): serve the listening sockets a service manager
//! passed in, instead of binding.
//!
//! The protocol is systemd's `sd_listen_fds`: `LISTEN_PID` names the process the sockets are
//! for, `LISTEN_FDS` says how many there are, starting at descriptor 3, and `LISTEN_FDNAMES`
//! optionally names them (`:`-separated). [`listen_fds`] reads the three variables, removes
//! them (so a child process does not take the sockets for its own), checks each descriptor is
//! a listening stream socket, and returns them as [`PreboundSocket`]s for
//! [`Adjustments::with_sockets`](crate::Adjustments::with_sockets) — waitress's `sockets`
//! setting. `waitress-serve` does this by itself at start; a program of its own does:
//!
//! ```no_run
//! let sockets = waitress::socket_activation::listen_fds().expect("usable sockets");
//! let adj = if sockets.is_empty() {
//!     waitress::Adjustments::new([("listen", "127.0.0.1:8080")])
//! } else {
//!     waitress::Adjustments::with_sockets(Vec::<(&str, &str)>::new(), sockets)
//! };
//! # let _ = adj;
//! ```

use std::fmt;

use crate::adjustments::PreboundSocket;

/// The first descriptor the protocol passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;

/// Why the passed sockets cannot be served.
#[derive(Debug)]
pub struct ActivationError(String);

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socket activation: {}", self.0)
    }
}

impl std::error::Error for ActivationError {}

/// How many sockets the variables pass to the process `my_pid`: 0 when `LISTEN_PID` is absent
/// or names another process (the variables were inherited from a parent), as `sd_listen_fds`
/// decides.
pub fn passed_count(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    my_pid: u32,
) -> Result<usize, ActivationError> {
    let pid = match listen_pid {
        Some(pid) => pid,
        None => return Ok(0),
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| ActivationError(format!("LISTEN_PID={pid:?} is not a process id")))?;
    if pid != my_pid {
        return Ok(0);
    }
    let fds = match listen_fds {
        Some(fds) => fds,
        None => return Ok(0),
    };
    let count: usize = fds
        .trim()
        .parse()
        .map_err(|_| ActivationError(format!("LISTEN_FDS={fds:?} is not a count")))?;
    if let Some(names) = listen_fdnames {
        let named = names.split(':').count();
        if named != count {
            return Err(ActivationError(format!(
                "LISTEN_FDNAMES names {named} socket(s) but LISTEN_FDS passes {count}"
            )));
        }
    }
    Ok(count)
}

/// The listening sockets passed to this process, or none when it was not socket-activated.
/// The `LISTEN_*` variables are removed either way, as `sd_listen_fds(1)` does. A descriptor
/// that is not a listening stream socket (TCP or Unix) is an error naming it. Only the first
/// call in a process can return sockets.
pub fn listen_fds() -> Result<Vec<PreboundSocket>, ActivationError> {
    let var = |name: &str| std::env::var(name).ok();
    let count = passed_count(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    );
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let count = count?;
    if count == 0 {
        return Ok(Vec::new());
    }
    take(count)
}

/// Own the `count` passed descriptors.
#[cfg(unix)]
fn take(count: usize) -> Result<Vec<PreboundSocket>, ActivationError> {
    use crate::compat::activation::{take_listen_fds, Inherited};
    let taken =
        take_listen_fds(LISTEN_FDS_START, count).map_err(|e| ActivationError(e.to_string()))?;
    Ok(taken
        .into_iter()
        .map(|socket| match socket {
            Inherited::Tcp(listener) => PreboundSocket::Tcp(listener),
            Inherited::Unix(listener) => PreboundSocket::Unix(listener),
        })
        .collect())
}

/// The protocol passes Unix descriptors; Windows has no such thing.
#[cfg(not(unix))]
fn take(_count: usize) -> Result<Vec<PreboundSocket>, ActivationError> {
    Err(ActivationError(
        "LISTEN_FDS passes Unix descriptors; this system has none".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    //! Not a port: waitress has no socket activation. The descriptors themselves are taken in
    //! tests/socket_activation.rs, under the real `systemd-socket-activate`.

    use super::*;

    #[test]
    fn the_variables_decide_the_count() {
        let me = 4242;
        assert_eq!(passed_count(None, Some("2"), None, me).unwrap(), 0);
        assert_eq!(passed_count(Some("4243"), Some("2"), None, me).unwrap(), 0);
        assert_eq!(passed_count(Some("4242"), None, None, me).unwrap(), 0);
        assert_eq!(passed_count(Some("4242"), Some("2"), None, me).unwrap(), 2);
        assert_eq!(
            passed_count(Some("4242"), Some("2"), Some("web:admin"), me).unwrap(),
            2
        );
        let errors = [
            passed_count(Some("x"), Some("2"), None, me),
            passed_count(Some("4242"), Some("-1"), None, me),
            passed_count(Some("4242"), Some("2"), Some("web"), me),
        ];
        let messages: Vec<String> = errors
            .into_iter()
            .map(|e| e.unwrap_err().to_string())
            .collect();
        assert_eq!(
            messages,
            [
                "socket activation: LISTEN_PID=\"x\" is not a process id",
                "socket activation: LISTEN_FDS=\"-1\" is not a count",
                "socket activation: LISTEN_FDNAMES names 1 socket(s) but LISTEN_FDS passes 2",
            ]
        );
    }

    #[test]
    fn the_variables_are_removed_also_when_they_name_another_process() {
        // Process 1 is never a test: nothing is taken, but children must not see them either.
        std::env::set_var("LISTEN_PID", "1");
        std::env::set_var("LISTEN_FDS", "1");
        std::env::set_var("LISTEN_FDNAMES", "web");
        assert!(listen_fds().unwrap().is_empty());
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            assert!(std::env::var_os(name).is_none(), "{name} is still set");
        }
    }
}
