"""Sample blocks (the native decoder's rows) in the write-ahead log, as packed columns.

The engine's lake sink writes the blocks accepted in one event-loop iteration as one
packed record (``pack_blocks`` in C, ``uns/sparkplug/_blocks.c``; checked by
``spblock.h``), every number little-endian, every section padded to 8 bytes::

    header    b"UNSBLK1\\n", then uint32 rows (n), series (s), runs (m), routes (r),
              contexts (c), flags (1: series numbered per segment), 16 zero bytes
    rows      ts int64[n], ival int64[n], dval float64[n], series int32[n],
              datatype uint8[n], kind uint8[n]            (the decoder's columns)
    runs      received_at int64[m], seq int64[m], bdseq int64[m], bdseq valid uint8[m],
              rows int32[m], route int32[m], context int32[m]   (one per message)
    series    alias uint64[s], alias valid uint8[s], metric text[s], unit text[s]
    routes    unmapped uint8[r], group_id, edge_node_id, device_id, path text[r]
    contexts  JSON text[c] (null: no context)

where ``text[k]`` is k validity bytes, k+1 int32 offsets and the UTF-8 bytes: Arrow's
own string layout, so the commit worker joins a segment's records in one C pass
(``join_blocks``) and wraps the joined columns as Arrow arrays without a copy.  A
record costs a few microseconds however few messages it holds (an Arrow IPC stream
per record, as the first version wrote, cost ~100 us to write and ~35 us to read a
one-message record: more than the Python path's whole record).

A row's series number counts the series of its segment: each record carries only the
born metrics the segment has not had yet (the sink's :class:`SeriesRegistry`, one per
segment), so a plant's names and units are written once per segment.  Routes (a
source's group, node, device, path) and contexts are numbered per record.

Records of the first version (three Arrow IPC streams: rows, series with the record's
own numbering, runs with each message's texts) still read (:func:`read_ipc_blocks`).
Without the extension (an install that could not build it) the worker joins packed
records with :func:`join_python`, the reference the C joiner is tested against.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from uns.core.events import SampleBlock, SampleRuns
from uns.sparkplug import native

if TYPE_CHECKING:
    pass

__all__ = [
    "MAGIC",
    "SeriesRegistry",
    "block_rows",
    "encode_blocks",
    "is_packed",
    "join_blocks",
    "join_python",
    "read_ipc_blocks",
]

MAGIC: Final = b"UNSBLK1\n"
_HEADER: Final = struct.Struct("<8s6I16x")
_SEGMENT_SERIES: Final = 1
_MAX_DATATYPE, _MAX_KIND = 34, 3
_LEN: Final = struct.Struct("<I")


def _context_json(ctx: dict[str, str] | None) -> str | None:
    if not ctx:
        return None
    return json.dumps(dict(sorted(ctx.items())), separators=(",", ":"), ensure_ascii=False)


class SeriesRegistry:
    """The born metrics a segment's records have defined so far (see the module doc): the
    sink keeps one per segment.  :func:`encode_blocks` numbers new ones after these and
    returns them as pending; :meth:`keep` takes them once their record is written (a
    record that failed to write defined nothing: :meth:`forget`)."""

    __slots__ = ("known", "records")

    def __init__(self) -> None:
        self.known: dict[int, int] = {}  # id(record) -> series number
        self.records: list[Any] = []  # keeps each record alive: its id stays its own

    def keep(self, pending: list[Any]) -> None:
        self.records.extend(pending)

    def forget(self, pending: list[Any]) -> None:
        for record in pending:
            self.known.pop(id(record), None)


def _runs(blocks: Sequence[SampleBlock | SampleRuns]) -> tuple[list[Any], list[int], list[Any]]:
    """Per message of the blocks: (route, seq, bdseq, ts, rows), received_at, context."""
    runs: list[Any] = []
    received: list[int] = []
    contexts: list[Any] = []
    for block in blocks:
        if isinstance(block, SampleRuns):
            runs.extend(block.runs)
            received.extend(repeat(block.received_at, len(block.runs)))
            contexts.extend(block.contexts)
            continue
        route = (None, block.device_id, block.group_id, block.edge_node_id, None, block.path, block.unmapped)
        runs.append((route, block.seq, block.bdseq, block.ts, len(block)))
        received.append(block.received_at)
        contexts.append(block.context)
    return runs, received, contexts


def encode_blocks(
    blocks: Sequence[SampleBlock | SampleRuns], registry: SeriesRegistry | None = None
) -> tuple[bytes, list[Any]]:
    """The packed record of ``blocks`` (see the module doc; b"" for none) and the born
    metrics it defines beyond ``registry`` (to :meth:`SeriesRegistry.keep` once written;
    without a registry the record numbers its own series from 0).  Blocks exist only
    where the native decoder made them, so the extension is there."""
    if not blocks:
        return b"", []
    born: list[Any] = []
    known = {} if registry is None else registry.known
    runs, received, contexts = _runs(blocks)
    try:
        packed = native.pack_blocks(
            b"".join(b.rows for b in blocks), tuple(chain.from_iterable(b.records for b in blocks)),
            known, born, runs, received, contexts, _context_json, registry is not None,
        )  # fmt: skip
    except BaseException:
        if registry is not None:
            registry.forget(born)
        raise
    return packed, born


def is_packed(part: bytes | memoryview) -> bool:
    return bytes(part[: len(MAGIC)]) == MAGIC


def block_rows(parts: Sequence[bytes | memoryview]) -> int:
    """Samples in the block bytes of some records."""
    total = 0
    for part in parts:
        if is_packed(part):
            if len(part) < _HEADER.size:
                raise ValueError("short packed block record")
            total += _HEADER.unpack_from(part)[1]
        else:
            total += read_ipc_blocks(part)[0].num_rows
    return total


#: join_blocks' tuple: (n, m, s, r, c), then these columns, then (validity bytes, int32
#: offsets, UTF-8 bytes) of each text column
JOINED_COLUMNS: Final = (
    "ts", "ival", "dval", "series", "datatype", "kind",
    "received_at", "seq", "bdseq", "bdseq_valid", "rows", "route", "context",
    "alias", "alias_valid", "unmapped",
)  # fmt: skip
#: the text columns, in order
JOINED_TEXTS: Final = ("metric", "unit", "group_id", "edge_node_id", "device_id", "path", "context_text")


def join_blocks(parts: Sequence[bytes | memoryview]) -> tuple[Any, ...]:
    """The packed records of one segment joined (see :data:`JOINED_COLUMNS`): in C when the
    extension is there, else :func:`join_python`.  ValueError for a malformed record."""
    if native.join_blocks is not None:
        return native.join_blocks(list(parts))  # type: ignore[no-any-return]
    return join_python(parts)


class _Reader:
    """Sections of one packed record, each checked to be there (ValueError otherwise)."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.view = memoryview(data).cast("B")
        self.pos = _HEADER.size

    def take(self, count: int, dtype: str) -> np.ndarray[Any, Any]:
        size = count * np.dtype(dtype).itemsize
        padded = (size + 7) & ~7
        if padded > len(self.view) - self.pos:
            raise ValueError("packed block record: a section runs past its end")
        out = np.frombuffer(self.view, dtype=dtype, count=count, offset=self.pos)
        self.pos += padded
        return out

    def flags(self, count: int) -> np.ndarray[Any, Any]:
        out = self.take(count, "u1")
        if (out > 1).any():
            raise ValueError("packed block record: a flag other than 0 or 1")
        return out

    def texts(self, count: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], bytes]:
        valid, offsets = self.flags(count), self.take(count + 1, "<i4")
        steps = np.diff(offsets)
        if offsets[0] != 0 or (steps < 0).any() or (steps[valid == 0] != 0).any():
            raise ValueError("packed block record: bad text offsets")
        data = self.take(int(offsets[-1]), "u1").tobytes()
        return valid, offsets, data


