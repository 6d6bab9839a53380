"""Memory of the largest legal messages (issue 29): peak RSS of the engine and its commit worker.

Usage (from the repository root; ``bash scripts/bench limits`` sets up and runs this)::

    .venv/bin/python -m benchmarks.bench_message_limits [--out bench-results]

Each scenario is one message at the default limits (``sparkplug.max_payload_bytes`` 16 MiB,
``max_metrics_per_message`` 100,000), sent to a fresh ``uns run`` (lake mode, the default
process commit worker) on a private mosquitto, and followed until its rows are committed:

- ``birth-100k``: the largest legal birth, an NBIRTH of 100,000 metrics (bdSeq and 99,999
  Doubles, each with an ``engUnit`` property): 200,000 rows of samples and catalog;
- ``payload-16MiB-bytes``: the largest legal payload as one Bytes metric of 16 MiB;
- ``payload-16MiB-strings``: the largest legal payload as 99,999 String metrics that fill
  16 MiB (both limits at once).

Reported per scenario: the kernel's peak RSS (``VmHWM``) of the engine and of each commit
worker process (the worker hands over to a fresh one past ``commit_worker_max_rss_mb``),
the engine's RSS before the message, and the seconds from publish to committed.  The
machine's load average is reported with them: on a shared machine the times vary, the
memory figures much less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from benchmarks.harness import machine_info
from benchmarks.procs import EngineProcess, kill_children
from benchmarks.report import save_report
from uns.mqtt.mosquitto import running_mosquitto
from uns.sparkplug import DataType, encode_payload
from uns.sparkplug.limits import DEFAULT_MAX_METRICS, DEFAULT_MAX_PAYLOAD_BYTES
from uns.sparkplug.payload import Metric, Payload, PropertySet, PropertyValue

__all__ = ["SCENARIOS", "main"]

MiB = 2**20


def _birth(metrics: list[Metric]) -> bytes:
    bdseq = Metric(name="bdSeq", datatype=DataType.UInt64, value=0)
    return encode_payload(Payload(timestamp=int(time.time() * 1000), seq=0, metrics=[bdseq, *metrics]))


def birth_100k() -> tuple[bytes, int]:
    unit = PropertySet({"engUnit": PropertyValue(DataType.String, "degC")})
    n = DEFAULT_MAX_METRICS - 1
    metrics = [
        Metric(
            name=f"Area{i // 1000}/Tag{i}",
            alias=i + 1,
            datatype=DataType.Double,
            value=float(i),
            properties=unit,
        )
        for i in range(n)
    ]
    return _birth(metrics), n


def payload_bytes() -> tuple[bytes, int]:
    value = os.urandom(DEFAULT_MAX_PAYLOAD_BYTES - 200)
    return _birth([Metric(name="Firmware/Image", alias=1, datatype=DataType.Bytes, value=value)]), 1


def payload_strings() -> tuple[bytes, int]:
    n = DEFAULT_MAX_METRICS - 1
    width = (DEFAULT_MAX_PAYLOAD_BYTES - 1000) // n - 20  # a metric's framing is ~20 bytes: fill 16 MiB
    metrics = [
        Metric(name=f"S{i}", alias=i + 1, datatype=DataType.String, value=f"{i:08d}".ljust(width, "x"))
        for i in range(n)
    ]
    payload = _birth(metrics)
    assert len(payload) <= DEFAULT_MAX_PAYLOAD_BYTES, len(payload)
    return payload, n


SCENARIOS = {
    "birth-100k": birth_100k,
    "payload-16MiB-bytes": payload_bytes,
    "payload-16MiB-strings": payload_strings,
}


def _proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
    return out


async def _peaks(engine: EngineProcess, into: dict[int, int], stop: asyncio.Event) -> None:
    """The peak RSS of the engine and of each child ever seen, sampled every 0.1 s."""
    while not stop.is_set():
        for proc in engine._tree():  # the harness's own helper
            hwm = _proc_status(proc.pid).get("VmHWM", 0)
            into[proc.pid] = max(into.get(proc.pid, 0), hwm)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def run_scenario(name: str, port: int, work: Path) -> dict[str, Any]:
    payload, samples = SCENARIOS[name]()
    engine = EngineProcess(port=port, lake=work / name / "lake", mode="lake", host_id=f"limits-{name}")
    (work / name).mkdir(parents=True)
    await engine.start()
    assert engine.ps is not None
    engine_pid = engine.ps.pid
    before = _proc_status(engine_pid).get("VmRSS", 0)
    peaks: dict[int, int] = {}
    done = asyncio.Event()
    sampler = asyncio.create_task(_peaks(engine, peaks, done))
    started = time.monotonic()
    try:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-limits-{name}") as client:
            await client.publish(f"spBv1.0/Bench/NBIRTH/{name}", payload, qos=1)
        while True:
            engine.check_running()
            lake = engine.status.latest.get("sinks", {}).get("lake", {})
            if engine.status.metrics >= samples and lake.get("rows_pending") == 0:
                break
            if time.monotonic() - started > 600:
                raise RuntimeError(f"{name}: not committed within 600 s")
            await engine.status.next(1.0)
        seconds = time.monotonic() - started
    finally:
        done.set()
        await sampler
        await engine.stop()
        await engine.status.stop()
    workers = {pid: hwm for pid, hwm in peaks.items() if pid != engine_pid}
    return {
        "payload_bytes": len(payload),
        "samples": samples,
        "engine_rss_before_mb": round(before / MiB, 1),
        "engine_peak_rss_mb": round(peaks.get(engine_pid, 0) / MiB, 1),
        "worker_peak_rss_mb": [round(v / MiB, 1) for v in workers.values()],
        "seconds_to_committed": round(seconds, 1),
        "exit_code": engine.exit_code,
    }


def _table(results: dict[str, dict[str, Any]], load: tuple[float, float]) -> str:
    lines = [
        f"{'scenario':24} {'payload':>9} {'samples':>8} {'engine before':>13} {'engine peak':>11} "
        f"{'worker peak(s)':>16} {'seconds':>8}"
    ]
    for name, r in results.items():
        workers = ", ".join(f"{w:.0f}" for w in r["worker_peak_rss_mb"]) or "-"
        lines.append(
            f"{name:24} {r['payload_bytes'] / MiB:8.1f}M {r['samples']:8,} "
            f"{r['engine_rss_before_mb']:12.0f}M {r['engine_peak_rss_mb']:10.0f}M {workers:>15}M "
            f"{r['seconds_to_committed']:8.1f}"
        )
    lines.append(f"load average before {load[0]:.2f}, after {load[1]:.2f} (1 min; the machine was shared)")
    return "\n".join(lines)


async def run(out: Path, names: list[str]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, Any]] = {}
    try:
        with running_mosquitto() as broker, tempfile.TemporaryDirectory(prefix="uns-bench-limits-") as tmp:
            for name in names:
                results[name] = await run_scenario(name, broker.port, Path(tmp))
    finally:
        kill_children()
    load = (load_before, os.getloadavg()[0])
    result = {"machine": machine_info(), "load_average_1min": load, "scenarios": results}
    save_report(out, "limits", result, _table(results, load))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    args = parser.parse_args()
    asyncio.run(run(args.out, args.scenario or list(SCENARIOS)))


if __name__ == "__main__":
    main()
