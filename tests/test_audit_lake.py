"""The audit trail on a real lake (issue 17): what the writer records, ``uns audit verify``
catching each kind of tampering by name, compaction and vacuum verifying clean, schema
drift, engine start/stop and configuration changes, reports, ``uns audit log``.

The chain across restarts and SIGKILL inside every step of a commit is checked by
tests/test_lake_crash.py (assert_audit_intact)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.lake_crash_child import deterministic_batch
from tests.lake_helpers import query
from uns.audit.trail import audit_log, verify_lines
from uns.config import load_config
from uns.core.events import Batch, CatalogEntry, SessionEvent
from uns.engine.daemon import audited
from uns.lake import Lake, LakeConfig, LakeSink
from uns.lake.audit_entries import os_user
from uns.lake.manual import record_report
from uns.lake.writer import DeltaWriter
from uns.sparkplug.datatypes import DataType

CONFIG = LakeConfig(commit_interval=60, commit_rows=10_000, commit_worker="thread", compact_interval=0)


async def write(lake: Path, batches: range, *, segments: int = 3, config: LakeConfig = CONFIG) -> None:
    """``batches`` through a LakeSink, flushed into ``segments`` segments."""
    async with LakeSink(lake, config) as sink:
        per = max(1, len(batches) // segments)
        for n, i in enumerate(batches, 1):
            sink.add(deterministic_batch(i))
            if n % per == 0:
                await sink.flush()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("audit") / "lake"
    asyncio.run(write(lake, range(90)))
    return lake


@pytest.fixture
def lake(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "lake"
    shutil.copytree(template, copy)
    return copy


def files_of(lake: Path, table: str) -> list[str]:
    return sorted(pa.table(DeltaTable(lake / table).get_add_actions(flatten=True))["path"].to_pylist())


SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "audit-detail.schema.json").read_text()
)
DETAIL_OF = {
    "engine_start": "engine",
    "engine_stop": "engine",
    "catalog_new": "catalog",
    "schema_drift": "catalog",
}


def assert_intact(lake: Path) -> str:
    """verify says intact, and every entry's detail matches schemas/audit-detail.schema.json."""
    code, lines = verify_lines(str(lake))
    assert (code, len(lines)) == (0, 1), "\n".join(lines)
    for kind, detail in query(lake, "SELECT kind, detail FROM audit"):
        schema = {**SCHEMA, "$ref": f"#/$defs/{DETAIL_OF.get(kind, kind)}"}
        jsonschema.Draft202012Validator(schema).validate(json.loads(detail))
    return lines[0]


def test_an_untouched_lake_verifies_clean_and_says_what_it_covered(lake: Path) -> None:
    summary = assert_intact(lake)
    (entries,) = query(lake, "SELECT count(*) FROM audit")[0]
    (rows,) = query(lake, "SELECT count(*) FROM measurements")[0]
    assert summary.startswith(f"audit trail intact: {entries} entries")
    assert "data files" in summary
    tables = ("measurements", "context", "metric_catalog", "sessions", "rejected")
    total = sum(query(lake, f"SELECT count(*) FROM {t}")[0][0] for t in tables)
    assert rows == 450
    assert f" {total} rows" in summary
    # one data_commit per table per segment, with each file's SHA-256 and rows
    commits = query(
        lake, "SELECT json_extract(detail, '$.segment'), count(*) FROM audit WHERE subject = 'measurements'"
        " AND kind = 'data_commit' GROUP BY 1 ORDER BY 1",
    )  # fmt: skip
    assert [n for _s, n in commits] == [1, 1, 1]
    details = [json.loads(d) for (d,) in query(lake, "SELECT detail FROM audit WHERE kind = 'data_commit'")]
    assert sum(f["rows"] for d in details if d["table"] == "measurements" for f in d["files"]) == 450
    assert all(len(f["sha256"]) == 64 for d in details for f in d["files"])


def _rewrite_a_value(lake: Path) -> str:
    name = files_of(lake, "measurements")[0]
    path = lake / "measurements" / name
    table = pq.read_table(path)
    values = table.column("value_double").to_pylist()
    values[0] = (values[0] or 0.0) + 1.0
    table = table.set_column(table.schema.get_field_index("value_double"), "value_double", pa.array(values))
    pq.write_table(table, path, compression="zstd")
    return f"measurements/{name}: content changed"


def _delete_a_file(lake: Path) -> str:
    name = files_of(lake, "sessions")[-1]
    (lake / "sessions" / name).unlink()
    return f"sessions/{name}: data file missing"


def _delete_an_audit_row(lake: Path) -> str:
    DeltaTable(lake / "audit").delete("seq = 3")
    return "audit: writer (default) seq 3 missing"


