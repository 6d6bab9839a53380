"""uns.mqtt.wire, the one MQTT codec: every encoder against its parser, the stream readers
against any chunking, and the spec's own examples (pure: no sockets)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.errors import BrokerError
from uns.mqtt import wire
from uns.mqtt.wire import (
    Connect,
    FrameReader,
    Message,
    MqttProtocolError,
    PacketReader,
    Will,
    decode_remaining_length,
    encode_ack,
    encode_connack,
    encode_connect,
    encode_publish,
    encode_remaining_length,
    encode_suback,
    encode_subscribe,
    encode_unsubscribe,
    fixed_flags_ok,
    parse_ack,
    parse_connack,
    parse_connect,
    parse_publish,
    parse_suback,
    parse_subscribe,
    parse_unsubscribe,
)

SUBACK_QOS1 = b"\x90\x03\x00\x07\x01"
PINGRESP = wire.PINGRESP_PACKET


# ====================================================================== remaining length
# the table in MQTT 3.1.1 section 2.2.3
SPEC_LENGTHS = [
    (0, "00"),
    (127, "7f"),
    (128, "8001"),
    (16_383, "ff7f"),
    (16_384, "808001"),
    (2_097_151, "ffff7f"),
    (2_097_152, "80808001"),
    (268_435_455, "ffffff7f"),
]


@pytest.mark.parametrize(("value", "hex_bytes"), SPEC_LENGTHS)
def test_remaining_length_matches_the_spec_table(value: int, hex_bytes: str) -> None:
    assert encode_remaining_length(value).hex() == hex_bytes
    assert decode_remaining_length(bytes.fromhex(hex_bytes) + b"\xaa") == (value, len(hex_bytes) // 2)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 268_435_455), st.binary(max_size=3))
def test_remaining_length_round_trips(value: int, tail: bytes) -> None:
    encoded = encode_remaining_length(value)
    assert decode_remaining_length(encoded + tail) == (value, len(encoded))


def test_remaining_length_limits() -> None:
    with pytest.raises(ValueError):
        encode_remaining_length(268_435_456)
    with pytest.raises(MqttProtocolError):
        decode_remaining_length(b"\x80\x80\x80\x80\x01")
    with pytest.raises(MqttProtocolError):
        decode_remaining_length(b"\x80\x80")


# ====================================================================== the client's PacketReader
def _chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        yield data[a:b]


def _feed_all(reader: PacketReader, chunks: Iterator[bytes] | list[bytes]) -> list[tuple[int, int, bytes]]:
    controls = []
    for chunk in chunks:
        controls.extend(reader.feed(chunk))
    return controls


# MQTT topics are UTF-8 without NUL: no lone surrogates (they have no UTF-8 form)
topics = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=30
)
published = st.tuples(topics, st.binary(max_size=300), st.integers(0, 2), st.booleans())


def _stream(messages: list[Message]) -> tuple[bytes, bytes]:
    """The packets for ``messages`` with control packets between them, and the replies owed."""
    out, replies = [], b""
    for i, (topic, payload, qos, retain) in enumerate(messages):
        packet_id = i + 1
        out.append(encode_publish(topic, payload, qos, retain, packet_id))
        if qos:
            replies += bytes((0x40 if qos == 1 else 0x50, 2)) + packet_id.to_bytes(2, "big")
        if i % 3 == 0:
            out.append(PINGRESP)
    out.append(SUBACK_QOS1)
    return b"".join(out), replies


@settings(max_examples=150, deadline=None)
@given(st.lists(published, max_size=25), st.lists(st.integers(0, 10_000), max_size=30))
def test_any_chunking_gives_the_encoded_messages(messages: list[Message], cuts: list[int]) -> None:
    stream, replies = _stream(messages)
    reader = PacketReader()
    controls = _feed_all(reader, _chunks(stream, cuts))
    assert reader.messages == messages
    assert bytes(reader.replies) == replies
    assert controls[-1] == (9, 0, SUBACK_QOS1[2:])
    assert [c for c in controls if c[0] == 13] == [(13, 0, b"")] * ((len(messages) + 2) // 3)
    assert reader.buffered == 0


@settings(max_examples=20, deadline=None)
@given(st.lists(published, min_size=1, max_size=8))
def test_byte_by_byte_gives_the_same_messages(messages: list[Message]) -> None:
    stream, replies = _stream(messages)
    reader = PacketReader()
    _feed_all(reader, [stream[i : i + 1] for i in range(len(stream))])
    assert reader.messages == messages
    assert bytes(reader.replies) == replies


@pytest.mark.parametrize("size", [125, 126, 16_381, 16_382, 2_097_149, 2_097_150])
def test_remaining_length_boundaries(size: int) -> None:
    # topic "t" takes 3 bytes: remaining lengths 128, 16384 and 2097152 need 2, 3 and 4 length bytes
    packet = encode_publish("t", bytes(size), 0)
    assert len(encode_remaining_length(size + 3)) == len(packet) - size - 4
    reader = PacketReader()
    _feed_all(reader, _chunks(packet, [1, 2, 3, size // 2]))
    assert reader.messages == [("t", bytes(size), 0, False)]


def test_large_packet_in_many_chunks_is_joined_once() -> None:
    payload = random.Random(7).randbytes(1 << 20)
    packet = encode_publish("big", payload, 1, True, 42) + PINGRESP
    reader = PacketReader()
    chunks = [packet[i : i + 65536] for i in range(0, len(packet), 65536)]
    for chunk in chunks[:-1]:
        reader.feed(chunk)
        assert not reader.messages
    assert reader.feed(chunks[-1]) == [(13, 0, b"")]
    assert reader.messages == [("big", payload, 1, True)]
    assert bytes(reader.replies) == b"\x40\x02\x00\x2a"


def test_qos2_is_delivered_once_until_released() -> None:
    reader = PacketReader()
    packet = encode_publish("q2", b"x", 2, False, 5)
    dup = encode_publish("q2", b"x", 2, False, 5, dup=True)
    reader.feed(packet + dup)  # a resend before PUBREL is the same message
    assert reader.messages == [("q2", b"x", 2, False)]
    assert reader.feed(b"\x62\x02\x00\x05") == []  # PUBREL: answered with PUBCOMP, not returned
    assert bytes(reader.replies) == b"\x50\x02\x00\x05" * 2 + b"\x70\x02\x00\x05"
    reader.feed(packet)  # the id is free again: a new message
    assert len(reader.messages) == 2


def test_bad_utf8_topic_is_replaced_and_counted() -> None:
    reader = PacketReader()
    reader.feed(b"\x30\x05\x00\x02\xff\xfeP")
    assert reader.messages == [("\ufffd\ufffd", b"P", 0, False)]
    assert reader.bad_topics == 1


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "remaining length longer than 4 bytes"),
        (b"\x30\x04\x00\x09abcd", "topic longer than the packet"),
        (b"\x32\x03\x00\x01t", "topic longer than the packet"),  # QoS 1 without a packet id
        (b"\x30\x01\x00", "PUBLISH without a topic"),
        (b"\x36\x05\x00\x01t\x00\x01", "QoS 3"),
        (b"\x10\x00", "unexpected packet type 1"),
        (b"\x40\x03\x00\x01\x00", "packet type 4 of 3 bytes"),
    ],
)
def test_malformed_packets_are_protocol_errors(raw: bytes, why: str) -> None:
    reader = PacketReader()
    good = encode_publish("ok", b"1")
    with pytest.raises(MqttProtocolError, match=f"^protocol error: .*{why}"):
        reader.feed(good + raw)
    assert reader.messages == [("ok", b"1", 0, False)]  # what came before is kept


# ====================================================================== server side: bodies a broker reads
def _body(packet: bytes) -> tuple[int, int, bytes]:
    """(type, flags, body) of one whole encoded packet."""
    length, used = decode_remaining_length(packet[1:])
    assert len(packet) == 1 + used + length
    return packet[0] >> 4, packet[0] & 0x0F, packet[1 + used :]


texts = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=20)
topic_names = topics.filter(lambda t: "+" not in t and "#" not in t)
wills = st.builds(Will, topic_names, st.binary(max_size=50), st.integers(0, 2), st.booleans())
packet_ids = st.integers(1, 65535)


@settings(max_examples=300, deadline=None)
@given(
    identifier=texts,
    keepalive=st.integers(0, 65535),
    clean=st.booleans(),
    username=st.none() | texts,
    password=st.none() | texts,
    will=st.none() | wills,
)
def test_connect_round_trips(
    identifier: str,
    keepalive: int,
    clean: bool,
    username: str | None,
    password: str | None,
    will: Will | None,
) -> None:
    packet = encode_connect(
        identifier, keepalive=keepalive, clean_session=clean, username=username, password=password, will=will
    )
    kind, flags, body = _body(packet)
    assert (kind, flags) == (1, 0)
    # a password alone travels with an empty user name: 3.1.1 allows no password without one
    expected_user = "" if username is None and password is not None else username
    assert parse_connect(body) == Connect(
        identifier,
        keepalive,
        clean,
        will,
        expected_user,
        None if password is None else password.encode(),
    )


@settings(max_examples=300, deadline=None)
@given(topic_names, st.binary(max_size=300), st.integers(0, 2), st.booleans(), packet_ids)
def test_publish_round_trips_on_the_server_side(
    topic: str, payload: bytes, qos: int, retain: bool, packet_id: int
) -> None:
    kind, flags, body = _body(encode_publish(topic, payload, qos, retain, packet_id))
    assert kind == 3 and fixed_flags_ok(kind, flags)
    assert (flags >> 1 & 3, flags & 1 == 1) == (qos, retain)
    assert parse_publish(flags, body) == (topic, packet_id if qos else 0, payload)


@settings(max_examples=200, deadline=None)
@given(packet_ids, topics, st.integers(0, 2))
def test_subscribe_and_unsubscribe_round_trip(packet_id: int, topic_filter: str, qos: int) -> None:
    kind, flags, body = _body(encode_subscribe(packet_id, topic_filter, qos))
    assert (kind, flags) == (8, 2)
    assert parse_subscribe(body) == (packet_id, [(topic_filter, qos)])
    kind, flags, body = _body(encode_unsubscribe(packet_id, topic_filter))
    assert (kind, flags) == (10, 2)
    assert parse_unsubscribe(body) == (packet_id, [topic_filter])


def test_several_filters_in_one_subscribe() -> None:
    body = b"\x00\x07" + b"\x00\x01a\x01" + b"\x00\x03b/#\x02"
    assert parse_subscribe(body) == (7, [("a", 1), ("b/#", 2)])
    assert parse_unsubscribe(b"\x00\x07\x00\x01a\x00\x03b/#") == (7, ["a", "b/#"])


# ====================================================================== server encoders, read by the client
@settings(max_examples=200, deadline=None)
@given(
    code=st.integers(0, 5),
    present=st.booleans(),
    packet_id=packet_ids,
    granted=st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=8),
    ack=st.sampled_from([wire.PUBACK, wire.PUBREC, wire.PUBCOMP, wire.UNSUBACK]),
    cuts=st.lists(st.integers(0, 100), max_size=5),
)
def test_what_a_broker_sends_is_what_the_client_reads(
    code: int, present: bool, packet_id: int, granted: list[int], ack: int, cuts: list[int]
) -> None:
    stream = (
        encode_connack(code, session_present=present)
        + encode_suback(packet_id, granted)
        + encode_ack(ack, packet_id)
        + wire.PINGRESP_PACKET
    )
    controls = _feed_all(PacketReader(), _chunks(stream, cuts))
    assert [kind for kind, _, _ in controls] == [wire.CONNACK, wire.SUBACK, ack, 13]
    assert parse_connack(controls[0][2]) == (present, code)
    assert parse_suback(controls[1][2]) == (packet_id, granted)
    assert parse_ack(controls[2][2]) == packet_id


def test_pubrel_carries_its_fixed_flags() -> None:
    assert encode_ack(wire.PUBREL, 5) == b"\x62\x02\x00\x05"  # section 3.6.1
    assert encode_ack(wire.PUBCOMP, 5) == b"\x70\x02\x00\x05"
    assert fixed_flags_ok(wire.PUBREL, 2) and not fixed_flags_ok(wire.PUBREL, 0)
    assert fixed_flags_ok(wire.PUBACK, 0) and not fixed_flags_ok(wire.PUBACK, 2)
    with pytest.raises(ValueError):
        encode_ack(wire.CONNACK, 1)


# ====================================================================== the broker's FrameReader
@settings(max_examples=150, deadline=None)
@given(st.lists(published, max_size=15), st.lists(st.integers(0, 10_000), max_size=30))
def test_frame_reader_returns_every_packet_in_order(messages: list[Message], cuts: list[int]) -> None:
    packets = []
    for i, (topic, payload, qos, retain) in enumerate(messages):
        packets += [encode_subscribe(i + 1, topic, qos), encode_publish(topic, payload, qos, retain, i + 1)]
    packets.append(b"\xe0\x00")  # DISCONNECT
    reader = FrameReader()
    got = [p for chunk in _chunks(b"".join(packets), cuts) for p in reader.feed(chunk)]
    assert got == [_body(p) for p in packets]
    assert reader.buffered == 0


def test_frame_reader_refuses_an_oversized_packet_from_its_header() -> None:
    reader = FrameReader(max_size=1024)
    assert reader.feed(b"\x30") == []
    with pytest.raises(MqttProtocolError, match="2000 bytes exceeds the 1024 byte limit"):
        reader.feed(encode_remaining_length(2000))  # the body never needs to arrive
    assert FrameReader(max_size=1024).feed(encode_publish("t", bytes(1021))) != []


# ====================================================================== what a broker must refuse
def _connect_body(flags: int, rest: bytes, protocol: bytes = b"\x00\x04MQTT\x04") -> bytes:
    return protocol + bytes((flags,)) + b"\x00\x3c" + rest


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_connect_body(0x03, b"\x00\x01x"), "reserved CONNECT flag"),
        (_connect_body(0x42, b"\x00\x01x\x00\x01p"), "password without a user name"),
        (_connect_body(0x0A, b"\x00\x01x"), "Will QoS or retain without a Will"),
        (_connect_body(0x1E, b"\x00\x01x\x00\x01t\x00\x00"), "invalid Will"),  # Will QoS 3
        (_connect_body(0x06, b"\x00\x01x\x00\x03a/#\x00\x00"), "invalid Will"),  # wildcard topic
        (_connect_body(0x02, b"\x00\x02\xff\xfe"), "not UTF-8"),
        (_connect_body(0x02, b"\x00\x02a\x00"), "U\\+0000"),
        (_connect_body(0x02, b"\x00\x05ab"), "shorter than its fields"),
        (_connect_body(0x02, b"\x00\x01xjunk"), "longer than its fields"),
    ],
)
def test_bad_connect_bodies(body: bytes, why: str) -> None:
    with pytest.raises(MqttProtocolError, match=why) as err:
        parse_connect(body)
    assert err.value.connack is None
    assert isinstance(err.value, BrokerError)  # one error root, also for the codec


@pytest.mark.parametrize("protocol", [b"\x00\x04MQTT\x05", b"\x00\x04MQTT\x03", b"\x00\x06MQIsdp\x04"])
def test_unknown_protocol_levels_are_answered_with_connack_1(protocol: bytes) -> None:
    with pytest.raises(MqttProtocolError) as err:
        parse_connect(_connect_body(0x02, b"\x00\x01x", protocol))
    assert err.value.connack == 1
    assert parse_connect(_connect_body(0x02, b"\x00\x01x", b"\x00\x06MQIsdp\x03")).level == 3


@pytest.mark.parametrize(
    ("call", "why"),
    [
        (lambda: parse_publish(0x06, b"\x00\x01t\x00\x01"), "QoS 3"),
        (lambda: parse_publish(0x00, b"\x00\x03a/+"), "not a topic name"),
        (lambda: parse_publish(0x00, b"\x00\x00x"), "not a topic name"),
        (lambda: parse_publish(0x02, b"\x00\x01t\x00\x00x"), "packet id 0"),
        (lambda: parse_publish(0x02, b"\x00\x01t\x00"), "shorter than its fields"),
        (lambda: parse_subscribe(b"\x00\x01"), "without topic filters"),
        (lambda: parse_subscribe(b"\x00\x01\x00\x01a\x03"), "QoS above 2"),
        (lambda: parse_subscribe(b"\x00\x00\x00\x01a\x00"), "packet id 0"),
        (lambda: parse_unsubscribe(b"\x00\x01"), "without topic filters"),
        (lambda: parse_ack(b"\x00"), "of 1 bytes"),
        (lambda: parse_connack(b"\x00\x00\x00"), "of 3 bytes"),
        (lambda: parse_suback(b"\x00\x01"), "without a return code"),
        (lambda: decode_remaining_length(b""), "truncated"),
    ],
)
def test_bad_bodies(call: object, why: str) -> None:
    assert callable(call)
    with pytest.raises(MqttProtocolError, match=why):
        call()
