"""Packed sample blocks (uns.lake.blocks): the C packer and joiner against their references.

``pack_blocks`` (C) is checked by what the Python joiner reads back from its bytes: the
same rows, series, runs, routes and contexts that went in.  ``join_blocks`` (C) is
checked against ``join_python`` on the same records, and on mutated records: the same
columns, or both refuse.  A record of the first version (three Arrow IPC streams) still
becomes the same lake rows.
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uns.core.events import BLOCK_ROW, SampleBlock, SampleRuns
from uns.lake import blocks
from uns.lake.block_arrow import BLOCK_SCHEMA, block_measurements
from uns.sparkplug import native

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason=native.STATUS)

T0 = 1_765_000_000_000


@dataclass(eq=False)
class Born:
    """What a block's record needs of uns.sparkplug.births.BornMetric."""

    name: str
    unit: str | None
    alias: int | None


texts = st.text(min_size=0, max_size=12)
born_metrics = st.builds(Born, texts, st.none() | texts, st.none() | st.integers(0, 2**64 - 1))
rows_of = st.tuples(
    st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
    st.integers(0, 34), st.integers(0, 3),
)  # fmt: skip
contexts = st.none() | st.dictionaries(st.sampled_from(["batch_id", "phase", "lot"]), texts, max_size=3)


@st.composite
def block_sets(draw: st.DrawFn) -> list[SampleRuns | SampleBlock]:
    """Blocks as the native lane makes them: shared routes, records and contexts objects."""
    metrics = draw(st.lists(born_metrics, min_size=1, max_size=6))
    routes = [
        (None, draw(st.none() | texts), draw(texts), draw(texts), 8, draw(texts), draw(st.booleans()))
        for _ in range(draw(st.integers(1, 3)))
    ]
    ctxs = draw(st.lists(contexts, min_size=1, max_size=3))
    out: list[SampleRuns | SampleBlock] = []
    for _ in range(draw(st.integers(1, 3))):
        runs, rows, records, run_contexts = [], b"", [], []
        for _ in range(draw(st.integers(0, 4))):
            picked = draw(st.lists(st.sampled_from(metrics), min_size=0, max_size=4))
            values = [draw(rows_of) for _ in picked]
            rows += b"".join(BLOCK_ROW.pack(*v) for v in values)
            records += picked
            route = draw(st.sampled_from(routes))
            runs.append(
                (route, draw(st.integers(0, 255)), draw(st.none() | st.integers(0, 255)), T0, len(picked))
            )
            run_contexts.append(draw(st.sampled_from(ctxs)))
        if draw(st.booleans()) and len(runs) == 1:  # a block of one message (the non-lane path)
            ((route, seq, bdseq, ts, _n),) = runs
            out.append(SampleBlock(route[2], route[3], route[1], seq, bdseq, T0 + 7, ts, rows, tuple(records),
                                   route[5], route[6], run_contexts[0]))  # fmt: skip
        else:
            out.append(SampleRuns(rows, tuple(records), runs, run_contexts, T0 + 3))
    return out


def _expected(sets: list[list[SampleRuns | SampleBlock]], segment: bool) -> dict[str, list[Any]]:
    """What the joined columns must hold, from the objects (series numbered as packed)."""
    want: dict[str, list[Any]] = {k: [] for k in ("rows", "runs", "series", "routes", "contexts")}
    known: dict[int, int] = {}
    for group in sets:
        local: dict[int, int] = known if segment else {}
        route_ids: dict[int, int] = {}
        context_ids: dict[int, int] = {}
        base = len(want["series"]) if not segment else 0
        for block in group:
            if isinstance(block, SampleBlock):
                route = (
                    None,
                    block.device_id,
                    block.group_id,
                    block.edge_node_id,
                    None,
                    block.path,
                    block.unmapped,
                )
                runs = [(route, block.seq, block.bdseq, block.ts, len(block))]
                received, ctxs = [block.received_at], [block.context]
            else:
                runs, received, ctxs = block.runs, [block.received_at] * len(block.runs), block.contexts
            for record, row in zip(block.records, BLOCK_ROW.iter_unpack(block.rows), strict=True):
                if id(record) not in local:
                    local[id(record)] = len(local)
                    want["series"].append((record.name, record.unit, record.alias))
                want["rows"].append((*row, local[id(record)] + base))
            for (route, seq, bdseq, _ts, n), at, ctx in zip(runs, received, ctxs, strict=True):
                if id(route) not in route_ids:
                    route_ids[id(route)] = len(route_ids)
                    want["routes"].append((route[2], route[3], route[1], route[5], route[6]))
                if id(ctx) not in context_ids:
                    context_ids[id(ctx)] = len(context_ids)
                    want["contexts"].append(blocks._context_json(ctx))
                want["runs"].append((n, at, seq, bdseq, route_ids[id(route)], context_ids[id(ctx)]))
    return want


