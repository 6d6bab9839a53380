"""A bounded stop: SIGTERM/SIGINT end the process within ``engine.stop_timeout_s``.

When the engine is asked to stop it stops intake at once and then has
``stop_timeout_s`` (T) in all, split so that each step may use what the one
before left (:class:`StopBudget`, times from the stop request):

- until 0.5 T the engine waits for a sink that pushes back (the lake's WAL
  cannot be written) with the messages it has already received; after that it
  gives them up and counts them (``Engine.unpersisted``);
- until 0.8 T the lake's final flush and a commit in progress may run
  (:meth:`lake.sink.LakeSink.stop_by`); what is not committed by then stays in
  the write-ahead log and is committed at the next start;
- at T - 0.5 s a watchdog thread ends the process whatever it is doing
  (:class:`Watchdog`; armed by the daemon's signal handler, never in tests that
  stop an engine in-process): exit 1 with the same one line.

The one line (:func:`unpersisted_line`) says how many received messages could
not be persisted; they were not acknowledged anywhere (a primary host's edge
nodes store and forward them once its STATE is offline).  Everything in the
write-ahead log survives for the next start.  docs/lake.md section 4.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["GIVE_UP_SHARE", "SINKS_SHARE", "StopBudget", "Watchdog", "unpersisted_line"]

log = logging.getLogger("uns.daemon")

#: shares of stop_timeout_s: waiting for a pushing-back sink ends here ...
GIVE_UP_SHARE = 0.5
#: ... and the sinks' final flush here
SINKS_SHARE = 0.8


@dataclass(frozen=True, slots=True)
class StopBudget:
    """The deadlines of one stop (``time.monotonic()`` seconds)."""

    give_up_at: float  # stop waiting for a sink that pushes back
    sinks_at: float  # the sinks' final flush ends

    @classmethod
    def starting_now(cls, timeout_s: float) -> StopBudget:
        now = time.monotonic()
        return cls(now + timeout_s * GIVE_UP_SHARE, now + timeout_s * SINKS_SHARE)

    @staticmethod
    def left(until: float) -> float:
        """Seconds until ``until`` (0 when past)."""
        return max(0.0, until - time.monotonic())

    async def wait_for_sink(self, seconds: float) -> bool:
        """Sleep ``seconds`` (a sink's retry_after), at most to :attr:`give_up_at`; False
        when that has passed (the caller gives the batch up)."""
        left = self.left(self.give_up_at)
        if left <= 0:
            return False
        await asyncio.sleep(min(seconds, left))
        return True


def unpersisted_line(count: int, reason: str) -> str:
    """The one line a stop with an unwritable lake ends with."""
    why = f" ({reason})" if reason else ""
    return (
        f"stopped with the lake unwritable{why}: {count} received message(s) could not be persisted "
        "(never acknowledged); what is in the write-ahead log is committed at the next start"
    )


class Watchdog:
    """Ends the process ``after_s`` seconds after :meth:`arm`, from a thread of its own (the
    event loop may be stuck in a system call on a failing disk): logs ``line()`` and exits 1."""

    def __init__(self, after_s: float, line: Callable[[], str]) -> None:
        self.after_s = after_s
        self._line = line
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.after_s, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        try:
            try:
                line = self._line()  # read from this thread while the loop runs: best effort
            except Exception as exc:  # whatever it is, the process ends now
                line = f"stopped with the lake unwritable (the count could not be read: {exc!r})"
            log.error("stop timeout reached, exiting now: %s", line)
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
        finally:
            os._exit(1)
