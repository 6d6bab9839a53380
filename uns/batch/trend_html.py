"""The trend across batches as one self-contained HTML page (Jinja2, a matplotlib SVG chart).

:func:`render_trend_html` takes the trend document alone (what :func:`uns.batch.trend.build_trend`
returns, or its JSON read back), so any face that has the document renders the same page.
Like the batch report, the page names no other resource and prints as it shows.
"""

from __future__ import annotations

from typing import Any, Final

from matplotlib.figure import Figure

from uns.batch.html import svg_text, template_environment
from uns.batch.spc import RULES

__all__ = ["chart_svg", "render_trend_html"]

#: at most this many batch ids under the chart (every k-th beyond)
_LABELS: Final = 40
#: the least distance of two line names, in fractions of the chart's height
_LABEL_GAP: Final = 0.06
_RULE_COLOURS: Final = {1: "#c0392b", 2: "#e67e22", 3: "#8e44ad", 4: "#16a085"}
_STAT_NAMES: Final = {
    "mean": "mean",
    "min": "minimum",
    "max": "maximum",
    "last": "last value",
    "duration": "duration (s)",
}


def statistic_label(doc: dict[str, Any]) -> str:
    """What one point is, e.g. ``mean of Temperature over phase growth``."""
    phase = doc["filters"]["phase"]
    where = f"phase {phase}" if phase is not None else "the batch"
    if doc["stat"] == "duration":
        return f"duration of {where} (s)"
    return f"{_STAT_NAMES[doc['stat']]} of {doc['metric']} over {where}"


def _flagged(doc: dict[str, Any]) -> dict[str, list[int]]:
    """batch id -> the rules it takes part in."""
    rules: dict[str, list[int]] = {}
    for v in doc["violations"]:
        for b in v["batch_ids"]:
            if v["rule"] not in rules.setdefault(b, []):
                rules[b].append(v["rule"])
    return rules


def _lines(ax: Any, lines: list[tuple[float, str, str, str]]) -> None:
    """Horizontal lines across ``ax``, each named at its right end; the names of lines close
    together are moved apart so that none hides another."""
    for value, _, colour, style in lines:
        ax.axhline(value, color=colour, ls=style, lw=1.0)
    low, high = ax.get_ylim()
    span = (high - low) or 1.0
    placed: list[float] = []
    for value, name, colour, _ in sorted(lines):
        where = (value - low) / span
        if placed and where - placed[-1] < _LABEL_GAP:
            where = placed[-1] + _LABEL_GAP
        placed.append(where)
        ax.annotate(
            f"{name} {value:.4g}", (1.0, where), xycoords="axes fraction", xytext=(4, 0),
            textcoords="offset points", va="center", fontsize=7, color=colour,
        )  # fmt: skip


def chart_svg(doc: dict[str, Any]) -> str:
    """The individuals chart (values, centre line, control limits, action limits, the points
    of run-rule violations by rule) above the moving-range chart; as an SVG element."""
    batches = doc["batches"]
    x = list(range(1, len(batches) + 1))
    y = [b["value"] for b in batches]
    fig = Figure(figsize=(9.0, 5.2), dpi=100)
    fig.subplots_adjust(left=0.09, right=0.86, top=0.95, bottom=0.2, hspace=0.12)
    ind, mr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1.0]})
    ind.plot(x, y, color="#1f4e99", lw=0.8, marker="o", ms=3, label="batch", zorder=3)
    lines = (
        ("mean", "centre", "#333333", "-"), ("ucl", "UCL", "#c0392b", "--"), ("lcl", "LCL", "#c0392b", "--"),
        ("action_high", "action high", "#555555", ":"), ("action_low", "action low", "#555555", ":"),
    )  # fmt: skip
    index = {b["batch_id"]: i for i, b in enumerate(batches)}
    for rule in sorted({v["rule"] for v in doc["violations"]}):
        points = sorted({index[b] for v in doc["violations"] if v["rule"] == rule for b in v["batch_ids"]})
        ind.scatter(
            [x[i] for i in points], [y[i] for i in points], s=46 if rule == 1 else 30,
            facecolors=_RULE_COLOURS[rule] if rule == 1 else "none", edgecolors=_RULE_COLOURS[rule],
            linewidths=1.3, zorder=4, label=f"rule {rule}",
        )  # fmt: skip
    ind.set_ylabel(doc["unit"] or doc["metric"] if doc["stat"] != "duration" else "s", fontsize=8)
    ind.set_title(statistic_label(doc), fontsize=9, loc="left")
    ind.margins(y=0.12)
    _lines(
        ind, [(doc[key], name, colour, style) for key, name, colour, style in lines if doc[key] is not None]
    )
    ind.tick_params(labelsize=8)
    if doc["violations"]:
        ind.legend(fontsize=7, loc="upper left", ncols=5)
    ranges = [b["moving_range"] for b in batches]
    mr.plot(x[1:], ranges[1:], color="#1f4e99", lw=0.8, marker="o", ms=2.5)
    mr.set_ylim(bottom=0)
    mr_lines = (("mr_mean", "MR mean", "#333333", "-"), ("mr_ucl", "MR UCL", "#c0392b", "--"))
    _lines(
        mr, [(doc[key], name, colour, style) for key, name, colour, style in mr_lines if doc[key] is not None]
    )
    mr.set_ylabel("moving range", fontsize=8)
    mr.tick_params(labelsize=8)
    step = max(1, -(-len(batches) // _LABELS))
    mr.set_xticks(x[::step], [b["batch_id"] for b in batches][::step], rotation=90, fontsize=7)
    mr.set_xlim(0.5, len(batches) + 0.5)
    return svg_text(fig)


def render_trend_html(doc: dict[str, Any]) -> str:
    """The whole trend page of a trend document."""
    flagged = _flagged(doc)
    rows = [
        dict(b, number=i + 1, rules=", ".join(str(r) for r in sorted(flagged.get(b["batch_id"], []))))
        for i, b in enumerate(doc["batches"])
    ]
    return (
        template_environment()
        .get_template("batch_trend.html.j2")
        .render(doc=doc, rows=rows, chart=chart_svg(doc), label=statistic_label(doc), rules=RULES)
    )
