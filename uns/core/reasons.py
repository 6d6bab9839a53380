"""When a context change must give its reason (``context.require_reason``; EU GMP Annex 11 §9).

Two kinds of change are not the plain capture of what happened as it happened, and an
auditor asks why for each:

- a **manual** change: made by a person with uns's own tools (``uns context set``,
  ``uns context import``, the web workspace: the sources :data:`MANUAL_SOURCES`);
- a **back-dated** change: valid from more than ``late_ms`` (``batch.late_context_s``,
  the threshold the batch report lists a change as late by) before it arrived.

Pure: the caller passes the changes of one event and its receive time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

from uns.core.events import ContextChange
from uns.errors import ContextError

__all__ = ["MANUAL_SOURCES", "check_reason", "missing_reason"]

#: the sources of uns's own hand-entry tools
MANUAL_SOURCES: Final = frozenset({"uns-cli", "uns-import", "uns-web"})


def missing_reason(changes: Sequence[ContextChange], received_at: int, *, late_ms: int) -> str | None:
    """Why the event of ``changes`` is refused for want of a reason, or None when it gives
    one or needs none.  All changes of one event share its source, time and reason."""
    if not changes or (changes[0].reason or "").strip():
        return None
    first = changes[0]
    late = received_at - first.ts
    if late > late_ms:
        valid = dt.datetime.fromtimestamp(first.ts / 1000, dt.UTC).isoformat(timespec="milliseconds")
        return (
            f"a back-dated change needs a reason: valid from {valid.replace('+00:00', 'Z')}, "
            f"{late / 1000:.1f} s before it arrived (context.require_reason)"
        )
    if first.source in MANUAL_SOURCES:
        return f"a manual change needs a reason (source {first.source!r}; context.require_reason)"
    return None


def check_reason(changes: Sequence[ContextChange], received_at: int, *, late_ms: int) -> None:
    """:class:`ContextError` saying why, when :func:`missing_reason` finds one missing."""
    why = missing_reason(changes, received_at, late_ms=late_ms)
    if why:
        raise ContextError(why, path=changes[0].path)
