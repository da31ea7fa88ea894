//! Shared by the integration tests: the fixture applications of waitress's
//! `tests/fixtureapps/`, a server running on a background thread for the length of a test,
//! and a small HTTP/1.x client that reads responses the way waitress's `read_http` does.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use waitress::adjustments::Adjustments;
use waitress::server::{create_server_with, EffectivePort, ShutdownHandle};
use waitress::utilities::{set_log_sink, Level, LogSink};
use waitress::{AppResult, Body, Environ, SharedApp, StartResponse};

// ---------------------------------------------------------------------------------------------
// Fixture applications (waitress: tests/fixtureapps)
// ---------------------------------------------------------------------------------------------

use waitress::apps::read_body;

/// echo.py `app`: the request as JSON, a blank line, then the body.
pub fn echo(environ: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    waitress::apps::echo(environ, sr)
}

/// echo.py `app_body_only`.
pub fn echo_body_only(environ: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    let body = read_body(environ)?;
    sr.start(
        "200 OK",
        [
            ("Content-Length", body.len().to_string()),
            ("Content-Type", "text/plain".to_string()),
        ],
    )?;
    Ok(Body::from(body))
}

/// badcl.py: a Content-Length one too long or too short for the body.
pub fn badcl(environ: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    let body = b"abcdefghi";
    let cl = match environ.get("PATH_INFO") {
        Some("/short_body") => body.len() + 1,
        Some("/long_body") => body.len() - 1,
        _ => body.len(),
    };
    sr.start(
        "200 OK",
        [
            ("Content-Length", cl.to_string()),
            ("Content-Type", "text/plain".to_string()),
        ],
    )?;
    Ok(Body::from(&body[..]))
}

/// nocl.py: no Content-Length; a generator, a one-element list or a two-element list.
pub fn nocl(environ: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    let body = read_body(environ)?;
    sr.start("200 OK", [("Content-Type", "text/plain")])?;
    match environ.get("PATH_INFO") {
        Some("/list") => Ok(Body::from(body)),
        Some("/list_lentwo") => {
            let rest = body[1..].to_vec();
            Ok(Body::from_chunks(vec![Ok(body[..1].to_vec()), Ok(rest)]))
        }
        _ => {
            let chunks: Vec<_> = body.chunks(10).map(|c| Ok(c.to_vec())).collect();
            Ok(Body::from_chunks(chunks))
        }
    }
}

/// toolarge.py.
pub fn toolarge(_environ: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    sr.start(
        "200 OK",
        [("Content-Length", "6"), ("Content-Type", "text/plain")],
    )?;
    Ok(Body::from("abcdef"))
}

/// writecb.py: the body through the legacy `write` callable.
pub fn writecb(environ: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    let path = environ.get("PATH_INFO").unwrap_or("").to_string();
    if path == "/no_content_length" {
        sr.start("200 OK", Vec::<(String, String)>::new())?;
    } else {
        sr.start("200 OK", [("Content-Length", "9")])?;
    }
    match path.as_str() {
        "/long_body" => sr.write(b"abcdefghij")?,
        "/short_body" => sr.write(b"abcdefgh")?,
        _ => sr.write(b"abcdefghi")?,
    }
    Ok(Body::from_chunks(Vec::new()))
}

/// error.py: failures before and after start_response, after write, inside the body.
pub fn error(environ: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    let body = read_body(environ)?;
    let path = environ.get("PATH_INFO").unwrap_or("").to_string();
    if path == "/before_start_response" {
        return Err("wrong".into());
    }
    sr.start(
        "200 OK",
        [
            ("Content-Length", body.len().to_string()),
            ("Content-Type", "text/plain".to_string()),
        ],
    )?;
    if path == "/after_write_cb" {
        sr.write(b"abc")?;
    }
    if path == "/in_generator" {
        return Ok(Body::from_chunks(vec![
            Ok(b"abc".to_vec()),
            Err("wrong".into()),
        ]));
    }
    Err("wrong".into())
}

/// error_traceback.py: an error whose text is not ASCII.
pub fn error_traceback(_environ: &mut Environ, _sr: &mut StartResponse<'_>) -> AppResult {
    Err("Invalid application: \u{20ac}".into())
}

/// The stand-in for groundhog1.jpg: a JPEG signature, then 20000 patterned bytes (more than
/// two 8192-byte blocks).
pub fn jpeg_payload() -> Vec<u8> {
    let mut data = b"\xff\xd8\xff\xe0".to_vec();
    data.extend((0..20000u32).map(|i| (i % 251) as u8));
    data
}

