#![cfg(unix)]
//! `waitress-serve` behind a real nginx (Debian's `nginx-light`), as the README's "Deploying
//! behind nginx" section sets it up: nginx speaks HTTP/1.1 to the port over one upstream
//! keep-alive pool, sets `X-Forwarded-For`/`-Proto`/`-Host`/`-Prefix`, and the port trusts
//! those headers from nginx alone (`--trusted-proxy`, `--trusted-proxy-headers`). Once over
//! TCP, once over a Unix socket.
//!
//! The tests need nginx, openssl (a throwaway certificate for the HTTPS listener) and curl (the
//! HTTPS client), so they are ignored by a plain `cargo test`; `.ci/run` installs the three
//! and runs them with `cargo test --test nginx -- --ignored`. Everything listens on loopback,
//! every wait has a deadline, and each test stops its processes and removes its directory.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{Client, Echo, Target};
use waitress::apps::pattern_byte;

const DEADLINE: Duration = Duration::from_secs(30);
const UPLOAD: usize = 20 << 20;
const DOWNLOAD: u64 = 200 << 20;
const KEEPALIVE_REQUESTS: usize = 1000;

/// The address nginx connects to the port from (`proxy_bind`), so that the port's peer (the
/// proxy) and the client (127.0.0.1) differ and the test can tell which one the app sees.
const PROXY_ADDR: &str = "127.0.0.3";

/// The `location` block of the README, word for word: what nginx does with every request for
/// the application mounted at `/app/`.
const LOCATION: &str = r#"
        location /app/ {
            proxy_pass http://waitress;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Prefix /app;
        }
"#;

