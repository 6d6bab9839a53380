"""The edge-node simulator against a real mosquitto, seen by a raw subscriber."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiomqtt
import pytest

from uns.core.records import parse_record
from uns.errors import SparkplugDecodeError
from uns.mqtt.mosquitto import Mosquitto
from uns.sim import EdgeNode, SimConfig, SimReport, pilot_plant, run_sim
from uns.sim.edge import BDSEQ_METRIC, GARBAGE, REBIRTH_METRIC
from uns.sim.plant import PILOT_PATHS, bench_plant
from uns.sim.sentlog import SentLog
from uns.sparkplug.codec import decode_payload, encode_payload
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import Metric, Payload
from uns.sparkplug.state import format_state
from uns.sparkplug.topic import parse_topic

pytestmark = pytest.mark.integration

WAIT = 5.0  # seconds a test waits for expected messages


def sim_config(broker: Mosquitto, ns: str, **options: Any) -> SimConfig:
    """The simulator against ``broker``: Sparkplug group ``ns`` and UNS prefix ``{ns}/uns`` unless given."""
    options.setdefault("group_id", ns)
    options.setdefault("prefix", f"{ns}/uns")
    return SimConfig(host=broker.host, port=broker.port, **options)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    arrived: float  # ms since the epoch

    @property
    def kind(self) -> str:
        return parse_topic(self.topic).message_type.value

    @property
    def device(self) -> str | None:
        return parse_topic(self.topic).device_id

    def decoded(self) -> Payload:
        return decode_payload(self.payload)


class Wire:
    """A raw subscriber that records everything under some filters, in arrival order."""

    def __init__(self, broker: Mosquitto, *filters: str) -> None:
        self.client = aiomqtt.Client(broker.host, broker.port)
        self.filters = filters
        self.messages: list[Received] = []
        self._task: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self.client.__aenter__()
        for f in self.filters:
            await self.client.subscribe(f, qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task
        await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for m in self.client.messages:
            assert isinstance(m.payload, bytes)
            self.messages.append(Received(m.topic.value, m.payload, m.qos, m.retain, time.time() * 1000))
            self._arrived.set()

    def sparkplug(self) -> list[Received]:
        """What the edge nodes published (commands from the test's host left out)."""
        return [m for m in self.messages if m.topic.startswith("spBv1.0/") and m.kind not in ("NCMD", "DCMD")]

    async def wait(self, predicate: Callable[[list[Received]], bool]) -> None:
        """Wait (at most WAIT seconds) until ``predicate(messages)`` holds."""
        async with asyncio.timeout(WAIT):
            while not predicate(self.messages):
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_count(self, kind: str, count: int) -> None:
        await self.wait(
            lambda ms: sum(1 for m in ms if m.topic.startswith("spBv1.0/") and m.kind == kind) >= count
        )

    async def settle(self, quiet: float = 0.2) -> None:
        """Wait until nothing new arrived for ``quiet`` seconds."""
        while True:
            before = len(self.messages)
            await asyncio.sleep(quiet)
            if len(self.messages) == before:
                return


def usp_node(broker: Mosquitto, group: str, **kwargs: Any) -> EdgeNode:
    return EdgeNode(pilot_plant(group).nodes[0], group_id=group, host=broker.host, port=broker.port, **kwargs)


def seqs(messages: list[Received]) -> list[int | None]:
    return [m.decoded().seq for m in messages if m.kind != "NDEATH"]


def assert_contiguous(values: list[int | None]) -> None:
    for a, b in itertools.pairwise(values):
        assert b == ((a or 0) + 1) % 256, values


# ---------------------------------------------------------------- session shape


async def test_births_then_data_in_order_with_seq_and_bdseq(broker: Mosquitto, ns: str) -> None:
    async with Wire(broker, f"spBv1.0/{ns}/#") as wire:
        log = SentLog(keep_samples=True)
        async with usp_node(broker, ns, report_by_exception=False, sent_log=log) as node:
            for _ in range(100):  # 3 units: 300 DATA messages, seq wraps past 255
                await node.publish_data()
        await wire.wait_count("NDEATH", 1)
    msgs = wire.sparkplug()
    kinds = [m.kind for m in msgs]
    assert kinds[:3] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert [m.device for m in msgs[1:3]] == ["BR-101", "BR-102"]
    assert kinds[3:-1] == ["NDATA", "DDATA", "DDATA"] * 100
    assert kinds[-1] == "NDEATH"
    assert {m.qos for m in msgs[:-1]} == {0}
    assert not any(m.retain for m in msgs)

    nbirth = msgs[0].decoded()
    assert nbirth.seq == 0
    by_name = {m.name: m for m in nbirth.metrics}
    assert by_name[BDSEQ_METRIC].datatype is DataType.Int64
    assert by_name[BDSEQ_METRIC].value == 0
    rebirth = by_name[REBIRTH_METRIC]
    assert (rebirth.datatype, rebirth.value, rebirth.alias) == (DataType.Boolean, False, None)
    assert by_name["Properties/Firmware"].value == "4.2.1"
    assert by_name["Uptime"].datatype is DataType.Int64
    aliases: dict[int, DataType] = {}
    for birth in (m.decoded() for m in msgs[:3]):
        assert birth.timestamp is not None
        for metric in birth.metrics:
            assert metric.name is not None
            assert metric.timestamp is not None
            assert metric.datatype is not None
            if metric.name in (BDSEQ_METRIC, REBIRTH_METRIC):
                continue
            assert metric.alias is not None
            assert metric.alias not in aliases  # unique node-wide
            aliases[metric.alias] = metric.datatype
    br101 = {m.name: m for m in msgs[1].decoded().metrics}
    temperature = br101["Temperature"]
    assert temperature.properties is not None
    unit = temperature.properties.get("engUnit")
    assert unit is not None
    assert (unit.type, unit.value) == (DataType.String, "degC")
    assert br101["Headspace/Pressure"].datatype is DataType.Int16
    assert br101["Spectrum"].datatype is DataType.FloatArray
    assert br101["LastCIP"].datatype is DataType.DateTime

    assert_contiguous(seqs(msgs[:-1]))
    assert seqs(msgs)[-1] == (3 + 300 - 1) % 256
    for data in msgs[3:-1]:
        payload = data.decoded()
        assert payload.timestamp is not None
        for metric in payload.metrics:
            assert metric.name is None
            assert metric.datatype is None
            assert metric.timestamp is not None
            assert metric.alias in aliases

    ndeath = msgs[-1]
    assert ndeath.qos == 1
    death = ndeath.decoded()
    assert death.seq is None
    assert [(m.name, m.datatype, m.value) for m in death.metrics] == [(BDSEQ_METRIC, DataType.Int64, 0)]
    # the sent log holds exactly what went out
    wire_samples = sorted(
        (m.device or "", metric.timestamp, m.decoded().seq)
        for m in msgs[3:-1]
        for metric in m.decoded().metrics
    )
    logged = sorted(
        (s.device_id or "", s.ts, s.seq) for s in log.samples if s.message_type in ("NDATA", "DDATA")
    )
    assert logged == wire_samples
    assert sum(s.message_type in ("NBIRTH", "DBIRTH") for s in log.samples) == sum(
        m.name not in (BDSEQ_METRIC, REBIRTH_METRIC) for b in msgs[:3] for m in b.decoded().metrics
    )
    assert log.counts.births == 3
    assert log.counts.data_messages == 300
    assert log.counts.deaths == 1


async def test_report_by_exception_sends_only_changes(broker: Mosquitto, ns: str) -> None:
    async with Wire(broker, f"spBv1.0/{ns}/#") as wire:
        node = EdgeNode(pilot_plant(ns).nodes[1], group_id=ns, host=broker.host, port=broker.port)
        async with node:
            for _ in range(20):
                await node.publish_data()
        await wire.wait_count("NDEATH", 1)
    ddata = [m.decoded() for m in wire.sparkplug() if m.kind == "DDATA"]
    assert ddata
    # Batch/ID and Batch/Phase (aliases of strings) change rarely: most messages lack them
    counts = [len(p.metrics) for p in ddata]
    assert max(counts) < 7
    assert all(c >= 1 for c in counts)


async def test_rebirth_on_ncmd_keeps_bdseq_and_restarts_seq(broker: Mosquitto, ns: str) -> None:
    async with Wire(broker, f"spBv1.0/{ns}/#") as wire:
        log = SentLog(keep_samples=True)
        async with usp_node(broker, ns, sent_log=log, report_by_exception=False) as node:
            stop = asyncio.Event()

            async def pump() -> None:
                while not stop.is_set():
                    await node.publish_data()
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(pump())
            await wire.wait_count("DDATA", 10)
            async with aiomqtt.Client(broker.host, broker.port) as host:
                command = Payload(
                    timestamp=int(time.time() * 1000),
                    metrics=[Metric(name=REBIRTH_METRIC, datatype=DataType.Boolean, value=True)],
                )
                await host.publish(f"spBv1.0/{ns}/NCMD/USP-Ctrl", encode_payload(command))
            await wire.wait_count("NBIRTH", 2)
            await wire.wait_count("DDATA", 30)
            stop.set()
            await task
        await wire.wait_count("NDEATH", 1)
    msgs = wire.sparkplug()
    second = [i for i, m in enumerate(msgs) if m.kind == "NBIRTH"][1]
    assert [m.kind for m in msgs[second : second + 3]] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    nbirth = msgs[second].decoded()
    assert nbirth.seq == 0
    assert {m.name: m.value for m in nbirth.metrics}[BDSEQ_METRIC] == 0  # same connection, same bdSeq
    assert_contiguous(seqs(msgs[:second]))
    assert_contiguous(seqs(msgs[second:-1]))
    assert msgs[second + 3].kind in ("NDATA", "DDATA")
    assert log.counts.rebirths_answered == 1
    # births included, a sample is identified by its metric and timestamp
    keys = [(s.device_id, s.metric, s.ts) for s in log.samples]
    assert len(keys) == len(set(keys))


async def test_kill_lets_the_broker_send_the_will_and_a_restart_increments_bdseq(
    broker: Mosquitto, ns: str
) -> None:
    async with Wire(broker, f"spBv1.0/{ns}/#") as wire:
        node = usp_node(broker, ns, bd_seq=254)
        await node.start()
        await node.publish_data()
        await node.kill()
        await wire.wait_count("NDEATH", 1)
        will = wire.sparkplug()[-1]
        assert will.kind == "NDEATH"
        assert will.qos == 1
        assert not will.retain
        assert will.decoded().seq is None
        assert [(m.name, m.value) for m in will.decoded().metrics] == [(BDSEQ_METRIC, 254)]
        assert not node.connected

        for expected in (255, 0):  # bdSeq wraps after 255
            await node.start()
            await wire.wait_count("NBIRTH", 2 + (expected == 0))
            nbirth = [m for m in wire.sparkplug() if m.kind == "NBIRTH"][-1].decoded()
            assert {m.name: m.value for m in nbirth.metrics}[BDSEQ_METRIC] == expected
            assert nbirth.seq == 0
            if expected == 255:
                await node.kill()
                await wire.wait_count("NDEATH", 2)
        await node.stop()
        await wire.wait_count("NDEATH", 3)
    deaths = [m for m in wire.sparkplug() if m.kind == "NDEATH"]
    assert [m.decoded().metrics[0].value for m in deaths] == [254, 255, 0]
    assert {m.qos for m in deaths} == {1}


async def test_clean_stop_publishes_the_will_payload_then_disconnects(broker: Mosquitto, ns: str) -> None:
    async with Wire(broker, f"spBv1.0/{ns}/#") as wire:
        first = usp_node(broker, ns)
        await first.start()
        will_of_first = first.will_payload  # what the broker would publish on a lost connection
        await first.stop()
        await wire.wait_count("NDEATH", 1)
        await wire.settle()
    deaths = [m for m in wire.sparkplug() if m.kind == "NDEATH"]
    assert len(deaths) == 1  # the DISCONNECT was clean: no second NDEATH from the Will
    assert deaths[0].payload == will_of_first
    assert deaths[0].qos == 1
    assert not first.connected


# ---------------------------------------------------------------- faults


async def test_fault_hooks_put_what_they_claim_on_the_wire(broker: Mosquitto, ns: str) -> None:
    async with Wire(broker, f"spBv1.0/{ns}/#") as wire:
        async with usp_node(broker, ns, report_by_exception=False) as node:
            await node.publish_data()
            skipped = await node.skip_seq()
            await node.publish_data()
            high, low = await node.swap_next_two("BR-102")
            alias = await node.send_unknown_alias("BR-101")
            garbage = await node.send_garbage("BR-101")
            stale = await node.send_stale_ndeath()
            await node.device_death("BR-102")
            await node.publish_data()  # BR-102 is dead: only NDATA and BR-101
            await node.device_birth("BR-102")
            await node.publish_data()
        await wire.wait_count("NDEATH", 2)
    msgs = wire.sparkplug()
    assert skipped == 6  # NBIRTH 0, DBIRTH 1 2, DATA 3 4 5, then the gap
    after_births = msgs[3:]
    first_data = after_births[:3]
    assert seqs(first_data) == [3, 4, 5]
    second_data = after_births[3:6]
    assert seqs(second_data) == [7, 8, 9]  # 6 was skipped
    swapped = after_births[6:8]
    assert seqs(swapped) == [high, low] == [11, 10]
    assert {m.device for m in swapped} == {"BR-102"}
    unknown = after_births[8].decoded()
    assert unknown.seq == 12
    assert [m.alias for m in unknown.metrics] == [alias]
    born_aliases = {m.alias for b in msgs[:3] for m in b.decoded().metrics}
    assert alias not in born_aliases
    junk = after_births[9]
    assert (junk.kind, junk.device, junk.payload) == ("DDATA", "BR-101", garbage)
    assert junk.payload == GARBAGE
    with pytest.raises(SparkplugDecodeError):
        junk.decoded()
    stale_death = after_births[10]
    assert stale_death.kind == "NDEATH"
    assert stale_death.decoded().metrics[0].value == stale == 255
    ddeath = after_births[11]
    assert (ddeath.kind, ddeath.device, ddeath.decoded().seq) == ("DDEATH", "BR-102", 13)
    assert [(m.kind, m.device) for m in after_births[12:14]] == [("NDATA", None), ("DDATA", "BR-101")]
    rebirth = after_births[14]
    assert (rebirth.kind, rebirth.device, rebirth.decoded().seq) == ("DBIRTH", "BR-102", 16)
    assert after_births[-1].decoded().metrics[0].value == 0  # the real, clean NDEATH


async def test_dbirth_before_nbirth(broker: Mosquitto, ns: str) -> None:
    async with Wire(broker, f"spBv1.0/{ns}/#") as wire:
        node = usp_node(broker, ns)
        await node.start(dbirth_first=True)
        await wire.wait_count("DBIRTH", 2)
        await node.stop()
    msgs = wire.sparkplug()
    assert [(m.kind, m.decoded().seq) for m in msgs[:3]] == [("DBIRTH", 1), ("NBIRTH", 0), ("DBIRTH", 2)]


# ---------------------------------------------------------------- primary host


async def test_primary_host_gates_births_and_store_and_forward(broker: Mosquitto, ns: str) -> None:
    host_id = f"{ns}-host"
    state_topic = f"spBv1.0/STATE/{host_id}"
    async with Wire(broker, f"spBv1.0/{ns}/#") as wire, aiomqtt.Client(broker.host, broker.port) as host:
        log = SentLog(keep_samples=True)
        async with usp_node(
            broker, ns, primary_host_id=host_id, report_by_exception=False, sent_log=log
        ) as node:
            await node.publish_data()
            await asyncio.sleep(0.2)
            assert wire.sparkplug() == []  # no host yet: no births, DATA stored
            await host.publish(state_topic, format_state(True, 1000), qos=1, retain=True)
            await wire.wait_count("DBIRTH", 2)
            await wire.wait_count("DDATA", 2)  # the stored step, sent as history
            await node.publish_data()
            await wire.wait_count("DDATA", 4)
            await host.publish(state_topic, format_state(False, 1000), qos=1, retain=True)
            await asyncio.sleep(0.2)
            for _ in range(3):
                await node.publish_data()
            await asyncio.sleep(0.2)
            assert sum(m.kind == "DDATA" for m in wire.sparkplug()) == 4  # host away: stored
            await host.publish(state_topic, format_state(True, 2000), qos=1, retain=True)
            await wire.wait_count("NBIRTH", 2)
            await wire.wait_count("DDATA", 10)
            await node.publish_data()
            await wire.wait_count("DDATA", 12)
        await host.publish(state_topic, b"", qos=1, retain=True)  # remove the retained STATE
    msgs = [m for m in wire.sparkplug() if m.kind != "NDEATH"]
    historical = [m.decoded() for m in msgs if m.kind in ("NDATA", "DDATA")]
    flags = [all(metric.is_historical for metric in p.metrics) for p in historical]
    # 1 stored step, 1 live, 3 stored steps, 1 live (3 messages each)
    assert flags == [True] * 3 + [False] * 3 + [True] * 9 + [False] * 3
    kinds = [m.kind for m in msgs]
    second_birth = kinds.index("NBIRTH", 1)
    assert kinds[second_birth : second_birth + 3] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert_contiguous(seqs(msgs[:second_birth]))
    assert_contiguous(seqs(msgs[second_birth:]))
    # stored DATA keeps the time it was measured, older than its publish time
    first_hist = historical[0]
    assert first_hist.timestamp is not None
    assert first_hist.metrics[0].timestamp is not None
    assert first_hist.metrics[0].timestamp < first_hist.timestamp
    assert log.counts.historical_messages == 12
    assert sum(s.is_historical for s in log.samples) == sum(
        len(p.metrics) for p in historical[:3] + historical[6:15]
    )


# ---------------------------------------------------------------- the runner


async def test_run_sim_publishes_what_it_logs_and_context_events(broker: Mosquitto, ns: str) -> None:
    config = sim_config(broker, ns, rate=300, duration=1.5, context_interval=0.15, keep_samples=True, seed=3)
    prefix = config.prefix
    async with Wire(broker, f"spBv1.0/{ns}/#", f"{prefix}/#") as wire:
        progress = []
        report = await run_sim(config, on_progress=progress.append)
        await wire.wait_count("NDEATH", 3)
        await wire.wait(lambda ms: sum(m.topic.startswith(prefix) for m in ms) >= report.context_events)
    sparkplug = wire.sparkplug()
    assert len(sparkplug) == report.messages
    assert report.births == 3 + 4
    assert report.deaths == 3
    assert 100 < report.data_messages <= 300 * 1.6
    assert progress
    assert progress[0].samples == ()

    # every DATA sample on the wire is in the sent log with the same typed value, and vice versa
    types = {(s.edge_node_id, s.device_id, s.metric): s.datatype for s in report.samples}
    aliases: dict[tuple[str, int], tuple[str | None, str]] = {}
    for m in sparkplug:
        if m.kind in ("NBIRTH", "DBIRTH"):
            node = parse_topic(m.topic).edge_node_id
            for metric in m.decoded().metrics:
                if metric.alias is not None:
                    assert metric.name is not None
                    aliases[(node, metric.alias)] = (m.device, metric.name)
    on_wire = []
    for m in sparkplug:
        if m.kind in ("NDATA", "DDATA"):
            node = parse_topic(m.topic).edge_node_id
            payload = m.decoded()
            for metric in payload.metrics:
                assert metric.alias is not None
                device, name = aliases[(node, metric.alias)]
                value = metric.value_as(types[(node, device, name)])
                on_wire.append((node, device, name, metric.timestamp, payload.seq, value))
    logged = [
        (s.edge_node_id, s.device_id, s.metric, s.ts, s.seq, s.value)
        for s in report.samples
        if s.message_type in ("NDATA", "DDATA")
    ]
    assert sorted(on_wire, key=repr) == sorted(logged, key=repr)

    # context events: valid JSON with the agreed fields, on the agreed paths
    contexts = [m for m in wire.messages if m.topic.startswith(f"{prefix}/_context/")]
    assert len(contexts) == report.context_events == len(report.contexts)
    assert {m.topic.removeprefix(f"{prefix}/_context/") for m in contexts} == set(PILOT_PATHS.values())
    assert {m.qos for m in contexts} == {1}
    granulator_batches = set()
    for m in contexts:
        doc = json.loads(m.payload)
        assert set(doc) == {"ts", "set", "clear", "source", "user", "reason"}
        assert isinstance(doc["ts"], int)
        if doc["user"] != "sim":  # the MES's equipment status (uns.sim.mes), not the batch cycle's
            assert set(doc["set"]) <= {"equipment_status", "clean_expires", "calibration_due"}
            assert doc["user"] == "op.sim" and not doc["clear"]
            continue
        if doc["set"]:
            assert set(doc["set"]) == {"batch_id", "order_id", "product", "recipe", "phase"}
            if m.topic.endswith("gr-201"):
                granulator_batches.add(doc["set"]["batch_id"])
        else:
            assert set(doc["clear"]) == {"batch_id", "order_id", "product", "recipe", "phase"}
    assert any(json.loads(m.payload)["reason"] == "phase change" for m in contexts)
    # batch records: a material at every batch start, a result when a last phase starts
    records = [json.loads(m.payload) for m in wire.messages if m.topic.startswith(f"{prefix}/_records/")]
    assert len(records) == report.records > 0
    for doc in records:
        parse_record("acme/x", doc, doc["ts"])  # valid by the engine's rules
    assert {doc["kind"] for doc in records} == {"material", "result"}
    # the granulator PLC shows the same batches as the MES
    plc_batches = {s.value for s in report.samples if s.metric == "Batch/ID" and s.value}
    assert plc_batches == granulator_batches


async def test_late_context_is_published_after_its_timestamp(broker: Mosquitto, ns: str) -> None:
    config = sim_config(broker, ns, rate=50, duration=0.6, context_interval=0.2, context_delay=0.5)
    prefix = config.prefix
    async with Wire(broker, f"{prefix}/#") as wire:
        report = await run_sim(config)
        await wire.wait(lambda ms: len(ms) >= report.context_events)
    assert report.context_events > 4  # the start of each unit, then phase changes
    for m in wire.messages:
        ts = json.loads(m.payload)["ts"]
        assert m.arrived >= ts + 500 - 5  # 5 ms for clock granularity


async def test_runs_with_the_same_seed_publish_the_same_values(broker: Mosquitto, ns: str) -> None:
    def config(group: str, seed: int) -> SimConfig:
        return sim_config(broker, ns, group_id=group, rate=200, duration=0.6, seed=seed, keep_samples=True)

    a, b, c = await asyncio.gather(
        run_sim(config(f"{ns}-a", 5)), run_sim(config(f"{ns}-b", 5)), run_sim(config(f"{ns}-c", 6))
    )

    def series(report: SimReport) -> dict[tuple[str, str | None, str], list[object]]:
        out: dict[tuple[str, str | None, str], list[object]] = {}
        for s in report.samples:
            out.setdefault((s.edge_node_id, s.device_id, s.metric), []).append(s.value)
        return out

    sa, sb, sc = series(a), series(b), series(c)
    key = ("USP-Ctrl", "BR-101", "Temperature")
    shortest = min(len(sa[key]), len(sb[key]))
    assert shortest > 5
    for k in sa.keys() & sb.keys():
        n = min(len(sa[k]), len(sb[k]))
        assert sa[k][:n] == sb[k][:n], k
    assert sa[key][: min(len(sa[key]), len(sc[key]))] != sc[key][: min(len(sa[key]), len(sc[key]))]


async def test_bench_plant_sends_fixed_metrics_per_message(broker: Mosquitto, ns: str) -> None:
    config = sim_config(
        broker,
        ns,
        plant="bench",
        nodes=3,
        devices=2,
        metrics=7,
        rate=600,
        duration=0.5,
        report_by_exception=False,
    )
    async with Wire(broker, f"spBv1.0/{ns}/#") as wire:
        report = await run_sim(config)
        await wire.wait_count("NDEATH", 3)
    data = [m for m in wire.sparkplug() if m.kind == "DDATA"]
    # 600 messages/s for 0.5 s: about 300, fewer on a loaded machine; what counts is their shape
    assert len(data) == report.data_messages > 30
    assert {len(m.decoded().metrics) for m in data} == {7}
    assert {parse_topic(m.topic).edge_node_id for m in data} == {"node-000", "node-001", "node-002"}
    assert {m.device for m in data} == {"dev-00", "dev-01"}
    assert report.context_events == 0
    assert bench_plant(nodes=1, devices=1, metrics=1).group_id == "Bench"


async def test_stop_event_ends_an_open_ended_run(broker: Mosquitto, ns: str) -> None:
    stop = asyncio.Event()
    config = sim_config(broker, ns, rate=100)
    task = asyncio.create_task(run_sim(config, stop=stop))
    await asyncio.sleep(0.4)
    stop.set()
    report = await asyncio.wait_for(task, timeout=5)
    assert report.data_messages > 0
    assert report.deaths == 3


async def test_nodes_reconnect_after_a_broker_restart(own_broker: Mosquitto, ns: str) -> None:
    config = sim_config(own_broker, ns, rate=100, duration=3.0, keep_samples=True)
    task = asyncio.create_task(run_sim(config))
    await asyncio.sleep(0.5)
    own_broker.stop()
    await asyncio.sleep(0.3)
    own_broker.start()
    report = await asyncio.wait_for(task, timeout=10)
    assert report.reconnects == 3
    assert report.historical_messages > 0
    nbirths = [s for s in report.samples if s.message_type == "NBIRTH" and s.edge_node_id == "USP-Ctrl"]
    assert {s.bdseq for s in nbirths} == {0, 1}
