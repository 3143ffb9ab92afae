//! A borrowing view of an encoded envelope, for the relay's hot path.

use super::{
    check_fields, Reader, FLAG_DEDUP_KEY, FLAG_RUN_AT, FLAG_TRACE_CONTEXT, KNOWN_FLAGS, MAGIC,
    MAX_PAYLOAD_LEN, STAGE_LEN, VERSION,
};
use crate::error::{Error, Result};
use crate::id::JobId;

/// An encoded envelope checked in full but not copied: what the relay needs
/// to route a record (its run-at time, its dedup key) without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeView<'a> {
    /// See [`Envelope::id`].
    pub id: JobId,
    /// See [`Envelope::job_type`].
    pub job_type: &'a str,
    /// See [`Envelope::attempt`].
    pub attempt: u32,
    /// See [`Envelope::enqueued_at_us`].
    pub enqueued_at_us: u64,
    /// See [`Envelope::run_at_us`].
    pub run_at_us: Option<u64>,
    /// See [`Envelope::dedup_key`].
    pub dedup_key: Option<&'a str>,
    /// See [`Envelope::trace_context`].
    pub trace_context: Option<&'a str>,
    /// See [`Envelope::payload`].
    pub payload: &'a [u8],
    /// The stage stamps, still encoded (a whole number of them).
    pub stages: &'a [u8],
}

impl<'a> EnvelopeView<'a> {
    /// Whether a stamp of `stage` was recorded.
    pub fn has_stage(&self, stage: super::Stage) -> bool {
        self.stages
            .chunks_exact(super::STAGE_LEN)
            .any(|stamp| stamp[0] == stage as u8)
    }

    /// Checks `bytes` as [`Envelope::decode`] does (same errors), borrowing
    /// instead of copying.
    pub fn parse(bytes: &'a [u8]) -> Result<EnvelopeView<'a>> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(2, "magic")? != MAGIC {
            return Err(Error::Decode(
                "not a Conveyor envelope (bad magic bytes)".to_owned(),
            ));
        }
        let version = r.u8("version")?;
        if version > VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        if version == 0 {
            return Err(Error::Decode("version 0 does not exist".to_owned()));
        }
        let flags = r.u8("flags")?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::Decode(format!(
                "unknown flag bits {:#04x}",
                flags & !KNOWN_FLAGS
            )));
        }
        let id = JobId(r.array("id")?);
        let enqueued_at_us = u64::from_be_bytes(r.array("enqueued_at")?);
        let attempt = u32::from_be_bytes(r.array("attempt")?);
        let type_len = r.u8("job type length")? as usize;
        let job_type = r.text(type_len, "job type")?;
        let run_at_us = if flags & FLAG_RUN_AT != 0 {
            Some(u64::from_be_bytes(r.array("run_at")?))
        } else {
            None
        };
        let dedup_key = if flags & FLAG_DEDUP_KEY != 0 {
            Some(r.short_text("dedup key")?)
        } else {
            None
        };
        let trace_context = if flags & FLAG_TRACE_CONTEXT != 0 {
            Some(r.short_text("trace context")?)
        } else {
            None
        };
        let payload_len = u32::from_be_bytes(r.array("payload length")?) as usize;
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(Error::Decode(format!(
                "payload length {payload_len} is over the format's limit"
            )));
        }
        let payload = r.take(payload_len, "payload")?;
        let rest = r.remaining();
        if !rest.len().is_multiple_of(STAGE_LEN) {
            return Err(Error::Decode(format!(
                "{} bytes after the payload are not a whole number of stage stamps",
                rest.len()
            )));
        }
        check_fields(
            job_type,
            dedup_key,
            trace_context,
            payload.len(),
            rest.len() / STAGE_LEN,
        )
        .map_err(|e| match e {
            Error::InvalidJob(reason) => Error::Decode(reason),
            other => other,
        })?;
        Ok(EnvelopeView {
            id,
            job_type,
            attempt,
            enqueued_at_us,
            run_at_us,
            dedup_key,
            trace_context,
            payload,
            stages: rest,
        })
    }
}
