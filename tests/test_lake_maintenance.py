"""Lake maintenance (info, compact, vacuum) and readers during writes and compaction."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from lake import Lake, LakeConfig, LakeSink, connect
from tests.lake_crash_child import BASE_TS, SAMPLES_PER_BATCH, deterministic_batch
from uns.errors import LakeError

ROOT = Path(__file__).resolve().parent.parent


async def fill(lake: Path, batches: range, *, commits: int) -> None:
    """Write ``batches`` in ``commits`` separate commits (many small files)."""
    per = max(1, len(batches) // commits)
    async with LakeSink(lake, LakeConfig(commit_interval_s=60)) as sink:
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
    async with LakeSink(lake, LakeConfig(commit_interval_s=0.05)) as sink:
        reader = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "tests.lake_crash_child", "read", str(lake), "4.0"],
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        output = asyncio.create_task(reader.communicate())
        try:
            compactions = 0
            for i in range(6_000):
                sink.add(deterministic_batch(i))
                total += 1
                if i % 100 == 99:
                    await asyncio.sleep(0.05)
                if i % 1_500 == 1_499:  # compaction commits interleave with the writer's appends
                    await asyncio.to_thread(Lake(lake).compact, z_order=compactions % 2 == 1)
                    compactions += 1
                if output.done():
                    break
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
    config = LakeConfig(commit_interval_s=60, compact_interval_s=0.3)
    async with LakeSink(tmp_path, config) as sink:
        for i in range(12):
            batch = deterministic_batch(i)
            for s in batch.samples:
                s.ts = now + i
            sink.add(batch)
            await sink.flush()  # one small file per flush
        await asyncio.sleep(0.35)
        sink.add(deterministic_batch(99))
        await sink.flush()  # the commit after the interval triggers the compaction
        # it runs right after that commit, in the sink's own task; a loaded machine may
        # have made one earlier too, between the first flushes
        for _ in range(100):
            if int(sink.stats()["compactions"]) >= 1:
                break
            await asyncio.sleep(0.05)
        assert int(sink.stats()["compactions"]) >= 1
    files = Lake(tmp_path).info()["measurements"].files
    assert files <= 2  # today's partition merged; the 2025 row of batch 99 is old: left alone
    assert counts(tmp_path) == (13 * SAMPLES_PER_BATCH,) * 2
