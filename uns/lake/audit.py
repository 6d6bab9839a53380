"""The audit trail's writer: one hash chain per writer id in the ``audit`` Delta table.

Where entries come from (docs/gxp.md has the whole story):

- the **commit worker**, for every WAL segment it commits (:meth:`AuditRecorder.commit_segment`,
  called by :meth:`lake.writer.DeltaWriter.commit_segment` after the data tables and before
  the segment is deleted): the engine's own events that travelled in the segment
  (``engine_start``/``engine_stop``, and ``config_changed`` when the configuration or a
  file it names differs from the writer's previous start), one ``data_commit`` per table
  (the files the table's commit added, with SHA-256 and rows), one ``context_change``
  per context row (with the value it replaced) and ``catalog_new``/``schema_drift`` per
  BIRTH whose metric definitions differ from the device's previous one.  That audit commit
  carries the app transaction ``(uns-wal-[<writer>-]audit, segment)``, so a crash at any
  point leaves the segment's entries in the chain exactly once: no gap, no duplicate;
- the **writer's own compaction** and **``uns lake compact``/``vacuum``** (``compaction``,
  ``vacuum``, ``maintenance``), and **reports** (:func:`uns.lake.manual.record_report`).  Commands run by
  hand chain under the writer id :data:`CLI_WRITER`.

Appending is one step under the writer's audit lock (:func:`lake.locks.audit_lock`):
read the chain's tail (seq, hash), link the new rows (:func:`lake.hashing.link`),
commit.  Data files are hashed in the process that wrote them, right after its
Delta commit and before the WAL segment is deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from uns.errors import LakeError, UnsError
from uns.lake.audit_entries import (
    SYSTEM,
    Definitions,
    Device,
    Entry,
    births,
    catalog_entries,
    config_changes,
    context_entries,
    data_commit_entry,
    entry,
)
from uns.lake.audit_state import birth_rows, catalog_rows, completed_births, latest_births, latest_context
from uns.lake.deltalog import CommitActions, commit_actions, find_txn_commit, local_path
from uns.lake.hashing import GENESIS, ChainRow, file_sha256, link
from uns.lake.locks import audit_lock
from uns.lake.schemas import SCHEMAS
from uns.lake.sharing import app_id
from uns.lake.storage import LakeStore
from uns.lake.tables import PARTITION_COLUMN, TABLES, WAL_COLUMNS, TableColumns
from uns.lake.to_arrow import arrow_table_of_parts

__all__ = [
    "AUDIT",
    "CLI_WRITER",
    "DATA_TABLES",
    "AuditRecorder",
    "audit_app_id",
    "row_checksum",
    "table_checksum",
]

log = logging.getLogger(__name__)

AUDIT: Final = "audit"
#: the writer id under which commands run by hand (and reports) chain their entries
CLI_WRITER: Final = "uns-cli"
#: the tables whose files the audit trail accounts for (the audit table is its own chain)
DATA_TABLES: Final = tuple(t for t in TABLES if t != AUDIT)
#: how many of a table's newest commits :meth:`AuditRecorder.reconcile` looks at first
RECONCILE_LOOKBACK: Final = 1000
_RECOVERED: Final = "recorded later: the compaction was interrupted between its commit and its audit entry"
_U64: Final = 1 << 64


def audit_app_id(writer_id: str) -> str:
    """The app transaction id of a writer's audit commits (as :func:`lake.writer.app_id`)."""
    return f"uns-wal-{writer_id}-{AUDIT}" if writer_id else f"uns-wal-{AUDIT}"


def _now_us() -> int:
    return time.time_ns() // 1000


def _events(parts: Sequence[TableColumns]) -> list[dict[str, Any]]:
    """The engine's own events in a segment's records (lake.tables.AuditEvent, as columns)."""
    index = TABLES.index(AUDIT)
    out: list[dict[str, Any]] = []
    for part in parts:
        if part[index]:
            for values in zip(*part[index], strict=True):
                event = dict(zip(WAL_COLUMNS[AUDIT], values, strict=True))
                event["detail"] = json.loads(event["detail"] or "{}")
                out.append(event)
    return out


