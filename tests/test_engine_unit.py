"""The engine's host logic over the in-memory transport: no broker process, no sockets.

Every test runs the real :class:`Engine` (its run loop, receive/timer/status tasks,
drain and reconnects) against a private :class:`MemoryBroker`, which routes in order
and records what each client did, so the assertions can be exact: the order of the
session start and of the shutdown, the publishes that left, the rebirths that did not.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from types import TracebackType
from typing import Any, Self

import pytest

from tests.edge import RawEdge, now_ms
from tests.engine_helpers import CollectingSink, connected, engine_config, on_memory, running_engine, wait_for
from uns.config import Config
from uns.core.events import Batch, SessionEventKind
from uns.engine.host import Engine
from uns.engine.memory import LogEntry, MemoryBroker, MemoryTransport
from uns.engine.transport import Publish
from uns.errors import BrokerError, BrokerRefused, EngineError, LakeBackpressure
from uns.mqtt.wire import Will
from uns.sparkplug.codec import decode_payload, encode_payload
from uns.sparkplug.payload import Payload
from uns.sparkplug.state import format_state

NS = "plant"  # group id, host id and prefix root: each test has a broker of its own
ENGINE = f"uns-{NS}"  # the engine's MQTT client identifier
STATE = f"spBv1.0/STATE/{NS}"
CONTEXT = f"{NS}/uns/_context"
CONTEXT_CLIENT = f"{ENGINE}-context"  # the engine's persistent session for context
STATUS = f"{NS}/uns/_engine/{NS}/status"


def config(url: str = "mqtt://memory:1883", **overrides: Any) -> Config:
    fast = {"broker.reconnect_min": 0.01, "broker.reconnect_max": 0.05, "engine.status_interval": 0.2}
    return engine_config(url, NS, **{**fast, **overrides})


async def edge_node(broker: MemoryBroker, node: str = "N1", **kw: Any) -> RawEdge:
    client = await connected(broker, f"edge-{node}")
    return RawEdge(client, NS, node, **kw)  # type: ignore[arg-type]  # a MemoryTransport publishes alike


async def ddeath(edge: RawEdge, device: str) -> None:
    payload = Payload(timestamp=now_ms(), seq=edge.next_seq(), metrics=[])
    await edge.client.publish(edge.topic("DDEATH", device), encode_payload(payload), qos=0)


def actions(broker: MemoryBroker, client: str = ENGINE) -> list[tuple[str, str]]:
    return [(e.action, e.topic) for e in broker.actions(client)]


def attempts(broker: MemoryBroker) -> int:
    """The engine's connection attempts, refused ones included."""
    return sum(e.action in ("connect", "refused") for e in broker.actions(ENGINE))


def ncmds(broker: MemoryBroker, node: str = "N1") -> list[LogEntry]:
    return [e for e in broker.published(f"spBv1.0/{NS}/NCMD/{node}") if e.client == ENGINE]


# ------------------------------------------------------------------ the session


async def test_session_start_subscribes_before_the_state_birth_which_carries_the_will_timestamp() -> None:
    async with on_memory(config(**{"engine.primary": True})) as (broker, _engine):
        client = broker.connection(ENGINE)
        assert client is not None and client.will is not None
        assert actions(broker)[:4] == [
            ("connect", ""),
            ("subscribe", "spBv1.0/#"),
            ("subscribe", STATE),
            ("publish", STATE),
        ]  # context is not on the Sparkplug session: it has a persistent one of its own
        assert actions(broker, CONTEXT_CLIENT)[:2] == [("connect", ""), ("subscribe", f"{CONTEXT}/#")]
        birth = broker.actions(ENGINE)[3]
        will = client.will
        assert (birth.qos, birth.retain, will.qos, will.retain, will.topic) == (1, True, 1, True, STATE)
        t = json.loads(birth.payload)["timestamp"]
        assert json.loads(birth.payload) == {"online": True, "timestamp": t}
        assert json.loads(will.payload) == {"online": False, "timestamp": t}
        assert [e.qos for e in broker.actions(ENGINE)[1:3]] == [0, 1]


