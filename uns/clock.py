"""The wall clock of the I/O shell (the pure core takes times as arguments, never reads a clock)."""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Milliseconds since the Unix epoch, UTC: the unit of Sparkplug timestamps."""
    return time.time_ns() // 1_000_000
