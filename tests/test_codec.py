"""Sparkplug B payload codec: wire forms, typed values, round trips, per-metric errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import METRIC_TYPES, metric_values, metrics, payloads, same
from uns import sparkplug as sp
from uns.errors import SparkplugDecodeError, SparkplugEncodeError
from uns.sparkplug import DataType, convert_wire_value, decode_payload, decode_payload_lenient, encode_payload
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.payload import DataSet, Metric, Payload, PropertySet, PropertyValue

D = DataType
ROUND_TRIP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def wire(*metrics: pb.Payload.Metric, **fields: Any) -> bytes:
    return pb.Payload(metrics=list(metrics), **fields).SerializeToString()


def one(metric: pb.Payload.Metric) -> Metric:
    return decode_payload(wire(metric)).metrics[0]


# ---------------------------------------------------------------- integers


@pytest.mark.parametrize(
    ("datatype", "field", "raw", "expected"),
    [
        (D.Int8, "int_value", 255, -1),  # Python Tahu: masked to the width
        (D.Int8, "int_value", 4294967295, -1),  # Java Tahu: sign-extended to 32 bits
        (D.Int8, "long_value", 2**64 - 1, -1),  # sign-extended to 64 bits
        (D.Int8, "int_value", 4294967291, -5),
        (D.Int8, "int_value", 127, 127),
        (D.Int8, "int_value", 128, -128),
        (D.Int16, "int_value", 65533, -3),
        (D.Int16, "int_value", 2**32 - 3, -3),
        (D.Int32, "int_value", 2**32 - 1, -1),
        (D.Int32, "long_value", 2**64 - 2**31, -(2**31)),
        (D.Int64, "long_value", 2**64 - 1, -1),
        (D.Int64, "long_value", 2**63 - 1, 2**63 - 1),
        (D.UInt8, "int_value", 255, 255),
        (D.UInt16, "int_value", 65535, 65535),
        (D.UInt32, "int_value", 2**32 - 1, 2**32 - 1),
        (D.UInt32, "long_value", 2**32 - 1, 2**32 - 1),  # Ignition / older Tahu
        (D.UInt64, "long_value", 2**64 - 1, 2**64 - 1),
        (D.DateTime, "long_value", 1656107875000, 1656107875000),
        (D.Int64, "int_value", 7, 7),  # bdSeq sent in int_value
    ],
)
def test_integer_wire_forms_decode_to_natural_values(
    datatype: DataType, field: str, raw: int, expected: int
) -> None:
    msg = pb.Payload.Metric(name="m", datatype=datatype)
    setattr(msg, field, raw)
    metric = one(msg)
    assert metric.datatype is datatype
    assert metric.value == expected
    assert type(metric.value) is int


@pytest.mark.parametrize(
    ("datatype", "raw"),
    [(D.UInt8, 256), (D.UInt16, 65536), (D.UInt32, 2**32)],
)
def test_unsigned_value_wider_than_its_type_is_rejected(datatype: DataType, raw: int) -> None:
    with pytest.raises(SparkplugDecodeError, match="out of range"):
        one(pb.Payload.Metric(name="m", datatype=datatype, long_value=raw))


@pytest.mark.parametrize(
    ("datatype", "value", "field", "wire_value"),
    [
        (D.Int8, -1, "int_value", 255),
        (D.Int16, -3, "int_value", 65533),
        (D.Int32, -(2**31), "int_value", 2**31),
        (D.Int64, -1, "long_value", 2**64 - 1),
        (D.UInt32, 2**32 - 1, "int_value", 2**32 - 1),
        (D.UInt64, 2**64 - 1, "long_value", 2**64 - 1),
        (D.DateTime, 1656107875000, "long_value", 1656107875000),
        (D.DateTime, -1, "long_value", 2**64 - 1),
    ],
)
def test_integers_encode_masked_into_the_canonical_field(
    datatype: DataType, value: int, field: str, wire_value: int
) -> None:
    data = encode_payload(Payload(metrics=[Metric("m", datatype=datatype, value=value)]))
    msg = pb.Payload.FromString(data)
    assert msg.metrics[0].WhichOneof("value") == field
    assert getattr(msg.metrics[0], field) == wire_value


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (D.Int8, 128),
        (D.Int8, -129),
        (D.UInt8, -1),
        (D.UInt32, 2**32),
        (D.UInt64, 2**64),
        (D.Int32, True),
        (D.Int32, 1.0),
        (D.Float, 1e300),
        (D.Float, "1"),
        (D.Boolean, 1),
        (D.String, b"x"),
        (D.Bytes, "x"),
        (D.Int8Array, [1, 1000]),
        (D.BooleanArray, [1]),
        (D.StringArray, ["a\x00b"]),
        (D.DataSet, "not a dataset"),
        (D.Template, 1),
        (D.Unknown, 1),
        (D.PropertySet, 1),
        (None, [1]),
        (None, -1),
        (None, 2**64),
    ],
)
def test_value_that_does_not_fit_raises_encode_error(datatype: DataType | None, value: Any) -> None:
    with pytest.raises(SparkplugEncodeError):
        encode_payload(Payload(metrics=[Metric("m", datatype=datatype, value=value)]))


@pytest.mark.parametrize(
    "payload",
    [
        Payload(seq=-1),
        Payload(timestamp=2**64),
        Payload(metrics=[Metric(alias=-1)]),
        Payload(metrics=[Metric(name=1)]),  # type: ignore[arg-type]
        Payload(uuid="\ud800"),
        Payload(metrics=[Metric(datatype=D.DataSet, value=DataSet(["a"], [], []))]),
        Payload(metrics=[Metric(datatype=D.DataSet, value=DataSet(["a"], [D.Int8], [[1, 2]]))]),
        Payload(metrics=[Metric(datatype=D.DataSet, value=DataSet(["a"], [D.Bytes], []))]),
        Payload(metrics=[Metric(datatype=D.DataSet, value=DataSet(["a"], [D.Int8], [], num_of_columns=2))]),
        Payload(metrics=[Metric(properties=PropertySet({"k": PropertyValue(D.PropertySet, 1)}))]),
    ],
)
def test_malformed_payload_objects_raise_encode_error(payload: Payload) -> None:
    with pytest.raises(SparkplugEncodeError):
        encode_payload(payload)


# ---------------------------------------------------------------- other scalar types


def test_float_and_double_keep_nan_and_infinities() -> None:
    msgs = [
        pb.Payload.Metric(name="f", datatype=D.Float, float_value=math.inf),
        pb.Payload.Metric(name="g", datatype=D.Float, float_value=math.nan),
        pb.Payload.Metric(name="d", datatype=D.Double, double_value=-math.inf),
        pb.Payload.Metric(name="e", datatype=D.Double, double_value=math.nan),
    ]
    values = [m.value for m in decode_payload(wire(*msgs)).metrics]
    assert values[0] == math.inf
    assert math.isnan(values[1])  # type: ignore[arg-type]
    assert values[2] == -math.inf
    assert math.isnan(values[3])  # type: ignore[arg-type]


def test_float_encodes_to_float_value_and_double_to_double_value() -> None:
    p = Payload(metrics=[Metric("f", datatype=D.Float, value=1.5), Metric("d", datatype=D.Double, value=0.1)])
    msg = pb.Payload.FromString(encode_payload(p))
    assert [m.WhichOneof("value") for m in msg.metrics] == ["float_value", "double_value"]
    assert decode_payload(encode_payload(p)) == p


def test_strings_booleans_bytes_and_datetime() -> None:
    p = decode_payload(
        wire(
            pb.Payload.Metric(name="s", datatype=D.String, string_value="héllo"),
            pb.Payload.Metric(name="t", datatype=D.Text, string_value="long text"),
            pb.Payload.Metric(name="u", datatype=D.UUID, string_value="b1d1a2c4-0000-4000-8000-000000000000"),
            pb.Payload.Metric(name="b", datatype=D.Boolean, boolean_value=True),
            pb.Payload.Metric(name="y", datatype=D.Bytes, bytes_value=b"\x00\xff"),
            pb.Payload.Metric(name="dt", datatype=D.DateTime, long_value=1656107875000),
        )
    )
    assert [m.value for m in p.metrics] == [
        "héllo",
        "long text",
        "b1d1a2c4-0000-4000-8000-000000000000",
        True,
        b"\x00\xff",
        1656107875000,
    ]
    when = p.metrics[5].as_datetime()
    assert when is not None
    assert when.isoformat() == "2022-06-24T21:57:55+00:00"


def test_file_keeps_bytes_and_metadata() -> None:
    md = pb.Payload.MetaData(file_name="batch.pdf", file_type="pdf", size=3, md5="abc", is_multi_part=False)
    metric = one(pb.Payload.Metric(name="f", datatype=D.File, bytes_value=b"%PD", metadata=md))
    assert metric.value == b"%PD"
    assert metric.metadata == sp.MetaData(
        is_multi_part=False, size=3, file_name="batch.pdf", file_type="pdf", md5="abc"
    )


def test_is_null_gives_none_even_with_a_value_on_the_wire() -> None:
    metric = one(pb.Payload.Metric(name="n", datatype=D.Int32, is_null=True, int_value=5))
    assert metric.is_null
    assert metric.value is None
    assert metric.value_as(D.Int32) is None


def test_envelope_fields_and_metric_flags() -> None:
    data = wire(
        pb.Payload.Metric(name="a", alias=9, timestamp=5, is_historical=True, is_transient=True),
        timestamp=1700000000000,
        seq=255,
        uuid="schema",
        body=b"opaque",
    )
    p = decode_payload(data)
    assert (p.timestamp, p.seq, p.uuid, p.body) == (1700000000000, 255, "schema", b"opaque")
    m = p.metrics[0]
    assert (m.name, m.alias, m.timestamp, m.is_historical, m.is_transient) == ("a", 9, 5, True, True)
    assert m.value is None
    assert decode_payload(b"") == Payload()


# ---------------------------------------------------------------- untyped metrics (DATA)


@pytest.mark.parametrize(
    ("field", "raw", "datatype", "typed"),
    [
        ("int_value", 4294967291, D.Int8, -5),
        ("int_value", 65533, D.Int16, -3),
        ("long_value", 2**64 - 1, D.Int64, -1),
        ("long_value", 70000, D.UInt32, 70000),
        ("float_value", 1.5, D.Float, 1.5),
        ("boolean_value", True, D.Boolean, True),
        ("string_value", "x", D.Text, "x"),
        ("bytes_value", b"\x01\x00\x02\x00", D.Int16Array, [1, 2]),
        ("bytes_value", b"a\x00b\x00", D.StringArray, ["a", "b"]),
    ],
)
def test_untyped_metric_keeps_raw_value_and_types_it_on_request(
    field: str, raw: Any, datatype: DataType, typed: Any
) -> None:
    metric = one(pb.Payload.Metric(alias=3, **{field: raw}))
    assert metric.datatype is None
    assert metric.value == raw
    assert metric.value_as(datatype) == typed
    assert convert_wire_value(raw, datatype) == typed


@pytest.mark.parametrize(
    ("raw", "datatype"),
    [
        (True, D.Int32),  # a bool is not an int on the wire
        (1, D.Boolean),
        (1, D.Float),
        ("1", D.Int8),
        (b"\x01", D.String),
        (b"\x01\x02\x03", D.Int16Array),
        (1, D.Template),
        (1, D.PropertySet),
        (1, D.Unknown),
        (2**40, D.UInt32),
        (-1, D.UInt8),
    ],
)
def test_convert_wire_value_refuses_impossible_values(raw: Any, datatype: DataType) -> None:
    with pytest.raises(SparkplugDecodeError):
        convert_wire_value(raw, datatype)


def test_value_as_on_a_typed_metric_checks_the_datatype() -> None:
    metric = Metric("m", datatype=D.Int16, value=-3)
    assert metric.value_as(D.Int16) == -3
    with pytest.raises(SparkplugDecodeError, match="Int16"):
        metric.value_as(D.UInt16)


@ROUND_TRIP
@given(st.sampled_from(METRIC_TYPES).flatmap(lambda dt: st.tuples(st.just(dt), metric_values(dt))))
def test_typing_later_gives_what_typed_decoding_gives(case: tuple[DataType, Any]) -> None:
    """Oracle for convert_wire_value: strip datatype from the wire, type afterwards."""
    datatype, value = case
    typed = encode_payload(Payload(metrics=[Metric("m", datatype=datatype, value=value)]))
    msg = pb.Payload.FromString(typed)
    msg.metrics[0].ClearField("datatype")
    untyped = decode_payload(msg.SerializeToString()).metrics[0]
    assert untyped.datatype is None
    assert same(untyped.value_as(datatype), decode_payload(typed).metrics[0].value)


def test_datatype_zero_means_not_stated() -> None:
    metric = one(pb.Payload.Metric(name="m", datatype=0, int_value=3))
    assert metric.datatype is None
    assert metric.value == 3


# ---------------------------------------------------------------- DataSet, Template, PropertySet


def test_dataset_cells_are_typed_per_column() -> None:
    DSV = pb.Payload.DataSet.DataSetValue
    ds = pb.Payload.DataSet(
        num_of_columns=3,
        columns=["i8", "u64", "name"],
        types=[D.Int8, D.UInt64, D.String],
        rows=[
            pb.Payload.DataSet.Row(
                elements=[DSV(int_value=4294967295), DSV(long_value=2**64 - 1), DSV(string_value="a")]
            ),
            pb.Payload.DataSet.Row(elements=[DSV(int_value=5), DSV(), DSV(string_value="b")]),
        ],
    )
    metric = one(pb.Payload.Metric(name="ds", datatype=D.DataSet, dataset_value=ds))
    assert metric.value == DataSet(
        columns=["i8", "u64", "name"],
        types=[D.Int8, D.UInt64, D.String],
        rows=[[-1, 2**64 - 1, "a"], [5, None, "b"]],
        num_of_columns=3,
    )


@pytest.mark.parametrize(
    ("dataset", "reason"),
    [
        (pb.Payload.DataSet(num_of_columns=2, columns=["a"], types=[D.Int8]), "num_of_columns"),
        (pb.Payload.DataSet(columns=["a", "b"], types=[D.Int8]), "types"),
        (pb.Payload.DataSet(columns=["a"], types=[D.Bytes]), "basic"),
        (pb.Payload.DataSet(columns=["a"], types=[99]), "basic"),
        (
            pb.Payload.DataSet(columns=["a"], types=[D.Int8], rows=[pb.Payload.DataSet.Row(elements=[])]),
            "row 0 has 0 cells",
        ),
        (
            pb.Payload.DataSet(
                columns=["a"],
                types=[D.Boolean],
                rows=[pb.Payload.DataSet.Row(elements=[pb.Payload.DataSet.DataSetValue(int_value=1)])],
            ),
            "Boolean",
        ),
    ],
)
def test_inconsistent_dataset_is_rejected(dataset: pb.Payload.DataSet, reason: str) -> None:
    with pytest.raises(SparkplugDecodeError, match=reason):
        one(pb.Payload.Metric(name="ds", datatype=D.DataSet, dataset_value=dataset))


def test_template_definition_and_instance_with_nested_members() -> None:
    T = pb.Payload.Template
    definition = T(
        version="1.0",
        is_definition=True,
        parameters=[T.Parameter(name="limit", type=D.Int16, int_value=65533)],
        metrics=[
            pb.Payload.Metric(name="speed", datatype=D.Float, float_value=0.0),
            pb.Payload.Metric(
                name="motor",
                datatype=D.Template,
                template_value=T(template_ref="Motor", is_definition=False),
            ),
        ],
    )
    member = pb.Payload.Metric(name="speed", float_value=3.5)
    instance = T(template_ref="Pump", is_definition=False, metrics=[member])
    p = decode_payload(
        wire(
            pb.Payload.Metric(name="_types_/Pump", datatype=D.Template, template_value=definition),
            pb.Payload.Metric(name="Pump1", datatype=D.Template, template_value=instance),
        )
    )
    pump = p.metrics[0].value
    assert pump == sp.Template(
        version="1.0",
        is_definition=True,
        parameters=[sp.Parameter("limit", D.Int16, -3)],
        metrics=[
            Metric("speed", datatype=D.Float, value=0.0),
            Metric(
                "motor", datatype=D.Template, value=sp.Template(template_ref="Motor", is_definition=False)
            ),
        ],
    )
    member_metric = p.metrics[1].value.metrics[0]  # type: ignore[union-attr]
    assert member_metric.datatype is None  # member datatype absent inside an instance: raw kept
    assert member_metric.value_as(D.Float) == 3.5


def test_nested_property_sets_and_quality() -> None:
    PV = pb.Payload.PropertyValue
    PS = pb.Payload.PropertySet
    PSL = pb.Payload.PropertySetList
    inner = PS(keys=["unit"], values=[PV(type=D.String, string_value="degC")])
    props = PS(
        keys=["Quality", "engineering", "history", "gone"],
        values=[
            PV(type=D.Int32, int_value=192),
            PV(type=D.PropertySet, propertyset_value=inner),
            PV(type=D.PropertySetList, propertysets_value=PSL(propertyset=[inner, inner])),
            PV(type=D.Double, is_null=True),
        ],
    )
    metric = one(pb.Payload.Metric(name="t", datatype=D.Double, double_value=21.5, properties=props))
    assert metric.properties is not None
    unit = PropertySet({"unit": PropertyValue(D.String, "degC")})
    assert metric.properties.items == {
        "Quality": PropertyValue(D.Int32, 192),
        "engineering": PropertyValue(D.PropertySet, unit),
        "history": PropertyValue(D.PropertySetList, [unit, unit]),
        "gone": PropertyValue(D.Double, None, is_null=True),
    }


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        (pb.Payload.PropertySet(keys=["a", "b"], values=[pb.Payload.PropertyValue()]), "2 keys but 1 values"),
        (
            pb.Payload.PropertySet(keys=["a", "a"], values=[pb.Payload.PropertyValue()] * 2),
            "duplicate",
        ),
        (
            pb.Payload.PropertySet(keys=["a"], values=[pb.Payload.PropertyValue(type=D.Bytes, int_value=1)]),
            "not a property datatype",
        ),
        (
            pb.Payload.PropertySet(
                keys=["a"], values=[pb.Payload.PropertyValue(type=D.PropertySet, int_value=1)]
            ),
            "PropertySet cannot hold",
        ),
    ],
)
def test_bad_property_set_is_rejected(props: pb.Payload.PropertySet, reason: str) -> None:
    with pytest.raises(SparkplugDecodeError, match=reason):
        one(pb.Payload.Metric(name="m", properties=props))


# ---------------------------------------------------------------- one bad metric


BAD_METRICS = [
    (pb.Payload.Metric(name="a", datatype=D.Int32, string_value="x"), "Int32 cannot hold a str"),
    (pb.Payload.Metric(name="b", datatype=99, int_value=1), "unknown datatype code 99"),
    (pb.Payload.Metric(name="c", datatype=D.PropertySet), "not a valid metric datatype"),
    (pb.Payload.Metric(name="d", datatype=D.Int32Array, bytes_value=b"\x01\x02\x03"), "whole number"),
    (pb.Payload.Metric(name="e", datatype=D.String, bytes_value=b"x"), "String cannot hold a bytes"),
    (pb.Payload.Metric(name="f", extension_value=pb.Payload.Metric.MetricValueExtension()), "extension"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_METRICS)
def test_strict_decode_names_the_bad_metric(bad: pb.Payload.Metric, reason: str) -> None:
    good = pb.Payload.Metric(name="ok", datatype=D.Int8, int_value=1)
    with pytest.raises(SparkplugDecodeError, match=reason) as info:
        decode_payload(wire(good, bad))
    assert info.value.reason.startswith(f"metric 1 ({bad.name!r})")


@pytest.mark.parametrize(("bad", "reason"), BAD_METRICS)
def test_lenient_decode_keeps_the_good_metrics(bad: pb.Payload.Metric, reason: str) -> None:
    good1 = pb.Payload.Metric(name="ok1", datatype=D.Int8, int_value=255)
    good2 = pb.Payload.Metric(alias=4, long_value=9)
    p, rejected = decode_payload_lenient(wire(good1, bad, good2, seq=3))
    assert [m.value for m in p.metrics] == [-1, 9]
    assert p.seq == 3
    assert len(rejected) == 1
    assert rejected[0][0] == 1
    assert reason in rejected[0][1]


def test_invalid_utf8_string_is_a_decode_error_not_bytes() -> None:
    data = wire(pb.Payload.Metric(name="x", datatype=D.String, string_value="é"))
    broken = data.replace("é".encode(), b"\xff\xfe")
    with pytest.raises(SparkplugDecodeError, match="UTF-8"):
        decode_payload(broken)
    name_broken = wire(pb.Payload.Metric(name="x", int_value=1)).replace(b"\x01x", b"\x01\xff")
    p, rejected = decode_payload_lenient(name_broken)
    assert p.metrics == []
    assert "UTF-8" in rejected[0][1]


def test_garbage_envelope_raises_decode_error() -> None:
    with pytest.raises(SparkplugDecodeError, match="not a Sparkplug B protobuf"):
        decode_payload(b"\xff\xff\xff")
    with pytest.raises(SparkplugDecodeError):
        decode_payload_lenient(b"\x12\x05\x0a")


# ---------------------------------------------------------------- round trips


@ROUND_TRIP
@given(payloads())
def test_round_trip_of_any_payload(p: Payload) -> None:
    assert same(decode_payload(encode_payload(p)), p)


@pytest.mark.parametrize("datatype", METRIC_TYPES, ids=lambda d: d.name)
def test_round_trip_of_every_datatype(datatype: DataType) -> None:
    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(metric_values(datatype), metrics(depth=1))
    def check(value: Any, template_member: Metric) -> None:
        m = Metric("m", alias=1, timestamp=2, datatype=datatype, value=value)
        p = Payload(timestamp=1, metrics=[m, template_member], seq=0)
        assert same(decode_payload(encode_payload(p)), p)

    check()


@ROUND_TRIP
@given(payloads(metric=metrics(typed=False)))
def test_round_trip_of_untyped_metrics(p: Payload) -> None:
    assert same(decode_payload(encode_payload(p)), p)


def test_same_is_nan_aware_and_type_strict() -> None:
    assert same(Metric(value=math.nan), Metric(value=math.nan))
    assert not same(Metric(value=True), Metric(value=1))
    assert not same(Metric(value=1.0), Metric(value=1))
