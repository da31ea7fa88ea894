//! `waitress-serve` behind a real nginx (Debian's `nginx-light`), as the README's "Deploying
//! behind nginx" configures it: HTTP/1.1 to the upstream with keep-alive, and the
//! `X-Forwarded-For`/`-Proto`/`-Host`/`-Prefix` headers; waitress-serve trusts the first three
//! from nginx's address (`--trusted-proxy`, `--trusted-proxy-headers`) and takes the prefix
//! from `--url-prefix` (waitress has no `X-Forwarded-Prefix`). Once over TCP, once over
//! Unix sockets. Ignored by `cargo test` (nginx is not a Rust tool); `.ci/run` installs nginx
//! and runs `cargo test --test nginx -- --ignored`.
//!
//! Everything listens on loopback; every wait has a deadline; nginx, the servers and the
//! temporary directory are removed when a test ends, whether it passes or fails.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use waitress::apps::download_byte;

const DEADLINE: Duration = Duration::from_secs(60);
/// The proxy headers waitress knows and nginx sets. (nginx also sends `X-Forwarded-Prefix`,
/// which waitress does not read: `--url-prefix` gives `SCRIPT_NAME`, as in waitress.)
const PROXY_HEADERS: &str = "x-forwarded-for x-forwarded-proto x-forwarded-host";
/// nginx connects to a TCP upstream from this address, so the app can tell the client
/// (127.0.0.1) from the proxy.
const PROXY_ADDR: &str = "127.0.0.3";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Tcp,
    Unix,
}

/// A temporary directory, removed with the value.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "waitress-nginx-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) with the value.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `waitress-serve` running `app`, its standard error collected line by line.
struct Waitress {
    _process: Process,
    stderr: Arc<Mutex<Vec<String>>>,
    /// What nginx's `server` line names: `127.0.0.1:PORT` or `unix:PATH`.
    upstream: String,
}

impl Waitress {
    fn start(app: &str, prefix: &str, transport: Transport, dir: &Path) -> Waitress {
        let (listen, trusted) = match transport {
            Transport::Tcp => ("--listen=127.0.0.1:0".to_string(), PROXY_ADDR),
            Transport::Unix => (
                format!(
                    "--unix-socket={}",
                    dir.join(format!("{app}.sock")).display()
                ),
                "localhost",
            ),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_waitress-serve"))
            .args([
                listen.as_str(),
                &format!("--trusted-proxy={trusted}"),
                &format!("--trusted-proxy-headers={PROXY_HEADERS}"),
                &format!("--url-prefix={prefix}"),
                // The default scheme is not nginx's, so X-Forwarded-Proto must be what counts.
                "--url-scheme=https",
                "--access-log",
                "--access-log-format=%{remote}p %X %s %r",
                // Over this limit a head is refused by waitress-serve, not by nginx.
                "--max-request-header-size=8192",
                app,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("waitress-serve starts");
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        let process = Process(child);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let collected = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let line = match line {
                    Ok(line) => line,
                    Err(_) => break,
                };
                if let Some(rest) = line.strip_prefix("INFO:waitress:Serving on http://") {
                    let _ = tx.send(rest.to_string());
                }
                collected.lock().unwrap().push(line);
            }
        });
        let serving = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("waitress-serve did not start: {:?}", lines.lock()));
        let upstream = match transport {
            Transport::Tcp => serving,
            Transport::Unix => {
                format!("unix:{}", serving.strip_prefix("unix:").unwrap_or(&serving))
            }
        };
        Waitress {
            _process: process,
            stderr: lines,
            upstream,
        }
    }

    /// The access-log lines logged so far.
    fn access_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("INFO:waitress.access:"))
            .map(str::to_string)
            .collect()
    }

    /// Wait until `count` access lines matching `matches` are logged, and return them.
    fn wait_access(&self, count: usize, matches: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lines: Vec<String> = self
                .access_lines()
                .into_iter()
                .filter(|l| matches(l))
                .collect();
            if lines.len() >= count {
                return lines;
            }
            if Instant::now() > deadline {
                let all = self.stderr.lock().unwrap();
                let last = &all[all.len().saturating_sub(5)..];
                panic!(
                    "{} of {count} access lines; the last lines: {last:?}",
                    lines.len()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// nginx's configuration: the README's, with paths in the test's directory, one process
/// (`master_process off`, so killing it leaves no worker behind) and the test's upstreams.
fn nginx_conf(dir: &Path, port: u16, echo: &str, download: &str, transport: Transport) -> String {
    let bind = match transport {
        Transport::Tcp => format!("proxy_bind {PROXY_ADDR};"),
        Transport::Unix => String::new(),
    };
    let d = dir.display();
    let location = |prefix: &str, upstream: &str| {
        format!(
            "        location /{prefix}/ {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Prefix /{prefix};
            {bind}
        }}
"
        )
    };
    format!(
        "daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;

    upstream echo {{
        server {echo};
        keepalive 8;
    }}
    upstream download {{
        server {download};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
{}{}    }}
}}
",
        location("app", "echo"),
        location("files", "download"),
    )
}

