//! The one conversion from core errors to Python exceptions.
//!
//! The exception classes live in Python (`conveyor/errors.py`); this asks that
//! module to build the right one from the error's stable code.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static FROM_CORE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Converts a core error into the matching `conveyor.errors` exception.
pub fn to_py(err: conveyor_core::Error) -> PyErr {
    Python::attach(|py| {
        let build = || -> PyResult<PyErr> {
            let factory = FROM_CORE.get_or_try_init(py, || {
                py.import("conveyor.errors")?
                    .getattr("_from_core")
                    .map(Bound::unbind)
            })?;
            let exc = factory.call1(py, (err.code(), err.to_string()))?;
            Ok(PyErr::from_value(exc.into_bound(py)))
        };
        build().unwrap_or_else(|e| e)
    })
}

/// Shorthand for results crossing into Python.
pub trait IntoPyResult<T> {
    /// Maps the error with [`to_py`].
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for conveyor_core::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
