"""MQTT 5.0 in the client: the codec (no I/O), then FastClient against real mosquitto 2 processes.

What MQTT 5 changes for us (docs/sparkplug.md "MQTT 5"): Clean Start and a
session expiry instead of the clean-session flag, the broker's limits (Receive
Maximum both ways, Maximum QoS, retain), reason codes in every answer, and
properties on a PUBLISH -- user properties among them -- that are skipped safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.aio_helpers import serving
from uns.errors import BrokerError, BrokerRefused
from uns.mqtt.client import FastClient
from uns.mqtt.mosquitto import Mosquitto, free_port, password_file
from uns.mqtt.settings import BrokerSettings
from uns.mqtt.wire import (
    FrameReader,
    HeldAckReader,
    MqttProtocolError,
    PacketReader,
    Will,
    encode_connect5,
    encode_publish5,
    encode_remaining_length,
    parse_ack5,
    parse_connack5,
    parse_connect5,
    parse_disconnect5,
    parse_suback5,
)
from uns.mqtt.wire.v5 import (
    MESSAGE_EXPIRY,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    SESSION_EXPIRY,
    TOPIC_ALIAS,
    USER_PROPERTY,
    encode_properties,
)


def _publish_with(topic: str, props: bytes, payload: bytes, *, qos: int = 0, packet_id: int = 0) -> bytes:
    raw = topic.encode()
    body = (
        len(raw).to_bytes(2, "big") + raw + (packet_id.to_bytes(2, "big") if qos else b"") + props + payload
    )
    return bytes((0x30 | qos << 1,)) + encode_remaining_length(len(body)) + body


# ---------------------------------------------------------------- the codec
def test_connect_carries_clean_start_session_expiry_receive_maximum_and_the_will() -> None:
    will = Will("spBv1.0/STATE/h", b'{"online":false,"timestamp":5}', 1, True)
    packet = encode_connect5(
        "uns-h", keepalive=30, clean_session=True, receive_maximum=100, username="u", password="p", will=will
    )
    connect = parse_connect5(packet[2:])
    assert (connect.client_id, connect.keepalive, connect.clean_start) == ("uns-h", 30, True)
    assert connect.session_expiry == 0 and SESSION_EXPIRY not in connect.properties  # absent means 0
    assert connect.receive_maximum == 100
    assert connect.will == will and (connect.username, connect.password) == ("u", b"p")
    packet = encode_connect5("c", keepalive=0, clean_session=False, session_expiry=3600)
    persistent = parse_connect5(packet[2:])
    assert (persistent.clean_start, persistent.session_expiry) == (False, 3600)


def test_a_publish_with_user_properties_is_read_and_the_properties_skipped() -> None:
    props = encode_properties(
        [(MESSAGE_EXPIRY, 60), (USER_PROPERTY, ("k", "v")), (USER_PROPERTY, ("a", "b"))]
    )
    stream = _publish_with("a/b", props, b"payload") + encode_publish5("c", b"x", 1, True, 7)
    stream += _publish_with("d", props, b"q1", qos=1, packet_id=9)
    reader = PacketReader(v5=True)
    for i in range(len(stream)):  # byte by byte as well as at once: the same messages
        one = PacketReader(v5=True)
        assert one.feed(stream[:i]) == [] and one.feed(stream[i:]) == []
        assert one.messages == [("a/b", b"payload", 0, False), ("c", b"x", 1, True), ("d", b"q1", 1, False)]
    reader.feed(stream)
    assert bytes(reader.replies) == b"\x40\x02\x00\x07\x40\x02\x00\x09"  # PUBACKs name the packet ids
    held = HeldAckReader(v5=True)
    held.feed(stream)
    assert held.messages == reader.messages and held.packet_ids == [0, 7, 9]


@pytest.mark.parametrize(
    ("props", "error"),
    [
        (encode_properties([(TOPIC_ALIAS, 3)]), "topic alias, which we did not allow"),
        (encode_properties([(SESSION_EXPIRY, 3)]), "property 0x11, which it may not carry"),
        (b"\x05\x02\x00\x00", "properties longer than the packet"),
        (b"\x03\x26\x00\x05", "property"),  # a user property cut short inside its block
        (b"\x02\x02\x00", "truncated"),
        (b"\xff\xff\xff\xff\x01", "variable byte integer longer than 4 bytes"),
    ],
)
def test_a_bad_property_block_is_a_protocol_error(props: bytes, error: str) -> None:
    with pytest.raises(MqttProtocolError, match=error):
        PacketReader(v5=True).feed(_publish_with("t", props, b""))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.data())
def test_garbage_raises_only_protocol_errors(garbage: bytes, data: st.DataObject) -> None:
    props = encode_properties([(USER_PROPERTY, ("key", "value")), (MESSAGE_EXPIRY, 1)])
    good = _publish_with("spBv1.0/G/DDATA/n/d", props, b"payload", qos=1, packet_id=3)
    spot = data.draw(st.integers(0, len(good) - 1))
    mutated = good[:spot] + garbage + good[spot + 1 :]
    for reader in (PacketReader(v5=True), HeldAckReader(v5=True)):
        with contextlib.suppress(MqttProtocolError):
            reader.feed(mutated)


def test_answers_with_reason_codes_and_reason_strings() -> None:
    reason = encode_properties([(REASON_STRING, "acl says no")])
    assert parse_ack5(b"\x00\x05") == (5, 0, None)
    assert parse_ack5(b"\x00\x05\x87" + reason) == (5, 0x87, "acl says no")
    assert parse_suback5(b"\x00\x02" + reason + b"\x87") == (2, [0x87], "acl says no")
    assert parse_disconnect5(b"\x8e\x00") == (0x8E, None, None)
    ack = parse_connack5(b"\x00\x00" + encode_properties([(RECEIVE_MAXIMUM, 20)]))
    assert (ack.session_present, ack.code, ack.receive_maximum, ack.maximum_qos) == (False, 0, 20, 2)
    with pytest.raises(MqttProtocolError):
        parse_connack5(b"\x00\x00" + encode_properties([(RECEIVE_MAXIMUM, 0)]))


# ---------------------------------------------------------------- against mosquitto
def _v5(broker: Mosquitto, **kw: object) -> BrokerSettings:
    return BrokerSettings(port=broker.port, protocol=5, keepalive=30, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _client(broker: Mosquitto, identifier: str, **kw: object) -> AsyncIterator[FastClient]:
    settings_kw = {k: kw.pop(k) for k in ("username", "password") if k in kw}
    async with FastClient(_v5(broker, **settings_kw), identifier=identifier, **kw) as client:  # type: ignore[arg-type]
        yield client


async def _take(client: FastClient, count: int, timeout: float = 10) -> list[tuple[str, bytes, int, bool]]:
    got: list[tuple[str, bytes, int, bool]] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            await client.wait_messages()
            got.extend(client.take())
    return got


@pytest.mark.integration
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_publish_and_receive_at_every_qos(broker: Mosquitto, ns: str, qos: int) -> None:
    async with _client(broker, f"{ns}-sub") as sub, _client(broker, f"{ns}-pub") as pub:
        assert await sub.subscribe(f"{ns}/#", qos=qos) == qos
        for i in range(20):
            await pub.publish(f"{ns}/t", str(i).encode(), qos=qos)
        got = await _take(sub, 20)
        assert [p for _, p, _, _ in got] == [str(i).encode() for i in range(20)]
        assert {q for _, _, q, _ in got} == {qos}


@pytest.mark.integration
async def test_user_properties_from_another_client_are_ignored_safely(broker: Mosquitto, ns: str) -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [("site", "pilot"), ("line", "1")]
    props.MessageExpiryInterval = 60
    props.ContentType = "application/octet-stream"
    async with _client(broker, f"{ns}-sub") as sub:
        await sub.subscribe(f"{ns}/#", qos=1)
        async with aiomqtt.Client(
            broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5, identifier=f"{ns}-paho"
        ) as paho:
            await paho.publish(f"{ns}/a", b"\x00payload", qos=1, properties=props)
            await paho.publish(f"{ns}/b", b"plain", qos=0)
        got = await _take(sub, 2)
    assert [(t, p) for t, p, _, _ in got] == [(f"{ns}/a", b"\x00payload"), (f"{ns}/b", b"plain")]


@pytest.mark.integration
async def test_a_persistent_session_expires_on_its_own_schedule(broker: Mosquitto, ns: str) -> None:
    """clean_session=False is Clean Start 0 with a session expiry: the broker keeps the
    subscription and queues QoS 1 messages while we are away; a clean session keeps nothing."""
    async with _client(broker, f"{ns}-p", clean_session=False, manual_ack=True) as first:
        assert not first.session_present
        await first.subscribe(f"{ns}/ctx", qos=1)
    async with _client(broker, f"{ns}-pub") as pub:
        await pub.publish(f"{ns}/ctx", b"while away", qos=1)
    async with _client(broker, f"{ns}-p", clean_session=False, manual_ack=True) as again:
        assert again.session_present
        held: list[tuple[str, bytes, int, bool, int]] = []
        async with asyncio.timeout(10):
            while not held:
                await again.wait_messages()
                held = again.take_held()
        assert held[0][:2] == (f"{ns}/ctx", b"while away")
        assert again.ack_all([h[4] for h in held])
    async with _client(broker, f"{ns}-p") as clean:  # Clean Start, expiry 0: the session ends
        assert not clean.session_present
    async with _client(broker, f"{ns}-p", clean_session=False) as after:
        assert not after.session_present


@pytest.mark.integration
async def test_receive_maximum_holds_the_broker_back_while_acknowledgements_wait(
    broker: Mosquitto, ns: str
) -> None:
    """A manual-ack connection asks for a Receive Maximum: the broker sends no more
    unacknowledged QoS 1 messages than that, without any read pause of ours."""
    async with (
        _client(broker, f"{ns}-held", manual_ack=True, receive_maximum=5) as held,
        _client(broker, f"{ns}-pub") as pub,
    ):
        await held.subscribe(f"{ns}/#", qos=1)
        for i in range(30):
            await pub.publish(f"{ns}/t", str(i).encode(), qos=1)
        first: list[tuple[str, bytes, int, bool, int]] = []
        async with asyncio.timeout(10):
            while len(first) < 5:
                await held.wait_messages()
                first.extend(held.take_held())
        await asyncio.sleep(0.5)
        assert held.pending == 0 and len(first) == 5  # the broker waits for our PUBACKs
        assert held.stats["pauses"] == 0
        # acknowledged, the rest follows (mosquitto 2.0.11 then sends all of it at once: the
        # window holds while we hold back, which is what a degraded lake needs)
        assert held.ack_all([m[4] for m in first])
        got = list(first)
        async with asyncio.timeout(15):
            while len(got) < 30:
                await held.wait_messages()
                more = held.take_held()
                assert held.ack_all([m[4] for m in more])
                got.extend(more)
        assert [m[1] for m in got] == [str(i).encode() for i in range(30)]


@pytest.fixture(scope="module")
def limited_broker() -> Iterator[Mosquitto]:
    """Mosquitto with a password file, an ACL, and a Receive Maximum of 2 towards clients."""
    with tempfile.TemporaryDirectory(prefix="uns-mqtt5-") as tmp:
        d = Path(tmp)
        password_file(d, "op", "s3cret")
        (d / "acl").write_text("user op\ntopic readwrite allowed/#\n")
        port = free_port()
        conf = (
            f"listener {port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {d / 'passwd'}\nacl_file {d / 'acl'}\n"
            "user root\n"  # read the test's private files when started as root
        )
        with Mosquitto(port=port, workdir=d, listener_conf=conf, extra_conf="max_inflight_messages 2\n") as b:
            yield b


@pytest.mark.integration
async def test_connack_reason_codes_map_to_the_error_tree(limited_broker: Mosquitto) -> None:
    client = FastClient(_v5(limited_broker, username="op", password="wrong"), identifier="bad")
    # mosquitto answers a wrong password with "not authorized", as in 3.1.1
    with pytest.raises(
        BrokerRefused, match=r"connection: (bad user name or password \(0x86\)|not authorized \(0x87\))$"
    ):
        await client.connect()
    await client.disconnect()


@pytest.mark.integration
async def test_the_brokers_receive_maximum_bounds_our_publishes_in_flight(limited_broker: Mosquitto) -> None:
    async with (
        _client(limited_broker, "op-pub", username="op", password="s3cret") as pub,
        _client(limited_broker, "op-sub2", username="op", password="s3cret") as sub,
    ):
        assert pub.limits.receive_maximum == 2
        await sub.subscribe("allowed/#", qos=1)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, pub._inflight.publishing)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(*(pub.publish("allowed/t", str(i).encode(), qos=1) for i in range(20)))
        finally:
            watcher.cancel()
        assert peak <= 2
        assert len(await _take(sub, 20)) == 20


@contextlib.asynccontextmanager
async def scripted(*answers: bytes) -> AsyncIterator[int]:
    """An MQTT 5 server that answers each packet it reads with the next of ``answers`` (what
    mosquitto 2.0.11 never sends: its ACLs filter deliveries instead of refusing a
    SUBSCRIBE, and it drops a taken-over session without a DISCONNECT); yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader()
        queue = list(answers)
        try:
            while queue and (data := await reader.read(4096)):
                for _kind, _flags, _body in frames.feed(data):
                    if queue:
                        writer.write(queue.pop(0))
                await writer.drain()
            await reader.read(4096)
        finally:
            writer.close()

    async with serving(handle) as port:
        yield port


