"""uns.mqtt.client.FastClient against a real mosquitto (its codec is tested in test_wire.py)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.test_tls import _make_pki
from uns.errors import BrokerError
from uns.mqtt.client import FastClient, Message, Will
from uns.mqtt.mosquitto import Mosquitto, free_port
from uns.mqtt.settings import BrokerSettings
from uns.mqtt.wire import HeldAckReader, PacketReader, encode_publish


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="low_water"):
        FastClient(BrokerSettings(), identifier="x", high_water=10, low_water=10)


def test_held_ack_reader_owes_no_puback_and_gives_each_message_its_packet_id() -> None:
    stream = (
        encode_publish("t/a", b"zero", 0, False, 0)
        + encode_publish("t/b", b"one", 1, True, 7)
        + encode_publish("t/c", b"two", 2, False, 9)
        + encode_publish("t/d", b"one again", 1, False, 300)
    )
    held = HeldAckReader()
    for i in range(0, len(stream), 5):  # in pieces, as a socket delivers it
        held.feed(stream[i : i + 5])
    plain = PacketReader()
    plain.feed(stream)
    assert held.messages == plain.messages  # the same messages ...
    assert held.packet_ids == [0, 7, 0, 300]  # ... each with the id to acknowledge it by
    assert bytes(held.replies) == b"\x50\x02\x00\x09"  # only QoS 2's PUBREC: QoS 1 waits for ack()
    assert bytes(plain.replies) == b"\x40\x02\x00\x07\x50\x02\x00\x09\x40\x02\x01\x2c"


# ====================================================================== against mosquitto
def _settings(broker: Mosquitto, **kw: object) -> BrokerSettings:
    return BrokerSettings(host=broker.host, port=broker.port, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _client(broker: Mosquitto, name: str, **kw: object) -> AsyncIterator[FastClient]:
    settings_kw = {k: kw.pop(k) for k in ("keepalive",) if k in kw}
    async with FastClient(_settings(broker, **settings_kw), identifier=name, **kw) as client:  # type: ignore[arg-type]
        yield client


async def _receive(client: FastClient, count: int, timeout: float = 20.0) -> list[Message]:
    got: list[Message] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            await client.wait_messages()
            got.extend(client.take())
    return got


async def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def _take_until_lost(client: FastClient) -> tuple[list[Message], BrokerError]:
    got: list[Message] = []
    async with asyncio.timeout(10):
        while True:
            try:
                await client.wait_messages()
            except BrokerError as exc:
                return got, exc
            got.extend(client.take(100))


@pytest.mark.integration
async def test_receives_in_order_and_counts(broker: Mosquitto, ns: str) -> None:
    async with _client(broker, f"{ns}-sub") as sub, _client(broker, f"{ns}-pub") as pub:
        assert await sub.subscribe(f"{ns}/#") == 0
        for i in range(2000):
            assert pub.publish_nowait(f"{ns}/m/{i % 7}", i.to_bytes(4, "big"))
        await pub.publish(f"{ns}/end", b"")
        got = await _receive(sub, 2001)
        assert [int.from_bytes(p, "big") for _, p, _, _ in got[:-1]] == list(range(2000))
        assert got[0] == (f"{ns}/m/0", b"\x00\x00\x00\x00", 0, False)
        assert sub.stats["messages_received"] == 2001 and sub.pending == 0
        assert pub.stats["publishes_sent"] == 2001
        await sub.unsubscribe(f"{ns}/#")
        pub.publish_nowait(f"{ns}/after", b"")
        await pub.publish(f"{ns}/after", b"", qos=1)  # after the PUBACK mosquitto has routed both
        await asyncio.sleep(0.1)
        assert sub.pending == 0


@pytest.mark.integration
@pytest.mark.parametrize("qos", [1, 2])
async def test_acknowledged_publish_and_receive(broker: Mosquitto, ns: str, qos: int) -> None:
    async with _client(broker, f"{ns}-sub") as sub, _client(broker, f"{ns}-pub") as pub:
        assert await sub.subscribe(f"{ns}/q", qos=qos) == qos
        for i in range(50):
            await pub.publish(f"{ns}/q", bytes([i]), qos=qos)  # waits for PUBACK / PUBCOMP
        assert pub.stats["inflight"] == 0
        got = await _receive(sub, 50)
        assert got == [(f"{ns}/q", bytes([i]), qos, False) for i in range(50)]
        # our acknowledgements reached mosquitto: nothing is resent, nothing else arrives
        await asyncio.sleep(0.3)
        assert sub.pending == 0


@pytest.mark.integration
@pytest.mark.parametrize("qos", [1, 2])
async def test_received_messages_are_acknowledged(broker: Mosquitto, ns: str, qos: int) -> None:
    # with a persistent session mosquitto would redeliver whatever we did not acknowledge
    async with _client(broker, f"{ns}-sub", clean_session=False) as sub:
        assert not sub.session_present  # a new identifier: nothing stored yet
        await sub.subscribe(f"{ns}/a", qos=qos)
        async with _client(broker, f"{ns}-pub") as pub:
            for i in range(20):
                await pub.publish(f"{ns}/a", bytes([i]), qos=qos)
        assert len(await _receive(sub, 20)) == 20
        await asyncio.sleep(0.1)  # let the last acknowledgements reach mosquitto
    async with _client(broker, f"{ns}-sub", clean_session=False) as sub:
        assert sub.session_present  # the CONNACK says the broker kept our subscription
        await asyncio.sleep(0.5)
        assert sub.pending == 0
    async with _client(broker, f"{ns}-sub", clean_session=True) as sub:
        assert not sub.session_present  # a clean session drops the stored one


@pytest.mark.integration
async def test_publish_nowait_with_qos1_is_acknowledged(broker: Mosquitto, ns: str) -> None:
    async with _client(broker, f"{ns}-pub") as pub:
        for _ in range(100):
            assert pub.publish_nowait(f"{ns}/n", b"x", qos=1)
        assert pub.stats["inflight"] == 100
        await pub.publish(f"{ns}/n", b"x", qos=1)
        assert pub.stats["inflight"] == 0


@pytest.mark.integration
async def test_retained_message_is_delivered_on_subscribe(broker: Mosquitto, ns: str) -> None:
    async with _client(broker, f"{ns}-pub") as pub:
        await pub.publish(f"{ns}/state", b"ONLINE", qos=1, retain=True)
    async with _client(broker, f"{ns}-sub") as sub:
        await sub.subscribe(f"{ns}/state", qos=1)
        assert await _receive(sub, 1) == [(f"{ns}/state", b"ONLINE", 1, True)]
        await sub.publish(f"{ns}/state", b"", qos=1, retain=True)  # clear it


@pytest.mark.integration
@pytest.mark.parametrize("protocol", [4, 5])  # MQTT 5: DISCONNECT with reason 0 drops the Will too
async def test_will_on_abort_not_on_disconnect(broker: Mosquitto, ns: str, protocol: int) -> None:
    will = Will(f"{ns}/will", b"gone", qos=1, retain=False)
    async with _client(broker, f"{ns}-watch") as watch:
        await watch.subscribe(f"{ns}/will", qos=1)
        polite = FastClient(_settings(broker, protocol=protocol), identifier=f"{ns}-polite", will=will)
        await polite.connect()
        await polite.disconnect()
        await polite.disconnect()  # idempotent
        await polite.wait_closed()
        crashed = FastClient(_settings(broker, protocol=protocol), identifier=f"{ns}-crash", will=will)
        await crashed.connect()
        crashed.abort()
        with pytest.raises(BrokerError, match="lost"):
            await crashed.wait_closed()
        assert await _receive(watch, 1) == [(f"{ns}/will", b"gone", 1, False)]
        await asyncio.sleep(0.3)
        assert watch.pending == 0  # only one Will: the polite client's was dropped
        await crashed.disconnect()


@pytest.mark.integration
async def test_connection_refused(ns: str) -> None:
    port = free_port()
    client = FastClient(BrokerSettings(port=port), identifier=ns)
    with pytest.raises(BrokerError, match=r"^connection refused$"):
        await client.connect()
    assert not client.connected
    with pytest.raises(BrokerError, match="connection refused"):
        await client.wait_closed()
    assert not client.publish_nowait("t", b"")
    with pytest.raises(BrokerError, match="connection refused"):
        await client.publish("t", b"")
    with pytest.raises(BrokerError, match="connection refused"):
        await client.wait_messages()
    await client.disconnect()
    never = FastClient(BrokerSettings(port=port), identifier=ns)
    with pytest.raises(BrokerError, match=r"^not connected$"):
        await never.subscribe("t")
    await never.wait_closed()  # nothing to wait for


@pytest.mark.integration
async def test_broker_killed_after_delivery(own_broker: Mosquitto, ns: str) -> None:
    async with _client(own_broker, f"{ns}-sub") as sub, _client(own_broker, f"{ns}-pub") as pub:
        await sub.subscribe(f"{ns}/#", qos=1)
        for i in range(500):
            pub.publish_nowait(f"{ns}/k", i.to_bytes(2, "big"), qos=1)
        await pub.publish(f"{ns}/k", b"end", qos=1)
        await _eventually(lambda: sub.pending == 501)  # received, deliberately not taken yet
        own_broker.kill()
        await _eventually(lambda: not sub.connected)
        got, error = await _take_until_lost(sub)
        assert str(error).startswith("connection to the broker lost: ")
        assert len(got) == 501 and got[-1][1] == b"end"
        assert not pub.publish_nowait(f"{ns}/k", b"")
        with pytest.raises(BrokerError, match="lost"):
            await pub.publish(f"{ns}/k", b"", qos=1)
        with pytest.raises(BrokerError, match="lost"):
            await sub.wait_closed()


@pytest.mark.integration
async def test_late_and_lost_acknowledgements(own_broker: Mosquitto, ns: str) -> None:
    async with _client(own_broker, ns) as client:
        assert own_broker.proc is not None
        own_broker.proc.send_signal(signal.SIGSTOP)  # no answers from now on
        try:
            with pytest.raises(BrokerError, match=r"^no SUBACK within 0\.2 s$"):
                await client.subscribe(f"{ns}/x", timeout=0.2)
            assert client.stats["inflight"] == 0
            publish = asyncio.create_task(client.publish(f"{ns}/x", b"", qos=1, timeout=30))
            await asyncio.sleep(0.1)
            client.abort()
            with pytest.raises(BrokerError, match="lost"):
                await publish
        finally:
            own_broker.proc.send_signal(signal.SIGCONT)


@pytest.mark.integration
async def test_flow_control_pauses_and_loses_nothing(broker: Mosquitto, ns: str) -> None:
    async with (
        _client(broker, f"{ns}-sub", high_water=2000, low_water=500) as sub,
        _client(broker, f"{ns}-pub") as pub,
    ):
        await sub.subscribe(f"{ns}/f")
        for i in range(30_000):
            pub.publish_nowait(f"{ns}/f", i.to_bytes(4, "big") + bytes(100))
        await pub.publish(f"{ns}/f", b"", qos=1)
        got: list[Message] = []
        max_pending = 0
        async with asyncio.timeout(30):
            while len(got) < 30_000:
                await sub.wait_messages()
                max_pending = max(max_pending, sub.pending)
                got.extend(sub.take(300))
                await asyncio.sleep(0.001)  # a slow consumer
        assert [int.from_bytes(p[:4], "big") for _, p, _, _ in got] == list(range(30_000))
        assert sub.stats["pauses"] >= 1
        assert max_pending < 2000 + 2000  # at most one socket read beyond the high-water mark


@pytest.mark.integration
async def test_keepalive_keeps_an_idle_connection(broker: Mosquitto, ns: str) -> None:
    async with _client(broker, f"{ns}-idle", keepalive=1) as idle:
        await idle.subscribe(f"{ns}/k")
        await asyncio.sleep(3.2)  # > 1.5 x keepalive twice over: mosquitto would have dropped us
        assert idle.connected
        async with _client(broker, f"{ns}-pub") as pub:
            await pub.publish(f"{ns}/k", b"still here", qos=1)
        assert await _receive(idle, 1) == [(f"{ns}/k", b"still here", 0, False)]


@pytest.mark.integration
async def test_keepalive_notices_a_hung_broker(own_broker: Mosquitto, ns: str) -> None:
    async with _client(own_broker, ns, keepalive=1) as client:
        assert own_broker.proc is not None
        own_broker.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(BrokerError, match=r"^no PINGRESP within 1\.5 s$"):
                await client.wait_messages()
            assert time.monotonic() - start < 3.0
        finally:
            own_broker.proc.send_signal(signal.SIGCONT)


@pytest.mark.integration
async def test_large_payload(broker: Mosquitto, ns: str) -> None:
    payload = random.Random(1).randbytes(1 << 20)
    async with _client(broker, f"{ns}-sub") as sub, _client(broker, f"{ns}-pub") as pub:
        await sub.subscribe(f"{ns}/big", qos=1)
        await pub.publish(f"{ns}/big", payload, qos=1)
        assert await _receive(sub, 1) == [(f"{ns}/big", payload, 1, False)]
        assert sub.stats["bytes_received"] > 1 << 20


@pytest.mark.integration
async def test_disconnect_ends_waiting(broker: Mosquitto, ns: str) -> None:
    client = FastClient(_settings(broker), identifier=ns)
    await client.connect()
    waiting = asyncio.create_task(client.wait_messages())
    await asyncio.sleep(0.05)
    await client.disconnect()
    with pytest.raises(BrokerError, match="connection closed"):
        await waiting
    await client.wait_closed()
    assert not client.connected


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[tuple[Mosquitto, Path]]:
    with tempfile.TemporaryDirectory(prefix="uns-fasttls-") as tmp:
        d = Path(tmp)
        _make_pki(d)
        port = free_port()
        conf = (
            f"listener {port} 127.0.0.1\n"
            f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"
            "allow_anonymous true\nuser root\n"
        )
        with Mosquitto(port=port, workdir=d, listener_conf=conf) as b:
            yield b, d


@pytest.mark.integration
async def test_tls(tls_broker: tuple[Mosquitto, Path], ns: str) -> None:
    broker, pki = tls_broker
    good = _settings(broker, tls=True, ca_file=str(pki / "ca.crt"))
    async with FastClient(good, identifier=ns) as client:
        await client.subscribe(f"{ns}/tls", qos=1)
        await client.publish(f"{ns}/tls", b"secret", qos=1)
        assert await _receive(client, 1) == [(f"{ns}/tls", b"secret", 1, False)]


async def test_publish_nowait_refuses_beyond_the_write_buffer_bound(own_broker: Mosquitto, ns: str) -> None:
    """A stalled broker must not make memory grow: beyond max_write_buffer, publish_nowait says no."""
    async with _client(own_broker, ns, max_write_buffer=1 << 20) as client:
        assert own_broker.proc is not None
        own_broker.proc.send_signal(signal.SIGSTOP)  # the broker reads nothing: the socket fills
        try:
            results = [client.publish_nowait(f"{ns}/wb", b"x" * (256 << 10)) for _ in range(200)]
            assert results[0] is True
            assert results.count(False) > 0
            assert client.stats["publishes_refused"] == results.count(False)
        finally:
            own_broker.proc.send_signal(signal.SIGCONT)


@pytest.mark.integration
async def test_coalesced_publishes_keep_their_order_with_awaited_ones(broker: Mosquitto, ns: str) -> None:
    """publish_nowait packets wait for the end of the loop iteration; an awaited publish
    (or any other write) in between must not overtake them."""
    async with _client(broker, f"{ns}-sub") as sub, _client(broker, f"{ns}-pub") as pub:
        await sub.subscribe(f"{ns}/#", qos=1)
        expected = []
        for i in range(30):
            if i % 7 == 3:
                await pub.publish(f"{ns}/o", str(i).encode(), qos=1)
            else:
                assert pub.publish_nowait(f"{ns}/o", str(i).encode())
            expected.append(str(i).encode())
        got = await _receive(sub, len(expected))
        assert [payload for _topic, payload, _qos, _retain in got] == expected


@pytest.mark.integration
async def test_manual_ack_leaves_qos1_unacknowledged_until_acked(broker: Mosquitto, ns: str) -> None:
    # the context intake's mode: PUBACK only once the message is safe; mosquitto redelivers the rest
    async with _client(broker, f"{ns}-sub", clean_session=False, manual_ack=True) as sub:
        await sub.subscribe(f"{ns}/a", qos=1)
        async with _client(broker, f"{ns}-pub") as pub:
            for i in range(6):
                await pub.publish(f"{ns}/a", bytes([i]), qos=1)
        await _eventually(lambda: sub.pending == 6)
        held = sub.take_held()
        assert [(m[1], m[2]) for m in held] == [(bytes([i]), 1) for i in range(6)]
        assert all(m[4] for m in held) and len({m[4] for m in held}) == 6
        assert sub.ack_all(m[4] for m in held[:3])  # the first three are safe, in order
        await asyncio.sleep(0.2)  # let the acknowledgements reach mosquitto
    async with _client(broker, f"{ns}-sub", clean_session=False, manual_ack=True) as sub:
        assert sub.session_present
        await _eventually(lambda: sub.pending == 3)
        again = sub.take_held()
        assert [m[1] for m in again] == [bytes([i]) for i in range(3, 6)]
        assert sub.ack(again[0][4]) and sub.ack_all(m[4] for m in again[1:])
        await asyncio.sleep(0.2)
    async with _client(broker, f"{ns}-sub", clean_session=False, manual_ack=True) as sub:
        await asyncio.sleep(0.5)
        assert sub.pending == 0  # all acknowledged: nothing comes again
    assert not sub.ack(1)  # the connection is gone: nothing to acknowledge on


@pytest.mark.integration
async def test_a_token_of_an_earlier_connection_acknowledges_nothing(broker: Mosquitto, ns: str) -> None:
    sub = FastClient(_settings(broker), identifier=f"{ns}-sub", clean_session=False, manual_ack=True)
    await sub.connect()
    await sub.subscribe(f"{ns}/a", qos=1)
    async with _client(broker, f"{ns}-pub") as pub:
        await pub.publish(f"{ns}/a", b"x", qos=1)
    await _eventually(lambda: sub.pending == 1)
    (old,) = sub.take_held()
    await sub.disconnect()
    await sub.connect()  # the same client again: the broker sends the message again, same packet id
    await _eventually(lambda: sub.pending == 1)
    (new,) = sub.take_held()
    assert new[1] == b"x" and new[4] & 0xFFFF == old[4] & 0xFFFF and new[4] != old[4]
    assert not sub.ack(old[4])  # stale: not sent
    assert sub.ack(new[4])
    await asyncio.sleep(0.2)
    await sub.disconnect()
    await sub.connect()
    await asyncio.sleep(0.3)
    assert sub.pending == 0
    await sub.disconnect()
