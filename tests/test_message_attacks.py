"""No single message can hurt the engine or the lake (issue 29): each attack of the issue,
by an MQTT client against a real mosquitto, an engine and a real lake on disk.

Kept small for CI: the limits are lowered where the attack would otherwise be large (a
21 MiB payload under a 20 MiB limit, 100,000 metrics under a limit of 50,000); the
largest legal birth (100,000 metrics, the default limit) runs through ``run_daemon`` as
``uns run`` does, with a probe of the event loop's lag."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_message_limits import birth_100k
from tests.aio_helpers import running
from tests.engine_helpers import engine_config, running_engine, wait_for
from tests.lake_helpers import query
from tests.protowire import lfield, vfield
from uns.config import Config
from uns.engine.daemon import build_engine, run_daemon
from uns.engine.host import Engine
from uns.keyring import new_key_pair
from uns.mqtt.client import FastClient
from uns.mqtt.mosquitto import Mosquitto
from uns.mqtt.settings import BrokerSettings
from uns.sparkplug import DataType, encode_payload
from uns.sparkplug.compression import COMPRESSED_UUID
from uns.sparkplug.payload import Payload

ROOT = Path(__file__).resolve().parent.parent
UNS = (sys.executable, "-m", "uns")
MiB = 2**20


def lake_config(broker: Mosquitto, ns: str, lake: Path, **overrides: Any) -> Config:
    values = {"lake.path": str(lake), "lake.commit_interval": 0.5, "lake.compact_interval": 0, **overrides}
    return engine_config(broker, ns, **values)


async def publish(broker: Mosquitto, ns: str, *messages: tuple[str, bytes]) -> None:
    async with FastClient(
        BrokerSettings(host=broker.host, port=broker.port), identifier=f"{ns}-attacker"
    ) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def template_tower(depth: int) -> bytes:
    """An NBIRTH whose one metric is a Template nested ``depth`` deep."""
    metric = lfield(1, b"leaf") + vfield(4, DataType.Int32) + vfield(10, 1)
    for level in range(depth):
        metric = (
            lfield(1, f"t{level}".encode()) + vfield(4, DataType.Template) + lfield(18, lfield(2, metric))
        )
    return vfield(3, 0) + lfield(2, metric)


# ---------------------------------------------------------------- Sparkplug attacks


@pytest.mark.integration
async def test_messages_over_a_limit_are_refused_recorded_bounded_and_the_engine_goes_on(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    config = lake_config(
        broker,
        ns,
        lake,
        **{"sparkplug.max_payload_bytes": 20 * MiB, "sparkplug.max_metrics_per_message": 50_000},
    )
    garbage = os.urandom(21 * MiB)  # mosquitto takes up to 256 MB
    many = vfield(3, 0) + lfield(2, b"") * 100_000
    bomb = encode_payload(
        Payload(uuid=COMPRESSED_UUID, seq=0, body=zlib.compress(lfield(2, b"") * 1_000_000, 9))
    )
    most = "more than sparkplug.max_metrics_per_message = 50,000"
    attacks = {
        f"spBv1.0/{ns}/NDATA/not-a-node": (
            garbage,
            "over limit NDATA: 22,020,096 payload bytes, more than sparkplug.max_payload_bytes = 20,971,520",
        ),
        f"spBv1.0/{ns}/NBIRTH/many": (many, f"over limit NBIRTH: 100,000 metrics, {most}"),
        f"spBv1.0/{ns}/NBIRTH/bomb": (bomb, f"over limit NBIRTH: 1,000,000 metrics, {most}"),
        f"spBv1.0/{ns}/NBIRTH/tower": (
            template_tower(40),
            "over limit NBIRTH: 33 levels of Template nesting, more than sparkplug.max_nesting = 32",
        ),
    }
    engine = build_engine(config)
    async with running_engine(engine):
        await publish(broker, ns, *((topic, payload) for topic, (payload, _) in attacks.items()))
        await wait_for(lambda: engine.counters.rejected_by_reason["limit"] == 4, 60, "four refusals")
        # the engine goes on: an ordinary birth right after is used
        await publish(broker, ns, (f"spBv1.0/{ns}/NBIRTH/ok", encode_payload(Payload(seq=0, metrics=[]))))
        await wait_for(lambda: engine.counters.node_births == 1, 30, "the next birth")
    rows = query(
        lake, "SELECT topic, error, octet_length(payload), payload_size, payload_sha256 FROM rejected"
    )
    assert sorted(rows) == sorted(
        (topic, error, min(1024, len(payload)), len(payload), hashlib.sha256(payload).hexdigest())
        for topic, (payload, error) in attacks.items()
    )
    assert engine.counters.node_births == 1  # none of the refused births counted


@pytest.mark.integration
async def test_the_loop_never_stalls_a_second_on_the_largest_legal_birth(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    """100,000 metrics (the default limit, bdSeq included) through ``run_daemon``: the event
    loop answers within a second all along (it stalled 8 s on 1,000,000 metrics, over a second
    on 100,000 before issue 29), every metric reaches the lake, and the audit trail has one
    bounded catalog_new entry for the birth although it spans several WAL segments."""
    lake = tmp_path / "lake"
    config = lake_config(broker, ns, lake, **{"lake.commit_rows": 50_000})
    birth, samples = birth_100k()  # the benchmark's: bdSeq and 99,999 Doubles with a unit
    assert samples == 99_999
    stop = asyncio.Event()
    lags: list[float] = []
    probing = True

    async def probe() -> None:  # how late the loop comes back to a 5 ms sleep
        while probing:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - before - 0.005)

    daemon = asyncio.create_task(run_daemon(config, stop=stop))
    try:
        async with status_of(broker, ns) as status:
            await until(lambda: status.get("connected") is True, daemon, "the engine connects")
            prober = asyncio.create_task(probe())
            await publish(broker, ns, (f"spBv1.0/{ns}/NBIRTH/big", birth))
            await until(lambda: status.get("counters", {}).get("metrics") == 99_999, daemon, "the birth", 240)
            # a fast machine may take the birth in fewer than 20 probes: probe on, so the
            # figure below is never made of a handful of samples
            await until(lambda: len(lags) > 20, daemon, "twenty probes")
            probing = False
            await prober
            # stopped only once committed: a loaded machine may pass the stop deadline with
            # rows left in the WAL for the next start (docs/lake.md), not what this test asks
            await until(lambda: _committed(lake), daemon, "the birth in the lake", 240)
    finally:
        stop.set()
        engine = await asyncio.wait_for(daemon, 240)
    assert len(lags) > 20 and max(lags) < 1.0, f"the event loop stalled {max(lags):.2f} s"
    assert engine.counters.node_births == 1
    assert query(lake, "SELECT count(*) FROM metric_catalog WHERE edge_node_id = 'big'") == [(100_000,)]
    ((rows, segments),) = query(lake, "SELECT count(*), count(DISTINCT wal_segment) FROM measurements")
    assert rows == 99_999 and segments >= 2  # the birth spans segments ...
    entries = query(lake, "SELECT detail FROM audit WHERE kind IN ('catalog_new', 'schema_drift')")
    (entry,) = entries  # ... and is recorded once, as a whole
    detail = json.loads(entry[0])
    assert (detail["metrics"], detail["counts"]["added"], len(detail["added"])) == (100_000, 100_000, 1000)
    assert len(entry[0]) < 200_000


class _Status(dict[str, Any]):
    pass


@contextlib.asynccontextmanager
async def status_of(broker: Mosquitto, ns: str) -> AsyncIterator[_Status]:
    """The engine's latest retained status document, kept up to date while the block runs."""
    status = _Status()
    async with FastClient(
        BrokerSettings(host=broker.host, port=broker.port), identifier=f"{ns}-status"
    ) as client:
        await client.subscribe(f"{ns}/uns/_engine/{ns}/status", qos=0)

        async def follow() -> None:
            while True:
                await client.wait_messages()
                for _topic, payload, _qos, _retain in client.take():
                    status.clear()
                    status.update(json.loads(payload))

        async with running(follow()):
            yield status


