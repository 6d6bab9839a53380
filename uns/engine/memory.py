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
- clean sessions end with the connection; a persistent one (``clean_session=False``,
  kept by identifier as mosquitto does with ``persistence true``) keeps its
  subscriptions, queues QoS 1/2 messages while its client is away (QoS 0 ones are
  dropped, mosquitto's ``queue_qos0_messages false``), and on the next connection
  (``session_present``) first redelivers the messages it sent but never got a PUBACK
  for (same packet id, DUP: logged as ``redeliver``), then the queued ones;
- ``manual_ack=True``: QoS 1 messages are acknowledged by the client
  (:meth:`MemoryTransport.take_held`, :meth:`MemoryTransport.ack_all`), not on receipt.

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

from uns.engine.memory_client import BrokerSession, MemoryTransport
from uns.errors import BrokerError
from uns.mqtt.minibroker import topic_matches
from uns.mqtt.settings import BrokerSettings
from uns.mqtt.wire import Will

if TYPE_CHECKING:
    from uns.engine.transport import Transport, TransportFactory

__all__ = ["LogEntry", "MemoryBroker", "MemoryTransport"]


class LogEntry(NamedTuple):
    """One thing a client did, as the broker saw it.

    ``action`` is connect, refused, subscribe, unsubscribe, publish, disconnect,
    lost (the connection dropped without DISCONNECT), will (its Will, published),
    redeliver (an unacknowledged message sent again on reconnect, with DUP) or ack
    (a PUBACK the client sent itself, ``manual_ack``; ``qos`` is the packet id)."""

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
        #: identifier -> its persistent session (``clean_session=False``)
        self.sessions: dict[str, BrokerSession] = {}
        self._refusals: list[BrokerError] = []
        self._refused: dict[str, int] = {}  # identifier -> how many of _refusals it has had
        self._refusing: BrokerError | None = None
        self._refusing_for: dict[str, BrokerError] = {}  # refuse(identifier=...)
        self._holding_acks = False
        self._held: list[tuple[MemoryTransport, asyncio.Future[None]]] = []

    # ------------------------------------------------------------ factory
    def __call__(
        self,
        settings: BrokerSettings,
        *,
        identifier: str,
        will: Will | None,
        clean_session: bool = True,
        manual_ack: bool = False,
    ) -> MemoryTransport:
        """A new, unconnected connection (the engine's ``TransportFactory``)."""
        flags = {"clean_session": clean_session, "manual_ack": manual_ack}
        return self.client(identifier, will=will, settings=settings, **flags)

    def client(
        self,
        identifier: str,
        *,
        will: Will | None = None,
        high_water: int | None = None,
        low_water: int | None = None,
        clean_session: bool = True,
        manual_ack: bool = False,
        settings: BrokerSettings | None = None,
    ) -> MemoryTransport:
        """A new, unconnected connection for a test's own edge node or listener (the broker's
        own water marks unless given)."""
        return MemoryTransport(
            self,
            identifier=identifier,
            will=will,
            settings=settings,
            high_water=self.high_water if high_water is None else high_water,
            low_water=self.low_water if low_water is None else low_water,
            clean_session=clean_session,
            manual_ack=manual_ack,
        )

    def forget_sessions(self) -> None:
        """Drop every persistent session and what it queued, as a broker restarted
        without persistence does (use after :meth:`drop`)."""
        self.sessions.clear()

    # ------------------------------------------------------------ what tests ask of it
    def refuse(
        self, error: BrokerError | None, *, times: int | None = None, identifier: str | None = None
    ) -> None:
        """Make connection attempts fail with ``error``: the next ``times`` ones of each client
        identifier (queued after earlier ``times`` refusals; an engine's two connections
        each get them), or all of them from now on (``times=None``) until ``refuse(None)``.
        With ``identifier``: every attempt of that client only, until ``refuse(None,
        identifier=...)`` (``times`` is ignored)."""
        if identifier is not None:
            if error is None:
                self._refusing_for.pop(identifier, None)
            else:
                self._refusing_for[identifier] = error
            return
        if times is None:
            self._refusing = error
            if error is None:
                self._refusals.clear()
                self._refused.clear()
        elif error is not None:
            self._refusals.extend([error] * times)

    def drop(self, identifier: str | None = None, reason: str = "closed by the broker") -> None:
        """Lose the connection of ``identifier`` (every connection when None), as a broker
        restart or a network failure would: its Will is published, its session ends."""
        for client in list(self._clients.values()):
            if identifier is None or client.identifier == identifier:
                self.lose(client, f"connection to the broker lost: {reason}")

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
    def attach(self, client: MemoryTransport) -> None:
        self.connects += 1
        had = self._refused.get(client.identifier, 0)
        if had < len(self._refusals):
            self._refused[client.identifier] = had + 1
            error: BrokerError | None = self._refusals[had]
        else:
            error = self._refusing_for.get(client.identifier, self._refusing)
        if error is not None:
            self.log.append(LogEntry(client.identifier, "refused", payload=str(error).encode()))
            raise error
        old = self._clients.get(client.identifier)
        if old is not None:  # session takeover [MQTT-3.1.4-2]
            self.lose(old, "connection to the broker lost: session taken over")
        self._clients[client.identifier] = client
        self.log.append(LogEntry(client.identifier, "connect"))
        if client.clean_session:
            self.sessions.pop(client.identifier, None)
            client.session_present = False
            return
        session = self.sessions.get(client.identifier)
        client.session_present = session is not None
        if session is None:
            session = self.sessions[client.identifier] = BrokerSession()
        client.subscriptions = session.subscriptions
        client._session = session

    def resume(self, client: MemoryTransport) -> None:
        """A persistent session's client is back: unacknowledged messages again (DUP), then
        what was queued while it was away."""
        session = client._session
        if session is None:
            return
        for packet_id, (topic, payload, qos, retain) in list(session.unacked.items()):
            self.log.append(LogEntry(client.identifier, "redeliver", topic, payload, qos, retain))
            client._deliver((topic, payload, qos, retain, packet_id))
        queued, session.queued = session.queued, deque()
        for message in queued:
            client._deliver(client._hold(message))

    def detach(self, client: MemoryTransport) -> None:
        if self._clients.get(client.identifier) is client:
            del self._clients[client.identifier]
        self.log.append(LogEntry(client.identifier, "disconnect"))
        self._end(client, "connection closed")

    def lose(self, client: MemoryTransport, reason: str) -> None:
        if self._clients.get(client.identifier) is client:
            del self._clients[client.identifier]
        self.log.append(LogEntry(client.identifier, "lost"))
        self._end(client, reason)
        if client.will is not None:
            w = client.will
            self.log.append(LogEntry(client.identifier, "will", w.topic, w.payload, w.qos, w.retain))
            self._route(w.topic, w.payload, w.qos, w.retain)

    def route(self, client: MemoryTransport, topic: str, payload: bytes, qos: int, retain: bool) -> None:
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
                client._deliver(client._hold((topic, payload, min(qos, best), False)))
        for identifier, session in self.sessions.items():
            if identifier in self._clients:
                continue
            best = max((q for f, q in session.subscriptions.items() if topic_matches(f, topic)), default=-1)
            if min(qos, best) > 0:  # a session away: QoS 1/2 queue, QoS 0 is dropped
                session.queued.append((topic, payload, min(qos, best), False))

    def subscribe_client(self, client: MemoryTransport, topic_filter: str, qos: int) -> int:
        granted = qos
        client.subscriptions[topic_filter] = granted
        self.log.append(LogEntry(client.identifier, "subscribe", topic_filter, qos=granted))
        for topic, (payload, retained_qos) in list(self.retained.items()):
            if topic_matches(topic_filter, topic):
                client._deliver(client._hold((topic, payload, min(granted, retained_qos), True)))
        return granted

    def unsubscribe_client(self, client: MemoryTransport, topic_filter: str) -> None:
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

    def ack(self, client: MemoryTransport, packet_ids: list[int]) -> None:
        session = client._session
        for packet_id in packet_ids:
            if session is not None and session.unacked.pop(packet_id, None) is not None:
                self.log.append(LogEntry(client.identifier, "ack", qos=packet_id))

    async def acknowledged(self, client: MemoryTransport) -> None:
        if self._holding_acks:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._held.append((client, waiter))
            await waiter


if TYPE_CHECKING:  # mypy proves both satisfy the protocols the engine takes

    def _conforms(broker: MemoryBroker) -> tuple[TransportFactory, Transport]:
        return broker, broker.client("x")
