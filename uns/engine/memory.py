"""An MQTT broker in memory, and its connections: the engine's transport for unit tests.

:class:`MemoryBroker` is a :class:`~uns.engine.transport.TransportFactory`, so
``Engine(config, transport=broker)`` runs the real host loop (sessions, STATE,
rebirths, back-pressure, reconnects, shutdown order) against it, with no
broker process and no sockets: every publish is routed at once, in order, so
a test sees the same result every run.  It behaves like mosquitto 2.0 where
the engine can tell the difference:

- routing by ``+``/``#`` filters (``$`` topics hidden from first-level
  wildcards), one copy per client at the highest QoS of its matching
  filters (capped at the publish's QoS), the sender included;
- retained messages (an empty retained payload deletes) sent on subscribe
  with the retain flag; a Will published when a connection is lost or
  aborted, never on a clean disconnect; a second connection with the same
  identifier takes the session over (the first is lost, its Will published);
- clean sessions only: subscriptions and queued messages end with the
  connection.

And it does what a test needs of a broker on demand: refuse connections
(:meth:`MemoryBroker.refuse`), lose them (:meth:`MemoryBroker.drop`), hold
QoS 1 acknowledgements back (:meth:`MemoryBroker.hold_acks`), and record
everything its clients did, in order (:attr:`MemoryBroker.log`).

Back-pressure works as with :class:`~uns.mqtt.client.FastClient`: once
``high_water`` messages wait to be taken the connection stops "reading" and
the broker queues for it; taking down to ``low_water`` resumes delivery.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from uns.errors import BrokerError
from uns.mqtt.minibroker import topic_matches
from uns.mqtt.settings import BrokerSettings, parse_broker_url
from uns.mqtt.wire import Message, Will

if TYPE_CHECKING:
    from uns.engine.transport import Transport, TransportFactory

__all__ = ["LogEntry", "MemoryBroker", "MemoryTransport"]


class LogEntry(NamedTuple):
    """One thing a client did, as the broker saw it.

    ``action`` is connect, refused, subscribe, unsubscribe, publish, disconnect,
    lost (the connection dropped without DISCONNECT) or will (its Will, published)."""

    client: str
    action: str
    topic: str = ""
    payload: bytes = b""
    qos: int = 0
    retain: bool = False


class MemoryBroker:
    """A broker in memory; call it (it is a transport factory) to make a connection.

    ::

        broker = MemoryBroker()
        engine = Engine(config, transport=broker)
        edge = broker.client("edge")
        await edge.connect()
        await edge.publish("spBv1.0/G/NBIRTH/N", payload)
    """

    def __init__(self, *, high_water: int = 20_000, low_water: int = 5_000) -> None:
        #: back-pressure marks of the connections the factory makes (FastClient's defaults)
        self.high_water = high_water
        self.low_water = low_water
        #: everything clients did, in order
        self.log: list[LogEntry] = []
        #: topic -> (payload, qos) of the retained messages
        self.retained: dict[str, tuple[bytes, int]] = {}
        #: connection attempts, refused ones included
        self.connects = 0
        self._clients: dict[str, MemoryTransport] = {}
        self._refusals: deque[BrokerError] = deque()
        self._refusing: BrokerError | None = None
        self._holding_acks = False
        self._held: list[tuple[MemoryTransport, asyncio.Future[None]]] = []

    # ------------------------------------------------------------ factory
    def __call__(self, settings: BrokerSettings, *, identifier: str, will: Will | None) -> MemoryTransport:
        """A new, unconnected connection (the engine's ``TransportFactory``)."""
        return MemoryTransport(
            self,
            identifier=identifier,
            will=will,
            settings=settings,
            high_water=self.high_water,
            low_water=self.low_water,
        )

    def client(
        self, identifier: str, *, will: Will | None = None, high_water: int = 20_000, low_water: int = 5_000
    ) -> MemoryTransport:
        """A new, unconnected connection for a test's own edge node or listener."""
        return MemoryTransport(
            self, identifier=identifier, will=will, high_water=high_water, low_water=low_water
        )

    # ------------------------------------------------------------ what tests ask of it
    def refuse(self, error: BrokerError | None, *, times: int | None = None) -> None:
        """Make connection attempts fail with ``error``: the next ``times`` ones (queued after
        earlier ``times`` refusals), or all of them from now on (``times=None``) until
        ``refuse(None)``."""
        if times is None:
            self._refusing = error
            if error is None:
                self._refusals.clear()
        elif error is not None:
            self._refusals.extend([error] * times)

    def drop(self, identifier: str | None = None, reason: str = "closed by the broker") -> None:
        """Lose the connection of ``identifier`` (every connection when None), as a broker
        restart or a network failure would: its Will is published, its session ends."""
        for client in list(self._clients.values()):
            if identifier is None or client.identifier == identifier:
                self._lose(client, f"connection to the broker lost: {reason}")

    def hold_acks(self) -> None:
        """QoS 1/2 publishes wait for their acknowledgement until :meth:`release_acks` (as
        when a PUBACK queues behind a backlog); the message itself is routed at once.  A
        connection lost meanwhile fails its waiting publishes with BrokerError."""
        self._holding_acks = True

    def release_acks(self) -> None:
        """Acknowledge every held QoS 1/2 publish, and the later ones at once."""
        self._holding_acks = False
        held, self._held = self._held, []
        for _client, waiter in held:
            if not waiter.done():
                waiter.set_result(None)

    def published(self, topic_filter: str = "#") -> list[LogEntry]:
        """The publishes (Wills included) on topics matching ``topic_filter``, in order."""
        return [
            e for e in self.log if e.action in ("publish", "will") and topic_matches(topic_filter, e.topic)
        ]

    def actions(self, identifier: str) -> list[LogEntry]:
        """What one client did, in order."""
        return [e for e in self.log if e.client == identifier]

    def connection(self, identifier: str) -> MemoryTransport | None:
        """The live connection of ``identifier``, if any."""
        return self._clients.get(identifier)

    # ------------------------------------------------------------ what connections ask of it
    def _connect(self, client: MemoryTransport) -> None:
        self.connects += 1
        error = self._refusals.popleft() if self._refusals else self._refusing
        if error is not None:
            self.log.append(LogEntry(client.identifier, "refused", payload=str(error).encode()))
            raise error
        old = self._clients.get(client.identifier)
        if old is not None:  # session takeover [MQTT-3.1.4-2]
            self._lose(old, "connection to the broker lost: session taken over")
        self._clients[client.identifier] = client
        self.log.append(LogEntry(client.identifier, "connect"))

    def _disconnect(self, client: MemoryTransport) -> None:
        if self._clients.get(client.identifier) is client:
            del self._clients[client.identifier]
        self.log.append(LogEntry(client.identifier, "disconnect"))
        self._end(client, "connection closed")

    def _lose(self, client: MemoryTransport, reason: str) -> None:
        if self._clients.get(client.identifier) is client:
            del self._clients[client.identifier]
        self.log.append(LogEntry(client.identifier, "lost"))
        self._end(client, reason)
        if client.will is not None:
            w = client.will
            self.log.append(LogEntry(client.identifier, "will", w.topic, w.payload, w.qos, w.retain))
            self._route(w.topic, w.payload, w.qos, w.retain)

    def _publish(self, client: MemoryTransport, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if "+" in topic or "#" in topic or not topic:
            raise BrokerError(f"invalid topic for PUBLISH: {topic!r}")
        self.log.append(LogEntry(client.identifier, "publish", topic, payload, qos, retain))
        self._route(topic, payload, qos, retain)

    def _route(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = (payload, qos)
            else:
                self.retained.pop(topic, None)
        for client in list(self._clients.values()):
            best = max((q for f, q in client.subscriptions.items() if topic_matches(f, topic)), default=-1)
            if best >= 0:
                client._deliver((topic, payload, min(qos, best), False))

    def _subscribe(self, client: MemoryTransport, topic_filter: str, qos: int) -> int:
        granted = qos
        client.subscriptions[topic_filter] = granted
        self.log.append(LogEntry(client.identifier, "subscribe", topic_filter, qos=granted))
        for topic, (payload, retained_qos) in list(self.retained.items()):
            if topic_matches(topic_filter, topic):
                client._deliver((topic, payload, min(granted, retained_qos), True))
        return granted

    def _unsubscribe(self, client: MemoryTransport, topic_filter: str) -> None:
        client.subscriptions.pop(topic_filter, None)
        self.log.append(LogEntry(client.identifier, "unsubscribe", topic_filter))

    def _end(self, client: MemoryTransport, reason: str) -> None:
        client._ended(reason)
        keep = []
        for owner, waiter in self._held:
            if owner is not client:
                keep.append((owner, waiter))
            elif not waiter.done():
                waiter.set_exception(BrokerError(reason))
        self._held = keep

    async def _acknowledged(self, client: MemoryTransport) -> None:
        if self._holding_acks:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._held.append((client, waiter))
            await waiter


class MemoryTransport:
    """One connection to a :class:`MemoryBroker`, with :class:`~uns.mqtt.client.FastClient`'s API."""

    def __init__(
        self,
        broker: MemoryBroker,
        *,
        identifier: str,
        will: Will | None = None,
        settings: BrokerSettings | None = None,
        high_water: int = 20_000,
        low_water: int = 5_000,
    ) -> None:
        if not 0 <= low_water < high_water:
            raise ValueError("need 0 <= low_water < high_water")
        self.broker = broker
        self.identifier = identifier
        self.will = will
        self.settings = settings or parse_broker_url("mqtt://memory")
        self.high_water = high_water
        self.low_water = low_water
        #: filter -> granted QoS, while connected
        self.subscriptions: dict[str, int] = {}
        #: times delivery paused because ``high_water`` messages waited
        self.pauses = 0
        self._messages: list[Message] = []
        self._queued: deque[Message] = deque()  # what the broker holds while we do not read
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
        self.broker._connect(self)
        self._live = True

    async def disconnect(self) -> None:
        if self._live:
            self.broker._disconnect(self)
        await asyncio.sleep(0)

    def abort(self) -> None:
        """Drop the connection without DISCONNECT, as a crash would (the Will is published)."""
        if self._live:
            self.broker._lose(self, "connection to the broker lost: aborted by this client")

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
        return self.broker._subscribe(self, topic, qos)

    async def unsubscribe(self, topic: str) -> None:
        self._require_connected()
        await asyncio.sleep(0)
        self._require_connected()
        self.broker._unsubscribe(self, topic)

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self._require_connected()
        self.broker._publish(self, topic, payload, qos, retain)
        if qos:  # QoS 0 returns at once, as FastClient's does with room in the socket buffer
            await asyncio.sleep(0)  # the PUBACK's round trip
            await self.broker._acknowledged(self)
            self._require_connected()  # lost before the acknowledgement

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        if not self._live:
            return False
        self.broker._publish(self, topic, payload, qos, retain)
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
        messages = self._messages
        taken = messages[:limit]
        del messages[:limit]
        if self._paused and len(messages) < self.low_water:
            self._paused = False
            queued = self._queued
            while queued and not self._paused:
                self._deliver(queued.popleft())
        return taken

    # ------------------------------------------------------------ called by the broker
    def _deliver(self, message: Message) -> None:
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
        self.subscriptions.clear()
        self._queued.clear()  # a clean session: what the broker held for us is gone
        self._paused = False
        if self._wake is not None:
            self._wake.set()


if TYPE_CHECKING:  # mypy proves both satisfy the protocols the engine takes

    def _conforms(broker: MemoryBroker) -> tuple[TransportFactory, Transport]:
        return broker, broker.client("x")
