"""What anchoring the audit trail costs the engine (issue 28): CPU per metric, before and after.

    bash scripts/bench anchor [--seconds 20] [--rounds 2] [--interval 1]

The engine (``uns run``, lake mode, its commit worker included) takes the ``--quick``
profile's lake throughput load (100,000 metrics/s, 10 nodes x 10 devices x 10 metrics)
for ``--seconds``, once without ``audit.anchor`` and once with an anchor directory,
alternating for ``--rounds``; each run's CPU seconds (engine + worker, from psutil)
per million metrics processed is reported, and the median of each side.  The anchor
interval is ``--interval`` seconds (default 1: sixty times as many anchors as the
default 60 s, so that a cost would show).  CPU time, not instruction counts: on a
shared machine compare the medians and repeat on a quiet one.

Then the cost of one anchor write on its own (``Anchorer.write``: JSON, an ``O_EXCL``
file, fsync of the file and its directory), in process CPU time over ``--writes``
anchors, and what it comes to per metric at the default interval and that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import PROFILES, Bench
from benchmarks.procs import EngineProcess
from uns.lake.anchors import Anchorer, AnchorSettings
from uns.mqtt.mosquitto import running_mosquitto

QUICK = PROFILES["quick"]
RATE = QUICK.throughput["lake"][0]


async def one_run(bench: Bench, workdir: Path, name: str, anchors: Path | None, seconds: float,
                  interval: float) -> dict[str, Any]:  # fmt: skip
    env = {"UNS_AUDIT_ANCHOR": str(anchors), "UNS_AUDIT_ANCHOR_INTERVAL_S": str(interval)} if anchors else {}
    engine = EngineProcess(port=bench.port, lake=workdir / f"lake-{name}", mode="lake", extra_env=env)
    await engine.start()
    try:
        result = await bench.load_phase(engine, f"anchor-{name}", QUICK.plant, RATE, seconds)
    finally:
        await engine.stop()
    written = _anchors_in(anchors)
    return {
        "run": name,
        "anchored": anchors is not None,
        "anchors_written": written,
        "engine_metrics": result["engine_metrics"],
        "kept_up": result["kept_up"],
        "cpu_s_per_million_metrics": result["cpu_s_per_million_metrics"],
    }


def _anchors_in(anchors: Path | None) -> int:
    return len(list(anchors.rglob("*.json"))) if anchors else 0


def anchor_write_cost(writes: int) -> dict[str, float]:
    """Process CPU seconds of one anchor write, on average over ``writes``."""
    with tempfile.TemporaryDirectory(prefix="uns-anchor-bench-") as d:
        anchorer = Anchorer(
            AnchorSettings(d, interval_s=60.0), "bench", "/lake", lambda: time.time_ns() // 1000
        )
        started_cpu, started = time.process_time(), time.perf_counter()
        for seq in range(1, writes + 1):
            anchorer.note(seq, f"{seq:064x}")
            anchorer.write()
        cpu = (time.process_time() - started_cpu) / writes
        wall = (time.perf_counter() - started) / writes
    return {"cpu_s_per_anchor": cpu, "wall_s_per_anchor": wall}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="uns-anchor-bench-") as tmp, running_mosquitto() as broker:
        workdir = Path(tmp)
        bench = Bench(QUICK, broker.port, workdir)
        for round_ in range(args.rounds):
            for anchored in (False, True):
                name = f"{'on' if anchored else 'off'}-{round_}"
                anchors = workdir / f"anchors-{name}" if anchored else None
                if anchors is not None:
                    anchors.mkdir()
                runs.append(await one_run(bench, workdir, name, anchors, args.seconds, args.interval))
                print(json.dumps(runs[-1]), flush=True)
    off = statistics.median(r["cpu_s_per_million_metrics"] for r in runs if not r["anchored"])
    on = statistics.median(r["cpu_s_per_million_metrics"] for r in runs if r["anchored"])
    write = anchor_write_cost(args.writes)
    per_metric_default = write["cpu_s_per_anchor"] / (60.0 * RATE)  # one anchor a minute at RATE
    return {
        "rate_metrics_per_s": RATE,
        "seconds": args.seconds,
        "anchor_interval_s": args.interval,
        "runs": runs,
        "median_cpu_s_per_million_metrics": {"without_anchor": off, "with_anchor": on},
        "difference_percent": round((on - off) / off * 100, 2) if off else None,
        "anchor_write": write,
        "anchor_cpu_s_per_million_metrics_at_default_interval": per_metric_default * 1e6,
        "anchor_share_of_engine_cpu_percent_at_default_interval": round(
            per_metric_default * 1e6 / off * 100, 5
        )
        if off
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
