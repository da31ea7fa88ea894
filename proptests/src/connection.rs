//! Whole-connection fuzzing against a real server (issue 9): random valid and invalid
//! requests, pipelined on one connection and written in random fragments, with pauses.
//!
//! Each request of a case carries what the server must do with it: answer 200 (echoing its
//! method, path and body) and keep the connection or close it, or answer an error status and
//! close. The client checks the responses in order against that model: every complete request
//! up to the first one that closes is answered exactly once, nothing is answered after it, and
//! the connection then ends. Every read has a deadline, so a server that hangs fails the case
//! instead of the run; a panic anywhere in the process (the server's threads included) fails
//! it too, as does a server thread that stopped.
//!
//! Three servers serve the cases (one is picked per case): one with waitress's defaults but
//! small limits, one that also reads ahead (`channel_request_lookahead`) in small `recv`s and
//! waits with `poll()` rather than `select()`, and on Linux the same with the epoll loop
//! (`asyncore_use_epoll`). All are started once for the run, not per case, to keep it fast.
//!
//! The run is bounded and reproducible in CI (a fixed seed, [`CASES`] cases); for a long local
//! run set `PROPTEST_CASES` (say 5000) and `PROPTEST_RNG_SEED` (any number) to explore more.
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{mpsc, Arc, Mutex, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use waitress::utilities::{set_log_sink, Level, LogSink};
use waitress::{AppResult, Body, Environ, StartResponse};

/// Cases per run when `PROPTEST_CASES` is not set.
const CASES: u32 = 128;
/// The seed when `PROPTEST_RNG_SEED` is not set.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// The servers' `max_request_header_size` and `max_request_body_size`: small, so that the
/// cases can cross them cheaply.
const MAX_HEADER: usize = 4096;
const MAX_BODY: usize = 8192;
/// How long the client waits for any one read before calling the server hung.
const READ_DEADLINE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------------------------

/// The application: `METHOD PATH_INFO body-length`, a newline, then the body.
fn echo(env: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    let body = waitress::apps::read_body(env)?;
    let mut out = format!(
        "{} {} {}\n",
        env.get("REQUEST_METHOD").unwrap_or(""),
        env.get("PATH_INFO").unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    sr.start("200 OK", [("Content-Length", out.len().to_string())])?;
    Ok(Body::from(out))
}

struct Quiet;

impl LogSink for Quiet {
    fn log(&self, _level: Level, _logger: &str, _message: &str) {}
}

/// Every panic of the process, whatever thread it happened on.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(info.to_string());
            default(info);
        }));
    });
}

struct Server {
    port: u16,
    thread: JoinHandle<()>,
}

fn start(settings: &[(&str, &str)]) -> Server {
    let mut kw: Vec<(String, String)> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    kw.push(("listen".into(), "127.0.0.1:0".into()));
    kw.push(("max_request_header_size".into(), MAX_HEADER.to_string()));
    kw.push(("max_request_body_size".into(), MAX_BODY.to_string()));
    // Bodies past 256 bytes go to a temporary file.
    kw.push(("inbuf_overflow".into(), "256".into()));
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let server = waitress::create_server(echo, kw).expect("the fuzzed server starts");
        tx.send(server.effective_port())
            .expect("the test waits for the port");
        server.run().expect("the loop runs");
    });
    let port = rx.recv().expect("the server reports its port");
    Server {
        port: port.tcp().expect("a TCP port"),
        thread,
    }
}

/// How many servers serve the cases.
const SERVERS: usize = if cfg!(target_os = "linux") { 3 } else { 2 };

