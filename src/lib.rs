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
pub mod apps;
pub mod buffers;
pub mod channel;
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
    let server = create_server(app, settings)?;
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
    let _ = global_conf;
    serve(app, kw)?;
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
