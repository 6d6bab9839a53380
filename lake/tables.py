"""The lake's tables: explicit Arrow schemas, WAL row layouts and Arrow building.

Rows travel in two steps.  :func:`batch_rows` turns a :class:`uns.events.Batch`
into plain tuples (str, int, float, bool, bytes, None and one ``dict`` for the
context), cheap enough for the receive path and serialisable with ``marshal``
for the write-ahead log.  :func:`arrow_table` turns a segment's tuples of one
table into an Arrow table with the table's explicit schema (no inference), in
a worker thread.

Every table carries a ``date`` column (UTC date of its main timestamp) and is
partitioned by it.  Timestamps are ``timestamp[ms, UTC]`` on the way in (Delta
stores them as microseconds; readers see ``TIMESTAMP WITH TIME ZONE``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from uns.events import Batch
from uns.sparkplug.datatypes import DataType
from uns.values import value_double, value_text

__all__ = [
    "CONTEXT_COLUMNS",
    "PARTITION_COLUMN",
    "SCHEMAS",
    "TABLES",
    "TIME_COLUMN",
    "TableRows",
    "arrow_table",
    "batch_rows",
    "empty_rows",
    "plain_rows",
]

#: Every table, in the order a segment commits them.
TABLES: Final = ("measurements", "context", "metric_catalog", "sessions", "rejected")
PARTITION_COLUMN: Final = "date"
#: Context keys that get their own column in ``measurements`` (the rest is in ``context`` JSON).
CONTEXT_COLUMNS: Final = ("batch_id", "order_id", "product", "recipe", "phase")

#: One WAL record: a tuple of row lists, one list per table in ``TABLES`` order.
TableRows = tuple[list[tuple[Any, ...]], ...]

_TS = pa.timestamp("ms", tz="UTC")
_DATE = pa.field(PARTITION_COLUMN, pa.date32())

SCHEMAS: Final[dict[str, pa.Schema]] = {
    "measurements": pa.schema(
        [
            ("ts", _TS),
            ("received_at", _TS),
            ("path", pa.string()),
            ("metric", pa.string()),
            ("datatype", pa.string()),
            ("value_double", pa.float64()),
            ("value_text", pa.string()),
            ("unit", pa.string()),
            ("quality", pa.string()),
            ("is_historical", pa.bool_()),
            ("group_id", pa.string()),
            ("edge_node_id", pa.string()),
            ("device_id", pa.string()),
            ("seq", pa.int64()),
            *((key, pa.string()) for key in CONTEXT_COLUMNS),
            ("context", pa.string()),  # JSON object of every context key known at ingest
            ("bdseq", pa.int64()),
            ("alias", pa.int64()),
            ("is_transient", pa.bool_()),
            ("is_null", pa.bool_()),
            ("unmapped", pa.bool_()),
            _DATE,
        ]
    ),
    "context": pa.schema(
        [
            ("ts", _TS),
            ("received_at", _TS),
            ("path", pa.string()),
            ("key", pa.string()),
            ("value", pa.string()),
            ("source", pa.string()),
            ("user", pa.string()),
            ("reason", pa.string()),
            # Arrival order of the change (segment << 32 | row): breaks ties between equal timestamps.
            ("ingest_order", pa.int64()),
            _DATE,
        ]
    ),
    "metric_catalog": pa.schema(
        [
            ("group_id", pa.string()),
            ("edge_node_id", pa.string()),
            ("device_id", pa.string()),
            ("path", pa.string()),
            ("metric", pa.string()),
            ("alias", pa.int64()),
            ("datatype", pa.string()),
            ("unit", pa.string()),
            ("properties", pa.string()),
            ("birth_ts", _TS),
            ("bdseq", pa.int64()),
            _DATE,
        ]
    ),
    "sessions": pa.schema(
        [
            ("ts", _TS),
            ("group_id", pa.string()),
            ("edge_node_id", pa.string()),
            ("device_id", pa.string()),
            ("event", pa.string()),
            ("detail", pa.string()),
            _DATE,
        ]
    ),
    "rejected": pa.schema(
        [
            ("received_at", _TS),
            ("topic", pa.string()),
            ("payload", pa.binary()),
            ("error", pa.string()),
            _DATE,
        ]
    ),
}

#: The main timestamp of each table (its ``date`` partition comes from it).
TIME_COLUMN: Final = {
    "measurements": "ts",
    "context": "ts",
    "metric_catalog": "birth_ts",
    "sessions": "ts",
    "rejected": "received_at",
}

# Timestamps Delta can store (it keeps microseconds in an int64) and people mean:
# year 1 .. 9999.  Outside that, a source clock is broken; the row is kept with ts NULL.
_TS_MIN_MS: Final = -62_135_596_800_000
_TS_MAX_MS: Final = 253_402_300_799_999
_INT64_MAX: Final = 2**63 - 1

_DATATYPE_NAMES: Final = {int(d): d.name for d in DataType}


def empty_rows() -> TableRows:
    return tuple([] for _ in TABLES)


def batch_rows(batch: Batch) -> TableRows:
    """The batch as plain tuples, one list per table (in ``TABLES`` order).

    Runs on the receive path: only attribute reads and the two value renderings."""
    try:
        return _batch_rows(batch, value_text, value_double)
    except Exception:  # a value no rendering knows must not stop intake: keep its repr
        return _batch_rows(batch, _tolerant_text, _tolerant_double)


def _tolerant_text(value: Any) -> str | None:
    try:
        return value_text(value)
    except Exception:
        return repr(value)


def _tolerant_double(value: Any) -> float | None:
    try:
        return value_double(value)
    except Exception:
        return None


def _plain(value: Any) -> Any:
    """The value as exactly the builtin types marshal takes (subclasses and strays coerced)."""
    if value is None or type(value) in (str, int, float, bool, bytes):
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


def plain_rows(rows: TableRows) -> TableRows:
    """``rows`` with every field coerced to a builtin type (when marshal refused them)."""
    return tuple([tuple(_plain(v) for v in row) for row in table] for table in rows)


def _batch_rows(
    batch: Batch, vt: Callable[[Any], str | None], vd: Callable[[Any], float | None]
) -> TableRows:
    measurements: list[tuple[Any, ...]] = []
    append = measurements.append
    text: str | None
    double: float | None
    for s in batch.samples:
        value: Any = s.value
        kind = type(value)
        # Inline the renderings of the common scalars (identical to value_text/value_double,
        # which a test checks); everything else goes through them.
        if kind is float:
            text, double = repr(value), value
        elif kind is int:
            text, double = str(value), float(value)
        elif kind is str:
            text, double = value, None
        else:
            text, double = vt(value), vd(value)
        append(
            (
                s.ts,
                s.received_at,
                s.path,
                s.metric,
                int(s.datatype),
                double,
                text,
                s.unit,
                s.quality,
                s.is_historical,
                s.is_transient,
                s.group_id,
                s.edge_node_id,
                s.device_id,
                s.seq,
                s.bdseq,
                s.alias,
                s.unmapped,
                s.context,
            )
        )
    context = [
        (c.ts, c.received_at, c.path, c.key, c.value, c.source, c.user, c.reason) for c in batch.context
    ]
    catalog = [
        (
            e.group_id,
            e.edge_node_id,
            e.device_id,
            e.path,
            e.metric,
            e.alias,
            int(e.datatype),
            e.unit,
            e.properties,
            e.birth_ts,
            e.bdseq,
        )
        for e in batch.catalog
    ]
    sessions = [(e.ts, e.group_id, e.edge_node_id, e.device_id, e.event, e.detail) for e in batch.sessions]
    rejected = [(r.received_at, r.topic, bytes(r.payload), r.error) for r in batch.rejected]
    return (measurements, context, catalog, sessions, rejected)


# ---------------------------------------------------------------- Arrow building
_DATATYPE_NAME_ARRAY: Final = pa.array([_DATATYPE_NAMES[c] for c in range(max(_DATATYPE_NAMES) + 1)])


def _datatype_names(codes: list[Any]) -> pa.Array:
    """Datatype codes as names, vectorised (a lookup by ``take``)."""
    try:
        return _DATATYPE_NAME_ARRAY.take(pa.array(codes, pa.int64()))
    except (pa.ArrowException, OverflowError, TypeError):  # a code outside the spec's 0..34
        return pa.array([None if c is None else _DATATYPE_NAMES.get(c, str(c)) for c in codes], pa.string())


def _context_columns(contexts: Sequence[dict[str, str] | None]) -> list[pa.Array]:
    """The five context columns and the JSON column, vectorised.

    Few distinct contexts exist at a time and samples of one message share one
    dict object, so rows are grouped by object identity in Arrow (no Python loop
    per row), each distinct dict is rendered once (equal contents share one
    rendering) and the columns are gathered with ``take``."""
    # ``contexts`` keeps every dict alive, so identities are unique while we work.
    encoded = pc.dictionary_encode(pa.array(list(map(id, contexts)), pa.uint64()))
    by_id = {id(ctx): ctx for ctx in contexts}
    rendered: dict[tuple[tuple[str, str], ...], tuple[str | None, ...]] = {}
    uniques: list[tuple[str | None, ...]] = []
    for ident in encoded.dictionary.to_pylist():
        ctx = by_id[ident]
        if not ctx:
            uniques.append((None,) * (len(CONTEXT_COLUMNS) + 1))
            continue
        content = tuple(sorted(ctx.items()))
        hit = rendered.get(content)
        if hit is None:
            text = json.dumps(dict(content), separators=(",", ":"), ensure_ascii=False)
            hit = rendered[content] = (*(ctx.get(k) for k in CONTEXT_COLUMNS), text)
        uniques.append(hit)
    if not uniques:
        return [pa.array([], pa.string()) for _ in range(len(CONTEXT_COLUMNS) + 1)]
    return [_array(list(col), pa.string()).take(encoded.indices) for col in zip(*uniques, strict=True)]


def _logical_columns(
    table: str, rows: Sequence[tuple[Any, ...]], segment: int
) -> dict[str, list[Any] | pa.Array]:
    """Columns by name (without ``date``) from the WAL tuples of ``table``."""
    cols: list[Any] = list(zip(*rows, strict=True))  # tuples: pa.array takes any sequence
    if table == "measurements":
        (ts, rec, path, metric, dtype, vdbl, vtxt, unit, qual, hist, trans, grp, node, dev, seq, bdseq, alias,
         unmapped, ctx) = cols  # fmt: skip
        ctx_cols = _context_columns(ctx)
        value_text_array = _array(vtxt, pa.string())
        return {
            "ts": ts,
            "received_at": rec,
            "path": path,
            "metric": metric,
            "datatype": _datatype_names(dtype),
            "value_double": vdbl,
            "value_text": value_text_array,
            "unit": unit,
            "quality": qual,
            "is_historical": hist,
            "group_id": grp,
            "edge_node_id": node,
            "device_id": dev,
            "seq": seq,
            **dict(zip(CONTEXT_COLUMNS, ctx_cols[:-1], strict=True)),
            "context": ctx_cols[-1],
            "bdseq": bdseq,
            "alias": alias,
            "is_transient": trans,
            "is_null": pc.is_null(value_text_array),
            "unmapped": unmapped,
        }
    names = [f.name for f in SCHEMAS[table] if f.name != PARTITION_COLUMN]
    if table == "context":
        base = segment << 32
        cols.append([base + i for i in range(len(rows))])
    elif table == "metric_catalog":
        cols[6] = _datatype_names(cols[6])
    return dict(zip(names, cols, strict=True))


def _plain_int64(v: Any) -> int | None:
    """Sparkplug aliases are uint64: values above int64 keep their bits (two's complement)."""
    if v is None:
        return None
    v = int(v)
    if v > _INT64_MAX:
        v -= 2**64
    return v if -(2**63) <= v <= _INT64_MAX else None


def _plain_text(v: Any) -> str | None:
    # Lone surrogates (e.g. from a JSON "\ud800") cannot be UTF-8: they become U+FFFD, the
    # rest of the text is kept (a pair of surrogates becomes the character it encodes).
    return None if v is None else str(v).encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _plain_ts(v: Any) -> int | None:
    if v is None or isinstance(v, bool) or not isinstance(v, int):
        return None
    return v if _TS_MIN_MS <= v <= _TS_MAX_MS else None


_COERCE: Final[dict[pa.DataType, Callable[[Any], Any]]] = {
    pa.string(): _plain_text,
    pa.int64(): _plain_int64,
    _TS: _plain_ts,
    pa.float64(): lambda v: float(v) if isinstance(v, int | float) else None,
    pa.bool_(): lambda v: None if v is None else bool(v),
    pa.binary(): lambda v: None if v is None else bytes(v),
}


def _array(values: list[Any] | pa.Array, typ: pa.DataType) -> pa.Array:
    """An Arrow array of exactly ``typ``.  A value Arrow or Delta cannot take
    (surrogates, out-of-range integers or timestamps) must not block the whole
    segment, so a failure retries with per-value coercion."""
    if isinstance(values, pa.Array):
        return values
    try:
        arr = pa.array(values, type=typ)
    except (pa.ArrowException, OverflowError, TypeError, ValueError, UnicodeError):
        return pa.array([_COERCE[typ](v) for v in values], type=typ)
    if typ == _TS and len(arr):
        lo_hi = pc.min_max(arr.cast(pa.int64()))
        lo, hi = lo_hi["min"].as_py(), lo_hi["max"].as_py()
        if lo is not None and (lo < _TS_MIN_MS or hi > _TS_MAX_MS):
            return pa.array([_plain_ts(v) for v in values], type=typ)
    return arr


def arrow_table(table: str, rows: Sequence[tuple[Any, ...]], segment: int) -> pa.Table:
    """The rows of one table from one WAL segment as an Arrow table of its schema."""
    schema = SCHEMAS[table]
    by_name = _logical_columns(table, rows, segment) if rows else {}
    arrays = [_array(by_name.get(f.name, []), f.type) for f in schema if f.name != PARTITION_COLUMN]
    # The date partition: UTC date of the table's main timestamp; a NULL (broken) source
    # timestamp falls back to the receive time so the row still lands in a real partition.
    names = [f.name for f in schema if f.name != PARTITION_COLUMN]
    stamp = arrays[names.index(TIME_COLUMN[table])]
    if table in ("measurements", "context"):
        stamp = pc.coalesce(stamp, arrays[names.index("received_at")])
    arrays.append(stamp.cast(pa.date32()))
    return pa.Table.from_arrays(arrays, schema=schema)