def _committed(lake: Path) -> bool:
    """The 100k birth's rows and its catalog entry are in the lake."""
    catalog = "SELECT count(*) FROM audit WHERE kind IN ('catalog_new', 'schema_drift')"
    return query(lake, catalog) != [(0,)] and query(lake, "SELECT count(*) FROM measurements") == [(99_999,)]


async def until(cond: Any, task: asyncio.Task[Any], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if task.done():
            task.result()
            raise AssertionError(f"the daemon ended before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- context attacks

T = 1_767_261_600_000  # 2026-01-01T10:00:00Z


async def acks_for(broker: Mosquitto, ns: str, events: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """Publish context ``events`` (topic, payload) and collect one acknowledgement each."""
    got: list[dict[str, Any]] = []
    async with FastClient(
        BrokerSettings(host=broker.host, port=broker.port), identifier=f"{ns}-mes"
    ) as client:
        await client.subscribe(f"{ns}/uns/_engine/+/context_ack", qos=1)
        for topic, payload in events:
            await client.publish(topic, payload, qos=1)
            while len(got) < len(events[: events.index((topic, payload)) + 1]):
                await asyncio.wait_for(client.wait_messages(), 30)
                got += [json.loads(p) for _t, p, _q, _r in client.take()]
    return got


@pytest.mark.integration
async def test_context_that_breaks_the_intake_rules_is_rejected_with_its_reason(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    base, ahead = f"{ns}/uns/_context", "ahead of the engine's clock"  # the year 10000, 2^63 ms
    bad = [
        (base, b'{"id": "a", "set": {"batch_id": "X"}}', "the topic has no path"),
        (f"{base}/acme/../other", b'{"id": "b", "set": {"batch_id": "X"}}', "has a '..' level"),
        (f"{base}/acme/./x", b'{"id": "c", "set": {"batch_id": "X"}}', "has a '.' level"),
        (f"{base}/acme/line", b'{"id": "d", "set": {"batch_id": "X", "batch_id": "Y"}}', "appears twice"),
        (f"{base}/acme/line", '{"id": "e", "set": {"batch_id": "X"}}'.encode("utf-16"), "not UTF-8"),
        (f"{base}/acme/line", b'{"id": "f", "set": {"batch_id": "\\ud800"}}', "lone surrogate"),
        (f"{base}/acme/line", b'{"id": "g", "ts": 253402300800000, "set": {"batch_id": "X"}}', ahead),
        (f"{base}/acme/line", b'{"id": "h", "ts": 9223372036854775807, "set": {"batch_id": "X"}}', ahead),
        (f"{base}/acme/line", b'{"id": "i", "ts": 5, "set": {"batch_id": "X"}}', "before 2000-01-01"),
    ]  # fmt: skip
    engine = build_engine(lake_config(broker, ns, lake))
    async with running_engine(engine):
        acks = await acks_for(broker, ns, [(t, p) for t, p, _ in bad])
    assert [a["status"] for a in acks] == ["rejected"] * len(bad)
    for ack, (_, _, fragment) in zip(acks, bad, strict=True):
        assert fragment in ack["reason"], ack
    rows = query(lake, "SELECT topic, error FROM rejected ORDER BY received_at")
    assert [(t, e) for t, e in rows] == [(t, a["reason"]) for (t, _, _), a in zip(bad, acks, strict=True)]
    assert query(lake, "SELECT count(*) FROM context") == [(0,)]


@pytest.mark.integration
async def test_an_id_reused_with_other_content_is_a_conflict_also_after_a_restart(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    topic = f"{ns}/uns/_context/acme/line"
    # back-dated (T is in the past): with the reason context.require_reason asks for
    first = b'{"id": "ev-9", "ts": %d, "set": {"batch_id": "B-1"}, "reason": "MES"}' % T
    forged = b'{"id": "ev-9", "ts": %d, "set": {"batch_id": "B-666"}, "reason": "MES"}' % T
    for round_ in range(2):  # the second engine learns the id's content from the lake
        engine = build_engine(lake_config(broker, ns, lake))
        async with running_engine(engine):
            acks = await acks_for(broker, ns, [(topic, first), (topic, forged)])
        expected = "applied" if round_ == 0 else "duplicate"
        assert [a["status"] for a in acks] == [expected, "conflict"], acks
        assert (
            acks[1]["reason"]
            == "conflict: event 'ev-9' was applied before with other content; nothing changed"
        )
        assert engine.counters.context_conflicts == 1
    assert query(lake, "SELECT value FROM context WHERE event_id = 'ev-9'") == [("B-1",)]
    assert [e for (e,) in query(lake, "SELECT error FROM rejected")] == [acks[1]["reason"]] * 2


# ---------------------------------------------------------------- acknowledgements in the engine's name


async def forge_acks(broker: Mosquitto, ns: str, host: str, ready: asyncio.Event) -> None:
    """Answer every context event on the engine's behalf (what any client allowed to publish
    on the acknowledgement topic can do while the engine is stopped)."""
    async with FastClient(
        BrokerSettings(host=broker.host, port=broker.port), identifier=f"{ns}-forger"
    ) as client:
        await client.subscribe(f"{ns}/uns/_context/#", qos=1)
        ready.set()
        while True:
            await client.wait_messages()
            for topic, payload, _qos, _retain in client.take():
                event = json.loads(payload)
                ack = {
                    "id": event["id"], "status": "applied", "reason": None, "host_id": host, "ts": T,
                    "path": topic.split("/_context/", 1)[1],
                    "event_sha256": hashlib.sha256(payload).hexdigest(),
                }  # fmt: skip
                await client.publish(f"{ns}/uns/_engine/{host}/context_ack", json.dumps(ack).encode(), qos=1)


def context_set(
    broker: Mosquitto, ns: str, host: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    return subprocess.run(
        [*UNS, "context", "set", "acme/line", "batch_id=B-7", "--broker", broker.url, "--prefix", f"{ns}/uns",
         "--wait", "3", "--host-id", host, "--reason", "set by hand"],
        capture_output=True, text=True, env={**base, **env}, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.integration
async def test_wait_trusts_only_acknowledgements_signed_by_the_engines_key(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    private, public = new_key_pair("engine", tmp_path / "private")  # unencrypted: the engine reads it
    (tmp_path / "trusted").mkdir()
    shutil.copy(public, tmp_path / "trusted" / public.name)  # what `uns keys trust` does for it
    keyed = {"UNS_ENGINE_SIGNING_KEY": str(private), "UNS_AUDIT_TRUSTED_KEYS": str(tmp_path / "trusted")}
    ready = asyncio.Event()
    forger = asyncio.create_task(forge_acks(broker, ns, ns, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        # no engine runs: with its key configured the forged answer does not count
        r = await asyncio.to_thread(context_set, broker, ns, ns, keyed)
        assert r.returncode == 3, (r.stdout, r.stderr)
        assert "no engine acknowledged" in r.stderr
        # without a key the answer is taken, and called what it is
        r = await asyncio.to_thread(context_set, broker, ns, ns, {})
        assert r.returncode == 0 and "applied by engine" in r.stdout
        assert "acknowledgement is unauthenticated" in r.stderr
    finally:
        forger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forger
    # the engine with its key: its signed answer counts
    engine: Engine = build_engine(
        lake_config(broker, ns, tmp_path / "lake", **{"engine.signing_key": str(private)})
    )
    async with running_engine(engine):
        r = await asyncio.to_thread(context_set, broker, ns, ns, keyed)
    assert r.returncode == 0, r.stderr
    assert f"applied by engine {ns}" in r.stdout and "signed by key engine" in r.stdout
    assert "unauthenticated" not in r.stderr
