"""Statistical process control across batches (pure): the individuals / moving-range chart,
the run rules and process capability of one value per batch.

Continued process verification (FDA process validation stage 3, EU GMP Annex 15) plots
one value per batch -- a parameter's mean over the batch, say -- in batch order:

- :func:`imr_chart`: the centre line is the mean of the values; ``sigma_within`` is the
  mean moving range (``|x[i] - x[i-1]|``) divided by d2 = 1.128 (the bias constant of a
  range of two); the control limits are ``mean +- 3 sigma_within``; the moving-range
  chart's upper limit is D4 = 3.267 times the mean moving range (its lower limit is 0);
  ``sigma_overall`` is the sample standard deviation (n - 1).
- :func:`run_rules`: the Western Electric / Nelson rules 1-4 -- (1) a point beyond a
  control limit; (2) 9 points in a row on one side of the centre line; (3) 6 points in a
  row steadily increasing or decreasing; (4) 14 points in a row alternating up and down.
  A point on the centre line is on neither side; equal neighbours neither rise nor fall
  (nor alternate).  Each violation is a maximal run of points (rule 1: one point), so a
  run of 12 on one side is one violation of rule 2, not four.
- :func:`capability`: Cp = (USL - LSL) / 6 sigma_within, Cpk = min(USL - mean, mean -
  LSL) / 3 sigma_within, Pp and Ppk the same with ``sigma_overall``; with one limit only,
  Cpk and Ppk are that side's and Cp/Pp are not computed; under
  :data:`MIN_CAPABILITY_BATCHES` values nothing is, and the notes say why.

The values must be finite; the caller leaves out batches without a value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "D2",
    "D4",
    "MIN_CAPABILITY_BATCHES",
    "RULES",
    "Capability",
    "Chart",
    "Violation",
    "capability",
    "imr_chart",
    "run_rules",
]

Floats = NDArray[np.float64]

#: d2 of a subgroup of two: the mean range of two normal values is 1.128 sigma
D2: Final = 1.128
#: D4 of a subgroup of two: the moving-range chart's upper limit over the mean moving range
D4: Final = 3.267
#: capability is reported from this many batches on (10-25 are usual; fewer say little)
MIN_CAPABILITY_BATCHES: Final = 10
#: rule number -> what it means (the points in a row it takes)
RULES: Final = {
    1: "a point beyond 3 sigma_within",
    2: "9 points in a row on one side of the centre line",
    3: "6 points in a row steadily increasing or decreasing",
    4: "14 points in a row alternating up and down",
}


@dataclass(frozen=True, slots=True)
class Chart:
    """The individuals and moving-range chart of a series (None where it takes more values)."""

    n: int
    mean: float | None
    sigma_within: float | None  # mean moving range / d2; None under two values
    sigma_overall: float | None  # sample standard deviation; None under two values
    ucl: float | None
    lcl: float | None
    mr_mean: float | None
    mr_ucl: float | None
    #: |x[i] - x[i-1]| per value, NaN for the first
    moving_ranges: Floats = field(default_factory=lambda: np.empty(0, np.float64))


def imr_chart(values: Floats) -> Chart:
    """The I-MR chart of ``values`` (finite, in batch order)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Chart(0, None, None, None, None, None, None, None)
    mean = float(np.mean(x))
    mr = np.concatenate(([np.nan], np.abs(np.diff(x))))
    if n < 2:
        return Chart(n, mean, None, None, None, None, None, None, mr)
    mr_mean = float(np.mean(mr[1:]))
    sigma = mr_mean / D2
    return Chart(
        n=n,
        mean=mean,
        sigma_within=sigma,
        sigma_overall=float(np.std(x, ddof=1)),
        ucl=mean + 3.0 * sigma,
        lcl=mean - 3.0 * sigma,
        mr_mean=mr_mean,
        mr_ucl=D4 * mr_mean,
        moving_ranges=mr,
    )


