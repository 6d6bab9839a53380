"""The harness's subscriber processes: the bare-subscriber ceiling and the republish listener.

``ceiling``: a bare aiomqtt subscriber that only counts the messages on a
filter -- the most any aiomqtt-based host can receive on this machine, the
denominator of the engine/ceiling ratio.  It ends when no message came for
``--idle`` seconds after the first one (or on SIGTERM).

``events``: receives the engine's republished events (with the engine's own
MQTT client, which reads many messages per wake-up: the listener must not be
the slowest process, nor take CPU from the engine) and measures the
end-to-end latency of each event: arrival wall clock minus the event's
``ts`` (the sample's source timestamp, set by the load generator just
before it published).  Ends on SIGTERM or after ``--idle`` seconds without
events.

Both print one JSON line at the end::

    python -m benchmarks.subscribers ceiling --port 1883 --topic 'spBv1.0/#'
    python -m benchmarks.subscribers events --port 1883 --topic 'uns/v1/#'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from typing import Any

__all__ = ["main", "percentiles"]


def percentiles(
    values: list[int] | list[float], points: tuple[float, ...] = (50, 95, 99)
) -> dict[str, float]:
    """Nearest-rank percentiles (``p50`` ...) and ``max``; empty input gives no keys."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    # nearest rank: the smallest value with at least p% of the values at or below it
    out = {f"p{p:g}": float(ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))]) for p in points}
    out["max"] = float(ordered[-1])
    return out


# ---------------------------------------------------------------------- ceiling
async def _ceiling(args: argparse.Namespace) -> dict[str, Any]:
    import aiomqtt  # noqa: PLC0415 - only this mode needs it

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    count = 0
    first = last = 0.0
    last_wall = 0.0
    async with aiomqtt.Client(args.host, args.port, identifier=f"bench-ceiling-{time.time_ns()}") as client:
        await client.subscribe(args.topic, qos=0)
        print(json.dumps({"ready": True}), flush=True)

        async def consume() -> None:
            nonlocal count, first, last, last_wall
            async for _message in client.messages:
                last = time.monotonic()
                last_wall = time.time()
                if not count:
                    first = last
                count += 1

        task = asyncio.create_task(consume())
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
            if count and time.monotonic() - last > args.idle:
                break
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    span = last - first
    return {
        "messages": count,
        "seconds": round(span, 3),
        "msgs_per_s": round((count - 1) / span, 1) if span > 0 else 0.0,
        "last_wall": last_wall,
    }


# ---------------------------------------------------------------------- events
async def _events(args: argparse.Namespace) -> dict[str, Any]:
    from uns.mqtt.client import FastClient  # noqa: PLC0415 - only this mode needs it
    from uns.mqtt.settings import BrokerSettings  # noqa: PLC0415

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    events = metrics = bad = 0
    first = last = 0.0
    latencies: list[int] = []
    worst: dict[int, int] = {}  # arrival second (wall clock) -> the worst latency that second
    settings = BrokerSettings(host=args.host, port=args.port, keepalive=60)
    async with FastClient(settings, identifier=f"bench-events-{time.time_ns()}") as client:
        await client.subscribe(args.topic, qos=0)
        print(json.dumps({"ready": True}), flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await client.wait_messages()
            batch = client.take(4096)
            if not batch:
                if events and time.monotonic() - last > args.idle:
                    break
                continue
            # one arrival time per socket read: the messages of a read arrived together
            now = time.time_ns() // 1_000_000
            last = time.monotonic()
            if not events:
                first = last
            for topic, payload, _qos, _retain in batch:
                if "/_engine/" in topic or "/_context/" in topic:
                    continue
                events += 1
                # both event shapes start with {"ts":<ms>, (EventEncoder.event_json key order)
                if payload.startswith(b'{"ts":'):
                    end = payload.index(b",", 6)
                    latency = now - int(payload[6:end])
                    latencies.append(latency)
                    second = now // 1000
                    if latency > worst.get(second, -1):
                        worst[second] = latency
                else:
                    bad += 1
                metrics += payload.count(b'"metric":')
    span = last - first
    return {
        "events": events,
        "metrics": metrics,
        "unparsed": bad,
        "seconds": round(span, 3),
        "events_per_s": round(events / span, 1) if span > 0 else 0.0,
        "latency_ms": percentiles(latencies, (50, 95, 99)),
        # where the tail comes from: the five seconds with the worst latency (wall clock, ms)
        "worst_seconds": [
            {"second": sec, "max_ms": ms} for sec, ms in sorted(worst.items(), key=lambda kv: -kv[1])[:5]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("ceiling", "events"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default="spBv1.0/#")
    parser.add_argument("--idle", type=float, default=3.0, help="end after this long without messages")
    args = parser.parse_args(argv)
    result = asyncio.run(_ceiling(args) if args.mode == "ceiling" else _events(args))
    print(json.dumps({"report": result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
