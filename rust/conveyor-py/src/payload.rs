//! Handler arguments to JSON payloads, straight from Python objects.
//!
//! One encoder for every enqueue path, so a job's bytes do not depend on how
//! it was sent: compact JSON, UTF-8 (no `\u` escapes for non-ASCII), floats
//! always with a fraction or exponent so they read back as floats, and only
//! what JSON can say exactly. Dataclasses, pydantic models, datetimes, UUIDs,
//! decimals and enums go as the JSON `conveyor.arguments` gives them
//! (read back into the handler's annotated types). Anything else is an
//! `InvalidJobError` naming the culprit, never a silent conversion: no NaN,
//! no non-string dict keys, no arbitrary objects, no cycles.

use std::fmt::Write as _;

// Deeper nesting than MAX_DEPTH is refused (it is also how a cycle shows up).
use conveyor_core::payload::{write_call, MAX_DEPTH, NO_KWARGS};
use conveyor_core::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

fn invalid(reason: String) -> Error {
    Error::InvalidJob(format!("job arguments are not JSON-encodable: {reason}"))
}

/// Encodes `{"args": args, "kwargs": kwargs}`, refusing results over `limit` bytes.
pub fn encode_call(
    args: &Bound<'_, PyAny>,
    kwargs: Option<&Bound<'_, PyAny>>,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    write_call(
        out,
        limit,
        |out| {
            if args.is_instance_of::<PyList>() || args.is_instance_of::<PyTuple>() {
                value(args, 0, out)
            } else {
                Err(invalid("args must be a list or tuple".to_owned()))
            }
        },
        |out| match kwargs {
            Some(kw) if kw.is_instance_of::<PyDict>() => value(kw, 0, out),
            Some(_) => Err(invalid("kwargs must be a dict".to_owned())),
            None => {
                out.extend_from_slice(NO_KWARGS);
                Ok(())
            }
        },
    )
}

fn value(obj: &Bound<'_, PyAny>, depth: usize, out: &mut Vec<u8>) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(invalid(format!(
            "nested deeper than {MAX_DEPTH} levels (or contains itself)"
        )));
    }
    if obj.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(b) = obj.cast::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
    } else if let Ok(i) = obj.cast::<PyInt>() {
        match i.extract::<i64>() {
            Ok(v) => {
                let _ = write!(Utf8(out), "{v}");
            }
            // Big integers: JSON has no limit; Python's own digits are exact.
            Err(_) => out.extend_from_slice(
                i.str()
                    .map_err(|e| invalid(e.to_string()))?
                    .to_str()
                    .map_err(|e| invalid(e.to_string()))?
                    .as_bytes(),
            ),
        }
    } else if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        if !v.is_finite() {
            return Err(invalid(format!("{v} is not a JSON number")));
        }
        let start = out.len();
        let _ = write!(Utf8(out), "{v:?}");
        if !out[start..].iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
            out.extend_from_slice(b".0");
        }
    } else if let Ok(s) = obj.cast::<PyString>() {
        string(
            s.to_str().map_err(|_| {
                invalid("a string is not valid Unicode (lone surrogate)".to_owned())
            })?,
            out,
        );
    } else if let Ok(list) = obj.cast::<PyList>() {
        out.push(b'[');
        for (i, item) in list.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            value(&item, depth + 1, out)?;
        }
        out.push(b']');
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        out.push(b'[');
        for (i, item) in tuple.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            value(&item, depth + 1, out)?;
        }
        out.push(b']');
    } else if let Ok(dict) = obj.cast::<PyDict>() {
        out.push(b'{');
        for (i, (key, item)) in dict.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let key = key.cast::<PyString>().map_err(|_| {
                invalid(format!(
                    "dict keys must be strings, found {}",
                    type_name(&key)
                ))
            })?;
            string(
                key.to_str()
                    .map_err(|_| invalid("a key is not valid Unicode".to_owned()))?,
                out,
            );
            out.push(b':');
            value(&item, depth + 1, out)?;
        }
        out.push(b'}');
    } else {
        // Dataclasses, datetimes, UUIDs, decimals...: Python says what JSON
        // they stand for (`conveyor.arguments.to_wire`), one level at a time.
        let wire = to_wire(obj)?;
        if wire.is(obj) {
            return Err(invalid(format!("{} is not a JSON type", type_name(obj))));
        }
        value(&wire, depth + 1, out)?;
    }
    Ok(())
}

static TO_WIRE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `conveyor.arguments.to_wire(obj)`: a JSON-able stand-in, or `obj` itself.
fn to_wire<'py>(obj: &Bound<'py, PyAny>) -> Result<Bound<'py, PyAny>, Error> {
    let py = obj.py();
    let call = || -> PyResult<Bound<'py, PyAny>> {
        let f = TO_WIRE.get_or_try_init(py, || {
            py.import("conveyor.arguments")?
                .getattr("to_wire")
                .map(Bound::unbind)
        })?;
        f.bind(py).call1((obj,))
    };
    call().map_err(|e| invalid(format!("{}: {e}", type_name(obj))))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        if escape.is_empty() {
            let _ = write!(Utf8(out), "\\u{b:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        plain_from = i + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

/// `fmt::Write` into a byte buffer (what we write is always ASCII).
struct Utf8<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Python objects for `conveyor_core::call_reader`: what `json.loads` makes.
pub struct Objects<'py>(pub Python<'py>);

impl<'py> conveyor_core::call_reader::CallBuilder for Objects<'py> {
    type Value = Bound<'py, PyAny>;

    fn null(&mut self) -> Option<Self::Value> {
        Some(self.0.None().into_bound(self.0))
    }

    fn boolean(&mut self, value: bool) -> Option<Self::Value> {
        Some(PyBool::new(self.0, value).to_owned().into_any())
    }

    fn int(&mut self, value: i64) -> Option<Self::Value> {
        Some(value.into_pyobject(self.0).ok()?.into_any())
    }

    fn float(&mut self, value: f64) -> Option<Self::Value> {
        Some(PyFloat::new(self.0, value).into_any())
    }

    fn string(&mut self, value: &str) -> Option<Self::Value> {
        Some(PyString::new(self.0, value).into_any())
    }

    fn array(&mut self, items: Vec<Self::Value>) -> Option<Self::Value> {
        Some(PyList::new(self.0, items).ok()?.into_any())
    }

    fn object(&mut self, members: Vec<(String, Self::Value)>) -> Option<Self::Value> {
        let dict = PyDict::new(self.0);
        for (key, value) in members {
            dict.set_item(key, value).ok()?;
        }
        Some(dict.into_any())
    }

    fn is_array(&self, value: &Self::Value) -> bool {
        value.is_exact_instance_of::<PyList>()
    }

    fn is_object(&self, value: &Self::Value) -> bool {
        value.is_exact_instance_of::<PyDict>()
    }
}
