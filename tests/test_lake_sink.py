"""LakeSink against a real lake on disk: values, views, snapshots, faults, backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lake_crash_child import BASE_TS, SAMPLES_PER_BATCH, deterministic_batch
from tests.lake_helpers import break_table, repair_table
from uns.core.events import Batch, Sample
from uns.core.values import value_double, value_text
from uns.errors import ConfigError, LakeBackpressure, LakeError
from uns.lake import LakeConfig, LakeSink, connect, refresh
from uns.lake.query import snapshot_versions
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import DataSet, Metric, Parameter, Template

FAST = LakeConfig(commit_interval=0.05, retry_initial_s=0.05, retry_max_s=0.2)

# Every datatype with its awkward values; None is a null of that datatype.
VALUES: list[tuple[DataType, Any]] = [
    (DataType.Int8, -128),
    (DataType.Int16, 32767),
    (DataType.Int32, -(2**31)),
    (DataType.Int64, -(2**63)),
    (DataType.Int64, 2**63 - 1),
    (DataType.UInt8, 255),
    (DataType.UInt16, 65535),
    (DataType.UInt32, 2**32 - 1),
    (DataType.UInt64, 2**64 - 1),
    (DataType.UInt64, 2**53 + 1),  # not exact as a double: value_text keeps it
    (DataType.Float, 0.1),
    (DataType.Float, float("nan")),
    (DataType.Double, float("inf")),
    (DataType.Double, float("-inf")),
    (DataType.Double, -0.0),
    (DataType.Double, 5e-324),
    (DataType.Double, None),
    (DataType.Boolean, True),
    (DataType.Boolean, False),
    (DataType.String, ""),
    (DataType.String, 'Ünïcødé ✓ "quoted"\n\ttabbed'),
    (DataType.Text, "x" * 10_000),
    (DataType.UUID, "123e4567-e89b-12d3-a456-426614174000"),
    (DataType.DateTime, 1_735_689_600_123),
    (DataType.Bytes, b"\x00\xff\x10"),
    (DataType.File, b"%PDF-1.7"),
    (DataType.String, None),
    (
        DataType.DataSet,
        DataSet(
            columns=["step", "temp"],
            types=[DataType.Int32, DataType.Double],
            rows=[[1, 20.5], [2, float("nan")]],
        ),
    ),
    (
        DataType.Template,
        Template(
            version="1",
            template_ref="Valve",
            parameters=[Parameter("size", DataType.Int32, 50)],
            metrics=[Metric(name="open", datatype=DataType.Boolean, value=True)],
        ),
    ),
    (DataType.Int8Array, [-1, 0, 127]),
    (DataType.UInt64Array, [0, 2**64 - 1]),
    (DataType.DoubleArray, [1.5, float("-inf")]),
    (DataType.FloatArray, []),
    (DataType.BooleanArray, [True, False, True]),
    (DataType.StringArray, ["a", "", 'ä,"b"']),
    (DataType.DateTimeArray, [0, 1_735_689_600_000]),
]


def sample(i: int, datatype: DataType, value: Any) -> Sample:
    return Sample(
        group_id="G",
        edge_node_id="N",
        device_id=None,
        metric=f"v{i}",
        datatype=datatype,
        value=value,
        ts=BASE_TS + i,
        received_at=BASE_TS + i + 1,
        path="acme/site/area/unit",
    )


async def test_every_datatype_round_trips_value_text_exactly(tmp_path: Path) -> None:
    async with LakeSink(tmp_path, FAST) as sink:
        sink.add(Batch(samples=[sample(i, dt, v) for i, (dt, v) in enumerate(VALUES)]))
    con = connect(tmp_path)
    got = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT metric, datatype, value_text, value_double, is_null, typeof(value_double)"
            " FROM measurements"
        ).fetchall()
    }
    con.close()
    assert len(got) == len(VALUES)
    for i, (datatype, value) in enumerate(VALUES):
        name, text, double, is_null, _ = got[f"v{i}"]
        assert name == datatype.name
        assert text == value_text(value), (datatype, value)
        assert is_null == (value is None)
        want = value_double(value)
        if want is None:
            assert double is None
        elif math.isnan(want):
            assert double is not None
            assert math.isnan(double)
        else:
            assert double == want
            assert math.copysign(1, double) == math.copysign(1, want)


# The fixed contract: DESIGN.md's columns and their DuckDB types.
CONTRACT: dict[str, dict[str, str]] = {
    "measurements": {
        "ts": "TIMESTAMP WITH TIME ZONE",
        "received_at": "TIMESTAMP WITH TIME ZONE",
        "path": "VARCHAR",
        "metric": "VARCHAR",
        "datatype": "VARCHAR",
        "value_double": "DOUBLE",
        "value_text": "VARCHAR",
        "unit": "VARCHAR",
        "quality": "VARCHAR",
        "is_historical": "BOOLEAN",
        "group_id": "VARCHAR",
        "edge_node_id": "VARCHAR",
        "device_id": "VARCHAR",
        "seq": "BIGINT",
        "batch_id": "VARCHAR",
        "order_id": "VARCHAR",
        "product": "VARCHAR",
        "recipe": "VARCHAR",
        "phase": "VARCHAR",
    },
    "context": {
        "ts": "TIMESTAMP WITH TIME ZONE",
        "received_at": "TIMESTAMP WITH TIME ZONE",
        "path": "VARCHAR",
        "key": "VARCHAR",
        "value": "VARCHAR",
        "source": "VARCHAR",
        "user": "VARCHAR",
        "reason": "VARCHAR",
        "event_id": "VARCHAR",
        "signer": "VARCHAR",
    },
    "metric_catalog": {
        "group_id": "VARCHAR",
        "edge_node_id": "VARCHAR",
        "device_id": "VARCHAR",
        "path": "VARCHAR",
        "metric": "VARCHAR",
        "alias": "BIGINT",
        "datatype": "VARCHAR",
        "unit": "VARCHAR",
        "properties": "VARCHAR",
        "birth_ts": "TIMESTAMP WITH TIME ZONE",
        "bdseq": "BIGINT",
    },
    "sessions": {
        "ts": "TIMESTAMP WITH TIME ZONE",
        "group_id": "VARCHAR",
        "edge_node_id": "VARCHAR",
        "device_id": "VARCHAR",
        "event": "VARCHAR",
        "detail": "VARCHAR",
    },
    "rejected": {
        "received_at": "TIMESTAMP WITH TIME ZONE",
        "topic": "VARCHAR",
        "payload": "BLOB",
        "error": "VARCHAR",
    },
}
CONTRACT["measurements_asof"] = CONTRACT["measurements"]


def view_columns(lake: Path) -> dict[str, dict[str, str]]:
    con = connect(lake)
    try:
        return {view: {r[0]: r[1] for r in con.execute(f"DESCRIBE {view}").fetchall()} for view in CONTRACT}
    finally:
        con.close()


def assert_contract(columns: dict[str, dict[str, str]]) -> None:
    for view, required in CONTRACT.items():
        for name, typ in required.items():
            assert columns[view].get(name) == typ, f"{view}.{name}: {columns[view].get(name)} != {typ}"


def test_views_exist_with_contract_columns_before_any_table(tmp_path: Path) -> None:
    assert_contract(view_columns(tmp_path))
    con = connect(tmp_path)
    assert con.execute("SELECT count(*) FROM measurements_asof").fetchone() == (0,)
    con.close()


async def test_views_have_contract_columns_once_written(tmp_path: Path) -> None:
    async with LakeSink(tmp_path, FAST) as sink:
        assert_contract(view_columns(tmp_path))  # empty tables created at start
        for i in range(50):
            sink.add(deterministic_batch(i))
    assert_contract(view_columns(tmp_path))
    con = connect(tmp_path)
    row = con.execute("SELECT payload, topic FROM rejected ORDER BY received_at LIMIT 1").fetchone()
    assert row == (b"\x00", "spBv1.0/PilotPlant/DDATA/GRAN-Ctrl")
    assert con.execute('SELECT "user", source FROM context LIMIT 1').fetchone() == (None, "test")
    con.close()


async def test_flush_makes_everything_queryable_and_stats_add_up(tmp_path: Path) -> None:
    config = LakeConfig(commit_interval=60, commit_rows=1_000)
    async with LakeSink(tmp_path, config) as sink:
        for i in range(500):
            sink.add(deterministic_batch(i))
            if i % 10 == 9:
                await asyncio.sleep(0)  # as the engine between socket reads: the WAL write runs
        stats = sink.stats()
        assert int(stats["rows_added"]) > 2_500
        assert stats["state"] == "ok"
        assert int(stats["wal_bytes"]) > 0
        await sink.flush()
        stats = sink.stats()
        assert stats["rows_committed"] == stats["rows_added"]
        assert stats["wal_segments"] == 0
        assert stats["wal_bytes"] == 0
        # 2500 measurement rows at 1000 per segment: rolled by rows twice, the rest by flush
        assert stats["segments_committed"] == 3
        assert not list((tmp_path / "_wal").glob("*.wal"))
        con = connect(tmp_path)
        assert con.execute("SELECT count(*) FROM measurements").fetchone() == (500 * SAMPLES_PER_BATCH,)
        con.close()


async def test_segments_roll_on_time_without_flush(tmp_path: Path) -> None:
    async with LakeSink(tmp_path, LakeConfig(commit_interval=0.1)) as sink:
        sink.add(deterministic_batch(0))
        await wait_for(lambda: sink.stats()["rows_committed"] != 0)
        assert sink.stats()["rows_committed"] == SAMPLES_PER_BATCH + 4  # + one row in every other table
        assert isinstance(sink.stats()["commit_latency_ms"], float)


async def test_snapshot_is_pinned_until_refresh(tmp_path: Path) -> None:
    async with LakeSink(tmp_path, FAST) as sink:
        sink.add(deterministic_batch(1))
        await sink.flush()
        con = connect(tmp_path)
        before = snapshot_versions(con)
        sink.add(deterministic_batch(2))
        await sink.flush()
        assert con.execute("SELECT count(*) FROM measurements").fetchone() == (SAMPLES_PER_BATCH,)
        after = refresh(con)
        assert after["measurements"] == before["measurements"] + 1
        assert con.execute("SELECT count(*) FROM measurements").fetchone() == (2 * SAMPLES_PER_BATCH,)
        con.close()
    old = connect(tmp_path, versions={"measurements": before["measurements"]})
    assert old.execute("SELECT count(*) FROM measurements").fetchone() == (SAMPLES_PER_BATCH,)
    old.close()


async def test_a_second_writer_on_the_same_wal_is_refused(tmp_path: Path) -> None:
    async with LakeSink(tmp_path, FAST):
        with pytest.raises(LakeError, match="another writer"):
            async with LakeSink(tmp_path, FAST):
                pass
    async with LakeSink(tmp_path, LakeConfig(writer_id="shard2")) as other:
        other.add(deterministic_batch(3))
    con = connect(tmp_path)
    assert con.execute("SELECT count(*) FROM measurements").fetchone() == (SAMPLES_PER_BATCH,)
    con.close()


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        LakeConfig(commit_rows=0)
    with pytest.raises(ConfigError):
        LakeConfig(writer_id="../x")


async def wait_for(predicate: Any, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_failing_commits_are_retried_and_catch_up_exactly_once(tmp_path: Path) -> None:
    async with LakeSink(tmp_path, FAST) as sink:
        sink.add(deterministic_batch(0))
        await sink.flush()
        aside = break_table(tmp_path, "measurements")
        for i in range(1, 400):
            sink.add(deterministic_batch(i))
            if i % 50 == 0:
                await asyncio.sleep(0.06)  # several segments pile up behind the failing one
        await wait_for(lambda: int(sink.stats()["commit_errors"]) >= 2)
        stats = sink.stats()
        assert stats["state"] == "degraded"
        assert "measurements" in str(stats["last_error"])
        assert int(stats["wal_segments"]) >= 2
        with pytest.raises(LakeError, match="flush failed"):
            await sink.flush()
        repair_table(tmp_path, "measurements", aside)
        await sink.flush()
        stats = sink.stats()
        assert stats["state"] == "ok"
        assert stats["wal_segments"] == 0
        assert stats["rows_committed"] == stats["rows_added"]
    con = connect(tmp_path)
    rows = con.execute("SELECT count(*), count(DISTINCT (ts, metric)) FROM measurements").fetchone()
    # the other tables kept committing while measurements failed; nothing twice
    other = con.execute("SELECT count(*), count(DISTINCT ts) FROM sessions").fetchone()
    con.close()
    assert rows == (400 * SAMPLES_PER_BATCH, 400 * SAMPLES_PER_BATCH)
    assert other == (len(range(0, 400, 7)),) * 2


async def test_shutdown_while_the_lake_is_broken_keeps_the_rows_for_the_next_start(tmp_path: Path) -> None:
    sink = LakeSink(tmp_path, FAST)
    with pytest.raises(LakeError, match="flush failed"):  # noqa: PT012 - the exit raises
        async with sink:
            aside = break_table(tmp_path, "measurements")
            for i in range(100):
                sink.add(deterministic_batch(i))
    assert list((tmp_path / "_wal").glob("*.wal")), "the rows must still be in the WAL"
    repair_table(tmp_path, "measurements", aside)
    async with LakeSink(tmp_path, FAST) as again:
        await again.flush()
        assert int(again.stats()["segments_replayed"]) >= 1
    con = connect(tmp_path)
    rows = con.execute("SELECT count(*), count(DISTINCT (ts, metric)) FROM measurements").fetchone()
    sessions = con.execute("SELECT count(*) FROM sessions").fetchone()
    con.close()
    assert rows == (100 * SAMPLES_PER_BATCH, 100 * SAMPLES_PER_BATCH)
    assert sessions == (len(range(0, 100, 7)),)


async def test_backpressure_beyond_the_wal_bound_then_recovery(tmp_path: Path) -> None:
    config = LakeConfig(commit_interval=0.05, wal_max_bytes=40_000, retry_initial_s=0.05, retry_max_s=0.1)
    accepted = 0
    async with LakeSink(tmp_path, config) as sink:
        aside = break_table(tmp_path, "measurements")
        with pytest.raises(LakeBackpressure) as raised:  # noqa: PT012 - fill until it pushes back
            for i in range(100_000):
                sink.add(deterministic_batch(i))
                accepted += 1
                if i % 20 == 0:
                    await asyncio.sleep(0.01)
        assert 0 < raised.value.retry_after <= 30
        assert sink.stats()["state"] == "full"
        assert int(sink.stats()["backpressure"]) == 1
        with pytest.raises(LakeBackpressure):
            sink.add(deterministic_batch(accepted))  # still full: the same batch is refused again
        repair_table(tmp_path, "measurements", aside)
        await wait_for(lambda: sink.stats()["state"] == "ok")
        sink.add(deterministic_batch(accepted))  # the engine's retry of the refused batch
        accepted += 1
    con = connect(tmp_path)
    rows = con.execute("SELECT count(*), count(DISTINCT ts) FROM measurements").fetchone()
    con.close()
    assert rows == (accepted * SAMPLES_PER_BATCH, accepted)


async def test_start_fails_clearly_when_the_lake_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "measurements").write_bytes(b"in the way")
    with pytest.raises(LakeError, match="measurements"):
        async with LakeSink(tmp_path, FAST):
            pass
    # the lock was released: after clearing the obstacle, a writer starts
    (tmp_path / "measurements").unlink()
    async with LakeSink(tmp_path, FAST) as sink:
        sink.add(deterministic_batch(0))


async def test_add_outside_the_context_manager_is_an_error(tmp_path: Path) -> None:
    sink = LakeSink(tmp_path, FAST)
    with pytest.raises(LakeError, match="not running"):
        sink.add(deterministic_batch(0))
    shutil.rmtree(tmp_path, ignore_errors=True)


@contextlib.contextmanager
def file_size_limit(limit: int) -> Any:
    """A fault that stops root too: writes beyond ``limit`` bytes fail with EFBIG
    (Python ignores SIGXFSZ).  Applies to the whole process while active."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


