//! Port of waitress/proxy_headers.py.
//!
//! A middleware in front of the application: when the peer is the trusted proxy, it applies
//! the `Forwarded` or `X-Forwarded-*` headers it was told to trust (client address, host,
//! port, scheme) to the environ; and it removes the proxy headers it does not trust, so an
//! application never acts on a value a client forged. It runs on the worker, per request.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::adjustments::Adjustments;
use crate::app::{App, AppResult, Body, Environ, SharedApp, StartResponse};
use crate::utilities::{undquote, Error, LOGGER};

/// The proxy headers, as environ names without `HTTP_` (waitress: `PROXY_HEADERS`).
pub const PROXY_HEADERS: [&str; 6] = [
    "FORWARDED",
    "X_FORWARDED_BY",
    "X_FORWARDED_FOR",
    "X_FORWARDED_HOST",
    "X_FORWARDED_PORT",
    "X_FORWARDED_PROTO",
];

/// The environ keys of [`PROXY_HEADERS`], in the same order (no formatting per request).
const ENVIRON_KEYS: [&str; 6] = [
    "HTTP_FORWARDED",
    "HTTP_X_FORWARDED_BY",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PROTO",
];

/// A proxy header that cannot be understood (waitress: `MalformedProxyHeader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedProxyHeader {
    /// The header, as named in the answer (`X-Forwarded-For`).
    pub header: String,
    /// What is wrong.
    pub reason: String,
    /// The value received.
    pub value: String,
}

impl fmt::Display for MalformedProxyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.header, self.reason, self.value)
    }
}

impl std::error::Error for MalformedProxyHeader {}

/// The settings of the middleware (waitress: the keyword arguments of
/// `proxy_headers_middleware`).
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    /// The peer address whose headers are trusted, or `*` for any peer.
    pub trusted_proxy: Option<String>,
    /// How many proxies (from the right of each list) are trusted.
    pub trusted_proxy_count: usize,
    /// Which headers are trusted, lower-case with dashes (`x-forwarded-for`).
    pub trusted_proxy_headers: BTreeSet<String>,
    /// Remove the proxy headers that are not trusted.
    pub clear_untrusted: bool,
    /// Log the names of removed headers.
    pub log_untrusted: bool,
}

impl ProxySettings {
    /// The settings the server derives from its adjustments.
    pub fn from_adjustments(adj: &Adjustments) -> Self {
        ProxySettings {
            trusted_proxy: adj.trusted_proxy.clone(),
            trusted_proxy_count: adj.trusted_proxy_count.unwrap_or(1),
            trusted_proxy_headers: adj.trusted_proxy_headers.clone(),
            clear_untrusted: adj.clear_untrusted_proxy_headers,
            log_untrusted: adj.log_untrusted_proxy_headers,
        }
    }
}

/// The middleware (waitress: the `translate_proxy_headers` closure).
pub struct ProxyHeaders {
    app: SharedApp,
    settings: ProxySettings,
}

/// Wrap `app` with the proxy settings of `adj` (the server calls this when `trusted_proxy` or
/// `clear_untrusted_proxy_headers` is set).
pub fn proxy_headers_middleware(app: SharedApp, adj: &Adjustments) -> SharedApp {
    Arc::new(ProxyHeaders::new(app, ProxySettings::from_adjustments(adj)))
}

impl ProxyHeaders {
    /// Wrap `app` with explicit settings.
    pub fn new(app: SharedApp, settings: ProxySettings) -> Self {
        ProxyHeaders { app, settings }
    }
}

impl App for ProxyHeaders {
    fn respond(&self, environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
        let settings = &self.settings;
        let remote_peer = environ.get("REMOTE_ADDR").unwrap_or("");
        let trusted = settings
            .trusted_proxy
            .as_deref()
            .map_or(false, |p| p == "*" || p == remote_peer);
        // Rust-only: with no trusted proxy every proxy header is untrusted; the set of them is
        // built only when a proxy is trusted, which keeps two allocations off each request.
        let mut untrusted = None;
        if trusted {
            let remote_peer = remote_peer.to_string();
            match parse_proxy_headers(
                environ,
                settings.trusted_proxy_count,
                &settings.trusted_proxy_headers,
            ) {
                Ok(headers) => untrusted = Some(headers),
                Err(ex) => {
                    LOGGER.warning(&format!(
                        "Malformed proxy header \"{}\" from \"{}\": {} value: {}",
                        ex.header, remote_peer, ex.reason, ex.value
                    ));
                    let error = Error::bad_request(format!("Header \"{}\" malformed.", ex.header));
                    let (status, headers, body) = error.to_response(None);
                    start_response.start(&status, headers)?;
                    // A generator in waitress: no length is known, so it goes out chunked.
                    return Ok(Body::from_chunks(std::iter::once(Ok(body))));
                }
            }
        }
        if settings.clear_untrusted {
            let is_untrusted =
                |header: &str| untrusted.as_ref().map_or(true, |u| u.contains(header));
            clear_headers(environ, is_untrusted, settings.log_untrusted);
        }
        self.app.respond(environ, start_response)
    }
}