def _check_ids(ids: np.ndarray[Any, Any], limit: int) -> None:
    if len(ids) and (ids.min() < 0 or ids.max() >= limit):
        raise ValueError("packed block record: a number beyond its table")


def join_python(parts: Sequence[bytes | memoryview]) -> tuple[Any, ...]:
    """:func:`join_blocks` in Python (numpy): the fallback and the C joiner's reference."""
    columns: dict[str, list[Any]] = {name: [] for name in JOINED_COLUMNS}
    texts: dict[str, list[Any]] = {name: [] for name in JOINED_TEXTS}
    totals = [0, 0, 0, 0, 0]
    for part in parts:
        if len(part) < _HEADER.size:
            raise ValueError("short packed block record")
        magic, n, s, m, r, c, flags = _HEADER.unpack_from(part)
        if magic != MAGIC or flags & ~_SEGMENT_SERIES or bytes(part[32:48]) != bytes(16):
            raise ValueError("not a packed block record")
        if max(n, s, m, r, c) > len(part):
            raise ValueError("packed block record: counts beyond its size")
        read = _Reader(part)
        got = {
            "ts": read.take(n, "<i8"), "ival": read.take(n, "<i8"), "dval": read.take(n, "<f8"),
            "series": read.take(n, "<i4"), "datatype": read.take(n, "u1"), "kind": read.take(n, "u1"),
            "received_at": read.take(m, "<i8"), "seq": read.take(m, "<i8"), "bdseq": read.take(m, "<i8"),
            "bdseq_valid": read.flags(m), "rows": read.take(m, "<i4"), "route": read.take(m, "<i4"),
            "context": read.take(m, "<i4"), "alias": read.take(s, "<u8"), "alias_valid": read.flags(s),
        }  # fmt: skip
        record_texts = [read.texts(s), read.texts(s)]
        got["unmapped"] = read.flags(r)
        record_texts += [read.texts(r) for _ in range(4)] + [read.texts(c)]
        if read.pos != len(read.view):
            raise ValueError("packed block record: trailing bytes")
        if (got["datatype"] > _MAX_DATATYPE).any() or (got["kind"] > _MAX_KIND).any():
            raise ValueError("packed block record: a datatype or kind out of range")
        if (got["rows"] < 0).any() or int(got["rows"].sum()) != n:
            raise ValueError("packed block record: the runs' rows do not add up")
        _check_ids(got["route"], r)
        _check_ids(got["context"], c)
        segment = bool(flags & _SEGMENT_SERIES)
        _check_ids(got["series"], totals[2] + s if segment else s)
        got["series"] = got["series"] + (0 if segment else totals[2])
        got["route"] = got["route"] + totals[3]
        got["context"] = got["context"] + totals[4]
        for name in JOINED_COLUMNS:
            columns[name].append(got[name])
        for name, text in zip(JOINED_TEXTS, record_texts, strict=True):
            texts[name].append(text)
        totals = [a + b for a, b in zip(totals, (n, m, s, r, c), strict=True)]
    out: list[Any] = list(totals)
    for name in JOINED_COLUMNS:
        joined = np.concatenate(columns[name]) if columns[name] else np.zeros(0, "u1")
        if name in ("bdseq_valid", "alias_valid"):
            out.append(np.packbits(joined.astype(bool), bitorder="little").tobytes())
        else:
            out.append(joined.astype(joined.dtype.newbyteorder("<"), copy=False).tobytes())
    for name in JOINED_TEXTS:
        valid = [t[0] for t in texts[name]]
        flat = np.concatenate(valid).astype(bool) if valid else np.zeros(0, bool)
        offsets, base = [np.zeros(1, "<i4")], 0
        for _valid, offs, data in texts[name]:
            offsets.append((offs[1:] + base).astype("<i4"))
            base += len(data)
        out += [
            np.packbits(flat, bitorder="little").tobytes(),
            np.concatenate(offsets).tobytes(),
            b"".join(t[2] for t in texts[name]),
        ]
    return tuple(out)


