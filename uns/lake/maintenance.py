"""Lake maintenance: what is in the lake, merging small files, removing old ones.

The writer commits a small file per table every few seconds; :meth:`Lake.compact`
merges them (optionally Z-ordering by path and time so queries for one path
or time range read few row groups).  Compaction only rewrites files: readers
keep their snapshot and the writer keeps appending meanwhile.  The replaced
files stay on disk for time travel and for readers still on an old snapshot
until :meth:`Lake.vacuum` removes those older than the retention.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from uns.errors import LakeError
from uns.lake.audit import AUDIT, AuditRecorder
from uns.lake.audit_entries import Entry, entry, os_user
from uns.lake.locks import compaction_lock
from uns.lake.manual import cli_recorder
from uns.lake.query import connect
from uns.lake.repair import RepairResult, repair_rejected
from uns.lake.sink import LakeConfig, LakeSink
from uns.lake.storage import LakeStore, as_store
from uns.lake.tables import PARTITION_COLUMN, TABLES, TIME_COLUMN
from uns.lake.writer import writer_properties

__all__ = ["DEFAULT_RETENTION_HOURS", "ZORDER_COLUMNS", "Lake", "TableInfo", "compaction_summary"]

#: Delta's own default: files replaced less than a week ago are kept.
DEFAULT_RETENTION_HOURS: Final = 168
#: Z-order keys per table: the columns queries select on besides the date partition.
ZORDER_COLUMNS: Final = {
    "measurements": ("path", "ts"),
    "context": ("path", "ts"),
    "metric_catalog": ("path", "birth_ts"),
    "sessions": ("edge_node_id", "ts"),
    "rejected": ("topic", "received_at"),
    "audit": ("writer_id", "seq"),
    "materials": ("path", "ts"),
    "results": ("path", "ts"),
    "comments": ("path", "ts"),
}


@dataclass(frozen=True, slots=True)
class TableInfo:
    """One table's state (from the Delta log; no data file is read)."""

    table: str
    exists: bool
    version: int | None = None
    rows: int = 0
    files: int = 0
    bytes: int = 0
    partitions: int = 0
    min_ts: dt.datetime | None = None
    max_ts: dt.datetime | None = None
    last_commit: dt.datetime | None = None
    last_operation: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


