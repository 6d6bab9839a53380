"""Disk faults, unit level: the retry and degraded-state logic (lake/health.py), segment
numbering (lake/wal.py open_segment) and the sink over an injected failing file layer
(tests/test_lake_disk.py does the same on a real, full or read-only file system)."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from tests.engine_helpers import engine_config
from tests.lake_crash_child import SAMPLES_PER_BATCH, deterministic_batch
from tests.lake_helpers import query
from tests.metrics_helpers import parse, value
from uns.engine.host import Engine
from uns.engine.metrics import EngineMetrics
from uns.errors import LakeBackpressure, LakeError
from uns.lake import LakeConfig, LakeSink
from uns.lake.health import VANISHED, Degraded, Retry, fault_cause
from uns.lake.wal import MAGIC, FileLayer, list_segments, open_segment, read_segment, segment_path

FAST = LakeConfig(commit_interval=0.05, retry_initial_s=0.05, retry_max_s=0.2, compact_interval=0)


# ---------------------------------------------------------------- pure logic
@given(
    initial=st.floats(0.01, 5.0),
    factor=st.floats(1.0, 100.0),
    outcomes=st.lists(st.booleans(), max_size=40),
)
def test_retry_backoff_doubles_from_initial_to_the_cap_and_a_success_resets_it(
    initial: float, factor: float, outcomes: list[bool]
) -> None:
    maximum = initial * factor
    retry = Retry(initial, maximum)
    expected = initial  # the oracle: the wait after the next failure
    now = 0.0
    for failed in outcomes:
        if failed:
            wait = retry.failed(now)
            assert wait == pytest.approx(expected)
            assert initial <= wait <= maximum
            assert retry.failing and not retry.due(now) and retry.due(now + wait)
            assert retry.wait(now) == pytest.approx(wait)
            expected = min(maximum, expected * 2)
        else:
            retry.succeeded()
            assert not retry.failing and retry.wait(now) == 0 and not retry.due(now)
            expected = initial
        now += 1.0


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        (str(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))), "disk full (ENOSPC)"),
        ("write-ahead log write failed: No space left on device", "disk full (ENOSPC)"),
        ("Generic LocalFileSystem error: Unable to write (os error 28)", "disk full (ENOSPC)"),
        (str(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))), "disk quota exceeded (EDQUOT)"),
        ("cannot create 1.wal: [Errno 30] Read-only file system", "read-only file system (EROFS)"),
        ("Io error: Input/output error (os error 5)", "I/O error (EIO)"),
        (f"commit: {VANISHED}: measurements (at /x)", VANISHED),
        ("commit of WAL segment 3 to measurements failed: Not a directory", None),
        ("the lake commit worker died (killed by SIGKILL) during commit", None),
    ],
)
def test_fault_cause_names_the_disk_faults_in_os_and_deltalake_messages(text: str, cause: str | None) -> None:
    assert fault_cause(text) == cause


def test_degraded_names_the_cause_first_keeps_since_and_says_how_long_it_lasted() -> None:
    state = Degraded()
    assert not state.active and state.leave(5) is None
    assert state.enter("write-ahead log: No space left on device", 1_000) is True
    assert state.reason == "disk full (ENOSPC): write-ahead log: No space left on device"
    assert state.enter("commit: Read-only file system", 2_000) is False  # already degraded: no new log line
    assert state.since_ms == 1_000 and state.reason.startswith("read-only file system (EROFS)")
    assert state.leave(3_500) == 2.5
    assert not state.active and state.reason == "" and state.since_ms == 0


# ---------------------------------------------------------------- an injected failing file layer
class FailingFiles(FileLayer):
    """The real system calls, except that writes (or only the writes of a new segment's magic)
    and, optionally, unlinks fail with ``error`` while ``failing``."""

    def __init__(
        self, error: int = errno.ENOSPC, *, magic_only: bool = False, unlink_fails: bool = False
    ) -> None:
        self.error = error
        self.magic_only = magic_only
        self.unlink_fails = unlink_fails
        self.failing = False
        self.write_attempts = 0

    def write(self, fd: int, data: memoryview) -> int:
        self.write_attempts += 1
        if self.failing and (not self.magic_only or bytes(data) == MAGIC):
            raise OSError(self.error, os.strerror(self.error))
        return os.write(fd, data)

    def unlink(self, path: Path) -> None:
        if self.failing and self.unlink_fails:
            raise OSError(self.error, os.strerror(self.error))
        os.unlink(path)


def test_open_segment_skips_numbers_whose_file_exists(tmp_path: Path) -> None:
    segment_path(tmp_path, 3).write_bytes(b"")  # left by a failed attempt
    segment_path(tmp_path, 4).write_bytes(MAGIC)  # left by a crash
    seg = open_segment(tmp_path, 3)
    assert seg.number == 5
    seg.close()
    assert segment_path(tmp_path, 3).read_bytes() == b"" and segment_path(tmp_path, 4).read_bytes() == MAGIC


def test_a_segment_whose_magic_cannot_be_written_is_removed_its_number_never_reused(tmp_path: Path) -> None:
    files = FailingFiles(magic_only=True)
    files.failing = True
    with pytest.raises(LakeError, match="No space left"):
        open_segment(tmp_path, 7, files)
    assert list_segments(tmp_path) == []  # the half-made file is gone
    files.unlink_fails = True
    with pytest.raises(LakeError):
        open_segment(tmp_path, 8, files)
    assert [n for n, _ in list_segments(tmp_path)] == [8]  # could not be removed: it stays, empty
    files.failing = False
    seg = open_segment(tmp_path, 8, files)  # the caller's retry: 8's file exists, so 9
    assert seg.number == 9
    seg.append(b"x", 1)
    seg.close()
    assert read_segment(segment_path(tmp_path, 8)).records == 0  # replayed as empty at the next start


async def wait_for(predicate: object, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def add_until_accepted(sink: LakeSink, i: int) -> None:
    """What the engine does with a batch the sink refuses: wait as asked, try again."""
    while True:
        try:
            sink.add(deterministic_batch(i))
        except LakeBackpressure as exc:
            await asyncio.sleep(exc.retry_after)
        else:
            return


@pytest.mark.parametrize("magic_only", [False, True], ids=["every-write", "new-segment-magic"])
async def test_the_sink_degrades_on_enospc_retries_with_capped_backoff_and_heals_exactly_once(
    tmp_path: Path, magic_only: bool
) -> None:
    """The issue's defect: ENOSPC while a new segment was being opened left its file behind
    and every retry tried the same number again (EEXIST) forever."""
    files = FailingFiles(magic_only=magic_only)
    accepted: list[int] = []
    async with LakeSink(tmp_path, FAST, files=files) as sink:
        for i in range(100):
            await add_until_accepted(sink, i)
            accepted.append(i)
            await asyncio.sleep(0)
        await sink.flush()  # sealed and committed: the next write opens a new segment
        files.failing = True
        i = 100
        with pytest.raises(LakeBackpressure, match="No space left"):  # noqa: PT012 - until refused
            while True:
                sink.add(deterministic_batch(i))
                accepted.append(i)  # accepted: it must reach the lake once the disk has room
                i += 1
                await asyncio.sleep(0)
        stats = sink.stats()
        assert stats["state"] == "degraded"
        assert str(stats["degraded_reason"]).startswith("disk full (ENOSPC)")
        assert 0 < int(stats["degraded_since_ms"]) <= time.time() * 1000
        assert int(stats["batches_unwritten"]) >= 1
        attempts = files.write_attempts
        await asyncio.sleep(1.0)
        # capped backoff (0.05 s doubling to 0.2 s): a handful of attempts a second, not one per tick
        assert 1 <= files.write_attempts - attempts <= 8
        assert sink.stats()["state"] == "degraded"
        files.failing = False
        await wait_for(lambda: sink.stats()["state"] == "ok")
        assert (sink.stats()["degraded_since_ms"], sink.stats()["batches_unwritten"]) == (0, 0)
        for j in range(i, i + 100):
            await add_until_accepted(sink, j)
            accepted.append(j)
            await asyncio.sleep(0)
        await sink.flush()
        assert sink.stats()["rows_committed"] == sink.stats()["rows_added"]
    assert list_segments(tmp_path / "_wal") == []  # no leftover of the failed attempts
    rows = query(tmp_path, "SELECT count(*), count(DISTINCT ts) FROM measurements")
    assert rows == [(len(accepted) * SAMPLES_PER_BATCH, len(accepted))]


async def test_a_vanished_table_directory_is_waited_for_not_made_anew(tmp_path: Path) -> None:
    """A lost mount or a deleted directory under a running writer: the commits fail (the sink
    is degraded, the WAL absorbs) until the table is back, and it is never created empty
    elsewhere; then every row lands once, in the table that came back."""
    async with LakeSink(tmp_path, FAST) as sink:
        sink.add(deterministic_batch(0))
        await sink.flush()
        aside = tmp_path.parent / f"{tmp_path.name}-measurements-aside"
        (tmp_path / "measurements").rename(aside)
        for i in range(1, 50):
            sink.add(deterministic_batch(i))
            await asyncio.sleep(0)
        await wait_for(lambda: int(sink.stats()["commit_errors"]) >= 2)
        stats = sink.stats()
        assert stats["state"] == "degraded"
        assert str(stats["degraded_reason"]).startswith(VANISHED)
        assert not (tmp_path / "measurements").exists()
        # what the engine's /metrics says of it (docs/operations.md)
        engine = Engine(engine_config("mqtt://127.0.0.1:1", "faults"), sinks=[sink])
        scraped = parse(generate_latest(EngineMetrics(engine).registry).decode())
        assert value(scraped, "uns_lake_state", state="degraded") == 1
        since = value(scraped, "uns_lake_degraded_since_timestamp_seconds")
        assert since == int(sink.stats()["degraded_since_ms"]) / 1000 > 0
        aside.rename(tmp_path / "measurements")
        await wait_for(lambda: sink.stats()["state"] == "ok")
        await sink.flush()
    rows = query(tmp_path, "SELECT count(*), count(DISTINCT ts) FROM measurements")
    assert rows == [(50 * SAMPLES_PER_BATCH, 50)]


async def test_a_stop_deadline_on_a_healthy_lake_leaves_the_rest_in_the_wal_and_is_no_failure(
    tmp_path: Path,
) -> None:
    """docs/lake.md §4 "Stopping on a broken disk": commits not done by the stop's deadline
    stay in the WAL (nothing is lost, the exit is not a failure) and the next start commits them."""
    async with LakeSink(tmp_path, FAST) as sink:
        for i in range(50):
            sink.add(deterministic_batch(i))
            await asyncio.sleep(0)
        sink.stop_by(time.monotonic())  # the deadline has come: nothing more is waited for
        stopping = time.monotonic()  # the stop alone: starting the sink takes long on a busy machine
    assert time.monotonic() - stopping < 10  # the commit worker gets 1 s, not the usual 30 s
    async with LakeSink(tmp_path, FAST) as again:
        await again.flush()
    assert query(tmp_path, "SELECT count(*), count(DISTINCT ts) FROM measurements") == [
        (50 * SAMPLES_PER_BATCH, 50)
    ]