async def test_a_non_primary_host_has_no_will_and_publishes_no_state() -> None:
    async with on_memory(config()) as (broker, _engine):
        client = broker.connection(ENGINE)
        assert client is not None and client.will is None
        await wait_for(lambda: bool(broker.published(STATUS)), what="status")
    assert not broker.published(STATE)
    assert not [e for e in broker.published("#") if e.topic.startswith("spBv1.0/")]


async def test_births_data_and_deaths_reach_the_sinks() -> None:
    sink = CollectingSink()
    async with on_memory(config(), sink) as (broker, engine):
        edge = await edge_node(broker)
        await edge.nbirth()
        await edge.dbirth("D1")
        for v in (21.0, 22.0, 23.0):
            await edge.ddata("D1", v)
        await ddeath(edge, "D1")
        await edge.ndeath()
        await wait_for(lambda: any(e.device_id is None for e in sink.events(SessionEventKind.DEATH)))
    temps = [s for s in sink.samples if s.metric == "Temperature"]
    assert [s.value for s in temps] == [20.0, 21.0, 22.0, 23.0]
    assert (temps[-1].group_id, temps[-1].edge_node_id, temps[-1].seq, temps[-1].bdseq) == (NS, "N1", 4, 0)
    assert temps[-1].path == f"_unmapped/{NS}/N1/D1"
    births = [(e.device_id, e.event) for e in sink.events(SessionEventKind.BIRTH)]
    assert births == [(None, "birth"), ("D1", "birth")]
    deaths = [e.device_id for e in sink.events(SessionEventKind.DEATH)]
    assert deaths == ["D1", None]
    assert {e.device_id for e in sink.events(SessionEventKind.STALE)} == {"D1", None}
    c = engine.counters
    assert (c.messages, c.sparkplug_messages, c.metrics, c.rejected) == (7, 7, len(sink.samples), 0)
    assert sink.flushes == 1


async def test_context_events_are_applied_and_bad_ones_rejected_with_their_reason() -> None:
    sink = CollectingSink()
    async with on_memory(config(), sink) as (broker, engine):
        mes = await connected(broker, "mes")
        ts = 1_767_261_600_005  # 2026: an event's own time is from 2000 on, and not far ahead
        event = b'{"ts": %d, "set": {"batch_id": "B-1"}, "reason": "back-dated test"}' % ts
        await mes.publish(f"{CONTEXT}/acme/line1", event, qos=1)
        await mes.publish(f"{CONTEXT}/acme/line1", b"{nope", qos=1)
        await mes.publish(f"{CONTEXT}/acme/line1", b"[1]", qos=1)
        await mes.publish(f"{CONTEXT}/acme/line1", b'{"set": {"a/b": "x"}}', qos=1)
        await wait_for(lambda: engine.counters.context_events == 4)
    (change,) = [c for b in sink.batches for c in b.context]
    assert (change.path, change.key, change.value, change.ts) == ("acme/line1", "batch_id", "B-1", ts)
    assert engine.context.at("acme/line1/gr-201", ts + 5) == {"batch_id": "B-1"}
    reasons = [r.error for b in sink.batches for r in b.rejected]
    assert reasons[0].startswith("not JSON: ")
    assert reasons[1:] == [
        "an event must be a JSON object",
        "context key 'a/b' must not contain '/', '+', '#' or control characters",
    ]
    assert engine.counters.rejected == 3


async def test_own_commands_echoed_back_are_ignored_and_garbage_is_rejected() -> None:
    sink = CollectingSink()
    async with on_memory(config(**{"sparkplug.rebirth_requests": False}), sink) as (broker, engine):
        other = await connected(broker, "other-host")
        await other.publish(f"spBv1.0/{NS}/NCMD/N1", Engine.rebirth_payload())
        await other.publish(f"spBv1.0/{NS}/BOGUS/N1", b"\x00")
        await other.publish(f"spBv1.0/{NS}/DDATA/N1/D1", b"\xff\xff\xff")
        await wait_for(lambda: engine.counters.messages == 3)
    assert engine.counters.commands_ignored == 1
    errors = [r.error for b in sink.batches for r in b.rejected]
    assert errors[0] == "not a Sparkplug B topic"
    assert engine.counters.rejected >= 1