/// A stack: an `echo` and a `download` waitress-serve behind one nginx.
struct Stack {
    nginx_port: u16,
    echo: Waitress,
    _download: Waitress,
    _nginx: Process,
    _dir: TempDir,
}

impl Stack {
    fn start(transport: Transport) -> Stack {
        let dir = TempDir::new();
        let echo = Waitress::start("echo", "/app", transport, &dir.0);
        let download = Waitress::start("download", "/files", transport, &dir.0);
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = dir.0.join("nginx.conf");
            std::fs::write(
                &conf,
                nginx_conf(&dir.0, port, &echo.upstream, &download.upstream, transport),
            )
            .unwrap();
            // Debian puts nginx in /usr/sbin, which a user's PATH may lack.
            let program = if Path::new("/usr/sbin/nginx").exists() {
                "/usr/sbin/nginx"
            } else {
                "nginx"
            };
            let child = Command::new(program)
                .arg("-p")
                .arg(&dir.0)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx runs (Debian: apt-get install nginx-light)");
            let mut nginx = Process(child);
            let deadline = Instant::now() + DEADLINE;
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Stack {
                        nginx_port: port,
                        echo,
                        _download: download,
                        _nginx: nginx,
                        _dir: dir,
                    };
                }
                if nginx.0.try_wait().unwrap().is_some() {
                    let log = std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default();
                    assert!(
                        log.contains("Address already in use"),
                        "nginx failed: {log}"
                    );
                    break; // the port was taken meanwhile: another one
                }
                assert!(Instant::now() < deadline, "nginx did not start listening");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("nginx found no free port five times");
    }

    fn connect(&self) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", self.nginx_port)).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }
}

/// A keep-alive client of nginx.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn send(&mut self, data: &[u8]) {
        self.writer.write_all(data).unwrap();
    }

    fn read_head(&mut self) -> Head {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line, not {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let text = line.trim_end();
            if text.is_empty() {
                break;
            }
            let (name, value) = text.split_once(':').expect("a header line");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        Head { status, headers }
    }

    /// A whole response, framed by Content-Length or chunked.
    fn read_response(&mut self) -> (Head, Vec<u8>) {
        let head = self.read_head();
        let mut body = Vec::new();
        if let Some(length) = head.header("Content-Length") {
            let length: u64 = length.parse().unwrap();
            (&mut self.reader)
                .take(length)
                .read_to_end(&mut body)
                .unwrap();
            assert_eq!(body.len() as u64, length, "body cut short");
        } else if head.header("Transfer-Encoding") == Some("chunked") {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        }
        (head, body)
    }

    fn get(&mut self, path: &str) -> (Head, Vec<u8>) {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: example.test\r\n\r\n").as_bytes());
        self.read_response()
    }
}

/// A JSON string field of the echo app's answer.
fn field(body: &[u8], key: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let pattern = format!("\"{key}\": \"");
    let start = text
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        + pattern.len();
    let end = start + text[start..].find('"').unwrap();
    text[start..end].to_string()
}

/// The app sees the client's address, scheme, host and prefix, not nginx's.
fn the_app_sees_the_client(stack: &Stack) {
    let mut client = stack.connect();
    let (head, body) = client.get("/app/who?x=1");
    assert_eq!(head.status, 200);
    assert_eq!(field(&body, "remote_addr"), "127.0.0.1");
    assert_eq!(field(&body, "scheme"), "http");
    assert_eq!(field(&body, "server_name"), "example.test");
    assert_eq!(field(&body, "server_port"), "80");
    assert_eq!(field(&body, "script_name"), "/app");
    assert_eq!(field(&body, "path_info"), "/who");
    assert_eq!(field(&body, "query_string"), "x=1");
    assert_eq!(field(&body, "X_FORWARDED_PREFIX"), "/app");
}

