"""examples/queries.sql against a lake filled through LakeSink with a realistic
granulation record: two batches of three phases, a temperature excursion, and a
node death with a 30-second hole in the data during the second batch."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from uns.batch.trend import TrendRequest, build_trend
from uns.core.context import ContextStore
from uns.core.events import Batch, CatalogEntry, ContextChange, Sample, SessionEvent
from uns.errors import LakeError
from uns.lake import Lake, LakeConfig, LakeSink, connect
from uns.lake.query import applied_context_ids, named_queries, queries_from_file, run_queries, select_queries
from uns.lake.schemas import SCHEMAS
from uns.lake.tables import batch_columns
from uns.lake.to_arrow import arrow_table
from uns.lake.wal import MAGIC, encode_record
from uns.sparkplug.datatypes import DataType

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "queries.sql"
QUERIES = named_queries(EXAMPLES.read_text())
T0 = 1_767_247_200_000  # 2026-01-01T06:00:00Z
GRAN = "acme/basel/pilot/granulation/gr-201"
IDS = ("PilotPlant", "GRAN-Ctrl", "GR-201")
METRICS = {  # name: (datatype, unit, engLow, engHigh)
    "ImpellerSpeed": (DataType.Float, "rpm", 0.0, 400.0),
    "Power": (DataType.Double, "kW", 0.0, 12.0),
    "BedTemp": (DataType.Double, "degC", 15.0, 60.0),
    "SprayRate": (DataType.Double, "g/min", 0.0, 200.0),
}
PHASES = ("dry_mix", "wet_granulation", "drying")
PHASE_S = 60
BATCH_STARTS = {"B2026-0001": 0, "B2026-0002": 240}  # seconds after T0
DEAD = range(370, 400)  # seconds of batch 2 without data: NDEATH at 370, NBIRTH at 400
EXCURSION = range(300, 305)  # BedTemp above 60 degC during batch 2's wet granulation


def ms(second: float) -> int:
    return T0 + int(second * 1000)


def births(second: int) -> Batch:
    props = {
        n: json.dumps({"engUnit": u, "engLow": lo, "engHigh": hi}) for n, (_, u, lo, hi) in METRICS.items()
    }
    return Batch(
        sessions=[
            SessionEvent(ms(second), *IDS[:2], None, "birth", "bdSeq=0"),
            SessionEvent(ms(second), *IDS, "birth", "metrics=4"),
        ],
        catalog=[
            CatalogEntry(*IDS, name, i, dtype, ms(second), 0, unit, props[name], GRAN)
            for i, (name, (dtype, unit, _, _)) in enumerate(METRICS.items())
        ],
    )


def context_changes() -> list[ContextChange]:
    changes = []
    for batch_id, start in BATCH_STARTS.items():
        for n, phase in enumerate(PHASES):
            ts = ms(start + n * PHASE_S)
            values = {"batch_id": batch_id, "order_id": f"PO-{batch_id[-4:]}", "product": "Tab-X 50 mg"}
            values |= {"recipe": "Tab-X granulation v2", "phase": phase}
            changes += [
                ContextChange(ts, ts, GRAN, k, v, source="mes", user="op1") for k, v in values.items()
            ]
        end = ms(start + len(PHASES) * PHASE_S)
        changes += [ContextChange(end, end, GRAN, k, None, source="mes") for k in values]
    return changes


def value(metric: str, second: int) -> float:
    phase_n = (second % 240) // PHASE_S
    if phase_n == len(PHASES):  # idle between batches
        return {"ImpellerSpeed": 0.0, "Power": 0.4, "SprayRate": 0.0, "BedTemp": 22.0}[metric]
    base = {
        "ImpellerSpeed": 150.0 + 100 * phase_n,
        "Power": 4.0 + phase_n,
        "SprayRate": 80.0 * (phase_n == 1),
    }
    if metric == "BedTemp":
        return 64.5 if second in EXCURSION else 25.0 + 5 * phase_n + (second % 7) * 0.1
    return base[metric] + (second % 5) * 0.5


async def fill(lake: Path) -> None:
    store = ContextStore()
    pending = sorted(context_changes(), key=lambda c: c.ts)
    async with LakeSink(lake) as sink:
        sink.add(births(-5))
        for second in range(430):
            now = ms(second)
            due = [c for c in pending if c.ts <= now]
            pending = pending[len(due) :]
            for change in due:
                store.apply(change)
            if due:
                sink.add(Batch(context=due))
            if second == DEAD.start:
                sink.add(
                    Batch(
                        sessions=[
                            SessionEvent(now, *IDS[:2], None, "death", "bdSeq=0"),
                            SessionEvent(now, *IDS, "death", "edge node NDEATH"),
                        ]
                    )
                )
            if second == DEAD.stop:
                sink.add(births(second))
            if second in DEAD:
                continue
            ctx = store.at(GRAN, now)
            samples = [
                Sample(
                    *IDS,
                    metric=name,
                    datatype=dtype,
                    value=value(name, second),
                    ts=now,
                    received_at=now + 40,
                    seq=second % 256,
                    bdseq=0,
                    alias=i,
                    path=GRAN,
                    unit=unit,
                    context=ctx or None,
                )
                for i, (name, (dtype, unit, _, _)) in enumerate(METRICS.items())
            ]
            # the utility node: no ISA-95 context at all
            samples.append(Sample("PilotPlant", "UTIL", None, "CPU/Load", DataType.Float, 12.5, now, now))
            sink.add(Batch(samples=samples))


@pytest.fixture(scope="module")
def plant_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("plant")
    asyncio.run(fill(lake))
    return lake


def run(lake: Path, name: str) -> list[dict[str, object]]:
    con = connect(lake)
    try:
        cur = con.execute(QUERIES[name])
        columns = [d[0] for d in cur.description or []]
        return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def test_the_file_has_the_six_queries() -> None:
    assert list(QUERIES) == [
        "batch_timeline", "phase_statistics", "batch_trend", "excursions", "batch_completeness",
        "trace_measurements",
    ]  # fmt: skip


def test_the_whole_file_runs_on_one_snapshot_each_query_under_its_name(plant_lake: Path) -> None:
    """`uns lake sql --file examples/queries.sql`: every query, in file order, by its name."""
    results = run_queries(plant_lake, queries_from_file(EXAMPLES))
    assert [r.name for r in results] == list(QUERIES)
    assert all(r.rows for r in results)
    (only,) = run_queries(plant_lake, queries_from_file(EXAMPLES, "excursions"))
    assert only.name == "excursions" and only.columns[:2] == ["path", "metric"]


def test_a_file_of_queries_is_refused_where_it_would_mislead() -> None:
    assert select_queries("SELECT 1") == {"": "SELECT 1"}  # no names: the file is one query
    assert select_queries("-- a title\n\n-- name: a\nSELECT 1;\n") == {"a": "SELECT 1"}
    with pytest.raises(LakeError, match=r"f.sql: SQL before the first `-- name:` line would not run"):
        select_queries("SELECT 0;\n-- name: a\nSELECT 1", source="f.sql")
    with pytest.raises(LakeError, match="names more than one query a"):
        select_queries("-- name: a\nSELECT 1\n-- name: a\nSELECT 2")
    with pytest.raises(LakeError, match=r"has no query named 'c'; its queries: a, b"):
        select_queries("-- name: a\nSELECT 1\n-- name: b\nSELECT 2", "c")
    with pytest.raises(LakeError, match="no named queries"):
        select_queries("SELECT 1", "a")
    with pytest.raises(LakeError, match="query b: the query is empty"):
        run_queries("/nonexistent", {"a": "SELECT 1", "b": "-- nothing\n;"})


def test_trace_measurements_names_message_segment_and_audit_entry(plant_lake: Path) -> None:
    rows = run(plant_lake, "trace_measurements")
    assert len(rows) == 100
    first = rows[0]
    assert first["topic"] == "spBv1.0/PilotPlant/DDATA/GRAN-Ctrl/GR-201"
    assert (first["seq"], first["bdseq"], first["wal_writer"]) == (0, 0, "")
    assert first["received_at"] == dt.datetime.fromtimestamp((T0 + 40) / 1000, dt.UTC)
    assert all(r["audit_seq"] is not None and len(str(r["audit_hash"])) == 64 for r in rows)
    assert all(isinstance(r["wal_segment"], int) for r in rows)


def test_batch_timeline(plant_lake: Path) -> None:
    rows = run(plant_lake, "batch_timeline")
    assert [(r["batch_id"], r["phase"]) for r in rows] == [(b, p) for b in BATCH_STARTS for p in PHASES]
    assert {r["duration"] for r in rows} == {timedelta(seconds=PHASE_S)}
    assert rows[3]["phase_start"].timestamp() * 1000 == ms(240)  # type: ignore[attr-defined]


def test_phase_statistics(plant_lake: Path) -> None:
    rows = run(plant_lake, "phase_statistics")
    assert [(r["batch_id"], r["phase"], r["samples"]) for r in rows] == [
        ("B2026-0001", "dry_mix", 60),
        ("B2026-0001", "wet_granulation", 60),
        ("B2026-0001", "drying", 60),
        ("B2026-0002", "dry_mix", 60),
        ("B2026-0002", "wet_granulation", 60),
        ("B2026-0002", "drying", 30),  # the dead 30 s are missing
    ]
    assert rows[0]["unit"] == "degC"
    assert rows[0]["minimum"] == 25.0
    assert rows[0]["maximum"] == 25.6
    assert rows[4]["maximum"] == 64.5


def test_batch_trend_gives_the_numbers_of_uns_batch_trend(plant_lake: Path) -> None:
    rows = run(plant_lake, "batch_trend")
    stats = {(r["batch_id"], r["phase"]): r for r in run(plant_lake, "phase_statistics")}
    assert [(r["batch_id"], r["samples"]) for r in rows] == [("B2026-0001", 60), ("B2026-0002", 30)]
    for r in rows:  # the per-batch means of phase_statistics (which rounds them)
        assert round(float(r["value"]), 3) == stats[(r["batch_id"], "drying")]["mean"]
    con = connect(plant_lake)
    try:
        doc = build_trend(con, TrendRequest("BedTemp", phase="drying", path=GRAN))
    finally:
        con.close()
    assert [(b["batch_id"], b["value"], b["moving_range"]) for b in doc["batches"]] == [
        (r["batch_id"], r["value"], r["moving_range"]) for r in rows
    ]
    assert (doc["mean"], doc["sigma_within"], doc["ucl"], doc["lcl"]) == pytest.approx(
        (rows[0]["centre"], rows[0]["sigma_within"], rows[0]["ucl"], rows[0]["lcl"]), rel=1e-12
    )


def test_excursions(plant_lake: Path) -> None:
    rows = run(plant_lake, "excursions")
    assert len(rows) == 1
    (row,) = rows
    assert (row["metric"], row["batch_id"], row["phase"], row["samples"]) == (
        "BedTemp",
        "B2026-0002",
        "wet_granulation",
        len(EXCURSION),
    )
    assert row["highest"] == 64.5
    assert row["high_limit"] == 60.0


def test_batch_completeness(plant_lake: Path) -> None:
    rows = run(plant_lake, "batch_completeness")
    summary = [(r["batch_id"], r["samples"], r["gaps"], r["deaths"], r["rebirths"]) for r in rows]
    assert summary == [
        ("B2026-0001", 180 * len(METRICS), 0, 0, 0),
        ("B2026-0002", 150 * len(METRICS), 1, 1, 1),
    ]
    assert rows[1]["longest_gap"] == timedelta(seconds=len(DEAD) + 1)
    assert rows[1]["metrics"] == len(METRICS)


# ------------------------------------------------------------------ context event ids


def _change(second: float, key: str, value: str | None, ident: str | None) -> ContextChange:
    return ContextChange(ms(second), ms(second), GRAN, key, value, "mes", None, None, ident)


def _old_context_table(root: Path, missing: tuple[str, ...]) -> None:
    """A context table as lakes written before some of its columns have it (``missing``)."""
    old_schema = pa.schema([f for f in SCHEMAS["context"] if f.name not in missing])
    table = DeltaTable.create(root / "context", old_schema, partition_by=["date"])
    rows = arrow_table("context", batch_columns(Batch(context=[_change(0, "batch_id", "B-old", None)]))[1], 1)
    write_deltalake(table, rows.drop_columns(list(missing)), mode="append")


@pytest.mark.parametrize("missing", [("event_id", "signer"), ("signer",)])
async def test_an_old_lake_without_the_newer_context_columns_opens_and_is_written(
    tmp_path: Path, missing: tuple[str, ...]
) -> None:
    _old_context_table(tmp_path, missing)
    con = connect(tmp_path)
    assert con.execute("SELECT value, event_id, signer FROM context").fetchall() == [("B-old", None, None)]
    con.close()
    assert applied_context_ids(tmp_path) == set()
    async with LakeSink(tmp_path, LakeConfig(commit_interval=0.05)) as sink:
        sink.add(Batch(context=[_change(1, "phase", "dry_mix", "e-1"), _change(1, "lot", "L1", "e-1")]))
        await sink.flush()
        signed = _change(2, "phase", "drying", "e-2")
        signed.signer = "qa-jdoe"
        sink.add(Batch(context=[signed]))
    con = connect(tmp_path)
    rows = con.execute("SELECT value, event_id, signer FROM context ORDER BY ts, key").fetchall()
    assert rows == [
        ("B-old", None, None),
        ("L1", "e-1", None),
        ("dry_mix", "e-1", None),
        ("drying", "e-2", "qa-jdoe"),
    ]
    con.close()
    assert applied_context_ids(tmp_path) == {"e-1", "e-2"}
    Lake(tmp_path).compact()  # old files without the columns merge with new ones
    con = connect(tmp_path)
    assert con.execute("SELECT count(*), count(event_id), count(signer) FROM context").fetchone() == (4, 3, 1)
    con.close()


def test_applied_context_ids_of_no_lake_and_an_empty_one(tmp_path: Path) -> None:
    assert applied_context_ids(tmp_path / "nothing") == set()
    assert applied_context_ids(tmp_path) == set()


def test_applied_context_ids_include_rows_still_in_the_wal(tmp_path: Path) -> None:
    """Rows accepted before a crash are committed when their writer starts again, which is
    after the engine loaded the ids: so the ids come from the WAL too."""
    wal = tmp_path / "_wal-a"
    wal.mkdir()
    record = encode_record(batch_columns(Batch(context=[_change(1, "phase", "x", "in-wal")])))
    (wal / "0000000000000007.wal").write_bytes(MAGIC + record)
    assert applied_context_ids(tmp_path) == {"in-wal"}
