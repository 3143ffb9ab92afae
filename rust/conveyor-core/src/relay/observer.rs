//! Measures a relay's lag and publishes its status, once a second, on its
//! own thread and connections: asking a broker for watermarks takes round
//! trips the consume loop must not wait for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::stats::{lock, PartitionLag, RelayStats};
use crate::id::now_us;
use crate::store::keys::{fence_field, QueueKeys};
use crate::store::RedisStore;

/// How often a relay measures its partitions' lag and publishes its status.
const OBSERVE_EVERY: Duration = Duration::from_secs(1);

/// The observer thread's state.
pub(super) struct Observer {
    pub namespace: String,
    pub redis_url: String,
    pub queues: HashMap<String, QueueKeys>,
    pub watermarks: BaseConsumer,
    pub store: Option<RedisStore>,
    pub stats: Arc<RelayStats>,
    /// Names this relay in the published status.
    pub relay_id: String,
}

impl Observer {
    /// Observes until `stop`, then withdraws this relay's status.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                next = Instant::now() + OBSERVE_EVERY;
                self.refresh_lag();
                self.publish_status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (namespace, id) = (self.namespace.clone(), self.relay_id.clone());
        if let Some(store) = self.store() {
            let _ = store.set_relay_status(&namespace, &id, None);
        }
    }

    fn store(&mut self) -> Option<&mut RedisStore> {
        if self.store.is_none() {
            self.store = RedisStore::connect(&self.redis_url, Duration::from_secs(2)).ok();
        }
        self.store.as_mut()
    }

    /// Each owned partition's lag: its high watermark (asked of the broker,
    /// which answers for paused partitions too) minus the offset Redis holds
    /// records up to, the relay's own truth of what is written.
    fn refresh_lag(&mut self) {
        let owned = self.stats.assignment();
        let before = self.stats.lag();
        let mut fences: HashMap<String, HashMap<String, i64>> = HashMap::new();
        let mut lags = Vec::with_capacity(owned.len());
        for (topic, partition) in owned {
            let Ok((low, high)) =
                self.watermarks
                    .fetch_watermarks(&topic, partition, Duration::from_millis(500))
            else {
                // The broker did not answer in time: keep the last reading.
                lags.extend(
                    before
                        .iter()
                        .find(|p| p.topic == topic && p.partition == partition)
                        .cloned(),
                );
                continue;
            };
            if !fences.contains_key(&topic) {
                let Some(keys) = self.queues.get(&topic).cloned() else {
                    continue;
                };
                let Some(store) = self.store() else {
                    return;
                };
                let Ok(read) = store.relayed_offsets(&keys) else {
                    self.store = None;
                    return;
                };
                fences.insert(topic.clone(), read.into_iter().collect());
            }
            let relayed_to = fences[&topic]
                .get(&fence_field(&topic, partition))
                .copied()
                .unwrap_or(low)
                .clamp(low, high.max(low));
            lags.push(PartitionLag {
                topic,
                partition,
                high,
                relayed_to,
                lag: high - relayed_to,
            });
        }
        lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        *lock(&self.stats.partitions) = lags;
    }

    /// Publishes this relay's state to Redis for `conveyor relays`; best
    /// effort (a full or absent Redis only delays the next one).
    fn publish_status(&mut self) {
        let stats = &self.stats;
        let status = serde_json::json!({
            "id": self.relay_id,
            "updated_at": now_us() as f64 / 1e6,
            "relayed": stats.relayed.load(Ordering::Relaxed),
            "shadowed": stats.shadowed.load(Ordering::Relaxed),
            "dead_lettered": stats.dead_lettered.load(Ordering::Relaxed),
            "redis_errors": stats.redis_errors.load(Ordering::Relaxed),
            "held": stats.held.load(Ordering::Relaxed),
            "memory_guarded": stats.memory_guarded.load(Ordering::Relaxed) == 1,
            "depth_guarded": stats.depth_guarded.load(Ordering::Relaxed),
            "guard_engaged": stats.guard_engaged.load(Ordering::Relaxed),
            "controls": &*lock(&stats.controls),
            "partitions": &*lock(&stats.partitions),
        })
        .to_string();
        let (namespace, id) = (self.namespace.clone(), self.relay_id.clone());
        if let Some(store) = self.store() {
            if store
                .set_relay_status(&namespace, &id, Some(&status))
                .is_err()
            {
                self.store = None;
            }
        }
    }
}