/// 20 MiB up (echoed back) and 200 MiB down, byte for byte.
fn large_bodies_pass_intact(stack: &Stack) {
    let mut client = stack.connect();
    // The download's pattern shifted by 100, so neither side can pass by echoing the other.
    let pattern: Vec<u8> = (0..(1u64 << 16) + 251).map(download_byte).collect();
    let upload: Vec<u8> = (0..20u64 << 20).map(|i| download_byte(i + 100)).collect();
    client.send(
        format!(
            "POST /app/upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: {}\r\n\r\n",
            upload.len()
        )
        .as_bytes(),
    );
    // Send from another thread: nginx may answer (and waitress echo) while we still send.
    let mut writer = client.writer.try_clone().unwrap();
    let sending = std::thread::spawn(move || writer.write_all(&upload).map(|_| upload));
    let (head, body) = client.read_response();
    let upload = sending.join().unwrap().unwrap();
    assert_eq!(head.status, 200);
    let at = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("echo's blank line")
        + 4;
    assert_eq!(field(&body, "content_length"), upload.len().to_string());
    assert!(body[at..] == upload[..], "the upload came back changed");

    const DOWNLOAD: u64 = 200 << 20;
    client.send(
        format!("GET /files/?bytes={DOWNLOAD} HTTP/1.1\r\nHost: example.test\r\n\r\n").as_bytes(),
    );
    let head = client.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("209715200"));
    let mut block = vec![0u8; 1 << 16];
    let mut offset = 0u64;
    while offset < DOWNLOAD {
        let want = block.len().min((DOWNLOAD - offset) as usize);
        client.reader.read_exact(&mut block[..want]).unwrap();
        let from = (offset % 251) as usize;
        if block[..want] != pattern[from..from + want] {
            let bad = (0..want)
                .find(|&i| block[i] != pattern[from + i])
                .unwrap_or(0);
            panic!("download differs at byte {}", offset + bad as u64);
        }
        offset += want as u64;
    }
    // The connection is still usable: nothing more than the body was sent.
    assert_eq!(client.get("/app/after-download").0.status, 200);
}

/// 1,000 requests on one client connection; nginx reuses its upstream connections.
fn a_thousand_keep_alive_requests(stack: &Stack) {
    let mut client = stack.connect();
    for i in 0..1000 {
        let (head, body) = client.get(&format!("/app/k{i}"));
        assert_eq!(head.status, 200, "request {i}");
        assert_eq!(field(&body, "path_info"), format!("/k{i}"), "request {i}");
    }
    let lines = stack
        .echo
        .wait_access(1000, |l| l.contains(" GET /app/k") && l.contains(" 200 "));
    // "%{remote}p %X …": every upstream connection was kept alive, and a few served all.
    let mut ports: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert!(
        lines.iter().all(|l| l.split(' ').nth(1) == Some("+")),
        "{lines:?}"
    );
    ports.sort_unstable();
    ports.dedup();
    assert!(ports.len() <= 16, "{} upstream connections", ports.len());
}

/// Requests that waitress-serve refuses (the proxy-headers middleware's 400 on a connection
/// kept alive; the parser's 431, which closes it) are answered as such, and the next requests
/// on the same client connection get their own answers: nginx and waitress stay in step.
fn bad_requests_do_not_desynchronise(stack: &Stack) {
    let mut client = stack.connect();
    // nginx passes the client's X-Forwarded-For on, with its own entry appended; waitress
    // finds the client's entry malformed.
    client
        .send(b"GET /app/bad-xff HTTP/1.1\r\nHost: example.test\r\nX-Forwarded-For: \"foo\r\n\r\n");
    let (head, body) = client.read_response();
    assert_eq!(head.status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("X-Forwarded-For"));
    assert_eq!(
        field(&client.get("/app/after-400").1, "path_info"),
        "/after-400"
    );
    // Three 4 KiB headers: within nginx's limits, over waitress-serve's 8 KiB.
    let filler = "f".repeat(4000);
    client.send(
        format!(
            "GET /app/big-head HTTP/1.1\r\nHost: example.test\r\nX-A: {filler}\r\nX-B: {filler}\r\nX-C: {filler}\r\n\r\n"
        )
        .as_bytes(),
    );
    let (head, _) = client.read_response();
    assert_eq!(head.status, 431);
    for i in 0..5 {
        let (head, body) = client.get(&format!("/app/after-431-{i}"));
        assert_eq!(head.status, 200);
        assert_eq!(field(&body, "path_info"), format!("/after-431-{i}"));
    }
    stack.echo.wait_access(1, |l| l.contains(" 431 "));
}

fn behind_nginx(transport: Transport) {
    let stack = Stack::start(transport);
    the_app_sees_the_client(&stack);
    large_bodies_pass_intact(&stack);
    a_thousand_keep_alive_requests(&stack);
    bad_requests_do_not_desynchronise(&stack);
}

#[test]
#[ignore = "needs nginx (Debian's nginx-light); .ci/run runs it with --ignored"]
fn behind_nginx_over_tcp() {
    behind_nginx(Transport::Tcp);
}

#[test]
#[ignore = "needs nginx (Debian's nginx-light); .ci/run runs it with --ignored"]
fn behind_nginx_over_unix_sockets() {
    behind_nginx(Transport::Unix);
}
