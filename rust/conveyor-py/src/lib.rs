//! `conveyor._core`: the private native module of the `conveyor` package.
//!
//! A thin layer over `conveyor-core`: it converts arguments into owned Rust
//! values, releases the GIL (`Python::detach`) around every network call and
//! every batch, and turns core errors into the exceptions that
//! `conveyor.errors` defines (`errors.rs`, the one conversion). Rules,
//! validation and parsing live in the core, where `cargo test` sees them.

mod dead_letters;
mod envelope;
mod errors;
mod gate;
mod kafka;
mod payload;
mod redis;
mod relay;
mod worker;

use pyo3::prelude::*;

/// The JSON payload for a handler call: `{"args": [...], "kwargs": {...}}`.
#[pyfunction]
#[pyo3(signature = (args, kwargs=None, max_payload_bytes=conveyor_core::envelope::MAX_PAYLOAD_LEN))]
fn encode_call<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyAny>,
    kwargs: Option<&Bound<'py, PyAny>>,
    max_payload_bytes: usize,
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    use crate::errors::IntoPyResult;
    let mut out = Vec::with_capacity(128);
    payload::encode_call(args, kwargs, max_payload_bytes, &mut out).py()?;
    Ok(pyo3::types::PyBytes::new(py, &out))
}

/// A payload's `(args, kwargs)` read by the fast reader, or `None` where it
/// declines (`conveyor_core::call_reader`; Python's decoder then reads it).
#[pyfunction]
fn decode_call<'py>(
    py: Python<'py>,
    payload: &[u8],
) -> Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    conveyor_core::call_reader::read_call(payload, &mut payload::Objects(py))
}

/// The Kafka topic that carries `queue` (the one rule, shared with the gate).
#[pyfunction]
fn queue_topic(prefix: &str, namespace: &str, queue: &str) -> String {
    conveyor_core::kafka::names::queue_topic(prefix, namespace, queue)
}

/// Where records of `topic` that can never be relayed go.
#[pyfunction]
fn dead_letter_topic(topic: &str) -> String {
    conveyor_core::kafka::names::dead_letter_topic(topic)
}

/// The consumer group every relay of a namespace joins.
#[pyfunction]
fn relay_group(namespace: &str) -> String {
    conveyor_core::kafka::names::relay_group(namespace)
}

/// Refuses a trace context that is not a W3C `traceparent` (the rule for new jobs).
#[pyfunction]
fn check_trace_context(trace: &str) -> PyResult<()> {
    use crate::errors::IntoPyResult;
    conveyor_core::envelope::check_traceparent(trace).py()
}

/// Refuses a route's share through Kafka outside 0 to 100.
#[pyfunction]
fn check_kafka_percent(percent: f64) -> PyResult<()> {
    use crate::errors::IntoPyResult;
    conveyor_core::store::check_kafka_percent(percent).py()
}

/// Reads a run-time route of `job_type` as `(kafka_percent, double_write)`;
/// refuses one that is not valid, with the reason.
#[pyfunction]
fn check_route(job_type: &str, text: &str) -> PyResult<(f64, bool)> {
    use crate::errors::IntoPyResult;
    conveyor_core::store::control_values::check_route(job_type, text)
        .map_err(conveyor_core::Error::InvalidJob)
        .py()
}

/// Reads the queue of a registry entry (`job_type`, its JSON options);
/// refuses an entry that names no valid queue, with the reason.
#[pyfunction]
fn check_registry_entry(job_type: &str, options: &str) -> PyResult<String> {
    use crate::errors::IntoPyResult;
    conveyor_core::store::control_values::check_registry_entry(job_type, options)
        .map_err(conveyor_core::Error::InvalidJob)
        .py()
}

/// Reads a relay control hash's `(field, value)`; refuses one that is not
/// a valid control, with the reason.
#[pyfunction]
fn check_relay_control(field: &str, value: &str) -> PyResult<()> {
    use crate::errors::IntoPyResult;
    conveyor_core::store::control_values::check_relay_control(field, value)
        .map(|_| ())
        .map_err(conveyor_core::Error::InvalidJob)
        .py()
}

/// One gauge in Prometheus' text format, `(labels, value)` per series: the
/// one renderer, for metrics Python gathers (canaries).
#[pyfunction]
fn render_gauge(name: &str, help: &str, series: Vec<(String, f64)>) -> String {
    let mut out = String::new();
    conveyor_core::metrics::render_gauge(&mut out, name, help, &series);
    out
}

/// The native module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ENVELOPE_VERSION", conveyor_core::envelope::VERSION)?;
    m.add("MAX_PAYLOAD_LEN", conveyor_core::envelope::MAX_PAYLOAD_LEN)?;
    m.add("ERROR_CODES", conveyor_core::error::CODES.to_vec())?;
    m.add(
        "MAX_SCHEDULE_AHEAD_US",
        conveyor_core::envelope::MAX_SCHEDULE_AHEAD_US,
    )?;
    let stages: Vec<(u8, &str)> = conveyor_core::Stage::ALL
        .iter()
        .map(|s| (*s as u8, s.name()))
        .collect();
    m.add("STAGES", stages)?;
    envelope::register(m)?;
    kafka::register(m)?;
    gate::register(m)?;
    redis::register(m)?;
    relay::register(m)?;
    worker::register(m)?;
    m.add_function(wrap_pyfunction!(encode_call, m)?)?;
    m.add_function(wrap_pyfunction!(decode_call, m)?)?;
    m.add_function(wrap_pyfunction!(render_gauge, m)?)?;
    m.add_function(wrap_pyfunction!(queue_topic, m)?)?;
    m.add_function(wrap_pyfunction!(dead_letter_topic, m)?)?;
    m.add_function(wrap_pyfunction!(relay_group, m)?)?;
    m.add_function(wrap_pyfunction!(check_kafka_percent, m)?)?;
    m.add_function(wrap_pyfunction!(check_route, m)?)?;
    m.add_function(wrap_pyfunction!(check_relay_control, m)?)?;
    m.add_function(wrap_pyfunction!(check_registry_entry, m)?)?;
    m.add_function(wrap_pyfunction!(check_trace_context, m)?)?;
    // Registered by the module itself, so no import order can skip it.
    let hook = wrap_pyfunction!(after_fork_in_child, m)?;
    let kwargs = pyo3::types::PyDict::new(m.py());
    kwargs.set_item("after_in_child", hook)?;
    m.py()
        .import("os")?
        .call_method("register_at_fork", (), Some(&kwargs))?;
    Ok(())
}

/// Runs in every forked child: job ids start a sequence of their own there.
#[pyfunction]
fn after_fork_in_child() {
    conveyor_core::id::after_fork();
}
