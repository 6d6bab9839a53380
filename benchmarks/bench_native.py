"""CPU per metric from payload to lake, native decoder against the pure-Python one.

Usage::

    bash scripts/bench native [--messages 20000] [--load harness|small|both]
    .venv/bin/python -m benchmarks.bench_native --child --load small --phase engine   # one path

Each path runs in its own process (``UNS_NATIVE=1`` / ``0``: the decoder is chosen at
import).  What is timed, with ``time.process_time`` (every thread of the process):

* **engine**: what the engine's process does per message from the socket's bytes on --
  the MQTT client's reader (``PacketReader.feed``: PUBLISH packets of one socket read,
  the C run unless ``UNS_NATIVE=0``), ``Engine.process`` (decode, sessions, enrichment;
  with the native decoder runs of ordinary DATA in one call, ``Dispatcher.process_many``)
  and the lake sink's per-loop work (``PendingRows``, the WAL record: marshal and, for
  sample blocks, the packed columns) and the record's ``write`` to a segment file;
  ``--record-messages`` messages per socket read and WAL record (one loop iteration),
  segments sealed at ``lake.commit_rows`` rows as the engine seals them;
* **arrow**: the commit worker's reading of those segments and building of the Arrow
  tables (no Parquet);
* **commit**: the worker's whole commit of every segment (read, Arrow, Parquet, Delta
  log, fsync) into a fresh lake.

Loads: ``harness`` is the benchmark plant (10 nodes x 10 devices, 10 Double metrics per
DDATA, aliases); ``small`` is one device sending DDATA of 1, 2 or 3 metrics (Int32,
Double, Boolean), where the per-message cost dominates.  The socket's ``recv`` itself and
the event loop are not included (``benchmarks/bench_fastmqtt.py`` measures the whole
receive path against a broker).  For instruction counts under
load run one child under ``valgrind --tool=callgrind`` with ``--phase engine`` (or
``arrow``) at two message counts and take the difference, less that of ``--phase gen``
(making the payloads).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.profile_engine import births, data
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.datatypes import DataType

__all__ = ["main"]

RECORD_MESSAGES = 100  # messages per WAL record (one event-loop iteration)


def small_load(count: int, ts: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(births, DDATA) of one device sending 1-3 metrics per message."""
    node, dev = "small-node", "dev-0"
    nb = pb.Payload(timestamp=ts, seq=0)
    nb.metrics.add(name="bdSeq", timestamp=ts, datatype=int(DataType.Int64), long_value=0)
    db = pb.Payload(timestamp=ts, seq=1)
    kinds = [
        (DataType.Int32, "int_value", 0),
        (DataType.Double, "double_value", 0.0),
        (DataType.Boolean, "boolean_value", False),
    ]
    for i, (dt, field, zero) in enumerate(kinds):
        db.metrics.add(name=f"m{i}", alias=i + 1, timestamp=ts, datatype=int(dt), **{field: zero})
    born = [
        (f"spBv1.0/Small/NBIRTH/{node}", nb.SerializeToString()),
        (f"spBv1.0/Small/DBIRTH/{node}/{dev}", db.SerializeToString()),
    ]
    out = []
    for k in range(count):
        p = pb.Payload(timestamp=ts + 1 + k, seq=(2 + k) % 256)
        for i in range(k % 3 + 1):
            _dt, field, _zero = kinds[i]
            value = {"int_value": k % 1000, "double_value": k * 0.25, "boolean_value": bool(k % 2)}[field]
            p.metrics.add(alias=i + 1, timestamp=ts + 1 + k, **{field: value})
        out.append((f"spBv1.0/Small/DDATA/{node}/{dev}", p.SerializeToString()))
    return born, out


