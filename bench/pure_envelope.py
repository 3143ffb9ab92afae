"""The envelope format (docs/envelope.md) in pure Python, for comparison.

This is what a team without the Rust core would write: the same bytes, the
same checks, with `struct` and `bytes`. The benchmark times it against the
native codec, and the test suite holds the two to identical output.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

MAGIC = b"CV"
VERSION = 1
FLAG_RUN_AT, FLAG_DEDUP_KEY, FLAG_TRACE = 1, 2, 4
_HEADER = struct.Struct(">2sBB16sQIB")
_STAGE = struct.Struct(">BQ")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_JOB_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.:\-]{0,199}\Z")
MAX_PAYLOAD_LEN = 16 * 1024 * 1024
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class DecodeError(ValueError):
    """Malformed envelope bytes."""


@dataclass
class PyEnvelope:
    """A job envelope, field for field as in Rust."""

    id: bytes
    job_type: str
    payload: bytes
    attempt: int = 0
    enqueued_at_us: int = 0
    run_at_us: int | None = None
    dedup_key: str | None = None
    trace_context: str | None = None
    stages: list[tuple[int, int]] = field(default_factory=list)

    def encode(self) -> bytes:
        if not _JOB_TYPE.match(self.job_type):
            raise ValueError(f"bad job type {self.job_type!r}")
        if len(self.payload) > MAX_PAYLOAD_LEN:
            raise ValueError("payload too large")
        flags = (
            (FLAG_RUN_AT if self.run_at_us is not None else 0)
            | (FLAG_DEDUP_KEY if self.dedup_key is not None else 0)
            | (FLAG_TRACE if self.trace_context is not None else 0)
        )
        job_type = self.job_type.encode()
        parts = [
            _HEADER.pack(
                MAGIC, VERSION, flags, self.id, self.enqueued_at_us, self.attempt, len(job_type)
            ),
            job_type,
        ]
        if self.run_at_us is not None:
            parts.append(_U64.pack(self.run_at_us))
        for text in (self.dedup_key, self.trace_context):
            if text is not None:
                raw = text.encode()
                if not 0 < len(raw) <= 512:
                    raise ValueError("dedup key / trace context must be 1 to 512 bytes")
                parts += [_U16.pack(len(raw)), raw]
        parts += [_U32.pack(len(self.payload)), self.payload]
        parts += [_STAGE.pack(code, at) for code, at in self.stages]
        return b"".join(parts)

    @property
    def id_text(self) -> str:
        value = int.from_bytes(self.id, "big")
        return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def decode(data: bytes) -> PyEnvelope:
    """Decode an envelope, raising DecodeError on anything malformed."""
    try:
        magic, version, flags, id_, enqueued, attempt, type_len = _HEADER.unpack_from(data, 0)
    except struct.error as err:
        raise DecodeError("truncated header") from err
    if magic != MAGIC:
        raise DecodeError("bad magic")
    if version != VERSION:
        raise DecodeError(f"unsupported version {version}")
    if flags & ~7:
        raise DecodeError("unknown flags")
    pos = _HEADER.size
    try:
        job_type = data[pos : pos + type_len].decode()
        pos += type_len
        run_at = None
        if flags & FLAG_RUN_AT:
            (run_at,) = _U64.unpack_from(data, pos)
            pos += 8
        texts: list[str | None] = []
        for flag in (FLAG_DEDUP_KEY, FLAG_TRACE):
            if flags & flag:
                (n,) = _U16.unpack_from(data, pos)
                texts.append(data[pos + 2 : pos + 2 + n].decode())
                pos += 2 + n
            else:
                texts.append(None)
        (payload_len,) = _U32.unpack_from(data, pos)
        pos += 4
        payload = data[pos : pos + payload_len]
        pos += payload_len
    except (struct.error, UnicodeDecodeError) as err:
        raise DecodeError(str(err)) from err
    if len(payload) != payload_len or (len(data) - pos) % _STAGE.size:
        raise DecodeError("truncated")
    stages = [_STAGE.unpack_from(data, p) for p in range(pos, len(data), _STAGE.size)]
    if not _JOB_TYPE.match(job_type):
        raise DecodeError("bad job type")
    return PyEnvelope(id_, job_type, payload, attempt, enqueued, run_at, texts[0], texts[1], stages)
