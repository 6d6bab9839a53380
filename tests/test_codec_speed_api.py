"""The decoder's fast path for plain DATA payloads gives exactly what the full path gives.

``decode_payload`` first tries :func:`uns.sparkplug.plain.decode_plain` (two
lean parses, a few field reads per metric) and falls back to
:func:`uns.sparkplug.codec._decode_full` when it returns None.  Its answers
are only right if, for every input, it either returns the full path's payload
or None, and never accepts what the full path refuses.  These tests hold it to
that over generated payloads, hand-framed wire metrics (odd field orders,
repeated fields, flags set to false, every datatype code, invalid UTF-8) and
mutated bytes, and check that it does take the ordinary DATA shapes (else the
speed is silently gone).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protowire import lfield, varint
from tests.strategies import payloads, same
from uns.errors import SparkplugDecodeError
from uns.sparkplug import (
    DataType,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    convert_wire_value,
    decode_payload,
    encode_payload,
)
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.codec import _decode_full
from uns.sparkplug.limits import DEFAULT_LIMITS
from uns.sparkplug.plain import decode_plain as _decode_plain
from uns.sparkplug.steps import run_steps

CHECK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_700_000_000_000


def wire(*metrics: pb.Payload.Metric) -> bytes:
    return pb.Payload(timestamp=T0, metrics=list(metrics)).SerializeToString()


def full_or_error(data: bytes) -> Payload | SparkplugDecodeError:
    try:
        return run_steps(_decode_full(data, lenient=False, limits=DEFAULT_LIMITS))[0]
    except SparkplugDecodeError as exc:
        return exc


def check_agrees(data: bytes) -> Payload | None:
    """The fast path's contract on ``data``; returns what it gave."""
    plain = _decode_plain(data)
    if plain is not None:
        reference = full_or_error(data)
        assert not isinstance(reference, SparkplugDecodeError), (
            f"fast path accepted what full refuses: {reference}"
        )
        assert same(plain, reference)  # (== would fail on NaN values)
        assert repr(plain) == repr(reference)
    return plain


# ---------------------------------------------------------------- wire-level DATA metrics


u64 = st.integers(min_value=0, max_value=2**64 - 1)
#: integers either side of every width's limits (where the decoder stops skipping the converter)
boundary_ints = st.sampled_from(
    sorted({0, 1} | {2**w + d for w in (7, 8, 15, 16, 31, 32, 63, 64) for d in (-1, 0)} - {2**64})
)
scalar_values = st.one_of(
    st.tuples(st.just("int_value"), st.integers(0, 2**32 - 1) | boundary_ints.filter(lambda v: v < 2**32)),
    st.tuples(st.just("long_value"), u64 | boundary_ints),
    st.tuples(st.just("float_value"), st.floats(width=32)),
    st.tuples(st.just("double_value"), st.floats()),
    st.tuples(st.just("boolean_value"), st.booleans()),
    st.tuples(st.just("string_value"), st.text(max_size=8)),
)


D = DataType
#: datatypes a sender might state for a value in each field (and some it should not)
FITTING = {
    "int_value": [D.Int8, D.Int16, D.Int32, D.UInt8, D.UInt16, D.UInt32, D.Int64, D.UInt64, D.DateTime],
    "long_value": [D.Int8, D.Int32, D.Int64, D.UInt32, D.UInt64, D.DateTime],
    "float_value": [D.Float, D.Double],
    "double_value": [D.Double, D.Float],
    "boolean_value": [D.Boolean],
    "string_value": [D.String, D.Text, D.UUID],
}


@st.composite
def wire_metrics(draw: st.DrawFn) -> pb.Payload.Metric:
    """A metric as a DATA sender might write it, now and then with something unusual."""
    m = pb.Payload.Metric()
    if draw(st.booleans()):
        m.name = draw(st.sampled_from(["", "a", "Line2/Temp", "ü"]))
    if draw(st.booleans()):
        m.alias = draw(u64 | boundary_ints)
    if draw(st.booleans()):
        m.timestamp = draw(u64)
    kind: str | None = None
    if draw(st.integers(0, 5)):
        kind, value = draw(scalar_values)
        setattr(m, kind, value)
    stated = draw(st.integers(0, 5))
    if stated == 1:
        m.datatype = draw(st.integers(0, 40) | st.sampled_from([2**32 - 1]))  # anything
    elif stated >= 2:
        m.datatype = draw(st.sampled_from(FITTING[kind] if kind else list(DataType)))
    for flag in ("is_historical", "is_transient", "is_null"):
        if draw(st.integers(0, 6)) == 0:
            setattr(m, flag, draw(st.booleans()))  # false too: present on the wire
    unusual = draw(st.integers(0, 30))
    if unusual == 0:
        m.bytes_value = b"\x01\x02"
    elif unusual == 1:
        m.properties.keys.append("engUnit")
        m.properties.values.add(type=DataType.String, string_value="degC")
    elif unusual == 2:
        m.metadata.content_type = "text/plain"
    elif unusual == 3:
        m.dataset_value.num_of_columns = 0
    elif unusual == 4:
        m.template_value.version = "1"
    return m


