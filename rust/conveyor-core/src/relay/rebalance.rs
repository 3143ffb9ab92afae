//! Partitions coming and going: a newly assigned partition starts where
//! Redis says it ends; only when Redis holds nothing of it (a new or wiped
//! store) where Kafka's committed offset, the watermark, says.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::recovery::Recovery;
use super::stats::{lock, RelayStats};
use crate::store::keys::{fence_field, QueueKeys};
use crate::store::RedisStore;

/// The relay consumer's context: handles rebalances.
pub(super) struct RelayContext {
    pub redis_url: String,
    pub queues: HashMap<String, QueueKeys>,
    pub stats: Arc<RelayStats>,
    pub recovery: Arc<Recovery>,
}

impl ClientContext for RelayContext {}

impl ConsumerContext for RelayContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assigned = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let starts = self.start_where_redis_ends(tpl);
                self.recovery.assigned(&starts);
                consumer.assign(tpl).map(|_| tpl.clone())
            }
            _ => {
                self.recovery.assigned(&[]);
                consumer.unassign().map(|_| TopicPartitionList::new())
            }
        };
        let owned = assigned
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        *lock(&self.stats.assignment) = owned;
    }
}

impl RelayContext {
    /// Sets each newly assigned partition's start to the offset Redis holds
    /// records up to, and returns `(topic, partition, start)` (-1: Redis has
    /// no fence for it). Without an answer from Redis, Kafka's committed
    /// offset is used; the script's check still keeps every write
    /// exactly-once.
    fn start_where_redis_ends(&self, tpl: &mut TopicPartitionList) -> Vec<(String, i32, i64)> {
        let wanted: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let mut starts: Vec<(String, i32, i64)> =
            wanted.iter().map(|(t, p)| (t.clone(), *p, -1)).collect();
        let Ok(mut store) = RedisStore::connect(&self.redis_url, Duration::from_secs(2)) else {
            return starts;
        };
        let mut relayed: HashMap<String, HashMap<String, i64>> = HashMap::new();
        for (i, (topic, partition)) in wanted.into_iter().enumerate() {
            let Some(keys) = self.queues.get(&topic) else {
                continue;
            };
            let offsets = relayed.entry(topic.clone()).or_insert_with(|| {
                store
                    .relayed_offsets(keys)
                    .map(|v| v.into_iter().collect())
                    .unwrap_or_default()
            });
            if let Some(&next) = offsets.get(&fence_field(&topic, partition)) {
                let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(next));
                starts[i].2 = next;
            }
        }
        starts
    }
}
