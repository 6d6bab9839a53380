"""Sparkplug B codec throughput (a script, not a test).

    .venv/bin/python benchmarks/bench_codec.py [--seconds 1.0]

Two payloads shaped like what the engine receives: a 10-metric DDATA with
aliases and no datatype, and a 200-metric DBIRTH with names, datatypes and
properties.  Prints payloads/s and metrics/s for decode and encode, and the
cost of decode relative to a bare protobuf ``ParseFromString`` of the same bytes
(the floor: what any Python decoder pays before touching a value).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import google.protobuf
from google.protobuf.internal import api_implementation

from uns.sparkplug import (
    DataType,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    decode_payload,
    encode_payload,
)
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.payload import MetricValue

T0 = 1_700_000_000_000


def ddata() -> Payload:
    values: list[float | int | bool] = [21.5, 1013, True, 0.25, 7, False, 99.9, 42, 3.14, 1]
    return Payload(
        timestamp=T0,
        seq=17,
        metrics=[Metric(alias=i + 1, timestamp=T0 + i, value=v) for i, v in enumerate(values)],
    )


def dbirth() -> Payload:
    kinds: list[tuple[DataType, MetricValue]] = [
        (DataType.Double, 21.5),
        (DataType.Int32, -5),
        (DataType.Boolean, True),
        (DataType.String, "RUNNING"),
        (DataType.Float, 0.5),
        (DataType.UInt16, 1200),
        (DataType.Int64, -1),
        (DataType.DateTime, T0),
    ]
    metrics = []
    for i in range(200):
        datatype, value = kinds[i % len(kinds)]
        props = PropertySet(
            {
                "engUnit": PropertyValue(DataType.String, "degC"),
                "Quality": PropertyValue(DataType.Int32, 192),
            }
        )
        metrics.append(
            Metric(
                name=f"Area1/Line2/Unit{i // 10}/Tag{i}",
                alias=i + 1,
                timestamp=T0,
                datatype=datatype,
                properties=props,
                value=value,
            )
        )
    return Payload(timestamp=T0, seq=0, metrics=metrics)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second, measured over about ``seconds`` (best of 3 rounds)."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        took = time.perf_counter() - start
        if took > seconds / 10:
            break
        n *= 2
    per_round = max(1, int(n * (seconds / 3) / took))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        best = min(best, (time.perf_counter() - start) / per_round)
    return 1.0 / best


def report(label: str, payload: Payload, seconds: float) -> None:
    data = encode_payload(payload)
    count = len(payload.metrics)
    assert decode_payload(data) == payload  # the benchmark measures a correct decode

    def bare_parse() -> None:
        pb.Payload().ParseFromString(data)

    decode = rate(lambda: decode_payload(data), seconds)
    encode = rate(lambda: encode_payload(payload), seconds)
    parse = rate(bare_parse, seconds)
    print(f"{label}: {count} metrics, {len(data)} bytes")
    for what, per_second in (("decode", decode), ("encode", encode)):
        print(
            f"  {what}  {per_second:>10,.0f} payloads/s  {per_second * count:>12,.0f} metrics/s"
            f"  {1e6 / per_second / count:6.2f} us/metric"
        )
    print(
        f"  bare ParseFromString {parse:>10,.0f} payloads/s; decode_payload is {parse / decode:.1f}x slower"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per figure")
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()}, protobuf {google.protobuf.__version__} "
        f"({api_implementation.Type()}), {platform.machine()}"
    )
    report("DDATA, aliases, no datatype", ddata(), args.seconds)
    report("DBIRTH, names, datatypes, properties", dbirth(), args.seconds)


if __name__ == "__main__":
    main()
