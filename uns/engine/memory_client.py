"""The client side of :mod:`uns.engine.memory`: one connection to a :class:`~uns.engine.memory.MemoryBroker`.

:class:`MemoryTransport` is what the engine sees of a connection (the
:class:`~uns.engine.transport.Transport` protocol, as :class:`~uns.mqtt.client.FastClient`):
it hands every call to its broker and keeps what was delivered to it until taken.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from uns.errors import BrokerError
from uns.mqtt.settings import BrokerSettings, parse_broker_url
from uns.mqtt.wire import HeldMessage, Message, Will

__all__ = ["BrokerSession", "Hub", "MemoryTransport"]


class BrokerSession:
    """What the broker keeps of a persistent session between connections."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, int] = {}
        #: QoS 1/2 messages routed while the client was away (or not reading)
        self.queued: deque[Message] = deque()
        #: packet id -> message sent to a manual_ack client and not acknowledged yet, in order
        self.unacked: dict[int, Message] = {}
        self.next_id = 0

    def allocate(self, message: Message) -> int:
        while True:
            self.next_id = self.next_id % 65535 + 1
            if self.next_id not in self.unacked:
                self.unacked[self.next_id] = message
                return self.next_id


class Hub(Protocol):
    """The broker side a connection calls (:class:`uns.engine.memory.MemoryBroker` is one)."""

    def attach(self, client: MemoryTransport) -> None: ...
    def resume(self, client: MemoryTransport) -> None: ...
    def detach(self, client: MemoryTransport) -> None: ...
    def lose(self, client: MemoryTransport, reason: str) -> None: ...
    def route(self, client: MemoryTransport, topic: str, payload: bytes, qos: int, retain: bool) -> None: ...
    def subscribe_client(self, client: MemoryTransport, topic_filter: str, qos: int) -> int: ...
    def unsubscribe_client(self, client: MemoryTransport, topic_filter: str) -> None: ...
    def ack(self, client: MemoryTransport, packet_ids: list[int]) -> None: ...
    async def acknowledged(self, client: MemoryTransport) -> None: ...


class MemoryTransport:
    """One connection to a :class:`~uns.engine.memory.MemoryBroker`, with the API of
    :class:`~uns.mqtt.client.FastClient`."""

    def __init__(
        self,
        broker: Hub,
        *,
        identifier: str,
        will: Will | None = None,
        settings: BrokerSettings | None = None,
        high_water: int = 20_000,
        low_water: int = 5_000,
        clean_session: bool = True,
        manual_ack: bool = False,
    ) -> None:
        if not 0 <= low_water < high_water:
            raise ValueError("need 0 <= low_water < high_water")
        self.broker = broker
        self.clean_session = clean_session
        self.manual_ack = manual_ack
        #: the broker had a session for us (from the last connect)
        self.session_present = False
        self._session: BrokerSession | None = None
        self.identifier = identifier
        self.will = will
        self.settings = settings or parse_broker_url("mqtt://memory")
        self.high_water = high_water
        self.low_water = low_water
        #: filter -> granted QoS, while connected
        self.subscriptions: dict[str, int] = {}
        #: times delivery paused because ``high_water`` messages waited
        self.pauses = 0
        self._messages: list[HeldMessage] = []
        self._queued: deque[HeldMessage] = deque()  # what the broker holds while we do not read
        self._paused = False
        self._live = False
        self._error: str | None = None
        self._wake: asyncio.Event | None = None

    # ------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        if self._live:
            return
        await asyncio.sleep(0)  # a network round trip: other tasks run meanwhile
        self._error = None
        self._session = None
        self.broker.attach(self)
        self._live = True
        self.broker.resume(self)

    async def disconnect(self) -> None:
        if self._live:
            self.broker.detach(self)
        await asyncio.sleep(0)

    def abort(self) -> None:
        """Drop the connection without DISCONNECT, as a crash would (the Will is published)."""
        if self._live:
            self.broker.lose(self, "connection to the broker lost: aborted by this client")

    @property
    def connected(self) -> bool:
        return self._live

    @property
    def pending(self) -> int:
        return len(self._messages)

    @property
    def queued(self) -> int:
        """Messages the broker holds for this connection while it does not read (back-pressure)."""
        return len(self._queued)

    # ------------------------------------------------------------ requests
    def _require_connected(self) -> None:
        if not self._live:
            raise BrokerError(self._error or "not connected")

    async def subscribe(self, topic: str, qos: int = 0) -> int:
        self._require_connected()
        await asyncio.sleep(0)
        self._require_connected()
        return self.broker.subscribe_client(self, topic, qos)

    async def unsubscribe(self, topic: str) -> None:
        self._require_connected()
        await asyncio.sleep(0)
        self._require_connected()
        self.broker.unsubscribe_client(self, topic)

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self._require_connected()
        self.broker.route(self, topic, payload, qos, retain)
        if qos:  # QoS 0 returns at once, as FastClient's does with room in the socket buffer
            await asyncio.sleep(0)  # the PUBACK's round trip
            await self.broker.acknowledged(self)
            self._require_connected()  # lost before the acknowledgement

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        if not self._live:
            return False
        self.broker.route(self, topic, payload, qos, retain)
        return True

    # ------------------------------------------------------------ receiving
    async def wait_messages(self) -> None:
        while not self._messages:
            if not self._live:
                raise BrokerError(self._error or "not connected")
            self._wake = wake = asyncio.Event()
            try:
                await wake.wait()
            finally:
                self._wake = None

    def take(self, limit: int = 2048) -> list[Message]:
        return [m[:4] for m in self.take_held(limit)]

    def take_held(self, limit: int = 2048) -> list[HeldMessage]:
        messages = self._messages
        taken = messages[:limit]
        del messages[:limit]
        if self._paused and len(messages) < self.low_water:
            self._paused = False
            queued = self._queued
            while queued and not self._paused:
                self._deliver(queued.popleft())
        return taken

    def ack(self, packet_id: int) -> bool:
        return self.ack_all((packet_id,))

    def ack_all(self, packet_ids: Iterable[int]) -> bool:
        ids = [i for i in packet_ids if i]
        if not ids:
            return True
        if not self._live:
            return False
        self.broker.ack(self, ids)
        return True

    # ------------------------------------------------------------ called by the broker
    def _hold(self, message: Message) -> HeldMessage:
        """The message with the packet id this client acknowledges it by (0: none owed)."""
        if self.manual_ack and message[2] == 1 and self._session is not None:
            return (*message, self._session.allocate(message))
        return (*message, 0)

    def _deliver(self, message: HeldMessage) -> None:
        if self._paused:
            self._queued.append(message)
            return
        self._messages.append(message)
        if len(self._messages) >= self.high_water:
            self._paused = True
            self.pauses += 1
        if self._wake is not None:
            self._wake.set()

    def _ended(self, reason: str) -> None:
        self._live = False
        self._error = reason
        session, self._session = self._session, None
        if session is None:
            self.subscriptions.clear()
            self._queued.clear()  # a clean session: what the broker held for us is gone
        else:  # the broker keeps what it held back, and the session's subscriptions
            self.subscriptions = {}
            session.queued.extend(m[:4] for m in self._queued if m[4] == 0 and m[2] > 0)
            self._queued.clear()
        self._paused = False
        if self._wake is not None:
            self._wake.set()
