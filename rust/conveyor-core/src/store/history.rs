//! Finding a job by its id: how it ended, for a bounded time, and where it
//! waits or runs until then.
//!
//! `settle-11.lua` appends each job that ends (done, to be retried, dead)
//! to its queue's history window of [`BUCKET_S`] seconds: its kind, Redis'
//! time and its envelope (whose stage stamps are the job's timeline:
//! written to Kafka, relayed, each attempt started and failed), one append
//! per settled batch (a hash field per job cost a quarter of a worker
//! thread's fetch-and-settle rate; the append costs a copy). A window
//! expires [`History::retention`] after its last write and takes at most
//! its share of [`History::max_bytes`], so the memory spent is bounded by
//! time and by size whatever the rate; a lookup reads the windows and looks
//! for the id (the newest record wins). A job not
//! ended yet is looked for where it is: a lease (running), the scheduled
//! set, the ready list (both scanned up to a bound: a lookup is for people,
//! not for every request).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Cmd;
use serde_json::{json, Value};

use super::keys::QueueKeys;
use super::RedisStore;
use crate::envelope::{id_bytes, Envelope, Stage, ID_LEN};
use crate::error::Result;

/// Width of one history window, in seconds.
pub const BUCKET_S: u64 = 10;

/// How long, and how many, ended jobs stay findable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// How long after it ended a job stays findable; zero keeps none.
    pub retention: Duration,
    /// Most bytes one queue's history holds; past it, jobs that end are
    /// not recorded until older windows expire.
    pub max_bytes: u64,
}

impl Default for History {
    /// Five minutes, at most 32 MiB per queue (docs/lookup.md).
    fn default() -> Self {
        History {
            retention: Duration::from_secs(300),
            max_bytes: 32 << 20,
        }
    }
}

impl History {
    /// Keeps no history.
    pub const OFF: History = History {
        retention: Duration::ZERO,
        max_bytes: 0,
    };

    /// The window being written now (by this host's clock: a lookup reads
    /// one window more on either side).
    pub fn bucket_now(&self) -> u64 {
        unix_s() / BUCKET_S
    }

    /// How long a window lives after its last write; 0 when off.
    pub fn ttl_s(&self) -> u64 {
        if self.retention.is_zero() || self.max_bytes == 0 {
            return 0;
        }
        self.retention.as_secs().max(1) + BUCKET_S
    }

    /// The windows a lookup reads.
    fn windows(&self) -> u64 {
        self.retention.as_secs().div_ceil(BUCKET_S) + 2
    }

    /// Most bytes one window takes.
    pub fn bucket_max(&self) -> u64 {
        self.max_bytes.div_ceil(self.windows()).max(1)
    }
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where a job was found and in what state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `done`, `retrying`, `dead`, `running`, `scheduled` or `queued`.
    pub state: &'static str,
    /// When it ended (Redis' clock, ms) for an ended job.
    pub ended_ms: Option<u64>,
    /// Its envelope as stored there.
    pub envelope: Vec<u8>,
    /// Its last error (JSON), if it failed.
    pub error: Option<String>,
}

impl Found {
    /// The job as `conveyor job`, `app.lookup` and `GET /v1/jobs/{id}` show
    /// it: `id`, `state`, `type`, `queue`, `attempts`, `enqueued_at_us`,
    /// `timeline` (`[stage, µs]` from the stage stamps, then the end),
    /// `kafka` (`{partition, offset}` the relay read it from, or null) and
    /// `error` (the last one recorded, or null).
    pub fn describe(&self, queue: &str) -> Result<Value> {
        let envelope = Envelope::decode(&self.envelope)?;
        let mut kafka = Value::Null;
        let mut timeline = Vec::new();
        for stamp in &envelope.stages {
            match (stamp.source(), Stage::from_code(stamp.code)) {
                (Some((partition, offset)), _) => {
                    kafka = json!({"partition": partition, "offset": offset});
                }
                (None, Some(stage)) => timeline.push(json!([stage.name(), stamp.at_us])),
                (None, None) => {
                    timeline.push(json!([format!("stage {}", stamp.code), stamp.at_us]))
                }
            }
        }
        if let Some(ms) = self.ended_ms {
            timeline.push(json!([self.state, ms.saturating_mul(1000)]));
        }
        let error = self
            .error
            .as_deref()
            .map(|text| serde_json::from_str(text).unwrap_or_else(|_| json!({"message": text})));
        // A leased envelope counts the attempts before the one it is in.
        let current = u32::from(matches!(self.state, "done" | "running"));
        Ok(json!({
            "id": envelope.id.to_string(),
            "state": self.state,
            "type": envelope.job_type,
            "queue": queue,
            "attempts": envelope.attempt + current,
            "enqueued_at_us": envelope.enqueued_at_us,
            "timeline": timeline,
            "kafka": kafka,
            "error": error,
        }))
    }
}

/// Envelopes read per round trip when scanning a list or a set.
const SCAN_CHUNK: usize = 1000;

impl RedisStore {
    /// Finds job `id` in a queue: ended within `history`'s retention, or
    /// running, scheduled or queued (scanning at most `max_scan` of each
    /// waiting list). `None` when it is in none of them: still in Kafka,
    /// ended longer ago, or in another queue.
    pub fn lookup(
        &mut self,
        keys: &QueueKeys,
        id: &[u8; ID_LEN],
        history: &History,
        max_scan: usize,
    ) -> Result<Option<Found>> {
        let mut found = self.ended(keys, id, history)?;
        if found.is_none() {
            found = self.leased(keys, id)?;
        }
        if found.is_none() {
            found = self.waiting(keys, id, max_scan)?;
        }
        if let Some(found) = &mut found {
            if found.state != "done" {
                found.error = Cmd::hget(keys.errors(), &id[..]).query(self.connection())?;
            }
        }
        Ok(found)
    }