@st.composite
def wire_payloads(draw: st.DrawFn) -> bytes:
    """Payload bytes, some with a metric split in two (fields repeated: protobuf merges them)."""
    parts = []
    if draw(st.booleans()):
        parts.append(pb.Payload(timestamp=draw(u64)).SerializeToString())
    if draw(st.booleans()):
        parts.append(pb.Payload(seq=draw(st.integers(0, 255))).SerializeToString())
    for _ in range(draw(st.integers(0, 5))):
        body = draw(wire_metrics()).SerializeToString()
        if draw(st.integers(0, 6)) == 0:
            body += draw(wire_metrics()).SerializeToString()
        parts.append(lfield(2, body))
    extra = draw(st.integers(0, 20))
    if extra == 0:
        parts.append(pb.Payload(uuid="u").SerializeToString())
    elif extra == 1:
        parts.append(pb.Payload(body=b"b").SerializeToString())
    order = draw(st.permutations(range(len(parts))))
    return b"".join(parts[i] for i in order)


@CHECK
@given(wire_payloads())
def test_wire_payloads_agree(data: bytes) -> None:
    check_agrees(data)


@CHECK
@given(payloads())
def test_generated_payloads_agree(p: Payload) -> None:
    data = encode_payload(p)
    check_agrees(data)
    assert same(decode_payload(data), p)


@CHECK
@given(wire_payloads(), st.data())
def test_mutated_payloads_agree(data: bytes, draw: st.DataObject) -> None:
    if not data:
        return
    at = draw.draw(st.integers(0, len(data) - 1))
    mutated = bytearray(data)
    mutated[at] = draw.draw(st.integers(0, 255))
    check_agrees(bytes(mutated))
    check_agrees(data[:at])


@pytest.mark.parametrize(
    "data",
    [
        lfield(2, b"\x0a\x01\xff"),  # name not UTF-8
        lfield(2, b"\x7a\x02\xc3\x28"),  # string value not UTF-8
        lfield(2, b"\x20\x63"),  # datatype 99
        lfield(2, b"\x20\x14"),  # PropertySet datatype, no value
        lfield(2, b"\x20\x14\x50\x01"),  # PropertySet datatype with a value
        lfield(2, b"\x20\x0b\x50\x01"),  # Boolean from an int
        lfield(2, b"\x20\x07\x58" + varint(2**32)),  # UInt32 too large
        lfield(2, b"\x20\x09\x69" + b"\x00" * 7 + b"\x7f"),  # Float too large for 32 bits
        lfield(2, b"\x20\x16\x50\x01"),  # Int8Array from an int
        b"\x12\x06\x0a\x03abc",  # metric cut short
        b"\xff",
    ],
)
def test_refused_by_full_path_falls_back(data: bytes) -> None:
    assert _decode_plain(data) is None
    with pytest.raises(SparkplugDecodeError):
        decode_payload(data)


# ---------------------------------------------------------------- the fast path is taken


def ddata(**fields: Any) -> Payload:
    values: list[Any] = [21.5, 1013, True, 0.0, 0, False, "", "RUNNING", 2**40, float("inf")]
    return Payload(
        timestamp=T0,
        seq=17,
        metrics=[
            Metric(timestamp=T0 + i, value=None if fields.get("is_null") else v, **fields)
            for i, v in enumerate(values)
        ],
    )


@pytest.mark.parametrize(
    "payload",
    [
        Payload(),
        Payload(timestamp=0, seq=0),
        ddata(alias=5),
        ddata(alias=0),
        ddata(name="Line2/Temp"),
        ddata(name=""),
        ddata(alias=5, is_historical=True),
        ddata(alias=5, is_null=True),
        Payload(
            timestamp=T0,
            metrics=[
                Metric(alias=1, datatype=DataType.Int8, value=-1),
                Metric(alias=2, datatype=DataType.Int64, value=2**63 - 1),
                Metric(alias=3, datatype=DataType.Int64, value=-(2**63)),
                Metric(alias=4, datatype=DataType.UInt32, value=2**32 - 1),
                Metric(alias=5, datatype=DataType.UInt64, value=2**64 - 1),
                Metric(alias=6, datatype=DataType.Float, value=0.5),
                Metric(alias=7, datatype=DataType.Double, value=0.0),
                Metric(alias=8, datatype=DataType.Boolean, value=False),
                Metric(alias=9, datatype=DataType.UUID, value="u"),
                Metric(alias=10, datatype=DataType.DateTime, value=T0),
                Metric(alias=11, datatype=DataType.String),
                Metric(alias=12, value=1.5),
            ],
        ),
    ],
    ids=str,
)
def test_plain_data_takes_the_fast_path(payload: Payload) -> None:
    data = encode_payload(payload)
    plain = check_agrees(data)
    assert plain is not None
    assert same(plain, payload)


