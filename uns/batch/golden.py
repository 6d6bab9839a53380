"""The golden-batch envelope of a batch report (``--reference B1,B2,B3``).

With two or more reference batches, each parameter's trend gets the band the references
span -- their samples' mean +- 3 standard deviations per slice of the time since the
start of the phase (:mod:`uns.batch.envelope`) -- and the report lists where the batch
leaves it: in each parameter's ``reference.departures`` always, as ``envelope``
exceptions (severity low) with ``--envelope-exceptions``.

A reference's series is the one of the same metric at the same place below its unit
(as for a single reference, :func:`uns.batch.parameters.reference_overlay`).  Times
since phase start count from the phase's first run on the series' batch path, in the
batch and in each reference; a sample of the batch in no phase, or where fewer than two
references have samples (a phase they lack, or had ended by then), has no band.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uns.batch.envelope import MIN_REFERENCES, SIGMAS, Band, Envelope, band, departures, slice_width
from uns.batch.exceptions import exception_id
from uns.batch.parameters import PLOT_COLUMNS, Parameter, relative_path, run_fields, series_segments
from uns.batch.queries import BatchInfo, BatchSamples
from uns.batch.times import ms

__all__ = ["envelope_exceptions", "envelope_overlay"]

_NONE = np.iinfo(np.int64).min  # no phase start: the sample is in no phase


def _phase_windows(info: BatchInfo, segments: list[int], last_ms: int) -> dict[str, tuple[int, int]]:
    """phase -> (start of its first run, end of its last run) on the series' batch path."""
    out: dict[str, tuple[int, int]] = {}
    for i in segments:
        seg = info.segments[i]
        if seg.phase is None:
            continue
        end = ms(seg.end) if seg.end is not None else last_ms
        first = out.get(seg.phase, (ms(seg.start), end))[0]
        out[seg.phase] = (first, end)
    return out


def _since_phase_start(info: BatchInfo, windows: dict[str, tuple[int, int]], ts: Any, seg: Any) -> Any:
    """Each sample's milliseconds since its phase started (``_NONE``: in no phase)."""
    start = np.array(
        [windows[s.phase][0] if s.phase in windows else _NONE for s in info.segments], dtype=np.int64
    )
    offset = start[seg] if len(start) else np.empty(0, np.int64)
    return np.where(offset == _NONE, _NONE, ts - offset)


def _series(samples: BatchSamples) -> tuple[Any, dict[tuple[str, str], int]]:
    bounds = np.searchsorted(samples.sid, np.arange(len(samples.series) + 1))
    return bounds, {key: sid for sid, key in enumerate(samples.series)}


#: phase -> each reference's sample times since the phase started, their values, the
#: longest time a reference spent in the phase
_Phases = dict[str, tuple[list[Any], list[Any], int]]


def _reference_phases(info: BatchInfo, ref: BatchSamples, rsid: int, bounds: Any, phases: _Phases) -> None:
    """Add reference series ``rsid`` of batch ``info`` to ``phases``."""
    a, b = int(bounds[rsid]), int(bounds[rsid + 1])
    ts, values, seg = ref.ts[a:b], ref.value[a:b], ref.segment[a:b]
    windows = _phase_windows(info, series_segments(info, ref.series[rsid][0]), int(ts[-1]) + 1)
    since = _since_phase_start(info, windows, ts, seg)
    phase_of = np.array([s.phase or "" for s in info.segments], dtype=object)[seg]
    for phase, (start, end) in windows.items():
        # a sample after the phase's last run ended is no sample of the phase
        theirs = (phase_of == phase) & (since < end - start)
        times, found, span = phases.setdefault(phase, ([], [], 0))
        times.append(since[theirs])
        found.append(values[theirs])
        phases[phase] = (times, found, max(span, end - start))


def envelope_overlay(
    params: list[Parameter],
    info: BatchInfo,
    samples: BatchSamples,
    references: list[tuple[BatchInfo, BatchSamples]],
) -> None:
    """Give each parameter that at least two references have its envelope (``p.envelope``)."""
    bounds, sids = _series(samples)
    refs = []
    for ref_info, ref in references:
        by_key: dict[tuple[str, str], int] = {}
        for sid, (path, metric) in enumerate(ref.series):
            by_key.setdefault((relative_path(ref_info, path), metric), sid)
        refs.append((ref_info, ref, _series(ref)[0], by_key))
    for p in params:
        found = sids.get((p.path, p.metric))
        if found is None:
            continue
        lo, hi = int(bounds[found]), int(bounds[found + 1])
        ts, values, seg = samples.ts[lo:hi], samples.value[lo:hi], samples.segment[lo:hi]
        phases: _Phases = {}
        names, paths = [], []
        for ref_info, ref, ref_bounds, by_key in refs:
            rsid = by_key.get((relative_path(info, p.path), p.metric))
            if rsid is not None:
                _reference_phases(ref_info, ref, rsid, ref_bounds, phases)
                names.append(ref_info.batch_id)
                paths.append(ref.series[rsid][0])
        if len(names) < MIN_REFERENCES:
            continue
        windows = _phase_windows(info, p.segments, int(ts[-1]) + 1)
        since = _since_phase_start(info, windows, ts, seg)
        phase_of = np.array([s.phase or "" for s in info.segments], dtype=object)[seg]
        mean, low, high = (np.full(len(ts), np.nan) for _ in range(3))
        for phase, (times, found_values, span) in phases.items():
            mine = phase_of == phase
            if phase in windows and mine.any():
                part = band(times, found_values, slice_width(times, span), since[mine])
                mean[mine], low[mine], high[mine] = part.mean, part.low, part.high
        envelope = Band(mean, low, high, np.zeros(len(ts), np.int64))
        p.envelope = Envelope(names, paths)
        p.envelope.departures = [
            {**run_fields(info, seg, ts, d), "band_edge": d.limit}
            for d in departures(values, seg.astype(np.int64), envelope)
        ]
        # the plot's band: evenly spaced samples, NaN (a gap in the band) kept
        drawn = np.unique(np.linspace(0, len(ts) - 1, min(len(ts), 2 * PLOT_COLUMNS)).astype(np.int64))
        p.envelope.x, p.envelope.mean = ts[drawn], mean[drawn]
        p.envelope.low, p.envelope.high = low[drawn], high[drawn]


def envelope_exceptions(params: list[Parameter]) -> list[dict[str, Any]]:
    """One ``envelope`` exception (severity low) per departure from a parameter's envelope."""
    out = []
    for p in params:
        if p.envelope is None:
            continue
        refs = ", ".join(p.envelope.references)
        for d in p.envelope.departures:
            side = "above" if d["direction"] == "high" else "below"
            count = f"{d['samples']} sample{'s' if d['samples'] != 1 else ''}"
            message = (
                f"{p.metric} on {p.path} ({d['phase'] or 'no phase'}) left the envelope of the reference "
                f"batches {refs} (mean ± {SIGMAS:g} sd): {count} {side} it, from {d['start']} to {d['end']}, "
                f"peak {d['peak']:g} (band edge {d['band_edge']:g})"
            )
            ident = exception_id("envelope", d["start"], p.path, p.metric, d["direction"], refs)
            out.append(
                {"id": ident, "kind": "envelope", "severity": "low", "ts": d["start"], "message": message}
            )
    return out
