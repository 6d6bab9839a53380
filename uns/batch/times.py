"""Times in the batch report: ISO 8601 UTC with milliseconds, e.g. ``2026-12-01T10:00:00.000Z``."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso", "ms"]


def ms(value: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return round(value.timestamp() * 1000)


def iso(value: datetime | int | None) -> str | None:
    """``value`` (an aware datetime or epoch milliseconds) as ISO 8601 UTC with milliseconds."""
    if value is None:
        return None
    stamp = value if isinstance(value, int) else ms(value)
    moment = datetime.fromtimestamp(stamp // 1000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{stamp % 1000:03d}Z"
