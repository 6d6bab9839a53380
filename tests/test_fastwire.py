"""The MQTT 3.1.1 reader's C run of PUBLISH packets against the Python loop (the reference).

Random streams of PUBLISH (QoS 0, 1, 2; short and long headers; topics that are not
UTF-8; malformed ones) and other packets, cut into random socket reads: the reader with
the C run must produce the same messages, acknowledgements, other packets, counts and
errors as the reader without it.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.mqtt.wire import readers
from uns.mqtt.wire.packets import MqttProtocolError
from uns.mqtt.wire.readers import PacketReader

pytestmark = pytest.mark.skipif(readers.FAST_PUBLISHES is None, reason="uns.mqtt.wire._fastwire not built")


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["publish"] * 6 + ["puback", "suback", "pingresp", "pubrel", "bad", "raw"]))
    if kind == "publish":
        qos = draw(st.sampled_from([0, 0, 1, 1, 2, 3]))
        topic = draw(
            st.sampled_from([b"spBv1.0/G/DDATA/N/D", b"a/b"])
            | st.text(max_size=20).map(str.encode)
            | st.binary(max_size=8)  # not always UTF-8
        )
        payload = draw(st.binary(max_size=40) | st.binary(min_size=120, max_size=300))
        body = len(topic).to_bytes(2, "big") + topic
        if qos:
            body += draw(st.integers(0, 65535)).to_bytes(2, "big")
        body += payload
        if draw(st.integers(0, 20)) == 0:  # a topic length beyond the packet
            body = (len(topic) + 50).to_bytes(2, "big") + body[2:]
        first = 0x30 | qos << 1 | draw(st.integers(0, 1)) | (draw(st.integers(0, 1)) << 3)
        return bytes([first]) + _length(len(body)) + body
    if kind == "puback":
        return b"\x40\x02" + draw(st.binary(min_size=2, max_size=2))
    if kind == "suback":
        return b"\x90\x03\x00\x01\x00"
    if kind == "pingresp":
        return b"\xd0\x00"
    if kind == "pubrel":
        return b"\x62\x02" + draw(st.binary(min_size=2, max_size=2))
    if kind == "bad":
        return draw(st.sampled_from([b"\x30\x01\x00", b"\x30\x00", b"\xf0\x00", b"\x40\x03\x00\x00\x00"]))
    return draw(st.binary(max_size=6))


def _run(stream: bytes, cuts: list[int], fast: bool) -> object:
    reader = PacketReader()
    if not fast:
        reader._fast = None
    controls: list[object] = []
    error = None
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    try:
        for a, b in pairwise(bounds):
            controls += reader.feed(stream[a:b])
    except MqttProtocolError as exc:
        error = str(exc)
    return reader.messages, bytes(reader.replies), controls, reader.bad_topics, reader.buffered, error


@settings(max_examples=400, deadline=None)
@given(st.lists(packets(), max_size=12), st.lists(st.integers(0, 10_000), max_size=6))
def test_the_c_run_reads_streams_as_the_python_loop(chunks: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(chunks)
    assert _run(stream, cuts, fast=True) == _run(stream, cuts, fast=False)


def test_a_topic_is_decoded_once_per_reader() -> None:
    packet = b"\x30\x0a\x00\x03a/b" + b"hello"
    reader = PacketReader()
    reader.feed(packet * 3)
    topics = [m[0] for m in reader.messages]
    assert topics == ["a/b"] * 3
    assert topics[0] is topics[1] is topics[2]


def test_uns_native_0_turns_the_c_run_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNS_NATIVE", "0")
    assert readers._fast_publishes() is None
    monkeypatch.setenv("UNS_NATIVE", "1")
    assert readers._fast_publishes() is readers.FAST_PUBLISHES
