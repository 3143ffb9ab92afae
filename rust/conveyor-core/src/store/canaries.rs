//! Canary jobs (`conveyor/canaries.py`): the last one each worker ran from
//! each Kafka partition of a queue, kept per partition.

use redis::Cmd;

use super::keys::QueueKeys;
use super::RedisStore;
use crate::error::Result;

impl RedisStore {
    /// Records the canary job that just ran from `partition` (`record`:
    /// JSON), replacing the one before: one field per partition, bounded.
    pub fn record_canary(&mut self, keys: &QueueKeys, partition: u32, record: &str) -> Result<()> {
        Ok(Cmd::hset(keys.canaries(), partition, record).query(self.connection())?)
    }

    /// The last canary of each partition as `(partition, JSON)`.
    pub fn canaries(&mut self, keys: &QueueKeys) -> Result<Vec<(u32, String)>> {
        Ok(Cmd::hgetall(keys.canaries()).query(self.connection())?)
    }
}
