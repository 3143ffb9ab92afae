"""The worker's fast payload reader (Rust, `_core.decode_call`) held to
Python's `json`, the full decoder: what the reader reads, it reads as `json`
does (the same types, float bits and key order); what `json` reads otherwise
or refuses, the reader declines (None), and `json` has the last word."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor import _core
from conveyor.errors import InvalidJobError
from conveyor.payload import _DECODER, decode_call

I64 = (-(2**63), 2**63 - 1)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(*I64)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
#: How encoders may write the same call: compact, spaced, indented, escaped.
STYLES: list[dict[str, Any]] = [
    {"separators": (",", ":"), "ensure_ascii": False},
    {"ensure_ascii": True},
    {"indent": 2},
    {"separators": (" , ", " : "), "ensure_ascii": True},
]


def json_reads(payload: bytes) -> tuple[list[Any], dict[str, Any]] | None:
    """What Python's decoder makes of a payload (None: not a call)."""
    try:
        call = _DECODER.decode(payload.decode("utf-8"))
        args, kwargs = call["args"], call["kwargs"]
    except Exception:
        return None
    if type(args) is not list or type(kwargs) is not dict:
        return None
    return args, kwargs


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down; floats bit for bit
    (-0.0 is not 0.0); dicts in the same key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex() and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def plain(value: Any) -> bool:
    """Within what the reader promises to read (not declines)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return True
    if isinstance(value, int):
        return I64[0] <= value <= I64[1]
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return all(plain(v) for v in value.values())


@given(
    args=st.lists(values, max_size=5),
    kwargs=st.dictionaries(st.text(max_size=8), values, max_size=5),
    style=st.sampled_from(STYLES),
)
def test_the_reader_reads_any_call_as_json_does(
    args: list[Any], kwargs: dict[str, Any], style: dict[str, Any]
) -> None:
    payload = json.dumps({"args": args, "kwargs": kwargs}, **style).encode()
    fast = _core.decode_call(payload)
    slow = json_reads(payload)
    assert slow is not None
    if fast is None:
        assert not plain([args, kwargs]), "declined a call it promises to read"
    else:
        assert same(fast, slow)
    assert same(decode_call(payload), slow), "the decoder's answer is json's either way"


@given(
    args=st.lists(values, max_size=3),
    where=st.integers(0, 10_000),
    change=st.sampled_from(
        ['"', "\\", "{", "}", "[", "]", ",", ":", "-", "0", "1e", ".", " ", "\x01", "é", "\\ud800"]
    ),
    replace=st.booleans(),
)
def test_a_damaged_call_is_read_as_json_reads_it_or_declined(
    args: list[Any], where: int, change: str, replace: bool
) -> None:
    text = json.dumps({"args": args, "kwargs": {}})
    at = where % (len(text) + 1)
    damaged = (text[:at] + change + text[at + int(replace) :]).encode()
    fast = _core.decode_call(damaged)
    if fast is not None:
        slow = json_reads(damaged)
        assert slow is not None, f"read what json refuses: {damaged!r}"
        assert same(fast, slow)


@given(st.binary(max_size=64))
def test_bytes_are_read_as_json_reads_them_or_declined(data: bytes) -> None:
    fast = _core.decode_call(data)
    if fast is not None:
        slow = json_reads(data)
        assert slow is not None
        assert same(fast, slow)


def test_what_json_reads_its_own_way_is_declined_and_left_to_it() -> None:
    cases: dict[bytes, tuple[list[Any], dict[str, Any]] | None] = {
        b'{"args":[123456789012345678901234567890],"kwargs":{}}': (
            [123456789012345678901234567890],
            {},
        ),
        b'{"args":["\\ud800x"],"kwargs":{}}': (["\ud800x"], {}),
        b'{"args":' + b"[" * 150 + b"]" * 150 + b',"kwargs":{}}': None,
    }
    for payload, want in cases.items():
        assert _core.decode_call(payload) is None, payload
        if want is not None:
            assert same(decode_call(payload), want)
    # A key given twice keeps its first place and its last value, as in json.
    twice = b'{"args":[],"kwargs":{"a":1,"b":2,"a":3},"args":[0.5]}'
    fast = _core.decode_call(twice)
    assert fast is not None
    assert same(fast, json_reads(twice))
    assert list(fast[1].items()) == [("a", 3), ("b", 2)]
    assert fast[0] == [0.5]


def test_a_payload_that_is_not_bytes_is_read_or_refused_as_json_would() -> None:
    # The reader takes bytes only: other buffers go to json, and what is no
    # payload at all is an InvalidJobError, never a TypeError from the binding.
    assert decode_call(bytearray(b'{"args":[1],"kwargs":{}}')) == ([1], {})  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError):
        decode_call('{"args":[],"kwargs":{}}')  # type: ignore[arg-type]