def harness_load(count: int, ts: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    nbirths, dbirths, seqs = births(10, 10, 10, ts)
    return nbirths + dbirths, data(10, 10, 10, count, ts, seqs)


def child(args: argparse.Namespace) -> dict[str, Any]:
    from uns.config import load_config  # noqa: PLC0415 - after UNS_NATIVE is set
    from uns.engine.daemon import build_engine  # noqa: PLC0415
    from uns.lake.blocks import SeriesRegistry, encode_blocks  # noqa: PLC0415
    from uns.lake.tables import PendingRows  # noqa: PLC0415
    from uns.lake.wal import encode_columns, open_segment  # noqa: PLC0415
    from uns.mqtt.wire.packets import encode_publish  # noqa: PLC0415
    from uns.mqtt.wire.readers import PacketReader  # noqa: PLC0415
    from uns.sparkplug import native  # noqa: PLC0415

    ts = 1_765_000_000_000
    born, messages = (small_load if args.load == "small" else harness_load)(args.messages, ts)
    if args.phase == "gen":  # the payloads alone: what to subtract from an instruction count
        return {"load": args.load, "messages": len(messages)}
    per = args.record_messages
    # one socket read's bytes: the messages' PUBLISH packets (QoS 0, as Sparkplug sends DATA)
    reads = [
        b"".join(encode_publish(t, p, 0) for t, p in messages[i : i + per])
        for i in range(0, len(messages), per)
    ]
    with tempfile.TemporaryDirectory(prefix="uns-bench-native-") as tmp:
        lake, wal = Path(tmp) / "lake", Path(tmp) / "wal"
        wal.mkdir()
        engine = build_engine(
            load_config(None, env={"UNS_LAKE": str(lake), "UNS_REPUBLISH_ENABLED": "false"})
        )
        engine.sessions.columnar = native.AVAILABLE  # what Engine.run decides for a lake alone
        process = engine.process
        for topic, payload in born:
            process(topic, payload, ts)
        if native.AVAILABLE:  # loaded once at the engine's first block: not part of the per-metric cost
            import pyarrow.ipc  # noqa: F401, PLC0415
        pending = PendingRows()
        segments: list[tuple[int, Path]] = []
        seg = None
        series = SeriesRegistry()
        metrics = 0
        dispatch = engine.dispatch
        chunk: list[Any] = []
        reader = PacketReader(chunk)  # the client's reader: C runs of PUBLISH unless UNS_NATIVE=0
        commit_rows = engine.config.lake.commit_rows  # a segment is sealed (committed) at this many rows
        start = time.process_time()
        for data in reads:  # one socket read, one event-loop iteration, one WAL record
            reader.feed(data)
            position = 0
            while position < len(chunk):  # as Engine._handle_lane (or _handle_messages)
                after, lane = dispatch.process_many(chunk, position, ts)
                if lane is not None:
                    metrics += pending.add(lane)
                    position = after
                    if position == len(chunk):
                        break
                batch, _rebirths, _publishes = process(chunk[position][0], chunk[position][1], ts)
                metrics += pending.add(batch)
                position += 1
            chunk.clear()
            blocks = pending.take_blocks()
            rows = pending.rows
            if seg is None:
                seg = open_segment(wal, len(segments))
                segments.append((seg.number, seg.path))
                series = SeriesRegistry()
            encoded, defined = encode_blocks(blocks, series)
            record, _cols = encode_columns(pending.take(), encoded)
            seg.append(record, rows)
            series.keep(defined)
            if seg.rows >= commit_rows:
                seg.close()
                seg = None
        engine_s = time.process_time() - start
        if seg is not None:
            seg.close()
        wal_bytes = sum(path.stat().st_size for _number, path in segments)
        result: dict[str, Any] = {
            "wal_bytes_per_metric": wal_bytes / metrics,
            "load": args.load, "native": native.AVAILABLE, "messages": len(messages), "metrics": metrics,
            "engine_us_per_metric": engine_s / metrics * 1e6,
            "engine_us_per_message": engine_s / len(messages) * 1e6,
        }  # fmt: skip
        if args.phase in ("arrow", "all"):
            from uns.lake.block_arrow import block_measurements  # noqa: PLC0415
            from uns.lake.tables import TABLES  # noqa: PLC0415
            from uns.lake.to_arrow import arrow_table_of_parts  # noqa: PLC0415
            from uns.lake.wal import read_segment  # noqa: PLC0415

            start = time.process_time()
            for number, path in segments:
                read = read_segment(path)
                for index, table in enumerate(TABLES[:1]):
                    parts = [p[index] for p in read.parts if p[index]]
                    if parts:
                        arrow_table_of_parts(table, parts, number)
                    if read.blocks:
                        block_measurements(read.blocks, number)
            arrow_s = time.process_time() - start
            result["arrow_us_per_metric"] = arrow_s / metrics * 1e6
        if args.phase == "all":
            from uns.lake.writer import DeltaWriter  # noqa: PLC0415

            writer = DeltaWriter(lake)
            writer.open_tables()
            start = time.process_time()
            for number, path in segments:
                writer.commit_segment(number, path)
            commit_s = time.process_time() - start
            result["commit_us_per_metric"] = commit_s / metrics * 1e6
            result["total_us_per_metric"] = result["engine_us_per_metric"] + result["commit_us_per_metric"]
            result["total_us_per_message"] = (engine_s + commit_s) / len(messages) * 1e6
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--load", choices=("harness", "small", "both"), default="both")
    parser.add_argument("--phase", choices=("gen", "engine", "arrow", "all"), default="all")
    parser.add_argument("--child", action="store_true", help="run one path in this process")
    parser.add_argument(
        "--record-messages",
        type=int,
        default=RECORD_MESSAGES,
        help="messages per WAL record (per socket read)",
    )
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    loads = ("harness", "small") if args.load == "both" else (args.load,)
    rows = []
    for load in loads:
        for flag in ("1", "0"):
            argv_child = [sys.executable, "-m", "benchmarks.bench_native", "--child", "--load", load]
            argv_child += ["--messages", str(args.messages), "--phase", args.phase]
            argv_child += ["--record-messages", str(args.record_messages)]
            out = subprocess.run(
                argv_child, env={**os.environ, "UNS_NATIVE": flag}, capture_output=True, text=True, check=True
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'load':8} {'decoder':8} {'metrics':>8} {'engine us/metric':>17} {'worker us/metric':>17} "
          f"{'total us/metric':>16} {'total us/msg':>13} {'WAL B/metric':>13}")  # fmt: skip
    for r in rows:
        with contextlib.suppress(KeyError):
            print(
                f"{r['load']:8} {'native' if r['native'] else 'python':8} {r['metrics']:>8} "
                f"{r['engine_us_per_metric']:>17.2f} {r['commit_us_per_metric']:>17.2f} "
                f"{r['total_us_per_metric']:>16.2f} {r['total_us_per_message']:>13.1f} "
                f"{r['wal_bytes_per_metric']:>13.1f}"
            )
    for load in loads:
        by = {r["native"]: r for r in rows if r["load"] == load and "total_us_per_metric" in r}
        if True in by and False in by:
            ratio = by[False]["total_us_per_metric"] / by[True]["total_us_per_metric"]
            print(f"{load}: python / native = {ratio:.1f}x CPU per metric (engine + commit)")
    print("(CPU time of this machine, shared with other work: compare the two paths of one run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
