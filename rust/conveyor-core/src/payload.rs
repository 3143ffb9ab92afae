//! The payload of a job, written once for every way in: a JSON object
//! `{"args": [...], "kwargs": {...}}` holding the handler call. The Python
//! encoder (the binding's `encode_call`) and the gate both frame their JSON
//! with [`write_call`]; Python's decoder (`conveyor/payload.py`) reads the
//! same two keys. A conformance test (`tests/test_payload_conformance.py`)
//! holds the three to the same bytes.

use crate::error::{Error, Result};

/// Writes `{"args":<args>,"kwargs":<kwargs>}` into `out` (cleared first),
/// each part written by its callback as JSON, then checks the size against
/// `limit`.
pub fn write_call(
    out: &mut Vec<u8>,
    limit: usize,
    args: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    kwargs: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    out.clear();
    out.extend_from_slice(b"{\"args\":");
    args(out)?;
    out.extend_from_slice(b",\"kwargs\":");
    kwargs(out)?;
    out.push(b'}');
    check_size(out.len(), limit)
}

/// The JSON of a call with no positional arguments.
pub const NO_ARGS: &[u8] = b"[]";
/// The JSON of a call with no keyword arguments.
pub const NO_KWARGS: &[u8] = b"{}";

/// Refuses a payload of `len` bytes over `limit`.
pub fn check_size(len: usize, limit: usize) -> Result<()> {
    if len > limit {
        return Err(Error::InvalidJob(format!(
            "job payload is {len} bytes, over the limit of {limit}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_framed_with_args_then_kwargs() {
        let mut out = b"left over".to_vec();
        let put = |json: &'static [u8]| {
            move |o: &mut Vec<u8>| {
                o.extend_from_slice(json);
                Ok(())
            }
        };
        write_call(&mut out, 100, put(b"[1,\"a\"]"), put(NO_KWARGS)).unwrap();
        assert_eq!(out, br#"{"args":[1,"a"],"kwargs":{}}"#);
        let err = write_call(&mut out, 10, put(NO_ARGS), put(NO_KWARGS)).unwrap_err();
        assert!(err.to_string().contains("over the limit of 10"), "{err}");
    }
}
