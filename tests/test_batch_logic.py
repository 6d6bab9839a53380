"""The batch report's pure logic (uns.batch) against brute-force oracles."""

from __future__ import annotations

import fnmatch
import itertools
import math
import re
import statistics
import tomllib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.batch.signals import describe, find_excursions, find_gaps, minmax_downsample
from uns.batch.spec import Limits, fallback_limits, parse_spec
from uns.batch.times import iso
from uns.errors import BatchError

NAN = math.nan


def scan_excursions(
    values: list[float], groups: list[int], limits: list[tuple[float, float, float, float]]
) -> list[tuple[int, int, int, str, float, float]]:
    """One sample at a time: (first, last, direction, level, peak, limit) of every run."""
    out: list[tuple[int, int, int, str, float, float]] = []
    current: list[int] = []

    def side(i: int) -> tuple[int, bool]:
        v = values[i]
        if not math.isfinite(v):
            return 0, False
        xl, al, ah, xh = limits[i]
        if v > xh or v > ah:
            return 1, v > xh
        if v < xl or v < al:
            return -1, v < xl
        return 0, False

    def close() -> None:
        if not current:
            return
        direction = side(current[0])[0]
        action = any(side(i)[1] for i in current)
        run = [values[i] for i in current]
        xl, al, ah, xh = limits[current[0]]
        peak = max(run) if direction > 0 else min(run)
        limit = (xh if action else ah) if direction > 0 else (xl if action else al)
        out.append((current[0], current[-1], direction, "action" if action else "alert", peak, limit))
        current.clear()

    for i in range(len(values)):
        direction, _ = side(i)
        if current and (direction != side(current[0])[0] or groups[i] != groups[current[0]]):
            close()
        if direction:
            current.append(i)
        else:
            close()
    close()
    return out


limit_sets = st.sampled_from(
    [
        (NAN, NAN, NAN, NAN),
        (0.0, 2.0, 8.0, 10.0),
        (NAN, 3.0, 7.0, NAN),
        (1.0, NAN, NAN, 9.0),
        (4.0, 4.0, 6.0, 6.0),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.integers(-2, 12).map(float), st.sampled_from([NAN, math.inf, -math.inf])),
            st.integers(0, 2),
        ),
        max_size=60,
    ),
    st.lists(limit_sets, min_size=3, max_size=3),
)
def test_excursions_equal_a_brute_force_scan(series: list[tuple[float, int]], per_group: list) -> None:
    values = [v for v, _ in series]
    groups = sorted(g for _, g in series)  # phases follow each other
    limits = [per_group[g] for g in groups]
    arr = {k: np.array([lim[i] for lim in limits], dtype=np.float64) for i, k in enumerate(
        ("action_low", "alert_low", "alert_high", "action_high"))}  # fmt: skip
    got = find_excursions(np.array(values, dtype=np.float64), np.array(groups, dtype=np.int64), **arr)
    want = scan_excursions(values, groups, limits)
    assert [(e.first, e.last, e.direction, e.level, e.peak, e.limit) for e in got] == want
    assert all(e.samples == e.last - e.first + 1 for e in got)


def test_excursion_hand_case() -> None:
    values = np.array([5.0, 8.5, 11.0, 8.5, 5.0, 1.0, 1.0, 5.0, 10.0])
    groups = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    named = (("action_low", 0.0), ("alert_low", 2.0), ("alert_high", 8.0), ("action_high", 10.0))
    limits = {k: np.full(9, v) for k, v in named}
    got = find_excursions(values, groups, **limits)
    assert [(e.first, e.last, e.level, e.peak, e.limit) for e in got] == [
        (1, 3, "action", 11.0, 10.0),  # one excursion, action because one sample passed 10
        (5, 5, "alert", 1.0, 2.0),  # the phase changes: two excursions
        (6, 6, "alert", 1.0, 2.0),
        (8, 8, "alert", 10.0, 8.0),  # equal to the action limit is inside it: an alert
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 10_000), max_size=40).map(sorted),
    st.integers(0, 100),
    st.integers(1, 3000),
    st.floats(0.1, 5.0),
)
def test_gaps_equal_a_brute_force_scan(ts: list[int], start_pad: int, span: int, interval: float) -> None:
    start = (ts[0] if ts else 0) - start_pad
    end = (ts[-1] if ts else 0) + span
    got = find_gaps(np.array(ts, dtype=np.int64), start, end, interval)
    points = [start, *ts, end]
    want = [(a, b) for a, b in itertools.pairwise(points) if b - a > 2 * interval * 1000]
    assert got == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), max_size=50))
def test_describe_equals_the_statistics_module(values: list[float]) -> None:
    got = describe(np.array(values, dtype=np.float64))
    assert got.samples == len(values)
    if not values:
        assert got.min is None and got.mean is None
        return
    assert got.min == min(values) and got.max == max(values)
    assert got.mean == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-6)
    if len(values) > 1:
        assert got.std == pytest.approx(statistics.stdev(values), rel=1e-6, abs=1e-6)
    else:
        assert got.std is None


