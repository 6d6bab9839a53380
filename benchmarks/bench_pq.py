"""PQ benchmark (issue 30): ``uns validate --pq`` on a lake of 1,000 batches; target < 2 min.

Usage (from the repository root; ``bash scripts/bench pq`` sets up and runs this)::

    .venv/bin/python -m benchmarks.bench_pq [--batches 1000] [--metrics 5] [--interval 5] [--keep DIR]

The lake is written straight to Delta (as ``benchmarks/bench_batch.py`` does: the
engine would take long to ingest it, and the PQ only reads): ``--batches`` batches of
four 10-minute phases on four bioreactors, one after the other on each; ``--metrics``
Double metrics per bioreactor sampled every ``--interval`` seconds over the whole
span; their births in ``metric_catalog``.  Each table is written in two appends so
that ``uns lake compact`` rewrites every file and records it in the audit trail (the
lake then verifies clean, as a real one does).  A plant model maps the four devices,
a spec gives each metric its limits and expected interval, and then

    uns validate --pq --config uns.toml --lake LAKE --batch <the newest three> --out ...

runs as a child process (start-up and the PDF included), timed.  Prints the figures
and a JSON summary.
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

from benchmarks.bench_batch import PHASES, T0, _batch_rows, _context, _dates, _table, _ts, _write

TARGET_S = 120.0
UNITS = tuple(f"acme/basel/pilot/usp/br-{u:03d}" for u in range(4))
DEVICES = tuple(f"BR-{u:03d}" for u in range(4))
PHASE_MS = 600_000
BATCH_MS = 3_600_000  # one batch an hour per unit: four 10-minute phases, then idle


def _halves(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Every other row: each date partition gets two files, which compaction merges."""
    idx = np.arange(table.num_rows)
    return table.take(pa.array(idx[::2])), table.take(pa.array(idx[1::2]))


def _write_twice(root: Path, name: str, table: pa.Table) -> None:
    for half in _halves(table):
        _write(root, name, half)


