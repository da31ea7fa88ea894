//! Port of waitress/trigger.py. (Being written.)
