"""Lake maintenance (info, compact, vacuum) and readers during writes and compaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from hypothesis import given
from hypothesis import strategies as st

from tests.lake_crash_child import BASE_TS, SAMPLES_PER_BATCH, deterministic_batch
from tests.test_lake_sink import wait_for
from uns.cli import lake_cmds
from uns.core.events import Batch
from uns.errors import LakeError
from uns.lake import Lake, LakeConfig, LakeSink, connect
from uns.lake.maintenance import compaction_summary
from uns.lake.writer import MAX_TARGET_BYTES, MIN_TARGET_BYTES, DeltaWriter, recent_target_bytes

ROOT = Path(__file__).resolve().parent.parent


async def fill(lake: Path, batches: range, *, commits: int) -> None:
    """Write ``batches`` in ``commits`` separate commits (many small files)."""
    per = max(1, len(batches) // commits)
    async with LakeSink(lake, LakeConfig(commit_interval=60)) as sink:
        for n, i in enumerate(batches):
            sink.add(deterministic_batch(i))
            if n % per == per - 1:
                await sink.flush()


def counts(lake: Path) -> tuple[int, int]:
    con = connect(lake)
    try:
        row = con.execute("SELECT count(*), count(DISTINCT (ts, metric)) FROM measurements").fetchall()[0]
    finally:
        con.close()
    return row[0], row[1]


async def test_info_reports_rows_files_and_time_range(tmp_path: Path) -> None:
    empty = Lake(tmp_path).info()
    assert not empty["measurements"].exists
    await fill(tmp_path, range(100), commits=4)
    info = Lake(tmp_path).info()
    m = info["measurements"]
    assert m.exists
    assert m.rows == 100 * SAMPLES_PER_BATCH
    assert m.files == 4
    assert m.partitions == 1
    assert m.version == 4  # the empty create, then four appends
    assert m.min_ts is not None
    assert m.max_ts is not None
    assert int(m.min_ts.timestamp() * 1000) == BASE_TS
    assert int(m.max_ts.timestamp() * 1000) == BASE_TS + 99
    assert m.bytes > 0
    assert m.last_operation == "WRITE"
    assert m.last_commit is not None
    assert info["sessions"].rows == len(range(0, 100, 7))
    assert set(m.as_dict()) >= {"rows", "files", "bytes", "min_ts", "max_ts", "version", "last_commit"}


@pytest.mark.parametrize("z_order", [False, True])
async def test_compact_merges_files_and_keeps_every_row(tmp_path: Path, z_order: bool) -> None:
    await fill(tmp_path, range(200), commits=8)
    lake = Lake(tmp_path)
    before = lake.info()["measurements"]
    metrics = lake.compact(z_order=z_order)
    after = lake.info()["measurements"]
    assert metrics["measurements"]["numFilesRemoved"] == 8
    assert after.files == 1
    assert after.rows == before.rows
    assert counts(tmp_path) == (200 * SAMPLES_PER_BATCH,) * 2
    # the writer still finds its app transactions after an OPTIMIZE commit: no replays, no reuse
    await fill(tmp_path, range(200, 210), commits=1)
    assert counts(tmp_path) == (210 * SAMPLES_PER_BATCH,) * 2


async def test_after_compaction_a_glob_counts_twice_and_the_delta_log_counts_right(tmp_path: Path) -> None:
    """docs/lake.md, "Reading the lake without uns": the live files come from the Delta log;
    a glob over the table folder also reads the files compaction replaced (until vacuum)."""
    await fill(tmp_path, range(60), commits=4)
    rows = 60 * SAMPLES_PER_BATCH
    summary = compaction_summary(Lake(tmp_path).compact(), Lake(tmp_path).info())
    merged = next(r for r in summary if r["table"] == "measurements")
    assert (merged["files_removed"], merged["files_added"], merged["rows"], merged["files"]) == (
        4,
        1,
        rows,
        1,
    )
    assert merged["seconds"] >= 0 and merged["bytes_added"] > 0
    con = duckdb.connect()
    glob = str(tmp_path / "measurements" / "*" / "*.parquet")
    (globbed,) = con.execute("SELECT count(*) FROM read_parquet(?)", [glob]).fetchone() or (0,)
    live = DeltaTable(str(tmp_path / "measurements")).file_uris()
    query = "SELECT count(*) FROM read_parquet(?, hive_partitioning = true, union_by_name = true)"
    (logged,) = con.execute(query, [live]).fetchone() or (0,)
    assert (globbed, logged) == (2 * rows, rows)
    assert counts(tmp_path)[0] == rows  # the views read the live files, as the log says


async def test_uns_lake_compact_prints_a_readable_summary(tmp_path: Path) -> None:
    await fill(tmp_path, range(30), commits=3)
    text = lake_cmds.compact(str(tmp_path), z_order=False)
    lines = text.splitlines()
    header = ["table", "files_removed", "files_added", "rows", "files", "seconds"]
    assert [c.strip() for c in lines[0].split("|")] == header
    measurements = next(line for line in lines if line.startswith("measurements "))
    assert [c.strip() for c in measurements.split("|")][:5] == [
        "measurements",
        "3",
        "1",
        str(30 * SAMPLES_PER_BATCH),
        "1",
    ]
    assert lines[-1].startswith("compacted ") and "until `uns lake vacuum`" in lines[-1]
    assert "numFilesAdded" not in text  # not deltalake's metrics JSON
    rows = json.loads(lake_cmds.compact(str(tmp_path), z_order=False, fmt="json"))
    assert {r["table"]: r["files_removed"] for r in rows}["measurements"] == 0  # nothing left to merge


async def test_vacuum_enforces_retention_unless_disabled(tmp_path: Path) -> None:
    await fill(tmp_path, range(60), commits=3)
    lake = Lake(tmp_path)
    lake.compact()
    with pytest.raises(LakeError, match="retention"):
        lake.vacuum(1)  # below the 7-day minimum: readers on older snapshots could break
    assert lake.vacuum() == {key: [] for key in lake.vacuum()}  # default: a week, nothing that old
    planned = lake.vacuum(0, enforce_retention=False, dry_run=True)
    assert len(planned["measurements"]) == 3
    removed = lake.vacuum(0, enforce_retention=False)
    assert len(removed["measurements"]) == 3
    parquet = list((tmp_path / "measurements").rglob("*.parquet"))
    assert len(parquet) == 1
    assert counts(tmp_path) == (60 * SAMPLES_PER_BATCH,) * 2


async def test_readers_see_growing_duplicate_free_snapshots_during_writes_and_compaction(
    tmp_path: Path,
) -> None:
    lake = tmp_path / "lake"
    total = 0
    async with LakeSink(lake, LakeConfig(commit_interval=0.05)) as sink:
        reader = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "tests.lake_crash_child", "read", str(lake), "4.0", "10"],
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        output = asyncio.create_task(reader.communicate())
        try:
            compactions = 0
            # writes go on until the reader has taken its snapshots (at least 6,000 batches)
            for i in range(60_000):
                if i >= 6_000 and output.done():
                    break
                sink.add(deterministic_batch(i))
                total += 1
                if i % 100 == 99:
                    await asyncio.sleep(0.05)
                if i % 1_500 == 1_499:  # compaction commits interleave with the writer's appends
                    await asyncio.to_thread(Lake(lake).compact, z_order=compactions % 2 == 1)
                    compactions += 1
            await sink.flush()
            out, _ = await asyncio.wait_for(output, 60)
        finally:
            if reader.returncode is None:
                reader.kill()
                await output
    assert reader.returncode == 0
    snapshots = [tuple(int(x) for x in line.split()) for line in out.decode().splitlines()]
    assert len(snapshots) >= 10, "the reader should have taken many snapshots"
    previous = 0
    for rows, distinct, newest in snapshots:
        assert rows == distinct, "a snapshot saw a row twice"
        assert rows >= previous, "a later snapshot saw fewer rows"
        # a snapshot holds whole batches, a prefix of the batches written
        assert rows == (newest + 1) * SAMPLES_PER_BATCH if rows else newest == -1
        previous = rows
    assert previous > 0
    assert counts(lake) == (total * SAMPLES_PER_BATCH,) * 2
    assert Lake(lake).info()["measurements"].files < 40


async def test_the_writer_compacts_recent_partitions_itself(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    today = dt.datetime.fromtimestamp(now / 1000, dt.UTC).date()
    config = LakeConfig(commit_interval=60, compact_interval=0.3)
    async with LakeSink(tmp_path, config) as sink:
        for i in range(12):
            batch = Batch(samples=deterministic_batch(i).all_samples())  # objects: their ts changes
            for s in batch.samples:
                s.ts = now + i
            sink.add(batch)
            await sink.flush()  # one small file per flush
        # A compaction runs right after a commit once the interval has passed, in the
        # sink's own task (a loaded machine may have made one between the first flushes,
        # and shutdown abandons one in progress): commit old rows until one ran after
        # all 12 files were there.
        old_batches = 0
        for _ in range(40):
            await asyncio.sleep(0.35)
            sink.add(deterministic_batch(100 + old_batches))  # 2025: not a recent partition
            old_batches += 1
            await sink.flush()
            await wait_for(lambda: not sink.stats()["compacting"], within_s=30)
            if len(measurement_files(tmp_path, today)) == 1:
                break
        assert int(sink.stats()["compactions"]) >= 1
    assert len(measurement_files(tmp_path, today)) == 1  # today's partition merged
    assert len(measurement_files(tmp_path)) == 1 + old_batches  # the old partition left alone
    assert counts(tmp_path) == ((12 + old_batches) * SAMPLES_PER_BATCH,) * 2


def measurement_files(lake: Path, day: dt.date | None = None) -> dict[str, int]:
    """The measurements table's data files (of partition ``day``, default all) and their
    row counts, from the Delta log."""
    adds = pa.table(DeltaTable(lake / "measurements").get_add_actions(flatten=True))
    rows = zip(
        adds.column("path").to_pylist(),
        adds.column("num_records").to_pylist(),
        adds.column("partition.date").to_pylist(),
        strict=True,
    )
    return {path: count for path, count, date in rows if day is None or date == day}


async def test_the_writers_compaction_is_bounded_by_rows_not_by_the_whole_day(tmp_path: Path) -> None:
    """deltalake merges every file below its byte target; for well-compressed data that
    is the whole day, every time.  The writer's own compaction aims at files of
    ``target_rows`` instead, so a second compaction rewrites only what is new."""
    target_rows = 8_000
    await fill(tmp_path, range(4_800), commits=12)  # 12 files of 2,000 rows, one partition
    since = dt.date(2000, 1, 1)
    DeltaWriter(tmp_path).compact_recent(since, target_rows=target_rows)
    merged = measurement_files(tmp_path)
    assert 2 <= len(merged) <= 6, merged  # not one file of all 24,000 rows
    assert all(rows <= 2 * target_rows for rows in merged.values()), merged
    assert sum(merged.values()) == 24_000

    await fill(tmp_path, range(4_800, 5_600), commits=2)  # 2 new files of 2,000 rows
    before = measurement_files(tmp_path)
    DeltaWriter(tmp_path).compact_recent(since, target_rows=target_rows)
    after = measurement_files(tmp_path)
    rewritten = sum(rows for path, rows in before.items() if path not in after)
    assert 4_000 <= rewritten <= 4_000 + target_rows, (before, after)  # the new files, at most one more
    assert sum(after.values()) == 28_000
    assert counts(tmp_path) == (5_600 * SAMPLES_PER_BATCH,) * 2


@given(
    sizes_rows=st.lists(st.tuples(st.integers(1, 10**9), st.integers(1, 10**8)), min_size=1, max_size=20),
    target_rows=st.integers(1, 10**9),
)
def test_the_byte_target_scales_the_files_own_bytes_per_row(
    sizes_rows: list[tuple[int, int]], target_rows: int
) -> None:
    sizes = [s for s, _ in sizes_rows]
    rows = [r for _, r in sizes_rows]
    target = recent_target_bytes(sizes, rows, target_rows)
    assert MIN_TARGET_BYTES <= target <= MAX_TARGET_BYTES
    exact = sum(sizes) * target_rows / sum(rows)  # the oracle, in exact-enough floats
    if MIN_TARGET_BYTES + 1 < exact < MAX_TARGET_BYTES - 1:
        assert abs(target - exact) <= 1
    # more rows per file never asks for fewer bytes
    assert recent_target_bytes(sizes, rows, target_rows + 1) >= target


def test_the_byte_target_without_rows_is_deltalakes_default() -> None:
    assert recent_target_bytes([], [], 1_000) == MAX_TARGET_BYTES
    assert recent_target_bytes([100], [0], 1_000) == MAX_TARGET_BYTES


async def test_vacuum_removes_files_the_log_never_referenced_once_they_are_old(tmp_path: Path) -> None:
    """A commit or compaction that was killed (or abandoned at shutdown) leaves a data
    file the Delta log never names; vacuum deletes it past the retention, but with a
    retention under an hour never touches one that may be in the middle of a commit."""
    await fill(tmp_path, range(20), commits=1)
    partition = next(p for p in (tmp_path / "measurements").iterdir() if p.name.startswith("date="))
    old = partition / "part-00000-killed-compaction.parquet"
    fresh = partition / "part-00000-being-written.parquet"
    old.write_bytes(b"PAR1 half written")
    fresh.write_bytes(b"PAR1 half written")
    three_hours_ago = time.time() - 3 * 3600
    os.utime(old, (three_hours_ago, three_hours_ago))
    lake = Lake(tmp_path)
    assert lake.vacuum(0, enforce_retention=False)["measurements"] == []  # under an hour: left alone
    assert old.exists()
    assert fresh.exists()
    removed = lake.vacuum(2, enforce_retention=False)["measurements"]
    assert [Path(p).name for p in removed] == [old.name]
    assert not old.exists()
    assert fresh.exists()
    assert counts(tmp_path) == (20 * SAMPLES_PER_BATCH,) * 2
