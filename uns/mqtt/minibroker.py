"""A small in-process MQTT 3.1.1 broker for ``uns demo`` when mosquitto is not installed.

Fine for a demo, not for production load.  Written from the MQTT 3.1.1 spec
(OASIS, 2014) and kept to what aiomqtt/paho and Sparkplug B use:

- CONNECT (protocol level 4 "MQTT" and level 3 "MQIsdp"), credentials accepted
  and ignored, Will message, keepalive (connection dropped after 1.5x), client
  id takeover (the old connection is closed and its Will published first);
- PUBLISH QoS 0/1/2 in, with PUBACK / PUBREC-PUBREL-PUBCOMP; delivery at
  min(publish QoS, subscription QoS, 1): QoS 2 is downgraded to 1;
- SUBSCRIBE/UNSUBSCRIBE with ``+``/``#`` (``$`` topics hidden from first-level
  wildcards), retained messages, PINGREQ, DISCONNECT.

Not supported: persistent sessions (``clean session = 0`` is accepted but
nothing survives a disconnect; CONNACK session-present is always 0), QoS 1
retransmission, authentication, TLS, WebSockets, MQTT 5.  Every client gets an
*unbounded* outbound queue drained by its own writer task, so a slow
subscriber cannot stall the others but can grow memory without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from uns.mqtt.wire import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    encode_remaining_length,
)

__all__ = [
    "MiniBroker",
    "MqttProtocolError",
    "decode_remaining_length",
    "encode_remaining_length",
    "topic_matches",
]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds a fresh connection has to send CONNECT
_PROTOCOLS = {("MQTT", 4), ("MQIsdp", 3)}
_CONNACK_BAD_PROTOCOL, _CONNACK_BAD_CLIENT_ID = 1, 2
_PINGRESP = b"\xd0\x00"
_ACKED_FLAGS = 0x02  # the fixed flag nibble of SUBSCRIBE, UNSUBSCRIBE and PUBREL [MQTT-2.2.2-1]


class MqttProtocolError(Exception):
    """A client broke the protocol; only its connection is closed."""


def decode_remaining_length(data: bytes) -> tuple[int, int]:
    """(value, bytes used) of the varint at the start of ``data``."""
    value = 0
    for i, byte in enumerate(data[:4]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    if len(data) >= 4:
        raise MqttProtocolError("remaining length longer than four bytes")
    raise MqttProtocolError("remaining length truncated")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches a (valid) subscription filter."""
    return _match(topic_filter.split("/"), topic.split("/"))


def _match(levels: list[str], topic: list[str]) -> bool:
    # first-level wildcards never match $SYS-style topics [MQTT-4.7.2-1]
    if topic[0].startswith("$") and levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(levels):
        if level == "#":
            return True  # also matches the parent: "a/#" matches "a" [MQTT-4.7.1-2]
        if i >= len(topic) or (level != "+" and level != topic[i]):
            return False
    return len(levels) == len(topic)


def _valid_filter(topic_filter: str) -> bool:
    if not topic_filter or "\x00" in topic_filter:
        return False
    levels = topic_filter.split("/")
    return all(
        (lv == "#" and i == len(levels) - 1) or lv == "+" or ("+" not in lv and "#" not in lv)
        for i, lv in enumerate(levels)
    )


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + encode_remaining_length(len(body)) + body


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


