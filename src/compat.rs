//! Port of waitress/compat.py.
//!
//! waitress keeps its platform facts in one file; so does the port. Every `extern "C"`
//! declaration, platform constant and `unsafe` call of the crate lives here, each behind a
//! small safe function, so the rest of the crate is safe Rust over `std` types.
