"""Rejected rows stored whole by older versions: read around them, then rewrite them bounded.

Before issue 29 a rejected message's whole payload went into the ``rejected`` table,
and Parquet keeps a column's smallest and largest value in the file's footer: one
payload of about 100 MiB made a footer that Arrow refuses to read ("Couldn't
deserialize thrift"), and every query touching the table -- every batch report --
failed.  Rows written now hold the payload's first KiB, its size and SHA-256
(:class:`uns.core.events.Rejected`), and the writer cuts the footer's statistics
(:func:`uns.lake.writer.writer_properties`).  For what is already in a lake:

- readers skip a rejected-table file whose footer cannot be read, with one warning
  naming it and the command that repairs it (:func:`readable_rejected`);
- :func:`repair_rejected` (``uns lake repair``, and every ``uns lake compact`` and
  engine compaction first) reads every rejected file that holds a payload over
  the bound, with Arrow's limits raised, and rewrites its partition with each
  payload cut to its head, its size and SHA-256 kept -- one Delta commit per
  partition -- and records a ``repair`` entry in the audit trail: the files
  removed and added, the rows before and after and a checksum of the columns that
  must not change (everything but the payload's).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from uns.core.events import REJECTED_HEAD_BYTES
from uns.errors import LakeError
from uns.lake.audit import AuditRecorder, table_checksum
from uns.lake.audit_entries import Entry, entry
from uns.lake.deltalog import commit_actions
from uns.lake.parquet import writer_properties
from uns.lake.schemas import SCHEMAS
from uns.lake.storage import LakeStore
from uns.lake.tables import PARTITION_COLUMN
from uns.lake.to_arrow import bounded_payloads

__all__ = ["REPAIR_MARK", "RepairResult", "readable_rejected", "repair_rejected"]

log = logging.getLogger("uns.lake")

TABLE: Final = "rejected"
#: the commitInfo metadata of a repair's Delta commit (verify and the audit recognise it)
REPAIR_MARK: Final = {"uns_operation": "repair"}
#: Arrow's default Thrift limits are 100 MB; an old payload can be 256 MB (mosquitto's limit)
_RAISED: Final = {"thrift_string_size_limit": 2**31 - 1, "thrift_container_size_limit": 2**31 - 1}
_PAYLOAD_COLUMNS: Final = ("payload", "payload_size", "payload_sha256")
#: files known readable (uri, size): a connection checks each rejected file once per process
_READABLE: dict[tuple[str, int], bool] = {}
_WARNED: set[str] = set()


def _footer(store: LakeStore, uri: str, **limits: int) -> pq.FileMetaData:
    fs = store.arrow_filesystem() if store.remote else None
    return pq.read_metadata(store.arrow_path(uri), filesystem=fs, **limits)


def readable_rejected(store: LakeStore, uris: list[str], sizes: list[int]) -> list[str]:
    """The rejected table's files a reader can open; each one that it cannot is left out
    with one warning naming it (per process)."""
    out: list[str] = []
    for uri, size in zip(uris, sizes, strict=True):
        ok = _READABLE.get((uri, size))
        if ok is None:
            try:
                _footer(store, uri)
                ok = True
            except (OSError, pa.ArrowException) as exc:
                ok = False
                if uri not in _WARNED:
                    _WARNED.add(uri)
                    log.warning(
                        "lake: skipping unreadable file %s of the rejected table (%s); "
                        "`uns lake repair` rewrites it bounded",
                        uri, str(exc).splitlines()[0][:200],
                    )  # fmt: skip
            _READABLE[(uri, size)] = ok
        if ok:
            out.append(uri)
    return out


@dataclass(slots=True)
class RepairResult:
    """What :func:`repair_rejected` did: per partition date, the files replaced."""

    partitions: dict[str, list[str]] = field(default_factory=dict)
    rows: int = 0
    entries: list[Entry] = field(default_factory=list)


def _oversized(store: LakeStore, uri: str) -> bool:
    """True when the file may hold a payload over the bound: its footer is unreadable, a
    payload statistic is longer than the head, or its payload bytes exceed a head per row."""
    try:
        meta = _footer(store, uri)
    except (OSError, pa.ArrowException):
        return True
    names = meta.schema.names
    if "payload" not in names:
        return False
    column = names.index("payload")
    for group in range(meta.num_row_groups):
        chunk = meta.row_group(group).column(column)
        rows = meta.row_group(group).num_rows
        stats = chunk.statistics
        if (
            stats is not None
            and stats.has_min_max
            and max(len(stats.min), len(stats.max)) > REJECTED_HEAD_BYTES
        ):
            return True
        if chunk.total_uncompressed_size > rows * (REJECTED_HEAD_BYTES + 16) + 4096:
            return True
        if "payload_size" not in names:  # written before the size was kept: bound it anyway
            return True
    return False


def _read_raised(store: LakeStore, uri: str) -> pa.Table:
    fs = store.arrow_filesystem() if store.remote else None
    return pq.ParquetFile(store.arrow_path(uri), filesystem=fs, **_RAISED).read()


def _bounded(data: pa.Table, day: str) -> pa.Table:
    """Rows of the rejected table's partition ``day`` (read from its files, which hold no
    partition column) with every payload cut to its head, its size and digest kept."""
    names, rows = data.column_names, data.num_rows
    bounded = bounded_payloads(
        data.column("payload").to_pylist(),
        data.column("payload_size").to_pylist() if "payload_size" in names else [None] * rows,
        data.column("payload_sha256").to_pylist() if "payload_sha256" in names else [None] * rows,
    )
    columns: dict[str, Any] = {n: data.column(n) for n in names if n not in _PAYLOAD_COLUMNS}
    columns.update(bounded)
    columns[PARTITION_COLUMN] = pa.array([day] * data.num_rows, pa.string()).cast(pa.date32())
    schema = SCHEMAS[TABLE]
    return pa.table({f.name: pa.array(columns[f.name], f.type) if f.name in _PAYLOAD_COLUMNS
                     else columns[f.name].cast(f.type) for f in schema}, schema=schema)  # fmt: skip


def repair_rejected(
    store: LakeStore, audit: AuditRecorder, *, actor: str, reason: str, since: str | None = None
) -> RepairResult:
    """Rewrite bounded every partition of the rejected table (from date ``since`` on, ISO;
    all by default) that holds a payload over the bound, recording a ``repair`` audit entry
    per partition.  Call it with the lake's compaction lock held."""
    result = RepairResult()
    try:
        table = DeltaTable(store.table_uri(TABLE), storage_options=store.delta_options())
    except TableNotFoundError:
        return result
    adds = pa.table(table.get_add_actions(flatten=True))
    if not adds.num_rows:
        return result
    paths = adds.column("path").to_pylist()
    dates = [str(d) for d in adds.column(f"partition.{PARTITION_COLUMN}").to_pylist()]
    uris = dict(zip(paths, table.file_uris(), strict=True))
    bad_dates = sorted({d for p, d in zip(paths, dates, strict=True) if (since is None or d >= since)
                        and _oversized(store, uris[p])})  # fmt: skip
    for day in bad_dates:
        files = [p for p, d in zip(paths, dates, strict=True) if d == day]
        before = pa.concat_tables([_read_raised(store, uris[p]) for p in files], promote_options="default")
        after = _bounded(before, day)
        version = table.version()
        try:  # one commit: readers see the partition before or after, never half of it
            write_deltalake(
                table,
                after,
                mode="overwrite",
                predicate=f"{PARTITION_COLUMN} = '{day}'",
                writer_properties=writer_properties(),
                commit_properties=CommitProperties(custom_metadata=dict(REPAIR_MARK)),
            )
        except Exception as exc:  # deltalake's own errors, OSError: the partition stays as it was
            raise LakeError(f"repair of rejected partition {day} failed: {exc}", table=TABLE) from exc
        result.partitions[day] = files
        result.rows += after.num_rows
        result.entries += _repair_entries(store, audit, table, version, (before, after), actor, reason)
        log.warning("lake: rewrote %d file(s) of rejected partition %s bounded", len(files), day)
    if result.entries:
        audit.record(result.entries)
    return result


