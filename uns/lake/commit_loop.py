"""The lake sink's committer task: sealed segments into the lake, in number order, one at a time.

A mixin of :class:`lake.sink.LakeSink` (the sink declares the state below): the
task commits the oldest sealed segment (:mod:`lake.committers`), retries a failed
commit with capped backoff (:mod:`lake.health`), compacts between commits, and
moves a segment aside that keeps failing the same way (:mod:`lake.quarantine`),
so the segments after it still reach the lake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from uns.config import LakeSection
from uns.errors import LakeError
from uns.lake.anchoring import AnchorSchedule
from uns.lake.committers import Committer, Sealed
from uns.lake.compaction import CompactionSchedule
from uns.lake.health import SinkHealth
from uns.lake.quarantine import FailureStreak, move_aside, quarantinable
from uns.lake.tables import AuditEvent
from uns.lake.wal import CommitResult

__all__ = ["CommitLoop"]

log = logging.getLogger("uns.lake.sink")


class CommitLoop:
    """``_commit_loop`` and what it counts; :class:`lake.sink.LakeSink` supplies the state."""

    config: LakeSection
    _sealed: deque[Sealed]
    _stopping: bool
    _health: SinkHealth
    _committer: Committer
    _compaction: CompactionSchedule
    _anchoring: AnchorSchedule
    _wake: asyncio.Event
    _progress: asyncio.Event
    _wal_dir: Path
    _wal_bytes: int
    _rows_committed: int
    _commits: int
    _segments_committed: int
    _torn_bytes: int
    _last_commit_ms: int
    _commit_latency_ms: float
    _streak: FailureStreak
    _segments_quarantined: int
    _rows_quarantined: int

    if TYPE_CHECKING:  # the sink's (lake.audit_intake); declared only for the type checker

        def record_audit(self, event: AuditEvent) -> None: ...

    async def _commit_loop(self) -> None:
        while not (self._stopping and (not self._sealed or self._health.commits.failing)):
            if not self._sealed:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # idle: still anchor when due (lake.anchoring)
                    await asyncio.wait_for(self._wake.wait(), self._anchoring.wait_s)
                await self._anchoring.maybe_run()
                continue
            head = self._sealed[0]
            started = time.monotonic()
            try:
                result = await self._committer.commit(head)
            except Exception as exc:  # LakeError, or a bug: either way retried, never dropped
                error = exc if isinstance(exc, LakeError) else LakeError(f"commit failed: {exc!r}")
                self._health.commit_failed(error)
                if await self._maybe_quarantine(head, str(error)):
                    continue
                self._notify()
                await self._backoff_wait()
                continue
            self._streak.reset()
            self._on_commit(head, result, time.monotonic() - started)
            self._notify()
            await self._compaction.maybe_run()  # between commits: never races our appends
            await self._anchoring.maybe_run()

    async def _maybe_quarantine(self, head: Sealed, error: str) -> bool:
        """Move ``head`` aside when it failed ``quarantine_after`` times in a row with this
        error and the error is not the environment's (lake.quarantine); True when moved."""
        after = self.config.quarantine_after
        failures = self._streak.failed(head.number, error)
        if not after or failures < after or not quarantinable(error):
            return False
        note = {"segment": head.number, "error": error, "failures": failures, "rows": head.rows}
        try:
            await asyncio.to_thread(head.close)
            moved = await asyncio.to_thread(move_aside, head.path, self._wal_dir, note)
        except LakeError as exc:  # it stays where it is, and is retried as before
            log.error("lake: cannot quarantine WAL segment %s: %s", head.path.name, exc)  # noqa: TRY400
            return False
        self._sealed.popleft()
        self._streak.reset()
        self._wal_bytes = max(0, self._wal_bytes - head.size)
        self._segments_quarantined += 1
        self._rows_quarantined += head.rows
        self._health.commit_works()  # the segments after it are tried now
        log.error(
            "lake: WAL segment %s failed %d times with the same error and was moved to %s "
            "(see `uns lake quarantine`): %s",
            head.path.name, failures, moved, error,
        )  # fmt: skip
        detail = json.dumps({**note, "moved_to": str(moved)}, sort_keys=True, separators=(",", ":"))
        self.record_audit(
            AuditEvent(
                "wal_quarantine", head.path.name, detail, "system", "commit failed repeatedly", _now_ms()
            )
        )
        self._notify()
        return True

    def _on_commit(self, seg: Sealed, result: CommitResult, seconds: float) -> None:
        self._sealed.popleft()
        self._health.commit_works()
        self._wal_bytes = max(0, self._wal_bytes - seg.size)
        self._rows_committed += result.rows_written
        if seg.file is not None:  # sealed in this run: an interrupted attempt of ours committed these
            self._rows_committed += seg.rows if result.already_retired else result.rows_skipped
        self._commits += result.commits
        self._segments_committed += 1
        self._torn_bytes += result.torn_bytes
        self._last_commit_ms = int(time.time() * 1000)
        self._commit_latency_ms = round(seconds * 1000, 1)

    async def _backoff_wait(self) -> None:
        delay = self._health.commits.wait(time.monotonic())
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()


def _now_ms() -> int:
    return int(time.time() * 1000)
