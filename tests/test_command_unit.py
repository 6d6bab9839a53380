"""``uns cmd``'s pure part (no broker, no lake): targets, values checked against the birth's
datatype, and the NCMD/DCMD payloads (tests/test_tck_commands.py sends them for real)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uns.client.command import (
    DEVICE_REBIRTH_METRIC,
    Birth,
    BornMetric,
    Target,
    build_command,
    parse_assignments,
    parse_target,
    parse_value,
    rebirth_command,
)
from uns.errors import CommandError
from uns.sparkplug.codec import decode_payload
from uns.sparkplug.datatypes import SIGNED_WIDTH, UNSIGNED_WIDTH, DataType

BIRTH = Birth(
    {
        "Setpoint": BornMetric("Setpoint", DataType.Int16, 7),
        "Mode": BornMetric("Mode", DataType.String),
        "Run": BornMetric("Run", DataType.Boolean),
    },
    "lake",
)


def test_targets() -> None:
    assert parse_target("G/N") == Target("G", "N")
    assert parse_target("G/N/D") == Target("G", "N", "D")
    for bad in ("G", "G/N/D/X", "G//D", "G/+/D", "STATE/h"):
        with pytest.raises(CommandError):
            parse_target(bad)
    assert parse_assignments(["a=1", "b=x=y"]) == [("a", "1"), ("b", "x=y")]
    with pytest.raises(CommandError, match="is not METRIC=VALUE"):
        parse_assignments(["novalue"])


@given(st.sampled_from(sorted({**SIGNED_WIDTH, **UNSIGNED_WIDTH})), st.integers(-(2**65), 2**65))
def test_integers_fit_their_width_or_are_refused(datatype: DataType, value: int) -> None:
    if datatype in SIGNED_WIDTH:
        half = 1 << (SIGNED_WIDTH[datatype] - 1)
        fits = -half <= value < half
    else:
        fits = 0 <= value < 1 << UNSIGNED_WIDTH[datatype]
    if fits:
        assert parse_value(str(value), datatype, "m") == value
    else:
        with pytest.raises(CommandError, match="out of range"):
            parse_value(str(value), datatype, "m")


def test_other_values() -> None:
    assert parse_value("1.5e3", DataType.Double, "m") == 1500.0
    assert parse_value("on", DataType.Boolean, "m") is True
    assert parse_value(" padded ", DataType.String, "m") == " padded "
    assert parse_value("0xff", DataType.UInt8, "m") == 255
    assert parse_value("00ff", DataType.Bytes, "m") == b"\x00\xff"
    for text, datatype in (("yes please", DataType.Boolean), ("1e39", DataType.Float), ("x", DataType.UUID)):
        with pytest.raises(CommandError, match=f"is not a {datatype.name} value"):
            parse_value(text, datatype, "m")
    with pytest.raises(CommandError, match="DataSet metrics cannot be written"):
        parse_value("[]", DataType.DataSet, "m")


def test_a_write_carries_the_born_name_alias_and_datatype_a_timestamp_and_no_seq() -> None:
    command = build_command(
        Target("G", "N", "D"), BIRTH, [("Setpoint", "-3"), ("Run", "false")], 1_700_000_000_000
    )
    assert command.topic == "spBv1.0/G/DCMD/N/D" and command.verb == "DCMD"
    payload = decode_payload(command.payload)
    assert payload.timestamp == 1_700_000_000_000 and payload.seq is None
    assert [(m.name, m.alias, m.datatype, m.value) for m in payload.metrics] == [
        ("Setpoint", 7, DataType.Int16, -3),
        ("Run", None, DataType.Boolean, False),
    ]
    assert command.metrics == (("Setpoint", "Int16", -3), ("Run", "Boolean", False))
    with pytest.raises(CommandError, match="'Speed' is not a metric of G/N's last birth"):
        build_command(Target("G", "N"), BIRTH, [("Speed", "1")], 0)


def test_rebirth_of_a_node_and_of_a_device() -> None:
    node = rebirth_command(Target("G", "N"), None, 5)
    assert node.topic == "spBv1.0/G/NCMD/N"
    (metric,) = decode_payload(node.payload).metrics
    assert (metric.name, metric.alias, metric.datatype, metric.value) == (
        "Node Control/Rebirth",
        None,
        DataType.Boolean,
        True,
    )
    # a device that declares its own rebirth metric gets a DCMD; any other, its node's rebirth
    own = Birth({DEVICE_REBIRTH_METRIC: BornMetric(DEVICE_REBIRTH_METRIC, DataType.Boolean)}, "engine")
    assert rebirth_command(Target("G", "N", "D"), own, 5).topic == "spBv1.0/G/DCMD/N/D"
    assert rebirth_command(Target("G", "N", "D"), BIRTH, 5).topic == "spBv1.0/G/NCMD/N"