/// filewrapper.py: a real (seekable) file or a reader that cannot seek, with a right, missing,
/// short or long Content-Length.
pub fn filewrapper(environ: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    let path = environ.get("PATH_INFO").unwrap_or("").to_string();
    let data = jpeg_payload();
    let cl = data.len();
    let headers: Vec<(String, String)> = {
        let ct = ("Content-Type".to_string(), "image/jpeg".to_string());
        let with = |n: usize| vec![("Content-Length".to_string(), n.to_string()), ct.clone()];
        if path.ends_with("_nocl") {
            vec![ct.clone()]
        } else if path.ends_with("_shortcl") {
            with(1)
        } else if path.ends_with("_longcl") {
            with(cl + 10)
        } else {
            with(cl)
        }
    };
    sr.start("200 OK", headers)?;
    if path.starts_with("/filelike") {
        let mut file = tempfile()?;
        file.write_all(&data)?;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0))?;
        Ok(environ.file_wrapper(file, 8192))
    } else {
        Ok(Body::File(waitress::FileWrapper::from_reader(
            std::io::Cursor::new(data),
            8192,
        )))
    }
}

fn tempfile() -> std::io::Result<std::fs::File> {
    waitress::buffers::anonymous_tempfile()
}

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// Where a test server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// 127.0.0.1 on a free port.
    Tcp,
    /// A Unix socket in a fresh temporary directory.
    #[cfg(unix)]
    Unix,
}

#[derive(Debug, Clone)]
pub enum Target {
    Tcp(u16),
    #[cfg(unix)]
    Unix(PathBuf),
}

struct Quiet;

impl LogSink for Quiet {
    fn log(&self, _level: Level, _logger: &str, _message: &str) {}
}

/// Silence the server's log for the test binary (set `WAITRESS_TEST_LOG=1` to see it).
pub fn quiet_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("WAITRESS_TEST_LOG").is_none() {
            set_log_sink(Arc::new(Quiet));
        }
    });
}

/// A server on a background thread; dropping it stops the server and joins the thread.
pub struct ServerGuard {
    pub target: Target,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
    dir: Option<PathBuf>,
}

