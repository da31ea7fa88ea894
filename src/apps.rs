//! The applications that `waitress-serve` offers out of the box (no waitress file: waitress
//! imports any `module:object` the user names, which Rust cannot do at run time).
//!
//! `demo` (the default) is an HTML page listing the request's environ, `hello` is the
//! benchmark application, and `echo` is waitress's test fixture `tests/fixtureapps/echo.py`.
//! They run on the worker threads like any application; [`registry`] hands them to the
//! runner by name.

use std::io::Read;

use crate::app::{AppResult, Body, Environ, StartResponse};
use crate::runner::AppRegistry;

/// A registry holding `demo`, `hello` and `echo`, for `waitress-serve`.
pub fn registry() -> AppRegistry {
    let mut registry = AppRegistry::new();
    registry.register_fn("demo", "an HTML page listing the request's environ", demo);
    registry.register_fn(
        "hello",
        "'Hello, World!' as text/plain (the benchmark app)",
        hello,
    );
    registry.register_fn("echo", "the request as JSON, then its body", echo);
    registry
}

/// `Hello, World!` as `text/plain` with its length: the benchmark application.
pub fn hello(_environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
    start_response.start(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", "13")],
    )?;
    Ok(Body::from("Hello, World!"))
}

/// The request body, `CONTENT_LENGTH` bytes of it when the header is there (the fixture
/// applications' `environ["wsgi.input"].read(cl)`).
pub fn read_body(environ: &mut Environ) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match environ
        .get("CONTENT_LENGTH")
        .and_then(|cl| cl.parse::<u64>().ok())
    {
        Some(cl) => environ.input().take(cl).read_to_end(&mut body)?,
        None => environ.input().read_to_end(&mut body)?,
    };
    Ok(body)
}

/// An HTML page saying who serves it and listing the request's environ.
pub fn demo(environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
    let mut page = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>waitress-rs</title></head>\n<body>\n<h1>Hello from waitress-rs</h1>\n<p>This page is served by the Rust port of waitress. The request's environ:</p>\n<table>\n",
    );
    for (key, value) in environ.vars() {
        page.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>\n",
            html_escape(key),
            html_escape(value)
        ));
    }
    page.push_str("</table>\n</body></html>\n");
    start_response.start(
        "200 OK",
        [
            ("Content-Type", "text/html; charset=utf-8".to_string()),
            ("Content-Length", page.len().to_string()),
        ],
    )?;
    Ok(Body::from(page))
}

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// The request as JSON (method, path, query, length, scheme, addresses, headers), a blank
/// line, then the request body: waitress's `tests/fixtureapps/echo.py`. With
/// `?stream_bytes=N` in the query it answers N bytes of a fixed pattern instead (not in the
/// fixture; see [`pattern_byte`]).
pub fn echo(environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
    if let Some(size) = stream_size(environ) {
        return stream_pattern(size, start_response);
    }
    let body = read_body(environ)?;
    let get = |key: &str| environ.get(key).unwrap_or("").to_string();
    let mut fields: Vec<(String, String)> = vec![
        ("method".into(), json_string(&get("REQUEST_METHOD"))),
        ("path_info".into(), json_string(&get("PATH_INFO"))),
        ("script_name".into(), json_string(&get("SCRIPT_NAME"))),
        ("query_string".into(), json_string(&get("QUERY_STRING"))),
        (
            "content_length".into(),
            json_string(&body.len().to_string()),
        ),
        ("scheme".into(), json_string(&get("wsgi.url_scheme"))),
        ("remote_addr".into(), json_string(&get("REMOTE_ADDR"))),
        ("remote_host".into(), json_string(&get("REMOTE_HOST"))),
        ("server_port".into(), json_string(&get("SERVER_PORT"))),
        ("server_name".into(), json_string(&get("SERVER_NAME"))),
    ];
    let headers: Vec<String> = environ
        .vars()
        .filter_map(|(k, v)| {
            k.strip_prefix("HTTP_")
                .map(|name| format!("{}: {}", json_string(name), json_string(v)))
        })
        .collect();
    fields.push(("headers".into(), format!("{{{}}}", headers.join(", "))));
    let meta: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}: {}", json_string(k), v))
        .collect();
    let mut response = format!("{{{}}}\r\n\r\n", meta.join(", ")).into_bytes();
    response.extend_from_slice(&body);
    start_response.start(
        "200 OK",
        [
            ("Content-Length", response.len().to_string()),
            ("Content-Type", "text/plain".to_string()),
        ],
    )?;
    Ok(Body::from(response))
}