# ------------------------------------------------------------------ STATE


def test_process_returns_the_state_reassertion_instead_of_keeping_it_aside() -> None:
    engine = Engine(config(**{"engine.primary": True}))
    now = now_ms()
    offline = format_state(False, 1)
    assert engine.process(STATE, offline, now)[2] == ()  # not connected yet: nothing to re-assert
    engine.dispatch.state_ts = 123
    batch, rebirths, publishes = engine.process(STATE, offline, now)
    assert not batch and not rebirths
    assert publishes == (Publish(STATE, format_state(True, 123), 1, True),)
    assert engine.process(STATE, format_state(True, 123), now)[2] == ()  # our own birth, echoed
    assert engine.process("spBv1.0/STATE/other", offline, now)[2] == ()  # another host's death
    assert engine.process(f"STATE/{NS}", b"OFFLINE", now)[2] == ()  # legacy STATE is not ours
    assert engine.process(STATE, b"garbage", now)[2] == ()
    assert engine.counters.host_states_seen == 6


async def test_own_offline_state_is_reasserted_without_stalling_the_receive_path() -> None:
    sink = CollectingSink()
    async with on_memory(config(**{"engine.primary": True}), sink) as (broker, _engine):
        (birth,) = broker.published(STATE)
        edge = await edge_node(broker)
        await edge.nbirth()
        broker.hold_acks()  # the re-assertion's PUBACK queues behind a backlog
        await edge.client.publish(STATE, format_state(False, 1), qos=0, retain=True)
        await wait_for(lambda: len(broker.published(STATE)) == 3, what="re-assertion")
        await edge.dbirth("D1")
        await wait_for(lambda: bool(sink.events(SessionEventKind.BIRTH)[1:]), what="DBIRTH while unacked")
        broker.release_acks()
        assert broker.retained[STATE] == (birth.payload, 1)
        last = broker.published(STATE)[-1]
        assert (last.client, last.payload, last.qos, last.retain) == (ENGINE, birth.payload, 1, True)
    offline = json.loads(broker.retained[STATE][0])
    assert offline["online"] is False and offline["timestamp"] >= json.loads(birth.payload)["timestamp"]


# ------------------------------------------------------------------ rebirths


async def test_rebirth_requests_are_throttled_per_node() -> None:
    async with on_memory(config(**{"sparkplug.rebirth_min_interval_ms": 300})) as (broker, engine):
        edge = await edge_node(broker)
        await edge.nbirth()
        await edge.dbirth("D1")
        await edge.ddata("D1", 1.0, alias=99)  # unknown alias: rebirth
        await edge.ddata("D1", 2.0, alias=98)  # within the interval: suppressed
        await wait_for(lambda: engine.counters.messages >= 4)
        assert len(ncmds(broker)) == 1
        await asyncio.sleep(0.35)
        await edge.ddata("D1", 3.0, alias=97)
        await wait_for(lambda: len(ncmds(broker)) == 2, what="second NCMD")
        await wait_for(lambda: engine.counters.commands_ignored == 2, what="echoes")
    for cmd in ncmds(broker):
        assert (cmd.qos, cmd.retain) == (0, False)
        p = decode_payload(cmd.payload)
        assert p.seq is None and p.timestamp is not None
        (m,) = p.metrics
        assert (m.name, m.alias, int(m.datatype or 0), m.value) == ("Node Control/Rebirth", None, 11, True)
    assert engine.counters.rebirths_requested == 2


async def test_no_rebirth_requests_when_they_are_off() -> None:
    async with on_memory(config(**{"sparkplug.rebirth_requests": False})) as (broker, engine):
        edge = await edge_node(broker)
        await edge.ddata("D1", 1.0)  # DATA before any birth
        await wait_for(lambda: engine.counters.messages >= 1)
    assert not ncmds(broker)


