"""Republish cost, throughput and latency: RepublishSink with and without a real mosquitto.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_republish [--samples 20000] [--batch 10]
        [--in-flight 8 64] [--rate 20000] [--seconds 10] [--skip-broker]

Enriches pilot-plant samples (plant model + context) and, for each mode
(``metric``: one event per sample, ``device``: one per message), measures

- ``encode``: CPU microseconds per event of ``EventEncoder.encode_*`` (and of
  the reference rendering, ``json`` of ``event_json``, for comparison): the
  cost that does not depend on the MQTT client;
- ``sink, null client``: CPU microseconds per event from the first ``add``
  until ``flush`` returns, with a ``publish``/``publish_nowait`` that do
  nothing: what the sink itself adds on top of the encoding;

then with a private mosquitto on a free loopback port:

- ``raw aiomqtt``: pre-encoded payloads published with ``client.publish`` in
  groups, without the sink (the ceiling of an awaited publish);
- ``throughput``: events/s from the first ``add`` until ``flush`` returns
  (``published``) and until a subscriber has received every message
  (``delivered``), with ``publish_nowait`` (paho inside aiomqtt, as the
  engine) or with the awaited ``publish`` only (``in-flight N``);
- ``latency``: samples stamped with the wall clock, added at ``--rate``
  metrics/s for ``--seconds``; a separate subscriber process
  (``benchmarks.subscribers events``) reports arrival minus ``ts``
  percentiles (ms).  CPU figures are process CPU time (this process only:
  the broker and the subscriber run in their own), so they hold on a
  shared machine where wall-clock rates are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt

from benchmarks.procs import Subscriber
from uns.config import RepublishSection
from uns.core.context import ContextStore
from uns.core.enrich import Enricher
from uns.core.events import Batch, ContextChange, Sample
from uns.engine.plant import load_model
from uns.mqtt.mosquitto import running_mosquitto
from uns.sinks.encoders import EventEncoder
from uns.sinks.republish import PublishNowaitFn, RepublishSink
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
_REFERENCE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def make_batch(enricher: Enricher, b: int, batch_size: int, ts: int) -> Batch:
    node, device = DEVICES[b % len(DEVICES)]
    batch = Batch(
        samples=[
            Sample(
                "PilotPlant",
                node,
                device,
                METRICS[i % len(METRICS)],
                DataType.Double,
                20.0 + i * 0.125 + b * 0.001,
                ts,
                ts + 3,
                seq=b % 256,
                bdseq=1,
            )
            for i in range(batch_size)
        ]
    )
    enricher.enrich(batch)
    return batch


def make_batches(enricher: Enricher, samples: int, batch_size: int) -> list[Batch]:
    ts = 1_767_225_600_000
    return [make_batch(enricher, b, batch_size, ts + b) for b in range(samples // batch_size)]


def event_count(batches: list[Batch], mode: str) -> int:
    return sum(len(b.samples) for b in batches) if mode == "metric" else len(batches)


# ---------------------------------------------------------------------- CPU, no I/O


def encode_cpu_us(encoder: EventEncoder, batches: list[Batch], mode: str, *, reference: bool) -> float:
    """CPU us per event (best of 3) of topic + payload, the encoder's or the reference's."""
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        for batch in batches:
            if mode == "metric":
                for sample in batch.samples:
                    encoder.topic_for(sample.path, sample.metric)
                    if reference:
                        _REFERENCE.encode(encoder.event_json(sample)).encode()
                    else:
                        encoder.encode_event(sample)
            else:
                encoder.device_topic(batch.samples[0].path)
                if reference:
                    _REFERENCE.encode(encoder.device_event_json(batch.samples)).encode()
                else:
                    encoder.encode_device_event(batch.samples)
        best = min(best, time.thread_time() - start)
    return best / event_count(batches, mode) * 1e6


async def sink_cpu_us(encoder: EventEncoder, batches: list[Batch], mode: str, *, nowait: bool) -> float:
    """CPU us per event of add() .. flush() with a client that does nothing (best of 3)."""

    async def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
        return None

    def publish_nowait(topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        return True

    best = float("inf")
    for _ in range(3):
        config = RepublishSection(mode=mode, max_queue=10**7, drain_timeout_s=600.0)
        fast: PublishNowaitFn | None = publish_nowait if nowait else None
        async with RepublishSink(publish, encoder, config, publish_nowait=fast) as sink:
            await asyncio.sleep(0)
            start = time.process_time()
            for batch in batches:
                sink.add(batch)
            await sink.flush()
            best = min(best, time.process_time() - start)
            assert sink.stats()["published"] == event_count(batches, mode)
    return best / event_count(batches, mode) * 1e6


# ---------------------------------------------------------------------- through mosquitto


def paho_nowait(client: aiomqtt.Client) -> PublishNowaitFn:
    """What ``Engine.publish_nowait`` does with aiomqtt: hand the message to paho."""
    paho = client._client

    def publish_nowait(topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        return bool(paho.publish(topic, payload, qos, retain).rc == 0)

    return publish_nowait


async def throughput(
    host: str, port: int, encoder: EventEncoder, batches: list[Batch], mode: str, in_flight: int | None
) -> dict[str, float]:
    """``in_flight`` None: with publish_nowait (the engine's way); else the awaited publish only."""
    expected = event_count(batches, mode)
    received = 0
    done = asyncio.Event()
    async with aiomqtt.Client(host, port) as sub, aiomqtt.Client(host, port) as pub:
        pub.pending_calls_threshold = max(pub.pending_calls_threshold, in_flight or 0)
        await sub.subscribe(f"{PREFIX}/#", qos=0)

        async def count() -> None:
            nonlocal received
            async for _ in sub.messages:
                received += 1
                if received == expected:
                    done.set()
                    return

        counter = asyncio.create_task(count(), name="bench-subscriber")
        config = RepublishSection(
            mode=mode, max_in_flight=in_flight or 8, drain_timeout_s=600.0, max_queue=10**7
        )
        nowait = paho_nowait(pub) if in_flight is None else None
        async with RepublishSink(pub.publish, encoder, config, publish_nowait=nowait) as sink:
            cpu = time.process_time()
            start = time.perf_counter()
            for batch in batches:
                sink.add(batch)
            await sink.flush()
            published_s = time.perf_counter() - start
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 120)
            delivered_s = time.perf_counter() - start
            cpu = time.process_time() - cpu
            stats = sink.stats()
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter
    return {
        "events": expected,
        "cpu_us_per_event": cpu / expected * 1e6,  # publisher + in-process subscriber
        "publish_per_s": expected / published_s,
        "delivered_per_s": received / delivered_s,
        "received": received,
        "errors": float(stats["errors"]),
    }


