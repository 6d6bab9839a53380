"""The batches and batch_phases views against the engine's own ContextStore (the oracle)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.lake_helpers import load_tables, views_connection
from uns.core.context import ContextStore
from uns.core.events import ContextChange

T0 = 1_735_689_600_000
PATHS = ["area", "area/u1", "area/u1/sub", "area/u2"]


@pytest.fixture(scope="module")
def shared() -> Iterator[duckdb.DuckDBPyConnection]:
    con = views_connection([], [])
    yield con
    con.close()


def oracle(changes: list[ContextChange]) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """(batches rows, batch_phases rows) from the effective context at every change instant."""
    store = ContextStore(window_ms=10**12)
    for change in changes:
        store.apply(change)
    instants = sorted({c.ts for c in changes})
    batch_paths = {c.path for c in changes if c.key in ("batch_id", "phase")}
    unit_paths = {c.path for c in changes if c.key == "batch_id"}
    batches, phases = set(), set()
    for path in batch_paths:
        states = [(t, dict(store.at(path, t))) for t in instants]
        runs: list[list[Any]] = []  # [batch, phase, start, end, products]
        for t, ctx in states:
            key = (ctx.get("batch_id"), ctx.get("phase"))
            if runs and (runs[-1][0], runs[-1][1]) == key:
                runs[-1][4].append((t, ctx.get("product")))
                continue
            if runs:
                runs[-1][3] = t
            runs.append([key[0], key[1], t, None, [(t, ctx.get("product"))]])
        runs = [r for r in runs if r[0] is not None]
        for batch, phase, start, end, _ in runs:
            if phase is not None:
                phases.add((batch, path, phase, start - T0, None if end is None else end - T0))
        if path not in unit_paths:
            continue
        for batch in {r[0] for r in runs}:
            mine = [r for r in runs if r[0] == batch]
            products = [(t, p) for r in mine for t, p in r[4] if p is not None]
            end = None if any(r[3] is None for r in mine) else max(r[3] for r in mine) - T0
            product = max(products)[1] if products else None
            batches.add(
                (batch, path, product, min(r[2] for r in mine) - T0, end, "open" if end is None else "closed")
            )
    return batches, phases


changes_strategy = st.lists(
    st.builds(
        lambda ts, path, key, value: ContextChange(T0 + ts, T0 + ts, path, key, value),
        st.integers(0, 12),
        st.sampled_from(PATHS),
        st.sampled_from(["batch_id", "phase", "product"]),
        st.sampled_from([None, "", "x", "y"]),
    ),
    max_size=14,
)


def view_rows(con: duckdb.DuckDBPyConnection) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    batches = con.execute(
        """SELECT batch_id, path, product, epoch_ms(start) - ?, epoch_ms("end") - ?, status FROM batches""",
        [T0, T0],
    ).fetchall()
    phases = con.execute(
        """SELECT batch_id, path, phase, epoch_ms(start) - ?, epoch_ms("end") - ? FROM batch_phases""",
        [T0, T0],
    ).fetchall()
    return set(batches), set(phases)


@settings(max_examples=150, deadline=None)
@given(changes=changes_strategy)
def test_batch_views_equal_the_context_store(
    shared: duckdb.DuckDBPyConnection, changes: list[ContextChange]
) -> None:
    load_tables(shared, [], changes)
    got_batches, got_phases = view_rows(shared)
    want_batches, want_phases = oracle(changes)
    assert got_phases == want_phases
    assert got_batches == want_batches


def test_a_late_correction_moves_the_batch_and_a_sub_unit_inherits_it() -> None:
    changes = [
        ContextChange(T0 + 10_000, T0 + 10_000, "area/u1", "batch_id", "B1"),
        ContextChange(T0 + 10_000, T0 + 10_000, "area/u1", "phase", "mix"),
        ContextChange(T0 + 20_000, T0 + 20_000, "area/u1/sub", "phase", "dose"),  # a sub-unit's own phase
        ContextChange(T0 + 30_000, T0 + 30_000, "area/u1", "batch_id", None),  # the batch ends
        # the EBR reports afterwards that the batch really started at 5 s
        ContextChange(T0 + 5_000, T0 + 40_000, "area/u1", "batch_id", "B1"),
        ContextChange(T0 + 10_000, T0 + 41_000, "area/u1", "phase", "charge"),  # corrects "mix"
    ]
    con = views_connection([], changes)
    batches, phases = view_rows(con)
    duration = con.execute("SELECT duration_s FROM batches").fetchall()
    con.close()
    assert batches == {("B1", "area/u1", None, 5_000, 30_000, "closed")}
    assert duration == [(25.0,)]
    assert phases == {
        ("B1", "area/u1", "charge", 10_000, 30_000),
        ("B1", "area/u1/sub", "charge", 10_000, 20_000),  # inherits the unit's batch and phase
        ("B1", "area/u1/sub", "dose", 20_000, 30_000),
    }


def test_an_open_batch_has_no_end() -> None:
    con = views_connection([], [ContextChange(T0, T0, "area/u2", "batch_id", "B7")])
    assert con.execute("""SELECT batch_id, "end", duration_s, status FROM batches""").fetchall() == [
        ("B7", None, None, "open")
    ]
    con.close()
