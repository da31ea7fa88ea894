//! Port of waitress/server.py. (Being written.)
