"""The job envelope: round trips, refusal of malformed input, agreement with the spec."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import conveyor
import pure_envelope  # bench/pure_envelope.py, on the path by pytest's configuration
from conveyor import _core
from conveyor.errors import EnvelopeDecodeError, InvalidJobError, UnsupportedEnvelopeVersion

U64 = st.integers(min_value=0, max_value=2**64 - 1)
job_types = st.from_regex(r"[A-Za-z][A-Za-z0-9_.:\-]{0,199}", fullmatch=True)
short_text = st.text(min_size=1, max_size=60).filter(lambda s: 0 < len(s.encode()) <= 512)
trace = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=100)
ids = (
    st.binary(min_size=16, max_size=16)
    .map(lambda b: pure_envelope.PyEnvelope(b, "x", b"").id_text)
    .filter(lambda t: t[0] in "01234567")
)


@st.composite
def envelopes(draw: st.DrawFn) -> conveyor.Envelope:
    return conveyor.Envelope(
        draw(job_types),
        draw(st.binary(max_size=300)),
        id=draw(ids),
        attempt=draw(st.integers(min_value=0, max_value=2**32 - 1)),
        enqueued_at_us=draw(U64),
        run_at_us=draw(st.none() | U64),
        dedup_key=draw(st.none() | short_text),
        trace_context=draw(st.none() | trace),
        stages=draw(st.lists(st.tuples(st.integers(0, 255), U64), max_size=12)),
    )


@given(envelopes())
def test_every_valid_envelope_round_trips_byte_for_byte(env: conveyor.Envelope) -> None:
    data = env.encode()
    back = conveyor.Envelope.decode(data)
    assert back == env
    assert back.encode() == data
    for attr in (
        "id",
        "job_type",
        "attempt",
        "enqueued_at_us",
        "run_at_us",
        "dedup_key",
        "trace_context",
        "payload",
        "stages",
    ):
        assert getattr(back, attr) == getattr(env, attr)


@given(envelopes())
def test_pure_python_reference_writes_the_same_bytes(env: conveyor.Envelope) -> None:
    data = env.encode()
    py = pure_envelope.decode(data)
    assert py.encode() == data
    assert py.id_text == env.id


@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_a_typed_error_or_a_canonical_envelope(data: bytes) -> None:
    try:
        env = conveyor.Envelope.decode(data)
    except EnvelopeDecodeError:
        return
    assert env.encode() == data


@given(envelopes(), st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_corrupted_envelopes_never_crash(env: conveyor.Envelope, pos: int, byte: int) -> None:
    data = bytearray(env.encode())
    data[pos % len(data)] = byte
    try:
        back = conveyor.Envelope.decode(bytes(data))
    except EnvelopeDecodeError:
        return
    assert back.encode() == bytes(data)


@given(envelopes(), st.integers(min_value=0))
def test_every_truncation_is_refused(env: conveyor.Envelope, cut: int) -> None:
    data = env.encode()
    # Dropping whole trailing stage stamps leaves a valid, shorter envelope.
    body_end = len(data) - 9 * len(env.stages)
    cut %= body_end
    with pytest.raises(EnvelopeDecodeError):
        conveyor.Envelope.decode(data[:cut])


@given(envelopes(), st.integers(min_value=conveyor.ENVELOPE_VERSION + 1, max_value=255))
def test_newer_versions_are_refused_clearly(env: conveyor.Envelope, version: int) -> None:
    data = bytearray(env.encode())
    data[2] = version
    with pytest.raises(UnsupportedEnvelopeVersion, match=f"version {version} is newer"):
        conveyor.Envelope.decode(bytes(data))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("job_type", ""),
        ("job_type", "9starts-with-digit"),
        ("job_type", "has space"),
        ("job_type", "x" * 201),
        ("dedup_key", ""),
        ("dedup_key", "k" * 513),
        ("trace_context", "tab\tinside"),
        ("id", "not-an-id"),
    ],
)
def test_invalid_fields_raise_invalid_job(field: str, value: str) -> None:
    kwargs = {"job_type": "ok.type", "payload": b"{}", field: value}
    with pytest.raises(InvalidJobError):
        conveyor.Envelope(**kwargs)  # type: ignore[arg-type]


def test_oversized_payload_is_refused_before_encoding() -> None:
    with pytest.raises(InvalidJobError, match="payload"):
        conveyor.Envelope("big", b"x" * (_core.MAX_PAYLOAD_LEN + 1))


def test_batch_calls_match_single_calls() -> None:
    envs = [conveyor.Envelope("batch.job", str(i).encode()) for i in range(50)]
    encoded = conveyor.encode_many(envs)
    assert encoded == [e.encode() for e in envs]
    assert conveyor.decode_many(encoded) == envs
    with pytest.raises(EnvelopeDecodeError):
        conveyor.decode_many([*encoded, b"junk"])


def test_ids_sort_by_creation_time() -> None:
    ids = [conveyor.new_job_id() for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_stage_names_match_the_core() -> None:
    assert [(s.value, s.name.lower()) for s in conveyor.Stage] == _core.STAGES


def test_append_stage_keeps_every_byte_and_adds_a_stamp() -> None:
    env = conveyor.Envelope("stamp.me", b'{"caf\\u00e9": "\xc3\xa9"}')
    data = env.encode()
    stamped = _core.append_stage(data, conveyor.Stage.RELAYED, 123)
    assert stamped[: len(data)] == data
    assert conveyor.Envelope.decode(stamped).stages == [(conveyor.Stage.RELAYED, 123)]
    with pytest.raises(EnvelopeDecodeError):
        _core.append_stage(b"garbage", 1, 1)


def test_a_forked_child_never_makes_its_parents_ids() -> None:
    # The child inherits the parent's last id and its random generator. The
    # first id of a new millisecond takes 80 fresh random bits (its last 16
    # characters): the same bits in both processes would mean a generator
    # that was copied, not reseeded.
    _core.new_job_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        time.sleep(0.002)
        ids = [_core.new_job_id() for _ in range(20_000)]
        with os.fdopen(write_end, "w") as out:
            out.write("\n".join(ids))
        os._exit(0)
    os.close(write_end)
    time.sleep(0.002)
    parent = [_core.new_job_id() for _ in range(20_000)]
    with os.fdopen(read_end) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    assert len(set(child)) == 20_000
    assert parent[0][-16:] != child[0][-16:]
    assert not set(parent) & set(child)
