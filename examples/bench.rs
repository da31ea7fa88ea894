//! The project's own benchmark: a load generator and a server, both in this file.
//!
//!     cargo run --release --example bench                       # every scenario
//!     cargo run --release --example bench -- --quick            # a short smoke run
//!     cargo run --release --example bench -- --scenario hello   # only the hello-* scenarios
//!     cargo run --release --example bench -- --backend epoll    # the server on epoll(7)
//!
//! For each scenario the program starts a fresh server in a child process (this same binary,
//! run as `bench --serve`), drives it over loopback, stops it, and prints one row: throughput,
//! median and 99th-percentile latency, and the server's resident memory (`VmRSS` at the end of
//! the load and the peak `VmHWM`, both read from `/proc/PID/status`, so Linux only). The hello
//! rows also note the server's processor time per response (`/proc/PID/stat`), a figure that
//! other load on a shared machine disturbs less than the rate.
//!
//! Why a child process rather than a server thread: the memory figures must be the server's
//! alone, not the load generator's; and 10,000 connections need 10,000 descriptors on each
//! side, which one process under the usual limit of 20,000 or so cannot hold twice.
//!
//! The server is the library's [`waitress::create_server`] with 4 worker threads (as
//! `compare.sh` runs `waitress-serve`), serving three small applications:
//! `/` is the built-in `hello` of `waitress-serve`; `/upload` reads the request body and
//! discards it; `/download?BYTES` streams a file of BYTES bytes through `wsgi.file_wrapper`.
//!
//! The load generator keeps every connection busy (keep-alive, the next request sent as soon
//! as a response is complete; `--pipeline N` keeps N in flight) from two client threads, each
//! waiting on its sockets with `poll(2)` (the library's own wrapper, [`waitress::compat`]).
//!
//! Scenarios (`--scenario NAME` runs the one called NAME, or all whose name starts with NAME):
//! - `hello-16`, `hello-100`, `hello-1000`, `hello-10000`: requests per second;
//! - `upload-cl`, `upload-chunked`: 1 GiB in one request (`Content-Length`, then chunked);
//! - `download`: 1 GiB out of a file wrapper;
//! - `idle-10000`: 10,000 keep-alive connections that have each served one request and now
//!   wait; the figure is the server's resident memory per connection beyond its baseline.
//!
//! Every wait is bounded (connect, read and write timeouts, a deadline for the server to start
//! and to stop), and the child server is stopped when a scenario ends, fails or panics.
//! Numbers depend on the machine and on what else runs on it: compare runs, not machines.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::io::{AsRawFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use waitress::compat::epoll::{Epoll, EpollEvent, EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT};
use waitress::compat::{poll_fds, PollFd, POLLERR, POLLHUP, POLLIN, POLLOUT};
use waitress::{AppResult, Environ, StartResponse};

/// Worker threads of the server, as `compare.sh` starts `waitress-serve`.
const SERVER_THREADS: &str = "4";
/// Threads of the load generator; each polls its share of the connections.
const CLIENT_THREADS: usize = 2;
/// Bytes of one upload or download in a full run (1 GiB) and with `--quick` (256 MiB).
const BULK_BYTES: u64 = 1 << 30;
const QUICK_BULK_BYTES: u64 = 256 << 20;
/// Block size of the file wrapper and of the client's bulk reads and writes.
const BLOCK: usize = 256 * 1024;
/// Connections of the idle scenario.
const IDLE_CONNECTIONS: usize = 10_000;
/// Bound on every single connect, read and write of the client.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The one request of the hello scenarios.
const HELLO_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        let backend = match args.get(1).map(String::as_str) {
            Some("epoll") => Backend::Epoll,
            _ => Backend::Poll,
        };
        if let Err(e) = serve_for_bench(backend) {
            eprintln!("bench --serve: {e}");
            std::process::exit(1);
        }
        return;
    }
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("bench: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    std::process::exit(run_benchmark(&options));
}

const USAGE: &str = "usage: cargo run --release --example bench -- [options]
  --quick            short runs (2 s per hello scenario, 256 MiB bulk transfers)
  --scenario NAME    run only the scenario NAME, or those whose name starts with NAME
                     (hello-16 hello-100 hello-1000 hello-10000 upload-cl upload-chunked
                      download idle-10000)
  --duration SECS    measured seconds per hello scenario (default 10, 2 with --quick)
  --pipeline N       requests in flight per connection in the hello scenarios (default 1)
  --backend B        the server's event loop: poll (asyncore_use_poll, the default) or
                     epoll (asyncore_use_epoll, Linux)
  --client B         how the load generator waits: poll (the default) or epoll
  --recv-bytes N     the server's recv_bytes setting (default waitress's 8192; bulk uploads
                     go faster with larger reads, e.g. 65536)";

