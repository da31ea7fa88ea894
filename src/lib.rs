//! waitress, the production WSGI server of the Pylons project, ported to Rust with the
//! standard library only: HTTP/1.0 and 1.1, a thread pool running the applications, and one
//! I/O thread doing every socket operation, as in waitress.
//!
//! This file is the port of `waitress/__init__.py`: the entry points [`serve`],
//! [`serve_paste`] and [`profile`], and the re-exported application interface.
//!
//! # A first application
//!
//! An application is a function (or closure, or any [`App`]) that gets the request's
//! [`Environ`] and a [`StartResponse`] and returns a [`Body`]: PEP 3333's WSGI, in Rust types.
//! The program below writes one, tests it without a server through [`RecordedResponse`], then
//! serves it and sends it a request. It reads the request body and a header, and returns a
//! body streamed chunk by chunk. It is `examples/guide.rs` (`cargo run --example guide`).
//!
//! ```
#![doc = include_str!("../examples/guide.rs")]
//! ```
//!
//! A program that only serves calls [`serve`] from `main` and reports an error with its
//! `Display` text:
//!
//! ```no_run
//! # use waitress::{AppResult, Body, Environ, StartResponse};
//! # fn hello(_: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
//! #     sr.start("200 OK", [("Content-Type", "text/plain")])?;
//! #     Ok(Body::from("Hello, World!"))
//! # }
//! fn main() {
//!     if let Err(e) = waitress::serve(hello, [("listen", "127.0.0.1:8080")]) {
//!         eprintln!("hello: {e}"); // "could not listen on 127.0.0.1:8080: Address already in use …"
//!         std::process::exit(1);
//!     }
//! }
//! ```
//!
//! # Serving
//!
//! - [`serve`] runs a server until it is shut down; [`create_server`] (settings as name/value
//!   strings) and [`create_server_with`] (an [`Adjustments`]) return a [`WsgiServer`] to run,
//!   with a [`ShutdownHandle`] for other threads. Failures are a [`ServerError`].
//! - [`adjustments`]: every setting of waitress, its default and the checks it gets.
//! - [`runner`]: the `waitress-serve` command line, usable with your own applications;
//!   [`apps`]: the built-in `demo`, `hello` and `echo` applications.
//! - [`utilities`]: the loggers and their levels ([`utilities::set_log_levels`],
//!   [`utilities::set_log_sink`]).
//!
//! # Writing applications
//!
//! - [`app`]: [`App`], [`Environ`] (with [`Input`], the request body), [`StartResponse`],
//!   [`Body`] (one buffer, lazy chunks, or a [`FileWrapper`] the server streams itself), and
//!   [`RecordedResponse`] to call an application in a unit test.
//! - [`proxy_headers`]: the middleware that applies `Forwarded` / `X-Forwarded-*` from
//!   trusted proxies (the server installs it from the `trusted_proxy` settings).
//!
//! # The port, module by module (read beside waitress's source)
//!
//! Each of these ports one waitress file, with its names and in its order; they are public
//! so that they can be read and browsed, not because an application needs them.
//!
//! | waitress | module | what it holds |
//! |---|---|---|
//! | `__init__.py` | this page, [`profiling`] | `serve`, `serve_paste`, `profile` |
//! | `adjustments.py` | [`adjustments`] | the settings and the command-line parser |
//! | `wasyncore.py` | [`wasyncore`] | the `poll(2)` event loop and its dispatchers |
//! | `trigger.py` | [`trigger`] | wakes the event loop from worker threads |
//! | `server.py` | [`server`] | listening sockets, accepting, connection limits |
//! | `channel.py` | [`channel`] | one connection: reading requests, writing responses |
//! | `parser.py` | [`parser`] | the request head parser |
//! | `receiver.py` | [`receiver`] | fixed-length and chunked request bodies |
//! | `buffers.py` | [`buffers`] | memory and temporary-file buffers |
//! | `task.py` | [`task`] | the worker threads and the response headers |
//! | `proxy_headers.py` | [`proxy_headers`] | trusted proxy headers |
//! | `rfc7230.py` | [`rfc7230`] | the HTTP grammar |
//! | `utilities.py` | [`utilities`] | logging, HTTP dates, error responses |
//! | `runner.py` | [`runner`] | `waitress-serve` |
//! | `compat.py` | [`compat`] | the platform layer: every system call std lacks |
//!
//! Two modules have no waitress file, serving a server in production: [`access_log`] (one line
//! per response to `waitress.access`, the `access_log` setting) and [`socket_activation`] (the
//! sockets systemd passes, served instead of binding).