CONNACK_OK = b"\x20\x03\x00\x00\x00"


def _reasoned(first: int, head: bytes, reason: str, tail: bytes = b"") -> bytes:
    body = head + encode_properties([(REASON_STRING, reason)]) + tail
    return bytes((first,)) + encode_remaining_length(len(body)) + body


async def test_suback_and_disconnect_reason_codes_reach_the_error_tree() -> None:
    refused = _reasoned(0x90, b"\x00\x01", "acl says no", b"\x87")  # SUBACK: not authorized
    async with scripted(CONNACK_OK, refused) as port:
        client = FastClient(BrokerSettings(port=port, protocol=5), identifier="s")
        await client.connect()
        try:
            with pytest.raises(BrokerRefused, match=r"'secret/#': not authorized \(0x87\): acl says no$"):
                await client.subscribe("secret/#", qos=1)
        finally:
            await client.disconnect()
    busy = _reasoned(0x90, b"\x00\x01", "later", b"\x97")  # quota exceeded: may heal
    async with (
        scripted(CONNACK_OK, busy) as port,
        FastClient(BrokerSettings(port=port, protocol=5), identifier="s") as client,
    ):
        with pytest.raises(BrokerError, match=r"quota exceeded \(0x97\)") as caught:
            await client.subscribe("t", qos=0)
        assert not isinstance(caught.value, BrokerRefused)
    taken = _reasoned(0xE0, b"\x8e", "another uns-h connected")  # DISCONNECT: session taken over
    async with scripted(CONNACK_OK, taken) as port:
        client = FastClient(BrokerSettings(port=port, protocol=5), identifier="s")
        await client.connect()
        client.publish_nowait("t", b"x")  # anything, for the server to answer with the DISCONNECT
        with pytest.raises(BrokerError, match=r"session taken over \(0x8E\): another uns-h connected"):
            async with asyncio.timeout(10):
                await client.wait_closed()
        await client.disconnect()


async def test_connack_refusals_in_mqtt5() -> None:
    for code, final in ((0x86, True), (0x87, True), (0x8A, True), (0x88, False), (0x89, False)):
        async with scripted(_reasoned(0x20, b"\x00" + bytes((code,)), "why")) as port:
            client = FastClient(BrokerSettings(port=port, protocol=5), identifier="c")
            with pytest.raises(BrokerError, match=r"why$") as caught:
                await client.connect()
            await client.disconnect()
            assert isinstance(caught.value, BrokerRefused) is final
