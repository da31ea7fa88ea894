//! Port of waitress/runner.py.
//!
//! The `waitress-serve` command line, in runner.py's order: the `HELP` text, `show_help`, and
//! `run`, which parses the options with `Adjustments::parse_args`, picks the application, and
//! serves it until SIGINT or SIGTERM. Rust cannot import `module:object` at run time, so a
//! program passes in an [`AppRegistry`] of the applications it can serve, found by name
//! (the built-in ones are in [`crate::apps`]). Runs on the main thread of `waitress-serve`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::sync::Arc;

use crate::adjustments::{log_level_setting, Adjustments};
use crate::app::{AppResult, Environ, SharedApp, StartResponse};
use crate::server::create_server_with;
use crate::utilities::{set_log_levels, LOGGER};

/// The help text; `{0}` is the program name.
pub const HELP: &str = "\
Usage:

    {0} [OPTS] [APP]

APP names an application known to this program (see the list at the end);
without one, the built-in 'demo' application is served.

Standard options:

    --help
        Print this text and exit.

    --app=NAME
        The application to serve, by name; the same as giving NAME as the
        positional argument.

    --call
        Accepted for compatibility with waitress, where it means \"call the
        named object to get the application\". Here every registered
        application is already built by calling its factory, so it changes
        nothing.

    --host=ADDR
        Host name or IP address to listen on. Default: '0.0.0.0', every IPv4
        address of this machine. Cannot be combined with --listen.

    --port=PORT
        TCP port to listen on. Default: 8080. Cannot be combined with --listen.

    --listen=HOST:PORT
        An address to listen on; give it several times for several sockets.
        Examples:

            --listen=127.0.0.1:8080
            --listen=[::1]:8080
            --listen=*:8080

        '*' stands for every address of the enabled families (see --ipv4 and
        --ipv6).

    --server-name=NAME
        The SERVER_NAME the application sees for a request that names no host
        (an HTTP/1.0 request without a Host header and without trusted proxy
        headers). Default: 'waitress.invalid'.

    --[no-]ipv4
        Allow (or forbid) IPv4 addresses when resolving --listen. Default: on.

    --[no-]ipv6
        Allow (or forbid) IPv6 addresses when resolving --listen. Default: on.
        With both --no-ipv4 and --no-ipv6, both families are allowed, as in
        waitress; --no-ipv4 on a host without IPv6 is refused.

    --unix-socket=PATH
        Listen on a Unix domain socket at PATH instead of TCP. A stale socket
        file left at PATH is replaced; the file is removed when the server
        stops. Not available on Windows.

    --unix-socket-perms=PERMS
        Octal permissions of the Unix socket file. Default: 600.

    --url-scheme=STR
        The default wsgi.url_scheme. Default: 'http'.

    --url-prefix=STR
        The SCRIPT_NAME of the application; a request path that starts with it
        has it removed from PATH_INFO. Default: empty.

    --ident=STR
        The value of the Server response header. Default: 'waitress'.

    --trusted-proxy=ADDR
        The peer address allowed to set proxy headers ('localhost' for a Unix
        socket, '*' for any peer).

    --trusted-proxy-count=INT
        How many proxies in a chain are trusted, counted from the right of
        X-Forwarded-For / Forwarded. Default: 1.

    --trusted-proxy-headers=LIST
        Which proxy headers to trust: 'forwarded', or any of
        'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto',
        'x-forwarded-port', 'x-forwarded-by'. Needs --trusted-proxy. When
        --trusted-proxy is given without this, 'x-forwarded-proto' is trusted,
        as in older waitress versions.

    --[no-]log-untrusted-proxy-headers
        Log a warning naming the untrusted proxy headers that were removed.
        Default: off.

    --[no-]clear-untrusted-proxy-headers
        Remove the proxy headers (Forwarded, X-Forwarded-For, -By, -Host,
        -Port, -Proto) that are not trusted, so the application never sees a
        forged one. Default: on.

