"""A full or read-only disk under the lake, for real: a small tmpfs mounted by the test.

docs/lake.md section 4 ("A full or failing disk") states what these show:

- the disk fills mid-stream and is grown while the engine runs: the sink is
  degraded (the status says why and since when), intake pauses without losing
  the broker connection (keepalive 1 s, a pause of seconds), and after growing
  every sample is in the lake exactly once, without a restart;
- the disk fills and ``uns run`` gets SIGTERM: it exits within
  ``engine.stop_timeout_s``, non-zero, with one line counting the received
  messages it could not persist; after growing the disk, a restart commits
  everything that was in the write-ahead log;
- the file system is remounted read-only and back: degraded, then healed, every
  row once.

Mounting needs root (CI runs as root); elsewhere these are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.edge import RawEdge, now_ms
from tests.engine_helpers import engine_config, running_engine, wait_for
from tests.lake_crash_child import SAMPLES_PER_BATCH
from tests.lake_helpers import query
from tests.test_context_durable import Daemon, wait_session
from tests.test_lake_faults import add_until_accepted
from uns.engine.host import Engine
from uns.lake import LakeConfig, LakeSink
from uns.lake.tables import SAMPLE_FIELDS
from uns.lake.wal import list_segments, read_segment
from uns.mqtt.client import FastClient
from uns.mqtt.mosquitto import Mosquitto
from uns.sparkplug.codec import encode_payload
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import Metric, Payload

pytestmark = pytest.mark.slow

QUICK = LakeConfig(commit_interval=0.2, retry_initial_s=0.05, retry_max_s=0.3, compact_interval=0)
#: metrics per data message (the edge's DBIRTH declares them)
METRICS = {f"M{i}": (i + 1, DataType.Double) for i in range(20)}
#: data message values start here (the DBIRTH's are 20.0)
FIRST = 1000


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the test (skipped unless root may mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs the suite as root)")
    where.mkdir()
    done = mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where))
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], check=False, capture_output=True, text=True)


def remount(where: Path, options: str) -> None:
    """``mount -o remount,<options>``; a read-only remount waits while files are open for writing."""
    deadline = time.monotonic() + 10
    while True:
        done = mount("-o", f"remount,{options}", str(where))
        if done.returncode == 0:
            return
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.05)


@contextlib.asynccontextmanager
async def kept_full(disk: Path) -> AsyncIterator[None]:
    """Another writer takes every byte that frees up (the lake's commits retire WAL segments
    and free room), so the disk stays full until the block ends."""

    async def take_room() -> None:
        with (disk / "ballast").open("ab", buffering=0) as f:
            while True:
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * 1024)
                await asyncio.sleep(0.01)

    filler = asyncio.create_task(take_room())
    try:
        yield
    finally:
        filler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await filler


def data_payload(edge: RawEdge, value: float) -> bytes:
    ts = now_ms()
    metrics = [Metric(alias=alias, timestamp=ts, value=value) for alias, _ in METRICS.values()]
    return encode_payload(Payload(timestamp=ts, seq=edge.next_seq(), metrics=metrics))


async def publish_data(edge: RawEdge, values: range) -> None:
    for value in values:
        await edge.client.publish(edge.topic("DDATA", "D1"), data_payload(edge, float(value)), qos=0)
        if value % 50 == 0:
            await asyncio.sleep(0.02)  # about 2,000 messages a second


def data_values(root: Path) -> list[float]:
    return [v for (v,) in query(root, f"SELECT value_double FROM measurements WHERE value_double >= {FIRST}")]


async def test_a_disk_that_fills_mid_stream_and_is_grown_heals_without_restart_every_sample_once(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "disk", "1200k") as disk:
        sink = LakeSink(disk / "lake", QUICK)
        config = engine_config(broker, ns, **{"broker.keepalive": 1})
        # a small receive buffer: the client stops reading the socket during the pause
        small_buffer = functools.partial(FastClient, high_water=200, low_water=50)
        engine = Engine(config, sinks=[sink], transport=small_buffer)
        async with running_engine(engine), aiomqtt.Client(broker.host, broker.port) as c:
            edge = RawEdge(c, ns, "N1", metrics=METRICS)
            await edge.nbirth()
            await edge.dbirth("D1")
            sent = FIRST
            while sink.stats()["state"] != "degraded":
                assert sent < FIRST + 20_000, "the disk never filled"
                await publish_data(edge, range(sent, sent + 100))
                sent += 100
            status = engine.status()["sinks"]["lake"]
            assert str(status["degraded_reason"]).startswith("disk full (ENOSPC)")
            assert int(status["degraded_since_ms"]) > 0
            async with kept_full(disk):
                await publish_data(edge, range(sent, sent + 1000))  # these wait: client, TCP, broker
                sent += 1000
                await asyncio.sleep(3.5)  # paused for more than 1.5 x keepalive
                paused = engine.status()
                assert paused["sinks"]["lake"]["state"] == "degraded"
                assert paused["receive_queue"] >= 200, "the client never stopped reading the socket"
                assert engine.connected.is_set() and engine.counters.reconnects == 0
                remount(disk, "size=400m")
            expected = (sent - FIRST) * len(METRICS)
            await wait_for(lambda: sink.stats()["state"] == "ok", 20, "the sink to heal")
            await wait_for(
                lambda: engine.counters.metrics >= expected + len(METRICS), 20, "every message processed"
            )
            await sink.flush()
            assert engine.counters.reconnects == 0, "the pause cost the broker connection"
        values = data_values(disk / "lake")
    assert len(values) == expected
    assert sorted(set(values)) == [float(v) for v in range(FIRST, sent)]


async def test_sigterm_on_a_full_disk_exits_within_the_stop_timeout_and_the_wal_survives(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "disk", "1200k") as disk:
        lake_dir = disk / "lake"
        daemon = Daemon(broker, lake_dir, tmp_path / "uns.log")
        daemon.env.update(
            UNS_ENGINE_STOP_TIMEOUT_S="6",
            UNS_LAKE_COMMIT_INTERVAL="0.2",
            UNS_LAKE_COMPACT_INTERVAL="0",
        )
        daemon.start()
        try:
            await wait_session(daemon)
            async with aiomqtt.Client(broker.host, broker.port) as c:
                edge = RawEdge(c, ns, "N1", metrics=METRICS)
                await edge.nbirth()
                await edge.dbirth("D1")
                sent = FIRST
                while "lake: degraded" not in daemon.log.read_text(errors="replace"):
                    assert sent < FIRST + 20_000, "the disk never filled"
                    await publish_data(edge, range(sent, sent + 100))
                    sent += 100
                async with kept_full(disk):
                    await publish_data(edge, range(sent, sent + 300))  # received, not persisted
                    sent += 300
                    await asyncio.sleep(0.5)
                    assert daemon.proc is not None
                    started = time.monotonic()
                    daemon.proc.send_signal(signal.SIGTERM)
                    code = await asyncio.to_thread(daemon.proc.wait, 30)
                    took = time.monotonic() - started
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.proc.kill()
        log = daemon.log.read_text(errors="replace")
        assert took < 6.0, f"stopped after {took:.1f} s"
        assert code == 1
        lines = [line for line in log.splitlines() if "could not be persisted" in line]
        assert len(lines) == 1, log[-3000:]
        count = re.search(r"(\d+) received message\(s\) could not be persisted", lines[0])
        assert count is not None and int(count.group(1)) > 0
        # what the WAL holds, and what the lake held, before the disk grows
        in_wal = {
            value
            for _, path in list_segments(lake_dir / "_wal")
            for part in read_segment(path).parts
            if part[0]
            for value in part[0][SAMPLE_FIELDS.index("value")]
            if isinstance(value, float) and value >= FIRST
        }
        before = set(data_values(lake_dir))
        assert in_wal, "nothing waited in the WAL: the test did not fill the disk mid-commit"
        remount(disk, "size=400m")
        async with LakeSink(lake_dir, QUICK) as restarted:  # the next start replays the WAL
            await restarted.flush()
        after = data_values(lake_dir)
    assert len(after) == len(METRICS) * len(set(after)), "a row was committed twice"
    assert in_wal <= set(after) and before <= set(after)


async def test_a_read_only_remount_and_back_degrades_then_heals_every_row_once(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "64m") as disk:
        lake_dir = disk / "lake"
        accepted = 0
        async with LakeSink(lake_dir, QUICK) as sink:
            for i in range(50):
                await add_until_accepted(sink, i)
                accepted += 1
                await asyncio.sleep(0)
            await sink.flush()  # every WAL segment closed: the remount need not wait for one
            remount(disk, "ro")
            writer = asyncio.create_task(feed(sink, range(50, 150)))
            await wait_for(lambda: sink.stats()["state"] == "degraded", 10, "the sink to degrade")
            assert str(sink.stats()["degraded_reason"]).startswith("read-only file system (EROFS)")
            await asyncio.sleep(1.0)
            assert not writer.done(), "batches were accepted on a read-only file system"
            remount(disk, "rw")
            accepted += await asyncio.wait_for(writer, 20)
            await sink.flush()
            assert sink.stats()["state"] == "ok"
        rows = query(lake_dir, "SELECT count(*), count(DISTINCT ts) FROM measurements")
    assert rows == [(accepted * SAMPLES_PER_BATCH, accepted)]


async def feed(sink: LakeSink, numbers: range) -> int:
    for i in numbers:
        await add_until_accepted(sink, i)
        await asyncio.sleep(0)
    return len(numbers)
