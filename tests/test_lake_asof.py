"""measurements_asof: context recomputed by event time, checked against the engine's
own ContextStore (the semantics of the context columns known at ingest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.lake_helpers import load_tables as load
from tests.lake_helpers import views_connection as asof_connection
from uns.core.context import ContextStore
from uns.core.events import Batch, ContextChange, Sample
from uns.lake import LakeSink, connect
from uns.lake.schemas import SCHEMAS
from uns.sparkplug.datatypes import DataType

T0 = 1_735_689_600_000
CONTEXT_PATHS = ["a", "a/b", "a/b/c", "a/d", "a/b/c/e", "ab"]
MEASURED_PATHS = [*CONTEXT_PATHS, "a/b/c/e/f", "a/bc", "z"]  # "a/bc" is not below "a/b"
KEYS = ["batch_id", "phase", "lot"]


def measurement(path: str, ts: int, context: dict[str, str] | None = None) -> Sample:
    return Sample("G", "N", None, "temp", DataType.Double, 1.0, ts, ts, path=path, context=context)


@pytest.fixture(scope="module")
def shared() -> Iterator[duckdb.DuckDBPyConnection]:
    con = asof_connection([], [])
    yield con
    con.close()


def oracle(changes: list[ContextChange], path: str, ts: int) -> dict[str, str]:
    store = ContextStore(window_ms=10**12)
    for change in changes:  # in arrival order, as the engine applies them
        store.apply(change)
    return dict(store.at(path, ts))


changes_strategy = st.lists(
    st.builds(
        lambda ts, path, key, value: ContextChange(T0 + ts, T0 + ts, path, key, value),
        st.integers(0, 20),
        st.sampled_from(CONTEXT_PATHS),
        st.sampled_from(KEYS),
        st.sampled_from([None, "", "x", "y", "z"]),
    ),
    max_size=14,
)
probes_strategy = st.lists(
    st.tuples(st.sampled_from(MEASURED_PATHS), st.integers(-1, 22)), min_size=1, max_size=10
)


@settings(max_examples=120, deadline=None)
@given(changes=changes_strategy, probes=probes_strategy)
def test_asof_context_equals_the_context_store(
    shared: duckdb.DuckDBPyConnection, changes: list[ContextChange], probes: list[tuple[str, int]]
) -> None:
    samples = [measurement(path, T0 + ts) for path, ts in probes]
    load(shared, samples, changes)
    got = shared.execute(
        "SELECT path, epoch_ms(ts), context, batch_id, phase FROM measurements_asof"
    ).fetchall()
    assert len(got) == len(samples)
    for path, ts, context, batch_id, phase in got:
        want = oracle(changes, path, ts)
        assert (json.loads(context) if context else {}) == want, (path, ts - T0)
        assert batch_id == want.get("batch_id")
        assert phase == want.get("phase")


def test_hand_written_inheritance_cases() -> None:
    changes = [
        ContextChange(T0 + 0, T0, "site", "batch_id", "B1"),
        ContextChange(T0 + 0, T0, "site/line1", "phase", "mix"),
        ContextChange(T0 + 10, T0, "site/line1", "batch_id", "B2"),  # overrides below line1
        ContextChange(T0 + 20, T0, "site/line1", "batch_id", None),  # clear: B1 shows through
        ContextChange(T0 + 30, T0, "site/line1", "phase", ""),  # empty value hides phase
        ContextChange(T0 + 40, T0, "site", "batch_id", "B3"),
        ContextChange(T0 + 40, T0 + 1, "site", "batch_id", "B4"),  # same ts: later arrival wins
    ]
    probes = [(p, T0 + t) for p in ("site/line1/mixer", "site/line2") for t in (-1, 0, 5, 10, 25, 35, 40)]
    con = asof_connection([measurement(p, t) for p, t in probes], changes)
    got = con.execute(
        "SELECT path, epoch_ms(ts) - ?, batch_id, phase FROM measurements_asof ORDER BY path, ts", [T0]
    ).fetchall()
    con.close()
    assert got == [
        ("site/line1/mixer", -1, None, None),
        ("site/line1/mixer", 0, "B1", "mix"),
        ("site/line1/mixer", 5, "B1", "mix"),
        ("site/line1/mixer", 10, "B2", "mix"),
        ("site/line1/mixer", 25, "B1", "mix"),
        ("site/line1/mixer", 35, "B1", None),
        ("site/line1/mixer", 40, "B4", None),
        ("site/line2", -1, None, None),
        ("site/line2", 0, "B1", None),
        ("site/line2", 5, "B1", None),
        ("site/line2", 10, "B1", None),
        ("site/line2", 25, "B1", None),
        ("site/line2", 35, "B1", None),
        ("site/line2", 40, "B4", None),
    ]


async def test_late_context_corrects_history_only_in_the_asof_view(tmp_path: Path) -> None:
    path = "acme/basel/pilot/granulation/gr-201"
    async with LakeSink(tmp_path) as sink:
        start = ContextChange(T0, T0, path, "batch_id", "B1")
        sink.add(Batch(context=[start]))
        ingest = {"batch_id": "B1"}
        sink.add(Batch(samples=[measurement(f"{path}/{n}", T0 + n * 1000, ingest) for n in range(10)]))
        # the MES reports late that batch B2 started at T0 + 5 s on the whole unit
        late = ContextChange(T0 + 5000, T0 + 60_000, path, "batch_id", "B2")
        sink.add(Batch(context=[late]))
    con = connect(tmp_path)
    ingest_view = con.execute("SELECT batch_id, count(*) FROM measurements GROUP BY 1 ORDER BY 1").fetchall()
    asof_view = con.execute(
        "SELECT batch_id, count(*) FROM measurements_asof GROUP BY 1 ORDER BY 1"
    ).fetchall()
    same_rows = con.execute(
        "SELECT count(*) FROM measurements m JOIN measurements_asof a USING (ts, path, metric)"
    ).fetchall()
    con.close()
    assert ingest_view == [("B1", 10)]
    assert asof_view == [("B1", 5), ("B2", 5)]
    assert same_rows == [(10,)]


def test_empty_context_gives_null_columns() -> None:
    con = asof_connection([measurement("a/b", T0)], [])
    assert con.execute("SELECT batch_id, context FROM measurements_asof").fetchall() == [(None, None)]
    con.close()


def test_schema_of_asof_equals_measurements() -> None:
    con = asof_connection([], [])
    m = con.execute("DESCRIBE measurements").fetchall()
    a = con.execute("DESCRIBE measurements_asof").fetchall()
    con.close()
    assert [(r[0], r[1]) for r in m] == [(r[0], r[1]) for r in a]
    assert pa.schema(SCHEMAS["measurements"]).names == [r[0] for r in m]
