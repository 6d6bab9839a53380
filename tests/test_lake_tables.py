"""Pure pieces of the lake: WAL record format, rows -> Arrow, poison values."""

from __future__ import annotations

import datetime as dt
import enum
import marshal
import math
import struct
import zlib
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lake_crash_child import deterministic_batch
from uns.core.events import Batch, ContextChange, Sample
from uns.core.values import value_double, value_text
from uns.lake import LakeSink, connect
from uns.lake.declared import view_sql
from uns.lake.schemas import SCHEMAS
from uns.lake.tables import (
    TABLES,
    PendingRows,
    batch_columns,
    column_count,
    empty_columns,
    extend_columns,
)
from uns.lake.to_arrow import arrow_table, arrow_table_of_parts
from uns.lake.wal import MAGIC, SegmentFile, encode_record, read_segment
from uns.sparkplug.datatypes import DataType

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


def _view_texts(table: pa.Table) -> list[str | None]:
    """``value_text`` as the ``measurements`` view gives it (lake/views/measurements.sql)."""
    con = duckdb.connect()  # preserve_insertion_order (the default): rows in the table's order
    con.register("_uns_measurements", table)
    con.execute(view_sql("measurements"))
    texts = [r[0] for r in con.execute("SELECT value_text FROM measurements").fetchall()]
    con.close()
    return texts


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from([DataType.Double, DataType.Float]), st.floats()),
            st.tuples(st.just(DataType.Boolean), st.booleans()),
            st.tuples(st.sampled_from([DataType.Int64, DataType.DateTime]), st.integers(-(2**63), 2**63 - 1)),
            st.tuples(st.just(DataType.UInt64), st.integers(0, 2**64 - 1)),
            st.tuples(st.just(DataType.Int8), st.integers(-128, 127)),
            st.tuples(st.sampled_from(list(DataType)), st.none()),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_the_view_renders_numbers_exactly_as_value_text(values: list[tuple[DataType, object]]) -> None:
    """The table stores no text for numbers and booleans: the view's is uns.core.values'."""
    batch = Batch(samples=[Sample("G", "N", None, "m", dt, v, 0, 0, path="a") for dt, v in values])  # type: ignore[arg-type]
    table = arrow_table("measurements", batch_columns(batch)[0], segment=1)
    assert table.column("value_text").null_count == len(values)
    assert _view_texts(table) == [value_text(v) for _dt, v in values]  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.lists(samples(), max_size=8), st.integers(0, 8), st.booleans())
def test_rows_become_arrow_with_exact_values(batch_samples: list[Sample], split: int, shared: bool) -> None:
    if shared:  # as the engine's: the samples of one message share every per-message field
        head = batch_samples[0] if batch_samples else None
        for s in batch_samples[1:]:
            assert head is not None
            s.group_id, s.device_id, s.seq, s.path = head.group_id, head.device_id, head.seq, head.path
            s.received_at, s.context = head.received_at, head.context
    # two messages: a message whose samples share every per-message field is one run
    pending = PendingRows()
    pending.add(Batch(samples=batch_samples[:split]))
    pending.add(Batch(samples=batch_samples[split:]))
    columns = pending.take()
    table = arrow_table("measurements", columns[0], segment=3)
    assert table.schema == SCHEMAS["measurements"]
    got = table.to_pylist()
    for s, row, text in zip(batch_samples, got, _view_texts(table), strict=True):
        assert text == value_text(s.value)
        want = value_double(s.value)
        assert (row["value_double"] is None) == (want is None)
        if want is not None:
            assert row["value_double"] == want or (math.isnan(want) and math.isnan(row["value_double"]))
        assert row["is_null"] == (s.value is None)
        assert row["datatype"] == s.datatype.name
        assert row["ts"] == dt.datetime.fromtimestamp(s.ts / 1000, dt.UTC)
        assert row["date"] == row["ts"].date()
        # the fields a message's samples share travel as runs: each row keeps its own
        assert (row["group_id"], row["device_id"], row["seq"], row["path"]) == (
            s.group_id, s.device_id, s.seq, s.path
        )  # fmt: skip
        assert row["received_at"] == dt.datetime.fromtimestamp(s.received_at / 1000, dt.UTC)
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
        columns = batch_columns(deterministic_batch(i))
        seg.append(encode_record(columns), sum(map(column_count, columns)))
        ends.append(seg.size)
    seg.close()
    data = seg.path.read_bytes()
    cut = min(cut, len(data))
    seg.path.write_bytes(data[:cut])
    read = read_segment(seg.path)
    complete = sum(1 for end in ends if end <= cut)
    assert read.records == complete
    expected = empty_columns()
    for i in batches[:complete]:
        extend_columns(expected, batch_columns(deterministic_batch(i)))
    # marshal round trip: values keep their types, the shared context dict stays equal
    assert [[list(c) for c in t] for t in read.columns] == [[list(c) for c in t] for t in expected]
    assert read.good_bytes + read.torn_bytes == cut
    assert read.torn_bytes == (
        cut - ends[complete - 1] if complete else (cut if cut < len(MAGIC) else cut - 8)
    )


