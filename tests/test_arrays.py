"""Sparkplug B array packing: the verified vectors of docs/sparkplug.md, round trips, malformed input."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import array_values, same
from uns.errors import SparkplugDecodeError, SparkplugEncodeError
from uns.sparkplug.arrays import pack_array, unpack_array
from uns.sparkplug.datatypes import ARRAY_TYPES, DataType

D = DataType


def float32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


VECTORS = [
    (D.Int32Array, [123456789, 987654321], "15 CD 5B 07 B1 68 DE 3A"),
    (D.FloatArray, [float32(1.23), float32(89.341)], "A4 70 9D 3F 98 AE B2 42"),
    (D.DateTimeArray, [1256102875335, 1656107875000], "C7 D0 90 75 24 01 00 00 B8 BA B8 97 81 01 00 00"),
    # spec example, MSB-first: element 0 in bit 7
    (D.BooleanArray, [bool(int(b)) for b in "001101001101"], "0C 00 00 00 34 D0"),
    (D.StringArray, ["ABC", "hello"], "41 42 43 00 68 65 6C 6C 6F 00"),
    (D.Int8Array, [-23, 123], "E9 7B"),
    (D.Int16Array, [-30000, 30000], "D0 8A 30 75"),
    (D.Int64Array, [-1, 2], "FF FF FF FF FF FF FF FF 02 00 00 00 00 00 00 00"),
    (D.UInt8Array, [23, 250], "17 FA"),
    (D.UInt16Array, [30, 52360], "1E 00 88 CC"),
    (D.UInt32Array, [52, 3293969225], "34 00 00 00 49 FB 55 C4"),
    (D.UInt64Array, [2**64 - 1], "FF FF FF FF FF FF FF FF"),
    (D.DoubleArray, [1.5, -2.0], "00 00 00 00 00 00 F8 3F 00 00 00 00 00 00 00 C0"),
]


@pytest.mark.parametrize(("datatype", "values", "hex_bytes"), VECTORS, ids=lambda v: getattr(v, "name", ""))
def test_known_vectors_pack_and_unpack(datatype: DataType, values: list[Any], hex_bytes: str) -> None:
    data = bytes.fromhex(hex_bytes)
    assert pack_array(datatype, values) == data
    assert unpack_array(datatype, data) == values


def test_float_vector_values_are_the_float32_roundings() -> None:
    floats = unpack_array(D.FloatArray, bytes.fromhex("A4 70 9D 3F 98 AE B2 42"))
    assert [round(f, 3) for f in floats] == [1.23, 89.341]  # type: ignore[arg-type]


def test_boolean_array_of_nine_uses_two_bytes_and_ignores_padding_bits() -> None:
    assert pack_array(D.BooleanArray, [True] * 9) == bytes.fromhex("09 00 00 00 FF 80")
    assert unpack_array(D.BooleanArray, bytes.fromhex("09 00 00 00 FF FF")) == [True] * 9


@pytest.mark.parametrize("datatype", sorted(ARRAY_TYPES), ids=lambda d: d.name)
def test_empty_bytes_is_an_empty_array(datatype: DataType) -> None:
    assert unpack_array(datatype, b"") == []


@pytest.mark.parametrize("datatype", sorted(ARRAY_TYPES), ids=lambda d: d.name)
def test_round_trip(datatype: DataType) -> None:
    @settings(max_examples=40, deadline=None)
    @given(array_values(datatype))
    def check(values: list[Any]) -> None:
        assert same(unpack_array(datatype, pack_array(datatype, values)), values)

    check()


def test_nan_and_infinity_survive_float_arrays() -> None:
    out = unpack_array(D.DoubleArray, pack_array(D.DoubleArray, [math.nan, math.inf, -math.inf]))
    assert math.isnan(out[0])  # type: ignore[arg-type]
    assert out[1:] == [math.inf, -math.inf]


@pytest.mark.parametrize(
    ("datatype", "data", "reason"),
    [
        (D.Int16Array, b"\x01", "whole number of 2-byte"),
        (D.Int32Array, b"\x01\x02\x03\x04\x05", "whole number of 4-byte"),
        (D.DateTimeArray, b"\x00" * 7, "whole number of 8-byte"),
        (D.BooleanArray, b"\x01\x00", "shorter than its 4-byte"),
        (D.BooleanArray, bytes.fromhex("10 00 00 00 FF"), "count 16 does not match 1"),  # count exceeds bytes
        (D.BooleanArray, bytes.fromhex("FF FF FF FF FF"), "does not match"),
        (D.BooleanArray, bytes.fromhex("01 00 00 00 80 00"), "does not match"),  # trailing byte
        (D.StringArray, b"abc", "NUL"),
        (D.StringArray, b"a\x00\xff\x00", "UTF-8"),
        (D.Int8, b"\x01", "not an array type"),
    ],
)
def test_malformed_arrays_raise_decode_error(datatype: DataType, data: bytes, reason: str) -> None:
    with pytest.raises(SparkplugDecodeError, match=reason):
        unpack_array(datatype, data)


@given(st.sampled_from(sorted(ARRAY_TYPES)), st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_any_bytes_unpack_or_raise_decode_error(datatype: DataType, data: bytes) -> None:
    try:
        values = unpack_array(datatype, data)
    except SparkplugDecodeError:
        return
    assert pack_array(datatype, values) == data or datatype in (D.BooleanArray, D.FloatArray, D.DoubleArray)


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        (D.Int8Array, [128]),
        (D.UInt8Array, [-1]),
        (D.UInt64Array, [2**64]),
        (D.Int32Array, [True]),
        (D.Int32Array, [1.0]),
        (D.FloatArray, [1e300]),
        (D.FloatArray, ["x"]),
        (D.BooleanArray, [0]),
        (D.StringArray, [b"x"]),
        (D.StringArray, ["a\x00"]),
        (D.StringArray, ["\ud800"]),
        (D.Int8Array, "not a list"),
        (D.Int8, [1]),
    ],
)
def test_values_that_do_not_fit_raise_encode_error(datatype: DataType, values: Any) -> None:
    with pytest.raises(SparkplugEncodeError):
        pack_array(datatype, values)
