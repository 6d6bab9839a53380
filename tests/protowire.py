"""Protobuf wire framing by hand, for tests that build payload bytes field by field.

Independent of the codec under test (and of ``google.protobuf``), so that tests
can write what a sender might put on the wire, malformed or not.
"""

from __future__ import annotations

__all__ = ["lfield", "varint", "vfield"]


def varint(n: int) -> bytes:
    """``n`` (non-negative) as a base-128 varint."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def vfield(number: int, value: int) -> bytes:
    """Field ``number`` with wire type 0 (varint) holding ``value``."""
    return varint(number << 3) + varint(value)


def lfield(number: int, body: bytes) -> bytes:
    """Field ``number`` with wire type 2 (length-delimited) holding ``body``."""
    return varint(number << 3 | 2) + varint(len(body)) + body
