"""Sparkplug B array datatypes (codes 22..34) packed into ``bytes_value``.

Layout (docs/sparkplug.md section 1, checked against the verified vectors there):

* numeric arrays: elements packed little-endian back to back
  (``<b <h <i <q <B <H <I <Q <f <d``; DateTimeArray is ``<q`` ms since epoch);
* StringArray: each element UTF-8 encoded and terminated by one 0x00 byte;
* BooleanArray: a u32 LE element count, then ceil(N/8) bytes, element 0 in
  bit 7 of the first byte (MSB-first, as Java Tahu and the spec example).

An empty ``bytes_value`` decodes to ``[]`` for every array type: some senders
omit even the BooleanArray count for an empty array, and nothing is lost by
accepting that.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

from uns.errors import SparkplugDecodeError, SparkplugEncodeError
from uns.sparkplug.datatypes import DataType

__all__ = ["ArrayValue", "pack_array", "unpack_array"]

ArrayValue = list[int] | list[float] | list[bool] | list[str]

#: struct format code and element size of each numeric array type
_NUMERIC: dict[DataType, tuple[str, int]] = {
    DataType.Int8Array: ("b", 1),
    DataType.Int16Array: ("h", 2),
    DataType.Int32Array: ("i", 4),
    DataType.Int64Array: ("q", 8),
    DataType.UInt8Array: ("B", 1),
    DataType.UInt16Array: ("H", 2),
    DataType.UInt32Array: ("I", 4),
    DataType.UInt64Array: ("Q", 8),
    DataType.FloatArray: ("f", 4),
    DataType.DoubleArray: ("d", 8),
    DataType.DateTimeArray: ("q", 8),
}
_FLOAT_ARRAYS = frozenset({DataType.FloatArray, DataType.DoubleArray})
_COUNT = struct.Struct("<I")


def _unpack_numeric(code: str, size: int, data: bytes) -> list[int] | list[float]:
    count, rest = divmod(len(data), size)
    if rest:
        raise SparkplugDecodeError(f"array of {len(data)} bytes is not a whole number of {size}-byte items")
    return list(struct.unpack(f"<{count}{code}", data))


def _unpack_booleans(data: bytes) -> list[bool]:
    if not data:
        return []
    if len(data) < 4:
        raise SparkplugDecodeError("BooleanArray shorter than its 4-byte element count")
    (count,) = _COUNT.unpack_from(data)
    if len(data) - 4 != math.ceil(count / 8):
        raise SparkplugDecodeError(f"BooleanArray count {count} does not match {len(data) - 4} data bytes")
    bits = data[4:]
    return [bool(bits[i >> 3] & (0x80 >> (i & 7))) for i in range(count)]


def _unpack_strings(data: bytes) -> list[str]:
    if not data:
        return []
    if data[-1] != 0:
        raise SparkplugDecodeError("StringArray does not end with a NUL terminator")
    try:
        return data[:-1].decode("utf-8").split("\x00")
    except UnicodeDecodeError as exc:
        raise SparkplugDecodeError(f"StringArray element is not UTF-8: {exc.reason}") from exc


def unpack_array(datatype: DataType, data: bytes) -> ArrayValue:
    """Decode ``bytes_value`` of an array metric; :class:`SparkplugDecodeError` if malformed."""
    numeric = _NUMERIC.get(datatype)
    if numeric is not None:
        return _unpack_numeric(numeric[0], numeric[1], data)
    if datatype is DataType.BooleanArray:
        return _unpack_booleans(data)
    if datatype is DataType.StringArray:
        return _unpack_strings(data)
    raise SparkplugDecodeError(f"{datatype.name} is not an array type")


def _pack_booleans(values: Sequence[object]) -> bytes:
    packed = bytearray(math.ceil(len(values) / 8))
    for i, v in enumerate(values):
        if not isinstance(v, bool):
            raise SparkplugEncodeError(f"BooleanArray element {v!r} is not a bool")
        if v:
            packed[i >> 3] |= 0x80 >> (i & 7)
    return _COUNT.pack(len(values)) + bytes(packed)


def _pack_strings(values: Sequence[object]) -> bytes:
    parts = []
    for v in values:
        if not isinstance(v, str):
            raise SparkplugEncodeError(f"StringArray element {v!r} is not a str")
        if "\x00" in v:
            raise SparkplugEncodeError("StringArray element contains NUL, which is the terminator")
        try:
            parts.append(v.encode("utf-8") + b"\x00")
        except UnicodeEncodeError as exc:
            raise SparkplugEncodeError(f"StringArray element is not valid UTF-8: {exc.reason}") from exc
    return b"".join(parts)


def _pack_numeric(datatype: DataType, code: str, values: Sequence[object]) -> bytes:
    floats = datatype in _FLOAT_ARRAYS
    for v in values:
        # bool is an int subclass; an int in a float array is harmless, a bool anywhere is a bug
        ok = isinstance(v, int | float) if floats else isinstance(v, int)
        if not ok or isinstance(v, bool):
            raise SparkplugEncodeError(f"{datatype.name} element {v!r} has the wrong type")
    try:
        return struct.pack(f"<{len(values)}{code}", *values)
    except (struct.error, OverflowError) as exc:
        raise SparkplugEncodeError(f"{datatype.name} element out of range: {exc}") from exc


_PACKERS: dict[DataType, Callable[[Sequence[object]], bytes]] = {
    DataType.BooleanArray: _pack_booleans,
    DataType.StringArray: _pack_strings,
}


def pack_array(datatype: DataType, values: Sequence[object]) -> bytes:
    """Encode a list as ``bytes_value``; :class:`SparkplugEncodeError` if it does not fit."""
    if not isinstance(values, list | tuple):
        raise SparkplugEncodeError(f"{datatype.name} value must be a list, got {type(values).__name__}")
    numeric = _NUMERIC.get(datatype)
    if numeric is not None:
        return _pack_numeric(datatype, numeric[0], values)
    packer = _PACKERS.get(datatype)
    if packer is None:
        raise SparkplugEncodeError(f"{datatype.name} is not an array type")
    return packer(values)
