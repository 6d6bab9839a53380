"""Proof across hosts (issue 19, item 4): three engine hosts, one per Sparkplug group, a
broker host between them, one lake.

The test builds its own network (tests/netns.py: network namespaces and veth links) with
mosquitto on the broker host and ``uns run`` on each engine host (``--groups G<n>``, its
own ``lake.writer_id`` and host id, primary host of its group), all writing one lake.  From
this namespace, simulated edge nodes of the three groups (uns/sim, each following its
engine's STATE) stream, and the MES sets the batch three times.  Engine 2 is killed
(SIGKILL) while the others keep taking data, its node stores and forwards meanwhile, and it
restarts from its WAL.  Then every sample each node sent is in the lake exactly once, with
the batch valid at its own timestamp, and each context change is stored once although all
three engines wrote it (engine 2 after its restart, from its persistent session).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lake_helpers import query
from tests.netns import HostNetwork, unavailable
from tests.test_context_store_forward import ROOT, until
from tests.test_context_store_forward import Engine as EngineProcess
from uns.clock import now_ms
from uns.mqtt.mosquitto import find_mosquitto
from uns.sim import EdgeNode
from uns.sim.plant import bench_plant
from uns.sim.sentlog import SentLog

pytestmark = [pytest.mark.slow, pytest.mark.integration]

GROUPS = ("G1", "G2", "G3")
PREFIX = "plant/uns"
SITE = "acme/site"  # the MES sets the batch here; every unit inherits it
METRICS = 2


def _model(tmp: Path) -> Path:
    text = 'format = 1\n[equipment."acme"]\n[equipment."acme/site"]\n'
    for n, group in enumerate(GROUPS, start=1):
        text += f'[equipment."{SITE}/line{n}"]\n[equipment."{SITE}/line{n}/unit"]\n'
        text += f'[[source]]\ngroup = "{group}"\nnode = "node-000"\ndevice = "dev-00"\n'
        text += f'path = "{SITE}/line{n}/unit"\n'
    path = tmp / "plant.toml"
    path.write_text(text)
    return path


class HostEngine(EngineProcess):
    """``uns run`` on engine host ``n``: group G<n>, host id e<n>, writer e<n>, one shared lake."""

    def __init__(self, net: HostNetwork, n: int, tmp: Path) -> None:
        self.lake = tmp / "lake"
        self.log = tmp / f"engine-{n}.log"
        argv = [sys.executable, "-m", "uns", "run", "--groups", GROUPS[n - 1], "--host-id", f"e{n}"]
        argv += ["--broker", f"mqtt://{net.broker_for(n)}:1883", "--lake", str(self.lake), "--primary"]
        self.argv = net.run_in(net.engine_ns[n - 1], [*argv, "--model", str(_model(tmp))])
        self.env = {
            **os.environ,
            "UNS_ENGINE_PREFIX": PREFIX,
            "UNS_LAKE_WRITER_ID": f"e{n}",
            "UNS_LAKE_COMMIT_INTERVAL": "3.0",  # a kill finds rows in the WAL only
            "UNS_LAKE_FSYNC_INTERVAL": "0.2",
            "UNS_REPUBLISH_ENABLED": "false",
            "UNS_BROKER_RECONNECT_MAX": "1.0",
        }
        self.proc = None


@pytest.fixture
def network() -> Iterator[HostNetwork]:
    why = unavailable() or (None if find_mosquitto() else "mosquitto is not installed")
    if why:
        pytest.skip(f"the cross-host test builds network namespaces: {why}")
    with HostNetwork(engines=len(GROUPS)) as net:
        yield net


@pytest.fixture
def broker_host(network: HostNetwork, tmp_path: Path) -> Iterator[str]:
    """mosquitto on the broker host, on every address; yields its address as seen from here."""
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("listener 1883 0.0.0.0\nallow_anonymous true\npersistence false\n")
    exe = find_mosquitto()
    assert exe is not None
    with (tmp_path / "mosquitto.log").open("wb") as out:
        proc = subprocess.Popen(
            network.run_in(network.broker_ns, [exe, "-c", str(conf)]), stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((network.broker_here, 1883), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("mosquitto did not start on the broker host") from None
                time.sleep(0.1)
        yield network.broker_here
    finally:
        proc.kill()
        proc.wait()


def _set_batch(broker: str, batch: str, ts: int) -> None:
    """The MES: ``uns context set acme/site batch_id=<batch>`` (event id ev-<batch>), QoS 1."""
    argv = [sys.executable, "-m", "uns", "context", "set", SITE, f"batch_id={batch}", "--ts", str(ts),
            "--reason", "MES batch start"]  # fmt: skip
    argv += ["--id", f"ev-{batch}", "--broker", f"mqtt://{broker}:1883", "--prefix", PREFIX]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


async def _stream(nodes: list[EdgeNode], rounds: int) -> None:
    for _ in range(rounds):
        for node in nodes:
            await node.publish_data()
        await asyncio.sleep(0.03)


def _stored(lake: Path) -> list[tuple[str, str, int, str | None]]:
    if not (lake / "measurements").exists():
        return []
    sql = "SELECT group_id, metric, epoch_ms(ts), batch_id FROM measurements_asof"
    return [(str(g), str(m), int(ts), b) for g, m, ts, b in query(lake, sql)]


async def test_three_engine_hosts_share_one_lake_through_a_kill_and_restart(
    network: HostNetwork, broker_host: str, tmp_path: Path
) -> None:
    engines = [HostEngine(network, n, tmp_path) for n in range(1, len(GROUPS) + 1)]
    log = SentLog(keep_samples=True)
    nodes = [
        EdgeNode(
            bench_plant(group, nodes=1, devices=1, metrics=METRICS).nodes[0],
            group_id=group,
            host=broker_host,
            port=1883,
            primary_host_id=f"e{n}",
            report_by_exception=False,
            sent_log=log,
        )
        for n, group in enumerate(GROUPS, start=1)
    ]
    batches: list[tuple[int, str]] = []  # (ts, batch) as the MES set them

    async def set_batch(batch: str) -> None:
        ts = now_ms()
        await asyncio.to_thread(_set_batch, broker_host, batch, ts)
        batches.append((ts, batch))

    try:
        for engine in engines:
            engine.start()
        await asyncio.gather(*(e.wait_context_session(60) for e in engines))
        await set_batch("B-1")
        for node in nodes:
            await node.start()
        await asyncio.gather(*(asyncio.wait_for(node.wait_born(), 60) for node in nodes))
        await _stream(nodes, 15)
        await set_batch("B-2")
        await _stream(nodes, 10)

        # -- engine 2 killed mid-stream: the others go on, node 2 stores while its host is away
        await asyncio.sleep(0.3)  # what node 2 sent is in engine 2's WAL (not yet committed)
        engines[1].kill()
        await until(lambda: not nodes[1].host_online, 20, "node 2 did not see engine 2's STATE go offline")
        await _stream(nodes, 10)
        await set_batch("B-3")  # queued by the broker for engine 2's context session
        await _stream(nodes, 10)
        assert nodes[1]._store, "node 2 stored nothing while its engine was away"

        # -- engine 2 back: WAL replayed, STATE online, node 2 forwards its store
        engines[1].start()
        await engines[1].wait_context_session(60)
        assert "replaying" in engines[1].text(), "the kill left no WAL segment to replay"
        await until(lambda: not nodes[1]._store, 60, "node 2 did not forward its store", alive=engines[1])
        await _stream(nodes, 10)
        sent = {(s.group_id, s.metric, s.ts) for s in log.samples if s.device_id is not None}
        await until(
            lambda: sent <= {row[:3] for row in _stored(tmp_path / "lake")},
            90,
            "the lake does not hold every sample the nodes sent",
            alive=engines[1],
        )
        for engine in engines:
            assert await asyncio.to_thread(engine.stop) == 0, engine.text()[-3000:]
    finally:
        for node in nodes:
            await node.stop()
        for engine in engines:
            engine.kill()

    rows = _stored(tmp_path / "lake")
    got = {row[:3]: row[3] for row in rows}
    assert len(rows) == len(got), "a sample is in the lake more than once"
    assert set(got) == sent, "the lake's samples are not exactly those the nodes sent"
    assert {g for g, _, _ in got} == set(GROUPS)
    historical = query(tmp_path / "lake", "SELECT count(*) FROM measurements WHERE is_historical")[0][0]
    assert historical > 0  # node 2's forwarded store

    def valid_at(ts: int) -> str | None:
        return max(((t, b) for t, b in batches if t <= ts), default=(0, None))[1]

    wrong = {key: batch for key, batch in got.items() if batch != valid_at(key[2])}
    assert not wrong, f"samples with the wrong batch: {sorted(wrong.items())[:10]}"
    # engine 2's own (live) enrichment after its restart: B-3 came from its queued session
    # although the other shards had stored it meanwhile
    t3 = batches[-1][0]
    live = "SELECT DISTINCT batch_id FROM measurements WHERE group_id = 'G2' AND epoch_ms(ts) >= ?"
    assert query(tmp_path / "lake", live.replace("?", str(t3))) == [("B-3",)]
    changes = query(tmp_path / "lake", "SELECT event_id, count(*) FROM context GROUP BY ALL ORDER BY 1")
    assert changes == [("ev-B-1", 1), ("ev-B-2", 1), ("ev-B-3", 1)]  # three writers, once each