async def test_reorder_timeout_requests_a_rebirth_from_the_timer() -> None:
    sink = CollectingSink()
    async with on_memory(config(**{"sparkplug.reorder_timeout_ms": 100}), sink) as (broker, engine):
        edge = await edge_node(broker)
        await edge.nbirth()
        await edge.dbirth("D1")
        edge.next_seq()  # seq 2 never comes
        started = time.monotonic()
        await edge.ddata("D1", 5.0)
        await wait_for(lambda: bool(ncmds(broker)), what="NCMD")
        assert time.monotonic() - started >= 0.09
    assert sink.events(SessionEventKind.REORDER_TIMEOUT)
    assert engine.counters.seq_gaps == 1


# ------------------------------------------------------------------ back-pressure


class FullSink(CollectingSink):
    """A sink that is full (raises LakeBackpressure) until ``full`` is cleared."""

    name = "full"

    def __init__(self) -> None:
        super().__init__()
        self.full = True
        self.refusals = 0

    def add(self, batch: Batch) -> None:
        if self.full:
            self.refusals += 1
            raise LakeBackpressure("wal full", retry_after=0.01)
        super().add(batch)


async def test_a_full_sink_pauses_intake_and_the_broker_queues_until_it_drains() -> None:
    broker = MemoryBroker(high_water=50, low_water=10)
    full, after = FullSink(), CollectingSink()
    engine = Engine(config(), sinks=[full, after], transport=broker)
    n = 500
    async with running_engine(engine):
        edge = await edge_node(broker)
        await edge.nbirth()
        await edge.dbirth("D1")
        for i in range(n):
            await edge.ddata("D1", float(i))
        conn = broker.connection(ENGINE)
        assert conn is not None
        await wait_for(lambda: full.refusals >= 5, what="retries")
        # intake paused: the engine holds at most high_water messages, the broker the rest
        assert conn.pending <= 50 and conn.queued >= n - 100 and conn.pauses >= 1
        assert engine.counters.metrics <= 2  # nothing got past the first refused batch
        assert not after.batches  # the later sink waits too: sinks see batches in one order
        assert engine.status()["receive_queue"] == conn.pending
        full.full = False
        await wait_for(lambda: engine.counters.metrics == 2 + n, what="all samples")  # DBIRTH + DDATA
    assert engine.counters.backpressure_waits >= 5
    values = [s.value for s in full.samples if s.metric == "Temperature"][1:]
    assert values == [float(i) for i in range(n)]  # nothing lost, nothing reordered
    assert [s.value for s in after.samples] == [s.value for s in full.samples]


async def test_every_sink_that_pushes_back_is_waited_for() -> None:
    first, second = CollectingSink(), FullSink()
    async with on_memory(config(), first, second) as (broker, engine):
        edge = await edge_node(broker)
        await edge.nbirth()
        await wait_for(lambda: second.refusals >= 3)
        assert len(first.batches) == 1 and not second.batches
        second.full = False
        await wait_for(lambda: len(second.batches) == 1)
    assert engine.counters.backpressure_waits >= 3


# ------------------------------------------------------------------ shutdown


async def run_with_data(
    engine: Engine, broker: MemoryBroker, n: int
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    """Run the engine (stopped by setting the event) and send it a node, a device and ``n`` DDATA."""
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    await asyncio.wait_for(engine.connected.wait(), 5)
    edge = await edge_node(broker)
    await edge.nbirth()
    await edge.dbirth("D1")
    for v in range(n):
        await edge.ddata("D1", float(v))
    return stop, task


async def test_a_stop_while_a_sink_stays_full_ends_within_the_timeout_and_counts_what_it_gave_up() -> None:
    """docs/lake.md §4 "Stopping on a broken disk": the engine waits for the full sink until
    half of engine.stop_timeout_s, then gives up every message it received and counts it."""
    broker = MemoryBroker(high_water=50, low_water=10)
    full = FullSink()
    engine = Engine(config(**{"engine.stop_timeout_s": 2.0}), sinks=[full], transport=broker)
    n = 200
    stop, task = await run_with_data(engine, broker, n)
    await wait_for(lambda: full.refusals >= 3, what="the sink pushing back")
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 5)
    took = time.monotonic() - started
    assert 1.0 <= took < 2.0  # gave up at 1 s (half the timeout), well before 2 s
    assert not full.batches
    # everything the engine received: what it held, and what the broker handed over while
    # the stop drained its connection (the memory broker delivers its queue as it is taken)
    assert engine.lost_messages() == 2 + n