Tuning options:

    --threads=INT
        Worker threads that run the application. Default: 4.

    --backlog=INT
        The listen(2) backlog. Default: 1024.

    --recv-bytes=INT
        Bytes asked of each recv. Default: 8192.

    --send-bytes=INT
        Deprecated: bytes buffered before a send is tried. Default: 1.

    --outbuf-overflow=INT
        Response bytes kept in memory before a temporary file is used.
        Default: 1048576 (1 MiB).

    --outbuf-high-watermark=INT
        Pending response bytes at which the application is paused until the
        client has read some. Default: 16777216 (16 MiB).

    --inbuf-overflow=INT
        Request body bytes kept in memory before a temporary file is used.
        Default: 524288 (512 KiB).

    --connection-limit=INT
        Stop accepting connections while this many are open. Default: 100.

    --cleanup-interval=INT
        Seconds between sweeps for idle connections. Default: 30.

    --channel-timeout=INT
        Seconds a connection may stay idle (nothing received or sent) before
        it is closed. Default: 120.

    --request-header-timeout=INT
        Seconds a client may take to send a whole request head; 0 is no limit,
        as in waitress. Recommended in production (e.g. 10): it closes
        connections that trickle a head to hold a connection slot. Default: 0.

    --shutdown-timeout=INT
        On SIGTERM or SIGINT, seconds to let requests already read finish and
        flush before closing; 0 stops at once, as waitress does. Default: 0.

    --[no-]access-log
        Log one line per response to the waitress.access logger. Default: off.

    --access-log-format=STR
        The access-log line, Apache style. Default: combined format plus the
        microseconds taken (%D).

    --log-level=LEVELS
        Which log records are written: a level for every logger, then
        LOGGER=LEVEL for single loggers, separated by commas. Levels: debug,
        info, warning, error, critical. Loggers: waitress (the server),
        waitress.queue (\"Task queue depth\" warnings), waitress.access (the
        access log). Example: --log-level=info,waitress.queue=error.
        Default: info.

    --[no-]log-socket-errors
        Log socket errors such as clients that disconnect early. Default: on.

    --max-request-header-size=INT
        Largest request head in bytes; larger ones get 431. Default: 262144.

    --max-request-body-size=INT
        Largest request body in bytes; larger ones get 413.
        Default: 1073741824 (1 GiB).

    --[no-]expose-tracebacks
        Put the error of a failing application in the 500 response body.
        Default: off.

    --asyncore-loop-timeout=INT
        Seconds the event loop waits in poll(2). Default: 1.

    --asyncore-use-poll
        poll(2) semantics without select's 1024-descriptor limit. Default: off.

    --asyncore-use-epoll
        Linux only: the event loop over epoll(7), with poll semantics; cheaper
        rounds with thousands of connections. Default: off.

    --channel-request-lookahead=INT
        Requests read ahead while one is being served; above 0 the application
        also gets 'waitress.client_disconnected'. Default: 0.
";

/// Print the help, with the applications of `registry` (waitress: `show_help`).
pub fn show_help(out: &mut dyn Write, name: &str, registry: &AppRegistry) {
    let _ = write!(out, "{}", HELP.replace("{0}", name));
    let _ = writeln!(out, "\nApplications:\n");
    for (app_name, entry) in &registry.entries {
        let _ = writeln!(out, "    {app_name:<10} {}", entry.description);
    }
}

/// Run `waitress-serve` with `argv` (program name first) and return the exit status: 0 after
/// `--help` or a clean stop by SIGINT/SIGTERM, 1 for a bad command line, setting or address.
pub fn run(argv: &[String], registry: &AppRegistry) -> i32 {
    run_with(
        argv,
        registry,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        serve,
    )
}

