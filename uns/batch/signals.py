"""What the batch report computes over a parameter's samples (pure, vectorised with NumPy).

- :func:`find_excursions`: consecutive samples outside a limit form one excursion
  (split where the direction or the phase changes); its level is ``action`` when any
  sample passed an action limit, else ``alert``.  Limits are inclusive: a value equal
  to a limit is inside.  A non-finite value (NaN, an infinity) is never outside.
- :func:`describe`: samples, min, max, mean and sample standard deviation (over the
  finite values; ``samples`` counts every value).
- :func:`find_gaps`: the stretches longer than twice the expected interval without a
  sample, from the window's start to its end.
- :func:`minmax_downsample`: for plotting only, the lowest and highest sample of each
  pixel column, in time order, so a one-sample spike stays visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Excursion",
    "Stats",
    "describe",
    "find_excursions",
    "find_gaps",
    "minmax_downsample",
]

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Excursion:
    """Samples ``first`` .. ``last`` (indexes, inclusive) outside a limit."""

    first: int
    last: int
    direction: int  # +1 above a high limit, -1 below a low limit
    level: str  # action | alert
    peak: float  # the most extreme value: the highest above, the lowest below
    limit: float  # the limit passed: the action limit for action, else the alert limit

    @property
    def samples(self) -> int:
        return self.last - self.first + 1


def find_excursions(
    values: Floats,
    group: Ints,
    *,
    action_low: Floats,
    alert_low: Floats,
    alert_high: Floats,
    action_high: Floats,
) -> list[Excursion]:
    """Excursions of one time-ordered series; limits per sample (NaN: no such limit),
    ``group`` per sample (the phase): an excursion never spans two groups."""
    n = len(values)
    if n == 0:
        return []
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        above_action = (values > action_high) & finite
        below_action = (values < action_low) & finite
        above = above_action | ((values > alert_high) & finite)
        below = below_action | ((values < alert_low) & finite)
    state = np.where(above, 1, np.where(below, -1, 0)).astype(np.int8)
    action = above_action | below_action
    change = (state[1:] != state[:-1]) | (group[1:] != group[:-1])
    out = state != 0
    starts = np.flatnonzero(out & np.concatenate(([True], change)))
    ends = np.flatnonzero(out & np.concatenate((change, [True])))
    if len(starts) == 0:
        return []
    bounds = np.empty(2 * len(starts), dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts, ends + 1
    padded = np.concatenate((values, [0.0]))
    highest = np.maximum.reduceat(padded, bounds)[0::2]
    lowest = np.minimum.reduceat(padded, bounds)[0::2]
    any_action = np.maximum.reduceat(np.concatenate((action, [False])).astype(np.int8), bounds)[0::2]
    found = []
    for k, (first, last) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        direction = int(state[first])
        is_action = bool(any_action[k])
        if direction > 0:
            limit = action_high[first] if is_action else alert_high[first]
            peak = highest[k]
        else:
            limit = action_low[first] if is_action else alert_low[first]
            peak = lowest[k]
        found.append(
            Excursion(first, last, direction, "action" if is_action else "alert", float(peak), float(limit))
        )
    return found


@dataclass(frozen=True, slots=True)
class Stats:
    samples: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None  # sample standard deviation (n - 1); None below two values

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "min": self.min, "max": self.max, "mean": self.mean, "std": self.std}


def describe(values: Floats) -> Stats:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return Stats(len(values), None, None, None, None)
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return Stats(len(values), float(finite.min()), float(finite.max()), float(finite.mean()), std)


def find_gaps(ts: Ints, start_ms: int, end_ms: int, interval_s: float) -> list[tuple[int, int]]:
    """``(from, to)`` of every stretch longer than ``2 * interval_s`` without a sample in
    ``[start_ms, end_ms]``: between two samples, before the first, after the last (sorted ``ts``)."""
    edges = np.concatenate(([start_ms], ts, [end_ms])).astype(np.int64)
    widths = np.diff(edges)
    wide = np.flatnonzero(widths > 2 * interval_s * 1000.0)
    return [(int(edges[i]), int(edges[i + 1])) for i in wide.tolist()]


def minmax_downsample(x: Ints, y: Floats, columns: int) -> tuple[Ints, Floats]:
    """At most ``2 * columns`` points of a time-ordered series: per column of equal width
    over ``x``'s range, its lowest and its highest sample (the first of equals), in time
    order.  Non-finite values are left out."""
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) <= 2 * columns:
        return x, y
    span = int(x[-1] - x[0]) + 1
    column = ((x - x[0]) * columns // span).astype(np.int64)  # non-decreasing: x is sorted
    starts = np.concatenate(([0], np.flatnonzero(column[1:] != column[:-1]) + 1))
    which = np.repeat(np.arange(len(starts)), np.diff(np.concatenate((starts, [len(x)]))))
    chosen = [
        _first_per_group(y == reduce.reduceat(y, starts)[which], which) for reduce in (np.minimum, np.maximum)
    ]
    picked = np.unique(np.concatenate(chosen))
    return x[picked], y[picked]


def _first_per_group(hit: NDArray[np.bool_], group: Ints) -> Ints:
    """The first index where ``hit`` holds, per value of the non-decreasing ``group``."""
    idx = np.flatnonzero(hit)
    first = np.concatenate(([True], group[idx][1:] != group[idx][:-1]))
    return idx[first]
