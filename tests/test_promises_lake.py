"""Promises of the README and docs about the lake that had code but no test (issue 22).

Each test is named after the promise and quotes where it is written.  Real parts only:
a lake on disk, the sinks' commit worker processes, the `uns` command as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from tests.engine_helpers import wait_for
from tests.lake_crash_child import SAMPLES_PER_BATCH, deterministic_batch
from tests.lake_helpers import flock_state, query
from uns import lake
from uns.core.events import Batch, CatalogEntry, ContextChange, Rejected, Sample, SessionEvent
from uns.lake import Lake, LakeConfig, LakeSink
from uns.lake.locks import LOCK_NAME
from uns.lake.wal import read_segment, wal_dir_for
from uns.sparkplug.datatypes import DataType

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ 6. fsync_interval = 0


class FsyncSpy:
    """Records every ``os.fsync`` of this process: (what the descriptor names, its size then)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []
        self.dirs: list[str] = []  # the directories among them
        self._real = os.fsync
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        info = os.fstat(fd)
        self.calls.append((os.readlink(f"/proc/self/fd/{fd}"), info.st_size))
        if stat.S_ISDIR(info.st_mode):
            self.dirs.append(self.calls[-1][0])
        self._real(fd)


def only_segment(root: Path) -> Path:
    (segment,) = (root / "_wal").glob("*.wal")
    return segment


def records_in_wal(root: Path) -> int:
    return sum(read_segment(segment).records for segment in (root / "_wal").glob("*.wal"))


async def test_fsync_interval_0_writes_and_fsyncs_the_wal_inside_every_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/lake.md §3: "With `fsync_interval = 0` the write happens inside `add()`" and
    "With `fsync_interval = 0` every `add()` is fsynced before it returns"; lake/sink.py:
    "With ``fsync_interval = 0`` the write (and an fsync) happens inside ``add``"."""
    config = LakeConfig(fsync_interval=0, commit_interval=60, compact_interval=0)
    async with LakeSink(tmp_path, config) as sink:
        spy = FsyncSpy(monkeypatch)
        for i in range(20):
            before = len(spy.calls)
            sink.add(deterministic_batch(i))  # no await after it: nothing else may run
            segment = only_segment(tmp_path)
            assert read_segment(segment).records == i + 1, "the record is not in the file when add returns"
            # one fsync of the segment, with this add's record already in it (and, for the
            # add that created the segment, one of the directory that holds its name)
            files = [call for call in spy.calls[before:] if call[0] != str(segment.parent)]
            assert files == [(str(segment), segment.stat().st_size)], i
        monkeypatch.undo()
        await sink.flush()
    rows = query(tmp_path, "SELECT count(*), count(DISTINCT (ts, metric)) FROM measurements")
    assert rows == [(20 * SAMPLES_PER_BATCH, 20 * SAMPLES_PER_BATCH)]


async def test_with_a_positive_fsync_interval_add_neither_writes_nor_fsyncs_before_the_loop_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/lake.md §3: "they reach the write-ahead log ... before the event loop next polls
    for I/O -- one `write()` per loop iteration for all batches added in it"; "Power loss ...
    loses at most the rows accepted in the last `fsync_interval`".  (The control for the
    test above: without ``fsync_interval = 0`` the spy sees no fsync inside ``add()``.)"""
    config = LakeConfig(fsync_interval=1.0, commit_interval=60, compact_interval=0)
    async with LakeSink(tmp_path, config) as sink:
        spy = FsyncSpy(monkeypatch)
        for i in range(3):
            sink.add(deterministic_batch(2 * i))
            sink.add(deterministic_batch(2 * i + 1))
            assert spy.calls == []
            assert records_in_wal(tmp_path) == i  # not written yet
            await asyncio.sleep(0)  # one loop iteration: one record for both batches
            assert records_in_wal(tmp_path) == i + 1
        assert spy.calls == []
        monkeypatch.undo()


