//! `waitress-serve`: the command line (waitress: `__main__.py`). Serves the built-in
//! applications; see `waitress::runner` to build a binary with your own.

fn main() {
    let registry = waitress::runner::AppRegistry::with_builtins();
    let argv: Vec<String> = std::env::args().collect();
    std::process::exit(waitress::runner::run(&argv, &registry));
}
