//! Outcomes and run time per queue and job type, for Prometheus, and the
//! depth of each queue a worker serves. Job type labels are bounded: past
//! [`MAX_TYPES`] the rest are counted under `other`, so a stream of made-up
//! types cannot grow a worker's metrics without end.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use super::{Batch, Outcome, WorkQueues};
use crate::error::Result;
use crate::metrics::render_gauge;

/// Most job types a worker process counts apart.
pub const MAX_TYPES: usize = 200;

/// The label the job types past [`MAX_TYPES`] share.
pub const OTHER_TYPE: &str = "other";

/// What one (queue, job type) did in this process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TypeCounts {
    /// Attempts that succeeded.
    pub done: u64,
    /// Attempts that failed and will be tried again.
    pub retried: u64,
    /// Attempts that failed for good.
    pub dead: u64,
    /// Jobs stopped by a cancel while they ran.
    pub cancelled: u64,
    /// Time spent in attempts (µs).
    pub run_us: u64,
}

/// The counts of every (queue index, job type) seen.
#[derive(Debug, Default)]
pub struct ByType {
    counts: Mutex<HashMap<(usize, String), TypeCounts>>,
}

impl ByType {
    /// Adds how a batch's jobs ended: one lock per batch, not per job.
    pub fn add(&self, batch: &Batch, outcomes: &[Outcome]) {
        let mut seen: Vec<(&str, TypeCounts)> = Vec::new();
        for (job, outcome) in batch.jobs.iter().zip(outcomes) {
            let job_type = job.envelope.job_type.as_str();
            let at = match seen.iter().position(|(t, _)| *t == job_type) {
                Some(at) => at,
                None => {
                    seen.push((job_type, TypeCounts::default()));
                    seen.len() - 1
                }
            };
            let counts = &mut seen[at].1;
            let (started, ended) = match outcome {
                Outcome::Done {
                    started_us,
                    ended_us,
                    ..
                } => {
                    counts.done += 1;
                    (*started_us, *ended_us)
                }
                Outcome::Failed {
                    started_us,
                    ended_us,
                    retry_in,
                    ..
                } => {
                    if retry_in.is_some() {
                        counts.retried += 1;
                    } else {
                        counts.dead += 1;
                    }
                    (*started_us, *ended_us)
                }
                Outcome::Cancelled {
                    started_us,
                    ended_us,
                    ..
                } => {
                    counts.cancelled += 1;
                    (*started_us, *ended_us)
                }
                Outcome::Released => (0, 0),
            };
            counts.run_us += ended.saturating_sub(started);
        }
        let mut all = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (job_type, add) in seen {
            let known = all.contains_key(&(batch.queue, job_type.to_owned()));
            let name = if known || all.len() < MAX_TYPES {
                job_type
            } else {
                OTHER_TYPE
            };
            let entry = all.entry((batch.queue, name.to_owned())).or_default();
            entry.done += add.done;
            entry.retried += add.retried;
            entry.dead += add.dead;
            entry.cancelled += add.cancelled;
            entry.run_us += add.run_us;
        }
    }

