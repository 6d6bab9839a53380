"""Context set while the primary engine is offline meets store-and-forward (issue 15, item 5).

An edge node of the simulator follows the engine's STATE (the engine runs as
``uns run`` with ``UNS_ENGINE_PRIMARY=true``) and stores its DATA while the engine
is away.  Context ``batch_id=B-2`` is set, with a ``ts`` inside the outage, while
the engine is stopped: the broker (mosquitto, persistence on) queues it for the
engine's context session.  When the engine is back the node forwards what it
stored (``is_historical``), and ``measurements_asof`` gives every sample the batch
that was valid at its own timestamp: B-1 before the B-2 event's ``ts``, B-2 from
it on, the forwarded samples of the outage included.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from uns.clock import now_ms
from uns.lake import connect
from uns.mqtt.mosquitto import Mosquitto
from uns.sim import EdgeNode
from uns.sim.plant import bench_plant
from uns.sim.sentlog import SentLog

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
HOST = "sf"  # the engine's host id: spBv1.0/STATE/sf
PREFIX = f"{HOST}/uns"
GROUP = "SF"
UNIT = "acme/basel/line1/r-1"  # the device's ISA-95 path
METRICS = 2
MODEL = f"""
format = 1
[equipment."acme"]
[equipment."acme/basel"]
[equipment."acme/basel/line1"]
[equipment."{UNIT}"]

[[source]]
group = "{GROUP}"
node = "node-000"
device = "dev-00"
path = "{UNIT}"
"""


class Engine:
    """``uns run`` as the primary host, a process of its own (stopped with SIGTERM)."""

    def __init__(self, broker: Mosquitto, tmp: Path) -> None:
        model = tmp / "plant.toml"
        model.write_text(MODEL)
        self.lake = tmp / "lake"
        self.log = tmp / "uns.log"
        self.argv = [sys.executable, "-m", "uns", "run", "--broker", broker.url, "--lake", str(self.lake)]
        self.argv += ["--model", str(model), "--host-id", HOST, "--log-level", "info"]
        self.env = {
            **os.environ,
            "UNS_ENGINE_PREFIX": PREFIX,
            "UNS_ENGINE_PRIMARY": "true",
            "UNS_LAKE_COMMIT_INTERVAL": "0.3",
            "UNS_LAKE_FSYNC_INTERVAL": "0.2",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=out)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_context_session(self, timeout: float = 30.0) -> None:
        """Until this start of ``uns run`` says its context session is up."""
        seen = self.text().count("context intake connected")
        await until(
            lambda: self.text().count("context intake connected") > seen,
            timeout,
            "the engine's context session did not come up",
            alive=self,
        )


async def until(
    predicate: Callable[[], bool], timeout: float, what: str, *, alive: Engine | None = None
) -> None:
    """Poll ``predicate`` (every 0.1 s) for at most ``timeout`` seconds, else fail with ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if alive is not None and alive.proc is not None and alive.proc.poll() is not None:
            raise AssertionError(f"{what}: uns run exited with {alive.proc.returncode}\n{alive.text()}")
        if time.monotonic() > deadline:
            log = alive.text()[-4000:] if alive is not None else ""
            raise AssertionError(f"{what} within {timeout} s\n{log}")
        await asyncio.sleep(0.1)


def query(lake_dir: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    con = connect(lake_dir)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def stored_samples(lake_dir: Path) -> set[tuple[str, int, bool]]:
    """(metric, ts ms, is_historical) of the unit's samples in the lake's measurements."""
    if not (lake_dir / "measurements").exists():
        return set()
    rows = query(
        lake_dir, "SELECT metric, epoch_ms(ts), is_historical FROM measurements WHERE path = ?", UNIT
    )
    return {(str(m), int(ts), bool(h)) for m, ts, h in rows}


def context_cli(broker: Mosquitto, batch: str, ts: int, *, wait: bool) -> subprocess.CompletedProcess[str]:
    """``uns context set UNIT batch_id=<batch> --ts <ts> --id ctx-<batch>``, with ``--wait`` or not."""
    argv = [sys.executable, "-m", "uns", "context", "set", UNIT, f"batch_id={batch}", "--ts", str(ts),
            "--reason", "MES batch start"]  # fmt: skip
    argv += ["--id", f"ctx-{batch}", "--broker", broker.url, "--prefix", PREFIX, "--reason", "test"]
    if wait:
        argv += ["--wait", "15", "--host-id", HOST]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=40, check=False)


async def steps(node: EdgeNode, count: int) -> None:
    for _ in range(count):
        await node.publish_data()
        await asyncio.sleep(0.02)  # a few ms apart: distinct timestamps, well ordered


