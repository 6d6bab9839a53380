"""Sparkplug B codec throughput, side by side with pysparkplug (a script, not a test).

    .venv/bin/python benchmarks/bench_codec.py [--seconds 1.0] [--rounds 3]

Payloads shaped like what the engine receives: a 10-metric DDATA with aliases
and no datatype, the same DDATA with datatypes, and a 200-metric DBIRTH with
names, datatypes and properties (and once without).  For each: payloads/s and
metrics/s of ``decode_payload`` and ``encode_payload``, the cost of decode
relative to a bare protobuf ``ParseFromString`` of the same bytes (the floor:
what any Python decoder pays before touching a value), and, when pysparkplug
is installed, its decode of the same bytes and how many times faster
``decode_payload`` is.

How the comparison is kept fair:

* Same bytes, same interpreter and protobuf (upb), the same timing loop, and
  alternating rounds (``--rounds``), best round of each kept, so both see the
  same machine load.  pysparkplug runs in a child process (this script with
  ``--pysparkplug-child``): it registers ``sparkplug_b.proto`` in protobuf's
  default descriptor pool, as uns does, so the two cannot share a process.
  For the same reason this module imports uns only in the functions the
  parent runs.
* Both decode eagerly into metric objects holding typed values (the script
  checks that both get the same values for the DDATA).  pysparkplug's
  ``DData.decode`` refuses a metric without datatype unless it is given the
  device's DBIRTH, so for the DDATA without datatypes it gets one, as its
  users do; uns keeps the raw wire values there (``Metric.value_as`` types
  them).  Its ``DBirth.decode`` skips the metrics' properties, which uns
  decodes, so on the DBIRTH with properties it does less work; the DBIRTH
  without them compares like for like.

pysparkplug 0.6.1 pins ``paho-mqtt<2``, and aiomqtt (uns) needs paho-mqtt 2,
so install it without its dependencies: ``pip install --no-deps
pysparkplug==0.6.1`` (its decoders work with paho-mqtt 2; only its MQTT client
wants paho 1, and protobuf, its other dependency, is there already).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uns.sparkplug import Payload

T0 = 1_700_000_000_000
CHILD_FLAG = "--pysparkplug-child"
INSTALL_HINT = "pip install --no-deps pysparkplug==0.6.1"


@dataclass
class Case:
    label: str
    payload: Payload
    data: bytes
    #: how pysparkplug decodes it: "DData" or "DBirth", with the DBIRTH a DDATA needs
    ps_class: str
    ps_birth: bytes | None = None


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


# ---------------------------------------------------------------- the uns side (parent process)


def cases() -> list[Case]:
    from uns.sparkplug import (  # noqa: PLC0415 - not in the pysparkplug child (module docstring)
        DataType,
        Metric,
        Payload,
        PropertySet,
        PropertyValue,
        encode_payload,
    )

    values: list[tuple[DataType, float | int | bool]] = [
        (DataType.Double, 21.5),
        (DataType.Int64, 1013),
        (DataType.Boolean, True),
        (DataType.Double, 0.25),
        (DataType.Int64, 7),
        (DataType.Boolean, False),
        (DataType.Double, 99.9),
        (DataType.Int64, 42),
        (DataType.Double, 3.14),
        (DataType.Int64, 1),
    ]

    def ddata(typed: bool) -> Payload:
        return Payload(
            timestamp=T0,
            seq=17,
            metrics=[
                Metric(alias=i + 1, timestamp=T0 + i, datatype=dt if typed else None, value=v)
                for i, (dt, v) in enumerate(values)
            ],
        )

    # the DBIRTH of the DDATA's device, for pysparkplug to type the metrics without datatype
    ddata_birth = Payload(
        timestamp=T0,
        seq=16,
        metrics=[
            Metric(name=f"Line2/Tag{i + 1}", alias=i + 1, timestamp=T0, datatype=dt, value=v)
            for i, (dt, v) in enumerate(values)
        ],
    )

    kinds: list[tuple[DataType, Any]] = [
        (DataType.Double, 21.5),
        (DataType.Int32, -5),
        (DataType.Boolean, True),
        (DataType.String, "RUNNING"),
        (DataType.Float, 0.5),
        (DataType.UInt16, 1200),
        (DataType.Int64, -1),
        (DataType.DateTime, T0),
    ]
    birth_metrics = []
    for i in range(200):
        datatype, value = kinds[i % len(kinds)]
        props = PropertySet(
            {
                "engUnit": PropertyValue(DataType.String, "degC"),
                "Quality": PropertyValue(DataType.Int32, 192),
            }
        )
        birth_metrics.append(
            Metric(
                name=f"Area1/Line2/Unit{i // 10}/Tag{i}",
                alias=i + 1,
                timestamp=T0,
                datatype=datatype,
                properties=props,
                value=value,
            )
        )
    dbirth = Payload(timestamp=T0, seq=0, metrics=birth_metrics)
    # the same without properties, which pysparkplug does not decode: like for like
    bare_birth = Payload(
        timestamp=T0, seq=0, metrics=[dataclasses.replace(m, properties=None) for m in birth_metrics]
    )

    def case(label: str, payload: Payload, ps_class: str, birth: Payload | None = None) -> Case:
        data = encode_payload(payload)
        return Case(label, payload, data, ps_class, None if birth is None else encode_payload(birth))

    return [
        case("DDATA, aliases, no datatype", ddata(typed=False), "DData", ddata_birth),
        case("DDATA, aliases, datatypes", ddata(typed=True), "DData"),
        case("DBIRTH, names, datatypes, properties", dbirth, "DBirth"),
        case("DBIRTH, names, datatypes, no properties", bare_birth, "DBirth"),
    ]


def uns_rates(case: Case, seconds: float) -> dict[str, float]:
    from uns.sparkplug import (  # noqa: PLC0415 - not in the pysparkplug child (module docstring)
        decode_payload,
        encode_payload,
    )
    from uns.sparkplug import sparkplug_b_pb2 as pb  # noqa: PLC0415 - as above

    data, payload = case.data, case.payload
    assert decode_payload(data) == payload  # the benchmark measures a correct decode

    def bare_parse() -> None:
        pb.Payload().ParseFromString(data)

    return {
        "decode": rate(lambda: decode_payload(data), seconds),
        "encode": rate(lambda: encode_payload(payload), seconds),
        "parse": rate(bare_parse, seconds),
    }


def pysparkplug_rates(all_cases: list[Case], seconds: float) -> tuple[str, dict[str, dict[str, Any]]]:
    """Run the child: (pysparkplug version, {label: {"decode": rate, "values": [...]}})."""
    request = {
        "seconds": seconds,
        "cases": [
            {
                "label": c.label,
                "class": c.ps_class,
                "data": c.data.hex(),
                "birth": None if c.ps_birth is None else c.ps_birth.hex(),
            }
            for c in all_cases
        ],
    }
    done = subprocess.run(
        [sys.executable, __file__, CHILD_FLAG],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the pysparkplug child failed:\n{done.stderr}")
    answer = json.loads(done.stdout)
    return answer["version"], answer["results"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per figure and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating uns/pysparkplug rounds")
    parser.add_argument(CHILD_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pysparkplug_child:
        pysparkplug_child()
        return

    import google.protobuf  # noqa: PLC0415 - here for the version line only
    from google.protobuf.internal import api_implementation  # noqa: PLC0415 - as above

    print(
        f"Python {platform.python_version()}, protobuf {google.protobuf.__version__} "
        f"({api_implementation.Type()}), {platform.machine()}"
    )
    all_cases = cases()
    have_ps = importlib.util.find_spec("pysparkplug") is not None  # found, not imported
    if not have_ps:
        print(f"pysparkplug not installed: {INSTALL_HINT} (for the side-by-side figures)")
    best: dict[str, dict[str, float]] = {c.label: {} for c in all_cases}
    ps_version = ""
    for _ in range(max(1, args.rounds)):
        for c in all_cases:
            for what, per_second in uns_rates(c, args.seconds).items():
                best[c.label][what] = max(best[c.label].get(what, 0.0), per_second)
        if have_ps:
            ps_version, results = pysparkplug_rates(all_cases, args.seconds)
            for c in all_cases:
                got = results[c.label]
                best[c.label]["pysparkplug"] = max(best[c.label].get("pysparkplug", 0.0), got["decode"])
                if c.ps_class == "DData":  # both must decode the same values
                    assert got["values"] == [m.value for m in c.payload.metrics], c.label
    for c in all_cases:
        figures = best[c.label]
        count = len(c.payload.metrics)
        print(f"{c.label}: {count} metrics, {len(c.data)} bytes")
        for what in ("decode", "encode"):
            per_second = figures[what]
            print(
                f"  {what}  {per_second:>10,.0f} payloads/s  {per_second * count:>12,.0f} metrics/s"
                f"  {1e6 / per_second / count:6.2f} us/metric"
            )
        print(
            f"  bare ParseFromString {figures['parse']:>10,.0f} payloads/s; "
            f"decode_payload is {figures['parse'] / figures['decode']:.1f}x slower"
        )
        if have_ps:
            how = f"{c.ps_class}.decode" + ("(birth=...)" if c.ps_birth is not None else "")
            print(
                f"  pysparkplug {ps_version} {how}  {figures['pysparkplug']:>10,.0f} payloads/s; "
                f"decode_payload is {figures['decode'] / figures['pysparkplug']:.1f}x as fast"
            )


# ---------------------------------------------------------------- the pysparkplug side (child process)


def pysparkplug_child() -> None:
    """Decode the parent's payloads with pysparkplug; answer on stdout (JSON)."""
    import pysparkplug  # noqa: PLC0415 - only this process may import it (module docstring)

    request = json.load(sys.stdin)
    results: dict[str, dict[str, Any]] = {}
    for c in request["cases"]:
        data = bytes.fromhex(c["data"])
        decode = getattr(pysparkplug, c["class"]).decode
        birth = None if c["birth"] is None else pysparkplug.DBirth.decode(bytes.fromhex(c["birth"]))
        decoded = decode(data, birth=birth)
        values = [m.value for m in decoded.metrics] if c["class"] == "DData" else None
        results[c["label"]] = {
            "decode": rate(
                lambda decode=decode, data=data, birth=birth: decode(data, birth=birth), request["seconds"]
            ),
            "values": values,
        }
    json.dump({"version": importlib.metadata.version("pysparkplug"), "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
