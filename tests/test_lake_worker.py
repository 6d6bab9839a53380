"""The lake's commit worker process (lake/worker.py) against a real lake on disk:
it commits what the engine's process wrote, is restarted when it dies without a
row lost or doubled, dies with its parent, and the thread committer writes the
same lake."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from tests.lake_crash_child import SAMPLES_PER_BATCH, deterministic_batch
from tests.lake_helpers import query
from tests.test_lake_sink import wait_for
from uns.config import load_config
from uns.errors import ConfigError
from uns.lake import LakeConfig, LakeSink, connect
from uns.lake.wal import wal_dir_for
from uns.lake.worker import CommitWorker

ROOT = Path(__file__).resolve().parent.parent


def lake_rows(lake: Path) -> tuple[int, int]:
    ((total, distinct),) = query(lake, "SELECT count(*), count(DISTINCT (ts, metric)) FROM measurements")
    return int(total), int(distinct)


async def test_commits_run_in_a_worker_process(tmp_path: Path) -> None:
    async with LakeSink(tmp_path, LakeConfig(commit_interval=0.05)) as sink:
        await wait_for(lambda: int(sink.stats()["commit_worker_pid"]) != 0, within_s=30)
        pid = int(sink.stats()["commit_worker_pid"])
        assert pid != os.getpid()
        assert psutil.Process(pid).ppid() == os.getpid()
        for i in range(50):
            sink.add(deterministic_batch(i))
        await sink.flush()
        stats = sink.stats()
        assert stats["commit_worker"] == "process"
        assert stats["rows_committed"] == stats["rows_added"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert lake_rows(tmp_path) == (50 * SAMPLES_PER_BATCH,) * 2


async def test_a_killed_worker_is_restarted_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    config = LakeConfig(commit_interval=0.02, commit_rows=200, retry_initial_s=0.05, retry_max_s=0.2)
    async with LakeSink(tmp_path, config) as sink:
        await wait_for(lambda: int(sink.stats()["commit_worker_pid"]) != 0, within_s=30)
        batch = 0
        for _ in range(3):  # kill it three times, each while segments keep coming
            pid = int(sink.stats()["commit_worker_pid"])
            for _ in range(200):
                sink.add(deterministic_batch(batch))
                batch += 1
                if batch % 20 == 0:
                    await asyncio.sleep(0.005)
            os.kill(pid, signal.SIGKILL)
            await wait_for(lambda p=pid: int(sink.stats()["commit_worker_pid"]) not in (0, p), within_s=30)
        await sink.flush()
        stats = sink.stats()
        assert int(stats["commit_worker_restarts"]) == 3
        assert int(stats["commit_errors"]) >= 1  # the commits the kills interrupted
        assert stats["state"] == "ok"
        assert stats["rows_committed"] == stats["rows_added"]
    assert lake_rows(tmp_path) == (batch * SAMPLES_PER_BATCH,) * 2


async def test_a_worker_killed_after_retiring_a_segment_is_not_stuck_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker commits a segment, deletes its file and dies before it can reply: the
    retry finds no file.  That segment is committed (files go only after their commits),
    so the sink moves on: no error loop, nothing lost, nothing doubled."""
    flag = tmp_path / "killed-once"
    monkeypatch.setenv("UNS_LAKE_TEST_HOOK", f"kill_worker:after_delete:{flag}")
    lake_dir = tmp_path / "lake"
    config = LakeConfig(commit_interval=0.02, commit_rows=100, retry_initial_s=0.05, retry_max_s=0.2)
    async with LakeSink(lake_dir, config) as sink:
        for i in range(30):
            sink.add(deterministic_batch(i))
        await wait_for(flag.exists, within_s=30)  # the kill happened
        await wait_for(lambda: sink.stats()["rows_committed"] == sink.stats()["rows_added"], within_s=30)
        await sink.flush()
        stats = sink.stats()
        assert int(stats["commit_worker_restarts"]) == 1
        assert stats["state"] == "ok"
        assert stats["rows_committed"] == stats["rows_added"]
    assert lake_rows(lake_dir) == (30 * SAMPLES_PER_BATCH,) * 2


