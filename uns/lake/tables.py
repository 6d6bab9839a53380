"""The lake's tables and the write-ahead log's column layout (their Arrow schemas are
in :mod:`lake.schemas`, so the engine's process need not load pyarrow).

Rows travel in three steps, each as cheap as its place demands:

1. :meth:`PendingRows.add` (on the event loop, in ``LakeSink.add``) only keeps
   references to the batch's event objects;
2. :meth:`PendingRows.take` (on the event loop, once per loop iteration) turns
   every pending object into **columns** -- one sequence per field, in the order
   of :data:`WAL_COLUMNS` -- with C-level attribute getters and no per-row
   Python.  Measurement fields that the samples of one message share
   (:data:`RUN_FIELDS`) are stored once per run of equal values, usually once
   per message.  Values stay raw (a float stays a float); only datatypes become
   plain ints.  Columns of plain builtins are what ``marshal`` writes to the
   WAL, and what the segment keeps in memory for its commit;
3. :func:`lake.to_arrow.arrow_table` renders values and builds the Arrow table
   of a table's schema from those columns, in the lake's commit worker.

Every table carries a ``date`` column (UTC date of its main timestamp) and is
partitioned by it.  Timestamps are ``timestamp[ms, UTC]`` on the way in (Delta
stores them as microseconds; readers see ``TIMESTAMP WITH TIME ZONE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

from uns.core.events import Batch, SampleBlock, SampleRuns
from uns.core.records import RECORD_TABLES
from uns.core.values import value_double, value_text
from uns.sparkplug.datatypes import DataType

__all__ = [
    "CONTEXT_COLUMNS",
    "OLDER_RECORD_WIDTHS",
    "PARTITION_COLUMN",
    "RECORD_TABLES",
    "RENDERED",
    "RUN_FIELDS",
    "SAMPLE_FIELDS",
    "TABLES",
    "TIME_COLUMN",
    "WAL_COLUMNS",
    "WAL_WIDTHS",
    "AuditEvent",
    "PendingRows",
    "TableColumns",
    "batch_columns",
    "column_count",
    "empty_columns",
    "extend_columns",
    "plain_columns",
    "rendered",
    "split_columns",
]

#: Every table, in the order a WAL record holds them (a segment commits the data tables in
#: this order, the audit table last).  Tables added later come at the end, so a record of an
#: older segment is a prefix (see :data:`OLDER_RECORD_WIDTHS`).
TABLES: Final = (
    "measurements", "context", "metric_catalog", "sessions", "rejected", "audit",
    "materials", "results", "comments",
)  # fmt: skip
#: Table counts of WAL records written before the last tables were added (before the audit
#: table; before the batch records): they replay with the missing tables empty.
OLDER_RECORD_WIDTHS: Final = frozenset({5, 6})
PARTITION_COLUMN: Final = "date"
#: Context keys that get their own column in ``measurements`` (the rest is in ``context`` JSON).
CONTEXT_COLUMNS: Final = ("batch_id", "order_id", "product", "recipe", "phase")

#: Rows of every table as columns: per table (in ``TABLES`` order) either ``[]`` (no rows)
#: or one sequence per field of ``WAL_COLUMNS[table]``, all of one length.
TableColumns = tuple[list[Sequence[Any]], ...]


#: The main timestamp of each table (its ``date`` partition comes from it).
TIME_COLUMN: Final = {
    "measurements": "ts",
    "context": "ts",
    "metric_catalog": "birth_ts",
    "sessions": "ts",
    "rejected": "received_at",
    "audit": "ts",
    "materials": "ts",
    "results": "ts",
    "comments": "ts",
}

#: Fields of a sample that differ between the samples of one message: one entry per row.
#: ``value`` is the raw value (rendered at commit); ``datatype`` a plain int code.
SAMPLE_FIELDS: Final = (
    "ts", "metric", "datatype", "value", "unit", "quality", "is_historical", "is_transient", "alias",
)  # fmt: skip
#: Fields the samples of one message share: one entry per *run* of consecutive samples
#: with equal values (usually one run per message), plus the ``run_length`` column.
RUN_FIELDS: Final = (
    "received_at", "path", "group_id", "edge_node_id", "device_id", "seq", "bdseq", "unmapped", "context",
)  # fmt: skip

#: The fields every batch record has (uns.core.records.Record), first in its table's columns.
_RECORD_FIELDS: Final = (
    "ts", "received_at", "path", "record_id", "user", "source", "signer", "content_sha256",
)  # fmt: skip
#: The columns of each table in a WAL record, in order: fields of the event objects
#: (uns.core.events).  ``measurements`` has SAMPLE_FIELDS (per row), RUN_FIELDS (per run)
#: and ``run_length`` (per run; the lengths add up to the rows).
WAL_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "measurements": (*SAMPLE_FIELDS, *RUN_FIELDS, "run_length"),
    "context": (
        "ts", "received_at", "path", "key", "value", "source", "user", "reason", "event_id", "signer",
    ),
    "metric_catalog": (
        "group_id", "edge_node_id", "device_id", "path", "metric", "alias", "datatype", "unit",
        "properties", "birth_ts", "bdseq",
    ),
    "sessions": ("ts", "group_id", "edge_node_id", "device_id", "event", "detail"),
    # payload: its first KiB; the whole payload's size and digest beside it (core.events.Rejected)
    "rejected": ("received_at", "topic", "payload", "error", "payload_size", "payload_sha256"),
    # what the engine records itself (start, stop); seq and the hashes are added at commit
    "audit": ("kind", "subject", "detail", "actor", "reason", "ts"),
    # batch records (uns.core.records): the common fields, then the kind's own
    "materials": (*_RECORD_FIELDS, "material", "lot", "quantity", "unit", "status", "expiry"),
    "results": (*_RECORD_FIELDS, "test", "value", "unit", "low", "high", "status"),
    "comments": (*_RECORD_FIELDS, "text"),
}  # fmt: skip

#: Column counts a WAL record of each table may also have: a segment written before a
#: column was added (the context table's ``event_id``, then ``signer``; the rejected
#: table's payload size and digest) replays with the missing columns NULL (the rejected
#: rows of such a segment are bounded at commit: lake.to_arrow).
_OLDER_WIDTHS: Final = {"context": (8, 9), "rejected": (4,)}
WAL_WIDTHS: Final[dict[str, frozenset[int]]] = {
    table: frozenset({len(WAL_COLUMNS[table]), *_OLDER_WIDTHS.get(table, ())}) for table in TABLES
}

#: A measurement value marshal cannot carry (a DataSet, a Template, a str subclass, ...)
#: travels pre-rendered as ``(RENDERED, value_text, value_double)``.
RENDERED: Final = "\x00uns-rendered"

_GETTERS: Final = tuple(attrgetter(*WAL_COLUMNS[t]) for t in TABLES)
_SAMPLE_FIELD_GETTERS: Final = tuple(map(attrgetter, SAMPLE_FIELDS))
_RUN_FIELD_GETTERS: Final = tuple(map(attrgetter, RUN_FIELDS))
_DATATYPE_FIELD: Final = {0: SAMPLE_FIELDS.index("datatype"), 2: 6}
_REJECTED = TABLES.index("rejected")
#: a record's table index by its class's table name
_RECORD_INDEX: Final = {t: TABLES.index(t) for t in RECORD_TABLES}
# IntEnum members (and equal plain ints) -> plain int, in C: ``map(_CODES.get, col, col)``
# falls back to the value itself for codes outside the spec.
_CODES: Final[dict[Any, int]] = {d: int(d) for d in DataType}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """An entry for the audit trail that travels through the WAL (``ts`` in epoch ms,
    ``detail`` JSON text); the commit gives it its ``seq`` and hashes (lake.audit)."""

    kind: str
    subject: str
    detail: str
    actor: str
    reason: str
    ts: int


def empty_columns() -> TableColumns:
    return tuple([] for _ in TABLES)


def column_count(columns: Sequence[Sequence[Any]]) -> int:
    """Rows in one table's columns."""
    return len(columns[0]) if columns else 0


