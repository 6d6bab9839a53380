"""Shards benchmark (issue 19): one engine for two Sparkplug groups against two engines,
one group each (``engine.groups``), both writing one lake, side by side in one run.

Usage (from the repository root; ``bash scripts/bench shards`` sets up and runs this)::

    .venv/bin/python -m benchmarks.bench_shards [--rate 15000] [--seconds 30] [--out bench-results]

Both setups take the same offered load: two load generators (:mod:`benchmarks.loadgen`,
one per group, ``--rate`` metrics/s each) for ``--seconds``, against a private mosquitto on
loopback, the engines as ``uns run`` processes in lake mode (republish off).  Reported per
setup: the metrics generated and found in the lake exactly once (the loss check of the
harness), the aggregate lossless metrics/s (generated over the generators' own time, when
nothing is missing or doubled), and the engines' CPU seconds (engine processes and their
commit workers, from the first birth until the lake has caught up) per million metrics.
The machine's two cores also run mosquitto and the generators: the aggregate rate cannot
grow with the shards here; the CPU per metric says what a shard costs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import lake_loss, machine_info
from benchmarks.procs import EngineProcess, kill_children, run_generator
from benchmarks.report import save_report
from uns.mqtt.mosquitto import running_mosquitto

__all__ = ["main", "run_setup"]

#: the shape of each group's plant: nodes x devices x metrics (all Doubles, report by exception off)
NODES, DEVICES, METRICS = 10, 2, 10
#: every engine runs with the lake's defaults: at these rates a segment is sealed by its row
#: bound (lake.commit_rows), so one engine and two shards make about as many Delta commits
LAKE_ENV = {"UNS_ENGINE_LOG_LEVEL": "warning"}


def _pending(engine: EngineProcess) -> int:
    """Rows the engine's lake sink holds uncommitted, by its newest status document."""
    return int(engine.status.latest.get("sinks", {}).get("lake", {}).get("rows_pending", 1))


async def run_setup(
    name: str, port: int, lake: Path, shards: int, rate: float, seconds: float
) -> dict[str, Any]:
    """One setup: ``shards`` engines (1: one engine for both groups) on one lake."""
    groups = [f"{name}-S1", f"{name}-S2"]
    hosted = [",".join(groups)] if shards == 1 else groups
    engines = [
        EngineProcess(
            port=port,
            lake=lake,
            mode="lake",
            host_id=f"{name}-{n}",
            extra_env={**LAKE_ENV, "UNS_ENGINE_GROUPS": g, "UNS_LAKE_WRITER_ID": f"{name}-{n}"},
        )
        for n, g in enumerate(hosted)
    ]
    for engine in engines:
        await engine.start()
    cpu0 = [e.cpu_seconds() for e in engines]
    started = time.monotonic()
    runs = await asyncio.gather(
        *(
            run_generator(
                port=port, group=g, nodes=NODES, devices=DEVICES, metrics=METRICS, rate=rate, duration=seconds
            )
            for g in groups
        )
    )
    expected = {g: run.report["device_metrics"] for g, run in zip(groups, runs, strict=True)}
    total = sum(expected.values())
    # until the engines took every metric and committed it (their lake sinks: nothing pending)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        took = sum(e.status.metrics for e in engines)
        if took >= total and not any(map(_pending, engines)):
            break
        await asyncio.sleep(0.25)
    cpu = sum(e.cpu_seconds() - c for e, c in zip(engines, cpu0, strict=True))
    wall = time.monotonic() - started
    for engine in engines:
        await engine.stop()
    loss = lake_loss(lake, expected)
    gen_seconds = max(run.report["elapsed"] for run in runs)
    lossless = loss["missing"] == 0 and loss["duplicates"] == 0
    return {
        "engines": len(engines),
        "groups_per_engine": [h.split(",") for h in hosted],
        "offered_metrics_per_s": rate * len(groups),
        "generated_metrics": total,
        "generator_seconds": round(gen_seconds, 2),
        "aggregate_lossless_metrics_per_s": round(total / gen_seconds) if lossless else None,
        "missing": loss["missing"],
        "duplicates": loss["duplicates"],
        "engine_cpu_s": round(cpu, 2),
        "cpu_s_per_million_metrics": round(cpu / total * 1e6, 2) if total else None,
        "wall_s": round(wall, 1),
    }


async def run_all(workdir: Path, rate: float, seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine_info(), "rate_per_group": rate, "seconds": seconds}
    result["setups"] = {}
    with running_mosquitto() as broker:
        try:
            for name, shards in (("one", 1), ("two", 2)):
                result["setups"][name] = await run_setup(
                    name, broker.port, workdir / f"lake-{name}", shards, rate, seconds
                )
        finally:
            kill_children()
    one, two = result["setups"]["one"], result["setups"]["two"]
    if one["cpu_s_per_million_metrics"] and two["cpu_s_per_million_metrics"]:
        result["cpu_per_metric_two_over_one"] = round(
            two["cpu_s_per_million_metrics"] / one["cpu_s_per_million_metrics"], 3
        )
    return result


def render(result: dict[str, Any]) -> str:
    keys = [
        "engines",
        "generated_metrics",
        "aggregate_lossless_metrics_per_s",
        "missing",
        "duplicates",
        "engine_cpu_s",
        "cpu_s_per_million_metrics",
    ]
    lines = [f"{'':36}{'one engine':>14}{'two engines':>14}"]
    for key in keys:
        one, two = (result["setups"][s].get(key) for s in ("one", "two"))
        lines.append(f"{key:36}{one!s:>14}{two!s:>14}")
    lines.append(f"CPU per metric, two shards / one: {result.get('cpu_per_metric_two_over_one')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one engine against two group shards (issue 19)")
    parser.add_argument("--rate", type=float, default=15_000, help="metrics/s per group (two groups)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of load per setup")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="where the JSON report goes")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="uns-bench-shards-"))
    try:
        result = asyncio.run(run_all(workdir, args.rate, args.seconds))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    save_report(args.out, "shards", result, render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