async def test_shutdown_drains_then_flushes_then_says_offline_then_disconnects() -> None:
    broker = MemoryBroker()
    flushed_at: list[int] = []
    sink = CollectingSink(on_flush=lambda: flushed_at.append(len(broker.log)))
    engine = Engine(config(**{"engine.primary": True}), sinks=[sink], transport=broker)
    stop, task = await run_with_data(engine, broker, 100)
    stop.set()  # the 102 messages are still waiting in the engine's transport
    await asyncio.wait_for(task, 5)
    assert len([s for s in sink.samples if s.metric == "Temperature"]) == 101  # drained, not dropped
    tail = [(e.action, e.topic) for e in broker.actions(ENGINE)[-4:]]
    assert tail == [
        ("unsubscribe", "spBv1.0/#"),
        ("publish", STATUS),
        ("publish", STATE),
        ("disconnect", ""),
    ]  # the context session is never unsubscribed: the broker keeps queueing for it
    assert ("unsubscribe", f"{CONTEXT}/#") not in actions(broker, CONTEXT_CLIENT)
    (flush,) = flushed_at
    unsubscribed = broker.log.index(broker.actions(ENGINE)[-4])
    assert unsubscribed < flush <= broker.log.index(broker.actions(ENGINE)[-3])
    status, state = broker.actions(ENGINE)[-3:-1]
    assert json.loads(status.payload)["online"] is False and status.retain and status.qos == 1
    assert json.loads(state.payload)["online"] is False and state.retain and state.qos == 1
    assert not any(e.action == "will" for e in broker.log)  # a clean stop: the Will is dropped
    assert engine.connected.is_set() is False
    assert engine.status()["connected"] is False


async def test_publishing_needs_a_live_session() -> None:
    broker = MemoryBroker()
    engine = Engine(config(), transport=broker)
    with pytest.raises(EngineError, match="not connected"):
        await engine.publish("x/y", b"1")
    assert engine.publish_nowait("x/y", b"1") is False
    async with running_engine(engine):
        await engine.publish("x/y", b"1", qos=1)
        assert engine.publish_nowait("x/z", b"2") is True
    assert [e.topic for e in broker.published("x/#")] == ["x/y", "x/z"]
    assert engine.publish_nowait("x/y", b"1") is False


# ------------------------------------------------------------------ losing the broker


async def test_a_lost_connection_makes_everything_stale_and_the_engine_reconnects() -> None:
    broker = MemoryBroker()
    sink = CollectingSink()
    cfg = config(**{"engine.primary": True, "engine.on_reconnect": "rebirth"})
    engine = Engine(cfg, sinks=[sink], transport=broker)
    async with running_engine(engine):
        (first_birth,) = broker.published(STATE)
        edge = await edge_node(broker)
        await edge.nbirth()
        await edge.dbirth("D1")
        await edge.ddata("D1", 1.0)
        broker.drop(ENGINE)  # the messages above are still untaken: they must not be lost
        await wait_for(lambda: engine.counters.reconnects == 1, what="reconnect")
        assert [s.value for s in sink.samples if s.metric == "Temperature"] == [20.0, 1.0]
        assert sink.events(SessionEventKind.DISCONNECTED)
        assert {e.device_id for e in sink.events(SessionEventKind.STALE)} == {None, "D1"}
        # the Will said offline with the old T; the new session's birth has a new T
        will = next(e for e in broker.log if e.action == "will")
        assert json.loads(will.payload) == {
            "online": False,
            "timestamp": json.loads(first_birth.payload)["timestamp"],
        }
        second_birth = broker.published(STATE)[-1]
        assert json.loads(second_birth.payload)["online"] is True
        assert json.loads(second_birth.payload)["timestamp"] >= json.loads(first_birth.payload)["timestamp"]
        await wait_for(lambda: len(ncmds(broker)) == 1, what="rebirth on reconnect")
    assert engine.counters.reconnects == 1
    assert engine.counters.rebirths_requested == 1
    assert attempts(broker) == 2