def test_describe_leaves_out_non_finite_values() -> None:
    got = describe(np.array([1.0, NAN, 3.0, math.inf]))
    assert (got.samples, got.min, got.max, got.mean) == (4, 1.0, 3.0, 2.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.floats(-100, 100)), min_size=1, max_size=400),
    st.integers(1, 20),
)
def test_downsampling_keeps_every_columns_extremes_in_time_order(steps: list, columns: int) -> None:
    x = np.cumsum([s for s, _ in steps]).astype(np.int64)
    y = np.array([v for _, v in steps], dtype=np.float64)
    dx, dy = minmax_downsample(x, y, columns)
    assert len(dx) <= max(2 * columns, len(x))
    assert list(dx) == sorted(dx)
    if len(x) <= 2 * columns:
        assert list(dx) == list(x)
        return
    span = int(x[-1] - x[0]) + 1
    for c in set(((x - x[0]) * columns // span).tolist()):
        inside = ((x - x[0]) * columns // span) == c
        kept = ((dx - x[0]) * columns // span) == c
        assert dy[kept].min() == y[inside].min() and dy[kept].max() == y[inside].max()


SPEC = """
name = "test"
[[limit]]
metric = "T"
action_high = 10.0
[[limit]]
metric = "T"
path = "site/*"
action_high = 20.0
[[limit]]
metric = "T"
path = "site/unit-1*"
action_high = 30.0
[[limit]]
metric = "T"
product = "P"
action_high = 40.0
[[limit]]
metric = "T"
phase = "growth"
action_high = 50.0
[[limit]]
metric = "T"
recipe = "R"
path = "site/*"
action_high = 60.0
"""


def brute_winner(
    entries: list[dict], metric: str, path: str, product: str, recipe: str, phase: str
) -> float | None:
    """Most specific by the documented order, over every matching entry."""

    def ok(e: dict) -> bool:
        return (
            e["metric"] == metric
            and ("path" not in e or fnmatch.fnmatchcase(path, e["path"]))
            and all(e.get(k, v) == v for k, v in (("product", product), ("recipe", recipe), ("phase", phase)))
        )

    def rank(item: tuple[int, dict]) -> tuple:
        i, e = item
        literal = len(e["path"].replace("*", "")) if "path" in e else -1
        return (*(k in e for k in ("phase", "recipe", "product", "path")), literal, -i)

    found = [(i, e) for i, e in enumerate(entries) if ok(e)]
    return max(found, key=rank)[1]["action_high"] if found else None


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["site/unit-1", "site/unit-2", "other/x", "site/unit-10/sub"]),
    st.sampled_from(["P", "Q"]),
    st.sampled_from(["R", "S"]),
    st.sampled_from(["growth", "harvest"]),
)
def test_the_most_specific_entry_wins(path: str, product: str, recipe: str, phase: str) -> None:
    spec = parse_spec(SPEC)
    entries = tomllib.loads(SPEC)["limit"]
    got = spec.resolve("T", path, product=product, recipe=recipe, phase=phase)
    assert (got.action_high if got else None) == brute_winner(entries, "T", path, product, recipe, phase)
    assert spec.resolve("other", path, product=product, recipe=recipe, phase=phase) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[limit]]\nmetric = "T"\nalert_high = 5\naction_high = 4',
            "alert_high 5.0 is above action_high 4.0",
        ),
        ('[[limit]]\nmetric = "T"\nbogus = 1', "unknown key 'bogus'"),
        ("[[limit]]\nalert_high = 1", "metric (text) is required"),
        (
            '[[limit]]\nmetric = "T"\n[[limit]]\nmetric = "T"',
            "limit[1] has the same metric and scope as limit[0]",
        ),
        ('[[limit]]\nmetric = "T"\nexpected_interval_s = 0', "expected_interval_s must be positive"),
        ('[[limit]]\nmetric = "T"\nalert_low = "x"', "alert_low must be a finite number"),
        ("limit = 3", "limit must be an array of tables"),
        ("nope = 1", "unknown top-level key 'nope'"),
        ("[[limit", "not valid TOML"),
    ],
)
def test_bad_spec_files_are_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(BatchError, match=re.escape(message)) as info:
        parse_spec(text, file="spec.toml")
    assert str(info.value).startswith("spec.toml: ")


def test_fallbacks_model_then_birth() -> None:
    birth = {"engLow": 1.0, "engHigh": 9.0}
    assert fallback_limits(2.0, None, birth) == Limits(action_low=2.0, source="model")
    assert fallback_limits(None, None, birth) == Limits(action_low=1.0, action_high=9.0, source="birth")
    assert fallback_limits(None, None, {"engLow": "x", "engHigh": True}) is None


def test_iso_times_have_milliseconds_and_z() -> None:
    assert iso(1_764_583_200_000) == "2025-12-01T10:00:00.000Z"
    assert iso(1_764_583_200_123) == "2025-12-01T10:00:00.123Z"
    assert iso(None) is None
