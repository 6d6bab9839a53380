"""Committing WAL segments to the Delta tables, exactly once (blocking; runs in the commit worker).

A segment's rows go to each table in one Delta commit that carries the app
transaction ``(app_id(table), segment number)``.  Before writing, the table's
recorded ``transaction_version(app_id)`` is compared with the segment number:
if it is already there, that table got this segment before a crash and is
skipped.  Segments are committed strictly in number order, so a table's
transaction version is also the newest segment it holds.  Only after every
table has the segment, and the filesystem is synced, is the segment file
deleted.  A crash before, during or after any commit therefore leaves every
row in the lake exactly once after replay.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pyarrow as pa
from deltalake import DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from uns.errors import LakeError
from uns.lake.anchors import AnchorSettings
from uns.lake.audit import AUDIT, AuditRecorder
from uns.lake.audit_entries import SYSTEM
from uns.lake.block_arrow import block_measurements, dictionary_columns
from uns.lake.blocks import block_rows
from uns.lake.health import VANISHED
from uns.lake.locks import compaction_lock, tables_lock
from uns.lake.parquet import writer_properties
from uns.lake.repair import repair_rejected
from uns.lake.schemas import SCHEMAS
from uns.lake.sharing import app_id, commit_with_retries, write_rows
from uns.lake.storage import LakeStore, as_store
from uns.lake.tables import PARTITION_COLUMN, TABLES, TableColumns, column_count
from uns.lake.to_arrow import arrow_table_of_parts
from uns.lake.wal import CommitResult, read_segment, sync_filesystem

__all__ = [
    "RECENT_TARGET_ROWS",
    "CommitResult",
    "DeltaWriter",
    "app_id",
    "recent_target_bytes",
    "writer_properties",
]

log = logging.getLogger(__name__)

_AUDIT_INDEX: Final = TABLES.index(AUDIT)
MEASUREMENTS: Final = TABLES[0]  # the table sample blocks go to

#: The writer's own compaction merges small files into files of about this many rows.
#: deltalake merges every file below its byte target (100 MiB by default) again and
#: again; measurement data that compresses to well under a byte per row stays below
#: that for hours, so every compaction would rewrite the whole day so far (measured:
#: 6M, 12M, 18M rows at 2, 4, 6 minutes of 50,000 samples/s).  A row-sized target
#: bounds each compaction to about the rows that arrived since the last one plus one
#: unfilled file.  ``uns lake compact`` (no bound) still merges up to the full size.
RECENT_TARGET_ROWS: Final = 16_000_000
#: the row target's byte size is kept within these (the upper one is deltalake's default)
MIN_TARGET_BYTES: Final = 64 << 10
MAX_TARGET_BYTES: Final = 100 << 20

# Test-only fault injection, read once: "kill:<point>" SIGKILLs this process at
# <point> (before:<table>, after:<table>, before_delete, after_delete);
# "kill_worker:<point>:<flag file>" SIGKILLs only the commit worker, once (the flag
# file records that it happened); "sleep:<seconds>" pauses between table commits;
# "compact_sleep:<seconds>" pauses before a compaction; "compact_wait:<file>" pauses
# there (holding the compaction lock) until <file> exists; "refuse_segment:<number>" makes
# every commit of that segment fail (a segment the worker cannot write: lake.quarantine).
# Used by tests/lake_crash_child.py and tests/test_lake_worker.py; empty in production.
_TEST_HOOK: Final = os.environ.get("UNS_LAKE_TEST_HOOK", "")
#: True in the commit worker process (lake.worker): a test kill then takes its parent too.
IN_WORKER = False


def _hook(point: str) -> None:
    if not _TEST_HOOK:
        return
    kind, _, arg = _TEST_HOOK.partition(":")
    if kind == "kill" and arg == point:
        if IN_WORKER:
            os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "kill_worker" and IN_WORKER and arg.partition(":")[0] == point:
        flag = Path(arg.partition(":")[2])
        if not flag.exists():
            flag.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    elif (kind == "sleep" and point.startswith("after:")) or (kind == "compact_sleep" and point == "compact"):
        time.sleep(float(arg))
    elif kind == "compact_wait" and point == "compact":
        deadline = time.monotonic() + 300  # a test that never lets go fails on its own timeout
        while not Path(arg).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    elif kind == "refuse_segment" and point == f"commit:{arg}":
        raise LakeError(f"test hook: segment {arg} is refused by every commit")


def recent_target_bytes(sizes: Sequence[int], rows: Sequence[int], target_rows: int) -> int:
    """The byte target for files of about ``target_rows`` rows, judged from the files
    at hand (their ``sizes`` in bytes and ``rows``), within the byte bounds above."""
    total_rows = sum(rows)
    if total_rows <= 0:
        return MAX_TARGET_BYTES
    target = sum(sizes) * target_rows // total_rows
    return max(MIN_TARGET_BYTES, min(MAX_TARGET_BYTES, target))


class DeltaWriter:
    """The lake's tables, for one writer (one WAL).  Not thread-safe: one commit at a time."""

    def __init__(
        self, root: Path | str | LakeStore, writer_id: str = "", *, anchor: AnchorSettings | None = None
    ) -> None:
        self.store = as_store(root)  # a directory or an object store (lake/storage.py)
        #: the lake's directory (a local lake; for a remote one its URL as a path: use ``store``)
        self.root = Path(self.store.url)
        self.writer_id = writer_id
        self._handles: dict[str, DeltaTable] = {}
        self._props = {table: writer_properties(table) for table in TABLES}
        #: this writer's chain in the audit table (lake.audit)
        self.audit = AuditRecorder(self.store, writer_id, self._handle)
        self.audit.use_anchor(anchor)  # the engine's worker anchors when due (lake/anchors.py)

    def table_path(self, table: str) -> str:
        return self.store.table_uri(table)

    def ensure_tables(self) -> None:
        """Create every missing table empty, so readers see all views from the start.

        Engines started together on a new lake all find the tables missing.  The writers
        of one machine create them one after the other under the lake's table lock, each
        looking again once it holds it (lake/locks.py says why delta-rs's create cannot
        race); one on another machine that still loses a race takes the winner's table
        (:meth:`_create`)."""
        missing = [table for table in TABLES if table not in self._handles and not self._cache(table)]
        if not missing:
            return
        lock_dir = self.store.lock_dir()
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)  # a new local lake: its directory holds the lock
        except OSError as exc:
            raise LakeError(f"cannot create the lake directory {lock_dir}: {exc}") from exc
        with tables_lock(lock_dir):
            for table in missing:
                if not self._cache(table):  # made while this writer waited for the lock
                    self._handles[table] = self._create(table)

    def open_tables(self) -> int:
        """Create the missing tables; return the newest segment number any table has
        recorded (-1 for none)."""
        self.ensure_tables()
        if self.audit.anchor is not None:
            self.audit.anchor.check()  # one line at the start when anchors cannot be written
        with compaction_lock(self.store.lock_dir(), wait=False) as held:
            if held:  # no compaction runs: one without its audit entry was interrupted (lake.audit)
                try:
                    self.audit.reconcile()
                except LakeError as exc:  # the trail is behind, not the data: verify will say so
                    log.warning("lake: %s", exc)
        return self.committed_segment()

    def forget_handles(self) -> None:
        """Drop cached table state (after an error its state is not to be trusted)."""
        self._handles.clear()

    def _handle(self, table: str) -> DeltaTable:
        """The table (cached).  Only :meth:`ensure_tables` creates one, at start: a table
        that vanishes later (a lost mount, a deleted directory) is a fault to wait out,
        not a table to make anew where the lake no longer is."""
        if table in self._handles or self._cache(table):
            return self._handles[table]
        raise LakeError(f"{VANISHED}: {table} (at {self.table_path(table)})", table=table)

    def _cache(self, table: str) -> bool:
        """Open the table into the cache; False when it does not exist."""
        try:
            self._handles[table] = DeltaTable(
                self.table_path(table), storage_options=self.store.delta_options()
            )
        except TableNotFoundError:
            return False
        except Exception as exc:  # deltalake raises its own, OSError and pyarrow errors alike
            raise LakeError(f"cannot open table {table}: {exc}", table=table) from exc
        return True

    def _create(self, table: str) -> DeltaTable:
        path = self.table_path(table)
        options = self.store.delta_options()
        try:
            try:
                return DeltaTable.create(
                    path,
                    SCHEMAS[table],
                    partition_by=[PARTITION_COLUMN],
                    mode="ignore",
                    storage_options=options,
                )
            except CommitFailedError:
                # a writer on another machine created it at the same moment: losing that
                # race is success, the table is there (the winner's)
                return DeltaTable(path, storage_options=options)
        except Exception as exc:
            raise LakeError(f"cannot create table {table}: {exc}", table=table) from exc

    def compact_recent(self, since: dt.date, target_rows: int = RECENT_TARGET_ROWS) -> int:
        """Merge the small files of partitions from ``since`` on, in every table (the
        writer's own housekeeping: a file per table per segment adds up), into files of
        about ``target_rows`` rows.  Returns the number of files removed."""
        removed = 0
        filters = [(PARTITION_COLUMN, ">=", since.isoformat())]
        with compaction_lock(self.store.lock_dir(), wait=False) as held:
            if not held:  # another compaction of this lake runs (lake/locks.py): next round
                log.info("lake: another compaction of this lake is running; this one waits a round")
                return 0
            _hook("compact")
            self.audit.reconcile()
            reason = "the writer's compaction of recent partitions (lake.compact_interval)"
            repair_rejected(self.store, self.audit, actor=SYSTEM, reason=reason, since=since.isoformat())
            for table in TABLES:
                self._handles.pop(table, None)  # plan on the table as it is now, not as cached
                dt_ = self._handle(table)
                try:
                    target = self._target_bytes(dt_, since, target_rows)
                    if target is None:
                        continue  # nothing recent
                    before = dt_.version()
                    metrics = dt_.optimize.compact(
                        partition_filters=filters, target_size=target, writer_properties=self._props[table]
                    )
                except Exception as exc:
                    self._handles.pop(table, None)
                    raise LakeError(f"compaction of {table} failed: {exc}", table=table) from exc
                removed += int(metrics.get("numFilesRemoved", 0))
                if table != AUDIT and metrics.get("numFilesRemoved"):  # the chain covers the audit rows
                    self._handles.pop(table, None)
                    after = self._handle(table).version()
                    reason = "the writer's compaction of recent partitions (lake.compact_interval)"
                    self.audit.record_compaction(table, before, after, SYSTEM, reason)
        return removed

    @staticmethod
    def _target_bytes(table: DeltaTable, since: dt.date, target_rows: int) -> int | None:
        """The byte target for ``target_rows`` from the recent files' own bytes per row
        (None when there is no recent file)."""
        adds = pa.table(table.get_add_actions(flatten=True))
        names = adds.column_names
        if f"partition.{PARTITION_COLUMN}" not in names or "num_records" not in names:
            return MAX_TARGET_BYTES
        day = since.isoformat()
        recent = 0
        sizes: list[int] = []
        rows: list[int] = []
        for partition, size, count in zip(
            adds.column(f"partition.{PARTITION_COLUMN}").to_pylist(),
            adds.column("size_bytes").to_pylist(),
            adds.column("num_records").to_pylist(),
            strict=True,
        ):
            if partition is not None and str(partition) >= day:
                recent += 1
                if count:  # files without statistics (not ours) do not count
                    sizes.append(int(size))
                    rows.append(int(count))
        if not recent:
            return None
        return recent_target_bytes(sizes, rows, target_rows)

    def committed_segment(self) -> int:
        """The newest segment number any table has recorded (-1 for none)."""
        newest = -1
        for table in TABLES:
            version = self._handle(table).transaction_version(app_id(table, self.writer_id))
            if version is not None:
                newest = max(newest, version)
        return newest

    def commit_segment(
        self,
        number: int,
        path: Path,
        parts: Sequence[TableColumns] | None = None,
        blocks: Sequence[bytes | memoryview] | None = None,
    ) -> CommitResult:
        """Commit segment ``number`` (file ``path``) to every table that lacks it, then delete it.

        ``parts`` are the columns of the segment's records when the caller still
        holds them in memory (the usual case), ``blocks`` their sample blocks (lake.blocks);
        otherwise both are read back from the file."""
        _hook(f"commit:{number}")
        torn = 0
        if parts is None:
            try:
                read = read_segment(path)
            except FileNotFoundError:
                # A segment's file is deleted only after every table holding its rows has
                # committed it (below), so a missing one was committed by an earlier attempt
                # that died before it could report (a killed worker process).
                log.warning("lake: WAL segment %s is already retired (committed before)", path.name)
                return CommitResult(0, 0, 0, already_retired=True)
            except OSError as exc:
                raise LakeError(f"cannot read WAL segment {path.name}: {exc}") from exc
            parts, torn, blocks = read.parts, read.torn_bytes, read.blocks
        written = commits = skipped = 0
        with_rows: list[str] = []
        by_table: list[tuple[str, int]] = []
        for index, table in enumerate(TABLES):
            table_parts = [part[index] for part in parts if part[index]]
            table_blocks = (blocks or ()) if table == MEASUREMENTS else ()
            rows = sum(map(column_count, table_parts)) + block_rows(table_blocks)
            if not rows or table == AUDIT:
                continue
            _hook(f"before:{table}")
            with_rows.append(table)
            if self._commit_table(table, table_parts, number, table_blocks):
                written += rows
                commits += 1
                by_table.append((table, rows))
            else:
                skipped += rows
            _hook(f"after:{table}")
        # The audit trail last: the engine's own events, and the entries of the commits above.
        events = sum(column_count(part[_AUDIT_INDEX]) for part in parts if part[_AUDIT_INDEX])
        _hook(f"before:{AUDIT}")
        if self.audit.commit_segment(number, parts, with_rows):
            written += events
            commits += 1
            if events:
                by_table.append((AUDIT, events))
        else:
            skipped += events
        _hook(f"after:{AUDIT}")
        _hook("before_delete")
        try:
            if not self.store.remote:  # an object store has the commit once its PUT returned
                sync_filesystem(self.store.local)
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise LakeError(f"cannot retire WAL segment {path.name}: {exc}") from exc
        _hook("after_delete")
        return CommitResult(written, commits, torn, skipped, tables=tuple(by_table))

    def _commit_table(
        self,
        table: str,
        parts: Sequence[Sequence[Sequence[object]]],
        number: int,
        blocks: Sequence[bytes | memoryview] = (),
    ) -> bool:
        txn_id = app_id(table, self.writer_id)
        data: list[pa.Table] = []  # built once, kept across conflict retries

        def attempt() -> bool:
            dt = self._handle(table)
            done = dt.transaction_version(txn_id)
            if done is not None and done >= number:
                return False  # committed before a crash or a failed retirement
            if not data:
                built = [block_measurements(blocks, number, self.writer_id)] if blocks else []
                if parts or not blocks:
                    objects = arrow_table_of_parts(table, parts, number, writer=self.writer_id)
                    # a block table's text columns are dictionaries: the objects' rows join them
                    built.insert(0, dictionary_columns(objects) if blocks else objects)
                data.append(built[0] if len(built) == 1 else pa.concat_tables(built))
            write_rows(table, dt, data[0], Transaction(txn_id, number), self._props[table])
            return True

        try:  # another writer of the lake may win a commit race: retried (lake/sharing.py)
            return commit_with_retries(attempt, lambda: self._handles.pop(table, None), what=table)
        except Exception as exc:  # any failure: the segment stays in the WAL and is retried
            self._handles.pop(table, None)
            raise LakeError(f"commit of WAL segment {number} to {table} failed: {exc}", table=table) from exc
