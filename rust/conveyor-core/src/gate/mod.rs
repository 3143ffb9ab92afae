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
//! job in a batch): 400 malformed or invalid, 401 no or bad token, 403 a job
//! type or queue outside the token's scope, 413 too large, 422 unknown job
//! type, 429 over the token's rate, 503 (with `Retry-After`) when Kafka did
//! not take the job in time. A 2xx always means every job in it was written.
//!
//! A gate bound to an address other than loopback refuses to start without
//! tokens unless told `insecure`; with tokens, `/metrics` needs one allowed
//! to read them ([`access`]).
//!
//! Rooms: this file wires the gate (configuration, start, stop, the
//! registry refresh); [`access`] says who may send what; [`server`]
//! accepts connections under their limits;
//! [`requests`] reads and refuses what clients send; [`handlers`] serves the
//! routes and sends to Kafka.

mod access;
mod handlers;
mod https;
mod lookups;
mod requests;
mod server;
mod tallies;

pub use access::Grant;
pub use https::TlsFiles;
pub use server::ConnectionLimits;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::store::control_values::check_registry_entry;
use axum::routing::{get, post};
use axum::Router;

use handlers::{enqueue_batch, enqueue_one, metrics, readyz};

use crate::envelope::validate_job_type;
use crate::error::{Error, Result};
use crate::kafka::names::queue_topic;
use crate::kafka::producer::{JobProducer, ProducerOptions};
use crate::kafka::report_polling::Reports;
use crate::kafka::KafkaConfig;
use crate::metrics::Histogram;
use crate::runtime;
use crate::store::RedisStore;

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
    /// Bearer tokens and their scopes; none: anyone who reaches the gate
    /// may send any job type.
    pub grants: Vec<Grant>,
    /// Serve on an address other than loopback without tokens, or over
    /// plain HTTP.
    pub insecure: bool,
    /// Serve HTTPS with this certificate and key (`None`: plain HTTP).
    pub tls: Option<TlsFiles>,
    /// Connections at once, and how long each part of a request may take.
    pub connections: ConnectionLimits,
    /// Whether jobs Kafka acknowledged are counted as `sent` in the queues'
    /// tallies (in the registry's Redis; `store::tally`).
    pub tallies: bool,
}

impl GateConfig {
    fn topic_for(&self, queue: &str) -> String {
        queue_topic(&self.topic_prefix, &self.namespace, queue)
    }
}

#[derive(Default)]
struct Counters {
    requests_ok: AtomicU64,
    requests_client_error: AtomicU64,
    requests_unavailable: AtomicU64,
    jobs_accepted: AtomicU64,
    registry_refresh_errors: AtomicU64,
    tally_errors: AtomicU64,
    produce_latency: Histogram,
}

struct Gate {
    config: GateConfig,
    producer: JobProducer,
    /// Job type -> queue: configured routes plus the last registry read.
    registry: RwLock<HashMap<String, String>>,
    /// Why each registry entry not used in the last read was refused.
    registry_ignored: RwLock<Vec<String>>,
    counters: Counters,
    stopping: AtomicBool,
    /// Body limits of `/v1/jobs` and `/v1/jobs/batch`, in bytes.
    limits: (usize, usize),
    readiness: Readiness,
    access: access::Access,
    https: Option<Arc<https::Https>>,
    /// Room for job lookups running at once (`lookups::MAX_LOOKUPS`).
    lookups: tokio::sync::Semaphore,
    /// Acknowledged jobs not yet added to the tallies (`tallies.rs`).
    sent: std::sync::Mutex<tallies::SentCounts>,
}

/// The last readiness answer and whether a probe runs now.
#[derive(Default)]
struct Readiness {
    last: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
    probing: AtomicBool,
}

