//! The Rust counterpart of waitress's `profile` helper (in waitress/__init__.py).
//!
//! waitress runs the whole server under Python's profiler and prints the busiest functions when
//! it stops. Rust has no such profiler in std, so the server instead counts calls and time in
//! each stage of a request's life (accept, read and parse, wait in the queue, the application,
//! flush to the socket) and prints that table at the end. When profiling is off (the default)
//! each measuring point costs one relaxed atomic load.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A stage of a request's life that the profiler measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Accepting a connection and building its channel (I/O thread).
    Accept,
    /// Reading bytes from a socket and parsing them (I/O thread).
    ReadParse,
    /// The time a channel waits in the task queue before a worker takes it.
    QueueWait,
    /// Running the application and producing its body (worker thread).
    Application,
    /// Writing buffered output to a socket (I/O thread or worker).
    Flush,
}

impl Stage {
    /// Every stage, in the order of a request's life.
    pub const ALL: [Stage; 5] = [
        Stage::Accept,
        Stage::ReadParse,
        Stage::QueueWait,
        Stage::Application,
        Stage::Flush,
    ];

    /// The stage's name in the printed table.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Accept => "accept",
            Stage::ReadParse => "read/parse",
            Stage::QueueWait => "queue wait",
            Stage::Application => "application",
            Stage::Flush => "flush",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Whether the measuring points record anything.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Per-stage counters; relaxed atomics suffice because they are only summed at the end.
struct Counter {
    calls: AtomicU64,
    nanos: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Counter = Counter {
    calls: AtomicU64::new(0),
    nanos: AtomicU64::new(0),
};

static COUNTERS: [Counter; 5] = [ZERO; 5];

/// Whether profiling is switched on.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Start timing a stage: `None` (and no clock read) when profiling is off.
#[inline]
pub fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Finish timing a stage begun with [`start`].
#[inline]
pub fn finish(stage: Stage, started: Option<Instant>) {
    if let Some(started) = started {
        record(stage, started.elapsed().as_nanos());
    }
}

/// Time a closure as one call of `stage`.
#[inline]
pub fn measure<T>(stage: Stage, f: impl FnOnce() -> T) -> T {
    let started = start();
    let value = f();
    finish(stage, started);
    value
}

fn record(stage: Stage, nanos: u128) {
    let counter = &COUNTERS[stage.index()];
    counter.calls.fetch_add(1, Ordering::Relaxed);
    counter
        .nanos
        .fetch_add(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// One row of the profile table.
#[derive(Debug, Clone, PartialEq)]
pub struct StageStats {
    /// The stage.
    pub stage: Stage,
    /// How many times it ran.
    pub calls: u64,
    /// Total seconds spent in it.
    pub total_secs: f64,
}

impl StageStats {
    /// Seconds per call (0 when never called).
    pub fn per_call_secs(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.total_secs / self.calls as f64
        }
    }
}

/// A sort key of the table, by the names waitress passes to `pstats.sort_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// `calls`: most calls first.
    Calls,
    /// `time`, `tottime`, `cumulative`, `cumtime`: most total time first (stages do not nest,
    /// so the total and the cumulative time are the same).
    Time,
    /// `percall`: most time per call first.
    PerCall,
    /// `name`: alphabetical.
    Name,
}

impl SortKey {
    /// Read a `pstats` sort name; `None` for a name with no meaning here.
    pub fn parse(name: &str) -> Option<SortKey> {
        match name {
            "calls" | "ncalls" => Some(SortKey::Calls),
            "time" | "tottime" | "cumulative" | "cumtime" => Some(SortKey::Time),
            "percall" => Some(SortKey::PerCall),
            "name" => Some(SortKey::Name),
            _ => None,
        }
    }
}

/// The rows as they stand now, sorted by `sort_order` (waitress's default is
/// `cumulative, calls, time`).
pub fn snapshot(sort_order: &[SortKey]) -> Vec<StageStats> {
    let mut rows: Vec<StageStats> = Stage::ALL
        .iter()
        .map(|&stage| {
            let counter = &COUNTERS[stage.index()];
            StageStats {
                stage,
                calls: counter.calls.load(Ordering::Relaxed),
                total_secs: counter.nanos.load(Ordering::Relaxed) as f64 / 1e9,
            }
        })
        .collect();
    let order: &[SortKey] = if sort_order.is_empty() {
        &[SortKey::Time, SortKey::Calls]
    } else {
        sort_order
    };
    rows.sort_by(|a, b| {
        order
            .iter()
            .map(|key| match key {
                SortKey::Calls => b.calls.cmp(&a.calls),
                SortKey::Time => b.total_secs.total_cmp(&a.total_secs),
                SortKey::PerCall => b.per_call_secs().total_cmp(&a.per_call_secs()),
                SortKey::Name => a.stage.name().cmp(b.stage.name()),
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    rows
}

/// Render rows as the table printed at the end of a profiled run.
pub fn format_table(rows: &[StageStats]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>10} {:>12} {:>12}  stage",
        "calls", "total (s)", "per call (s)"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:>10} {:>12.6} {:>12.9}  {}",
            row.calls,
            row.total_secs,
            row.per_call_secs(),
            row.stage.name()
        );
    }
    out
}

/// Reset the counters and switch measuring on or off.
pub fn set_enabled(on: bool) {
    for counter in &COUNTERS {
        counter.calls.store(0, Ordering::Relaxed);
        counter.nanos.store(0, Ordering::Relaxed);
    }
    ENABLED.store(on, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_follow_pstats_names() {
        assert_eq!(SortKey::parse("cumulative"), Some(SortKey::Time));
        assert_eq!(SortKey::parse("calls"), Some(SortKey::Calls));
        assert_eq!(SortKey::parse("percall"), Some(SortKey::PerCall));
        assert_eq!(SortKey::parse("nonsense"), None);
    }

    #[test]
    fn table_lists_every_stage_sorted() {
        let rows = vec![
            StageStats {
                stage: Stage::Flush,
                calls: 3,
                total_secs: 0.5,
            },
            StageStats {
                stage: Stage::Accept,
                calls: 1,
                total_secs: 0.25,
            },
        ];
        let table = format_table(&rows);
        let flush = table.find("flush").unwrap();
        let accept = table.find("accept").unwrap();
        assert!(flush < accept);
        assert!(table.contains("0.166666667"));
    }

    // The global counters are exercised in one test only, so that parallel tests do not race
    // on them.
    #[test]
    fn measuring_counts_only_when_enabled() {
        set_enabled(false);
        measure(Stage::Accept, || ());
        assert!(start().is_none());
        set_enabled(true);
        measure(Stage::Application, || ());
        measure(Stage::Application, || ());
        let rows = snapshot(&[SortKey::Calls]);
        assert_eq!(rows[0].stage, Stage::Application);
        assert_eq!(rows[0].calls, 2);
        assert_eq!(
            rows.iter()
                .find(|r| r.stage == Stage::Accept)
                .map(|r| r.calls),
            Some(0)
        );
        set_enabled(false);
    }
}
