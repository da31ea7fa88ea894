// The crate's front page shows this file; `cargo run --example guide` runs it.
use std::io::{Read, Write};
use std::net::TcpStream;

use waitress::{AppResult, Body, Environ, Input, RecordedResponse, StartResponse};

/// Answers with the request body in upper case, one chunk per line, and sends the `X-Name`
/// request header back.
fn shout(environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
    // Request headers are environ variables: `X-Name` arrives as `HTTP_X_NAME`.
    let name = environ.get("HTTP_X_NAME").unwrap_or("stranger").to_string();
    // The body is `wsgi.input`, a `BufRead` (already de-chunked by the server).
    let mut text = String::new();
    environ.input().read_to_string(&mut text)?;
    start_response.start(
        "200 OK",
        [("Content-Type", "text/plain"), ("X-Name", name.as_str())],
    )?;
    // A lazy body: the server sends each chunk as the iterator yields it.
    let lines: Vec<String> = text
        .lines()
        .map(|l| format!("{}\n", l.to_uppercase()))
        .collect();
    Ok(Body::from_chunks(
        lines.into_iter().map(|l| Ok(l.into_bytes())),
    ))
}

fn main() -> Result<(), waitress::AppError> {
    // 1. Test the application without a server: call it with a made-up environ and record
    //    what it passes to start_response.
    let mut environ = Environ::new();
    environ.set("REQUEST_METHOD", "POST");
    environ.set("HTTP_X_NAME", "Ada");
    environ.set_input(Input::from_bytes("hello\nworld\n"));
    let mut recorded = RecordedResponse::default();
    let body = shout(&mut environ, &mut StartResponse::new(&mut recorded))?;
    assert_eq!(recorded.status.as_deref(), Some("200 OK"));
    assert!(recorded.headers.contains(&("X-Name".into(), "Ada".into())));
    assert_eq!(body.into_bytes()?, b"HELLO\nWORLD\n");

    // 2. Serve it on a free port of the loopback interface. `waitress::serve(shout, kw)` would
    //    do the same and run until the process is stopped.
    let server = waitress::create_server(shout, [("listen", "127.0.0.1:0"), ("threads", "2")])?;
    let port = server.effective_port().tcp().expect("a TCP listener");
    let stop = server.shutdown_handle();

    // 3. A client on another thread sends one request, reads the answer, stops the server.
    let client = std::thread::spawn(move || -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.write_all(
            b"POST / HTTP/1.1\r\nHost: localhost\r\nX-Name: Ada\r\n\
              Content-Length: 12\r\nConnection: close\r\n\r\nhello\nworld\n",
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        stop.shutdown();
        Ok(response)
    });
    server.run()?; // returns once the client has asked for the shutdown
    let response = client.join().expect("the client thread ends")?;
    print!("{response}");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(response.contains("\r\nX-Name: Ada\r\n"));
    assert!(response.contains("HELLO\n") && response.contains("WORLD\n"));
    Ok(())
}
