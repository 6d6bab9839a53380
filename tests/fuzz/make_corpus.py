"""Write the fuzzers' seed corpora.

``spdata``: DATA payloads the codec tests use, Tahu-style encodings (values in another
field than the datatype's, masked and sign-extended integers), and the bench plant's
DDATA; each file is one byte (the born datatype) + a payload.  ``spblock``: packed
sample-block records (uns.lake.blocks) of natively decoded DATA, small and larger,
with and without contexts, per record and per segment series numbering.  ``mqttrun``:
socket reads of MQTT 3.1.1 PUBLISH packets (QoS 0 and 1, retained, one- and two-byte
lengths, cut anywhere, mixed with other packets).

    python -m tests.fuzz.make_corpus DIR [spdata|spblock|mqttrun]
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.codec import encode_payload
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import Metric, Payload

T0 = 1_700_000_000_000
_VALUES = {
    "int_value": [0, 1, 127, 128, 255, 2**31, 2**32 - 1],
    "long_value": [0, 2**31, 2**63 - 1, 2**63, 2**64 - 1],
    "float_value": [0.0, -0.0, 1.5, math.inf, math.nan],
    "double_value": [0.0, 0.1, 1e300, -math.inf, math.nan],
    "boolean_value": [False, True],
    "string_value": ["", "x"],
}


def payloads() -> list[bytes]:
    out = []
    for field, values in _VALUES.items():
        for value in values:
            for stated in (None, 3, 8, 9, 10, 11, 13):
                p = pb.Payload(timestamp=T0, seq=1)
                m = p.metrics.add(alias=7, timestamp=T0 + 1, **{field: value})
                if stated is not None:
                    m.datatype = stated
                out.append(p.SerializeToString())
    # the typed encoder: several metrics, names and aliases, nulls
    metrics = [Metric(alias=i, timestamp=T0, datatype=DataType.Double, value=i / 3) for i in range(10)]
    metrics.append(Metric(name="by name", datatype=DataType.Int32, value=-5))
    metrics.append(Metric(alias=11, datatype=DataType.Boolean, is_null=True))
    out.append(encode_payload(Payload(timestamp=T0, metrics=metrics, seq=200)))
    return out


def block_records() -> list[bytes]:
    """Packed records of the bench loads' natively decoded DATA (needs the extension)."""
    import argparse  # noqa: PLC0415 - only for this corpus

    from benchmarks import bench_native  # noqa: PLC0415
    from uns.lake import blocks  # noqa: PLC0415

    out: list[bytes] = []
    encode = blocks.encode_blocks

    def keep(found: object, registry: object = None) -> tuple[bytes, list[object]]:
        record = encode(found, registry)  # type: ignore[arg-type]
        if len(out) < 40:
            out.append(record[0])
        return record

    blocks.encode_blocks = keep  # type: ignore[assignment]
    try:
        for load, per in (("small", 1), ("small", 7), ("harness", 3)):
            args = argparse.Namespace(load=load, messages=60, phase="engine", record_messages=per)
            bench_native.child(args)
    finally:
        blocks.encode_blocks = encode  # type: ignore[assignment]
    return out


def socket_reads() -> list[bytes]:
    """Runs of PUBLISH packets as the broker sends them, some cut short or mixed."""
    from uns.mqtt.wire.packets import encode_publish  # noqa: PLC0415 - only for this corpus

    packets = [
        encode_publish("spBv1.0/G/DDATA/n/d", raw, qos, retain, packet_id=7 if qos else 0)
        for raw in payloads()[:: len(payloads()) // 6]
        for qos, retain in ((0, False), (1, False), (0, True))
    ]
    packets.append(encode_publish("t/" + "x" * 300, b"\x00" * 20000, 1, packet_id=65535))  # 3-byte length
    packets.append(encode_publish("", b"", 0))
    packets.append(bytes([0xD0, 0x00]))  # PINGRESP
    out = []
    for k in range(1, 6):
        run = b"".join(packets[i % len(packets)] for i in range(k, k + 3 * k))
        out += [run, run[: len(run) // 2], run + packets[-1]]
    return out


def main(argv: list[str]) -> int:
    target = Path(argv[1])
    target.mkdir(parents=True, exist_ok=True)
    if len(argv) > 2 and argv[2] == "spblock":
        for data in block_records():
            (target / hashlib.sha1(data).hexdigest()).write_bytes(data)
        return 0
    if len(argv) > 2 and argv[2] == "mqttrun":
        for data in socket_reads():
            (target / hashlib.sha1(data).hexdigest()).write_bytes(data)
        return 0
    for raw in payloads():
        for born in (3, 8, 9, 10, 11, 13):
            data = bytes([born]) + raw
            (target / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
