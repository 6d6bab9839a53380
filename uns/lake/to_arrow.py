"""WAL columns -> Arrow tables of the lake's schemas (runs where commits run: the commit worker).

The columns come straight from :mod:`lake.tables` (no transposition).  The
work is done in slices of :data:`SLICE_ROWS` rows: every single C-level step
(``pa.array`` of a slice, ``map(repr, ...)``) then holds the GIL for about a
millisecond at most, and between steps the event loop gets the GIL back
within the interpreter's switch interval.  Per row there is no Python code on
the common path: floats render with ``map(repr, ...)``, datatype names come
from a ``take`` on a name array, and the context columns are rendered once per
distinct context dict object (samples of one message share one dict, and the
engine's context store hands out one dict per path and state).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, repeat
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from uns.core.events import REJECTED_HEAD_BYTES
from uns.core.values import value_double, value_text
from uns.lake.schemas import SCHEMAS
from uns.lake.tables import (
    CONTEXT_COLUMNS,
    PARTITION_COLUMN,
    RENDERED,
    RUN_FIELDS,
    SAMPLE_FIELDS,
    TIME_COLUMN,
    WAL_COLUMNS,
)
from uns.sparkplug.datatypes import SIGNED_WIDTH, UNSIGNED_WIDTH, DataType

__all__ = ["SLICE_ROWS", "arrow_table", "arrow_table_of_parts", "bounded_payloads", "render_values"]

#: Rows per slice (bounds the longest GIL-holding step of the commit to about a millisecond).
SLICE_ROWS: Final = 8192

_TS = pa.timestamp("ms", tz="UTC")
# Timestamps Delta can store (it keeps microseconds in an int64) and people mean:
# year 1 .. 9999.  Outside that, a source clock is broken; the row is kept with ts NULL.
_TS_MIN_MS: Final = -62_135_596_800_000
_TS_MAX_MS: Final = 253_402_300_799_999
_INT64_MAX: Final = 2**63 - 1

_DATATYPE_NAMES: Final = {int(d): d.name for d in DataType}
_DATATYPE_NAME_ARRAY: Final = pa.array([_DATATYPE_NAMES[c] for c in range(max(_DATATYPE_NAMES) + 1)])
_NO_CONTEXT: Final = (None,) * (len(CONTEXT_COLUMNS) + 1)


# ---------------------------------------------------------------- values
def _render_one(value: Any) -> tuple[str | None, float | None]:
    if type(value) is tuple and len(value) == 3 and value[0] == RENDERED:
        return value[1], value[2]
    try:
        text = value_text(value)
    except Exception:  # a value no rendering knows must not block the lake: keep its repr
        text = repr(value)
    try:
        double = value_double(value)
    except Exception:
        double = None
    return text, double


#: datatype codes whose values the ``measurements`` view renders (lake/views/measurements.sql):
#: floats from ``value_double``, integers and DateTime from ``value_int``, booleans from
#: ``value_double``; ``value_text`` is stored only for the other values
_FLOAT_CODES: Final = frozenset({int(DataType.Float), int(DataType.Double)})
_INT_CODES: Final = frozenset(
    int(d) for d in (*SIGNED_WIDTH, *UNSIGNED_WIDTH, DataType.DateTime)
)  # fmt: skip
_BOOL_CODE: Final = int(DataType.Boolean)
_UINT64_CODE: Final = int(DataType.UInt64)


def _stored_one(value: Any, code: Any) -> tuple[str | None, float | None, int | None]:
    """(value_text, value_double, value_int) of one raw WAL value as stored (see above)."""
    kind = type(value)
    if kind is float and code in _FLOAT_CODES:
        return None, value, None
    if kind is bool and code == _BOOL_CODE:
        return None, 1.0 if value else 0.0, None
    if kind is int and code in _INT_CODES:
        bits = value - (1 << 64) if code == _UINT64_CODE and value > _INT64_MAX else value
        if -(1 << 63) <= bits <= _INT64_MAX and (code != _UINT64_CODE or value >= 0):
            return None, float(value), bits  # an int below 2^64 always fits a float
    text, double = _render_one(value)
    return text, double, None


def render_values(
    values: Sequence[Any], codes: Sequence[Any]
) -> tuple[list[str | None], list[float | None], list[int | None]]:
    """``value_text``, ``value_double`` and ``value_int`` of raw WAL values as the table stores
    them (the view renders the text of numbers, which a test checks against uns.core.values);
    all-float columns in C, everything else per value."""
    if set(map(type, values)) == {float} and set(codes) <= _FLOAT_CODES:
        n = len(values)
        return [None] * n, list(values), [None] * n
    stored = list(map(_stored_one, values, codes))
    return [s[0] for s in stored], [s[1] for s in stored], [s[2] for s in stored]


def _datatype_names(codes: Sequence[Any]) -> pa.Array:
    """Datatype codes as names, vectorised (a lookup by ``take``)."""
    try:
        return _DATATYPE_NAME_ARRAY.take(pa.array(codes, pa.int64()))
    except (pa.ArrowException, OverflowError, TypeError):  # a code outside the spec's 0..34
        return pa.array([None if c is None else _DATATYPE_NAMES.get(c, str(c)) for c in codes], pa.string())


class _ContextRenderer:
    """The five context columns and the JSON column, rendered once per distinct dict.

    Rows are grouped by the identity of their dict in Arrow; each distinct dict
    is rendered once (dicts of equal items -- e.g. read back from the WAL, where
    each record has its own copies -- share one rendering) and the columns are
    gathered with ``take``.  The column lists keep every dict alive while this
    works, so identities are unique."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[str | None, ...]] = {}
        self._by_items: dict[tuple[tuple[str, str], ...], tuple[str | None, ...]] = {}

    def _render(self, ctx: dict[str, str] | None) -> tuple[str | None, ...]:
        if not ctx:
            return _NO_CONTEXT
        items = tuple(ctx.items())
        hit = self._by_items.get(items)
        if hit is None:
            text = json.dumps(dict(sorted(items)), separators=(",", ":"), ensure_ascii=False)
            hit = self._by_items[items] = (*(ctx.get(k) for k in CONTEXT_COLUMNS), text)
        return hit

    def columns(self, contexts: Sequence[dict[str, str] | None]) -> list[pa.Array]:
        ids = list(map(id, contexts))
        encoded = pc.dictionary_encode(pa.array(ids, pa.uint64()))
        by_id = self._by_id
        uniques = encoded.dictionary.to_pylist()
        missing = [ident for ident in uniques if ident not in by_id]
        if missing:
            objects = dict(zip(ids, contexts, strict=True))
            for ident in missing:
                by_id[ident] = self._render(objects[ident])
        rows = list(map(by_id.__getitem__, uniques))
        if not rows:
            return [pa.array([], pa.string()) for _ in _NO_CONTEXT]
        return [_array(list(col), pa.string()).take(encoded.indices) for col in zip(*rows, strict=True)]