impl ServerGuard {
    /// The port of a server started with `Transport::Tcp`.
    pub fn tcp_port(&self) -> u16 {
        match self.target {
            Target::Tcp(port) => port,
            #[cfg(unix)]
            Target::Unix(_) => panic!("this test serves over TCP"),
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "waitress-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// Serve `app` with the settings `kw` (waitress's names) over `transport`.
pub fn serve(app: SharedApp, kw: &[(&str, &str)], transport: Transport) -> ServerGuard {
    quiet_logs();
    let mut settings: Vec<(String, String)> = kw
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let dir = match transport {
        Transport::Tcp => {
            settings.push(("listen".into(), "127.0.0.1:0".into()));
            None
        }
        #[cfg(unix)]
        Transport::Unix => {
            let dir = fresh_dir();
            settings.push((
                "unix_socket".into(),
                dir.join("s.sock").display().to_string(),
            ));
            Some(dir)
        }
    };
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let adj = Adjustments::new(settings).expect("valid test settings");
        let server = create_server_with(app, adj).expect("the test server starts");
        tx.send((server.effective_port(), server.shutdown_handle()))
            .expect("the test waits for the port");
        server.run().expect("the loop runs");
    });
    let (port, handle) = rx.recv().expect("the server thread reports its port");
    let target = match port {
        EffectivePort::Tcp(port) => Target::Tcp(port),
        #[cfg(unix)]
        EffectivePort::Unix(path) => Target::Unix(path),
    };
    ServerGuard {
        target,
        handle,
        thread: Some(thread),
        dir,
    }
}

/// Serve a function application.
pub fn serve_fn<F>(app: F, kw: &[(&str, &str)], transport: Transport) -> ServerGuard
where
    F: Fn(&mut Environ, &mut StartResponse<'_>) -> AppResult + Send + Sync + 'static,
{
    serve(Arc::new(app), kw, transport)
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One parsed response (waitress's `read_http`: line, headers, body).
#[derive(Debug)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Lower-cased names, in order; a repeated header is a test failure.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The header names, sorted.
    pub fn header_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        names.sort();
        names
    }

    /// `assertline`: version, status and reason.
    pub fn assert_line(&self, status: u16, reason: &str, version: &str) {
        assert_eq!(
            (self.status, self.reason.as_str(), self.version.as_str()),
            (status, reason, version),
            "status line"
        );
    }

    pub fn content_length(&self) -> usize {
        self.header("content-length")
            .expect("a content-length header")
            .parse()
            .expect("a numeric content-length")
    }
}

/// The most a test reads of a response without a length.
const MAX_BODY: u64 = 64 << 20;

/// The connection was closed before a response arrived (waitress: `ConnectionClosed`).
#[derive(Debug)]
pub struct ConnectionClosed;

/// A client connection with a read timeout, so a test fails instead of hanging.
pub struct Client {
    reader: BufReader<Stream>,
    writer: Stream,
}

impl Client {
    pub fn connect(target: &Target) -> Client {
        let timeout = Some(Duration::from_secs(20));
        let (reader, writer) = match target {
            Target::Tcp(port) => {
                let s = TcpStream::connect(("127.0.0.1", *port)).expect("connect");
                s.set_read_timeout(timeout).unwrap();
                (Stream::Tcp(s.try_clone().unwrap()), Stream::Tcp(s))
            }
            #[cfg(unix)]
            Target::Unix(path) => {
                let s = UnixStream::connect(path).expect("connect");
                s.set_read_timeout(timeout).unwrap();
                (Stream::Unix(s.try_clone().unwrap()), Stream::Unix(s))
            }
        };
        Client {
            reader: BufReader::new(reader),
            writer,
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        self.writer.write_all(data).expect("send");
    }

    /// Send, ignoring errors: the server may have closed already (waitress:
    /// `send_check_error`).
    pub fn send_unchecked(&mut self, data: &[u8]) {
        let _ = self.writer.write_all(data);
    }

    pub fn read_line(&mut self) -> Result<Vec<u8>, ConnectionClosed> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => Err(ConnectionClosed),
            Ok(_) => Ok(line),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(ConnectionClosed),
            Err(e) => panic!("reading a response: {e}"),
        }
    }

    /// Read one response: the body by Content-Length, else to the end of the stream.
    pub fn read_response(&mut self) -> Result<Response, ConnectionClosed> {
        let line = self.read_line()?;
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status = parts.next().unwrap_or("0").parse().unwrap_or(0);
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let line = self.read_line().unwrap_or_default();
            if line == b"\r\n" || line == b"\n" || line.is_empty() {
                break;
            }
            let text: String = line.iter().map(|&b| b as char).collect();
            let (name, value) = text
                .trim_end()
                .split_once(": ")
                .expect("a header line with ': '");
            let name = name.to_ascii_lowercase();
            assert!(
                !headers.iter().any(|(k, _)| *k == name),
                "{name} header duplicated"
            );
            headers.push((name, value.to_string()));
        }
        let mut body = Vec::new();
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse::<u64>().expect("numeric content-length"));
        match length {
            Some(n) => {
                let _ = (&mut self.reader).take(n).read_to_end(&mut body);
            }
            None => {
                // To the end of the stream, but never without bound: a test that reads an
                // endless response fails instead of eating the machine's memory.
                let _ = (&mut self.reader).take(MAX_BODY + 1).read_to_end(&mut body);
                assert!(body.len() as u64 <= MAX_BODY, "response body without end");
            }
        }
        Ok(Response {
            version,
            status,
            reason,
            headers,
            body,
        })
    }

    /// The server has closed the connection: sending may still succeed, but no response
    /// comes back.
    pub fn assert_closed(&mut self, data: &[u8]) {
        self.send_unchecked(data);
        assert!(
            self.read_response().is_err(),
            "expected the connection to be closed"
        );
    }
}

/// A string field of the echo application's JSON (`"key": "value"`).
pub fn json_field(json: &str, key: &str) -> Option<String> {
    let marker = format!("\"{key}\": \"");
    let start = json.find(&marker)? + marker.len();
    let mut out = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// The echo application's response: its JSON part and the echoed body.
pub struct Echo {
    pub meta: String,
    pub body: Vec<u8>,
}

impl Echo {
    pub fn parse(body: &[u8]) -> Echo {
        let split = body
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("echo separates JSON and body");
        Echo {
            meta: String::from_utf8(body[..split].to_vec()).expect("ASCII JSON"),
            body: body[split + 4..].to_vec(),
        }
    }

    pub fn field(&self, key: &str) -> Option<String> {
        json_field(&self.meta, key)
    }

    /// A request header as the application saw it (`HTTP_` stripped).
    pub fn header(&self, name: &str) -> Option<String> {
        let headers = &self.meta[self.meta.find("\"headers\": {")?..];
        json_field(headers, name)
    }
}
