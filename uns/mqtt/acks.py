"""The manual acknowledgement mode of :class:`uns.mqtt.client.FastClient` (``manual_ack=True``).

A QoS 1 PUBLISH taken with :meth:`ManualAcks.take_held` stays unacknowledged until
the caller says its message is safe (the engine: once its context event is in the
write-ahead log and fsynced), so a crash before that makes a broker with a
persistent session deliver it again.  Tokens name the connection a message came
on: an acknowledgement after a reconnect never acknowledges another message that
reuses its packet id.
"""

from __future__ import annotations

from collections.abc import Iterable

from uns.mqtt.outbound import Outbox
from uns.mqtt.wire import PUBACK, HeldMessage, Message, encode_ack

__all__ = ["ManualAcks"]


class ManualAcks:
    """The client's side of held acknowledgements; :class:`FastClient` supplies the state."""

    _ids: list[int] | None  # manual_ack: the packet id of each message taken, same index
    _generation: int  # connections made so far
    _outbox: Outbox | None

    def take(self, limit: int = 2048) -> list[Message]:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def take_held(self, limit: int = 2048) -> list[HeldMessage]:
        """``manual_ack`` mode: as :meth:`take`, each message with the token to acknowledge it
        by, which the caller passes to :meth:`ack` once the message is safe (0: nothing is
        owed).  The token is the packet id (low 16 bits) and the connection it came on, so
        acknowledging after a reconnect never acknowledges another message by mistake."""
        ids = self._ids
        if ids is None:
            return [(*m, 0) for m in self.take(limit)]
        count = min(limit, len(ids))
        taken_ids = ids[:count]
        del ids[:count]
        self._ids = None  # take()'s flow control, without its manual_ack branch
        try:
            taken = self.take(limit)
        finally:
            self._ids = ids
        gen = self._generation << 16
        return [(t, p, q, r, i | gen if i else 0) for (t, p, q, r), i in zip(taken, taken_ids, strict=True)]

    def ack(self, packet_id: int) -> bool:
        """Send the PUBACK of a QoS 1 message by the token :meth:`take_held` gave (0 is ignored).

        Acknowledge in the order the messages were taken [MQTT-4.6.0-2].  False when the
        connection it came on is gone: then the broker (persistent session) redelivers it."""
        return self.ack_all((packet_id,))

    def ack_all(self, packet_ids: Iterable[int]) -> bool:
        """:meth:`ack` for several messages in their order, in one write."""
        tokens = [i for i in packet_ids if i]
        if not tokens:
            return True
        if self._outbox is None or not self.connected:
            return False
        current = [i & 0xFFFF for i in tokens if i >> 16 == self._generation]
        if current:
            self._write(b"".join(encode_ack(PUBACK, i) for i in current))
        return len(current) == len(tokens)
