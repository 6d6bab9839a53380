"""Exactly-once under crashes: a writer process is SIGKILLed at random moments and
inside commits (before, between and after table commits, before the WAL segment
is deleted); after a restart every row it had accepted is in the lake exactly once,
and the audit trail is intact: its chain has no gap or duplicate, each commit is
recorded once (issue 17).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lake_crash_child import ACCEPT_GROUP, BASE_TS, SAMPLES_PER_BATCH
from tests.lake_helpers import query
from uns.audit.verify import verify
from uns.lake import LakeSink, connect

ROOT = Path(__file__).resolve().parent.parent
RUN_SPAN = 1_000_000  # batch numbers of run r are r*RUN_SPAN + k: runs never collide


@dataclass
class ChildRun:
    start: int
    accepted: list[int]
    done: bool
    returncode: int

    @property
    def last_accepted(self) -> int:
        return self.accepted[-1] if self.accepted else self.start - 1


def run_child(
    lake: Path,
    tmp: Path,
    run: int,
    *,
    hook: str = "",
    kill_after_s: float | None = None,
    fsync_s: float = 1.0,
    count: int = 200_000,
) -> ChildRun:
    start = run * RUN_SPAN
    out = tmp / f"child-{run}.out"
    env = {**os.environ, "UNS_LAKE_TEST_HOOK": hook}
    argv = [sys.executable, "-m", "tests.lake_crash_child", "write", str(lake), str(start), str(count)]
    argv += ["0.05", str(fsync_s)]
    with out.open("wb") as sink:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.DEVNULL)
        try:
            if kill_after_s is not None:
                _wait_for_first_accept(proc, out)
                try:
                    proc.wait(timeout=kill_after_s)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=300)  # a deadlock guard: a busy machine starves the niced commit worker
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = out.read_text().split("\n")
    complete = lines[:-1]  # the text after the last newline may be a torn write
    accepted = [int(line.split()[1]) for line in complete if line.startswith("accepted ")]
    return ChildRun(start, accepted, "done" in complete, proc.returncode)


def _wait_for_first_accept(proc: subprocess.Popen[bytes], out: Path) -> None:
    """Kill delays count from the first accepted batch (start-up time varies with load)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if b"accepted" in out.read_bytes():
            return
        time.sleep(0.01)


async def recover(lake: Path) -> None:
    """A restart: open the sink (replays the WAL) and close it (flushes)."""
    async with LakeSink(lake) as sink:
        await sink.flush()
        assert sink.stats()["wal_segments"] == 0


def assert_exactly_once(lake: Path, runs: list[ChildRun]) -> None:
    con = connect(lake)
    try:
        rows = con.execute(
            "SELECT epoch_ms(ts) - ? AS i, count(*), count(DISTINCT metric) FROM measurements GROUP BY 1",
            [BASE_TS],
        ).fetchall()
        sessions = con.execute(
            "SELECT epoch_ms(ts) - ?, count(*) FROM sessions GROUP BY 1", [BASE_TS]
        ).fetchall()
        context = con.execute(
            "SELECT epoch_ms(ts) - ?, count(*) FROM context GROUP BY 1", [BASE_TS]
        ).fetchall()
        catalog = con.execute(
            "SELECT epoch_ms(birth_ts) - ?, count(*) FROM metric_catalog GROUP BY 1", [BASE_TS]
        ).fetchall()
    finally:
        con.close()
    present = {i: (n, distinct) for i, n, distinct in rows}
    for i, (n, distinct) in present.items():
        assert (n, distinct) == (SAMPLES_PER_BATCH, SAMPLES_PER_BATCH), f"batch {i}: {n} rows"
    for run in runs:
        mine = sorted(i for i in present if run.start <= i < run.start + RUN_SPAN)
        # every accepted batch is there, and nothing beyond the one group of add() calls
        # that may have reached the WAL without being reported before the kill
        assert mine == list(range(run.start, run.start + len(mine))), "hole in the run"
        assert run.last_accepted <= (mine[-1] if mine else run.start - 1) <= run.last_accepted + ACCEPT_GROUP
        if run.done:
            assert run.accepted
            assert mine[-1] == run.last_accepted
    expected_sessions = {i for i in present if i % 7 == 0}
    assert_audit_intact(lake)
    assert dict(sessions) == dict.fromkeys(expected_sessions, 1)
    assert dict(context) == dict.fromkeys(expected_sessions, 1)
    assert dict(catalog) == {i: 1 for i in present if i % 11 == 0}


def assert_audit_intact(lake: Path) -> None:
    """The audit chain has no gap and no duplicate (verify), and every table's commit of
    every segment is recorded exactly once."""
    report = verify(lake)
    assert report.findings == []
    assert report.files > 0
    twice = query(
        lake,
        "SELECT subject, json_extract(detail, '$.segment') AS s, count(*) FROM audit"
        " WHERE kind = 'data_commit' GROUP BY ALL HAVING count(*) > 1",
    )
    assert twice == []


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    runs = []
    for run, (delay, fsync) in enumerate([(0.3, 1.0), (0.7, 0.0), (1.1, 1.0)]):
        child = run_child(lake, tmp_path, run, kill_after_s=delay, fsync_s=fsync)
        assert child.returncode == -signal.SIGKILL, "the child should still be writing when killed"
        assert child.accepted, "the child accepted nothing before the kill: make the delay longer"
        runs.append(child)
    await recover(lake)
    assert_exactly_once(lake, runs)


async def test_sigkill_inside_commits_then_replay_is_exactly_once(tmp_path: Path) -> None:
    """Each child dies at a different point of a segment commit -- the later ones while
    replaying the segments their predecessors left; the last one runs to the end."""
    lake = tmp_path / "lake"
    hooks = [
        "kill:before:measurements",
        "kill:after:measurements",
        "kill:after:context",
        "kill:before:audit",  # the data tables have the segment, the audit trail not yet
        "kill:after:audit",
        "kill:before_delete",
    ]
    runs = []
    for run, hook in enumerate(hooks):
        child = run_child(lake, tmp_path, run, hook=hook, count=5_000)
        assert child.returncode == -signal.SIGKILL, f"hook {hook} did not fire"
        runs.append(child)
    final = run_child(lake, tmp_path, len(hooks), count=300)
    assert final.done
    assert final.returncode == 0
    runs.append(final)
    assert_exactly_once(lake, runs)


async def test_torn_last_record_is_ignored_and_the_rest_replayed(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    child = run_child(lake, tmp_path, 0, kill_after_s=0.5)
    assert child.accepted
    wal = sorted((lake / "_wal").glob("*.wal"))
    assert wal, "expected uncommitted WAL segments after the kill"
    # a crash in the middle of a write: half a record after the last complete one
    with wal[-1].open("ab") as f:
        f.write(b"\x40\x00\x00\x00\x01\x02\x03\x04partial-rec")
    started = time.monotonic()
    async with LakeSink(lake) as sink:
        await sink.flush()
        assert int(sink.stats()["torn_bytes_ignored"]) >= 19
    assert time.monotonic() - started < 30
    assert_exactly_once(lake, [child])


async def test_restart_does_not_reuse_committed_segment_numbers(tmp_path: Path) -> None:
    """After every segment was committed and deleted, new segment numbers must still be
    above the tables' recorded versions (else their rows would be skipped as done)."""
    lake = tmp_path / "lake"
    first = run_child(lake, tmp_path, 0, count=300)
    assert first.done
    assert not list((lake / "_wal").glob("*.wal"))
    second = run_child(lake, tmp_path, 1, count=300)
    assert second.done
    assert_exactly_once(lake, [first, second])
