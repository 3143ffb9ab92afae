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

/// How deep a value may sit below `args` or `kwargs` (which are at depth 0):
/// the Python encoder's limit and the gate's, well inside what a worker's
/// decoder can read back.
pub const MAX_DEPTH: usize = 64;

/// Checks JSON text a client sent as `args` or `kwargs` (already parsed as
/// well-formed JSON) for what no worker could run: values nested deeper than
/// [`MAX_DEPTH`], and numbers no float holds (`1e99999` would reach a handler
/// as infinity). Integers of any size are fine: Python reads them exactly.
pub fn check_json(text: &[u8]) -> Result<()> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b',' | b':' | b']' | b'}')
            && depth > MAX_DEPTH
        {
            return Err(Error::InvalidJob(format!(
                "job arguments are nested deeper than {MAX_DEPTH} levels"
            )));
        }
        match b {
            b'"' => i = string_end(text, i + 1),
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < text.len()
                    && matches!(text[i + 1], b'+' | b'-' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let number = &text[start..=i];
                if number.iter().any(|c| matches!(c, b'.' | b'e' | b'E')) {
                    let finite = std::str::from_utf8(number)
                        .ok()
                        .and_then(|n| n.parse::<f64>().ok())
                        .is_some_and(f64::is_finite);
                    if !finite {
                        return Err(Error::InvalidJob(format!(
                            "job arguments hold {}, a number no float holds (not finite)",
                            String::from_utf8_lossy(number)
                        )));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The index of the closing quote of a string whose body starts at `i`.
fn string_end(text: &[u8], mut i: usize) -> usize {
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    i
}

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

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn client_json_is_held_to_what_a_worker_can_run() {
        // `args` itself is one level: a value inside 64 more is at depth 64.
        assert!(check_json(nested(MAX_DEPTH).as_bytes()).is_ok());
        let deep = check_json(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(deep.to_string().contains("deeper than 64"), "{deep}");
        assert!(check_json(nested(100_000).as_bytes()).is_err());
        assert!(check_json(br#"[1.5, -2e10, 1e-99999, 123456789012345678901234567890]"#).is_ok());
        for bad in [&b"[1e99999]"[..], b"[-1E400]", br#"{"a": [0.1, 2e308]}"#] {
            let err = check_json(bad).unwrap_err();
            assert!(err.to_string().contains("not finite"), "{err}");
        }
        // Inside strings, brackets and numbers are text.
        let text = format!("[\"{}\", \"1e99999\", \"\\\"[\"]", "[".repeat(200));
        assert!(check_json(text.as_bytes()).is_ok(), "{text}");
    }

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
