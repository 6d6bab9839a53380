"""Where the lake sink's Delta commits (and its own compactions) run: ``lake.commit_worker``.

- :class:`ProcessCommitter` (``"process"``, the default): a
  :class:`lake.worker.CommitWorker` process reads each sealed segment back from
  its file and commits it, so Arrow, Parquet and the Delta log do not compete
  with the engine for the GIL.  A compaction in progress can be abandoned (the
  worker is killed; see :meth:`ProcessCommitter.abandon_compaction`).
- :class:`ThreadCommitter` (``"thread"``): a :class:`lake.writer.DeltaWriter` in
  a worker thread of this process, committing the columns the sink kept in
  memory (``keeps_columns``).

Both commit exactly once (app transactions, see :mod:`lake.writer`) and delete
a segment after its commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from uns.config import LakeSection
from uns.errors import LakeError
from uns.lake.anchors import AnchorSettings
from uns.lake.storage import LakeStore
from uns.lake.tables import TableColumns
from uns.lake.wal import CommitResult, SegmentFile
from uns.lake.worker import CommitWorker

if TYPE_CHECKING:  # deltalake and pyarrow load only where commits run (see lake.worker)
    from uns.lake.writer import DeltaWriter

__all__ = ["Committer", "ProcessCommitter", "Sealed", "ThreadCommitter", "committer_for"]


@dataclass(slots=True)
class Sealed:
    """A segment waiting for its commit (``file`` is None for one left by an earlier run)."""

    number: int
    path: Path
    size: int
    rows: int
    file: SegmentFile | None
    parts: list[TableColumns] | None = None  # its records' columns while in memory (else read from the file)
    blocks: list[bytes] | None = None  # ... and their sample blocks (lake.blocks)

    def close(self) -> None:
        """Close (and so fsync) its file: a segment that waits for a sick lake must survive power loss."""
        if self.file is not None:
            try:
                self.file.close()
            except OSError as exc:
                raise LakeError(f"cannot close WAL segment {self.path.name}: {exc}") from exc


class Committer(Protocol):
    """What :class:`lake.sink.LakeSink` needs from where its commits run."""

    #: the sink keeps the columns of the segments it wrote, for :meth:`commit`
    keeps_columns: bool

    async def open(self) -> int:
        """Create missing tables; return the newest segment number any table has recorded."""
        ...

    async def commit(self, seg: Sealed) -> CommitResult: ...

    async def compact(self, since: dt.date) -> int | None:
        """Merge the small files of partitions from ``since`` on: files removed, or None
        when :meth:`abandon_compaction` stopped it."""
        ...

    def abandon_compaction(self) -> None: ...

    async def anchor(self, *, force: bool = False) -> None:
        """Anchor the audit chain's head outside the lake if it changed (lake/anchors.py)."""
        ...

    async def close(self, timeout_s: float = 30.0) -> None:
        """Release the worker: it finishes its request, or is killed after ``timeout_s``."""
        ...

    def worker_stats(self) -> tuple[int, int, int]:
        """The worker process's pid, restarts and recycles (zeros without one)."""
        ...


class ProcessCommitter:
    """Commits in a :class:`lake.worker.CommitWorker` process."""

    keeps_columns = False

    def __init__(self, root: LakeStore, config: LakeSection, anchor: AnchorSettings | None = None) -> None:
        self._worker = CommitWorker(
            root,
            config.writer_id,
            config.commit_worker_max_rss_mb,
            nice=config.commit_worker_nice,
            anchor=anchor,
        )
        self._compaction: asyncio.Future[object] | None = None

    async def open(self) -> int:
        await self._worker.start()
        return int(await self._worker.call("open"))

    async def commit(self, seg: Sealed) -> CommitResult:
        await asyncio.to_thread(seg.close)
        result = await self._worker.call("commit", seg.number, str(seg.path))
        assert isinstance(result, CommitResult)
        return result

    async def compact(self, since: dt.date) -> int | None:
        task = self._compaction = asyncio.ensure_future(self._worker.call("compact", since))
        try:
            await asyncio.wait([task])
        finally:
            self._compaction = None
            task.cancel()  # a no-op once done; if we were cancelled, so is it
        return None if task.cancelled() else int(cast("int", task.result()))

    async def anchor(self, *, force: bool = False) -> None:
        await self._worker.call("anchor", force)

    def abandon_compaction(self) -> None:
        """Stop the compaction in progress (at shutdown the final flush must not wait
        for it).  Killing the worker is safe: Delta commits a compaction atomically or
        not at all (a half-written file stays unreferenced and the next compaction
        starts over); the next request starts a fresh worker."""
        if self._compaction is not None:
            self._compaction.cancel()

    async def close(self, timeout_s: float = 30.0) -> None:
        await self._worker.close(timeout_s)

    def worker_stats(self) -> tuple[int, int, int]:
        return self._worker.pid, self._worker.deaths, self._worker.recycled


class ThreadCommitter:
    """Commits in a worker thread of this process (one at a time)."""

    keeps_columns = True

    def __init__(self, root: LakeStore, config: LakeSection, anchor: AnchorSettings | None = None) -> None:
        self._root = root
        self._writer_id = config.writer_id
        self._anchor = anchor
        self._writer: DeltaWriter | None = None

    async def open(self) -> int:
        from uns.lake.writer import DeltaWriter  # noqa: PLC0415 - see TYPE_CHECKING above

        self._writer = DeltaWriter(self._root, self._writer_id, anchor=self._anchor)
        return await asyncio.to_thread(self._writer.open_tables)

    async def commit(self, seg: Sealed) -> CommitResult:
        return await asyncio.to_thread(self._commit_blocking, seg)

    def _commit_blocking(self, seg: Sealed) -> CommitResult:
        assert self._writer is not None
        seg.close()
        return self._writer.commit_segment(seg.number, seg.path, seg.parts, seg.blocks)

    async def compact(self, since: dt.date) -> int | None:
        assert self._writer is not None
        return await asyncio.to_thread(self._writer.compact_recent, since)

    async def anchor(self, *, force: bool = False) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.audit.anchor_due, force=force)

    def abandon_compaction(self) -> None:
        """A worker thread cannot be stopped: a compaction in progress runs to its end."""

    async def close(self, timeout_s: float = 30.0) -> None:
        """Nothing to release: the thread's tables are plain files."""

    def worker_stats(self) -> tuple[int, int, int]:
        return 0, 0, 0


def committer_for(root: LakeStore, config: LakeSection, anchor: AnchorSettings | None = None) -> Committer:
    """The committer ``config.commit_worker`` names (``anchor``: where its audit chain is anchored)."""
    if config.commit_worker == "process":
        return ProcessCommitter(root, config, anchor)
    return ThreadCommitter(root, config, anchor)