/// How the port is reached.
#[derive(Clone, Copy, Debug)]
enum Upstream {
    Tcp,
    Unix,
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "waitress-nginx-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything one test runs; dropped in field order: nginx, the port, then the directory.
struct Deployment {
    _nginx: Running,
    _port: Running,
    /// The port's standard error, line by line (its access log among them).
    log: mpsc::Receiver<String>,
    /// The port's TCP port (0 over a Unix socket).
    upstream_port: u16,
    http_port: u16,
    https_port: u16,
    _scratch: Scratch,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// The nginx executable: on `PATH`, or where Debian puts it (`/usr/sbin` is not on every
/// user's `PATH`).
fn nginx_program() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

/// Start `waitress-serve --access-log echo` for nginx and return it once it says it is
/// serving, with its TCP port (0 for a Unix socket) and its standard error's further lines.
fn start_port(upstream: Upstream, socket: &Path) -> (Running, u16, mpsc::Receiver<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_waitress-serve"));
    match upstream {
        Upstream::Tcp => command.args([
            "--listen=127.0.0.1:0".to_string(),
            format!("--trusted-proxy={PROXY_ADDR}"),
        ]),
        // A Unix socket's peer is `localhost` (waitress: UnixWSGIServer.fix_addr).
        Upstream::Unix => command.args([
            format!("--unix-socket={}", socket.display()),
            "--trusted-proxy=localhost".to_string(),
        ]),
    };
    let mut child = command
        .args([
            "--trusted-proxy-headers=x-forwarded-for x-forwarded-host x-forwarded-proto",
            "--url-prefix=/app",
            "--access-log",
            "echo",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start waitress-serve");
    let stderr = child.stderr.take().expect("piped");
    let running = Running(child);
    // Read to the end so the port never blocks on a full pipe.
    let rx = support::lines_of(stderr);
    let line = rx
        .recv_timeout(DEADLINE)
        .expect("waitress-serve says where it serves");
    let served = line
        .split_once("Serving on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .1;
    let port = match upstream {
        Upstream::Tcp => served
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port"),
        Upstream::Unix => 0,
    };
    (running, port, rx)
}

/// A self-signed certificate for the HTTPS listener.
fn make_certificate(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian's openssl package) makes the test certificate");
    assert!(status.success(), "openssl req failed");
}

/// The whole nginx configuration: the README's `upstream`, `server` and `location`, plus what a
/// test needs to run unprivileged in a scratch directory (no daemon, its own paths and ports)
/// and `proxy_bind`.
fn nginx_conf(dir: &Path, upstream: Upstream, port: u16, http: u16, https: u16) -> String {
    let d = dir.display();
    let server = match upstream {
        Upstream::Tcp => format!("127.0.0.1:{port}"),
        Upstream::Unix => format!("unix:{d}/waitress.sock"),
    };
    let bind = match upstream {
        Upstream::Tcp => format!("proxy_bind {PROXY_ADDR};"),
        Upstream::Unix => String::new(),
    };
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream waitress {{
        server {server};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{http};
        listen 127.0.0.1:{https} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        client_max_body_size 64m;
        {bind}
{LOCATION}
    }}
}}
"#
    )
}

/// Wait until something accepts connections on `port`.
fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn deploy(upstream: Upstream, name: &str) -> Deployment {
    let scratch = Scratch::new(name);
    let dir = scratch.0.clone();
    make_certificate(&dir);
    let (port_process, port, log) = start_port(upstream, &dir.join("waitress.sock"));
    let (http_port, https_port) = (free_port(), free_port());
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        nginx_conf(&dir, upstream, port, http_port, https_port),
    )
    .expect("write nginx.conf");
    let nginx = Command::new(nginx_program())
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .args(["-e", "stderr"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (Debian's nginx-light package)");
    let nginx = Running(nginx);
    wait_listening(http_port, "nginx");
    wait_listening(https_port, "nginx (HTTPS)");
    Deployment {
        _nginx: nginx,
        _port: port_process,
        log,
        upstream_port: port,
        http_port,
        https_port,
        _scratch: scratch,
    }
}

fn get(path: &str, host: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").into_bytes()
}

/// The app sees the client's address, scheme and host, and its mount point as SCRIPT_NAME.
fn assert_client_view(deployment: &Deployment) {
    let mut client = Client::connect(&Target::Tcp(deployment.http_port));
    // A spoofed X-Forwarded-For is kept by nginx in front of the real address; the port
    // trusts one hop (nginx's), so the app sees the real one.
    client.send(&get(
        "/app/who/am/i?x=1",
        "shop.example",
        "X-Forwarded-For: 203.0.113.66\r\n",
    ));
    let response = client.read_response().expect("a response");
    response.assert_line(200, "OK", "HTTP/1.1");
    let echo = Echo::parse(&response.body);
    let field = |k: &str| echo.field(k).unwrap_or_default();
    assert_eq!(field("remote_addr"), "127.0.0.1", "{}", echo.meta);
    assert_eq!(field("scheme"), "http");
    assert_eq!(field("server_name"), "shop.example");
    assert_eq!(echo.header("HOST").as_deref(), Some("shop.example"));
    assert_eq!(field("script_name"), "/app");
    assert_eq!(field("path_info"), "/who/am/i");
    assert_eq!(field("query_string"), "x=1");
    // waitress reads no X-Forwarded-Prefix: the prefix is --url-prefix; the header reaches
    // the app as it is.
    assert_eq!(echo.header("X_FORWARDED_PREFIX").as_deref(), Some("/app"));

    // Through the HTTPS listener the app sees the client's scheme.
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--insecure", "--max-time", "20"])
        .args(["--header", "Host: shop.example"])
        .arg(format!(
            "https://127.0.0.1:{}/app/secure",
            deployment.https_port
        ))
        .output()
        .expect("curl (Debian's curl package)");
    assert!(output.status.success(), "curl: {:?}", output);
    let echo = Echo::parse(&output.stdout);
    assert_eq!(
        echo.field("scheme").as_deref(),
        Some("https"),
        "{}",
        echo.meta
    );
    assert_eq!(echo.field("remote_addr").as_deref(), Some("127.0.0.1"));
    assert_eq!(echo.field("path_info").as_deref(), Some("/secure"));
}

/// A 20 MiB upload reaches the app intact and comes back.
fn assert_upload(deployment: &Deployment) {
    let body: Vec<u8> = (0..UPLOAD as u64).map(pattern_byte).collect();
    let mut client = Client::connect(&Target::Tcp(deployment.http_port));
    let mut request = format!(
        "POST /app/upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: {UPLOAD}\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(&body);
    client.send(&request);
    let response = client.read_response().expect("a response");
    response.assert_line(200, "OK", "HTTP/1.1");
    let echo = Echo::parse(&response.body);
    assert_eq!(
        echo.field("content_length"),
        Some(UPLOAD.to_string()),
        "the app read every byte"
    );
    assert!(echo.body == body, "the upload came back changed");
}

/// A 200 MiB download passes intact; read and checked as it streams.
fn assert_download(deployment: &Deployment) {
    let stream = TcpStream::connect(("127.0.0.1", deployment.http_port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    writer
        .write_all(&get(
            &format!("/app/big?stream_bytes={DOWNLOAD}"),
            "shop.example",
            "Connection: close\r\n",
        ))
        .expect("send");
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut length = None;
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1.1 200 "), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<u64>().ok();
            }
        }
    }
    assert_eq!(length, Some(DOWNLOAD), "nginx passes the Content-Length on");
    const BLOCK: usize = 1 << 20;
    let expected: Vec<u8> = (0..(BLOCK + 251) as u64).map(pattern_byte).collect();
    let mut offset = 0u64;
    let mut block = vec![0u8; BLOCK];
    loop {
        let n = reader.read(&mut block).expect("reading the download");
        if n == 0 {
            break;
        }
        let from = (offset % 251) as usize;
        assert!(
            block[..n] == expected[from..from + n],
            "the download differs within bytes {offset}..{}",
            offset + n as u64
        );
        offset += n as u64;
    }
    assert_eq!(offset, DOWNLOAD, "the whole download arrived");
}

/// GET `/app{path}` on `client` and check that the app answered this very request.
fn assert_echoed(client: &mut Client, path: &str, what: &str) {
    client.send(&get(&format!("/app{path}"), "shop.example", ""));
    let response = client
        .read_response()
        .unwrap_or_else(|_| panic!("{what}: connection closed"));
    assert_eq!(response.status, 200, "{what}");
    let echo = Echo::parse(&response.body);
    assert_eq!(
        echo.field("path_info").as_deref(),
        Some(path),
        "{what}: each answer is for its own request"
    );
}

/// 1,000 requests on one client connection, each answered for its own path.
fn assert_keepalive(deployment: &Deployment) {
    let mut client = Client::connect(&Target::Tcp(deployment.http_port));
    for i in 0..KEEPALIVE_REQUESTS {
        assert_echoed(&mut client, &format!("/k/{i}"), &format!("request {i}"));
    }
    if deployment.upstream_port != 0 {
        // nginx kept its upstream connections open: without `keepalive` and HTTP/1.1 each
        // request would have opened one (and left it in TIME_WAIT).
        let opened = upstream_connections(deployment.upstream_port);
        eprintln!("TCP sockets from nginx to the port after the keep-alive run: {opened}");
        assert!(
            opened <= 32,
            "{opened} connections from nginx to the port for {KEEPALIVE_REQUESTS} requests"
        );
    }
}

/// How many TCP sockets (any state, TIME_WAIT included) go from nginx's `proxy_bind` address
/// to the port, from the kernel's table.
fn upstream_connections(port: u16) -> usize {
    // /proc/net/tcp: "sl local_address rem_address ...", addresses as little-endian hex
    // IPv4 and big-endian hex port: 127.0.0.3 is 0300007F.
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let mut fields = row.split_whitespace().skip(1);
            let local = fields.next().unwrap_or("");
            local.starts_with("0300007F:") && fields.next() == Some(remote.as_str())
        })
        .count()
}

/// A request nginx lets through but the port refuses (a control character in a header value)
/// gets the port's 400, and the requests after it on the same client connection, served over
/// nginx's pooled upstream connections, each get their own answer.
fn assert_bad_request_does_not_desync(deployment: &Deployment) {
    let mut client = Client::connect(&Target::Tcp(deployment.http_port));
    for round in 0..3 {
        client.send(&get("/app/bad", "shop.example", "X-Bad: a\x01b\r\n"));
        let response = client.read_response().expect("the 400");
        assert_eq!(response.status, 400, "round {round}: the port's answer");
        let body = String::from_utf8_lossy(&response.body).into_owned();
        assert!(
            body.starts_with("Bad Request") && body.ends_with("(generated by waitress)"),
            "the port's 400, not nginx's: {body:?}"
        );
        // Also with a body that the port never reads. The port answers 400 and closes with
        // the body unread, as waitress does; the kernel then resets the connection, and nginx
        // answers 502 when the reset reaches it before the 400 (see the README). Either way
        // the requests after it must stay in step.
        let mut post =
            b"POST /app/bad HTTP/1.1\r\nHost: shop.example\r\nX-Bad: a\x01b\r\nContent-Length: 65536\r\n\r\n"
                .to_vec();
        post.extend_from_slice(&[b'x'; 65536]);
        client.send(&post);
        let response = client
            .read_response()
            .expect("an answer to the refused POST");
        match response.status {
            400 => assert!(response.body.ends_with(b"(generated by waitress)")),
            502 => eprintln!("round {round}: nginx answered 502 for the refused POST (reset)"),
            other => panic!("round {round}: a refused POST answered {other}"),
        }
        for i in 0..10 {
            let path = format!("/after/{round}/{i}");
            assert_echoed(&mut client, &path, &format!("round {round} request {i}"));
        }
    }
}

/// The port's access log names the client behind nginx, not nginx; the 400s it wrote itself
/// are there too.
fn assert_access_log(deployment: &Deployment) {
    let deadline = Instant::now() + DEADLINE;
    let mut who = None;
    let mut refused = 0;
    while who.is_none() || refused < 6 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = deployment
            .log
            .recv_timeout(left)
            .expect("the access log lines of the checks above");
        if line.contains("\"GET /app/who/am/i?x=1 HTTP/1.1\" 200 ") {
            who = Some(line);
        } else if line.contains(" /app/bad HTTP/1.1\" 400 ") {
            refused += 1;
        }
    }
    let who = who.expect("the first request's line");
    eprintln!("access log behind nginx: {who}");
    assert!(
        who.starts_with("INFO:waitress.access:127.0.0.1 - - ["),
        "the client's address, not nginx's: {who}"
    );
}

fn behind_nginx(upstream: Upstream, name: &str) {
    let started = Instant::now();
    let deployment = deploy(upstream, name);
    assert_client_view(&deployment);
    assert_upload(&deployment);
    assert_download(&deployment);
    assert_keepalive(&deployment);
    assert_bad_request_does_not_desync(&deployment);
    assert_access_log(&deployment);
    eprintln!(
        "behind nginx over {upstream:?}: all checks in {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs nginx, openssl and curl: .ci/run installs them and runs this with --ignored"]
fn behind_nginx_over_tcp() {
    behind_nginx(Upstream::Tcp, "tcp");
}

#[test]
#[ignore = "needs nginx, openssl and curl: .ci/run installs them and runs this with --ignored"]
fn behind_nginx_over_a_unix_socket() {
    behind_nginx(Upstream::Unix, "unix");
}

#[test]
fn the_readme_shows_the_tested_location_block() {
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(LOCATION.trim_matches('\n')),
        "README's 'Deploying behind nginx' must show tests/nginx.rs's LOCATION as it is"
    );
    assert!(readme.contains("        keepalive 16;"));
}
