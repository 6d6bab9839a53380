"""LakeSink: the engine's crash-safe, non-blocking writer into the lake.

``add(batch)`` only takes references to the batch's rows; once per event-loop
iteration (``loop.call_soon``) every row accepted since becomes ONE record
appended to the active WAL segment, before the loop next polls for I/O (with
``fsync_interval = 0``: inside ``add``, fsynced).  A ticker fsyncs and seals
segments; a committer commits sealed segments in number order in the commit
worker (:mod:`lake.committers`), exactly once (:mod:`lake.writer`), deletes them
and compacts between commits (:mod:`lake.compaction`).  Failing WAL writes and
commits degrade the sink and are retried with capped backoff (:mod:`lake.health`);
while the WAL cannot take rows (failing, or at ``wal_max_bytes``) ``add`` raises
:class:`uns.errors.LakeBackpressure`.  Settings: :class:`uns.config.LakeSection`.
The whole story: docs/lake.md sections 3-5.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Self

from uns.config import LakeSection
from uns.core.events import Batch, SampleBlock, SampleRuns
from uns.errors import LakeBackpressure, LakeError
from uns.lake.anchoring import AnchorSchedule
from uns.lake.anchors import AnchorSettings
from uns.lake.audit_intake import AuditIntake
from uns.lake.blocks import SeriesRegistry, encode_blocks
from uns.lake.commit_loop import CommitLoop
from uns.lake.committers import Sealed, committer_for
from uns.lake.compaction import CompactionSchedule
from uns.lake.health import SinkHealth
from uns.lake.quarantine import FailureStreak
from uns.lake.storage import LakeStore, as_store, wal_dir_of
from uns.lake.tables import (
    PendingRows,
    TableColumns,
    column_count,
    empty_columns,
    extend_columns,
    split_columns,
)
from uns.lake.wal import (
    OS_FILES,
    FileLayer,
    SegmentFile,
    WalLock,
    close_segments,
    encode_columns,
    fsync_dir,
    fsync_segments,
    list_segments,
    open_segment,
)

__all__ = ["LakeConfig", "LakeSink"]

log = logging.getLogger(__name__)

#: the lake package's name for the ``[lake]`` section (one class: :class:`uns.config.LakeSection`)
LakeConfig = LakeSection


class LakeSink(AuditIntake, CommitLoop):
    """Sink protocol implementation writing to the lake at ``path`` (a directory or an object
    store, lake/storage.py; the WAL is always local), an async context manager used once."""

    name = "lake"
    #: takes samples in columns (uns.core.events.SampleBlock) as they are
    accepts_blocks = True

    def __init__(
        self,
        path: str | Path | LakeStore,
        config: LakeSection | None = None,
        *,
        files: FileLayer = OS_FILES,
        anchor: AnchorSettings | None = None,
    ) -> None:
        self.config = config or LakeSection()
        self.store = as_store(path, self.config.storage)
        self.root = Path(self.store.url)  # a local lake's directory (use store for a remote one)
        self._files = files  # the WAL's system calls (tests inject faults)
        self._wal_dir = wal_dir_of(self.store, self.config)
        self._lock = WalLock(self._wal_dir)
        self._committer = committer_for(self.store, self.config, anchor)
        self._anchoring = AnchorSchedule(self._committer, anchor.interval_s if anchor is not None else 0.0)
        self._compaction = CompactionSchedule(
            self._committer, self.config.compact_interval, due_marker=self._wal_dir / "compaction-due"
        )
        self._active: SegmentFile | None = None
        # Rows accepted by add() and not yet in the WAL: the pending batches' objects, and
        # (after a failed write) the columns that write could not get into the file.
        self._active_parts: list[TableColumns] = []  # the columns of each record of the active segment
        self._active_blocks: list[bytes] = []  # ... and its records' sample blocks (lake.blocks)
        self._series = SeriesRegistry()  # the born metrics the active segment's blocks defined
        self._pending = PendingRows()
        self._unwritten: TableColumns | None = None
        self._unwritten_blocks: list[SampleBlock | SampleRuns] = []
        self._pending_batches = self._unwritten_batches = 0  # the batches of those rows
        self._write_scheduled = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sealed: deque[Sealed] = deque()
        self._next_number = 0
        self._running = False
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._dir_dirty = False
        self._last_fsync = time.monotonic()
        self._stop_by: float | None = None  # monotonic deadline of a bounded stop (stop_by())
        # health and counters (see stats())
        self._health = SinkHealth(self.config.retry_initial_s, self.config.retry_max_s)
        self._rows_added = 0
        self._rows_committed = 0
        self._commits = 0
        self._segments_committed = 0
        self._segments_replayed = 0
        self._wal_bytes = 0
        self._last_commit_ms = 0
        self._commit_latency_ms = 0.0
        self._backpressure = 0
        self._torn_bytes = 0
        self._streak = FailureStreak()  # the head segment's failed commits (lake.quarantine)
        self._segments_quarantined = 0
        self._rows_quarantined = 0

    # ---------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._lock_wal)
        except OSError as exc:
            raise LakeError(f"cannot open the lake at {self.store}: {exc}") from exc
        try:
            newest = await self._committer.open()
            await asyncio.to_thread(self._find_segments, newest)
        except BaseException as exc:
            await self._committer.close()
            self._lock.release()
            if isinstance(exc, OSError):
                raise LakeError(f"cannot open the lake at {self.store}: {exc}") from exc
            raise
        self._running = True
        self._compaction.start()
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="lake-committer"),
            asyncio.create_task(self._tick_loop(), name="lake-ticker"),
        ]
        self._write_early_events()
        return self

    def _lock_wal(self) -> None:
        self._wal_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()

    def _find_segments(self, newest: int) -> None:
        """Queue the segments a previous run left (``newest``: the newest number any table has)."""
        for number, path in list_segments(self._wal_dir):
            size = path.stat().st_size
            self._sealed.append(Sealed(number, path, size, 0, None))
            self._wal_bytes += size
            newest = max(newest, number)
        self._segments_replayed = len(self._sealed)
        if self._sealed:
            log.info("lake: replaying %d write-ahead log segment(s)", len(self._sealed))
        # Never reuse a number a table has recorded: it would be skipped as already committed.
        self._next_number = newest + 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._running:
            return
        failure: LakeError | None = None
        self._record_stop()
        self._compaction.close()  # the final flush must not wait for a compaction
        try:
            async with asyncio.timeout(self._until_stop()):
                await self.flush()
        except (LakeError, TimeoutError) as err:  # the stop's deadline on a healthy lake: no failure
            if isinstance(err, LakeError) or self._health.degraded.active:
                failure = err if isinstance(err, LakeError) else LakeError(self._health.degraded.reason)
            # expected in a fault: one line, no traceback
            log.error("lake: final flush not done; rows stay in the WAL: %s", failure or "stop deadline")  # noqa: TRY400
        finally:
            await self._stop()
        if failure is not None and exc_type is None:
            raise failure

    async def _stop(self) -> None:
        self._running = False
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            if task.get_name() == "lake-ticker":
                task.cancel()
        # The committer finishes the commit in progress, then sees _stopping -- unless a stop's
        # deadline passes first (a Delta commit is atomic: an abandoned one is retried).
        _, late = await asyncio.wait(self._tasks, timeout=self._until_stop())
        for task in late:
            log.warning("lake: abandoning %s at the stop deadline", task.get_name())
            task.cancel()
        for outcome in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("lake: background task failed: %r", outcome)
        self._tasks = []
        try:
            self._write()  # rows added after the final flush (none when used as documented)
        except (LakeError, OSError) as exc:
            lost = (
                self._pending.rows
                + sum(map(column_count, self._unwritten or ()))
                + sum(map(len, self._unwritten_blocks))
            )
            log.error("lake: %d accepted row(s) could not be written to the WAL: %s", lost, exc)  # noqa: TRY400
        self._closed = True
        files = [s.file for s in self._sealed if s.file is not None]
        if self._active is not None:
            files.append(self._active)
            self._active = None
        await asyncio.to_thread(close_segments, files)
        await self._anchoring.maybe_run(stopping=True)  # the stop's head, engine_stop included
        await self._committer.close(30.0 if self._stop_by is None else max(1.0, self._until_stop() or 0.0))
        self._lock.release()

    def stop_by(self, deadline: float) -> None:
        """Bound the shutdown: final flush and commit in progress end at ``deadline`` (monotonic)."""
        self._stop_by = deadline

    def _until_stop(self) -> float | None:  # seconds left before the stop deadline (None: none)
        return None if self._stop_by is None else max(0.0, self._stop_by - time.monotonic())

    @property
    def unwritten_batches(self) -> int:
        """Batches ``add`` accepted that are not in the WAL (pending, or their write failed)."""
        return self._pending_batches + self._unwritten_batches

    # ---------------------------------------------------------------- intake
    def add(self, batch: Batch) -> None:
        """Accept the batch (non-blocking; it reaches the WAL before the loop next polls
        for I/O) or raise LakeBackpressure (WAL full, or the last WAL write failed)."""
        if not self._running:
            raise LakeError("the lake sink is not running (use it as an async context manager)")
        health = self._health
        if self._wal_bytes >= self.config.wal_max_bytes:
            self._backpressure += 1
            raise LakeBackpressure(
                f"lake write-ahead log full ({self._wal_bytes} bytes uncommitted"
                f"{'; ' + health.last_error if health.commits.failing else ''})",
                retry_after=self._retry_after(),
            )
        if health.write_error:
            self._backpressure += 1
            wait = health.wal.wait(time.monotonic())
            raise LakeBackpressure(
                f"cannot write the lake write-ahead log: {health.write_error}",
                retry_after=max(self._tick_s(), wait),
            )
        count = self._pending.add(batch)
        if not count:
            return
        self._rows_added += count
        self._pending_batches += 1
        if self.config.fsync_interval == 0:
            self._add_synced(count)
        elif not self._write_scheduled:
            self._schedule_write()

    def _add_synced(self, count: int) -> None:
        """``fsync_interval = 0``: write and fsync inside add().  Nothing else is pending
        here (a failed write makes add() refuse), so a failure refuses just this batch."""
        try:
            seg = self._write()
        except (LakeError, OSError) as exc:
            self._unwritten, self._unwritten_batches, self._unwritten_blocks = None, 0, []
            self._health.wal_failed(exc)
            self._health.write_error = ""  # this batch is refused (the caller retries it): nothing waits
            self._rows_added -= count
            self._backpressure += 1
            raise LakeBackpressure(f"cannot write the lake write-ahead log: {exc}", retry_after=1.0) from exc
        if seg is not None:
            try:
                seg.fsync()
                if self._dir_dirty:  # a new segment: its directory entry needs its own fsync
                    fsync_dir(self._wal_dir)
                    self._dir_dirty = False
            except OSError as exc:  # the record is written (accepted): a later fsync or close retries
                seg.unsynced = True
                log.warning("lake: fsync of the write-ahead log failed: %s", exc)

    def _write_pending(self) -> None:
        """The loop callback add() schedules: every pending row into the WAL as one record."""
        self._write_scheduled = False
        if self._closed:
            return
        try:
            self._write()
        except (LakeError, OSError) as exc:
            self._health.wal_failed(exc)

    def _write(self) -> SegmentFile | None:
        """Write pending rows as one record -- several, in segments of their own, when they
        are more than ``max_segment_rows`` -- (raises on failure; the rows stay pending)."""
        columns = self._unwritten
        blocks = self._unwritten_blocks
        batches, self._pending_batches = self._pending_batches, 0
        self._unwritten_batches += batches
        if self._pending.rows:
            blocks.extend(self._pending.take_blocks())
            more = self._pending.take()
            if columns is None:
                columns = more
            else:
                extend_columns(columns, more)
        if columns is None:
            return None
        rows = sum(map(column_count, columns)) + sum(map(len, blocks))
        cap = self.config.max_segment_rows
        active = self._active
        if active is not None and active.rows and active.rows + rows > cap:
            self._seal()  # no segment ever holds more than the commit worker can surely write
        # (a record's sample blocks are not split: they go with its last piece)
        pieces = [columns] if rows <= cap else split_columns(columns, cap)
        seg = None
        for done, piece in enumerate(pieces):
            try:
                seg = self._append(piece, blocks if done == len(pieces) - 1 else [])
            except BaseException:
                if len(pieces) > 1 or self._unwritten is None:  # keep the rows not written, as lists
                    self._unwritten = empty_columns()
                    for rest in pieces[done:]:
                        extend_columns(self._unwritten, rest)
                if self._active is not None and self._active.broken:
                    self._seal()
                raise
        self._unwritten = None
        self._unwritten_blocks = []
        self._unwritten_batches = 0
        if self._health.wal.failing:
            self._health.wal_works()
        return seg

    def _append(self, columns: TableColumns, blocks: list[SampleBlock | SampleRuns]) -> SegmentFile:
        """Write ``columns`` and sample ``blocks`` as one record to the active segment (a new
        one if none), sealing it when full (raises on failure)."""
        rows = sum(map(column_count, columns)) + sum(map(len, blocks))
        seg = self._active or self._open_segment()
        encoded, born = encode_blocks(blocks, self._series)
        try:
            record, columns = encode_columns(columns, encoded)
            seg.append(record, rows)
        except BaseException:
            self._series.forget(born)  # the record defined nothing
            raise
        self._series.keep(born)
        self._wal_bytes += len(record)
        if self._committer.keeps_columns:
            self._active_parts.append(columns)
            if encoded:
                self._active_blocks.append(encoded)
        cfg = self.config
        if seg.rows >= min(cfg.commit_rows, cfg.max_segment_rows) or seg.size >= cfg.segment_max_bytes:
            self._seal()
        return seg

    def _tick_s(self) -> float:
        cfg = self.config
        return max(0.02, min(0.25, cfg.commit_interval / 4, cfg.fsync_interval / 2 or 0.25))

    def _open_segment(self) -> SegmentFile:
        number = self._next_number
        self._next_number += 1  # used up even when the open fails: its file may stay behind
        seg = open_segment(self._wal_dir, number, self._files)
        self._next_number = seg.number + 1
        self._wal_bytes += seg.size
        self._active = seg
        self._series = SeriesRegistry()  # each segment's records define its series anew (lake.blocks)
        self._dir_dirty = True
        return seg

    def _seal(self) -> None:
        seg, self._active = self._active, None
        parts: list[TableColumns] | None
        parts, self._active_parts = self._active_parts, []
        blocks, self._active_blocks = self._active_blocks, []
        if seg is None:
            return
        # Keep the rows of at most two waiting segments in memory; a backlog (a sick
        # lake) is read back from the files, so memory stays bounded by the WAL on disk.
        if not self._committer.keeps_columns or sum(1 for s in self._sealed if s.parts is not None) >= 2:
            parts = None
        self._sealed.append(Sealed(seg.number, seg.path, seg.size, seg.rows, seg, parts, blocks))
        self._wake.set()

    def _retry_after(self) -> float:
        return self._health.full_retry_after(self.config.commit_interval)

    async def flush(self) -> None:
        """Commit everything added so far; raises LakeError if a commit attempt fails meanwhile
        (the rows stay in the WAL and are committed later)."""
        if not self._running:
            return
        self._write_now("lake flush failed: cannot write the write-ahead log")
        self._seal()
        if not self._sealed:
            return
        target = self._sealed[-1].number
        errors_before = self._health.commit_errors
        self._wake.set()  # skip a backoff wait: try now
        while self._sealed and self._sealed[0].number <= target:
            if self._health.commit_errors > errors_before:
                raise LakeError(f"lake flush failed: {self._health.last_error}")
            if self._tasks and self._tasks[0].done():
                raise LakeError("lake committer stopped")
            progress = self._progress
            await progress.wait()

    async def durable(self) -> None:
        """Return once every row added so far is in the WAL and fsynced (a crash, even a power
        loss, keeps it): what the engine waits for before it acknowledges a context message.
        With ``fsync_interval > 0`` this forces the fsync now instead of at the next tick.
        Raises LakeError when the write or the fsync fails (the caller does not acknowledge)."""
        if not self._running:
            raise LakeError("the lake sink is not running")
        self._write_now("cannot write the lake write-ahead log")
        try:
            await self._sync()
        except OSError as exc:
            raise LakeError(f"fsync of the lake write-ahead log failed: {exc}") from exc

    def _write_now(self, what: str) -> None:
        """Write the pending rows now; a failure is remembered and raised as ``what: reason``."""
        try:
            self._write()
        except (LakeError, OSError) as exc:
            self._health.wal_failed(exc)
            raise LakeError(f"{what}: {exc}") from exc

    async def _sync(self) -> None:
        """fsync every segment written since its last fsync, and the directory if a segment
        was created, in a worker thread; on OSError they stay marked for the next attempt."""
        files = [s.file for s in self._sealed if s.file is not None and s.file.unsynced]
        if self._active is not None and self._active.unsynced:
            files.append(self._active)
        dir_dirty, self._dir_dirty = self._dir_dirty, False
        if not files and not dir_dirty:
            return
        try:
            await asyncio.to_thread(fsync_segments, files, self._wal_dir if dir_dirty else None)
        except OSError:
            self._dir_dirty = self._dir_dirty or dir_dirty
            for f in files:
                f.unsynced = True
            raise

    # ---------------------------------------------------------------- background
    async def _tick_loop(self) -> None:
        cfg = self.config
        tick = self._tick_s()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self._health.write_error and self._health.wal.due(now):
                self._write_pending()  # retry the failed WAL write
            seg = self._active
            if seg is not None and seg.rows and now - seg.opened_at >= cfg.commit_interval:
                self._seal()
            if cfg.fsync_interval > 0 and now - self._last_fsync >= cfg.fsync_interval:
                self._last_fsync = now
                try:
                    await self._sync()
                except OSError as exc:
                    log.warning("lake: fsync of the write-ahead log failed: %s", exc)

    # ---------------------------------------------------------------- health
    @property
    def state(self) -> str:
        """``ok``, ``degraded`` (WAL writes or commits fail, retried) or ``full`` (WAL at its bound)."""
        return self._health.state(wal_full=self._wal_bytes >= self.config.wal_max_bytes)

    def stats(self) -> dict[str, int | float | str]:
        """Counters and health (docs/lake.md section 4)."""
        pending_rows = sum(s.rows for s in self._sealed) + (self._active.rows if self._active else 0)
        pending_rows += (
            self._pending.rows
            + sum(map(column_count, self._unwritten or ()))
            + sum(map(len, self._unwritten_blocks))
        )
        worker_pid, worker_restarts, worker_recycled = self._committer.worker_stats()
        return {
            "state": self.state,
            "rows_added": self._rows_added,
            "rows_committed": self._rows_committed,
            "rows_pending": pending_rows,
            "commits": self._commits,
            "segments_committed": self._segments_committed,
            "segments_replayed": self._segments_replayed,
            **self._compaction.stats(),
            **self._health.stats(),
            "wal_bytes": self._wal_bytes,
            "wal_segments": len(self._sealed) + (1 if self._active else 0),
            "last_commit_ms": self._last_commit_ms,
            "commit_latency_ms": self._commit_latency_ms,
            "backpressure": self._backpressure,
            "torn_bytes_ignored": self._torn_bytes,
            "commit_worker": self.config.commit_worker,
            "commit_worker_pid": worker_pid,
            "commit_worker_restarts": worker_restarts,
            "commit_worker_recycled": worker_recycled,
            "batches_unwritten": self.unwritten_batches,
            "segments_quarantined": self._segments_quarantined,
            "rows_quarantined": self._rows_quarantined,
        }