fn malformed(header: &str, reason: impl Into<String>, value: &str) -> MalformedProxyHeader {
    MalformedProxyHeader {
        header: header.to_string(),
        reason: reason.into(),
        value: value.to_string(),
    }
}

const MULTIPLE_VALUES: &str = "Unspecified behavior for multiple values found in header";

/// The last `count` entries of a list (Python's `list[-count:]`).
fn last<T>(items: &[T], count: usize) -> &[T] {
    &items[items.len().saturating_sub(count)..]
}

/// A comma list header, unquoted entry by entry; the environ keeps only the trusted part.
fn trusted_list(
    environ: &mut Environ,
    key: &str,
    header: &str,
    count: usize,
) -> Result<Option<Vec<String>>, MalformedProxyHeader> {
    let raw = match environ.get(key) {
        Some(raw) => raw.to_string(),
        None => return Ok(None),
    };
    let parts: Vec<&str> = raw.split(',').collect();
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let value = undquote(part.trim()).map_err(|e| malformed(header, e.to_string(), &raw))?;
        values.push(value);
    }
    environ.set(
        key.to_string(),
        last(&parts, count).join(",").trim().to_string(),
    );
    Ok(Some(last(&values, count).to_vec()))
}

/// A single-valued header, unquoted; empty when absent.
fn single_value(
    environ: &Environ,
    key: &str,
    header: &str,
) -> Result<String, MalformedProxyHeader> {
    let raw = environ.get(key).unwrap_or("");
    let value = undquote(raw).map_err(|e| malformed(header, e.to_string(), raw))?;
    if value.contains(',') {
        return Err(malformed(header, MULTIPLE_VALUES, raw));
    }
    Ok(value)
}

/// One element of a `Forwarded` header (waitress: the `Forwarded` named tuple).
#[derive(Debug, Default)]
struct ForwardedElement {
    for_: String,
    host: String,
    proto: String,
}

fn parse_forwarded_element(element: &str) -> Result<ForwardedElement, String> {
    let mut parsed = ForwardedElement::default();
    for pair in element.trim().split(';') {
        let pair = pair.to_lowercase();
        if pair.is_empty() {
            continue;
        }
        let (token, value) = match pair.split_once('=') {
            Some(split) => split,
            None => return Err("Invalid forwarded-pair missing \"=\"".to_string()),
        };
        if token.trim() != token {
            return Err("Token may not be surrounded by whitespace".to_string());
        }
        if value.trim() != value {
            return Err("Value may not be surrounded by whitespace".to_string());
        }
        let value = || undquote(value).map_err(|e| e.to_string());
        match token {
            "by" => {
                value()?;
            }
            "for" => parsed.for_ = value()?,
            "host" => parsed.host = value()?,
            "proto" => parsed.proto = value()?,
            other => LOGGER.warning(&format!("Unknown Forwarded token: {other}")),
        }
    }
    Ok(parsed)
}

