"""Batch report benchmark (issue 16): a report over 10 million samples, `uns batch list` over 1,000 batches.

Usage (from the repository root; ``bash scripts/bench batch`` sets up and runs this)::

    .venv/bin/python -m benchmarks.bench_batch [--samples 10000000] [--metrics 20] [--batches 1000]
        [--formats json,html] [--keep DIR]

Two lakes are written straight to Delta (Arrow tables of the lake's own schemas,
``deltalake.write_deltalake`` partitioned by date as the writer does; the engine
would take minutes to ingest ten million samples and it is the read side that is
measured here):

1. one batch on one unit with ``--samples`` samples spread over ``--metrics``
   Double metrics (100 Hz each, five phases, a few excursions), BIRTH limits
   in ``metric_catalog``: ``generate_report`` is timed per format, from
   ``lake.connect`` to the report's bytes (statistics and excursions over every
   sample; the plots downsampled);
2. ``--batches`` batches of four phases over four units (25 context rows
   each): ``uns batch list`` is timed as the real command in a child process
   (Python start-up and imports included), and its query alone in process.

With ``--records N --alarms N --bad-quality N`` (``bash scripts/bench rbe``, issue 31) the
report's batch also has N batch records (materials, results, comments; a tenth of the
lots in quarantine and of the results out of specification), an alarm metric of the plant
model active in N intervals, N runs of bad-quality samples in one metric, and its unit's
equipment status.

Prints one line per figure and a JSON summary.  Targets: report < 15 s, list < 2 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from uns import lake
from uns.batch.queries import list_batches
from uns.batch.report import ReportRequest, generate_report
from uns.core.model import model_from_toml
from uns.lake.schemas import SCHEMAS

T0 = 1_764_576_000_000  # 2025-12-01T08:00:00Z
UNIT = "acme/basel/pilot/usp/br-901"
PHASES = ("setup", "inoculation", "growth", "production", "harvest")
REPORT_TARGET_S = 15.0
LIST_TARGET_S = 2.0


def _table(name: str, n: int, columns: dict[str, Any]) -> pa.Table:
    """A table of the lake schema ``name`` with ``columns`` given, every other column NULL."""
    schema = SCHEMAS[name]
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays([pa.array(a, type=f.type) if not isinstance(a, pa.Array) else a.cast(f.type)
                                 for a, f in zip(arrays, schema, strict=True)], schema=schema)  # fmt: skip


def _write(root: Path, name: str, table: pa.Table) -> None:
    write_deltalake(str(root / name), table, partition_by=["date"], mode="append")


def _dates(ms: np.ndarray) -> pa.Array:
    return pa.array((ms // 86_400_000).astype(np.int32), type=pa.date32())


def _ts(ms: np.ndarray) -> pa.Array:
    return pa.array(ms.astype(np.int64), type=pa.timestamp("ms", tz="UTC"))


def _context(rows: list[tuple[int, str, str, str | None]]) -> pa.Table:
    ms = np.array([r[0] for r in rows], dtype=np.int64)
    return _table(
        "context",
        len(rows),
        {
            "ts": _ts(ms),
            "received_at": _ts(ms),
            "path": [r[1] for r in rows],
            "key": [r[2] for r in rows],
            "value": [r[3] for r in rows],
            "source": ["bench-mes"] * len(rows),
            "user": ["bench"] * len(rows),
            "reason": ["phase change"] * len(rows),
            "ingest_order": np.arange(len(rows), dtype=np.int64),
            "event_id": [f"e{i // 5}-{r[1]}" for i, r in enumerate(rows)],
            "date": _dates(ms),
        },
    )


def _batch_rows(
    batch: str, path: str, start: int, phase_ms: int, phases: tuple[str, ...]
) -> list[tuple[int, str, str, str | None]]:
    rows: list[tuple[int, str, str, str | None]] = []
    for i, phase in enumerate(phases):
        ctx = {
            "batch_id": batch,
            "order_id": f"PO-{batch}",
            "product": "mAb-B",
            "recipe": "mAb-B v1",
            "phase": phase,
        }
        rows += [(start + i * phase_ms, path, k, v) for k, v in ctx.items()]
    end = start + len(phases) * phase_ms
    rows += [(end, path, k, None) for k in ("batch_id", "order_id", "product", "recipe", "phase")]
    return rows


def build_report_lake(root: Path, samples: int, metrics: int) -> tuple[str, float]:
    """One batch of ``samples`` samples over ``metrics`` metrics at 100 Hz; its id and seconds spent."""
    started = time.perf_counter()
    per_metric = samples // metrics
    span = per_metric * 10  # ms at 100 Hz
    phase_ms = span // len(PHASES) + 1
    _write(root, "context", _context(_batch_rows("B-BENCH-1", UNIT, T0, phase_ms, PHASES)))
    names = [f"Sensor{m:02d}" for m in range(metrics)]
    rng = np.random.default_rng(16)
    chunk = max(1, 2_000_000 // per_metric)  # metrics per write: ~2 million rows at a time
    for first in range(0, metrics, chunk):
        group = range(first, min(metrics, first + chunk))
        n = per_metric * len(group)
        ms = np.tile(T0 + np.arange(per_metric, dtype=np.int64) * 10, len(group))
        which = np.repeat(np.arange(len(group)), per_metric)
        values = 50.0 + 10.0 * np.sin(ms / 600_000.0) + rng.normal(0.0, 1.0, n)
        values[rng.integers(0, n, 40)] = 95.0  # a few spikes beyond the BIRTH limits
        _write(
            root,
            "measurements",
            _table(
                "measurements",
                n,
                {
                    "ts": _ts(ms),
                    "received_at": _ts(ms),
                    "path": pc.take(pa.array([UNIT]), pa.array(np.zeros(n, dtype=np.int32))),
                    "metric": pc.take(pa.array([names[m] for m in group]), pa.array(which.astype(np.int32))),
                    "datatype": pc.take(pa.array(["Double"]), pa.array(np.zeros(n, dtype=np.int32))),
                    "value_double": values,
                    "quality": pc.take(pa.array(["good"]), pa.array(np.zeros(n, dtype=np.int32))),
                    "is_historical": np.zeros(n, dtype=bool),
                    "group_id": pc.take(pa.array(["Bench"]), pa.array(np.zeros(n, dtype=np.int32))),
                    "edge_node_id": pc.take(pa.array(["Bench-Ctrl"]), pa.array(np.zeros(n, dtype=np.int32))),
                    "device_id": pc.take(pa.array(["BR-901"]), pa.array(np.zeros(n, dtype=np.int32))),
                    "date": _dates(ms),
                },
            ),
        )
    props = json.dumps({"engLow": 20.0, "engHigh": 80.0})
    birth = np.full(metrics, T0 - 1000, dtype=np.int64)
    _write(
        root,
        "metric_catalog",
        _table(
            "metric_catalog",
            metrics,
            {
                "group_id": ["Bench"] * metrics,
                "edge_node_id": ["Bench-Ctrl"] * metrics,
                "device_id": ["BR-901"] * metrics,
                "path": [UNIT] * metrics,
                "metric": names,
                "datatype": ["Double"] * metrics,
                "properties": [props] * metrics,
                "birth_ts": _ts(birth),
                "date": _dates(birth),
            },
        ),
    )
    return "B-BENCH-1", time.perf_counter() - started


#: the bench unit's plant model: its Alarm metric is an alarm (issue 31)
BENCH_MODEL = f"""
[equipment."acme"]
[equipment."acme/basel"]
[equipment."acme/basel/pilot"]
[equipment."acme/basel/pilot/usp"]
[equipment."{UNIT}"]
[[source]]
group = "Bench"
node = "Bench-Ctrl"
device = "BR-901"
path = "{UNIT}"
[source.metrics.Alarm]
alarm = true
"""


def _common(n: int, ms: np.ndarray, kind: str) -> dict[str, Any]:
    return {
        "ts": _ts(ms), "received_at": _ts(ms), "path": [UNIT] * n,
        "record_id": [f"{kind}-{i}" for i in range(n)], "user": ["bench"] * n, "source": ["bench-lims"] * n,
        "content_sha256": ["0" * 64] * n, "date": _dates(ms),
    }  # fmt: skip


def add_review_data(root: Path, records: int, alarms: int, bad_quality: int, span: int) -> None:
    """Batch records, alarm intervals, bad-quality runs and equipment status for the report's batch."""
    rng = np.random.default_rng(31)
    kinds = {"materials": records // 3, "results": records // 3, "comments": records - 2 * (records // 3)}
    for table, n in kinds.items():
        ms = np.sort(T0 + 1 + rng.integers(0, span - 2, n))
        cols = _common(n, ms, table)
        if table == "materials":
            cols |= {"material": ["NaCl"] * n, "lot": [f"L{i}" for i in range(n)], "quantity": np.ones(n),
                     "status": ["quarantine" if i % 10 == 0 else "released" for i in range(n)]}  # fmt: skip
        elif table == "results":
            values = np.where(np.arange(n) % 10 == 0, 120.0, 100.0)
            cols |= {"test": ["Assay"] * n, "value_double": values, "value_text": [f"{v:g}" for v in values],
                     "low": np.full(n, 95.0), "high": np.full(n, 105.0)}  # fmt: skip
        else:
            cols |= {"text": [f"comment {i}" for i in range(n)]}
        _write(root, table, _table(table, n, cols))
    if alarms:  # one Boolean metric switching on and off alarms times
        ms = T0 + 1 + np.arange(2 * alarms, dtype=np.int64) * ((span - 2) // (2 * alarms))
        values = np.tile([1.0, 0.0], alarms)
        n = len(ms)
        _write(root, "measurements", _table("measurements", n, {
            "ts": _ts(ms), "received_at": _ts(ms), "path": [UNIT] * n, "metric": ["Alarm"] * n,
            "datatype": ["Boolean"] * n, "value_double": values, "value_text": ["true", "false"] * alarms,
            "quality": ["good"] * n, "group_id": ["Bench"] * n, "edge_node_id": ["Bench-Ctrl"] * n,
            "device_id": ["BR-901"] * n, "date": _dates(ms),
        }))  # fmt: skip
    if bad_quality:  # runs of 50 bad samples of Sensor00, on its own 100 Hz grid
        starts = T0 + np.arange(1, bad_quality + 1, dtype=np.int64) * (span // (bad_quality + 1)) // 10 * 10
        ms = (starts[:, None] + np.arange(50, dtype=np.int64) * 10).ravel() + 5  # between its good samples
        n = len(ms)
        _write(root, "measurements", _table("measurements", n, {
            "ts": _ts(ms), "received_at": _ts(ms), "path": [UNIT] * n, "metric": ["Sensor00"] * n,
            "datatype": ["Double"] * n, "value_double": np.full(n, 50.0), "quality": ["bad"] * n,
            "group_id": ["Bench"] * n, "edge_node_id": ["Bench-Ctrl"] * n, "device_id": ["BR-901"] * n,
            "date": _dates(ms),
        }))  # fmt: skip
    before = T0 - 60_000
    status = [(before, UNIT, "equipment_status", "clean"), (before, UNIT, "clean_expires", "2099-01-01")]
    _write(root, "context", _context(status))


def build_list_lake(root: Path, batches: int) -> float:
    started = time.perf_counter()
    rows: list[tuple[int, str, str, str | None]] = []
    units = [f"acme/basel/pilot/usp/br-{u:03d}" for u in range(4)]
    for b in range(batches):
        unit = units[b % len(units)]
        start = T0 + (b // len(units)) * 3_600_000
        rows += _batch_rows(f"B2025-{b:05d}", unit, start, 600_000, PHASES[:4])
    _write(root, "context", _context(rows))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--formats", default="json,html")
    parser.add_argument("--keep", help="build the lakes in this directory and keep them")
    parser.add_argument("--repeat", type=int, default=1, help="time each figure this often (the best counts)")
    parser.add_argument(
        "--records", type=int, default=0, help="batch records of the report's batch (issue 31)"
    )
    parser.add_argument("--alarms", type=int, default=0, help="alarm intervals in the report's batch")
    parser.add_argument("--bad-quality", type=int, default=0, help="runs of bad-quality samples in it")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"samples": args.samples, "metrics": args.metrics, "batches": args.batches}
    with tempfile.TemporaryDirectory(prefix="uns-bench-batch-") as tmp:
        base = Path(args.keep or tmp)
        report_lake, list_lake = base / "report-lake", base / "list-lake"
        batch, built = build_report_lake(report_lake, args.samples, args.metrics)
        print(f"report lake: {args.samples:,} samples over {args.metrics} metrics written in {built:.1f} s")
        model = None
        if args.records or args.alarms or args.bad_quality:
            span = (args.samples // args.metrics) * 10
            add_review_data(report_lake, args.records, args.alarms, args.bad_quality, span)
            model = model_from_toml(BENCH_MODEL)
            result |= {
                "records": args.records,
                "alarm_intervals": args.alarms,
                "bad_quality_runs": args.bad_quality,
            }
            extra = f"{args.alarms} alarm intervals, {args.bad_quality} bad-quality runs"
            print(f"  with {args.records:,} records, {extra}")
        for fmt in args.formats.split(","):
            runs = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                data, verdict = generate_report(report_lake, ReportRequest(batch, model=model), fmt)
                runs.append(time.perf_counter() - t)
            seconds = min(runs)
            result[f"report_{fmt}_s"] = round(seconds, 2)
            result[f"report_{fmt}_runs_s"] = [round(r, 2) for r in runs]
            size = f"{len(data):,} bytes"
            print(f"report {fmt}: {seconds:.2f} s ({size}, {verdict}; target < {REPORT_TARGET_S:g} s)")
        built = build_list_lake(list_lake, args.batches)
        print(f"list lake: {args.batches:,} batches written in {built:.1f} s")
        con = lake.connect(list_lake)
        t = time.perf_counter()
        _, rows = list_batches(con)
        result["list_query_s"] = round(time.perf_counter() - t, 3)
        con.close()
        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "uns", "batch", "list", "--lake", str(list_lake), "--format", "csv"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs.append(time.perf_counter() - t)
        result["list_command_s"] = round(min(runs), 2)
        result["list_command_runs_s"] = [round(r, 2) for r in runs]
        listed = len(out.stdout.splitlines()) - 1
        print(f"uns batch list: {result['list_command_s']:.2f} s for {listed:,} batches "
              f"(query alone {result['list_query_s']:.3f} s; target < {LIST_TARGET_S:g} s)")  # fmt: skip
        assert listed == len(rows) == args.batches, (listed, len(rows))
    reports = [v for k, v in result.items() if k.startswith("report_") and not k.endswith("_runs_s")]
    result["targets_met"] = (
        all(v < REPORT_TARGET_S for v in reports) and result["list_command_s"] < LIST_TARGET_S
    )
    print(json.dumps(result))
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