async def test_a_session_taken_over_is_a_lost_connection() -> None:
    async with on_memory(config()) as (broker, engine):
        intruder = broker.client(ENGINE)
        await intruder.connect()  # same client id: the broker drops the engine
        await wait_for(lambda: engine.counters.reconnects == 1, what="reconnect")


async def test_transient_connect_failures_are_retried_with_backoff() -> None:
    broker = MemoryBroker()
    broker.refuse(BrokerError("connection refused"), times=3)
    engine = Engine(config(), transport=broker)
    started = time.monotonic()
    async with running_engine(engine):
        assert attempts(broker) == 4
    assert time.monotonic() - started >= 3 * 0.005  # each retry waited (full jitter: >= half the cap)
    assert engine.counters.reconnects == 0  # failed attempts before the first session are not reconnects


async def test_connect_retries_bound_the_attempts_at_start_up() -> None:
    broker = MemoryBroker()
    broker.refuse(BrokerError("connection refused"))
    engine = Engine(config(**{"broker.connect_retries": 2}), transport=broker)
    with pytest.raises(EngineError, match=r"cannot reach the broker at mqtt://memory:1883 after 3 attempts"):
        await asyncio.wait_for(engine.run(), 5)
    assert attempts(broker) == 3


# ------------------------------------------------------------------ refusals that cannot heal


class ClosingSink(CollectingSink):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True


async def test_a_refusal_at_start_up_stops_the_engine_at_once() -> None:
    broker = MemoryBroker()
    broker.refuse(BrokerRefused("broker refused the connection: bad user name or password"))
    sink = ClosingSink()
    engine = Engine(config("mqtt://op:s3cret@memory:1883"), sinks=[sink], transport=broker)
    with pytest.raises(EngineError) as info:
        await asyncio.wait_for(engine.run(), 5)
    assert str(info.value) == (
        "cannot reach the broker at mqtt://op:***@memory:1883: "
        "broker refused the connection: bad user name or password"
    )
    assert isinstance(info.value.__cause__, BrokerRefused)
    assert attempts(broker) == 1  # not retried
    assert sink.closed


async def test_a_refusal_after_a_reconnect_stops_the_engine_too() -> None:
    broker = MemoryBroker()
    sink = ClosingSink()
    engine = Engine(config(), sinks=[sink], transport=broker)
    task = asyncio.create_task(engine.run())
    await asyncio.wait_for(engine.connected.wait(), 5)
    await asyncio.wait_for(engine.context_intake.connected.wait(), 5)
    edge = await edge_node(broker)
    await edge.nbirth()
    broker.refuse(BrokerRefused("broker refused the connection: not authorized"))
    broker.drop()  # e.g. a broker restarted with a new ACL
    with pytest.raises(
        EngineError, match=r"^cannot reach the broker at mqtt://memory:1883: .*not authorized$"
    ):
        await asyncio.wait_for(task, 5)
    # whichever of the three connections (Sparkplug, context, records) is refused first
    # stops the engine; none retries
    refused = [e for e in broker.log if e.action == "refused"]
    assert 1 <= len(refused) <= 3 and len({e.client for e in refused}) == len(refused)
    assert sink.events(SessionEventKind.DISCONNECTED)  # the loss was handled before stopping
    assert sink.closed


