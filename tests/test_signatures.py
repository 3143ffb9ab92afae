"""The cheap argument check used by `enqueue` must never accept a call the
handler's signature refuses (it may defer to the full check when unsure)."""

from __future__ import annotations

import inspect
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conveyor.jobs import _Shape


def plain(a: int, b: int, c: int = 0) -> None: ...
def star_args(a: int, *rest: int) -> None: ...
def star_kwargs(a: int, b: int = 1, **extra: Any) -> None: ...
def both(a: int, *rest: int, **extra: Any) -> None: ...
def nothing() -> None: ...


HANDLERS = [plain, star_args, star_kwargs, both, nothing]
NAMES = st.sampled_from(["a", "b", "c", "d", "rest", "extra"])


@given(
    handler=st.sampled_from(HANDLERS),
    positional=st.integers(min_value=0, max_value=5),
    keywords=st.sets(NAMES, max_size=4),
)
def test_the_fast_check_only_accepts_calls_that_bind(
    handler: Any, positional: int, keywords: set[str]
) -> None:
    signature = inspect.signature(handler)
    shape = _Shape.of(signature)
    assert shape is not None
    args = tuple(range(positional))
    kwargs = dict.fromkeys(keywords, 0)
    try:
        signature.bind(*args, **kwargs)
        binds = True
    except TypeError:
        binds = False
    accepted = shape.accepts_call(args, kwargs)
    assert not accepted or binds, f"accepted a call that does not bind: {args} {kwargs}"
    # For these plain signatures the fast check is exact, so enqueue rarely
    # pays for the full one.
    assert accepted == binds
