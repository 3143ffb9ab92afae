"""Handler arguments as job payloads: JSON, so any language can enqueue and read them.

A payload is the UTF-8 JSON object `{"args": [...], "kwargs": {...}}`. No pickle
or any other format that runs code when read. This module is the payload's one
home on the Python side: the encoder is Rust's (`_core.encode_call`, which the
gate's framing shares: `rust/conveyor-core/src/payload.rs`), the decoder is
here, and `tests/test_payload_conformance.py` holds them to the same bytes.
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


def decode_call(payload: bytes) -> tuple[list[Any], dict[str, Any]]:
    """The `(args, kwargs)` of a payload; raises InvalidJobError if malformed."""
    try:
        call = json.loads(payload)
        args, kwargs = call["args"], call["kwargs"]
    except (ValueError, TypeError, KeyError) as err:
        raise InvalidJobError(f"job payload is not a Conveyor call: {err}") from err
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InvalidJobError("job payload must hold a list of args and an object of kwargs")
    return args, kwargs


def split_call(call: Call) -> tuple[Sequence[Any], Mapping[str, Any]]:
    """`(args, kwargs)` of one `enqueue_many` item."""
    if isinstance(call, Mapping):
        return (), call
    if isinstance(call, (str, bytes)) or not isinstance(call, Sequence):
        raise InvalidJobError(
            f"each call must be a tuple of arguments or a dict of keyword arguments, not {call!r}"
        )
    return call, {}
