//! The process-wide logging setup: `set_log_levels`, and the `log_level` setting of `serve`.
//! Log levels are global to the process, so this binary holds one test, which nothing else
//! runs beside.

use std::sync::{Arc, Mutex};

use waitress::utilities::{
    log_level, log_levels, set_log_level, set_log_levels, set_log_sink, Level, LogLevels, LogSink,
    ACCESS_LOGGER, LOGGER, QUEUE_LOGGER,
};
use waitress::{AppResult, Body, Environ, StartResponse};

#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);

impl LogSink for Recorded {
    fn log(&self, level: Level, logger: &str, message: &str) {
        let line = format!("{}:{logger}:{message}", level.name());
        self.0.lock().unwrap().push(line);
    }
}

impl Recorded {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn hello(_environ: &mut Environ, sr: &mut StartResponse<'_>) -> AppResult {
    sr.start("200 OK", [("Content-Type", "text/plain")])?;
    Ok(Body::from("hello"))
}

fn log_one_of_each() {
    LOGGER.info("server info");
    LOGGER.warning("server warning");
    QUEUE_LOGGER.warning("Task queue depth is 1");
    ACCESS_LOGGER.info("access line");
}

#[test]
fn log_levels_per_logger_through_the_library_and_serve() {
    let recorded = Arc::new(Recorded::default());
    set_log_sink(recorded.clone());

    // The default: everything from info up.
    assert_eq!(log_levels(), LogLevels::default());
    log_one_of_each();
    assert_eq!(recorded.take().len(), 4);

    // The queue warnings silenced, the rest as before.
    set_log_levels(&LogLevels::parse("info,waitress.queue=error").unwrap());
    log_one_of_each();
    assert_eq!(
        recorded.take(),
        [
            "INFO:waitress:server info",
            "WARNING:waitress:server warning",
            "INFO:waitress.access:access line"
        ]
    );
    assert!(!QUEUE_LOGGER.enabled(Level::Warning));
    assert!(QUEUE_LOGGER.enabled(Level::Error));

    // A parent's level holds for its children unless they have their own.
    set_log_levels(&LogLevels::parse("debug,waitress=warning,waitress.access=info").unwrap());
    log_one_of_each();
    assert_eq!(
        recorded.take(),
        [
            "WARNING:waitress:server warning",
            "WARNING:waitress.queue:Task queue depth is 1",
            "INFO:waitress.access:access line"
        ]
    );

    // `set_log_level` changes the default and keeps the single loggers' levels.
    set_log_levels(&LogLevels::parse("info,waitress.queue=error").unwrap());
    set_log_level(Level::Error);
    assert_eq!(log_level(), Level::Error);
    assert_eq!(log_levels().to_string(), "error,waitress.queue=error");
    log_one_of_each();
    assert!(recorded.take().is_empty());

    // `serve`'s `log_level` is applied before the other settings are checked: a refused
    // setting after it still finds the levels set, and the settings' own warnings obey them.
    set_log_levels(&LogLevels::default());
    let err = waitress::serve(
        hello,
        [
            ("log_level", "info,waitress=error"),
            ("send_bytes", "1"),
            ("threads", "0"),
        ],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad value for threads: at least one thread is needed"
    );
    assert_eq!(log_levels().to_string(), "info,waitress=error");
    assert!(
        recorded.take().is_empty(),
        "the send_bytes warning is below waitress=error"
    );

    // A bad level is refused, naming the setting, and changes nothing.
    let err = waitress::serve(hello, [("log_level", "loud")]).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("bad value for log_level: 'loud' is not a log level"));
    assert_eq!(log_levels().to_string(), "info,waitress=error");
}
