//! `waitress-serve`: the command line (waitress: `__main__.py`). Hands the arguments and the
//! built-in applications ([`waitress::apps`]) to the runner; see `waitress::runner` to build a
//! binary with applications of your own.

fn main() {
    let registry = waitress::apps::registry();
    let argv: Vec<String> = std::env::args().collect();
    std::process::exit(waitress::runner::run(&argv, &registry));
}
