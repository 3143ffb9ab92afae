//! The process-wide async runtime that drives Kafka futures and, later, the
//! gate and the relay. Synchronous APIs block on it with the GIL released.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Runs a future to completion on the shared runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                // Two cores is the size we plan for; librdkafka has threads of its own.
                .worker_threads(2)
                .thread_name("conveyor-rt")
                .enable_all()
                .build()
                .expect("cannot start the tokio runtime")
        })
        .block_on(future)
}