def writer_rows(dt_: DeltaTable, writer_id: str, columns: list[str], *, kind: str | None = None) -> pa.Table:
    """The rows of one writer's chain in the newest two ``date`` partitions that hold any
    (its tail; entries carry the time they were recorded, so the tail is there), or of
    every partition when ``kind`` is given (the writer's previous entry of that kind)."""
    adds = pa.table(dt_.get_add_actions(flatten=True))
    if adds.num_rows == 0:
        return SCHEMAS[AUDIT].empty_table().select(columns)
    base = dt_.table_uri.removeprefix("file://").rstrip("/")
    by_date: dict[str, list[str]] = {}
    for path, day in zip(
        adds.column("path").to_pylist(), adds.column(f"partition.{PARTITION_COLUMN}").to_pylist(), strict=True
    ):
        by_date.setdefault(str(day), []).append(f"{base}/{path}")
    wanted = pc.field("writer_id") == writer_id
    if kind is not None:
        wanted = wanted & (pc.field("kind") == kind)
    found: list[pa.Table] = []
    for day in sorted(by_date, reverse=True):
        part = ds.dataset(by_date[day], format="parquet").to_table(columns=columns, filter=wanted)
        if part.num_rows:
            found.append(part)
            if len(found) == 2 or kind is not None:
                break
    return pa.concat_tables(found) if found else SCHEMAS[AUDIT].empty_table().select(columns)


def row_checksum(files: Sequence[Path], columns: Sequence[str]) -> tuple[int | None, str | None]:
    """(rows, order-independent checksum) of the rows of Parquet ``files``: the sum modulo
    2^64 of DuckDB's 64-bit hash of each row's ``columns``, in hex (equal row multisets
    give equal checksums whatever the files and row order)."""
    if not files:
        return 0, f"{0:016x}"
    return _checksum(columns, "read_parquet(?, union_by_name = 1)", [[str(f) for f in files]], None)


def table_checksum(data: pa.Table, columns: Sequence[str]) -> tuple[int, str]:
    """:func:`row_checksum` of the rows of an Arrow table."""
    rows, total = _checksum(columns, "_rows", [], data)
    return int(rows or 0), str(total)


def _checksum(
    columns: Sequence[str], source: str, params: list[Any], data: pa.Table | None
) -> tuple[int | None, str | None]:
    import duckdb  # noqa: PLC0415 - only a compaction needs it

    con = duckdb.connect()
    try:
        if data is not None:
            con.register("_rows", data)
        names = ", ".join(f'"{c}"' for c in columns)
        sql = f"SELECT count(*), coalesce(sum(hash({names})::HUGEINT), 0) FROM {source}"  # noqa: S608
        rows, total = con.execute(sql, params).fetchone() or (0, 0)
    finally:
        con.close()
    return int(rows), f"{int(total) % _U64:016x}"


def _file_columns(files: Sequence[Path]) -> set[str]:
    import pyarrow.parquet as pq  # noqa: PLC0415

    names: set[str] = set()
    for f in files:
        with contextlib.suppress(OSError):  # a file gone: row_checksum says so
            names.update(pq.read_schema(f).names)
    return names


