//! The gate: a stateless HTTP service that writes jobs to Kafka.
//!
//! No Python runs per request: JSON is parsed here, envelopes are built and
//! produced here, and the response goes out after the broker acknowledged the
//! write. The gate knows which job types exist from its configured routes and
//! from the registry applications publish in Redis, refreshed in the
//! background; Redis being slow, full or down never stops an enqueue, since the
//! last known registry stays in use.
//!
//! | request | answers |
//! |---|---|
//! | `POST /v1/jobs` | 200 `{"id", "partition", "offset"}` |
//! | `POST /v1/jobs/batch` | 200 `{"jobs": [{"id", "partition", "offset"}…]}` |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when Kafka answers a metadata request, else 503 |
//! | `GET /metrics` | Prometheus text |
//!
//! Errors are JSON `{"error": reason, "code": code}` (and `"index"` of the bad
//! job in a batch): 400 malformed or invalid, 401 bad token, 413 too large,
//! 422 unknown job type, 503 (with `Retry-After`) when Kafka did not take the
//! job in time. A 2xx always means every job in it was written.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::envelope::{validate_job_type, Envelope};
use crate::error::{Error, Result};
use crate::id::now_us;
use crate::kafka::{cluster_info, KafkaConfig};
use crate::metrics::{render_counter, Histogram};
use crate::producer::{JobProducer, ProducerOptions, TrySend};
use crate::redis_store::RedisStore;
use crate::report_polling::Reports;
use crate::runtime;

/// Everything the gate needs to run.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Address to listen on (port 0 picks a free one).
    pub bind: SocketAddr,
    /// Kafka to write to.
    pub kafka: KafkaConfig,
    /// Producer settings (acks, timeouts).
    pub producer: ProducerOptions,
    /// Topic of queue `q` is `<topic_prefix>[<namespace>.]<q>`.
    pub topic_prefix: String,
    /// Namespace of topics and of the registry.
    pub namespace: String,
    /// Job type -> queue, known without Redis.
    pub routes: HashMap<String, String>,
    /// Redis holding the published registry, if any.
    pub registry_url: Option<String>,
    /// How often the registry is re-read.
    pub registry_refresh: Duration,
    /// Longest request the gate waits for Kafka before answering 503.
    pub request_timeout: Duration,
    /// Largest payload (encoded args and kwargs) of one job.
    pub max_payload_bytes: usize,
    /// Most jobs in one batch request.
    pub max_batch: usize,
    /// Required bearer token, if set.
    pub token: Option<String>,
}

impl GateConfig {
    fn topic_for(&self, queue: &str) -> String {
        if self.namespace.is_empty() {
            format!("{}{queue}", self.topic_prefix)
        } else {
            format!("{}{}.{queue}", self.topic_prefix, self.namespace)
        }
    }
}

#[derive(Default)]
struct Counters {
    requests_ok: AtomicU64,
    requests_client_error: AtomicU64,
    requests_unavailable: AtomicU64,
    jobs_accepted: AtomicU64,
    registry_refresh_errors: AtomicU64,
    produce_latency: Histogram,
}

struct Gate {
    config: GateConfig,
    producer: JobProducer,
    /// Job type -> queue: configured routes plus the last registry read.
    registry: RwLock<HashMap<String, String>>,
    counters: Counters,
    stopping: AtomicBool,
}

