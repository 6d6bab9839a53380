"""Many writers, one lake (issue 19, item 2): engines sharding by group commit to the same
Delta tables at the same time, each through its own commit worker process, without a lock
service: no row is lost or doubled, and the context changes that every engine writes are
stored once (lake/sharing.py).  Real sinks, real worker processes, a real lake on disk."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, Transaction

from tests.lake_helpers import query
from uns.core.events import Batch, ContextChange, Sample
from uns.lake import LakeConfig, LakeSink
from uns.lake.sharing import write_rows
from uns.lake.tables import TABLES
from uns.lake.to_arrow import arrow_table
from uns.lake.writer import DeltaWriter, writer_properties
from uns.sparkplug.datatypes import DataType

WRITERS = 3
BATCHES = 40  # per writer; every batch is a WAL segment of its own (commit_rows)
SAMPLES = 5
BASE_TS = 1_780_000_000_000
PATH = "acme/site/area/line"


def _batch(writer: int, i: int) -> Batch:
    """Batch ``i`` of writer ``writer``: its own group's samples, and context change
    ``i // 4`` that every writer took (the same event id in each)."""
    ts = BASE_TS + i
    group = f"line{writer}"
    samples = [
        Sample(
            group,
            "N1",
            "D1",
            f"m{j}",
            DataType.Double,
            float(i),
            ts,
            ts + 1,
            seq=i % 256,
            path=f"{PATH}/{group}",
        )
        for j in range(SAMPLES)
    ]
    batch = Batch(samples=samples)
    if i % 4 == 0:
        ev = i // 4
        for key in ("batch_id", "phase"):
            change = ContextChange(BASE_TS + ev, ts + writer, PATH, key, f"{key}-{ev}", event_id=f"ev-{ev}")
            batch.context.append(change)
    return batch


async def _write(root: str, wal: Path, writer: int, batches: int) -> None:
    config = LakeConfig(
        writer_id=f"w{writer}",
        commit_rows=SAMPLES,
        commit_interval=0.05,
        compact_interval=0.5,
        wal_dir=str(wal / f"wal-{writer}"),
    )
    async with LakeSink(root, config) as sink:
        for i in range(batches):
            sink.add(_batch(writer, i))
            await asyncio.sleep(0.01)
        await sink.flush()
        assert sink.stats()["commit_errors"] == 0


@pytest.fixture(params=["directory", "s3"])
def shared_lake(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The lake the writers share: a directory, or a bucket of the local S3 server."""
    if request.param == "s3":
        return str(request.getfixturevalue("s3_lake"))
    return str(tmp_path / "lake")


@pytest.mark.slow
async def test_writers_committing_at_once_lose_and_double_nothing_and_store_context_once(
    shared_lake: str, tmp_path: Path
) -> None:
    batches = BATCHES // 4 if shared_lake.startswith("s3://") else BATCHES  # moto is slow
    await asyncio.gather(*(_write(shared_lake, tmp_path, w, batches) for w in range(WRITERS)))
    rows = query(shared_lake, "SELECT group_id, metric, ts, count(*) FROM measurements GROUP BY ALL")
    assert len(rows) == WRITERS * batches * SAMPLES  # every sample ...
    assert {r[3] for r in rows} == {1}  # ... once
    context = query(shared_lake, "SELECT event_id, key, count(*) FROM context GROUP BY ALL")
    assert len(context) == 2 * len(range(0, batches, 4))  # every change of every event ...
    assert {c[2] for c in context} == {1}  # ... once, though three writers wrote it
    enriched = query(shared_lake, "SELECT count(*) FROM measurements_asof WHERE batch_id IS NOT NULL")
    assert enriched[0][0] > 0  # measurements_asof reads the shared context as before


def test_a_context_change_already_in_the_table_is_not_stored_again(tmp_path: Path) -> None:
    """An event the table records (its app transaction uns-context-<id>) is left out of a
    second writer's commit; a change without an event id (an old WAL) is appended as it is."""
    writer = DeltaWriter(tmp_path, "a")
    writer.ensure_tables()
    day = dt.datetime.fromtimestamp(BASE_TS / 1000, dt.UTC).date()

    def columns(event_id: str | None) -> list[list[object]]:
        change = [BASE_TS, BASE_TS, PATH, "phase", "dry", "mes", None, None, event_id]
        return [[v] for v in change]

    table = DeltaTable(tmp_path / "context")
    for n, (ident, txn) in enumerate((("ev-1", "a"), ("ev-1", "b"), (None, "a"), (None, "b"))):
        data: pa.Table = arrow_table("context", columns(ident), n)
        write_rows("context", table, data, Transaction(f"uns-wal-{txn}-context", n), writer_properties())
        table.update_incremental()
    stored = DeltaTable(tmp_path / "context").to_pyarrow_table().to_pylist()
    assert sorted((r["event_id"] or "", r["date"]) for r in stored) == [("", day), ("", day), ("ev-1", day)]


CREATORS = 4
CREATION_ROUNDS = 12


def _create_lakes(root: str, writer: int, barrier: Any, errors: Any) -> None:
    """One engine's start on each of ``CREATION_ROUNDS`` new lakes, in step with the other
    processes (the barrier): what several engines started together on a new lake do."""
    for number in range(CREATION_ROUNDS):
        barrier.wait(timeout=120)
        try:
            DeltaWriter(Path(root) / f"lake-{number}", f"w{writer}").open_tables()
        except Exception as exc:  # reported to the test, which names it
            errors.put(f"round {number}, writer {writer}: {exc}")


def test_writers_opening_one_new_lake_at_once_all_start_and_create_each_table_once(tmp_path: Path) -> None:
    """Engines started together on a new lake all start (issue 26): delta-rs's create is no
    atomic "create if absent" (a second create is committed on top of the first, or fails
    with "Protocol changed since last commit"), so the writers create under a lock."""
    ctx = multiprocessing.get_context("spawn")  # fork would copy this process's threads
    barrier, errors = ctx.Barrier(CREATORS), ctx.Queue()
    procs = [
        ctx.Process(target=_create_lakes, args=(str(tmp_path), w, barrier, errors)) for w in range(CREATORS)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0] * CREATORS
    failed = []
    while not errors.empty():
        failed.append(errors.get())
    for number in range(CREATION_ROUNDS):
        for table in TABLES:
            if (version := DeltaTable(tmp_path / f"lake-{number}" / table).version()) != 0:
                failed.append(f"round {number}: {table} has {version + 1} commits, not its one CREATE")
    assert failed == []
