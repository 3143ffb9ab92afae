"""Handler arguments beyond plain JSON: dataclasses, pydantic models,
`datetime`/`date`/`time`, `UUID`, `Decimal` and enums.

On the way out (`to_wire`, called by the Rust encoder for any object that is
not a JSON type) each becomes plain JSON that any language can write too: an
ISO 8601 string for times, the canonical string of a UUID, the exact digits
of a decimal (a string, never a float), an enum's value, a dataclass's fields
as an object, `model_dump(mode="json")` of a pydantic model. Sets stay
refused: their order is not theirs to give, so the bytes would differ run to
run (send a sorted list; a `set[T]` parameter reads one back). On the way in
(`Reader`), the handler's annotations say what to build from that JSON; a
value that cannot be read as its annotated type is an `InvalidJobError`: the
job is dead at once, with the reason (no attempt can succeed), as is a job
whose arguments do not fit the handler's signature.

Parameters annotated with plain JSON types (or not at all) are passed as
decoded, at no cost: a handler with nothing to convert has no reader.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import logging
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from conveyor.errors import InvalidJobError

log = logging.getLogger("conveyor.jobs")

#: Reads one decoded JSON value as an annotated type.
Read = Callable[[Any], Any]


def to_wire(value: Any) -> Any:
    """The JSON-able stand-in for `value`, one level deep (the encoder walks
    into what it returns), or `value` itself when there is none."""
    for kinds, wire in _WIRE:
        if isinstance(value, kinds):
            return wire(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):  # a pydantic model
        return dump(mode="json")
    return value


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite decimal")
    return str(value)


_WIRE: list[tuple[type | tuple[type, ...], Callable[[Any], Any]]] = [
    ((dt.datetime, dt.date, dt.time), lambda v: v.isoformat()),
    (uuid.UUID, str),
    (Decimal, _decimal_text),
    (enum.Enum, lambda v: v.value),
]


class Reader:
    """Turns a decoded call's JSON values into `fn`'s annotated types."""

    def __init__(self, name: str, by_position: list[tuple[int, str, Read]], rest: Read | None):
        self._name = name
        self._by_position = by_position
        #: For `**kwargs: T`.
        self._rest = rest
        self._names = {param: read for _, param, read in by_position}

    @classmethod
    def of(cls, name: str, fn: Callable[..., Any]) -> Reader | None:
        """A reader for handler `fn` of job type `name`, or None when no
        parameter needs one."""
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
            params = inspect.signature(fn).parameters.values()
        except Exception as err:
            # Said at registration: otherwise a `UUID` parameter would get
            # a string with no sign of why (a class defined inside a
            # function, under `from __future__ import annotations`).
            log.warning(
                "job type %s: its handler's annotations cannot be resolved (%s): "
                "its arguments arrive as decoded JSON, not as the annotated types",
                name,
                err,
            )
            return None
        by_position: list[tuple[int, str, Read]] = []
        rest = None
        for i, p in enumerate(params):
            read = reader_for(hints[p.name]) if p.name in hints else None
            if read is None:
                continue
            if p.kind is p.VAR_KEYWORD:
                rest = read
            elif p.kind is not p.VAR_POSITIONAL:
                index = -1 if p.kind is p.KEYWORD_ONLY else i
                by_position.append((index, p.name, read))
        if not by_position and rest is None:
            return None
        return cls(name, by_position, rest)

    def __call__(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Converts `args` and `kwargs` in place; InvalidJobError if a value
        cannot be read as its parameter's type."""
        for index, param, read in self._by_position:
            if 0 <= index < len(args):
                args[index] = self._read(param, read, args[index])
            elif param in kwargs:
                kwargs[param] = self._read(param, read, kwargs[param])
        if self._rest is not None:
            for key, value in kwargs.items():
                if key not in self._names:
                    kwargs[key] = self._read(key, self._rest, value)

    def _read(self, param: str, read: Read, value: Any) -> Any:
        try:
            return read(value)
        except Exception as err:
            raise InvalidJobError(
                f"argument {param!r} of {self._name} cannot be read: "
                f"{type(err).__name__}: {str(err)[:300]}"
            ) from None


def reader_for(annotation: Any) -> Read | None:
    """How to read a JSON value as `annotation`, or None when it is used as
    decoded (plain JSON types, `Any`, unions this does not pick between)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return reader_for(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return _optional(annotation)
    if origin is not None:
        return _container(origin, typing.get_args(annotation))
    if not isinstance(annotation, type):
        return None
    return _SCALARS.get(annotation) or _class_reader(annotation)


def _class_reader(cls: type) -> Read | None:
    if issubclass(cls, enum.Enum):
        return lambda v: v if isinstance(v, cls) else cls(v)
    if dataclasses.is_dataclass(cls):
        return _dataclass(cls)
    validate = getattr(cls, "model_validate", None)
    if callable(validate):  # a pydantic model
        return lambda v: v if isinstance(v, cls) else validate(v)
    return None


def _optional(annotation: Any) -> Read | None:
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(members) != 1:
        return None  # a choice between types: nothing says which to build
    read = reader_for(members[0])
    if read is None:
        return None
    return lambda v: None if v is None else read(v)


def _container(origin: Any, params: tuple[Any, ...]) -> Read | None:
    if not params:
        return None
    if origin in (list, Sequence, set, frozenset):
        return _collection(origin, params[0])
    if origin is tuple:
        return _tuple(params)
    if origin in (dict, Mapping) and len(params) == 2:
        value = reader_for(params[1])
        if value is None:
            return None
        return lambda v: {k: value(x) for k, x in _object(v).items()}
    return None


def _collection(origin: Any, item_type: Any) -> Read | None:
    item = reader_for(item_type) or _same
    if origin in (list, Sequence):
        # JSON has lists: only items to convert need a reader.
        return None if item is _same else (lambda v: [item(x) for x in _items(v)])
    return lambda v: origin(item(x) for x in _items(v))  # a set, built from its list


def _tuple(params: tuple[Any, ...]) -> Read:
    if len(params) == 2 and params[1] is Ellipsis:
        one = reader_for(params[0]) or _same
        return lambda v: tuple(one(x) for x in _items(v))
    each = [reader_for(p) or _same for p in params]
    return lambda v: tuple(r(x) for r, x in zip(each, _items(v), strict=True))


def _same(value: Any) -> Any:
    return value


def _items(value: Any) -> list[Any]:
    if not isinstance(value, list | tuple | set | frozenset):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return list(value)


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _dataclass(cls: type) -> Read:
    fields: dict[str, Read] = {}
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:
        hints = {}
    for f in dataclasses.fields(cls):
        field_read = reader_for(hints.get(f.name, f.type))
        if field_read is not None:
            fields[f.name] = field_read

    def build(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        given = _object(value)
        return cls(**{k: fields[k](v) if k in fields else v for k, v in given.items()})

    return build


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    text = _text(value)
    # Python 3.10's fromisoformat does not read a trailing Z; other writers send one.
    return dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(f"expected a decimal string or number, got {type(value).__name__}")
    result = Decimal(str(value))  # a float's shortest repr, not its binary expansion
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite decimal")
    return result


_SCALARS: dict[type, Read] = {
    dt.datetime: _datetime,
    dt.date: lambda v: v if isinstance(v, dt.date) else dt.date.fromisoformat(_text(v)),
    dt.time: lambda v: v if isinstance(v, dt.time) else dt.time.fromisoformat(_text(v)),
    uuid.UUID: lambda v: v if isinstance(v, uuid.UUID) else uuid.UUID(_text(v)),
    Decimal: _decimal,
}
