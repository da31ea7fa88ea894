//! Port of waitress's tests/test_functional.py: a real server per test, on a background
//! thread, driven over TCP and over a Unix socket with raw HTTP bytes. Each test keeps
//! waitress's name; the `tcp` and `unix` modules at the bottom run every test both ways, as
//! waitress's `Tcp*Tests`/`Unix*Tests` classes do.
//!
//! Where two waitress classes share a test name, or a name says too little, the port renames:
//! - test_equal_body, test_no_content_length (WriteCallbackTests): asserted by
//!   test_writecb_equal_body and test_writecb_no_content_length, beside test_writecb_short_body
//!   and test_writecb_long_body (BadContentLengthTests keeps test_short_body/test_long_body);
//! - test_it (SleepyThreadTests): asserted by test_sleepy_request_does_not_block_others (the
//!   quick request is answered while the sleepy one still runs).

mod support;

use std::sync::{mpsc, Arc, Mutex};

use support::{serve_fn, Client, Echo, Response, Transport};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const S32: &[u8] = b"This string has 32 characters.\r\n";
/// How long a test waits for the server's side of a hand-shake before failing.
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);
const ERROR_HEADERS: [&str; 5] = [
    "connection",
    "content-length",
    "content-type",
    "date",
    "server",
];

fn echo_server(t: Transport) -> support::ServerGuard {
    serve_fn(
        support::echo,
        &[
            ("trusted_proxy", "*"),
            ("trusted_proxy_count", "1"),
            ("trusted_proxy_headers", "x-forwarded-for x-forwarded-proto"),
            ("clear_untrusted_proxy_headers", "true"),
        ],
        t,
    )
}

fn exchange(server: &support::ServerGuard, request: &[u8]) -> (Client, Response) {
    let mut client = Client::connect(&server.target);
    client.send(request);
    let response = client.read_response().expect("a response");
    (client, response)
}

fn read_echo(server: &support::ServerGuard, request: &[u8]) -> (Response, Echo) {
    let (_client, response) = exchange(server, request);
    let echo = Echo::parse(&response.body);
    (response, echo)
}

// EchoTests

