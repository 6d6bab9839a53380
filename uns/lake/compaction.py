"""The lake writer's own compaction of recent partitions (``lake.compact_interval``).

The writer commits one small file per table every ``commit_interval``; left
alone, today's partition grows thousands of them and queries slow down.  So
every ``compact_interval`` seconds (0 = never: then run ``uns lake compact``)
the sink's committer task, between two commits, merges the small files of
today's and yesterday's partitions (:meth:`lake.writer.DeltaWriter.compact_recent`).
It runs in the committer's own line of work, so it never races the sink's
appends.  At shutdown :meth:`CompactionSchedule.close` abandons one in
progress where that is possible (see :mod:`lake.committers`), so that the final
flush does not wait for it, and leaves a marker file (``compaction-due`` in the
writer's WAL directory): the next start then compacts after its first commit
instead of a whole ``compact_interval`` later.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

from uns.errors import LakeError
from uns.lake.committers import Committer

__all__ = ["CompactionSchedule"]

log = logging.getLogger("lake.sink")  # one logger for the writer's messages


class CompactionSchedule:
    """Runs the committer's compaction at most every ``interval_s`` seconds (0 = never)."""

    def __init__(self, committer: Committer, interval_s: float, *, due_marker: Path | None = None) -> None:
        self._committer = committer
        self._interval_s = interval_s
        self._closed = False
        self._due_marker = due_marker
        self._last = time.monotonic()
        if due_marker is not None and due_marker.exists():
            self._last = float("-inf")  # the last run abandoned one: compact at the first chance
        self.running = False
        self.done = 0
        self.abandoned = 0
        self.last_s = 0.0  # how long the last completed one took

    def start(self) -> None:
        """The writer runs from now on: the first interval counts from here, not from
        construction (opening the lake can take a while)."""
        if self._last != float("-inf"):
            self._last = time.monotonic()

    async def maybe_run(self) -> None:
        """Compact if the interval has passed (call between commits)."""
        if not self._interval_s or self._closed:
            return
        if time.monotonic() - self._last < self._interval_s:
            return
        started = self._last = time.monotonic()
        since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        self.running = True
        try:
            removed = await self._committer.compact(since)
        except LakeError as exc:
            log.warning("lake: compaction failed (the data is safe; retried later): %s", exc)
            return
        finally:
            self.running = False
        if removed is None:  # abandoned by close(): the final flush is waiting
            self.abandoned += 1
            self._mark_due(True)
            log.info("lake: compaction abandoned for the final flush (it runs again after a restart)")
            return
        self._mark_due(False)
        self.done += 1
        self.last_s = time.monotonic() - started
        log.debug("lake: compacted %d small files in %.1f s", removed, self.last_s)

    def _mark_due(self, due: bool) -> None:
        """Record (or clear) that a compaction is owed to the next start."""
        marker = self._due_marker
        if marker is None:
            return
        try:
            if due:
                marker.touch()
            else:
                marker.unlink(missing_ok=True)
        except OSError as exc:  # only the schedule suffers: the next one comes at its interval
            log.warning("lake: cannot %s %s: %s", "write" if due else "remove", marker, exc)

    def stats(self) -> dict[str, int | float | str]:
        return {
            "compactions": self.done,
            "compacting": self.running,
            "compactions_abandoned": self.abandoned,
            "last_compaction_s": round(self.last_s, 2),
        }

    def close(self) -> None:
        """No compaction from now on, and abandon the one in progress if the committer can."""
        self._closed = True
        self._committer.abandon_compaction()
