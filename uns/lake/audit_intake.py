"""The lake sink's part of the audit trail: the engine's own events (start, stop) into the WAL.

They travel with the rows, in the same records, and get their ``seq`` and hashes in
the commit worker with the segment's other entries (:mod:`lake.audit`).  A mixin of
:class:`lake.sink.LakeSink`, kept apart so the sink stays about writing rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from uns.lake.tables import AuditEvent, PendingRows

__all__ = ["AuditIntake"]


class AuditIntake:
    """``record_audit`` and ``on_stop`` for :class:`lake.sink.LakeSink`."""

    _pending: PendingRows
    _rows_added: int
    _running: bool
    _write_scheduled: bool
    _loop: asyncio.AbstractEventLoop | None
    #: called when the sink stops, before its final flush: the event to record then (engine_stop)
    on_stop: Callable[[], AuditEvent] | None = None

    def record_audit(self, event: AuditEvent) -> None:
        """Put ``event`` into the WAL with the rows (before the sink runs, it waits for the start)."""
        self._pending.add_audit(event)
        self._rows_added += 1
        if self._running and not self._write_scheduled:
            self._schedule_write()

    def _write_early_events(self) -> None:
        """At the start: write what was recorded before it (the engine's start)."""
        if self._pending.rows:
            self._schedule_write()

    def _record_stop(self) -> None:
        """At the stop, before the final flush: record ``on_stop()``'s event."""
        if self.on_stop is not None:
            self.record_audit(self.on_stop())

    def _schedule_write(self) -> None:
        self._write_scheduled = True
        assert self._loop is not None
        self._loop.call_soon(self._write_pending)

    def _write_pending(self) -> None:
        raise NotImplementedError