// ---- the command line ----

/// What the command line asked for.
struct Options {
    /// Measured time of each hello scenario (after a warm-up of a fifth of it, at most 1 s).
    duration: Duration,
    /// Size of each upload and download.
    bulk_bytes: u64,
    /// Requests in flight per connection.
    pipeline: usize,
    /// The server's event loop.
    backend: Backend,
    /// How the load generator waits on its connections.
    client: Backend,
    scenarios: Vec<Scenario>,
}

/// The server's event loop, by the setting that picks it.
#[derive(Clone, Copy, Debug)]
enum Backend {
    /// `asyncore_use_poll`: `poll(2)`, every descriptor handed over each round.
    Poll,
    /// `asyncore_use_epoll`: `epoll(7)`, the interest set kept in the kernel.
    Epoll,
}

impl Backend {
    fn parse(name: &str) -> Result<Backend, String> {
        match name {
            "poll" => Ok(Backend::Poll),
            "epoll" => Ok(Backend::Epoll),
            _ => Err(format!("{name:?} is neither poll nor epoll")),
        }
    }

    /// The name on the command line (`--backend NAME`, and `bench --serve NAME`).
    fn name(self) -> &'static str {
        match self {
            Backend::Poll => "poll",
            Backend::Epoll => "epoll",
        }
    }

    /// The server setting that selects it.
    fn setting(self) -> &'static str {
        match self {
            Backend::Poll => "asyncore_use_poll",
            Backend::Epoll => "asyncore_use_epoll",
        }
    }
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut quick = false;
        let mut duration = None;
        let mut pipeline = 1;
        let mut backend = Backend::Poll;
        let mut client = Backend::Poll;
        let mut filter = String::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--quick" => quick = true,
                "--scenario" => filter = value("--scenario")?,
                "--duration" => {
                    let secs: f64 = value("--duration")?
                        .parse()
                        .map_err(|_| "--duration takes a number of seconds".to_string())?;
                    if !(secs > 0.0 && secs <= 3600.0) {
                        return Err(
                            "--duration must be more than 0 and at most 3600 seconds".into()
                        );
                    }
                    duration = Some(Duration::from_secs_f64(secs));
                }
                "--pipeline" => {
                    pipeline = value("--pipeline")?
                        .parse()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| "--pipeline takes a number from 1 to 256".to_string())?;
                }
                "--backend" => backend = Backend::parse(&value("--backend")?)?,
                "--client" => client = Backend::parse(&value("--client")?)?,
                "--recv-bytes" => {
                    let n = value("--recv-bytes")?;
                    if !n.parse::<usize>().map_or(false, |n| n > 0) {
                        return Err("--recv-bytes takes a positive number".to_string());
                    }
                    // The server child reads it from its environment (see `serve_for_bench`).
                    std::env::set_var(RECV_BYTES_VAR, n);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        // A full name picks that scenario alone (hello-100 is not hello-1000); anything else
        // is a prefix (hello picks all four).
        let exact = Scenario::ALL.iter().any(|s| s.name() == filter);
        let scenarios: Vec<Scenario> = Scenario::ALL
            .iter()
            .copied()
            .filter(|s| {
                if exact {
                    s.name() == filter
                } else {
                    s.name().starts_with(&filter)
                }
            })
            .collect();
        if scenarios.is_empty() {
            return Err(format!("no scenario is called {filter:?}"));
        }
        let default_secs = if quick { 2 } else { 10 };
        Ok(Options {
            duration: duration.unwrap_or(Duration::from_secs(default_secs)),
            bulk_bytes: if quick { QUICK_BULK_BYTES } else { BULK_BYTES },
            pipeline,
            backend,
            client,
            scenarios,
        })
    }
}

/// One measurement, run against a server of its own.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    Hello { connections: usize },
    Upload { chunked: bool },
    Download,
    Idle { connections: usize },
}

