"""The in-process MQTT 3.1.1 broker: topic matching, routing, Wills, robustness, and the engine on top."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns import lake
from uns.config import load_config
from uns.engine.daemon import build_engine
from uns.mqtt.minibroker import MiniBroker, topic_matches
from uns.mqtt.wire import encode_remaining_length
from uns.sim import SimConfig, run_sim

ROOT = Path(__file__).resolve().parent.parent
NOT_SAMPLES = ("bdSeq", "Node Control/")
WAIT = 5.0


# -- topic matching (pure) ------------------------------------------------------------------------


def _oracle_match(topic_filter: str, topic: str) -> bool:
    """A regex reading of section 4.7, independent of the broker's level walk."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    if topic_filter == "#":
        return True
    pattern = re.escape(topic_filter).replace(r"\+", "[^/]*")
    if pattern.endswith("/\\#"):
        pattern = pattern[: -len("/\\#")] + "(/.*)?"
    return re.fullmatch(pattern, topic, flags=re.DOTALL) is not None


_level = st.sampled_from(["a", "b", "", "$s", "c d"])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(_level, st.just("+")), min_size=1, max_size=4),
    st.booleans(),
    st.lists(_level, min_size=1, max_size=5),
)
def test_topic_matching_agrees_with_a_regex_oracle(
    levels: list[str], hash_end: bool, topic: list[str]
) -> None:
    topic_filter = "/".join([*levels, "#"] if hash_end else levels)
    name = "/".join(topic)
    assert topic_matches(topic_filter, name) == _oracle_match(topic_filter, name)


def test_topic_matching_examples_from_the_spec() -> None:
    assert topic_matches("sport/tennis/player1/#", "sport/tennis/player1")
    assert topic_matches("sport/#", "sport")
    assert topic_matches("+/+", "/finance")
    assert topic_matches("/+", "/finance")
    assert not topic_matches("+", "/finance")
    assert not topic_matches("sport/+", "sport")
    assert not topic_matches("#", "$SYS/x")
    assert topic_matches("$SYS/#", "$SYS/x")