async def raw_rate(
    host: str, port: int, encoder: EventEncoder, batches: list[Batch], in_flight: int
) -> float:
    messages = [
        (encoder.topic_for(s.path, s.metric), encoder.encode_event(s))
        for batch in batches
        for s in batch.samples
    ]
    async with aiomqtt.Client(host, port) as pub:
        pub.pending_calls_threshold = max(pub.pending_calls_threshold, in_flight)
        start = time.perf_counter()
        for i in range(0, len(messages), in_flight):
            await asyncio.gather(*(pub.publish(t, p, 0, False) for t, p in messages[i : i + in_flight]))
        return len(messages) / (time.perf_counter() - start)


async def latency(
    host: str,
    port: int,
    enricher: Enricher,
    encoder: EventEncoder,
    mode: str,
    rate: int,
    seconds: float,
    batch_size: int,
) -> dict[str, Any]:
    """Paced adds of wall-clock-stamped samples; a subscriber process measures arrival - ts."""
    subscriber = Subscriber("events", port=port, topic=f"{PREFIX}/#", idle=3.0)
    await subscriber.start()
    tick_s = 0.005
    per_tick = rate * tick_s / batch_size  # messages (batches) per tick, fractional
    sent = 0
    async with aiomqtt.Client(host, port) as pub:
        config = RepublishSection(mode=mode, drain_timeout_s=60.0)
        async with RepublishSink(pub.publish, encoder, config, publish_nowait=paho_nowait(pub)) as sink:
            cpu = time.process_time()
            start = time.monotonic()
            due = 0.0
            while (elapsed := time.monotonic() - start) < seconds:
                due_now = int(elapsed / tick_s * per_tick) + 1
                now_ms = time.time_ns() // 1_000_000
                while due < due_now:
                    sink.add(make_batch(enricher, int(due), batch_size, now_ms))
                    due += 1
                    sent += 1
                await asyncio.sleep(tick_s)
            await sink.flush()
            cpu = time.process_time() - cpu
            stats = sink.stats()
        # let paho write what it holds before the client closes
        for _ in range(3000):
            if not pub._client._out_packet:
                break
            await asyncio.sleep(0.01)
    report = await subscriber.result(stop=False)  # it ends 3 s after the last event
    return {
        "metrics_per_s": sent * batch_size / seconds,
        "cpu_us_per_metric": cpu / (sent * batch_size) * 1e6,  # incl. building + enriching samples
        "events": report["events"],
        "expected": sent * batch_size if mode == "metric" else sent,
        "dropped": stats["dropped_queue_full"],
        "latency_ms": report["latency_ms"],
    }


