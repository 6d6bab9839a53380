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
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import TypeAlias, Union

from uns.errors import SparkplugDecodeError
from uns.sparkplug.datatypes import DataType

__all__ = [
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
        from uns.sparkplug.codec import convert_wire_value  # noqa: PLC0415 - codec imports this module

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
