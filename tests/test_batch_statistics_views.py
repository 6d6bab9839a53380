"""The views batch_statistics and batch_phase_statistics (lake/views/) against the oracle of
measurements_asof grouped per batch: random context on units and sub-units, random samples
on and below them, segment boundaries inside and across minutes, non-finite values."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.lake_helpers import load_tables, views_connection
from uns.core.events import ContextChange, Sample
from uns.sparkplug.datatypes import DataType

T0 = 1_735_689_600_000 + 55_000  # 5 s before a minute starts: boundaries fall on both sides of it
CONTEXT_PATHS = ["area", "area/u1", "area/u1/sub", "area/u2"]
SAMPLE_PATHS = ["area/u1", "area/u1/sub", "area/u1/sub/dev", "area/u2", "area/u2/x", "area/u3"]
STATS = "samples, mean, min, max, std, last"
ORACLE_STATS = """count(*), avg(value_double), min(value_double), max(value_double),
    stddev_samp(value_double), arg_max(value_double, ts)"""


@pytest.fixture(scope="module")
def shared() -> Iterator[duckdb.DuckDBPyConnection]:
    con = views_connection([], [])
    yield con
    con.close()


def sample(path: str, metric: str, ts: int, value: float) -> Sample:
    return Sample("G", "N", "D", metric, DataType.Double, value, T0 + ts, T0 + ts, path=path)


context_strategy = st.lists(
    st.builds(
        lambda ts, path, key, value: ContextChange(T0 + ts * 1000, T0 + ts * 1000, path, key, value),
        st.integers(0, 150),  # seconds: three minutes
        st.sampled_from(CONTEXT_PATHS),
        st.sampled_from(["batch_id", "phase"]),
        st.sampled_from([None, "", "x", "y"]),
    ),
    max_size=12,
)
samples_strategy = st.lists(
    st.tuples(
        st.sampled_from(SAMPLE_PATHS),
        st.sampled_from(["m1", "m2"]),
        st.integers(-5_000, 160_000),  # ms; distinct per series below, so `last` is one sample
        st.one_of(
            st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
            st.sampled_from([math.nan, math.inf, -math.inf]),
        ),
    ),
    max_size=60,
    unique_by=lambda s: (s[0], s[1], s[2]),
)


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def same_rows(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], keys: int) -> None:
    assert [g[:keys] for g in got] == [w[:keys] for w in want]
    for g, w in zip(got, want, strict=True):
        assert all(close(a, b) for a, b in zip(g[keys:], w[keys:], strict=True)), (g, w)


@settings(max_examples=80, deadline=None)
@given(changes=context_strategy, raw=samples_strategy)
def test_the_statistics_views_equal_measurements_asof_grouped_per_batch(
    shared: duckdb.DuckDBPyConnection, changes: list[ContextChange], raw: list[tuple[str, str, int, float]]
) -> None:
    load_tables(shared, [sample(*s) for s in raw], changes)
    got = shared.execute(
        f"SELECT batch_id, path, metric, {STATS} FROM batch_statistics ORDER BY ALL"
    ).fetchall()
    want = shared.execute(
        f"""SELECT batch_id, path, metric, {ORACLE_STATS} FROM measurements_asof
            WHERE batch_id IS NOT NULL AND isfinite(value_double) GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    same_rows(got, want, 3)
    got = shared.execute(
        f"SELECT batch_id, path, metric, phase, {STATS} FROM batch_phase_statistics ORDER BY ALL"
    ).fetchall()
    want = shared.execute(
        f"""SELECT batch_id, path, metric, phase, {ORACLE_STATS} FROM measurements_asof
            WHERE batch_id IS NOT NULL AND isfinite(value_double) GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    same_rows(got, want, 4)


def test_durations_and_times_are_the_batch_and_its_phases_on_the_series_batch_path() -> None:
    at = 1000
    changes = [
        ContextChange(T0, T0, "area/u1", "batch_id", "B1"),
        ContextChange(T0, T0, "area/u1", "phase", "mix"),
        ContextChange(T0 + 20 * at, T0 + 20 * at, "area/u1", "phase", "dry"),
        ContextChange(T0 + 50 * at, T0 + 50 * at, "area/u1", "phase", "mix"),  # mix again: 20 s + 10 s
        ContextChange(T0 + 30 * at, T0 + 30 * at, "area/u1/sub", "phase", "dose"),  # the sub-unit's own
        ContextChange(T0 + 60 * at, T0 + 60 * at, "area/u1", "batch_id", None),
        ContextChange(T0 + 60 * at, T0 + 60 * at, "area/u1", "phase", None),
    ]
    samples = [sample("area/u1", "T", s * at, float(s)) for s in range(0, 70, 5)]
    samples += [sample("area/u1/sub/dev", "P", s * at, 1.0) for s in (25, 35, 45)]
    con = views_connection(samples, changes)
    rows = con.execute(
        """SELECT path, metric, samples, last, epoch_ms(start) - ?, epoch_ms("end") - ?, duration_s
           FROM batch_statistics ORDER BY path""",
        [T0, T0],
    ).fetchall()
    assert rows == [
        ("area/u1", "T", 12, 55.0, 0, 60_000, 60.0),  # 0 .. 55 s; the sample at 60 s is after the batch
        ("area/u1/sub/dev", "P", 3, 1.0, 0, 60_000, 60.0),
    ]
    phases = con.execute(
        """SELECT path, phase, samples, mean, duration_s FROM batch_phase_statistics ORDER BY path, phase"""
    ).fetchall()
    con.close()
    assert phases == [
        ("area/u1", "dry", 6, 32.5, 30.0),  # 20 .. 45 s
        ("area/u1", "mix", 6, (0 + 5 + 10 + 15 + 50 + 55) / 6, 30.0),  # two runs
        ("area/u1/sub/dev", "dose", 2, 1.0, 30.0),  # below the sub-unit: its own phase from 30 s
        ("area/u1/sub/dev", "dry", 1, 1.0, 10.0),  # the sub-unit inherits dry from 20 to 30 s
    ]


def test_a_unit_that_hides_the_batch_above_it_is_in_no_batch(shared: duckdb.DuckDBPyConnection) -> None:
    """Found by hypothesis: the unit's own empty batch_id hides the area's batch, so the
    unit's samples are in no batch (they are not the area's), as measurements_asof says."""
    changes = [
        ContextChange(T0, T0, "area", "batch_id", "x"),
        ContextChange(T0, T0, "area/u1", "batch_id", ""),
    ]
    load_tables(shared, [sample("area/u1", "m1", 0, 0.0), sample("area/u2", "m1", 0, 1.0)], changes)
    rows = shared.execute("SELECT batch_id, path FROM batch_statistics").fetchall()
    assert rows == [("x", "area/u2")]


def test_a_sample_on_a_boundary_belongs_to_the_segment_it_starts(shared: duckdb.DuckDBPyConnection) -> None:
    changes = [
        ContextChange(T0 + 1, T0 + 1, "area/u1", "batch_id", "B1"),
        ContextChange(T0 + 7, T0 + 7, "area/u1", "batch_id", "B2"),
        ContextChange(T0 + 9, T0 + 9, "area/u1", "batch_id", None),
    ]
    samples = [sample("area/u1", "T", t, float(t)) for t in (0, 1, 6, 7, 8, 9)]
    load_tables(shared, samples, changes)
    rows = shared.execute("SELECT batch_id, samples, min, max FROM batch_statistics ORDER BY 1").fetchall()
    assert rows == [("B1", 2, 1.0, 6.0), ("B2", 2, 7.0, 8.0)]
