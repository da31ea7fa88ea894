//! The access log over real sockets: every field with the values of a real request, responses
//! the server writes itself (400, 431, 500), a client that goes away mid-response, HEAD, and a
//! request through a trusted proxy. Lines are read from a log sink installed for this binary;
//! each test finds its own lines by a path of its own, since tests run side by side.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use support::{serve_fn, Client, Response, ServerGuard, Transport};
use waitress::adjustments::Adjustments;
use waitress::utilities::{set_log_sink, Level, LogSink};
use waitress::{AppResult, Body, Environ, StartResponse};

/// Every `waitress.access` record of this test binary.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Recorder;

impl LogSink for Recorder {
    fn log(&self, level: Level, logger: &str, message: &str) {
        if logger == "waitress.access" {
            assert_eq!(level, Level::Info);
            LINES.lock().unwrap().push(message.to_string());
        }
    }
}

fn record_access_lines() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Quiet the rest first: the support module installs its sink only once.
        support::quiet_logs();
        set_log_sink(Arc::new(Recorder));
    });
}

/// The one access line containing `marker`, waited for (the writer thread logs it a moment
/// after the response).
fn line_with(marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<String> = LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(marker))
            .cloned()
            .collect();
        match found.len() {
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            0 => panic!(
                "no access line with {marker:?} in {:?}",
                LINES.lock().unwrap()
            ),
            1 => return found[0].clone(),
            _ => panic!("several access lines with {marker:?}: {found:?}"),
        }
    }
}

