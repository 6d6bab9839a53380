"""Typed, protobuf-free view of a Sparkplug B payload.

These dataclasses are what :func:`uns.sparkplug.decode_payload` returns and
:func:`uns.sparkplug.encode_payload` takes.  Values are natural Python values:

==========================================  =====================================
datatype                                    ``Metric.value``
==========================================  =====================================
Int8..Int64, UInt8..UInt64                  ``int`` (signed types sign-corrected)
Float, Double                               ``float`` (NaN and infinities kept)
Boolean                                     ``bool``
String, Text, UUID                          ``str``
DateTime                                    ``int`` ms since epoch UTC (see ``Metric.as_datetime``)
Bytes, File                                 ``bytes`` (File details in ``metadata``)
DataSet                                     :class:`DataSet`
Template                                    :class:`Template`
Int8Array..UInt64Array, DateTimeArray       ``list[int]``
FloatArray, DoubleArray                     ``list[float]``
BooleanArray                                ``list[bool]``
StringArray                                 ``list[str]``
(``is_null`` set, or no value on the wire)  ``None``
==========================================  =====================================

When a metric arrives without ``datatype`` (usual in NDATA/DDATA), ``datatype``
is ``None`` and ``value`` holds the raw wire value (an unmasked ``int``, a
``float``, ``bool``, ``str``, ``bytes``, DataSet or Template).  The caller, who
knows the datatype from the BIRTH, asks for the typed value with
:meth:`Metric.value_as`.

The second half of this module holds the wire-value rules the decoder and the
encoder share: which Python value each datatype holds, and how a raw wire value
becomes it, one converter per datatype in three tables (metric values, property
values, and the basic types allowed in DataSet cells and Template parameters).
Each converter checks the Python type before it uses a value and raises
:class:`SparkplugDecodeError` for one that cannot be its datatype.  (They live
here because :meth:`Metric.value_as` uses them and they check for the classes
above.)
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias, Union

from uns.errors import SparkplugDecodeError
from uns.sparkplug.arrays import unpack_array
from uns.sparkplug.datatypes import ARRAY_TYPES, SIGNED_WIDTH, UNSIGNED_WIDTH, DataType

__all__ = [
    "BASIC_CONVERTERS",
    "BASIC_TYPES",
    "FLOAT32",
    "MAX_NESTING",
    "METRIC_CONVERTERS",
    "PROPERTY_CONVERTERS",
    "PROPERTY_ONLY_TYPES",
    "Converter",
    "DataSet",
    "DataSetScalar",
    "MetaData",
    "Metric",
    "MetricValue",
    "Parameter",
    "Payload",
    "PropertySet",
    "PropertyValue",
    "Template",
    "convert_wire_value",
]

#: a scalar that fits a DataSet cell, a Template parameter or a property
DataSetScalar: TypeAlias = int | float | bool | str | None

MetricValue: TypeAlias = Union[
    int,
    float,
    bool,
    str,
    bytes,
    "DataSet",
    "Template",
    list[int],
    list[float],
    list[bool],
    list[str],
    None,
]


@dataclass(slots=True)
class MetaData:
    """Metric metadata (mostly for File and multi-part Bytes metrics)."""

    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


@dataclass(slots=True)
class PropertyValue:
    """One property: a typed scalar, a nested PropertySet or a PropertySetList."""

    type: DataType | None = None
    value: DataSetScalar | PropertySet | list[PropertySet] = None
    is_null: bool = False


@dataclass(slots=True)
class PropertySet:
    """Ordered key -> PropertyValue mapping (``keys``/``values`` on the wire)."""

    items: dict[str, PropertyValue] = field(default_factory=dict)

    def get(self, key: str) -> PropertyValue | None:
        return self.items.get(key)


@dataclass(slots=True)
class DataSet:
    """A table: column names, their (basic) datatypes, and rows of scalars."""

    columns: list[str] = field(default_factory=list)
    types: list[DataType] = field(default_factory=list)
    rows: list[list[DataSetScalar]] = field(default_factory=list)
    num_of_columns: int | None = None


@dataclass(slots=True)
class Parameter:
    """A Template parameter (name, basic datatype, value)."""

    name: str | None = None
    type: DataType | None = None
    value: DataSetScalar = None


@dataclass(slots=True)
class Template:
    """A Template definition (``is_definition``) or instance (``template_ref``)."""

    version: str | None = None
    metrics: list[Metric] = field(default_factory=list)
    parameters: list[Parameter] = field(default_factory=list)
    template_ref: str | None = None
    is_definition: bool | None = None


@dataclass(slots=True)
class Metric:
    """One metric of a payload.  See the module docstring for ``value`` types."""

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: DataType | None = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    metadata: MetaData | None = None
    properties: PropertySet | None = None
    value: MetricValue = None

    def value_as(self, datatype: DataType) -> MetricValue:
        """The value typed as ``datatype`` (the BIRTH's datatype for DATA metrics).

        Raises :class:`uns.errors.SparkplugDecodeError` when the wire value
        cannot be that datatype.
        """
        if self.is_null or self.value is None:
            return None
        if self.datatype is not None:
            if self.datatype == datatype:
                return self.value
            raise_mismatch(self.datatype, datatype)
        return convert_wire_value(self.value, datatype)

    def as_datetime(self) -> _dt.datetime | None:
        """A DateTime value as an aware UTC ``datetime`` (None when null)."""
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            return None
        return _dt.datetime.fromtimestamp(self.value / 1000, tz=_dt.UTC)


def raise_mismatch(have: DataType, want: DataType) -> None:
    raise SparkplugDecodeError(f"metric carries datatype {have.name}, asked for {want.name}")


@dataclass(slots=True)
class Payload:
    """A Sparkplug B payload: publish timestamp, seq, metrics, optional uuid/body."""

    timestamp: int | None = None
    metrics: list[Metric] = field(default_factory=list)
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


# ---------------------------------------------------------------- wire-value rules
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