# -- a hand-written raw client for what aiomqtt will not do (Wills, garbage, old protocol) --------


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def _frame(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_remaining_length(len(body)) + body


def _connect_packet(
    client_id: str,
    *,
    will: tuple[str, bytes, int, bool] | None = None,
    keepalive: int = 60,
    protocol: tuple[str, int] = ("MQTT", 4),
    username: str | None = None,
) -> bytes:
    flags = 0x02
    payload = _string(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        payload += _string(topic) + _string(message)
    if username is not None:
        flags |= 0xC0
        payload += _string(username) + _string(b"secret")
    header = _string(protocol[0]) + bytes([protocol[1], flags]) + keepalive.to_bytes(2, "big")
    return _frame(0x10, header + payload)


@contextlib.asynccontextmanager
async def raw_connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _connack(reader: asyncio.StreamReader) -> int:
    packet = await asyncio.wait_for(reader.readexactly(4), WAIT)
    assert packet[:3] == b"\x20\x02\x00"
    return packet[3]


async def _closed_by_broker(reader: asyncio.StreamReader) -> bool:
    with contextlib.suppress(ConnectionError):
        while await asyncio.wait_for(reader.read(65536), WAIT):
            pass
    return True


async def _next(client: aiomqtt.Client) -> aiomqtt.Message:
    return await asyncio.wait_for(anext(client.messages), WAIT)


def _client(broker: MiniBroker, identifier: str | None = None) -> aiomqtt.Client:
    return aiomqtt.Client(broker.host, broker.port, identifier=identifier, timeout=WAIT)


@pytest.fixture
async def mini() -> AsyncIterator[MiniBroker]:
    async with MiniBroker() as broker:
        yield broker


# -- behaviour over real sockets ----------------------------------------------------------------


async def test_url_and_port() -> None:
    async with MiniBroker() as broker:
        assert broker.port > 0
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"


async def test_publish_subscribe_at_the_lower_qos(mini: MiniBroker) -> None:
    async with _client(mini) as sub1, _client(mini) as sub0, _client(mini) as pub:
        await sub1.subscribe("t/#", qos=1)
        await sub0.subscribe("t/#", qos=0)
        await pub.publish("t/zero", b"0", qos=0)
        await pub.publish("t/one", b"1", qos=1)
        await pub.publish("t/two", b"2", qos=2)  # returns only once PUBREC/PUBREL/PUBCOMP completed
        got1 = [await _next(sub1) for _ in range(3)]
        got0 = [await _next(sub0) for _ in range(3)]
    assert [(m.topic.value, m.payload, m.qos, m.retain) for m in got1] == [
        ("t/zero", b"0", 0, False),
        ("t/one", b"1", 1, False),
        ("t/two", b"2", 1, False),  # QoS 2 is delivered as QoS 1
    ]
    assert [(m.payload, m.qos) for m in got0] == [(b"0", 0), (b"1", 0), (b"2", 0)]


async def test_many_qos1_messages_arrive_in_order(mini: MiniBroker) -> None:
    async with _client(mini) as sub, _client(mini) as pub:
        await sub.subscribe("n/+", qos=1)
        for i in range(300):  # more than the packet-id space of one window, and more than paho's inflight
            await pub.publish(f"n/{i % 7}", str(i).encode(), qos=1)
        got = [int(bytes((await _next(sub)).payload)) for _ in range(300)]  # type: ignore[arg-type]
    assert got == list(range(300))


async def test_wildcards_and_dollar_topics(mini: MiniBroker) -> None:
    filters = {"plus": "+/x", "hash": "#", "deep": "a/#", "sys": "$SYS/#"}
    async with contextlib.AsyncExitStack() as stack:
        subs = {name: await stack.enter_async_context(_client(mini)) for name in filters}
        for name, topic_filter in filters.items():
            await subs[name].subscribe(topic_filter)
        pub = await stack.enter_async_context(_client(mini))
        for topic in ("$SYS/x", "a", "a/x", "b/x", "a/b/c", "$SYS/end", "end/x", "a/end"):
            await pub.publish(topic, b".")
        seen = {}
        for name, sub in subs.items():  # each reads up to its first "end" message
            seen[name] = []
            while "end" not in (topic := (await _next(sub)).topic.value):
                seen[name].append(topic)
    assert seen == {
        "plus": ["a/x", "b/x"],
        "hash": ["a", "a/x", "b/x", "a/b/c"],  # neither $SYS topic
        "deep": ["a", "a/x", "a/b/c"],  # "a/#" matches the parent "a" too
        "sys": ["$SYS/x"],
    }


async def test_retained_message_lifecycle(mini: MiniBroker) -> None:
    async with _client(mini) as pub, _client(mini) as live:
        await live.subscribe("r/#", qos=1)
        await pub.publish("r/a", b"first", qos=1, retain=True)
        await pub.publish("r/a", b"second", qos=1, retain=True)  # replaces
        live_msgs = [await _next(live), await _next(live)]
        assert [(m.payload, m.retain) for m in live_msgs] == [(b"first", False), (b"second", False)]
        async with _client(mini) as late:
            await late.subscribe("r/+", qos=1)
            msg = await _next(late)
            assert (msg.topic.value, msg.payload, msg.retain, msg.qos) == ("r/a", b"second", True, 1)
        await pub.publish("r/a", b"", qos=1, retain=True)  # deletes
        async with _client(mini) as later:
            await later.subscribe("r/#")
            await pub.publish("r/marker", b"m")
            msg = await _next(later)
            assert (msg.topic.value, msg.retain) == ("r/marker", False)


async def test_will_on_abnormal_close_and_retained(mini: MiniBroker) -> None:
    async with _client(mini) as sub:
        await sub.subscribe("w/#", qos=1)
        async with raw_connection(mini.port) as (reader, writer):
            writer.write(_connect_packet("edge", will=("w/death", b"gone", 1, True), username="u"))
            assert await _connack(reader) == 0
        msg = await _next(sub)  # the socket closed without DISCONNECT
        assert (msg.topic.value, msg.payload, msg.qos, msg.retain) == ("w/death", b"gone", 1, False)
    async with _client(mini) as late:
        await late.subscribe("w/death")
        msg = await _next(late)
        assert (msg.payload, msg.retain) == (b"gone", True)


async def test_no_will_on_clean_disconnect(mini: MiniBroker) -> None:
    async with _client(mini) as sub, _client(mini) as pub:
        await sub.subscribe("w/#")
        async with raw_connection(mini.port) as (reader, writer):
            writer.write(_connect_packet("edge", will=("w/death", b"gone", 0, False)))
            assert await _connack(reader) == 0
            writer.write(b"\xc0\x00")  # PINGREQ
            assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\xd0\x00"
            writer.write(b"\xe0\x00")  # DISCONNECT
            assert await _closed_by_broker(reader)
        await pub.publish("w/marker", b"m")
        assert (await _next(sub)).topic.value == "w/marker"


async def test_will_on_keepalive_expiry(mini: MiniBroker) -> None:
    async with _client(mini) as sub:
        await sub.subscribe("w/#")
        async with raw_connection(mini.port) as (reader, writer):
            writer.write(_connect_packet("sleepy", will=("w/sleepy", b"timeout", 0, False), keepalive=1))
            assert await _connack(reader) == 0
            started = asyncio.get_running_loop().time()
            assert await _closed_by_broker(reader)
            elapsed = asyncio.get_running_loop().time() - started
            assert 1.3 < elapsed < 3.0  # 1.5 x keepalive
        assert (await _next(sub)).payload == b"timeout"


async def test_same_client_id_takes_over_and_old_will_comes_first(mini: MiniBroker) -> None:
    async with _client(mini) as sub:
        await sub.subscribe("w/#", qos=1)
        async with raw_connection(mini.port) as (old_reader, old_writer):
            old_writer.write(_connect_packet("node", will=("w/node", b"old death", 1, False)))
            assert await _connack(old_reader) == 0
            async with _client(mini, identifier="node") as new:
                assert await _closed_by_broker(old_reader)
                await new.publish("w/node", b"new birth", qos=1)
                assert [(await _next(sub)).payload for _ in range(2)] == [b"old death", b"new birth"]


async def test_unsubscribe(mini: MiniBroker) -> None:
    async with _client(mini) as sub, _client(mini) as pub:
        await sub.subscribe("u/a")
        await sub.subscribe("u/b")
        await pub.publish("u/a", b"1")
        assert (await _next(sub)).payload == b"1"
        await sub.unsubscribe("u/a")
        await pub.publish("u/a", b"2")
        await pub.publish("u/b", b"3")
        msg = await _next(sub)
        assert (msg.topic.value, msg.payload) == ("u/b", b"3")


async def test_protocol_levels(mini: MiniBroker) -> None:
    async with raw_connection(mini.port) as (reader, writer):
        writer.write(_connect_packet("old", protocol=("MQIsdp", 3)))
        assert await _connack(reader) == 0
    async with raw_connection(mini.port) as (reader, writer):
        writer.write(_connect_packet("future", protocol=("MQTT", 5)))
        assert await _connack(reader) == 1  # unacceptable protocol version
        assert await _closed_by_broker(reader)


GARBAGE = {
    "not CONNECT first": _frame(0x30, _string("t") + b"x"),
    "reserved type 0": b"\x00\x00",
    "five-byte length": b"\x10\xff\xff\xff\xff\x01",
    "CONNECT shorter than its fields": _frame(0x10, _connect_packet("x")[2:-3]),
    "bad UTF-8 client id": _frame(0x10, _string("MQTT") + b"\x04\x02\x00\x3c" + _string(b"\xff\xfe")),
    "PUBLISH QoS 3": _connect_packet("x") + _frame(0x36, _string("t") + b"\x00\x01x"),
    "PUBLISH to a wildcard": _connect_packet("x") + _frame(0x30, _string("a/+")),
    "SUBSCRIBE bad flags": _connect_packet("x") + _frame(0x80, b"\x00\x01" + _string("a") + b"\x00"),
    "SUBSCRIBE no filters": _connect_packet("x") + _frame(0x82, b"\x00\x01"),
    "second CONNECT": _connect_packet("x") * 2,
    "oversized": _connect_packet("x") + b"\x30" + encode_remaining_length(2000),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
async def test_malformed_input_closes_only_that_connection(garbage: bytes) -> None:
    async with MiniBroker(max_packet_size=1024) as broker, _client(broker) as sub, _client(broker) as pub:
        await sub.subscribe("ok/#", qos=1)
        async with raw_connection(broker.port) as (reader, writer):
            writer.write(garbage)
            assert await _closed_by_broker(reader)
        await pub.publish("ok/still", b"fine", qos=1)
        assert (await _next(sub)).payload == b"fine"


async def test_invalid_filter_is_refused_in_suback(mini: MiniBroker) -> None:
    async with raw_connection(mini.port) as (reader, writer):
        writer.write(_connect_packet("subber"))
        assert await _connack(reader) == 0
        writer.write(_frame(0x82, b"\x00\x07" + _string("a/#/b") + b"\x01" + _string("ok/+") + b"\x02"))
        suback = await asyncio.wait_for(reader.readexactly(6), WAIT)
        assert suback == b"\x90\x04\x00\x07\x80\x01"  # failure, then QoS 2 granted as 1


async def test_exit_closes_client_connections() -> None:
    async with MiniBroker() as broker:
        port = broker.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_connect_packet("lingering"))
        assert await _connack(reader) == 0
    try:
        assert await _closed_by_broker(reader)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_engine_and_simulator_run_on_the_minibroker(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    async with MiniBroker() as broker:
        config = load_config(
            env={},
            overrides={
                "broker.url": broker.url,
                "lake.path": str(lake_dir),
                "lake.commit_interval": 1.0,
                "engine.model": str(ROOT / "examples" / "pilot-plant.toml"),
                "engine.primary": True,
            },
        )
        engine = build_engine(config)
        stop = asyncio.Event()
        task = asyncio.create_task(engine.run(stop), name="test-engine")
        try:
            await asyncio.wait_for(engine.connected.wait(), 10)
            report = await run_sim(
                SimConfig(host=broker.host, port=broker.port, rate=50, duration=3, keep_samples=True)
            )
            previous = -1
            while engine.counters.messages != previous:
                previous = engine.counters.messages
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    sent = {
        (s.edge_node_id, s.device_id or "", s.metric, s.ts)
        for s in report.samples
        if s.message_type.endswith(("DATA", "BIRTH")) and not s.metric.startswith(NOT_SAMPLES)
    }
    assert report.data_messages > 100
    con = lake.connect(lake_dir)
    try:
        rows = con.execute(
            "SELECT edge_node_id, coalesce(device_id, ''), metric, epoch_ms(ts) FROM measurements"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == len(sent)
    assert {tuple(r) for r in rows} == sent