/// Serve `app` with the access log on, lines in `format`, and the `more` settings.
fn serve_logged<F>(app: F, format: &str, more: &[(&str, &str)]) -> ServerGuard
where
    F: Fn(&mut Environ, &mut StartResponse<'_>) -> AppResult + Send + Sync + 'static,
{
    record_access_lines();
    let mut settings = vec![("access_log", "true"), ("access_log_format", format)];
    settings.extend_from_slice(more);
    serve_fn(app, &settings, Transport::Tcp)
}

/// Send `request` on a new connection and read the response.
fn ask(server: &ServerGuard, request: &[u8]) -> Response {
    let mut client = Client::connect(&server.target);
    client.send(request);
    client.read_response().expect("a response")
}

fn hello(environ: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    if environ.get("PATH_INFO") == Some("/user") {
        environ.set("REMOTE_USER", "ann");
    }
    sr.start("200 OK", [("Content-Type", "text/plain")])?;
    Ok(Body::from("Hello, World!"))
}

#[test]
fn each_field_of_a_real_request() {
    let format =
        "%h|%a|%l|%u|%t|%r|%m|%U|%q|%H|%s|%>s|%b|%B|%D|%T|%X|%{X-Marker}i|%{Missing}i|%%|%{remote}p";
    let server = serve_logged(hello, format, &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.tcp_port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /user?a=1 HTTP/1.1\r\nHost: x\r\nX-Marker: each-field\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"Hello, World!") {
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let line = line_with("|each-field|");
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(fields.len(), 21, "{line}");
    assert_eq!(&fields[..4], ["127.0.0.1", "127.0.0.1", "-", "ann"]);
    let time = fields[4];
    assert!(
        time.starts_with('[') && time.ends_with(" +0000]") && time.len() == 28,
        "{time}"
    );
    assert_eq!(
        &fields[5..14],
        [
            "GET /user?a=1 HTTP/1.1",
            "GET",
            "/user",
            "?a=1",
            "HTTP/1.1",
            "200",
            "200",
            "13",
            "13"
        ]
    );
    let micros: u64 = fields[14].parse().expect("%D is a number");
    let secs: u64 = fields[15].parse().expect("%T is a number");
    assert!(micros < 20_000_000 && secs == micros / 1_000_000, "{line}");
    assert_eq!(&fields[16..20], ["+", "each-field", "-", "%"]);
    assert_eq!(
        fields[20],
        stream.local_addr().unwrap().port().to_string(),
        "%{{remote}}p is the client's port"
    );
}

#[test]
fn default_format_is_combined_plus_time_and_connection() {
    record_access_lines();
    let server = serve_fn(hello, &[("access_log", "true")], Transport::Tcp);
    let mut client = Client::connect(&server.target);
    client.send(
        b"GET /combined HTTP/1.0\r\nReferer: http://r.example/\r\nUser-Agent: ua \"q\"\r\n\r\n",
    );
    assert_eq!(client.read_response().unwrap().status, 200);
    let line = line_with("/combined");
    let (start, rest) = line.split_once(" [").unwrap();
    assert_eq!(start, "127.0.0.1 - -");
    let (_time, rest) = rest.split_once("] ").unwrap();
    let (before_micros, micros_and_x) = rest.rsplit_once("\" ").unwrap();
    assert_eq!(
        before_micros,
        "\"GET /combined HTTP/1.0\" 200 13 \"http://r.example/\" \"ua \\\"q\\\""
    );
    // HTTP/1.0 without keep-alive: the server closes after the response.
    let (micros, x) = micros_and_x.split_once(' ').unwrap();
    assert!(micros.parse::<u64>().is_ok(), "{line}");
    assert_eq!(x, "-");
}

#[test]
fn off_by_default() {
    record_access_lines();
    let server = serve_fn(hello, &[], Transport::Tcp);
    let mut client = Client::connect(&server.target);
    client.send(b"GET /not-logged HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(client.read_response().unwrap().status, 200);
    // A line being written would be through before close() returns: close flushes the log.
    drop(server);
    waitress::access_log::flush(Duration::from_secs(5));
    assert!(!LINES
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("/not-logged")));
}

#[test]
fn error_responses_written_by_the_server() {
    let failing = |environ: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
        if environ.get("PATH_INFO") == Some("/fail") {
            return Err("the application failed".into());
        }
        hello(environ, sr)
    };
    let server = serve_logged(
        failing,
        "%s %b %X %r",
        &[("max_request_header_size", "1000")],
    );
    // 400: a header line without a colon.
    let response = ask(
        &server,
        b"GET /bad-header HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    );
    assert_eq!(response.status, 400);
    assert_eq!(
        line_with("/bad-header"),
        format!("400 {} - GET /bad-header HTTP/1.1", response.body.len())
    );
    // 431: a head over max_request_header_size. The parser answers it as waitress does, for a
    // stand-in request line (`GET / HTTP/1.0`): that is the line logged.
    let big = "a".repeat(2000);
    let response = ask(
        &server,
        format!("GET /too-big HTTP/1.1\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(response.status, 431);
    assert_eq!(
        line_with("431 "),
        format!("431 {} - GET / HTTP/1.0", response.body.len())
    );
    // 500: the application failed before starting its response.
    let response = ask(&server, b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 500);
    assert_eq!(
        line_with("/fail"),
        format!("500 {} - GET /fail HTTP/1.1", response.body.len())
    );
}

#[test]
fn head_counts_no_body_bytes() {
    // A HEAD answer announces the length of the GET body but sends none, even when the
    // application returns it (the server drops it): the log counts what went out.
    let app = |_environ: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
        sr.start("200 OK", [("Content-Length", "5")])?;
        Ok(Body::from("hello"))
    };
    let server = serve_logged(app, "%r %s %b %B", &[]);
    let mut client = Client::connect(&server.target);
    client.send(b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\nGET /get HTTP/1.1\r\nHost: x\r\n\r\n");
    // The HEAD answer has a Content-Length but no body: read the head only.
    let status = client.read_line().unwrap();
    assert!(status.starts_with(b"HTTP/1.1 200"));
    while client.read_line().unwrap() != b"\r\n" {}
    assert_eq!(client.read_response().unwrap().body, b"hello");
    assert_eq!(line_with("/head"), "HEAD /head HTTP/1.1 200 - 0");
    assert_eq!(line_with("/get"), "GET /get HTTP/1.1 200 5 5");
}

#[test]
fn a_client_that_goes_away_is_logged_as_such() {
    const TOTAL: usize = 64 << 20;
    // 64 MiB in 64 KiB chunks; with a 1 MiB high watermark the worker waits for the client,
    // which never reads the body but leaves.
    let app = |_environ: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
        sr.start("200 OK", [("Content-Length", TOTAL.to_string())])?;
        let chunk = vec![b'x'; 64 << 10];
        Ok(Body::from_chunks(
            std::iter::repeat(chunk).take(TOTAL / (64 << 10)).map(Ok),
        ))
    };
    let server = serve_logged(app, "%r %s %B %X", &[("outbuf_high_watermark", "1048576")]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.tcp_port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    drop(stream);
    let line = line_with("/gone");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[..5], ["GET", "/gone", "HTTP/1.1", "200", fields[4]]);
    let bytes: usize = fields[4].parse().unwrap();
    assert!(bytes > 0 && bytes < TOTAL, "{line}");
    assert_eq!(fields[5], "X", "{line}");
}

#[test]
fn a_proxied_request_logs_the_client_address() {
    let server = serve_logged(
        hello,
        "%h %r",
        &[
            ("trusted_proxy", "127.0.0.1"),
            ("trusted_proxy_headers", "x-forwarded-for"),
        ],
    );
    let mut client = Client::connect(&server.target);
    client.send(b"GET /proxied HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n");
    assert_eq!(client.read_response().unwrap().status, 200);
    assert_eq!(line_with("/proxied"), "203.0.113.9 GET /proxied HTTP/1.1");
    // A bad proxy header gets a 400 from the middleware; the line shows the peer.
    client.send(b"GET /proxied-bad HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: \"foo\r\n\r\n");
    let response = client.read_response().unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(
        line_with("/proxied-bad"),
        "127.0.0.1 GET /proxied-bad HTTP/1.1"
    );
}

#[test]
fn a_bad_format_is_refused_at_start() {
    let error = Adjustments::new([("access_log_format", "%h %Z")]).unwrap_err();
    assert!(
        error.to_string().contains("unknown access log field %Z"),
        "{error}"
    );
}
