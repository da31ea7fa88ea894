//! waitress, ported to Rust with the standard library only.
//!
//! Port of waitress/__init__.py: the crate root holds the entry points (`serve`, `create_server`)
//! and re-exports the application interface. Each module ports one waitress file; see the
//! module map in the README.

#![warn(missing_docs)]
// System calls and their `unsafe` live in `compat` alone (waitress: compat.py).
#![deny(unsafe_code)]

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
/// request stage and print the table when the server stops; see [`profile`]).
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
                    .call(&mut Environ::new(), &mut StartResponse::new(&mut recorded))
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
