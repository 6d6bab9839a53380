"""The batch report as one self-contained HTML file (Jinja2, matplotlib SVG plots).

The HTML names no other resource: styles are inline, every plot is an inline
SVG with its text kept as text, so the file opens offline, prints as it shows
and its words can be searched.  The PDF is that HTML printed by :mod:`uns.pdf`.
"""

from __future__ import annotations

import io
import json
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import jinja2
import numpy as np
from matplotlib.figure import Figure

from uns.batch.envelope import SIGMAS
from uns.batch.times import ms

if TYPE_CHECKING:
    from uns.batch.document import Report
    from uns.batch.parameters import Parameter
    from uns.batch.queries import BatchInfo

__all__ = ["render_html", "svg_text", "template_environment", "timeline_svg", "trend_svg"]

_PHASE_COLOURS: Final = ("#e8eef7", "#f3ede2", "#e6f2e6", "#f2e6ee", "#eeeeee", "#e6f0f2")
_SVG_RC: Final[dict[str, Any]] = {"svg.fonttype": "none", "svg.hashsalt": "uns-batch-report"}


def _scale(span_ms: float) -> tuple[float, str]:
    """Divisor and unit name of the x axis for a batch of ``span_ms``."""
    if span_ms <= 3 * 60_000:
        return 1000.0, "s"
    if span_ms <= 3 * 3_600_000:
        return 60_000.0, "min"
    return 3_600_000.0, "h"


def _limit_steps(
    p: Parameter, info: BatchInfo, t0: int, end: int, key: str
) -> list[tuple[float, float, float]]:
    out: list[tuple[float, float, float]] = []
    for i in p.segments:
        lim = p.limits.get(i)
        value = getattr(lim, key) if lim is not None else None
        if value is None:
            continue
        seg = info.segments[i]
        out.append((ms(seg.start) - t0, (ms(seg.end) if seg.end is not None else end) - t0, float(value)))
    return out