def _repair_entries(
    store: LakeStore,
    audit: AuditRecorder,
    table: DeltaTable,
    before_version: int,
    rows: tuple[pa.Table, pa.Table],
    actor: str,
    reason: str,
) -> list[Entry]:
    """The ``repair`` entries of the commits after ``before_version``: files removed and
    added (with SHA-256), rows and a checksum of the unchanged columns before and after."""
    before, after = rows
    table.update_incremental()
    kept = [f.name for f in SCHEMAS[TABLE] if f.name not in (*_PAYLOAD_COLUMNS, PARTITION_COLUMN)]
    out: list[Entry] = []
    files = store.files(TABLE)  # a directory or an object store
    for version in range(before_version + 1, table.version() + 1):
        actions = commit_actions(files, version)
        if actions is None:
            continue
        detail = {
            "table": TABLE,
            "version": version,
            "operation": actions.operation,
            "removed": actions.removes,
            "added": audit.hashed_files(TABLE, actions),
            "rows_before": before.num_rows,
            "rows_after": after.num_rows,
            "checksum_before": table_checksum(before, kept)[1],
            "checksum_after": table_checksum(after, kept)[1],
            "checksum_columns": kept,
            "bounded_to_bytes": REJECTED_HEAD_BYTES,
        }
        out.append(entry(time.time_ns() // 1000, "repair", TABLE, detail, actor=actor, reason=reason))
    return out
