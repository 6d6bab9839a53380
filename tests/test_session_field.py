"""What real edge nodes put on the wire (docs/sparkplug.md §5, §6), through the real codec.

Each test builds protobuf bytes the way a field library does, decodes them with
:func:`uns.sparkplug.codec.decode_payload` as the engine does, and checks the
session tracker uses everything it can and records the rest.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from uns.config import SparkplugSection
from uns.core.events import Quality, SessionEventKind
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.codec import decode_payload, encode_payload
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.outcome import Outcome
from uns.sparkplug.payload import Metric, Payload
from uns.sparkplug.session import SessionManager
from uns.sparkplug.topic import parse_topic

K = SessionEventKind
T0 = 1_700_000_000_000
GROUP, NODE = "site", "edge7"


class Wire:
    """Feeds raw protobuf bytes through decode_payload into one SessionManager."""

    def __init__(self, mgr: SessionManager | None = None) -> None:
        self.mgr = mgr or SessionManager(SparkplugSection())
        self.now = T0

    def send(self, mtype: str, data: bytes, device: str | None = None, *, at: int | None = None) -> Outcome:
        topic = f"spBv1.0/{GROUP}/{mtype}/{NODE}" + (f"/{device}" if device else "")
        return self.mgr.handle(parse_topic(topic), decode_payload(data), data, self.now if at is None else at)


def pb_payload(seq: int | None, *metrics: pb.Payload.Metric, ts: int | None = T0) -> bytes:
    p = pb.Payload()
    if ts is not None:
        p.timestamp = ts
    if seq is not None:
        p.seq = seq
    p.metrics.extend(metrics)
    return p.SerializeToString()


def pb_metric(
    name: str | None = None, alias: int | None = None, datatype: int | None = None, **value: object
) -> pb.Payload.Metric:
    m = pb.Payload.Metric()
    if name is not None:
        m.name = name
    if alias is not None:
        m.alias = alias
    if datatype is not None:
        m.datatype = datatype
    for field_name, v in value.items():
        setattr(m, field_name, v)
    return m


def nbirth(*metrics: pb.Payload.Metric, bdseq: int = 0, seq: int = 0, bd_type: int = DataType.Int64) -> bytes:
    bd = pb_metric("bdSeq", datatype=bd_type, long_value=bdseq)
    rebirth = pb_metric("Node Control/Rebirth", datatype=DataType.Boolean, boolean_value=False)
    return pb_payload(seq, bd, rebirth, *metrics)


def ndeath(bdseq: int, *, alias: int | None = None, name: str | None = "bdSeq", **extra: object) -> bytes:
    p = pb.Payload()
    p.metrics.append(pb_metric(name, alias, DataType.Int64 if name else None, long_value=bdseq))
    for k, v in extra.items():
        setattr(p, k, v)
    return p.SerializeToString()


def samples(out: Outcome) -> list[tuple[str, object]]:
    return [(s.metric, s.value) for s in out.batch.samples]


def kinds(out: Outcome) -> list[str]:
    return [e.event for e in out.batch.sessions]


@pytest.fixture
def wire() -> Wire:
    return Wire()


def test_negative_integers_masked_to_width_or_sign_extended_to_32_bits(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth(
        pb_metric("i8", 1, DataType.Int8, int_value=0), pb_metric("i16", 2, DataType.Int16, int_value=0),
    ))  # fmt: skip
    out = wire.send("NDATA", pb_payload(
        1,
        pb_metric(alias=1, int_value=251),  # Python Tahu: -5 masked to 8 bits
        pb_metric(alias=1, int_value=4294967291),  # Java Tahu: -5 as 32-bit two's complement
        pb_metric(alias=2, int_value=65533),  # -3 masked to 16 bits
        pb_metric(alias=2, long_value=2**64 - 3),  # sign-extended to 64 bits
    ))  # fmt: skip
    assert samples(out) == [("i8", -5), ("i8", -5), ("i16", -3), ("i16", -3)]


def test_uint32_in_long_value_or_int_value(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth(pb_metric("u32", 1, DataType.UInt32, long_value=4294967295)))
    out = wire.send("NDATA", pb_payload(1, pb_metric(alias=1, int_value=7), pb_metric(alias=1, long_value=8)))
    assert samples(out) == [("u32", 7), ("u32", 8)]
    assert {s.datatype for s in out.batch.samples} == {DataType.UInt32}


def test_data_without_datatype_and_with_it_like_ignition_transmission(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth(pb_metric("Temp", 1, DataType.Float, float_value=1.5)))
    out = wire.send("NDATA", pb_payload(
        1, pb_metric(alias=1, float_value=2.5), pb_metric(alias=1, datatype=DataType.Float, float_value=3.5),
    ))  # fmt: skip
    assert [(s.datatype, s.value) for s in out.batch.samples] == [
        (DataType.Float, 2.5),
        (DataType.Float, 3.5),
    ]


def test_bdseq_never_incremented_still_matches(wire: Wire) -> None:
    for _ in range(3):
        assert kinds(wire.send("NBIRTH", nbirth(bdseq=0)))[0] == K.BIRTH
        assert kinds(wire.send("NDEATH", ndeath(0)))[0] == K.DEATH


def test_next_bdseq_in_a_clean_ndeath_is_recorded_and_the_next_nbirth_settles_it(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth(bdseq=3))
    out = wire.send("NDEATH", ndeath(4))
    assert kinds(out) == [K.DEATH_IGNORED]
    assert "bdSeq=4 does not match the NBIRTH's bdSeq=3" in out.batch.sessions[0].detail
    out = wire.send("NBIRTH", nbirth(bdseq=4))
    assert kinds(out) == [K.BIRTH]
    assert "bdSeq=3 ended without an NDEATH" in out.batch.sessions[0].detail


def test_bdseq_counted_per_connection_so_nbirth_and_ndeath_disagree(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth(bdseq=10))
    assert kinds(wire.send("NDEATH", ndeath(12))) == [K.DEATH_IGNORED]
    assert wire.mgr.nodes()[0].online


@pytest.mark.parametrize("bd_type", [DataType.Int64, DataType.UInt64])
def test_timestamp_as_bdseq_compared_for_equality(wire: Wire, bd_type: DataType) -> None:
    wire.send("NBIRTH", nbirth(bdseq=T0, bd_type=bd_type))
    death = pb.Payload()
    death.metrics.append(pb_metric("bdSeq", long_value=T0))  # no datatype on the NDEATH
    assert kinds(wire.send("NDEATH", death.SerializeToString())) == [K.DEATH, K.STALE]


def test_bdseq_sent_alias_only_and_seq_on_ndeath(wire: Wire) -> None:
    birth = pb.Payload()
    birth.ParseFromString(nbirth(bdseq=2))
    birth.metrics[0].alias = 500
    wire.send("NBIRTH", birth.SerializeToString())
    out = wire.send("NDEATH", ndeath(2, alias=500, name=None, seq=17))
    assert kinds(out) == [K.DEATH, K.STALE]
    assert out.rebirths == []


def test_ndeath_timestamp_is_ignored_in_favour_of_host_receive_time(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth())
    out = wire.send("NDEATH", ndeath(0, timestamp=T0 - 999_999), at=T0 + 5)  # broker-rewritten timestamp
    assert {e.ts for e in out.batch.sessions} == {T0 + 5}


def test_ddeath_without_seq_and_without_timestamp(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth())
    wire.send("DBIRTH", pb_payload(1, pb_metric("Speed", 1, DataType.Double, double_value=1.0)), "pump")
    out = wire.send("DDEATH", pb_payload(None, ts=None), "pump", at=T0 + 9)
    assert [(e.device_id, e.event, e.ts) for e in out.batch.sessions] == [
        ("pump", K.DEATH, T0 + 9),
        ("pump", K.STALE, T0 + 9),
    ]
    assert out.batch.rejected == []


def test_data_names_a_metric_differently_from_the_birth_and_the_alias_decides(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth(pb_metric("DATA/Temp", 1, DataType.Double, double_value=1.0)))
    out = wire.send("NDATA", pb_payload(1, pb_metric("Temp", 1, double_value=2.0)))
    assert samples(out) == [("DATA/Temp", 2.0)]
    assert out.batch.rejected == []


def test_quality_property(wire: Wire) -> None:
    def with_quality(code: int | None) -> pb.Payload.Metric:
        m = pb_metric(alias=1, double_value=1.0)
        if code is not None:
            m.properties.keys.append("Quality")
            m.properties.values.add(type=DataType.Int32, int_value=code)
        return m

    wire.send("NBIRTH", nbirth(pb_metric("Temp", 1, DataType.Double, double_value=1.0)))
    out = wire.send("NDATA", pb_payload(1, *(with_quality(c) for c in (None, 192, 0, 500))))
    assert [s.quality for s in out.batch.samples] == [Quality.GOOD, Quality.GOOD, Quality.BAD, Quality.STALE]


def test_one_bad_metric_does_not_cost_the_payload(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth(
        pb_metric("Temp", 1, DataType.Double, double_value=1.0),
        pb_metric("Count", 2, DataType.UInt16, int_value=1),
    ))  # fmt: skip
    data = pb_payload(
        1,
        pb_metric(alias=1, string_value="n/a"),
        pb_metric(alias=2, int_value=70000),  # too wide for UInt16
        pb_metric(alias=3, int_value=1),  # never born
        pb_metric(alias=1, double_value=4.0),
        pb_metric(alias=2, int_value=5),
    )
    out = wire.send("NDATA", data)
    assert samples(out) == [("Temp", 4.0), ("Count", 5)]
    assert [r.error.split(":")[0] for r in out.batch.rejected] == [
        "metric 'Temp'", "metric 'Count'", "alias 3 is not in any BIRTH of this session",
    ]  # fmt: skip
    assert {r.payload_sha256 for r in out.batch.rejected} == {hashlib.sha256(data).hexdigest()}
    assert len(out.rebirths) == 1  # for the unknown alias only


def test_duplicate_delivery_through_bridged_brokers(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth(pb_metric("Temp", 1, DataType.Double, double_value=1.0)))
    data = pb_payload(1, pb_metric(alias=1, double_value=2.0))
    assert samples(wire.send("NDATA", data)) == [("Temp", 2.0)]
    out = wire.send("NDATA", data)
    assert out.batch.samples == []
    assert out.batch.rejected[0].error.startswith("duplicate")
    assert out.rebirths == []


def test_per_device_connections_dbirth_before_nbirth_then_rebirth_settles(wire: Wire) -> None:
    speed = pb_metric("Speed", 10, DataType.Double, double_value=1.0)
    out = wire.send("DBIRTH", pb_payload(1, speed), "pump")
    assert out.batch.rejected[0].error.startswith("DBIRTH from an edge node with no NBIRTH")
    assert len(out.rebirths) == 1
    wire.send("NBIRTH", nbirth())
    out = wire.send("DBIRTH", pb_payload(1, speed), "pump")
    assert kinds(out) == [K.BIRTH]
    assert samples(wire.send("DDATA", pb_payload(2, pb_metric(alias=10, double_value=2.0)), "pump")) == [
        ("Speed", 2.0)
    ]


def test_per_device_connections_deliver_seq_out_of_order_under_load(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth(seq=250))
    devices = ["d0", "d1", "d2", "d3"]
    sends = [
        (d, pb_payload(251 + i, pb_metric(f"m{i}", 100 + i, DataType.Int32, int_value=i)))
        for i, d in enumerate(devices)
    ]
    seq = 250 + len(devices)
    for n in range(40):
        seq += 1
        d = devices[n % len(devices)]
        sends.append((d, pb_payload(seq & 255, pb_metric(alias=100 + n % len(devices), int_value=n))))
    # each device connection keeps its own order, but the connections interleave arbitrarily
    rng = random.Random(7)
    queues = {d: [s for s in sends if s[0] == d] for d in devices}
    shuffled = []
    while any(queues.values()):
        d = rng.choice([d for d in devices if queues[d]])
        shuffled.append(queues[d].pop(0))
    outs = []
    for d, data in shuffled:
        kind = "DBIRTH" if sends.index((d, data)) < len(devices) else "DDATA"
        outs.append(wire.send(kind, data, d))
    used = [s.value for o in outs for s in o.batch.samples]
    assert used == [0, 1, 2, 3, *range(40)]
    assert all(o.rebirths == [] and o.batch.rejected == [] for o in outs)


def test_new_session_dbirth_overtaking_its_nbirth_is_settled_by_a_rebirth(wire: Wire) -> None:
    wire.send("NBIRTH", nbirth(seq=0))
    for seq in range(1, 60):
        wire.send("NDATA", pb_payload(seq))
    # rebirth: NBIRTH seq 0 and DBIRTH seq 1, but the DBIRTH (another connection) arrives first
    speed = pb_metric("Speed", 10, DataType.Double, double_value=1.0)
    out = wire.send("DBIRTH", pb_payload(1, speed), "pump")
    assert out.batch.rejected[0].error.startswith("seq 1 is outside the reorder window")
    assert len(out.rebirths) == 1
    wire.send("NBIRTH", nbirth(seq=0))
    out = wire.send("DBIRTH", pb_payload(1, speed), "pump")  # the requested rebirth replays it
    assert kinds(out) == [K.BIRTH]


def test_encode_decode_round_trip_of_typed_payload_objects(wire: Wire) -> None:
    birth = Payload(timestamp=T0, seq=0, metrics=[
        Metric(name="bdSeq", datatype=DataType.Int64, value=1),
        Metric(name="Arr", alias=1, datatype=DataType.Int16Array, value=[-1, 2, 300]),
    ])  # fmt: skip
    wire.send("NBIRTH", encode_payload(birth))
    data = encode_payload(Payload(timestamp=T0, seq=1, metrics=[Metric(alias=1, value=b"\xff\xff\x05\x00")]))
    assert samples(wire.send("NDATA", data)) == [("Arr", [-1, 5])]
