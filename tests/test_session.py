"""Unit tests of the Sparkplug host session state machine (docs/sparkplug.md §3): one rule per test."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import pytest

from uns.config import SparkplugSection
from uns.core.events import CatalogEntry, Quality, Rejected, Sample, SessionEvent, SessionEventKind
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.outcome import Outcome
from uns.sparkplug.payload import Metric, Parameter, Payload, PropertySet, PropertyValue, Template
from uns.sparkplug.session import SessionManager
from uns.sparkplug.topic import MessageType, Topic

K = SessionEventKind
T0 = 1_700_000_000_000


def metric(
    name: str | None = None,
    value: object = None,
    *,
    alias: int | None = None,
    dt: DataType | None = None,
    ts: int | None = None,
    props: dict[str, object] | None = None,
    null: bool = False,
    historical: bool = False,
    transient: bool = False,
) -> Metric:
    properties = None
    if props is not None:
        properties = PropertySet({k: PropertyValue(value=v) for k, v in props.items()})  # type: ignore[arg-type]
    return Metric(
        name=name, alias=alias, timestamp=ts, datatype=dt, is_null=null, is_historical=historical,
        is_transient=transient, properties=properties, value=value,  # type: ignore[arg-type]
    )  # fmt: skip


@dataclass
class Msg:
    topic: Topic
    payload: Payload

    @property
    def raw(self) -> bytes:
        # identical payloads give identical bytes, like a redelivered MQTT message
        return repr((str(self.topic), self.payload)).encode()


@dataclass
class Edge:
    """A simulated edge node: builds messages with the right seq and feeds a SessionManager."""

    mgr: SessionManager
    group: str = "plant"
    node: str = "node1"
    seq: int = 0
    bdseq: int = 0
    now: int = T0
    outcomes: list[Outcome] = field(default_factory=list)

    def topic(self, mtype: str, device: str | None = None) -> Topic:
        return Topic(MessageType[mtype], self.group, self.node, device)

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) & 255
        return self.seq

    # --- message builders (seq taken from the counter unless given) ---
    def nbirth_msg(
        self, *metrics: Metric, seq: int = 0, bdseq: int | None = None, ts: int | None = None
    ) -> Msg:
        self.seq = seq & 255
        bd = self.bdseq if bdseq is None else bdseq
        base = [
            metric("bdSeq", bd, dt=DataType.Int64),
            metric("Node Control/Rebirth", False, dt=DataType.Boolean),
        ]
        return Msg(
            self.topic("NBIRTH"), Payload(timestamp=ts or self.now, seq=seq, metrics=[*base, *metrics])
        )

    def msg(self, mtype: str, *metrics: Metric, device: str | None = None, seq: int | None = -1,
            ts: int | None = -1) -> Msg:  # fmt: skip
        s = self.next_seq() if seq == -1 else seq
        t = self.now if ts == -1 else ts
        return Msg(self.topic(mtype, device), Payload(timestamp=t, seq=s, metrics=list(metrics)))

    def ndeath_msg(self, bdseq: int | None = None, *, alias_only: int | None = None) -> Msg:
        bd = self.bdseq if bdseq is None else bdseq
        m = (
            metric(None, bd, alias=alias_only)
            if alias_only is not None
            else metric("bdSeq", bd, dt=DataType.Int64)
        )
        return Msg(self.topic("NDEATH"), Payload(timestamp=None, metrics=[m]))

    # --- delivery ---
    def deliver(self, m: Msg, at: int | None = None) -> Outcome:
        out = self.mgr.handle(m.topic, m.payload, m.raw, self.now if at is None else at)
        self.outcomes.append(out)
        return out

    def nbirth(self, *metrics: Metric, **kw: object) -> Outcome:
        return self.deliver(self.nbirth_msg(*metrics, **kw))  # type: ignore[arg-type]

    def dbirth(self, device: str, *metrics: Metric, **kw: object) -> Outcome:
        return self.deliver(self.msg("DBIRTH", *metrics, device=device, **kw))  # type: ignore[arg-type]

    def ndata(self, *metrics: Metric, **kw: object) -> Outcome:
        return self.deliver(self.msg("NDATA", *metrics, **kw))  # type: ignore[arg-type]

    def ddata(self, device: str, *metrics: Metric, **kw: object) -> Outcome:
        return self.deliver(self.msg("DDATA", *metrics, device=device, **kw))  # type: ignore[arg-type]

    def ddeath(self, device: str, **kw: object) -> Outcome:
        return self.deliver(self.msg("DDEATH", device=device, **kw))  # type: ignore[arg-type]

    def ndeath(self, bdseq: int | None = None, **kw: object) -> Outcome:
        return self.deliver(self.ndeath_msg(bdseq, **kw))  # type: ignore[arg-type]


def events(out: Outcome, kind: str | None = None) -> list[SessionEvent]:
    return [e for e in out.batch.sessions if kind is None or e.event == kind]


def kinds(out: Outcome) -> list[tuple[str | None, str]]:
    return [(e.device_id, e.event) for e in out.batch.sessions]


def values(out: Outcome) -> list[tuple[str, object]]:
    return [(s.metric, s.value) for s in out.batch.samples]


def errors(out: Outcome) -> list[str]:
    return [r.error for r in out.batch.rejected]


TEMP = metric("Temperature", 20.5, alias=1, dt=DataType.Double, props={"engUnit": "degC"})
COUNT = metric("Count", 7, alias=2, dt=DataType.UInt32)


@pytest.fixture
def mgr() -> SessionManager:
    return SessionManager(SparkplugSection())


@pytest.fixture
def edge(mgr: SessionManager) -> Edge:
    return Edge(mgr)


@pytest.fixture
def born(edge: Edge) -> Edge:
    """An edge node with Temperature (alias 1) and Count (alias 2), and device 'pump' (Speed alias 10)."""
    edge.nbirth(TEMP, COUNT)
    edge.dbirth("pump", metric("Speed", 1.0, alias=10, dt=DataType.Float))
    return edge


# --- NBIRTH ----------------------------------------------------------------------------


def test_nbirth_emits_birth_catalog_and_samples(edge: Edge) -> None:
    out = edge.nbirth(TEMP, COUNT, seq=0, bdseq=3)
    assert kinds(out) == [(None, K.BIRTH)]
    assert "bdSeq=3" in out.batch.sessions[0].detail
    assert values(out) == [("Temperature", 20.5), ("Count", 7)]
    sample = out.batch.samples[0]
    assert (sample.group_id, sample.edge_node_id, sample.device_id) == ("plant", "node1", None)
    assert (sample.datatype, sample.seq, sample.bdseq, sample.alias, sample.unit) == (
        DataType.Double, 0, 3, 1, "degC",
    )  # fmt: skip
    assert [c.metric for c in out.batch.catalog] == ["bdSeq", "Node Control/Rebirth", "Temperature", "Count"]
    assert out.rebirths == []
    assert out.batch.rejected == []


def test_nbirth_bdseq_and_node_control_are_catalog_only(edge: Edge) -> None:
    out = edge.nbirth(metric("Node Control/Scan Rate", 1000, dt=DataType.Int64), TEMP)
    assert [s.metric for s in out.batch.samples] == ["Temperature"]
    assert {c.metric for c in out.batch.catalog} >= {
        "bdSeq",
        "Node Control/Rebirth",
        "Node Control/Scan Rate",
    }


def test_node_control_values_in_ndata_are_not_samples(edge: Edge) -> None:
    edge.nbirth(metric("Node Control/Scan Rate", 1000, alias=5, dt=DataType.Int64), TEMP)
    out = edge.ndata(metric(None, 500, alias=5), metric(None, 21.0, alias=1))
    assert values(out) == [("Temperature", 21.0)]
    assert out.batch.rejected == []


def test_catalog_entry_has_unit_properties_birth_ts_and_bdseq(edge: Edge) -> None:
    m = metric("Level", 1.5, alias=4, dt=DataType.Float, props={"engUnits": "L", "Quality": 192, "low": 0.5})
    out = edge.nbirth(m, bdseq=9, ts=T0 - 5)
    entry = next(c for c in out.batch.catalog if c.metric == "Level")
    assert entry == CatalogEntry(
        "plant", "node1", None, "Level", 4, DataType.Float, T0 - 5, 9, "L", entry.properties,
    )  # fmt: skip
    assert json.loads(entry.properties or "") == {"engUnits": "L", "Quality": 192, "low": 0.5}


@pytest.mark.parametrize(
    ("dt", "value"),
    [(DataType.Int64, 5), (DataType.UInt64, 5), (DataType.Int32, 5), (DataType.UInt32, 5), (None, 5)],
)
def test_nbirth_bdseq_any_integer_type(edge: Edge, dt: DataType | None, value: int) -> None:
    birth = edge.nbirth_msg()
    birth.payload.metrics[0] = metric("bdSeq", value, dt=dt)
    edge.deliver(birth)
    out = edge.ndeath(5)
    assert (None, K.DEATH) in kinds(out)
    assert not edge.mgr.nodes()[0].online


def test_nbirth_seq_is_the_base_whatever_its_value(edge: Edge) -> None:
    edge.nbirth(TEMP, seq=200)
    out = edge.ndata(metric(None, 1.0, alias=1))
    assert out.batch.samples[0].seq == 201
    assert out.rebirths == []
    assert edge.mgr.nodes()[0].next_seq == 202


def test_nbirth_rebuilds_aliases_node_wide(edge: Edge) -> None:
    edge.nbirth(TEMP)
    edge.nbirth(metric("Pressure", 1.0, alias=7, dt=DataType.Double))
    out = edge.ndata(metric(None, 2.0, alias=1), metric(None, 3.0, alias=7))
    assert values(out) == [("Pressure", 3.0)]
    assert errors(out) == ["alias 1 is not in any BIRTH of this session"]


def test_nbirth_makes_devices_offline_and_stale_until_dbirth(born: Edge) -> None:
    out = born.nbirth(TEMP, COUNT)
    assert kinds(out) == [("pump", K.STALE), (None, K.BIRTH)]
    out = born.ddata("pump", metric(None, 2.0, alias=10))
    assert out.batch.samples == []
    assert "DDATA for device 'pump' since the NBIRTH" in errors(out)[0]
    assert len(out.rebirths) == 1
    born.now += 10_000
    born.dbirth("pump", metric("Speed", 1.0, alias=10, dt=DataType.Float))
    assert values(born.ddata("pump", metric(None, 2.0, alias=10))) == [("Speed", 2.0)]


def test_nbirth_while_online_with_a_new_bdseq_notes_the_missing_ndeath(edge: Edge) -> None:
    edge.nbirth(bdseq=1)
    out = edge.nbirth(bdseq=1)
    assert "ended without" not in out.batch.sessions[0].detail
    out = edge.nbirth(bdseq=2)
    assert "bdSeq=1 ended without an NDEATH" in out.batch.sessions[0].detail


def test_birth_metric_without_datatype_is_rejected_and_the_rest_used(edge: Edge) -> None:
    birth = edge.nbirth_msg(metric("NoType", 1), TEMP, metric(None, 3, alias=9, dt=DataType.Int32))
    out = edge.deliver(birth)
    assert values(out) == [("Temperature", 20.5)]
    assert errors(out) == [
        "BIRTH metric 'NoType' has no datatype: it cannot be defined",
        "BIRTH metric with alias 9 has no name: it cannot be defined",
    ]
    # each row names the message by its digest; the first holds the payload's head
    assert {r.payload_sha256 for r in out.batch.rejected} == {hashlib.sha256(birth.raw).hexdigest()}
    assert out.batch.rejected[0].payload == birth.raw[:1024]


def test_nbirth_without_bdseq_is_a_protocol_error_and_matches_only_a_bdseq_less_ndeath(edge: Edge) -> None:
    birth = edge.nbirth_msg(TEMP)
    del birth.payload.metrics[0]
    out = edge.deliver(birth)
    assert kinds(out) == [(None, K.BIRTH), (None, K.PROTOCOL_ERROR)]
    assert kinds(edge.ndeath(0))[0] == (None, K.DEATH_IGNORED)
    death = edge.ndeath_msg()
    death.payload.metrics.clear()
    assert kinds(edge.deliver(death))[0] == (None, K.DEATH)


def test_nbirth_without_seq_takes_the_next_seq_as_base(edge: Edge) -> None:
    birth = edge.nbirth_msg(TEMP)
    birth.payload.seq = None
    out = edge.deliver(birth)
    assert events(out, K.PROTOCOL_ERROR)[0].detail.startswith("NBIRTH without seq")
    out = edge.ndata(metric(None, 1.0, alias=1), seq=77)
    assert values(out) == [("Temperature", 1.0)]
    assert out.rebirths == []
    assert values(edge.ndata(metric(None, 2.0, alias=1), seq=78)) == [("Temperature", 2.0)]


def test_seq_above_255_is_reduced_modulo_256_and_recorded_once(edge: Edge) -> None:
    edge.nbirth(TEMP, seq=0)
    out = edge.ndata(metric(None, 1.0, alias=1), seq=257)
    assert out.batch.samples[0].seq == 1
    assert [e.detail for e in events(out, K.PROTOCOL_ERROR)] == ["NDATA seq 257 > 255, used modulo 256"]
    out = edge.ndata(metric(None, 1.0, alias=1), seq=258)
    assert (out.batch.samples[0].seq, events(out, K.PROTOCOL_ERROR)) == (2, [])


# --- DBIRTH ----------------------------------------------------------------------------


def test_dbirth_before_nbirth_is_rejected_with_a_rebirth(edge: Edge) -> None:
    out = edge.dbirth("pump", metric("Speed", 1.0, alias=10, dt=DataType.Float), seq=1)
    assert out.batch.samples == []
    assert out.batch.catalog == []
    assert errors(out) == [
        "DBIRTH from an edge node with no NBIRTH in this session"
        " (host started after it, or the NBIRTH was lost)"
    ]
    assert [r.reason for r in out.rebirths] == [errors(out)[0]]
    assert kinds(out) == [(None, K.REBIRTH_REQUESTED)]


def test_dbirth_continues_seq_and_brings_the_device_online(edge: Edge) -> None:
    edge.nbirth(TEMP, seq=4)
    out = edge.dbirth("pump", metric("Speed", 1.5, alias=10, dt=DataType.Float))
    assert kinds(out) == [("pump", K.BIRTH)]
    assert [(s.device_id, s.metric, s.value, s.seq) for s in out.batch.samples] == [("pump", "Speed", 1.5, 5)]
    assert [(c.device_id, c.metric) for c in out.batch.catalog] == [("pump", "Speed")]
    assert edge.mgr.nodes()[0].devices[0].online


def test_device_aliases_share_the_node_wide_alias_space(born: Edge) -> None:
    out = born.ddata("pump", metric(None, 5.0, alias=1), metric(None, 6.0, alias=10))
    assert values(out) == [("Speed", 6.0)]
    assert errors(out) == ["alias 1 belongs to the node"]
    out = born.ndata(metric(None, 5.0, alias=10))
    assert errors(out) == ["alias 10 belongs to device 'pump'"]


def test_duplicate_alias_across_births_is_unusable_and_requests_rebirth(born: Edge) -> None:
    out = born.dbirth("valve", metric("Open", True, alias=10, dt=DataType.Boolean))
    assert (("valve", K.PROTOCOL_ERROR)) in kinds(out)
    assert len(out.rebirths) == 1
    out = born.ddata("pump", metric(None, 2.0, alias=10))
    assert errors(out) == ["alias 10 is claimed by more than one metric in the births"]
    # the name still resolves
    assert values(born.ddata("valve", metric("Open", False))) == [("Open", False)]


def test_dbirth_again_replaces_the_device_metrics_and_aliases(born: Edge) -> None:
    out = born.dbirth("pump", metric("Flow", 3.0, alias=11, dt=DataType.Double))
    assert out.batch.sessions[0].event == K.BIRTH
    out = born.ddata("pump", metric(None, 2.0, alias=10), metric(None, 4.0, alias=11))
    assert values(out) == [("Flow", 4.0)]
    assert errors(out) == ["alias 10 is not in any BIRTH of this session"]
    # alias 10 is free again for another owner
    out = born.dbirth("valve", metric("Open", True, alias=10, dt=DataType.Boolean))
    assert events(out, K.PROTOCOL_ERROR) == []


# --- NDATA / DDATA ---------------------------------------------------------------------


def test_alias_only_data_is_typed_with_the_birth_datatype(born: Edge) -> None:
    out = born.ndata(metric(None, 21.5, alias=1, ts=T0 + 5), metric(None, 4294967295, alias=2))
    assert [(s.metric, s.datatype, s.value, s.ts) for s in out.batch.samples] == [
        ("Temperature", DataType.Double, 21.5, T0 + 5),
        ("Count", DataType.UInt32, 4294967295, born.now),
    ]


def test_alias_decides_when_data_names_a_metric_differently(born: Edge) -> None:
    out = born.ndata(metric("Temp", 22.0, alias=1), metric("Count", 1.0, alias=1))
    assert values(out) == [("Temperature", 22.0), ("Temperature", 1.0)]


def test_data_by_name_without_alias(born: Edge) -> None:
    out = born.ndata(metric("Count", 9))
    assert [(s.metric, s.alias) for s in out.batch.samples] == [("Count", 2)]


def test_data_datatype_on_the_wire_wins(born: Edge) -> None:
    out = born.ndata(metric(None, 3, alias=2, dt=DataType.Int64))
    assert [(s.datatype, s.value) for s in out.batch.samples] == [(DataType.Int64, 3)]


def test_unknown_alias_is_rejected_the_rest_used_and_a_rebirth_requested(born: Edge) -> None:
    data = born.msg("NDATA", metric(None, 1.0, alias=99), metric(None, 2.0, alias=1), metric("Ghost", 1.0))
    out = born.deliver(data)
    assert values(out) == [("Temperature", 2.0)]
    assert errors(out) == [
        "alias 99 is not in any BIRTH of this session",
        "unborn metric 'Ghost': not in the NBIRTH",
    ]
    digest = hashlib.sha256(data.raw).hexdigest()
    assert {(r.payload_sha256, r.topic) for r in out.batch.rejected} == {
        (digest, "spBv1.0/plant/NDATA/node1")
    }
    assert [r.reason for r in out.rebirths] == ["NDATA with unknown alias 99, unborn metric 'Ghost'"]


def test_value_not_convertible_to_the_birth_datatype_is_rejected_without_rebirth(born: Edge) -> None:
    out = born.ndata(metric(None, "hot", alias=1), metric(None, -1, alias=2), metric(None, 3, alias=2))
    assert values(out) == [("Count", 3)]
    assert [e.split(":")[0] for e in errors(out)] == ["metric 'Temperature'", "metric 'Count'"]
    assert out.rebirths == []


def test_signed_values_are_sign_corrected_through_the_codec(edge: Edge) -> None:
    edge.nbirth(metric("Delta", -1, alias=3, dt=DataType.Int8))
    out = edge.ndata(metric(None, 4294967291, alias=3), metric(None, 251, alias=3), metric(None, 5, alias=3))
    assert [s.value for s in out.batch.samples] == [-5, -5, 5]


def test_null_data_value_is_none(born: Edge) -> None:
    out = born.ndata(metric(None, None, alias=1, null=True))
    assert [(s.value, s.datatype) for s in out.batch.samples] == [(None, DataType.Double)]


def test_metric_may_repeat_in_one_message(born: Edge) -> None:
    out = born.ndata(*(metric(None, float(i), alias=1, ts=T0 + i) for i in range(3)))
    assert [(s.value, s.ts) for s in out.batch.samples] == [(0.0, T0), (1.0, T0 + 1), (2.0, T0 + 2)]


def test_sample_timestamp_quality_and_flags(born: Edge) -> None:
    out = born.ndata(
        metric(None, 1.0, alias=1, ts=T0 - 9, props={"Quality": 0}, historical=True),
        metric(None, 2.0, alias=1, props={"Quality": 500}, transient=True),
        metric(None, 3.0, alias=1, props={"Quality": 192}),
        ts=None,
    )
    assert [(s.ts, s.received_at, s.quality, s.is_historical, s.is_transient) for s in out.batch.samples] == [
        (T0 - 9, born.now, Quality.BAD, True, False),
        (born.now, born.now, Quality.STALE, False, True),
        (born.now, born.now, Quality.GOOD, False, False),
    ]
    assert {(s.bdseq, s.seq) for s in out.batch.samples} == {(0, born.seq)}


def test_ddata_for_a_device_without_dbirth_is_rejected_with_a_rebirth(born: Edge) -> None:
    out = born.ddata("mixer", metric(None, 1.0, alias=10))
    assert errors(out) == ["DDATA for device 'mixer' with no DBIRTH in this session"]
    assert len(out.rebirths) == 1
    # the seq still counted: the next message is in order
    assert values(born.ndata(metric(None, 1.0, alias=1))) == [("Temperature", 1.0)]


def test_data_from_an_unknown_node_is_rejected_even_with_names_and_datatypes(edge: Edge) -> None:
    out = edge.ndata(metric("Temperature", 1.0, dt=DataType.Double), seq=5)
    assert out.batch.samples == []
    assert errors(out)[0].startswith("NDATA from an edge node with no NBIRTH in this session")
    assert out.batch.rejected[0].topic == "spBv1.0/plant/NDATA/node1"
    assert len(out.rebirths) == 1


def test_template_definition_is_catalog_only_and_instances_are_samples(edge: Edge) -> None:
    definition = Template(
        metrics=[metric("rpm", 0, dt=DataType.Int32)], parameters=[Parameter("max", DataType.Int32, 10)],
        is_definition=True,
    )  # fmt: skip
    instance = Template(
        metrics=[metric("rpm", 5, dt=DataType.Int32)], template_ref="Motor", is_definition=False
    )
    out = edge.nbirth(
        metric("Motor", definition, dt=DataType.Template),
        metric("Motor1", instance, alias=3, dt=DataType.Template),
    )
    assert [c.metric for c in out.batch.catalog][-2:] == ["Motor", "Motor1"]
    assert values(out) == [("Motor1", instance)]
    assert edge.mgr.nodes()[0].templates == ("Motor",)
    update = Template(metrics=[metric("rpm", 6, dt=DataType.Int32)], template_ref="Motor")
    out = edge.ndata(metric(None, update, alias=3))
    assert [(s.datatype, s.value) for s in out.batch.samples] == [(DataType.Template, update)]


# --- DDEATH ----------------------------------------------------------------------------


def test_ddeath_makes_the_device_offline_and_stale_at_its_payload_timestamp(born: Edge) -> None:
    out = born.ddeath("pump", ts=T0 - 100)
    assert [(e.device_id, e.event, e.ts) for e in out.batch.sessions] == [
        ("pump", K.DEATH, T0 - 100),
        ("pump", K.STALE, T0 - 100),
    ]
    assert out.batch.samples == []  # no fabricated samples
    assert not born.mgr.nodes()[0].devices[0].online
    out = born.ddata("pump", metric(None, 1.0, alias=10))
    assert errors(out) == ["DDATA for device 'pump' after its DDEATH"]


def test_ddeath_without_seq_or_timestamp_is_accepted(born: Edge) -> None:
    out = born.ddeath("pump", seq=None, ts=None)
    assert [(e.event, e.ts) for e in out.batch.sessions] == [(K.DEATH, born.now), (K.STALE, born.now)]
    assert events(out, K.PROTOCOL_ERROR) == []
    assert values(born.ndata(metric(None, 1.0, alias=1))) == [("Temperature", 1.0)]  # seq untouched


def test_ddeath_is_in_the_seq_stream(born: Edge) -> None:
    born.ddeath("pump")
    out = born.ndata(metric(None, 1.0, alias=1))
    assert out.rebirths == []
    assert out.batch.rejected == []


def test_ddeath_of_an_offline_device_is_recorded_as_ignored(born: Edge) -> None:
    out = born.ddeath("mixer")
    assert [(e.device_id, e.event, e.detail) for e in out.batch.sessions] == [
        ("mixer", K.DEATH_IGNORED, "device offline with no DBIRTH in this session"),
    ]


# --- NDEATH ----------------------------------------------------------------------------


def test_ndeath_with_matching_bdseq_makes_node_and_devices_offline_and_stale_at_receive_time(
    born: Edge,
) -> None:
    out = born.deliver(born.ndeath_msg(), at=T0 + 777)
    assert [(e.device_id, e.event, e.ts) for e in out.batch.sessions] == [
        (None, K.DEATH, T0 + 777),
        ("pump", K.DEATH, T0 + 777),
        ("pump", K.STALE, T0 + 777),
        (None, K.STALE, T0 + 777),
    ]
    node = born.mgr.nodes()[0]
    assert not node.online
    assert not node.devices[0].online


def test_ndeath_with_another_bdseq_is_ignored(born: Edge) -> None:
    out = born.ndeath(born.bdseq + 1)
    assert kinds(out) == [(None, K.DEATH_IGNORED)]
    assert "does not match" in out.batch.sessions[0].detail
    assert born.mgr.nodes()[0].online


def test_repeated_ndeath_is_ignored(born: Edge) -> None:
    born.ndeath()
    out = born.ndeath()
    assert kinds(out) == [(None, K.DEATH_IGNORED)]
    assert out.batch.sessions[0].detail.startswith("repeated NDEATH")


def test_ndeath_bdseq_sent_alias_only_matches_through_the_nbirth_alias(edge: Edge) -> None:
    birth = edge.nbirth_msg(TEMP, bdseq=4)
    birth.payload.metrics[0].alias = 100
    edge.deliver(birth)
    assert kinds(edge.ndeath(4, alias_only=101))[0][1] == K.DEATH_IGNORED
    assert kinds(edge.ndeath(4, alias_only=100))[0][1] == K.DEATH


def test_ndeath_seq_is_ignored(born: Edge) -> None:
    death = born.ndeath_msg()
    death.payload.seq = 200
    out = born.deliver(death)
    assert kinds(out)[0] == (None, K.DEATH)
    assert events(out, K.SEQ_GAP) == []
    assert out.rebirths == []


def test_ndeath_from_an_unknown_node_is_recorded_as_ignored(edge: Edge) -> None:
    out = edge.ndeath(3)
    assert kinds(out) == [(None, K.DEATH_IGNORED)]
    assert edge.mgr.nodes() == ()


def test_old_will_after_a_newer_nbirth_is_ignored(edge: Edge) -> None:
    edge.nbirth(bdseq=1)
    edge.nbirth(bdseq=2)
    out = edge.ndeath(1)
    assert kinds(out) == [(None, K.DEATH_IGNORED)]
    assert edge.mgr.nodes()[0].online


def test_data_after_ndeath_is_rejected_with_a_rebirth(born: Edge) -> None:
    born.ndeath()
    out = born.ndata(metric(None, 1.0, alias=1))
    assert errors(out) == ["NDATA from an edge node that is offline (NDEATH bdSeq=0)"]
    assert len(out.rebirths) == 1


# --- rebirth requests --------------------------------------------------------------------


def test_rebirth_requests_are_rate_limited_per_node_and_suppressed_ones_counted(edge: Edge) -> None:
    first = edge.ndata(metric("x", 1.0))
    assert [(r.group_id, r.edge_node_id) for r in first.rebirths] == [("plant", "node1")]
    for i in range(5):
        assert edge.deliver(edge.msg("NDATA"), at=edge.now + 1000 * i).rebirths == []
    assert edge.mgr.nodes()[0].rebirths_suppressed == 5
    assert edge.mgr.stats()["rebirths_suppressed"] == 5
    assert len(edge.deliver(edge.msg("NDATA"), at=edge.now + 5000).rebirths) == 1


def test_rebirth_rate_limit_is_per_node(mgr: SessionManager) -> None:
    a, b = Edge(mgr, node="a"), Edge(mgr, node="b")
    assert len(a.ndata().rebirths) == 1
    assert len(b.ndata().rebirths) == 1
    assert a.ndata().rebirths == []


def test_rebirth_requests_can_be_disabled() -> None:
    edge = Edge(SessionManager(SparkplugSection(rebirth_requests=False)))
    out = edge.ndata(metric("x", 1.0))
    assert out.rebirths == []
    assert events(out, K.REBIRTH_REQUESTED) == []
    assert len(out.batch.rejected) == 1


def test_undecodable_bytes_are_rejected_with_a_rate_limited_rebirth(born: Edge) -> None:
    out = born.mgr.handle_undecodable(born.topic("NDATA"), b"\xff\x00", "truncated", T0)
    assert out.batch.rejected == [
        Rejected(T0, "spBv1.0/plant/NDATA/node1", b"\xff\x00", "undecodable NDATA: truncated")
    ]
    assert [r.reason for r in out.rebirths] == ["undecodable NDATA"]
    again = born.mgr.handle_undecodable(born.topic("DDATA", "pump"), b"\x01", "bad", T0 + 1)
    assert again.rebirths == []
    assert len(again.batch.rejected) == 1


def test_non_session_message_types_are_rejected(edge: Edge) -> None:
    out = edge.deliver(edge.msg("NCMD"))
    assert errors(out) == ["NCMD is not a session message"]
    assert edge.mgr.nodes() == ()


# --- seq and reordering ----------------------------------------------------------------


def test_gap_buffers_until_filled_then_releases_in_order(born: Edge) -> None:
    m1, m2, m3 = (born.msg("NDATA", metric(None, float(i), alias=1)) for i in (1, 2, 3))
    assert born.deliver(m3, at=T0 + 10).batch.samples == []
    assert born.deliver(m2, at=T0 + 20).batch.samples == []
    assert born.mgr.next_deadline() == T0 + 10 + 2000
    out = born.deliver(m1, at=T0 + 30)
    assert [s.value for s in out.batch.samples] == [1.0, 2.0, 3.0]
    assert [s.received_at for s in out.batch.samples] == [T0 + 30, T0 + 20, T0 + 10]
    assert kinds(out) == [(None, K.REORDER_OK)]
    assert out.batch.sessions[0].detail == "gap filled 20 ms after it opened; 2 buffered messages released"
    assert out.rebirths == []
    assert born.mgr.next_deadline() is None


def test_reorder_timeout_processes_the_buffer_in_order_and_requests_rebirth(born: Edge) -> None:
    born.next_seq()  # seq lost on the way
    m2, m3 = (born.msg("NDATA", metric(None, float(i), alias=1)) for i in (2, 3))
    born.deliver(m3, at=T0)
    born.deliver(m2, at=T0 + 5)
    assert born.mgr.tick(T0 + 1999).batch.sessions == []
    out = born.mgr.tick(T0 + 2000)
    assert [s.value for s in out.batch.samples] == [2.0, 3.0]
    assert kinds(out) == [(None, K.REORDER_TIMEOUT), (None, K.SEQ_GAP), (None, K.REBIRTH_REQUESTED)]
    assert out.batch.sessions[0].detail == f"seq {born.seq - 2} still missing after 2000 ms"
    assert [r.reason for r in out.rebirths] == [f"reorder timeout: seq {born.seq - 2} missing"]
    assert born.mgr.next_deadline() is None


def test_expired_timeout_is_applied_when_the_next_message_arrives_before_tick(born: Edge) -> None:
    born.next_seq()
    late_gap = born.msg("NDATA", metric(None, 2.0, alias=1))
    born.deliver(late_gap, at=T0)
    out = born.deliver(born.msg("NDATA", metric(None, 3.0, alias=1)), at=T0 + 3000)  # no tick in between
    assert [s.value for s in out.batch.samples] == [2.0, 3.0]
    assert [k for _, k in kinds(out)][:2] == [K.REORDER_TIMEOUT, K.SEQ_GAP]
    assert len(out.rebirths) == 1


def test_second_hole_runs_its_own_timer(born: Edge) -> None:
    s = born.seq
    msgs = {i: born.msg("NDATA", metric(None, float(i), alias=1)) for i in range(1, 6)}
    born.deliver(msgs[3], at=T0)  # hole at 1..2
    born.deliver(msgs[5], at=T0 + 1500)  # hole at 4
    born.deliver(msgs[2], at=T0 + 1600)
    out = born.deliver(msgs[1], at=T0 + 1700)  # first hole filled: 1, 2, 3 released
    assert [x.value for x in out.batch.samples] == [1.0, 2.0, 3.0]
    assert born.mgr.next_deadline() == T0 + 1500 + 2000
    out = born.mgr.tick(T0 + 3500)
    assert [x.value for x in out.batch.samples] == [5.0]
    assert events(out, K.SEQ_GAP)[0].detail.startswith(f"seq {(s + 4) & 255} missing")


def test_timeout_zero_gives_the_gap_up_at_once_and_keeps_the_message() -> None:
    edge = Edge(SessionManager(SparkplugSection(reorder_timeout_ms=0)))
    edge.nbirth(TEMP)
    edge.next_seq()
    out = edge.ndata(metric(None, 2.0, alias=1))
    assert values(out) == [("Temperature", 2.0)]
    assert kinds(out) == [(None, K.SEQ_GAP), (None, K.REBIRTH_REQUESTED)]
    assert edge.mgr.next_deadline() is None
    late = edge.deliver(edge.msg("NDATA", metric(None, 1.0, alias=1), seq=1))
    assert late.batch.samples == []
    assert errors(late)[0].startswith("seq 1 is outside the reorder window (expected 3)")


def test_duplicate_seq_is_rejected_as_duplicate_not_as_a_gap(born: Edge) -> None:
    m = born.msg("NDATA", metric(None, 1.0, alias=1))
    born.deliver(m)
    out = born.deliver(m)
    assert errors(out) == [f"duplicate of the message already received with seq {born.seq}"]
    assert out.rebirths == []
    assert out.batch.sessions == []
    assert born.mgr.stats()["duplicates"] == 1


def test_duplicate_of_a_buffered_message_is_rejected(born: Edge) -> None:
    born.next_seq()
    m = born.msg("NDATA", metric(None, 1.0, alias=1))
    born.deliver(m)
    out = born.deliver(m)
    assert errors(out)[0].startswith("duplicate")
    assert born.mgr.nodes()[0].buffered == 1


def test_message_arriving_after_its_gap_was_given_up_is_rejected_with_rebirth(born: Edge) -> None:
    lost = born.msg("NDATA", metric(None, 1.0, alias=1))
    born.deliver(born.msg("NDATA", metric(None, 2.0, alias=1)), at=T0)
    born.mgr.tick(T0 + 2000)
    out = born.deliver(lost, at=T0 + 9000)
    assert out.batch.samples == []
    assert "outside the reorder window" in errors(out)[0]
    assert len(out.rebirths) == 1


def test_full_reorder_buffer_gives_up_and_requests_rebirth() -> None:
    edge = Edge(SessionManager(SparkplugSection(max_reorder_buffer=3)))
    edge.nbirth(TEMP)
    edge.next_seq()
    outs = [edge.ndata(metric(None, float(i), alias=1)) for i in range(4)]
    assert [o.batch.samples for o in outs[:3]] == [[], [], []]
    assert [s.value for s in outs[3].batch.samples] == [0.0, 1.0, 2.0, 3.0]
    assert "reorder buffer full" in events(outs[3], K.SEQ_GAP)[0].detail
    assert len(outs[3].rebirths) == 1


def test_buffer_never_spans_the_half_ring(born: Edge) -> None:
    born.next_seq()
    outs = [born.ndata(metric(None, float(i), alias=1)) for i in range(100)]
    released = [i for i, o in enumerate(outs) if o.batch.samples]
    assert released[0] == 95  # REORDER_SPAN reached: given up before a seq could look old
    assert sum(len(o.batch.samples) for o in outs) == 100
    assert sum(len(o.batch.rejected) for o in outs) == 0


def test_seq_wraps_from_255_to_0(edge: Edge) -> None:
    edge.nbirth(TEMP, seq=254)
    vals = [edge.ndata(metric(None, float(i), alias=1)) for i in range(3)]
    assert [o.batch.samples[0].seq for o in vals] == [255, 0, 1]
    assert all(o.rebirths == [] for o in vals)


def test_new_nbirth_processes_the_old_sessions_buffer_first(born: Edge) -> None:
    born.next_seq()
    born.ndata(metric(None, 9.0, alias=1))
    out = born.nbirth(metric("Pressure", 1.0, alias=1, dt=DataType.Double))
    assert [(s.metric, s.value) for s in out.batch.samples] == [("Temperature", 9.0), ("Pressure", 1.0)]
    assert [k for _, k in kinds(out)] == [K.SEQ_GAP, K.STALE, K.BIRTH]
    assert out.rebirths == []


def test_matched_ndeath_processes_the_buffer_first_without_rebirth(born: Edge) -> None:
    born.next_seq()
    born.ndata(metric(None, 8.0, alias=1))
    out = born.ndeath()
    assert values(out) == [("Temperature", 8.0)]
    assert [k for _, k in kinds(out)][:2] == [K.SEQ_GAP, K.DEATH]
    assert out.rebirths == []
    assert born.mgr.next_deadline() is None


def test_rebirth_after_a_reorder_timeout_restores_the_stream(born: Edge) -> None:
    born.next_seq()
    born.deliver(born.msg("NDATA", metric(None, 1.0, alias=1)), at=T0)
    assert len(born.mgr.tick(T0 + 2000).rebirths) == 1
    born.now = T0 + 2100
    born.nbirth(TEMP, seq=0)
    born.dbirth("pump", metric("Speed", 1.0, alias=10, dt=DataType.Float))
    out = born.ddata("pump", metric(None, 3.0, alias=10))
    assert values(out) == [("Speed", 3.0)]
    assert out.rebirths == []
    assert out.batch.rejected == []


def test_data_without_seq_is_used_with_one_protocol_error_per_birth(born: Edge) -> None:
    out = born.ndata(metric(None, 1.0, alias=1), seq=None)
    assert values(out) == [("Temperature", 1.0)]
    assert [e.detail for e in events(out, K.PROTOCOL_ERROR)] == ["NDATA without seq"]
    assert events(born.ndata(metric(None, 1.0, alias=1), seq=None), K.PROTOCOL_ERROR) == []


# --- disconnect and the view -------------------------------------------------------------


def test_disconnected_makes_everything_stale_and_uses_the_buffer(born: Edge) -> None:
    born.next_seq()
    born.ndata(metric(None, 5.0, alias=1))
    out = born.mgr.disconnected(T0 + 50)
    assert values(out) == [("Temperature", 5.0)]
    assert [(d, k) for d, k in kinds(out)] == [
        (None, K.SEQ_GAP), (None, K.DISCONNECTED), ("pump", K.STALE), (None, K.STALE),
    ]  # fmt: skip
    assert all(e.ts == T0 + 50 for e in out.batch.sessions)
    assert out.rebirths == []
    node = born.mgr.nodes()[0]
    assert not node.online
    assert not node.devices[0].online
    assert node.buffered == 0


def test_after_disconnect_data_asks_for_a_rebirth_at_once(born: Edge) -> None:
    born.ndata(metric("Ghost", 1.0))  # uses up the rate limit
    born.mgr.disconnected(T0 + 1)
    out = born.deliver(born.msg("NDATA", metric(None, 1.0, alias=1)), at=T0 + 2)
    assert "since the host lost the broker" in errors(out)[0]
    assert len(out.rebirths) == 1
    born.now = T0 + 3
    born.nbirth(TEMP)
    assert values(born.ndata(metric(None, 2.0, alias=1))) == [("Temperature", 2.0)]


def test_nodes_view(born: Edge) -> None:
    born.ndata(metric("Ghost", 1.0))
    (node,) = born.mgr.nodes()
    assert (node.group_id, node.edge_node_id, node.online, node.bdseq) == ("plant", "node1", True, 0)
    assert [(m.name, m.alias, m.datatype, m.unit) for m in node.metrics] == [
        ("bdSeq", None, DataType.Int64, None),
        ("Node Control/Rebirth", None, DataType.Boolean, None),
        ("Temperature", 1, DataType.Double, "degC"),
        ("Count", 2, DataType.UInt32, None),
    ]
    assert [(d.device_id, d.online, [m.name for m in d.metrics]) for d in node.devices] == [
        ("pump", True, ["Speed"]),
    ]
    assert (node.next_seq, node.buffered, node.rebirths_requested) == (3, 0, 1)
    assert born.mgr.node_counts() == (1, 1)
    born.ndeath()
    assert born.mgr.node_counts() == (0, 1)


def test_stats_count_messages_samples_and_rejections(born: Edge) -> None:
    born.ndata(metric(None, 1.0, alias=1), metric(None, 1.0, alias=77))
    stats = born.mgr.stats()
    assert (stats["messages"], stats["samples"], stats["rejected"], stats["nodes"]) == (3, 4, 1, 1)


def test_samples_are_plain_sample_objects(born: Edge) -> None:
    out = born.ndata(metric(None, 1.0, alias=1))
    assert type(out.batch.samples[0]) is Sample
