//! Port of waitress/channel.py. (Being written.)
