"""Statistics across batches (uns.batch.spc, uns.batch.envelope, the trend's pooling) against
oracles: the standard library's statistics recomputed, each run rule against a brute-force
scan of every window, the envelope against a sample-by-sample lookup."""

from __future__ import annotations

import itertools
import math
import statistics
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.batch.envelope import MIN_REFERENCES, band, departures, slice_width
from uns.batch.spc import D2, D4, MIN_CAPABILITY_BATCHES, capability, imr_chart, run_rules
from uns.batch.trend import SeriesRow, TrendRequest, pool
from uns.errors import BatchError

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
#: few distinct values: ties, runs and alternations happen often
coarse = st.integers(-3, 3).map(float)


def _shaped(pieces: list[tuple[str, int, int]]) -> list[float]:
    """Runs that the rules look for: rising, falling, alternating, flat, at one level."""
    out: list[float] = []
    for shape, length, level in pieces:
        for i in range(length):
            last = out[-1] if out else 0.0
            step = {"up": 1.0 + i % 2, "down": -1.0, "alt": 2.0 if i % 2 else -2.0, "flat": 0.0}
            out.append(last + step[shape] if shape in step else float(level))
    return out


shaped = st.lists(
    st.tuples(st.sampled_from(["up", "down", "alt", "flat", "side"]), st.integers(1, 16), st.integers(-3, 3)),
    max_size=6,
).map(_shaped)
series = st.one_of(st.lists(finite, max_size=60), st.lists(coarse, max_size=60), shaped)


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, abs(b)))


@settings(max_examples=300, deadline=None)
@given(values=series)
def test_the_chart_equals_the_statistics_module(values: list[float]) -> None:
    chart = imr_chart(np.array(values))
    assert chart.n == len(values)
    if not values:
        assert chart.mean is None and chart.ucl is None
        return
    assert close(chart.mean, statistics.fmean(values))
    if len(values) < 2:
        assert chart.sigma_within is None and chart.sigma_overall is None and chart.mr_ucl is None
        return
    ranges = [abs(b - a) for a, b in itertools.pairwise(values)]
    mr = statistics.fmean(ranges)
    assert close(chart.mr_mean, mr)
    assert close(chart.sigma_within, mr / 1.128)
    assert close(chart.sigma_overall, statistics.stdev(values))
    assert close(chart.ucl, statistics.fmean(values) + 3 * mr / 1.128)
    assert close(chart.lcl, statistics.fmean(values) - 3 * mr / 1.128)
    assert close(chart.mr_ucl, 3.267 * mr)
    assert math.isnan(chart.moving_ranges[0])
    assert all(close(a, b) for a, b in zip(chart.moving_ranges[1:].tolist(), ranges, strict=True))


