"""Durable context intake (issue 15, item 1): context events reach the lake exactly once.

Unit tests run the real engine over the in-memory broker (persistent sessions,
redelivery of unacknowledged QoS 1 messages); the integration tests run ``uns run``
as a process against a real mosquitto with persistence on and a real lake, and stop
it, kill it and restart the broker while context events are being published.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.engine_helpers import CollectingSink, connected, engine_config, on_memory, running_engine, wait_for
from tests.lake_helpers import query
from uns.config import Config
from uns.core.events import Batch, ContextChange
from uns.engine import daemon as uns_daemon
from uns.engine.host import Engine
from uns.engine.memory import MemoryBroker
from uns.errors import BrokerRefused, EngineError, LakeError
from uns.lake import LakeSink
from uns.mqtt.client import FastClient
from uns.mqtt.mosquitto import Mosquitto, free_port
from uns.mqtt.settings import BrokerSettings

NS = "ctx"
CONTEXT = f"{NS}/uns/_context"
INTAKE = f"uns-{NS}-context"  # the engine's persistent context session
ROOT = Path(__file__).resolve().parent.parent


def config(**overrides: Any) -> Config:
    fast = {"broker.reconnect_min": 0.01, "broker.reconnect_max": 0.05, "engine.status_interval": 0.2}
    return engine_config("mqtt://memory:1883", NS, **{**fast, **overrides})


def event(i: int) -> bytes:
    # a time the engine takes (from 2000 on, not far ahead: uns.core.intake_rules); back-dated,
    # so with the reason context.require_reason asks for
    event = {"id": f"ev-{i}", "ts": 1_767_261_600_000 + i, "set": {"batch_id": f"B-{i}"}, "reason": "test"}
    return json.dumps(event).encode()


class GatedSink(CollectingSink):
    """A sink whose durable() waits for the test to open the gate."""

    name = "gated"

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.durable_calls = 0

    async def durable(self) -> None:
        self.durable_calls += 1
        await self.gate.wait()


async def publish_context(broker: MemoryBroker, count: int) -> None:
    """The MES publishes events 0 .. count-1 for acme/line1, at QoS 1."""
    mes = await connected(broker, "mes")
    for i in range(count):
        await mes.publish(f"{CONTEXT}/acme/line1", event(i), qos=1)


def acks(broker: MemoryBroker) -> list[int]:
    return [e.qos for e in broker.actions(INTAKE) if e.action == "ack"]


def values(sink: CollectingSink) -> list[str | None]:
    return [c.value for b in sink.batches for c in b.context]


# ------------------------------------------------------------------ the in-memory broker's sessions


async def test_a_persistent_session_queues_while_away_and_redelivers_what_was_not_acknowledged() -> None:
    broker = MemoryBroker()
    sub = broker.client("sub", clean_session=False, manual_ack=True)
    await sub.connect()
    assert not sub.session_present
    await sub.subscribe("t/#", qos=1)
    pub = broker.client("pub")
    await pub.connect()
    for i in range(3):
        await pub.publish("t/x", bytes([i]), qos=1)
    held = sub.take_held()
    assert [(m[1], m[2], m[4] > 0) for m in held] == [
        (b"\x00", 1, True),
        (b"\x01", 1, True),
        (b"\x02", 1, True),
    ]
    assert sub.ack_all([held[0][4]])  # the first is safe; the other two are not
    await sub.disconnect()
    await pub.publish("t/x", b"\x03", qos=1)  # queued for the session
    await pub.publish("t/x", b"\x04", qos=0)  # QoS 0 is not queued (mosquitto's default)
    again = broker.client("sub", clean_session=False, manual_ack=True)
    await again.connect()
    assert again.session_present and again.subscriptions == {"t/#": 1}
    got = again.take_held()
    assert [m[1] for m in got] == [b"\x01", b"\x02", b"\x03"]
    assert [m[4] for m in got[:2]] == [m[4] for m in held[1:]]  # same packet ids, sent again
    assert [e.payload for e in broker.actions("sub") if e.action == "redeliver"] == [b"\x01", b"\x02"]
    assert again.ack_all(m[4] for m in got)
    await again.disconnect()
    clean = broker.client("sub")  # a clean session ends the stored one
    await clean.connect()
    assert not clean.session_present and not clean.subscriptions and "sub" not in broker.sessions


async def test_without_manual_ack_a_persistent_session_acknowledges_on_receipt() -> None:
    broker = MemoryBroker()
    sub = broker.client("sub", clean_session=False)
    await sub.connect()
    await sub.subscribe("t", qos=1)
    await sub.publish("t", b"a", qos=1)
    assert [m[4] for m in sub.take_held()] == [0]
    broker.drop("sub")
    await sub.connect()
    assert sub.session_present and sub.take() == []


# ------------------------------------------------------------------ the engine over it


async def test_context_is_acknowledged_only_once_the_sinks_say_it_is_durable() -> None:
    sink = GatedSink()
    async with on_memory(config(), sink) as (broker, engine):
        await publish_context(broker, 3)
        await wait_for(lambda: len(values(sink)) == 3 and sink.durable_calls > 0, what="processed")
        await asyncio.sleep(0.05)
        assert acks(broker) == []  # in the sink, not yet durable: not acknowledged
        sink.gate.set()
        await wait_for(lambda: len(acks(broker)) == 3, what="acknowledged")
        doc = engine.status()["context_intake"]
        assert doc == {"connected": True, "acknowledged": 3, "sessions_resumed": 0}
    assert engine.connected.is_set() is False


async def test_at_shutdown_what_was_received_is_processed_made_durable_acknowledged_then_disconnected() -> (
    None
):
    broker = MemoryBroker()
    sink = GatedSink()
    sink.gate.set()
    engine = Engine(config(), sinks=[sink], transport=broker)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    await wait_for(engine.context_intake.connected.is_set, what="context session")
    mes = await connected(broker, "mes")
    for i in range(5):
        assert mes.publish_nowait(f"{CONTEXT}/acme/line1", event(i), qos=1)
    stop.set()  # the five are in the intake's buffer, not yet taken
    await asyncio.wait_for(task, 5)
    assert values(sink) == [f"B-{i}" for i in range(5)]
    done = [e.action for e in broker.actions(INTAKE) if e.action != "publish"]  # publish: the answers
    assert done == ["connect", "subscribe"] + ["ack"] * 5 + ["disconnect"]  # never an unsubscribe


async def test_the_main_sparkplug_session_does_not_take_context() -> None:
    async with on_memory(config()) as (broker, _engine):
        main = broker.connection(f"uns-{NS}")
        intake = broker.connection(INTAKE)
        assert main is not None and intake is not None
        assert f"{CONTEXT}/#" not in main.subscriptions and main.clean_session
        assert intake.subscriptions == {f"{CONTEXT}/#": 1} and not intake.clean_session


async def test_events_published_while_the_engine_is_stopped_arrive_at_the_next_start() -> None:
    broker = MemoryBroker()
    first = CollectingSink()
    async with running_engine(Engine(config(), sinks=[first], transport=broker)):
        pass
    await publish_context(broker, 5)
    second = CollectingSink()
    engine = Engine(config(), sinks=[second], transport=broker)
    async with running_engine(engine):
        await wait_for(lambda: len(values(second)) == 5, what="queued events")
        await wait_for(lambda: len(acks(broker)) == 5, what="acknowledged")
    assert values(second) == [f"B-{i}" for i in range(5)]
    assert engine.context_intake.sessions_resumed == 1
    # the subscription came from the session: not made again (no retained re-send)
    assert [e.action for e in broker.actions(INTAKE)].count("subscribe") == 1


async def test_a_crash_before_the_acknowledgement_means_redelivery() -> None:
    broker = MemoryBroker()
    sink = GatedSink()  # never durable: the engine dies before it would acknowledge
    engine = Engine(config(), sinks=[sink], transport=broker)
    task = asyncio.create_task(engine.run())
    await wait_for(engine.context_intake.connected.is_set, what="context session")
    await publish_context(broker, 3)
    await wait_for(lambda: len(values(sink)) == 3, what="processed")
    task.cancel()  # the process dies ...
    broker.drop()  # ... and its sockets with it
    await asyncio.gather(task, return_exceptions=True)
    assert acks(broker) == []
    after = CollectingSink()
    engine = Engine(config(), sinks=[after], transport=broker)
    async with running_engine(engine):
        await wait_for(lambda: len(values(after)) == 3, what="redelivered")
        await wait_for(lambda: len(acks(broker)) == 3, what="acknowledged")
    assert values(after) == ["B-0", "B-1", "B-2"]
    assert len([e for e in broker.actions(INTAKE) if e.action == "redeliver"]) == 3


async def test_a_refusal_of_the_context_connection_stops_the_engine_in_order() -> None:
    broker = MemoryBroker()
    broker.refuse(BrokerRefused("broker refused the connection: not authorized"), identifier=INTAKE)
    sink = CollectingSink()
    engine = Engine(config(), sinks=[sink], transport=broker)
    with pytest.raises(
        EngineError, match=r"^cannot reach the broker at mqtt://memory:1883: .*not authorized$"
    ):
        await asyncio.wait_for(engine.run(), 5)
    assert [e.action for e in broker.actions(INTAKE)] == ["refused"]  # not retried
    main = [e.action for e in broker.actions(f"uns-{NS}")]
    if main:  # the Sparkplug session, if it got up, was shut down in order
        assert main[0] == "connect" and main[-1] == "disconnect"


class FailingOnceSink(CollectingSink):
    """durable() fails once (a full disk, say), then works."""

    name = "failing"

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def durable(self) -> None:
        if self.failures:
            self.failures -= 1
            raise LakeError("fsync of the lake write-ahead log failed: no space left on device")


async def test_a_batch_that_cannot_be_made_durable_is_not_acknowledged_and_comes_again() -> None:
    sink = FailingOnceSink()
    async with on_memory(config(), sink) as (broker, _engine):
        await publish_context(broker, 1)
        await wait_for(lambda: len(acks(broker)) == 1, what="acknowledged after the retry")
    assert [e.action for e in broker.actions(INTAKE)].count("connect") >= 2  # a new connection ...
    assert [e.payload for e in broker.actions(INTAKE) if e.action == "redeliver"] == [
        event(0)
    ]  # ... got it again


async def test_redelivered_events_are_in_the_lake_once(tmp_path: Path) -> None:
    broker = MemoryBroker()
    lake_dir = tmp_path / "lake"
    lake = LakeSink(lake_dir)
    gated = GatedSink()  # never durable: no acknowledgement leaves
    engine = Engine(config(), sinks=[lake, gated], transport=broker)
    task = asyncio.create_task(engine.run())
    await wait_for(engine.context_intake.connected.is_set, what="context session")
    await publish_context(broker, 3)
    await wait_for(lambda: len(values(gated)) == 3, what="processed")
    await lake.durable()  # in the lake's WAL, but never acknowledged to the broker
    task.cancel()
    broker.drop()
    await asyncio.gather(task, return_exceptions=True)
    assert acks(broker) == []
    # the restart, as the daemon does it: the ids the lake holds are not applied again
    engine = Engine(config(), sinks=[LakeSink(lake_dir)], transport=broker)
    engine.dispatch.remember_applied(uns_daemon.load_applied_context_ids(lake_dir))
    async with running_engine(engine):
        await wait_for(lambda: len(acks(broker)) == 3, what="acknowledged")
    assert len([e for e in broker.actions(INTAKE) if e.action == "redeliver"]) == 3
    assert context_rows(lake_dir) == {f"B-{i}": 1 for i in range(3)}


async def test_lake_durable_writes_and_fsyncs_what_was_added(tmp_path: Path) -> None:
    async with LakeSink(tmp_path / "lake") as lake:
        await lake.durable()  # nothing added: returns at once
        lake.add(Batch(context=[ContextChange(1, 2, "a/b", "k", "v")]))
        await lake.durable()
        assert lake._active is not None and lake._active.size > 16  # written ...
        assert not lake._active.unsynced  # ... and fsynced
        assert lake._active is not None and not lake._active.unsynced


# ------------------------------------------------------------------ against mosquitto, with uns run


def context_rows(lake_dir: Path) -> dict[str, int]:
    rows = query(lake_dir, "SELECT value, count(*) FROM context WHERE key = 'batch_id' GROUP BY 1")
    return {str(v): int(n) for v, n in rows}


class Daemon:
    """``uns run`` as a process of its own (stopped with SIGTERM, or SIGKILLed)."""

    def __init__(self, broker: Mosquitto, lake_dir: Path, log: Path) -> None:
        self.argv = [sys.executable, "-m", "uns", "run", "--broker", broker.url, "--lake", str(lake_dir)]
        self.argv += ["--host-id", NS, "--log-level", "info"]
        self.env = {**os.environ, "UNS_ENGINE_PREFIX": f"{NS}/uns", "UNS_LAKE_FSYNC_INTERVAL": "1.0"}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=out)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.proc = None
        return code


async def wait_session(
    daemon: Daemon, timeout: float = 60.0, *, kind: str = "context", seen: int = -1
) -> None:
    """Until ``uns run`` says its ``kind`` session (context, records) is up (start-up:
    imports, lake, connections): once more than ``seen`` times (default: than now)."""
    deadline = time.monotonic() + timeout
    line = f"{kind} intake connected"
    if seen < 0:
        seen = daemon.log.read_text(errors="replace").count(line) if daemon.log.exists() else 0
    while time.monotonic() < deadline:
        if daemon.log.exists() and daemon.log.read_text(errors="replace").count(line) > seen:
            return
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log.read_text()
        await asyncio.sleep(0.1)
    raise AssertionError(f"the engine's {kind} session did not come up")


async def publish_events(broker: Mosquitto, start: int, count: int, pace: float = 0.0) -> None:
    async with FastClient(
        BrokerSettings(host=broker.host, port=broker.port), identifier=f"mes-{start}"
    ) as mes:
        for i in range(start, start + count):
            await mes.publish(f"{CONTEXT}/acme/line1", event(i), qos=1)
            if pace:
                await asyncio.sleep(pace)


def expect_once(lake_dir: Path, count: int) -> None:
    rows = context_rows(lake_dir)
    missing = sorted(set(range(count)) - {int(k[2:]) for k in rows})
    assert not missing, f"lost: {missing[:20]}"
    assert {k: n for k, n in rows.items() if n != 1} == {}, "duplicates"


async def running_daemon(broker: Mosquitto, lake_dir: Path, tmp_path: Path) -> Daemon:
    """`uns run` on ``lake_dir``, started and with its context session up."""
    daemon = Daemon(broker, lake_dir, tmp_path / "uns.log")
    daemon.start()
    await wait_session(daemon)
    return daemon


async def take_the_queue(daemon: Daemon) -> None:
    """Start the engine again, let the broker hand over what it queued, stop it cleanly."""
    daemon.start()
    await wait_session(daemon)
    await asyncio.sleep(3)  # the queued messages arrive right after the session is up
    assert await asyncio.to_thread(daemon.stop) == 0


@pytest.mark.integration
async def test_engine_stopped_while_events_are_published(
    persistent_broker: Mosquitto, tmp_path: Path
) -> None:
    lake_dir = tmp_path / "lake"
    daemon = await running_daemon(persistent_broker, lake_dir, tmp_path)
    publishing = asyncio.create_task(publish_events(persistent_broker, 0, 300, pace=0.005))
    await asyncio.sleep(0.5)
    assert await asyncio.to_thread(daemon.stop) == 0
    await publishing  # the rest are queued by the broker for the engine's session
    await take_the_queue(daemon)
    expect_once(lake_dir, 300)


@pytest.mark.integration
async def test_engine_killed_mid_stream(persistent_broker: Mosquitto, tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    daemon = await running_daemon(persistent_broker, lake_dir, tmp_path)
    publishing = asyncio.create_task(publish_events(persistent_broker, 0, 400, pace=0.003))
    await asyncio.sleep(0.6)
    await asyncio.to_thread(daemon.stop, signal.SIGKILL)
    await publishing
    await take_the_queue(daemon)
    assert "(session resumed)" in daemon.log.read_text()
    expect_once(lake_dir, 400)


@pytest.mark.integration
async def test_broker_restarted_while_events_are_queued(persistent_broker: Mosquitto, tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    daemon = await running_daemon(persistent_broker, lake_dir, tmp_path)
    assert await asyncio.to_thread(daemon.stop) == 0  # the session exists, the engine is away
    await publish_events(persistent_broker, 0, 200)  # queued for it
    persistent_broker.stop()  # saves the sessions and their queues (persistence true)
    persistent_broker.start()
    await take_the_queue(daemon)
    expect_once(lake_dir, 200)
    assert "(session resumed)" in daemon.log.read_text()


@pytest.mark.integration
async def test_broker_restarted_under_a_running_engine(persistent_broker: Mosquitto, tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    daemon = await running_daemon(persistent_broker, lake_dir, tmp_path)
    await publish_events(persistent_broker, 0, 150)  # some still unacknowledged at the restart
    persistent_broker.stop()
    persistent_broker.start()
    await wait_session(daemon)  # the engine reconnected to its kept session
    await publish_events(persistent_broker, 150, 50)
    await asyncio.sleep(3)
    assert await asyncio.to_thread(daemon.stop) == 0
    expect_once(lake_dir, 200)


@pytest.mark.integration
async def test_beyond_the_broker_queue_limit_messages_are_dropped_by_the_broker(tmp_path: Path) -> None:
    # the documented limit: what the broker drops the engine never sees
    with tempfile.TemporaryDirectory(prefix="uns-mosq-") as d:
        limited = Mosquitto(
            port=free_port(),
            workdir=Path(d),
            persistence=True,
            extra_conf="max_queued_messages 10\nlog_type notice\n",
        )
        with limited:
            lake_dir = tmp_path / "lake"
            daemon = Daemon(limited, lake_dir, tmp_path / "uns.log")
            daemon.start()
            await wait_session(daemon)
            assert await asyncio.to_thread(daemon.stop) == 0
            await publish_events(limited, 0, 50)  # the engine is away: 10 are queued
            daemon.start()
            await wait_session(daemon)
            await asyncio.sleep(3)
            assert await asyncio.to_thread(daemon.stop) == 0
            broker_log = (Path(d) / "mosquitto.log").read_text()
    rows = context_rows(lake_dir)
    assert 0 < len(rows) < 50 and "B-0" in rows  # the oldest are kept, the newer dropped
    assert "Outgoing messages are being dropped for client uns-ctx-context" in broker_log
