//! A worker process's counters and latency histograms, for Python's stats
//! and for Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

use super::WorkerStats;
use crate::metrics::render_counter;

impl WorkerStats {
    /// The outcome counters by name.
    pub fn counters(&self) -> [(&'static str, u64); 7] {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("fetched", load(&self.fetched)),
            ("done", load(&self.done)),
            ("retried", load(&self.retried)),
            ("dead", load(&self.dead)),
            ("stale", load(&self.stale)),
            ("cancelled", load(&self.cancelled)),
            ("released", load(&self.released)),
        ]
    }

    /// The lease events by name: leases lost to a reaper, let go past their
    /// maximum age, and keeper beats that failed.
    pub fn lease_events(&self) -> [(&'static str, u64); 3] {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("lost_leases", load(&self.lost_leases)),
            ("overdue_leases", load(&self.overdue_leases)),
            ("keeper_errors", load(&self.keeper_errors)),
        ]
    }

    /// The worker's metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let labelled = |label: &str, counts: &[(&str, u64)]| -> Vec<(String, u64)> {
            counts
                .iter()
                .map(|(name, value)| (format!("{label}=\"{name}\""), *value))
                .collect()
        };
        for (name, help, series) in [
            (
                "conveyor_worker_jobs_total",
                "Jobs by outcome in this worker process.",
                labelled("outcome", &self.counters()),
            ),
            (
                "conveyor_worker_lease_events_total",
                "Leases lost, let go past their maximum age, and failed keeper beats.",
                labelled("event", &self.lease_events()),
            ),
        ] {
            let series: Vec<(&str, u64)> = series.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            render_counter(&mut out, name, help, &series);
        }
        self.wait.render(
            &mut out,
            "conveyor_worker_wait_seconds",
            "Enqueue to the start of a job's first attempt.",
        );
        self.run.render(
            &mut out,
            "conveyor_worker_run_seconds",
            "Duration of an attempt.",
        );
        self.total.render(
            &mut out,
            "conveyor_worker_total_seconds",
            "Enqueue to the end of the attempt that succeeded.",
        );
        out
    }
}