def trend_svg(p: Parameter, info: BatchInfo, *, reference: str | None = None) -> str:
    """One parameter's trend: samples (min/max per pixel column), limits, phase bands,
    excursions, and the reference batch when there is one; as an SVG element."""
    import matplotlib as mpl  # noqa: PLC0415

    t0 = ms(info.start)
    end = ms(info.end) if info.end is not None else int(p.plot_x.max()) + 1 if len(p.plot_x) else t0 + 1
    div, unit = _scale(end - t0)
    with mpl.rc_context(_SVG_RC):  # type: ignore[arg-type]
        # fixed margins: a constrained layout would draw every figure twice
        fig = Figure(figsize=(9.0, 2.6), dpi=100)
        fig.subplots_adjust(left=0.08, right=0.99, top=0.88, bottom=0.17)
        ax = fig.add_subplot()
        for n, i in enumerate(p.segments):
            seg = info.segments[i]
            if seg.phase is None:
                continue
            a = (ms(seg.start) - t0) / div
            b = ((ms(seg.end) if seg.end is not None else end) - t0) / div
            ax.axvspan(a, b, color=_PHASE_COLOURS[n % len(_PHASE_COLOURS)], zorder=0, lw=0)
            ax.text(
                (a + b) / 2,
                1.0,
                seg.phase,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        series: list[tuple[Any, Any, dict[str, Any]]] = []
        if p.reference_x is not None and p.reference_y is not None and len(p.reference_x):
            dashed: dict[str, Any] = {"color": "#888888", "lw": 0.8, "ls": "--"}
            series.append((p.reference_x, p.reference_y, dashed | {"label": f"reference {reference}"}))
        if p.envelope is not None:
            _draw_envelope(ax, p, t0, div)
        series.append((p.plot_x, p.plot_y, {"color": "#1f4e99", "lw": 0.9, "label": info.batch_id}))
        for x, y, look in series:
            # steps: a Sparkplug value holds until the next one is reported (report by exception)
            ax.plot((x - t0) / div, y, drawstyle="steps-post", **look)
        for key, colour, style in (
            ("action_low", "#c0392b", "-"), ("action_high", "#c0392b", "-"),
            ("alert_low", "#e67e22", "--"), ("alert_high", "#e67e22", "--"),
        ):  # fmt: skip
            for a, b, value in _limit_steps(p, info, t0, end, key):
                ax.hlines(value, a / div, b / div, colors=colour, linestyles=style, lw=1.0)  # type: ignore[arg-type]
        for e in p.excursions:
            a, b = (_ms_of(e["start"]) - t0) / div, (_ms_of(e["end"]) - t0) / div
            ax.axvspan(
                a,
                max(b, a + (end - t0) / div / 400),
                color="#c0392b" if e["level"] == "action" else "#e67e22",
                alpha=0.25,
                lw=0,
            )
        ax.set_xlim(0, (end - t0) / div)
        ax.set_xlabel(f"time since batch start ({unit})", fontsize=8)
        ax.set_ylabel(p.unit or p.metric, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)
        if p.reference_x is not None or p.envelope is not None:
            ax.legend(fontsize=7, loc="lower right")
        return svg_text(fig)


def _draw_envelope(ax: Any, p: Parameter, t0: int, div: float) -> None:
    """The references' mean +- 3 sd band, and where the batch leaves it."""
    env = p.envelope
    assert env is not None
    x = (env.x - t0) / div
    drawn = np.isfinite(env.low)  # NaN where fewer than two references have a value: a gap
    ax.fill_between(x, env.low, env.high, where=drawn, color="#b8b8d8", alpha=0.45, lw=0, zorder=1)
    ax.plot(x, env.mean, color="#6a6a9a", lw=0.8, ls="--", zorder=2)
    ax.fill_between([], [], [], color="#b8b8d8", alpha=0.45, lw=0,
                    label=f"references {', '.join(env.references)}: mean ± {SIGMAS:g} sd")  # fmt: skip
    least = (x.max() - x.min()) / 400 if len(x) else 0.0  # a one-sample departure stays visible
    for d in env.departures:
        a, b = (_ms_of(d["start"]) - t0) / div, (_ms_of(d["end"]) - t0) / div
        ax.axvspan(a, max(b, a + least), color="#8e44ad", alpha=0.2, lw=0)


def timeline_svg(info: BatchInfo) -> str:
    """The phases of the batch on each of its paths, as bars on one time axis (SVG)."""
    import matplotlib as mpl  # noqa: PLC0415

    t0 = ms(info.start)
    phased = [s for s in info.segments if s.phase is not None]
    end = max([ms(s.end) for s in phased if s.end is not None] + [t0 + 1])
    end = ms(info.end) if info.end is not None else end
    div, unit = _scale(end - t0)
    paths = list(dict.fromkeys(s.path for s in phased))
    colours = {
        p: _PHASE_COLOURS[i % len(_PHASE_COLOURS)]
        for i, p in enumerate(dict.fromkeys(s.phase for s in phased))
    }
    with mpl.rc_context(_SVG_RC):  # type: ignore[arg-type]
        fig = Figure(figsize=(9.0, 0.5 + 0.45 * max(len(paths), 1)), dpi=100)
        fig.subplots_adjust(
            left=0.3, right=0.99, top=0.95, bottom=0.5 / (0.5 + 0.45 * max(len(paths), 1)) + 0.05
        )
        ax = fig.add_subplot()
        for row, path in enumerate(paths):
            for s in (s for s in phased if s.path == path):
                a = (ms(s.start) - t0) / div
                b = ((ms(s.end) if s.end is not None else end) - t0) / div
                ax.broken_barh(
                    [(a, b - a)], (row - 0.4, 0.8), facecolors=colours[s.phase], edgecolors="#555555"
                )
                ax.text((a + b) / 2, row, s.phase or "", ha="center", va="center", fontsize=7)
        ax.set_yticks(range(len(paths)), paths, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, (end - t0) / div)
        ax.set_xlabel(f"time since batch start ({unit})", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        return svg_text(fig)


def svg_text(fig: Figure) -> str:
    """The figure as an ``<svg>`` element: text kept as text, no XML header, no date (the
    same plot gives the same text)."""
    import matplotlib as mpl  # noqa: PLC0415

    buf = io.StringIO()
    with mpl.rc_context(_SVG_RC):  # type: ignore[arg-type]
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _ms_of(stamp: str) -> int:
    from datetime import datetime  # noqa: PLC0415

    return ms(datetime.fromisoformat(stamp.replace("Z", "+00:00")))


def template_environment() -> jinja2.Environment:
    """The Jinja2 environment of the batch record's pages (autoescaped, strict, ``num``/``hms`` filters)."""
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(
            lambda name: resources.files("uns.batch").joinpath("templates", name).read_text(encoding="utf-8")
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["hms"] = _duration
    env.filters["detail_lines"] = detail_lines
    return env


#: details too long to print whole: what they hold is said instead (the JSON report has them)
_SUMMARISED: Final = {"files": "files", "added": "files", "removed": "files", "config": "keys"}


def detail_lines(detail: Any) -> list[tuple[str, str]]:
    """An audit entry's detail as readable ``key: value`` lines: text as it is, null as
    "null", numbers and booleans as JSON writes them, objects and lists as compact JSON;
    long lists of files and the whole configuration as their count."""
    if not isinstance(detail, dict):
        return [("detail", _text(detail))]
    out: list[tuple[str, str]] = []
    for key, value in detail.items():
        what = _SUMMARISED.get(key)
        if what and isinstance(value, list | dict) and len(value) > 3:
            out.append((key, f"{len(value)} {what} (in the JSON report)"))
        else:
            out.append((key, _text(value)))
    return out


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "), default=str)


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "open"
    if seconds < 60:
        return f"{seconds:.3f} s"
    whole = round(seconds)
    return f"{whole // 3600:d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def render_html(report: Report) -> str:
    """The whole report as one HTML document."""
    doc = report.document
    reference = doc["batch"]["reference_batch"]
    plots = [trend_svg(p, report.info, reference=reference) for p in report.parameters]
    rows = list(zip(doc["parameters"], plots, strict=True))
    durations = [
        None if s.end is None else (s.end - s.start).total_seconds()
        for s in report.info.segments
        if s.phase is not None
    ]
    phases = [dict(ph, duration_s=d) for ph, d in zip(doc["phases"], durations, strict=True)]
    return (
        template_environment()
        .get_template("batch_report.html.j2")
        .render(
            doc=doc, batch=doc["batch"], parameters=rows, phases=phases, timeline=timeline_svg(report.info)
        )
    )
