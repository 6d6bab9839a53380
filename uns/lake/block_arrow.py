"""Sample blocks (:mod:`uns.lake.blocks`) -> the measurements table's Arrow rows.

The commit worker builds one Arrow table per segment from the blocks' three record
batches (rows, series, runs) without a Python object per row.  Every text column is a
dictionary array (int32 indices into the distinct values): a born metric's name and
unit are the series batch's own strings, indexed by the rows' series numbers (no
copy); a run's path, group, node and device are encoded once per run and indexed by
the row's run; constants ("good", the writer) are one value.  So the per-row work is
integer ``take``\\ s, and the Parquet writer gets the dictionaries it would otherwise
build by hashing every string (Parquet dictionary-encodes these columns either way:
the files are the same, the table's Delta schema stays ``string``; measured 0.2-0.4 us
less per row for the write and the building together, docs/performance.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uns.lake.schemas import SCHEMAS
from uns.lake.tables import CONTEXT_COLUMNS, PARTITION_COLUMN
from uns.sparkplug.datatypes import DataType

__all__ = ["BLOCK_SCHEMA", "block_measurements", "dictionary_columns"]

_TS = pa.timestamp("ms", tz="UTC")
# as uns.lake.to_arrow: Delta keeps microseconds in an int64, so years 1..9999
_TS_MIN_MS: Final = -62_135_596_800_000
_TS_MAX_MS: Final = 253_402_300_799_999
_UINT64_CODE: Final = int(DataType.UInt64)
_BLOCK_INT, _BLOCK_FLOAT, _BLOCK_BOOL = 1, 2, 3
_NAMES: Final = {int(d): d.name for d in DataType}
#: datatype code -> name (codes 0..34; the decoder writes no other)
_DATATYPE_NAMES: Final = pa.array([_NAMES.get(c) for c in range(max(_NAMES) + 1)], pa.string())
_TEXT: Final = pa.dictionary(pa.int32(), pa.string())
_ROUTE_TEXTS: Final = ("group_id", "edge_node_id", "device_id", "path")

#: the measurements schema with every text column as a dictionary (what blocks build)
BLOCK_SCHEMA: Final = pa.schema(
    [f.with_type(_TEXT) if f.type == pa.string() else f for f in SCHEMAS["measurements"]]
)


def dictionary_columns(table: pa.Table) -> pa.Table:
    """``table`` (of the measurements schema) with its text columns dictionary-encoded, so it
    joins a block table in one commit."""
    return pa.Table.from_arrays(
        [pc.dictionary_encode(col) if col.type == pa.string() else col for col in table.columns],
        schema=BLOCK_SCHEMA,
    )


def _ts_array(values: pa.Array) -> pa.Array:
    """int64 ms -> timestamp, NULL outside year 1..9999 (as :func:`uns.lake.to_arrow._array`)."""
    bad = pc.or_(pc.less(values, _TS_MIN_MS), pc.greater(values, _TS_MAX_MS))
    if pc.any(bad).as_py():
        values = pc.if_else(bad, pa.scalar(None, pa.int64()), values)
    return values.cast(_TS)


def _block_values(rows: pa.RecordBatch) -> tuple[pa.Array, pa.Array]:
    """value_double and value_int of block rows (their value_text is the view's)."""
    kind, code = rows.column("kind"), rows.column("datatype")
    ival, dval = rows.column("ival"), rows.column("dval")
    is_float, is_int, is_bool = (
        pc.equal(kind, _BLOCK_FLOAT),
        pc.equal(kind, _BLOCK_INT),
        pc.equal(kind, _BLOCK_BOOL),
    )
    if pc.all(is_float).as_py():  # the usual plant: every value a Float or Double
        return dval, pa.nulls(len(dval), pa.int64())
    int_double = ival.cast(pa.float64(), safe=False)  # beyond 2^53: the nearest double, as float(int)
    unsigned = pc.and_(pc.equal(code, _UINT64_CODE), pc.less(ival, 0))
    if pc.any(unsigned).as_py():  # UInt64 above 2^63: the bits as unsigned
        int_double = pc.if_else(unsigned, ival.view(pa.uint64()).cast(pa.float64(), safe=False), int_double)
    doubles = pc.if_else(
        is_float, dval, pc.if_else(pc.or_(is_int, is_bool), int_double, pa.scalar(None, pa.float64()))
    )
    return doubles, pc.if_else(is_int, ival, pa.scalar(None, pa.int64()))


def _text(indices: pa.Array, dictionary: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def _context_columns(texts: pa.Array, of_row: pa.Array) -> list[pa.Array]:
    """The five context columns and the JSON column of each row: ``texts`` the distinct
    contexts' JSON (null: none), ``of_row`` each row's (parsed once per distinct text)."""
    encoded = pc.dictionary_encode(texts)
    of_row = encoded.indices.take(of_row)
    parsed = [json.loads(text) for text in encoded.dictionary.to_pylist()]
    out = []
    for key in CONTEXT_COLUMNS:
        values = pc.dictionary_encode(pa.array([ctx.get(key) for ctx in parsed], pa.string()))
        out.append(_text(values.indices.take(of_row), values.dictionary))
    out.append(_text(of_row, encoded.dictionary))
    return out


def _shifted(batch: pa.RecordBatch, name: str, offset: int) -> pa.RecordBatch:
    """``batch`` with column ``name`` (row numbers into another batch) moved by ``offset``."""
    if not offset:
        return batch
    at = batch.schema.get_field_index(name)
    return batch.set_column(at, name, pc.add(batch.column(name), pa.scalar(offset, pa.int32())))


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _text_array(k: int, valid: bytes, offsets: bytes, data: bytes) -> pa.Array:
    return pa.Array.from_buffers(
        pa.string(), k, [pa.py_buffer(valid), pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _packed_batches(joined: tuple[Any, ...]) -> tuple[pa.RecordBatch, ...]:
    """join_blocks' columns as (rows, series, runs, routes, contexts) record batches: the
    joined buffers become Arrow arrays without a copy."""
    from uns.lake.blocks import JOINED_COLUMNS, JOINED_TEXTS  # noqa: PLC0415 - avoids a cycle at import

    n, m, s, r, c = joined[:5]
    col = dict(zip(JOINED_COLUMNS, joined[5:], strict=False))
    at = 5 + len(JOINED_COLUMNS)
    text = {name: joined[at + 3 * i : at + 3 * i + 3] for i, name in enumerate(JOINED_TEXTS)}

    def fixed(typ: pa.DataType, count: int, name: str, valid: bytes | None = None) -> pa.Array:
        return pa.Array.from_buffers(
            typ, count, [None if valid is None else pa.py_buffer(valid), pa.py_buffer(col[name])]
        )

    rows = pa.RecordBatch.from_arrays(
        [fixed(pa.int64(), n, "ts"), fixed(pa.int64(), n, "ival"), fixed(pa.float64(), n, "dval"),
         fixed(pa.uint8(), n, "datatype"), fixed(pa.uint8(), n, "kind"), fixed(pa.int32(), n, "series")],
        names=["ts", "ival", "dval", "datatype", "kind", "series"],
    )  # fmt: skip
    series = pa.RecordBatch.from_arrays(
        [_text_array(s, *text["metric"]), _text_array(s, *text["unit"]),
         fixed(pa.uint64(), s, "alias", col["alias_valid"])],
        names=["metric", "unit", "alias"],
    )  # fmt: skip
    runs = pa.RecordBatch.from_arrays(
        [fixed(pa.int32(), m, "rows"), fixed(pa.int64(), m, "received_at"), fixed(pa.int64(), m, "seq"),
         fixed(pa.int64(), m, "bdseq", col["bdseq_valid"]), fixed(pa.int32(), m, "route"),
         fixed(pa.int32(), m, "context")],
        names=["rows", "received_at", "seq", "bdseq", "route", "context"],
    )  # fmt: skip
    unmapped = pa.array(np.frombuffer(col["unmapped"], dtype=np.uint8).astype(bool), pa.bool_())
    routes = pa.RecordBatch.from_arrays(
        [*(_text_array(r, *text[name]) for name in _ROUTE_TEXTS), unmapped],
        names=[*_ROUTE_TEXTS, "unmapped"],
    )
    contexts = pa.RecordBatch.from_arrays([_text_array(c, *text["context_text"])], names=["context"])
    for batch in (series, routes, contexts):  # texts: UTF-8 as Arrow requires (few values: per series, route)
        batch.validate(full=True)
    return rows, series, runs, routes, contexts


def _joined_blocks(parts: Sequence[bytes | memoryview]) -> tuple[pa.RecordBatch, ...]:
    """The blocks of a segment's records as one (rows, series, runs, routes, contexts): the
    packed records joined in one pass, a first-version record's (three IPC streams)
    converted, and each unit's numbers into its series, routes and contexts shifted to
    the joined ones."""
    from uns.lake.blocks import is_packed, join_blocks, read_ipc_blocks  # noqa: PLC0415 - as above

    packed = [part for part in parts if is_packed(part)]
    units = [_packed_batches(join_blocks(packed))] if packed else []
    units += [_routed(read_ipc_blocks(part)) for part in parts if not is_packed(part)]
    if len(units) == 1:
        return units[0]
    joined: list[list[pa.RecordBatch]] = [[], [], [], [], []]
    offsets = [0, 0, 0]  # series, routes, contexts so far
    for rows, series, runs, routes, contexts in units:
        moved_rows = _shifted(rows, "series", offsets[0])
        moved_runs = _shifted(_shifted(runs, "route", offsets[1]), "context", offsets[2])
        for into, batch in zip(joined, (moved_rows, series, moved_runs, routes, contexts), strict=True):
            into.append(batch)
        offsets = [offsets[0] + series.num_rows, offsets[1] + routes.num_rows, offsets[2] + contexts.num_rows]
    return tuple(_joined(batches) for batches in joined)


def _routed(batches: tuple[pa.RecordBatch, ...]) -> tuple[pa.RecordBatch, ...]:
    """A first-version record (rows, series, runs with each message's texts) as today's five
    batches: each run its own route and context."""
    rows, series, runs = batches
    numbers = pa.array(np.arange(runs.num_rows, dtype=np.int32))
    routes = runs.select([*_ROUTE_TEXTS, "unmapped"])
    contexts = runs.select(["context"])
    runs = pa.RecordBatch.from_arrays(
        [runs.column("rows"), runs.column("received_at"), runs.column("seq"), runs.column("bdseq"), numbers,
         numbers],
        names=["rows", "received_at", "seq", "bdseq", "route", "context"],
    )  # fmt: skip
    return rows, series, runs, routes, contexts


def block_measurements(parts: Sequence[bytes | memoryview], segment: int, writer: str = "") -> pa.Table:
    """The measurements rows (:data:`BLOCK_SCHEMA`) of the sample blocks of a segment's
    records, built in one vectorised pass over all of them."""
    rows, series, runs, routes, contexts = _joined_blocks(parts)
    n = rows.num_rows
    lengths = runs.column("rows").to_numpy()
    run_of_row = pa.array(np.repeat(np.arange(len(lengths), dtype=np.int32), lengths))
    series_of_row = rows.column("series")
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    false = pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(bytes((n + 7) // 8))])

    def by_run(name: str) -> pa.Array:
        return runs.column(name).take(run_of_row)

    doubles, ints = _block_values(rows)
    route_of_row = runs.column("route").take(run_of_row)
    context = _context_columns(contexts.column("context"), runs.column("context").take(run_of_row))

    def by_route(name: str) -> pa.DictionaryArray:
        encoded = pc.dictionary_encode(routes.column(name))
        return _text(encoded.indices.take(route_of_row), encoded.dictionary)

    by_name: dict[str, pa.Array] = {
        "ts": _ts_array(rows.column("ts")),
        "received_at": _ts_array(by_run("received_at")),
        "path": by_route("path"),
        "metric": _text(series_of_row, series.column("metric")),
        "datatype": _text(rows.column("datatype").cast(pa.int32()), _DATATYPE_NAMES),
        "value_double": doubles,
        "value_text": _text(pa.nulls(n, pa.int32()), pa.array([], pa.string())),
        "value_int": ints,
        "unit": _text(series_of_row, series.column("unit")),
        "quality": _text(zeros, pa.array(["good"])),
        "is_historical": false,
        "group_id": by_route("group_id"),
        "edge_node_id": by_route("edge_node_id"),
        "device_id": by_route("device_id"),
        "seq": by_run("seq"),
        **dict(zip(CONTEXT_COLUMNS, context[:-1], strict=True)),
        "context": context[-1],
        "bdseq": by_run("bdseq"),
        "alias": series.column("alias").view(pa.int64()).take(series_of_row),  # uint64: keep the bits
        "is_transient": false,
        "is_null": pc.equal(rows.column("kind"), 0),
        "unmapped": routes.column("unmapped").take(route_of_row),
        "wal_writer": _text(zeros, pa.array([writer])),
        "wal_segment": pa.array(np.full(n, segment, dtype=np.int64)),
    }
    arrays = [by_name[f.name] for f in BLOCK_SCHEMA if f.name != PARTITION_COLUMN]
    arrays.append(pc.coalesce(by_name["ts"], by_name["received_at"]).cast(pa.date32()))
    return pa.Table.from_batches(
        [pa.RecordBatch.from_arrays(arrays, schema=BLOCK_SCHEMA)], schema=BLOCK_SCHEMA
    )
