"""A parameter across batches (continued process verification): ``uns batch trend``.

One value per closed batch -- a statistic of one metric over the batch, or over one of
its phases -- in batch start order, charted as individuals and moving ranges with the
run rules, and its capability against the spec's action limits (:mod:`uns.batch.spc`).

The values come from the lake's views ``batch_statistics`` and ``batch_phase_statistics``
(``lake/views/``), so an analyst gets the same numbers in SQL (``examples/queries.sql``,
``batch_trend``).  Where several series of the metric match in one batch (``--path``
matches two paths of it), their samples are pooled: the mean weighted by samples, the
least minimum, the greatest maximum, the newest sample's value, the longest duration.

:func:`build_trend` returns the document (JSON: ``schemas/batch-trend.schema.json``),
:func:`generate_trend` its bytes in a format; :mod:`uns.batch.trend_html` renders it.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np

import uns
from uns import lake
from uns.batch.spc import MIN_CAPABILITY_BATCHES, RULES, capability, imr_chart, run_rules
from uns.batch.spec import Spec
from uns.batch.times import iso
from uns.errors import BatchError
from uns.lake.query import snapshot_versions

__all__ = [
    "FORMATS",
    "STATS",
    "BatchValue",
    "SeriesRow",
    "TrendRequest",
    "batch_values",
    "build_trend",
    "generate_trend",
    "pool",
]

FORMATS: Final = ("json", "html", "pdf")
#: the statistics a trend can chart, one value per batch (duration: seconds)
STATS: Final = ("mean", "min", "max", "last", "duration")


@dataclass(frozen=True, slots=True)
class TrendRequest:
    """What to trend: a metric's statistic per closed batch, and which batches."""

    metric: str
    stat: str = "mean"
    product: str | None = None
    recipe: str | None = None
    phase: str | None = None  # the statistic over this phase (None: over the whole batch)
    path: str | None = None  # a glob on the series' path, as in a spec file
    since: datetime | None = None  # batches started at or after
    until: datetime | None = None  # batches started before
    spec: Spec = field(default_factory=Spec)
    now: datetime | None = None  # the document's time (default: now)

    def __post_init__(self) -> None:
        if self.stat not in STATS:
            raise BatchError(f"unknown statistic {self.stat!r} (one of {', '.join(STATS)})")


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One series (metric on a path) in one batch: a row of ``batch_statistics``."""

    path: str
    samples: int
    mean: float | None
    min: float | None
    max: float | None
    last: float | None
    last_ts: datetime | None
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class BatchValue:
    """A batch's point on the trend."""

    batch_id: str
    start: datetime
    end: datetime | None
    product: str | None
    recipe: str | None
    value: float
    samples: int
    paths: tuple[str, ...]


def pool(stat: str, rows: Sequence[SeriesRow]) -> float | None:
    """The statistic of one batch from its series' rows (their samples pooled)."""
    if not rows:
        return None
    if len(rows) == 1:  # the view's own number, not one recomputed from it
        value = getattr(rows[0], "duration_s" if stat == "duration" else stat)
        return None if value is None else float(value)
    if stat == "mean":
        weighted = [(r.mean, r.samples) for r in rows if r.mean is not None and r.samples]
        total = sum(n for _, n in weighted)
        return sum(m * n for m, n in weighted) / total if total else None
    if stat in ("min", "max"):
        found = [v for r in rows if (v := getattr(r, stat)) is not None]
        return (min if stat == "min" else max)(found) if found else None
    if stat == "last":
        newest = [r for r in rows if r.last is not None and r.last_ts is not None]
        return max(newest, key=lambda r: (r.last_ts, r.path)).last if newest else None
    durations = [r.duration_s for r in rows if r.duration_s is not None]
    return max(durations) if durations else None


_BATCHES: Final = """
    SELECT batch_id,
        arg_max(product, start) FILTER (WHERE product IS NOT NULL) AS product,
        arg_max(recipe, start) FILTER (WHERE recipe IS NOT NULL) AS recipe,
        min(start) AS start,
        CASE WHEN bool_or(status = 'open') THEN NULL ELSE max("end") END AS "end"
    FROM batches GROUP BY batch_id"""