def _sample_columns(samples: list[Any], sizes: list[int]) -> list[Sequence[Any]]:
    """Measurement columns: per-row fields transposed, per-message fields as runs.

    ``sizes`` are the sample counts of the batches (messages) in ``samples``.  A batch
    whose samples share every RUN_FIELDS value (the engine's always do) is one run;
    any other batch is one run per sample.  Column by column (one C-level ``map`` per
    field) rather than a tuple per sample and a transposition: 1.7 instead of 2.7 us
    per row, on the event loop's thread."""
    cols: list[Sequence[Any]] = [tuple(map(get, samples)) for get in _SAMPLE_FIELD_GETTERS]
    shared = [list(map(get, samples)) for get in _RUN_FIELD_GETTERS]
    runs: list[list[Any]] = [[] for _ in shared]
    lengths: list[int] = []
    pos = 0
    for size in sizes:
        end = pos + size
        if size == 1 or all(col[pos:end].count(col[pos]) == size for col in shared):
            for run, col in zip(runs, shared, strict=True):
                run.append(col[pos])
            lengths.append(size)
        else:
            for run, col in zip(runs, shared, strict=True):
                run.extend(col[pos:end])
            lengths.extend([1] * size)
        pos = end
    cols.extend(map(tuple, runs))
    cols.append(tuple(lengths))
    return cols