async def test_a_transient_refusal_code_is_retried() -> None:
    broker = MemoryBroker()
    broker.refuse(BrokerError("broker refused the connection: server unavailable"), times=2)
    engine = Engine(config(), transport=broker)
    async with running_engine(engine):
        assert attempts(broker) == 3


# ------------------------------------------------------------------ the status document


async def test_the_status_document_is_retained_and_says_offline_last() -> None:
    async with on_memory(config()) as (broker, _engine):
        await wait_for(lambda: len(broker.published(STATUS)) >= 2, what="two status documents")
        doc = json.loads(broker.published(STATUS)[0].payload)
        assert doc["connected"] is True and doc["online"] is True and doc["host_id"] == NS
        assert broker.published(STATUS)[0].qos == 0
    assert json.loads(broker.retained[STATUS][0])["online"] is False


# ------------------------------------------------------------------ the in-memory broker itself


async def test_memory_broker_routes_like_mosquitto() -> None:
    broker = MemoryBroker()
    a, b = broker.client("a", will=Will("w/a", b"gone", qos=1, retain=True)), broker.client("b")
    await a.connect()
    await b.connect()
    await b.publish("r/1", b"kept", retain=True)
    await b.publish("r/2", b"x", retain=True)
    await b.publish("r/2", b"", retain=True)  # deletes
    await a.subscribe("r/#", qos=1)
    await a.subscribe("r/+", qos=0)  # overlapping: still one copy, at the higher QoS
    await b.publish("r/3", b"live", qos=1)
    await b.publish("$SYS/x", b"hidden")
    await a.publish("r/4", b"own")  # the sender gets its own message
    assert a.take() == [
        ("r/1", b"kept", 0, True),  # retained at QoS 0: sent once per matching subscribe
        ("r/1", b"kept", 0, True),
        ("r/3", b"live", 1, False),
        ("r/4", b"own", 0, False),
    ]
    a.abort()
    assert broker.retained["w/a"] == (b"gone", 1)
    with pytest.raises(BrokerError, match="aborted"):
        await a.wait_messages()
    assert not a.publish_nowait("r/5", b"")
    await b.disconnect()
    assert [e.action for e in broker.log if e.client == "b"][-1] == "disconnect"
    assert sum(e.action == "will" for e in broker.log) == 1  # a clean disconnect drops the Will


async def test_memory_transport_pauses_at_high_water_and_resumes_below_low_water() -> None:
    broker = MemoryBroker()
    sub, pub = broker.client("sub", high_water=4, low_water=2), broker.client("pub")
    await sub.connect()
    await pub.connect()
    await sub.subscribe("t")
    for i in range(10):
        pub.publish_nowait("t", bytes([i]))
    assert (sub.pending, sub.queued, sub.pauses) == (4, 6, 1)
    assert [m[1][0] for m in sub.take(3)] == [0, 1, 2]  # 1 left < low water: delivery resumes
    assert (sub.pending, sub.queued) == (4, 3)
    got = (
        [m[1][0] for m in sub.take(100)] + [m[1][0] for m in sub.take(100)] + [m[1][0] for m in sub.take(100)]
    )
    assert got == list(range(3, 10))
    assert isinstance(sub, MemoryTransport)


# ------------------------------------------------------------------ nothing ends the receive loop


class BrokenSink(CollectingSink):
    """A sink with a bug: every batch it is given raises."""

    name = "broken"

    def add(self, batch: Batch) -> None:
        raise ValueError("a bug in this sink")


