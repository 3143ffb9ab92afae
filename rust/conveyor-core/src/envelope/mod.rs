//! The job envelope: Conveyor's one versioned wire format for a job.
//!
//! The byte layout is specified in `docs/envelope.md`; this module is its
//! reference implementation. Two properties matter more than speed:
//!
//! * Encoding is canonical: `encode(decode(b)) == b` for every `b` that
//!   decodes, so a job can be stored, relayed and read back without its bytes
//!   changing (the payload is never re-encoded in transit).
//! * Decoding never panics: any byte string yields an envelope or an [`Error`].
//!
//! Stage stamps sit at the very end, so a stage can be recorded by appending
//! nine bytes ([`append_stage`]) without decoding or re-encoding the rest.

mod stages;
mod view;

use crate::error::{Error, Result};
use crate::id::JobId;

pub use stages::{append_stage, source_stamp, Stage, StageStamp, STAGE_LEN};
pub use view::EnvelopeView;

/// The first two bytes of every envelope.
pub const MAGIC: [u8; 2] = *b"CV";
/// The newest envelope version this build writes and reads.
pub const VERSION: u8 = 1;
/// Longest job type name, in bytes.
pub const MAX_JOB_TYPE_LEN: usize = 200;
/// Longest dedup key, in bytes.
pub const MAX_DEDUP_KEY_LEN: usize = 512;
/// Longest trace context, in bytes (a W3C `traceparent`, optionally with `tracestate`).
pub const MAX_TRACE_CONTEXT_LEN: usize = 512;
/// The format's hard ceiling on payload size; deployments set a lower limit.
pub const MAX_PAYLOAD_LEN: usize = 16 * 1024 * 1024;
/// Most stage stamps one envelope may carry (about 100 attempts' worth).
pub const MAX_STAGES: usize = 255;

const FLAG_RUN_AT: u8 = 1;
const FLAG_DEDUP_KEY: u8 = 1 << 1;
const FLAG_TRACE_CONTEXT: u8 = 1 << 2;
const KNOWN_FLAGS: u8 = FLAG_RUN_AT | FLAG_DEDUP_KEY | FLAG_TRACE_CONTEXT;
/// magic, version, flags, id, enqueued_at, attempt, job type length.
const FIXED_HEADER_LEN: usize = 2 + 1 + 1 + 16 + 8 + 4 + 1;
/// A job as it travels: who it is, what to run, with what, and where it has been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique, time-sortable id.
    pub id: JobId,
    /// Stable name of the job type; routes the job to its handler.
    pub job_type: String,
    /// Attempts made so far (0 until a worker first runs it).
    pub attempt: u32,
    /// When the producer accepted the job (µs since the epoch).
    pub enqueued_at_us: u64,
    /// Do not run before this time (µs since the epoch).
    pub run_at_us: Option<u64>,
    /// Jobs sharing a dedup key are not queued twice at once.
    pub dedup_key: Option<String>,
    /// W3C trace context (`traceparent`, optionally `;`-joined `tracestate`).
    pub trace_context: Option<String>,
    /// The handler's arguments, opaque bytes (JSON by default).
    pub payload: Vec<u8>,
    /// Stage stamps in the order they were recorded.
    pub stages: Vec<StageStamp>,
}

impl Envelope {
    /// A unique job's field in its queue's `unique` hash (see
    /// [`crate::store::keys::unique_field`]); `None` for other jobs.
    pub fn unique_field(&self) -> Option<String> {
        self.dedup_key
            .as_deref()
            .map(|key| crate::store::keys::unique_field(&self.job_type, key))
    }

    /// A new job as a producer makes it: a fresh id, enqueued now, attempt 0,
    /// no stages. Not yet validated: [`Envelope::encode`] checks it.
    pub fn new_job(
        job_type: String,
        payload: Vec<u8>,
        dedup_key: Option<String>,
        run_at_us: Option<u64>,
        trace_context: Option<String>,
    ) -> Envelope {
        let now_us = crate::id::now_us();
        Envelope {
            id: JobId::generate_at(now_us / 1000),
            job_type,
            attempt: 0,
            enqueued_at_us: now_us,
            run_at_us,
            dedup_key,
            trace_context,
            payload,
            stages: Vec::new(),
        }
    }

    /// New jobs of one type, one per payload, with an optional dedup key
    /// each (`dedup_keys` must then be as long as `payloads`).
    pub fn new_jobs(
        job_type: &str,
        payloads: Vec<Vec<u8>>,
        dedup_keys: Option<Vec<Option<String>>>,
        run_at_us: Option<u64>,
        trace_context: Option<&str>,
    ) -> Result<Vec<Envelope>> {
        if let Some(keys) = &dedup_keys {
            if keys.len() != payloads.len() {
                return Err(Error::InvalidJob(format!(
                    "{} dedup keys for {} jobs",
                    keys.len(),
                    payloads.len()
                )));
            }
        }
        let mut keys = dedup_keys.map(Vec::into_iter);
        payloads
            .into_iter()
            .map(|payload| {
                let env = Envelope::new_job(
                    job_type.to_owned(),
                    payload,
                    keys.as_mut().and_then(Iterator::next).flatten(),
                    run_at_us,
                    trace_context.map(str::to_owned),
                );
                env.validate()?;
                Ok(env)
            })
            .collect()
    }