/// The size asked for by `echo?stream_bytes=N`, if any: the echo application then answers
/// with N bytes of [`pattern_byte`]s instead of the echo, streamed in 64 KiB chunks, so a test
/// (tests/nginx.rs: a 200 MiB download through a proxy) can fetch a large body it can check
/// without the server holding it in memory.
fn stream_size(environ: &Environ) -> Option<u64> {
    environ
        .get("QUERY_STRING")?
        .split('&')
        .find_map(|pair| pair.strip_prefix("stream_bytes="))
        .and_then(|n| n.parse().ok())
}

/// Byte `i` of the `stream_bytes` body: a cycle of 251 values (a prime, so the pattern does
/// not line up with any power-of-two buffer size and a shifted or repeated block shows).
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Answer with `size` pattern bytes and their `Content-Length`, produced lazily.
fn stream_pattern(size: u64, start_response: &mut StartResponse<'_>) -> AppResult {
    const CHUNK: u64 = 64 * 1024;
    start_response.start(
        "200 OK",
        [
            ("Content-Length", size.to_string()),
            ("Content-Type", "application/octet-stream".to_string()),
        ],
    )?;
    // One chunk's worth of the cycle, plus a cycle to start anywhere in it: each chunk is a
    // copy of a slice, not a byte-by-byte computation.
    let cycle: Vec<u8> = (0..CHUNK + 251).map(pattern_byte).collect();
    let chunks = (0..size / CHUNK + u64::from(size % CHUNK != 0)).map(move |n| {
        let start = n * CHUNK;
        let len = (size.min(start.saturating_add(CHUNK)) - start) as usize;
        let from = (start % 251) as usize;
        Ok(cycle[from..from + len].to_vec())
    });
    Ok(Body::from_chunks(chunks))
}

/// A JSON string as Python's `json.dumps` writes it (ASCII only, `\uXXXX` escapes).
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    //! No waitress test file holds these: `echo` is checked the way waitress's functional
    //! tests read its fixture's output (tests/functional.rs runs it over sockets too).
    use super::*;
    use crate::app::RecordedResponse;

    #[test]
    fn builtin_hello_and_echo() {
        let mut recorded = RecordedResponse::default();
        let body = hello(&mut Environ::new(), &mut StartResponse::new(&mut recorded)).unwrap();
        assert_eq!(body.into_bytes().unwrap(), b"Hello, World!");
        assert!(recorded
            .headers
            .contains(&("Content-Length".into(), "13".into())));

        let mut environ = Environ::new();
        environ.set("REQUEST_METHOD", "POST");
        environ.set("CONTENT_LENGTH", "3");
        environ.set("HTTP_X_NAME", "é\"");
        environ.set_input(crate::app::Input::from_bytes(b"abcdef".to_vec()));
        let mut recorded = RecordedResponse::default();
        let body = echo(&mut environ, &mut StartResponse::new(&mut recorded))
            .unwrap()
            .into_bytes()
            .unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.starts_with("{\"method\": \"POST\", \"path_info\": \"\""),
            "{text}"
        );
        assert!(text.contains("\"content_length\": \"3\""));
        assert!(
            text.contains("\"headers\": {\"X_NAME\": \"\\u00e9\\\"\"}"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nabc"));
    }

    #[test]
    fn echo_streams_the_pattern_when_asked() {
        let mut environ = Environ::new();
        environ.set("QUERY_STRING", "a=1&stream_bytes=200000");
        let mut recorded = RecordedResponse::default();
        let body = echo(&mut environ, &mut StartResponse::new(&mut recorded)).unwrap();
        assert!(matches!(body, Body::Chunks(_)), "streamed lazily");
        let bytes = body.into_bytes().unwrap();
        assert_eq!(bytes.len(), 200_000);
        assert!(bytes
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern_byte(i as u64)));
        assert_eq!(bytes[250..253], [250, 0, 1]);
        assert!(recorded
            .headers
            .contains(&("Content-Length".into(), "200000".into())));
    }

    #[test]
    fn demo_escapes_html() {
        let mut environ = Environ::new();
        environ.set("PATH_INFO", "/<script>");
        let mut recorded = RecordedResponse::default();
        let body = demo(&mut environ, &mut StartResponse::new(&mut recorded))
            .unwrap()
            .into_bytes()
            .unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("/&lt;script&gt;"));
        assert!(!text.contains("<script>"));
    }
}