/// A running gate. Dropping it does not stop it; call [`GateHandle::stop`].
pub struct GateHandle {
    address: SocketAddr,
    gate: Arc<Gate>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl GateHandle {
    /// The address the gate listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting, finishes requests in flight, flushes the producer.
    pub fn stop(&mut self, timeout: Duration) -> Result<()> {
        self.gate.stopping.store(true, Ordering::Relaxed);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.done
            .recv_timeout(timeout)
            .map_err(|_| Error::Timeout("gate did not stop in time".to_owned()))?;
        self.gate.producer.flush(timeout)
    }

    /// The job types the gate currently accepts, with their queues.
    pub fn routes(&self) -> HashMap<String, String> {
        read(&self.gate.registry).clone()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Binds, starts serving in the background, and returns once listening.
pub fn start(config: GateConfig) -> Result<GateHandle> {
    for (job_type, queue) in &config.routes {
        validate_job_type(job_type)?;
        crate::keys::validate_name("queue", queue)?;
    }
    // Every request waits for its ack, and a runtime thread with nothing
    // to send would not serve it: the polling thread always serves reports.
    let options = ProducerOptions {
        reports: Reports::Thread,
        ..config.producer.clone()
    };
    let producer = JobProducer::new(&config.kafka, options)?;
    let gate = Arc::new(Gate {
        registry: RwLock::new(config.routes.clone()),
        producer,
        counters: Counters::default(),
        stopping: AtomicBool::new(false),
        config,
    });
    if gate.config.registry_url.is_some() {
        refresh_registry(&gate);
        let background = Arc::clone(&gate);
        std::thread::Builder::new()
            .name("conveyor-gate-registry".to_owned())
            .spawn(move || {
                while !background.stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(background.config.registry_refresh);
                    refresh_registry(&background);
                }
            })
            .map_err(|e| Error::Timeout(format!("cannot start registry thread: {e}")))?;
    }
    let body_limit = gate.config.max_batch * (gate.config.max_payload_bytes + 1024);
    let app = Router::new()
        .route("/v1/jobs", post(enqueue_one))
        .route("/v1/jobs/batch", post(enqueue_batch))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(Arc::clone(&gate));
    let listener = runtime::block_on(tokio::net::TcpListener::bind(gate.config.bind))
        .map_err(|e| Error::InvalidJob(format!("cannot listen on {}: {e}", gate.config.bind)))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::InvalidJob(format!("no local address: {e}")))?;
    let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel();
    runtime::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = on_shutdown.await;
            })
            .await;
        if let Err(err) = served {
            eprintln!("conveyor gate: server stopped: {err}");
        }
        let _ = done_tx.send(());
    });
    Ok(GateHandle {
        address,
        gate,
        shutdown: Some(shutdown),
        done,
    })
}

fn refresh_registry(gate: &Gate) {
    let Some(url) = &gate.config.registry_url else {
        return;
    };
    let fetched = RedisStore::connect(url, Duration::from_secs(2))
        .and_then(|mut store| store.read_registry(&gate.config.namespace));
    match fetched {
        Ok(entries) => {
            let mut routes = gate.config.routes.clone();
            for (name, options) in entries {
                let queue = serde_json::from_str::<Value>(&options)
                    .ok()
                    .and_then(|v| v.get("queue").and_then(Value::as_str).map(str::to_owned));
                if let Some(queue) = queue {
                    routes.entry(name).or_insert(queue);
                }
            }
            *gate.registry.write().unwrap_or_else(|e| e.into_inner()) = routes;
        }
        // Keep serving with what we knew: Redis trouble must not stop enqueues.
        Err(_) => {
            gate.counters
                .registry_refresh_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One job as a client posts it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRequest<'a> {
    #[serde(rename = "type")]
    job_type: String,
    #[serde(default, borrow)]
    args: Option<&'a RawValue>,
    #[serde(default, borrow)]
    kwargs: Option<&'a RawValue>,
    dedup_key: Option<String>,
    /// Seconds from now.
    delay: Option<f64>,
    /// Seconds since the epoch.
    run_at: Option<f64>,
    trace_context: Option<String>,
    partition: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    jobs: Vec<JobRequest<'a>>,
}

/// A refusal: status, stable code, reason, and the job's index in a batch.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    reason: String,
    index: Option<usize>,
}

impl Refusal {
    fn bad(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_job",
            reason: reason.into(),
            index: None,
        }
    }

    fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}

