"""Sparkplug B wire-value rules shared by the decoder and the encoder.

Which Python value each datatype holds, and how a raw wire value becomes it:
one converter per datatype, in three tables (metric values, property values,
and the basic types allowed in DataSet cells and Template parameters).  Each
converter checks the Python type before it uses a value and raises
:class:`SparkplugDecodeError` for one that cannot be its datatype.  The
conventions are described in :mod:`uns.sparkplug.codec`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from uns.errors import SparkplugDecodeError
from uns.sparkplug.arrays import unpack_array
from uns.sparkplug.datatypes import ARRAY_TYPES, SIGNED_WIDTH, UNSIGNED_WIDTH, DataType
from uns.sparkplug.payload import DataSet, MetricValue, PropertySet, Template

__all__ = [
    "BASIC_CONVERTERS",
    "BASIC_TYPES",
    "FLOAT32",
    "MAX_NESTING",
    "METRIC_CONVERTERS",
    "PROPERTY_CONVERTERS",
    "PROPERTY_ONLY_TYPES",
    "Converter",
    "convert_wire_value",
]

#: deepest Template-in-Template / PropertySet-in-PropertySet nesting accepted
#: (the encoder refuses what the decoder would refuse)
MAX_NESTING = 32

#: the types a DataSet column or a Template parameter may have
BASIC_TYPES = (
    frozenset(SIGNED_WIDTH)
    | frozenset(UNSIGNED_WIDTH)
    | {
        DataType.Float,
        DataType.Double,
        DataType.Boolean,
        DataType.String,
        DataType.DateTime,
        DataType.Text,
        DataType.UUID,
    }
)
#: the types only a property value may have, never a metric
PROPERTY_ONLY_TYPES = frozenset({DataType.PropertySet, DataType.PropertySetList})

#: raw wire value -> typed value, or :class:`SparkplugDecodeError`
Converter = Callable[[object], MetricValue]


def _mismatch(datatype: DataType, raw: object) -> SparkplugDecodeError:
    return SparkplugDecodeError(f"{datatype.name} cannot hold a {type(raw).__name__} wire value")


def _signed(datatype: DataType, width: int) -> Converter:
    mask = (1 << width) - 1
    sign = 1 << (width - 1)
    full = 1 << width

    def convert(raw: object) -> int:
        if type(raw) is not int:
            raise _mismatch(datatype, raw)
        value = raw & mask
        return value - full if value >= sign else value

    return convert


def _unsigned(datatype: DataType, width: int) -> Converter:
    top = (1 << width) - 1

    def convert(raw: object) -> int:
        if type(raw) is not int:
            raise _mismatch(datatype, raw)
        if not 0 <= raw <= top:
            raise SparkplugDecodeError(f"{raw} is out of range for {datatype.name}")
        return raw

    return convert


def _exact(datatype: DataType, kind: type) -> Converter:
    def convert(raw: object) -> MetricValue:
        if type(raw) is not kind:
            raise _mismatch(datatype, raw)
        return raw  # type: ignore[return-value]  # checked just above

    return convert


#: packs a Float: the encoder uses it to refuse a value too large for 32 bits
FLOAT32 = struct.Struct("<f")


def _float32(raw: object) -> float:
    """A Float value, rounded to 32 bits: a sender may put it in ``double_value``."""
    if type(raw) is not float:
        raise _mismatch(DataType.Float, raw)
    try:
        return float(FLOAT32.unpack(FLOAT32.pack(raw))[0])
    except OverflowError as exc:
        raise SparkplugDecodeError(f"{raw} is out of range for Float") from exc


def _array(datatype: DataType) -> Converter:
    def convert(raw: object) -> MetricValue:
        if type(raw) is not bytes:
            raise _mismatch(datatype, raw)
        return unpack_array(datatype, raw)

    return convert


def _refuse(datatype: DataType) -> Converter:
    def convert(raw: object) -> MetricValue:
        raise SparkplugDecodeError(f"{datatype.name} is not a valid datatype here")

    return convert


def _build_basic() -> dict[DataType, Converter]:
    table: dict[DataType, Converter] = {}
    for dt, width in SIGNED_WIDTH.items():
        table[dt] = _signed(dt, width)
    for dt, width in UNSIGNED_WIDTH.items():
        table[dt] = _unsigned(dt, width)
    table[DataType.DateTime] = _signed(DataType.DateTime, 64)
    table[DataType.Float] = _float32
    table[DataType.Double] = _exact(DataType.Double, float)
    table[DataType.Boolean] = _exact(DataType.Boolean, bool)
    for dt in (DataType.String, DataType.Text, DataType.UUID):
        table[dt] = _exact(dt, str)
    return table


#: datatype -> converter for DataSet cells and Template parameters
BASIC_CONVERTERS: dict[DataType, Converter] = _build_basic()
#: ... for metric values
METRIC_CONVERTERS: dict[DataType, Converter] = {
    **BASIC_CONVERTERS,
    DataType.Bytes: _exact(DataType.Bytes, bytes),
    DataType.File: _exact(DataType.File, bytes),
    DataType.DataSet: _exact(DataType.DataSet, DataSet),
    DataType.Template: _exact(DataType.Template, Template),
    **{dt: _array(dt) for dt in ARRAY_TYPES},
    **{dt: _refuse(dt) for dt in (*PROPERTY_ONLY_TYPES, DataType.Unknown)},
}
#: ... for property values
PROPERTY_CONVERTERS: dict[DataType, Converter] = {
    **BASIC_CONVERTERS,
    DataType.PropertySet: _exact(DataType.PropertySet, PropertySet),
    DataType.PropertySetList: _exact(DataType.PropertySetList, list),
}


def convert_wire_value(raw: object, datatype: DataType) -> MetricValue:
    """Type a raw wire value (a metric decoded without datatype) as ``datatype``.

    ``raw`` is what :attr:`Metric.value` holds for an untyped metric.  Raises
    :class:`SparkplugDecodeError` when the wire value cannot be that datatype.
    """
    if raw is None:
        return None
    convert = METRIC_CONVERTERS.get(datatype)
    if convert is None:
        raise SparkplugDecodeError(f"unknown datatype {datatype!r}")
    return convert(raw)
