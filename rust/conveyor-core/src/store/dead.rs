//! Dead letters picked by id: an operator's selection (the dashboard)
//! replayed or deleted. `queue.rs` replays the oldest and purges by age.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::Cmd;

use super::keys::QueueKeys;
use super::queue::MAX_FETCH;
use super::{scripts, RedisStore};
use crate::envelope::{append_stage, id_bytes, set_attempt, Envelope, Stage};
use crate::error::Result;

/// Most dead letters read to find a selection; dead letters are bounded by
/// their retention, this bounds one call whatever it is set to.
pub const MAX_DEAD_SCAN: usize = 100_000;

impl RedisStore {
    /// Moves the dead letters among `ids` back to ready with fresh attempts,
    /// as [`RedisStore::replay_dead`] does; returns `(moved, kept)`. Ids not
    /// dead (replayed, purged, never dead) count as neither.
    pub fn replay_dead_ids(&mut self, keys: &QueueKeys, ids: &[[u8; 16]]) -> Result<(u64, u64)> {
        let picked = self.dead_with_ids(keys, ids)?;
        if picked.is_empty() {
            return Ok((0, 0));
        }
        self.replay_envelopes(keys, &picked)
    }

    /// Deletes the dead letters among `ids` with their error records
    /// (counted as purged); returns how many.
    pub fn forget_dead_ids(&mut self, keys: &QueueKeys, ids: &[[u8; 16]]) -> Result<u64> {
        let picked = self.dead_with_ids(keys, ids)?;
        if picked.is_empty() {
            return Ok(0);
        }
        let mut call = scripts::FORGET_DEAD.key(keys.dead());
        call.key(keys.errors()).key(keys.counts());
        for raw in &picked {
            call.arg(raw.as_slice());
        }
        Ok(call.invoke(self.scripted()?)?)
    }

    /// `replay_dead-4.lua` on these envelopes, as stored in dead.
    pub(super) fn replay_envelopes(
        &mut self,
        keys: &QueueKeys,
        dead: &[Vec<u8>],
    ) -> Result<(u64, u64)> {
        let mut call = scripts::REPLAY_DEAD.key(keys.dead());
        call.key(keys.ready()).key(keys.unique()).key(keys.wake());
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        for raw in dead {
            let decoded = Envelope::decode(raw).ok();
            let id = id_bytes(raw).unwrap_or_default();
            let field = decoded
                .as_ref()
                .and_then(|e| e.unique_field())
                .unwrap_or_default();
            // A malformed one goes back as it is, to be dead-lettered again
            // with its reason; it has no attempt count to trust.
            let fresh = match decoded {
                Some(_) => replayed(raw, now_us),
                None => raw.clone(),
            };
            call.arg(raw.as_slice()).arg(id).arg(field).arg(fresh);
        }
        Ok(call.invoke(self.scripted()?)?)
    }

    /// The envelopes in dead whose ids are among `ids`, read a page at a
    /// time until all are found or [`MAX_DEAD_SCAN`] were read.
    fn dead_with_ids(&mut self, keys: &QueueKeys, ids: &[[u8; 16]]) -> Result<Vec<Vec<u8>>> {
        let mut wanted: HashSet<&[u8]> = ids.iter().map(|id| &id[..]).collect();
        let mut found = Vec::new();
        let mut start = 0;
        while !wanted.is_empty() && start < MAX_DEAD_SCAN {
            let page: Vec<Vec<u8>> = Cmd::zrange(
                keys.dead(),
                start as isize,
                (start + MAX_FETCH - 1) as isize,
            )
            .query(self.connection())?;
            if page.is_empty() {
                break;
            }
            start += page.len();
            for raw in page {
                if id_bytes(&raw).is_some_and(|id| wanted.remove(id)) {
                    found.push(raw);
                }
            }
        }
        Ok(found)
    }
}

/// A dead envelope as it goes back to ready: no attempts made yet, and a
/// [`Stage::Replayed`] stamp when it has room for one (its earlier stamps
/// keep the attempts before).
fn replayed(raw: &[u8], now_us: u64) -> Vec<u8> {
    let mut fresh = raw.to_vec();
    set_attempt(&mut fresh, 0);
    let mut stamped = fresh.clone();
    append_stage(&mut stamped, Stage::Replayed as u8, now_us);
    if Envelope::decode(&stamped).is_ok() {
        stamped
    } else {
        fresh
    }
}