impl Scenario {
    const ALL: [Scenario; 8] = [
        Scenario::Hello { connections: 16 },
        Scenario::Hello { connections: 100 },
        Scenario::Hello { connections: 1_000 },
        Scenario::Hello {
            connections: 10_000,
        },
        Scenario::Upload { chunked: false },
        Scenario::Upload { chunked: true },
        Scenario::Download,
        Scenario::Idle {
            connections: IDLE_CONNECTIONS,
        },
    ];

    fn name(self) -> String {
        match self {
            Scenario::Hello { connections } => format!("hello-{connections}"),
            Scenario::Upload { chunked: false } => "upload-cl".into(),
            Scenario::Upload { chunked: true } => "upload-chunked".into(),
            Scenario::Download => "download".into(),
            Scenario::Idle { connections } => format!("idle-{connections}"),
        }
    }
}

// ---- the server side (the child process) ----

/// `bench --serve`: serve the benchmark applications on a free loopback port, print the
/// address on stdout, and run until stdin closes (the parent ends or stops us).
/// How `--recv-bytes` reaches the server child.
const RECV_BYTES_VAR: &str = "WAITRESS_BENCH_RECV_BYTES";

fn serve_for_bench(backend: Backend) -> Result<(), Box<dyn std::error::Error>> {
    let recv_bytes = std::env::var(RECV_BYTES_VAR).unwrap_or_else(|_| "8192".to_string());
    // Room for 10,000 connections and more; a child process inherits the parent's limit,
    // raised in `run_benchmark`, and this covers a server started by hand.
    waitress::compat::raise_open_files_limit(65_536)?;
    // Under load the queue is seldom empty: waitress warns "Task queue depth is N" each time.
    let levels = waitress::utilities::LogLevels::parse("info,waitress.queue=error")?;
    waitress::utilities::set_log_levels(&levels);
    let server = waitress::create_server(
        bench_app,
        [
            ("listen", "127.0.0.1:0"),
            ("threads", SERVER_THREADS),
            // poll(2) or epoll(7) rather than select()'s semantics, which refuse descriptors
            // from 1024 on; and room for the 10,000-connection scenarios.
            (backend.setting(), "true"),
            ("connection_limit", "20000"),
            ("backlog", "4096"),
            ("recv_bytes", recv_bytes.as_str()),
            // Above the 1 GiB upload (waitress answers 413 from max_request_body_size on).
            ("max_request_body_size", "4294967296"),
        ],
    )?;
    println!("127.0.0.1:{}", server.effective_port());
    io::stdout().flush()?;
    let stop = server.shutdown_handle();
    thread::spawn(move || {
        // Returns at end of file: the parent closed our stdin, or died.
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        stop.shutdown();
    });
    server.run()?;
    Ok(())
}

/// The applications, by path.
fn bench_app(environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
    match environ.get("PATH_INFO").unwrap_or("") {
        "/upload" => discard_upload(environ, start_response),
        "/download" => download(environ, start_response),
        _ => waitress::apps::hello(environ, start_response),
    }
}

/// Read the whole request body, keep nothing, answer with its length.
fn discard_upload(environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
    let received = io::copy(environ.input(), &mut io::sink())?.to_string();
    start_response.start(
        "200 OK",
        [
            ("Content-Type", "text/plain".to_string()),
            ("Content-Length", received.len().to_string()),
        ],
    )?;
    Ok(received.into())
}

/// A file of `QUERY_STRING` bytes, streamed by the server through `wsgi.file_wrapper`. The
/// file is written with real bytes before the answer starts (a sparse file would measure the
/// kernel zero-filling its holes, not the server) and unlinked at once, so nothing is left
/// behind; the server reads it block by block as it would any file.
fn download(environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let bytes: u64 = environ.get("QUERY_STRING").unwrap_or("").parse()?;
    let path = std::env::temp_dir().join(format!(
        "waitress-bench-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    fs::remove_file(&path)?;
    let mut file = file;
    let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
    start_response.start(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream".to_string()),
            ("Content-Length", bytes.to_string()),
        ],
    )?;
    Ok(environ.file_wrapper(file, BLOCK))
}

/// The child process running `bench --serve`, stopped when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Start the server and wait (at most 10 s) for the address it listens on.
    fn start(backend: Backend) -> io::Result<ServerProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve")
            .arg(backend.name())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = tx.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
        });
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(line)) => line.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the server printed {line:?}, not its address"),
                )
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the server did not start within 10 s",
            )),
        };
        let mut server = ServerProcess {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
        };
        // On an error `server` is dropped here, which stops the child.
        server.addr = addr?;
        Ok(server)
    }

    /// The server's resident memory now and at its peak.
    fn memory(&self) -> Memory {
        Memory::of(self.child.id())
    }

    /// The processor time the server has used so far, user and system, in clock ticks
    /// (`utime` + `stime` of `/proc/PID/stat`; `USER_HZ`, 100 a second on Linux).
    fn cpu_ticks(&self) -> Option<u64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // The fields after the command name (which may hold spaces), from field 3 on.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }
}