def _columns_of(index: int, objects: list[Any], sizes: list[int]) -> list[Sequence[Any]]:
    if not objects:
        return []
    # One C-level getter call per object and a transposition: no Python per row.  Tuples,
    # not lists: the garbage collector stops tracking a tuple of scalars after one pass,
    # so a segment's columns waiting in memory for their commit cost it nothing.
    cols: list[Sequence[Any]]
    if index == 0:
        cols = _sample_columns(objects, sizes)
    else:
        cols = list(zip(*map(_GETTERS[index], objects), strict=True))
    field = _DATATYPE_FIELD.get(index)
    if field is not None:
        cols[field] = tuple(map(_CODES.get, cols[field], cols[field]))
    if index == _REJECTED:
        cols[2] = tuple(bytes(p) for p in cols[2])  # a memoryview/bytearray payload: an owned copy
    return cols


class PendingRows:
    """Batches accepted by ``LakeSink.add`` and not yet in the WAL: only references to
    their event objects (the engine does not touch a batch after delivering it)."""

    __slots__ = ("_blocks", "_objects", "_sizes", "rows")

    def __init__(self) -> None:
        self._objects: tuple[list[Any], ...] = tuple([] for _ in TABLES)
        self._sizes: list[int] = []  # samples per batch, in order
        self._blocks: list[SampleBlock | SampleRuns] = []  # samples in columns (lake.blocks writes them)
        self.rows = 0

    def add(self, batch: Batch) -> int:
        """Take the batch's objects; returns its row count."""
        samples, context, catalog, sessions, rejected = (
            batch.samples, batch.context, batch.catalog, batch.sessions, batch.rejected
        )  # fmt: skip
        objects = self._objects
        count = len(samples)
        if count:
            objects[0].extend(samples)
            self._sizes.append(count)
        blocks = batch.blocks
        if blocks:
            self._blocks.extend(blocks)
            count += sum(map(len, blocks))
        if context or catalog or sessions or rejected:  # rare: births, context, faults
            for index, more in ((1, context), (2, catalog), (3, sessions), (4, rejected)):
                objects[index].extend(more)
                count += len(more)
        if batch.records:  # rarer still: a material, a result, a comment
            for record in batch.records:
                objects[_RECORD_INDEX[record.TABLE]].append(record)
            count += len(batch.records)
        self.rows += count
        return count

    def add_audit(self, event: AuditEvent) -> None:
        """Take one audit event (rare: engine start and stop)."""
        self._objects[TABLES.index("audit")].append(event)
        self.rows += 1

    def take(self) -> TableColumns:
        """Every pending row of the objects as columns (take the blocks first: the
        buffer is empty afterwards)."""
        objects, self._objects = self._objects, tuple([] for _ in TABLES)
        sizes, self._sizes = self._sizes, []
        self._blocks = []
        self.rows = 0
        return tuple(_columns_of(i, objs, sizes) for i, objs in enumerate(objects))

    def take_blocks(self) -> list[SampleBlock | SampleRuns]:
        """The pending sample blocks (before :meth:`take`, which empties the buffer)."""
        blocks, self._blocks = self._blocks, []
        return blocks