def test_a_flipped_bit_ends_the_segment_at_the_damaged_record(tmp_path: Path) -> None:
    seg = SegmentFile(tmp_path, 1)
    for i in range(3):
        seg.append(encode_record(batch_columns(deterministic_batch(i))), 1)
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


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=8),
    slice_rows=st.integers(1, 12),
)
def test_rows_in_parts_build_the_same_table_whatever_the_slicing(sizes: list[int], slice_rows: int) -> None:
    """Records' columns are joined and cut into slices for Arrow: same rows, same order,
    and the context table's ingest_order keeps counting across slices."""
    batches = []
    first = 0
    for size in sizes:
        batch = deterministic_batch(first, samples=size)
        batch.context = [
            ContextChange(1_735_689_600_000 + first + k, 1_735_689_600_000, "a", "phase", f"p{first + k}")
            for k in range(size)
        ]
        batches.append(batch)
        first += size
    parts = [batch_columns(b) for b in batches]
    merged = empty_columns()
    for part in parts:
        extend_columns(merged, part)
    for index, table in enumerate(TABLES):
        whole = arrow_table(table, merged[index], segment=2)
        sliced = arrow_table_of_parts(
            table, [p[index] for p in parts if p[index]], segment=2, slice_rows=slice_rows
        )
        assert sliced.to_pylist() == whole.to_pylist(), table
    orders = arrow_table_of_parts("context", [p[1] for p in parts], 2, slice_rows=slice_rows)["ingest_order"]
    assert orders.to_pylist() == [(2 << 32) + n for n in range(sum(sizes))]


def test_a_segment_of_the_previous_wal_format_still_replays(tmp_path: Path) -> None:
    """UNSWAL1 segments (row tuples, values rendered) left by an older version are read."""
    ctx = {"batch_id": "B1"}
    rows: tuple[list[tuple[object, ...]], ...] = (
        [
            (1_735_689_600_000, 1_735_689_600_001, "a/b", "m", int(DataType.Double), 0.5, "0.5", "degC",
             "good", False, False, "G", "N", None, 3, 0, 7, False, ctx),
            (1_735_689_600_002, 1_735_689_600_003, "a/b", "s", int(DataType.String), None, "txt", None,
             "good", False, False, "G", "N", None, 4, 0, None, False, None),
        ],
        [(1_735_689_600_000, 1_735_689_600_000, "a", "phase", "dry", "test", None, None)],
        [],
        [(1_735_689_600_000, "G", "N", None, "birth", "")],
        [],
    )  # fmt: skip
    payload = marshal.dumps(rows, 4)
    path = tmp_path / "0000000000000001.wal"
    path.write_bytes(b"UNSWAL1\n" + struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    read = read_segment(path)
    assert (read.records, read.torn_bytes) == (1, 0)
    table = arrow_table("measurements", read.columns[0], segment=1).to_pylist()
    assert [(r["metric"], r["value_text"], r["value_double"], r["batch_id"]) for r in table] == [
        ("m", "0.5", 0.5, "B1"),
        ("s", "txt", None, None),
    ]
    assert arrow_table("sessions", read.columns[3], segment=1).num_rows == 1
    # a context row from before event ids: the column reads as NULL
    assert arrow_table("context", read.columns[1], segment=1).to_pylist()[0]["event_id"] is None


def test_a_segment_of_format_2_replays_into_the_lake_after_the_upgrade(tmp_path: Path) -> None:
    """A UNSWAL2 segment (the marshalled columns alone, as the version before the native
    decoder wrote it) left in the WAL is committed at the next start, every row once."""
    from uns.lake.writer import DeltaWriter  # noqa: PLC0415 - deltalake: only where commits run

    batches = [Batch(samples=deterministic_batch(i).all_samples()) for i in range(4)]
    payloads = [marshal.dumps(batch_columns(b), 4) for b in batches]
    wal = tmp_path / "_wal"
    wal.mkdir()
    path = wal / "0000000000000007.wal"
    path.write_bytes(b"UNSWAL2\n" + b"".join(struct.pack("<II", len(p), zlib.crc32(p)) + p for p in payloads))
    read = read_segment(path)
    assert (read.records, read.torn_bytes, read.blocks) == (4, 0, [])
    writer = DeltaWriter(tmp_path)
    writer.open_tables()
    result = writer.commit_segment(7, path)
    assert result.rows_written == sum(len(b.samples) + len(b.sessions) + len(b.context) + len(b.catalog)
                                      + len(b.rejected) for b in batches)  # fmt: skip
    con = connect(tmp_path)
    got = con.sql("SELECT metric, value_text, wal_segment FROM measurements ORDER BY ts, metric").fetchall()
    con.close()
    want = sorted((s.ts, s.metric, value_text(s.value)) for b in batches for s in b.samples)
    assert got == [(metric, text, 7) for _ts, metric, text in want]
    assert not path.exists()


@pytest.mark.parametrize("width", [8, 9])
def test_a_context_record_from_before_its_last_columns_still_replays(tmp_path: Path, width: int) -> None:
    """A UNSWAL2 segment written before the context table had ``event_id`` (8 columns) or
    ``signer`` (9 columns): the missing columns read as NULL."""
    change = ContextChange(1_735_689_600_000, 1_735_689_600_001, "a", "k", "v", "", None, None, "e-1", "qa")
    old = batch_columns(Batch(context=[change]))
    record = tuple(list(cols[:width]) if i == TABLES.index("context") else cols for i, cols in enumerate(old))
    path = tmp_path / "0000000000000001.wal"
    path.write_bytes(MAGIC + encode_record(record))
    read = read_segment(path)
    assert (read.records, read.torn_bytes) == (1, 0)
    rows = arrow_table_of_parts("context", [p[1] for p in read.parts], 1).to_pylist()
    expected_id = "e-1" if width > 8 else None
    assert [(r["key"], r["value"], r["event_id"], r["signer"]) for r in rows] == [
        ("k", "v", expected_id, None)
    ]


def test_context_rows_carry_their_event_id_and_signer() -> None:
    change = ContextChange(
        1_735_689_600_000, 1_735_689_600_001, "a", "k", "v", "mes", None, None, "mes-1", "qa-jdoe"
    )
    rows = arrow_table("context", batch_columns(Batch(context=[change]))[1], segment=3).to_pylist()
    assert (rows[0]["event_id"], rows[0]["signer"]) == ("mes-1", "qa-jdoe")
