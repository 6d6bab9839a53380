"""What the host keeps of each metric a BIRTH defines (pure; :mod:`uns.sparkplug.lifecycle` defines them).

A born metric is precomputed once, at birth, so each DATA metric costs one
lookup and one converter call: :class:`BornMetric` holds its name, alias,
datatype, unit and the fast converter for its datatype.  The converters skip
:func:`convert_wire_value` when the raw wire value already is the typed value.
The metric's properties are rendered once too: the engineering unit and a
JSON object string for the catalog (:func:`describe_properties`), and the
``Quality`` property of each sample (:func:`property_quality`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uns.core.events import Quality
from uns.core.values import json_value
from uns.sparkplug.datatypes import SIGNED_WIDTH, STRING_TYPES, UNSIGNED_WIDTH, DataType
from uns.sparkplug.decodetables import WIRE_KINDS
from uns.sparkplug.payload import (
    DataSet,
    MetricValue,
    PropertySet,
    PropertyValue,
    Template,
    convert_wire_value,
)

__all__ = [
    "FAST_CONVERTERS",
    "WIRE_KINDS",
    "BornMetric",
    "Converter",
    "describe_properties",
    "property_quality",
]

_GOOD = Quality.GOOD
#: property keys (any case) that carry the engineering unit
_UNIT_KEYS = ("engunit", "engunits", "unit", "units")

#: a DATA metric's raw wire value (``Metric.value`` of a metric decoded without
#: datatype, never null) -> the value typed with the born datatype, or
#: :class:`SparkplugDecodeError`; ``None`` (no value) stays ``None``
Converter = Callable[[object], MetricValue]


# --- value conversion, chosen once per born metric -------------------------------


def _slow_converter(datatype: DataType) -> Converter:
    def convert(raw: object) -> MetricValue:
        return convert_wire_value(raw, datatype)

    return convert


def _type_converter(py_type: type, datatype: DataType) -> Converter:
    # the raw wire value already is the typed value when its Python type matches
    def convert(raw: object) -> MetricValue:
        return raw if type(raw) is py_type else convert_wire_value(raw, datatype)  # type: ignore[return-value]

    return convert


def _int_converter(limit: int, datatype: DataType) -> Converter:
    # masking and sign correction leave a non-negative value below the limit unchanged
    def convert(raw: object) -> MetricValue:
        if type(raw) is int and 0 <= raw < limit:
            return raw
        return convert_wire_value(raw, datatype)

    return convert


def _build_converters() -> dict[DataType, Converter]:
    table = {dt: _slow_converter(dt) for dt in DataType}
    for dt, width in SIGNED_WIDTH.items():
        table[dt] = _int_converter(1 << (width - 1), dt)
    for dt, width in UNSIGNED_WIDTH.items():
        table[dt] = _int_converter(1 << width, dt)
    table[DataType.DateTime] = _int_converter(1 << 63, DataType.DateTime)
    exact: list[tuple[type, tuple[DataType, ...]]] = [
        (float, (DataType.Float, DataType.Double)),
        (bool, (DataType.Boolean,)),
        (str, (DataType.String, DataType.Text, DataType.UUID)),
        (bytes, (DataType.Bytes, DataType.File)),
        (DataSet, (DataType.DataSet,)),
        (Template, (DataType.Template,)),
    ]
    for py_type, dts in exact:
        for dt in dts:
            table[dt] = _type_converter(py_type, dt)
    return table


#: datatype -> the converter every born metric of that datatype uses
FAST_CONVERTERS = _build_converters()

# The wire value of these types needs no conversion: with no stated datatype the
# fast converter returns it as it is; with the same datatype stated the codec's
# converter only checks its Python type (a stated Float is rounded to 32 bits:
# not listed).
_EXACT_CODES: dict[DataType, tuple[int, ...]] = {
    DataType.Float: (0,),
    **{dt: (0, dt.value) for dt in (DataType.Double, DataType.Boolean, *STRING_TYPES)},
}


# --- born metrics and their properties ---------------------------------------------


@dataclass(slots=True)
class BornMetric:
    """A born metric, precomputed at birth so DATA costs one lookup per metric."""

    name: str
    alias: int | None
    datatype: DataType
    unit: str | None
    convert: Converter
    is_sample: bool
    #: the ``value`` field DATA usually carries for this datatype (None: not a scalar)
    wire_kind: str | None = None
    #: stated wire datatype codes (0: none) for which a value read from ``wire_kind``
    #: already is the typed value (both the converter and the codec return it unchanged)
    exact_codes: tuple[int, ...] = ()
    #: what the native decoder reads (uns.sparkplug.native): the datatype code, plus 0x100
    #: when the metric is a sample
    native: int = 0

    @classmethod
    def define(
        cls, name: str, alias: int | None, datatype: DataType, unit: str | None, is_sample: bool
    ) -> BornMetric:
        """The record of a metric a BIRTH defines, with its converters chosen."""
        convert, kind = FAST_CONVERTERS[datatype], WIRE_KINDS.get(datatype)
        native = int(datatype) | (0x100 if is_sample else 0)
        return cls(
            name, alias, datatype, unit, convert, is_sample, kind, _EXACT_CODES.get(datatype, ()), native
        )


def property_quality(props: PropertySet) -> str:
    """A sample's quality from the metric's ``Quality`` property (absent or not an int: good)."""
    prop = props.items.get("Quality")
    if prop is None or type(prop.value) is not int:
        return _GOOD
    return Quality.from_code(prop.value)


def _property_json(prop: PropertyValue) -> Any:
    value = prop.value
    if prop.is_null:
        return None
    if isinstance(value, PropertySet):
        return {k: _property_json(v) for k, v in value.items.items()}
    if isinstance(value, list):
        return [{k: _property_json(v) for k, v in ps.items.items()} for ps in value]
    return json_value(value)


def describe_properties(props: PropertySet | None) -> tuple[str | None, str | None]:
    """(unit, properties as a JSON object string) of a birth metric."""
    if props is None or not props.items:
        return None, None
    unit = None
    for key, prop in props.items.items():
        if key.lower() in _UNIT_KEYS and isinstance(prop.value, str):
            unit = prop.value
            break
    obj = {k: _property_json(v) for k, v in props.items.items()}
    return unit, json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
