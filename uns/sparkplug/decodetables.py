"""The decoder's lookup tables and object builders, shared by its two paths.

:mod:`uns.sparkplug.plain` (ordinary DATA payloads) and :mod:`uns.sparkplug.codec`
(everything else) index these by wire datatype code: a list index is cheaper
than an enum-keyed dict on a path that runs per metric.  The builders make
:class:`Metric`, :class:`PropertyValue`, :class:`PropertySet` and :class:`Payload`
with ``object.__new__`` and slot stores (see the codec's module docstring); the
asserts below hold the dataclasses' field lists to what they set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from google.protobuf.message import DecodeError

from uns.errors import SparkplugDecodeError
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.datatypes import SIGNED_WIDTH, UNSIGNED_WIDTH, DataType
from uns.sparkplug.payload import (
    METRIC_CONVERTERS,
    PROPERTY_CONVERTERS,
    PROPERTY_ONLY_TYPES,
    Converter,
    Metric,
    MetricValue,
    Payload,
    PropertySet,
    PropertyValue,
)

__all__ = [
    "DATATYPE_BY_CODE",
    "EXACT",
    "INT_BELOW",
    "MAX_CODE",
    "METRIC_CONVERTER",
    "PARSE_ERRORS",
    "PROPERTY_CONVERTER",
    "PROPERTY_ONLY_CODES",
    "STATED_TYPE",
    "USUAL_FIELD",
    "WIRE_KINDS",
    "by_code",
    "has_field",
    "new_object",
    "typed_value",
    "which_oneof",
]

#: datatype by wire code; 0 (Unknown) means "not stated", like an absent field,
#: so reading the field without HasField gives the right answer either way
STATED_TYPE: list[DataType | None] = [None, *(DataType(code) for code in range(1, len(DataType)))]
MAX_CODE = len(STATED_TYPE) - 1
DATATYPE_BY_CODE: dict[int, DataType] = {d.value: d for d in DataType}


def by_code(table: dict[DataType, Converter]) -> list[Converter | None]:
    """A converter table indexed by wire code (a list index is cheaper than an enum-keyed dict)."""
    return [None if dt is None else table.get(dt) for dt in STATED_TYPE]


METRIC_CONVERTER: list[Converter | None] = by_code(METRIC_CONVERTERS)
PROPERTY_CONVERTER: list[Converter | None] = by_code(PROPERTY_CONVERTERS)


def unchanged_tables() -> tuple[list[type | None], list[int]]:
    """Per wire code: the Python type of the wire values the converter returns
    unchanged, and for integer types the bound below which they are unchanged.

    Wire integers are unsigned (uint32/uint64 fields), so one below half the
    range of a signed type, or within an unsigned one, is its own typed value.
    Skipping the converter call for those is most of the conversion cost.
    """
    exact: list[type | None] = [None] * len(STATED_TYPE)
    below = [0] * len(STATED_TYPE)
    for dt, kind in (
        (DataType.Double, float),
        (DataType.Boolean, bool),
        (DataType.String, str),
        (DataType.Text, str),
        (DataType.UUID, str),
    ):
        exact[dt] = kind
    for dt, width in SIGNED_WIDTH.items():
        exact[dt], below[dt] = int, 1 << (width - 1)
    for dt, width in UNSIGNED_WIDTH.items():
        exact[dt], below[dt] = int, 1 << width
    exact[DataType.DateTime], below[DataType.DateTime] = int, 1 << 63
    return exact, below


EXACT, INT_BELOW = unchanged_tables()


def typed_value(code: int, value: object, converters: list[Converter | None], what: str) -> MetricValue:
    """``value`` (not None) as stated datatype ``code`` (not 0): the converter's
    answer, without calling it when the value is already that."""
    exact = EXACT[code]
    if type(value) is exact and (exact is not int or value < INT_BELOW[code]):  # type: ignore[operator]
        return value  # type: ignore[return-value]  # what the converter would return
    convert = converters[code]
    if convert is None:
        raise SparkplugDecodeError(f"{DataType(code).name} is not a {what} datatype")
    return convert(value)


def wire_kinds() -> dict[DataType, str]:
    """Per scalar datatype, the protobuf ``value`` field a sender usually fills
    for it (this codec's encoder does)."""
    kinds = {
        dt: "int_value" if width <= 32 else "long_value"
        for dt, width in (*SIGNED_WIDTH.items(), *UNSIGNED_WIDTH.items())
    }
    kinds[DataType.DateTime] = "long_value"
    kinds[DataType.Float] = "float_value"
    kinds[DataType.Double] = "double_value"
    kinds[DataType.Boolean] = "boolean_value"
    for dt in (DataType.String, DataType.Text, DataType.UUID):
        kinds[dt] = "string_value"
    return kinds


#: datatype -> the protobuf ``value`` field senders use for it (scalars only): the
#: fast DATA decoder reads that field first instead of asking which one is set
WIRE_KINDS = wire_kinds()


def usual_fields() -> list[str]:
    """:data:`WIRE_KINDS` indexed by wire code (``double_value`` for the others).
    Read first, it saves the WhichOneof when it holds a truthy value: the oneof
    holds one field at most, so that is the one."""
    usual = ["double_value"] * len(STATED_TYPE)
    for dt, field in WIRE_KINDS.items():
        usual[dt] = field
    return usual


USUAL_FIELD = usual_fields()
PROPERTY_ONLY_CODES = frozenset(dt.value for dt in PROPERTY_ONLY_TYPES)


# ---------------------------------------------------------------- building objects

new_object = object.__new__
#: upb's message methods, called unbound (``has_field(m, "alias")``): ``m.HasField``
#: first looks the name up as a field of ``m``, then binds a method; this skips both
has_field: Callable[[Any, str], bool] = pb.Payload.HasField
which_oneof: Callable[[Any, str], str | None] = pb.Payload.WhichOneof
# the decoder makes these with new_object and sets every slot itself: that gives the same
# object as the constructor only while they have exactly these fields and no __post_init__
assert [f.name for f in fields(Metric)] == [
    "name", "alias", "timestamp", "datatype", "is_historical",
    "is_transient", "is_null", "metadata", "properties", "value",
]  # fmt: skip
assert [f.name for f in fields(PropertyValue)] == ["type", "value", "is_null"]
assert [f.name for f in fields(PropertySet)] == ["items"]
assert [f.name for f in fields(Payload)] == ["timestamp", "metrics", "seq", "uuid", "body"]
assert not any(hasattr(cls, "__post_init__") for cls in (Metric, PropertyValue, PropertySet, Payload))

#: what a protobuf parse may raise on bad input (upb: DecodeError; the rest for
#: non-bytes input and deep nesting)
PARSE_ERRORS = (DecodeError, RecursionError, TypeError, ValueError)