class _Body:
    """A cursor over one packet's bytes; any overrun is a protocol error."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MqttProtocolError("packet shorter than its fields")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        try:
            text = self.binary().decode()
        except UnicodeDecodeError as exc:
            raise MqttProtocolError("string is not UTF-8") from exc
        if "\x00" in text:
            raise MqttProtocolError("string contains U+0000")
        return text

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


async def _read_packet(reader: asyncio.StreamReader, max_size: int) -> tuple[int, int, _Body]:
    header = await reader.readexactly(2)  # type byte and the first length byte
    byte, length, shift = header[1], header[1] & 0x7F, 7
    while byte & 0x80:
        if shift > 21:
            raise MqttProtocolError("remaining length longer than four bytes")
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
    if length > max_size:
        raise MqttProtocolError(f"packet of {length} bytes exceeds the {max_size} byte limit")
    return header[0] >> 4, header[0] & 0x0F, _Body(await reader.readexactly(length))


@dataclass
class _Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(eq=False)
class _Client:
    """One connected client: its subscriptions and its outbound queue + writer task."""

    client_id: str
    writer: asyncio.StreamWriter
    will: _Will | None
    keepalive: int
    subscriptions: dict[str, tuple[list[str], int]] = field(default_factory=dict)
    outbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    packet_ids: itertools.cycle[int] = field(default_factory=lambda: itertools.cycle(range(1, 65536)))
    incoming_qos2: set[int] = field(default_factory=set)  # ids between PUBREC and PUBREL
    done: asyncio.Event = field(default_factory=asyncio.Event)  # the handler has finished
    writer_task: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        self.outbox.put_nowait(data)

    def deliver(self, topic: bytes, payload: bytes, qos: int, retain: bool) -> None:
        flags = qos << 1 | int(retain)
        packet_id = next(self.packet_ids).to_bytes(2, "big") if qos else b""
        self.send(_packet(PUBLISH, flags, topic + packet_id + payload))

    def best_qos(self, topic_levels: list[str]) -> int:
        """The highest QoS of this client's filters matching the topic, -1 if none."""
        return max(
            (q for levels, q in self.subscriptions.values() if _match(levels, topic_levels)), default=-1
        )

    async def write_loop(self) -> None:
        # batch whatever is queued into one write, then wait for the socket to drain
        with contextlib.suppress(ConnectionError):
            while True:
                chunks = [await self.outbox.get()]
                while not self.outbox.empty():
                    chunks.append(self.outbox.get_nowait())
                self.writer.write(b"".join(chunks))
                await self.writer.drain()
        self.writer.transport.abort()  # the reader side notices and ends the session