def build_lake(root: Path, batches: int, metrics: int, interval_s: float) -> list[str]:
    """The lake; returns the batch ids, oldest first."""
    rows: list[tuple[int, str, str, str | None]] = []
    ids = []
    for b in range(batches):
        unit = UNITS[b % len(UNITS)]
        start = T0 + (b // len(UNITS)) * BATCH_MS
        ids.append(f"B2025-{b:05d}")
        rows += _batch_rows(ids[-1], unit, start, PHASE_MS, PHASES[:4])
    _write_twice(root, "context", _context(rows))
    names = [f"Sensor{m:02d}" for m in range(metrics)]
    span_ms = (batches // len(UNITS) + 1) * BATCH_MS
    ts = T0 + np.arange(0, span_ms, int(interval_s * 1000), dtype=np.int64)
    rng = np.random.default_rng(30)
    for unit, device in zip(UNITS, DEVICES, strict=True):
        n = len(ts) * metrics
        ms = np.tile(ts, metrics)
        which = np.repeat(np.arange(metrics, dtype=np.int32), len(ts))
        const = pa.array(np.zeros(n, dtype=np.int32))
        columns: dict[str, Any] = {
            "ts": _ts(ms), "received_at": _ts(ms),
            "path": pa.DictionaryArray.from_arrays(const, pa.array([unit])).cast(pa.string()),
            "metric": pa.DictionaryArray.from_arrays(pa.array(which), pa.array(names)).cast(pa.string()),
            "datatype": pa.DictionaryArray.from_arrays(const, pa.array(["Double"])).cast(pa.string()),
            "value_double": 50.0 + rng.normal(0.0, 1.0, n),
            "quality": pa.DictionaryArray.from_arrays(const, pa.array(["good"])).cast(pa.string()),
            "is_historical": np.zeros(n, dtype=bool),
            "group_id": pa.DictionaryArray.from_arrays(const, pa.array(["Bench"])).cast(pa.string()),
            "edge_node_id": pa.DictionaryArray.from_arrays(const, pa.array(["Bench-Ctrl"])).cast(pa.string()),
            "device_id": pa.DictionaryArray.from_arrays(const, pa.array([device])).cast(pa.string()),
            "unmapped": np.zeros(n, dtype=bool),
            "date": _dates(ms),
        }  # fmt: skip
        _write_twice(root, "measurements", _table("measurements", n, columns))
    births = len(UNITS) * metrics
    birth = np.full(births, T0 - 1000, dtype=np.int64)
    catalog = {
        "group_id": ["Bench"] * births, "edge_node_id": ["Bench-Ctrl"] * births,
        "device_id": [d for d in DEVICES for _ in names], "path": [u for u in UNITS for _ in names],
        "metric": names * len(UNITS), "datatype": ["Double"] * births,
        "properties": [json.dumps({"engLow": 0.0, "engHigh": 100.0})] * births,
        "birth_ts": _ts(birth), "date": _dates(birth),
    }  # fmt: skip
    _write_twice(root, "metric_catalog", _table("metric_catalog", births, catalog))
    return ids


def plant_files(folder: Path, lake: Path, metrics: int, interval_s: float) -> Path:
    """The plant model, the spec and the configuration of the benchmark plant."""
    model = folder / "plant.toml"
    lines = ['format = 1\nname = "PQ bench"\n']
    for unit in ("acme", "acme/basel", "acme/basel/pilot", "acme/basel/pilot/usp", *UNITS):
        lines.append(f'[equipment."{unit}"]\n')
    for unit, device in zip(UNITS, DEVICES, strict=True):
        lines.append(
            f'[[source]]\ngroup = "Bench"\nnode = "Bench-Ctrl"\ndevice = "{device}"\npath = "{unit}"\n'
        )
    model.write_text("\n".join(lines))
    spec = folder / "spec.toml"
    spec.write_text('name = "PQ bench"\nversion = "1"\n' + "".join(
        f'\n[[limit]]\nmetric = "Sensor{m:02d}"\npath = "acme/basel/pilot/usp/*"\naction_low = 40.0\n'
        f"action_high = 60.0\nexpected_interval_s = {interval_s}\n"
        for m in range(metrics)
    ))  # fmt: skip
    config = folder / "uns.toml"
    config.write_text(f'[engine]\nmodel = "{model}"\n[batch]\nspec = "{spec}"\n[lake]\npath = "{lake}"\n')
    return config


def _uns(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "uns", *args], capture_output=True, text=True, env=env,
                          timeout=1800, check=False)  # fmt: skip
    return time.perf_counter() - started, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=5)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--keep", type=Path, help="build the lake here and keep it")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="uns-bench-pq-"))
    folder.mkdir(parents=True, exist_ok=True)
    lake = folder / "lake"
    started = time.perf_counter()
    ids = build_lake(lake, args.batches, args.metrics, args.interval)
    compact_s, compacted = _uns("lake", "compact", "--lake", str(lake))
    assert compacted.returncode == 0, compacted.stderr
    built_s = time.perf_counter() - started
    config = plant_files(folder, lake, args.metrics, args.interval)
    named = [x for b in ids[-4:-1] for x in ("--batch", b)]  # three closed batches
    pq_s, done = _uns("validate", "--pq", "--config", str(config), "--lake", str(lake), *named,
                      "--out", str(folder / "pq"))  # fmt: skip
    evidence = json.loads((folder / "pq" / "validation.json").read_text())
    samples = (
        len(UNITS) * args.metrics * int((args.batches // len(UNITS) + 1) * BATCH_MS / (args.interval * 1000))
    )
    summary = {
        "batches": args.batches,
        "samples": samples,
        "lake_built_s": round(built_s, 1),
        "compact_s": round(compact_s, 1),
        "pq_s": round(pq_s, 1),
        "pq_target_s": TARGET_S,
        "pq_result": evidence["summary"],
        "checks": {c["requirement"]: round(c["seconds"], 2) for c in evidence["checks"]},
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    for c in evidence["checks"]:
        print(f"{c['requirement']} {c['result']:4} {c['seconds']:6.2f} s  {c['detail'][:120]}")
    print(f"uns validate --pq over {args.batches} batches ({samples} samples): {pq_s:.1f} s "
          f"(target {TARGET_S:.0f} s), {evidence['summary']}; exit {done.returncode}")  # fmt: skip
    print(json.dumps(summary))
    return 0 if pq_s < TARGET_S and done.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
