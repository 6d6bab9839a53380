"""What :class:`uns.mqtt.client.FastClient` sends: PUBLISH, SUBSCRIBE, UNSUBSCRIBE, and their answers.

A mixin, like :mod:`uns.mqtt.acks`: the client supplies the connection state.
In MQTT 5 the broker's CONNACK sets limits the client must keep
(:class:`~uns.mqtt.wire.ConnAck`): a QoS above its Maximum QoS is sent at that
maximum, a retained message where retain is not available is sent unretained
(both counted as ``publishes_downgraded``), a packet above its Maximum Packet
Size is refused, and no more QoS 1/2 PUBLISHes than its Receive Maximum wait
for acknowledgement at once (:meth:`publish` waits for the quota,
:meth:`publish_nowait` returns False).  A refusal carries the broker's reason
code and reason string (:mod:`uns.mqtt.failures`).
"""

from __future__ import annotations

import asyncio

from uns.errors import BrokerError
from uns.mqtt.failures import refusal, suback_failure
from uns.mqtt.outbound import Answer, Inflight, Outbox
from uns.mqtt.wire import (
    ConnAck,
    encode_publish,
    encode_publish5,
    encode_subscribe,
    encode_subscribe5,
    encode_unsubscribe,
    encode_unsubscribe5,
    reason_text,
)

__all__ = ["Sending"]


class Sending:
    """The client's requests; :class:`~uns.mqtt.client.FastClient` supplies the state."""

    _outbox: Outbox | None
    _inflight: Inflight
    _counters: dict[str, int]
    _error: str | None
    _v5: bool
    #: what the broker's CONNACK allows (3.1.1: no limits)
    limits: ConnAck
    max_write_buffer: int

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _fit(self, qos: int, retain: bool) -> tuple[int, bool]:
        """QoS and retain within what the broker allows (MQTT 5: Maximum QoS, Retain Available)."""
        limits = self.limits
        if qos > limits.maximum_qos or (retain and not limits.retain_available):
            self._counters["publishes_downgraded"] += 1
            return min(qos, limits.maximum_qos), retain and limits.retain_available
        return qos, retain

    def _encode_publish(self, topic: str, payload: bytes, qos: int, retain: bool, packet_id: int) -> bytes:
        packet = (encode_publish5 if self._v5 else encode_publish)(topic, payload, qos, retain, packet_id)
        limit = self.limits.maximum_packet_size
        if limit is not None and len(packet) > limit:
            raise BrokerError(
                f"a message of {len(packet)} bytes to {topic!r} exceeds the broker's limit of {limit}"
            )
        return packet

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Queue for the end of this loop iteration; False when not connected, or when more
        than ``max_write_buffer`` bytes already wait for the socket (a slow broker: the
        caller queues, drops or awaits :meth:`publish`, instead of memory growing), or
        (MQTT 5) when the broker's Receive Maximum of QoS 1/2 messages is in flight.

        A QoS 1/2 message gets a packet id whose acknowledgement nobody awaits;
        on a lost connection it is simply gone (no resend)."""
        outbox = self._outbox
        if outbox is None or not self.connected:
            return False
        # bytes not yet taken by the socket (inline: this runs once per message)
        if outbox.transport.get_write_buffer_size() + outbox.queued_bytes > self.max_write_buffer:
            self._counters["publishes_refused"] += 1
            return False
        if qos or retain:
            qos, retain = self._fit(qos, retain)
        if qos and self._inflight.publishing >= self.limits.receive_maximum:
            self._counters["publishes_refused"] += 1
            return False
        packet_id = self._inflight.allocate(None, publish=True) if qos else 0
        try:
            packet = self._encode_publish(topic, payload, qos, retain, packet_id)
        except BrokerError:  # larger than the broker takes
            if packet_id:
                self._inflight.forget(packet_id, None)
            self._counters["publishes_refused"] += 1
            return False
        outbox.queue(packet)
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
        once acknowledged.  BrokerError when not connected, lost, not acknowledged in time,
        or (MQTT 5) refused by the broker's reason code."""
        outbox = self._require_connected()
        if qos or retain:
            qos, retain = self._fit(qos, retain)
        if not qos:
            outbox.write(self._encode_publish(topic, payload, 0, retain, 0))
            self._counters["publishes_sent"] += 1
            await outbox.drain()
            if self._error is not None:
                raise BrokerError(self._error)
            return
        async with asyncio.timeout(timeout):
            while self._inflight.publishing >= self.limits.receive_maximum:
                await self._inflight.quota_freed()
                self._require_connected()
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        packet_id = self._inflight.allocate(waiter, publish=True)
        try:
            packet = self._encode_publish(topic, payload, qos, retain, packet_id)
        except BrokerError:
            self._inflight.forget(packet_id, waiter)
            raise
        answer = await self._request(packet_id, waiter, packet, timeout, "PUBACK" if qos == 1 else "PUBCOMP")
        self._counters["publishes_sent"] += 1
        if answer.code >= 0x80:
            raise refusal(answer.code, f"broker refused the message to {topic!r}: {reason_text(*answer)}")

    async def subscribe(self, topic: str, qos: int = 0, timeout: float = 10.0) -> int:  # noqa: ASYNC109 - the API takes per-call timeouts
        """Subscribe to one filter; return the granted QoS (BrokerError when lost or late;
        a refusal: BrokerError, in MQTT 5 BrokerRefused when a retry cannot help)."""
        self._require_connected()
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        packet_id = self._inflight.allocate(waiter)
        packet = (encode_subscribe5 if self._v5 else encode_subscribe)(packet_id, topic, qos)
        answer = await self._request(packet_id, waiter, packet, timeout, "SUBACK")
        if answer.code >= 0x80:
            raise suback_failure(topic, answer.code, answer.reason, v5=self._v5)
        return answer.code

    async def unsubscribe(self, topic: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - the API takes per-call timeouts
        """Unsubscribe from one filter (BrokerError when lost or not acknowledged in time)."""
        self._require_connected()
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        packet_id = self._inflight.allocate(waiter)
        packet = (encode_unsubscribe5 if self._v5 else encode_unsubscribe)(packet_id, topic)
        await self._request(packet_id, waiter, packet, timeout, "UNSUBACK")

    def _require_connected(self) -> Outbox:
        if self._outbox is None or not self.connected:
            raise BrokerError(self._error or "not connected")
        return self._outbox

    async def _request(
        self,
        packet_id: int,
        waiter: asyncio.Future[Answer],
        packet: bytes,
        timeout: float,  # noqa: ASYNC109 - the API takes per-call timeouts
        answer: str,
    ) -> Answer:
        try:
            self._write(packet)
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError as exc:
            raise BrokerError(f"no {answer} within {timeout:g} s") from exc
        finally:
            self._inflight.forget(packet_id, waiter)
