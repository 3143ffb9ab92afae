"""The one JSON encoder for handler arguments (Rust, from Python objects)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor import _core
from conveyor.errors import InvalidJobError
from conveyor.payload import decode_call, encode_call

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with float types kept apart from ints and -0.0 from 0.0."""
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and math.copysign(1, a) == math.copysign(1, b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(
    st.lists(json_values, max_size=5), st.dictionaries(st.text(max_size=8), json_values, max_size=4)
)
def test_arguments_read_back_as_they_were(args: list[Any], kwargs: dict[str, Any]) -> None:
    data = encode_call(args, kwargs, 1 << 24)
    back_args, back_kwargs = decode_call(data)
    assert same(back_args, args)
    assert same(back_kwargs, kwargs)
    # Any JSON reader agrees: the standard library's does.
    assert same(json.loads(data), {"args": args, "kwargs": kwargs})


def test_tuples_become_lists_and_text_stays_utf8() -> None:
    assert (
        encode_call((1, ("a", "é\n")), {}, 100) == '{"args":[1,["a","é\\n"]],"kwargs":{}}'.encode()
    )


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((float("nan"),), "not a JSON number"),
        ((float("inf"),), "not a JSON number"),
        (({1: 2},), "keys must be strings"),
        (({"a"},), "set is not a JSON type"),
        ((b"bytes",), "bytes is not a JSON type"),
        (("\ud800",), "not valid Unicode"),
    ],
)
def test_what_json_cannot_say_exactly_is_refused(args: tuple[Any, ...], reason: str) -> None:
    with pytest.raises(InvalidJobError, match=reason):
        encode_call(args, {}, 1000)


def test_cycles_and_size_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidJobError, match="deeper than"):
        encode_call((loop,), {}, 1000)
    with pytest.raises(InvalidJobError, match="over the limit of 20"):
        encode_call(("x" * 20,), {}, 20)
    with pytest.raises(InvalidJobError, match="args must be a list or tuple"):
        _core.encode_call("abc", {})  # type: ignore[arg-type]


def test_decode_refuses_what_is_not_a_call() -> None:
    for bad in (b"[]", b"{}", b'{"args": {}, "kwargs": {}}', b"\xff"):
        with pytest.raises(InvalidJobError):
            decode_call(bad)