async def test_fsync_interval_0_makes_a_new_segments_directory_entry_durable_inside_add(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/lake.md §3: "**Power loss** ... loses at most the rows accepted in the last
    `fsync_interval`" and "With `fsync_interval = 0` every `add()` is fsynced before it
    returns (safe, but each message then costs a disk flush)"."""
    config = LakeConfig(fsync_interval=0, commit_interval=60, compact_interval=0)
    async with LakeSink(tmp_path, config) as sink:
        spy = FsyncSpy(monkeypatch)
        sink.add(deterministic_batch(0))  # creates the first segment
        monkeypatch.undo()
        assert spy.dirs == [str(tmp_path / "_wal")], spy.calls


# ------------------------------------------------------------------ 8. two writers, one lake


def shard_batch(writer: str, i: int, base_ts: int) -> Batch:
    """Batch ``i`` of ``writer``: its own edge node, samples at ``base_ts + i`` (today, so the
    writers' own compaction of recent partitions runs over them too)."""
    ts = base_ts + i
    path = f"acme/shard-{writer}"
    batch = Batch(
        samples=[
            Sample(
                group_id=f"G-{writer}",
                edge_node_id=writer,
                device_id="D",
                metric=f"m{j}",
                datatype=DataType.Double,
                value=i + j / 10,
                ts=ts,
                received_at=ts + 1,
                seq=i % 256,
                bdseq=0,
                path=path,
            )
            for j in range(SAMPLES_PER_BATCH)
        ]
    )
    if i % 5 == 0:
        batch.sessions.append(SessionEvent(ts, f"G-{writer}", writer, None, "birth", f"{writer} {i}"))
        batch.context.append(ContextChange(ts, ts + 1, path, "batch_id", f"{writer}-{i}", source="test"))
        batch.catalog.append(CatalogEntry(f"G-{writer}", writer, "D", f"m{i}", i, DataType.Double, ts, 0))
        batch.rejected.append(Rejected(ts, f"spBv1.0/G-{writer}/DDATA/{writer}", bytes([i % 256]), writer))
    return batch


def shard_config(writer_id: str, compact_interval: float) -> LakeConfig:
    return LakeConfig(
        writer_id=writer_id,
        commit_interval=0.05,
        compact_interval=compact_interval,
        retry_initial_s=0.05,
        retry_max_s=0.2,
    )


async def write_shards(
    root: Path, batches: range, base_ts: int, *, compact_interval: float = 0
) -> dict[str, dict[str, Any]]:
    """Both writers at once, interleaved, committing every 50 ms in their own workers; with
    ``compact_interval``, until each has compacted once."""
    a_config, b_config = (shard_config(w, compact_interval) for w in ("a", "b"))
    async with LakeSink(root, a_config) as a, LakeSink(root, b_config) as b:
        for i in batches:
            a.add(shard_batch("a", i, base_ts))
            b.add(shard_batch("b", i, base_ts))
            if i % 10 == 9:
                await asyncio.sleep(0.02)
        await asyncio.gather(a.flush(), b.flush())
        if compact_interval:
            deadline = time.monotonic() + 15
            while not all(int(s.stats()["compactions"]) for s in (a, b)):
                assert time.monotonic() < deadline, "no compaction"
                await asyncio.sleep(0.05)
        return {"a": a.stats(), "b": b.stats()}


def assert_every_row_exactly_once(root: Path, batches: int) -> None:
    """Every row both writers added, once: per writer, as many rows as distinct keys, and
    as many as it added."""
    n = len(range(0, batches, 5))  # batches with a row for the other tables
    checks = {
        "measurements": ("edge_node_id", "(ts, metric)", batches * SAMPLES_PER_BATCH),
        "sessions": ("edge_node_id", "ts", n),
        "metric_catalog": ("edge_node_id", "metric", n),
        "context": ("path", "value", n),
        "rejected": ("error", "received_at", n),
    }
    for table, (writer, key, expected) in checks.items():
        rows = query(
            root, f"SELECT {writer}, count(*), count(DISTINCT {key}) FROM {table} GROUP BY 1 ORDER BY 1"
        )
        writers = [w.removeprefix("acme/shard-") for w, _rows, _keys in rows]
        assert writers == ["a", "b"], (table, rows)
        assert [(r, k) for _w, r, k in rows] == [(expected, expected)] * 2, (table, rows)


def wal_dirs(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.name.startswith("_wal")}


async def test_two_writers_with_their_own_writer_id_commit_to_one_lake_at_once_exactly_once(
    tmp_path: Path,
) -> None:
    """README.md, "Scale-out": "run several engines ... writing to the same lake with distinct
    writer ids"; docs/lake.md §4, `writer_id`: "several writers on one lake (sharded engines):
    each needs its own id; it gets its own `_wal-<id>` and app ids `uns-wal-<id>-<table>`";
    §3: "Every row the writer accepted appears in the lake exactly once".  (The writers' own
    compaction is off here; with it, see the next test.)"""
    base_ts = int(time.time() * 1000) - 3_600_000
    stats = await write_shards(tmp_path, range(600), base_ts)
    for writer in ("a", "b"):
        s = stats[writer]
        assert s["rows_committed"] == s["rows_added"] > 0 and s["rows_pending"] == 0, (writer, s)
        assert int(s["segments_committed"]) >= 5, s  # many commits, interleaved with the other's
    assert_every_row_exactly_once(tmp_path, 600)
    assert wal_dirs(tmp_path) == {"_wal-a", "_wal-b"}
    measurements = DeltaTable(tmp_path / "measurements")
    versions = {w: measurements.transaction_version(f"uns-wal-{w}-measurements") for w in ("a", "b")}
    assert all(v is not None for v in versions.values()), versions
    assert measurements.transaction_version("uns-wal-measurements") is None  # no id-less writer
    # both start again on the lake they share: no segment of either is skipped or replayed twice
    more = await write_shards(tmp_path, range(600, 700), base_ts)
    assert all(int(s["segments_replayed"]) == 0 for s in more.values()), more
    assert_every_row_exactly_once(tmp_path, 700)


async def test_two_writers_compacting_recent_partitions_themselves_keep_every_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README.md, "Scale-out": "several engines ... writing to the same lake with distinct
    writer ids"; docs/lake.md §5: "compacts recent partitions (today's and yesterday's)
    itself every `compact_interval`" and "Compaction and vacuum run safely while the engine
    writes"; §3: "Every row the writer accepted appears in the lake exactly once"."""
    # each compaction takes a second, as one of a day's data does (docs/lake.md §5: 4.4 s):
    # the two writers' compactions overlap
    monkeypatch.setenv("UNS_LAKE_TEST_HOOK", "compact_sleep:1")
    base_ts = int(time.time() * 1000) - 3_600_000
    await write_shards(tmp_path, range(200), base_ts, compact_interval=0.3)
    assert_every_row_exactly_once(tmp_path, 200)


# ------------------------------------------------------------------ 9. compact and vacuum from the CLI


def uns(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    return subprocess.run(
        [sys.executable, "-m", "uns", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


async def fill(root: Path, commits: int, per_commit: int = 25) -> None:
    """``commits`` separate commits per table: as many small files."""
    async with LakeSink(root, LakeConfig(commit_interval=60, compact_interval=0)) as sink:
        for c in range(commits):
            for i in range(c * per_commit, (c + 1) * per_commit):
                sink.add(deterministic_batch(i))
            await sink.flush()


def measurement_rows(root: Path) -> list[tuple[Any, ...]]:
    return query(root, "SELECT count(*), count(DISTINCT (ts, metric)), sum(value_double) FROM measurements")


def parquet_files(root: Path, table: str = "measurements") -> int:
    return len(list((root / table).rglob("*.parquet")))


async def test_uns_lake_compact_and_vacuum_from_the_command_line(tmp_path: Path) -> None:
    """README.md, "Querying the lake": "`uns lake compact  # merge small files`" and "`uns
    lake vacuum --retention-hours 168`"; docs/lake.md §5: "CLI: ... `uns lake compact
    [--z-order]`, `uns lake vacuum [--retention-hours H] [--dry-run] [--force]`", "Vacuum
    refuses a retention below the tables' minimum (7 days) unless `enforce_retention=False`"."""
    await fill(tmp_path, commits=6)
    rows = measurement_rows(tmp_path)
    assert rows[0][0] == 6 * 25 * SAMPLES_PER_BATCH
    assert Lake(tmp_path).info()["measurements"].files == 6

    compact = uns("lake", "compact", "--lake", str(tmp_path), "--format", "json")
    assert compact.returncode == 0, compact.stderr
    summary = {row["table"]: row for row in json.loads(compact.stdout)}  # per table, as JSON
    assert set(summary) == set(lake.TABLES)
    merged = summary["measurements"]
    assert (merged["files_removed"], merged["files_added"], merged["rows"]) == (6, 1, rows[0][0])
    info = Lake(tmp_path).info()["measurements"]
    assert (info.files, info.rows, info.last_operation) == (1, rows[0][0], "OPTIMIZE")
    assert measurement_rows(tmp_path) == rows
    assert parquet_files(tmp_path) == 7  # the replaced files stay until vacuum

    week = uns("lake", "vacuum", "--lake", str(tmp_path), "--retention-hours", "168")
    assert week.returncode == 0, week.stderr
    assert json.loads(week.stdout) == {table: [] for table in lake.TABLES}  # nothing that old
    assert parquet_files(tmp_path) == 7

    refused = uns("lake", "vacuum", "--lake", str(tmp_path), "--retention-hours", "24")
    assert refused.returncode == 1
    assert refused.stdout == ""
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("uns: error: vacuum of ") and "retention" in line.lower(), line

    planned = uns("lake", "vacuum", "--lake", str(tmp_path), "--retention-hours", "0", "--force", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert len(json.loads(planned.stdout)["measurements"]) == 6
    assert parquet_files(tmp_path) == 7  # a dry run deletes nothing

    vacuum = uns("lake", "vacuum", "--lake", str(tmp_path), "--retention-hours", "0", "--force")
    assert vacuum.returncode == 0, vacuum.stderr
    removed = json.loads(vacuum.stdout)
    assert len(removed["measurements"]) == 6
    assert parquet_files(tmp_path) == 1
    assert measurement_rows(tmp_path) == rows


async def test_uns_lake_vacuum_keeps_files_younger_than_a_fractional_retention(tmp_path: Path) -> None:
    """cli.py, `uns lake vacuum --help`: "--retention-hours FLOAT  keep files needed by
    versions younger than this"; docs/lake.md §5: "delete replaced (and never-committed)
    files older than" the retention."""
    await fill(tmp_path, commits=3)
    assert uns("lake", "compact", "--lake", str(tmp_path)).returncode == 0
    planned = uns(
        "lake", "vacuum", "--lake", str(tmp_path), "--retention-hours", "0.5", "--force", "--dry-run"
    )
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["measurements"] == []  # replaced seconds ago: younger than 30 min


async def test_uns_lake_compact_while_the_engine_compacts_keeps_every_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/lake.md §5: "Files of the full 100 MiB are what `uns lake compact` makes: run it
    off-peak (cron)" and "Compaction and vacuum run safely while the engine writes and
    readers read"; §3: "Every row the writer accepted appears in the lake exactly once".

    In step by conditions, not by time (issue 26: it failed on a busy machine): the
    writer's compaction holds the lake's compaction lock (lake/locks.py) until
    `uns lake compact` is seen waiting for it."""
    base_ts = int(time.time() * 1000) - 3_600_000
    async with LakeSink(tmp_path, LakeConfig(commit_interval=60, compact_interval=0)) as sink:
        for c in range(5):  # five commits: five small files per table to merge
            for i in range(c * 40, (c + 1) * 40):
                sink.add(shard_batch("a", i, base_ts))
            await sink.flush()
    # the next start compacts after its first commit (lake/compaction.py), and its compaction
    # holds the lock until the test lets it go
    (wal_dir_for(tmp_path, "") / "compaction-due").touch()
    release = tmp_path / "release-compaction"
    monkeypatch.setenv("UNS_LAKE_TEST_HOOK", f"compact_wait:{release}")
    lock = tmp_path / LOCK_NAME
    async with LakeSink(tmp_path, LakeConfig(commit_interval=60, compact_interval=3600)) as sink:
        sink.add(shard_batch("a", 200, base_ts))
        await sink.flush()  # the commit after which the writer compacts
        await wait_for(lambda: flock_state(lock).held == 1, 60, "the writer's compaction to take the lock")
        cron = asyncio.ensure_future(asyncio.to_thread(uns, "lake", "compact", "--lake", str(tmp_path)))
        await wait_for(lambda: cron.done() or flock_state(lock).waiting == 1, 60, "uns lake compact to start")
        assert not cron.done(), f"uns lake compact ran beside the writer's compaction: {cron.result()}"
        release.touch()
        compacted = await cron
        assert compacted.returncode == 0, compacted.stderr
        await wait_for(lambda: int(sink.stats()["compactions"]) == 1, 60, "the writer's compaction to end")
    # one after the other: the writer's compaction (of recent partitions) merged the small
    # files, and `uns lake compact`, planning on the table it left, found nothing to merge
    history = DeltaTable(tmp_path / "measurements").history()
    optimized = [h["operationParameters"]["predicate"] for h in history if h["operation"] == "OPTIMIZE"]
    assert len(optimized) == 1 and "date >=" in optimized[0], optimized
    rows = query(tmp_path, "SELECT count(*), count(DISTINCT (ts, metric)) FROM measurements")
    assert rows == [(201 * SAMPLES_PER_BATCH, 201 * SAMPLES_PER_BATCH)]
