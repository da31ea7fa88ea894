//! waitress, ported to Rust with the standard library only.
//!
//! Port of waitress/__init__.py: the crate root holds the entry points (`serve`, `create_server`)
//! and re-exports the application interface. Each module ports one waitress file; see the
//! module map in the README.

#![warn(missing_docs)]

#[cfg(not(unix))]
compile_error!("waitress-rs targets Unix (Linux, macOS): it needs poll(2) and Unix sockets.");

pub mod adjustments;
pub mod app;
pub mod buffers;
pub mod channel;
pub mod parser;
pub mod profiling;
pub mod proxy_headers;
pub mod receiver;
pub mod rfc7230;
pub mod runner;
pub mod server;
pub mod task;
pub mod trigger;
pub mod utilities;
pub mod wasyncore;

pub use adjustments::Adjustments;
pub use app::{
    App, AppError, AppResult, Body, ClientDisconnected, DisconnectCheck, Environ, FileWrapper,
    Input, RecordedResponse, ResponseSink, SharedApp, StartResponse, StartResponseError,
};
