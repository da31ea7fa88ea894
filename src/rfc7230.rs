//! Port of waitress/rfc7230.py. (Being written.)
