"""Trend benchmark (issue 32): `uns batch trend` over 1,000 batches of 10,000 samples each.

Usage (from the repository root; ``bash scripts/bench trend`` sets up and runs this)::

    .venv/bin/python -m benchmarks.bench_trend [--batches 1000] [--samples 10000] [--repeat 1]
        [--formats json,html] [--keep DIR]

A lake is written straight to Delta (Arrow tables of the lake's own schemas, as
``benchmarks/bench_batch.py`` does): ``--batches`` batches of four phases on four
bioreactors, each with ``--samples`` samples of ``Temperature`` (one batch shifted by
+0.5) and a tenth as many of ``pH`` (so the metric filter has something to leave out).
``uns batch trend Temperature`` is timed as the real command in a child process
(Python start-up and imports included) per format, and the trend document alone
(``build_trend``: the view ``batch_statistics``, the chart, the rules) in process.

Prints one line per figure and a JSON summary.  Target: the command < 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.bench_batch import PHASES, T0, _batch_rows, _context, _dates, _table, _ts, _write
from uns import lake
from uns.batch.spec import parse_spec
from uns.batch.trend import TrendRequest, build_trend

TARGET_S = 5.0
UNITS = [f"acme/basel/pilot/usp/br-{u:03d}" for u in range(4)]
PHASE_MS = 600_000  # four phases of 10 min, then the next batch on the unit
SHIFTED = 500  # this batch runs 0.5 degC warm: rule 1 finds it
SPEC = """name = "bench trend"
[[limit]]
metric = "Temperature"
action_low = 36.0
action_high = 38.0
"""


def _measurements(starts: list[tuple[str, int]], first: int, count: int, samples: int, seed: int) -> pa.Table:
    """``samples`` Temperature and ``samples // 10`` pH samples of batches ``first`` .. ``first + count``."""
    rng = np.random.default_rng(seed)
    span = len(PHASES[:4]) * PHASE_MS
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for metric, n, level, noise in (("Temperature", samples, 37.0, 0.2), ("pH", samples // 10, 7.0, 0.02)):
        offsets = np.arange(n, dtype=np.int64) * (span // n)
        ms = np.concatenate([starts[b][1] + offsets for b in range(first, first + count)])
        unit = np.repeat(np.array([UNITS.index(starts[b][0]) for b in range(first, first + count)]), n)
        values = level + 0.1 * rng.standard_normal(count)[np.repeat(np.arange(count), n)]
        values += rng.normal(0.0, noise, count * n)
        if metric == "Temperature" and first <= SHIFTED < first + count:
            values[(SHIFTED - first) * n : (SHIFTED - first + 1) * n] += 0.5
        parts.append((ms, unit.astype(np.int32), np.full(count * n, metric == "pH", dtype=np.int32), values))
    ms, unit, which, values = (np.concatenate(c) for c in zip(*parts, strict=True))
    n = len(ms)
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    return _table(
        "measurements",
        n,
        {
            "ts": _ts(ms),
            "received_at": _ts(ms),
            "path": pc.take(pa.array(UNITS), pa.array(unit)),
            "metric": pc.take(pa.array(["Temperature", "pH"]), pa.array(which)),
            "datatype": pc.take(pa.array(["Double"]), zeros),
            "value_double": values,
            "quality": pc.take(pa.array(["good"]), zeros),
            "is_historical": np.zeros(n, dtype=bool),
            "group_id": pc.take(pa.array(["Bench"]), zeros),
            "edge_node_id": pc.take(pa.array(["USP-Ctrl"]), zeros),
            "device_id": pc.take(pa.array([f"BR-{u:03d}" for u in range(4)]), pa.array(unit)),
            "date": _dates(ms),
        },
    )


def build_lake(root: Path, batches: int, samples: int) -> float:
    """The lake; the seconds it took to write."""
    started = time.perf_counter()
    rows: list[tuple[int, str, str, str | None]] = []
    starts = []
    for b in range(batches):
        unit = UNITS[b % len(UNITS)]
        start = T0 + (b // len(UNITS)) * (len(PHASES[:4]) * PHASE_MS + 60_000)
        rows += _batch_rows(f"B2025-{b:05d}", unit, start, PHASE_MS, PHASES[:4])
        starts.append((unit, start))
    _write(root, "context", _context(rows))
    chunk = max(1, 2_000_000 // samples)  # batches per write: ~2 million Temperature rows at a time
    for first in range(0, batches, chunk):
        count = min(chunk, batches - first)
        _write(root, "measurements", _measurements(starts, first, count, samples, seed=first))
    birth = np.full(2 * len(UNITS), T0 - 1000, dtype=np.int64)
    _write(
        root,
        "metric_catalog",
        _table(
            "metric_catalog",
            len(birth),
            {
                "group_id": ["Bench"] * len(birth),
                "edge_node_id": ["USP-Ctrl"] * len(birth),
                "device_id": [f"BR-{u:03d}" for u in range(4)] * 2,
                "path": UNITS * 2,
                "metric": ["Temperature"] * 4 + ["pH"] * 4,
                "datatype": ["Double"] * len(birth),
                "unit": ["degC"] * 4 + ["pH"] * 4,
                "birth_ts": _ts(birth),
                "date": _dates(birth),
            },
        ),
    )
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=10_000, help="Temperature samples per batch")
    parser.add_argument("--formats", default="json,html")
    parser.add_argument("--repeat", type=int, default=1, help="time each figure this often (the best counts)")
    parser.add_argument("--keep", help="build the lake in this directory and keep it")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"batches": args.batches, "samples_per_batch": args.samples}
    with tempfile.TemporaryDirectory(prefix="uns-bench-trend-") as tmp:
        base = Path(args.keep or tmp)
        root, spec = base / "trend-lake", base / "trend-spec.toml"
        spec.write_text(SPEC)
        if not (root / "measurements").exists():
            built = build_lake(root, args.batches, args.samples)
            print(f"trend lake: {args.batches:,} batches x {args.samples:,} samples written in {built:.1f} s")
        request = TrendRequest("Temperature", spec=parse_spec(SPEC))
        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            con = lake.connect(root)
            doc = build_trend(con, request)
            con.close()
            runs.append(time.perf_counter() - t)
        result["document_s"] = round(min(runs), 2)
        shifted = [v["batch_ids"] for v in doc["violations"] if v["rule"] == 1]
        assert doc["n"] == args.batches, doc["n"]
        assert [f"B2025-{SHIFTED:05d}"] in shifted or args.batches <= SHIFTED, shifted
        print(f"trend document in process: {result['document_s']:.2f} s ({doc['n']:,} batches)")
        env = {**os.environ, "UNS_LAKE": str(root)}
        for fmt in args.formats.split(","):
            out = base / f"Temperature-trend.{fmt}"
            runs = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "uns", "batch", "trend", "Temperature", "--spec", str(spec),
                     "--format", fmt, "-o", str(out)],
                    capture_output=True, text=True, check=True, env=env,
                )  # fmt: skip
                runs.append(time.perf_counter() - t)
            result[f"command_{fmt}_s"] = round(min(runs), 2)
            result[f"command_{fmt}_runs_s"] = [round(r, 2) for r in runs]
            print(f"uns batch trend --format {fmt}: {min(runs):.2f} s ({out.stat().st_size:,} bytes; "
                  f"target < {TARGET_S:g} s) -- {done.stdout.strip()}")  # fmt: skip
    load = os.getloadavg()
    result["load_average"] = [round(x, 2) for x in load]
    commands = [result[f"command_{fmt}_s"] for fmt in args.formats.split(",")]
    result["targets_met"] = all(v < TARGET_S for v in commands)
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print(json.dumps(result))
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