/// The servers, started on first use and kept for the whole run.
fn servers() -> &'static [Server] {
    static STARTED: OnceLock<Vec<Server>> = OnceLock::new();
    STARTED.get_or_init(|| {
        record_panics();
        if std::env::var_os("WAITRESS_TEST_LOG").is_none() {
            set_log_sink(Arc::new(Quiet));
        }
        // Reading ahead in small `recv`s, waiting in the loop that `backend` selects.
        let reading_ahead = |backend| {
            start(&[
                ("channel_request_lookahead", "3"),
                ("recv_bytes", "64"),
                (backend, "true"),
            ])
        };
        let mut servers = vec![start(&[]), reading_ahead("asyncore_use_poll")];
        if cfg!(target_os = "linux") {
            servers.push(reading_ahead("asyncore_use_epoll"));
        }
        assert_eq!(servers.len(), SERVERS);
        servers
    })
}

// ---------------------------------------------------------------------------------------------
// The requests and what the server must do with each
// ---------------------------------------------------------------------------------------------

/// What the server must answer to one request.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// 200 with the echo of method, path and body; then the connection stays open or closes.
    Echo {
        method: String,
        path: String,
        body: Vec<u8>,
        close: bool,
    },
    /// This error status, then a close. When `or_413`, a 413 is right too: the error is in a
    /// chunked body, and the chunked receiver takes everything after an error as consumed (as
    /// waitress's does), so when the same read brings `max_request_body_size` bytes more (the
    /// requests pipelined behind it), the size check, which comes first, answers instead.
    Error { status: u16, or_413: bool },
}

impl Expect {
    /// For failure messages: the body by its length.
    fn describe(&self) -> String {
        match self {
            Expect::Echo {
                method,
                path,
                body,
                close,
            } => format!(
                "200 for {method} {path} with a {}-byte body, then {}",
                body.len(),
                if *close {
                    "close"
                } else {
                    "keep the connection"
                }
            ),
            Expect::Error { status, or_413 } => {
                let or = if *or_413 { " (or 413)" } else { "" };
                format!("{status}{or}, then close")
            }
        }
    }
}

/// One request on the wire and its expected answer.
#[derive(Clone)]
struct Request {
    wire: Vec<u8>,
    expect: Expect,
}

impl std::fmt::Debug for Request {
    /// The first bytes as text and the expectation: readable in a failure report.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 200;
        let text = String::from_utf8_lossy(&self.wire[..self.wire.len().min(SHOWN)]);
        let more = self.wire.len().saturating_sub(SHOWN);
        write!(f, "{text:?} (+{more} bytes): {}", self.expect.describe())
    }
}

/// How a valid request frames its body.
#[derive(Clone, Debug)]
enum Framing {
    /// No body and no framing header.
    None,
    ContentLength,
    /// Chunked (HTTP/1.1 only), with the chunk sizes cut from this list and the size lines'
    /// spelling varied.
    Chunked {
        cuts: Vec<usize>,
        upper: bool,
        zeros: usize,
        ext: bool,
        trailer: bool,
        also_cl: bool,
    },
}