async def test_a_failing_wal_write_keeps_the_rows_and_pushes_back_until_it_works(tmp_path: Path) -> None:
    accepted = 0
    async with LakeSink(tmp_path, FAST) as sink:
        with file_size_limit(4096):
            with pytest.raises(LakeBackpressure, match="write-ahead log") as raised:  # noqa: PT012
                for i in range(10_000):
                    sink.add(deterministic_batch(i))
                    accepted += 1
                    await asyncio.sleep(0)  # one WAL record per batch
            assert raised.value.retry_after > 0
            assert sink.stats()["state"] == "degraded"
            assert "write-ahead log" in str(sink.stats()["last_error"])
            assert int(sink.stats()["rows_pending"]) > 0
        await wait_for(lambda: sink.stats()["state"] == "ok")  # the ticker's retry wrote them
        sink.add(deterministic_batch(accepted))  # the engine's retry of the refused batch
        accepted += 1
        await sink.flush()
        assert sink.stats()["rows_committed"] == sink.stats()["rows_added"]
    con = connect(tmp_path)
    rows = con.execute("SELECT count(*), count(DISTINCT (ts, metric)) FROM measurements").fetchone()
    con.close()
    assert rows == (accepted * SAMPLES_PER_BATCH, accepted * SAMPLES_PER_BATCH)