def batch_values(con: duckdb.DuckDBPyConnection, request: TrendRequest) -> list[BatchValue]:
    """The closed batches' values of ``request``, in batch start order (batches without a
    finite sample of the metric, or outside the filters, have none)."""
    view = "batch_phase_statistics" if request.phase is not None else "batch_statistics"
    where: list[str] = ["s.metric = ?", 'b."end" IS NOT NULL']
    params: list[Any] = [request.metric]
    for clause, value in (
        ("s.phase = ?", request.phase), ("b.product = ?", request.product), ("b.recipe = ?", request.recipe),
        ("b.start >= ?", request.since), ("b.start < ?", request.until),
    ):  # fmt: skip
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = f"""WITH b AS ({_BATCHES})
        SELECT s.batch_id, b.start, b."end", b.product, b.recipe, s.path, s.samples, s.mean, s.min, s.max,
            s.last, s.last_ts, s.duration_s
        FROM {view} s JOIN b USING (batch_id)
        WHERE {" AND ".join(where)}
        ORDER BY b.start, s.batch_id, s.path"""  # noqa: S608 - only our own clauses
    try:
        rows = con.execute(sql, params).fetchall()
    except duckdb.Error as exc:
        raise BatchError(f"cannot read the statistics of {request.metric}: {exc}") from exc
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        if request.path is None or fnmatch.fnmatchcase(row[5], request.path):
            grouped.setdefault(row[0], []).append(row)
    out = []
    for batch_id, found in grouped.items():
        series = [SeriesRow(*r[5:]) for r in found]
        pooled = pool(request.stat, series)
        if pooled is None:
            continue
        _, start, end, product, recipe = found[0][:5]
        samples = sum(s.samples for s in series)
        out.append(
            BatchValue(batch_id, start, end, product, recipe, pooled, samples, tuple(s.path for s in series))
        )
    return out


def _spec_limits(
    request: TrendRequest, values: list[BatchValue]
) -> tuple[float | None, float | None, list[str]]:
    """The action limits capability is computed against: the spec's for every batch (its
    product, recipe, the phase and the series' path), when they agree; and why not."""
    if request.stat == "duration":
        return None, None, ["capability is not computed for durations (the spec limits the metric's values)"]
    if not request.spec.limits:
        return None, None, ["no spec file: capability needs the spec's action limits (--spec or batch.spec)"]
    found = set()
    for v in values:
        limits = request.spec.resolve(
            request.metric, v.paths[0], product=v.product, recipe=v.recipe, phase=request.phase
        )
        found.add((None, None) if limits is None else (limits.action_low, limits.action_high))
    if len(found) > 1:
        pairs = "; ".join(
            f"{lo if lo is not None else '-'}..{hi if hi is not None else '-'}"
            for lo, hi in sorted(found, key=str)
        )
        narrow = "narrow with --product, --recipe, --phase or --path"
        return None, None, [f"the batches have different action limits ({pairs}): {narrow}"]
    (low, high), *_ = found or {(None, None)}
    if low is None and high is None:
        scope = f" in phase {request.phase}" if request.phase else " over the whole batch (no --phase)"
        return None, None, [f"the spec gives {request.metric} no action limit{scope}"]
    return low, high, []


def _unit(con: duckdb.DuckDBPyConnection, metric: str, paths: list[str]) -> str | None:
    if not paths:
        return None
    row = con.execute(
        f"""SELECT unit FROM metric_catalog WHERE metric = ? AND path IN ({", ".join("?" for _ in paths)})
            AND unit IS NOT NULL ORDER BY birth_ts DESC LIMIT 1""",  # noqa: S608 - placeholders only
        [metric, *paths],
    ).fetchone()
    return None if row is None else str(row[0])


def _nothing_found(con: duckdb.DuckDBPyConnection, request: TrendRequest) -> BatchError:
    known = [r[0] for r in con.execute("SELECT DISTINCT metric FROM metric_catalog ORDER BY 1").fetchall()]
    filters = ", ".join(
        f"{k} {v}" for k in ("product", "recipe", "phase", "path", "since", "until")
        if (v := getattr(request, k)) is not None
    )  # fmt: skip
    hint = "" if request.metric in known or not known else f"; metrics in the lake: {', '.join(known[:20])}"
    return BatchError(
        f"no closed batch has a sample of {request.metric!r}" + (f" ({filters})" if filters else "") + hint
    )


