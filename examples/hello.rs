//! The README's library example: a complete hello-world application served with
//! `waitress::serve`.
//!
//!     cargo run --example hello     # then: curl 'http://127.0.0.1:8080/?you'

use waitress::{AppResult, Body, Environ, StartResponse};

fn hello(environ: &mut Environ, start_response: &mut StartResponse<'_>) -> AppResult {
    let name = environ.get("QUERY_STRING").unwrap_or("").to_string();
    start_response.start("200 OK", [("Content-Type", "text/plain")])?;
    Ok(Body::from(format!(
        "Hello, {}!\n",
        if name.is_empty() { "World" } else { &name }
    )))
}

fn main() -> Result<(), waitress::ServerError> {
    // The settings are waitress's, as name/value strings (PasteDeploy style).
    waitress::serve(hello, [("listen", "127.0.0.1:8080"), ("threads", "4")])
}