    /// Checks a new job: the format's rules ([`Envelope::check_format`]),
    /// then a run-at time at most [`MAX_SCHEDULE_AHEAD_US`] ahead and a trace
    /// context that is a W3C `traceparent`. Every place that makes a job
    /// calls this: the gate, [`Envelope::new_jobs`], the binding's single send.
    pub fn validate(&self) -> Result<()> {
        self.check_format()?;
        // Checked when a job is made, not when one is read: records written
        // before these rules still relay.
        if let Some(at) = self.run_at_us {
            check_run_at(at, self.enqueued_at_us)?;
        }
        if let Some(trace) = &self.trace_context {
            check_traceparent(trace)?;
        }
        Ok(())
    }

    /// Checks the envelope against the format's rules alone (what any
    /// envelope, old or new, must satisfy to be encoded).
    pub fn check_format(&self) -> Result<()> {
        check_fields(
            &self.job_type,
            self.dedup_key.as_deref(),
            self.trace_context.as_deref(),
            self.payload.len(),
            self.stages.len(),
        )
    }

    /// Size in bytes of the encoded envelope.
    pub fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN
            + self.job_type.len()
            + self.run_at_us.map_or(0, |_| 8)
            + self.dedup_key.as_ref().map_or(0, |k| 2 + k.len())
            + self.trace_context.as_ref().map_or(0, |t| 2 + t.len())
            + 4
            + self.payload.len()
            + STAGE_LEN * self.stages.len()
    }

    /// Encodes the envelope after checking it against the format's rules
    /// (not the rules for new jobs, see [`Envelope::validate`]: an envelope
    /// decoded from an older record re-encodes as it was).
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.check_format()?;
        let mut out = Vec::with_capacity(self.encoded_len());
        let mut flags = 0;
        if self.run_at_us.is_some() {
            flags |= FLAG_RUN_AT;
        }
        if self.dedup_key.is_some() {
            flags |= FLAG_DEDUP_KEY;
        }
        if self.trace_context.is_some() {
            flags |= FLAG_TRACE_CONTEXT;
        }
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.enqueued_at_us.to_be_bytes());
        out.extend_from_slice(&self.attempt.to_be_bytes());
        // validate() bounds every length below, so the casts cannot truncate.
        out.push(self.job_type.len() as u8);
        out.extend_from_slice(self.job_type.as_bytes());
        if let Some(run_at) = self.run_at_us {
            out.extend_from_slice(&run_at.to_be_bytes());
        }
        for text in [&self.dedup_key, &self.trace_context].into_iter().flatten() {
            out.extend_from_slice(&(text.len() as u16).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        for stamp in &self.stages {
            out.push(stamp.code);
            out.extend_from_slice(&stamp.at_us.to_be_bytes());
        }
        Ok(out)
    }

    /// Decodes an envelope; any malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Envelope> {
        let view = EnvelopeView::parse(bytes)?;
        Ok(Envelope {
            id: view.id,
            job_type: view.job_type.to_owned(),
            attempt: view.attempt,
            enqueued_at_us: view.enqueued_at_us,
            run_at_us: view.run_at_us,
            dedup_key: view.dedup_key.map(str::to_owned),
            trace_context: view.trace_context.map(str::to_owned),
            payload: view.payload.to_vec(),
            stages: view
                .stages
                .chunks_exact(STAGE_LEN)
                .map(|c| StageStamp {
                    code: c[0],
                    at_us: u64::from_be_bytes(c[1..].try_into().unwrap_or_default()),
                })
                .collect(),
        })
    }
}

/// The checks [`Envelope::validate`] makes, on the fields alone.
pub(super) fn check_fields(
    job_type: &str,
    dedup_key: Option<&str>,
    trace_context: Option<&str>,
    payload_len: usize,
    stage_count: usize,
) -> Result<()> {
    validate_job_type(job_type)?;
    if let Some(key) = dedup_key {
        check_len("dedup key", key.len(), MAX_DEDUP_KEY_LEN)?;
    }
    if let Some(trace) = trace_context {
        check_len("trace context", trace.len(), MAX_TRACE_CONTEXT_LEN)?;
        if !trace.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(Error::InvalidJob(
                "trace context must be printable ASCII".to_owned(),
            ));
        }
    }
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(Error::InvalidJob(format!(
            "payload is {payload_len} bytes, over the format's limit of {MAX_PAYLOAD_LEN}"
        )));
    }
    if stage_count > MAX_STAGES {
        return Err(Error::InvalidJob(format!(
            "{stage_count} stage stamps, over the limit of {MAX_STAGES}"
        )));
    }
    Ok(())
}

