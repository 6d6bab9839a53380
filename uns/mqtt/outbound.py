"""The socket side of one MQTT connection: bytes on their way out, acknowledgements awaited.

:class:`ClientProtocol` is the asyncio protocol of the connection: it hands
received bytes and the loss of the connection to its client and owns the
connection's :class:`Outbox`.

:class:`Outbox` coalesces: the packets queued in one event-loop iteration
leave in one ``write`` (one system call instead of one per message), and a
packet written at once never overtakes them.  It also carries the transport's
back-pressure (``pause_writing``/``resume_writing``) to whoever awaits
:meth:`Outbox.drain`.

:class:`Inflight` hands out packet ids and remembers who waits for each one's
acknowledgement (PUBACK, PUBCOMP, SUBACK, UNSUBACK), and keeps MQTT 5's publish quota.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple, Protocol

from uns.errors import BrokerError

__all__ = ["Answer", "ClientProtocol", "Inflight", "Outbox", "ProtocolOwner"]


class Outbox:
    """Writes to one transport, in one order, with coalescing and back-pressure."""

    __slots__ = ("_drain_waiters", "_queued", "paused", "queued_bytes", "sent_any", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.paused = False
        #: something was written since the keepalive timer last looked (it resets the flag)
        self.sent_any = False
        self._queued: list[bytes] = []
        #: bytes queued for the end of this loop iteration (not yet in the transport)
        self.queued_bytes = 0
        self._drain_waiters: list[asyncio.Future[None]] = []

    def write(self, data: bytes) -> None:
        """Write now; whatever was queued before goes first (one stream, one order)."""
        if self._queued:
            self._queued.append(data)
            data = self._take()
        self.transport.write(data)
        self.sent_any = True

    def queue(self, data: bytes) -> None:
        """Write at the end of this event-loop iteration, together with the others queued."""
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._flush)
        self._queued.append(data)
        self.queued_bytes += len(data)

    def _take(self) -> bytes:
        data = b"".join(self._queued)
        self._queued.clear()
        self.queued_bytes = 0
        return data

    def _flush(self) -> None:
        if not self._queued:
            return
        if self.transport.is_closing():
            self._take()  # the connection is gone: like bytes in a dead socket's buffer
            return
        self.transport.write(self._take())
        self.sent_any = True

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        """The transport's buffer drained (or the connection ended): release the waiters."""
        self.paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Return once the transport takes more (at once unless it asked us to pause)."""
        if self.paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter


class Answer(NamedTuple):
    """What acknowledged a request: the code (SUBACK: the granted QoS; MQTT 5: the reason code,
    >= 0x80 a refusal) and the broker's reason string, if it sent one (MQTT 5)."""

    code: int
    reason: str | None = None


class Inflight:
    """Packet ids in use, each with the future waiting for its acknowledgement (or None).

    It also keeps the publish quota of MQTT 5: the broker's Receive Maximum bounds how many
    QoS 1/2 PUBLISHes may wait for their acknowledgement at once (3.1.1: 65535, no bound
    in practice); :attr:`publishing` counts them and :meth:`quota_freed` waits for one to end."""

    __slots__ = ("_next", "_publishes", "_quota_waiters", "_waiters")

    def __init__(self) -> None:
        self._waiters: dict[int, asyncio.Future[Answer] | None] = {}
        self._publishes: set[int] = set()  # the ids of QoS 1/2 PUBLISHes among them
        self._quota_waiters: list[asyncio.Future[None]] = []
        self._next = 0

    def __len__(self) -> int:
        return len(self._waiters)

    @property
    def publishing(self) -> int:
        """QoS 1/2 PUBLISHes not yet acknowledged (what the broker's Receive Maximum bounds)."""
        return len(self._publishes)

    def allocate(self, waiter: asyncio.Future[Answer] | None, *, publish: bool = False) -> int:
        """A free packet id for a packet whose acknowledgement ``waiter`` gets (None: nobody
        waits); ``publish`` for a QoS 1/2 PUBLISH (it counts against the quota)."""
        if len(self._waiters) >= 65535:
            raise BrokerError("no free packet id: 65535 acknowledgements outstanding")
        while True:
            self._next = self._next % 65535 + 1
            if self._next not in self._waiters:
                self._waiters[self._next] = waiter
                if publish:
                    self._publishes.add(self._next)
                return self._next

    def resolve(self, packet_id: int, code: int, reason: str | None = None) -> None:
        """The acknowledgement of ``packet_id`` arrived, carrying ``code`` (SUBACK: granted QoS)."""
        waiter = self._waiters.pop(packet_id, None)
        self._release(packet_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(code, reason))

    def forget(self, packet_id: int, waiter: asyncio.Future[Answer] | None) -> None:
        """Give up waiting (timeout, cancellation); the id is free again."""
        if packet_id in self._waiters and self._waiters[packet_id] is waiter:
            del self._waiters[packet_id]
            self._release(packet_id)

    def fail_all(self, reason: str) -> None:
        """The connection ended: every waiter gets a BrokerError, every id is free."""
        for waiter in self._waiters.values():
            if waiter is not None and not waiter.done():
                waiter.set_exception(BrokerError(reason))
        self._waiters.clear()
        self._publishes.clear()
        self._wake()

    async def quota_freed(self) -> None:
        """Return once a QoS 1/2 PUBLISH was acknowledged (or the connection ended)."""
        waiter = asyncio.get_running_loop().create_future()
        self._quota_waiters.append(waiter)
        await waiter

    def _release(self, packet_id: int) -> None:
        if packet_id in self._publishes:
            self._publishes.discard(packet_id)
            self._wake()

    def _wake(self) -> None:
        waiters, self._quota_waiters = self._quota_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class ProtocolOwner(Protocol):
    """What :class:`ClientProtocol` calls on its client (``uns.mqtt.client.FastClient``)."""

    def _data_received(self, protocol: ClientProtocol, data: bytes) -> None: ...

    def _connection_lost(self, protocol: ClientProtocol, exc: Exception | None) -> None: ...


class ClientProtocol(asyncio.Protocol):
    """Forwards the transport's callbacks to its client; owns the connection's :class:`Outbox`."""

    outbox: Outbox

    def __init__(self, client: ProtocolOwner) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.outbox = Outbox(transport)

    def data_received(self, data: bytes) -> None:
        self.client._data_received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.outbox.resume()  # a publish waiting for the socket to drain learns of the loss now
        self.client._connection_lost(self, exc)

    def pause_writing(self) -> None:
        self.outbox.pause()

    def resume_writing(self) -> None:
        self.outbox.resume()