# ---------------------------------------------------------------------- main


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10, help="samples per message (batch)")
    parser.add_argument("--in-flight", type=int, nargs="*", default=[8, 64])
    parser.add_argument("--rate", type=int, default=20_000, help="metrics/s of the latency phase")
    parser.add_argument(
        "--metric-rate", type=int, default=4_000, help="also: metric-mode latency at this rate (paho-bound)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--skip-broker", action="store_true", help="only the CPU figures (no mosquitto)")
    args = parser.parse_args()
    store = ContextStore()
    store.apply(ContextChange(0, 0, "acme/basel/pilot", "batch_id", "B-2026-0001"))
    store.apply(ContextChange(0, 0, "acme/basel/pilot", "product", "Tab-X 50 mg"))
    store.apply(ContextChange(0, 0, "acme/basel/pilot", "phase", "compression"))
    enricher = Enricher(load_model(ROOT / "examples" / "pilot-plant.toml"), store)
    encoder = EventEncoder(PREFIX)
    batches = make_batches(enricher, args.samples, args.batch)
    for mode in ("metric", "device"):
        fast = encode_cpu_us(encoder, batches, mode, reference=False)
        ref = encode_cpu_us(encoder, batches, mode, reference=True)
        print(
            f"{mode:6s} encode: {fast:6.2f} us/event CPU ({1e6 / fast:>9,.0f} events/s); "
            f"reference json of event_json: {ref:6.2f} us/event"
        )
    for mode in ("metric", "device"):
        for nowait in (True, False):
            us = await sink_cpu_us(encoder, batches, mode, nowait=nowait)
            how = "publish_nowait" if nowait else "awaited publish"
            print(f"{mode:6s} sink, null client, {how:15s}: {us:6.2f} us/event CPU (add .. flush)")
    if args.skip_broker:
        return
    with running_mosquitto() as broker:
        for in_flight in args.in_flight:
            rate = await raw_rate(broker.host, broker.port, encoder, batches, in_flight)
            print(f"raw aiomqtt in-flight {in_flight:3d}: {rate:>8,.0f} messages/s")
        for mode in ("metric", "device"):
            for in_flight in (None, *args.in_flight):
                r = await throughput(broker.host, broker.port, encoder, batches, mode, in_flight)
                samples_per_s = r["delivered_per_s"] * (1 if mode == "metric" else args.batch)
                how = "publish_nowait" if in_flight is None else f"in-flight {in_flight:3d}"
                print(
                    f"{mode:6s} {how:14s}: {r['events']:>7,.0f} events, "
                    f"{r['cpu_us_per_event']:.2f} us/event CPU (with subscriber), "
                    f"published {r['publish_per_s']:>8,.0f}/s, delivered {r['delivered_per_s']:>8,.0f}/s "
                    f"({samples_per_s:,.0f} samples/s), received {r['received']:.0f}, "
                    f"errors {r['errors']:.0f}"
                )
        for mode, rate in (("device", args.rate), ("metric", args.rate), ("metric", args.metric_rate)):
            lr = await latency(
                broker.host, broker.port, enricher, encoder, mode, rate, args.seconds, args.batch
            )
            lat = lr["latency_ms"]
            print(
                f"{mode:6s} latency at {lr['metrics_per_s']:,.0f} metrics/s: "
                f"p50 {lat.get('p50', float('nan')):.0f} ms, p95 {lat.get('p95', float('nan')):.0f} ms, "
                f"p99 {lat.get('p99', float('nan')):.0f} ms, max {lat.get('max', float('nan')):.0f} ms; "
                f"received {lr['events']:,}/{lr['expected']:,}, dropped {lr['dropped']}, "
                f"{lr['cpu_us_per_metric']:.2f} us/metric CPU"
            )


if __name__ == "__main__":
    asyncio.run(main())