impl Drop for ServerProcess {
    /// Close the server's stdin (it shuts down gracefully), wait up to 5 s, then kill it.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("bench: the server did not stop within 5 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process in KiB, from `/proc/PID/status` (`None` where there is none).
#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    /// `VmRSS`: resident now.
    rss_kib: Option<u64>,
    /// `VmHWM`: the most it has been resident since it started.
    peak_kib: Option<u64>,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }
}

// ---- the client side ----

/// Open `count` connections to `addr` (blocking, each bounded by `IO_TIMEOUT`); stops at the
/// first failure and says why.
fn open_connections(addr: SocketAddr, count: usize) -> (Vec<TcpStream>, Option<String>) {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                streams.push(stream);
            }
            Err(e) => return (streams, Some(e.to_string())),
        }
    }
    (streams, None)
}

/// A response head: its length (through the blank line), status code and `Content-Length`.
struct Head {
    len: usize,
    status: u16,
    content_length: u64,
}

/// Parse the response head at the start of `buf`: `Ok(None)` while it is incomplete. The
/// server's answers here always carry a `Content-Length`.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let end = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => end,
        None => return Ok(None),
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let content_length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .ok_or_else(|| format!("a response without Content-Length: {head:?}"))?;
    Ok(Some(Head {
        len: end + 4,
        status,
        content_length,
    }))
}

