//! The applications that `waitress-serve` offers out of the box (no waitress file: waitress
//! imports any `module:object` the user names, which Rust cannot do at run time).
//!
//! `demo` (the default) is an HTML page listing the request's environ, `hello` is the
//! benchmark application, `echo` is waitress's test fixture `tests/fixtureapps/echo.py`, and
//! `download` streams as many bytes as asked (for testing proxies with large responses).
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
    registry.register_fn(
        "download",
        "?bytes=N: N bytes (1 MiB by default) of download_byte(i), streamed",
        download,
    );
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

/// Byte `i` of what [`download`] sends: a pattern whose period (251, a prime) divides no
/// buffer size, so a lost, repeated or reordered block shows.
pub fn download_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// `?bytes=N` (1 MiB when absent): N bytes of [`download_byte`], with their `Content-Length`,
/// produced 64 KiB at a time as the server sends them, so any size streams in little memory.
/// For testing what lies between the server and a client (a proxy) with large responses.
pub fn download(environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
    const BLOCK: u64 = 64 << 10;
    let query = environ.get("QUERY_STRING").unwrap_or("");
    let asked = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("bytes="))
        .map(str::parse::<u64>);
    let total = match asked {
        None => 1 << 20,
        Some(Ok(total)) => total,
        Some(Err(_)) => {
            start_response.start("400 Bad Request", [("Content-Type", "text/plain")])?;
            return Ok(Body::from("bytes=N takes a whole number\n"));
        }
    };
    start_response.start(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream".to_string()),
            ("Content-Length", total.to_string()),
        ],
    )?;
    // One period more than a block: any block is a slice of it (a copy, not a loop per byte).
    let pattern: Vec<u8> = (0..BLOCK + 251).map(download_byte).collect();
    let blocks = (0..total).step_by(BLOCK as usize).map(move |start| {
        let len = (total - start).min(BLOCK) as usize;
        let from = (start % 251) as usize;
        Ok(pattern[from..from + len].to_vec())
    });
    Ok(Body::from_chunks(blocks))
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
/// line, then the request body: waitress's `tests/fixtureapps/echo.py`.
pub fn echo(environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
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
    fn download_streams_the_pattern() {
        let mut environ = Environ::new();
        environ.set("QUERY_STRING", "x=1&bytes=200000");
        let mut recorded = RecordedResponse::default();
        let body = download(&mut environ, &mut StartResponse::new(&mut recorded))
            .unwrap()
            .into_bytes()
            .unwrap();
        assert_eq!(body.len(), 200_000);
        assert!(body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == download_byte(i as u64)));
        assert!(recorded
            .headers
            .contains(&("Content-Length".into(), "200000".into())));
        let mut environ = Environ::new();
        environ.set("QUERY_STRING", "bytes=lots");
        let mut recorded = RecordedResponse::default();
        download(&mut environ, &mut StartResponse::new(&mut recorded)).unwrap();
        assert_eq!(recorded.status.as_deref(), Some("400 Bad Request"));
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
