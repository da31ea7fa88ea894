//! Port of waitress/wasyncore.py. (Being written.)