/// Byte offset of the job id (16 bytes) in every envelope. The Lua scripts
/// name it too (`ID_FIRST`, 1-based); a test holds the two together.
pub const ID_OFFSET: usize = 4;
/// Length of the job id.
pub const ID_LEN: usize = 16;
/// Byte offset of the attempt count (u32, big-endian) in every envelope;
/// `ATTEMPT_FIRST` (1-based) in the Lua scripts.
pub const ATTEMPT_OFFSET: usize = 28;
/// Length of the attempt count.
pub const ATTEMPT_LEN: usize = 4;

/// The job id bytes of an encoded envelope, if it is long enough.
pub fn id_bytes(encoded: &[u8]) -> Option<&[u8]> {
    encoded.get(ID_OFFSET..ID_OFFSET + ID_LEN)
}

/// Overwrites the attempt count of an encoded envelope in place.
///
/// The caller vouches that `encoded` is a valid envelope, as for [`append_stage`].
pub fn set_attempt(encoded: &mut [u8], attempt: u32) {
    encoded[ATTEMPT_OFFSET..ATTEMPT_OFFSET + ATTEMPT_LEN].copy_from_slice(&attempt.to_be_bytes());
}

/// Farthest ahead a job may be scheduled. Beyond it a run-at time is a
/// mistake or an overflow, refused rather than parked for ever.
pub const MAX_SCHEDULE_AHEAD_US: u64 = 366 * 24 * 3600 * 1_000_000;

/// Refuses a run-at time more than [`MAX_SCHEDULE_AHEAD_US`] after `now_us`.
pub fn check_run_at(run_at_us: u64, now_us: u64) -> Result<()> {
    if run_at_us > now_us.saturating_add(MAX_SCHEDULE_AHEAD_US) {
        return Err(Error::InvalidJob(format!(
            "run-at time is more than 366 days ahead ({run_at_us} us since the epoch)"
        )));
    }
    Ok(())
}

/// Checks a trace context: a W3C `traceparent` (`version-traceid-parentid-flags`
/// in lowercase hex, the ids not all zeros, version `ff` never), optionally
/// followed by `;` and a `tracestate`.
pub fn check_traceparent(trace: &str) -> Result<()> {
    let parent = trace.split(';').next().unwrap_or_default();
    let bad = || {
        Error::InvalidJob(format!(
            "trace context {trace:?} is not a W3C traceparent (like \
             00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01)"
        ))
    };
    let fields: Vec<&str> = parent.split('-').collect();
    let hex = |f: &str, len: usize| {
        f.len() == len
            && f.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let [version, trace_id, parent_id, flags, rest @ ..] = fields.as_slice() else {
        return Err(bad());
    };
    let known_shape = hex(version, 2)
        && *version != "ff"
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.bytes().any(|b| b != b'0');
    // Version 00 has exactly four fields; later versions may add more.
    if !known_shape || (*version == "00" && !rest.is_empty()) {
        return Err(bad());
    }
    Ok(())
}

/// Checks a job type name: 1 to 200 bytes, a letter first, then letters,
/// digits and `_ . : -`. Names appear in Redis keys, metric labels and URLs,
/// so they are kept to characters that need no escaping anywhere.
pub fn validate_job_type(name: &str) -> Result<()> {
    check_len("job type", name.len(), MAX_JOB_TYPE_LEN)?;
    let mut chars = name.bytes();
    let first_ok = chars.next().is_some_and(|b| b.is_ascii_alphabetic());
    let rest_ok = chars.all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(Error::InvalidJob(format!(
            "job type {name:?} must start with a letter and use only letters, digits and _ . : -"
        )))
    }
}

fn check_len(what: &str, len: usize, max: usize) -> Result<()> {
    if len == 0 || len > max {
        return Err(Error::InvalidJob(format!(
            "{what} must be 1 to {max} bytes, got {len}"
        )));
    }
    Ok(())
}

/// A bounds-checked cursor: every read names what it was reading, so a
/// truncated envelope says where it ends.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let slice = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(Error::Decode(format!(
                "truncated: {what} needs {n} bytes at offset {}, envelope is {} bytes",
                self.pos,
                self.bytes.len()
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn text(&mut self, n: usize, what: &str) -> Result<&'a str> {
        let raw = self.take(n, what)?;
        std::str::from_utf8(raw).map_err(|_| Error::Decode(format!("{what} is not valid UTF-8")))
    }

    fn short_text(&mut self, what: &str) -> Result<&'a str> {
        let n = u16::from_be_bytes(self.array(what)?) as usize;
        self.text(n, what)
    }

    fn remaining(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }
}

#[cfg(test)]
mod tests;