#![warn(missing_docs)]
// Doctests are examples people copy: they must compile without a warning.
#![doc(test(attr(deny(warnings))))]
// System calls and their `unsafe` live in `compat` alone (waitress: compat.py).
#![deny(unsafe_code)]

pub mod access_log;
pub mod adjustments;
pub mod app;
pub mod apps;
pub mod buffers;
pub mod channel;
#[allow(unsafe_code)]
pub mod compat;
pub mod parser;
pub mod profiling;
pub mod proxy_headers;
pub mod receiver;
pub mod rfc7230;
pub mod runner;
pub mod server;
pub mod socket_activation;
pub mod task;
pub mod trigger;
pub mod utilities;
pub mod wasyncore;

pub use adjustments::Adjustments;
pub use app::{
    App, AppError, AppResult, Body, ClientDisconnected, DisconnectCheck, Environ, FileWrapper,
    Input, RecordedResponse, ResponseSink, SharedApp, StartResponse, StartResponseError,
};

pub use server::{create_server, create_server_with, ServerError, ShutdownHandle, WsgiServer};

/// Serve `app` until the server is shut down (waitress: `serve(app, **kw)`).
///
/// `kw` holds waitress's settings as name/value strings, the way PasteDeploy passes them
/// (`("port", "8080")`, `("threads", "6")`, `("listen", "127.0.0.1:8080 [::1]:8080")`); see
/// [`Adjustments`] for every name. Two extra switches of waitress are understood:
/// `_quiet` (do not log the "Serving on" lines) and `_profile` (count calls and time per
/// request stage and print the table when the server stops; see [`profile`]). A `log_level`
/// setting (`info,waitress.queue=error`) is applied to the process's loggers before anything
/// else, so the settings' own warnings obey it too.
///
/// ```no_run
/// use waitress::{AppResult, Body, Environ, StartResponse};
///
/// fn hello(_environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
///     start_response.start("200 OK", [("Content-Type", "text/plain")])?;
///     Ok(Body::from("Hello, World!"))
/// }
///
/// fn main() -> Result<(), waitress::ServerError> {
///     waitress::serve(hello, [("listen", "127.0.0.1:8080")])
/// }
/// ```
pub fn serve<A, I, K, V>(app: A, kw: I) -> Result<(), ServerError>
where
    A: App,
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    serve_with(app, kw, |app, settings| create_server(app, settings))
}

/// What [`serve`] needs of the server it builds; a stand-in replaces it in the tests
/// (waitress: `serve`'s `_server` argument).
trait Served {
    fn print_listen(&self, format: &str);
    fn run(&self) -> std::io::Result<()>;
}

impl Served for WsgiServer {
    fn print_listen(&self, format: &str) {
        WsgiServer::print_listen(self, format)
    }

    fn run(&self) -> std::io::Result<()> {
        WsgiServer::run(self)
    }
}

/// [`serve`] with the server built by `make_server` from the app and the settings left once
/// the `_quiet` and `_profile` switches are taken out.
fn serve_with<A, I, K, V, S>(
    app: A,
    kw: I,
    make_server: impl FnOnce(A, Vec<(String, String)>) -> Result<S, ServerError>,
) -> Result<(), ServerError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
    S: Served,
{
    let mut quiet = false;
    let mut profiled = false;
    let mut settings: Vec<(String, String)> = Vec::new();
    for (key, value) in kw {
        let (key, value) = (key.as_ref(), value.as_ref());
        match key {
            "_quiet" => quiet = adjustments::asbool(value),
            "_profile" => profiled = adjustments::asbool(value),
            _ => settings.push((key.to_string(), value.to_string())),
        }
    }
    // Before the settings are checked, so that their own warnings obey it too.
    if let Some(levels) = adjustments::log_level_setting(&settings)? {
        utilities::set_log_levels(&levels);
    }
    let server = make_server(app, settings)?;
    if !quiet {
        server.print_listen("Serving on http://{}:{}");
    }
    let result = if profiled {
        profile(|| server.run(), &[], false)
    } else {
        server.run()
    };
    result.map_err(ServerError::from)
}

/// The PasteDeploy entry point (waitress: `serve_paste`): serves `app` with the settings of the
/// `[server:main]` section, ignoring the global configuration, and returns 0.
pub fn serve_paste<A, I, K, V>(
    app: A,
    global_conf: &[(String, String)],
    kw: I,
) -> Result<i32, ServerError>
where
    A: App,
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    serve_paste_with(app, global_conf, kw, |app, settings| {
        create_server(app, settings)
    })
}