/// [`run`] with its output streams and its way of serving given (waitress: `run(argv,
/// _serve)`): the tests see what would be served, and what was printed, without serving.
pub(crate) fn run_with(
    argv: &[String],
    registry: &AppRegistry,
    out: &mut dyn Write,
    err: &mut dyn Write,
    serve: impl FnOnce(SharedApp, Adjustments) -> i32,
) -> i32 {
    let name = argv
        .first()
        .map(|a| {
            std::path::Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| a.clone())
        })
        .unwrap_or_else(|| "waitress-serve".to_string());
    // One error line and the usage line (waitress prints the whole help after the error).
    let mut fail = |message: &str| {
        let _ = writeln!(err, "Error: {message}");
        let _ = writeln!(
            err,
            "Usage: {name} [OPTS] [APP]   ({name} --help lists the options)"
        );
        1
    };
    let parsed = match Adjustments::parse_args(argv.get(1..).unwrap_or(&[])) {
        Ok(parsed) => parsed,
        Err(e) => return fail(&e.to_string()),
    };
    if parsed.help {
        show_help(out, &name, registry);
        return 0;
    }
    // Before anything is logged, so that every record obeys it (waitress sets the `waitress`
    // logger to INFO here when the user's logging setup has not set it).
    match log_level_setting(&parsed.kw) {
        Ok(Some(levels)) => set_log_levels(&levels),
        Ok(None) => {}
        Err(e) => return fail(&e.command_line_message()),
    }
    let app_name = parsed.app.as_deref().unwrap_or(DEFAULT_APP);
    let app = match registry.build(app_name) {
        Ok(app) => app,
        Err(e) => return fail(&e.to_string()),
    };
    // Sockets passed by a service manager (systemd) are served instead of binding.
    let sockets = match crate::socket_activation::listen_fds() {
        Ok(sockets) => sockets,
        Err(e) => return fail(&e.to_string()),
    };
    let adj = match Adjustments::with_sockets(parsed.kw, sockets) {
        Ok(adj) => adj,
        // Named as the user typed them: `--channel-timeout`, not `channel_timeout`.
        Err(e) => return fail(&e.command_line_message()),
    };
    serve(app, adj)
}

/// Serve `app` until SIGINT or SIGTERM and return the exit status (waitress: `serve`, which
/// `run` calls): 1 when the server cannot be built (an address in use…) or its loop fails.
fn serve(app: SharedApp, adj: Adjustments) -> i32 {
    let server = match create_server_with(app, adj) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    server.print_listen("Serving on http://{}:{}");
    let grace = std::time::Duration::from_secs(server.adj().shutdown_timeout);
    if let Err(e) = signals::stop_on_signals(server.shutdown_handle(), grace) {
        LOGGER.warning(&format!(
            "SIGINT/SIGTERM will not stop the server cleanly: {e}"
        ));
    }
    match server.run() {
        Ok(()) => 0,
        Err(e) => {
            LOGGER.error(&format!("the event loop failed: {e}"));
            1
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finding the application by name (waitress: `pkgutil.resolve_name` of `module:object`, which
// `Adjustments.parse_args` calls and `AppResolutionError` reports)
// ---------------------------------------------------------------------------------------------

/// A way to build an application.
pub type AppFactory = Arc<dyn Fn() -> SharedApp + Send + Sync>;

struct Entry {
    description: String,
    factory: AppFactory,
}

/// The applications a `waitress-serve` program can serve, by name.
#[derive(Default)]
pub struct AppRegistry {
    entries: BTreeMap<String, Entry>,
}

impl fmt::Debug for AppRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppRegistry")
            .field("names", &self.names())
            .finish()
    }
}

/// An application name the registry does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownApp {
    /// The name asked for.
    pub name: String,
    /// The names that exist.
    pub known: Vec<String>,
}

impl fmt::Display for UnknownApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown application '{}' (available: {})",
            self.name,
            self.known.join(", ")
        )
    }
}

impl std::error::Error for UnknownApp {}

