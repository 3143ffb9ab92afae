//! The gate's `sent` counts (`store::tally`): jobs Kafka acknowledged for
//! the gate, added to the queues' tallies in the registry's Redis about once
//! a second, and once more as the gate stops. Counts that cannot be added
//! (Redis down) are kept and added with the next ones; a gate killed
//! before adding undercounts, which can hide a loss, never invent one.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{read, Gate};
use crate::error::{Error, Result};
use crate::store::keys::QueueKeys;
use crate::store::RedisStore;

/// How often acknowledged jobs are added.
const EVERY: Duration = Duration::from_secs(1);

/// `(topic, minute, jobs)` not added yet, and the connection that adds them.
#[derive(Default)]
pub(super) struct SentCounts {
    carried: Vec<(String, u64, u64)>,
    store: Option<RedisStore>,
}

/// Starts counting and the thread that adds the counts, when the gate has a
/// registry Redis and counting is on.
pub(super) fn start(gate: &Arc<Gate>) -> Result<()> {
    if gate.config.registry_url.is_none() || !gate.config.tallies {
        return Ok(());
    }
    // Counting starts at the first take.
    lock(&gate.sent).carried = gate.producer.take_sent();
    let background = Arc::clone(gate);
    std::thread::Builder::new()
        .name("conveyor-gate-tallies".to_owned())
        .spawn(move || {
            while !background.stopping.load(Ordering::Relaxed) {
                std::thread::sleep(EVERY);
                add_sent(&background);
            }
        })
        .map_err(|e| Error::Internal(format!("cannot start tally thread: {e}")))?;
    Ok(())
}

/// Adds what Kafka acknowledged since the last call; keeps it on failure.
pub(super) fn add_sent(gate: &Gate) {
    let Some(url) = &gate.config.registry_url else {
        return;
    };
    if !gate.config.tallies {
        return;
    }
    let mut sent = lock(&gate.sent);
    sent.carried.extend(gate.producer.take_sent());
    if sent.carried.is_empty() {
        return;
    }
    let by_queue = by_queue(gate, &sent.carried);
    let SentCounts { carried, store } = &mut *sent;
    let added = (|| -> Result<()> {
        if store.is_none() {
            *store = Some(RedisStore::connect(url, Duration::from_secs(2))?);
        }
        let store = store.as_mut().expect("connected just above");
        for (queue, counts) in &by_queue {
            store.add_tally(
                &QueueKeys::new(&gate.config.namespace, queue)?,
                "sent",
                counts,
            )?;
        }
        Ok(())
    })();
    match added {
        Ok(()) => carried.clear(),
        Err(_) => {
            *store = None;
            gate.counters.tally_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `(minute, jobs)` per queue, for the topics of queues the gate knows.
fn by_queue(gate: &Gate, carried: &[(String, u64, u64)]) -> HashMap<String, Vec<(u64, u64)>> {
    let topics: HashMap<String, String> = read(&gate.registry)
        .values()
        .map(|queue| (gate.config.topic_for(queue), queue.clone()))
        .collect();
    let mut out: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for (topic, minute, n) in carried {
        if let Some(queue) = topics.get(topic) {
            out.entry(queue.clone()).or_default().push((*minute, *n));
        }
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
