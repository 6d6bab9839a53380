"""When the lake writer anchors its audit chain's head (``audit.anchor_interval_s``).

Between two commits -- and after an idle wait of at most the interval -- the sink asks
its committer to anchor once the interval has passed since the last time; the commit
worker writes an anchor only if its chain's head changed (:meth:`lake.audit.
AuditRecorder.anchor_due`), so an idle engine writes none.  At the stop the head is
anchored in any case, after the final flush (its ``engine_stop`` included).  A failure
costs a late anchor, never a commit: ``uns audit verify`` names the entries anchored late.
"""

from __future__ import annotations

import logging
import time

from uns.errors import LakeError
from uns.lake.committers import Committer

__all__ = ["AnchorSchedule"]

log = logging.getLogger("lake.sink")  # one logger for the writer's messages


class AnchorSchedule:
    """Anchors through ``committer`` at most every ``interval_s`` seconds (0: no anchor)."""

    def __init__(self, committer: Committer, interval_s: float) -> None:
        self._committer = committer
        self.interval_s = interval_s
        self._last = time.monotonic()

    @property
    def wait_s(self) -> float | None:
        """How long the committer may wait idle before asking again (None: forever)."""
        return self.interval_s or None

    async def maybe_run(self, *, stopping: bool = False) -> None:
        if not self.interval_s or not (stopping or time.monotonic() - self._last >= self.interval_s):
            return
        self._last = time.monotonic()
        try:
            await self._committer.anchor(force=stopping)
        except LakeError as exc:
            log.warning("lake: the audit anchor was not written (retried): %s", exc)