/// Apply the trusted proxy headers to the environ; returns the proxy headers that remain
/// untrusted (waitress: `parse_proxy_headers`).
pub fn parse_proxy_headers(
    environ: &mut Environ,
    trusted_proxy_count: usize,
    trusted_proxy_headers: &BTreeSet<String>,
) -> Result<BTreeSet<&'static str>, MalformedProxyHeader> {
    let trusts = |name: &str| trusted_proxy_headers.contains(name);
    let mut untrusted: BTreeSet<&'static str> = PROXY_HEADERS.into_iter().collect();
    let mut client_addr: Option<String> = None;
    let mut forwarded_host = String::new();
    let mut forwarded_proto = String::new();
    let mut forwarded_port = String::new();

    if trusts("x-forwarded-for") {
        if let Some(hops) = trusted_list(
            environ,
            "HTTP_X_FORWARDED_FOR",
            "X-Forwarded-For",
            trusted_proxy_count,
        )? {
            // IPv6 addresses get brackets, so a port can be told from the address.
            let first = hops.first().cloned().unwrap_or_default();
            let first = if !first.contains('.') && first.contains(':') && !first.ends_with(']') {
                format!("[{first}]")
            } else {
                first
            };
            client_addr = Some(first);
            untrusted.remove("X_FORWARDED_FOR");
        }
    }
    if trusts("x-forwarded-host") {
        if let Some(hosts) = trusted_list(
            environ,
            "HTTP_X_FORWARDED_HOST",
            "X-Forwarded-Host",
            trusted_proxy_count,
        )? {
            forwarded_host = hosts.first().cloned().unwrap_or_default();
            untrusted.remove("X_FORWARDED_HOST");
        }
    }
    if trusts("x-forwarded-proto") {
        forwarded_proto = single_value(environ, "HTTP_X_FORWARDED_PROTO", "X-Forwarded-Proto")?;
        untrusted.remove("X_FORWARDED_PROTO");
    }
    if trusts("x-forwarded-port") {
        forwarded_port = single_value(environ, "HTTP_X_FORWARDED_PORT", "X-Forwarded-Port")?;
        untrusted.remove("X_FORWARDED_PORT");
    }
    if trusts("x-forwarded-by") {
        // waitress does not use it, but leaves it for the application.
        untrusted.remove("X_FORWARDED_BY");
    }
    let mut forwarded = String::new();
    if trusts("forwarded") {
        forwarded = environ.get("HTTP_FORWARDED").unwrap_or("").to_string();
        untrusted = PROXY_HEADERS
            .into_iter()
            .filter(|h| *h != "FORWARDED")
            .collect();
    }
    if !forwarded.is_empty() {
        let raw: Vec<&str> = forwarded.split(',').collect();
        let mut proxies = Vec::with_capacity(raw.len());
        for element in &raw {
            proxies.push(
                parse_forwarded_element(element)
                    .map_err(|reason| malformed("Forwarded", reason, &forwarded))?,
            );
        }
        environ.set(
            "HTTP_FORWARDED",
            last(&raw, trusted_proxy_count).join(",").trim().to_string(),
        );
        // The oldest trusted entry that carries a value wins: it is what the client used.
        for proxy in last(&proxies, trusted_proxy_count).iter().rev() {
            if !proxy.for_.is_empty() {
                client_addr = Some(proxy.for_.clone());
            }
            if !proxy.host.is_empty() {
                forwarded_host = proxy.host.clone();
            }
            if !proxy.proto.is_empty() {
                forwarded_proto = proxy.proto.clone();
            }
        }
    }
    if !forwarded_proto.is_empty() {
        forwarded_proto = forwarded_proto.to_lowercase();
        if forwarded_proto != "http" && forwarded_proto != "https" {
            let header = if forwarded.is_empty() {
                "X-Forwarded-Proto"
            } else {
                "Forwarded Proto="
            };
            return Err(malformed(
                header,
                "unsupported proto value",
                &forwarded_proto,
            ));
        }
        environ.set("wsgi.url_scheme", forwarded_proto.clone());
        if forwarded_port.is_empty() {
            forwarded_port = if forwarded_proto == "http" {
                "80"
            } else {
                "443"
            }
            .to_string();
        }
    }
    if !forwarded_host.is_empty() {
        apply_forwarded_host(environ, &forwarded_host, &mut forwarded_port);
    }
    if !forwarded_port.is_empty() {
        environ.set("SERVER_PORT", forwarded_port);
    }
    if let Some(client) = client_addr.filter(|c| !c.is_empty()) {
        let addr = match client.rsplit_once(':') {
            Some((addr, port)) if !client.ends_with(']') => {
                environ.set("REMOTE_PORT", port.trim().to_string());
                addr.trim()
            }
            _ => client.trim(),
        };
        let addr = strip_brackets(addr).to_string();
        environ.set("REMOTE_ADDR", addr.clone());
        environ.set("REMOTE_HOST", addr);
    }
    Ok(untrusted)
}

/// `SERVER_NAME` and `HTTP_HOST` from a trusted forwarded host; its port, if any, wins over
/// the one found so far.
fn apply_forwarded_host(environ: &mut Environ, forwarded_host: &str, forwarded_port: &mut String) {
    match forwarded_host.rsplit_once(':') {
        Some((host, port)) if !forwarded_host.ends_with(']') => {
            *forwarded_port = port.to_string();
            environ.set("SERVER_NAME", host.trim().to_string());
            environ.set("HTTP_HOST", forwarded_host.to_string());
        }
        _ => {
            environ.set("SERVER_NAME", forwarded_host.to_string());
            environ.set("HTTP_HOST", forwarded_host.to_string());
            let scheme = environ.get("wsgi.url_scheme").unwrap_or("");
            let port = forwarded_port.as_str();
            let explicit = !port.is_empty()
                && (!(port == "443" || port == "80")
                    || (port == "80" && scheme != "http")
                    || (port == "443" && scheme != "https"));
            if explicit {
                environ.set("HTTP_HOST", format!("{forwarded_host}:{port}"));
            }
        }
    }
}