def build_trend(con: duckdb.DuckDBPyConnection, request: TrendRequest) -> dict[str, Any]:
    """The trend document of ``request`` from ``con``'s snapshot; BatchError without a batch."""
    values = batch_values(con, request)
    if not values:
        raise _nothing_found(con, request)
    x = np.array([v.value for v in values], dtype=np.float64)
    chart = imr_chart(x)
    violations = run_rules(x, chart.mean, chart.ucl, chart.lcl)
    low, high, notes = _spec_limits(request, values)
    cap = capability(chart, low, high)
    cap_notes = list(cap.notes)
    if notes:  # why there are no limits says more than capability's "no action limit"
        cap_notes = [n for n in cap_notes if chart.n < MIN_CAPABILITY_BATCHES] + notes
    now = request.now or datetime.now(UTC)
    spec = request.spec
    mr = chart.moving_ranges
    return {
        "metric": request.metric,
        "unit": _unit(con, request.metric, sorted({p for v in values for p in v.paths})),
        "stat": request.stat,
        "filters": {
            "product": request.product,
            "recipe": request.recipe,
            "phase": request.phase,
            "path": request.path,
            "since": iso(request.since),
            "until": iso(request.until),
        },
        "n": chart.n,
        "batches": [
            {
                "batch_id": v.batch_id,
                "start": iso(v.start),
                "end": iso(v.end),
                "product": v.product,
                "recipe": v.recipe,
                "value": v.value,
                "moving_range": None if i == 0 else float(mr[i]),
                "samples": v.samples,
                "paths": list(v.paths),
            }
            for i, v in enumerate(values)
        ],
        "mean": chart.mean,
        "sigma_within": chart.sigma_within,
        "sigma_overall": chart.sigma_overall,
        "ucl": chart.ucl,
        "lcl": chart.lcl,
        "mr_mean": chart.mr_mean,
        "mr_ucl": chart.mr_ucl,
        "violations": [
            {
                "rule": v.rule,
                "description": RULES[v.rule],
                "batch_ids": [values[i].batch_id for i in v.points],
            }
            for v in violations
        ],
        "action_low": low,
        "action_high": high,
        "cp": cap.cp,
        "cpk": cap.cpk,
        "pp": cap.pp,
        "ppk": cap.ppk,
        "capability_notes": cap_notes,
        "min_capability_batches": MIN_CAPABILITY_BATCHES,
        "spec": {"file": spec.file, "name": spec.name, "version": spec.version},
        "report_time": iso(now),
        "software_version": f"uns {uns.__version__}",
        "lake_versions": dict(sorted(snapshot_versions(con).items())),
    }


def summary(doc: dict[str, Any]) -> str:
    """One line: the batches, the violations by rule, the capability."""
    rules: dict[int, int] = {}
    for v in doc["violations"]:
        rules[v["rule"]] = rules.get(v["rule"], 0) + 1
    found = ", ".join(f"rule {r}: {n}" for r, n in sorted(rules.items())) or "none"
    indexes = ", ".join(f"{k.capitalize()} {doc[k]:.2f}" for k in ("cpk", "ppk") if doc[k] is not None)
    batches = f"{doc['n']} batch{'es' if doc['n'] != 1 else ''}"
    return f"{batches}, mean {doc['mean']:.6g}; run-rule violations: {found}" + (
        f"; {indexes}" if indexes else ""
    )


def generate_trend(lake_path: str | Path, request: TrendRequest, fmt: str = "html") -> tuple[bytes, str]:
    """The trend of ``request`` in ``fmt`` (json, html or pdf) and its one-line summary."""
    if fmt not in FORMATS:
        raise BatchError(f"unknown trend format {fmt!r} (json, html or pdf)")
    con = lake.connect(lake_path)
    try:
        doc = build_trend(con, request)
    finally:
        con.close()
    if fmt == "json":
        data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
    else:
        from uns.batch.trend_html import render_trend_html  # noqa: PLC0415 - matplotlib/jinja2 load here
        from uns.pdf import render_pdf  # noqa: PLC0415

        html = render_trend_html(doc)
        data = html.encode() if fmt == "html" else render_pdf(html)
    return data, summary(doc)
