"""The harness's verdicts against the issue-7 targets, and the readable table."""

from __future__ import annotations

from typing import Any

__all__ = ["PACING_TOLERANCE", "evaluate_targets", "render_table"]

#: the generator paces in 5 ms ticks; a run offering 100,000/s measures ~99,95x/s
PACING_TOLERANCE = 0.995


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


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    modes = result.get("modes", {})
    ceiling = float(_get(result, "ceiling", "max_sustained_msgs_per_s", default=0.0) or 0.0)
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, measured: str, holds: bool | None) -> None:
        out.append({"target": name, "bar": target, "measured": measured, "holds": holds})

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
    add(
        "zero loss, every phase (lake)",
        "0 missing, 0 duplicates",
        f"{missing} missing, {dup} duplicates",
        missing == 0 and dup == 0,
    )
    add("no RSS growth, 10-minute soak at 50k/s", "flat", "not run by this harness", None)
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
        "saturation ramp (10 metrics per DDATA; ceiling: msgs/s sent, received; engine: msgs/s, metrics/s)"
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
    lrows = []
    for mode, res in result.get("modes", {}).items():
        loss = res.get("loss", {})
        for group, g in loss.get("groups", {}).items():
            lrows.append(
                [mode, group, g["generated"], g["rows"], g["distinct"], g["missing"], g["duplicates"]]
            )
        eng = res.get("engine", {})
        lrows.append(
            [
                mode,
                "(engine)",
                None,
                None,
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
