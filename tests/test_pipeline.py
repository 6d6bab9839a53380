"""Simulator -> mosquitto -> engine -> lake and UNS republish, end to end (real parts only)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.edge import RawEdge
from tests.engine_helpers import engine_config, wait_for
from uns import lake
from uns.core.context import ContextStore
from uns.core.events import ContextChange
from uns.core.values import value_text
from uns.engine.daemon import build_engine
from uns.engine.host import Engine
from uns.mqtt.mosquitto import Mosquitto
from uns.sim import PILOT_PATHS, SimConfig, SimReport, build_plant, run_sim

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
MODEL = str(ROOT / "examples" / "pilot-plant.toml")
NOT_SAMPLES = ("bdSeq", "Node Control/")


def _pilot_config(broker: Mosquitto, lake_dir: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "engine.prefix": "uns/v1",
        "engine.model": MODEL,
        "lake.path": str(lake_dir),
        "lake.commit_interval": 1.0,
        "republish.enabled": True,
    }
    values.update(overrides)
    return engine_config(broker, "pipeline", **values)


@contextlib.asynccontextmanager
async def _engine(engine: Engine) -> AsyncIterator[Engine]:
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    await asyncio.wait_for(engine.connected.wait(), 15)
    try:
        yield engine
    finally:
        # let everything in flight arrive, then stop cleanly (flushes the lake)
        previous = -1
        while engine.counters.messages != previous:
            previous = engine.counters.messages
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 60)


async def _collect(client: aiomqtt.Client, into: list[tuple[str, dict[str, Any]]]) -> None:
    async for msg in client.messages:
        into.append((msg.topic.value, json.loads(bytes(msg.payload))))  # type: ignore[arg-type]


def _sim(broker: Mosquitto, **options: Any) -> SimConfig:
    """The pilot plant against ``broker``."""
    return SimConfig(host=broker.host, port=broker.port, **options)


def _oracle(report: SimReport) -> ContextStore:
    store = ContextStore(window_ms=2**60)
    for ev in report.contexts:
        for key, value in ev.set.items():
            store.apply(ContextChange(ev.ts, ev.ts, ev.path, key, value))
        for key in ev.clear:
            store.apply(ContextChange(ev.ts, ev.ts, ev.path, key, None))
    return store


def _key(group: str, node: str, device: str | None, metric: str, ts: int) -> tuple[Any, ...]:
    return (group, node, device or "", metric, ts)


async def test_every_sample_reaches_the_lake_once_with_its_context(
    own_broker: Mosquitto, tmp_path: Path
) -> None:
    lake_dir = tmp_path / "lake"
    engine = build_engine(_pilot_config(own_broker, lake_dir))
    events: list[tuple[str, dict[str, Any]]] = []
    sim = _sim(own_broker, rate=60, duration=6, seed=5, context_interval=1.0, keep_samples=True)
    async with aiomqtt.Client(own_broker.host, own_broker.port) as sub:
        await sub.subscribe("uns/v1/acme/#", qos=0)
        listener = asyncio.create_task(_collect(sub, events))
        async with _engine(engine):
            report = await run_sim(sim)
        await asyncio.sleep(0.5)
        listener.cancel()

    sent = {
        _key(s.group_id, s.edge_node_id, s.device_id, s.metric, s.ts): s
        for s in report.samples
        if not s.metric.startswith(NOT_SAMPLES)
    }
    assert len(sent) > 300
    con = lake.connect(lake_dir)
    rows = con.execute(
        "SELECT group_id, edge_node_id, coalesce(device_id, ''), metric, epoch_ms(ts),"
        " value_text, datatype, path, batch_id, phase FROM measurements_asof"
    ).fetchall()
    in_lake: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in rows:
        key = tuple(r[:5])
        assert key not in in_lake, f"duplicate row {key}"
        in_lake[key] = r
    missing = set(sent) - set(in_lake)
    assert not missing, f"{len(missing)} samples missing, e.g. {sorted(missing)[:3]}"
    oracle = _oracle(report)
    for key, s in sent.items():
        row = in_lake[key]
        assert row[5] == value_text(s.value), key
        assert row[6] == s.datatype.name, key
        if s.device_id is not None:
            path = PILOT_PATHS[s.device_id]
            assert row[7] == path
            ctx = oracle.at(path, s.ts)
            assert (row[8], row[9]) == (ctx.get("batch_id"), ctx.get("phase") or None), key
    # the rejected table is empty: the plant is well-behaved
    assert con.execute("SELECT count(*) FROM rejected").fetchone() == (0,)
    con.close()

    # republished events: normalized, on the model's paths, context as known when they passed
    assert events
    stable = 0
    for topic, ev in events:
        assert topic == f"uns/v1/{ev['path']}/{ev['metric']}"
        assert ev["source"]["group"] == "PilotPlant"
        ctx = oracle.at(ev["path"], ev["ts"])
        changes = [c.ts for c in report.contexts if ev["path"].startswith(c.path)]
        if all(abs(ev["ts"] - t) > 300 for t in changes):  # not racing a context change
            stable += 1
            assert ev["context"].get("batch_id") == ctx.get("batch_id"), ev
    assert stable > len(events) // 4


async def test_late_context_is_corrected_by_measurements_asof(own_broker: Mosquitto, tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    # the lake alone: with the native decoder its samples travel in columns (SampleBlock)
    engine = build_engine(_pilot_config(own_broker, lake_dir, **{"republish.enabled": False}))
    sim = _sim(
        own_broker, rate=60, duration=5, seed=9, context_interval=1.5, context_delay=1.0, keep_samples=True
    )
    async with _engine(engine):
        report = await run_sim(sim)
    oracle = _oracle(report)
    con = lake.connect(lake_dir)
    rows = con.execute(
        "SELECT path, epoch_ms(ts), i.batch_id, a.batch_id FROM measurements AS i"
        " JOIN measurements_asof AS a USING (path, metric, ts, edge_node_id, device_id)"
        " WHERE path LIKE 'acme/basel/pilot/usp/%'"
    ).fetchall()
    con.close()
    assert rows
    late = 0
    for path, ts, at_ingest, asof in rows:
        truth = oracle.at(path, ts).get("batch_id")
        assert asof == truth, (path, ts)
        late += at_ingest != truth
    assert late > 0, "the delayed context events should have left some samples with stale context at ingest"


async def test_unmapped_sources_and_plc_context_metrics(own_broker: Mosquitto, tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    engine = build_engine(_pilot_config(own_broker, lake_dir))
    events: list[tuple[str, dict[str, Any]]] = []
    sim = _sim(own_broker, rate=60, duration=4, seed=3, context_interval=1.0)
    async with aiomqtt.Client(own_broker.host, own_broker.port) as c:
        await c.subscribe("uns/v1/_unmapped/#", qos=0)
        listener = asyncio.create_task(_collect(c, events))
        async with _engine(engine):
            edge = RawEdge(c, "PilotPlant", "X-Ctrl")
            await edge.nbirth()
            await edge.dbirth("BR-101")  # same device id as a mapped bioreactor, other node
            await edge.ddata("BR-101", 99.5)
            await run_sim(sim)
        listener.cancel()
    con = lake.connect(lake_dir)
    unmapped = con.execute(
        "SELECT DISTINCT path, unmapped FROM measurements WHERE edge_node_id = 'X-Ctrl'"
    ).fetchall()
    assert unmapped == [("_unmapped/PilotPlant/X-Ctrl/BR-101", True)]
    mapped = con.execute(
        "SELECT DISTINCT path FROM measurements WHERE edge_node_id = 'USP-Ctrl' AND device_id = 'BR-101'"
    ).fetchall()
    assert mapped == [("acme/basel/pilot/usp/br-101",)]
    plc = con.execute(
        "SELECT count(*) FROM context WHERE path = 'acme/basel/pilot/granulation/gr-201' AND key = 'batch_id'"
        " AND source LIKE 'sparkplug%'"
    ).fetchone()
    con.close()
    assert plc is not None and plc[0] >= 1
    assert any(topic.startswith("uns/v1/_unmapped/PilotPlant/X-Ctrl/BR-101/") for topic, _ in events)


def _start_engine_process(broker: Mosquitto, lake_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_") or k == "UNS_NATIVE"}
    env.update(
        UNS_BROKER=broker.url,
        UNS_LAKE=str(lake_dir),
        UNS_MODEL=MODEL,
        UNS_HOST_ID="crashy",
        UNS_LAKE_COMMIT_INTERVAL="0.7",
        UNS_REPUBLISH_ENABLED="false",
        UNS_ENGINE_ON_RECONNECT="rebirth",
        UNS_ENGINE_STATUS_INTERVAL="0.5",  # the test waits for a status that saw every node born
    )
    return subprocess.Popen(
        [sys.executable, "-m", "uns", "run"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL
    )


async def test_sigkill_at_any_moment_loses_and_duplicates_nothing(
    own_broker: Mosquitto, tmp_path: Path
) -> None:
    lake_dir = tmp_path / "lake"
    # the plant runs until the crashes are over (not for a fixed time: on a busy machine the
    # engine's starts took so long that a 16 s run had ended before the first window)
    sim = _sim(own_broker, rate=80, duration=None, seed=11, context_interval=2.0, keep_samples=True)
    nodes = len(build_plant(sim).nodes)
    sim_stop = asyncio.Event()
    windows: list[tuple[int, int]] = []  # (from, to) ms: published while the engine was up, and processed
    docs: list[tuple[int, dict[str, Any]]] = []  # the engine's status documents, by arrival time

    async def watch_status(c: aiomqtt.Client) -> None:
        async for msg in c.messages:
            docs.append((int(time.time() * 1000), json.loads(bytes(msg.payload))))

    def seen(since: int, cond: Callable[[dict[str, Any]], bool]) -> list[int]:
        return [t for t, doc in docs if t > since and cond(doc)]

    async def engine_up(since: int) -> int:
        """When this run of the engine had every node's births (re-learnt through a rebirth)."""
        born = lambda d: bool(d.get("online")) and d.get("nodes_online", 0) >= nodes  # noqa: E731
        await wait_for(lambda: bool(seen(since, born)), timeout=120, what="engine status")
        return min(seen(since, born))

    async def processed_up_to(c: aiomqtt.Client, cycle: int) -> int:
        """Publish a marker node's NBIRTH and wait for the engine's status to count it: it then
        has processed (and written to its WAL) all the plant published before, for the broker
        delivers to it in order.  Returns when the marker was published.  (A fixed margin
        before the kill was too short on a busy machine, where the engine lagged seconds.)"""
        sent = int(time.time() * 1000)
        await RawEdge(c, "Markers", f"mark-{cycle}").nbirth()
        marked = lambda d: d.get("nodes_known", 0) > nodes  # noqa: E731
        await wait_for(lambda: bool(seen(sent, marked)), timeout=120, what="the marker processed")
        return sent

    async with aiomqtt.Client(own_broker.host, own_broker.port) as status:
        await status.subscribe("uns/v1/_engine/crashy/status", qos=1)
        watcher = asyncio.create_task(watch_status(status))
        started = int(time.time() * 1000)
        proc = _start_engine_process(own_broker, lake_dir)
        sim_task = asyncio.create_task(run_sim(sim, stop=sim_stop))
        try:
            for cycle, delay in enumerate((2.5, 3.1, 2.2)):
                up = await engine_up(started)
                await asyncio.sleep(delay)  # the engine runs a while before it is killed
                windows.append((up, await processed_up_to(status, cycle)))
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 10)
                started = int(time.time() * 1000)
                proc = _start_engine_process(own_broker, lake_dir)
            await engine_up(started)  # a SIGTERM before its signal handlers exist just kills it
            sim_stop.set()
            report = await sim_task
            await asyncio.sleep(2)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0
        finally:
            watcher.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    con = lake.connect(lake_dir)
    total, distinct = con.execute(
        "SELECT count(*), count(DISTINCT (edge_node_id, device_id, metric, ts, seq)) FROM measurements"
    ).fetchone() or (0, 0)
    assert total == distinct, f"{total - distinct} duplicated rows after crashes"
    present = {
        tuple(r)
        for r in con.execute(
            "SELECT edge_node_id, coalesce(device_id, ''), metric, epoch_ms(ts) FROM measurements"
        ).fetchall()
    }
    con.close()
    expected = [
        (s.edge_node_id, s.device_id or "", s.metric, s.ts)
        for s in report.samples
        if s.message_type.endswith("DATA") and any(a <= s.ts <= b for a, b in windows)
    ]
    assert expected
    missing = [k for k in expected if k not in present]
    assert not missing, f"{len(missing)} of {len(expected)} samples accepted before a crash are missing"
