"""The lake sink's health under faults: capped backoff, the degraded state, fault causes.

No I/O (:class:`Retry` and :class:`Degraded` take the clock as an argument), so it
is unit-tested on its own (tests/test_lake_faults.py):

- :class:`Retry` -- when to try a failed step (a WAL write, a commit) again:
  ``initial`` doubling to ``maximum`` seconds; a success resets it;
- :class:`Degraded` -- since when and why the sink is degraded (a WAL write or a
  commit fails), left as soon as both work again;
- :func:`fault_cause` -- the environmental cause named in an error's text
  (``ENOSPC``, ``EDQUOT``, ``EROFS``, ``EIO``, a vanished table directory), from
  ``OSError`` messages and from deltalake's own (``... (os error 28)``), which
  reach the engine only as text from the commit worker;
- :class:`SinkHealth` -- the two retried steps and the degraded state, as the sink
  keeps them and reports them in ``stats()``.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from typing import Final

__all__ = ["VANISHED", "Degraded", "Retry", "SinkHealth", "fault_cause"]

log = logging.getLogger("lake.sink")

#: (errno, short cause) of the faults a disk can have; matched by number and by text
_FAULTS: Final = (
    (errno.ENOSPC, "disk full (ENOSPC)"),
    (errno.EDQUOT, "disk quota exceeded (EDQUOT)"),
    (errno.EROFS, "read-only file system (EROFS)"),
    (errno.EIO, "I/O error (EIO)"),
)
#: what a table directory that vanished under the writer says (lake.writer raises it)
VANISHED: Final = "table directory vanished"


def fault_cause(text: str) -> str | None:
    """The disk fault ``text`` (an error message) names, or None for anything else."""
    lowered = text.lower()
    for code, cause in _FAULTS:
        strerror = os.strerror(code).lower()
        if strerror in lowered or f"os error {code})" in lowered or f"[errno {code}]" in lowered:
            return cause
    if VANISHED in lowered:
        return VANISHED
    return None


@dataclass(slots=True)
class Retry:
    """Capped exponential backoff of one failing step (``now``: monotonic seconds)."""

    initial: float
    maximum: float
    delay: float = 0.0  # the wait after the next failure (0: not failing, starts at initial)
    at: float = 0.0  # when to try again (0: no failure pending)
    failures: int = 0  # consecutive failures

    def failed(self, now: float) -> float:
        """Record a failure; returns the wait before the next attempt."""
        wait = self.delay or self.initial
        self.delay = min(self.maximum, wait * 2)
        self.at = now + wait
        self.failures += 1
        return wait

    def succeeded(self) -> None:
        self.delay = self.at = 0.0
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def due(self, now: float) -> bool:
        """True when a failed step may be tried again."""
        return self.failing and now >= self.at

    def wait(self, now: float) -> float:
        """Seconds until the next attempt (0 when due or not failing)."""
        return max(0.0, self.at - now) if self.failing else 0.0


@dataclass(slots=True)
class Degraded:
    """Since when (wall-clock ms) and why the sink is degraded; ``since_ms`` 0: healthy."""

    since_ms: int = 0
    reason: str = ""

    def enter(self, reason: str, now_ms: int) -> bool:
        """Degraded for ``reason`` (its disk fault named first when there is one); True when
        this starts the degraded state (the caller logs it once)."""
        cause = fault_cause(reason)
        self.reason = f"{cause}: {reason}" if cause and not reason.startswith(cause) else reason
        if self.since_ms:
            return False
        self.since_ms = now_ms
        return True

    def leave(self, now_ms: int) -> float | None:
        """Healthy again: the seconds it was degraded, or None when it was not."""
        if not self.since_ms:
            return None
        seconds = (now_ms - self.since_ms) / 1000
        self.since_ms = 0
        self.reason = ""
        return seconds

    @property
    def active(self) -> bool:
        return self.since_ms > 0


class SinkHealth:
    """The lake sink's health: its WAL writes and its commits, each retried with capped
    backoff, and the degraded state they put it in (logged once when it starts and ends)."""

    def __init__(self, initial_s: float, maximum_s: float) -> None:
        self.wal = Retry(initial_s, maximum_s)
        self.commits = Retry(initial_s, maximum_s)
        self.degraded = Degraded()
        self.write_error = ""  # why the last WAL write failed ("" once one works)
        self.last_error = ""
        self.commit_errors = 0

    def wal_failed(self, exc: Exception) -> None:
        """A WAL write failed: degraded, intake refused until a retry works."""
        self.write_error = str(exc) or repr(exc)
        self.last_error = f"write-ahead log: {self.write_error}"
        wait = self.wal.failed(time.monotonic())
        if self.degraded.enter(self.last_error, _wall_ms()):
            log.error("lake: degraded, pausing intake: %s (retrying in %.1f s)", self.degraded.reason, wait)

    def wal_works(self) -> None:
        self.write_error = ""
        self.wal.succeeded()
        self._healthy_again()

    def commit_failed(self, exc: Exception) -> None:
        self.commit_errors += 1
        self.last_error = str(exc)
        wait = self.commits.failed(time.monotonic())
        if self.degraded.enter(f"commit: {exc}", _wall_ms()):
            log.error("lake: degraded, commits fail: %s (retrying in %.1f s)", self.degraded.reason, wait)

    def commit_works(self) -> None:
        if self.commits.failing:
            self.commits.succeeded()
            self._healthy_again()

    def _healthy_again(self) -> None:
        if self.wal.failing or self.commits.failing:
            return
        seconds = self.degraded.leave(_wall_ms())
        if seconds is not None:
            errors = self.commit_errors
            log.info("lake: healthy again after %.1f s degraded, %d commit errors", seconds, errors)

    def state(self, *, wal_full: bool) -> str:
        if wal_full:
            return "full"
        return "degraded" if self.degraded.active else "ok"

    def full_retry_after(self, commit_interval: float) -> float:
        """When to offer rows again to a WAL at its bound: at the next commit attempt."""
        if self.commits.failing:
            return max(0.1, min(self.commits.maximum, self.commits.wait(time.monotonic())))
        return min(1.0, commit_interval)

    def stats(self) -> dict[str, int | float | str]:
        now = time.monotonic()
        return {
            "commit_errors": self.commit_errors,
            "last_error": self.last_error,
            "retry_in_s": round(max(self.commits.wait(now), self.wal.wait(now)), 2),
            "degraded_since_ms": self.degraded.since_ms,
            "degraded_reason": self.degraded.reason,
        }


def _wall_ms() -> int:
    return int(time.time() * 1000)
