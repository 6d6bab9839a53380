"""The golden-batch envelope (pure): several reference batches' mean +- 3 sigma, aligned by
the time since phase start, and where a batch leaves it.

Within a phase, the time since the phase started is cut into slices
(:func:`slice_width`); in each slice, every reference sample whose time since the start
of the same phase falls in it counts: the band there is their mean +- 3 sample standard
deviations (n - 1), where at least :data:`MIN_REFERENCES` references have a sample.
Pooling a slice's samples (rather than taking each reference's value at one instant)
keeps the band from collapsing where a few references happen to agree -- quantised
signals, three references -- and its width holds both the references' spread and the
signal's own noise.

- :func:`slice_width`: the slices' width for a phase;
- :func:`band`: the band at given times since the phase started;
- :func:`departures`: consecutive samples of the batch outside the band, in one phase
  run, as :class:`uns.batch.signals.Excursion` (a value on the band's edge is inside;
  NaN never leaves it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from uns.batch.signals import Excursion, Floats, Ints, find_excursions

__all__ = [
    "MIN_REFERENCES",
    "SAMPLES_PER_SLICE",
    "SIGMAS",
    "SLICES_PER_PHASE",
    "Band",
    "Envelope",
    "band",
    "departures",
    "slice_width",
]

#: the band is drawn where at least this many references have a sample (a spread needs two)
MIN_REFERENCES: Final = 2
#: half the band's width, in standard deviations of the references' samples
SIGMAS: Final = 3.0
#: a phase is cut into at most this many slices ...
SLICES_PER_PHASE: Final = 100
#: ... each about this many sampling intervals of a reference wide (at least)
SAMPLES_PER_SLICE: Final = 5


def slice_width(since: Sequence[Ints], span: int) -> int:
    """The slices' width (ms) for a phase the references spent up to ``span`` ms in: a
    hundredth of it, but at least five times the references' median sampling interval
    (``since``: each reference's sample times since its phase started, sorted)."""
    steps = [np.diff(t) for t in since if len(t) > 1]
    every = np.concatenate(steps) if steps else np.empty(0, np.int64)
    interval = float(np.median(every[every > 0])) if (every > 0).any() else 0.0
    return max(1, math.ceil(span / SLICES_PER_PHASE), math.ceil(SAMPLES_PER_SLICE * interval))


@dataclass(frozen=True, slots=True)
class Band:
    mean: Floats
    low: Floats  # mean - 3 sd; NaN where fewer than MIN_REFERENCES references have a sample
    high: Floats
    references: NDArray[np.int64]  # the references with a sample in the slice


def band(since: Sequence[Ints], values: Sequence[Floats], width: int, at: Ints) -> Band:
    """The envelope at the times ``at`` (ms since the phase started) of the references
    whose samples are ``values`` at ``since`` (ms since the same phase started in each):
    per slice of ``width`` ms, the mean and sample standard deviation of every finite
    reference sample in it.  A time before the phase, or in a slice without samples of
    two references, has no band (NaN)."""
    refs = max(len(since), 1)
    t = np.concatenate([*since, np.empty(0, np.int64)]).astype(np.int64)
    v = np.concatenate([*values, np.empty(0, np.float64)]).astype(np.float64)
    ref = np.repeat(np.arange(len(since)), [len(x) for x in since])
    keep = np.isfinite(v) & (t >= 0)
    t, v, ref = t[keep], v[keep], ref[keep]
    where = np.asarray(at, dtype=np.int64) // width
    slices = 1 + max(int(t.max()) // width if len(t) else 0, int(where.max()) if len(where) else 0, 0)
    piece = t // width
    n = np.bincount(piece, minlength=slices).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(piece, weights=v, minlength=slices) / n
        squares = np.bincount(piece, weights=(v - mean[piece]) ** 2, minlength=slices)
        sd = np.sqrt(squares / (n - 1))
    having = (np.bincount(piece * refs + ref, minlength=slices * refs) > 0).reshape(slices, refs).sum(axis=1)
    at_slice = np.clip(where, 0, slices - 1)
    ok = (where >= 0) & (having[at_slice] >= MIN_REFERENCES)
    mean_at = np.where(ok, mean[at_slice], np.nan)
    sd_at = np.where(ok, sd[at_slice], np.nan)
    return Band(
        mean=mean_at,
        low=mean_at - SIGMAS * sd_at,
        high=mean_at + SIGMAS * sd_at,
        references=np.where(where >= 0, having[at_slice], 0).astype(np.int64),
    )


def departures(values: Floats, group: Ints, envelope: Band) -> list[Excursion]:
    """Runs of samples outside ``envelope`` (one band value per sample), never across two
    ``group`` values (phase runs); each an action-level :class:`Excursion` whose ``limit``
    is the band's edge at its first sample."""
    nothing = np.full(len(values), np.nan)
    return find_excursions(
        np.asarray(values, dtype=np.float64),
        group,
        action_low=envelope.low,
        alert_low=nothing,
        alert_high=nothing,
        action_high=envelope.high,
    )


@dataclass(slots=True)
class Envelope:
    """One parameter's envelope in a batch report: the references that have its series
    (their batch ids and series paths), the band on the batch's time axis (downsampled for
    the plot: ``x`` in epoch ms) and the departures from it (report dicts)."""

    references: list[str]
    paths: list[str]
    x: Ints = field(default_factory=lambda: np.empty(0, np.int64))
    mean: Floats = field(default_factory=lambda: np.empty(0, np.float64))
    low: Floats = field(default_factory=lambda: np.empty(0, np.float64))
    high: Floats = field(default_factory=lambda: np.empty(0, np.float64))
    departures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The parameter's ``reference`` object of the report."""
        return {
            "path": self.paths[0],
            "paths": self.paths,
            "batches": self.references,
            "sigmas": SIGMAS,
            "departures": self.departures,
        }