/// Read one whole response from a blocking stream; returns its status and body. `buf` holds
/// what arrived beyond it (nothing, unless the server answers unasked).
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(u16, Vec<u8>)> {
    let bad = |message: String| io::Error::new(io::ErrorKind::InvalidData, message);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head) = parse_head(buf).map_err(bad)? {
            let total = head.len + head.content_length as usize;
            if buf.len() >= total {
                let body = buf[head.len..total].to_vec();
                buf.drain(..total);
                return Ok((head.status, body));
            }
        }
        match stream.read(&mut chunk)? {
            0 => return Err(bad("the server closed the connection".into())),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What one client thread counted in the measured window.
#[derive(Default)]
struct Tally {
    responses: u64,
    /// Latency of each counted response, in microseconds.
    latencies_us: Vec<u32>,
    /// Responses other than 200.
    not_ok: u64,
    /// Connections lost, and the first reason.
    lost: u64,
    first_error: Option<String>,
}

impl Tally {
    fn lose(&mut self, why: String) {
        self.lost += 1;
        self.first_error.get_or_insert(why);
    }

    fn merge(&mut self, other: Tally) {
        self.responses += other.responses;
        self.latencies_us.extend(other.latencies_us);
        self.not_ok += other.not_ok;
        self.lost += other.lost;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One keep-alive connection of the load generator.
struct Conn {
    stream: TcpStream,
    /// Bytes received and not yet parsed.
    inbuf: Vec<u8>,
    /// Requests not yet written (the socket may take less than asked).
    outbuf: Vec<u8>,
    /// When each request in flight was queued, oldest first.
    sent: VecDeque<Instant>,
}

impl Conn {
    /// Queue one request and try to write it at once.
    fn send(&mut self) -> Result<(), String> {
        self.outbuf.extend_from_slice(HELLO_REQUEST);
        self.sent.push_back(Instant::now());
        self.flush()
    }

    /// What to wait for: a response, and room to write if a request is not all written.
    fn events(&self) -> i16 {
        if self.outbuf.is_empty() {
            POLLIN
        } else {
            POLLIN | POLLOUT
        }
    }

    /// Write what the socket takes now.
    fn flush(&mut self) -> Result<(), String> {
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(0) => return Err("the connection stopped taking data".into()),
                Ok(n) => drop(self.outbuf.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// The socket is readable: take what has arrived, count every complete response (when
    /// `counting`), and send a new request for each.
    fn receive(
        &mut self,
        scratch: &mut [u8],
        counting: bool,
        tally: &mut Tally,
    ) -> Result<(), String> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let now = Instant::now();
        while let Some(head) = parse_head(&self.inbuf)? {
            let total = head.len + head.content_length as usize;
            if self.inbuf.len() < total {
                break;
            }
            self.inbuf.drain(..total);
            let sent = self.sent.pop_front().ok_or("a response nobody asked for")?;
            if counting {
                tally.responses += 1;
                let micros = now.duration_since(sent).as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
                if head.status != 200 {
                    tally.not_ok += 1;
                }
            }
            self.send()?;
        }
        Ok(())
    }
}

/// How the load generator waits on its connections (`--client`): `poll(2)` over all of
/// them each round, as before, or `epoll(7)`, whose cost does not grow with their number, so
/// that at 10,000 connections the figure is the server's rather than the client's.
enum Waiter {
    /// One `pollfd` per connection, by index; a negative descriptor is skipped.
    Poll(Vec<PollFd>),
    /// The connections registered by descriptor (the `data` of their events); `interest` is
    /// what each connection, by index, is registered for; `index_of` maps descriptors back.
    #[cfg(target_os = "linux")]
    Epoll {
        epoll: Epoll,
        events: Vec<EpollEvent>,
        interest: Vec<i16>,
        index_of: Vec<usize>,
    },
}

impl Waiter {
    fn new(client: Backend, connections: usize) -> io::Result<Waiter> {
        Ok(match client {
            Backend::Poll => Waiter::Poll(vec![
                PollFd {
                    fd: -1,
                    events: 0,
                    revents: 0,
                };
                connections
            ]),
            #[cfg(target_os = "linux")]
            Backend::Epoll => Waiter::Epoll {
                epoll: Epoll::new()?,
                events: vec![EpollEvent::default(); connections.max(1)],
                interest: vec![0; connections],
                index_of: Vec::new(),
            },
            #[cfg(not(target_os = "linux"))]
            Backend::Epoll => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "epoll is Linux only",
                ))
            }
        })
    }

    /// Wait for `events` (`POLL*` flags; 0: no longer) on connection `index`, descriptor `fd`.
    fn watch(&mut self, index: usize, fd: RawFd, events: i16) -> io::Result<()> {
        match self {
            Waiter::Poll(fds) => {
                fds[index] = PollFd {
                    fd: if events == 0 { -1 } else { fd },
                    events,
                    revents: 0,
                };
            }
            #[cfg(target_os = "linux")]
            Waiter::Epoll {
                epoll,
                interest,
                index_of,
                ..
            } => {
                let slot = usize::try_from(fd).expect("descriptors are not negative");
                if index_of.len() <= slot {
                    index_of.resize(slot + 1, usize::MAX);
                }
                index_of[slot] = index;
                let bits = |flags: i16| {
                    let mut bits = 0;
                    if flags & POLLIN != 0 {
                        bits |= EPOLLIN;
                    }
                    if flags & POLLOUT != 0 {
                        bits |= EPOLLOUT;
                    }
                    bits
                };
                match (interest[index], events) {
                    (before, after) if before == after => {}
                    (_, 0) => epoll.delete(fd)?,
                    (0, after) => epoll.add(fd, bits(after))?,
                    (_, after) => epoll.modify(fd, bits(after))?,
                }
                interest[index] = events;
            }
        }
        Ok(())
    }

    /// Wait at most `timeout`; `ready` gets each ready connection's index and `POLL*` flags.
    fn wait(&mut self, timeout: Duration, ready: &mut Vec<(usize, i16)>) -> io::Result<()> {
        ready.clear();
        match self {
            Waiter::Poll(fds) => {
                poll_fds(fds, timeout)?;
                for (index, pollfd) in fds.iter_mut().enumerate() {
                    if pollfd.revents != 0 {
                        ready.push((index, pollfd.revents));
                        pollfd.revents = 0;
                    }
                }
            }
            #[cfg(target_os = "linux")]
            Waiter::Epoll {
                epoll,
                events,
                index_of,
                ..
            } => {
                let count = epoll.wait(events, timeout)?;
                for event in &events[..count] {
                    let (bits, fd) = (event.events, event.data);
                    let index = index_of[fd as usize];
                    let mut flags = 0;
                    for (epoll_bit, poll_flag) in [
                        (EPOLLIN, POLLIN),
                        (EPOLLOUT, POLLOUT),
                        (EPOLLHUP, POLLHUP),
                        (EPOLLERR, POLLERR),
                    ] {
                        if bits & epoll_bit != 0 {
                            flags |= poll_flag;
                        }
                    }
                    ready.push((index, flags));
                }
            }
        }
        Ok(())
    }
}

/// Drive `streams` until `until`, `depth` requests in flight on each; responses that complete
/// from `count_from` on are counted. `client` says how to wait on them.
fn drive(
    streams: Vec<TcpStream>,
    depth: usize,
    client: Backend,
    count_from: Instant,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut waiter = match Waiter::new(client, streams.len()) {
        Ok(waiter) => waiter,
        Err(e) => {
            tally.first_error = Some(format!("{}: {e}", client.name()));
            return tally;
        }
    };
    let mut conns = Vec::with_capacity(streams.len());
    for (index, stream) in streams.into_iter().enumerate() {
        let fd = stream.as_raw_fd();
        let mut conn = Conn {
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            sent: VecDeque::new(),
        };
        let started = conn
            .stream
            .set_nonblocking(true)
            .map_err(|e| e.to_string())
            .and_then(|()| (0..depth).try_for_each(|_| conn.send()))
            .and_then(|()| {
                waiter
                    .watch(index, fd, conn.events())
                    .map_err(|e| e.to_string())
            });
        if let Err(why) = started {
            tally.lose(why);
        }
        conns.push(conn);
    }
    let mut scratch = vec![0u8; 64 * 1024];
    let mut ready = Vec::new();
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let wait = (until - now).min(Duration::from_millis(100));
        if let Err(e) = waiter.wait(wait, &mut ready) {
            tally
                .first_error
                .get_or_insert(format!("{}: {e}", client.name()));
            break;
        }
        let counting = Instant::now() >= count_from;
        for &(index, revents) in &ready {
            let conn = &mut conns[index];
            let mut result = Ok(());
            if revents & POLLOUT != 0 {
                result = conn.flush();
            }
            if result.is_ok() && revents & (POLLIN | POLLHUP | POLLERR) != 0 {
                result = conn.receive(&mut scratch, counting, &mut tally);
            }
            let fd = conn.stream.as_raw_fd();
            let events = if result.is_ok() { conn.events() } else { 0 };
            let result =
                result.and_then(|()| waiter.watch(index, fd, events).map_err(|e| e.to_string()));
            if let Err(why) = result {
                tally.lose(why);
                let _ = waiter.watch(index, fd, 0);
            }
        }
    }
    tally
}

