"""The audit trail's writer: one hash chain per writer id in the ``audit`` Delta table.

Where entries come from (docs/gxp.md has the whole story):

- the **commit worker**, for every WAL segment it commits (:meth:`AuditRecorder.commit_segment`,
  called by :meth:`lake.writer.DeltaWriter.commit_segment` after the data tables and before
  the segment is deleted): the engine's own events that travelled in the segment
  (``engine_start``/``engine_stop``, and ``config_changed`` when the configuration or a
  file it names differs from the writer's previous start), one ``data_commit`` per table
  (the files the table's commit added, with SHA-256 and rows), one ``context_change``
  per context row (with the value it replaced), one ``record`` per batch record, and
  ``catalog_new``/``schema_drift`` per BIRTH whose metric definitions differ from the
  device's previous one.  That audit commit
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

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from uns.errors import LakeError, UnsError
from uns.lake.anchors import Anchorer, AnchorSettings
from uns.lake.audit_context import ContextHistory, context_entries
from uns.lake.audit_entries import (
    SYSTEM,
    Definitions,
    Device,
    Entry,
    births,
    catalog_entries,
    config_changes,
    data_commit_entry,
    entry,
    record_entries,
)
from uns.lake.audit_files import (
    audited_compactions,
    file_columns,
    hashed_adds,
    row_checksum,
    table_checksum,
    writer_rows,
)
from uns.lake.audit_state import birth_rows, catalog_rows, completed_births, context_history, latest_births
from uns.lake.deltalog import CommitActions, commit_actions, find_txn_commit
from uns.lake.hashing import GENESIS, ChainRow, link
from uns.lake.locks import audit_lock
from uns.lake.schemas import SCHEMAS
from uns.lake.sharing import app_id
from uns.lake.storage import LakeStore
from uns.lake.tables import PARTITION_COLUMN, RECORD_TABLES, TABLES, WAL_COLUMNS, TableColumns
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
        #: the chain's anchor outside the lake (None: audit.anchor is not set), and whether
        #: every append is anchored at once (a short-lived command) or when due (the engine)
        self.anchor: Anchorer | None = None
        self.eager = False
        self._table = table
        self._tail: tuple[int, str] | None = None
        self._context: ContextHistory | None = None
        self._births: dict[Device, Definitions] | None = None
        self._last_start: Mapping[str, Any] | None = None
        self._last_start_known = False
        self._reconciled: dict[str, int] = {}  # table -> newest version looked at by reconcile()

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
            rows = writer_rows(self.store.files(AUDIT), self._table(AUDIT), self.writer_id, ["seq", "hash"])
            if rows.num_rows == 0:
                self._tail = (0, GENESIS)
            else:
                last = pc.index(rows["seq"], pc.max(rows["seq"])).as_py()
                self._tail = (int(rows["seq"][last].as_py()), str(rows["hash"][last].as_py()))
        return self._tail

    def record(self, entries: Sequence[Entry], txn: Transaction | None = None) -> int:
        """Append ``entries`` to the chain in one Delta commit (with ``txn`` if given);
        returns the entries written (0 when ``txn`` was committed already)."""
        if not entries:
            return 0
        return len(self._append(lambda _head, _now: entries, txn))

    def record_with(self, build: Callable[[tuple[int, str], int], Sequence[Entry]]) -> list[ChainRow]:
        """Append the entries ``build(head, now_us)`` makes from the chain's head (seq, hash)
        as it is under the chain's lock, and the time read there: an entry that must name
        its own place in the chain (a signature, :mod:`uns.audit.signatures`).  Returns the
        rows written."""
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
        if self.anchor is not None:
            self.anchor.note(*self._tail)
            if self.eager:
                self._anchor_or_fail(rows[-1])
        return rows

    def _anchor_or_fail(self, row: ChainRow) -> None:
        assert self.anchor is not None
        try:
            self.anchor.write()
        except LakeError as exc:
            raise LakeError(
                f"recorded as audit {self.writer_id or '(default)'} #{row.seq}, but not anchored: {exc}",
                table=AUDIT,
            ) from exc

    def use_anchor(self, settings: AnchorSettings | None, *, eager: bool = False) -> None:
        """Anchor this chain's head per ``settings`` (audit.anchor): at once after every
        append (``eager``: a command), or when :meth:`anchor_due` finds it due."""
        if settings is None:
            return
        clock = lambda: self.clock()  # noqa: E731, PLW0108 - the clock may be replaced later (tests)
        self.anchor = Anchorer(settings, self.writer_id, self.store.url, clock)
        self.eager = eager

    def anchor_due(self, *, force: bool = False) -> bool:
        """Anchor the head if the interval has passed (or ``force``: at a stop); a failure is
        logged, and the head waits for the next try (verify names the late anchor)."""
        if self.anchor is None or not (force or self.anchor.due()):
            return False
        try:
            if self._tail is None:
                self.anchor.note(*self.tail())
            return self.anchor.write()
        except LakeError as exc:
            self.anchor.failures += 1
            log.warning("audit: cannot anchor the chain head: %s", exc)
            return False

    # ---------------------------------------------------------------- WAL segments
    def commit_segment(self, number: int, parts: Sequence[TableColumns], tables: Sequence[str]) -> int:
        """The entries of WAL segment ``number`` (``tables``: the data tables it has rows
        for, already committed), appended exactly once; returns the entries written."""
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
        entries.extend(self._records(now, number, parts))
        entries.extend(self._catalog_changes(now, parts))
        return self.record(entries, txn)

    def _data_commit(self, now: int, table: str, number: int) -> Entry:
        handle = self._table(table)
        files = self.store.files(table)
        found = find_txn_commit(files, app_id(table, self.writer_id), number, handle.version())
        if found is None:
            raise LakeError(
                f"audit: the commit of WAL segment {number} to {table} is not in its log", table=table
            )
        return data_commit_entry(now, table, number, found.version, hashed_adds(files, found))

    def hashed_files(self, table: str, actions: CommitActions) -> list[dict[str, Any]]:
        """The files ``actions`` added to ``table``, each with its SHA-256, bytes and rows."""
        return hashed_adds(self.store.files(table), actions)

    def _config_changed(self, now: int, detail: Mapping[str, Any], reason: str) -> list[Entry]:
        if not self._last_start_known:
            audit, columns = self.store.files(AUDIT), ["seq", "detail"]
            rows = writer_rows(audit, self._table(AUDIT), self.writer_id, columns, kind="engine_start")
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
        if self._context is None:  # the recent changes per path and key before this segment
            files = self.store.files("context")
            self._context = context_history(
                self._table("context"), number << 32, files.filesystem(), self.store.arrow_path
            )
        rows = arrow_table_of_parts("context", ctx_parts, number).to_pylist()
        return context_entries(rows, self._context, now)

    @staticmethod
    def _records(now: int, number: int, parts: Sequence[TableColumns]) -> list[Entry]:
        """A ``record`` entry per batch record (material, result, comment) of the segment."""
        entries: list[Entry] = []
        for table in RECORD_TABLES:
            index = TABLES.index(table)
            found = [part[index] for part in parts if part[index]]
            if found:
                rows = arrow_table_of_parts(table, found, number).to_pylist()
                entries += record_entries(table, rows, now)
        return entries

    def _catalog_changes(self, now: int, parts: Sequence[TableColumns]) -> list[Entry]:
        index, sessions = TABLES.index("metric_catalog"), TABLES.index("sessions")
        rows = catalog_rows([part[index] for part in parts if part[index]])
        if not rows:
            return []
        table, files = self._table("metric_catalog"), self.store.files("metric_catalog")
        rows = completed_births(
            rows,
            [part[sessions] for part in parts if part[sessions]],
            lambda key: birth_rows(table, key, files.filesystem(), self.store.arrow_path),
        )
        grouped = births(rows)
        if not grouped:
            return []
        if self._births is None:  # each device's newest birth before this segment's
            files = self.store.files("metric_catalog")
            self._births = latest_births(
                self._table("metric_catalog"),
                min(b[1] for b in grouped),
                files.filesystem(),
                self.store.arrow_path,
            )
        return catalog_entries(grouped, self._births, now)

    # ---------------------------------------------------------------- compaction, vacuum
    def reconcile(self) -> int:
        """Record the compactions that a kill (or shutdown abandoning one) stopped between
        their Delta commit and their audit entry.  Call with the compaction lock held: then
        no compaction is running, and an OPTIMIZE commit without an entry was interrupted.
        Returns the entries written."""
        found: list[tuple[str, int]] = []
        for table in DATA_TABLES:
            newest = self._table(table).version()
            floor = self._reconciled.get(table, newest - RECONCILE_LOOKBACK)
            for version in range(newest, max(floor, -1), -1):
                actions = commit_actions(self.store.files(table), version)
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
        return audited_compactions(self.store.files(AUDIT), self._table(AUDIT))

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
        files = self.store.files(table)
        for version in range(before + 1, after + 1):
            actions = commit_actions(files, version)
            if actions is None or not actions.removes:
                continue
            removed = list(actions.removes)
            added = [a.path for a in actions.adds]
            columns = [f.name for f in SCHEMAS[table] if f.name != PARTITION_COLUMN]
            old_cols, new_cols = file_columns(files, removed), file_columns(files, added)
            both = (old_cols & new_cols if old_cols else new_cols) if added else set(columns)
            common = [c for c in columns if c in both]
            try:
                rows_before, sum_before = row_checksum(files, removed, common)
            except (
                Exception
            ) as exc:  # the replaced files are gone (vacuumed): no proof, and the entry says so
                log.warning("audit: cannot checksum the rows %s version %d replaced: %s", table, version, exc)
                rows_before, sum_before = None, None
            rows_after, sum_after = row_checksum(files, added, common)
            detail = {
                "table": table,
                "version": version,
                "operation": actions.operation,
                "removed": actions.removes,
                "added": hashed_adds(files, actions),
                "rows_before": rows_before,
                "rows_after": rows_after,
                "checksum_before": sum_before,
                "checksum_after": sum_after,
                "checksum_columns": common,
            }
            out.append(entry(self.clock(), "compaction", table, detail, actor=actor, reason=reason))
        return out