    /// A copy of the counts, by (queue index, job type), sorted.
    pub fn snapshot(&self) -> Vec<((usize, String), TypeCounts)> {
        let all = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = all.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl WorkQueues {
    /// Outcomes and run time per queue and job type, in Prometheus' text format.
    pub fn render_by_type(&self) -> String {
        let mut out = String::new();
        let snapshot = self.by_type.snapshot();
        let name = "conveyor_worker_type_jobs_total";
        let _ = writeln!(
            out,
            "# HELP {name} Jobs by queue, job type and outcome in this worker process.\n\
             # TYPE {name} counter"
        );
        for ((queue, job_type), c) in &snapshot {
            let queue = &self.queues[*queue].name;
            for (outcome, n) in [
                ("done", c.done),
                ("retried", c.retried),
                ("dead", c.dead),
                ("cancelled", c.cancelled),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{queue=\"{queue}\",type=\"{job_type}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        let name = "conveyor_worker_type_run_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds spent in attempts, by queue and job type.\n\
             # TYPE {name} counter"
        );
        for ((queue, job_type), c) in &snapshot {
            let queue = &self.queues[*queue].name;
            let seconds = c.run_us as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}{{queue=\"{queue}\",type=\"{job_type}\"}} {seconds}"
            );
        }
        out
    }

    /// Jobs per state in each queue this worker serves (read from Redis
    /// now), in Prometheus' text format; while Redis cannot be read, a
    /// comment saying why (the process' own metrics are still served).
    pub fn render_depths(&self) -> String {
        match self.depths() {
            Ok(out) => out,
            Err(err) => format!("# conveyor_queue_jobs not read: {err}\n"),
        }
    }

    fn depths(&self) -> Result<String> {
        let mut series = Vec::new();
        for queue in &self.queues {
            let depth = self.with_store(|s| s.depth(&queue.keys))?;
            for (state, n) in [
                ("queued", depth.queued),
                ("scheduled", depth.scheduled),
                ("leases", depth.leases),
                ("dead", depth.dead),
            ] {
                series.push((
                    format!("queue=\"{}\",state=\"{state}\"", queue.name),
                    n as f64,
                ));
            }
        }
        let mut out = String::new();
        render_gauge(
            &mut out,
            "conveyor_queue_jobs",
            "Jobs per state in each queue this worker serves (leases: batches running).",
            &series,
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{Progress, ReadyJob};
    use std::sync::Arc;
    use std::time::Duration;

    fn batch(types: &[&str]) -> Batch {
        Batch {
            queue: 0,
            token: "t".into(),
            fetched_at_us: 0,
            jobs: Arc::new(
                types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ReadyJob {
                        slot: i as u32 + 1,
                        envelope: crate::Envelope::new_job(
                            (*t).to_owned(),
                            b"{}".to_vec(),
                            None,
                            None,
                            None,
                        ),
                        raw: Vec::new(),
                        max_age_ms: 1000,
                    })
                    .collect(),
            ),
            malformed: Vec::new(),
            progress: Arc::new(Progress::default()),
        }
    }

    fn done(us: u64) -> Outcome {
        Outcome::Done {
            started_us: 0,
            ended_us: us,
            result: None,
        }
    }

    #[test]
    fn outcomes_and_run_time_add_up_per_type() {
        let by = ByType::default();
        let failed = |retry: bool| Outcome::Failed {
            started_us: 0,
            ended_us: 5,
            error: String::new(),
            retry_in: retry.then_some(Duration::from_secs(1)),
            result: None,
        };
        by.add(
            &batch(&["a.x", "b.y", "a.x", "a.x"]),
            &[done(10), failed(true), failed(false), Outcome::Released],
        );
        by.add(&batch(&["a.x"]), &[done(7)]);
        let got = by.snapshot();
        assert_eq!(got.len(), 2);
        let a = got[0].1;
        assert_eq!((a.done, a.retried, a.dead, a.run_us), (2, 0, 1, 22));
        let b = got[1].1;
        assert_eq!((b.done, b.retried, b.dead, b.run_us), (0, 1, 0, 5));
    }

    #[test]
    fn types_past_the_limit_share_one_label() {
        let by = ByType::default();
        for i in 0..MAX_TYPES + 50 {
            by.add(&batch(&[&format!("t.n{i}")]), &[done(1)]);
        }
        let got = by.snapshot();
        assert_eq!(got.len(), MAX_TYPES + 1);
        let other = got.iter().find(|((_, t), _)| t == OTHER_TYPE).unwrap();
        assert_eq!(other.1.done, 50);
        by.add(&batch(&["t.n0"]), &[done(1)]);
        let first = by
            .snapshot()
            .into_iter()
            .find(|((_, t), _)| t == "t.n0")
            .unwrap();
        assert_eq!(first.1.done, 2, "a type counted apart stays apart");
    }
}
