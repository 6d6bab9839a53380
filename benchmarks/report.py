"""The harness's verdicts against the issue-7 targets, the readable table, the saved report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = [
    "PACING_TOLERANCE",
    "SOAK_FLAT_FRACTION",
    "SOAK_RATE",
    "SOAK_SECONDS",
    "evaluate_targets",
    "linear_slope",
    "render_table",
    "rss_trend",
    "save_report",
]

#: the generator paces in 5 ms ticks; a run offering 100,000/s measures ~99,95x/s
PACING_TOLERANCE = 0.995
#: the soak target: no RSS growth over 10 minutes at 50,000 metrics/s
SOAK_SECONDS = 600
SOAK_RATE = 50_000
#: "no growth": the second half's trend, extended over the whole soak, is under 5% of the start RSS
SOAK_FLAT_FRACTION = 0.05


def _get(d: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def sustained(phase: dict[str, Any] | None) -> float:
    """The rate the engine sustained: the offered rate when it kept up, else what it processed."""
    if not phase:
        return 0.0
    if phase.get("kept_up"):
        return float(phase["generator_metrics_per_s"])
    return float(phase["engine_metrics_per_s"])


def linear_slope(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope dy/dx of (x, y) points; None without two distinct x."""
    n = len(points)
    if n < 2:
        return None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def rss_trend(series: list[tuple[float, float]], duration_s: float) -> dict[str, Any]:
    """The soak's memory verdict from (seconds since the soak's data started, RSS MB) samples.

    The slope is fitted over the second half only (the first holds the warm-up: buffers,
    catalogs, the first lake commits); ``flat`` when that slope, extended over the whole
    soak, grows the RSS by less than ``SOAK_FLAT_FRACTION`` of the start RSS."""
    if not series:
        return {"samples": 0, "flat": None}
    start_mb, end_mb = series[0][1], series[-1][1]
    per_s = linear_slope([(t, mb) for t, mb in series if t >= duration_s / 2])
    out: dict[str, Any] = {
        "samples": len(series),
        "start_mb": start_mb,
        "end_mb": end_mb,
        "peak_mb": max(mb for _, mb in series),
        "slope_mb_per_min": None,
        "growth_mb": None,
        "flat": None,
        "rule": f"flat: second-half slope x duration < {SOAK_FLAT_FRACTION:.0%} of the start RSS",
    }
    if per_s is not None:
        growth = per_s * duration_s
        out["slope_mb_per_min"] = round(per_s * 60, 3)
        out["growth_mb"] = round(growth, 2)
        out["flat"] = growth < SOAK_FLAT_FRACTION * start_mb
    return out


