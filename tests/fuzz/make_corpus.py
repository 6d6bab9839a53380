"""Write the fuzzer's seed corpus: DATA payloads the codec tests use, Tahu-style encodings
(values in another field than the datatype's, masked and sign-extended integers), and the
bench plant's DDATA.  Each file is one byte (the born datatype) + a payload.

    python -m tests.fuzz.make_corpus DIR
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


def main(argv: list[str]) -> int:
    target = Path(argv[1])
    target.mkdir(parents=True, exist_ok=True)
    for raw in payloads():
        for born in (3, 8, 9, 10, 11, 13):
            data = bytes([born]) + raw
            (target / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