// ---- the scenarios ----

/// One line of the result table.
#[derive(Default)]
struct Row {
    name: String,
    connections: usize,
    /// Requests per second, or MB/s (10^6 bytes) for bulk transfers.
    throughput: String,
    p50: Option<Duration>,
    p99: Option<Duration>,
    memory: Memory,
    note: String,
}

fn run_benchmark(options: &Options) -> i32 {
    // The load generator needs a descriptor per connection (and the child server inherits it).
    let wanted = IDLE_CONNECTIONS as u64 + 1_000;
    match waitress::compat::raise_open_files_limit(wanted) {
        Ok(limit) if limit < wanted => eprintln!(
            "bench: the open-files limit is {limit}, under the {wanted} the 10,000-connection \
             scenarios need: they will report how many connections they could open"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("bench: could not raise the open-files limit: {e}"),
    }
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "waitress-rs bench, {} ({cores} cores): server with {SERVER_THREADS} worker threads and {}, \
         {CLIENT_THREADS} client threads waiting with {}, pipeline {}, {:.0} s per hello scenario\n",
        waitress::utilities::http_date_now(),
        options.backend.setting(),
        options.client.name(),
        options.pipeline,
        options.duration.as_secs_f64()
    );
    let mut rows = Vec::new();
    let mut failed = false;
    for &scenario in &options.scenarios {
        eprintln!("bench: running {} ...", scenario.name());
        let row = ServerProcess::start(options.backend).and_then(|server| match scenario {
            Scenario::Hello { connections } => hello(&server, connections, options),
            Scenario::Upload { chunked } => upload(&server, chunked, options.bulk_bytes),
            Scenario::Download => download_bulk(&server, options.bulk_bytes),
            Scenario::Idle { connections } => idle(&server, connections),
        });
        match row {
            Ok(mut row) => {
                row.name = scenario.name();
                eprintln!("bench: {}", format_row(&row));
                rows.push(row);
            }
            Err(e) => {
                failed = true;
                eprintln!("bench: {} failed: {e}", scenario.name());
                rows.push(Row {
                    name: scenario.name(),
                    note: format!("failed: {e}"),
                    ..Row::default()
                });
            }
        }
    }
    println!("| scenario | connections | throughput | p50 | p99 | server RSS | peak RSS | notes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for row in &rows {
        println!("{}", format_row(row));
    }
    i32::from(failed)
}

