"""A lean asyncio MQTT 3.1.1 client for the engine's hot receive path.

Why not aiomqtt/paho: paho reads one packet per readable callback and aiomqtt
adds a task and an ``asyncio.wait`` per message (~40 µs each).  Here the
:class:`asyncio.Protocol` parses *every* complete packet of each received
chunk in one loop (:class:`PacketReader`), appends a plain tuple per PUBLISH
and writes the acknowledgements of the whole chunk in one ``write``.  The
consumer takes messages in batches (:meth:`FastClient.take`).

Scope: MQTT 3.1.1 (protocol level 4) with clean sessions; QoS 0/1/2 in both
directions (nothing is retransmitted: on a lost connection every pending
acknowledgement fails with :class:`~uns.errors.BrokerError`); keepalive;
back-pressure by pausing the socket when too many messages wait to be taken.
No reconnect: the caller makes a new connection (the engine owns that loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from types import TracebackType
from typing import Self

from uns.errors import BrokerError
from uns.mqtt.settings import BrokerSettings, tls_context
from uns.mqtt.wire import (
    CONNACK,
    CONNACK_REASONS,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    PINGRESP,
    PUBREC,
    SUBACK,
    Message,
    PacketReader,
    Will,
    encode_connect,
    encode_publish,
    encode_remaining_length,
    encode_subscribe,
    encode_unsubscribe,
)

__all__ = [
    "CONNACK_REASONS",
    "FastClient",
    "Message",
    "PacketReader",
    "Will",
    "encode_connect",
    "encode_publish",
    "encode_remaining_length",
    "encode_subscribe",
    "encode_unsubscribe",
]


# ------------------------------------------------------------------ the client
class _Protocol(asyncio.Protocol):
    """Forwards the transport's callbacks to its client (one per connection)."""

    def __init__(self, client: FastClient) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client._data_received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._connection_lost(self, exc)

    def pause_writing(self) -> None:
        self.client._write_paused = True

    def resume_writing(self) -> None:
        self.client._resume_writing()


