"""Promises of the README and docs about the engine that had code but no test (issue 22).

Each test is named after the promise and quotes where it is written.  The integration
tests use real parts only: the session's mosquitto, a lake on disk, real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiomqtt
import pytest

import uns.logs
from tests.aio_helpers import running
from tests.edge import RawEdge
from tests.engine_helpers import CollectingSink, connected, engine_config, on_memory, running_engine, wait_for
from tests.lake_helpers import break_table, query, repair_table
from uns.engine.daemon import build_engine
from uns.engine.host import Engine
from uns.engine.memory import MemoryBroker
from uns.lake import LakeConfig, LakeSink
from uns.logs import RateLimitedLog
from uns.mqtt.mosquitto import Mosquitto
from uns.sparkplug.codec import decode_payload

ROOT = Path(__file__).resolve().parent.parent


def status_topic(ns: str) -> str:
    """Where :func:`tests.engine_helpers.engine_config` makes the engine publish its status."""
    return f"{ns}/uns/_engine/{ns}/status"


@contextlib.asynccontextmanager
async def collected(broker: Mosquitto, *filters: str) -> AsyncIterator[list[tuple[str, bytes, bool]]]:
    """Every message on ``filters`` while the block runs: (topic, payload, retain), in order."""
    got: list[tuple[str, bytes, bool]] = []
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for f in filters:
            await client.subscribe(f, qos=1)

        async def collect() -> None:
            async for msg in client.messages:
                got.append((msg.topic.value, bytes(msg.payload), msg.retain))  # type: ignore[arg-type]

        async with running(collect()):
            yield got


def docs_of(messages: list[tuple[str, bytes, bool]]) -> list[dict[str, Any]]:
    return [json.loads(payload) for _topic, payload, _retain in messages]


async def wait_for_doc(
    messages: list[tuple[str, bytes, bool]],
    cond: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """The first status document (received so far or later) for which ``cond`` holds (the
    timeout is generous: on a busy machine `uns run` took more than 10 s to start its worker)."""
    await wait_for(lambda: any(cond(d) for d in docs_of(messages)), timeout=timeout, what=what)
    return next(d for d in docs_of(messages) if cond(d))


async def retained(broker: Mosquitto, topic: str) -> dict[str, Any]:
    """The message the broker retains on ``topic``, read by a fresh subscriber."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for msg in client.messages:
                if msg.retain:
                    body = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                    assert isinstance(body, dict)
                    return body
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ 1. back-pressure


