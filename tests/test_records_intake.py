"""The batch records intake (issue 31, item 2): materials, results and comments on
``<prefix>/_records/<path>`` are applied once per id (a reused id with other content is a
conflict), signatures checked, acknowledged on the context-ack topic only once durable, on
a persistent session of their own; they reach the lake exactly once when ``uns run`` is
SIGKILLed mid-stream and the broker redelivers; ``uns records import`` and a BatchML
``uns context import`` work against a real engine and are idempotent."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.engine_helpers import CollectingSink, connected, engine_config, on_memory, running_engine, wait_for
from tests.test_context_durable import NS as DAEMON_NS
from tests.test_context_durable import Daemon, GatedSink, wait_session
from uns import lake
from uns.core.records import MaterialRecord
from uns.core.signing import sign_event
from uns.engine import daemon as uns_daemon
from uns.engine.daemon import build_engine
from uns.engine.host import Engine
from uns.engine.memory import MemoryBroker
from uns.keyring import load_private_key, new_key_pair
from uns.lake import LakeSink
from uns.mqtt.client import FastClient
from uns.mqtt.mosquitto import Mosquitto
from uns.mqtt.settings import BrokerSettings

NS = "rec"
RECORDS = f"{NS}/uns/_records"
INTAKE = f"uns-{NS}-records"
ACKS = f"{NS}/uns/_engine/{NS}/context_ack"
ROOT = Path(__file__).resolve().parent.parent
T = 1_764_583_200_000


def config(**overrides: Any) -> Any:
    fast = {"broker.reconnect_min": 0.01, "broker.reconnect_max": 0.05, "engine.status_interval": 0.2}
    return engine_config("mqtt://memory:1883", NS, **{**fast, **overrides})


def material(i: int, **changes: Any) -> dict[str, Any]:
    body = {"id": f"m-{i}", "ts": T + i, "kind": "material", "material": "NaCl", "lot": f"L{i}",
            "quantity": 1.5, "unit": "kg", "status": "released", "user": "op"}  # fmt: skip
    return {**body, **changes}


def records_of(sink: CollectingSink) -> list[Any]:
    return [r for b in sink.batches for r in b.records]


def acks(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [json.loads(e.payload) for e in broker.log if e.action == "publish" and e.topic == ACKS]


async def test_records_are_applied_once_per_id_and_every_one_is_answered() -> None:
    sink = CollectingSink()
    async with on_memory(config(), sink) as (broker, engine):
        await wait_for(engine.records_intake.connected.is_set, what="records session")
        mes = await connected(broker, "mes")
        sends = [
            material(1),
            material(1),  # a resend: duplicate
            material(1, lot="L-other"),  # the same id, other content: a conflict
            {"kind": "comment", "ts": T + 5, "text": "pump noisy"},  # no id: auto- of its content
            {"id": "r-1", "ts": T + 6, "kind": "result", "test": "pH", "value": 7.0, "low": 8, "high": 6},
            {"id": "x-1", "kind": "recipe", "ts": T},
        ]
        for body in sends:
            await mes.publish(f"{RECORDS}/acme/line1", json.dumps(body).encode(), qos=1)
        await mes.publish(f"{RECORDS}/acme/line1", b"not json", qos=1)
        await wait_for(lambda: len(acks(broker)) == 7, what="7 acknowledgements")
        answers = [(a["id"], a["status"], a["reason"]) for a in acks(broker)]
        counters = engine.counters
    assert answers[0] == ("m-1", "applied", None)
    assert answers[1] == ("m-1", "duplicate", "already applied")
    assert answers[2][:2] == ("m-1", "conflict") and "applied before with other content" in answers[2][2]
    assert answers[3][0].startswith("auto-") and answers[3][1] == "applied"
    assert answers[4][:2] == ("r-1", "rejected") and "low 8 is above high 6" in answers[4][2]
    assert answers[5][:2] == ("x-1", "rejected") and "kind must be one of" in answers[5][2]
    assert answers[6][:2] == (None, "rejected") and "not JSON" in answers[6][2]
    applied = records_of(sink)
    assert [type(r).__name__ for r in applied] == ["MaterialRecord", "CommentRecord"]
    assert (
        isinstance(applied[0], MaterialRecord) and applied[0].path == "acme/line1" and applied[0].user == "op"
    )
    rejected = [r for b in sink.batches for r in b.rejected]
    assert len(rejected) == 4  # the conflict, the two malformed ones, the non-JSON one
    assert (counters.records, counters.records_applied, counters.records_duplicates) == (7, 2, 1)
    assert (counters.records_rejected, counters.records_conflicts) == (4, 1)


async def test_a_retained_record_is_never_applied() -> None:
    broker = MemoryBroker()
    mes = await connected(broker, "mes")  # retained before the engine subscribes: a retained copy for it
    await mes.publish(f"{RECORDS}/acme/line1", json.dumps(material(2)).encode(), qos=1, retain=True)
    sink = CollectingSink()
    async with running_engine(Engine(config(), sinks=[sink], transport=broker)) as engine:
        await wait_for(lambda: len(acks(broker)) == 1, what="the answer")
        assert engine.counters.records_retained_ignored == 1
    assert [(a["id"], a["status"], a["reason"]) for a in acks(broker)] == [
        ("m-2", "duplicate", "retained copy")
    ]
    assert records_of(sink) == []


async def test_signatures_are_checked_as_for_context(tmp_path: Path) -> None:
    private, public = new_key_pair("lims", tmp_path / "keys")
    (tmp_path / "trusted").mkdir()
    shutil.copy(public, tmp_path / "trusted" / "lims.pub")  # trusted (as uns keys trust puts it)
    name, key = load_private_key(private)
    settings = {"audit.trusted_keys": str(tmp_path / "trusted"), "context.require_signature": True}
    sink = CollectingSink()
    async with on_memory(config(**settings), sink) as (broker, engine):
        await wait_for(engine.records_intake.connected.is_set, what="records session")
        mes = await connected(broker, "mes")
        signed = sign_event(key, name, "acme/line1", material(1))
        forged = {**signed, "lot": "L-forged"}
        for body in (signed, forged, material(3)):
            await mes.publish(f"{RECORDS}/acme/line1", json.dumps(body).encode(), qos=1)
        await wait_for(lambda: len(acks(broker)) == 3, what="3 acknowledgements")
        answers = [(a["status"], a["reason"] or "") for a in acks(broker)]
    assert answers[0] == ("applied", "")
    assert answers[1][0] == "rejected" and "bad signature" in answers[1][1]
    assert answers[2][0] == "rejected" and "unsigned" in answers[2][1]
    (record,) = records_of(sink)
    assert record.signer == "lims"


async def test_a_record_is_acknowledged_only_once_durable_on_its_own_session() -> None:
    sink = GatedSink()
    async with on_memory(config(), sink) as (broker, engine):
        await wait_for(engine.records_intake.connected.is_set, what="records session")
        intake = broker.connection(INTAKE)
        assert intake is not None and not intake.clean_session and intake.subscriptions == {f"{RECORDS}/#": 1}
        mes = await connected(broker, "mes")
        for i in range(3):
            await mes.publish(f"{RECORDS}/acme/line1", json.dumps(material(i)).encode(), qos=1)
        await wait_for(lambda: len(records_of(sink)) == 3 and sink.durable_calls > 0, what="processed")
        await asyncio.sleep(0.05)
        assert [e for e in broker.actions(INTAKE) if e.action == "ack"] == []
        sink.gate.set()
        await wait_for(
            lambda: len([e for e in broker.actions(INTAKE) if e.action == "ack"]) == 3, what="acks"
        )
        assert engine.status()["records_intake"]["acknowledged"] == 3


async def test_after_a_restart_the_lakes_records_are_duplicates_or_conflicts(tmp_path: Path) -> None:
    broker = MemoryBroker()
    lake_dir = tmp_path / "lake"
    async with running_engine(Engine(config(), sinks=[LakeSink(lake_dir)], transport=broker)) as engine:
        await wait_for(engine.records_intake.connected.is_set, what="records session")
        mes = await connected(broker, "mes")
        await mes.publish(f"{RECORDS}/acme/line1", json.dumps(material(1)).encode(), qos=1)
        await wait_for(lambda: len(acks(broker)) == 1, what="applied")
    ids, records = uns_daemon.load_applied_ids(lake_dir)
    assert list(records) == ["m-1"] and not ids
    engine = Engine(config(), sinks=[LakeSink(lake_dir)], transport=broker)
    engine.dispatch.remember_records(records)
    async with running_engine(engine):
        await wait_for(engine.records_intake.connected.is_set, what="records session")
        mes = await connected(broker, "mes2")
        for body in (material(1), material(1, quantity=9.0)):
            await mes.publish(f"{RECORDS}/acme/line1", json.dumps(body).encode(), qos=1)
        await wait_for(lambda: len(acks(broker)) == 3, what="answered")
    assert [a["status"] for a in acks(broker)] == ["applied", "duplicate", "conflict"]
    con = lake.connect(lake_dir)
    try:
        assert con.execute("SELECT record_id, lot, quantity FROM materials").fetchall() == [
            ("m-1", "L1", 1.5)
        ]
    finally:
        con.close()


# ------------------------------------------------------------------ against mosquitto, with uns run


def sessions(daemon: Daemon) -> int:
    return (
        daemon.log.read_text(errors="replace").count("records intake connected") if daemon.log.exists() else 0
    )


async def publish_records(broker: Mosquitto, start: int, count: int, pace: float) -> None:
    """The LIMS publishes records start .. start+count-1 to the daemon (its prefix)."""
    settings = BrokerSettings(host=broker.host, port=broker.port)
    async with FastClient(settings, identifier=f"lims-{start}") as mes:
        for i in range(start, start + count):
            await mes.publish(f"{DAEMON_NS}/uns/_records/acme/line1", json.dumps(material(i)).encode(), qos=1)
            await asyncio.sleep(pace)


@pytest.mark.integration
async def test_records_survive_a_sigkill_and_redelivery_exactly_once(
    persistent_broker: Mosquitto, tmp_path: Path
) -> None:
    lake_dir = tmp_path / "lake"
    daemon = Daemon(persistent_broker, lake_dir, tmp_path / "uns.log")
    seen = sessions(daemon)
    daemon.start()
    await wait_session(daemon, kind="records", seen=seen)
    publishing = asyncio.create_task(publish_records(persistent_broker, 0, 300, pace=0.004))
    await asyncio.sleep(0.6)
    await asyncio.to_thread(daemon.stop, signal.SIGKILL)  # mid-stream: some taken, not acknowledged
    await publishing  # the rest are queued by the broker for the engine's records session
    seen = sessions(daemon)
    daemon.start()
    await wait_session(daemon, kind="records", seen=seen)
    con_rows: list[tuple[str, int]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until all 300 are in the lake (committed), then stop
        await asyncio.sleep(1)
        if lake_dir.exists():
            con = lake.connect(lake_dir)
            try:
                con_rows = con.execute("SELECT record_id, count(*) FROM materials GROUP BY 1").fetchall()
            finally:
                con.close()
            if len(con_rows) >= 300:
                break
    assert await asyncio.to_thread(daemon.stop) == 0
    con = lake.connect(lake_dir)
    try:
        rows = dict(con.execute("SELECT record_id, count(*) FROM materials GROUP BY 1").fetchall())
        entries = con.execute("SELECT count(*) FROM audit WHERE kind = 'record'").fetchone()
    finally:
        con.close()
    assert sorted(rows) == sorted(f"m-{i}" for i in range(300)), f"lost: {300 - len(rows)}"
    assert {k: n for k, n in rows.items() if n != 1} == {}, "duplicates"
    assert entries == (300,)  # one audit entry per record, none twice
    assert f"records intake connected as uns-{DAEMON_NS}-records (session resumed)" in daemon.log.read_text()


def uns(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uns", *args], capture_output=True, text=True, cwd=ROOT, check=False
    )


@pytest.mark.integration
async def test_records_and_batchml_files_import_into_a_running_engine_once(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    lake_dir = tmp_path / "lake"
    cfg = engine_config(broker, ns, **{"lake.path": str(lake_dir), "lake.commit_interval": 0.5})
    records = tmp_path / "lims.csv"
    gr = "acme/basel/pilot/granulation/gr-201"
    records.write_text(
        "ts,path,kind,id,user,source,material,lot,quantity,unit,status,expiry,test,value,low,high,text\n"
        f"2025-11-03T06:05:00Z,{gr},material,,op,erp,MCC,L1,12.5,kg,released,2027-01-01,,,,,\n"
        f"2025-11-03T07:40:00Z,{gr},result,lims-1,lab,lims,,,,%,pass,,LOD,4.2,1,3,\n"
        f'2025-11-03T07:45:00Z,{gr},comment,,op,ebr,,,,,,,,,,,"nozzle, cleaned"\n'
    )
    common = ["--broker", broker.url, "--prefix", f"{ns}/uns", "--wait", "20", "--no-progress"]
    async with running_engine(build_engine(cfg)) as engine:
        await wait_for(engine.records_intake.connected.is_set, what="records session")
        first = await asyncio.to_thread(uns, "records", "import", str(records), *common)
        again = await asyncio.to_thread(uns, "records", "import", str(records), *common)
        history = [
            str(ROOT / "examples" / "batch-history.xml"),
            "--model",
            str(ROOT / "examples" / "pilot-plant.toml"),
        ]
        imported = await asyncio.to_thread(uns, "context", "import", *history, *common)
        twice = await asyncio.to_thread(uns, "context", "import", *history, *common)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("3 events: 3 applied, 0 duplicates, 0 rejected, 0 unanswered")
    assert again.returncode == 0 and again.stdout.startswith("3 events: 0 applied, 3 duplicates")
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("11 events: 11 applied")
    assert twice.stdout.startswith("11 events: 0 applied, 11 duplicates")
    con = lake.connect(lake_dir)
    try:
        batches = con.execute("SELECT batch_id, status FROM batches ORDER BY 1").fetchall()
        results = con.execute("SELECT batch_id, test, oos FROM results").fetchall()
        comments = con.execute("SELECT batch_id, text FROM comments").fetchall()
    finally:
        con.close()
    assert batches == [("H2025-0101", "closed"), ("H2025-0102", "aborted"), ("H2025-0103", "closed")]
    assert results == [("H2025-0101", "LOD", True)]  # its batch by event time, from the imported history
    assert comments == [("H2025-0101", "nozzle, cleaned")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a/b", "kind": "material", "ts": 1764583200000}\n')
    refused = await asyncio.to_thread(uns, "records", "import", str(bad), *common)
    assert refused.returncode == 1 and "line 1: material is required" in refused.stderr
    assert "nothing was sent" in refused.stderr
