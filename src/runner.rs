//! Port of waitress/runner.py. (Being written.)