@pytest.mark.integration
async def test_lake_backpressure_pauses_intake_shows_receive_queue_in_status_and_resumes(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    """README.md, "Nothing is lost silently": "beyond that processing pauses (received
    messages wait in the engine's receive queue, shown as `receive_queue` in the status)
    until the lake catches up"; docs/lake.md §3: "the engine then pauses its processing and
    retries after `retry_after` seconds ... so nothing is dropped while memory lasts"."""
    root = tmp_path / "lake"
    config = LakeConfig(
        commit_interval=0.05, wal_max_bytes=20_000, retry_initial_s=0.05, retry_max_s=0.2, compact_interval=0
    )
    sink = LakeSink(root, config)
    engine = Engine(engine_config(broker, ns, **{"engine.status_interval": 0.1}), sinks=[sink])
    async with collected(broker, status_topic(ns)) as status:
        async with running_engine(engine), aiomqtt.Client(broker.host, broker.port) as c:
            edge = RawEdge(c, ns, "N1")
            await edge.nbirth()
            await edge.dbirth("D1")
            await wait_for(lambda: engine.counters.metrics >= 2, what="births")
            born = engine.counters.metrics
            aside = break_table(root, "measurements")  # commits fail: the WAL fills up
            sent = 0
            while engine.counters.backpressure_waits == 0:
                assert sent < 20_000, "the lake never pushed back"
                await edge.ddata("D1", float(sent))
                sent += 1
                if sent % 20 == 0:
                    await asyncio.sleep(0.01)
            for _ in range(300):  # these arrive while processing is paused
                await edge.ddata("D1", float(sent))
                sent += 1
            paused = await wait_for_doc(
                status,
                lambda d: d["receive_queue"] >= 250 and d["sinks"]["lake"]["state"] == "full",
                "a status document showing the paused intake",
            )
            assert paused["counters"]["backpressure_waits"] >= 1
            assert paused["counters"]["metrics"] < born + sent  # not all processed: paused
            processed = engine.counters.metrics
            await asyncio.sleep(0.3)
            assert engine.counters.metrics == processed, "processing went on while the lake was full"
            repair_table(root, "measurements", aside)
            resumed = await wait_for_doc(
                status,
                lambda d: d["receive_queue"] == 0 and d["counters"]["metrics"] == born + sent,
                "a status document after the lake caught up",
                timeout=15,
            )
            assert resumed["counters"]["backpressure_waits"] >= paused["counters"]["backpressure_waits"]
        final = docs_of(status)[-1]
    assert final["online"] is False and final["receive_queue"] == 0
    assert (final["sinks"]["lake"]["state"], final["sinks"]["lake"]["rows_pending"]) == ("ok", 0)
    values = query(
        root, "SELECT value_double FROM measurements WHERE metric = 'Temperature' AND device_id = 'D1'"
    )
    assert Counter(v for (v,) in values) == Counter([20.0] + [float(i) for i in range(sent)])


# ------------------------------------------------------------------ 2. the status document

#: what the README ("Health") lists, by the status document's key names
STATUS_COUNTERS = {"messages", "metrics", "rejected", "rebirths_requested", "seq_gaps", "reconnects"}
#: docs/lake.md §4, `sink.stats()` reports
LAKE_STATS = {
    "state", "rows_added", "rows_committed", "rows_pending", "commits", "segments_committed",
    "segments_replayed", "commit_errors", "last_error", "retry_in_s", "wal_bytes", "wal_segments",
    "last_commit_ms", "commit_latency_ms", "backpressure", "torn_bytes_ignored", "compactions",
    "last_compaction_s", "compacting", "compactions_abandoned", "commit_worker", "commit_worker_pid",
    "commit_worker_restarts", "commit_worker_recycled",
}  # fmt: skip
#: docs/model.md §6, "Counters:"
REPUBLISH_STATS = {"published", "queue_depth", "dropped_queue_full", "dropped_on_close", "filtered", "errors"}


@pytest.mark.integration
async def test_status_document_is_retained_lists_the_documented_keys_and_its_counters_move(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    """README.md, "Health": "a retained JSON status on `<prefix>/_engine/<host_id>/status`
    every `engine.status_interval` seconds (messages, metrics, rejected, rebirths requested,
    seq gaps, reconnects, sink states)"; "shown as `receive_queue` in the status"."""
    config = engine_config(
        broker,
        ns,
        **{
            "engine.status_interval": 0.2,
            "lake.path": str(tmp_path / "lake"),
            "lake.commit_interval": 0.2,
            "republish.enabled": True,
            "sparkplug.reorder_timeout_ms": 200,
        },
    )
    engine = build_engine(config)  # the sinks of `uns run`: the lake, then republish
    async with collected(broker, status_topic(ns)) as status:
        async with running_engine(engine), aiomqtt.Client(broker.host, broker.port) as c:
            first = await wait_for_doc(status, lambda d: True, "the first status document")
            keys = {"host_id", "online", "ts", "uptime_s", "connected", "receive_queue", "counters"}
            assert set(first) >= keys | {"nodes_online", "nodes_known", "sinks"}
            assert (first["host_id"], first["online"], first["connected"]) == (ns, True, True)
            assert set(first["counters"]) >= STATUS_COUNTERS
            assert set(first["sinks"]) == {"lake", "republish"}
            assert set(first["sinks"]["lake"]) >= LAKE_STATS, LAKE_STATS - set(first["sinks"]["lake"])
            assert set(first["sinks"]["republish"]) >= REPUBLISH_STATS
            assert first["sinks"]["lake"]["commit_worker"] == "process"

            edge = RawEdge(c, ns, "N1")
            await edge.nbirth()
            await edge.dbirth("D1")
            for v in range(5):
                await edge.ddata("D1", float(v))
            await c.publish(f"spBv1.0/{ns}/BOGUS/N1", b"\x00")  # rejected
            edge.next_seq()  # a seq gap: reorder timeout, then a rebirth request
            await edge.ddata("D1", 99.0)
            moved = await wait_for_doc(
                status,
                lambda d: (
                    d["counters"]["rejected"] >= 1
                    and d["counters"]["seq_gaps"] >= 1
                    and d["counters"]["rebirths_requested"] >= 1
                    and d["sinks"]["lake"]["rows_committed"] > 0
                    and d["sinks"]["republish"]["published"] >= 6
                ),
                "a status document with the counters moved",
            )
            assert moved["counters"]["messages"] >= 9
            assert moved["counters"]["metrics"] >= 7  # DBIRTH's two and five DDATA
            assert (moved["nodes_online"], moved["nodes_known"]) == (1, 1)
            assert moved["ts"] > first["ts"] and moved["uptime_s"] >= first["uptime_s"]

            async with aiomqtt.Client(broker.host, broker.port, identifier=f"uns-{ns}"):
                pass  # takes the engine's session over: the broker drops its connection
            await wait_for_doc(status, lambda d: d["counters"]["reconnects"] == 1, "reconnects counted")
        await wait_for(lambda: docs_of(status)[-1]["online"] is False, what="the last status document")
    last = await retained(broker, status_topic(ns))
    assert last["online"] is False
    assert last["counters"] == engine.counters.as_dict()
    lake_stats = last["sinks"]["lake"]
    assert lake_stats["rows_pending"] == 0 and lake_stats["rows_committed"] == lake_stats["rows_added"] > 0
    assert last["sinks"]["republish"]["queue_depth"] == 0


def _memory_config(**overrides: Any) -> Any:
    fast = {"broker.reconnect_min": 0.01, "broker.reconnect_max": 0.05, "engine.status_interval": 0.2}
    return engine_config("mqtt://memory:1883", "plant", **{**fast, **overrides})


async def _run_briefly(engine: Engine, broker: MemoryBroker) -> None:
    async with running_engine(engine):
        edge_client = await connected(broker, "edge")
        edge = RawEdge(edge_client, "plant", "N1")  # type: ignore[arg-type]  # publishes alike
        await edge.nbirth()
        await edge.dbirth("D1")
        await edge_client.publish("spBv1.0/plant/BOGUS/N1", b"\x00")
        await wait_for(lambda: engine.counters.messages >= 3)


def _stop_line(caplog: pytest.LogCaptureFixture) -> str:
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine stopped")]
    assert len(lines) == 1, lines
    return lines[0]


async def test_status_counters_are_logged_at_stop(caplog: pytest.LogCaptureFixture) -> None:
    """README.md, "Health": "a retained JSON status ... (messages, metrics, rejected,
    rebirths requested, seq gaps, reconnects, sink states), also logged at stop"."""
    caplog.set_level(logging.INFO, logger="uns.engine")
    broker = MemoryBroker()
    engine = Engine(_memory_config(), sinks=[CollectingSink()], transport=broker)
    await _run_briefly(engine, broker)
    logged = json.loads(_stop_line(caplog).partition(": ")[2])
    counters = logged.get("counters", logged)  # the counters, alone or in the whole status
    assert counters == engine.counters.as_dict()
    assert set(counters) >= STATUS_COUNTERS
    assert counters["messages"] >= 3 and counters["rejected"] >= 1


async def test_sink_states_are_logged_at_stop_too(caplog: pytest.LogCaptureFixture) -> None:
    """README.md, "Health": "... seq gaps, reconnects, sink states), also logged at stop"."""
    caplog.set_level(logging.DEBUG)
    broker = MemoryBroker()
    engine = Engine(_memory_config(), sinks=[CollectingSink()], transport=broker)
    await _run_briefly(engine, broker)
    logged = json.loads(_stop_line(caplog).partition(": ")[2])
    assert "collect" in logged.get("sinks", {}), logged


# ------------------------------------------------------------------ 3. rate-limited logging


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_rate_limited_log_writes_one_line_per_key_per_interval_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/architecture.md: "`uns/logs.py` ... a rate-limited logger"; uns/logs.py:
    "Logs at most one line per key per ``interval`` seconds, counting the rest"; README.md:
    "counted, logged (rate-limited per source)"."""
    clock = FakeClock()
    monkeypatch.setattr(uns.logs, "time", SimpleNamespace(monotonic=clock.monotonic))
    logger = logging.getLogger("tests.promises.ratelimit")
    caplog.set_level(logging.WARNING, logger=logger.name)
    rlog = RateLimitedLog(logger, interval=10.0)

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == logger.name]

    rlog.warning("a", "bad thing %d on %s", 1, "a")
    for i in range(2, 6):  # within the interval: suppressed, counted
        clock.now += 2.0 if i == 2 else 1.0
        rlog.warning("a", "bad thing %d on %s", i, "a")
    rlog.warning("b", "bad thing %d on %s", 1, "b")  # another key has its own interval
    assert lines() == ["bad thing 1 on a", "bad thing 1 on b"]
    assert all(r.levelno == logging.WARNING for r in caplog.records)

    clock.now = 1000.0 + 9.999  # still inside a's interval
    rlog.warning("a", "bad thing %d on %s", 6, "a")
    assert len(lines()) == 2
    clock.now = 1000.0 + 10.0  # the interval is over: one line, with the suppressed count
    rlog.warning("a", "bad thing %d on %s", 7, "a")
    assert lines()[-1] == "bad thing 7 on a (5 similar suppressed)"
    clock.now += 10.0  # nothing was suppressed since: no count
    rlog.warning("a", "bad thing %d on %s", 8, "a")
    assert lines()[-1] == "bad thing 8 on a"
    clock.now += 1.0  # a logged a second ago: that does not hold b back
    rlog.warning("b", "bad thing %d on %s", 2, "b")
    assert lines()[-1] == "bad thing 2 on b"
    clock.now += 1.0
    rlog.warning("b", "bad thing %d on %s", 3, "b")  # suppressed
    clock.now += 9.0
    rlog.warning("b", "bad thing %d on %s", 4, "b")
    assert lines()[3:] == ["bad thing 8 on a", "bad thing 2 on b", "bad thing 4 on b (1 similar suppressed)"]


async def test_rejected_messages_are_logged_rate_limited_per_source(caplog: pytest.LogCaptureFixture) -> None:
    """README.md, "Nothing is lost silently": "every message that cannot be used ... is
    counted, logged (rate-limited per source) and stored in the lake's `rejected` table"."""
    caplog.set_level(logging.WARNING, logger="uns.engine")
    sink = CollectingSink()
    async with on_memory(_memory_config(), sink) as (broker, engine):
        other = await connected(broker, "garbage")
        for _ in range(25):
            await other.publish("spBv1.0/plant/BOGUS/N1", b"\x00")
            await other.publish("spBv1.0/plant/BOGUS/N2", b"\x01")
        await wait_for(lambda: engine.counters.messages == 50)
    assert engine.counters.rejected == 50  # every one counted
    assert len([r for b in sink.batches for r in b.rejected]) == 50  # and handed to the sinks
    logged = [r.getMessage() for r in caplog.records if r.name == "uns.engine" and "BOGUS" in r.getMessage()]
    assert len([m for m in logged if "BOGUS/N1" in m]) == 1, logged
    assert len([m for m in logged if "BOGUS/N2" in m]) == 1, logged


# ------------------------------------------------------------------ 4. rebirth on reconnect


@pytest.mark.integration
@pytest.mark.parametrize("on_reconnect", ["rebirth", "wait"])
async def test_on_reconnect_rebirth_asks_every_known_node_for_a_rebirth_after_a_reconnect(
    broker: Mosquitto, ns: str, on_reconnect: str
) -> None:
    """examples/uns.toml, [engine]: `on_reconnect = "wait"  # or "rebirth": ask every known
    node for a rebirth`; README.md: "Reconnects forever with capped, jittered backoff".
    ("wait", the default, is the control: no NCMD at all.)"""
    group_b = f"{ns}-B"
    engine = Engine(engine_config(broker, ns, **{"engine.on_reconnect": on_reconnect}))
    ncmd_filters = (f"spBv1.0/{ns}/NCMD/#", f"spBv1.0/{group_b}/NCMD/#")
    async with collected(broker, *ncmd_filters) as cmds, running_engine(engine):
        async with aiomqtt.Client(broker.host, broker.port) as c:
            edges = [RawEdge(c, ns, "N1"), RawEdge(c, ns, "N2"), RawEdge(c, group_b, "N3")]
            for edge in edges:
                await edge.nbirth()
                await edge.dbirth("D1")
            await wait_for(lambda: engine.sessions.node_counts() == (3, 3), what="three nodes born")
        await asyncio.sleep(0.2)
        assert not cmds, "no rebirth was due before the reconnect"
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client(broker.host, broker.port, identifier=f"uns-{ns}"):
                pass  # takes the engine's session over: mosquitto drops the engine's connection
        await wait_for(lambda: engine.counters.reconnects == 1, what="the engine reconnected")
        if on_reconnect == "rebirth":
            await wait_for(lambda: len(cmds) >= 3, what="three NCMDs")
        await asyncio.sleep(0.5)  # anything more would arrive by now
    assert engine.counters.reconnects == 1
    if on_reconnect == "wait":
        assert not cmds
        assert engine.counters.rebirths_requested == 0
        return
    topics = sorted(topic for topic, _payload, _retain in cmds)
    assert topics == sorted(
        [f"spBv1.0/{ns}/NCMD/N1", f"spBv1.0/{ns}/NCMD/N2", f"spBv1.0/{group_b}/NCMD/N3"]
    ), "exactly one rebirth request per known node"
    for _topic, payload, retain in cmds:
        assert not retain
        (metric,) = decode_payload(payload).metrics
        assert (metric.name, metric.value) == ("Node Control/Rebirth", True)
    assert engine.counters.rebirths_requested == 3


# ------------------------------------------------------------------ 5. bad context events


@pytest.mark.integration
async def test_malformed_context_events_over_mqtt_land_in_the_lakes_rejected_table_with_their_reason(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    """docs/model.md §4, "Setting context": "A malformed event is rejected whole (nothing of
    it is applied) and lands in the lake's `rejected` table with the reason"; README.md:
    "every message that cannot be used ... is counted, logged ... and stored in the lake's
    `rejected` table"."""
    root = tmp_path / "lake"
    sink = LakeSink(root, LakeConfig(commit_interval=0.2, compact_interval=0))
    engine = Engine(engine_config(broker, ns), sinks=[sink])
    context = f"{ns}/uns/_context"
    bad: dict[str, tuple[bytes, str]] = {  # path -> (payload, the reason's start)
        "acme/bad-json": (b'{"set": {"batch_id": "B-1"', "not JSON: "),
        "acme/not-object": (b'["batch_id", "B-1"]', "an event must be a JSON object"),
        "acme/bad-key": (
            b'{"set": {"batch_id": "B-1", "a/b": "x"}}',
            "context key 'a/b' must not contain '/', '+', '#' or control characters",
        ),
        "acme/unknown-field": (b'{"set": {"batch_id": "B-1"}, "when": 5}', "unknown fields ['when']"),
        "acme/set-and-clear": (
            b'{"set": {"batch_id": "B-1"}, "clear": ["batch_id"]}',
            "key 'batch_id' is both set and cleared",
        ),
        "acme/empty": (b'{"set": {}}', "a context event needs at least one key in set or clear"),
    }
    async with running_engine(engine), aiomqtt.Client(broker.host, broker.port) as c:
        for path, (payload, _reason) in bad.items():
            await c.publish(f"{context}/{path}", payload, qos=1)
        # valid now: a back-dated change would need a reason (context.require_reason)
        good = json.dumps({"ts": int(time.time() * 1000), "set": {"batch_id": "B-OK"}}).encode()
        await c.publish(f"{context}/acme/good", good, qos=1)
        await wait_for(lambda: engine.counters.context_events == len(bad) + 1, what="all context events")
    rows = query(root, "SELECT topic, payload, error FROM rejected ORDER BY received_at, topic")
    by_topic = {topic: (bytes(payload), error) for topic, payload, error in rows}
    assert len(rows) == len(bad) == len(by_topic)
    for path, (payload, reason) in bad.items():
        stored_payload, error = by_topic[f"{context}/{path}"]
        assert stored_payload == payload  # the raw bytes
        assert error.startswith(reason), (path, error)
    assert query(root, 'SELECT path, "key", value FROM context') == [("acme/good", "batch_id", "B-OK")]
    assert engine.counters.rejected == len(bad)


# ------------------------------------------------------------------ 7. the engine's process


_NATIVE = re.compile(r"site-packages/(pyarrow|deltalake|duckdb|_duckdb)\S*")
_HEAVY = ("pyarrow", "deltalake", "duckdb", "_duckdb")


def _native_libs(pid: int) -> set[str]:
    """The pyarrow/deltalake/duckdb files mapped into process ``pid``."""
    return {m.group(0) for m in _NATIVE.finditer(Path(f"/proc/{pid}/maps").read_text())}


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


@pytest.mark.integration
async def test_uns_run_keeps_pyarrow_deltalake_and_duckdb_out_of_the_engine_process(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    """README.md, "Two processes": "`uns run` starts a child process, the lake's commit
    worker, that turns the write-ahead log into Delta commits, so Parquet and Delta work never
    slow the receive loop"; lake/__init__.py: "the engine's process needs the sink only, and
    never loads DuckDB, deltalake or pyarrow (its Delta commits run in the lake's commit worker
    process)"."""
    root = tmp_path / "lake"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    env.update(
        UNS_ENGINE_PREFIX=f"{ns}/uns",
        UNS_ENGINE_STATUS_INTERVAL="0.2",
        UNS_LAKE_COMMIT_INTERVAL="0.2",
        UNS_BROKER_RECONNECT_MIN="0.1",
    )
    argv = [sys.executable, "-X", "importtime", "-m", "uns", "run"]
    argv += ["--broker", broker.url, "--lake", str(root), "--host-id", ns]
    stderr_path = tmp_path / "stderr.txt"
    async with collected(broker, status_topic(ns)) as status:
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            await wait_for_doc(status, lambda d: d["sinks"]["lake"]["commit_worker_pid"] > 0, "the worker")
            async with aiomqtt.Client(broker.host, broker.port) as c:
                await RawEdge(c, ns, "N1").born_with_data("D1", 20)
            done = await wait_for_doc(
                status,
                lambda d: (
                    d["counters"]["metrics"] >= 22
                    and d["sinks"]["lake"]["rows_committed"] == d["sinks"]["lake"]["rows_added"] > 22
                ),
                "the samples committed to Delta",
                timeout=15,
            )
            worker = int(done["sinks"]["lake"]["commit_worker_pid"])
            assert worker != proc.pid and _parent(worker) == proc.pid
            in_worker = _native_libs(worker)
            assert any("deltalake" in f for f in in_worker), in_worker  # the check can see them
            assert any("pyarrow" in f for f in in_worker), in_worker
            assert _native_libs(proc.pid) == set(), "native lake libraries in the engine's process"
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    imported = [
        line.rpartition("|")[2].strip()
        for line in stderr_path.read_text().splitlines()
        if line.startswith("import time:")
    ]
    # importtime lists what `import` statements load (not a module importlib.import_module
    # loads itself, such as lake.sink behind lake's lazy names: its imports are listed);
    # the native libraries mapped into the process, checked above, cover any way in
    assert {"uns.engine.host", "uns.lake.committers", "uns.lake.worker"} <= set(imported)
    heavy = sorted({m for m in imported if m.split(".")[0] in _HEAVY})
    assert heavy == [], f"the engine's process imported {heavy}"
    rows = query(root, "SELECT count(*) FROM measurements WHERE metric = 'Temperature'")
    assert rows == [(21,)]