/// [`serve_paste`] with the server built by `make_server`, as [`serve_with`].
fn serve_paste_with<A, I, K, V, S>(
    app: A,
    global_conf: &[(String, String)],
    kw: I,
    make_server: impl FnOnce(A, Vec<(String, String)>) -> Result<S, ServerError>,
) -> Result<i32, ServerError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
    S: Served,
{
    let _ = global_conf;
    serve_with(app, kw, make_server)?;
    Ok(0)
}

/// Run `f` with the per-stage profiler on, then print the table to standard output, sorted by
/// `sort_order` (pstats names: `cumulative`, `calls`, `time`, `percall`, `name`; waitress's
/// default `cumulative, calls, time` when empty). `callers` is accepted for waitress's
/// signature; stages have no callers, so it adds the raw per-stage counts below the table.
///
/// waitress: `profile(cmd, globals, locals, sort_order, callers)`.
pub fn profile<T>(f: impl FnOnce() -> T, sort_order: &[&str], callers: bool) -> T {
    profiling::set_enabled(true);
    let value = f();
    let keys: Vec<profiling::SortKey> = sort_order
        .iter()
        .filter_map(|name| profiling::SortKey::parse(name))
        .collect();
    let rows = profiling::snapshot(&keys);
    profiling::set_enabled(false);
    print!("{}", profiling::format_table(&rows));
    if callers {
        for row in &rows {
            println!("{}: {} calls", row.stage.name(), row.calls);
        }
    }
    value
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_init.py, under waitress's names (each class a module, as both
    //! tests are called `test_it`). Every test carries over.
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    /// waitress: `DummyServerFactory`: records the app and the settings, and whether it ran.
    #[derive(Default)]
    struct DummyServerFactory {
        /// The body the app answers with, standing in for Python's `is` check on the app.
        app_body: Mutex<Option<Vec<u8>>>,
        kw: Mutex<Vec<(String, String)>>,
        ran: AtomicBool,
    }

    struct DummyServer(Arc<DummyServerFactory>);

    impl Served for DummyServer {
        fn print_listen(&self, _format: &str) {}

        fn run(&self) -> std::io::Result<()> {
            self.0.ran.store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    impl DummyServerFactory {
        fn make<A: App>(
            self: &Arc<Self>,
        ) -> impl FnOnce(A, Vec<(String, String)>) -> Result<DummyServer, ServerError> {
            let factory = Arc::clone(self);
            move |app, kw| {
                let mut recorded = RecordedResponse::default();
                let body = app
                    .respond(&mut Environ::new(), &mut StartResponse::new(&mut recorded))
                    .expect("the app answers")
                    .into_bytes()
                    .expect("a body in memory");
                *factory.app_body.lock().unwrap() = Some(body);
                *factory.kw.lock().unwrap() = kw;
                Ok(DummyServer(factory))
            }
        }
    }

    fn app(_environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
        start_response.start("200 OK", [("Content-Type", "text/plain")])?;
        Ok(Body::from("the app"))
    }

    fn settings(kw: &[(&str, &str)]) -> Vec<(String, String)> {
        kw.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Test_serve
    mod test_serve {
        use super::*;

        #[test]
        fn test_it() {
            let server = Arc::new(DummyServerFactory::default());
            let result = serve_with(app, [("_quiet", "true"), ("threads", "2")], server.make());
            assert!(result.is_ok());
            assert_eq!(
                server.app_body.lock().unwrap().as_deref(),
                Some(&b"the app"[..])
            );
            // The `_quiet` switch is serve's own; only the settings reach the server.
            assert_eq!(*server.kw.lock().unwrap(), settings(&[("threads", "2")]));
            assert!(server.ran.load(Ordering::SeqCst));
        }
    }

    /// Test_serve_paste
    mod test_serve_paste {
        use super::*;

        #[test]
        fn test_it() {
            let server = Arc::new(DummyServerFactory::default());
            let result = serve_paste_with(app, &[], [("_quiet", "true")], server.make());
            assert_eq!(result.unwrap(), 0);
            assert_eq!(
                server.app_body.lock().unwrap().as_deref(),
                Some(&b"the app"[..])
            );
            assert!(server.kw.lock().unwrap().is_empty());
            assert!(server.ran.load(Ordering::SeqCst));
        }
    }
}
