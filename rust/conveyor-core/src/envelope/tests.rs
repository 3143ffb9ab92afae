//! The codec's tests: round trips, truncations, mutations, the view.

use super::*;
use proptest::prelude::*;

fn sample() -> Envelope {
    Envelope {
        id: JobId::generate(),
        job_type: "billing.charge".to_owned(),
        attempt: 2,
        enqueued_at_us: 1_700_000_000_000_000,
        run_at_us: Some(1_700_000_060_000_000),
        dedup_key: Some("invoice-42".to_owned()),
        trace_context: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        payload: br#"{"amount": 12}"#.to_vec(),
        stages: vec![StageStamp {
            code: Stage::Kafka as u8,
            at_us: 1_700_000_000_001_000,
        }],
    }
}

#[test]
fn round_trips_byte_for_byte() {
    let env = sample();
    let bytes = env.encode().unwrap();
    assert_eq!(bytes.len(), env.encoded_len());
    let back = Envelope::decode(&bytes).unwrap();
    assert_eq!(back, env);
    assert_eq!(back.encode().unwrap(), bytes);
}

#[test]
fn a_view_borrows_the_same_fields() {
    let env = sample();
    let bytes = env.encode().unwrap();
    let view = EnvelopeView::parse(&bytes).unwrap();
    assert_eq!(view.job_type, env.job_type);
    assert_eq!(view.run_at_us, env.run_at_us);
    assert_eq!(view.dedup_key, env.dedup_key.as_deref());
    assert_eq!(view.trace_context, env.trace_context.as_deref());
    assert_eq!(view.payload, env.payload.as_slice());
    assert_eq!(view.stages.len(), STAGE_LEN * env.stages.len());
    let mut bad = bytes.clone();
    bad.push(0);
    assert!(EnvelopeView::parse(&bad).is_err(), "half a stage stamp");
}

#[test]
fn appended_stage_decodes() {
    let env = sample();
    let mut bytes = env.encode().unwrap();
    append_stage(&mut bytes, Stage::Relayed as u8, 99);
    let back = Envelope::decode(&bytes).unwrap();
    assert_eq!(back.stages.last(), Some(&StageStamp { code: 2, at_us: 99 }));
}

#[test]
fn attempt_is_rewritten_in_place() {
    let env = sample();
    let mut bytes = env.encode().unwrap();
    set_attempt(&mut bytes, 7);
    let back = Envelope::decode(&bytes).unwrap();
    assert_eq!(back.attempt, 7);
    assert_eq!(back.payload, env.payload);
}

#[test]
fn newer_version_is_refused_clearly() {
    let mut bytes = sample().encode().unwrap();
    bytes[2] = VERSION + 1;
    let err = Envelope::decode(&bytes).unwrap_err();
    assert_eq!(err.code(), "unsupported_version");
    assert!(err.to_string().contains("upgrade"));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample().encode().unwrap();
    // Cutting whole stage stamps off the end leaves a valid envelope.
    let stage_start = bytes.len() - STAGE_LEN;
    for cut in 0..stage_start {
        assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn bad_job_types_are_refused() {
    for bad in ["", "9lives", "has space", "ünï", &"x".repeat(201)] {
        let mut env = sample();
        env.job_type = bad.to_owned();
        assert_eq!(env.encode().unwrap_err().code(), "invalid_job", "{bad:?}");
    }
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_envelopes(pos in 0usize..120, byte in any::<u8>()) {
        let mut bytes = sample().encode().unwrap();
        let at = pos % bytes.len();
        bytes[at] = byte;
        if let Ok(env) = Envelope::decode(&bytes) {
            prop_assert_eq!(env.encode().unwrap(), bytes);
        }
    }
}

#[test]
fn named_offsets_point_at_the_id_and_the_attempt() {
    let env = sample();
    let bytes = env.encode().unwrap();
    assert_eq!(id_bytes(&bytes).unwrap(), &env.id.0[..]);
    let attempt = &bytes[ATTEMPT_OFFSET..ATTEMPT_OFFSET + ATTEMPT_LEN];
    assert_eq!(attempt, &env.attempt.to_be_bytes());
    assert_eq!(id_bytes(&bytes[..ID_OFFSET + ID_LEN - 1]), None);
}

#[test]
fn trace_contexts_are_w3c_traceparents() {
    for good in [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00;vendor=abc",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    ] {
        assert!(check_traceparent(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "hello",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
    ] {
        assert!(check_traceparent(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_job_is_scheduled_at_most_366_days_ahead() {
    let now = 1_700_000_000_000_000;
    assert!(check_run_at(now + MAX_SCHEDULE_AHEAD_US, now).is_ok());
    assert!(check_run_at(now + MAX_SCHEDULE_AHEAD_US + 1, now).is_err());
    assert!(check_run_at(u64::MAX, now).is_err());
    assert!(check_run_at(0, now).is_ok(), "in the past: due at once");
    let mut env = sample();
    env.run_at_us = Some(u64::MAX);
    assert!(env.validate().is_err(), "not for a new job");
    assert!(env.encode().is_ok(), "but an old record still re-encodes");
}
