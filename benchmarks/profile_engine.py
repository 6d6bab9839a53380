"""Profile the engine's per-message work without MQTT: Engine.process + the sinks' add().

Usage::

    .venv/bin/python -m benchmarks.profile_engine [--messages 40000] [--mode lake|device|metric]
        [--births 200x10x100] [--profile]

Builds the engine as ``uns run`` does (``build_engine``; republish publishes
into a no-op), feeds it the births and then pre-encoded 10-metric DDATA of the
bench plant, and reports CPU microseconds per message (``time.thread_time``, this thread only:
wall clock is noisy on a shared machine) for ``process`` alone, DATA and
DBIRTH, and wall microseconds for ``process`` + every sink's ``add``.

``--births`` sizes the
birth scenario (nodes x devices x metrics per DBIRTH; the tag-scale scenario
of the harness is 200x10x100).  ``--profile`` prints the cProfile top
functions of the DATA phase.  What this does not include is the receive path
(``uns.mqtt.client``; ``benchmarks/bench_fastmqtt.py`` measures it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import tempfile
import time
from collections.abc import Iterator

from uns.config import load_config
from uns.engine.daemon import build_engine
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.datatypes import DataType

__all__ = ["main"]


def births(
    nodes: int, devices: int, metrics: int, ts: int, *, group: str = "Prof"
) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], dict[str, int]]:
    """(NBIRTHs, DBIRTHs, next seq per node) of a plant of Double metrics with aliases."""
    nbirths: list[tuple[str, bytes]] = []
    dbirths: list[tuple[str, bytes]] = []
    seqs: dict[str, int] = {}
    for n in range(nodes):
        node = f"node-{n:03d}"
        p = pb.Payload(timestamp=ts, seq=0)
        p.metrics.add(name="bdSeq", timestamp=ts, datatype=int(DataType.Int64), long_value=0)
        nbirths.append((f"spBv1.0/{group}/NBIRTH/{node}", p.SerializeToString()))
        seq = 0
        for d in range(devices):
            seq += 1
            b = pb.Payload(timestamp=ts, seq=seq % 256)
            for i in range(metrics):
                b.metrics.add(
                    name=f"m{i:03d}", alias=d * metrics + i + 1, timestamp=ts, datatype=10, double_value=0.0
                )
            dbirths.append((f"spBv1.0/{group}/DBIRTH/{node}/dev-{d:02d}", b.SerializeToString()))
        seqs[node] = seq % 256
    return nbirths, dbirths, seqs


def data(
    nodes: int, devices: int, metrics: int, count: int, ts: int, seqs: dict[str, int]
) -> list[tuple[str, bytes]]:
    """``count`` 10-metric DDATA round-robin over the devices, seqs continuing the births'."""
    out = []
    units = [(n, d) for n in range(nodes) for d in range(devices)]
    for k in range(count):
        n, d = units[k % len(units)]
        node = f"node-{n:03d}"
        seqs[node] = (seqs[node] + 1) % 256
        t = ts + 1 + k // len(units)
        p = pb.Payload(timestamp=t, seq=seqs[node])
        for i in range(metrics):
            p.metrics.add(alias=d * metrics + i + 1, timestamp=t, double_value=k + i * 0.5)
        out.append((f"spBv1.0/Prof/DDATA/{node}/dev-{d:02d}", p.SerializeToString()))
    return out


@contextlib.contextmanager
def cpu_timer(result: list[float]) -> Iterator[None]:
    start = time.thread_time()
    yield
    result.append(time.thread_time() - start)


async def run_path(args: argparse.Namespace, path: str) -> None:
    with tempfile.TemporaryDirectory(prefix="uns-prof-") as lake:
        env = {
            "UNS_LAKE": lake,
            "UNS_REPUBLISH_ENABLED": "false" if args.mode == "lake" else "true",
            "UNS_REPUBLISH_MODE": "device" if args.mode == "device" else "metric",
        }
        engine = build_engine(load_config(None, env=env))

        async def publish(topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
            return None

        engine.publish = publish  # type: ignore[method-assign]
        ts = time.time_ns() // 1_000_000
        nbirths, dbirths, seqs = births(10, 10, 10, ts)
        messages = data(10, 10, 10, args.messages, ts, seqs)
        async with contextlib.AsyncExitStack() as stack:
            for sink in engine.sinks:
                await stack.enter_async_context(sink)
            for topic, payload in nbirths + dbirths:
                batch, _r, _p = engine.process(topic, payload, ts)
                for sink in engine.sinks:
                    sink.add(batch)
            half = len(messages) // 2
            cpu: list[float] = []
            with cpu_timer(cpu):
                for topic, payload in messages[:half]:
                    engine.process(topic, payload, ts)
            only = cpu[0] / half * 1e6
            prof = cProfile.Profile() if args.profile else None
            rest = messages[half:]
            t = time.perf_counter()
            if prof:
                prof.enable()
            for i, (topic, payload) in enumerate(rest):
                batch, _r, _p = engine.process(topic, payload, ts)
                for sink in engine.sinks:
                    sink.add(batch)
                if i % 500 == 0:
                    await asyncio.sleep(0)  # let the sinks' tasks run as they would
            if prof:
                prof.disable()
            full = (time.perf_counter() - t) / len(rest) * 1e6
        print(
            f"[{path}] DATA: process only {only:.1f} us CPU/message; "
            f"process + sinks add {full:.1f} us wall/message ({args.mode}; 10 metrics/message)"
        )
        if prof:
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
            print(s.getvalue())
    run_births(args, path)


def run_births(args: argparse.Namespace, path: str) -> None:
    """The birth scenario through process() alone (no sinks): CPU per DBIRTH and per born metric."""
    nodes, devices, metrics = (int(x) for x in args.births.split("x"))
    engine = build_engine(load_config(None, env={"UNS_LAKE": "", "UNS_REPUBLISH_ENABLED": "false"}))
    ts = time.time_ns() // 1_000_000
    nbirths, dbirths, _ = births(nodes, devices, metrics, ts, group="Births")
    cpu: list[float] = []
    with cpu_timer(cpu):
        for topic, payload in nbirths:
            engine.process(topic, payload, ts)
    with cpu_timer(cpu):
        for topic, payload in dbirths:
            engine.process(topic, payload, ts)
    born = len(dbirths) * metrics
    print(
        f"[{path}] DBIRTH ({nodes}x{devices}x{metrics}, {born:,} born metrics): "
        f"{cpu[1] / len(dbirths) * 1e6:.0f} us CPU/DBIRTH, {cpu[1] / born * 1e6:.2f} us/born metric, "
        f"{cpu[0] + cpu[1]:.2f} s CPU for all births"
    )


async def run(args: argparse.Namespace) -> None:
    await run_path(args, "engine")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--mode", choices=("lake", "device", "metric"), default="lake")
    parser.add_argument("--births", default="200x10x100", help="nodes x devices x metrics per DBIRTH")
    parser.add_argument("--profile", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
