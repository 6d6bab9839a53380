"""The engine as a Sparkplug B host against a real mosquitto: sessions, rebirths, STATE."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from tests.edge import RawEdge
from tests.engine_helpers import CollectingSink, engine_config, running_engine, wait_for
from uns.core.events import SessionEventKind
from uns.engine.host import Engine
from uns.mqtt.mosquitto import Mosquitto
from uns.sparkplug.codec import decode_payload

pytestmark = pytest.mark.integration


async def _collect_ncmd(client: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
    async for msg in client.messages:
        into.append((msg.topic.value, bytes(msg.payload)))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _born_edge_hearing_ncmd(
    engine: Engine, broker: Mosquitto, ns: str
) -> AsyncIterator[tuple[RawEdge, list[tuple[str, bytes]]]]:
    """``engine`` running, edge node N1 and its device D1 born, and the NCMDs sent to the group."""
    cmds: list[tuple[str, bytes]] = []
    async with running_engine(engine), aiomqtt.Client(broker.host, broker.port) as c:
        await c.subscribe(f"spBv1.0/{ns}/NCMD/#", qos=0)
        listener = asyncio.create_task(_collect_ncmd(c, cmds))
        edge = RawEdge(c, ns, "N1")
        await edge.nbirth()
        await edge.dbirth("D1")
        try:
            yield edge, cmds
        finally:
            listener.cancel()


async def test_births_data_and_death_are_tracked(broker: Mosquitto, ns: str) -> None:
    sink = CollectingSink()
    engine = Engine(engine_config(broker, ns), sinks=[sink])
    async with running_engine(engine), aiomqtt.Client(broker.host, broker.port) as c:
        edge = RawEdge(c, ns, "N1")
        await edge.nbirth()
        await edge.dbirth("D1")
        for v in (21.0, 22.0, 23.0):
            await edge.ddata("D1", v)
        await wait_for(
            lambda: len([s for s in sink.samples if s.metric == "Temperature"]) >= 4, what="samples"
        )
        await edge.ndeath()
        await wait_for(lambda: bool(sink.events(SessionEventKind.DEATH)), what="death")
    temps = [s.value for s in sink.samples if s.metric == "Temperature" and s.device_id == "D1"]
    assert temps[-3:] == [21.0, 22.0, 23.0]
    data = [s for s in sink.samples if s.metric == "Temperature"][-1]
    assert (data.group_id, data.edge_node_id, data.seq, data.bdseq) == (ns, "N1", 4, 0)
    assert data.path == f"_unmapped/{ns}/N1/D1"
    assert sink.events(SessionEventKind.BIRTH)
    assert sink.flushes >= 1  # clean stop flushes the sinks


async def test_seq_gap_filled_within_reorder_timeout(broker: Mosquitto, ns: str) -> None:
    sink = CollectingSink()
    engine = Engine(engine_config(broker, ns, **{"sparkplug.reorder_timeout_ms": 3000}), sinks=[sink])
    async with running_engine(engine), aiomqtt.Client(broker.host, broker.port) as c:
        edge = RawEdge(c, ns, "N1")
        await edge.nbirth()
        await edge.dbirth("D1")  # seq 1
        late = edge.ddata_payload(1.0)  # seq 2, held back
        early = edge.ddata_payload(2.0)  # seq 3
        await c.publish(edge.topic("DDATA", "D1"), early)
        await asyncio.sleep(0.2)
        await c.publish(edge.topic("DDATA", "D1"), late)
        await wait_for(
            lambda: len([s for s in sink.samples if s.metric == "Temperature"]) >= 3, what="samples"
        )
    values = [s.value for s in sink.samples if s.metric == "Temperature"]
    assert values[-2:] == [1.0, 2.0]  # released in seq order
    assert sink.events(SessionEventKind.REORDER_OK)
    assert engine.counters.rebirths_requested == 0


async def test_seq_gap_timeout_requests_rebirth(broker: Mosquitto, ns: str) -> None:
    sink = CollectingSink()
    engine = Engine(engine_config(broker, ns, **{"sparkplug.reorder_timeout_ms": 300}), sinks=[sink])
    async with _born_edge_hearing_ncmd(engine, broker, ns) as (edge, cmds):
        edge.next_seq()  # seq 2 is never sent
        await edge.ddata("D1", 5.0)
        await wait_for(lambda: bool(cmds), what="NCMD rebirth")
    topic, raw = cmds[0]
    assert topic == f"spBv1.0/{ns}/NCMD/N1"
    p = decode_payload(raw)
    assert p.seq is None and p.timestamp is not None
    (m,) = p.metrics
    assert (m.name, m.alias, int(m.datatype or 0), m.value) == ("Node Control/Rebirth", None, 11, True)
    assert sink.events(SessionEventKind.REORDER_TIMEOUT)


async def test_unknown_alias_requests_rebirth(broker: Mosquitto, ns: str) -> None:
    sink = CollectingSink()
    engine = Engine(engine_config(broker, ns), sinks=[sink])
    async with _born_edge_hearing_ncmd(engine, broker, ns) as (edge, cmds):
        await edge.ddata("D1", 1.0, alias=99)
        await wait_for(lambda: bool(cmds), what="NCMD rebirth")
    assert any("99" in r.error for b in sink.batches for r in b.rejected)


async def test_ndeath_with_stale_bdseq_is_ignored(broker: Mosquitto, ns: str) -> None:
    sink = CollectingSink()
    engine = Engine(engine_config(broker, ns), sinks=[sink])
    async with running_engine(engine), aiomqtt.Client(broker.host, broker.port) as c:
        edge = RawEdge(c, ns, "N1", bdseq=7)
        await edge.nbirth()
        await edge.dbirth("D1")
        await edge.ndeath(bdseq=6)  # an old Will arriving late
        await wait_for(lambda: bool(sink.events(SessionEventKind.DEATH_IGNORED)), what="death_ignored")
        await edge.ddata("D1", 3.0)
        await wait_for(lambda: any(s.value == 3.0 for s in sink.samples), what="data after ignored death")
    assert not [e for e in sink.events(SessionEventKind.DEATH) if e.device_id is None]


async def _retained(broker: Mosquitto, topic: str, timeout: float = 5) -> dict[str, object]:
    """The retained message on ``topic`` (a live one may come first: wait for its retained copy)."""
    async with aiomqtt.Client(broker.host, broker.port) as c:
        await c.subscribe(topic, qos=1)
        msg = await asyncio.wait_for(anext(c.messages), timeout)
    if not msg.retain:
        return await _retained(broker, topic, timeout)
    body = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
    assert isinstance(body, dict)
    return body


async def test_state_birth_and_clean_death(broker: Mosquitto, ns: str) -> None:
    engine = Engine(engine_config(broker, ns, **{"engine.primary": True}))
    state_topic = f"spBv1.0/STATE/{ns}"
    async with running_engine(engine):
        online = await _retained(broker, state_topic)
        assert online["online"] is True
        assert isinstance(online["timestamp"], int)
        # Someone publishes us offline while we are connected: the engine re-asserts online, same T.
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.publish(
                state_topic, json.dumps({"online": False, "timestamp": 1}).encode(), qos=1, retain=True
            )
        await asyncio.sleep(0.5)
        again = await _retained(broker, state_topic)
        assert again == online
    offline = await _retained(broker, state_topic)
    assert offline["online"] is False
    assert isinstance(offline["timestamp"], int) and offline["timestamp"] >= online["timestamp"]  # type: ignore[operator]


async def test_non_primary_publishes_no_state(broker: Mosquitto, ns: str) -> None:
    engine = Engine(engine_config(broker, ns, **{"engine.primary": False}))
    async with running_engine(engine):
        await asyncio.sleep(0.3)
    with pytest.raises(TimeoutError):
        await _retained(broker, f"spBv1.0/STATE/{ns}")


async def test_will_after_sigkill_has_the_birth_timestamp(broker: Mosquitto, ns: str) -> None:
    env = {
        **os.environ,
        "UNS_BROKER": broker.url,
        "UNS_HOST_ID": ns,
        "UNS_PRIMARY": "true",
        "UNS_LAKE": "",
        "UNS_REPUBLISH_ENABLED": "false",
    }
    proc = subprocess.Popen([sys.executable, "-m", "uns", "run"], env=env, stderr=subprocess.DEVNULL)
    try:
        state_topic = f"spBv1.0/STATE/{ns}"
        online = await _retained(broker, state_topic, timeout=20)
        assert online["online"] is True
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # the broker notices the dead socket only after keepalive; the Will then replaces the birth
        for _ in range(100):
            will = await _retained(broker, state_topic)
            if will["online"] is False:
                break
            await asyncio.sleep(0.5)
        assert will == {"online": False, "timestamp": online["timestamp"]}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_broker_restart_is_survived(own_broker: Mosquitto, ns: str) -> None:
    sink = CollectingSink()
    engine = Engine(engine_config(own_broker, ns), sinks=[sink])
    async with running_engine(engine):
        own_broker.kill()
        await wait_for(lambda: not engine.connected.is_set(), what="disconnect")
        own_broker.start()
        await wait_for(engine.connected.is_set, timeout=15, what="reconnect")
        async with aiomqtt.Client(own_broker.host, own_broker.port) as c:
            edge = RawEdge(c, ns, "N1")
            await edge.nbirth()
            await edge.dbirth("D1")
            await edge.ddata("D1", 42.0)
            await wait_for(lambda: any(s.value == 42.0 for s in sink.samples), what="data after restart")
    assert engine.counters.reconnects >= 1


async def test_garbage_is_counted_and_survived(broker: Mosquitto, ns: str) -> None:
    sink = CollectingSink()
    engine = Engine(engine_config(broker, ns, **{"sparkplug.rebirth_requests": False}), sinks=[sink])
    rng = random.Random(7)
    n = 10_000
    async with running_engine(engine), aiomqtt.Client(broker.host, broker.port) as c:
        edge = RawEdge(c, ns, "N1")
        await edge.nbirth()
        await edge.dbirth("D1")
        await wait_for(lambda: engine.counters.metrics >= 2, what="births")
        valid = edge.ddata_payload(1.0)
        base = engine.counters.messages
        for i in range(n):
            kind = i % 4
            if kind == 0:
                body = rng.randbytes(rng.randrange(0, 64))
            elif kind == 1:
                body = bytearray(valid)
                body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
                body = bytes(body)
            elif kind == 2:
                body = valid[: rng.randrange(len(valid))]
            else:
                body = edge.ddata_payload(float(i))
            topic = edge.topic("DDATA", "D1") if i % 7 else f"spBv1.0/{ns}/BOGUS/N1"
            await c.publish(topic, body, qos=0)
        await wait_for(lambda: engine.counters.messages - base >= n, timeout=60, what="all messages")
    assert engine.counters.messages - base == n
    used_or_rejected = engine.counters.metrics + engine.counters.rejected
    assert used_or_rejected > 0
    assert engine.counters.rejected > 0
