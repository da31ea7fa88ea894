//! The README's "Your own `waitress-serve`": the built-in applications plus one of your own,
//! with the whole command line of waitress-serve. (`cargo test` builds it, so the README's
//! snippet is known to compile.)
//!
//!     cargo run --example own_runner -- --listen 127.0.0.1:8080 myapp

use waitress::runner::{run, AppRegistry};

fn main() {
    let mut registry = AppRegistry::with_builtins();
    registry.register_fn("myapp", "my application", |_env, sr| {
        sr.start("200 OK", [("Content-Type", "text/plain")])?;
        Ok("mine\n".into())
    });
    std::process::exit(run(&std::env::args().collect::<Vec<_>>(), &registry));
}
