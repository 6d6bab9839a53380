"""The Eclipse Tahu compression envelope (docs/sparkplug.md section 6).

A compressed payload is an ordinary payload with ``uuid == "SPBV1.0_COMPRESSED"``,
``body`` = the compressed bytes of the inner payload, and optionally one String
metric ``algorithm`` naming ``DEFLATE`` (the default when absent) or ``GZIP``.

The body is untrusted, so decompression stops at ``max_size`` output bytes: a
small zip bomb costs at most that much memory; the inner payload is held to the
other per-message limits (metrics, nesting: :mod:`uns.sparkplug.limits`) too.  Java Tahu's DEFLATE is the zlib
format (``java.util.zip.Deflater``); raw deflate streams are accepted too, and
the stream's own header decides between zlib, gzip and raw, because senders
have been seen to mislabel it.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib

from uns.errors import SparkplugDecodeError, SparkplugEncodeError
from uns.sparkplug.codec import decode_payload, decode_payload_lenient, decode_payload_steps, encode_payload
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.limits import DEFAULT_LIMITS, MessageLimits
from uns.sparkplug.payload import Metric, Payload
from uns.sparkplug.steps import Steps

__all__ = [
    "ALGORITHMS",
    "COMPRESSED_UUID",
    "DEFAULT_MAX_SIZE",
    "compress_payload",
    "is_compressed",
    "unwrap_compressed",
    "unwrap_compressed_lenient",
    "unwrap_compressed_steps",
]

COMPRESSED_UUID = "SPBV1.0_COMPRESSED"
ALGORITHMS = frozenset({"DEFLATE", "GZIP"})
DEFAULT_MAX_SIZE = 16 * 1024 * 1024

_GZIP_MAGIC = b"\x1f\x8b"


def is_compressed(p: Payload) -> bool:
    """True when ``p`` is a Tahu compression envelope."""
    return p.uuid == COMPRESSED_UUID


def _algorithm(p: Payload) -> str:
    for metric in p.metrics:
        if metric.name == "algorithm":
            if not isinstance(metric.value, str):
                raise SparkplugDecodeError(f"compression 'algorithm' is not a string: {metric.value!r}")
            name = metric.value.upper()
            if name not in ALGORITHMS:
                raise SparkplugDecodeError(f"unknown compression algorithm {metric.value!r}")
            return name
    return "DEFLATE"


def _window_bits(body: bytes) -> int:
    """zlib ``wbits`` for the stream format the body's header shows."""
    if body.startswith(_GZIP_MAGIC):
        return 16 + zlib.MAX_WBITS
    if len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS  # raw deflate, no header


def _inflate(body: bytes, max_size: int) -> bytes:
    inflater = zlib.decompressobj(_window_bits(body))
    try:
        out = inflater.decompress(body, max_size + 1)
    except zlib.error as exc:
        raise SparkplugDecodeError(f"compressed body is corrupt: {exc}") from exc
    if len(out) > max_size or inflater.unconsumed_tail:
        raise SparkplugDecodeError(f"compressed body inflates beyond {max_size} bytes")
    if not inflater.eof:
        raise SparkplugDecodeError("compressed body is truncated")
    if inflater.unused_data:
        raise SparkplugDecodeError(f"{len(inflater.unused_data)} bytes of junk after the compressed body")
    return out


def unwrap_compressed(
    p: Payload, max_size: int = DEFAULT_MAX_SIZE, limits: MessageLimits = DEFAULT_LIMITS
) -> Payload:
    """The inner payload of a compression envelope; ``p`` itself when it is not one.

    Every failure (unknown algorithm, corrupt or oversized body, undecodable
    inner payload) raises :class:`SparkplugDecodeError`.  An inner payload that
    is itself an envelope is returned as is, not unwrapped again.
    """
    if not is_compressed(p):
        return p
    return decode_payload(_inner_bytes(p, max_size), _inner(limits, max_size))


def unwrap_compressed_lenient(
    p: Payload, max_size: int = DEFAULT_MAX_SIZE, limits: MessageLimits = DEFAULT_LIMITS
) -> tuple[Payload, list[tuple[int, str]]]:
    """As :func:`unwrap_compressed`, but the inner payload is decoded with
    :func:`decode_payload_lenient`: ``(payload, [(metric index, reason), ...])``.
    """
    if not is_compressed(p):
        return p, []
    return decode_payload_lenient(_inner_bytes(p, max_size), _inner(limits, max_size))


def unwrap_compressed_steps(
    p: Payload, max_size: int = DEFAULT_MAX_SIZE, limits: MessageLimits = DEFAULT_LIMITS
) -> Steps[tuple[Payload, list[tuple[int, str]]]]:
    """:func:`unwrap_compressed_lenient` in slices (:mod:`uns.sparkplug.steps`)."""
    if not is_compressed(p):
        return p, []
    return (yield from decode_payload_steps(_inner_bytes(p, max_size), _inner(limits, max_size)))


def _inner(limits: MessageLimits, max_size: int) -> MessageLimits:
    """The limits of an envelope's inner payload: its size is bound by ``max_size``."""
    return dataclasses.replace(limits, max_payload_bytes=max_size)


def _inner_bytes(p: Payload, max_size: int) -> bytes:
    _algorithm(p)  # validates it; the stream header tells the format apart
    if p.body is None:
        raise SparkplugDecodeError("compressed payload has no body")
    return _inflate(p.body, max_size)


def compress_payload(p: Payload, algorithm: str = "DEFLATE") -> Payload:
    """Wrap ``p`` in a compression envelope (for simulators and tests)."""
    if algorithm not in ALGORITHMS:
        raise SparkplugEncodeError(f"unknown compression algorithm {algorithm!r}")
    inner = encode_payload(p)
    body = gzip.compress(inner, mtime=0) if algorithm == "GZIP" else zlib.compress(inner)
    marker = Metric(name="algorithm", datatype=DataType.String, value=algorithm)
    return Payload(timestamp=p.timestamp, metrics=[marker], uuid=COMPRESSED_UUID, body=body)
