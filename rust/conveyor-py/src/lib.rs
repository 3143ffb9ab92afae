//! `conveyor._core`: the private native module of the `conveyor` package.
//!
//! A thin layer over `conveyor-core`: it converts arguments into owned Rust
//! values, releases the GIL (`Python::detach`) around every network call and
//! every batch, and turns core errors into the exceptions that
//! `conveyor.errors` defines. No logic lives here that Rust tests could not see.

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

/// The native module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ENVELOPE_VERSION", conveyor_core::envelope::VERSION)?;
    m.add("MAX_PAYLOAD_LEN", conveyor_core::envelope::MAX_PAYLOAD_LEN)?;
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
