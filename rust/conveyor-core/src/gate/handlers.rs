//! The gate's HTTP handlers: enqueue one job or a batch, readiness and
//! metrics; and sending to Kafka, answering after the acknowledgements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::requests::{json_body, parse, read_body, BatchRequest, JobRequest, Refusal};
use super::Gate;
use crate::envelope::Envelope;
use crate::error::Error;
use crate::kafka::producer::{check_partition, TrySend};
use crate::metrics::render_counter;

impl Gate {
    /// Sends envelopes grouped by topic and partition; answers after the acks.
    async fn produce(
        &self,
        jobs: Vec<(String, Envelope, Option<i32>)>,
    ) -> std::result::Result<Vec<Value>, Refusal> {
        let started = Instant::now();
        let mut pending = Vec::new();
        let mut order = Vec::new();
        // (topic, partition) -> the jobs (with their request index) bound there.
        type Groups = Vec<((String, Option<i32>), Vec<(usize, Envelope)>)>;
        let mut groups: Groups = Vec::new();
        for (i, (topic, env, partition)) in jobs.into_iter().enumerate() {
            let key = (topic, partition);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push((i, env)),
                None => groups.push((key, vec![(i, env)])),
            }
        }
        // A batch is all or nothing: every topic is known to exist, and every
        // pinned partition to be one of it, before any job is sent, so a
        // refused batch never leaves part of itself in Kafka.
        for ((topic, partition), _) in &groups {
            let count = match self.producer.partition_count(topic) {
                Some(count) => count,
                None => {
                    let (producer, name) = (self.producer.clone(), topic.clone());
                    tokio::task::spawn_blocking(move || {
                        producer.check_topic(&name)?;
                        Ok::<_, Error>(producer.partition_count(&name).unwrap_or(0))
                    })
                    .await
                    .map_err(|e| Refusal::from(Error::Internal(format!("metadata task: {e}"))))??
                }
            };
            check_partition(topic, *partition, count)?;
        }
        for ((topic, partition), group) in groups {
            let (indexes, envelopes): (Vec<usize>, Vec<Envelope>) = group.into_iter().unzip();
            let sent = match self.producer.try_send(&topic, &envelopes, partition)? {
                TrySend::Sent {
                    pending,
                    refresh_due,
                } => {
                    if refresh_due {
                        let producer = self.producer.clone();
                        tokio::task::spawn_blocking(move || producer.refresh_partitions(&topic));
                    }
                    pending
                }
                // The topic's first metadata round trip: off the runtime.
                TrySend::NeedsMetadata => {
                    let producer = self.producer.clone();
                    tokio::task::spawn_blocking(move || {
                        producer.send(&topic, &envelopes, partition)
                    })
                    .await
                    .map_err(|e| {
                        Refusal::from(Error::Timeout(format!("send task failed: {e}")))
                    })??
                }
            };
            order.push(indexes);
            pending.push(sent);
        }
        let total: usize = order.iter().map(Vec::len).sum();
        let mut answers = vec![Value::Null; total];
        for (indexes, sent) in order.iter().zip(&pending) {
            let delivered = sent
                .wait_async(self.config.request_timeout)
                .await
                .map_err(Refusal::from)?;
            for ((index, d), id) in indexes.iter().zip(delivered).zip(sent.ids()) {
                answers[*index] =
                    json!({"id": id.to_string(), "partition": d.partition, "offset": d.offset});
            }
        }
        self.counters.produce_latency.observe(started.elapsed());
        self.counters
            .jobs_accepted
            .fetch_add(total as u64, Ordering::Relaxed);
        Ok(answers)
    }

    fn count(&self, status: StatusCode) {
        let counter = if status.is_success() {
            &self.counters.requests_ok
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            &self.counters.requests_unavailable
        } else {
            &self.counters.requests_client_error
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(super) async fn enqueue_one(State(gate): State<Arc<Gate>>, request: Request) -> Response {
    let outcome = async {
        let (headers, body) =
            read_body(request, gate.limits.0, gate.config.connections.body_timeout).await?;
        let grant = gate.authorize(&headers)?;
        let job: JobRequest<'_> = parse(&body)?;
        let partition = job.partition;
        let (topic, envelope) = gate.envelope(job, grant.as_deref())?;
        let mut answers = gate.produce(vec![(topic, envelope, partition)]).await?;
        Ok::<_, Refusal>(answers.remove(0))
    }
    .await;
    respond(&gate, outcome)
}

pub(super) async fn enqueue_batch(State(gate): State<Arc<Gate>>, request: Request) -> Response {
    let outcome = async {
        let (headers, body) =
            read_body(request, gate.limits.1, gate.config.connections.body_timeout).await?;
        let grant = gate.authorize(&headers)?;
        let batch: BatchRequest<'_> = parse(&body)?;
        if batch.jobs.is_empty() || batch.jobs.len() > gate.config.max_batch {
            return Err(Refusal::bad(format!(
                "a batch holds 1 to {} jobs, got {}",
                gate.config.max_batch,
                batch.jobs.len()
            )));
        }
        // Validate every job before sending any: a bad batch sends nothing.
        let mut jobs = Vec::with_capacity(batch.jobs.len());
        for (i, job) in batch.jobs.into_iter().enumerate() {
            let partition = job.partition;
            let (topic, envelope) = gate.envelope(job, grant.as_deref()).map_err(|r| r.at(i))?;
            jobs.push((topic, envelope, partition));
        }
        let answers = gate.produce(jobs).await?;
        Ok(json!({ "jobs": answers }))
    }
    .await;
    respond(&gate, outcome)
}

fn respond(gate: &Gate, outcome: std::result::Result<Value, Refusal>) -> Response {
    match outcome {
        Ok(body) => {
            gate.count(StatusCode::OK);
            (StatusCode::OK, json_body(&body)).into_response()
        }
        Err(refusal) => {
            gate.count(refusal.status);
            refusal.into_response()
        }
    }
}

/// Ready when Kafka answered the producer's metadata request. The answer is
/// cached for `READY_FOR`, and at most one probe runs at a time (others get
/// the last answer), so probes at any rate cost the brokers one request a
/// second and the gate no new client.
pub(super) async fn readyz(State(gate): State<Arc<Gate>>) -> Response {
    let fresh = gate
        .readiness
        .cached()
        .filter(|(at, _)| at.elapsed() < READY_FOR);
    let ready = match fresh {
        Some((_, ready)) => ready,
        None if gate.readiness.begin_probe() => {
            // A task of its own: if this request is dropped (its client went
            // away), the probe still ends and lets the next one start.
            let probing = Arc::clone(&gate);
            let probe = tokio::task::spawn_blocking(move || {
                let brokers = probing.producer.broker_count(Duration::from_secs(2));
                let ready = matches!(brokers, Ok(n) if n > 0);
                probing.readiness.end_probe(ready);
                ready
            });
            probe.await.unwrap_or(false)
        }
        None => gate.readiness.cached().is_some_and(|(_, ready)| ready),
    };
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        Refusal::from(Error::Timeout("Kafka is not reachable".to_owned())).into_response()
    }
}

/// How long a readiness answer is reused.
const READY_FOR: Duration = Duration::from_secs(1);

/// Open while the gate is; with tokens, only to one allowed to read them.
pub(super) async fn metrics(State(gate): State<Arc<Gate>>, headers: HeaderMap) -> Response {
    match gate.authorize(&headers) {
        Err(refusal) => return refusal.into_response(),
        Ok(Some(granted)) if !granted.grant.metrics => {
            return Refusal::forbidden("this token may not read metrics").into_response()
        }
        Ok(_) => {}
    }
    let c = &gate.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    render_counter(
        &mut out,
        "conveyor_gate_requests_total",
        "Enqueue requests answered, by outcome.",
        &[
            ("outcome=\"ok\"", load(&c.requests_ok)),
            ("outcome=\"client_error\"", load(&c.requests_client_error)),
            ("outcome=\"unavailable\"", load(&c.requests_unavailable)),
        ],
    );
    render_counter(
        &mut out,
        "conveyor_gate_jobs_accepted_total",
        "Jobs written to Kafka and acknowledged.",
        &[("", load(&c.jobs_accepted))],
    );
    render_counter(
        &mut out,
        "conveyor_gate_registry_refresh_errors_total",
        "Failed reads of the job type registry (the last one read stays in use).",
        &[("", load(&c.registry_refresh_errors))],
    );
    render_counter(
        &mut out,
        "conveyor_gate_tally_errors_total",
        "Failed additions of acknowledged jobs to the queues' tallies (kept for the next).",
        &[("", load(&c.tally_errors))],
    );
    c.produce_latency.render(
        &mut out,
        "conveyor_gate_produce_seconds",
        "Time from request parsed to Kafka acknowledgement.",
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
