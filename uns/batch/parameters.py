"""The parameters of a batch report: limits, statistics per phase, excursions, plot series.

A series (one metric on one path) is a parameter when limits or an expected
interval apply to it in some phase (the spec's most specific entry, else the
plant model's ``low``/``high``, else the BIRTH's ``engLow``/``engHigh``), or
when it was asked for with ``--metric``.  Statistics and excursions use every sample; only the
plotted series is downsampled (min/max per pixel column).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from uns.batch.envelope import Envelope
from uns.batch.queries import BatchInfo, BatchSamples, Segment
from uns.batch.signals import Excursion, describe, find_excursions, minmax_downsample
from uns.batch.spec import LIMIT_KEYS, Limits, Spec, fallback_limits
from uns.batch.times import iso, ms
from uns.core.model import PlantModel

__all__ = [
    "PLOT_COLUMNS",
    "Parameter",
    "parameters",
    "reference_overlay",
    "relative_path",
    "run_fields",
    "series_segments",
]

#: pixel columns of a trend plot: the downsampled series has at most twice as many points
PLOT_COLUMNS: Final = 900


@dataclass(slots=True)
class Parameter:
    path: str
    metric: str
    unit: str | None
    #: per segment index of the series: the limits in force (None: none)
    limits: dict[int, Limits | None]
    stats: list[dict[str, Any]]
    excursions: list[dict[str, Any]]
    samples: int
    historical: int
    first_historical: int | None
    ts: NDArray[np.int64]  # every sample, for completeness
    plot_x: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))  # ms
    plot_y: NDArray[np.float64] = field(default_factory=lambda: np.empty(0, np.float64))
    reference_x: NDArray[np.int64] | None = None  # ms on this batch's time axis
    reference_y: NDArray[np.float64] | None = None
    reference_path: str | None = None
    envelope: Envelope | None = None  # several references (uns.batch.golden)
    segments: list[int] = field(default_factory=list)
    segment_phases: dict[int, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "metric": self.metric,
            "unit": self.unit,
            "samples": self.samples,
            "limits": [
                {"phase": info_phase, **(lim.to_dict() if lim is not None else {"source": None})}
                for info_phase, lim in self._limit_rows()
            ],
            "stats": self.stats,
            "reference": self._reference(),
        }

    def _reference(self) -> dict[str, Any] | None:
        if self.envelope is not None:
            return self.envelope.to_dict()
        return None if self.reference_path is None else {"path": self.reference_path}

    def _limit_rows(self) -> list[tuple[str | None, Limits | None]]:
        seen: dict[str | None, Limits | None] = {}
        for seg in self.segments:
            seen.setdefault(self.segment_phases.get(seg), self.limits.get(seg))
        return list(seen.items())


def run_fields(info: BatchInfo, seg: Any, ts: Any, run: Excursion) -> dict[str, Any]:
    """What a report says of a run of samples (an excursion, a departure from an envelope):
    its phase, direction, first and last sample's time, samples and peak."""
    return {
        "phase": info.segments[int(seg[run.first])].phase,
        "direction": "high" if run.direction > 0 else "low",
        "start": iso(int(ts[run.first])),
        "end": iso(int(ts[run.last])),
        "samples": run.samples,
        "peak": run.peak,
    }


def series_segments(info: BatchInfo, path: str) -> list[int]:
    """The segments whose path is the deepest batch path at or above ``path``."""
    above = [s.path for s in info.segments if path == s.path or path.startswith(s.path + "/")]
    if not above:
        return []
    deepest = max(above, key=len)
    return [i for i, s in enumerate(info.segments) if s.path == deepest]


def _limits_for(
    info: BatchInfo,
    seg: Segment,
    path: str,
    metric: str,
    spec: Spec,
    model_limits: tuple[float | None, float | None],
    birth: dict[str, Any],
) -> Limits | None:
    found = spec.resolve(metric, path, product=info.product, recipe=info.recipe, phase=seg.phase)
    if found is not None:
        return found
    return fallback_limits(model_limits[0], model_limits[1], birth)


def _model_limits(
    model: PlantModel | None, entry: dict[str, Any] | None, metric: str
) -> tuple[float | None, float | None]:
    if model is None or entry is None:
        return None, None
    info = model.metric(entry["group"], entry["node"], entry["device"], metric)
    return (info.low, info.high) if info is not None else (None, None)