class AuditRecorder:
    """Appends to writer ``writer_id``'s chain in the lake at ``root``; ``table(name)`` opens
    a table of the lake (:meth:`lake.writer.DeltaWriter._handle`)."""

    def __init__(self, store: LakeStore, writer_id: str, table: Callable[[str], DeltaTable]) -> None:
        self.store = store
        self.root = Path(store.url)
        self.writer_id = writer_id
        #: True when other processes append to this chain too (the chain of what is run by
        #: hand): its head is then read afresh, under the chain's lock, for every append
        self.shared = False
        #: the time of new entries, epoch microseconds (tests inject a clock set back)
        self.clock: Callable[[], int] = _now_us
        self._table = table
        self._tail: tuple[int, str] | None = None
        self._context: dict[tuple[str, str], str | None] | None = None
        self._births: dict[Device, Definitions] | None = None
        self._last_start: Mapping[str, Any] | None = None
        self._last_start_known = False
        self._reconciled: dict[str, int] = {}  # table -> newest version looked at by reconcile()
        #: True for a lake on object storage: the chain reads the Delta log and hashes the data
        #: files on local disk, so it is not kept there yet (docs/scale-out.md)
        self.off = False

    def forget(self) -> None:
        """Drop what is cached (after a failure it is not to be trusted)."""
        self._tail = None
        self._context = None
        self._births = None
        self._last_start_known = False

    # ---------------------------------------------------------------- the chain
    def tail(self) -> tuple[int, str]:
        """The chain's last (seq, hash); (0, GENESIS) when it has none."""
        if self._tail is None:
            rows = writer_rows(self._table(AUDIT), self.writer_id, ["seq", "hash"])
            if rows.num_rows == 0:
                self._tail = (0, GENESIS)
            else:
                last = pc.index(rows["seq"], pc.max(rows["seq"])).as_py()
                self._tail = (int(rows["seq"][last].as_py()), str(rows["hash"][last].as_py()))
        return self._tail

    def record(self, entries: Sequence[Entry], txn: Transaction | None = None) -> int:
        """Append ``entries`` to the chain in one Delta commit (with ``txn`` if given);
        returns the entries written (0 when ``txn`` was committed already)."""
        if not entries or self.off:
            return 0
        return len(self._append(lambda _head, _now: entries, txn))

    def record_with(self, build: Callable[[tuple[int, str], int], Sequence[Entry]]) -> list[ChainRow]:
        """Append the entries ``build(head, now_us)`` makes from the chain's head (seq, hash)
        as it is under the chain's lock, and the time read there: an entry that must name
        its own place in the chain (a signature, :mod:`uns.audit.signatures`).  Returns the
        rows written."""
        if self.off:
            raise LakeError("the audit trail is off for this lake", table=AUDIT)
        return self._append(build, None)

    def _append(
        self, build: Callable[[tuple[int, str], int], Sequence[Entry]], txn: Transaction | None
    ) -> list[ChainRow]:
        try:
            with audit_lock(self.store.lock_dir(), self.writer_id):
                table = self._table(AUDIT)
                if self.shared:  # another process may have appended to this chain since
                    table.update_incremental()
                    self._tail = None
                if txn is not None:
                    done = table.transaction_version(txn.app_id)
                    if done is not None and done >= txn.version:
                        return []
                head = self.tail()
                rows = link(self.writer_id, head, build(head, self.clock()))
                if not rows:
                    return []
                data = pa.table(
                    {
                        "writer_id": [r.writer_id for r in rows],
                        "seq": [r.seq for r in rows],
                        "ts": pa.array([r.ts for r in rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                        "kind": [r.kind for r in rows],
                        "actor": [r.actor for r in rows],
                        "reason": [r.reason for r in rows],
                        "subject": [r.subject for r in rows],
                        "detail": [r.detail for r in rows],
                        "prev_hash": [r.prev_hash for r in rows],
                        "hash": [r.hash for r in rows],
                    }
                )
                data = data.append_column(PARTITION_COLUMN, data["ts"].cast(pa.date32()))
                write_deltalake(
                    table,
                    data.cast(SCHEMAS[AUDIT]),
                    mode="append",
                    commit_properties=CommitProperties(app_transactions=[txn] if txn else None),
                )
        except UnsError:  # a LakeError, or the refusal of a builder (record_with)
            self.forget()
            raise
        except Exception as exc:
            self.forget()
            raise LakeError(f"cannot append to the audit trail: {exc}", table=AUDIT) from exc
        self._tail = (rows[-1].seq, rows[-1].hash)
        return rows

    # ---------------------------------------------------------------- WAL segments
    def commit_segment(self, number: int, parts: Sequence[TableColumns], tables: Sequence[str]) -> int:
        """The entries of WAL segment ``number`` (``tables``: the data tables it has rows
        for, already committed), appended exactly once; returns the entries written."""
        if self.off:
            return 0
        txn = Transaction(audit_app_id(self.writer_id), number)
        done = self._table(AUDIT).transaction_version(txn.app_id)
        if done is not None and done >= number:
            return 0
        now = self.clock()
        entries: list[Entry] = []
        for event in _events(parts):
            entries.append(entry(now, event["kind"], event["subject"], event["detail"] | {"at": event["ts"]},
                                 actor=event["actor"], reason=event["reason"]))  # fmt: skip
            if event["kind"] == "engine_start":
                entries.extend(self._config_changed(now, event["detail"], event["reason"]))
        for table in tables:
            entries.append(self._data_commit(now, table, number))
        entries.extend(self._context_changes(now, number, parts))
        entries.extend(self._catalog_changes(now, parts))
        return self.record(entries, txn)

    def _data_commit(self, now: int, table: str, number: int) -> Entry:
        handle = self._table(table)
        found = find_txn_commit(self.root / table, app_id(table, self.writer_id), number, handle.version())
        if found is None:
            raise LakeError(
                f"audit: the commit of WAL segment {number} to {table} is not in its log", table=table
            )
        return data_commit_entry(now, table, number, found.version, self.hashed_files(table, found))

    def hashed_files(self, table: str, actions: CommitActions) -> list[dict[str, Any]]:
        files = []
        for add in actions.adds:
            try:
                digest = file_sha256(local_path(self.root / table, add.path))
            except OSError as exc:
                raise LakeError(f"audit: cannot hash {table}/{add.path}: {exc}", table=table) from exc
            files.append({"path": add.path, "sha256": digest, "bytes": add.size, "rows": add.rows})
        return files

    def _config_changed(self, now: int, detail: Mapping[str, Any], reason: str) -> list[Entry]:
        if not self._last_start_known:
            rows = writer_rows(self._table(AUDIT), self.writer_id, ["seq", "detail"], kind="engine_start")
            self._last_start = None
            if rows.num_rows:
                last = pc.index(rows["seq"], pc.max(rows["seq"])).as_py()
                self._last_start = json.loads(rows["detail"][last].as_py())
        previous, self._last_start, self._last_start_known = self._last_start, detail, True
        if previous is None:
            return []
        changes = config_changes(previous, detail)
        return [entry(now, "config_changed", "engine", changes, reason=reason)] if changes else []

    def _context_changes(self, now: int, number: int, parts: Sequence[TableColumns]) -> list[Entry]:
        index = TABLES.index("context")
        ctx_parts = [part[index] for part in parts if part[index]]
        if not ctx_parts:
            return []
        if self._context is None:  # the latest value per path and key before this segment
            self._context = latest_context(self._table("context"), number << 32)
        rows = arrow_table_of_parts("context", ctx_parts, number).to_pylist()
        return context_entries(rows, self._context, now)

    def _catalog_changes(self, now: int, parts: Sequence[TableColumns]) -> list[Entry]:
        index, sessions = TABLES.index("metric_catalog"), TABLES.index("sessions")
        rows = catalog_rows([part[index] for part in parts if part[index]])
        if not rows:
            return []
        table = self._table("metric_catalog")
        rows = completed_births(
            rows, [part[sessions] for part in parts if part[sessions]], lambda key: birth_rows(table, key)
        )
        grouped = births(rows)
        if not grouped:
            return []
        if self._births is None:  # each device's newest birth before this segment's
            self._births = latest_births(self._table("metric_catalog"), min(b[1] for b in grouped))
        return catalog_entries(grouped, self._births, now)

    # ---------------------------------------------------------------- compaction, vacuum
    def reconcile(self) -> int:
        """Record the compactions that a kill (or shutdown abandoning one) stopped between
        their Delta commit and their audit entry.  Call with the compaction lock held: then
        no compaction is running, and an OPTIMIZE commit without an entry was interrupted.
        Returns the entries written."""
        if self.off:
            return 0
        found: list[tuple[str, int]] = []
        for table in DATA_TABLES:
            newest = self._table(table).version()
            floor = self._reconciled.get(table, newest - RECONCILE_LOOKBACK)
            for version in range(newest, max(floor, -1), -1):
                actions = commit_actions(self.root / table, version)
                if actions is None:
                    break
                if actions.operation == "OPTIMIZE" and actions.removes:
                    found.append((table, version))
            self._reconciled[table] = newest
        if not found:
            return 0
        audited = self._audited_compactions()
        entries: list[Entry] = []
        for table, version in found:
            if (table, version) not in audited:
                entries += self.compaction_entries(table, version - 1, version, SYSTEM, _RECOVERED)
        return self.record(entries)

    def _audited_compactions(self) -> set[tuple[str, int]]:
        """(table, version) of every compaction the trail has recorded (any writer)."""
        table = self._table(AUDIT)
        if not table.file_uris():
            return set()
        rows = ds.dataset(table.file_uris(), format="parquet").to_table(
            columns=["detail"], filter=pc.field("kind") == "compaction"
        )
        out: set[tuple[str, int]] = set()
        for text in rows["detail"].to_pylist():
            detail = json.loads(text)
            out.add((str(detail["table"]), int(detail["version"])))
        return out

    def record_compaction(self, table: str, before: int, after: int, actor: str, reason: str) -> int:
        """Record the compaction of ``table`` from version ``before`` to ``after``."""
        written = self.record(self.compaction_entries(table, before, after, actor, reason))
        self._reconciled[table] = max(self._reconciled.get(table, after), after)
        return written

    def compaction_entries(self, table: str, before: int, after: int, actor: str, reason: str) -> list[Entry]:
        """A ``compaction`` entry per commit of ``table`` from version ``before`` (exclusive)
        to ``after`` that replaced files: removed and added files, the added ones' SHA-256,
        and the rows' count and order-independent checksum before and after."""
        out: list[Entry] = []
        table_dir = self.root / table
        for version in range(before + 1, after + 1):
            actions = commit_actions(table_dir, version)
            if actions is None or not actions.removes:
                continue
            removed = [local_path(table_dir, p) for p in actions.removes]
            added = [local_path(table_dir, a.path) for a in actions.adds]
            columns = [f.name for f in SCHEMAS[table] if f.name != PARTITION_COLUMN]
            old_cols, new_cols = _file_columns(removed), _file_columns(added)
            both = (old_cols & new_cols if old_cols else new_cols) if added else set(columns)
            common = [c for c in columns if c in both]
            try:
                rows_before, sum_before = row_checksum(removed, common)
            except (
                Exception
            ) as exc:  # the replaced files are gone (vacuumed): no proof, and the entry says so
                log.warning("audit: cannot checksum the rows %s version %d replaced: %s", table, version, exc)
                rows_before, sum_before = None, None
            rows_after, sum_after = row_checksum(added, common)
            detail = {
                "table": table,
                "version": version,
                "operation": actions.operation,
                "removed": actions.removes,
                "added": self.hashed_files(table, actions),
                "rows_before": rows_before,
                "rows_after": rows_after,
                "checksum_before": sum_before,
                "checksum_after": sum_after,
                "checksum_columns": common,
            }
            out.append(entry(self.clock(), "compaction", table, detail, actor=actor, reason=reason))
        return out