impl Readiness {
    fn cached(&self) -> Option<(std::time::Instant, bool)> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if this caller should probe (nobody else is).
    fn begin_probe(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    fn end_probe(&self, ready: bool) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), ready));
        self.probing.store(false, Ordering::Release);
    }
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
        let flushed = self.gate.producer.flush(timeout);
        tallies::add_sent(&self.gate);
        flushed
    }

    /// Puts new tokens in force (a reloaded token file); requests already
    /// let in finish under the old ones.
    pub fn set_grants(&self, grants: Vec<Grant>) -> Result<()> {
        access::validate_grants(&grants)?;
        self.gate.access.replace(grants);
        Ok(())
    }

    /// Reads the certificate and key again (a renewed certificate); new
    /// connections use them, open ones keep theirs. An error leaves the
    /// ones in force.
    pub fn reload_tls(&self) -> Result<()> {
        match &self.gate.https {
            Some(https) => https.reload(),
            None => Err(Error::Config(
                "the gate serves plain HTTP: nothing to reload".into(),
            )),
        }
    }

    /// Whether the gate serves HTTPS.
    pub fn is_https(&self) -> bool {
        self.gate.https.is_some()
    }

    /// The job types the gate currently accepts, with their queues.
    pub fn routes(&self) -> HashMap<String, String> {
        read(&self.gate.registry).clone()
    }

    /// Why each registry entry of the last read was not used (an entry that
    /// is not JSON, names no valid queue, or a type name out of the rules).
    pub fn registry_ignored(&self) -> Vec<String> {
        read(&self.gate.registry_ignored).clone()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Room in a request body for what surrounds a job's arguments: its type,
/// dedup key, trace context, schedule and the JSON around them.
const REQUEST_OVERHEAD: usize = 4 * 1024;

/// Largest batch body accepted, whatever `max_batch` times the payload limit
/// would allow: a gateway need not hold a gigabyte to enqueue a batch.
const MAX_BATCH_BODY: usize = 32 * 1024 * 1024;

/// The body limits of `/v1/jobs` and `/v1/jobs/batch`.
fn body_limits(max_payload_bytes: usize, max_batch: usize) -> (usize, usize) {
    let one_job = max_payload_bytes.saturating_add(REQUEST_OVERHEAD);
    let batch = max_batch
        .saturating_mul(one_job)
        .clamp(one_job, MAX_BATCH_BODY.max(one_job));
    (one_job, batch)
}

/// Reads a `HOST:PORT` to bind (an IP address; names are refused).
pub fn parse_bind(bind: &str) -> Result<SocketAddr> {
    bind.parse()
        .map_err(|e| Error::Config(format!("bind {bind:?} is not IP:PORT: {e}")))
}

/// Binds, starts serving in the background, and returns once listening.
pub fn start(config: GateConfig) -> Result<GateHandle> {
    if config.connections.max_connections == 0 {
        return Err(Error::Config(
            "the gate needs max_connections of at least 1".into(),
        ));
    }
    for (job_type, queue) in &config.routes {
        validate_job_type(job_type)?;
        crate::store::keys::validate_name("queue", queue)?;
    }
    access::validate_grants(&config.grants)?;
    let exposed = !config.bind.ip().is_loopback() && !config.insecure;
    if exposed && config.grants.is_empty() {
        return Err(Error::Config(format!(
            "the gate would serve {} to the network without tokens: give it tokens \
             (a token file), or choose to run it open with insecure",
            config.bind
        )));
    }
    if exposed && config.tls.is_none() {
        return Err(Error::Config(format!(
            "the gate would serve {} to the network over plain HTTP, tokens in clear: \
             give it a certificate and key, or choose plain HTTP with insecure",
            config.bind
        )));
    }
    let https = config
        .tls
        .clone()
        .map(https::Https::new)
        .transpose()?
        .map(Arc::new);
    // Every request waits for its ack, and a runtime thread with nothing
    // to send would not serve it: the polling thread always serves reports.
    // The gate sends one record per request. 0.5 ms of linger made produce
    // requests small enough to cost the colocated broker a fifth of the
    // gate row's rate (bench/extension_ab.py, A B B A); 2 ms was most of a
    // request's p50. 1 ms, alternated with 2 ms (bench/gate_bench.py):
    // wrk's rate 32-33k against 19-20k req/s (each connection waits for its
    // ack), p99 at 10,000 req/s 4.1-4.6 against 4.1-4.7 ms.
    let options = ProducerOptions {
        reports: Reports::Thread,
        linger: Duration::from_millis(1),
        ..config.producer.clone()
    };
    let producer = JobProducer::new(&config.kafka, options)?;
    let gate = Arc::new(Gate {
        registry: RwLock::new(config.routes.clone()),
        registry_ignored: RwLock::default(),
        lookups: tokio::sync::Semaphore::new(lookups::MAX_LOOKUPS),
        producer,
        counters: Counters::default(),
        stopping: AtomicBool::new(false),
        limits: body_limits(config.max_payload_bytes, config.max_batch),
        readiness: Readiness::default(),
        sent: Default::default(),
        access: access::Access::new(config.grants.clone()),
        https,
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
            .map_err(|e| Error::Internal(format!("cannot start registry thread: {e}")))?;
    }
    tallies::start(&gate)?;
    // (The handlers read bodies themselves, against `Gate::limits`.)
    let app = Router::new()
        .route("/v1/jobs", post(enqueue_one))
        .route("/v1/jobs/batch", post(enqueue_batch))
        .route("/v1/jobs/{id}", get(lookups::lookup_job))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&gate));
    let listener = runtime::block_on(tokio::net::TcpListener::bind(gate.config.bind))
        .map_err(|e| Error::InvalidJob(format!("cannot listen on {}: {e}", gate.config.bind)))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::InvalidJob(format!("no local address: {e}")))?;
    let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel();
    let limits = gate.config.connections;
    let https_conf = gate.https.clone();
    runtime::spawn(async move {
        server::serve(listener, app, limits, https_conf, on_shutdown).await;
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
            let mut ignored = Vec::new();
            for (name, options) in entries {
                match check_registry_entry(&name, &options) {
                    Ok(queue) => {
                        routes.entry(name).or_insert(queue);
                    }
                    Err(reason) => ignored.push(reason),
                }
            }
            ignored.sort();
            *gate.registry.write().unwrap_or_else(|e| e.into_inner()) = routes;
            *gate
                .registry_ignored
                .write()
                .unwrap_or_else(|e| e.into_inner()) = ignored;
        }
        // Keep serving with what we knew: Redis trouble must not stop enqueues.
        Err(_) => {
            gate.counters
                .registry_refresh_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
