"""Untrusted bytes: decoding returns a Payload or raises SparkplugDecodeError, nothing else.

Inputs: random bytes, mutations of valid payloads (bit flips, truncation,
overwrites, insertions), randomly framed protobuf with Sparkplug field numbers
and arbitrary wire types, and hand-built attacks (oversized lengths, nesting
bombs, huge array counts).  Whatever decodes must also re-encode to the same
payload, so the engine can republish anything it accepted.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protowire import lfield, varint, vfield
from tests.strategies import payloads, same
from uns.errors import SparkplugDecodeError, SparkplugLimitError
from uns.sparkplug import DataType, Payload, decode_payload, decode_payload_lenient, encode_payload
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.codec import MAX_NESTING
from uns.sparkplug.limits import MessageLimits

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_decodes_or_refuses(data: bytes) -> None:
    """The contract every input must meet."""
    strict: Payload | None = None
    with contextlib.suppress(SparkplugDecodeError):
        strict = decode_payload(data)
    try:
        lenient, rejected = decode_payload_lenient(data)
    except SparkplugDecodeError:
        assert strict is None  # lenient refuses only what strict refuses
        return
    wire_metrics = len(pb.Payload.FromString(data).metrics)
    assert len(lenient.metrics) + len(rejected) == wire_metrics
    assert [i for i, _ in rejected] == sorted({i for i, _ in rejected})
    if strict is None:
        assert rejected, "strict refused a payload in which lenient found nothing wrong"
    else:
        assert not rejected
        assert same(strict, lenient)
    # anything accepted can be put back on the wire unchanged
    assert same(decode_payload(encode_payload(lenient)), lenient)


# ---------------------------------------------------------------- random and mutated bytes


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    check_decodes_or_refuses(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(encode_payload(draw(payloads(max_metrics=4))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_valid_payloads(data: bytes) -> None:
    check_decodes_or_refuses(data)


# ---------------------------------------------------------------- randomly framed protobuf

field_numbers = st.integers(1, 19) | st.sampled_from([2, 4, 9, 10, 11, 16, 17, 18])
varint_values = (
    st.integers(0, 40) | st.sampled_from([255, 2**32 - 1, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)
)
scalar_fields = st.one_of(
    st.builds(vfield, field_numbers, varint_values),
    st.builds(lambda n, b: varint(n << 3 | 5) + b, field_numbers, st.binary(min_size=4, max_size=4)),
    st.builds(lambda n, b: varint(n << 3 | 1) + b, field_numbers, st.binary(min_size=8, max_size=8)),
    st.builds(lfield, field_numbers, st.binary(max_size=12) | st.sampled_from([b"\xff", b"a\x00", b"\x00"])),
)
messages = st.recursive(
    st.lists(scalar_fields, max_size=5).map(b"".join),
    lambda inner: st.lists(scalar_fields | st.builds(lfield, field_numbers, inner), max_size=5).map(b"".join),
    max_leaves=25,
)
framed_payloads = st.lists(st.builds(lfield, st.just(2), messages) | scalar_fields, max_size=6).map(b"".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(framed_payloads)
def test_randomly_framed_protobuf(data: bytes) -> None:
    check_decodes_or_refuses(data)


# ---------------------------------------------------------------- targeted attacks


def metric_bytes(**fields: Any) -> bytes:
    return pb.Payload.Metric(**fields).SerializeToString()


@pytest.mark.parametrize(
    "data",
    [
        lfield(2, b"")[:1] + varint(2**40) + b"x",  # length far beyond the input
        varint(2 << 3 | 2) + b"\xff" * 11,  # a varint that never ends
        varint(2 << 3 | 3),  # start-group with no end
        varint(2 << 3 | 7) + b"\x00",  # wire type 7 does not exist
        varint(0) + b"\x00",  # field number 0
        lfield(2, varint(16 << 3 | 2) + varint(5)),  # bytes_value claims 5 bytes, has none
    ],
)
def test_broken_framing_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(SparkplugDecodeError, match="not a Sparkplug B protobuf"):
        decode_payload(data)
    check_decodes_or_refuses_or_raises(data)


def check_decodes_or_refuses_or_raises(data: bytes) -> None:
    with pytest.raises(SparkplugDecodeError):
        decode_payload_lenient(data)


@pytest.mark.parametrize(
    ("datatype", "field"),
    [
        (DataType.Int32, lfield(10, b"abc")),  # int_value sent length-delimited: unknown field, no value
        (DataType.String, vfield(15, 7)),  # string_value sent as a varint
    ],
)
def test_wrong_wire_type_leaves_no_value_rather_than_garbage(datatype: DataType, field: bytes) -> None:
    data = lfield(2, vfield(4, datatype) + field)
    assert decode_payload(data).metrics[0].value is None


def template_bomb(depth: int) -> bytes:
    metric = lfield(1, b"leaf") + vfield(10, 1)
    for _ in range(depth):
        metric = vfield(4, DataType.Template) + lfield(18, lfield(2, metric))
    return lfield(2, metric)


def property_bomb(depth: int) -> bytes:
    ps = lfield(1, b"k") + lfield(2, vfield(1, DataType.Int32) + vfield(3, 1))
    for _ in range(depth - 1):
        ps = lfield(1, b"k") + lfield(2, vfield(1, DataType.PropertySet) + lfield(9, ps))
    return lfield(2, lfield(1, b"m") + lfield(9, ps))


@pytest.mark.parametrize("bomb", [template_bomb, property_bomb])
def test_nesting_is_capped_and_refuses_the_whole_message(bomb: Any) -> None:
    decode_payload(bomb(MAX_NESTING))  # the deepest accepted
    expected = (
        f"over limit: {MAX_NESTING + 1} levels of .* nesting, more than sparkplug.max_nesting = {MAX_NESTING}"
    )
    with pytest.raises(SparkplugLimitError, match=expected):
        decode_payload(bomb(MAX_NESTING + 1))
    with pytest.raises(SparkplugLimitError, match=expected):  # not one metric: the message
        decode_payload_lenient(bomb(MAX_NESTING + 1))
    lower = MessageLimits(max_nesting=3)
    decode_payload(bomb(3), lower)
    with pytest.raises(SparkplugLimitError, match="4 levels"):
        decode_payload_lenient(bomb(4), lower)
    with pytest.raises(SparkplugDecodeError):  # protobuf's own depth limit, mapped
        decode_payload(bomb(5000))


def test_huge_counts_and_sizes_cost_time_and_memory_in_proportion_to_the_input() -> None:
    huge_count = (2**32 - 1).to_bytes(4, "little") + b"\xff"
    big_array = b"\x01" * 1_000_000
    many_metrics = lfield(2, b"") * 100_000
    start = time.perf_counter()
    with pytest.raises(SparkplugDecodeError, match="count 4294967295"):
        decode_payload(metric_payload(DataType.BooleanArray, huge_count))
    assert len(decode_payload(metric_payload(DataType.Int8Array, big_array)).metrics[0].value) == 1_000_000  # type: ignore[arg-type]
    assert len(decode_payload(many_metrics).metrics) == 100_000
    assert time.perf_counter() - start < 10  # generous: proves linear work, not a hang


def metric_payload(datatype: DataType, data: bytes) -> bytes:
    return lfield(2, vfield(4, datatype) + lfield(16, data))


@pytest.mark.parametrize(
    ("datatype", "data", "reason"),
    [
        (DataType.Int64Array, b"\x00" * 12, "whole number"),
        (DataType.BooleanArray, b"\x09\x00\x00\x00\xff", "count 9"),
        (DataType.StringArray, b"abc", "NUL"),
        (DataType.StringArray, b"\xc3\x00", "UTF-8"),
    ],
)
def test_bad_array_costs_only_its_metric(datatype: DataType, data: bytes, reason: str) -> None:
    good = lfield(2, lfield(1, b"ok") + vfield(4, DataType.Boolean) + vfield(14, 1))
    payload, rejected = decode_payload_lenient(good + metric_payload(datatype, data))
    assert [m.value for m in payload.metrics] == [True]
    assert rejected[0][0] == 1
    assert reason in rejected[0][1]