@pytest.mark.integration
async def test_forwarded_samples_get_the_context_valid_at_their_own_time(
    persistent_broker: Mosquitto, tmp_path: Path
) -> None:
    engine = Engine(persistent_broker, tmp_path)
    log = SentLog(keep_samples=True)
    node = EdgeNode(
        bench_plant(GROUP, nodes=1, devices=1, metrics=METRICS).nodes[0],
        group_id=GROUP,
        host=persistent_broker.host,
        port=persistent_broker.port,
        primary_host_id=HOST,
        report_by_exception=False,
        sent_log=log,
    )

    def sent(*, historical: bool | None = None) -> set[tuple[str, int, bool]]:
        return {
            (s.metric, s.ts, s.is_historical)
            for s in log.samples
            if s.device_id == "dev-00" and (historical is None or s.is_historical == historical)
        }

    try:
        # -- the engine up, B-1 set (acknowledged) before the node's first sample
        engine.start()
        await engine.wait_context_session()
        t_b1 = now_ms() - 1_000
        done = await asyncio.to_thread(context_cli, persistent_broker, "B-1", t_b1, wait=True)
        assert done.returncode == 0, f"uns context set B-1: {done.returncode}\n{done.stdout}{done.stderr}"
        await node.start()
        try:
            await asyncio.wait_for(node.wait_born(), 20)
        except TimeoutError:
            raise AssertionError(
                f"no births: the engine's STATE never said online\n{engine.text()}"
            ) from None
        await steps(node, 5)
        live_before = sent()
        assert live_before and not sent(historical=True)
        await until(
            lambda: live_before <= stored_samples(engine.lake),
            20,
            "the samples before the outage did not reach the lake",
            alive=engine,
        )

        # -- the engine offline: its STATE goes offline, the node stores
        assert await asyncio.to_thread(engine.stop) == 0, engine.text()
        await until(lambda: not node.host_online, 10, "the node did not see the engine's STATE offline")
        await steps(node, 5)
        await asyncio.sleep(0.05)
        t_b2 = now_ms()  # B-2 became true inside the outage, between stored samples
        await asyncio.sleep(0.05)
        await steps(node, 5)
        assert log.counts.historical_messages == 0 and len(node._store) == 10  # all held back
        # nobody acknowledges now: without --wait the CLI returns at the broker's PUBACK
        done = await asyncio.to_thread(context_cli, persistent_broker, "B-2", t_b2, wait=False)
        assert done.returncode == 0, f"uns context set B-2: {done.returncode}\n{done.stdout}{done.stderr}"

        # -- the engine back: the queued B-2 arrives, the node forwards its store as history
        engine.start()
        await engine.wait_context_session()
        await until(lambda: log.counts.historical_messages == 10, 20, "the node did not forward its store")
        await steps(node, 3)
        everything = sent()
        historical = sent(historical=True)
        assert len(historical) == 10 * METRICS
        assert {ts for _, ts, _ in historical if ts < t_b2} and {ts for _, ts, _ in historical if ts >= t_b2}
        await until(
            lambda: everything <= stored_samples(engine.lake),
            20,
            "the forwarded and the later samples did not reach the lake",
            alive=engine,
        )
        await until(
            lambda: bool(query(engine.lake, "SELECT 1 FROM context WHERE event_id = 'ctx-B-2'")),
            20,
            "the B-2 context event queued during the outage did not reach the lake",
            alive=engine,
        )
        assert await asyncio.to_thread(engine.stop) == 0, engine.text()
    finally:
        await node.stop()
        engine.kill()

    # -- what the lake answers: each sample the batch valid at its own timestamp
    rows = query(
        engine.lake,
        "SELECT metric, epoch_ms(ts), is_historical, batch_id FROM measurements_asof WHERE path = ?",
        UNIT,
    )
    got = {(str(m), int(ts), bool(h)): b for m, ts, h, b in rows}
    assert len(rows) == len(got), "a sample is in the lake more than once"
    assert set(got) == everything, "the lake's samples of the unit are not exactly those the node sent"
    wrong = {
        sample: batch for sample, batch in got.items() if batch != ("B-1" if sample[1] < t_b2 else "B-2")
    }
    assert not wrong, f"samples with the wrong batch (B-2 from ts {t_b2}): {sorted(wrong.items())[:10]}"
    assert {b for (_, ts, h), b in got.items() if h and ts >= t_b2} == {"B-2"}  # forwarded, after B-2
    assert {b for (_, ts, h), b in got.items() if h and ts < t_b2} == {"B-1"}  # forwarded, before it
    context = query(
        engine.lake,
        "SELECT value, epoch_ms(ts), event_id FROM context WHERE path = ? AND key = 'batch_id' ORDER BY ts",
        UNIT,
    )
    assert context == [("B-1", t_b1, "ctx-B-1"), ("B-2", t_b2, "ctx-B-2")], json.dumps(context)