/// Keep-alive hello world over `connections` connections.
fn hello(server: &ServerProcess, connections: usize, options: &Options) -> io::Result<Row> {
    let threads = CLIENT_THREADS.min(connections);
    let warm_up = (options.duration / 5).min(Duration::from_secs(1));
    // Every thread opens its connections, then all start together.
    let ready = Barrier::new(threads + 1);
    let (tally, opened, open_error, memory, cpu_ticks) = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let share = connections / threads + usize::from(i < connections % threads);
                let ready = &ready;
                scope.spawn(move || {
                    let (streams, error) = open_connections(server.addr, share);
                    let opened = streams.len();
                    ready.wait();
                    let count_from = Instant::now() + warm_up;
                    let tally = drive(
                        streams,
                        options.pipeline,
                        options.client,
                        count_from,
                        count_from + options.duration,
                    );
                    (tally, opened, error)
                })
            })
            .collect();
        ready.wait();
        thread::sleep(warm_up);
        let cpu_before = server.cpu_ticks();
        // Read the server's memory near the end of the load, connections still open.
        thread::sleep(options.duration * 9 / 10);
        let memory = server.memory();
        let mut total = Tally::default();
        let (mut opened, mut open_error) = (0, None);
        for worker in workers {
            let (tally, n, error) = worker.join().expect("a client thread panicked");
            total.merge(tally);
            opened += n;
            open_error = open_error.or(error);
        }
        let cpu = cpu_before.zip(server.cpu_ticks()).map(|(a, b)| b - a);
        (total, opened, open_error, memory, cpu)
    });
    let mut latencies = tally.latencies_us;
    latencies.sort_unstable();
    let mut notes = Vec::new();
    // The server's processor time per response: steadier than the rate on a shared machine.
    if let (Some(ticks), true) = (cpu_ticks, tally.responses > 0) {
        let micros = ticks as f64 * 10_000.0 / tally.responses as f64;
        notes.push(format!("server CPU {micros:.1} µs/req"));
    }
    if opened < connections {
        notes.push(format!(
            "opened {opened} of {connections}: {}",
            open_error.unwrap_or_default()
        ));
    }
    if tally.responses == 0 {
        notes.push("no response completed in the measured time".into());
    }
    if tally.not_ok > 0 {
        notes.push(format!("{} responses not 200", tally.not_ok));
    }
    if tally.lost > 0 {
        notes.push(format!(
            "{} connections lost ({})",
            tally.lost,
            tally.first_error.unwrap_or_default()
        ));
    }
    Ok(Row {
        connections: opened,
        throughput: format!(
            "{} req/s",
            thousands((tally.responses as f64 / options.duration.as_secs_f64()) as u64)
        ),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        memory,
        note: notes.join("; "),
        ..Row::default()
    })
}

/// `bytes` uploaded in one request, with `Content-Length` or chunked, into an application
/// that reads and discards them.
fn upload(server: &ServerProcess, chunked: bool, bytes: u64) -> io::Result<Row> {
    let mut stream = blocking_connection(server.addr)?;
    let started = Instant::now();
    let zeros = vec![0u8; BLOCK];
    if chunked {
        write!(
            stream,
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        )?;
        // Every chunk but the last is the same: one BLOCK, framed once.
        let mut frame = format!("{BLOCK:x}\r\n").into_bytes();
        frame.extend_from_slice(&zeros);
        frame.extend_from_slice(b"\r\n");
        let mut left = bytes;
        while left >= BLOCK as u64 {
            stream.write_all(&frame)?;
            left -= BLOCK as u64;
        }
        if left > 0 {
            write!(stream, "{left:x}\r\n")?;
            stream.write_all(&zeros[..left as usize])?;
            stream.write_all(b"\r\n")?;
        }
        stream.write_all(b"0\r\n\r\n")?;
    } else {
        write!(
            stream,
            "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {bytes}\r\n\r\n"
        )?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(BLOCK as u64) as usize;
            stream.write_all(&zeros[..n])?;
            left -= n as u64;
        }
    }
    let mut buf = Vec::new();
    let (status, body) = read_response(&mut stream, &mut buf)?;
    let elapsed = started.elapsed();
    let mut row = bulk_row(server, bytes, elapsed);
    // The application answers with the number of bytes it read.
    let received = String::from_utf8_lossy(&body).into_owned();
    if status != 200 || received != bytes.to_string() {
        row.note = format!("status {status}, the application read {received:?} bytes");
    }
    Ok(row)
}

