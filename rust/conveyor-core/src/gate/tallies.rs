//! The gate's `sent` counts (`store::tally`): jobs Kafka acknowledged for
//! the gate, added to the queues' tallies in the registry's Redis about once
//! a second, and once more as the gate stops. Counts that cannot be added
//! (Redis down) are kept and added with the next ones; a gate killed
//! before adding undercounts, which can hide a loss, never invent one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{read, Gate};
use crate::error::{Error, Result};
use crate::store::keys::QueueKeys;
use crate::store::RedisStore;

/// How often acknowledged jobs are added.
const EVERY: Duration = Duration::from_secs(1);

/// Jobs not added yet by `(topic, minute)`, and the connection that adds
/// them. Merged by minute, so a long Redis outage costs one entry per topic
/// and minute, not one per second.
#[derive(Default)]
pub(super) struct SentCounts {
    pending: BTreeMap<(String, u64), u64>,
    store: Option<RedisStore>,
}

/// Starts counting and the thread that adds the counts, when the gate has a
/// registry Redis and counting is on.
pub(super) fn start(gate: &Arc<Gate>) -> Result<()> {
    if gate.config.registry_url.is_none() || !gate.config.tallies {
        return Ok(());
    }
    // Counting starts at the first take.
    let first = gate.producer.take_sent();
    merge(&mut lock(&gate.sent).pending, first);
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

/// Adds what Kafka acknowledged since the last call, queue by queue; what a
/// queue's Redis did not take is kept for the next call (and never added
/// twice: a queue's counts leave `pending` only once added).
pub(super) fn add_sent(gate: &Gate) {
    let Some(url) = &gate.config.registry_url else {
        return;
    };
    if !gate.config.tallies {
        return;
    }
    let mut sent = lock(&gate.sent);
    let SentCounts { pending, store } = &mut *sent;
    merge(pending, gate.producer.take_sent());
    if pending.is_empty() {
        return;
    }
    let queues: HashMap<String, String> = read(&gate.registry)
        .values()
        .map(|queue| (gate.config.topic_for(queue), queue.clone()))
        .collect();
    // A topic of no queue the gate knows any more cannot be counted anywhere.
    pending.retain(|(topic, _), _| queues.contains_key(topic));
    for (topic, queue) in &queues {
        let counts: Vec<(u64, u64)> = pending
            .range((topic.clone(), 0)..=(topic.clone(), u64::MAX))
            .map(|((_, minute), n)| (*minute, *n))
            .collect();
        if counts.is_empty() {
            continue;
        }
        match add(store, url, &gate.config.namespace, queue, &counts) {
            Ok(()) => pending.retain(|(t, _), _| t != topic),
            Err(_) => {
                *store = None;
                gate.counters.tally_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

fn add(
    store: &mut Option<RedisStore>,
    url: &str,
    namespace: &str,
    queue: &str,
    counts: &[(u64, u64)],
) -> Result<()> {
    if store.is_none() {
        *store = Some(RedisStore::connect(url, Duration::from_secs(2))?);
    }
    let store = store.as_mut().expect("connected just above");
    store.add_tally(&QueueKeys::new(namespace, queue)?, "sent", counts)
}

fn merge(pending: &mut BTreeMap<(String, u64), u64>, taken: Vec<(String, u64, u64)>) {
    for (topic, minute, n) in taken {
        *pending.entry((topic, minute)).or_default() += n;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
