//! How a batch ended, from the times Python reports: the outcomes that
//! settling records. Python hands over end times (and, for concurrent
//! handlers, start times); a job without its own start time started when
//! the job before it ended, the first one when the fetch returned.

use std::collections::HashMap;
use std::time::Duration;

use super::Batch;
use crate::error::{Error, Result};

/// Longest delay before a retry: a delay Python computed beyond this (or an
/// infinite one) is cut to it rather than overflowing a deadline.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);

/// A failed job: its error record (JSON text) and the delay before the next
/// attempt in seconds (`None`: dead-letter it).
pub type Failure = (String, Option<f64>);

/// A result to keep for a job's waiters (`store_result` job types) and for
/// how long: the value as Python encoded it (`conveyor/results.py`).
pub type Kept = (Vec<u8>, Duration);

/// Longest a result is kept: a longer time to live is cut to it.
pub const MAX_RESULT_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// How a handler's attempt at one job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Succeeded.
    Done {
        /// When the attempt started and ended (µs since the epoch).
        started_us: u64,
        /// When it ended.
        ended_us: u64,
        /// Its result and how long to keep it (`store_result` job types).
        result: Option<Kept>,
    },
    /// Failed: retry after `retry_in` or, with `None`, dead-letter.
    Failed {
        /// When the attempt started (µs since the epoch).
        started_us: u64,
        /// When it ended.
        ended_us: u64,
        /// The error as JSON text, kept with the job.
        error: String,
        /// Delay before the next attempt; `None` gives up.
        retry_in: Option<Duration>,
        /// What to keep for its waiters if it is given up on.
        result: Option<Kept>,
    },
    /// Stopped because its cancel was asked (the handler raised
    /// `JobCancelled`, or an async handler was cancelled).
    Cancelled {
        /// When the attempt started (µs since the epoch).
        started_us: u64,
        /// When it ended.
        ended_us: u64,
        /// What to keep for its waiters.
        result: Option<Kept>,
    },
    /// Never started: give it back to the queue (shutdown).
    Released,
}

/// The outcomes of the first `ends.len()` jobs of `batch`; jobs after them
/// never started and go back to the queue at settle. `ends[i]` (and
/// `starts[i]`, if given) are seconds since the epoch; `results[i]` is job
/// `i`'s result to keep and its time to live in seconds; the jobs in
/// `cancelled` stopped because their cancel was asked.
pub fn outcomes(
    batch: &Batch,
    ends: &[f64],
    failures: &HashMap<usize, Failure>,
    starts: Option<&[f64]>,
    mut results: HashMap<usize, (Vec<u8>, f64)>,
    cancelled: &[usize],
) -> Result<Vec<Outcome>> {
    if ends.len() > batch.jobs.len() || starts.is_some_and(|s| s.len() < ends.len()) {
        return Err(Error::InvalidJob(format!(
            "settle got {} ends (and {:?} starts) for {} jobs",
            ends.len(),
            starts.map(<[f64]>::len),
            batch.jobs.len()
        )));
    }
    let mut out = Vec::with_capacity(ends.len());
    let mut previous = batch.fetched_at_us;
    for (i, &end) in ends.iter().enumerate() {
        let ended_us = to_us(end);
        let started_us = starts.map_or(previous, |s| to_us(s[i]));
        previous = ended_us;
        let result = results
            .remove(&i)
            .map(|(value, ttl_s)| (value, to_duration(ttl_s, MAX_RESULT_TTL)));
        if cancelled.contains(&i) {
            out.push(Outcome::Cancelled {
                started_us,
                ended_us,
                result,
            });
            continue;
        }
        out.push(match failures.get(&i) {
            None => Outcome::Done {
                started_us,
                ended_us,
                result,
            },
            Some((error, retry_in)) => Outcome::Failed {
                started_us,
                ended_us,
                error: error.clone(),
                retry_in: retry_in.map(|s| to_duration(s, MAX_RETRY_DELAY)),
                result,
            },
        });
    }
    Ok(out)
}

