//! The README's library example: a complete hello-world application served with
//! `waitress::serve`.
//!
//!     cargo run --example hello     # then: curl 'http://127.0.0.1:8080/?you'

use waitress::{AppResult, Body, Environ, StartResponse};

fn hello(environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
    let name = environ.get("QUERY_STRING").unwrap_or("").to_string();
    start_response.start("200 OK", [("Content-Type", "text/plain")])?;
    let name = if name.is_empty() { "World" } else { &name };
    Ok(Body::from(format!("Hello, {name}!\n")))
}

fn main() {
    // The settings are waitress's, as name/value strings (PasteDeploy style).
    let settings = [("listen", "127.0.0.1:8080"), ("threads", "4")];
    if let Err(e) = waitress::serve(hello, settings) {
        // Display, not Debug: "could not listen on 127.0.0.1:8080: Address already in use …"
        eprintln!("hello: {e}");
        std::process::exit(1);
    }
}
