//! `Gate`: the HTTP enqueue service, started from Python, served from Rust.

use std::collections::HashMap;
use std::sync::Mutex;

use conveyor_core::config::{duration, positive_duration};
use conveyor_core::gate::{self, ConnectionLimits, GateConfig, GateHandle, Grant, TlsFiles};
use conveyor_core::kafka::producer::ProducerOptions;
use conveyor_core::kafka::KafkaConfig;
use pyo3::prelude::*;

use crate::errors::IntoPyResult;

/// A running gate. Python only configures and starts it; requests never touch Python.
#[pyclass(frozen, module = "conveyor._core")]
pub struct Gate {
    handle: Mutex<GateHandle>,
}

#[pymethods]
impl Gate {
    #[new]
    #[pyo3(signature = (bind, bootstrap, *, namespace="", topic_prefix="conveyor.", routes=None, registry_url=None, registry_refresh_s=5.0, acks="all", request_timeout_s=5.0, delivery_timeout_s=30.0, max_payload_bytes=1048576, max_batch=1000, token=None, tokens=None, insecure=false, tls_cert=None, tls_key=None, properties=None, max_connections=1024, header_timeout_s=30.0, body_timeout_s=30.0, tallies=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        bind: &str,
        bootstrap: &str,
        namespace: &str,
        topic_prefix: &str,
        routes: Option<HashMap<String, String>>,
        registry_url: Option<String>,
        registry_refresh_s: f64,
        acks: &str,
        request_timeout_s: f64,
        delivery_timeout_s: f64,
        max_payload_bytes: usize,
        max_batch: usize,
        token: Option<String>,
        tokens: Option<Vec<GrantTuple>>,
        insecure: bool,
        tls_cert: Option<std::path::PathBuf>,
        tls_key: Option<std::path::PathBuf>,
        properties: Option<Vec<(String, String)>>,
        max_connections: usize,
        header_timeout_s: f64,
        body_timeout_s: f64,
        tallies: bool,
    ) -> PyResult<Self> {
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                let err =
                    conveyor_core::Error::Config("HTTPS needs both tls_cert and tls_key".into());
                return Err(err).py();
            }
        };
        let config = GateConfig {
            bind: gate::parse_bind(bind).py()?,
            kafka: KafkaConfig {
                bootstrap_servers: bootstrap.to_owned(),
                properties: properties.unwrap_or_default(),
            },
            producer: ProducerOptions {
                acks: acks.parse().py()?,
                delivery_timeout: duration("delivery_timeout_s", delivery_timeout_s).py()?,
                enqueue_timeout: duration("request_timeout_s", request_timeout_s).py()?,
                ..ProducerOptions::default()
            },
            topic_prefix: topic_prefix.to_owned(),
            namespace: namespace.to_owned(),
            routes: routes.unwrap_or_default(),
            registry_url,
            registry_refresh: duration("registry_refresh_s", registry_refresh_s).py()?,
            request_timeout: duration("request_timeout_s", request_timeout_s).py()?,
            max_payload_bytes,
            max_batch,
            grants: grants(token, tokens),
            insecure,
            tls,
            connections: ConnectionLimits {
                max_connections,
                header_timeout: positive_duration("header_timeout_s", header_timeout_s).py()?,
                body_timeout: positive_duration("body_timeout_s", body_timeout_s).py()?,
            },
            tallies,
        };
        let handle = py.detach(|| gate::start(config)).py()?;
        Ok(Self {
            handle: Mutex::new(handle),
        })
    }

    /// `HOST:PORT` the gate listens on.
    #[getter]
    fn address(&self) -> String {
        self.handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .address()
            .to_string()
    }

    /// Reads the HTTPS certificate and key again, without a restart.
    fn reload_tls(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            self.handle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reload_tls()
        })
        .py()
    }

    /// Whether the gate serves HTTPS.
    #[getter]
    fn https(&self) -> bool {
        self.handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_https()
    }

    /// Puts new tokens in force (as `tokens=` at start), without a restart.
    fn set_tokens(&self, tokens: Vec<GrantTuple>) -> PyResult<()> {
        self.handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_grants(grants(None, Some(tokens)))
            .py()
    }

    /// Job types the gate accepts now, with their queues.
    fn routes(&self) -> HashMap<String, String> {
        self.handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .routes()
    }

    /// Why each registry entry of the last read was not used.
    fn registry_ignored(&self) -> Vec<String> {
        self.handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .registry_ignored()
    }

    /// Stops accepting, finishes requests in flight, flushes the producer.
    #[pyo3(signature = (timeout_s=30.0))]
    fn stop(&self, py: Python<'_>, timeout_s: f64) -> PyResult<()> {
        let timeout = duration("timeout_s", timeout_s).py()?;
        py.detach(|| {
            self.handle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .stop(timeout)
        })
        .py()
    }
}

/// A token as Python gives it: `(name, token, job types, queues, may read
/// metrics, requests per second or None)`.
type GrantTuple = (String, String, Vec<String>, Vec<String>, bool, Option<f64>);

/// The grants of a single all-powerful `token` and of `tokens`.
fn grants(token: Option<String>, tokens: Option<Vec<GrantTuple>>) -> Vec<Grant> {
    let single = token.map(|token| Grant {
        name: "CONVEYOR_GATE_TOKEN".to_owned(),
        token,
        types: Vec::new(),
        queues: Vec::new(),
        metrics: true,
        rate: None,
    });
    single
        .into_iter()
        .chain(tokens.unwrap_or_default().into_iter().map(
            |(name, token, types, queues, metrics, rate)| Grant {
                name,
                token,
                types,
                queues,
                metrics,
                rate,
            },
        ))
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Gate>()
}
