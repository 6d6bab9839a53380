"""What the engine needs of a broker connection, as a protocol.

The engine talks to the broker through :class:`Transport` only, and makes
each connection with a :class:`TransportFactory`.  In production that is
:class:`uns.mqtt.client.FastClient` itself (its constructor is the factory);
the unit tests pass :class:`uns.engine.memory.MemoryBroker`, whose
connections route publishes in memory, so the host logic (sessions, STATE,
rebirths, back-pressure, reconnects, shutdown order) is tested without a
broker process -- the way httpx tests its client against a mock transport.

A transport is one connection: ``connect`` once, then subscribe, take what
arrives, publish, and ``disconnect``.  It never reconnects by itself; the
engine's run loop makes a new one from the factory (clean session, new Will).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from uns.mqtt.settings import BrokerSettings
from uns.mqtt.wire import HeldMessage, Message, Will

__all__ = ["HeldMessage", "Message", "Publish", "Transport", "TransportFactory", "Will"]


class Publish(NamedTuple):
    """A message the engine decided to send (e.g. the STATE re-assertion)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Transport(Protocol):
    """One MQTT connection as the engine uses it (:class:`~uns.mqtt.client.FastClient`'s API).

    Errors are :class:`~uns.errors.BrokerError`; a refusal that retrying cannot heal
    (credentials, authorization, certificate) is :class:`~uns.errors.BrokerRefused`."""

    @property
    def connected(self) -> bool:
        """CONNACK received and the connection neither lost nor being closed."""
        ...

    @property
    def session_present(self) -> bool:
        """The broker kept a session for us (``clean_session=False``), from the last CONNACK."""
        ...

    @property
    def pending(self) -> int:
        """Messages received and not yet taken (the status document's ``receive_queue``)."""
        ...

    async def connect(self) -> None:
        """Connect and wait for CONNACK."""
        ...

    async def disconnect(self) -> None:
        """Close cleanly (the broker drops the Will); idempotent, never raises."""
        ...

    async def subscribe(self, topic: str, qos: int = 0) -> int:
        """Subscribe to one filter; return the granted QoS."""
        ...

    async def unsubscribe(self, topic: str) -> None:
        """Unsubscribe from one filter."""
        ...

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish; QoS 1/2 return once acknowledged."""
        ...

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Hand a message over without waiting; False when it cannot be sent now."""
        ...

    async def wait_messages(self) -> None:
        """Return once :meth:`take` has something; BrokerError when the connection ended
        and everything received before was taken."""
        ...

    def take(self, limit: int = 2048) -> list[Message]:
        """Up to ``limit`` received messages in arrival order, removed from the transport.

        Taking is also what lifts back-pressure: a transport stops reading from the
        broker while too many messages wait, and reads again once they are taken."""
        ...

    def take_held(self, limit: int = 2048) -> list[HeldMessage]:
        """``manual_ack``: as :meth:`take`, each message with the packet id to acknowledge
        it by (0: nothing is owed)."""
        ...

    def ack_all(self, packet_ids: Iterable[int]) -> bool:
        """``manual_ack``: PUBACK these messages, in the order taken; False when their
        connection is gone (the broker redelivers them to the persistent session)."""
        ...


class TransportFactory(Protocol):
    """Makes one (unconnected) transport per connection attempt.

    :class:`~uns.mqtt.client.FastClient` is one: ``FastClient(settings, identifier=..., will=...)``."""

    def __call__(
        self,
        settings: BrokerSettings,
        *,
        identifier: str,
        will: Will | None,
        clean_session: bool = True,
        manual_ack: bool = False,
    ) -> Transport: ...