class Lake:
    """A lake (a directory or an object-store URL, see :mod:`lake.storage`): open a writer
    or a query connection, inspect and maintain it."""

    def __init__(self, path: str | Path | LakeStore, *, audit: Any = None) -> None:
        self.store = as_store(path)
        #: the configuration's ``[audit]`` section: where the chain of what is run by hand is anchored
        self.audit_settings = audit
        #: the lake's directory (a local lake; for a remote one its URL as a path: use ``store``)
        self.root = Path(self.store.url)

    def sink(self, config: LakeConfig | None = None) -> LakeSink:
        """The engine's writer for this lake (use as ``async with``)."""
        return LakeSink(self.store, config)

    def connect(self) -> duckdb.DuckDBPyConnection:
        return connect(self.store)

    def _version(self, table: str, default: int) -> int:
        """The table's newest version, read again (``default`` when it is gone)."""
        delta = self._table(table)
        return default if delta is None else delta.version()

    def _table(self, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(self.store.table_uri(table), storage_options=self.store.delta_options())
        except TableNotFoundError:
            return None
        except Exception as exc:
            raise LakeError(f"cannot open table {table}: {exc}", table=table) from exc

    def _require(self) -> None:
        """A lake that is not there is an error, not an empty lake (a typo in --lake)."""
        if not self.store.exists():
            raise LakeError(f"no lake at {self.store}")

    def info(self) -> dict[str, TableInfo]:
        """Per table: version, rows, files, bytes, partitions, time range, last commit."""
        self._require()
        out: dict[str, TableInfo] = {}
        for table in TABLES:
            delta = self._table(table)
            out[table] = TableInfo(table, exists=False) if delta is None else _table_info(table, delta)
        return out

    def compact(
        self, *, z_order: bool = False, since: dt.date | None = None, reason: str = ""
    ) -> dict[str, dict[str, Any]]:
        """Merge small files of every table (partitions from ``since`` on, default all).

        ``z_order`` also sorts by :data:`ZORDER_COLUMNS` (rewrites whole partitions:
        slower, best once a day is complete).  Returns Delta's metrics per table, with
        ``seconds``, how long that table took (:func:`compaction_summary` reads them).  The
        audit trail gets a ``maintenance`` entry (the OS user, ``reason``) and a
        ``compaction`` entry per table rewritten, under the writer id ``uns-cli``."""
        self._require()
        since_day = since.isoformat() if since else None
        filters = [(PARTITION_COLUMN, ">=", since_day)] if since_day else None
        result: dict[str, dict[str, Any]] = {}
        audit, user = self._audit(), os_user()
        what = {"command": "compact", "z_order": z_order, "since": since.isoformat() if since else None}
        entries = [self._maintenance_entry(what, user, reason)]
        # one compaction of the lake at a time (lake/locks.py): waits for a writer's own
        with compaction_lock(self.store.lock_dir(), wait=True):
            audit.reconcile()
            # rejected rows an older version stored whole are rewritten bounded first (lake.repair)
            repair_rejected(
                self.store, audit, actor=user, reason=reason or "uns lake compact", since=since_day
            )
            try:
                for table in TABLES:
                    delta = self._table(table)  # opened under the lock: plans on the table as it is
                    if delta is None:
                        continue
                    before = delta.version()
                    started = time.monotonic()
                    try:
                        opts: dict[str, Any] = {
                            "partition_filters": filters,
                            "writer_properties": writer_properties(table),
                        }
                        if z_order:
                            metrics = delta.optimize.z_order(list(ZORDER_COLUMNS[table]), **opts)
                        else:
                            metrics = delta.optimize.compact(**opts)
                    except Exception as exc:
                        raise LakeError(f"compaction of {table} failed: {exc}", table=table) from exc
                    result[table] = {**metrics, "seconds": time.monotonic() - started}
                    if table != AUDIT and metrics.get("numFilesRemoved"):
                        after = self._version(table, before)
                        entries += audit.compaction_entries(
                            table, before, after, user, reason or "uns lake compact"
                        )
            finally:
                audit.record(entries)
        return result

    def repair(self, *, reason: str = "") -> RepairResult:
        """Rewrite bounded the rejected rows that an older version stored whole (their
        payloads cut to the first KiB, size and SHA-256 kept; :mod:`lake.repair`).  The audit
        trail gets a ``maintenance`` entry (the OS user, ``reason``) and a ``repair`` entry
        per partition rewritten.  Waits for a compaction that runs."""
        self._require()
        audit, user = self._audit(), os_user()
        with compaction_lock(self.store.lock_dir(), wait=True):
            result = repair_rejected(self.store, audit, actor=user, reason=reason or "uns lake repair")
            what = {"command": "repair", "partitions": sorted(result.partitions)}
            audit.record([self._maintenance_entry(what, user, reason)])
        return result

    def _audit(self) -> AuditRecorder:
        """The chain of what is run by hand (writer id ``uns-cli``)."""
        return cli_recorder(self.store, audit=self.audit_settings)

    @staticmethod
    def _maintenance_entry(what: dict[str, Any], user: str, reason: str) -> Entry:
        return entry(time.time_ns() // 1000, "maintenance", "lake", what, actor=user, reason=reason)

    def vacuum(
        self,
        retention_hours: float = DEFAULT_RETENTION_HOURS,
        *,
        enforce_retention: bool = True,
        dry_run: bool = False,
    ) -> dict[str, list[str]]:
        """Delete files no longer in the current version and replaced more than
        ``retention_hours`` ago; returns the files (to be) deleted per table.

        With a retention of an hour or more this also deletes data files the Delta
        log never referenced and that are older than the retention: the half-written
        files of a commit or compaction that a kill interrupted (or that shutdown
        abandoned).  Below an hour those are left alone, since a file a writer is
        writing right now is not in the log yet either.

        A reader whose snapshot is older than the retention can fail once its
        files are gone, so a retention below the tables' configured minimum (7
        days unless changed) is refused unless ``enforce_retention=False``.  A fraction of
        an hour is rounded up to the next whole hour (deltalake counts whole hours), so
        nothing younger than asked is deleted."""
        if retention_hours < 0:
            raise LakeError("retention_hours must be >= 0")
        self._require()
        result: dict[str, list[str]] = {}
        try:
            self._vacuum(result, retention_hours, enforce_retention=enforce_retention, dry_run=dry_run)
        finally:
            if not dry_run:  # what was deleted, by whom (the audit trail; a dry run changes nothing)
                user = os_user()
                what = {"command": "vacuum", "retention_hours": retention_hours, "enforce": enforce_retention}
                entries = [self._maintenance_entry(what, user, "")]
                now = time.time_ns() // 1000
                for table, files in result.items():
                    if files:
                        body = {"table": table, "deleted": sorted(files)}
                        entries.append(
                            entry(now, "vacuum", table, body, actor=user, reason="uns lake vacuum")
                        )
                self._audit().record(entries)
        return result

    def _vacuum(
        self, result: dict[str, list[str]], retention_hours: float, *, enforce_retention: bool, dry_run: bool
    ) -> None:
        for table in TABLES:
            delta = self._table(table)
            if delta is None:
                continue
            try:
                result[table] = delta.vacuum(
                    # deltalake counts whole hours: round up, so a file younger than asked stays
                    retention_hours=math.ceil(retention_hours),
                    dry_run=dry_run,
                    enforce_retention_duration=enforce_retention,
                    full=retention_hours >= 1,
                )
                if not dry_run:
                    delta.cleanup_metadata()  # log files beyond the log retention (30 days)
            except Exception as exc:
                raise LakeError(f"vacuum of {table} failed: {exc}", table=table) from exc


def _utc(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _table_info(table: str, delta: DeltaTable) -> TableInfo:
    adds = pa.table(delta.get_add_actions(flatten=True))
    files = adds.num_rows
    min_ts = max_ts = None
    if files:
        col = TIME_COLUMN[table]
        if f"min.{col}" in adds.column_names:
            min_ts = pc.min(adds[f"min.{col}"]).as_py()
            max_ts = pc.max(adds[f"max.{col}"]).as_py()
    history = delta.history(1)
    last = history[0] if history else {}
    return TableInfo(
        table=table,
        exists=True,
        version=delta.version(),
        rows=int(pc.sum(adds["num_records"]).as_py() or 0) if files else 0,
        files=files,
        bytes=int(pc.sum(adds["size_bytes"]).as_py() or 0) if files else 0,
        partitions=len(pc.unique(adds[f"partition.{PARTITION_COLUMN}"])) if files else 0,
        min_ts=min_ts,
        max_ts=max_ts,
        last_commit=_utc(last.get("timestamp")),
        last_operation=last.get("operation"),
    )


def compaction_summary(
    metrics: dict[str, dict[str, Any]], info: dict[str, TableInfo]
) -> list[dict[str, Any]]:
    """One row per table :meth:`Lake.compact` looked at: files removed and added, their
    sizes, the table's live rows and files afterwards (``info``, read after the compaction),
    and the seconds it took.  The replaced files stay on disk until :meth:`Lake.vacuum`."""
    rows = []
    for table, m in metrics.items():
        after = info.get(table)
        rows.append(
            {
                "table": table,
                "files_removed": int(m.get("numFilesRemoved", 0)),
                "files_added": int(m.get("numFilesAdded", 0)),
                "bytes_removed": _total_size(m.get("filesRemoved")),
                "bytes_added": _total_size(m.get("filesAdded")),
                "rows": after.rows if after else 0,
                "files": after.files if after else 0,
                "seconds": round(float(m.get("seconds", 0.0)), 3),
            }
        )
    return rows


def _total_size(stats: Any) -> int:
    """``totalSize`` of deltalake's file statistics (a JSON text, or already a dict)."""
    if isinstance(stats, str):
        try:
            stats = json.loads(stats)
        except ValueError:
            return 0
    return int(stats.get("totalSize", 0)) if isinstance(stats, dict) else 0