@pytest.mark.parametrize(
    "metric",
    [
        Metric(alias=1, properties=PropertySet({"k": PropertyValue(DataType.Int32, 1)})),
        Metric(alias=1, datatype=DataType.Bytes, value=b"x"),
        Metric(alias=1, datatype=DataType.Int32Array, value=[1, 2]),
    ],
)
def test_other_payloads_take_the_full_path(metric: Metric) -> None:
    data = encode_payload(Payload(timestamp=T0, metrics=[metric]))
    assert check_agrees(data) is None
    assert decode_payload(data) == Payload(timestamp=T0, metrics=[metric])


def test_fast_path_metrics_are_ordinary_metrics() -> None:
    """Built without ``__init__``, they must still be plain, complete, mutable Metrics."""
    decoded = decode_payload(encode_payload(ddata(alias=3))).metrics[0]
    built = Metric(alias=3, timestamp=T0, value=21.5)
    assert type(decoded) is Metric
    assert decoded == built
    assert repr(decoded) == repr(built)
    assert dataclasses.asdict(decoded) == dataclasses.asdict(built)
    assert dataclasses.replace(decoded, value=1.0) == Metric(alias=3, timestamp=T0, value=1.0)
    decoded.value = 2.0
    assert decoded.value == 2.0
    assert decoded.value_as(DataType.Double) == 2.0


# ---------------------------------------------------------------- values the converters are skipped for

BOUNDARY_FIELDS = [
    (dt, field, raw)
    for dt in (*FITTING["long_value"], D.Int16, D.UInt8, D.UInt16, D.Boolean, D.Double, D.String)
    for field, raw in [
        *(("int_value", v) for v in (0, 1, 127, 128, 255, 256, 2**15, 2**16, 2**31 - 1, 2**31, 2**32 - 1)),
        *(("long_value", v) for v in (2**32, 2**63 - 1, 2**63, 2**64 - 1)),
        ("double_value", 1.5),
        ("boolean_value", True),
        ("string_value", "x"),
    ]
]


def decoded_or_refused(data: bytes, pick: Any) -> object:
    """``pick`` of the decoded payload, with its type (True is not 1 here), or the refusal."""
    try:
        value = pick(decode_payload(data))
    except SparkplugDecodeError:
        return SparkplugDecodeError
    return type(value), value


@pytest.mark.parametrize(("dt", "field", "raw"), BOUNDARY_FIELDS)
def test_skipped_converters_give_the_converters_answer(dt: DataType, field: str, raw: object) -> None:
    """Values decode as ``convert_wire_value`` types them, on each path that may skip it."""
    try:
        typed = convert_wire_value(raw, dt)
        expected: object = type(typed), typed
    except SparkplugDecodeError:
        expected = SparkplugDecodeError
    plain = pb.Payload.Metric(alias=1, datatype=dt, **{field: raw})
    assert _decode_plain(wire(plain)) is not None or expected is SparkplugDecodeError
    assert decoded_or_refused(wire(plain), lambda p: p.metrics[0].value) == expected
    # with properties the metric takes the full path; the property's own value too
    full = pb.Payload.Metric(alias=1, datatype=dt, properties=pb.Payload.PropertySet(), **{field: raw})
    assert _decode_plain(wire(full)) is None
    assert decoded_or_refused(wire(full), lambda p: p.metrics[0].value) == expected
    props = pb.Payload.PropertySet(keys=["k"], values=[pb.Payload.PropertyValue(type=dt, **{field: raw})])
    in_property = pb.Payload.Metric(alias=1, properties=props)
    got = decoded_or_refused(wire(in_property), lambda p: p.metrics[0].properties.items["k"].value)
    assert got == expected


@pytest.mark.parametrize("dt", [D.String, D.Int32, None])
def test_property_string_not_utf8_is_refused(dt: DataType | None) -> None:
    string_value = lfield(8, b"\xc3")  # a lone lead byte
    value = string_value if dt is None else varint(1 << 3) + varint(dt) + string_value
    data = lfield(2, b"\x10\x01" + lfield(9, lfield(1, b"k") + lfield(2, value)))  # alias 1, properties
    with pytest.raises(SparkplugDecodeError, match="not valid UTF-8"):
        decode_payload(data)