def batch_columns(batch: Batch) -> TableColumns:
    """One batch as columns (what one WAL record of just this batch holds)."""
    pending = PendingRows()
    b = batch
    pending.add(Batch(b.all_samples(), b.sessions, b.catalog, b.rejected, b.context, records=b.records))
    return pending.take()


def extend_columns(into: TableColumns, more: TableColumns) -> None:
    """Append ``more``'s rows to ``into`` (whose column lists it may replace)."""
    for table_cols, more_cols in zip(into, more, strict=True):
        if not more_cols:
            continue
        if not table_cols:
            table_cols.extend(list(c) for c in more_cols)
            continue
        for col, add in zip(table_cols, more_cols, strict=True):
            col.extend(add)  # type: ignore[attr-defined]


def split_columns(columns: TableColumns, rows: int) -> list[TableColumns]:
    """``columns`` as consecutive parts of at most ``rows`` rows each (all tables counted;
    a measurement run is cut where a part ends): what the sink writes as several WAL
    segments when one record would hold more than ``lake.max_segment_rows``."""
    parts: list[TableColumns] = []
    part, room = empty_columns(), rows
    for index, table_cols in enumerate(columns):
        count, start = column_count(table_cols), 0
        while start < count:
            if not room:
                parts.append(part)
                part, room = empty_columns(), rows
            end = min(count, start + room)
            piece = (
                _measurement_rows(table_cols, start, end)
                if index == 0
                else [c[start:end] for c in table_cols]
            )
            extend_columns(part, tuple(piece if i == index else [] for i in range(len(TABLES))))
            room -= end - start
            start = end
    if any(part) or not parts:
        parts.append(part)
    return parts


def _measurement_rows(cols: Sequence[Sequence[Any]], start: int, end: int) -> list[Sequence[Any]]:
    """Measurement rows ``start:end``: the per-row fields sliced, the runs they overlap cut."""
    per_row = len(SAMPLE_FIELDS)
    run_cols, lengths = cols[per_row:-1], cols[-1]
    runs: list[list[Any]] = [[] for _ in run_cols]
    cut: list[int] = []
    pos = 0
    for run, length in enumerate(lengths):
        first, last = max(pos, start), min(pos + length, end)
        if first < last:
            for out, col in zip(runs, run_cols, strict=True):
                out.append(col[run])
            cut.append(last - first)
        pos += length
        if pos >= end:
            break
    return [*(c[start:end] for c in cols[:per_row]), *runs, cut]


# ---------------------------------------------------------------- plain builtins for marshal
_SCALARS: Final = (str, int, float, bool, bytes, type(None))


def rendered(value: Any) -> tuple[str, str | None, float | None]:
    """The pre-rendered form of a value marshal cannot carry (see :data:`RENDERED`)."""
    try:
        text = value_text(value)
    except Exception:  # a value no rendering knows must not stop intake: keep its repr
        text = repr(value)
    try:
        double = value_double(value)
    except Exception:
        double = None
    return (RENDERED, text, double)


def _plain_value(value: Any) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list and all(type(v) in _SCALARS for v in value):
        return value
    return rendered(value)


def _plain(value: Any) -> Any:
    """The value as exactly the builtin types marshal takes (subclasses and strays coerced)."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict):
        return {str(k): None if v is None else str(v) for k, v in value.items()}
    return str(value)


def plain_columns(columns: TableColumns) -> TableColumns:
    """``columns`` with every field coerced to builtin types (when marshal refused them):
    measurement values that are not plain travel pre-rendered (see :data:`RENDERED`)."""
    value_field = SAMPLE_FIELDS.index("value")
    out: list[list[Sequence[Any]]] = []
    for index, table_cols in enumerate(columns):
        out.append(
            [
                list(map(_plain_value if (index, n) == (0, value_field) else _plain, col))
                for n, col in enumerate(table_cols)
            ]
        )
    return tuple(out)