class FastClient:
    """One MQTT 3.1.1 connection; received messages wait in order until :meth:`take`.

    ::

        async with FastClient(settings, identifier="uns-host") as client:
            await client.subscribe("spBv1.0/#")
            while True:
                await client.wait_messages()  # BrokerError once lost and drained
                for topic, payload, qos, retain in client.take():
                    ...
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        identifier: str,
        will: Will | None = None,
        clean_session: bool = True,
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
        self.connect_timeout = connect_timeout
        self.high_water = high_water
        self.low_water = low_water
        self.max_write_buffer = max_write_buffer
        self._messages: list[Message] = []
        self._reader = PacketReader(self._messages)
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connack: asyncio.Future[int] | None = None
        self._acks: dict[int, asyncio.Future[int] | None] = {}  # packet id -> waiter (None: nowait)
        self._next_id = 0
        self._message_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._error: str | None = None  # why the connection ended, if not by disconnect()
        self._closing = False  # disconnect() was called
        self._read_paused = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._out: list[bytes] = []  # publish_nowait packets of this loop iteration
        self._out_bytes = 0
        self._sent_any = False  # a packet was written since the keepalive timer last looked
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
        """Open TCP (TLS for ``mqtts``), send CONNECT, wait for CONNACK; BrokerError otherwise."""
        if self.connected:
            return
        s = self.settings
        where = f"cannot connect to {s.masked_url()}"
        loop = asyncio.get_running_loop()
        await self._stop_keepalive()
        self._reset()
        connack: asyncio.Future[int] = loop.create_future()
        self._connack = connack
        ssl_context = tls_context(s) if s.tls else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                try:
                    transport, protocol = await loop.create_connection(
                        lambda: _Protocol(self),
                        s.host,
                        s.port,
                        ssl=ssl_context,
                        server_hostname=(s.host if not s.tls_insecure else "") if s.tls else None,
                    )
                except ssl.SSLError as exc:
                    raise BrokerError(f"{where}: TLS handshake failed: {exc.reason or exc}") from exc
                except ConnectionRefusedError as exc:
                    raise BrokerError(f"{where}: connection refused") from exc
                except OSError as exc:
                    raise BrokerError(f"{where}: {exc.strerror or exc}") from exc
                self._transport, self._protocol = transport, protocol
                self._write(
                    encode_connect(
                        self.identifier,
                        keepalive=s.keepalive,
                        clean_session=self.clean_session,
                        username=s.username,
                        password=s.password,
                        will=self.will,
                    )
                )
                code = await connack
        except TimeoutError as exc:
            error = BrokerError(f"{where}: no answer within {self.connect_timeout:g} s")
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
            reason = CONNACK_REASONS.get(code, f"return code {code}")
            self._abort_transport(f"broker refused the connection: {reason}")
            raise BrokerError(f"broker refused the connection: {reason}")
        if s.keepalive > 0:
            self._keepalive_task = asyncio.create_task(
                self._keepalive(protocol, s.keepalive), name=f"mqtt keepalive {self.identifier}"
            )

    def _reset(self) -> None:
        """Fresh per-connection state (clean session); received messages stay until taken."""
        self._reader = PacketReader(self._messages)
        self._acks.clear()
        self._error = None
        self._closing = False
        self._read_paused = self._write_paused = False
        self._closed = asyncio.get_running_loop().create_future()

    def _abort_transport(self, reason: str) -> None:
        """Give up a connection that never got through CONNACK (its late callbacks are ignored)."""
        self._error = reason
        if self._transport is not None:
            self._transport.abort()
        self._transport = None
        self._protocol = None
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
            "inflight": len(self._acks),
        }

    # -------------------------------------------------------------- receiving
    def take(self, limit: int = 2048) -> list[Message]:
        """Up to ``limit`` received messages in arrival order, removed from the client."""
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

    def _data_received(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return  # a late chunk of an earlier connection
        messages = self._messages
        before = len(messages)
        counters = self._counters
        counters["bytes_received"] += len(data)
        counters["reads"] += 1
        reader = self._reader
        try:
            controls = reader.feed(data)
        except BrokerError as exc:
            self._fail(str(exc))
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
                    self._connack.set_result(body[1])
                continue
            if kind == PINGRESP:
                continue
            if kind == PUBREC:  # our QoS 2 publish: release it, done at PUBCOMP
                self._write(b"\x62\x02" + body[:2])
                continue
            packet_id = body[0] << 8 | body[1]
            waiter = self._acks.pop(packet_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(body[2] if kind == SUBACK else 0)

    def _connection_lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return
        reason = "closed by the broker" if exc is None else getattr(exc, "strerror", None) or str(exc)
        if not self._closing and self._error is None:
            self._error = f"connection to the broker lost: {reason}"
        error = self._error or "connection closed"
        if self._connack is not None and not self._connack.done():
            where = f"cannot connect to {self.settings.masked_url()}"
            self._connack.set_exception(BrokerError(f"{where}: {reason} before CONNACK"))
        for waiter in self._acks.values():
            if waiter is not None and not waiter.done():
                waiter.set_exception(BrokerError(error))
        self._acks.clear()
        self._resume_writing()
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
        assert self._transport is not None
        if self._out:  # queued publishes go first: one stream, one order
            self._out.append(data)
            data = self._take_out()
        self._transport.write(data)
        self._sent_any = True

    def _queue_write(self, data: bytes) -> None:
        """Coalesce: publishes of one event-loop iteration leave in one ``write`` (one
        system call instead of one per message), before the loop next polls for I/O."""
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush_out)
        self._out.append(data)
        self._out_bytes += len(data)

    def _take_out(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        self._out_bytes = 0
        return data

    def _flush_out(self) -> None:
        if not self._out:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            self._out.clear()  # the connection is gone: like bytes in a dead socket's buffer
            self._out_bytes = 0
            return
        transport.write(self._take_out())
        self._sent_any = True

    def _resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _drain(self) -> None:
        if self._write_paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _packet_id(self) -> int:
        if len(self._acks) >= 65535:
            raise BrokerError("no free packet id: 65535 acknowledgements outstanding")
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._acks:
                return self._next_id

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Encode and write now (the transport buffers); False when not connected, or
        when more than ``max_write_buffer`` bytes already wait for the socket (a slow
        broker: the caller queues or drops, counted, instead of memory growing).

        A QoS 1/2 message gets a packet id whose acknowledgement nobody awaits;
        on a lost connection it is simply gone (clean session, no resend)."""
        if not self.connected:
            return False
        assert self._transport is not None
        if self._transport.get_write_buffer_size() + self._out_bytes > self.max_write_buffer:
            self._counters["publishes_refused"] += 1
            return False
        packet_id = 0
        if qos:
            packet_id = self._packet_id()
            self._acks[packet_id] = None
        self._queue_write(encode_publish(topic, payload, qos, retain, packet_id))
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
        self._require_connected()
        if not qos:
            self._write(encode_publish(topic, payload, 0, retain))
            self._counters["publishes_sent"] += 1
            await self._drain()
            if self._error is not None:
                raise BrokerError(self._error)
            return
        packet_id = self._packet_id()
        await self._request(
            packet_id,
            encode_publish(topic, payload, qos, retain, packet_id),
            timeout,
            "PUBACK" if qos == 1 else "PUBCOMP",
        )
        self._counters["publishes_sent"] += 1

    async def subscribe(self, topic: str, qos: int = 0, timeout: float = 10.0) -> int:  # noqa: ASYNC109 - the API takes per-call timeouts
        """Subscribe to one filter; return the granted QoS (BrokerError when refused, lost or late)."""
        self._require_connected()
        packet_id = self._packet_id()
        granted = await self._request(packet_id, encode_subscribe(packet_id, topic, qos), timeout, "SUBACK")
        if granted == 0x80:
            raise BrokerError(f"broker refused the subscription to {topic!r}")
        return granted

    async def unsubscribe(self, topic: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - the API takes per-call timeouts
        """Unsubscribe from one filter (BrokerError when lost or not acknowledged in time)."""
        self._require_connected()
        packet_id = self._packet_id()
        await self._request(packet_id, encode_unsubscribe(packet_id, topic), timeout, "UNSUBACK")

    def _require_connected(self) -> None:
        if not self.connected:
            raise BrokerError(self._error or "not connected")

    async def _request(self, packet_id: int, packet: bytes, timeout: float, answer: str) -> int:  # noqa: ASYNC109 - the API takes per-call timeouts
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[packet_id] = waiter
        self._write(packet)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError as exc:
            raise BrokerError(f"no {answer} within {timeout:g} s") from exc
        finally:
            if self._acks.get(packet_id) is waiter:
                del self._acks[packet_id]

    # -------------------------------------------------------------- keepalive
    async def _keepalive(self, protocol: _Protocol, keepalive: int) -> None:
        """PINGREQ when either direction was quiet for keepalive/2 s; give up after 1.5x.

        Activity is sampled on a timer (a byte counter and a flag), so the hot
        paths never read the clock."""
        tick = keepalive / 4
        now = time.monotonic()
        last_read = last_write = ping_sent = now
        bytes_seen = self._counters["bytes_received"]
        self._sent_any = False
        while protocol is self._protocol:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self._counters["bytes_received"] != bytes_seen:
                bytes_seen = self._counters["bytes_received"]
                last_read = now
            if self._sent_any:
                self._sent_any = False
                last_write = now
            if now - last_read >= keepalive * 1.5:
                self._fail(f"no PINGRESP within {keepalive * 1.5:g} s")
                return
            # a ping when we sent nothing for a while (the broker wants to hear from us) or
            # heard nothing (is the broker still there?) -- one at a time for the latter
            read_quiet = now - last_read >= keepalive / 2 and ping_sent < last_read
            if now - last_write >= keepalive / 2 or read_quiet:
                if self._transport is None or self._transport.is_closing():
                    return
                self._write(PINGREQ_PACKET)
                ping_sent = last_write = now
