"""Sparkplug B 3.0 datatypes: names and codes exactly as in the specification."""

from __future__ import annotations

import enum

__all__ = [
    "ARRAY_TYPES",
    "FLOAT_TYPES",
    "INTEGER_TYPES",
    "SIGNED_WIDTH",
    "STRING_TYPES",
    "UNSIGNED_WIDTH",
    "DataType",
]


class DataType(enum.IntEnum):
    """The Sparkplug B DataType enumeration (codes 0..34)."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


#: signed integer types and their bit width (decoded by masking, then two's complement)
SIGNED_WIDTH: dict[DataType, int] = {
    DataType.Int8: 8,
    DataType.Int16: 16,
    DataType.Int32: 32,
    DataType.Int64: 64,
}
#: unsigned integer types and their bit width
UNSIGNED_WIDTH: dict[DataType, int] = {
    DataType.UInt8: 8,
    DataType.UInt16: 16,
    DataType.UInt32: 32,
    DataType.UInt64: 64,
}
INTEGER_TYPES = frozenset(SIGNED_WIDTH) | frozenset(UNSIGNED_WIDTH)
FLOAT_TYPES = frozenset({DataType.Float, DataType.Double})
STRING_TYPES = frozenset({DataType.String, DataType.Text, DataType.UUID})
ARRAY_TYPES = frozenset(DataType(c) for c in range(22, 35))