def brute_force_rules(
    x: list[float], centre: float, ucl: float | None, lcl: float | None
) -> set[tuple[int, int, int]]:
    """Every window of each rule's length that breaks it, looked at one by one; windows of one
    rule (and side or direction) that share two points or more are one violation."""
    found: list[tuple[int, object, int, int]] = []
    if ucl is not None and lcl is not None:
        found += [(1, i, i, i) for i, v in enumerate(x) if v > ucl or v < lcl]
    for i in range(len(x)):
        w = x[i : i + 9]
        if len(w) == 9 and (all(v > centre for v in w) or all(v < centre for v in w)):
            found.append((2, w[0] > centre, i, i + 8))
        w = x[i : i + 6]
        steps = [b - a for a, b in itertools.pairwise(w)]
        if len(w) == 6 and (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
            found.append((3, steps[0] > 0, i, i + 5))
        w = x[i : i + 14]
        steps = [b - a for a, b in itertools.pairwise(w)]
        if (
            len(w) == 14
            and all(s != 0 for s in steps)
            and all(a * b < 0 for a, b in itertools.pairwise(steps))
        ):
            found.append((4, None, i, i + 13))
    merged: list[tuple[int, object, int, int]] = []
    for rule, kind, first, last in sorted(found, key=lambda f: (f[0], str(f[1]), f[2])):
        if merged and rule != 1 and merged[-1][:2] == (rule, kind) and first <= merged[-1][3] - 1:
            merged[-1] = (rule, kind, merged[-1][2], max(merged[-1][3], last))
        else:
            merged.append((rule, kind, first, last))
    return {(rule, first, last) for rule, _, first, last in merged}


@settings(max_examples=400, deadline=None)
@given(values=series)
def test_each_run_rule_equals_a_brute_force_scan(values: list[float]) -> None:
    chart = imr_chart(np.array(values))
    got = {(v.rule, v.first, v.last) for v in run_rules(np.array(values), chart.mean, chart.ucl, chart.lcl)}
    want = brute_force_rules(values, chart.mean, chart.ucl, chart.lcl) if values else set()
    assert got == want


def test_the_run_rules_by_hand() -> None:
    x = np.array([0.0] * 3 + [1.0] * 9 + [0.0])  # 9 in a row above the mean (0.69)
    assert [(v.rule, v.first, v.last) for v in run_rules(x, float(x.mean()), None, None)] == [(2, 3, 11)]
    x = np.arange(7, dtype=np.float64)  # 7 rising: one violation of rule 3, not two
    assert [(v.rule, v.first, v.last) for v in run_rules(x, 3.0, None, None)] == [(3, 0, 6)]
    x = np.array([0.0, 1.0] * 7 + [1.0])  # 14 alternating, then a tie ends it
    assert [(v.rule, v.first, v.last) for v in run_rules(x, 0.5, None, None)] == [(4, 0, 13)]
    x = np.array([10.0, 10.2, 9.9, 10.1, 13.0, 10.0])
    chart = imr_chart(x)
    assert [(v.rule, v.first) for v in run_rules(x, chart.mean, chart.ucl, chart.lcl)] == []
    x = np.array([10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.1, 10.0, 9.9, 10.2, 12.0, 10.0])
    chart = imr_chart(x)
    assert [(v.rule, v.first) for v in run_rules(x, chart.mean, chart.ucl, chart.lcl)] == [(1, 10)]


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(finite, min_size=0, max_size=40),
    lsl=st.one_of(st.none(), finite),
    usl=st.one_of(st.none(), finite),
)
def test_capability_equals_the_formulas(values: list[float], lsl: float | None, usl: float | None) -> None:
    chart = imr_chart(np.array(values))
    cap = capability(chart, lsl, usl)
    if len(values) < MIN_CAPABILITY_BATCHES:
        assert (cap.cp, cap.cpk, cap.pp, cap.ppk) == (None,) * 4
        assert cap.notes == (f"capability needs at least 10 batches ({len(values)} here)",)
        return
    if lsl is None and usl is None:
        assert (cap.cp, cap.cpk, cap.pp, cap.ppk) == (None,) * 4 and cap.notes
        return
    mean = statistics.fmean(values)
    for sigma, potential, actual in (
        (
            statistics.fmean(abs(b - a) for a, b in itertools.pairwise(values)) / D2,
            cap.cp,
            cap.cpk,
        ),
        (statistics.stdev(values), cap.pp, cap.ppk),
    ):
        if not sigma > 0:
            assert potential is None and actual is None
            continue
        want_potential = (usl - lsl) / (6 * sigma) if lsl is not None and usl is not None else None
        sides = ([(usl - mean) / (3 * sigma)] if usl is not None else []) + (
            [(mean - lsl) / (3 * sigma)] if lsl is not None else []
        )
        assert close(potential, want_potential)
        assert close(actual, min(sides))
    if lsl is None or usl is None:
        assert any("need both action limits" in n for n in cap.notes)


def test_capability_notes_say_why() -> None:
    same = imr_chart(np.full(12, 5.0))
    assert capability(same, 4.0, 6.0).notes == (
        "sigma_within is 0: Cp and Cpk are not defined",
        "sigma_overall is 0: Pp and Ppk are not defined",
    )
    chart = imr_chart(np.array([1.0, 2.0] * 6))
    one_sided = capability(chart, None, 4.0)
    assert one_sided.cp is None and one_sided.cpk == pytest.approx((4.0 - 1.5) / (3 * 1.0 / D2))
    assert one_sided.notes == ("Cp and Pp need both action limits (only the upper one)",)
    assert D4 == 3.267