/// Something wrong with a request, and the status the server must answer it with.
#[derive(Clone, Copy, Debug)]
enum Anomaly {
    LowercaseMethod,
    BadVersion(&'static str),
    SpaceInTarget,
    NonAsciiTarget,
    HeaderWithoutColon,
    SpaceBeforeColon,
    ControlInValue(u8),
    BareLfInHeader,
    BareCrInHeader,
    FoldFirstHeader,
    DuplicateContentLength,
    DuplicateHost,
    BadContentLength(&'static str),
    UnsupportedTransferEncoding(&'static str),
    HeadTooLarge,
    DeclaredBodyTooLarge,
    ChunkedBodyTooLarge,
    BadChunkSize(&'static str),
    BadChunkExtension(&'static str),
    ChunkNotTerminated,
    ChunkLineTooLong,
}

impl Anomaly {
    fn status(self) -> u16 {
        match self {
            Anomaly::UnsupportedTransferEncoding(_) => 501,
            Anomaly::HeadTooLarge => 431,
            Anomaly::DeclaredBodyTooLarge | Anomaly::ChunkedBodyTooLarge => 413,
            _ => 400,
        }
    }
}

fn anomaly() -> impl Strategy<Value = Anomaly> {
    use Anomaly::*;
    prop_oneof![
        Just(LowercaseMethod),
        prop_oneof![
            Just("HTTP/1"),
            Just("HTTP/11"),
            Just("http/1.1"),
            Just("HTTP/1.1x"),
            Just("HTTP 1.1")
        ]
        .prop_map(BadVersion),
        Just(SpaceInTarget),
        Just(NonAsciiTarget),
        Just(HeaderWithoutColon),
        Just(SpaceBeforeColon),
        prop_oneof![Just(0u8), Just(1), Just(0x1f), Just(0x7f)].prop_map(ControlInValue),
        Just(BareLfInHeader),
        Just(BareCrInHeader),
        Just(FoldFirstHeader),
        Just(DuplicateContentLength),
        Just(DuplicateHost),
        prop_oneof![
            Just("abc"),
            Just("-1"),
            Just("+5"),
            Just("1.0"),
            Just("0x10"),
            Just("5 5"),
            Just("5, 5")
        ]
        .prop_map(BadContentLength),
        prop_oneof![
            Just("gzip"),
            Just("gzip, chunked"),
            Just("chunked, chunked"),
            Just("chunked, identity")
        ]
        .prop_map(UnsupportedTransferEncoding),
        Just(HeadTooLarge),
        Just(DeclaredBodyTooLarge),
        Just(ChunkedBodyTooLarge),
        prop_oneof![
            Just("xyz"),
            Just("-1"),
            Just("1 1"),
            Just(" 5"),
            Just("0x5")
        ]
        .prop_map(BadChunkSize),
        prop_oneof![Just("5;"), Just("5; a"), Just("5;a=\"x"), Just("5;=b")]
            .prop_map(BadChunkExtension),
        Just(ChunkNotTerminated),
        Just(ChunkLineTooLong),
    ]
}

/// The random choices for one request; [`build`] turns them into bytes and an expectation.
#[derive(Clone, Debug)]
struct Spec {
    method: &'static str,
    path: String,
    query: Option<String>,
    absolute: bool,
    /// `HTTP/1.1`, `HTTP/1.0`, `HTTP/1.2`, or none at all (`GET /path`).
    version: &'static str,
    connection: Option<&'static str>,
    host: bool,
    expect_continue: bool,
    headers: Vec<(String, String, bool)>,
    body: Vec<u8>,
    framing: Framing,
    blank_line_before: bool,
    anomaly: Option<Anomaly>,
    /// Instead of all the above: one line of random bytes (no CR or LF) starting with a
    /// lower-case letter, then the blank line. Whatever else it holds, it is not a start line
    /// waitress accepts (no match, or a method in lower case): a 400.
    garbage: Option<Vec<u8>>,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::None),
        Just(Framing::ContentLength),
        (
            proptest::collection::vec(1usize..120, 1..5),
            any::<bool>(),
            0usize..3,
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.15),
        )
            .prop_map(|(cuts, upper, zeros, ext, trailer, also_cl)| {
                Framing::Chunked {
                    cuts,
                    upper,
                    zeros,
                    ext,
                    trailer,
                    also_cl,
                }
            }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (
            prop_oneof![
                Just("GET"),
                Just("POST"),
                Just("PUT"),
                Just("DELETE"),
                Just("OPTIONS"),
                Just("PATCH"),
                Just("HEAD")
            ],
            "[a-z0-9/.-]{0,12}",
            proptest::option::of("[a-z0-9=&%]{0,10}"),
            prop::bool::weighted(0.2),
            prop_oneof![
                12 => Just("HTTP/1.1"),
                2 => Just("HTTP/1.0"),
                1 => Just("HTTP/1.2"),
                1 => Just(""),
            ],
            prop_oneof![
                6 => Just(None),
                1 => Just(Some("close")),
                2 => Just(Some("keep-alive")),
                1 => Just(Some("Keep-Alive")),
            ],
            any::<bool>(),
            prop::bool::weighted(0.15),
        ),
        (
            proptest::collection::vec(
                (
                    "[A-Za-z0-9!#$%&'*+.^`|~-]{1,10}",
                    "[ -~\t\u{80}-\u{ff}]{0,16}",
                    prop::bool::weighted(0.1),
                ),
                0..4,
            ),
            proptest::collection::vec(any::<u8>(), 0..600),
            framing(),
            prop::bool::weighted(0.1),
            prop::option::weighted(0.15, anomaly()),
            prop::option::weighted(
                0.05,
                "[a-z][\\x00-\\x09\\x0b\\x0c\\x0e-\u{ff}]{0,120}"
                    .prop_map(|line| line.chars().map(|c| c as u8).collect::<Vec<u8>>()),
            ),
        ),
    )
        .prop_map(
            |(
                (method, path, query, absolute, version, connection, host, expect_continue),
                (headers, body, framing, blank_line_before, anomaly, garbage),
            )| Spec {
                method,
                path,
                query,
                absolute,
                version,
                connection,
                host,
                expect_continue,
                headers,
                body,
                framing,
                blank_line_before,
                anomaly,
                garbage,
            },
        )
}

/// A chunked body: `body` cut by `cuts`, the size lines spelled as asked.
fn chunked(body: &[u8], framing: &Framing) -> Vec<u8> {
    let Framing::Chunked {
        cuts,
        upper,
        zeros,
        ext,
        trailer,
        ..
    } = framing
    else {
        unreachable!("only for chunked framing")
    };
    let mut wire = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts[i % cuts.len()].min(rest.len());
        let size = if *upper {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        wire.extend_from_slice("0".repeat(*zeros).as_bytes());
        wire.extend_from_slice(size.as_bytes());
        if *ext {
            wire.extend_from_slice(b";name=value;q=\"a b\"");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&rest[..n]);
        wire.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    wire.extend_from_slice(b"0\r\n");
    if *trailer {
        wire.extend_from_slice(b"X-Trailer: done\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    wire
}

/// The request `spec` as the `index`th of its connection. The path starts with `/r<index>`, so
/// that an answer to the wrong request shows.
fn build(spec: &Spec, index: usize) -> Request {
    use Anomaly::*;
    if let Some(line) = &spec.garbage {
        let mut wire = line.clone();
        wire.extend_from_slice(b"\r\n\r\n");
        return Request {
            wire,
            expect: Expect::Error {
                status: 400,
                or_413: false,
            },
        };
    }
    let anomaly = spec.anomaly;
    let path = format!("/r{index}/{}", spec.path);
    let mut method = spec.method.to_string();
    let mut version = spec.version.to_string();
    let mut target = if spec.absolute {
        format!("http://example.com{path}")
    } else {
        path.clone()
    }
    .into_bytes();
    if let Some(query) = &spec.query {
        target.extend_from_slice(format!("?{query}").as_bytes());
    }
    match anomaly {
        Some(LowercaseMethod) => method = method.to_ascii_lowercase(),
        Some(BadVersion(v)) => version = v.to_string(),
        Some(SpaceInTarget) => target.extend_from_slice(b" x"),
        Some(NonAsciiTarget) => target.extend_from_slice(b"caf\xe9"),
        _ => {}
    }
    // The framing headers only HTTP/1.1 obeys; a body for HTTP/1.0 goes by Content-Length.
    let v11 = version == "HTTP/1.1";
    let mut framing = spec.framing.clone();
    if matches!(framing, Framing::Chunked { .. }) && !v11 {
        framing = Framing::ContentLength;
    }
    let chunked_anomaly = matches!(
        anomaly,
        Some(
            ChunkedBodyTooLarge
                | BadChunkSize(_)
                | BadChunkExtension(_)
                | ChunkNotTerminated
                | ChunkLineTooLong
        )
    );
    if chunked_anomaly || matches!(anomaly, Some(UnsupportedTransferEncoding(_))) {
        // These need HTTP/1.1 to be read as chunked at all.
        version = "HTTP/1.1".to_string();
    }
    let mut body = spec.body.clone();
    if matches!(framing, Framing::None) {
        body.clear();
    }

    let mut head = Vec::new();
    if spec.blank_line_before {
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(&target);
    if !version.is_empty() {
        head.push(b' ');
        head.extend_from_slice(version.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let mut header = |line: &[u8]| {
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n");
    };
    if matches!(anomaly, Some(FoldFirstHeader)) {
        header(b" folded: onto nothing");
    }
    if spec.host {
        header(b"Host: example.com");
    }
    if let Some(connection) = spec.connection {
        header(format!("Connection: {connection}").as_bytes());
    }
    if spec.expect_continue && v11 {
        header(b"Expect: 100-continue");
    }
    for (i, (name, value, fold)) in spec.headers.iter().enumerate() {
        // An `X<i>-` prefix keeps clear of the headers that frame the request.
        let value: Vec<u8> = value.trim().chars().map(|c| c as u8).collect();
        let mut line = format!("X{i}-{name}: ").into_bytes();
        line.extend_from_slice(&value);
        if *fold {
            line.extend_from_slice(b"\r\n\tcontinued");
        }
        header(&line);
    }
    match anomaly {
        Some(HeaderWithoutColon) => header(b"X-No-Colon value"),
        Some(SpaceBeforeColon) => header(b"X-Space : value"),
        Some(ControlInValue(b)) => header(&[b"X-Ctl: a".as_slice(), &[b, b'b']].concat()),
        Some(BareLfInHeader) => header(b"X-A: b\nX-B: c"),
        Some(BareCrInHeader) => header(b"X-A: b\rX-B: c"),
        Some(DuplicateHost) => {
            header(b"Host: a.example");
            header(b"Host: b.example");
        }
        Some(UnsupportedTransferEncoding(te)) => {
            header(format!("Transfer-Encoding: {te}").as_bytes())
        }
        Some(HeadTooLarge) => header(format!("X-Big: {}", "b".repeat(MAX_HEADER)).as_bytes()),
        _ => {}
    }
    let mut body_wire = Vec::new();
    if chunked_anomaly {
        header(b"Transfer-Encoding: chunked");
        body_wire = match anomaly {
            Some(ChunkedBodyTooLarge) => {
                let mut wire = format!("{:x}\r\n", MAX_BODY).into_bytes();
                wire.extend_from_slice(&[b'z'; MAX_BODY]);
                wire.extend_from_slice(b"\r\n0\r\n\r\n");
                wire
            }
            Some(BadChunkSize(size)) => format!("3\r\nabc\r\n{size}\r\nhello\r\n0\r\n\r\n").into(),
            Some(BadChunkExtension(line)) => format!("{line}\r\nhello\r\n0\r\n\r\n").into(),
            Some(ChunkNotTerminated) => b"3\r\nabcXY0\r\n\r\n".to_vec(),
            Some(ChunkLineTooLong) => {
                let mut wire = vec![b'0'; 5000];
                wire.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
                wire
            }
            _ => unreachable!("a chunked anomaly"),
        };
    } else if matches!(anomaly, Some(DeclaredBodyTooLarge)) {
        header(format!("Content-Length: {MAX_BODY}").as_bytes());
    } else if let Some(BadContentLength(cl)) = anomaly {
        header(format!("Content-Length: {cl}").as_bytes());
    } else if matches!(anomaly, Some(DuplicateContentLength)) {
        header(format!("Content-Length: {}", body.len()).as_bytes());
        header(format!("Content-Length: {}", body.len()).as_bytes());
        body_wire = body.clone();
    } else if !matches!(anomaly, Some(UnsupportedTransferEncoding(_))) {
        match &framing {
            Framing::None => {}
            Framing::ContentLength => {
                header(format!("Content-Length: {}", body.len()).as_bytes());
                body_wire = body.clone();
            }
            Framing::Chunked { also_cl, .. } => {
                if *also_cl {
                    header(b"Content-Length: 3");
                }
                header(b"Transfer-Encoding: chunked");
                body_wire = chunked(&body, &framing);
            }
        }
    }
    head.extend_from_slice(b"\r\n");
    let mut wire = head;
    wire.extend_from_slice(&body_wire);

    let expect = match anomaly {
        Some(a) => Expect::Error {
            status: a.status(),
            or_413: chunked_anomaly,
        },
        // A chunked body counts against `max_request_body_size` with its framing.
        None if matches!(framing, Framing::Chunked { .. }) && body_wire.len() >= MAX_BODY => {
            Expect::Error {
                status: 413,
                or_413: false,
            }
        }
        None => {
            let connection = spec.connection.unwrap_or("").to_ascii_lowercase();
            let close = if v11 {
                connection == "close" || matches!(framing, Framing::Chunked { also_cl: true, .. })
            } else {
                connection != "keep-alive"
            };
            Expect::Echo {
                method,
                path,
                body,
                close,
            }
        }
    };
    Request { wire, expect }
}

/// A connection's worth of requests, how its bytes are cut into writes, and how it ends.
#[derive(Clone, Debug)]
struct Case {
    server: usize,
    requests: Vec<Request>,
    /// Sizes of the successive writes, cycled.
    pieces: Vec<usize>,
    /// Which of the first writes are followed by a short pause, one bit each.
    pauses: u16,
    /// Half-close after the last request instead of ending with a `Connection: close` one.
    half_close: bool,
    /// With a half-close: the start of one more request, cut short before it is complete. The
    /// server must not answer it, nor wait for the rest of it once the stream has ended.
    partial: Option<Partial>,
}

/// The bytes of a request cut short.
#[derive(Clone)]
struct Partial(Vec<u8>);

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// The start of a valid request, cut anywhere before its end.
fn partial(spec: &Spec, cut: prop::sample::Index, index: usize) -> Partial {
    let mut spec = spec.clone();
    // Nothing that makes the server answer before the request is complete.
    spec.anomaly = None;
    spec.garbage = None;
    spec.expect_continue = false;
    let mut wire = build(&spec, index).wire;
    wire.truncate(cut.index(wire.len()));
    Partial(wire)
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..SERVERS,
        proptest::collection::vec(spec(), 1..8),
        proptest::collection::vec(prop_oneof![1usize..8, 8usize..200, 200usize..4000], 1..12),
        any::<u16>(),
        prop::bool::weighted(0.3),
        prop::option::weighted(0.5, (spec(), any::<prop::sample::Index>())),
    )
        .prop_map(|(server, specs, pieces, pauses, half_close, cut)| {
            let requests: Vec<Request> =
                specs.iter().enumerate().map(|(i, s)| build(s, i)).collect();
            let partial = cut
                .filter(|_| half_close)
                .map(|(spec, at)| partial(&spec, at, requests.len()));
            Case {
                server,
                requests,
                pieces,
                pauses,
                half_close,
                partial,
            }
        })
}

/// The request that ends a case without a half-close, once the others are answered.
const LAST: &[u8] = b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Write `wire` in pieces of the case's sizes, pausing after some of the first ones. Stops at
/// the first error: the server may close early, after an error response.
fn write_pieces(mut conn: TcpStream, wire: Vec<u8>, pieces: Vec<usize>, pauses: u16, half: bool) {
    let mut pos = 0;
    let mut i = 0;
    while pos < wire.len() {
        let end = (pos + pieces[i % pieces.len()]).min(wire.len());
        if conn.write_all(&wire[pos..end]).is_err() {
            return;
        }
        if i < 16 && pauses & (1 << i) != 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        pos = end;
        i += 1;
    }
    if half {
        let _ = conn.shutdown(Shutdown::Write);
    }
}

/// How a read ended other than with data.
fn read_failure(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no answer within {READ_DEADLINE:?}: the server hangs")
        }
        _ => format!("read error: {e}"),
    }
}

/// One line, or `None` at the end of the stream (a reset counts as an end).
fn line(reader: &mut BufReader<TcpStream>) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(line)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
        Err(e) => Err(read_failure(e)),
    }
}

/// A response's status and headers (names lower-cased).
type Head = (u16, Vec<(String, String)>);

/// A response head: status and headers (names lower-cased). `None` at the end of the stream.
/// Interim `100 Continue` responses are skipped.
fn response_head(reader: &mut BufReader<TcpStream>) -> Result<Option<Head>, String> {
    loop {
        let status_line = match line(reader)? {
            Some(l) => l,
            None => return Ok(None),
        };
        let text = String::from_utf8_lossy(&status_line).to_string();
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a status line: {text:?}"))?;
        if !text.starts_with("HTTP/1.") {
            return Err(format!("not a status line: {text:?}"));
        }
        let mut headers = Vec::new();
        loop {
            let l = line(reader)?.ok_or("the connection ended inside a response head")?;
            if l == b"\r\n" {
                break;
            }
            let l = String::from_utf8_lossy(&l).trim_end().to_string();
            let (name, value) = l
                .split_once(": ")
                .ok_or_else(|| format!("bad header line {l:?}"))?;
            headers.push((name.to_ascii_lowercase(), value.to_string()));
        }
        if status != 100 {
            return Ok(Some((status, headers)));
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Read to the end of the stream; what came.
fn rest(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match reader.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(out),
        Err(e) => Err(read_failure(e)),
    }
}

/// Run one case: send, then check every answer against the model. `Err` says what went wrong.
fn run(case: &Case) -> Result<(), String> {
    let server = &servers()[case.server];
    let conn = TcpStream::connect(("127.0.0.1", server.port)).map_err(|e| e.to_string())?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(READ_DEADLINE))
        .map_err(|e| e.to_string())?;
    let mut wire: Vec<u8> = case.requests.iter().flat_map(|r| r.wire.clone()).collect();
    if !case.half_close {
        wire.extend_from_slice(LAST);
    }
    if let Some(Partial(partial)) = &case.partial {
        wire.extend_from_slice(partial);
    }
    let writer = {
        let conn = conn.try_clone().map_err(|e| e.to_string())?;
        let (pieces, pauses, half) = (case.pieces.clone(), case.pauses, case.half_close);
        std::thread::spawn(move || write_pieces(conn, wire, pieces, pauses, half))
    };
    let mut reader = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
    let outcome = check_answers(case, &mut reader);
    // Unblock the writer whatever happened, then wait for it.
    let _ = conn.shutdown(Shutdown::Both);
    writer
        .join()
        .map_err(|_| "the writer panicked".to_string())?;
    outcome
}

fn check_answers(case: &Case, reader: &mut BufReader<TcpStream>) -> Result<(), String> {
    let last = Expect::Echo {
        method: "GET".into(),
        path: "/last".into(),
        body: Vec::new(),
        close: true,
    };
    let mut expected: Vec<&Expect> = case.requests.iter().map(|r| &r.expect).collect();
    if !case.half_close {
        expected.push(&last);
    }
    for (i, expect) in expected.into_iter().enumerate() {
        let (status, headers) = response_head(reader)?.ok_or_else(|| {
            format!(
                "request {i} (expecting {}) got no answer: the connection ended",
                expect.describe()
            )
        })?;
        let closes = header(&headers, "connection").is_some_and(|c| c == "close");
        match expect {
            Expect::Error {
                status: due,
                or_413,
            } => {
                if status != *due && !(*or_413 && status == 413) {
                    return Err(format!(
                        "request {i}: status {status}, expected {}",
                        expect.describe()
                    ));
                }
                if !closes {
                    return Err(format!(
                        "request {i}: error {status} without Connection: close"
                    ));
                }
                // The body (if the request was not a HEAD), then the end of the stream.
                let body = rest(reader)?;
                let length: usize = header(&headers, "content-length")
                    .and_then(|v| v.parse().ok())
                    .ok_or("an error response without Content-Length")?;
                if body.len() != length && !body.is_empty() {
                    return Err(format!(
                        "request {i}: after the error, {} bytes came where {length} were due: {:?}",
                        body.len(),
                        String::from_utf8_lossy(&body)
                    ));
                }
                return Ok(());
            }
            Expect::Echo {
                method,
                path,
                body,
                close,
            } => {
                if status != 200 {
                    return Err(format!(
                        "request {i} (expecting {}): status {status}",
                        expect.describe()
                    ));
                }
                if closes != *close {
                    return Err(format!(
                        "request {i} (expecting {}): Connection: close is {closes}",
                        expect.describe()
                    ));
                }
                let length: usize = header(&headers, "content-length")
                    .and_then(|v| v.parse().ok())
                    .ok_or("a response without Content-Length")?;
                let mut want = format!("{method} {path} {}\n", body.len()).into_bytes();
                want.extend_from_slice(body);
                if length != want.len() {
                    return Err(format!(
                        "request {i}: Content-Length {length}, expected {}",
                        want.len()
                    ));
                }
                if method != "HEAD" {
                    let mut got = vec![0; length];
                    reader.read_exact(&mut got).map_err(read_failure)?;
                    if got != want {
                        return Err(format!(
                            "request {i}: body {:?}, expected {:?}",
                            String::from_utf8_lossy(&got),
                            String::from_utf8_lossy(&want)
                        ));
                    }
                }
                if *close {
                    let more = rest(reader)?;
                    if !more.is_empty() {
                        return Err(format!(
                            "request {i} closes, yet {} more bytes came: {:?}",
                            more.len(),
                            String::from_utf8_lossy(&more)
                        ));
                    }
                    return Ok(());
                }
            }
        }
    }
    // Only a half-closed connection gets here: every request was answered and kept the
    // connection; the server closes it now that the client's stream has ended, without an
    // answer to a request cut short.
    let more = rest(reader)?;
    if more.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} bytes after the last answer: {:?}",
            more.len(),
            String::from_utf8_lossy(&more)
        ))
    }
}

/// The run's configuration: [`CASES`] cases from [`SEED`] unless the environment says
/// otherwise, and a bounded shrink (each step of it is a network exchange).
fn config() -> ProptestConfig {
    let env = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            env.cases
        } else {
            CASES
        },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            env.rng_seed
        } else {
            RngSeed::Fixed(SEED)
        },
        max_shrink_iters: 200,
        max_shrink_time: 60_000,
        ..env
    }
}

proptest! {
    #![proptest_config(config())]

    /// Each request is answered exactly once, in order, as the model says, or the connection
    /// ends where the model says; no panic, no hang, the servers stay up.
    #[test]
    fn every_request_is_answered_once_or_the_connection_closes(case in case()) {
        let result = run(&case);
        let panics = std::mem::take(&mut *PANICS.lock().unwrap_or_else(|e| e.into_inner()));
        prop_assert!(panics.is_empty(), "panics: {:?}", panics);
        for (i, server) in servers().iter().enumerate() {
            prop_assert!(!server.thread.is_finished(), "server {} stopped", i);
        }
        if let Err(message) = result {
            prop_assert!(false, "{}\nrequests: {:#?}", message, case.requests);
        }
    }
}
