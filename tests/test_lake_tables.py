"""Pure pieces of the lake: WAL record format, rows -> Arrow, poison values."""

from __future__ import annotations

import datetime as dt
import enum
import math
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lake import LakeSink, connect
from lake.tables import SCHEMAS, TABLES, arrow_table, batch_rows, empty_rows
from lake.wal import MAGIC, SegmentFile, encode_record, read_segment
from tests.lake_crash_child import deterministic_batch
from uns.events import Batch, ContextChange, Sample
from uns.sparkplug.datatypes import DataType
from uns.values import value_double, value_text

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=10),
    st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=4),
    st.lists(st.floats(), max_size=4),
)
contexts = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["batch_id", "phase", "lot", "operator"]), st.text(max_size=8), max_size=3
    ),
)


@st.composite
def samples(draw: st.DrawFn) -> Sample:
    return Sample(
        group_id=draw(st.sampled_from(["G1", "G2"])),
        edge_node_id="N",
        device_id=draw(st.sampled_from([None, "D"])),
        metric=draw(st.text(min_size=1, max_size=12)),
        datatype=draw(st.sampled_from(list(DataType))),
        value=draw(scalars),
        ts=draw(st.integers(min_value=0, max_value=4_102_444_800_000)),
        received_at=draw(st.integers(min_value=0, max_value=4_102_444_800_000)),
        is_historical=draw(st.booleans()),
        seq=draw(st.one_of(st.none(), st.integers(0, 255))),
        alias=draw(st.one_of(st.none(), st.integers(0, 2**63 - 1))),
        path=draw(st.sampled_from(["a", "a/b", "a/b/c"])),
        context=draw(contexts),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(samples(), max_size=8))
def test_rows_become_arrow_with_exact_values(batch_samples: list[Sample]) -> None:
    rows = batch_rows(Batch(samples=batch_samples))
    table = arrow_table("measurements", rows[0], segment=3)
    assert table.schema == SCHEMAS["measurements"]
    got = table.to_pylist()
    for s, row in zip(batch_samples, got, strict=True):
        assert row["value_text"] == value_text(s.value)
        want = value_double(s.value)
        assert (row["value_double"] is None) == (want is None)
        if want is not None:
            assert row["value_double"] == want or (math.isnan(want) and math.isnan(row["value_double"]))
        assert row["is_null"] == (s.value is None)
        assert row["datatype"] == s.datatype.name
        assert row["ts"] == dt.datetime.fromtimestamp(s.ts / 1000, dt.UTC)
        assert row["date"] == row["ts"].date()
        ctx = s.context or {}
        assert row["batch_id"] == ctx.get("batch_id")
        assert row["phase"] == ctx.get("phase")
        assert (row["context"] is None) == (not ctx)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.integers(0, 500), min_size=1, max_size=6), cut=st.integers(0, 10_000))
def test_wal_reads_every_complete_record_and_ignores_a_torn_tail(
    tmp_path_factory: pytest.TempPathFactory, batches: list[int], cut: int
) -> None:
    wal = tmp_path_factory.mktemp("wal")
    seg = SegmentFile(wal, 7)
    ends = []
    for i in batches:
        rows = batch_rows(deterministic_batch(i))
        seg.append(encode_record(rows), sum(map(len, rows)))
        ends.append(seg.size)
    seg.close()
    data = seg.path.read_bytes()
    cut = min(cut, len(data))
    seg.path.write_bytes(data[:cut])
    read = read_segment(seg.path)
    complete = sum(1 for end in ends if end <= cut)
    assert read.records == complete
    expected = empty_rows()
    for i in batches[:complete]:
        for acc, more in zip(expected, batch_rows(deterministic_batch(i)), strict=True):
            acc.extend(more)
    # marshal round trip: tuples stay tuples, the shared context dict stays equal
    assert read.rows == expected
    assert read.good_bytes + read.torn_bytes == cut
    assert read.torn_bytes == (
        cut - ends[complete - 1] if complete else (cut if cut < len(MAGIC) else cut - 8)
    )


def test_a_flipped_bit_ends_the_segment_at_the_damaged_record(tmp_path: Path) -> None:
    seg = SegmentFile(tmp_path, 1)
    for i in range(3):
        seg.append(encode_record(batch_rows(deterministic_batch(i))), 1)
    seg.close()
    data = bytearray(seg.path.read_bytes())
    data[-5] ^= 0x01  # inside the last record's payload: its CRC no longer matches
    seg.path.write_bytes(bytes(data))
    assert read_segment(seg.path).records == 2


class _Code(enum.IntEnum):
    X = 1


class _Text(str):
    __slots__ = ()


async def test_poison_values_are_kept_and_never_block_the_lake(tmp_path: Path) -> None:
    """Values Arrow/Delta/marshal refuse as they are: lone surrogates, a uint64 alias,
    a timestamp beyond year 9999, str/int subclasses.  Each row still lands."""
    bad = Sample(
        group_id="G",
        edge_node_id="N",
        device_id=None,
        metric=_Text("surrogate \ud800 here"),
        datatype=DataType.String,
        value="val \udfff",
        ts=2**64 - 1,
        received_at=1_735_689_600_000,
        alias=2**64 - 1,
        seq=_Code.X,
        path="a/b",
        context={"batch_id": "B\ud801"},
    )
    good = Sample("G", "N", None, "ok", DataType.Int32, 5, 1_735_689_600_000, 1_735_689_600_000, path="a/b")
    ctx = ContextChange(ts=-(2**70), received_at=1_735_689_600_000, path="a", key="k", value="v")
    async with LakeSink(tmp_path) as sink:
        sink.add(Batch(samples=[bad, good], context=[ctx]))
    con = connect(tmp_path)
    rows = con.execute(
        "SELECT metric, value_text, ts, alias, seq, batch_id FROM measurements ORDER BY metric"
    ).fetchall()
    context = con.execute("SELECT ts, date FROM context").fetchall()
    con.close()
    assert rows[0][0] == "ok"
    metric, text, ts, alias, seq, batch_id = rows[1]
    assert metric == "surrogate \ufffd here"
    assert text == "val \ufffd"
    assert ts is None
    assert alias == -1
    assert seq == 1
    assert batch_id == "B\ufffd"
    assert context == [(None, dt.date(2025, 1, 1))]  # partitioned by receive time instead


def test_every_table_builds_empty_with_its_schema() -> None:
    for table in TABLES:
        built = arrow_table(table, [], 0)
        assert built.schema == SCHEMAS[table]
        assert built.num_rows == 0
        assert pa.types.is_date32(built.schema.field("date").type)