def parameters(
    info: BatchInfo,
    samples: BatchSamples,
    catalog: dict[tuple[str, str], dict[str, Any]],
    spec: Spec,
    model: PlantModel | None,
    metrics: tuple[str, ...],
) -> list[Parameter]:
    """The batch's parameters, in path and metric order."""
    bounds = np.searchsorted(samples.sid, np.arange(len(samples.series) + 1))
    out = []
    for sid, (path, metric) in enumerate(samples.series):
        lo, hi = int(bounds[sid]), int(bounds[sid + 1])
        if lo == hi:
            continue
        entry = catalog.get((path, metric))
        birth = entry["properties"] if entry else {}
        model_limits = _model_limits(model, entry, metric)
        segs = series_segments(info, path)
        limits = {
            i: _limits_for(info, info.segments[i], path, metric, spec, model_limits, birth) for i in segs
        }
        wanted = metric in metrics or any(
            lim is not None and (lim.any or lim.expected_interval_s is not None) for lim in limits.values()
        )
        if not wanted:
            continue
        out.append(_parameter(info, samples, lo, hi, path, metric, entry, limits, segs))
    return out


def _parameter(
    info: BatchInfo,
    samples: BatchSamples,
    lo: int,
    hi: int,
    path: str,
    metric: str,
    entry: dict[str, Any] | None,
    limits: dict[int, Limits | None],
    segs: list[int],
) -> Parameter:
    ts, values, seg = samples.ts[lo:hi], samples.value[lo:hi], samples.segment[lo:hi]
    hist = samples.historical[lo:hi]
    table = {k: np.full(len(info.segments), np.nan) for k in LIMIT_KEYS}
    for i, lim in limits.items():
        for key in LIMIT_KEYS:
            value = getattr(lim, key) if lim is not None else None
            if value is not None:
                table[key][i] = value
    per_sample = {k: v[seg] for k, v in table.items()}
    found = find_excursions(values, seg.astype(np.int64), **per_sample)
    excursions = []
    for e in found:
        run = run_fields(info, seg, ts, e)
        phase = run.pop("phase")
        excursions.append(
            {"path": path, "metric": metric, "phase": phase, "level": e.level, **run, "limit": e.limit}
        )
    stats = []
    phase_of = np.array([s.phase or "" for s in info.segments], dtype=object)
    names = phase_of[seg] if len(seg) else np.empty(0, dtype=object)
    for phase in dict.fromkeys(info.segments[i].phase for i in segs):
        mask = names == (phase or "")
        if mask.any():
            stats.append({"phase": phase, **describe(values[mask]).to_dict()})
    stats.append({"phase": "all", **describe(values).to_dict()})
    px, py = minmax_downsample(ts, values, PLOT_COLUMNS)
    return Parameter(
        path=path,
        metric=metric,
        unit=entry["unit"] if entry else None,
        limits=limits,
        stats=stats,
        excursions=excursions,
        samples=hi - lo,
        historical=int(hist.sum()),
        first_historical=int(ts[hist][0]) if hist.any() else None,
        ts=ts,
        plot_x=px,
        plot_y=py,
        segments=segs,
        segment_phases={i: s.phase for i, s in enumerate(info.segments)},
    )


def relative_path(info: BatchInfo, path: str) -> str:
    """``path`` below the batch's unit it is under ('' for the unit itself)."""
    unit = max((u for u in info.units if path == u or path.startswith(u + "/")), key=len, default=path)
    return path[len(unit) :]


def reference_overlay(
    params: list[Parameter], info: BatchInfo, reference: BatchInfo, ref: BatchSamples
) -> None:
    """Put the reference batch's series of the same metric (on the same place below its
    unit) on each parameter's time axis: each reference sample keeps its time since the
    start of its phase, counted from the start of the same phase in this batch."""
    bounds = np.searchsorted(ref.sid, np.arange(len(ref.series) + 1))
    by_key: dict[tuple[str, str], int] = {}
    for sid, (path, metric) in enumerate(ref.series):
        by_key.setdefault((relative_path(reference, path), metric), sid)
    for p in params:
        found = by_key.get((relative_path(info, p.path), p.metric))
        if found is None:
            continue
        lo, hi = int(bounds[found]), int(bounds[found + 1])
        phase_start: dict[str | None, int] = {}
        for i in p.segments:
            phase_start.setdefault(info.segments[i].phase, ms(info.segments[i].start))
        offsets = np.array(
            [
                phase_start.get(s.phase, ms(info.start)) - ms(s.start)
                if s.phase in phase_start
                else np.iinfo(np.int64).min
                for s in reference.segments
            ],
            dtype=np.int64,
        )
        shift = offsets[ref.segment[lo:hi]]
        keep = shift != np.iinfo(np.int64).min
        x = ref.ts[lo:hi][keep] + shift[keep]
        y = ref.value[lo:hi][keep]
        order = np.argsort(x, kind="stable")
        p.reference_x, p.reference_y = minmax_downsample(x[order], y[order], PLOT_COLUMNS)
        p.reference_path = ref.series[found][0]