fn test_date_and_server(t: Transport) {
    let server = echo_server(t);
    let (r, _) = read_echo(&server, b"GET / HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    r.assert_line(200, "OK", "HTTP/1.0");
    assert_eq!(r.header("server"), Some("waitress"));
    assert!(r.header("date").map_or(false, |d| d.ends_with(" GMT")));
}

fn test_bad_host_header(t: Transport) {
    let server = echo_server(t);
    let (_c, r) = exchange(&server, b"GET / HTTP/1.0\r\n Host: 0\r\n\r\n");
    r.assert_line(400, "Bad Request", "HTTP/1.0");
    assert_eq!(r.header("server"), Some("waitress"));
    assert!(r.header("date").is_some());
}

fn send_with_body(server: &support::ServerGuard) {
    let (r, echo) = read_echo(server, b"GET / HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello");
    r.assert_line(200, "OK", "HTTP/1.0");
    assert_eq!(echo.field("content_length").as_deref(), Some("5"));
    assert_eq!(echo.body, b"hello");
}

fn send_empty_body(server: &support::ServerGuard) {
    let (r, echo) = read_echo(server, b"GET / HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    r.assert_line(200, "OK", "HTTP/1.0");
    assert_eq!(echo.field("content_length").as_deref(), Some("0"));
    assert_eq!(echo.body, b"");
}

fn test_send_with_body(t: Transport) {
    send_with_body(&echo_server(t));
}

fn test_send_empty_body(t: Transport) {
    send_empty_body(&echo_server(t));
}

fn test_multiple_requests_with_body(t: Transport) {
    let server = echo_server(t);
    for _ in 0..3 {
        send_with_body(&server);
    }
}

fn test_multiple_requests_without_body(t: Transport) {
    let server = echo_server(t);
    for _ in 0..3 {
        send_empty_body(&server);
    }
}

fn test_without_crlf(t: Transport) {
    let server = echo_server(t);
    let data = b"Echo\r\nthis\r\nplease";
    let mut request = format!(
        "GET / HTTP/1.0\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    request.extend_from_slice(data);
    let (r, echo) = read_echo(&server, &request);
    r.assert_line(200, "OK", "HTTP/1.0");
    assert_eq!(echo.field("content_length"), Some(data.len().to_string()));
    assert_eq!(echo.body, data);
}

fn test_large_body(t: Transport) {
    let server = echo_server(t);
    let body = S32.repeat(32);
    let mut request =
        format!("GET / HTTP/1.0\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(&body);
    let (r, echo) = read_echo(&server, &request);
    r.assert_line(200, "OK", "HTTP/1.0");
    assert_eq!(echo.field("content_length").as_deref(), Some("1024"));
    assert_eq!(echo.body, body);
}

fn test_many_clients(t: Transport) {
    let server = echo_server(t);
    let mut clients: Vec<Client> = (0..50)
        .map(|_| {
            let mut c = Client::connect(&server.target);
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n");
            c
        })
        .collect();
    for c in clients.iter_mut() {
        assert_eq!(c.read_response().expect("a response").status, 200);
    }
}

fn test_chunking_request_without_content(t: Transport) {
    let server = echo_server(t);
    let mut c = Client::connect(&server.target);
    c.send(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(b"0\r\n\r\n");
    let r = c.read_response().unwrap();
    r.assert_line(200, "OK", "HTTP/1.1");
    let echo = Echo::parse(&r.body);
    assert_eq!(echo.body, b"");
    assert_eq!(echo.field("content_length").as_deref(), Some("0"));
    assert!(r.header("transfer-encoding").is_none());
}

fn test_chunking_request_with_content(t: Transport) {
    let server = echo_server(t);
    let mut c = Client::connect(&server.target);
    c.send(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..12 {
        c.send(b"20\r\n");
        c.send(S32);
        c.send(b"\r\n");
    }
    c.send(b"0\r\n\r\n");
    let r = c.read_response().unwrap();
    r.assert_line(200, "OK", "HTTP/1.1");
    let echo = Echo::parse(&r.body);
    assert_eq!(echo.body, S32.repeat(12));
    assert_eq!(echo.field("content_length"), Some((32 * 12).to_string()));
    assert!(r.header("transfer-encoding").is_none());
}

fn broken_chunked(t: Transport, tail: &[u8], expect: Option<&str>) {
    let server = echo_server(t);
    let mut request = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(tail);
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(400, "Bad Request", "HTTP/1.1");
    assert_eq!(r.content_length(), r.body.len());
    if let Some(text) = expect {
        assert!(String::from_utf8_lossy(&r.body).contains(text), "{text}");
    }
    assert_eq!(r.header_names(), ERROR_HEADERS);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    c.assert_closed(&request);
}

fn test_broken_chunked_encoding(t: Transport) {
    broken_chunked(t, &[b"20\r\n", S32, b"\r\ngarbage\r\n"].concat(), None);
}

fn test_broken_chunked_encoding_invalid_hex(t: Transport) {
    broken_chunked(
        t,
        &[b"0x20\r\n", S32, b"\r\n"].concat(),
        Some("Invalid chunk size"),
    );
}

fn test_broken_chunked_encoding_invalid_extension(t: Transport) {
    broken_chunked(
        t,
        &[b"20;invalid=\r\n", S32, b"\r\n"].concat(),
        Some("Invalid chunk extension"),
    );
}

fn test_broken_chunked_encoding_missing_chunk_end(t: Transport) {
    broken_chunked(
        t,
        &[b"20\r\n", S32, b"garbage"].concat(),
        Some("Chunk not properly terminated"),
    );
}

fn keepalive(t: Transport, head: &str, data: &[u8]) -> Response {
    let server = echo_server(t);
    let mut request = format!("{head}Content-Length: {}\r\n\r\n", data.len()).into_bytes();
    request.extend_from_slice(data);
    exchange(&server, &request).1
}

fn test_keepalive_http_10(t: Transport) {
    let r = keepalive(t, "GET / HTTP/1.0\r\n", b"Default: Don't keep me alive");
    assert_eq!(r.status, 200);
    assert_ne!(r.header("connection"), Some("Keep-Alive"));
}

fn test_keepalive_http10_explicit(t: Transport) {
    let r = keepalive(
        t,
        "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n",
        b"Keep me alive",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("Keep-Alive"));
}

fn test_keepalive_http_11(t: Transport) {
    let r = keepalive(t, "GET / HTTP/1.1\r\n", b"Default: Keep me alive");
    assert_eq!(r.status, 200);
    assert_ne!(r.header("connection"), Some("close"));
}

fn test_keepalive_http11_explicit(t: Transport) {
    let r = keepalive(
        t,
        "GET / HTTP/1.1\r\nConnection: keep-alive\r\n",
        b"Default: Keep me alive",
    );
    assert_eq!(r.status, 200);
    assert_ne!(r.header("connection"), Some("close"));
}

fn test_keepalive_http11_connclose(t: Transport) {
    let r = keepalive(
        t,
        "GET / HTTP/1.1\r\nConnection: close\r\n",
        b"Don't keep me alive",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
}

fn test_proxy_headers(t: Transport) {
    let server = echo_server(t);
    let (r, echo) = read_echo(
        &server,
        b"GET / HTTP/1.0\r\nContent-Length: 0\r\nHost: www.google.com:8080\r\nX-Forwarded-For: 192.168.1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 5000\r\n\r\n",
    );
    r.assert_line(200, "OK", "HTTP/1.0");
    assert_eq!(r.header("server"), Some("waitress"));
    assert_eq!(echo.header("X_FORWARDED_PORT"), None);
    assert_eq!(echo.header("HOST").as_deref(), Some("www.google.com:8080"));
    assert_eq!(echo.field("scheme").as_deref(), Some("https"));
    assert_eq!(echo.field("remote_addr").as_deref(), Some("192.168.1.1"));
    assert_eq!(echo.field("remote_host").as_deref(), Some("192.168.1.1"));
}

fn test_malformed_proxy_header_is_a_400(t: Transport) {
    let server = echo_server(t);
    let (_c, r) = exchange(
        &server,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: gopher\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("Header \"X-Forwarded-Proto\" malformed."));
}

// PipeliningTests

fn test_pipelining(t: Transport) {
    let server = serve_fn(support::echo_body_only, &[], t);
    let count = 25;
    let mut request = Vec::new();
    for n in 1..=count {
        let body = format!("Response #{n}\r\n");
        let conn = if n < count { "keep-alive" } else { "close" };
        request.extend_from_slice(
            format!(
                "GET / HTTP/1.0\r\nConnection: {conn}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    let mut c = Client::connect(&server.target);
    c.send(&request);
    for n in 1..=count {
        let r = c.read_response().expect("a pipelined response");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("Response #{n}\r\n").as_bytes());
    }
}

// ExpectContinueTests

fn test_expect_continue(t: Transport) {
    let server = serve_fn(support::echo_body_only, &[], t);
    let data = b"I have expectations";
    let mut request = format!(
        "GET / HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        data.len()
    )
    .into_bytes();
    request.extend_from_slice(data);
    let mut c = Client::connect(&server.target);
    c.send(&request);
    assert_eq!(c.read_line().unwrap(), b"HTTP/1.1 100 Continue\r\n");
    assert_eq!(c.read_line().unwrap(), b"\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
}

fn test_expect_continue_is_sent_before_the_body(t: Transport) {
    let server = serve_fn(support::echo_body_only, &[], t);
    let mut c = Client::connect(&server.target);
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    // The client waits for the interim response before sending the body.
    assert_eq!(c.read_line().unwrap(), b"HTTP/1.1 100 Continue\r\n");
    assert_eq!(c.read_line().unwrap(), b"\r\n");
    c.send(b"body");
    let r = c.read_response().unwrap();
    assert_eq!(r.body, b"body");
}

// BadContentLengthTests

fn test_short_body(t: Transport) {
    let server = serve_fn(support::badcl, &[], t);
    let request =
        b"GET /short_body HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
    let (mut c, r) = exchange(&server, request);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), 10);
    assert_eq!(r.body, b"abcdefghi");
    c.assert_closed(request);
}

fn test_long_body(t: Transport) {
    let server = serve_fn(support::badcl, &[], t);
    let request = b"GET /long_body HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
    let (mut c, r) = exchange(&server, request);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), r.body.len());
    assert_eq!(r.body, b"abcdefgh");
    c.send(request);
    assert_eq!(c.read_response().unwrap().status, 200);
}

// NoContentLengthTests

fn nocl_request(path: &str, version: &str, keepalive: bool) -> Vec<u8> {
    let conn = if keepalive {
        "Connection: Keep-Alive\r\n"
    } else {
        ""
    };
    let mut request = format!(
        "GET {path} HTTP/{version}\r\n{conn}Content-Length: {}\r\n\r\n",
        ALPHABET.len()
    )
    .into_bytes();
    request.extend_from_slice(ALPHABET);
    request
}

fn chunked(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("{:X}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn test_http10_generator(t: Transport) {
    let server = serve_fn(support::nocl, &[], t);
    let request = nocl_request("/", "1.0", true);
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(200, "OK", "HTTP/1.0");
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, ALPHABET);
    c.assert_closed(&request);
}

fn test_http10_list(t: Transport) {
    let server = serve_fn(support::nocl, &[], t);
    let request = nocl_request("/list", "1.0", true);
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(200, "OK", "HTTP/1.0");
    assert_eq!(r.header("content-length"), Some("52"));
    assert_eq!(r.header("connection"), Some("Keep-Alive"));
    assert_eq!(r.body, ALPHABET);
    c.send(&request);
    c.read_response()
        .unwrap()
        .assert_line(200, "OK", "HTTP/1.0");
}

fn test_http10_listlentwo(t: Transport) {
    let server = serve_fn(support::nocl, &[], t);
    let request = nocl_request("/list_lentwo", "1.0", true);
    let (mut c, r) = exchange(&server, &request);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, ALPHABET);
    c.assert_closed(&request);
}

fn test_http11_generator(t: Transport) {
    let server = serve_fn(support::nocl, &[], t);
    let request = nocl_request("/", "1.1", false);
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(200, "OK", "HTTP/1.1");
    let parts: Vec<&[u8]> = ALPHABET.chunks(10).collect();
    assert_eq!(r.body, chunked(&parts));
    c.assert_closed(&request);
}

fn test_http11_list(t: Transport) {
    let server = serve_fn(support::nocl, &[], t);
    let request = nocl_request("/list", "1.1", false);
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(200, "OK", "HTTP/1.1");
    assert_eq!(r.header("content-length"), Some("52"));
    assert_eq!(r.body, ALPHABET);
    c.send(&request);
    c.read_response()
        .unwrap()
        .assert_line(200, "OK", "HTTP/1.1");
}

fn test_http11_listlentwo(t: Transport) {
    let server = serve_fn(support::nocl, &[], t);
    let request = nocl_request("/list_lentwo", "1.1", false);
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(200, "OK", "HTTP/1.1");
    assert_eq!(r.body, chunked(&[&ALPHABET[..1], &ALPHABET[1..]]));
    c.assert_closed(&request);
}

// WriteCallbackTests

fn writecb_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
        .into_bytes()
}

fn test_writecb_short_body(t: Transport) {
    let server = serve_fn(support::writecb, &[], t);
    let request = writecb_request("/short_body");
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(200, "OK", "HTTP/1.0");
    assert_eq!(r.content_length(), 9);
    assert_eq!(r.body, b"abcdefgh");
    c.assert_closed(&request);
}

fn test_writecb_long_body(t: Transport) {
    let server = serve_fn(support::writecb, &[], t);
    let request = writecb_request("/long_body");
    let (mut c, r) = exchange(&server, &request);
    assert_eq!(r.content_length(), 9);
    assert_eq!(r.body, b"abcdefghi");
    c.send(&request);
    c.read_response()
        .unwrap()
        .assert_line(200, "OK", "HTTP/1.0");
}

fn test_writecb_equal_body(t: Transport) {
    let server = serve_fn(support::writecb, &[], t);
    let request = writecb_request("/equal_body");
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(200, "OK", "HTTP/1.0");
    assert_eq!(r.content_length(), 9);
    assert_eq!(r.body, b"abcdefghi");
    c.send(&request);
    c.read_response()
        .unwrap()
        .assert_line(200, "OK", "HTTP/1.0");
}

fn test_writecb_no_content_length(t: Transport) {
    let server = serve_fn(support::writecb, &[], t);
    let request = writecb_request("/no_content_length");
    let (mut c, r) = exchange(&server, &request);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.body, b"abcdefghi");
    c.assert_closed(&request);
}

// TooLargeTests

const TOOBIG: usize = 1050;

fn toolarge_server(t: Transport) -> support::ServerGuard {
    serve_fn(
        support::toolarge,
        &[
            ("max_request_header_size", "1000"),
            ("max_request_body_size", "1000"),
        ],
        t,
    )
}

fn with_big_body(head: &[u8]) -> Vec<u8> {
    let mut request = head.to_vec();
    request.extend(std::iter::repeat(b'a').take(TOOBIG));
    request
}

fn test_request_headers_too_large_http11(t: Transport) {
    let server = toolarge_server(t);
    let mut request = b"GET / HTTP/1.1\r\nContent-Length: 0\r\n".to_vec();
    request.extend_from_slice(&b"X-Random-Header: 100\r\n".repeat(TOOBIG / 20));
    request.extend_from_slice(b"\r\n\r\n");
    let (_c, r) = exchange(&server, &request);
    r.assert_line(431, "Request Header Fields Too Large", "HTTP/1.0");
    assert_eq!(r.header("connection"), Some("close"));
}

/// The first request is served; what follows is read as a head and overruns the limit, or
/// the connection closes.
fn too_large(t: Transport, head: &[u8], version: &str, second_431: bool) {
    let server = toolarge_server(t);
    let request = with_big_body(head);
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(200, "OK", version);
    assert_eq!(r.content_length(), r.body.len());
    if second_431 {
        let r = c.read_response().unwrap();
        r.assert_line(431, "Request Header Fields Too Large", "HTTP/1.0");
        assert_eq!(r.content_length(), r.body.len());
    }
    c.assert_closed(&request);
}

fn test_request_body_too_large_with_wrong_cl_http10(t: Transport) {
    too_large(
        t,
        b"GET / HTTP/1.0\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.0",
        false,
    );
}

fn test_request_body_too_large_with_wrong_cl_http10_keepalive(t: Transport) {
    too_large(
        t,
        b"GET / HTTP/1.0\r\nContent-Length: 5\r\nConnection: Keep-Alive\r\n\r\n",
        "HTTP/1.0",
        true,
    );
}

fn test_request_body_too_large_with_no_cl_http10(t: Transport) {
    too_large(t, b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0", false);
}

fn test_request_body_too_large_with_no_cl_http10_keepalive(t: Transport) {
    too_large(
        t,
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        "HTTP/1.0",
        true,
    );
}

fn test_request_body_too_large_with_wrong_cl_http11(t: Transport) {
    too_large(
        t,
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1",
        true,
    );
}

fn test_request_body_too_large_with_wrong_cl_http11_connclose(t: Transport) {
    too_large(
        t,
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
        "HTTP/1.1",
        false,
    );
}

fn test_request_body_too_large_with_no_cl_http11(t: Transport) {
    too_large(t, b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1", true);
}

fn test_request_body_too_large_with_no_cl_http11_connclose(t: Transport) {
    too_large(
        t,
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "HTTP/1.1",
        false,
    );
}

fn test_request_body_too_large_chunked_encoding(t: Transport) {
    let server = toolarge_server(t);
    let mut request = b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let repeat = [b"20;\r\n", S32].concat();
    request.extend_from_slice(&repeat.repeat(TOOBIG / repeat.len() + 1));
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(413, "Request Entity Too Large", "HTTP/1.1");
    assert_eq!(r.content_length(), r.body.len());
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    c.assert_closed(&request);
}

// InternalServerErrorTests

fn error_server(t: Transport) -> support::ServerGuard {
    serve_fn(support::error, &[("expose_tracebacks", "true")], t)
}

fn internal_error(t: Transport, request: &[u8], version: &str) -> Response {
    let server = error_server(t);
    let (mut c, r) = exchange(&server, request);
    r.assert_line(500, "Internal Server Error", version);
    assert_eq!(r.content_length(), r.body.len());
    assert!(r.body.starts_with(b"Internal Server Error"));
    assert_eq!(r.header_names(), ERROR_HEADERS);
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed(request);
    r
}

fn test_before_start_response_http_10(t: Transport) {
    let r = internal_error(
        t,
        b"GET /before_start_response HTTP/1.0\r\n\r\n",
        "HTTP/1.0",
    );
    assert!(
        String::from_utf8_lossy(&r.body).contains("wrong"),
        "expose_tracebacks shows the error"
    );
}

fn test_before_start_response_http_11(t: Transport) {
    internal_error(
        t,
        b"GET /before_start_response HTTP/1.1\r\n\r\n",
        "HTTP/1.1",
    );
}

fn test_before_start_response_http_11_close(t: Transport) {
    internal_error(
        t,
        b"GET /before_start_response HTTP/1.1\r\nConnection: close\r\n\r\n",
        "HTTP/1.1",
    );
}

fn test_after_start_response_http10(t: Transport) {
    internal_error(t, b"GET /after_start_response HTTP/1.0\r\n\r\n", "HTTP/1.0");
}

fn test_after_start_response_http11(t: Transport) {
    internal_error(t, b"GET /after_start_response HTTP/1.1\r\n\r\n", "HTTP/1.1");
}

fn test_after_start_response_http11_close(t: Transport) {
    internal_error(
        t,
        b"GET /after_start_response HTTP/1.1\r\nConnection: close\r\n\r\n",
        "HTTP/1.1",
    );
}

fn test_after_write_cb(t: Transport) {
    let server = error_server(t);
    let request = b"GET /after_write_cb HTTP/1.1\r\n\r\n";
    let (mut c, r) = exchange(&server, request);
    r.assert_line(200, "OK", "HTTP/1.1");
    assert_eq!(r.body, b"");
    c.assert_closed(request);
}

fn test_in_generator(t: Transport) {
    let server = error_server(t);
    let request = b"GET /in_generator HTTP/1.1\r\n\r\n";
    let (mut c, r) = exchange(&server, request);
    r.assert_line(200, "OK", "HTTP/1.1");
    assert_eq!(r.body, b"");
    c.assert_closed(request);
}

fn test_application_panic_is_a_500_and_the_worker_survives(t: Transport) {
    let server = serve_fn(
        |env: &mut waitress::Environ, sr: &mut waitress::StartResponse<'_>| {
            if env.get("PATH_INFO") == Some("/panic") {
                panic!("boom");
            }
            sr.start("200 OK", [("Content-Length", "2")])?;
            Ok(waitress::Body::from("ok"))
        },
        &[("threads", "1")],
        t,
    );
    let (_c, r) = exchange(&server, b"GET /panic HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 500);
    assert!(r.body.ends_with(b"The server encountered an unexpected internal server error\r\n\r\n(generated by waitress)"));
    let (_c, r) = exchange(&server, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(r.body, b"ok");
}

// InternalServerErrorTestsWithTraceback

fn test_expose_tracebacks_http_10(t: Transport) {
    let server = serve_fn(
        support::error_traceback,
        &[("expose_tracebacks", "true")],
        t,
    );
    let request = b"GET / HTTP/1.0\r\n\r\n";
    let (mut c, r) = exchange(&server, request);
    r.assert_line(500, "Internal Server Error", "HTTP/1.0");
    assert_eq!(r.content_length(), r.body.len());
    assert!(r.body.starts_with(b"Internal Server Error"));
    assert!(String::from_utf8(r.body.clone())
        .unwrap()
        .contains("Invalid application: \u{20ac}"));
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed(request);
}

fn test_expose_tracebacks_http_11(t: Transport) {
    let server = serve_fn(
        support::error_traceback,
        &[("expose_tracebacks", "true")],
        t,
    );
    let request = b"GET / HTTP/1.1\r\n\r\n";
    let (mut c, r) = exchange(&server, request);
    r.assert_line(500, "Internal Server Error", "HTTP/1.1");
    assert_eq!(r.header_names(), ERROR_HEADERS);
    c.assert_closed(request);
}

// FileWrapperTests

fn file_request(path: &str, version: &str) -> Vec<u8> {
    format!("GET {path} HTTP/{version}\r\n\r\n").into_bytes()
}

/// Twice on one connection: the connection stays open.
fn file_kept_alive(t: Transport, path: &str, expected_cl: Option<usize>) {
    let server = serve_fn(support::filewrapper, &[], t);
    let payload = support::jpeg_payload();
    let mut c = Client::connect(&server.target);
    for _ in 0..2 {
        c.send(&file_request(path, "1.1"));
        let r = c
            .read_response()
            .expect("a response on the same connection");
        r.assert_line(200, "OK", "HTTP/1.1");
        assert_eq!(r.content_length(), r.body.len());
        if let Some(cl) = expected_cl {
            assert_eq!(r.content_length(), cl);
        }
        assert_eq!(r.header("content-type"), Some("image/jpeg"));
        assert!(payload.starts_with(&r.body));
        assert!(r.body.starts_with(b"\xff"));
    }
}

fn test_filelike_http11(t: Transport) {
    file_kept_alive(t, "/filelike", Some(support::jpeg_payload().len()));
}

fn test_filelike_nocl_http11(t: Transport) {
    file_kept_alive(t, "/filelike_nocl", Some(support::jpeg_payload().len()));
}

fn test_filelike_shortcl_http11(t: Transport) {
    file_kept_alive(t, "/filelike_shortcl", Some(1));
}

fn test_filelike_longcl_http11(t: Transport) {
    file_kept_alive(t, "/filelike_longcl", Some(support::jpeg_payload().len()));
}

fn test_notfilelike_http11(t: Transport) {
    file_kept_alive(t, "/notfilelike", Some(support::jpeg_payload().len()));
}

fn test_notfilelike_iobase_http11(t: Transport) {
    file_kept_alive(
        t,
        "/notfilelike_iobase",
        Some(support::jpeg_payload().len()),
    );
}

fn test_notfilelike_shortcl_http11(t: Transport) {
    file_kept_alive(t, "/notfilelike_shortcl", Some(1));
}

fn file_then_closed(t: Transport, path: &str, version: &str) -> Response {
    let server = serve_fn(support::filewrapper, &[], t);
    let request = file_request(path, version);
    let (mut c, r) = exchange(&server, &request);
    r.assert_line(200, "OK", &format!("HTTP/{version}"));
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert!(r.body.windows(3).any(|w| w == b"\xff\xd8\xff"));
    c.assert_closed(&request);
    r
}

fn test_notfilelike_nocl_http11(t: Transport) {
    file_then_closed(t, "/notfilelike_nocl", "1.1");
}

fn test_notfilelike_longcl_http11(t: Transport) {
    let r = file_then_closed(t, "/notfilelike_longcl", "1.1");
    assert_eq!(r.content_length(), r.body.len() + 10);
}

fn test_filelike_http10(t: Transport) {
    let r = file_then_closed(t, "/filelike", "1.0");
    assert_eq!(r.content_length(), r.body.len());
}

fn test_filelike_nocl_http10(t: Transport) {
    let r = file_then_closed(t, "/filelike_nocl", "1.0");
    assert_eq!(r.content_length(), r.body.len());
}

fn test_notfilelike_http10(t: Transport) {
    let r = file_then_closed(t, "/notfilelike", "1.0");
    assert_eq!(r.content_length(), r.body.len());
}

fn test_notfilelike_nocl_http10(t: Transport) {
    let r = file_then_closed(t, "/notfilelike_nocl", "1.0");
    assert_eq!(r.body, support::jpeg_payload());
}

// SleepyThreadTests: a slow request does not hold up another connection. Instead of sleeping,
// the slow application waits until the test has seen the fast response.

fn test_sleepy_request_does_not_block_others(t: Transport) {
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let release_rx = Mutex::new(release_rx);
    let app = move |env: &mut waitress::Environ, sr: &mut waitress::StartResponse<'_>| {
        let body: &'static str = if env.get("PATH_INFO") == Some("/sleepy") {
            entered_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
            "sleepy returned"
        } else {
            "notsleepy returned"
        };
        sr.start("200 OK", [("Content-Length", body.len().to_string())])?;
        Ok(waitress::Body::from(body))
    };
    let server = serve(Arc::new(app), t);
    let mut slow = Client::connect(&server.target);
    slow.send(b"GET /sleepy HTTP/1.1\r\nHost: x\r\n\r\n");
    entered_rx
        .recv_timeout(WAIT)
        .expect("the application was called");
    let (_c, fast) = exchange(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(fast.body, b"notsleepy returned");
    release_tx.send(()).unwrap();
    assert_eq!(slow.read_response().unwrap().body, b"sleepy returned");
}

/// Ten workers all blocked in the application: the I/O thread still accepts and reads an
/// eleventh connection, which is answered as soon as one worker is released.
fn test_blocked_workers_do_not_stop_the_io_thread(t: Transport) {
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let release_rx = Mutex::new(release_rx);
    let app = move |env: &mut waitress::Environ, sr: &mut waitress::StartResponse<'_>| {
        if env.get("PATH_INFO") == Some("/block") {
            entered_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
        }
        sr.start("200 OK", [("Content-Length", "4")])?;
        Ok(waitress::Body::from("done"))
    };
    let server = support::serve(Arc::new(app), &[("threads", "10")], t);
    let mut blocked: Vec<Client> = (0..10)
        .map(|_| {
            let mut c = Client::connect(&server.target);
            c.send(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n");
            c
        })
        .collect();
    for _ in 0..10 {
        entered_rx
            .recv_timeout(WAIT)
            .expect("the application was called");
    }
    // Every worker is busy; this connection is accepted and its request queued.
    let mut late = Client::connect(&server.target);
    late.send(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n");
    release_tx.send(()).unwrap();
    assert_eq!(late.read_response().unwrap().body, b"done");
    for _ in 0..9 {
        release_tx.send(()).unwrap();
    }
    for c in blocked.iter_mut() {
        assert_eq!(c.read_response().unwrap().body, b"done");
    }
}

/// The client leaves in the middle of a long streamed response: the body iterator is dropped
/// (WSGI's `close()`), and the worker is free again.
fn test_body_is_closed_when_the_client_goes_away(t: Transport) {
    struct Endless(Arc<Mutex<Option<mpsc::Sender<()>>>>);
    impl Iterator for Endless {
        type Item = Result<Vec<u8>, waitress::AppError>;
        fn next(&mut self) -> Option<Self::Item> {
            Some(Ok(vec![b'x'; 64 * 1024]))
        }
    }
    impl Drop for Endless {
        fn drop(&mut self) {
            if let Some(tx) = self.0.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    }
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let closed_tx = Arc::new(Mutex::new(Some(closed_tx)));
    let app = move |env: &mut waitress::Environ, sr: &mut waitress::StartResponse<'_>| {
        if env.get("PATH_INFO") != Some("/endless") {
            sr.start("200 OK", [("Content-Length", "2")])?;
            return Ok(waitress::Body::from("ok"));
        }
        sr.start("200 OK", [("Content-Type", "application/octet-stream")])?;
        Ok(waitress::Body::Chunks(Box::new(Endless(Arc::clone(
            &closed_tx,
        )))))
    };
    // A small watermark so the worker waits after little output.
    let kw = [
        ("threads", "1"),
        ("outbuf_high_watermark", "262144"),
        ("outbuf_overflow", "65536"),
    ];
    let server = serve_fn(app, &kw, t);
    {
        let mut c = Client::connect(&server.target);
        c.send(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n");
        let line = c.read_line().unwrap();
        assert!(line.starts_with(b"HTTP/1.1 200 OK"));
    } // the client hangs up here
    closed_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the body was closed after the client left");
    // The only worker is free again.
    let (_c, r) = exchange(&server, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.body, b"ok");
}

/// With `channel_request_lookahead`, the application can ask whether its client is still
/// there (`waitress.client_disconnected`).
fn test_client_disconnected_is_visible_with_lookahead(t: Transport) {
    let (result_tx, result_rx) = mpsc::channel::<bool>();
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let result_tx = Mutex::new(result_tx);
    let entered_tx = Mutex::new(entered_tx);
    let app = move |env: &mut waitress::Environ, sr: &mut waitress::StartResponse<'_>| {
        let check = env
            .client_disconnected()
            .expect("present with lookahead")
            .clone();
        entered_tx.lock().unwrap().send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !check.is_disconnected() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        result_tx
            .lock()
            .unwrap()
            .send(check.is_disconnected())
            .unwrap();
        sr.start("200 OK", [("Content-Length", "0")])?;
        Ok(waitress::Body::empty())
    };
    let server = serve_fn(app, &[("channel_request_lookahead", "1")], t);
    {
        let mut c = Client::connect(&server.target);
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        entered_rx
            .recv_timeout(WAIT)
            .expect("the application was called");
    } // hang up while the application runs
    assert!(
        result_rx
            .recv_timeout(WAIT)
            .expect("the application answered"),
        "the application saw the disconnect"
    );
}

fn serve(app: waitress::SharedApp, t: Transport) -> support::ServerGuard {
    support::serve(app, &[], t)
}

// Deliberate difference: Content-Length together with chunked closes after the response.

fn test_content_length_with_chunked_closes_after_response(t: Transport) {
    let server = serve_fn(support::echo_body_only, &[], t);
    let smuggled = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let (mut c, r) = exchange(&server, smuggled);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"abc");
    assert!(
        c.read_response().is_err(),
        "the smuggled request is not served"
    );
}

// test_functional.py's `make_http_connection` (httplib) tests are covered by raw requests;
// `test_many_clients` uses 50 raw connections instead of httplib.

macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {
        mod tcp {
            $( #[test] fn $name() { super::$name(super::Transport::Tcp) } )*
        }
        #[cfg(unix)]
        mod unix {
            $( #[test] fn $name() { super::$name(super::Transport::Unix) } )*
        }
    };
}

both_transports!(
    test_date_and_server,
    test_bad_host_header,
    test_send_with_body,
    test_send_empty_body,
    test_multiple_requests_with_body,
    test_multiple_requests_without_body,
    test_without_crlf,
    test_large_body,
    test_many_clients,
    test_chunking_request_without_content,
    test_chunking_request_with_content,
    test_broken_chunked_encoding,
    test_broken_chunked_encoding_invalid_hex,
    test_broken_chunked_encoding_invalid_extension,
    test_broken_chunked_encoding_missing_chunk_end,
    test_keepalive_http_10,
    test_keepalive_http10_explicit,
    test_keepalive_http_11,
    test_keepalive_http11_explicit,
    test_keepalive_http11_connclose,
    test_proxy_headers,
    test_malformed_proxy_header_is_a_400,
    test_pipelining,
    test_expect_continue,
    test_expect_continue_is_sent_before_the_body,
    test_short_body,
    test_long_body,
    test_http10_generator,
    test_http10_list,
    test_http10_listlentwo,
    test_http11_generator,
    test_http11_list,
    test_http11_listlentwo,
    test_writecb_short_body,
    test_writecb_long_body,
    test_writecb_equal_body,
    test_writecb_no_content_length,
    test_request_headers_too_large_http11,
    test_request_body_too_large_with_wrong_cl_http10,
    test_request_body_too_large_with_wrong_cl_http10_keepalive,
    test_request_body_too_large_with_no_cl_http10,
    test_request_body_too_large_with_no_cl_http10_keepalive,
    test_request_body_too_large_with_wrong_cl_http11,
    test_request_body_too_large_with_wrong_cl_http11_connclose,
    test_request_body_too_large_with_no_cl_http11,
    test_request_body_too_large_with_no_cl_http11_connclose,
    test_request_body_too_large_chunked_encoding,
    test_before_start_response_http_10,
    test_before_start_response_http_11,
    test_before_start_response_http_11_close,
    test_after_start_response_http10,
    test_after_start_response_http11,
    test_after_start_response_http11_close,
    test_after_write_cb,
    test_in_generator,
    test_application_panic_is_a_500_and_the_worker_survives,
    test_expose_tracebacks_http_10,
    test_expose_tracebacks_http_11,
    test_filelike_http11,
    test_filelike_nocl_http11,
    test_filelike_shortcl_http11,
    test_filelike_longcl_http11,
    test_notfilelike_http11,
    test_notfilelike_iobase_http11,
    test_notfilelike_nocl_http11,
    test_notfilelike_shortcl_http11,
    test_notfilelike_longcl_http11,
    test_filelike_http10,
    test_filelike_nocl_http10,
    test_notfilelike_http10,
    test_notfilelike_nocl_http10,
    test_sleepy_request_does_not_block_others,
    test_blocked_workers_do_not_stop_the_io_thread,
    test_body_is_closed_when_the_client_goes_away,
    test_client_disconnected_is_visible_with_lookahead,
    test_content_length_with_chunked_closes_after_response,
);
