"""How fast ``uns audit verify`` reads a big lake (issue 17): rows/s and MiB/s.

    python -m benchmarks.bench_audit_verify LAKE_DIR [--rows 20000000] [--segment-rows 1000000] [--anchor DIR]

Fills ``LAKE_DIR`` (unless it already holds that many rows) through the writer's own
commit path -- :meth:`lake.writer.DeltaWriter.commit_segment` on synthetic WAL columns
(10 samples per message, 200 metrics, slowly varying doubles), so every file has its
``data_commit`` entry -- then runs :func:`lake.audit_verify.verify` twice: the first
run after dropping nothing (page cache as the fill left it), the second warm.  To
measure the disk rather than the page cache, drop the cache between runs
(``echo 3 > /proc/sys/vm/drop_caches`` as root) and pass ``--verify-only``.

With ``--anchor DIR`` the fill anchors the chain's head after every segment (as an engine
whose anchor interval is shorter than a segment would), and each run is
``uns audit verify`` with those anchors (:func:`uns.audit.trail.verify_lines`): its whole
time, beside the data files' part, shows what checking the anchors adds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from uns.audit.trail import verify_lines
from uns.audit.verify import verify
from uns.config import AuditSection
from uns.lake.anchors import AnchorSettings
from uns.lake.tables import RUN_FIELDS, SAMPLE_FIELDS, TABLES
from uns.lake.writer import DeltaWriter
from uns.sparkplug.datatypes import DataType

BASE_TS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PER_MESSAGE = 10


def segment_columns(first: int, rows: int) -> tuple[list[Any], ...]:
    """WAL columns of ``rows`` measurements starting at sample ``first`` (other tables empty)."""
    index = range(first, first + rows)
    per_row: dict[str, list[Any]] = {
        "ts": [BASE_TS + i * 10 for i in index],
        "metric": [f"m{i % 200}" for i in index],
        "datatype": [int(DataType.Double)] * rows,
        "value": [20.0 + (i % 9973) * 0.01 for i in index],
        "unit": ["degC"] * rows,
        "quality": ["good"] * rows,
        "is_historical": [False] * rows,
        "is_transient": [False] * rows,
        "alias": [i % 200 for i in index],
    }
    runs = rows // PER_MESSAGE
    messages = range(first // PER_MESSAGE, first // PER_MESSAGE + runs)
    per_run: dict[str, list[Any]] = {
        "received_at": [BASE_TS + m * 100 + 3 for m in messages],
        "path": [f"acme/basel/pilot/unit-{m % 20}" for m in messages],
        "group_id": ["PilotPlant"] * runs,
        "edge_node_id": [f"node-{m % 20}" for m in messages],
        "device_id": [f"dev-{m % 20}" for m in messages],
        "seq": [m % 256 for m in messages],
        "bdseq": [0] * runs,
        "unmapped": [False] * runs,
        "context": [None] * runs,
    }
    measurements = [per_row[f] for f in SAMPLE_FIELDS] + [per_run[f] for f in RUN_FIELDS]
    measurements.append([PER_MESSAGE] * runs)
    return (measurements, *([] for _ in TABLES[1:]))


def fill(lake: Path, total: int, segment_rows: int, anchor: Path | None = None) -> None:
    writer = DeltaWriter(lake, anchor=AnchorSettings(str(anchor)) if anchor else None)
    start = writer.open_tables() + 1
    for number in range(start, total // segment_rows):
        started = time.perf_counter()
        wal = lake / "_wal" / f"{number:016d}.wal"  # never read: the columns are passed in
        writer.commit_segment(number, wal, [segment_columns(number * segment_rows, segment_rows)])
        writer.audit.anchor_due(force=True)
        print(f"segment {number}: {segment_rows} rows in {time.perf_counter() - started:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("lake", type=Path)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--segment-rows", type=int, default=1_000_000)
    parser.add_argument("--verify-only", action="store_true")
    parser.add_argument(
        "--anchor", type=Path, help="anchor the chain in this directory and verify against it"
    )
    args = parser.parse_args()
    if args.anchor:
        args.anchor.mkdir(parents=True, exist_ok=True)
    if not args.verify_only:
        fill(args.lake, args.rows, args.segment_rows, args.anchor)
    for run in ("first", "second"):
        started = time.perf_counter()
        if args.anchor:
            code, lines = verify_lines(str(args.lake), audit=AuditSection(anchor=str(args.anchor)))
            assert code == 0, lines[:5]
            print(f"uns audit verify with anchors ({run}): {time.perf_counter() - started:.2f} s in all")
            print("  " + "\n  ".join(lines))
            started = time.perf_counter()
        report = verify(args.lake)
        assert not report.findings, report.findings[:5]
        print(
            f"verify ({run}): {report.rows:,} rows, {report.files} files, {report.bytes / 2**20:,.0f} MiB "
            f"in {report.seconds:.2f} s: {report.rows / report.seconds:,.0f} rows/s, "
            f"{report.bytes / 2**20 / report.seconds:,.0f} MiB/s"
        )


if __name__ == "__main__":
    main()