async def test_a_message_that_hits_a_bug_is_rejected_and_the_loop_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """docs: "a bad plant model can stop the engine" (issue 22): whatever one message
    does to the host logic costs that message only."""
    broker = MemoryBroker()
    sink = CollectingSink()
    engine = Engine(config(), sinks=[sink], transport=broker)
    real = engine.sessions.handle_raw

    def handle_raw(topic: Any, payload: bytes, received_at: int, **kw: Any) -> Any:
        if topic.device_id == "BAD":
            raise RuntimeError("boom")
        return real(topic, payload, received_at, **kw)

    monkeypatch.setattr(engine.sessions, "handle_raw", handle_raw)
    async with running_engine(engine):
        edge = await edge_node(broker)
        await edge.nbirth()
        await edge.dbirth("BAD")
        await edge.dbirth("D1")
        await edge.ddata("D1", 5.0)
        await wait_for(lambda: any(s.value == 5.0 for s in sink.samples), what="data after the bad message")
    (rejected,) = [r for b in sink.batches for r in b.rejected]
    assert rejected.topic == f"spBv1.0/{NS}/DBIRTH/N1/BAD"
    assert rejected.error == "internal error: RuntimeError: boom"
    assert engine.counters.internal_errors == 1
    assert any("error handling a message on" in r.message and r.exc_info for r in caplog.records)


async def test_a_sink_that_raises_is_counted_and_the_others_still_get_every_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = CollectingSink()
    async with on_memory(config(), BrokenSink(), good) as (broker, engine):
        edge = await edge_node(broker)
        await edge.nbirth()
        await edge.dbirth("D1")
        for v in (1.0, 2.0):
            await edge.ddata("D1", v)
        await wait_for(lambda: any(s.value == 2.0 for s in good.samples), what="data in the good sink")
    assert engine.counters.sink_errors >= 4  # NBIRTH, DBIRTH, two DDATA (and the deaths at stop)
    assert sum("sink broken failed to take a batch" in r.message for r in caplog.records) == 1  # rate-limited


async def test_rejects_from_the_sessions_are_logged_too(caplog: pytest.LogCaptureFixture) -> None:
    """README: every message that cannot be used is "counted, logged (rate-limited per
    source) and stored" -- an unknown alias included, with rebirth requests off."""
    sink = CollectingSink()
    async with on_memory(config(**{"sparkplug.rebirth_requests": False}), sink) as (broker, _engine):
        edge = await edge_node(broker)
        await edge.nbirth()
        await edge.dbirth("D1")
        await edge.ddata("D1", 1.0, alias=99)
        await wait_for(lambda: any(b.rejected for b in sink.batches), what="the reject")
    assert not ncmds(broker)
    lines = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"rejected on spBv1.0/{NS}/DDATA/N1/D1" in m and "alias 99" in m for m in lines), lines


async def test_a_reconnect_is_a_session_event_for_every_known_node() -> None:
    """docs/lake.md lists `reconnected` among the sessions table's events."""
    sink = CollectingSink()
    async with on_memory(config(), sink) as (broker, _engine):
        for node in ("N1", "N2"):
            edge = await edge_node(broker, node)
            await edge.nbirth()
        await wait_for(lambda: len(sink.events(SessionEventKind.BIRTH)) == 2, what="births")
        broker.drop(ENGINE)
        await wait_for(lambda: len(sink.events(SessionEventKind.RECONNECTED)) == 2, what="reconnected")
    events = sink.events(SessionEventKind.RECONNECTED)
    assert sorted(e.edge_node_id for e in events) == ["N1", "N2"]
    assert {e.detail for e in events} == {"host reconnected to the broker"}
    disconnected = sink.events(SessionEventKind.DISCONNECTED)
    assert min(e.ts for e in events) >= max(e.ts for e in disconnected)


def test_the_stop_watchdog_ends_a_stuck_process_with_exit_1_and_its_line() -> None:
    """uns.engine.stopping: armed by the signal handler, it ends the process whatever the
    event loop is doing (here: blocked in a sleep that would last 30 s)."""
    code = (
        "import logging, time\n"
        "from uns.engine.stopping import Watchdog\n"
        "logging.basicConfig()\n"
        "Watchdog(0.3, lambda: '7 received message(s) could not be persisted').arm()\n"
        "time.sleep(30)\n"
    )
    started = time.monotonic()
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    assert time.monotonic() - started < 10
    assert done.returncode == 1
    assert "stop timeout reached, exiting now: 7 received message(s) could not be persisted" in done.stderr
