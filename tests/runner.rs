//! The `waitress-serve` binary as a user runs it: help, errors and exit statuses, serving the
//! built-in applications over TCP and a Unix socket, and clean stops on SIGINT and SIGTERM.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use support::{Client, Target};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_waitress-serve"))
}

/// A running `waitress-serve`, stopped with SIGTERM on drop if the test did not stop it.
struct Running {
    child: Child,
    /// The "Serving on" lines' (host, port) pairs, in order.
    listening: Vec<(String, String)>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary and wait until it has printed `count` "Serving on" lines.
fn start(args: &[&str], count: usize) -> Running {
    let mut child = binary()
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut listening = Vec::new();
    while listening.len() < count {
        let line = lines
            .next()
            .expect("the server prints where it listens")
            .expect("readable stderr");
        if let Some(rest) = line.strip_prefix("INFO:waitress:Serving on http://") {
            let (host, port) = rest.rsplit_once(':').expect("host:port");
            listening.push((host.to_string(), port.to_string()));
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Running { child, listening }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn get(target: &Target, path: &str) -> support::Response {
    let mut client = Client::connect(target);
    client.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    client.read_response().expect("a response")
}

fn tcp_target(running: &Running, index: usize) -> Target {
    Target::Tcp(running.listening[index].1.parse().expect("a port"))
}

#[test]
fn help_lists_every_option_and_exits_0() {
    let output = binary().arg("--help").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8(output.stdout).unwrap();
    for setting in waitress::adjustments::setting_names().filter(|s| *s != "sockets") {
        let option = setting.replace('_', "-");
        assert!(
            text.contains(&format!("--{option}")) || text.contains(&format!("--[no-]{option}")),
            "--{option} is missing from --help"
        );
    }
    for app in ["demo", "hello", "echo"] {
        assert!(text.contains(app));
    }
}

#[test]
fn bad_command_lines_exit_1_with_one_error_line() {
    for (args, message) in [
        (
            &["--no-such-option"][..],
            "Error: option --no-such-option not recognized",
        ),
        (
            &["--threads=many"][..],
            "Error: bad value for --threads: 'many' is not a whole number",
        ),
        (
            &["--port=abc"][..],
            "Error: bad value for --port: 'abc' is not a whole number",
        ),
        (
            &["--channel-timeout=-5"][..],
            "Error: bad value for --channel-timeout: -5 is out of range (0 to 18446744073709551615)",
        ),
        (&["--port"][..], "Error: option --port requires argument"),
        (
            &["nope"][..],
            "Error: unknown application 'nope' (available: demo, download, echo, hello)",
        ),
        (&["hello", "echo"][..], "Error: Provide only one WSGI app"),
        (
            &["--log-level=info,waitress.queue=loud"][..],
            "Error: bad value for --log-level: 'loud' is not a log level",
        ),
        (
            &["--listen=127.0.0.1:0", "--port=1"][..],
            "Error: --host or --port may not be set if --listen is set.",
        ),
    ] {
        let output = binary().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.starts_with(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = binary()
        .args(["--listen", &address, "hello"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("could not listen on {address}")),
        "{stderr}"
    );
}

#[test]
#[cfg_attr(
    windows,
    ignore = "stops the server with kill(1); .ci/run stops the Windows build with Ctrl-C under wine"
)]
fn serves_the_builtin_apps_and_stops_on_sigterm() {
    let mut running = start(&["--listen", "127.0.0.1:0", "hello"], 1);
    let target = tcp_target(&running, 0);
    let r = get(&target, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, World!");
    assert_eq!(r.header("content-length"), Some("13"));
    signal(&running.child, "TERM");
    assert_eq!(running.child.wait().unwrap().code(), Some(0));
}

#[test]
#[cfg_attr(
    windows,
    ignore = "stops the server with kill(1); .ci/run stops the Windows build with Ctrl-C under wine"
)]
fn demo_is_the_default_and_sigint_stops_it() {
    let mut running = start(&["--listen=127.0.0.1:0"], 1);
    let r = get(&tcp_target(&running, 0), "/<x>");
    assert_eq!(r.status, 200);
    let page = String::from_utf8(r.body).unwrap();
    assert!(page.contains("waitress"));
    assert!(page.contains("/&lt;x&gt;"));
    signal(&running.child, "INT");
    assert_eq!(running.child.wait().unwrap().code(), Some(0));
}

#[test]
fn echo_over_two_listeners() {
    let running = start(&["--listen=127.0.0.1:0", "--listen=127.0.0.1:0", "echo"], 2);
    assert_ne!(running.listening[0].1, running.listening[1].1);
    for index in 0..2 {
        let mut client = Client::connect(&tcp_target(&running, index));
        client.send(b"POST /p?q=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody");
        let echo = support::Echo::parse(&client.read_response().unwrap().body);
        assert_eq!(echo.field("path_info").as_deref(), Some("/p"));
        assert_eq!(echo.field("query_string").as_deref(), Some("q=1"));
        assert_eq!(echo.body, b"body");
    }
}

#[test]
#[cfg(unix)]
fn unix_socket_is_served_and_removed_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("waitress-runner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("serve.sock");
    let path_arg = format!("--unix-socket={}", path.display());
    let mut running = start(&[&path_arg, "--unix-socket-perms=660", "hello"], 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let r = get(&Target::Unix(path.clone()), "/");
    assert_eq!(r.body, b"Hello, World!");
    signal(&running.child, "TERM");
    assert_eq!(running.child.wait().unwrap().code(), Some(0));
    assert!(!path.exists(), "the socket file is removed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg(windows)]
fn unix_socket_is_refused_on_windows() {
    let output = binary()
        .args(["--unix-socket=serve.sock", "hello"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr.lines().next(),
        Some("Error: --unix-socket: Unix domain sockets are not available on Windows")
    );
}

#[test]
fn ipv6_listener_answers_where_the_machine_has_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        // No IPv6 loopback here: the address cannot be bound, and that is a clear error.
        let output = binary()
            .args(["--listen=[::1]:0", "hello"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.starts_with("Error: could not listen on"), "{stderr}");
        return;
    }
    let running = start(&["--listen=[::1]:0", "hello"], 1);
    assert_eq!(running.listening[0].0, "[::1]");
    let port: u16 = running.listening[0].1.parse().unwrap();
    let mut stream = std::net::TcpStream::connect(("::1", port)).unwrap();
    use std::io::{Read, Write};
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.ends_with("Hello, World!"), "{response}");
}

#[test]
#[cfg(unix)] // finds the quiet server by its Unix socket
fn log_level_silences_loggers_one_by_one() {
    // The "Serving on" lines are INFO records of the `waitress` logger: a default of error
    // with `waitress=info` keeps them.
    let running = start(
        &[
            "--log-level=error,waitress=info",
            "--listen=127.0.0.1:0",
            "hello",
        ],
        1,
    );
    assert_eq!(get(&tcp_target(&running, 0), "/").body, b"Hello, World!");

    // With `warning` they go; the server is found by its Unix socket instead.
    let dir = std::env::temp_dir().join(format!("waitress-loglevel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("quiet.sock");
    let mut child = binary()
        .args([
            "--log-level=warning",
            &format!("--unix-socket={}", path.display()),
            "hello",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).map(|_| text)
    });
    // Killed on drop if an assertion below fails.
    let mut running = Running {
        child,
        listening: Vec::new(),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&path).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(get(&Target::Unix(path.clone()), "/").body, b"Hello, World!");
    signal(&running.child, "TERM");
    assert_eq!(running.child.wait().unwrap().code(), Some(0));
    let stderr = reader.join().unwrap().unwrap();
    assert!(!stderr.contains("INFO:"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_ipv4_and_no_ipv6_listens_on_both_families() {
    if !waitress::adjustments::host_has_ipv6() {
        let output = binary()
            .args(["--no-ipv4", "--no-ipv6", "--listen=127.0.0.1:0", "hello"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.starts_with("Error: IPv4 is disabled but IPv6 is not available."));
        return;
    }
    // As in waitress, switching both families off is the same as leaving both on.
    let running = start(
        &["--no-ipv4", "--no-ipv6", "--listen=127.0.0.1:0", "hello"],
        1,
    );
    assert_eq!(get(&tcp_target(&running, 0), "/").body, b"Hello, World!");
}

fn echo_with_forwarded_headers(trusted_proxy: &str) -> support::Echo {
    let running = start(
        &[
            "--listen=127.0.0.1:0",
            &format!("--trusted-proxy={trusted_proxy}"),
            "--trusted-proxy-headers=x-forwarded-for x-forwarded-proto",
            "echo",
        ],
        1,
    );
    let mut client = Client::connect(&tcp_target(&running, 0));
    client.send(
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n",
    );
    support::Echo::parse(&client.read_response().unwrap().body)
}

#[test]
fn trusted_proxy_headers_are_applied_only_for_the_trusted_peer() {
    let trusted = echo_with_forwarded_headers("127.0.0.1");
    assert_eq!(trusted.field("remote_addr").as_deref(), Some("203.0.113.7"));
    assert_eq!(trusted.field("scheme").as_deref(), Some("https"));
    assert_eq!(
        trusted.header("X_FORWARDED_FOR").as_deref(),
        Some("203.0.113.7")
    );

    let untrusted = echo_with_forwarded_headers("10.0.0.1");
    assert_eq!(untrusted.field("remote_addr").as_deref(), Some("127.0.0.1"));
    assert_eq!(untrusted.field("scheme").as_deref(), Some("http"));
    assert_eq!(untrusted.header("X_FORWARDED_FOR"), None);
    assert_eq!(untrusted.header("X_FORWARDED_PROTO"), None);
}
