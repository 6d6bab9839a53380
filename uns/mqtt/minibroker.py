"""A small in-process MQTT 3.1.1 broker for ``uns demo`` when mosquitto is not installed.

Fine for a demo, not for production load.  Written from the MQTT 3.1.1 spec
(OASIS, 2014); packets are split, parsed and encoded by :mod:`uns.mqtt.wire`,
the codec the client uses too.  It covers what MQTT clients and Sparkplug B use:

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
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from uns.mqtt.wire import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PINGRESP_PACKET,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    FrameReader,
    MqttProtocolError,
    Will,
    encode_ack,
    encode_connack,
    encode_publish,
    encode_suback,
    fixed_flags_ok,
    parse_ack,
    parse_connect,
    parse_publish,
    parse_subscribe,
    parse_unsubscribe,
)

__all__ = ["MiniBroker", "topic_matches"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds a fresh connection has to send CONNECT
_CONNACK_BAD_CLIENT_ID = 2
_READ_SIZE = 1 << 16


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


class _Inbox:
    """The packets from one client, one at a time, in the order they were sent."""

    def __init__(self, reader: asyncio.StreamReader, max_size: int) -> None:
        self.reader = reader
        self.frames = FrameReader(max_size)
        self.packets: deque[tuple[int, int, bytes]] = deque()

    async def next(self, timeout: float | None) -> tuple[int, int, bytes]:  # noqa: ASYNC109 - keepalive deadline
        """The next ``(type, flags, body)``; TimeoutError when the client was silent for ``timeout`` s."""
        while not self.packets:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(_READ_SIZE)
            if not data:
                raise ConnectionError("closed by the client")
            self.packets.extend(self.frames.feed(data))
        return self.packets.popleft()


@dataclass(eq=False)
class _Client:
    """One connected client: its subscriptions and its outbound queue + writer task."""

    client_id: str
    writer: asyncio.StreamWriter
    will: Will | None
    keepalive: int
    subscriptions: dict[str, tuple[list[str], int]] = field(default_factory=dict)
    outbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    packet_ids: itertools.cycle[int] = field(default_factory=lambda: itertools.cycle(range(1, 65536)))
    incoming_qos2: set[int] = field(default_factory=set)  # ids between PUBREC and PUBREL
    done: asyncio.Event = field(default_factory=asyncio.Event)  # the handler has finished
    writer_task: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        self.outbox.put_nowait(data)

    def deliver(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        packet_id = next(self.packet_ids) if qos else 0
        self.send(encode_publish(topic, payload, qos, retain, packet_id))

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
        inbox = _Inbox(reader, self.max_packet_size)
        try:
            client = await self._connect(inbox, writer)
            if client is not None:
                name = client.client_id
                await self._session(client, inbox)
        except (MqttProtocolError, ConnectionError, TimeoutError) as exc:
            log.debug("minibroker: closing %s: %r", name, exc)
        except Exception:  # a bug here must cost one connection, never the broker
            log.exception("minibroker: closing %s after an internal error", name)
        finally:
            writer.transport.abort()  # first: the awaits below may be cancelled by __aexit__
            if client is not None:
                await self._end(client)

    async def _connect(self, inbox: _Inbox, writer: asyncio.StreamWriter) -> _Client | None:
        kind, flags, body = await inbox.next(CONNECT_TIMEOUT)
        if kind != CONNECT or flags:
            raise MqttProtocolError("first packet is not CONNECT")
        try:
            connect = parse_connect(body)
        except MqttProtocolError as exc:
            if exc.connack is not None:
                await self._refuse(writer, exc.connack)
            raise
        client_id = connect.client_id
        if not client_id:
            if not connect.clean_session:
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
        client = _Client(client_id, writer, connect.will, connect.keepalive)
        client.writer_task = asyncio.create_task(client.write_loop(), name=f"minibroker-write-{client_id}")
        self._tasks.add(client.writer_task)  # so __aexit__ waits for it too
        client.writer_task.add_done_callback(self._tasks.discard)
        self._clients[client_id] = client
        client.send(encode_connack(0))
        return client

    async def _refuse(self, writer: asyncio.StreamWriter, code: int) -> None:
        writer.write(encode_connack(code))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _session(self, client: _Client, inbox: _Inbox) -> None:
        deadline = client.keepalive * 1.5 if client.keepalive else None  # [MQTT-3.1.2-24]
        while True:
            kind, flags, body = await inbox.next(deadline)
            if not fixed_flags_ok(kind, flags):
                raise MqttProtocolError(f"packet type {kind} with flags {flags:#x}")  # [MQTT-2.2.2-2]
            if kind == PUBLISH:
                self._on_publish(client, flags, body)
            elif kind in (PUBACK, PUBCOMP):
                parse_ack(body)  # no retransmission, so nothing to forget
            elif kind == PUBREC:  # only if a client answers our QoS 1 as if it were 2
                client.send(encode_ack(PUBREL, parse_ack(body)))
            elif kind == PUBREL:
                packet_id = parse_ack(body)
                client.incoming_qos2.discard(packet_id)
                client.send(encode_ack(PUBCOMP, packet_id))
            elif kind == SUBSCRIBE:
                self._on_subscribe(client, body)
            elif kind == UNSUBSCRIBE:
                packet_id, filters = parse_unsubscribe(body)
                for topic_filter in filters:
                    client.subscriptions.pop(topic_filter, None)
                client.send(encode_ack(UNSUBACK, packet_id))
            elif kind == PINGREQ:
                client.send(PINGRESP_PACKET)
            elif kind == DISCONNECT:
                client.will = None  # a clean disconnect discards the Will [MQTT-3.14.4-3]
                return
            else:
                raise MqttProtocolError(f"unexpected packet type {kind}")

    def _on_publish(self, client: _Client, flags: int, body: bytes) -> None:
        topic, packet_id, payload = parse_publish(flags, body)
        qos, retain = flags >> 1 & 0x03, bool(flags & 0x01)
        if qos == 1:
            client.send(encode_ack(PUBACK, packet_id))
        elif qos == 2:
            client.send(encode_ack(PUBREC, packet_id))
            if packet_id in client.incoming_qos2:
                return  # a resend before PUBREL: already delivered once
            client.incoming_qos2.add(packet_id)
        self.publish(topic, payload, qos, retain)

    def _on_subscribe(self, client: _Client, body: bytes) -> None:
        packet_id, requested = parse_subscribe(body)
        granted = []
        new: list[tuple[list[str], int]] = []
        for topic_filter, wanted in requested:
            if not _valid_filter(topic_filter):
                granted.append(0x80)
                continue
            qos = min(wanted, 1)
            levels = topic_filter.split("/")
            client.subscriptions[topic_filter] = (levels, qos)
            granted.append(qos)
            new.append((levels, qos))
        client.send(encode_suback(packet_id, granted))
        for topic, (payload, retained_qos) in self._retained.items():
            topic_levels = topic.split("/")
            qos = max((q for levels, q in new if _match(levels, topic_levels)), default=-1)
            if qos >= 0:
                client.deliver(topic, payload, min(qos, retained_qos), retain=True)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Route a message as if a client had published it (also used for Wills)."""
        if retain:
            if payload:
                self._retained[topic] = (payload, min(qos, 1))
            else:
                self._retained.pop(topic, None)  # [MQTT-3.3.1-10]
        topic_levels = topic.split("/")
        for client in self._clients.values():
            best = client.best_qos(topic_levels)
            if best >= 0:
                client.deliver(topic, payload, min(qos, best, 1), retain=False)

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
