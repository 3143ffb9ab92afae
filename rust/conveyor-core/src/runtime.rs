//! The process-wide async runtime: it serves the gate and drives the Kafka
//! admin futures (topic creation and deletion). Synchronous APIs block on it
//! with the GIL released; the relay and the producer run on threads of their
//! own and do not use it.
//!
//! Fork safety: a runtime's threads do not survive `fork()`, so each process
//! gets its own. A child finds its parent's runtime (by pid), leaves it alone
//! (dropping it would wait for threads that no longer exist) and starts anew.

use std::future::Future;
use std::sync::Mutex;

use tokio::runtime::Runtime;

static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

fn runtime() -> &'static Runtime {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    match *slot {
        Some((owner, runtime)) if owner == pid => runtime,
        _ => {
            let runtime: &'static Runtime = Box::leak(Box::new(
                tokio::runtime::Builder::new_multi_thread()
                    // Two cores is the size we plan for; librdkafka has threads of its own.
                    .worker_threads(2)
                    .thread_name("conveyor-rt")
                    .enable_all()
                    .build()
                    .expect("cannot start the tokio runtime"),
            ));
            *slot = Some((pid, runtime));
            runtime
        }
    }
}

/// Runs a future to completion on this process's runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// Runs a future in the background on this process's runtime.
pub fn spawn<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    runtime().spawn(future);
}