# ---------------------------------------------------------------- the first version's records
_SCHEMAS_READ: dict[bytes, Any] = {}  # a schema message's bytes -> the schema (few distinct)


def _read_stream(pa: Any, section: memoryview) -> Any:
    """The one record batch of an IPC stream; its schema parsed once per distinct schema
    message (every record repeats the same three)."""
    source = pa.BufferReader(pa.py_buffer(section))
    head = pa.ipc.read_message(source)
    if head.type != "schema":
        raise ValueError("block section without a schema")
    key = head.serialize().to_pybytes()
    schema = _SCHEMAS_READ.get(key)
    if schema is None:
        schema = pa.ipc.read_schema(head)
        if len(_SCHEMAS_READ) < 64:
            _SCHEMAS_READ[key] = schema
    body = pa.ipc.read_message(source)
    if body.type != "record batch":
        raise ValueError("block section is not one record batch")
    return pa.ipc.read_record_batch(body, schema)


def read_ipc_blocks(data: bytes | memoryview) -> tuple[Any, Any, Any]:
    """(rows, series, runs) record batches of a first-version record (three Arrow IPC
    streams), without a copy.  Raises ValueError when they are not that."""
    import pyarrow as pa  # noqa: PLC0415 - the worker has it loaded anyway

    view = memoryview(data)
    batches = []
    pos = 0
    for _ in range(3):
        if pos + _LEN.size > len(view):
            raise ValueError("short block section")
        (size,) = _LEN.unpack_from(view, pos)
        pos += _LEN.size
        if pos + size > len(view):
            raise ValueError("short block section")
        try:
            batches.append(_read_stream(pa, view[pos : pos + size]))
        except (pa.ArrowException, StopIteration) as exc:
            raise ValueError(f"bad block section: {exc}") from exc
        pos += size
    if pos != len(view):
        raise ValueError("trailing bytes after the block sections")
    rows, series, runs = batches
    return rows, series, runs