@dataclass(frozen=True, slots=True)
class Violation:
    """Points ``first`` .. ``last`` (indexes, inclusive) break run rule ``rule``."""

    rule: int
    first: int
    last: int

    @property
    def points(self) -> range:
        return range(self.first, self.last + 1)


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """``(first, last)`` of every maximal run of True in ``mask``."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _same_sign_runs(signs: NDArray[np.int8], points: int, offset: int) -> list[tuple[int, int]]:
    """Maximal runs of equal non-zero ``signs`` covering at least ``points`` points, where a run
    of k signs covers k + ``offset`` points; as point indexes."""
    out = []
    for sign in (1, -1):
        for first, last in _runs(signs == sign):
            if last - first + 1 + offset >= points:
                out.append((first, last + offset))
    return out


def run_rules(values: Floats, centre: float | None, ucl: float | None, lcl: float | None) -> list[Violation]:
    """The violations of rules 1-4 in ``values`` (in batch order), ordered by first point and rule.

    Rule 1 needs the control limits (none under two values); rules 2-4 the centre line."""
    x = np.asarray(values, dtype=np.float64)
    found: list[Violation] = []
    if len(x) == 0 or centre is None:
        return found
    if ucl is not None and lcl is not None:
        found += [Violation(1, i, i) for i in np.flatnonzero((x > ucl) | (x < lcl)).tolist()]
    side = np.sign(x - centre).astype(np.int8)
    found += [Violation(2, a, b) for a, b in _same_sign_runs(side, 9, 0)]
    step = np.sign(np.diff(x)).astype(np.int8)
    found += [Violation(3, a, b) for a, b in _same_sign_runs(step, 6, 1)]
    # rule 4 over pairs of neighbouring steps: step k and step k + 1 alternate
    alternate = (step[:-1] != 0) & (step[1:] == -step[:-1])
    found += [Violation(4, a, b + 2) for a, b in _runs(alternate) if b - a + 3 >= 14]
    return sorted(found, key=lambda v: (v.first, v.rule, v.last))


@dataclass(frozen=True, slots=True)
class Capability:
    """Cp, Cpk (sigma_within), Pp, Ppk (sigma_overall) against ``lsl``/``usl``; None where
    not computed, and ``notes`` saying why."""

    n: int
    lsl: float | None
    usl: float | None
    cp: float | None = None
    cpk: float | None = None
    pp: float | None = None
    ppk: float | None = None
    notes: tuple[str, ...] = ()


def _indexes(
    mean: float, sigma: float | None, lsl: float | None, usl: float | None
) -> tuple[float | None, float | None]:
    """(potential, actual) capability for one sigma: Cp/Cpk or Pp/Ppk."""
    if sigma is None or not sigma > 0 or not math.isfinite(sigma):
        return None, None
    potential = (usl - lsl) / (6.0 * sigma) if lsl is not None and usl is not None else None
    sides = [(usl - mean) / (3.0 * sigma)] if usl is not None else []
    sides += [(mean - lsl) / (3.0 * sigma)] if lsl is not None else []
    return potential, min(sides) if sides else None


def capability(chart: Chart, lsl: float | None, usl: float | None) -> Capability:
    """Process capability of the charted values against the limits ``lsl``/``usl``."""
    n = chart.n
    if n < MIN_CAPABILITY_BATCHES:
        note = f"capability needs at least {MIN_CAPABILITY_BATCHES} batches ({n} here)"
        return Capability(n, lsl, usl, notes=(note,))
    if lsl is None and usl is None:
        return Capability(n, lsl, usl, notes=("no action limit applies to these batches",))
    assert chart.mean is not None
    notes = []
    if lsl is None or usl is None:
        notes.append(
            f"Cp and Pp need both action limits (only the {'upper' if lsl is None else 'lower'} one)"
        )
    cp, cpk = _indexes(chart.mean, chart.sigma_within, lsl, usl)
    pp, ppk = _indexes(chart.mean, chart.sigma_overall, lsl, usl)
    if cpk is None:
        notes.append("sigma_within is 0: Cp and Cpk are not defined")
    if ppk is None:
        notes.append("sigma_overall is 0: Pp and Ppk are not defined")
    return Capability(n, lsl, usl, cp, cpk, pp, ppk, tuple(notes))