async def test_a_worker_past_its_memory_bound_hands_over_to_a_fresh_one(tmp_path: Path) -> None:
    config = LakeConfig(commit_interval=0.02, commit_rows=100, commit_worker_max_rss_mb=1)
    async with LakeSink(tmp_path, config) as sink:
        for i in range(120):
            sink.add(deterministic_batch(i))
            if i % 30 == 29:
                await sink.flush()
        await sink.flush()
        stats = sink.stats()
        assert int(stats["commit_worker_recycled"]) >= 4  # every request: no worker fits in 1 MiB
        assert stats["commit_worker_restarts"] == 0
        assert stats["commit_errors"] == 0
        assert stats["rows_committed"] == stats["rows_added"]
    assert lake_rows(tmp_path) == (120 * SAMPLES_PER_BATCH,) * 2


async def test_sigint_and_sigterm_leave_the_worker_to_the_engine(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group and systemd's stop the whole cgroup: the
    worker must stay until the engine's final flush is done."""
    async with LakeSink(tmp_path, LakeConfig(commit_interval=0.05)) as sink:
        sink.add(deterministic_batch(0))
        await sink.flush()  # the worker is up (its signal handlers are set before it serves)
        pid = int(sink.stats()["commit_worker_pid"])
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        for i in range(1, 100):
            sink.add(deterministic_batch(i))
        await sink.flush()
        stats = sink.stats()
        assert stats["commit_worker_pid"] == pid
        assert stats["commit_worker_restarts"] == 0
        assert stats["commit_errors"] == 0
    assert lake_rows(tmp_path) == (100 * SAMPLES_PER_BATCH,) * 2


async def test_a_request_cancelled_in_flight_does_not_desynchronize_the_next(tmp_path: Path) -> None:
    worker = CommitWorker(tmp_path, "")
    await worker.start()
    try:
        first = worker.pid
        assert await worker.call("ping") == first
        pending = asyncio.create_task(worker.call("ping"))
        await asyncio.sleep(0)  # the request is sent; the reply is not read yet
        assert not pending.done()
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        answer = await worker.call("ping")  # a fresh worker, not the stale reply
        assert answer == worker.pid != first
    finally:
        await worker.close()
    assert worker.pid == 0


@pytest.mark.parametrize("commit_worker", ["process", "thread"])
async def test_shutdown_abandons_a_compaction_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commit_worker: str
) -> None:
    """A compaction can take long (a big day); the final flush must not wait for it.
    The worker process is killed mid-compaction (Delta commits it whole or not at all)
    and a fresh one commits the rest.  A thread cannot be stopped: there the flush waits."""
    pause = 40.0 if commit_worker == "process" else 1.0
    monkeypatch.setenv("UNS_LAKE_TEST_HOOK", f"compact_sleep:{pause}")
    if commit_worker == "thread":
        monkeypatch.setattr("uns.lake.writer._TEST_HOOK", f"compact_sleep:{pause}")
    config = LakeConfig(commit_interval=60, compact_interval=0.01, commit_worker=commit_worker)
    sink = LakeSink(tmp_path, config)
    async with sink:
        sink.add(deterministic_batch(0))
        await sink.flush()  # the commit after the interval starts a compaction, which sleeps
        await wait_for(lambda: bool(sink.stats()["compacting"]), within_s=30)
        for i in range(1, 100):
            sink.add(deterministic_batch(i))
        exiting = time.monotonic()
    took = time.monotonic() - exiting
    stats = sink.stats()
    assert stats["rows_committed"] == stats["rows_added"]
    assert stats["commit_errors"] == 0
    due = wal_dir_for(tmp_path) / "compaction-due"
    if commit_worker == "process":
        assert took < pause / 2, f"the final flush waited {took:.1f} s for the compaction"
        assert stats["compactions_abandoned"] == 1
        assert stats["compactions"] == 0
        assert due.exists()
    else:
        assert took >= pause * 0.9
        assert stats["compactions_abandoned"] == 0
        assert stats["compactions"] == 1
        assert not due.exists()
    assert lake_rows(tmp_path) == (100 * SAMPLES_PER_BATCH,) * 2
    if commit_worker == "process":
        # "the compaction runs again at the next start" (docs/lake.md): after the first
        # commit, not a whole compact_interval later
        monkeypatch.delenv("UNS_LAKE_TEST_HOOK")
        later = LakeSink(tmp_path, LakeConfig(commit_interval=60, compact_interval=3600))
        async with later:
            later.add(deterministic_batch(100))
            await later.flush()
            await wait_for(lambda: later.stats()["compactions"] == 1, within_s=30)
        assert not due.exists()
        assert lake_rows(tmp_path) == (101 * SAMPLES_PER_BATCH,) * 2


