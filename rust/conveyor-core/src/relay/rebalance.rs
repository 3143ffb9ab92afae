//! The relay's consumer: how it is configured and subscribed, and
//! partitions coming and going: a newly assigned partition starts where
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
use crate::error::{Error, Result};
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

/// The relay's consumer, subscribed to its topics.
pub(super) fn subscribe(
    config: &super::RelayConfig,
    context: RelayContext,
) -> Result<BaseConsumer<RelayContext>> {
    let mut client = config.kafka.client_config();
    client
        .set("group.id", &config.group_id)
        // The reader commits watermarks itself (lowest unfinished offset).
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A dead relay's partitions move within seconds.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.partition.eof", "false")
        // Relay memory must not grow with the backlog. librdkafka bounds its
        // prefetch in *compressed* bytes (queued.max.messages.kbytes, all
        // partitions together) and in messages per partition; each message
        // costs a few hundred bytes once decompressed, so well-compressing
        // jobs took 300-400 MB with large fetches. Small fetches are as fast
        // provided the next fetch is not postponed a whole second
        // (fetch.queue.backoff.ms, default 1000) whenever the queue is full:
        // measured with bench/relay_bench.py, 2M jobs of 100 bytes, 3
        // partitions: 87 MB peak RSS and 300k jobs/s, against 360 MB and
        // 230k jobs/s with 16 MB fetches and the default backoff.
        .set("queued.max.messages.kbytes", "2048")
        .set("queued.min.messages", "20000")
        .set("fetch.queue.backoff.ms", "2")
        .set("max.partition.fetch.bytes", "524288")
        .set("fetch.max.bytes", "2097152");
    // User properties win over our defaults.
    for (key, value) in &config.kafka.properties {
        client.set(key, value);
    }
    let consumer: BaseConsumer<RelayContext> = client
        .create_with_context(context)
        .map_err(Error::kafka("create relay consumer"))?;
    let topics: Vec<&str> = config.routes.iter().map(|(t, _)| t.as_str()).collect();
    consumer
        .subscribe(&topics)
        .map_err(Error::kafka("subscribe"))?;
    Ok(consumer)
}
