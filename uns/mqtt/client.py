"""The project's asyncio MQTT 3.1.1 client: the engine, the CLI and the simulator use it.

Built for the engine's hot receive path: the :class:`asyncio.Protocol` parses
*every* complete packet of each received chunk in one loop
(:class:`~uns.mqtt.wire.PacketReader`), appends a plain tuple per PUBLISH and
writes the acknowledgements of the whole chunk in one ``write``; the
consumer takes messages in batches (:meth:`FastClient.take`).  Publishes of
one event-loop iteration leave in one ``write`` (:mod:`uns.mqtt.outbound`).

Scope: MQTT 3.1.1 (protocol level 4); clean or persistent sessions (nothing
is retransmitted: on a lost connection every pending acknowledgement fails
with :class:`~uns.errors.BrokerError`); QoS 0/1/2 in both directions; a Will;
keepalive (:mod:`uns.mqtt.keepalive`); back-pressure by pausing the socket
when ``high_water`` messages wait to be taken (the broker then queues for us, up
to its own limits; the connection, our pings and our publishes go on however
long the pause: docs/lake.md section 4).  No reconnect: the caller makes a new connection and decides, by
the error's class, whether to (:mod:`uns.mqtt.failures`).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from uns.errors import BrokerError, ConfigError
from uns.mqtt.acks import ManualAcks
from uns.mqtt.failures import (
    answered_with_tls,
    closed_early,
    connack_failure,
    socket_failure,
    tls_settings_failure,
)
from uns.mqtt.keepalive import bound_unacknowledged, keep_alive
from uns.mqtt.outbound import ClientProtocol, Inflight, Outbox
from uns.mqtt.settings import BrokerSettings, tls_context
from uns.mqtt.wire import (
    CONNACK,
    DISCONNECT_PACKET,
    PINGRESP,
    PUBREC,
    PUBREL,
    SUBACK,
    HeldAckReader,
    HeldMessage,
    Message,
    MqttProtocolError,
    PacketReader,
    Will,
    encode_ack,
    encode_connect,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
    parse_connack,
    parse_suback,
)

__all__ = ["FastClient", "HeldMessage", "Message", "Will"]


class FastClient(ManualAcks):
    """One MQTT 3.1.1 connection; received messages wait in order until :meth:`take`.

    ::

        async with FastClient(settings, identifier="uns-host") as client:
            await client.subscribe("spBv1.0/#")
            while True:
                await client.wait_messages()  # BrokerError once lost and drained
                for topic, payload, qos, retain in client.take():
                    ...

    :meth:`connect` raises :class:`~uns.errors.BrokerRefused` when retrying
    cannot help (credentials, authorization, certificates) and
    :class:`~uns.errors.BrokerError` otherwise.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        identifier: str,
        will: Will | None = None,
        clean_session: bool = True,
        manual_ack: bool = False,
        connect_timeout: float = 10.0,
        high_water: int = 20_000,
        low_water: int = 5_000,
        max_write_buffer: int = 8 << 20,
    ) -> None:
        if not 0 <= low_water < high_water:
            raise ValueError("need 0 <= low_water < high_water")
        self.settings = settings
        self.identifier = identifier
        self.will = will
        self.clean_session = clean_session
        #: QoS 1 PUBLISHes are acknowledged by the caller (:meth:`take_held`, :meth:`ack`),
        #: not on receipt; with ``clean_session=False`` the broker redelivers the
        #: unacknowledged ones on the next connection
        self.manual_ack = manual_ack
        self.connect_timeout = connect_timeout
        self.high_water = high_water
        self.low_water = low_water
        self.max_write_buffer = max_write_buffer
        #: the broker kept a session for us (only with ``clean_session=False``), from the CONNACK
        self.session_present = False
        self._messages: list[Message] = []
        self._reader = PacketReader(self._messages)
        self._ids: list[int] | None = None  # manual_ack: the packet id of each message, same index
        self._generation = 0  # connections made: a token of take_held names its connection
        self._transport: asyncio.Transport | None = None
        self._protocol: ClientProtocol | None = None
        self._outbox: Outbox | None = None
        self._connack: asyncio.Future[tuple[bool, int]] | None = None
        self._inflight = Inflight()
        self._message_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._error: str | None = None  # why the connection ended, if not by disconnect()
        self._closing = False  # disconnect() was called
        self._read_paused = False
        self._counters = {
            "messages_received": 0,
            "bytes_received": 0,
            "reads": 0,  # data_received calls: messages_received / reads is the batch size
            "publishes_sent": 0,
            "pauses": 0,
            "publishes_refused": 0,  # publish_nowait with the write buffer over max_write_buffer
        }

    # -------------------------------------------------------------- lifecycle
    async def connect(self) -> None:
        """Open TCP (TLS for ``mqtts``), send CONNECT, wait for CONNACK.

        BrokerRefused for a refusal that a retry gets again, BrokerError otherwise."""
        if self.connected:
            return
        s = self.settings
        loop = asyncio.get_running_loop()
        await self._stop_keepalive()
        self._reset()
        try:
            ssl_context = tls_context(s) if s.tls else None
        except ConfigError as exc:
            refused = tls_settings_failure(exc)
            self._abort_transport(str(refused))
            raise refused from exc
        connack: asyncio.Future[tuple[bool, int]] = loop.create_future()
        self._connack = connack
        try:
            async with asyncio.timeout(self.connect_timeout):
                try:
                    transport, protocol = await loop.create_connection(
                        lambda: ClientProtocol(self),
                        s.host,
                        s.port,
                        ssl=ssl_context,
                        server_hostname=(s.host if not s.tls_insecure else "") if s.tls else None,
                    )
                except OSError as exc:  # ssl.SSLError included
                    raise socket_failure(exc) from exc
                self._transport, self._protocol, self._outbox = transport, protocol, protocol.outbox
                protocol.outbox.write(
                    encode_connect(
                        self.identifier,
                        keepalive=s.keepalive,
                        clean_session=self.clean_session,
                        username=s.username,
                        password=s.password,
                        will=self.will,
                    )
                )
                session_present, code = await connack
        except TimeoutError as exc:
            error = BrokerError(f"no answer within {self.connect_timeout:g} s")
            self._abort_transport(str(error))
            raise error from exc
        except BrokerError as exc:
            self._abort_transport(str(exc))
            raise
        except BaseException:
            self._abort_transport("connect() was cancelled")
            raise
        finally:
            self._connack = None
        if code:
            refusal = connack_failure(code)
            self._abort_transport(str(refusal))
            raise refusal
        self.session_present = session_present
        if s.keepalive > 0:
            bound_unacknowledged(transport.get_extra_info("socket"), s.keepalive)
            alive = keep_alive(
                protocol.outbox,
                s.keepalive,
                bytes_received=lambda: self._counters["bytes_received"],
                current=lambda: protocol is self._protocol,
                fail=self._fail,
                reading_paused=lambda: self._read_paused,
            )
            self._keepalive_task = asyncio.create_task(alive, name=f"mqtt keepalive {self.identifier}")

    def _reset(self) -> None:
        """Fresh per-connection state; received messages stay until taken."""
        self._generation += 1
        if self.manual_ack:
            reader = HeldAckReader(self._messages)
            # messages of an earlier connection cannot be acknowledged on this one
            reader.packet_ids.extend([0] * len(self._messages))
            self._reader, self._ids = reader, reader.packet_ids
        else:
            self._reader = PacketReader(self._messages)
        self._inflight = Inflight()
        self._error = None
        self._closing = False
        self._read_paused = False
        self.session_present = False
        self._closed = asyncio.get_running_loop().create_future()

    def _abort_transport(self, reason: str) -> None:
        """Give up a connection that never got through CONNACK (its late callbacks are ignored)."""
        self._error = reason
        if self._transport is not None:
            self._transport.abort()
        self._transport = None
        self._protocol = None
        self._outbox = None
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def disconnect(self) -> None:
        """Send DISCONNECT (the broker drops the Will) and close; idempotent, never raises."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._closing = True
            self._write(DISCONNECT_PACKET)
            transport.close()
        await self._stop_keepalive()
        if self._closed is not None and transport is not None:
            with contextlib.suppress(TimeoutError, BrokerError):
                async with asyncio.timeout(5):
                    await asyncio.shield(self._closed)
            if not self._closed.done():
                transport.abort()
        self._transport = None

    def abort(self) -> None:
        """Drop the connection without DISCONNECT, as a crash would (the broker publishes the Will)."""
        if self._transport is not None:
            self._error = self._error or "connection to the broker lost: aborted by this client"
            self._transport.abort()

    async def wait_closed(self) -> None:
        """Return when the connection was closed by :meth:`disconnect`; BrokerError if it was lost."""
        if self._closed is None:
            return
        await asyncio.shield(self._closed)
        if self._error is not None:
            raise BrokerError(self._error)

    async def _stop_keepalive(self) -> None:
        task, self._keepalive_task = self._keepalive_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.disconnect()

    # -------------------------------------------------------------- state
    @property
    def connected(self) -> bool:
        """CONNACK received and the connection neither lost nor being closed."""
        t = self._transport
        return t is not None and self._connack is None and self._error is None and not t.is_closing()

    @property
    def pending(self) -> int:
        """Messages received and not yet taken."""
        return len(self._messages)

    @property
    def stats(self) -> dict[str, int]:
        """Counters: messages/bytes received, publishes sent, flow-control pauses, and a few gauges."""
        return {
            **self._counters,
            "bad_topics": self._reader.bad_topics,
            "pending": len(self._messages),
            "inflight": len(self._inflight),
        }

    # -------------------------------------------------------------- receiving
    def take(self, limit: int = 2048) -> list[Message]:
        """Up to ``limit`` received messages in arrival order, removed from the client.
        (With ``manual_ack`` their packet ids are dropped: use :meth:`take_held`.)"""
        if self._ids is not None:
            return [held[:4] for held in self.take_held(limit)]
        messages = self._messages
        if len(messages) <= limit:
            taken = messages.copy()
            messages.clear()
        else:
            taken = messages[:limit]
            del messages[:limit]
        if self._read_paused and len(messages) < self.low_water:
            self._read_paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()
        return taken

    async def wait_messages(self) -> None:
        """Return once :meth:`take` has something; BrokerError when the connection has ended
        and every message received before was taken.  For one consumer at a time."""
        while not self._messages:
            if self._transport is None or self._error is not None or self._closing:
                raise BrokerError(self._error or ("connection closed" if self._closing else "not connected"))
            waiter = asyncio.get_running_loop().create_future()
            self._message_waiter = waiter
            try:
                await waiter
            finally:
                self._message_waiter = None

    def _data_received(self, protocol: ClientProtocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return  # a late chunk of an earlier connection
        messages = self._messages
        before = len(messages)
        counters = self._counters
        counters["bytes_received"] += len(data)
        counters["reads"] += 1
        if self._connack is not None and not self._connack.done() and not self.settings.tls:
            tls = answered_with_tls(data)
            if tls is not None:  # plain MQTT to a TLS port: no retry heals that
                self._connack.set_exception(tls)
                return
        reader = self._reader
        try:
            controls = reader.feed(data)
        except MqttProtocolError as exc:
            self._fail(f"protocol error from the broker: {exc.reason}")
            controls = []
        if reader.replies:
            if self._error is None:
                self._write(bytes(reader.replies))
            reader.replies.clear()
        if controls:
            self._handle_controls(controls)
        received = len(messages) - before
        if received:
            counters["messages_received"] += received
            waiter = self._message_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if len(messages) >= self.high_water and not self._read_paused and self._error is None:
                # back-pressure: the broker queues for us instead of our memory growing
                self._read_paused = True
                counters["pauses"] += 1
                if self._transport is not None:
                    self._transport.pause_reading()

    def _handle_controls(self, controls: list[tuple[int, int, bytes]]) -> None:
        for kind, _flags, body in controls:
            if kind == CONNACK:
                if self._connack is not None and not self._connack.done():
                    self._connack.set_result(parse_connack(body))
            elif kind == PUBREC:  # our QoS 2 publish: release it, done at PUBCOMP
                self._write(encode_ack(PUBREL, body[0] << 8 | body[1]))
            elif kind == SUBACK:
                packet_id, codes = parse_suback(body)
                self._inflight.resolve(packet_id, codes[0])
            elif kind != PINGRESP:  # PUBACK, PUBCOMP, UNSUBACK
                self._inflight.resolve(body[0] << 8 | body[1], 0)

    def _connection_lost(self, protocol: ClientProtocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return
        reason = "closed by the broker" if exc is None else getattr(exc, "strerror", None) or str(exc)
        if not self._closing and self._error is None:
            self._error = f"connection to the broker lost: {reason}"
        if self._connack is not None and not self._connack.done():
            lost = (
                BrokerError("connection closed by the broker before CONNACK")
                if exc is None
                else socket_failure(
                    exc,
                    before_connack=True,
                    tls_without_certificate=self.settings.tls and not self.settings.cert_file,
                )
            )
            if not self.settings.tls:  # plain MQTT: a TLS port closes it so
                lost = closed_early(reason)
            self._connack.set_exception(lost)
        self._inflight.fail_all(self._error or "connection closed")
        if self._message_waiter is not None and not self._message_waiter.done():
            self._message_waiter.set_result(None)  # wait_messages re-checks and raises
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if self._keepalive_task is not None and self._keepalive_task is not asyncio.current_task():
            self._keepalive_task.cancel()

    def _fail(self, reason: str) -> None:
        """End the connection for ``reason`` (a protocol error, a dead keepalive)."""
        if self._error is None and not self._closing:
            self._error = reason
        if self._transport is not None:
            self._transport.abort()

    # -------------------------------------------------------------- sending
    def _write(self, data: bytes) -> None:
        assert self._outbox is not None
        self._outbox.write(data)

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Queue for the end of this loop iteration; False when not connected, or when more
        than ``max_write_buffer`` bytes already wait for the socket (a slow broker: the
        caller queues, drops or awaits :meth:`publish`, instead of memory growing).

        A QoS 1/2 message gets a packet id whose acknowledgement nobody awaits;
        on a lost connection it is simply gone (no resend)."""
        outbox = self._outbox
        if outbox is None or not self.connected:
            return False
        # bytes not yet taken by the socket (inline: this runs once per message)
        if outbox.transport.get_write_buffer_size() + outbox.queued_bytes > self.max_write_buffer:
            self._counters["publishes_refused"] += 1
            return False
        packet_id = self._inflight.allocate(None) if qos else 0
        outbox.queue(encode_publish(topic, payload, qos, retain, packet_id))
        self._counters["publishes_sent"] += 1
        return True

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        timeout: float = 10.0,  # noqa: ASYNC109 - the API takes per-call timeouts
    ) -> None:
        """Publish; QoS 0 returns once written (after a drain if the socket is full), QoS 1/2
        once acknowledged.  BrokerError when not connected, lost, or not acknowledged in time."""
        outbox = self._require_connected()
        if not qos:
            outbox.write(encode_publish(topic, payload, 0, retain))
            self._counters["publishes_sent"] += 1
            await outbox.drain()
            if self._error is not None:
                raise BrokerError(self._error)
            return
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        packet_id = self._inflight.allocate(waiter)
        packet = encode_publish(topic, payload, qos, retain, packet_id)
        await self._request(packet_id, waiter, packet, timeout, "PUBACK" if qos == 1 else "PUBCOMP")
        self._counters["publishes_sent"] += 1

    async def subscribe(self, topic: str, qos: int = 0, timeout: float = 10.0) -> int:  # noqa: ASYNC109 - the API takes per-call timeouts
        """Subscribe to one filter; return the granted QoS (BrokerError when refused, lost or late)."""
        self._require_connected()
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        packet_id = self._inflight.allocate(waiter)
        packet = encode_subscribe(packet_id, topic, qos)
        granted = await self._request(packet_id, waiter, packet, timeout, "SUBACK")
        if granted == 0x80:
            raise BrokerError(f"broker refused the subscription to {topic!r}")
        return granted

    async def unsubscribe(self, topic: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - the API takes per-call timeouts
        """Unsubscribe from one filter (BrokerError when lost or not acknowledged in time)."""
        self._require_connected()
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        packet_id = self._inflight.allocate(waiter)
        await self._request(packet_id, waiter, encode_unsubscribe(packet_id, topic), timeout, "UNSUBACK")

    def _require_connected(self) -> Outbox:
        if self._outbox is None or not self.connected:
            raise BrokerError(self._error or "not connected")
        return self._outbox

    async def _request(
        self,
        packet_id: int,
        waiter: asyncio.Future[int],
        packet: bytes,
        timeout: float,  # noqa: ASYNC109 - the API takes per-call timeouts
        answer: str,
    ) -> int:
        try:
            self._write(packet)
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError as exc:
            raise BrokerError(f"no {answer} within {timeout:g} s") from exc
        finally:
            self._inflight.forget(packet_id, waiter)