def test_the_worker_dies_with_its_parent(tmp_path: Path) -> None:
    """A SIGKILLed engine must not leave a committer behind that could race its next start."""
    lake = tmp_path / "lake"
    argv = [sys.executable, "-m", "tests.lake_crash_child", "write", str(lake), "0", "10000000", "0.05"]
    out = tmp_path / "child.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=sink, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        children: list[psutil.Process] = []
        while time.monotonic() < deadline and proc.poll() is None:
            children = psutil.Process(proc.pid).children(recursive=True)
            if b"accepted" in out.read_bytes() and any(
                "lake.worker" in " ".join(c.cmdline()) for c in children
            ):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the writer child ended early or started no commit worker")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"still running after the parent's death: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_the_thread_committer_writes_the_same_lake(tmp_path: Path) -> None:
    lakes = {}
    for worker in ("thread", "process"):
        lake = tmp_path / worker
        async with LakeSink(lake, LakeConfig(commit_interval=0.05, commit_worker=worker)) as sink:
            for i in range(300):
                sink.add(deterministic_batch(i))
                if i % 25 == 0:
                    await asyncio.sleep(0)
            await sink.flush()
            assert sink.stats()["commit_worker"] == worker
            assert (int(sink.stats()["commit_worker_pid"]) == 0) == (worker == "thread")
        con = connect(lake)
        # wal_segment too: which segment a row lands in depends on when the commit interval
        # ticked (on a busy machine the two runs cut their segments elsewhere)
        lakes[worker] = con.execute(
            "SELECT * EXCLUDE (received_at, wal_segment) FROM measurements ORDER BY ts, metric"
        ).fetchall()
        con.close()
    assert len(lakes["thread"]) == 300 * SAMPLES_PER_BATCH
    assert lakes["thread"] == lakes["process"]


def test_the_commit_worker_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match="commit_worker"):
        LakeConfig(commit_worker="fork")
    with pytest.raises(ConfigError, match=r"lake\.commit_worker must be 'process' or 'thread'"):
        load_config(None, env={"UNS_LAKE_COMMIT_WORKER": "fork"})
    assert load_config(None, env={"UNS_LAKE_COMMIT_WORKER": "thread"}).lake.commit_worker == "thread"
    assert load_config(None, env={}).lake.commit_worker == "process"
    with pytest.raises(ConfigError):
        LakeConfig(commit_worker_max_rss_mb=-1)
    with pytest.raises(ConfigError, match="commit_worker_max_rss_mb"):
        load_config(None, env={"UNS_LAKE_COMMIT_WORKER_MAX_RSS_MB": "-5"})
    for bad in (-1, 20):
        with pytest.raises(ConfigError, match="commit_worker_nice"):
            LakeConfig(commit_worker_nice=bad)
        with pytest.raises(ConfigError, match="commit_worker_nice"):
            load_config(None, env={"UNS_LAKE_COMMIT_WORKER_NICE": str(bad)})
    assert load_config(None, env={}).lake.commit_worker_nice == 10
    assert load_config(None, env={"UNS_LAKE_COMMIT_WORKER_NICE": "0"}).lake.commit_worker_nice == 0


@pytest.mark.parametrize("nice", [0, 7])
async def test_the_worker_runs_nicer_than_the_engine(tmp_path: Path, nice: int) -> None:
    async with LakeSink(tmp_path, LakeConfig(commit_worker_nice=nice)) as sink:
        await wait_for(lambda: int(sink.stats()["commit_worker_pid"]) != 0, within_s=30)
        worker = psutil.Process(int(sink.stats()["commit_worker_pid"]))
        # the worker sets its priority first thing; give it the moment to start
        await wait_for(lambda: worker.nice() != os.nice(0) or nice == 0, within_s=30)
        assert worker.nice() == min(19, os.nice(0) + nice)
        sink.add(deterministic_batch(0))
        await sink.flush()
        assert sink.stats()["rows_committed"] == sink.stats()["rows_added"] > 0
