"""The project's asyncio MQTT client (3.1.1 or 5.0): the engine, the CLI and the simulator use it.

Built for the engine's hot receive path: the :class:`asyncio.Protocol` parses
*every* complete packet of each received chunk in one loop
(:class:`~uns.mqtt.wire.PacketReader`), appends a plain tuple per PUBLISH and
writes the acknowledgements of the whole chunk in one ``write``; the
consumer takes messages in batches (:meth:`FastClient.take`).  Publishes of
one event-loop iteration leave in one ``write`` (:mod:`uns.mqtt.outbound`).

Scope: MQTT 3.1.1 (protocol level 4) or, with ``BrokerSettings.protocol = 5``,
MQTT 5.0 (:mod:`uns.mqtt.wire.v5`: a clean session is Clean Start with Session
Expiry 0, a persistent one Clean Start 0 with ``session_expiry``; the broker's
limits are kept, :mod:`uns.mqtt.sending`; its reason codes become the errors'
text); clean or persistent sessions (nothing
is retransmitted: on a lost connection every pending acknowledgement fails
with :class:`~uns.errors.BrokerError`); QoS 0/1/2 in both directions; a Will;
keepalive (:mod:`uns.mqtt.keepalive`); back-pressure by pausing the socket
when ``high_water`` messages wait to be taken (the broker then queues for us, up
to its own limits; the connection, our pings and our publishes go on however
long the pause: docs/lake.md section 4).  In MQTT 5 a ``manual_ack`` connection asks
for a Receive Maximum instead: the broker sends no more unacknowledged QoS 1
messages than that, so a caller that holds acknowledgements back (the lake is
degraded) stops the flow without pausing the socket.  No reconnect: the caller
makes a new connection and decides, by the error's class, whether to
(:mod:`uns.mqtt.failures`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial
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
from uns.mqtt.sending import Sending
from uns.mqtt.settings import BrokerSettings, tls_context
from uns.mqtt.wire import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    PINGRESP,
    PUBREC,
    PUBREL,
    SUBACK,
    UNSUBACK,
    ConnAck,
    HeldAckReader,
    HeldMessage,
    Message,
    MqttProtocolError,
    PacketReader,
    Will,
    encode_ack,
    encode_connect,
    encode_connect5,
    parse_ack5,
    parse_connack,
    parse_connack5,
    parse_disconnect5,
    parse_suback,
    parse_suback5,
    reason_text,
)

__all__ = ["FastClient", "HeldMessage", "Message", "Will"]


#: MQTT 5 session expiry of a persistent session (``clean_session=False``): never, as a
#: 3.1.1 persistent session (a broker may grant less; its CONNACK then says so)
PERSISTENT_SESSION_EXPIRY = 0xFFFFFFFF
#: MQTT 5 Receive Maximum a ``manual_ack`` connection asks for: unacknowledged QoS 1
#: messages the broker may send at once (its flow control while the caller holds back)
HELD_RECEIVE_MAXIMUM = 1024


class FastClient(ManualAcks, Sending):
    """One MQTT connection (3.1.1 or 5.0); received messages wait in order until :meth:`take`.

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
        session_expiry: int | None = None,
        receive_maximum: int | None = None,
    ) -> None:
        if not 0 <= low_water < high_water:
            raise ValueError("need 0 <= low_water < high_water")
        if settings.protocol not in (4, 5):
            raise ValueError(f"MQTT protocol level {settings.protocol}: 4 (3.1.1) or 5 (5.0)")
        self.settings = settings
        self._v5 = settings.protocol == 5
        #: MQTT 5: seconds the broker keeps the session after the connection (default: 0 for
        #: a clean session, :data:`PERSISTENT_SESSION_EXPIRY` for a persistent one)
        self.session_expiry = (
            session_expiry
            if session_expiry is not None
            else 0
            if clean_session
            else PERSISTENT_SESSION_EXPIRY
        )
        #: MQTT 5: unacknowledged QoS 1/2 messages the broker may send us at once
        self.receive_maximum = (
            receive_maximum if receive_maximum is not None else HELD_RECEIVE_MAXIMUM if manual_ack else None
        )
        #: the broker's limits, from the last CONNACK (3.1.1: none)
        self.limits = ConnAck(False, 0)
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
        self._reader = PacketReader(self._messages, v5=self._v5)
        self._ids: list[int] | None = None  # manual_ack: the packet id of each message, same index
        self._generation = 0  # connections made: a token of take_held names its connection
        self._transport: asyncio.Transport | None = None
        self._protocol: ClientProtocol | None = None
        self._outbox: Outbox | None = None
        self._connack: asyncio.Future[ConnAck] | None = None
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
            "publishes_downgraded": 0,  # MQTT 5: QoS or retain above what the broker allows
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
        connack: asyncio.Future[ConnAck] = loop.create_future()
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
                protocol.outbox.write(self._connect_packet())
                ack = await connack
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
        if ack.code:
            refusal = connack_failure(ack, v5=self._v5)
            self._abort_transport(str(refusal))
            raise refusal
        self.session_present = ack.session_present
        self.limits = ack
        # MQTT 5: a Server Keep Alive replaces ours [MQTT-3.2.2-21]
        keepalive = s.keepalive if ack.server_keep_alive is None else ack.server_keep_alive
        if keepalive > 0:
            bound_unacknowledged(transport.get_extra_info("socket"), keepalive)
            alive = keep_alive(
                protocol.outbox,
                keepalive,
                bytes_received=lambda: self._counters["bytes_received"],
                current=lambda: protocol is self._protocol,
                fail=self._fail,
                reading_paused=lambda: self._read_paused,
            )
            self._keepalive_task = asyncio.create_task(alive, name=f"mqtt keepalive {self.identifier}")

    def _connect_packet(self) -> bytes:
        s = self.settings
        encode: Callable[..., bytes] = encode_connect
        if self._v5:  # clean_session is MQTT 5's Clean Start
            encode = partial(
                encode_connect5, session_expiry=self.session_expiry, receive_maximum=self.receive_maximum
            )
        return encode(
            self.identifier,
            keepalive=s.keepalive,
            clean_session=self.clean_session,
            username=s.username,
            password=s.password,
            will=self.will,
        )

    def _reset(self) -> None:
        """Fresh per-connection state; received messages stay until taken."""
        self._generation += 1
        self.limits = ConnAck(False, 0)
        if self.manual_ack:
            reader = HeldAckReader(self._messages, v5=self._v5)
            # messages of an earlier connection cannot be acknowledged on this one
            reader.packet_ids.extend([0] * len(self._messages))
            self._reader, self._ids = reader, reader.packet_ids
        else:
            self._reader = PacketReader(self._messages, v5=self._v5)
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
        if self._v5:
            self._handle_controls5(controls)
            return
        for kind, _flags, body in controls:
            if kind == CONNACK:
                if self._connack is not None and not self._connack.done():
                    self._connack.set_result(ConnAck(*parse_connack(body)))
            elif kind == PUBREC:  # our QoS 2 publish: release it, done at PUBCOMP
                self._write(encode_ack(PUBREL, body[0] << 8 | body[1]))
            elif kind == SUBACK:
                packet_id, codes = parse_suback(body)
                self._inflight.resolve(packet_id, codes[0])
            elif kind != PINGRESP:  # PUBACK, PUBCOMP, UNSUBACK
                self._inflight.resolve(body[0] << 8 | body[1], 0)

    def _handle_controls5(self, controls: list[tuple[int, int, bytes]]) -> None:
        """MQTT 5.0: the same packets with reason codes, and a DISCONNECT the broker may send."""
        for kind, _flags, body in controls:
            if kind == CONNACK:
                if self._connack is not None and not self._connack.done():
                    self._connack.set_result(parse_connack5(body))
            elif kind in (SUBACK, UNSUBACK):
                packet_id, codes, reason = parse_suback5(body)
                self._inflight.resolve(packet_id, codes[0], reason)
            elif kind == DISCONNECT:
                code, reason, _reference = parse_disconnect5(body)
                self._fail(f"the broker closed the connection: {reason_text(code, reason)}")
            elif kind != PINGRESP:  # PUBACK, PUBREC, PUBCOMP
                packet_id, code, reason = parse_ack5(body)
                if kind == PUBREC and code < 0x80:  # our QoS 2 publish: release it, done at PUBCOMP
                    self._write(encode_ack(PUBREL, packet_id))
                else:
                    self._inflight.resolve(packet_id, code, reason)

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

    def _write(self, data: bytes) -> None:
        assert self._outbox is not None
        self._outbox.write(data)
