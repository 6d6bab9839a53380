"""Engine health: counters, the retained status document, rate-limited logging."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Counters", "RateLimitedLog"]


@dataclass
class Counters:
    """Monotonic counters since start (published in the status document)."""

    messages: int = 0  # MQTT messages received
    sparkplug_messages: int = 0
    metrics: int = 0  # samples produced
    rejected: int = 0  # messages or metrics that could not be used
    rebirths_requested: int = 0
    seq_gaps: int = 0
    reconnects: int = 0
    commands_ignored: int = 0  # NCMD/DCMD seen on spBv1.0/# (ours echoed back, or other hosts')
    host_states_seen: int = 0
    context_events: int = 0
    context_changes: int = 0
    backpressure_waits: int = 0  # times intake paused because a sink was full

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class RateLimitedLog:
    """Logs at most one line per key per ``interval`` seconds, counting the rest."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) > 10_000:  # bound memory for a flood of distinct sources
            self._last.clear()
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        suffix = f" ({more} similar suppressed)" if more else ""
        self._logger.warning(msg + suffix, *args)
