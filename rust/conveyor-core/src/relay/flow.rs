//! Flow control, as pure decisions: which topics may be written now (pauses
//! and the guards), how many held jobs each topic's rate releases, and which
//! partitions to pause or resume. Nothing here touches Kafka or Redis; the
//! reader feeds it readings and applies what it decides.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::batch::Record;
use super::stats::ControlState;
use crate::store::control_values::{check_relay_control, RelayControl};

/// How often a relay reads Redis memory and queue depths: at 300,000 jobs/s
/// about 2 MB land in 20 ms, well inside the guard's headroom.
pub(super) const GUARD_REFRESH: Duration = Duration::from_millis(20);

/// How often a relay re-reads its controls.
pub(super) const CONTROL_REFRESH: Duration = Duration::from_millis(500);

/// Relay controls as last read from Redis.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Controls {
    /// Jobs/s per throttled topic (the topic's total across relays).
    pub rates: HashMap<String, f64>,
    pub paused: HashSet<String>,
    /// Topics in shadow mode: read, checked, counted and dropped.
    pub shadow: HashSet<String>,
    /// Fields not acted on, with why: `(field, value, reason)`.
    pub ignored: Vec<(String, String, String)>,
}

impl Controls {
    /// Reads the control hash's `(field, value)` pairs: `rate:<topic>`,
    /// `paused:<topic>`, `shadow:<topic>`. A pair that is not a valid
    /// control (`check_relay_control`) is ignored and kept with its reason.
    pub fn parse(fields: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut controls = Self::default();
        for (field, value) in fields {
            match check_relay_control(&field, &value) {
                Ok(RelayControl::Rate(topic, rate)) => {
                    controls.rates.insert(topic, rate);
                }
                Ok(RelayControl::Paused(topic)) => {
                    controls.paused.insert(topic);
                }
                Ok(RelayControl::Shadow(topic)) => {
                    controls.shadow.insert(topic);
                }
                Err(reason) => controls.ignored.push((field, value, reason)),
            }
        }
        controls.ignored.sort();
        controls
    }

    /// The controls as shown in stats and status (sorted, for stable output).
    pub fn state(&self) -> ControlState {
        let mut state = ControlState {
            rates: self.rates.iter().map(|(t, r)| (t.clone(), *r)).collect(),
            paused: self.paused.iter().cloned().collect(),
            shadow: self.shadow.iter().cloned().collect(),
            ignored: self.ignored.clone(),
        };
        state.rates.sort_by(|a, b| a.0.cmp(&b.0));
        state.paused.sort();
        state.shadow.sort();
        state
    }
}

/// Redis protection: the relay stops writing when Redis (or one queue) is
/// near full and resumes by itself once workers have drained it.
#[derive(Debug)]
pub(super) struct Guard {
    pub memory_high: f64,
    pub memory_low: f64,
    pub depth_high: Option<u64>,
    pub depth_low: u64,
    /// Above the memory high-water mark (until below the low one).
    pub memory_on: bool,
    /// Topics whose queue is over its depth high-water mark.
    pub deep: HashSet<String>,
}

impl Guard {
    /// A guard with its water marks, holding nothing back yet.
    pub fn new(memory_high: f64, memory_low: f64, depth_high: Option<u64>, depth_low: u64) -> Self {
        Self {
            memory_high,
            memory_low,
            depth_high,
            depth_low,
            memory_on: false,
            deep: HashSet::new(),
        }
    }

    /// Moves the guard between its water marks (hysteresis, so it does not
    /// flap) from a reading of Redis memory (`used`, `max`; `max` 0 means no
    /// limit) and of the queues' depths. Returns how many guards started
    /// holding back with this reading.
    pub fn update(&mut self, used: u64, max: u64, depths: &[(String, u64)]) -> u64 {
        let before = self.engaged();
        if max > 0 {
            let fill = used as f64 / max as f64;
            if fill >= self.memory_high {
                self.memory_on = true;
            } else if fill <= self.memory_low {
                self.memory_on = false;
            }
        } else {
            self.memory_on = false;
        }
        if let Some(high) = self.depth_high {
            for (topic, depth) in depths {
                if *depth >= high {
                    self.deep.insert(topic.clone());
                } else if *depth <= self.depth_low {
                    self.deep.remove(topic);
                }
            }
        }
        self.engaged().saturating_sub(before)
    }

    fn engaged(&self) -> u64 {
        u64::from(self.memory_on) + self.deep.len() as u64
    }
}

/// A token bucket for one topic's rate.
#[derive(Debug)]
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// An empty bucket, filling from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: 0.0,
            at: now,
        }
    }

    /// How many of `waiting` jobs a rate of `share` jobs/s lets through at
    /// `now`. At most a quarter second's worth is saved up: bursts stay small.
    pub fn take(&mut self, share: f64, now: Instant, waiting: usize) -> usize {
        let burst = share * 0.25 + 1.0;
        self.tokens = (self.tokens + share * now.duration_since(self.at).as_secs_f64()).min(burst);
        self.at = now;
        let n = (self.tokens.floor() as usize).min(waiting);
        self.tokens -= n as f64;
        n
    }
}

/// This relay's share of a topic's rate: a relay owning `owned` of the
/// topic's `total` partitions takes `owned/total` of it.
pub(super) fn rate_share(rate: f64, owned: usize, total: usize) -> f64 {
    let owned = owned.max(1);
    rate * owned as f64 / total.max(owned) as f64
}

fn stopped(guard: &Guard, controls: &Controls, topic: &str) -> bool {
    guard.memory_on || guard.deep.contains(topic) || controls.paused.contains(topic)
}