def _edit_an_audit_row(lake: Path) -> str:
    DeltaTable(lake / "audit").update(updates={"actor": "'someone else'"}, predicate="seq = 5")
    return "audit: writer (default) seq 5 altered"


def _roll_back_a_table(lake: Path) -> str:
    before = set(files_of(lake, "measurements"))
    table = DeltaTable(lake / "measurements")
    table.restore(table.version() - 1)
    (gone,) = before - set(files_of(lake, "measurements"))
    return f"measurements/{gone}: added by audit (default) seq"


def _add_a_file_behind_the_writers_back(lake: Path) -> str:
    before = set(files_of(lake, "rejected"))
    rows = DeltaTable(lake / "rejected").to_pyarrow_table().slice(0, 1)
    write_deltalake(lake / "rejected", rows, mode="append")
    (new,) = set(files_of(lake, "rejected")) - before
    return f"rejected/{new}: data file without an audit entry"


@pytest.mark.parametrize(
    "tamper",
    [
        _rewrite_a_value,
        _delete_a_file,
        _delete_an_audit_row,
        _edit_an_audit_row,
        _roll_back_a_table,
        _add_a_file_behind_the_writers_back,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_each_tampering_is_found_and_named(lake: Path, tamper: Callable[[Path], str]) -> None:
    expected = tamper(lake)
    code, lines = verify_lines(str(lake))
    assert code == 1
    assert any(line.startswith(expected) for line in lines), "\n".join(lines)


async def test_compaction_and_vacuum_verify_clean(lake: Path) -> None:
    await write(lake, range(1000, 1090))  # more small files, a second run of the writer
    rows_before = query(lake, "SELECT count(*), sum(hash(metric, ts, value_text)) FROM measurements")
    DeltaWriter(lake).compact_recent(dt.date(2025, 1, 1))  # the writer's own compaction
    assert_intact(lake)
    Lake(lake).compact(reason="weekly maintenance")
    Lake(lake).compact(z_order=True)
    assert_intact(lake)
    Lake(lake).vacuum(0, enforce_retention=False)
    assert_intact(lake)
    assert query(lake, "SELECT count(*), sum(hash(metric, ts, value_text)) FROM measurements") == rows_before
    compactions = [
        json.loads(d) for (d,) in query(lake, "SELECT detail FROM audit WHERE kind = 'compaction'")
    ]
    assert {c["table"] for c in compactions} >= {"measurements", "context", "sessions"}
    assert all(
        c["checksum_before"] == c["checksum_after"] and c["rows_before"] == c["rows_after"]
        for c in compactions
    )
    by_hand = query(lake, "SELECT actor, reason, detail FROM audit WHERE kind = 'maintenance' ORDER BY seq")
    assert [(a, json.loads(d)["command"]) for a, _r, d in by_hand] == [(os_user(), "compact")] * 2 + [
        (os_user(), "vacuum")
    ]
    assert by_hand[0][1] == "weekly maintenance"
    vacuumed = query(lake, "SELECT writer_id, subject, detail FROM audit WHERE kind = 'vacuum'")
    assert vacuumed and all(w == "uns-cli" and json.loads(d)["deleted"] for w, _s, d in vacuumed)


def _birth(ts: int, metrics: dict[str, tuple[DataType, str | None]], bdseq: int) -> Batch:
    """A DBIRTH as the engine's sessions make it: its catalog entries and its birth event."""
    return Batch(
        catalog=[
            CatalogEntry("G", "N", "D", name, i, dtype, ts, bdseq, unit, None, "a/b/d")
            for i, (name, (dtype, unit)) in enumerate(metrics.items())
        ],
        sessions=[SessionEvent(ts, "G", "N", "D", "birth", f"seq=0 metrics={len(metrics)}")],
    )


async def test_schema_drift_entries_for_a_changed_birth(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    first = {"Temp": (DataType.Double, "degC"), "Speed": (DataType.Int32, "rpm")}
    changed = {"Temp": (DataType.Float, "degC"), "Level": (DataType.Double, "%")}
    async with LakeSink(lake, CONFIG) as sink:
        sink.add(_birth(1_000, first, 0))
        await sink.flush()
        sink.add(_birth(2_000, first, 1))  # a rebirth with the same definitions: no entry
        await sink.flush()
    async with LakeSink(lake, CONFIG) as sink:  # a restart: the previous birth is read from the lake
        sink.add(_birth(3_000, changed, 2))
    rows = audit_log(str(lake), path="a/b/d", parse_detail=True)
    kinds = [r[3] for r in rows if r[3] in ("catalog_new", "schema_drift")]
    assert kinds == ["catalog_new", "schema_drift"]
    drift = next(r[-1] for r in rows if r[3] == "schema_drift")
    assert drift["added"] == [{"metric": "Level", "datatype": "Double", "unit": "%"}]
    assert drift["removed"] == [{"metric": "Speed", "datatype": "Int32", "unit": "rpm"}]
    assert drift["changed"] == [{"metric": "Temp", "datatype": ["Double", "Float"], "unit": ["degC", "degC"]}]
    assert (drift["edge_node_id"], drift["device_id"], drift["bdseq"]) == ("N", "D", 2)
    assert_intact(lake)


async def test_engine_start_stop_and_what_changed_since_the_last_start(tmp_path: Path) -> None:
    lake, model = tmp_path / "lake", tmp_path / "plant.toml"
    model.write_text("# plant model v1\n")
    for commit_rows, text in ((10_000, "# plant model v1\n"), (20_000, "# plant model v2\n")):
        model.write_text(text)
        overrides = {"lake.path": str(lake), "engine.model": str(model), "broker.password": "s3cret"}
        config = load_config(overrides={**overrides, "lake.commit_rows": commit_rows})
        async with audited(LakeSink(lake, CONFIG), config) as sink:
            sink.add(deterministic_batch(1))
    rows = audit_log(str(lake), user="system", parse_detail=True)
    kinds = [r[3] for r in rows if r[3].startswith(("engine", "config"))]
    assert kinds == ["engine_start", "engine_stop", "engine_start", "config_changed", "engine_stop"]
    start = next(r[-1] for r in rows if r[3] == "engine_start")
    assert start["config"]["broker"]["password"] == "***"
    assert "s3cret" not in json.dumps([r[-1] for r in rows])
    assert len(start["config_sha256"]) == 64 and len(start["files"]["engine.model"]["sha256"]) == 64
    changed = next(r[-1] for r in rows if r[3] == "config_changed")
    assert changed["config"] == {"lake.commit_rows": [10_000, 20_000]}
    assert list(changed["files"]) == ["engine.model"]
    assert_intact(lake)


def test_a_report_is_recorded_and_the_log_filters(lake: Path) -> None:
    seq = record_report(
        lake, "ab" * 32, "B7", actor="qa.reviewer", detail={"batch_id": "B7", "format": "pdf"}
    )
    assert seq == 1
    assert record_report(lake, "cd" * 32, "B8") == 2
    mine = audit_log(str(lake), user="qa.reviewer", parse_detail=True)
    assert [(r[1], r[2], r[3], r[6], r[7]["sha256"]) for r in mine] == [
        ("uns-cli", 1, "report", "B7", "ab" * 32)
    ]
    assert [r[6] for r in audit_log(str(lake), batch="B7")] == ["B7"]
    assert audit_log(str(lake), kind="report", until="2000-01-01T00:00:00Z") == []
    assert len(audit_log(str(lake), kind="report", since="2000-01-01T00:00:00Z")) == 2
    contexts = audit_log(str(lake), kind="context_change", path="acme/basel/pilot")
    assert contexts and all(r[6].startswith("acme/basel/pilot/") for r in contexts)
    assert_intact(lake)


def test_measurement_rows_carry_their_writer_and_segment(lake: Path) -> None:
    segments = query(lake, "SELECT DISTINCT wal_writer, wal_segment FROM measurements ORDER BY 2")
    assert segments == [("", 0), ("", 1), ("", 2)]
    table = DeltaTable(lake / "measurements").to_pyarrow_table()
    assert pc.all(pc.is_valid(table["wal_segment"])).as_py()


async def test_a_compaction_interrupted_before_its_audit_entry_is_recorded_at_the_next_start(
    lake: Path,
) -> None:
    """Shutdown abandons a compaction by killing the commit worker; between the OPTIMIZE
    commit and its audit entry that leaves files the trail does not know, until the next
    start records the compaction (its row checksums prove nothing changed)."""
    DeltaTable(lake / "measurements").optimize.compact()  # committed, no audit entry (the kill)
    code, lines = verify_lines(str(lake))
    assert code == 1
    # named as what it is, not as tampering
    assert any("data file of an interrupted compaction (table version" in line for line in lines), lines
    assert not any("behind the writer's back" in line for line in lines)
    await write(lake, range(500, 510), segments=1)  # the next start of the writer
    assert_intact(lake)
    (detail,) = [json.loads(d) for (d,) in query(lake, "SELECT detail FROM audit WHERE kind = 'compaction'")]
    assert detail["checksum_before"] == detail["checksum_after"]