/// Seconds since the epoch in µs; clocks before the epoch read as 0.
fn to_us(seconds: f64) -> u64 {
    (seconds * 1e6).max(0.0) as u64
}

/// `seconds` as a duration up to `max` (a negative one is zero, an infinite
/// or huge one `max`).
fn to_duration(seconds: f64, max: Duration) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0)).map_or(max, |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(jobs: usize) -> Batch {
        let envelope = crate::Envelope::new_job("t.x".to_owned(), b"{}".to_vec(), None, None, None);
        Batch {
            queue: 0,
            token: "tok".to_owned(),
            fetched_at_us: 1_000_000,
            jobs: std::sync::Arc::new(
                (0..jobs)
                    .map(|slot| super::super::ReadyJob {
                        slot: slot as u32,
                        envelope: envelope.clone(),
                        raw: Vec::new(),
                        max_age_ms: 1000,
                    })
                    .collect(),
            ),
            malformed: Vec::new(),
            progress: Default::default(),
        }
    }

    fn times(o: &Outcome) -> (u64, u64) {
        match o {
            Outcome::Done {
                started_us,
                ended_us,
                ..
            }
            | Outcome::Failed {
                started_us,
                ended_us,
                ..
            } => (*started_us, *ended_us),
            Outcome::Cancelled { .. } | Outcome::Released => (0, 0),
        }
    }

    #[test]
    fn results_go_to_their_jobs_with_a_bounded_time_to_live() {
        let b = batch(3);
        let failures = HashMap::from([(1, ("{}".to_owned(), None))]);
        let results = HashMap::from([
            (0, (b"v1".to_vec(), 2.5)),
            (1, (b"e".to_vec(), f64::INFINITY)),
        ]);
        let got = outcomes(&b, &[2.0, 3.0, 4.0], &failures, None, results, &[]).unwrap();
        let kept = |o: &Outcome| match o {
            Outcome::Done { result, .. }
            | Outcome::Failed { result, .. }
            | Outcome::Cancelled { result, .. } => result.clone(),
            Outcome::Released => None,
        };
        assert_eq!(
            kept(&got[0]),
            Some((b"v1".to_vec(), Duration::from_millis(2500)))
        );
        assert_eq!(kept(&got[1]), Some((b"e".to_vec(), MAX_RESULT_TTL)));
        assert_eq!(kept(&got[2]), None);
    }

    #[test]
    fn each_job_starts_when_the_one_before_ended_unless_told() {
        let b = batch(3);
        let got = outcomes(&b, &[2.0, 3.0], &HashMap::new(), None, HashMap::new(), &[]).unwrap();
        assert_eq!(
            got.iter().map(times).collect::<Vec<_>>(),
            [(1_000_000, 2_000_000), (2_000_000, 3_000_000)]
        );
        let got = outcomes(
            &b,
            &[2.0, 3.0],
            &HashMap::new(),
            Some(&[1.5, 2.5]),
            HashMap::new(),
            &[],
        )
        .unwrap();
        assert_eq!(times(&got[1]), (2_500_000, 3_000_000));
    }

    #[test]
    fn failures_carry_their_error_and_a_bounded_delay() {
        let b = batch(2);
        let failures = HashMap::from([
            (0, ("{}".to_owned(), Some(f64::INFINITY))),
            (1, ("{}".to_owned(), None)),
        ]);
        let got = outcomes(&b, &[2.0, 3.0], &failures, None, HashMap::new(), &[]).unwrap();
        assert!(
            matches!(got[0], Outcome::Failed { retry_in: Some(d), .. } if d == MAX_RETRY_DELAY)
        );
        assert!(matches!(got[1], Outcome::Failed { retry_in: None, .. }));
    }

    #[test]
    fn more_times_than_jobs_is_refused() {
        let b = batch(1);
        assert!(outcomes(&b, &[1.0, 2.0], &HashMap::new(), None, HashMap::new(), &[]).is_err());
        assert!(outcomes(&b, &[1.0], &HashMap::new(), Some(&[]), HashMap::new(), &[]).is_err());
    }
}