/// The relay's flow state: controls, guard, rate buckets, the jobs held back
/// and the partitions paused.
pub(super) struct Flow {
    pub controls: Controls,
    pub guard: Guard,
    buckets: HashMap<String, Bucket>,
    /// Jobs read but not yet released by their topic's rate, in order.
    held: HashMap<String, VecDeque<Record>>,
    /// Partitions this relay has paused (for a pause or for held jobs).
    paused_now: HashSet<(String, i32)>,
    assignment: Vec<(String, i32)>,
    /// Partition count per topic, to split a topic's rate between relays.
    partitions: HashMap<String, usize>,
    batch_max: usize,
}

/// Partitions to pause and to resume.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PauseChange {
    pub pause: Vec<(String, i32)>,
    pub resume: Vec<(String, i32)>,
}

impl Flow {
    /// Flow for topics of `partitions` partitions each, batches of up to
    /// `batch_max` jobs.
    pub fn new(guard: Guard, partitions: HashMap<String, usize>, batch_max: usize) -> Self {
        Self {
            controls: Controls::default(),
            guard,
            buckets: HashMap::new(),
            held: HashMap::new(),
            paused_now: HashSet::new(),
            assignment: Vec::new(),
            partitions,
            batch_max,
        }
    }

    /// Takes controls newly read; buckets of topics no longer throttled go.
    pub fn set_controls(&mut self, controls: Controls) {
        self.buckets
            .retain(|topic, _| controls.rates.contains_key(topic));
        self.controls = controls;
    }

    /// Whether nothing may be written into `topic`'s queue now: paused by an
    /// operator, or held back by the guard.
    pub fn stopped(&self, topic: &str) -> bool {
        stopped(&self.guard, &self.controls, topic)
    }

    /// Whether `topic`'s jobs are read, counted and dropped (shadow mode).
    pub fn shadowed(&self, topic: &str) -> bool {
        self.controls.shadow.contains(topic)
    }

    /// Keeps records read until their topic may take them, in order.
    pub fn hold(&mut self, records: Vec<Record>) {
        for record in records {
            match self.held.get_mut(&*record.topic) {
                Some(queue) => queue.push_back(record),
                None => {
                    let topic = record.topic.to_string();
                    self.held.entry(topic).or_default().push_back(record);
                }
            }
        }
    }

    /// Drops the held records of a partition about to be read again.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        if let Some(queue) = self.held.get_mut(topic) {
            queue.retain(|r| r.partition != partition);
        }
    }

    /// Makes the next [`Flow::pauses`] tell every partition what it should
    /// be, after the reader paused them all by itself.
    pub fn reassert_pauses(&mut self) {
        self.assignment.clear();
    }

    /// How many jobs are held now.
    pub fn held(&self) -> usize {
        self.held.values().map(VecDeque::len).sum()
    }

    /// Decides which partitions of `assignment` to pause (paused or guarded
    /// topics, and topics with a batch or more held for their rate) and which
    /// to resume, and records the change as applied.
    pub fn pauses(&mut self, assignment: &[(String, i32)]) -> PauseChange {
        // After a rebalance nobody knows which partitions the consumer holds
        // paused: librdkafka keeps a partition's pause across a revoke and a
        // later assign, so one paused when it left may come back paused
        // after its pause was lifted. Every partition is then told what it
        // should be, paused or resumed.
        let reassigned = assignment != self.assignment;
        if reassigned {
            // Held jobs of partitions gone elsewhere are their new owner's.
            let owned: HashSet<(&str, i32)> =
                assignment.iter().map(|(t, p)| (t.as_str(), *p)).collect();
            for queue in self.held.values_mut() {
                queue.retain(|r| owned.contains(&(&*r.topic, r.partition)));
            }
            self.assignment = assignment.to_vec();
        }
        let want: HashSet<(String, i32)> = assignment
            .iter()
            .filter(|(topic, _)| {
                // Keep fetching while a batch or less waits: pausing at every
                // held job would leave gaps (a resumed partition takes a fetch
                // round trip to flow again) and the rate would sag.
                self.stopped(topic)
                    || self
                        .held
                        .get(topic)
                        .is_some_and(|q| q.len() >= self.batch_max)
            })
            .cloned()
            .collect();
        let change = if reassigned {
            PauseChange {
                pause: want.iter().cloned().collect(),
                resume: assignment
                    .iter()
                    .filter(|p| !want.contains(*p))
                    .cloned()
                    .collect(),
            }
        } else {
            PauseChange {
                pause: want.difference(&self.paused_now).cloned().collect(),
                resume: self.paused_now.difference(&want).cloned().collect(),
            }
        };
        self.paused_now = want;
        change
    }

    /// Takes from the held jobs what each topic's rate allows at `now`.
    pub fn release(&mut self, now: Instant) -> Vec<Record> {
        let mut out = Vec::new();
        for (topic, queue) in &mut self.held {
            if queue.is_empty() || stopped(&self.guard, &self.controls, topic) {
                continue;
            }
            let n = match self.controls.rates.get(topic) {
                None => queue.len(),
                Some(&rate) => {
                    let owned = self.assignment.iter().filter(|(t, _)| t == topic).count();
                    let total = self.partitions.get(topic).copied().unwrap_or(owned);
                    let share = rate_share(rate, owned, total);
                    self.buckets
                        .entry(topic.clone())
                        .or_insert_with(|| Bucket::new(now))
                        .take(share, now, queue.len())
                }
            };
            out.extend(queue.drain(..n));
        }
        out
    }
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
