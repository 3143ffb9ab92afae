//! Cancelling jobs by id: a mark per job in its queue (`cancel-1.lua`), met
//! by the worker that leases the job (`fetch-6.lua` names it, the worker
//! settles it cancelled) or that runs it (its heartbeat reads the marks of
//! the jobs it holds).

use std::time::Duration;

use redis::Cmd;

use super::keys::QueueKeys;
use super::{scripts, RedisStore};
use crate::error::Result;

/// How long a cancel waits for its job before it is forgotten: a job still
/// in Kafka behind a paused relay must still meet it.
pub const CANCEL_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most cancels waiting per queue; the oldest go first.
pub const MAX_CANCELS: usize = 100_000;

impl RedisStore {
    /// Asks for job `id` of this queue to be cancelled; `false` if it was
    /// asked before.
    pub fn cancel(&mut self, keys: &QueueKeys, id: &[u8; 16]) -> Result<bool> {
        let new: u8 = scripts::CANCEL
            .key(keys.cancelled())
            .arg(&id[..])
            .arg(CANCEL_KEEP.as_millis() as u64)
            .arg(MAX_CANCELS)
            .invoke(self.scripted()?)?;
        Ok(new == 1)
    }

    /// Which of `ids` have a cancel waiting, in order; one `ZCARD` while none
    /// does.
    pub fn cancel_asked(&mut self, keys: &QueueKeys, ids: &[[u8; 16]]) -> Result<Vec<bool>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let waiting: u64 = Cmd::zcard(keys.cancelled()).query(self.connection())?;
        if waiting == 0 {
            return Ok(vec![false; ids.len()]);
        }
        let mut cmd = Cmd::new();
        cmd.arg("ZMSCORE").arg(keys.cancelled());
        for id in ids {
            cmd.arg(&id[..]);
        }
        let scores: Vec<Option<f64>> = cmd.query(self.connection())?;
        Ok(scores.into_iter().map(|s| s.is_some()).collect())
    }
}