/// `[::1]` → `::1` (waitress: `strip_brackets`).
pub fn strip_brackets(addr: &str) -> &str {
    addr.strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr)
}

/// Remove the untrusted proxy headers from the environ, logging their names when asked
/// (waitress: `clear_untrusted_headers`).
pub fn clear_untrusted_headers(
    environ: &mut Environ,
    untrusted_headers: &BTreeSet<&'static str>,
    log_warning: bool,
) {
    clear_headers(
        environ,
        |header| untrusted_headers.contains(header),
        log_warning,
    );
}

/// [`clear_untrusted_headers`] with the untrusted headers given as a predicate (the middleware
/// passes one that needs no set when no proxy is trusted).
fn clear_headers(environ: &mut Environ, untrusted: impl Fn(&str) -> bool, log_warning: bool) {
    // Rust-only: one pass to see whether a proxy header came at all, which is rare without a
    // proxy in front. Six searches of the whole environ, one per header, were 4 % of the
    // user-space instructions of a hello-world request (`callgrind`).
    // (Most names fail at `HTTP_`, which leaves the six comparisons to the headers.)
    if !environ.any_key(|key| key.starts_with("HTTP_") && ENVIRON_KEYS.contains(&key)) {
        return;
    }
    let mut removed = Vec::new();
    for (header, key) in PROXY_HEADERS.iter().zip(ENVIRON_KEYS) {
        if untrusted(header) && environ.remove(key).is_some() {
            removed.push(*header);
        }
    }
    if log_warning && !removed.is_empty() {
        let names: Vec<String> = removed
            .iter()
            .map(|h| {
                h.split('_')
                    .map(|part| {
                        let lower = part.to_ascii_lowercase();
                        let mut chars = lower.chars();
                        chars.next().map_or(String::new(), |c| {
                            c.to_ascii_uppercase().to_string() + chars.as_str()
                        })
                    })
                    .collect::<Vec<_>>()
                    .join("-")
            })
            .collect();
        LOGGER.warning(&format!(
            "Removed untrusted headers ({}). Waitress recommends these be removed upstream.",
            names.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    //! Ports of tests/test_proxy_headers.py, driven through the middleware with an environ
    //! like waitress's `DummyEnviron` and a recording start_response. Log assertions
    //! (`DummyLogger`) are not ported: the logger here is process-wide; the behaviour next to
    //! each log call is asserted instead.
    use super::*;
    use crate::app::RecordedResponse;
    use std::sync::Mutex;

    type Vars = Vec<(String, String)>;

    struct Outcome {
        status: String,
        body: Vec<u8>,
        environ: Option<Vars>,
    }

    impl Outcome {
        fn get(&self, key: &str) -> Option<&str> {
            self.environ
                .as_ref()?
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }
        fn env(&self, key: &str) -> &str {
            self.get(key)
                .unwrap_or_else(|| panic!("{key} missing from the environ"))
        }
    }

    fn settings(proxy: Option<&str>, count: usize, headers: &[&str]) -> ProxySettings {
        ProxySettings {
            trusted_proxy: proxy.map(str::to_string),
            trusted_proxy_count: count,
            trusted_proxy_headers: headers.iter().map(|h| h.to_string()).collect(),
            clear_untrusted: true,
            log_untrusted: false,
        }
    }

    fn call(settings: ProxySettings, addr: (&str, u16), headers: &[(&str, &str)]) -> Outcome {
        let seen: Arc<Mutex<Option<Vars>>> = Arc::new(Mutex::new(None));
        let record = Arc::clone(&seen);
        let inner = move |environ: &mut Environ, sr: &mut StartResponse<'_>| -> AppResult {
            *record.lock().unwrap() = Some(
                environ
                    .vars()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            sr.start("200 OK", [("Content-Type", "text/plain")])?;
            Ok(Body::from("hello"))
        };
        let app = ProxyHeaders::new(Arc::new(inner), settings);
        let mut environ = Environ::new();
        environ.set("REMOTE_ADDR", addr.0);
        environ.set("REMOTE_HOST", addr.0);
        environ.set("REMOTE_PORT", addr.1.to_string());
        environ.set("SERVER_PORT", addr.1.to_string());
        environ.set("SERVER_NAME", "localhost");
        environ.set("wsgi.url_scheme", "http");
        environ.set("HTTP_HOST", "192.168.1.1:80");
        for (k, v) in headers {
            environ.set(format!("HTTP_{k}"), v.to_string());
        }
        let mut recorded = RecordedResponse::default();
        let body = app
            .respond(&mut environ, &mut StartResponse::new(&mut recorded))
            .unwrap()
            .into_bytes()
            .unwrap();
        let environ = seen.lock().unwrap().take();
        Outcome {
            status: recorded.status.unwrap(),
            body,
            environ,
        }
    }

    const PEER: (&str, u16) = ("192.168.1.1", 80);

    #[test]
    fn test_get_environment_values_w_scheme_override_untrusted() {
        let r = call(
            settings(None, 1, &[]),
            ("127.0.0.1", 8080),
            &[("X_FOO", "BAR"), ("X_FORWARDED_PROTO", "https")],
        );
        assert_eq!(r.status, "200 OK");
        assert_eq!(r.env("wsgi.url_scheme"), "http");
        assert_eq!(r.get("HTTP_X_FORWARDED_PROTO"), None);
    }

    #[test]
    fn test_get_environment_values_w_scheme_override_trusted() {
        let r = call(
            settings(Some("192.168.1.1"), 1, &["x-forwarded-proto"]),
            ("192.168.1.1", 8080),
            &[("X_FOO", "BAR"), ("X_FORWARDED_PROTO", "https")],
        );
        assert_eq!(r.status, "200 OK");
        assert_eq!(r.env("SERVER_PORT"), "443");
        assert_eq!(r.env("SERVER_NAME"), "localhost");
        assert_eq!(r.env("REMOTE_ADDR"), "192.168.1.1");
        assert_eq!(r.env("HTTP_X_FOO"), "BAR");
        assert_eq!(r.env("wsgi.url_scheme"), "https");
    }

    #[test]
    fn test_get_environment_values_w_bogus_scheme_override() {
        let r = call(
            settings(Some("192.168.1.1"), 1, &["x-forwarded-proto"]),
            PEER,
            &[
                ("X_FOO", "BAR"),
                ("X_FORWARDED_PROTO", "http://p02n3e.com?url=http"),
            ],
        );
        assert_eq!(r.status, "400 Bad Request");
        let body = String::from_utf8(r.body).unwrap();
        assert!(
            body.contains("Header \"X-Forwarded-Proto\" malformed"),
            "{body}"
        );
        assert!(body.ends_with("(generated by server)"));
        assert!(r.environ.is_none(), "the application is not called");
    }

    #[test]
    fn test_get_environment_warning_other_proxy_headers() {
        let mut s = settings(Some("192.168.1.1"), 1, &["forwarded"]);
        s.log_untrusted = true;
        let r = call(
            s,
            PEER,
            &[
                ("X_FORWARDED_FOR", "[2001:db8::1]"),
                (
                    "FORWARDED",
                    "For=198.51.100.2;host=example.com:8080;proto=https",
                ),
            ],
        );
        assert_eq!(r.status, "200 OK");
        assert_eq!(r.get("HTTP_X_FORWARDED_FOR"), None);
        assert_eq!(r.env("REMOTE_ADDR"), "198.51.100.2");
        assert_eq!(r.env("SERVER_NAME"), "example.com");
        assert_eq!(r.env("HTTP_HOST"), "example.com:8080");
        assert_eq!(r.env("SERVER_PORT"), "8080");
        assert_eq!(r.env("wsgi.url_scheme"), "https");
    }

    const ALL_X: [(&str, &str); 4] = [
        ("X_FORWARDED_FOR", "198.51.100.2"),
        ("X_FORWARDED_BY", "Waitress"),
        ("X_FORWARDED_PROTO", "https"),
        ("X_FORWARDED_HOST", "example.org"),
    ];

    #[test]
    fn test_get_environment_contains_all_headers_including_untrusted() {
        let mut s = settings(Some("192.168.1.1"), 1, &["x-forwarded-by"]);
        s.clear_untrusted = false;
        let r = call(s, PEER, &ALL_X);
        for (k, v) in ALL_X {
            assert_eq!(r.env(&format!("HTTP_{k}")), v);
        }
    }

    #[test]
    fn test_get_environment_contains_only_trusted_headers() {
        let r = call(
            settings(Some("192.168.1.1"), 1, &["x-forwarded-by"]),
            PEER,
            &ALL_X,
        );
        assert_eq!(r.env("HTTP_X_FORWARDED_BY"), "Waitress");
        for k in [
            "HTTP_X_FORWARDED_FOR",
            "HTTP_X_FORWARDED_PROTO",
            "HTTP_X_FORWARDED_HOST",
        ] {
            assert_eq!(r.get(k), None, "{k}");
        }
    }

    #[test]
    fn test_get_environment_clears_headers_if_untrusted_proxy() {
        let r = call(
            settings(Some("192.168.1.1"), 1, &["x-forwarded-by"]),
            ("192.168.1.255", 80),
            &ALL_X,
        );
        for (k, _) in ALL_X {
            assert_eq!(r.get(&format!("HTTP_{k}")), None, "{k}");
        }
    }

    fn forwarded_for(value: &str) -> Outcome {
        call(
            settings(Some("*"), 1, &["x-forwarded-for"]),
            ("127.0.0.1", 8080),
            &[("X_FORWARDED_FOR", value)],
        )
    }

    #[test]
    fn test_parse_proxy_headers_forwarded_for() {
        assert_eq!(forwarded_for("192.0.2.1").env("REMOTE_ADDR"), "192.0.2.1");
    }

    #[test]
    fn test_parse_proxy_headers_forwarded_for_v6_missing_brackets() {
        assert_eq!(
            forwarded_for("2001:db8::0").env("REMOTE_ADDR"),
            "2001:db8::0"
        );
    }

    #[test]
    fn test_parse_forwarded_for_bad_quote() {
        let r = forwarded_for("\"foo");
        assert_eq!(r.status, "400 Bad Request");
        assert!(String::from_utf8(r.body)
            .unwrap()
            .contains("Header \"X-Forwarded-For\" malformed"));
    }

    #[test]
    fn test_parse_forwarded_host_bad_quote() {
        let r = call(
            settings(Some("*"), 1, &["x-forwarded-host"]),
            ("127.0.0.1", 8080),
            &[("X_FORWARDED_HOST", "\"foo")],
        );
        assert_eq!(r.status, "400 Bad Request");
        assert!(String::from_utf8(r.body)
            .unwrap()
            .contains("Header \"X-Forwarded-Host\" malformed"));
    }

    #[test]
    fn test_parse_proxy_headers_forwared_for_multiple() {
        let r = call(
            settings(Some("*"), 2, &["x-forwarded-for"]),
            ("127.0.0.1", 8080),
            &[("X_FORWARDED_FOR", "192.0.2.1, 198.51.100.2, 203.0.113.1")],
        );
        assert_eq!(r.env("REMOTE_ADDR"), "198.51.100.2");
        assert_eq!(r.env("HTTP_X_FORWARDED_FOR"), "198.51.100.2, 203.0.113.1");
    }

    #[test]
    fn test_parse_forwarded_multiple_proxies_trust_only_two() {
        let r = call(settings(Some("*"), 2, &["forwarded"]), ("127.0.0.1", 8080), &[(
            "FORWARDED",
            "For=192.0.2.1;host=fake.com, For=198.51.100.2;host=example.com:8080, For=203.0.113.1",
        )]);
        assert_eq!(r.env("REMOTE_ADDR"), "198.51.100.2");
        assert_eq!(r.env("SERVER_NAME"), "example.com");
        assert_eq!(r.env("HTTP_HOST"), "example.com:8080");
        assert_eq!(r.env("SERVER_PORT"), "8080");
        assert_eq!(
            r.env("HTTP_FORWARDED"),
            "For=198.51.100.2;host=example.com:8080, For=203.0.113.1"
        );
    }

    #[test]
    fn test_parse_forwarded_multiple_proxies() {
        let r = call(settings(Some("*"), 2, &["forwarded"]), ("127.0.0.1", 8080), &[(
            "FORWARDED",
            "for=\"[2001:db8::1]:3821\";host=\"example.com:8443\";proto=\"https\", for=192.0.2.1;host=\"example.internal:8080\"",
        )]);
        assert_eq!(r.env("REMOTE_ADDR"), "2001:db8::1");
        assert_eq!(r.env("REMOTE_PORT"), "3821");
        assert_eq!(r.env("SERVER_NAME"), "example.com");
        assert_eq!(r.env("HTTP_HOST"), "example.com:8443");
        assert_eq!(r.env("SERVER_PORT"), "8443");
        assert_eq!(r.env("wsgi.url_scheme"), "https");
    }

    #[test]
    fn test_parse_forwarded_multiple_proxies_minimal() {
        let r = call(
            settings(Some("*"), 2, &["forwarded"]),
            ("127.0.0.1", 8080),
            &[(
                "FORWARDED",
                "for=\"[2001:db8::1]\";proto=\"https\", for=192.0.2.1;host=\"example.org\"",
            )],
        );
        assert_eq!(r.env("REMOTE_ADDR"), "2001:db8::1");
        assert_eq!(r.env("SERVER_NAME"), "example.org");
        assert_eq!(r.env("HTTP_HOST"), "example.org");
        assert_eq!(r.env("SERVER_PORT"), "443");
        assert_eq!(r.env("wsgi.url_scheme"), "https");
    }

    fn x_forwarded(count: usize, host: &str, port: Option<&str>) -> Outcome {
        let mut headers = vec![
            ("X_FORWARDED_FOR", "192.0.2.1, 198.51.100.2, 203.0.113.1"),
            ("X_FORWARDED_PROTO", "http"),
            ("X_FORWARDED_HOST", host),
        ];
        if let Some(port) = port {
            headers.push(("X_FORWARDED_PORT", port));
        }
        let trusted = [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
        ];
        call(
            settings(Some("*"), count, &trusted),
            ("127.0.0.1", 8080),
            &headers,
        )
    }

    #[test]
    fn test_parse_proxy_headers_forwarded_host_with_port() {
        let r = x_forwarded(2, "example.com:8080", None);
        assert_eq!(r.env("REMOTE_ADDR"), "198.51.100.2");
        assert_eq!(r.env("SERVER_NAME"), "example.com");
        assert_eq!(r.env("HTTP_HOST"), "example.com:8080");
        assert_eq!(r.env("SERVER_PORT"), "8080");
        assert_eq!(r.env("HTTP_X_FORWARDED_FOR"), "198.51.100.2, 203.0.113.1");
    }

    #[test]
    fn test_parse_proxy_headers_forwarded_host_without_port() {
        let r = x_forwarded(2, "example.com", None);
        assert_eq!(r.env("SERVER_NAME"), "example.com");
        assert_eq!(r.env("HTTP_HOST"), "example.com");
        assert_eq!(r.env("SERVER_PORT"), "80");
    }

    #[test]
    fn test_parse_proxy_headers_forwarded_host_with_forwarded_port() {
        let r = x_forwarded(2, "example.com", Some("8080"));
        assert_eq!(r.env("HTTP_HOST"), "example.com:8080");
        assert_eq!(r.env("SERVER_PORT"), "8080");
    }

    #[test]
    fn test_parse_proxy_headers_forwarded_host_multiple_with_forwarded_port() {
        let r = x_forwarded(2, "example.com, example.org", Some("8080"));
        assert_eq!(r.env("SERVER_NAME"), "example.com");
        assert_eq!(r.env("HTTP_HOST"), "example.com:8080");
        assert_eq!(r.env("SERVER_PORT"), "8080");
        assert_eq!(r.env("HTTP_X_FORWARDED_HOST"), "example.com, example.org");
    }

    #[test]
    fn test_parse_proxy_headers_forwarded_host_multiple_with_forwarded_port_limit_one_trusted() {
        let r = x_forwarded(1, "example.com, example.org", Some("8080"));
        assert_eq!(r.env("REMOTE_ADDR"), "203.0.113.1");
        assert_eq!(r.env("SERVER_NAME"), "example.org");
        assert_eq!(r.env("HTTP_HOST"), "example.org:8080");
        assert_eq!(r.env("HTTP_X_FORWARDED_FOR"), "203.0.113.1");
        assert_eq!(r.env("HTTP_X_FORWARDED_HOST"), "example.org");
    }

    fn wrong_proto(port: &str, proto: &str) -> Outcome {
        let trusted = ["x-forwarded-port", "x-forwarded-host", "x-forwarded-proto"];
        call(
            settings(Some("*"), 1, &trusted),
            ("127.0.0.1", 8080),
            &[
                ("X_FORWARDED_PORT", port),
                ("X_FORWARDED_PROTO", proto),
                ("X_FORWARDED_HOST", "example.com"),
            ],
        )
    }

    #[test]
    fn test_parse_forwarded_port_wrong_proto_port_80() {
        let r = wrong_proto("80", "https");
        assert_eq!(r.env("SERVER_NAME"), "example.com");
        assert_eq!(r.env("HTTP_HOST"), "example.com:80");
        assert_eq!(r.env("SERVER_PORT"), "80");
        assert_eq!(r.env("wsgi.url_scheme"), "https");
    }

    #[test]
    fn test_parse_forwarded_port_wrong_proto_port_443() {
        let r = wrong_proto("443", "http");
        assert_eq!(r.env("HTTP_HOST"), "example.com:443");
        assert_eq!(r.env("SERVER_PORT"), "443");
        assert_eq!(r.env("wsgi.url_scheme"), "http");
    }

    fn forwarded(value: &str) -> Outcome {
        call(
            settings(Some("*"), 1, &["forwarded"]),
            ("127.0.0.1", 8080),
            &[("FORWARDED", value)],
        )
    }

    #[test]
    fn test_parse_forwarded() {
        let r = forwarded("For=198.51.100.2:5858;host=example.com:8080;proto=https");
        assert_eq!(r.env("REMOTE_ADDR"), "198.51.100.2");
        assert_eq!(r.env("REMOTE_PORT"), "5858");
        assert_eq!(r.env("SERVER_NAME"), "example.com");
        assert_eq!(r.env("HTTP_HOST"), "example.com:8080");
        assert_eq!(r.env("SERVER_PORT"), "8080");
        assert_eq!(r.env("wsgi.url_scheme"), "https");
    }

    #[test]
    fn test_parse_forwarded_empty_pair() {
        let r = forwarded("For=198.51.100.2;;proto=https;by=_unused");
        assert_eq!(r.status, "200 OK");
        assert_eq!(r.env("REMOTE_ADDR"), "198.51.100.2");
    }

    #[test]
    fn test_parse_forwarded_warning_unknown_token() {
        let r = forwarded("For=198.51.100.2;host=example.com:8080;proto=https;unknown=\"yolo\"");
        assert_eq!(r.status, "200 OK");
        assert_eq!(r.env("REMOTE_ADDR"), "198.51.100.2");
        assert_eq!(r.env("SERVER_NAME"), "example.com");
        assert_eq!(r.env("HTTP_HOST"), "example.com:8080");
        assert_eq!(r.env("SERVER_PORT"), "8080");
        assert_eq!(r.env("wsgi.url_scheme"), "https");
    }

    fn assert_forwarded_malformed(value: &str, header: &str) {
        let r = forwarded(value);
        assert_eq!(r.status, "400 Bad Request", "{value}");
        let body = String::from_utf8(r.body).unwrap();
        assert!(
            body.contains(&format!("Header \"{header}\" malformed")),
            "{body}"
        );
    }

    #[test]
    fn test_parse_forwarded_pair_token_whitespace() {
        assert_forwarded_malformed("For=198.51.100.2; proto =https", "Forwarded");
    }

    #[test]
    fn test_parse_forwarded_pair_value_whitespace() {
        assert_forwarded_malformed("For= \"198.51.100.2\"; proto =https", "Forwarded");
    }

    #[test]
    fn test_parse_forwarded_pair_no_equals() {
        assert_forwarded_malformed("For", "Forwarded");
    }

    #[test]
    fn forwarded_bad_quote_and_unsupported_proto() {
        assert_forwarded_malformed("for=\"unterminated", "Forwarded");
        assert_forwarded_malformed("proto=ftp", "Forwarded Proto=");
    }

    #[test]
    fn test_parse_no_valid_proxy_headers() {
        let r = call(
            settings(Some("*"), 1, &[]),
            ("127.0.0.1", 8080),
            &[
                ("X_FORWARDED_FOR", "198.51.100.2"),
                (
                    "FORWARDED",
                    "For=198.51.100.2;host=example.com:8080;proto=https",
                ),
            ],
        );
        assert_eq!(r.env("REMOTE_ADDR"), "127.0.0.1");
        assert_eq!(r.env("SERVER_NAME"), "localhost");
        assert_eq!(r.env("HTTP_HOST"), "192.168.1.1:80");
        assert_eq!(r.env("SERVER_PORT"), "8080");
        assert_eq!(r.env("wsgi.url_scheme"), "http");
    }

    #[test]
    fn test_parse_multiple_x_forwarded_proto() {
        let r = call(
            settings(Some("*"), 1, &["x-forwarded-proto"]),
            ("127.0.0.1", 8080),
            &[("X_FORWARDED_PROTO", "http, https")],
        );
        assert_eq!(r.status, "400 Bad Request");
        assert!(String::from_utf8(r.body)
            .unwrap()
            .contains("Header \"X-Forwarded-Proto\" malformed"));
    }

    #[test]
    fn test_parse_multiple_x_forwarded_port() {
        let r = call(
            settings(Some("*"), 1, &["x-forwarded-port"]),
            ("127.0.0.1", 8080),
            &[("X_FORWARDED_PORT", "443, 80")],
        );
        assert_eq!(r.status, "400 Bad Request");
        assert!(String::from_utf8(r.body)
            .unwrap()
            .contains("Header \"X-Forwarded-Port\" malformed"));
    }

    #[test]
    fn test_strip_brackets() {
        assert_eq!(strip_brackets("[::1]"), "::1");
        assert_eq!(strip_brackets("::1"), "::1");
        assert_eq!(strip_brackets("[x"), "[x");
    }
}