/// `bytes` downloaded in one response that the server streams from a file wrapper.
fn download_bulk(server: &ServerProcess, bytes: u64) -> io::Result<Row> {
    let mut stream = blocking_connection(server.addr)?;
    write!(
        stream,
        "GET /download?{bytes} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )?;
    let mut buf = vec![0u8; BLOCK];
    let mut filled = 0;
    let head = loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no response head",
            ));
        }
        filled += n;
        let parsed = parse_head(&buf[..filled])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some(head) = parsed {
            break head;
        }
    };
    // Timed from the head on: the application writes its file before it answers.
    let started = Instant::now();
    // Read the rest of the body straight through the same buffer.
    let mut received = (filled - head.len) as u64;
    while received < head.content_length {
        match stream.read(&mut buf)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body cut short",
                ))
            }
            n => received += n as u64,
        }
    }
    let mut row = bulk_row(server, received, started.elapsed());
    if head.status != 200 || received != bytes {
        row.note = format!("status {}, {received} bytes", head.status);
    }
    Ok(row)
}

/// `connections` keep-alive connections that served one request each and now wait: the
/// server's resident memory per connection beyond what it held with one.
fn idle(server: &ServerProcess, connections: usize) -> io::Result<Row> {
    let mut buf = Vec::new();
    // The baseline: the server after a first request (worker threads and buffers warmed up).
    let mut first = blocking_connection(server.addr)?;
    first.write_all(HELLO_REQUEST)?;
    read_response(&mut first, &mut buf)?;
    let baseline = server.memory();
    let (mut streams, open_error) = open_connections(server.addr, connections);
    for stream in &mut streams {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(HELLO_REQUEST)?;
    }
    for stream in &mut streams {
        read_response(stream, &mut buf)?;
    }
    // Give the I/O thread a moment to settle after the last answer, then measure.
    thread::sleep(Duration::from_millis(500));
    let memory = server.memory();
    let opened = streams.len();
    let mut note = match (baseline.rss_kib, memory.rss_kib) {
        (Some(before), Some(after)) if opened > 0 => format!(
            "{:.2} KiB per idle connection beyond the baseline of {:.1} MiB",
            after.saturating_sub(before) as f64 / opened as f64,
            before as f64 / 1024.0
        ),
        _ => "no /proc/PID/status to read".into(),
    };
    if let Some(e) = open_error {
        note.push_str(&format!("; opened {opened} of {connections}: {e}"));
    }
    Ok(Row {
        connections: opened,
        throughput: "-".into(),
        memory,
        note,
        ..Row::default()
    })
}

/// A connection for one bulk transfer: blocking, every read and write bounded.
fn blocking_connection(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// The row of a bulk transfer of `bytes` that took `elapsed`.
fn bulk_row(server: &ServerProcess, bytes: u64, elapsed: Duration) -> Row {
    Row {
        connections: 1,
        throughput: format!(
            "{} MB/s ({} MiB)",
            thousands((bytes as f64 / elapsed.as_secs_f64() / 1e6) as u64),
            bytes >> 20
        ),
        memory: server.memory(),
        ..Row::default()
    }
}

// ---- formatting ----

/// The value below which a fraction `q` of the sorted `values` (microseconds) lie.
fn percentile(sorted_us: &[u32], q: f64) -> Option<Duration> {
    let last = sorted_us.len().checked_sub(1)?;
    let index = ((sorted_us.len() as f64 * q) as usize).min(last);
    Some(Duration::from_micros(u64::from(sorted_us[index])))
}

fn format_row(row: &Row) -> String {
    let latency = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.2} ms", d.as_secs_f64() * 1e3)
        })
    };
    let mib =
        |kib: Option<u64>| kib.map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        row.name,
        thousands(row.connections as u64),
        row.throughput,
        latency(row.p50),
        latency(row.p99),
        mib(row.memory.rss_kib),
        mib(row.memory.peak_kib),
        row.note
    )
}

/// `12345` as `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
