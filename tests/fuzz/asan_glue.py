"""Mutated inputs through the extensions' Python glue built with AddressSanitizer.

The libFuzzer targets cover the plain-C parsers; this covers what calls them with Python
objects: ``_blocks.c``'s ``join_blocks`` (several records of one segment, series defined
across records) and ``_fastwire.c``'s ``publishes`` (a run of PUBLISH packets into
messages, PUBACKs and the topic cache).  Each input is checked against the Python
reference (``join_python``; ``PacketReader`` without the C run): the same result, or the
same refusal.  ``scripts/fuzz SECONDS glue`` builds both extensions with
``-fsanitize=address,undefined`` and runs this with libasan preloaded and
``PYTHONMALLOC=malloc`` (so a read past a bytes object is caught)::

    python -m tests.fuzz.asan_glue SECONDS SPEEDUPS_SO FASTWIRE_SO CORPUS_DIR   (its mqttrun/)
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import random
import struct
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any


def _load(name: str, path: str) -> ModuleType:
    """The sanitized build of an extension, under its real name (before uns imports it)."""
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[name] = module
    return module


def _mutate(rng: random.Random, data: bytes, most: int = 5) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, most + 1)):
        if len(out) < 4:
            break
        kind = rng.randrange(4)
        if kind == 0:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif kind == 1:  # a count, length or id: the likeliest to point outside
            at = rng.choice([8, 12, 16, 20, 24, 28, 32, rng.randrange(len(out) - 3)])
            value = rng.choice([0, 1, 7, 255, 2**31 - 1, 2**32 - 1])
            struct.pack_into("<I", out, min(at, len(out) - 4), value)
        elif kind == 2:
            out = out[: rng.randrange(len(out) + 1)]
        else:  # splice: a slice of the input again somewhere
            a = rng.randrange(len(out))
            b = rng.randrange(a, len(out) + 1)
            at = rng.randrange(len(out) + 1)
            out[at:at] = out[a:b]
    return bytes(out)


def _outcome(fn: Any, arg: Any) -> object:
    try:
        return fn(arg)
    except ValueError:
        return "refused"


def main(argv: list[str]) -> int:
    seconds, speedups_so, fastwire_so, corpus = float(argv[1]), argv[2], argv[3], Path(argv[4])
    speedups = _load("uns.sparkplug._speedups", speedups_so)
    fastwire = _load("uns.mqtt.wire._fastwire", fastwire_so)
    from uns.lake import blocks  # noqa: PLC0415 - after the sanitized builds are in place
    from uns.mqtt.wire import readers  # noqa: PLC0415
    from uns.mqtt.wire.packets import MqttProtocolError  # noqa: PLC0415

    assert blocks.native.join_blocks is speedups.join_blocks
    from tests.fuzz.make_corpus import block_records  # noqa: PLC0415

    records = block_records()  # in the order written: a segment's records after its first
    reads = [p.read_bytes() for p in sorted((corpus / "mqttrun").iterdir())]
    rng = random.Random(34)
    joins = streams = joined = published = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(200):
            # one to three records, some left whole (a record whose series the segment
            # numbers needs the records before it, so many combinations are refused)
            first = 0 if rng.randrange(2) else rng.randrange(len(records))  # the segment's start
            parts = records[first : first + rng.randrange(1, 6)]
            if rng.randrange(4) == 0:
                parts = [rng.choice(records) for _ in range(rng.randrange(1, 4))]
            parts = [_mutate(rng, p, 2) if rng.randrange(3) == 0 else p for p in parts]
            native = _outcome(speedups.join_blocks, parts)
            reference = _outcome(blocks.join_python, parts)
            if native != reference:
                raise AssertionError(f"join_blocks differs from join_python on {[p.hex() for p in parts]}")
            joins += 1
            joined += native != "refused"
            data = _mutate(rng, rng.choice(reads))
            got: list[Any] = []
            for fast in (fastwire.publishes, None):
                reader = readers.PacketReader()
                reader._fast = fast  # the C run against the Python loop
                cut = rng.randrange(len(data) + 1)
                try:
                    controls = reader.feed(data[:cut]) + reader.feed(data[cut:])
                    got.append((reader.messages, bytes(reader.replies), controls))
                except MqttProtocolError as exc:
                    got.append(("refused", str(exc), reader.messages, bytes(reader.replies)))
            if got[0] != got[1]:
                raise AssertionError(f"publishes differs from the Python reader on {data.hex()}")
            streams += 1
            published += len(got[0][2 if got[0][0] == "refused" else 0])
    print(
        f"asan glue: {joins} segment joins ({joined} accepted), {streams} socket reads "
        f"({published} messages), no finding in {seconds:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
