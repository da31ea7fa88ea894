//! Port of waitress/proxy_headers.py. (Being written.)