def test_a_chart_of_nothing_and_of_one_value() -> None:
    empty = imr_chart(np.empty(0))
    assert (empty.n, empty.mean, empty.sigma_within, empty.ucl, empty.mr_ucl) == (0, None, None, None, None)
    one = imr_chart(np.array([3.0]))
    assert (one.n, one.mean, one.ucl) == (1, 3.0, None)
    assert run_rules(np.array([3.0]), one.mean, one.ucl, one.lcl) == []


# ------------------------------------------------------------------ the golden envelope


references = st.lists(
    st.lists(st.tuples(st.integers(-3, 60), st.one_of(finite, st.just(math.nan))), max_size=15),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(refs=references, at=st.lists(st.integers(-5, 80), max_size=30), width=st.integers(1, 12))
def test_the_band_is_mean_and_stdev_of_the_reference_samples_in_the_slice(
    refs: list[list[tuple[int, float]]], at: list[int], width: int
) -> None:
    since = [np.array(sorted(t for t, _ in r), dtype=np.int64) for r in refs]
    values = [np.array([v for _, v in sorted(r)]) for r in refs]
    got = band(since, values, width, np.array(at, dtype=np.int64))
    for i, t in enumerate(at):
        inside = [
            (k, v) for k, r in enumerate(refs) for s, v in r
            if t >= 0 and s >= 0 and s // width == t // width and math.isfinite(v)
        ]  # fmt: skip
        have = [v for _, v in inside]
        if len({k for k, _ in inside}) < MIN_REFERENCES:
            assert math.isnan(got.mean[i]) and math.isnan(got.low[i]) and math.isnan(got.high[i])
            continue
        mean, sd = statistics.fmean(have), statistics.stdev(have)
        assert close(float(got.mean[i]), mean)
        assert math.isclose(got.high[i], mean + 3 * sd, rel_tol=1e-7, abs_tol=1e-6)
        assert math.isclose(got.low[i], mean - 3 * sd, rel_tol=1e-7, abs_tol=1e-6)


def test_the_slices_are_a_hundredth_of_the_phase_or_five_sampling_intervals() -> None:
    every_second = [np.arange(0, 600_000, 1000, dtype=np.int64)] * 3
    assert slice_width(every_second, 600_000) == 6000  # a hundredth of 10 min
    assert slice_width(every_second, 60_000) == 5000  # five samples of a reference
    assert slice_width([], 0) == 1


def test_departures_are_runs_outside_the_band_within_a_phase() -> None:
    since = [np.array([0, 1, 2, 3, 4, 5], dtype=np.int64), np.array([0, 1, 2, 3, 4], dtype=np.int64)]
    values = [np.zeros(6), np.full(5, 2.0)]
    envelope = band(since, values, 10, np.arange(6, dtype=np.int64) + np.array([0, 0, 0, 0, 0, 10]))
    # one slice [0, 10): mean 10/11, sd 1.04, band -2.22 .. 4.04; the last sample: a slice without any
    samples = np.array([1.0, 6.0, 7.0, 6.0, -4.0, 99.0])
    found = departures(samples, np.array([0, 0, 0, 1, 1, 1]), envelope)
    assert [(d.first, d.last, d.direction, d.peak) for d in found] == [
        (1, 2, 1, 7.0),  # above the band
        (3, 3, 1, 6.0),  # the phase changes: another departure
        (4, 4, -1, -4.0),  # below it; 99 has no band to leave
    ]


# ------------------------------------------------------------------ one value per batch


def row(path: str, n: int, mean: float, lo: float, hi: float, last: float, second: int) -> SeriesRow:
    return SeriesRow(path, n, mean, lo, hi, last, datetime.fromtimestamp(second, UTC), float(second))


def test_several_series_of_a_batch_are_pooled() -> None:
    rows = [row("a/u1", 3, 2.0, 1.0, 3.0, 3.0, 10), row("a/u1/x", 1, 6.0, 6.0, 6.0, 6.0, 5)]
    assert pool("mean", rows) == 3.0  # (3 * 2 + 6) / 4
    assert (pool("min", rows), pool("max", rows), pool("last", rows), pool("duration", rows)) == (1, 6, 3, 10)
    assert pool("mean", rows[:1]) == 2.0 and pool("mean", []) is None


def test_an_unknown_statistic_is_refused() -> None:
    with pytest.raises(BatchError, match="unknown statistic 'median'"):
        TrendRequest("T", stat="median")