def number_text(value: float) -> str:
    """A result's number as text: integral values without ``.0`` (``110``), others exact."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


# ---------------------------------------------------------------- poison values
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


def _array(values: Sequence[Any] | pa.Array, typ: pa.DataType) -> pa.Array:
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


# ---------------------------------------------------------------- tables
def _measurement_columns(
    cols: list[Sequence[Any]], contexts: _ContextRenderer
) -> dict[str, Sequence[Any] | pa.Array]:
    """Columns by name: per-row fields as they are, per-run fields expanded in Arrow."""
    row = dict(zip(SAMPLE_FIELDS, cols, strict=False))
    run = dict(zip(RUN_FIELDS, cols[len(SAMPLE_FIELDS) : -1], strict=True))
    lengths = cols[-1]
    # Row -> run index, in C (RunEndEncodedArray.from_arrays would try to import numpy
    # on every call); each per-run array is then expanded with one ``take``.
    run_of_row = pa.array(list(chain.from_iterable(map(repeat, range(len(lengths)), lengths))), pa.int32())

    def expand(values: pa.Array) -> pa.Array:
        return values.take(run_of_row)

    texts, doubles, ints = render_values(row["value"], row["datatype"])
    text_array = _array(texts, pa.string())
    double_array = _array(doubles, pa.float64())
    int_array = _array(ints, pa.int64())
    types = {f.name: f.type for f in SCHEMAS["measurements"]}
    by_name: dict[str, Sequence[Any] | pa.Array] = {
        **row,
        **{name: expand(_array(run[name], types[name])) for name in RUN_FIELDS if name != "context"},
        "datatype": _datatype_names(row["datatype"]),
        "value_double": double_array,
        "value_text": text_array,
        "value_int": int_array,
        "is_null": pc.and_(pc.is_null(text_array), pc.and_(pc.is_null(double_array), pc.is_null(int_array))),
    }
    ctx_cols = [expand(col) for col in contexts.columns(run["context"])]
    by_name.update(zip(CONTEXT_COLUMNS, ctx_cols[:-1], strict=True))
    by_name["context"] = ctx_cols[-1]
    return by_name


def _slices(
    parts: Sequence[Sequence[Sequence[Any]]], slice_rows: int
) -> Iterator[tuple[int, list[Sequence[Any]]]]:
    """Consecutive parts (each one WAL record's columns) joined into slices of at least
    ``slice_rows`` rows (the last may be shorter): (first row, columns).  A record is
    never cut: it holds what the event loop accepted in one iteration."""
    group: list[Sequence[Sequence[Any]]] = []
    size = first = 0
    for part in parts:
        if not part:
            continue
        group.append(part)
        size += len(part[0])
        if size >= slice_rows:
            yield first, _joined(group)
            first += size
            group, size = [], 0
    if group:
        yield first, _joined(group)


def _joined(group: list[Sequence[Sequence[Any]]]) -> list[Sequence[Any]]:
    if len(group) == 1:
        return list(group[0])
    return [list(chain.from_iterable(part[n] for part in group)) for n in range(len(group[0]))]


def _slice_batch(
    table: str,
    columns: list[Sequence[Any]],
    first: int,
    segment: int,
    contexts: _ContextRenderer,
    writer: str,
) -> pa.RecordBatch:
    schema = SCHEMAS[table]
    by_name: dict[str, Sequence[Any] | pa.Array]
    if table == "measurements":
        by_name = _measurement_columns(columns, contexts)
        rows = len(columns[0])
        by_name["wal_writer"] = pa.array([writer], pa.string()).take(pa.array([0] * rows, pa.int32()))
        by_name["wal_segment"] = pa.array([segment], pa.int64()).take(pa.array([0] * rows, pa.int32()))
    else:
        cols = dict(zip(WAL_COLUMNS[table], columns, strict=True))
        by_name = dict(cols)
        if table == "context":
            base = (segment << 32) + first
            by_name["ingest_order"] = list(range(base, base + len(columns[0])))
        elif table == "metric_catalog":
            by_name["datatype"] = _datatype_names(cols["datatype"])
        elif table == "rejected":
            by_name.update(bounded_payloads(cols["payload"], cols["payload_size"], cols["payload_sha256"]))
        elif table == "results":  # a number or text (uns.core.records.ResultRecord.value)
            by_name["value_double"] = [v if type(v) is float else None for v in cols["value"]]
            by_name["value_text"] = [
                v if v is None or type(v) is str else number_text(v) for v in cols["value"]
            ]
    names = [f.name for f in schema if f.name != PARTITION_COLUMN]
    arrays = [_array(by_name[f.name], f.type) for f in schema if f.name != PARTITION_COLUMN]
    # The date partition: UTC date of the table's main timestamp; a NULL (broken) source
    # timestamp falls back to the receive time so the row still lands in a real partition.
    stamp = arrays[names.index(TIME_COLUMN[table])]
    if "received_at" in names:
        stamp = pc.coalesce(stamp, arrays[names.index("received_at")])
    arrays.append(stamp.cast(pa.date32()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def bounded_payloads(
    payloads: Sequence[Any], sizes: Sequence[Any], digests: Sequence[Any]
) -> dict[str, list[Any]]:
    """The payload columns of rejected rows, each payload cut to its head: a row written
    before rejected rows were bounded (no ``payload_size``: an old WAL segment, an old
    lake's file) gets its size and digest here, so no payload reaches the lake whole."""
    payloads, sizes, digests = list(payloads), list(sizes), list(digests)
    for row, payload in enumerate(payloads):
        if payload is None:
            continue
        if sizes[row] is None:
            sizes[row] = len(payload)
            digests[row] = hashlib.sha256(payload).hexdigest()
        if len(payload) > REJECTED_HEAD_BYTES:
            payloads[row] = bytes(payload[:REJECTED_HEAD_BYTES])
    return {"payload": payloads, "payload_size": sizes, "payload_sha256": digests}


def _widened(part: Sequence[Sequence[Any]], width: int) -> Sequence[Sequence[Any]]:
    """The columns of a WAL record written before the table's last columns were added
    (see lake.tables.WAL_WIDTHS), with those columns NULL."""
    if not part or len(part) >= width:
        return part
    return [*part, *([None] * len(part[0]) for _ in range(width - len(part)))]


def arrow_table(table: str, columns: Sequence[Sequence[Any]], segment: int, writer: str = "") -> pa.Table:
    """The rows of one table (its columns in ``WAL_COLUMNS`` order, or ``[]`` for none)
    from WAL segment ``segment`` of writer ``writer`` as an Arrow table of its schema."""
    return arrow_table_of_parts(table, [columns], segment, writer=writer)


def arrow_table_of_parts(
    table: str,
    parts: Sequence[Sequence[Sequence[Any]]],
    segment: int,
    *,
    slice_rows: int = SLICE_ROWS,
    writer: str = "",
) -> pa.Table:
    """Like :func:`arrow_table` for rows given as consecutive parts (the columns of each
    WAL record, as read from a segment), built ``slice_rows`` rows at a time."""
    contexts = _ContextRenderer()
    width = len(WAL_COLUMNS[table])
    if any(part and len(part) < width for part in parts):  # a segment older than a column
        parts = [_widened(part, width) for part in parts]
    batches = [
        _slice_batch(table, cols, first, segment, contexts, writer)
        for first, cols in _slices(parts, slice_rows)
    ]
    return pa.Table.from_batches(batches, schema=SCHEMAS[table])
