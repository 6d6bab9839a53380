"""Republish throughput: events/s through RepublishSink into a real mosquitto, both modes.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_republish [--samples 20000] [--batch 10] [--in-flight 8]

Starts a private mosquitto on a free loopback port, enriches pilot-plant
samples (plant model + context), and for each mode measures

- ``encode``: JSON events/s of the normalizer alone (no I/O: the CPU cost per event);
- ``publish``: events/s from the first ``add`` until ``flush`` returns (all handed to aiomqtt);
- ``delivered``: events/s until a subscriber has received every message;

and, as the ceiling, ``raw aiomqtt``: pre-encoded payloads published with
``client.publish`` in groups of the same size, without the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path

import aiomqtt

from uns.broker import running_mosquitto
from uns.context import ContextStore
from uns.events import Batch, ContextChange, Sample
from uns.model import load_model
from uns.normalize import Normalizer
from uns.republish import RepublishConfig, RepublishSink
from uns.sparkplug.datatypes import DataType

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "bench/uns"
DEVICES = [("USP-Ctrl", "BR-101"), ("USP-Ctrl", "BR-102"), ("GRAN-Ctrl", "GR-201"), ("TAB-Ctrl", "TP-301")]
METRICS = [
    "Temperature",
    "pH",
    "DO",
    "Agitation",
    "Power",
    "BedTemp",
    "TurretSpeed",
    "CompressionForce",
    "X",
    "Y",
]


def make_batches(norm: Normalizer, samples: int, batch_size: int) -> list[Batch]:
    batches = []
    ts = 1_767_225_600_000
    for b in range(samples // batch_size):
        node, device = DEVICES[b % len(DEVICES)]
        batch = Batch(
            samples=[
                Sample(
                    "PilotPlant",
                    node,
                    device,
                    METRICS[i % len(METRICS)],
                    DataType.Double,
                    20.0 + i * 0.125,
                    ts + b,
                    ts + b + 3,
                    seq=b % 256,
                    bdseq=1,
                )
                for i in range(batch_size)
            ]
        )
        norm.enrich(batch)
        batches.append(batch)
    return batches


def encode_rate(norm: Normalizer, batches: list[Batch], mode: str) -> float:
    start = time.perf_counter()
    count = 0
    for batch in batches:
        if mode == "metric":
            for sample in batch.samples:
                norm.topic_for(sample.path, sample.metric)
                norm.encode_event(sample)
                count += 1
        else:
            norm.device_topic(batch.samples[0].path)
            norm.encode_device_event(batch.samples)
            count += 1
    return count / (time.perf_counter() - start)


async def run_mode(
    host: str, port: int, norm: Normalizer, batches: list[Batch], mode: str, in_flight: int
) -> dict[str, float]:
    expected = sum(len(b.samples) for b in batches) if mode == "metric" else len(batches)
    received = 0
    done = asyncio.Event()
    async with aiomqtt.Client(host, port) as sub, aiomqtt.Client(host, port) as pub:
        pub.pending_calls_threshold = max(pub.pending_calls_threshold, in_flight)
        await sub.subscribe(f"{PREFIX}/#", qos=0)

        async def count() -> None:
            nonlocal received
            async for _ in sub.messages:
                received += 1
                if received == expected:
                    done.set()
                    return

        counter = asyncio.create_task(count(), name="bench-subscriber")
        config = RepublishConfig(
            mode=mode,
            max_in_flight=in_flight,
            drain_timeout_s=600.0,
            max_queue=10**7,
        )
        async with RepublishSink(pub.publish, norm, config) as sink:
            start = time.perf_counter()
            for batch in batches:
                sink.add(batch)
            add_s = time.perf_counter() - start
            await sink.flush()
            published_s = time.perf_counter() - start
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 120)
            delivered_s = time.perf_counter() - start
            stats = sink.stats()
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
    return {
        "events": expected,
        "add_us_per_event": add_s / expected * 1e6,
        "publish_per_s": expected / published_s,
        "delivered_per_s": received / delivered_s,
        "received": received,
        "errors": float(stats["errors"]),
    }


async def raw_rate(host: str, port: int, norm: Normalizer, batches: list[Batch], in_flight: int) -> float:
    messages = [
        (norm.topic_for(s.path, s.metric), norm.encode_event(s)) for batch in batches for s in batch.samples
    ]
    async with aiomqtt.Client(host, port) as pub:
        pub.pending_calls_threshold = max(pub.pending_calls_threshold, in_flight)
        start = time.perf_counter()
        for i in range(0, len(messages), in_flight):
            await asyncio.gather(*(pub.publish(t, p, 0, False) for t, p in messages[i : i + in_flight]))
        return len(messages) / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10, help="samples per message (batch)")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    store = ContextStore()
    store.apply(ContextChange(0, 0, "acme/basel/pilot", "batch_id", "B-2026-0001"))
    store.apply(ContextChange(0, 0, "acme/basel/pilot", "product", "Tab-X 50 mg"))
    store.apply(ContextChange(0, 0, "acme/basel/pilot", "phase", "compression"))
    norm = Normalizer(load_model(ROOT / "examples" / "pilot-plant.toml"), store, prefix=PREFIX)
    batches = make_batches(norm, args.samples, args.batch)
    for mode in ("metric", "device"):
        print(f"{mode:6s} encode only: {encode_rate(norm, batches, mode):>10,.0f} events/s")
    with running_mosquitto() as broker:
        for in_flight in args.in_flight:
            rate = await raw_rate(broker.host, broker.port, norm, batches, in_flight)
            print(f"raw aiomqtt in-flight {in_flight:3d}: {rate:>8,.0f} messages/s")
        for mode in ("metric", "device"):
            for in_flight in args.in_flight:
                r = await run_mode(broker.host, broker.port, norm, batches, mode, in_flight)
                samples_per_s = r["delivered_per_s"] * (1 if mode == "metric" else args.batch)
                print(
                    f"{mode:6s} in-flight {in_flight:3d}: {r['events']:>7,.0f} events, "
                    f"add {r['add_us_per_event']:.2f} us/event, "
                    f"published {r['publish_per_s']:>8,.0f}/s, delivered {r['delivered_per_s']:>8,.0f}/s "
                    f"({samples_per_s:,.0f} samples/s), received {r['received']:.0f}, "
                    f"errors {r['errors']:.0f}"
                )


if __name__ == "__main__":
    asyncio.run(main())
