"""Tahu compression envelope: wrap/unwrap, format sniffing, bombs and corrupt bodies."""

from __future__ import annotations

import contextlib
import gzip
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import payloads, same
from uns.errors import SparkplugDecodeError, SparkplugEncodeError
from uns.sparkplug import (
    DataType,
    Metric,
    Payload,
    compress_payload,
    decode_payload,
    encode_payload,
    is_compressed,
    unwrap_compressed,
)
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.compression import COMPRESSED_UUID, unwrap_compressed_lenient
from uns.sparkplug.payload import DataSet

INNER = Payload(
    timestamp=1700000000000,
    seq=4,
    metrics=[Metric("Temp", alias=1, timestamp=1700000000000, datatype=DataType.Double, value=21.5)],
)


def envelope(body: bytes | None, algorithm: str | None = None) -> Payload:
    metrics = [] if algorithm is None else [Metric("algorithm", datatype=DataType.String, value=algorithm)]
    return Payload(timestamp=1, metrics=metrics, uuid=COMPRESSED_UUID, body=body)


@pytest.mark.parametrize("algorithm", ["DEFLATE", "GZIP"])
def test_compress_then_unwrap_through_the_wire(algorithm: str) -> None:
    wrapped = compress_payload(INNER, algorithm)
    assert is_compressed(wrapped)
    assert wrapped.seq is None  # the envelope has no seq
    assert wrapped.metrics[0] == Metric("algorithm", datatype=DataType.String, value=algorithm)
    received = decode_payload(encode_payload(wrapped))
    assert unwrap_compressed(received) == INNER


@pytest.mark.parametrize(
    ("body", "algorithm"),
    [
        (zlib.compress(encode_payload(INNER)), None),  # absent algorithm means DEFLATE (zlib, as Java Tahu)
        (zlib.compress(encode_payload(INNER)), "deflate"),
        (gzip.compress(encode_payload(INNER)), "GZIP"),
        (gzip.compress(encode_payload(INNER)), "DEFLATE"),  # mislabelled: the stream header decides
        (zlib.compress(encode_payload(INNER))[2:-4], "DEFLATE"),  # raw deflate, no zlib header
    ],
)
def test_stream_formats_accepted(body: bytes, algorithm: str | None) -> None:
    assert unwrap_compressed(envelope(body, algorithm)) == INNER


def test_a_plain_payload_is_returned_as_is() -> None:
    assert not is_compressed(INNER)
    assert unwrap_compressed(INNER) is INNER


def test_decompression_bomb_is_stopped_at_max_size() -> None:
    bomb = zlib.compress(b"\x00" * (64 * 1024 * 1024), 9)  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 100_000
    with pytest.raises(SparkplugDecodeError, match="beyond 16777216 bytes"):
        unwrap_compressed(envelope(bomb))
    with pytest.raises(SparkplugDecodeError, match="beyond 100 bytes"):
        unwrap_compressed(envelope(zlib.compress(b"\x00" * 101)), max_size=100)
    inner = encode_payload(INNER)
    assert unwrap_compressed(envelope(zlib.compress(inner)), max_size=len(inner)) == INNER


@pytest.mark.parametrize(
    ("wrapped", "reason"),
    [
        (envelope(None), "no body"),
        (envelope(b"not compressed at all"), "corrupt"),
        (envelope(zlib.compress(encode_payload(INNER))[:-6]), "truncated"),
        (envelope(zlib.compress(encode_payload(INNER)) + b"junk"), "junk"),
        (envelope(zlib.compress(b"\xff\xff\xff")), "not a Sparkplug B protobuf"),
        (envelope(zlib.compress(b""), "LZ4"), "unknown compression algorithm"),
        (
            Payload(uuid=COMPRESSED_UUID, body=zlib.compress(b""), metrics=[Metric("algorithm", value=3)]),
            "not a string",
        ),
    ],
)
def test_failures_raise_decode_error(wrapped: Payload, reason: str) -> None:
    with pytest.raises(SparkplugDecodeError, match=reason):
        unwrap_compressed(wrapped)


def test_empty_inner_payload() -> None:
    assert unwrap_compressed(envelope(zlib.compress(b""))) == Payload()


def test_unknown_algorithm_is_refused_when_compressing() -> None:
    with pytest.raises(SparkplugEncodeError):
        compress_payload(INNER, "LZ4")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads(), st.sampled_from(["DEFLATE", "GZIP"]))
def test_round_trip(p: Payload, algorithm: str) -> None:
    wire = encode_payload(compress_payload(p, algorithm))
    assert same(unwrap_compressed(decode_payload(wire)), p)


@st.composite
def damaged_bodies(draw: st.DrawFn) -> bytes:
    """A valid DEFLATE or GZIP body with a few bytes overwritten, cut or appended."""
    inner = encode_payload(INNER)
    body = bytearray(draw(st.sampled_from([zlib.compress(inner), gzip.compress(inner)])))
    for _ in range(draw(st.integers(1, 3))):
        body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(body)))
    return bytes(body[:cut]) + draw(st.binary(max_size=4))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | damaged_bodies(), st.sampled_from([None, "DEFLATE", "GZIP"]))
def test_any_body_unwraps_or_raises_decode_error(body: bytes, algorithm: str | None) -> None:
    with contextlib.suppress(SparkplugDecodeError):
        assert isinstance(unwrap_compressed(envelope(body, algorithm), max_size=4096), Payload)


def test_lenient_unwrap_keeps_the_good_inner_metrics() -> None:
    bad = Metric("bad", datatype=DataType.DataSet, value=DataSet(["a"], [DataType.Int8], [[1]]))
    msg = pb.Payload.FromString(encode_payload(Payload(seq=2, metrics=[INNER.metrics[0], bad])))
    msg.metrics[1].dataset_value.types[0] = 99  # no such datatype
    inner = msg.SerializeToString()
    wrapped = envelope(zlib.compress(inner))
    with pytest.raises(SparkplugDecodeError, match="column type 99"):
        unwrap_compressed(wrapped)
    payload, rejected = unwrap_compressed_lenient(wrapped)
    assert payload.metrics == [INNER.metrics[0]]
    assert payload.seq == 2
    assert [index for index, _ in rejected] == [1]
    assert unwrap_compressed_lenient(INNER) == (INNER, [])
    with pytest.raises(SparkplugDecodeError, match="corrupt"):
        unwrap_compressed_lenient(envelope(b"not compressed at all"))