def _read(joined: tuple[Any, ...]) -> dict[str, list[Any]]:
    """The joined columns as Python rows (through Arrow, as the commit worker reads them)."""
    from uns.lake.block_arrow import _packed_batches  # noqa: PLC0415

    rows, series, runs, routes, ctxs = _packed_batches(joined)
    return {
        "rows": list(
            zip(
                *(rows.column(k).to_pylist() for k in ("ts", "ival", "dval", "datatype", "kind", "series")),
                strict=True,
            )
        ),
        "series": [tuple(r.values()) for r in series.to_pylist()],
        "runs": [tuple(r.values()) for r in runs.to_pylist()],
        "routes": [tuple(r.values()) for r in routes.to_pylist()],
        "contexts": ctxs.column("context").to_pylist(),
    }


def _offset_routes(want: dict[str, list[Any]], sets: list[list[Any]]) -> None:
    """Route and context numbers count across records once joined: shift the expected ones."""
    runs, routes_seen, ctx_seen, at = want["runs"], 0, 0, 0
    for group in sets:
        count = sum(1 if isinstance(b, SampleBlock) else len(b.runs) for b in group)
        mine = runs[at : at + count]
        r = max((run[4] for run in mine), default=-1) + 1
        c = max((run[5] for run in mine), default=-1) + 1
        runs[at : at + count] = [(*run[:4], run[4] + routes_seen, run[5] + ctx_seen) for run in mine]
        routes_seen, ctx_seen, at = routes_seen + r, ctx_seen + c, at + count


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(block_sets(), min_size=1, max_size=3), st.booleans())
def test_packed_records_read_back_what_went_in(sets: list[list[Any]], segment: bool) -> None:
    registry = blocks.SeriesRegistry()
    parts = []
    for group in sets:
        record, born = blocks.encode_blocks(group, registry if segment else None)
        if segment:
            registry.keep(born)
        parts.append(record)
    parts = [p for p in parts if p]
    joined = native.join_blocks(parts)
    assert joined == blocks.join_python(parts)
    want = _expected(sets, segment)
    _offset_routes(want, sets)
    got = _read(joined)
    assert got["rows"] == want["rows"]
    assert got["series"] == want["series"]
    assert got["runs"] == want["runs"]
    assert got["routes"] == want["routes"]
    assert got["contexts"] == want["contexts"]


def _outcome(fn: Any, parts: list[bytes]) -> object:
    try:
        return fn(parts)
    except ValueError:
        return "refused"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_sets(), st.randoms(use_true_random=False), st.integers(1, 6))
def test_mutated_records_are_joined_alike_or_refused_by_both(
    group: list[Any], rng: random.Random, flips: int
) -> None:
    record = bytearray(blocks.encode_blocks(group)[0])
    for _ in range(flips):
        if len(record) < 4:
            break
        kind = rng.randrange(3)
        if kind == 0:
            record[rng.randrange(len(record))] = rng.randrange(256)
        elif kind == 1:  # a count or a length: the likeliest to point outside
            at = rng.choice([8, 12, 16, 20, 24, 28, 32, rng.randrange(max(1, len(record) - 4))])
            struct.pack_into(
                "<I", record, min(at, len(record) - 4), rng.choice([0, 1, 7, 2**31 - 1, 2**32 - 1])
            )
        else:
            record = record[: rng.randrange(len(record) + 1)]
    parts = [bytes(record)]
    assert _outcome(native.join_blocks, parts) == _outcome(blocks.join_python, parts)


