"""A rejected table that cannot be poisoned (issue 29, item 2), on a real lake.

Before issue 29 a rejected message was stored whole; one payload of about 100 MiB made
a Parquet footer Arrow refuses ("Couldn't deserialize thrift"), and every batch report
failed from then on.  Here the test writes such a file itself, with the old writer's
settings (ZSTD level 3, statistics uncut, the four-column rejected table), into a lake
with a batch: the reports still work (the file skipped with one warning naming it),
``uns lake repair`` rewrites it bounded and the audit trail records the repair; a
smaller unbounded file is rewritten by the next ``uns lake compact``; and a WAL segment
of the old format with a whole payload is bounded at its commit."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pyarrow as pa
import pytest
from deltalake import DeltaTable, WriterProperties, write_deltalake

from tests.lake_helpers import query
from uns.audit.trail import verify_lines
from uns.core.events import Batch, ContextChange, Sample
from uns.lake import LakeConfig, LakeSink
from uns.lake.wal import MAGIC, encode_record, segment_path, wal_dir_for
from uns.sparkplug.datatypes import DataType

ROOT = Path(__file__).resolve().parent.parent
UNS = (sys.executable, "-m", "uns")
CONFIG = LakeConfig(commit_interval=60, commit_worker="thread", compact_interval=0)
T0 = 1_796_630_400_000  # 2026-12-07T08:00:00Z
DAY = "2026-12-07"
TOPIC = "spBv1.0/Elsewhere/NDATA/not-a-node"
#: what the engine's writer used before issue 29 (lake.writer.writer_properties)
OLD_WRITER = WriterProperties(compression="ZSTD", compression_level=3)
OLD_REJECTED = pa.schema(
    [
        ("received_at", pa.timestamp("ms", tz="UTC")),
        ("topic", pa.string()),
        ("payload", pa.binary()),
        ("error", pa.string()),
        ("date", pa.date32()),
    ]
)
DETAIL_SCHEMA = json.loads((ROOT / "schemas" / "audit-detail.schema.json").read_text())


def batch_rows() -> Batch:
    """Batch B1 on a/u1: its context and ten samples of T."""
    changes = [
        ContextChange(T0, T0, "a/u1", "batch_id", "B1", event_id="e1"),
        ContextChange(T0 + 10_000, T0 + 10_000, "a/u1", "batch_id", None, event_id="e2"),
    ]
    samples = [
        Sample("G", "N", "D", "T", DataType.Double, 20.0 + i, T0 + i * 1000, T0 + i * 1000, path="a/u1/probe")
        for i in range(10)
    ]
    return Batch(samples=samples, context=changes)


async def write_batch(lake: Path) -> None:
    async with LakeSink(lake, CONFIG) as sink:
        sink.add(batch_rows())
        await sink.flush()


def poison(lake: Path, size: int) -> bytes:
    """A rejected row with a whole payload of ``size`` bytes, as the old writer stored it."""
    payload = bytes(size)
    row = pa.table(
        {
            "received_at": [dt.datetime.fromtimestamp((T0 + 5000) / 1000, tz=dt.UTC)],
            "topic": [TOPIC],
            "payload": [payload],
            "error": ["not a Sparkplug B topic"],
            "date": [dt.date.fromisoformat(DAY)],
        },
        schema=OLD_REJECTED,
    )
    table = DeltaTable(lake / "rejected")
    write_deltalake(table, row, mode="append", schema_mode="merge", writer_properties=OLD_WRITER)
    return payload


def uns(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    return subprocess.run(
        [*UNS, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False
    )


def kinds(lake: Path) -> list[tuple[str, str]]:
    rows = query(lake, "SELECT kind, detail FROM audit ORDER BY ts")
    for kind, detail in rows:
        ref = {"catalog_new": "catalog", "schema_drift": "catalog"}.get(kind, kind)
        if ref in DETAIL_SCHEMA["$defs"]:
            jsonschema.Draft202012Validator({**DETAIL_SCHEMA, "$ref": f"#/$defs/{ref}"}).validate(
                json.loads(detail)
            )
    return rows


@pytest.mark.slow
def test_a_poisoned_rejected_file_is_skipped_by_reports_and_repaired_bounded(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    asyncio.run(write_batch(lake))
    payload = poison(lake, 100 * 2**20)  # its footer: two copies, past Arrow's 100 MB Thrift limit

    shown = uns("batch", "show", "B1", "--lake", str(lake), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "batch B1" in shown.stdout
    warnings = [line for line in shown.stderr.splitlines() if "skipping unreadable file" in line]
    assert len(warnings) == 1 and "rejected" in warnings[0] and "uns lake repair" in warnings[0]
    report = uns("batch", "report", "B1", "--lake", str(lake), "--format", "json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert json.loads((tmp_path / "B1.json").read_text())["batch"]["batch_id"] == "B1"

    repaired = uns("lake", "repair", "--lake", str(lake), "--reason", "issue 29", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    assert "rewrote 1 file(s)" in repaired.stdout and DAY in repaired.stdout
    (row,) = query(lake, "SELECT topic, payload, payload_size, payload_sha256, error FROM rejected")
    assert row == (
        TOPIC,
        payload[:1024],
        len(payload),
        hashlib.sha256(payload).hexdigest(),
        "not a Sparkplug B topic",
    )
    again = uns("batch", "show", "B1", "--lake", str(lake), cwd=tmp_path)
    assert again.returncode == 0 and "skipping" not in again.stderr
    assert uns("lake", "repair", "--lake", str(lake), cwd=tmp_path).stdout.startswith("nothing to repair")

    entries = kinds(lake)
    (repair,) = [json.loads(d) for k, d in entries if k == "repair"]
    assert repair["rows_before"] == repair["rows_after"] == 1
    assert repair["checksum_before"] == repair["checksum_after"]
    assert [k for k, _ in entries].count("maintenance") == 2
    code, lines = verify_lines(str(lake))  # the old file was never in the trail; the repaired one is
    assert code == 0, lines


def test_the_next_compaction_rewrites_an_unbounded_rejected_file(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    asyncio.run(write_batch(lake))
    payload = poison(lake, 70_000)  # readable, but stored whole
    compacted = uns("lake", "compact", "--lake", str(lake), cwd=tmp_path)
    assert compacted.returncode == 0, compacted.stderr
    (row,) = query(lake, "SELECT octet_length(payload), payload_size, payload_sha256 FROM rejected")
    assert row == (1024, 70_000, hashlib.sha256(payload).hexdigest())
    assert "repair" in [k for k, _ in kinds(lake)]


def test_a_whole_payload_in_an_old_wal_segment_is_bounded_at_its_commit(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    asyncio.run(write_batch(lake))
    payload = os.urandom(300_000)
    columns = (
        [],
        [],
        [],
        [],
        [[T0], [TOPIC], [payload], ["not a Sparkplug B topic"]],
        [],
    )  # the 4-column record
    wal = wal_dir_for(lake)
    segment_path(wal, 900).write_bytes(MAGIC + encode_record(columns))
    asyncio.run(write_batch(lake))  # the next start replays it
    rows = query(lake, "SELECT octet_length(payload), payload_size, payload_sha256 FROM rejected")
    assert rows == [(1024, 300_000, hashlib.sha256(payload).hexdigest())]
