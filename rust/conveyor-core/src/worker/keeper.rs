//! The keeper: a native thread per worker process that renews its leases and
//! reaps the expired leases of dead workers. It never needs the GIL, so a
//! handler that holds it in one long C call (`sum(range(10**9))`) still keeps
//! its lease and runs once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::WorkQueues;

/// A running keeper; stopped by `stop` or when dropped.
pub struct Keeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    /// Starts renewing and reaping for `queues`: every third of the lease,
    /// between 50 ms and 1 s, so a lease survives two missed beats.
    pub fn start(queues: Arc<WorkQueues>) -> std::io::Result<Keeper> {
        let every = (queues.lease / 3).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("conveyor-keeper".into())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                let mut guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                while !*guard {
                    drop(guard);
                    beat(&queues);
                    guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                    if !*guard {
                        guard = wake
                            .wait_timeout(guard, every)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            })?;
        Ok(Keeper {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for its current beat to end.
    pub fn stop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One heartbeat, one reap and a look at Redis' memory; a Redis error is
/// counted and logged, and the next beat tries again (a lease outlives two
/// missed beats).
fn beat(queues: &WorkQueues) {
    let result = queues
        .heartbeat()
        .and_then(|_| queues.reap())
        .and_then(|_| queues.check_memory())
        .and_then(|_| queues.check_cancels());
    if let Err(err) = result {
        queues.stats.keeper_errors.fetch_add(1, Ordering::Relaxed);
        queues.event(format!("keeper: {err} (trying again)"));
    }
}
