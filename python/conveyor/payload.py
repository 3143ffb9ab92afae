"""Handler arguments as job payloads: JSON, so any language can enqueue and read them.

A payload is the UTF-8 JSON object `{"args": [...], "kwargs": {...}}`. No pickle
or any other format that runs code when read. This module is the payload's one
home on the Python side: the encoder is Rust's (`_core.encode_call`, which the
gate's framing shares: `rust/conveyor-core/src/payload.rs`), the decoder is
here (with a fast Rust reader in front: `rust/conveyor-core/src/call_reader.rs`,
held to it by `tests/test_call_reader.py`), and
`tests/test_payload_conformance.py` holds them to the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor import _core
from conveyor.errors import InvalidJobError

#: One call of a handler in `enqueue_many`: positional args, or keyword args.
Call = Sequence[Any] | Mapping[str, Any]


def encode_call(args: Sequence[Any], kwargs: Mapping[str, Any], limit: int) -> bytes:
    """The payload for a call with `args` and `kwargs`; raises InvalidJobError
    if they are not JSON-encodable or the result is over `limit` bytes.

    The encoder is the Rust one every enqueue path uses: compact, UTF-8, floats
    kept as floats, and no silent conversions (non-string keys, NaN, arbitrary
    objects and cycles are refused).
    """
    if not isinstance(args, (list, tuple)):
        args = list(args)
    if not isinstance(kwargs, dict):
        kwargs = dict(kwargs)
    return _core.encode_call(args, kwargs, limit)


def _finite(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"number {text} is not a finite float")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


_INF = float("inf")
#: JSON as strict as the encoder: numbers that overflow a float and the
#: NaN/Infinity extensions are refused, not turned into inf or nan.
_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)


def decode_call(payload: bytes) -> tuple[list[Any], dict[str, Any]]:
    """The `(args, kwargs)` of a payload; raises InvalidJobError if it is not
    one, whatever is wrong with it (not UTF-8, not JSON, nested deeper than
    the decoder goes, too large for memory, numbers no float holds, the wrong
    shape): a payload no attempt can decode is dead at once, never a crash.

    Read by the Rust reader (`_core.decode_call`: one pass, no Python JSON
    machinery) when it can; what it declines (big integers, lone
    surrogates, deep nesting and everything wrong) by Python's `json`,
    which has the last word: the reader reads only what `json` reads the same
    way (`tests/test_call_reader.py`)."""
    # The reader takes bytes; anything else goes to json as before.
    fast = _core.decode_call(payload) if type(payload) is bytes else None
    if fast is not None:
        return fast
    try:
        call = _DECODER.decode(payload.decode("utf-8"))
        args, kwargs = call["args"], call["kwargs"]
    except Exception as err:  # untrusted bytes: any failure means the same
        raise InvalidJobError(
            f"job payload is not a Conveyor call: {type(err).__name__}: {_short(err)}"
        ) from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InvalidJobError(
            "job payload is not a Conveyor call: it must hold a list of args and an object "
            "of kwargs"
        )
    return args, kwargs


def _short(err: BaseException) -> str:
    try:
        return str(err)[:200]
    except Exception:
        return "(no description)"


def split_call(call: Call) -> tuple[Sequence[Any], Mapping[str, Any]]:
    """`(args, kwargs)` of one `enqueue_many` item."""
    if isinstance(call, Mapping):
        return (), call
    if isinstance(call, (str, bytes)) or not isinstance(call, Sequence):
        raise InvalidJobError(
            f"each call must be a tuple of arguments or a dict of keyword arguments, not {call!r}"
        )
    return call, {}