def soak_target(soak: dict[str, Any] | None) -> tuple[str, bool | None]:
    """(measured, holds) of the soak target; n/a when not run, or flat but shorter/slower than the bar."""
    if soak is None:
        return f"not run (--soak {SOAK_SECONDS})", None
    rss = soak["rss"]
    loss = soak["loss"]
    rate = sustained(soak)
    growth = rss.get("growth_mb")
    share = f" = {growth / rss['start_mb']:.1%} of start" if growth is not None and rss["start_mb"] else ""
    measured = (
        f"{soak['seconds']:.0f} s at {rate:,.0f}/s (kept up: {soak['kept_up']}); "
        f"RSS {rss.get('start_mb')} -> "
        f"{rss.get('end_mb')} MB (peak {rss.get('peak_mb')}), second-half slope "
        f"{rss.get('slope_mb_per_min')} MB/min: {growth} MB over the soak{share}; "
        f"lake missing {loss['missing']}, dup {loss['duplicates']}"
    )
    if not soak["kept_up"] or not rss.get("flat") or loss["missing"] or loss["duplicates"]:
        return measured, False
    if soak["planned_seconds"] < SOAK_SECONDS or soak["target_metrics_per_s"] < SOAK_RATE:
        return measured + " [shorter or slower than the target]", None
    return measured, rate >= SOAK_RATE * PACING_TOLERANCE


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    modes = result.get("modes", {})
    ceiling = float(_get(result, "ceiling", "max_sustained_msgs_per_s", default=0.0) or 0.0)
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, measured: str, holds: bool | None) -> None:
        out.append({"target": name, "bar": target, "measured": measured, "holds": holds})

    receive = result.get("mqtt5_receive")
    if receive:
        add(
            "MQTT 5 receive path",
            "within 10% of 3.1.1",
            f"{receive['v5_ns_per_msg']} vs {receive['v3_ns_per_msg']} ns/msg ({receive['v5_over_v3']:.3f};"
            f" 3.1.1 in C {receive.get('v3_native_ns_per_msg', '-')})",
            receive["v5_over_v3"] <= 1.10,
        )

    def throughput(mode: str, bar: float, label: str) -> None:
        phase = _get(modes, mode, "throughput")
        if phase is None:
            return
        rate = sustained(phase)
        loss = _get(modes, mode, "loss", "groups", f"{mode}-throughput", default={})
        lossless = loss.get("missing", 1) == 0 and loss.get("duplicates", 1) == 0
        measured = (
            f"{rate:,.0f}/s (kept up: {phase['kept_up']}, lake missing {loss.get('missing')}, "
            f"dup {loss.get('duplicates')}"
        )
        # with republish on, the events must come out too: none dropped, none missing
        rp = phase.get("republish")
        republished = True
        if rp is not None:
            republished = rp["dropped_queue_full"] == 0 and rp["metrics_lost"] <= 0 and rp["errors"] == 0
            measured += (
                f"; republish dropped {rp['dropped_queue_full']:,}, not received {rp['metrics_lost']:,}"
            )
        holds = (
            phase["target_metrics_per_s"] >= bar
            and rate >= bar * PACING_TOLERANCE
            and bool(phase["kept_up"])
            and lossless
            and republished
        )
        planned = phase.get("planned_seconds", phase["seconds"])
        add(label, f">= {bar:,.0f} metrics/s for {planned:.0f} s, zero loss", measured + ")", holds)

    throughput("lake", 100_000, "lake only throughput")
    sat = _get(modes, "lake", "saturation")
    if sat is not None and ceiling > 0:
        ratio = sat["max_sustained_msgs_per_s"] / ceiling
        exhausted = (
            " (ceiling ramp exhausted: ceiling higher)" if _get(result, "ceiling", "ramp_exhausted") else ""
        )
        add(
            "lake only / bare-subscriber ceiling (ramp, kept up)",
            ">= 40%",
            f"{ratio:.0%} ({sat['max_sustained_msgs_per_s']:,.0f} vs {ceiling:,.0f} msgs/s){exhausted}",
            ratio >= 0.40,
        )
    throughput("device", 80_000, "per-device republish throughput")
    throughput("metric", 40_000, "per-metric republish throughput")
    for mode in ("device", "metric"):
        lat = _get(modes, mode, "latency")
        if lat is None or "republish" not in lat:
            continue
        p99 = _get(lat, "republish", "latency_ms", "p99")
        rate = lat["target_metrics_per_s"]
        add(
            f"e2e latency p99 ({mode} republish, {rate:,.0f}/s)",
            "<= 50 ms" + ("" if rate >= 20_000 else " (at 20,000/s)"),
            f"{p99} ms" if p99 is not None else "no events",
            p99 is not None and p99 <= 50 and rate >= 20_000,
        )
    lag = _get(modes, "lake", "latency", "lake_lag_ms", "p99")
    add(
        "lake lag p99 (20,000/s)",
        "<= 10 s",
        f"{lag / 1000:.2f} s" if lag is not None else "n/a",
        lag is not None and lag <= 10_000,
    )
    thr = _get(modes, "lake", "throughput")
    if thr is not None:
        rss = thr["peak_rss_mb"]
        add(
            "peak RSS at 100k metrics/s",
            "<= 400 MB",
            f"{rss:.0f} MB at {sustained(thr):,.0f}/s",
            rss <= 400 and sustained(thr) >= 100_000 * PACING_TOLERANCE,
        )
    scale = _get(modes, "lake", "tag_scale")
    if scale is not None:
        big = scale["born_metrics"] >= 200_000
        worst = max(scale["initial_birth_s"], scale["rebirth_storm_s"])
        add(
            f"birth handling, {scale['born_metrics']:,} born metrics",
            "<= 5 s",
            f"initial {scale['initial_birth_s']} s, rebirth storm {scale['rebirth_storm_s']} s",
            big and worst <= 5,
        )
        add(
            "RSS with 200k born metrics",
            "<= 1 GB",
            f"{scale['peak_rss_mb']:.0f} MB",
            big and scale["peak_rss_mb"] <= 1024,
        )
    missing = _get(result, "loss", "missing", default=None)
    dup = _get(result, "loss", "duplicates", default=None)
    left = _get(result, "loss", "left_in_wal_rows", default=0)
    add(
        "zero loss, every phase (lake)",
        "0 missing, 0 duplicates",
        f"{missing} missing, {dup} duplicates"
        + (f" ({left:,} rows were still in the WAL at the stop: committed before the count)" if left else ""),
        missing == 0 and dup == 0,
    )
    measured, holds = soak_target(result.get("soak"))
    add(
        "no RSS growth, 10-minute soak at 50k/s",
        f"flat (growth < {SOAK_FLAT_FRACTION:.0%} of start RSS) over {SOAK_SECONDS} s at {SOAK_RATE:,}/s",
        measured,
        holds,
    )
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _rows(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[_fmt(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_table(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    parts = [
        f"uns benchmark ({result.get('profile')}) {result.get('started')}  {result.get('elapsed_s')} s",
        f"machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gb')} GB, "
        f"Python {m.get('python')}, {m.get('mosquitto')}",
        "",
    ]
    if result.get("scrape_s"):
        scrapes = {mode: res["engine"].get("scrapes") or {} for mode, res in result.get("modes", {}).items()}
        parts.append(
            f"GET /metrics every {result['scrape_s']} s: "
            + "; ".join(
                f"{mode} {s.get('scrapes')} scrapes ({s.get('errors')} failed), "
                f"p50 {s.get('p50_ms')} ms, max {s.get('max_ms')} ms"
                for mode, s in scrapes.items()
            )
        )
        parts.append("")
    c = result.get("ceiling", {})
    parts.append(
        "ceiling (bare aiomqtt subscriber, same ramp): kept up to "
        f"{_fmt(c.get('max_sustained_msgs_per_s'))} msgs/s = {_fmt(c.get('max_sustained_metrics_per_s'))} "
        f"metrics/s; best receive rate {_fmt(c.get('msgs_per_s'))} msgs/s"
        f"{' (ramp exhausted)' if c.get('ramp_exhausted') else ''}"
    )
    parts.append("")
    srows = [
        [
            "ceiling",
            s["target_metrics_per_s"],
            s["generator_msgs_per_s"],
            s["received_msgs_per_s"],
            "yes" if s["kept_up"] else "NO",
            s["behind_at_end_s"],
            None,
            None,
        ]
        for s in c.get("steps", [])
    ]
    for mode, res in result.get("modes", {}).items():
        for s in res.get("saturation", {}).get("steps", []):
            srows.append(
                [
                    f"engine {mode}",
                    s["target_metrics_per_s"],
                    s["engine_msgs_per_s"],
                    s["engine_metrics_per_s"],
                    "yes" if s["kept_up"] else "NO",
                    s["behind_at_end_s"],
                    s["cpu_s_per_million_metrics"],
                    s["peak_rss_mb"],
                ]
            )
    parts.append(
        "saturation ramp (10 metrics per DDATA; ceiling: msgs/s sent, received; engine: msgs/s, metrics/s;"
        " engine CPU and RSS: its process plus the lake's commit worker)"
    )
    parts.append(
        _rows(
            ["who", "offered metrics/s", "msgs/s", "recv/s", "kept up", "behind s", "cpu s/M", "RSS MB"],
            srows,
        )
    )
    parts.append("")
    rows = []
    for mode, res in result.get("modes", {}).items():
        for phase in ("latency", "throughput"):
            p = res.get(phase)
            if not p:
                continue
            rp = p.get("republish", {})
            lat = rp.get("latency_ms", {})
            lag = p.get("lake_lag_ms", {})
            rows.append(
                [
                    mode,
                    phase,
                    p["shape"],
                    p["target_metrics_per_s"],
                    p["generator_metrics_per_s"],
                    p["engine_metrics_per_s"],
                    p["engine_msgs_per_s"],
                    "yes" if p["kept_up"] else "NO",
                    p["behind_at_end_s"],
                    lat.get("p50"),
                    lat.get("p95"),
                    lat.get("p99"),
                    (lag.get("p50") or 0) / 1000 if lag else None,
                    (lag.get("p99") or 0) / 1000 if lag else None,
                    p["cpu_s_per_million_metrics"],
                    p["peak_rss_mb"],
                    rp.get("dropped_queue_full") if rp else None,
                ]
            )
    parts.append(
        _rows(
            [
                "mode",
                "phase",
                "plant",
                "offered/s",
                "generated/s",
                "engine/s",
                "engine msg/s",
                "kept up",
                "behind s",
                "e2e p50",
                "p95",
                "p99 ms",
                "lag p50 s",
                "p99 s",
                "cpu s/M",
                "RSS MB",
                "rp drops",
            ],
            rows,
        )
    )
    parts.append("")
    lake = result.get("modes", {}).get("lake", {})
    brows = []
    for name in ("large_birth", "rebirth_storm", "tag_scale"):
        b = lake.get(name)
        if b:
            brows.append(
                [
                    name,
                    b["shape"],
                    b["born_metrics"],
                    b["initial_birth_s"],
                    b["rebirth_storm_s"],
                    b["rebirths_answered"],
                    b["peak_rss_mb"],
                ]
            )
    if brows:
        parts.append(
            _rows(
                [
                    "scenario",
                    "plant",
                    "born metrics",
                    "initial birth s",
                    "rebirth storm s",
                    "rebirths",
                    "RSS MB",
                ],
                brows,
            )
        )
        parts.append("")
    soak = result.get("soak")
    if soak:
        rss = soak["rss"]
        kept = "yes" if soak["kept_up"] else "NO"
        parts.append(
            f"soak (lake, fresh engine): {soak['seconds']:.0f} of {soak['planned_seconds']:.0f} s, "
            f"offered {_fmt(soak['target_metrics_per_s'])} metrics/s, "
            f"engine {_fmt(soak['engine_metrics_per_s'])}/s, kept up {kept}"
        )
        parts.append(
            f"  RSS every {rss.get('interval_s')} s: start {rss.get('start_mb')} MB, "
            f"end {rss.get('end_mb')} MB, peak {rss.get('peak_mb')} MB; "
            f"second-half slope {rss.get('slope_mb_per_min')} MB/min; flat: {rss.get('flat')}"
        )
        parts.append(f"  ({rss.get('rule')})")
        eng = soak.get("engine", {})
        if eng.get("commit_worker_recycled") is not None:
            parts.append(
                f"  lake commit worker: replaced {eng['commit_worker_recycled']} time(s) at its RSS bound, "
                f"died {eng.get('commit_worker_restarts')} time(s)"
            )
        if eng.get("compactions") is not None:
            files = soak.get("lake_files", {}).get("measurements", "-")
            parts.append(
                f"  compactions {eng['compactions']} (the last took {eng.get('last_compaction_s')} s); "
                f"measurements files at the end {files}; engine stopped in {eng.get('shutdown_s')} s"
            )
        parts.append("")
    lrows = []
    loss_checks = list(result.get("modes", {}).items())
    if soak:
        loss_checks.append(("soak", soak))
    for mode, res in loss_checks:
        loss = res.get("loss", {})
        for group, g in loss.get("groups", {}).items():
            lrows.append(
                [mode, group, g["generated"], g["rows"], g["distinct"], g["missing"], g["duplicates"]]
            )
        eng = res.get("engine", {})
        left = loss.get("left_in_wal_rows", 0)
        lrows.append(
            [
                mode,
                "(engine)",
                None,
                f"{left:,} were in its WAL" if left else None,
                None,
                f"exit {eng.get('exit_code')}",
                f"peak RSS {eng.get('peak_rss_mb')} MB",
            ]
        )
    parts.append(
        _rows(["mode", "group", "generated", "lake rows", "distinct", "missing", "duplicates"], lrows)
    )
    parts.append("")
    trows = [
        [t["target"], t["bar"], t["measured"], {True: "HOLDS", False: "MISSED", None: "n/a"}[t["holds"]]]
        for t in result.get("targets", [])
    ]
    parts.append(_rows(["target", "bar", "measured", "verdict"], trows))
    return "\n".join(parts)


def save_report(out: Path, profile: str, result: dict[str, Any], table: str) -> Path:
    """Write ``result`` as ``<out>/<timestamp>-<profile>.json`` and print ``table`` and the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}-{profile}.json"
    path.write_text(json.dumps(result, indent=2))
    print(table)
    print(f"\nreport: {path}")
    return path
