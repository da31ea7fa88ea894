//! The worker pool's wake-up policy (`ThreadedTaskDispatcher::add_task`): at most one worker is
//! being woken at a time and the woken one passes the wake-up on, so a burst of small tasks
//! does not cost a system call per task each way. These tests pin what that must never cost:
//! a task stuck in an application never holds up the next one while a worker sleeps, and every
//! task of a burst runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use waitress::task::{Service, ThreadedTaskDispatcher};

const WAIT: Duration = Duration::from_secs(10);

/// A task that reports it started, then blocks until released (or the deadline passes).
struct Blocking {
    started: Mutex<Sender<()>>,
    release: Mutex<Receiver<()>>,
}

impl Service for Blocking {
    fn service(&self) {
        let _ = self.started.lock().unwrap().send(());
        let _ = self.release.lock().unwrap().recv_timeout(WAIT);
    }
    fn cancel(&self) {}
}

/// A task that counts its runs and reports each.
struct Counting {
    runs: AtomicUsize,
    done: Mutex<Sender<()>>,
}

impl Service for Counting {
    fn service(&self) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let _ = self.done.lock().unwrap().send(());
    }
    fn cancel(&self) {}
}

#[test]
fn a_blocked_task_does_not_hold_up_the_next_while_a_worker_sleeps() {
    let dispatcher = ThreadedTaskDispatcher::new();
    dispatcher.set_thread_count(4);
    // Three tasks that block and a quick one, queued in one burst (as the I/O thread queues
    // the requests of one poll round): each must reach a worker of its own, although only one
    // wake-up is in flight at a time.
    let mut releases = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..3 {
        let (started_tx, started_rx) = channel();
        let (release_tx, release_rx) = channel();
        dispatcher.add_task(Arc::new(Blocking {
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
        }));
        starts.push(started_rx);
        releases.push(release_tx);
    }
    let (done_tx, done_rx) = channel();
    let quick = Arc::new(Counting {
        runs: AtomicUsize::new(0),
        done: Mutex::new(done_tx),
    });
    dispatcher.add_task(quick.clone());
    for started in starts {
        started
            .recv_timeout(WAIT)
            .expect("a queued task starts while a worker is free");
    }
    done_rx
        .recv_timeout(WAIT)
        .expect("the quick task runs beside three blocked ones");
    for release in releases {
        let _ = release.send(());
    }
    assert!(dispatcher.shutdown(true, WAIT) || dispatcher.thread_count() == 0);
}

#[test]
fn every_task_of_a_burst_runs() {
    let dispatcher = ThreadedTaskDispatcher::new();
    dispatcher.set_thread_count(4);
    let (done_tx, done_rx) = channel();
    let task = Arc::new(Counting {
        runs: AtomicUsize::new(0),
        done: Mutex::new(done_tx),
    });
    for _ in 0..1000 {
        dispatcher.add_task(task.clone());
    }
    for n in 0..1000 {
        done_rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("only {n} of 1000 tasks ran"));
    }
    assert_eq!(task.runs.load(Ordering::SeqCst), 1000);
    dispatcher.shutdown(true, WAIT);
}
