"""The wall clock of the I/O shell (the pure core takes times as arguments, never reads a clock)."""

from __future__ import annotations

import datetime as dt
import time

from uns.errors import UnsError

__all__ = ["iso_us", "now_ms", "parse_time"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def now_ms() -> int:
    """Milliseconds since the Unix epoch, UTC: the unit of Sparkplug timestamps."""
    return time.time_ns() // 1_000_000


def parse_time(text: str | None) -> int:
    """Epoch ms from ``None`` (now), digits (epoch ms) or an ISO 8601 time (UTC if no zone)."""
    if text is None:
        return now_ms()
    if text.strip().lstrip("-").isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise UnsError(f"bad time {text!r}: use epoch milliseconds or ISO 8601") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    # exact integer milliseconds (a float timestamp * 1000 can land one ms short)
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)


def iso_us(ts_us: int) -> str:
    """Epoch microseconds as ISO 8601 UTC with milliseconds (``2026-01-01T10:00:00.000Z``)."""
    moment = dt.datetime.fromtimestamp(ts_us // 1_000_000, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ts_us // 1000 % 1000:03d}Z"