impl AppRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        AppRegistry::default()
    }

    /// A registry with the built-in `demo`, `hello` and `echo` applications (see
    /// [`crate::apps`]).
    pub fn with_builtins() -> Self {
        crate::apps::registry()
    }

    /// Register a factory that builds the application when it is chosen.
    pub fn register(
        &mut self,
        name: &str,
        description: &str,
        factory: impl Fn() -> SharedApp + Send + Sync + 'static,
    ) {
        self.entries.insert(
            name.to_string(),
            Entry {
                description: description.to_string(),
                factory: Arc::new(factory),
            },
        );
    }

    /// Register an application function or closure.
    pub fn register_fn<F>(&mut self, name: &str, description: &str, app: F)
    where
        F: Fn(&mut Environ, &mut StartResponse<'_>) -> AppResult + Send + Sync + 'static,
    {
        let app: SharedApp = Arc::new(app);
        self.register(name, description, move || Arc::clone(&app));
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Build the application called `name`.
    pub fn build(&self, name: &str) -> Result<SharedApp, UnknownApp> {
        match self.entries.get(name) {
            Some(entry) => Ok((entry.factory)()),
            None => Err(UnknownApp {
                name: name.to_string(),
                known: self.names(),
            }),
        }
    }
}

/// The application served when none is named.
pub const DEFAULT_APP: &str = "demo";

/// SIGINT and SIGTERM stop the server (on Windows: Ctrl-C, Ctrl-Break and closing the
/// console window): the handler (in `compat`) only writes one byte to a socket pair; a watcher thread reads it and calls the shutdown handle. With `--shutdown-timeout`
/// the first signal starts a graceful shutdown and a second one stops at once.
mod signals {
    use std::io::{self, Read};
    use std::time::Duration;

    use crate::compat;
    use crate::server::ShutdownHandle;

    /// Start the watcher thread, then install the handlers.
    pub fn stop_on_signals(handle: ShutdownHandle, grace: Duration) -> io::Result<()> {
        let (mut reader, writer) = crate::trigger::socket_pair()?;
        std::thread::Builder::new()
            .name("waitress-signals".to_string())
            .spawn(move || {
                let mut byte = [0u8; 1];
                let mut signals = 0;
                loop {
                    match reader.read(&mut byte) {
                        Ok(1) if signals == 0 => handle.begin_graceful_shutdown(grace),
                        Ok(1) => handle.shutdown(),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // The pipe is gone: the process is ending.
                        _ => break,
                    }
                    signals += 1;
                }
            })?;
        #[cfg(unix)]
        return compat::write_byte_on_signals(&[compat::SIGINT, compat::SIGTERM], writer);
        // Windows has no SIGINT/SIGTERM for a console program: Ctrl-C, Ctrl-Break and
        // closing the console window ask it to stop.
        #[cfg(windows)]
        return compat::write_byte_on_console_events(writer);
    }
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_runner.py, under waitress's names; the binary itself (exit
    //! statuses, signals, serving) is tested in tests/runner.rs. Not carried over:
    // test_no_app: no application named is not an error here: `demo` is served (a README difference; no_app_serves_the_default asserts it)
    // test_cwd_added_to_path: Python's sys.path; applications come from a registry, not from files
    // test_bad_app_object: `module:object` has one namespace here, the registry; an unknown name is test_bad_apps_app
    use super::*;
    use crate::app::{Body, RecordedResponse};

    /// What `run_with` printed and returned, and what it would have served.
    struct Outcome {
        code: i32,
        output: String,
        served: Option<(SharedApp, Adjustments)>,
    }

    /// waitress's `match_output`, with both streams in one string as its `capture()` has them.
    fn run_captured(argv: &[&str], registry: &AppRegistry) -> Outcome {
        let mut argv_owned = vec!["waitress-serve".to_string()];
        argv_owned.extend(argv.iter().map(|s| s.to_string()));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut served = None;
        let code = run_with(&argv_owned, registry, &mut out, &mut err, |app, adj| {
            served = Some((app, adj));
            0
        });
        out.extend_from_slice(&err);
        Outcome {
            code,
            output: String::from_utf8(out).unwrap(),
            served,
        }
    }

    fn match_output(argv: &[&str], code: i32, start: &str) {
        let outcome = run_captured(argv, &AppRegistry::with_builtins());
        assert_eq!(outcome.code, code, "{argv:?}: {}", outcome.output);
        assert!(
            outcome.output.starts_with(start),
            "{argv:?}: {}",
            outcome.output
        );
    }

    #[test]
    fn test_bad() {
        match_output(&["--bad-opt"], 1, "Error: option --bad-opt not recognized");
    }

    #[test]
    fn test_help() {
        match_output(&["--help"], 0, "Usage:\n\n    waitress-serve");
        let registry = AppRegistry::with_builtins();
        let text = run_captured(&["--help"], &registry).output;
        // `sockets` takes bound sockets, which only a program can pass.
        for setting in crate::adjustments::setting_names().filter(|s| *s != "sockets") {
            let option = setting.replace('_', "-");
            assert!(
                text.contains(&format!("--{option}")) || text.contains(&format!("--[no-]{option}")),
                "--{option} missing from the help"
            );
        }
        for app in registry.names() {
            assert!(text.contains(&format!("    {app} ")), "{app} is not listed");
        }
    }

    #[test]
    fn no_app_serves_the_default() {
        let outcome = run_captured(&[], &AppRegistry::with_builtins());
        assert_eq!(outcome.code, 0);
        let (app, _) = outcome.served.expect("the default application is served");
        let demo = AppRegistry::with_builtins().build(DEFAULT_APP).unwrap();
        let page = |app: &SharedApp| {
            let mut recorded = RecordedResponse::default();
            app.respond(&mut Environ::new(), &mut StartResponse::new(&mut recorded))
                .unwrap()
                .into_bytes()
                .unwrap()
        };
        assert_eq!(page(&app), page(&demo));
    }

    #[test]
    fn test_multiple_apps_app() {
        match_output(&["hello", "echo"], 1, "Error: Provide only one WSGI app");
        match_output(
            &["--app=hello", "echo"],
            1,
            "Error: Provide only one WSGI app",
        );
    }

    #[test]
    fn test_bad_apps_app() {
        // waitress: "No module named 'a'"; here the registry has no application of that name.
        match_output(&["a"], 1, "Error: unknown application 'a'");
    }

    #[test]
    fn test_bad_app_module() {
        match_output(
            &["nonexistent:a"],
            1,
            "Error: unknown application 'nonexistent:a' (available: demo, download, echo, hello)",
        );
    }

    #[test]
    fn test_simple_call() {
        let registry = AppRegistry::with_builtins();
        let outcome = run_captured(&["--port=80", "hello"], &registry);
        assert_eq!(outcome.code, 0, "{}", outcome.output);
        let (app, adj) = outcome.served.expect("served");
        assert!(Arc::ptr_eq(&app, &registry.build("hello").unwrap()));
        // waitress checks that `serve` got exactly {"port": "80"}: the port, and nothing
        // else changed from the defaults.
        assert_eq!(adj.port, 80);
        assert!(adj.host_or_port_set);
        assert_eq!(adj.host, "0.0.0.0");
        assert_eq!(adj.threads, Adjustments::default().threads);
    }

    #[test]
    fn test_returned_app() {
        let app: SharedApp = Arc::new(crate::apps::hello);
        let returned = Arc::clone(&app);
        let mut registry = AppRegistry::new();
        registry.register("returns_app", "a factory", move || Arc::clone(&returned));
        let outcome = run_captured(&["--port=80", "--call", "returns_app"], &registry);
        assert_eq!(outcome.code, 0, "{}", outcome.output);
        let (served, adj) = outcome.served.expect("served");
        assert!(Arc::ptr_eq(&served, &app));
        assert_eq!(adj.port, 80);
    }

    #[test]
    fn bad_settings_name_the_option_and_exit_1() {
        match_output(
            &["--threads=x"],
            1,
            "Error: bad value for --threads: 'x' is not a whole number\nUsage: waitress-serve",
        );
        match_output(
            &["--log-level=loud"],
            1,
            "Error: bad value for --log-level: 'loud' is not a log level",
        );
    }

    #[test]
    fn test_registry_register_and_build() {
        let mut registry = AppRegistry::new();
        registry.register_fn("mine", "mine", |_e, sr| {
            sr.start("200 OK", [("Content-Type", "text/plain")])?;
            Ok(Body::from("mine"))
        });
        assert_eq!(registry.names(), vec!["mine"]);
        let app = registry.build("mine").unwrap();
        let mut recorded = RecordedResponse::default();
        let body = app
            .respond(&mut Environ::new(), &mut StartResponse::new(&mut recorded))
            .unwrap();
        assert_eq!(body.into_bytes().unwrap(), b"mine");
        assert_eq!(
            registry.build("nope").err().unwrap().to_string(),
            "unknown application 'nope' (available: mine)"
        );
    }
}
