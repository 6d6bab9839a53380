"""Sample blocks (the native decoder's rows) in the write-ahead log, as Arrow IPC.

The engine's lake sink writes the blocks accepted in one event-loop iteration as
three Arrow record batches, each an IPC stream framed by its length::

    rows    one per sample: ts, ival, dval (int64, int64, float64: the decoder's columns,
            taken as Arrow buffers without a copy), datatype, kind (uint8), series (int32)
    series  one per distinct born metric of the record: metric, unit, alias
    runs    one per block (message): rows, received_at, seq, bdseq, group_id,
            edge_node_id, device_id, path, unmapped, context (JSON text)

The commit worker reads them back without a copy (:func:`read_blocks`) and
:func:`uns.lake.to_arrow.block_measurements` builds the rows of the measurements
table from them with Arrow compute.  pyarrow loads in the engine's process only
when the first block is written (with ``UNS_NATIVE=0`` it never does).
"""

from __future__ import annotations

import json
import struct
from array import array
from collections.abc import Sequence
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any, Final

from uns.core.events import BLOCK_ROW, SampleBlock, SampleRuns
from uns.sparkplug import native

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["block_rows", "encode_blocks", "read_blocks"]

_LEN: Final = struct.Struct("<I")


def _context_json(ctx: dict[str, str] | None) -> str | None:
    if not ctx:
        return None
    return json.dumps(dict(sorted(ctx.items())), separators=(",", ":"), ensure_ascii=False)


def _columns(rows: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """The rows' fields as packed columns: in C when the native module is there."""
    if native.columns is not None:
        return native.columns(rows)  # type: ignore[no-any-return]
    fields = list(zip(*BLOCK_ROW.iter_unpack(rows), strict=True)) or [(), (), (), (), ()]
    return (
        array("q", fields[0]).tobytes(), array("q", fields[1]).tobytes(), array("d", fields[2]).tobytes(),
        bytes(fields[3]), bytes(fields[4]),
    )  # fmt: skip


_RUN_FIELDS: Final = (
    "rows", "received_at", "seq", "bdseq", "group_id", "edge_node_id", "device_id", "path", "unmapped",
    "context",
)  # fmt: skip


def _run_fields(blocks: Sequence[SampleBlock | SampleRuns]) -> dict[str, list[Any]]:
    """Per message (run) of the blocks: its fields, as lists by name."""
    out: dict[str, list[Any]] = {name: [] for name in _RUN_FIELDS}
    rows, received, seqs, bdseqs, groups, nodes, devices, paths, unmapped, contexts = out.values()
    for block in blocks:
        if isinstance(block, SampleBlock):
            rows.append(len(block))
            received.append(block.received_at)
            seqs.append(block.seq)
            bdseqs.append(block.bdseq)
            groups.append(block.group_id)
            nodes.append(block.edge_node_id)
            devices.append(block.device_id)
            paths.append(block.path)
            unmapped.append(block.unmapped)
            contexts.append(block.context)
            continue
        # transposed in C (zip), not appended field by field: this runs per message
        routes, run_seqs, run_bdseqs, _ts, lengths = zip(*block.runs, strict=True)
        _nodes, run_devices, run_groups, run_edges, _kinds, run_paths, off_model = zip(*routes, strict=True)
        rows.extend(lengths)
        received.extend(repeat(block.received_at, len(lengths)))
        seqs.extend(run_seqs)
        bdseqs.extend(run_bdseqs)
        groups.extend(run_groups)
        nodes.extend(run_edges)
        devices.extend(run_devices)
        paths.extend(run_paths)
        unmapped.extend(off_model)
        contexts.extend(block.contexts)
    return out


def _stream(batch: pa.RecordBatch) -> bytes:
    import pyarrow as pa  # noqa: PLC0415 - loaded on the first block only

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue())


def encode_blocks(blocks: Sequence[SampleBlock | SampleRuns]) -> bytes:
    """The IPC bytes of ``blocks`` (see the module doc); b"" for none."""
    if not blocks:
        return b""
    import pyarrow as pa  # noqa: PLC0415 - see the module doc

    n = sum(map(len, blocks))
    ts, ival, dval, dtype, kind = _columns(b"".join(b.rows for b in blocks))
    records = list(chain.from_iterable(b.records for b in blocks))
    ids = list(map(id, records))
    first = dict(zip(ids, records, strict=True))  # distinct born metrics, in order of appearance
    position = {ident: i for i, ident in enumerate(first)}
    series_of_row = array("i", map(position.__getitem__, ids)).tobytes()

    def column(typ: pa.DataType, data: bytes) -> pa.Array:
        return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(data)])

    rows = pa.RecordBatch.from_arrays(
        [
            column(pa.int64(), ts), column(pa.int64(), ival), column(pa.float64(), dval),
            column(pa.uint8(), dtype), column(pa.uint8(), kind), column(pa.int32(), series_of_row),
        ],
        names=["ts", "ival", "dval", "datatype", "kind", "series"],
    )  # fmt: skip
    born = list(first.values())
    series = pa.RecordBatch.from_arrays(
        [
            pa.array([r.name for r in born], pa.string()),
            pa.array([r.unit for r in born], pa.string()),
            pa.array([r.alias for r in born], pa.uint64()),
        ],
        names=["metric", "unit", "alias"],
    )
    fields = _run_fields(blocks)
    contexts: dict[int, str | None] = {}
    context_json = [
        contexts[id(ctx)] if id(ctx) in contexts else contexts.setdefault(id(ctx), _context_json(ctx))
        for ctx in fields.pop("context")
    ]
    types = {"rows": pa.int32(), "received_at": pa.int64(), "seq": pa.int64(), "bdseq": pa.int64(),
             "unmapped": pa.bool_()}  # fmt: skip
    runs = pa.RecordBatch.from_arrays(
        [*(pa.array(values, types.get(name, pa.string())) for name, values in fields.items()),
         pa.array(context_json, pa.string())],
        names=[*fields, "context"],
    )  # fmt: skip
    out = bytearray()
    for batch in (rows, series, runs):
        data = _stream(batch)
        out += _LEN.pack(len(data))
        out += data
    return bytes(out)


def read_blocks(data: bytes | memoryview) -> tuple[Any, Any, Any]:
    """(rows, series, runs) record batches of one record's block bytes, without a copy.
    Raises ValueError when they are not what :func:`encode_blocks` writes."""
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
            reader = pa.ipc.open_stream(pa.py_buffer(view[pos : pos + size]))
            batches.append(reader.read_next_batch())
        except (pa.ArrowException, StopIteration) as exc:
            raise ValueError(f"bad block section: {exc}") from exc
        pos += size
    if pos != len(view):
        raise ValueError("trailing bytes after the block sections")
    rows, series, runs = batches
    return rows, series, runs


def block_rows(parts: Sequence[bytes | memoryview]) -> int:
    """Samples in the block bytes of some records."""
    return sum(read_blocks(part)[0].num_rows for part in parts)
