"""The client's receive path at MQTT 5.0 against 3.1.1, and against a packet codec from PyPI.

    .venv/bin/python benchmarks/bench_wire5.py [--messages 1000] [--size 200] [--rounds 200]
    .venv/bin/python benchmarks/bench_wire5.py --only v5 --rounds 20    # one reader, for callgrind

Parses one socket read's worth of QoS 0 PUBLISH packets (``--messages`` of
``--size`` payload bytes, Sparkplug-like topics) with
:class:`uns.mqtt.wire.PacketReader` as it runs in the client: ``v3`` (MQTT 3.1.1
packets), ``v5`` (the same packets in MQTT 5.0, an empty property block each)
and ``v5-props`` (every packet with a user property and a message expiry, the
slow path).  With the ``mqtt5`` package installed (a Rust MQTT 5 codec, not a
dependency) it also measures ``mqtt5.read`` per packet into the same tuples.
Prints ns per message, best of five; under ``valgrind --tool=callgrind`` run
one reader with ``--only`` and compare instruction counts (repeatable on a
loaded machine, wall time is not).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uns.mqtt.wire import PacketReader, encode_publish, encode_publish5, encode_remaining_length
from uns.mqtt.wire.v5 import MESSAGE_EXPIRY, USER_PROPERTY, encode_properties


def _topics(n: int) -> list[str]:
    return [f"spBv1.0/Plant/DDATA/node{i % 20}/dev{i % 7}" for i in range(n)]


def streams(messages: int, size: int) -> dict[str, bytes]:
    """One chunk of packets per case."""
    rng = random.Random(0)
    pairs = [(f"spBv1.0/Plant/DDATA/node{i % 20}/dev{i % 7}", rng.randbytes(size)) for i in range(messages)]
    props = encode_properties([(MESSAGE_EXPIRY, 60), (USER_PROPERTY, ("site", "pilot"))])

    def with_props(topic: str, payload: bytes) -> bytes:
        raw = topic.encode()
        body = len(raw).to_bytes(2, "big") + raw + props + payload
        return b"\x30" + encode_remaining_length(len(body)) + body

    return {
        "v3": b"".join(encode_publish(t, p) for t, p in pairs),
        "v5": b"".join(encode_publish5(t, p) for t, p in pairs),
        "v5-props": b"".join(with_props(t, p) for t, p in pairs),
    }


def readers(chunks: dict[str, bytes]) -> dict[str, Callable[[], int]]:
    def ours(chunk: bytes, v5: bool, python: bool = False) -> Callable[[], int]:
        def run() -> int:
            reader = PacketReader(v5=v5)
            if python:  # the Python loop alone, as MQTT 5 reads (3.1.1 has a C run too)
                reader._fast = None
            reader.feed(chunk)
            return len(reader.messages)

        return run

    cases = {name: ours(chunk, name != "v3") for name, chunk in chunks.items()}
    cases["v3-python"] = ours(chunks["v3"], False, python=True)
    try:
        import mqtt5  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        return cases
    chunk = chunks["v5"]

    def theirs() -> int:
        view, pos, n, out = memoryview(chunk), 0, len(chunk), []
        while pos < n:
            packet, used = mqtt5.read(view[pos:])
            out.append((packet.topic, packet.payload, int(packet.qos), packet.retain))
            pos += used
        return len(out)

    cases["mqtt5 (PyPI)"] = theirs
    return cases


def measure(run: Callable[[], int], rounds: int) -> float:
    """ns per message, best of five repetitions of ``rounds`` chunks."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        count = 0
        for _ in range(rounds):
            count += run()
        best = min(best, (time.perf_counter() - start) / count)
    return best * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000, help="PUBLISH packets per chunk")
    parser.add_argument("--size", type=int, default=200, help="payload bytes")
    parser.add_argument("--rounds", type=int, default=200, help="chunks per repetition")
    parser.add_argument("--only", help="run this one reader --rounds times, nothing else (for callgrind)")
    args = parser.parse_args()
    cases = readers(streams(args.messages, args.size))
    if args.only:
        run = cases[args.only]
        for _ in range(args.rounds):
            run()
        return
    figures = {name: round(measure(run, args.rounds), 1) for name, run in cases.items()}
    figures["v5_over_v3"] = round(figures["v5"] / figures["v3-python"], 3)  # like for like
    print(json.dumps({"ns_per_message": figures, "messages": args.messages, "payload_bytes": args.size}))


if __name__ == "__main__":
    main()