def test_a_series_the_segment_never_defined_is_refused() -> None:
    registry = blocks.SeriesRegistry()
    born_metric = Born("m", None, 1)
    rows = BLOCK_ROW.pack(T0, 1, 0.0, 3, 1)
    route = (None, "D", "G", "N", 8, "p", False)
    first, born = blocks.encode_blocks(
        [SampleRuns(rows, (born_metric,), [(route, 0, 0, T0, 1)], [None], T0)], registry
    )
    registry.keep(born)
    second, _ = blocks.encode_blocks(
        [SampleRuns(rows, (born_metric,), [(route, 1, 0, T0, 1)], [None], T0)], registry
    )
    assert native.join_blocks([first, second])[0] == 2
    with pytest.raises(ValueError, match="series"):
        native.join_blocks([second])  # its series was defined by the record before
    with pytest.raises(ValueError):
        blocks.join_python([second])


def test_a_failed_record_defines_no_series() -> None:
    registry = blocks.SeriesRegistry()
    born_metric = Born("m", None, 1)
    bad_route = (None, "D", "G", "N", 8, b"not text", False)
    rows = BLOCK_ROW.pack(T0, 1, 0.0, 3, 1)
    with pytest.raises(TypeError):
        blocks.encode_blocks(
            [SampleRuns(rows, (born_metric,), [(bad_route, 0, 0, T0, 1)], [None], T0)], registry
        )
    assert registry.known == {}


def _first_version_record(block: SampleRuns) -> bytes:
    """A record as the first version wrote it: rows, series and runs as three IPC streams."""
    ts, ival, dval, dtype, kind = zip(*BLOCK_ROW.iter_unpack(block.rows), strict=True)
    distinct = list(dict.fromkeys(block.records))
    rows = pa.record_batch(
        [pa.array(ts, pa.int64()), pa.array(ival, pa.int64()), pa.array(dval, pa.float64()),
         pa.array(dtype, pa.uint8()), pa.array(kind, pa.uint8()),
         pa.array([distinct.index(r) for r in block.records], pa.int32())],
        names=["ts", "ival", "dval", "datatype", "kind", "series"],
    )  # fmt: skip
    series = pa.record_batch(
        [pa.array([r.name for r in distinct]), pa.array([r.unit for r in distinct], pa.string()),
         pa.array([r.alias for r in distinct], pa.uint64())],
        names=["metric", "unit", "alias"],
    )  # fmt: skip
    routes, seqs, bdseqs, _ts, counts = zip(*block.runs, strict=True)
    runs = pa.record_batch(
        [pa.array(counts, pa.int32()), pa.array([block.received_at] * len(routes), pa.int64()),
         pa.array(seqs, pa.int64()), pa.array(bdseqs, pa.int64()),
         *(pa.array([r[i] for r in routes]) for i in (2, 3, 1, 5, 6)),
         pa.array([blocks._context_json(c) for c in block.contexts], pa.string())],
        names=["rows", "received_at", "seq", "bdseq", "group_id", "edge_node_id", "device_id", "path",
               "unmapped", "context"],
    )  # fmt: skip
    out = b""
    for batch in (rows, series, runs):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        data = sink.getvalue().to_pybytes()
        out += struct.pack("<I", len(data)) + data
    return out


def test_a_first_version_record_makes_the_same_lake_rows() -> None:
    metrics = [Born("temp", "degC", 1), Born("ok", None, None)]
    route = (None, "D1", "G", "N", 8, "site/area/unit", False)
    other = (None, None, "G", "N", 7, "site/area", True)
    rows = b"".join(
        BLOCK_ROW.pack(T0 + i, i, i / 2, 10 if i % 2 else 11, 2 if i % 2 else 3) for i in range(5)
    )
    block = SampleRuns(rows, (metrics[0], metrics[1], metrics[0], metrics[1], metrics[0]),
                       [(route, 4, 1, T0, 2), (other, 5, None, T0, 3)],
                       [{"batch_id": "B1"}, None], T0 + 9)  # fmt: skip
    old = _first_version_record(block)
    new, _ = blocks.encode_blocks([block])
    assert blocks.block_rows([old]) == blocks.block_rows([new]) == 5
    want = block_measurements([new], 4, "w")
    assert want.schema == BLOCK_SCHEMA
    assert block_measurements([old], 4, "w").to_pylist() == want.to_pylist()
    # both kinds in one segment (an upgrade between two records cannot happen, but reads)
    both = block_measurements([old, new], 4, "w").to_pylist()
    assert sorted(map(_text, both)) == sorted(map(_text, want.to_pylist() * 2))


def _text(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str, sort_keys=True)