impl From<Error> for Refusal {
    fn from(err: Error) -> Self {
        let status = match &err {
            Error::InvalidJob(_) | Error::Decode(_) | Error::UnsupportedVersion { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self {
            status,
            code: err.code(),
            reason: err.to_string(),
            index: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.reason, "code": self.code});
        if let Some(index) = self.index {
            body["index"] = json!(index);
        }
        let mut response = (self.status, json_body(&body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn json_body(value: &Value) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

impl Gate {
    fn authorize(&self, headers: &HeaderMap) -> std::result::Result<(), Refusal> {
        let Some(token) = &self.config.token else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                reason: "missing or wrong bearer token".to_owned(),
                index: None,
            })
        }
    }

    /// Turns a request into an envelope and the topic it goes to.
    fn envelope(&self, job: JobRequest<'_>) -> std::result::Result<(String, Envelope), Refusal> {
        validate_job_type(&job.job_type).map_err(Refusal::from)?;
        let queue = read(&self.registry)
            .get(&job.job_type)
            .cloned()
            .ok_or_else(|| Refusal {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "unknown_type",
                reason: format!(
                    "unknown job type {:?}: no worker or route registered it",
                    job.job_type
                ),
                index: None,
            })?;
        let args = raw_or(job.args, "[]", '[', "args must be a JSON array")?;
        let kwargs = raw_or(job.kwargs, "{}", '{', "kwargs must be a JSON object")?;
        // The caller's JSON bytes go through as they are: never re-encoded.
        let payload = format!("{{\"args\":{args},\"kwargs\":{kwargs}}}").into_bytes();
        if payload.len() > self.config.max_payload_bytes {
            return Err(Refusal {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "too_large",
                reason: format!(
                    "job payload is {} bytes, over the limit of {}",
                    payload.len(),
                    self.config.max_payload_bytes
                ),
                index: None,
            });
        }
        let run_at_us = match (job.delay, job.run_at) {
            (Some(_), Some(_)) => return Err(Refusal::bad("give delay or run_at, not both")),
            (Some(d), None) if d.is_finite() && d >= 0.0 => Some(now_us() + (d * 1e6) as u64),
            (None, Some(t)) if t.is_finite() && t >= 0.0 => Some((t * 1e6) as u64),
            (None, None) => None,
            _ => {
                return Err(Refusal::bad(
                    "delay and run_at must be non-negative numbers",
                ))
            }
        };
        if job.partition.is_some_and(|p| p < 0) {
            return Err(Refusal::bad("partition must not be negative"));
        }
        let envelope = Envelope::new_job(
            job.job_type,
            payload,
            job.dedup_key,
            run_at_us,
            job.trace_context,
        );
        envelope.validate().map_err(Refusal::from)?;
        Ok((self.config.topic_for(&queue), envelope))
    }

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

fn raw_or<'a>(
    raw: Option<&'a RawValue>,
    default: &'a str,
    opener: char,
    message: &str,
) -> std::result::Result<&'a str, Refusal> {
    match raw {
        None => Ok(default),
        Some(raw) if raw.get().trim_start().starts_with(opener) => Ok(raw.get()),
        Some(_) => Err(Refusal::bad(message)),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> std::result::Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::bad(format!("malformed request: {e}")))
}

async fn enqueue_one(State(gate): State<Arc<Gate>>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = async {
        gate.authorize(&headers)?;
        let job: JobRequest<'_> = parse(&body)?;
        let partition = job.partition;
        let (topic, envelope) = gate.envelope(job)?;
        let mut answers = gate.produce(vec![(topic, envelope, partition)]).await?;
        Ok::<_, Refusal>(answers.remove(0))
    }
    .await;
    respond(&gate, outcome)
}

async fn enqueue_batch(State(gate): State<Arc<Gate>>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = async {
        gate.authorize(&headers)?;
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
            let (topic, envelope) = gate.envelope(job).map_err(|r| r.at(i))?;
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

async fn readyz(State(gate): State<Arc<Gate>>) -> Response {
    let kafka = gate.config.kafka.clone();
    let probe =
        tokio::task::spawn_blocking(move || cluster_info(&kafka, Duration::from_secs(2))).await;
    match probe {
        Ok(Ok(info)) if !info.brokers.is_empty() => (StatusCode::OK, "ready\n").into_response(),
        _ => Refusal::from(Error::Timeout("Kafka is not reachable".to_owned())).into_response(),
    }
}

async fn metrics(State(gate): State<Arc<Gate>>) -> Response {
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
    c.produce_latency.render(
        &mut out,
        "conveyor_gate_produce_seconds",
        "Time from request parsed to Kafka acknowledgement.",
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
