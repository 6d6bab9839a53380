"""The review rules beyond the parameters: equipment readiness, materials, results,
alarms, bad-quality data (pure: values in, findings out; docs/batches.md section 4).

- :func:`effective_at`: the context one path has at one instant, with the context
  store's inheritance (:class:`uns.core.context.ContextStore`), and when each value was set;
- :func:`equipment_problems`: why a unit was not ready for use when a batch started;
- :func:`material_problems`: why a charged lot was not fit for use when it was charged;
- :func:`alarm_intervals`: the intervals in which an alarm metric was active;
- :func:`runs`: consecutive flagged samples (bad quality) as runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "EQUIPMENT_KEYS",
    "READY_STATUSES",
    "Change",
    "Readiness",
    "alarm_intervals",
    "effective_at",
    "equipment_problems",
    "material_problems",
    "parse_instant",
    "runs",
]

#: the context keys of equipment status (docs/model.md section 4)
EQUIPMENT_KEYS: Final = ("equipment_status", "clean_expires", "calibration_due")
#: the values of ``equipment_status``
READY_STATUSES: Final = ("clean", "dirty", "in_use", "maintenance", "out_of_service")
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Change:
    """One context change: ``value`` None clears the path's own value; ``order`` is the
    arrival order (the later arrival wins at equal ``ts``)."""

    path: str
    key: str
    ts: int
    value: str | None
    order: int = 0


def _above_or_at(path: str, other: str) -> bool:
    return path == other or path.startswith(other + "/")


def effective_at(
    changes: Iterable[Change], path: str, ts: int, *, inclusive: bool = True
) -> dict[str, tuple[str, int]]:
    """``{key: (value, set at)}``: the context ``path`` has at ``ts`` (changes at ``ts``
    count only when ``inclusive``): per key, the deepest path at or above ``path`` whose
    own value is set wins; an empty value hides the key (it is left out)."""
    latest: dict[tuple[str, str], Change] = {}
    for c in changes:
        if not _above_or_at(path, c.path) or c.ts > ts or (c.ts == ts and not inclusive):
            continue
        seen = latest.get((c.path, c.key))
        if seen is None or (c.ts, c.order) >= (seen.ts, seen.order):
            latest[(c.path, c.key)] = c
    out: dict[str, tuple[str, int]] = {}
    depth: dict[str, int] = {}
    for (where, name), c in latest.items():
        if c.value is None or len(where) <= depth.get(name, -1):
            continue
        depth[name] = len(where)
        out[name] = (c.value, c.ts)
    return {k: v for k, v in out.items() if v[0] != ""}


def parse_instant(text: str) -> int | None:
    """Epoch ms of an ISO 8601 time with its zone, or of a date (its end, UTC); None when
    the text is neither."""
    try:
        if len(text.strip()) == 10:
            day = dt.date.fromisoformat(text.strip())
            return (day - _EPOCH.date()).days * 86_400_000 + 86_399_999
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Readiness:
    """A unit's equipment status when a batch started on it."""

    status: str | None  # the status that counts (see equipment_problems)
    since: int | None  # when it was set
    clean_expires: str | None
    calibration_due: str | None
    problems: tuple[str, ...]

    @property
    def recorded(self) -> bool:
        return self.status is not None or self.clean_expires is not None or self.calibration_due is not None


def equipment_problems(
    changes: Sequence[Change], unit: str, start: int, end: int, fmt: Callable[[int | None], str | None] = str
) -> Readiness:
    """Why ``unit`` was not ready for use when a batch started on it at ``start`` (and
    ran to ``end``; an open batch: now), from the equipment context of the unit and the
    paths above it.  ``fmt`` writes epoch ms for the messages.

    - ``equipment_status`` in effect at the start must be ``clean``.  ``in_use`` set at
      the start instant itself is the batch taking the unit: then the status before it
      counts (none recorded before: ready).  ``in_use`` from before the start is another
      batch's.
    - ``clean_expires`` in effect at the start must not be before the start;
    - ``calibration_due`` in effect at the start must not be before the batch's end.

    Nothing recorded at all: no problem (the plant does not publish equipment status)."""
    at = effective_at(changes, unit, start)
    problems: list[str] = []
    status, since = at.get("equipment_status", (None, None))
    if status == "in_use" and since == start:
        before = effective_at(changes, unit, start, inclusive=False).get("equipment_status")
        if before is not None:
            status, since = before
            if status == "in_use":
                problems.append(f"in use by another batch since {fmt(since)} when this batch took it")
    elif status == "in_use":
        problems.append(f"in use since {fmt(since)}, before this batch started (another batch's)")
    if status is not None and status not in ("clean", "in_use"):
        problems.append(f"status {status!r} since {fmt(since)}, not clean")
    deadlines = (
        ("clean_expires", start, "clean hold time expired at {}, before the start"),
        ("calibration_due", end, "calibration due at {}, before the batch's end"),
    )
    for key, limit, text in deadlines:
        value = at.get(key, (None, None))[0]
        moment = None if value is None else parse_instant(value)
        if value is not None and moment is None:
            problems.append(f"{key} {value!r} is not an ISO 8601 time")
        elif moment is not None and moment < limit:
            problems.append(text.format(fmt(moment)))
    expires, due = (at.get(k, (None, None))[0] for k in ("clean_expires", "calibration_due"))
    return Readiness(status, since, expires, due, tuple(problems))


def material_problems(
    status: str, expiry: int | None, ts: int, fmt: Callable[[int | None], str | None] = str
) -> list[str]:
    """Why a lot charged at ``ts`` was not fit for use: not released, or expired."""
    problems = []
    if status != "released":
        problems.append(f"not released ({status})")
    if expiry is not None and ts > expiry:
        problems.append(f"expired at {fmt(expiry)}")
    return problems


def alarm_intervals(
    ts: NDArray[np.int64], values: NDArray[np.float64], start: int, end: int, *, active_before: bool = False
) -> list[tuple[int, int, bool]]:
    """``(from, to, still active at the end)`` of every interval in ``[start, end]`` in
    which an alarm was active: from a sample with a true (non-zero) value to the next
    sample with a false (zero) one, else to ``end``.  ``active_before``: it was active when
    the window started (its last earlier value).  A NaN value is neither: it keeps the state."""
    if not len(values):
        return [(start, max(end, start), True)] if active_before else []
    # each sample's state: its own value, or the last non-NaN one before it (vectorised)
    last = np.maximum.accumulate(np.where(np.isnan(values), -1, np.arange(len(values))))
    state = np.where(last >= 0, values[np.maximum(last, 0)] != 0, active_before)
    before = np.concatenate(([active_before], state[:-1]))
    rises = ts[state & ~before].tolist()
    falls = ts[~state & before].tolist()
    if active_before:
        rises.insert(0, start)
    out = [(a, b, False) for a, b in zip(rises, falls, strict=False)]
    if len(rises) > len(falls):
        out.append((rises[-1], max(end, rises[-1]), True))
    return out


def runs(flags: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """``(first, last)`` indexes (inclusive) of every run of consecutive true ``flags``."""
    if not len(flags):
        return []
    padded = np.concatenate(([False], flags, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[0::2], edges[1::2], strict=True)]