class MiniBroker:
    """An MQTT 3.1.1 broker on ``host:port`` for as long as the ``async with`` lasts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, max_packet_size: int = 64 << 20) -> None:
        self.host, self.port, self.max_packet_size = host, port, max_packet_size
        self._server: asyncio.Server | None = None
        self._clients: dict[str, _Client] = {}
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._anonymous = itertools.count(1)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True  # no Wills: nobody is left to receive them
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)  # connection handlers and their writers
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # our own task rather than asyncio's, so __aexit__ may cancel it without a logged error
        task = asyncio.create_task(self._handle(reader, writer), name="minibroker-connection")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client: _Client | None = None
        name = "?"
        try:
            client = await self._connect(reader, writer)
            if client is not None:
                name = client.client_id
                await self._session(client, reader)
        except (MqttProtocolError, asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
            log.debug("minibroker: closing %s: %r", name, exc)
        except Exception:  # a bug here must cost one connection, never the broker
            log.exception("minibroker: closing %s after an internal error", name)
        finally:
            writer.transport.abort()  # first: the awaits below may be cancelled by __aexit__
            if client is not None:
                await self._end(client)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Client | None:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            kind, _, body = await _read_packet(reader, self.max_packet_size)
        if kind != CONNECT:
            raise MqttProtocolError("first packet is not CONNECT")
        protocol, level, flags, keepalive = body.string(), body.u8(), body.u8(), body.u16()
        if (protocol, level) not in _PROTOCOLS:
            await self._refuse(writer, _CONNACK_BAD_PROTOCOL)
            return None
        if flags & 0x01:
            raise MqttProtocolError("reserved CONNECT flag set")
        client_id = body.string()
        will = None
        if flags & 0x04:
            topic, payload, will_qos = body.string(), body.binary(), flags >> 3 & 0x03
            if will_qos == 3 or not topic or "+" in topic or "#" in topic:
                raise MqttProtocolError("invalid Will")
            will = _Will(topic, payload, will_qos, bool(flags & 0x20))
        if flags & 0x80:
            body.string()  # user name: accepted, not checked
        if flags & 0x40:
            body.binary()  # password: accepted, not checked
        if not client_id:
            if not flags & 0x02:
                await self._refuse(writer, _CONNACK_BAD_CLIENT_ID)  # [MQTT-3.1.3-8]
                return None
            client_id = f"minibroker-anon-{next(self._anonymous)}"
        previous = self._clients.get(client_id)
        if previous is not None:
            # takeover [MQTT-3.1.4-2]: close the old connection and let it publish its Will first
            previous.writer.transport.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await previous.done.wait()
        client = _Client(client_id, writer, will, keepalive)
        client.writer_task = asyncio.create_task(client.write_loop(), name=f"minibroker-write-{client_id}")
        self._tasks.add(client.writer_task)  # so __aexit__ waits for it too
        client.writer_task.add_done_callback(self._tasks.discard)
        self._clients[client_id] = client
        client.send(_packet(CONNACK, 0, b"\x00\x00"))
        return client

    async def _refuse(self, writer: asyncio.StreamWriter, code: int) -> None:
        writer.write(_packet(CONNACK, 0, bytes([0, code])))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _session(self, client: _Client, reader: asyncio.StreamReader) -> None:
        deadline = client.keepalive * 1.5 if client.keepalive else None  # [MQTT-3.1.2-24]
        while True:
            async with asyncio.timeout(deadline):
                kind, flags, body = await _read_packet(reader, self.max_packet_size)
            if kind in (SUBSCRIBE, UNSUBSCRIBE, PUBREL) and flags != _ACKED_FLAGS:
                raise MqttProtocolError(f"packet type {kind} with flags {flags:#x}")
            if kind == PUBLISH:
                self._on_publish(client, flags, body)
            elif kind in (PUBACK, PUBCOMP):
                body.u16()  # no retransmission, so nothing to forget
            elif kind == PUBREC:  # only if a client answers our QoS 1 as if it were 2
                client.send(_packet(PUBREL, 0x02, body.take(2)))
            elif kind == PUBREL:
                packet_id = body.take(2)
                client.incoming_qos2.discard(int.from_bytes(packet_id, "big"))
                client.send(_packet(PUBCOMP, 0, packet_id))
            elif kind == SUBSCRIBE:
                self._on_subscribe(client, body)
            elif kind == UNSUBSCRIBE:
                packet_id = body.take(2)
                while not body.done:
                    client.subscriptions.pop(body.string(), None)
                client.send(_packet(UNSUBACK, 0, packet_id))
            elif kind == PINGREQ:
                client.send(_PINGRESP)
            elif kind == DISCONNECT:
                client.will = None  # a clean disconnect discards the Will [MQTT-3.14.4-3]
                return
            else:
                raise MqttProtocolError(f"unexpected packet type {kind}")

    def _on_publish(self, client: _Client, flags: int, body: _Body) -> None:
        qos, retain = flags >> 1 & 0x03, bool(flags & 0x01)
        topic = body.string()
        if qos == 3 or not topic or "+" in topic or "#" in topic:
            raise MqttProtocolError("invalid PUBLISH")
        packet_id = body.take(2) if qos else b""
        payload = body.rest()
        if qos == 1:
            client.send(_packet(PUBACK, 0, packet_id))
        elif qos == 2:
            client.send(_packet(PUBREC, 0, packet_id))
            number = int.from_bytes(packet_id, "big")
            if number in client.incoming_qos2:
                return  # a resend before PUBREL: already delivered once
            client.incoming_qos2.add(number)
        self.publish(topic, payload, qos, retain)

    def _on_subscribe(self, client: _Client, body: _Body) -> None:
        packet_id = body.take(2)
        granted = bytearray()
        new: list[tuple[list[str], int]] = []
        while not body.done:
            topic_filter, requested = body.string(), body.u8()
            if requested > 2:
                raise MqttProtocolError("SUBSCRIBE QoS above 2")
            if not _valid_filter(topic_filter):
                granted.append(0x80)
                continue
            qos = min(requested, 1)
            levels = topic_filter.split("/")
            client.subscriptions[topic_filter] = (levels, qos)
            granted.append(qos)
            new.append((levels, qos))
        if not granted:
            raise MqttProtocolError("SUBSCRIBE without topic filters")  # [MQTT-3.8.3-3]
        client.send(_packet(SUBACK, 0, packet_id + bytes(granted)))
        for topic, (payload, retained_qos) in self._retained.items():
            topic_levels = topic.split("/")
            qos = max((q for levels, q in new if _match(levels, topic_levels)), default=-1)
            if qos >= 0:
                client.deliver(_mqtt_string(topic), payload, min(qos, retained_qos), retain=True)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Route a message as if a client had published it (also used for Wills)."""
        if retain:
            if payload:
                self._retained[topic] = (payload, min(qos, 1))
            else:
                self._retained.pop(topic, None)  # [MQTT-3.3.1-10]
        topic_levels, encoded = topic.split("/"), _mqtt_string(topic)
        for client in self._clients.values():
            best = client.best_qos(topic_levels)
            if best >= 0:
                client.deliver(encoded, payload, min(qos, best, 1), retain=False)

    async def _end(self, client: _Client) -> None:
        if self._clients.get(client.client_id) is client:
            del self._clients[client.client_id]
        if client.will is not None and not self._closing:
            will, client.will = client.will, None
            self.publish(will.topic, will.payload, will.qos, will.retain)
        client.done.set()
        if client.writer_task is not None:
            client.writer_task.cancel()
            # gather collects the writer's end (cancelled or failed) without raising it here
            await asyncio.gather(client.writer_task, return_exceptions=True)