    /// The newest history record of `id`, all windows read in one go (at
    /// most `max_bytes` and a window).
    fn ended(
        &mut self,
        keys: &QueueKeys,
        id: &[u8; ID_LEN],
        history: &History,
    ) -> Result<Option<Found>> {
        if history.ttl_s() == 0 {
            return Ok(None);
        }
        let newest = history.bucket_now() + 1;
        let commands = (0..history.windows())
            .map(|back| Cmd::get(keys.history(newest.saturating_sub(back))))
            .collect();
        let windows: Vec<Option<Vec<u8>>> = self.connection().pipeline(commands)?;
        Ok(windows
            .iter()
            .flatten()
            .find_map(|window| newest_record(window, id)))
    }

    fn leased(&mut self, keys: &QueueKeys, id: &[u8; ID_LEN]) -> Result<Option<Found>> {
        let tokens: Vec<String> = Cmd::zrange(keys.leases(), 0, -1).query(self.connection())?;
        if tokens.is_empty() {
            return Ok(None);
        }
        let commands = tokens.iter().map(|t| Cmd::hvals(keys.lease(t))).collect();
        let leases: Vec<Vec<Vec<u8>>> = self.connection().pipeline(commands)?;
        Ok(leases
            .into_iter()
            .flatten()
            .find(|e| id_bytes(e) == Some(&id[..]))
            .map(|envelope| found("running", envelope)))
    }

    fn waiting(
        &mut self,
        keys: &QueueKeys,
        id: &[u8; ID_LEN],
        max_scan: usize,
    ) -> Result<Option<Found>> {
        for (state, key) in [("scheduled", keys.scheduled()), ("queued", keys.ready())] {
            let mut start = 0;
            while start < max_scan {
                let end = (start + SCAN_CHUNK).min(max_scan) - 1;
                let mut read = Cmd::new();
                let command = if state == "queued" {
                    "LRANGE"
                } else {
                    "ZRANGE"
                };
                read.arg(command).arg(&key).arg(start).arg(end);
                let chunk: Vec<Vec<u8>> = read.query(self.connection())?;
                if let Some(envelope) = chunk.iter().find(|e| id_bytes(e) == Some(&id[..])) {
                    return Ok(Some(found(state, envelope.clone())));
                }
                if chunk.len() < end + 1 - start {
                    break;
                }
                start = end + 1;
            }
        }
        Ok(None)
    }
}

fn found(state: &'static str, envelope: Vec<u8>) -> Found {
    Found {
        state,
        ended_ms: None,
        envelope,
        error: None,
    }
}

/// Bytes before each record's envelope: kind, 13 digits of ms, 8 hex
/// digits of length.
const HEADER: usize = 1 + 13 + 8;

/// The last record of `id` in one window, as `settle-11.lua` appends them;
/// `None` if it has none (or the window is cut short: a record is whole or
/// not read).
fn newest_record(window: &[u8], id: &[u8; ID_LEN]) -> Option<Found> {
    let mut at = 0;
    let mut newest = None;
    while at + HEADER <= window.len() {
        let header = &window[at..at + HEADER];
        let Some((ended_ms, len)) = read_header(header) else {
            break;
        };
        let Some(envelope) = window.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if id_bytes(envelope) == Some(&id[..]) {
            let state = match header[0] {
                b'D' => "done",
                b'R' => "retrying",
                b'X' => "dead",
                b'C' => "cancelled",
                _ => break,
            };
            newest = Some(Found {
                state,
                ended_ms: Some(ended_ms),
                envelope: envelope.to_vec(),
                error: None,
            });
        }
        at += HEADER + len;
    }
    newest
}

/// A record's end time (ms) and envelope length.
fn read_header(header: &[u8]) -> Option<(u64, usize)> {
    let text = std::str::from_utf8(header.get(1..HEADER)?).ok()?;
    let ended_ms = text[..13].parse().ok()?;
    let len = usize::from_str_radix(&text[13..], 16).ok()?;
    Some((ended_ms, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, ms: u64, envelope: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend(format!("{ms:013}{:08x}", envelope.len()).bytes());
        out.extend(envelope);
        out
    }

    #[test]
    fn the_newest_record_of_an_id_wins_as_the_script_appends_them() {
        let job = |id: u8, tail: &[u8]| {
            let mut e = vec![0u8; crate::envelope::ID_OFFSET];
            e.extend([id; ID_LEN]);
            e.extend(tail);
            e
        };
        let mut window = record(b'R', 1_733_000_000_001, &job(7, b"first"));
        window.extend(record(b'D', 1_733_000_000_002, &job(8, b"other")));
        window.extend(record(b'X', 1_733_000_000_123, &job(7, b"last")));
        let found = newest_record(&window, &[7; ID_LEN]).expect("found");
        assert_eq!(found.state, "dead");
        assert_eq!(found.ended_ms, Some(1_733_000_000_123));
        assert_eq!(found.envelope, job(7, b"last"));
        assert_eq!(newest_record(&window, &[8; ID_LEN]).unwrap().state, "done");
        assert!(newest_record(&window, &[9; ID_LEN]).is_none());
        // A window cut in the middle of a record reads what is whole.
        let cut = &window[..window.len() - 2];
        assert_eq!(newest_record(cut, &[7; ID_LEN]).unwrap().state, "retrying");
    }

    #[test]
    fn the_history_is_bounded_by_time_and_count() {
        let h = History::default();
        assert_eq!(h.ttl_s(), 310);
        assert_eq!(h.windows(), 32);
        assert!(h.bucket_max() * h.windows() >= h.max_bytes);
        assert_eq!(History::OFF.ttl_s(), 0);
    }
}
