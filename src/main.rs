//! Port of waitress/__main__.py: the `waitress-serve` command. (Being written.)

fn main() {}
