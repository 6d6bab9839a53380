"""Profile the engine's per-message work without MQTT: Engine.process + the sinks' add().

Usage::

    .venv/bin/python -m benchmarks.profile_engine [--messages 50000] [--mode lake|device|metric] [--profile]

Builds the engine as ``uns run`` does (``build_engine``; republish publishes
into a no-op), feeds it the births and then pre-encoded 10-metric DDATA of the
bench plant, and reports microseconds per message for ``process`` alone and
for ``process`` + every sink's ``add``.  ``--profile`` prints the cProfile top
functions.  What this does not include is the receive path (aiomqtt), which
the harness's ceiling measures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import tempfile
import time

from uns.config import load_config
from uns.daemon import build_engine
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.datatypes import DataType

__all__ = ["main"]


def messages(
    nodes: int, devices: int, metrics: int, count: int
) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    births: list[tuple[str, bytes]] = []
    seqs = {}
    ts = time.time_ns() // 1_000_000
    for n in range(nodes):
        node = f"node-{n:03d}"
        p = pb.Payload(timestamp=ts, seq=0)
        p.metrics.add(name="bdSeq", timestamp=ts, datatype=int(DataType.Int64), long_value=0)
        births.append((f"spBv1.0/Prof/NBIRTH/{node}", p.SerializeToString()))
        seq = 0
        for d in range(devices):
            seq += 1
            b = pb.Payload(timestamp=ts, seq=seq)
            for i in range(metrics):
                b.metrics.add(
                    name=f"m{i:03d}", alias=d * metrics + i + 1, timestamp=ts, datatype=10, double_value=0.0
                )
            births.append((f"spBv1.0/Prof/DBIRTH/{node}/dev-{d:02d}", b.SerializeToString()))
        seqs[node] = seq
    data = []
    units = [(n, d) for n in range(nodes) for d in range(devices)]
    for k in range(count):
        n, d = units[k % len(units)]
        node = f"node-{n:03d}"
        seqs[node] = (seqs[node] + 1) % 256
        t = ts + 1 + k // len(units)
        p = pb.Payload(timestamp=t, seq=seqs[node])
        for i in range(metrics):
            p.metrics.add(alias=d * metrics + i + 1, timestamp=t, double_value=k + i * 0.5)
        data.append((f"spBv1.0/Prof/DDATA/{node}/dev-{d:02d}", p.SerializeToString()))
    return births, data


async def run(args: argparse.Namespace) -> None:
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
        births, data = messages(10, 10, 10, args.messages)
        async with contextlib_stack(engine) as _:
            for topic, payload in births:
                batch, _r = engine.process(topic, payload, time.time_ns() // 1_000_000)
                for sink in engine.sinks:
                    sink.add(batch)
            now = time.time_ns() // 1_000_000
            t = time.perf_counter()
            for topic, payload in data[: len(data) // 2]:
                engine.process(topic, payload, now)
            only = (time.perf_counter() - t) / (len(data) // 2) * 1e6
            prof = cProfile.Profile() if args.profile else None
            t = time.perf_counter()
            if prof:
                prof.enable()
            rest = data[len(data) // 2 :]
            for i, (topic, payload) in enumerate(rest):
                batch, _r = engine.process(topic, payload, now)
                for sink in engine.sinks:
                    sink.add(batch)
                if i % 500 == 0:
                    await asyncio.sleep(0)  # let the sinks' tasks run as they would
            full = (time.perf_counter() - t) / len(rest) * 1e6
            if prof:
                prof.disable()
            print(
                f"process only: {only:.1f} us/message; process + sinks add: {full:.1f} us/message "
                f"({args.mode}; 10 metrics/message)"
            )
            if prof:
                s = io.StringIO()
                pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
                print(s.getvalue())


class contextlib_stack:  # noqa: N801 - a tiny helper: enter every sink
    def __init__(self, engine: object) -> None:
        import contextlib  # noqa: PLC0415

        self.stack = contextlib.AsyncExitStack()
        self.engine = engine

    async def __aenter__(self) -> None:
        for sink in self.engine.sinks:  # type: ignore[attr-defined]
            await self.stack.enter_async_context(sink)

    async def __aexit__(self, *exc: object) -> None:
        await self.stack.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--mode", choices=("lake", "device", "metric"), default="lake")
    parser.add_argument("--profile", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
