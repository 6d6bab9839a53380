"""Is the engine ready (``GET /readyz``, ``uns_ready``)?  Connected to the broker, and the
lake committing.

Not ready, with a reason each (the 503 answer's JSON lists them):

- ``starting``: the sinks are not open yet (the lake replays its write-ahead log);
- ``not connected to the broker``: the Sparkplug session is down (retrying); with several
  brokers (``broker.urls``) ``not connected to the broker <url>`` for each one down;
- ``context session not connected``: the context events' session is down;
- ``lake <state>: <reason>``: the lake sink's ``state`` is not ``ok``
  (``degraded``: WAL writes or commits fail and are retried -- the WAL absorbs,
  or intake pauses while it cannot be written; ``full``: intake pauses); the reason is the sink's
  ``degraded_reason``, else its ``last_error``;
- ``lake not committing``: rows wait and no commit succeeded for
  ``max(60 s, 10 x lake.commit_interval)``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from uns.engine.host import Engine

__all__ = ["Readiness", "lake_reasons"]


class Readiness:
    """The readiness of one engine; ``check()`` is cheap (no I/O)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.since = time.time()
        self.stall_s = max(60.0, 10 * engine.config.lake.commit_interval)

    def check(self) -> tuple[bool, list[str]]:
        engine = self.engine
        reasons: list[str] = []
        if not engine.running.is_set():
            reasons.append("starting")
        elif len(engine.links) == 1 and not engine.connected.is_set():
            reasons.append("not connected to the broker")
        else:  # several brokers (broker.urls): each one's session must be up
            down = [link.where for link in engine.links if not link.connected.is_set()]
            reasons.extend(f"not connected to the broker {where}" for where in down)
        if engine.running.is_set() and not engine.context_intake.connected.is_set():
            reasons.append("context session not connected")
        if engine.running.is_set() and not engine.records_intake.connected.is_set():
            reasons.append("records session not connected")
        for sink in engine.sinks:
            if sink.name == "lake":
                reasons.extend(lake_reasons(sink.stats(), since=self.since, stall_s=self.stall_s))
        return not reasons, reasons

    def document(self) -> dict[str, Any]:
        """The JSON body of ``/readyz``."""
        ready, reasons = self.check()
        return {"ready": ready, "reasons": reasons, "host_id": self.engine.host_id}


def lake_reasons(
    stats: Mapping[str, Any], *, since: float, stall_s: float, now: float | None = None
) -> list[str]:
    """Why the lake makes the engine not ready (none: it is fine), from its ``stats()``;
    ``since``: when the engine started (Unix time), ``now`` defaults to the clock."""
    now = time.time() if now is None else now
    state = stats.get("state", "ok")
    if state != "ok":
        error = stats.get("degraded_reason") or stats.get("last_error") or ""
        return [f"lake {state}: {error}" if error else f"lake {state}"]
    last = max(stats.get("last_commit_ms", 0) / 1000, since)
    if stats.get("rows_pending", 0) and now - last > stall_s:
        return [f"lake not committing: rows wait and no commit for {now - last:.0f} s"]
    return []
