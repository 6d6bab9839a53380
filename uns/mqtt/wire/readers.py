"""MQTT byte streams split into packets, incrementally (no I/O).  Part of :mod:`uns.mqtt.wire`.

A packet split over several received chunks is joined only once it is complete,
so a large message arriving in pieces costs one copy, not one per piece.  The
client's readers speak MQTT 3.1.1 or, with ``v5=True``, MQTT 5.0: a PUBLISH then
has a property block between its topic (and packet id) and its payload, read by
:func:`uns.mqtt.wire.v5.publish_payload_start` (inlined here for its common case,
an empty block), and the acknowledgements may carry reason codes.

The 3.1.1 reader's common case -- runs of complete QoS 0/1 PUBLISH packets with a short
header and a UTF-8 topic -- is taken in one C call per run when the extension
``uns.mqtt.wire._fastwire`` is built (optional, stable ABI; ``UNS_NATIVE=0`` turns it off
with the native DATA decoder): it stops at any other packet, which the Python loop below
decides as before, so both produce the same messages, acknowledgements and errors
(``tests/test_fastwire.py`` checks it on random streams)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

from uns.mqtt.wire.packets import (
    CONNACK,
    DISCONNECT,
    MAX_REMAINING_LENGTH,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    SUBACK,
    UNSUBACK,
    Message,
    MqttProtocolError,
    parse_ack,
    remaining_length_at,
)
from uns.mqtt.wire.v5 import parse_ack5, publish_payload_start

__all__ = ["FAST_PUBLISHES", "FrameReader", "HeldAckReader", "PacketReader"]


def _fast_publishes() -> Callable[..., int] | None:
    """The C run of PUBLISH packets (see the module doc), or None: not built, or UNS_NATIVE=0."""
    if os.environ.get("UNS_NATIVE", "1").strip() == "0":
        return None
    try:
        from uns.mqtt.wire._fastwire import publishes  # noqa: PLC0415 - optional
    except ImportError:
        return None
    fast: Callable[..., int] = publishes
    return fast


#: ``publishes(buf, pos, messages, replies, topics) -> pos`` in C, or None (the Python loop only)
FAST_PUBLISHES: Final = _fast_publishes()


class _Stream:
    """Holds the start of a packet that has not fully arrived; joins it once it is complete."""

    def __init__(self) -> None:
        self._held: list[bytes] = []
        self._held_len = 0
        self._need = 0  # bytes the incomplete packet needs in all (0: header not complete yet)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet waiting for the rest."""
        return self._held_len

    def _join(self, data: bytes) -> bytes | None:
        """``data`` after what was held back; None while a large packet is still incomplete."""
        self._held.append(data)
        self._held_len += len(data)
        if self._held_len < self._need:
            return None  # a large packet arriving in pieces: join only once it is complete
        buf = b"".join(self._held)
        self._held.clear()
        self._held_len = self._need = 0
        return buf

    def _hold(self, buf: bytes, pos: int, end: int) -> None:
        """Keep ``buf[pos:]``, the start of the packet that ends at ``end`` (if known)."""
        if pos < len(buf):
            rest = buf[pos:]
            self._held.append(rest)
            self._held_len = len(rest)
            self._need = end - pos if end > pos else 0


class FrameReader(_Stream):
    """Splits a byte stream into ``(type, flags, body)`` packets, all of them, in order.

    A packet announcing more than ``max_size`` bytes is refused as soon as its
    header arrives, so a peer cannot make us hold more than that."""

    def __init__(self, max_size: int = MAX_REMAINING_LENGTH) -> None:
        super().__init__()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buf = self._join(data) if self._held else data
        if buf is None:
            return []
        n, pos, end = len(buf), 0, 0
        packets = []
        while n - pos >= 2:
            length, start = remaining_length_at(buf, pos, n)
            if start < 0:
                end = 0
                break
            if length > self.max_size:
                raise MqttProtocolError(f"packet of {length} bytes exceeds the {self.max_size} byte limit")
            end = start + length
            if end > n:
                break
            packets.append((buf[pos] >> 4, buf[pos] & 0x0F, buf[start:end]))
            pos = end
        self._hold(buf, pos, end)
        return packets


class PacketReader(_Stream):
    """Splits the byte stream from the broker into packets (the client's side, no I/O).

    :meth:`feed` appends every complete PUBLISH to ``messages``, handles the
    inbound QoS 1/2 handshakes itself (the acknowledgements collect in
    ``replies``, to be written in one go), and returns the other packets as
    ``(type, flags, body)``.  A malformed packet raises :class:`MqttProtocolError`;
    the messages before it are kept.
    """

    def __init__(self, messages: list[Message] | None = None, *, v5: bool = False) -> None:
        super().__init__()
        #: MQTT 5.0: PUBLISH has properties, acknowledgements reason codes, DISCONNECT may come
        self.v5 = v5
        self.messages: list[Message] = [] if messages is None else messages
        #: PUBACK / PUBREC / PUBCOMP bytes owed to the broker
        self.replies = bytearray()
        #: topics that were not valid UTF-8 (decoded with U+FFFD instead)
        self.bad_topics = 0
        self._qos2_open: set[int] = set()  # QoS 2 ids delivered, PUBREL not yet received
        #: raw topic -> its str, for the C run (the same str object each time: its hash is kept)
        self._topics: dict[bytes, Any] = {}
        self._fast = None if v5 else FAST_PUBLISHES

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Parse ``data`` (plus what an earlier call held back); return the non-PUBLISH packets."""
        if self._held:
            joined = self._join(data)
            if joined is None:
                return []
            buf = joined
        else:
            buf = data
        n = len(buf)
        pos = 0
        end = 0
        append = self.messages.append
        v5 = self.v5
        fast = self._fast
        controls: list[tuple[int, int, bytes]] = []
        while n - pos >= 2:
            if fast is not None:  # the run of ordinary PUBLISH packets from here, in C
                pos = fast(buf, pos, self.messages, self.replies, self._topics)
                if n - pos < 2:
                    end = 0
                    break
            first = buf[pos]
            # remaining length: one byte below 128, two below 16 KiB (inlined: the common cases)
            byte = buf[pos + 1]
            if byte < 0x80:
                start = pos + 2
                length = byte
            elif n - pos >= 3 and buf[pos + 2] < 0x80:
                start = pos + 3
                length = (byte & 0x7F) | buf[pos + 2] << 7
            else:
                length, start = remaining_length_at(buf, pos, n)
                if start < 0:
                    end = 0  # the header itself is incomplete
                    break
            end = start + length
            if end > n:
                break
            if first >> 4 == 3:  # PUBLISH (a literal: no global lookup per packet)
                if length < 2:
                    raise MqttProtocolError("PUBLISH without a topic")
                topic_end = start + 2 + (buf[start] << 8 | buf[start + 1])
                qos = first >> 1 & 3
                payload_start = topic_end + 2 if qos else topic_end
                if payload_start > end:
                    raise MqttProtocolError("PUBLISH topic longer than the packet")
                if v5:  # the property block: usually empty (one 0 byte), else read and skipped
                    if payload_start < end and not buf[payload_start]:
                        payload_start += 1
                    else:
                        payload_start = publish_payload_start(buf, payload_start, end)
                raw_topic = buf[start + 2 : topic_end]
                try:
                    topic = raw_topic.decode()
                except UnicodeDecodeError:
                    self.bad_topics += 1
                    topic = raw_topic.decode(errors="replace")
                if not qos:
                    append((topic, buf[payload_start:end], 0, first & 1 == 1))
                elif qos == 1:
                    self.replies += b"\x40\x02" + buf[topic_end : topic_end + 2]
                    append((topic, buf[payload_start:end], 1, first & 1 == 1))
                else:
                    self._publish_qos2(buf, first, topic, topic_end, payload_start, end)
            else:
                self._control(first, buf[start:end], controls)
            pos = end
        self._hold(buf, pos, end)
        return controls

    def _publish_qos2(
        self, buf: bytes, first: int, topic: str, topic_end: int, payload_start: int, end: int
    ) -> None:
        if first & 0x06 == 0x06:
            raise MqttProtocolError("PUBLISH with QoS 3")
        packet_id = buf[topic_end : topic_end + 2]
        self.replies += b"\x50\x02" + packet_id
        key = int.from_bytes(packet_id, "big")
        if key not in self._qos2_open:  # a DUP resend of an id not yet released is the same message
            self._qos2_open.add(key)
            self.messages.append((topic, buf[payload_start:end], 2, first & 1 == 1))

    def _control(self, first: int, body: bytes, controls: list[tuple[int, int, bytes]]) -> None:
        kind = first >> 4
        if self.v5:
            self._control5(kind, first, body, controls)
            return
        if kind == PUBREL:
            self._qos2_open.discard(parse_ack(body, "PUBREL"))
            self.replies += b"\x70\x02" + body
            return
        if kind in (CONNACK, PUBACK, PUBREC, PUBCOMP, UNSUBACK) and len(body) != 2:
            raise MqttProtocolError(f"packet type {kind} of {len(body)} bytes")
        if kind == SUBACK and len(body) < 3:
            raise MqttProtocolError("SUBACK without a return code")
        if kind not in (CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, PINGRESP):
            raise MqttProtocolError(f"unexpected packet type {kind}")
        controls.append((kind, first & 0x0F, body))

    def _control5(self, kind: int, first: int, body: bytes, controls: list[tuple[int, int, bytes]]) -> None:
        """MQTT 5.0: acknowledgements with reason codes and properties, DISCONNECT from the broker
        (the caller parses the bodies with :mod:`uns.mqtt.wire.v5`)."""
        if kind == PUBREL:
            packet_id = parse_ack5(body)[0]
            self._qos2_open.discard(packet_id)
            self.replies += b"\x70\x02" + packet_id.to_bytes(2, "big")
            return
        if kind in (PUBACK, PUBREC, PUBCOMP) and len(body) < 2:
            raise MqttProtocolError(f"packet type {kind} of {len(body)} bytes")
        if kind in (CONNACK, SUBACK, UNSUBACK) and len(body) < 3:
            raise MqttProtocolError(f"packet type {kind} of {len(body)} bytes")
        if kind not in (CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, PINGRESP, DISCONNECT):
            raise MqttProtocolError(f"unexpected packet type {kind}")
        controls.append((kind, first & 0x0F, body))


class HeldAckReader(PacketReader):
    """A :class:`PacketReader` that does not acknowledge QoS 1 PUBLISHes: the caller does,
    once it has made each message safe (a persistent session's at-least-once intake).

    Every PUBLISH is appended to ``messages`` as usual and its packet id to ``packet_ids``
    at the same index (0 for QoS 0; QoS 2 is acknowledged here as before, also 0).  A
    separate, plainer loop than :meth:`PacketReader.feed`, so that the measurement
    path's reader pays nothing for this mode."""

    def __init__(self, messages: list[Message] | None = None, *, v5: bool = False) -> None:
        super().__init__(messages, v5=v5)
        #: the packet id of each message in ``messages`` (same index), 0 when nothing is owed
        self.packet_ids: list[int] = []

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        if self._held:
            joined = self._join(data)
            if joined is None:
                return []
            buf = joined
        else:
            buf = data
        n, pos, end = len(buf), 0, 0
        controls: list[tuple[int, int, bytes]] = []
        while n - pos >= 2:
            length, start = remaining_length_at(buf, pos, n)
            if start < 0:
                end = 0
                break
            end = start + length
            if end > n:
                break
            first = buf[pos]
            if first >> 4 == 3:
                self._publish(buf, first, start, end)
            else:
                self._control(first, buf[start:end], controls)
            pos = end
        self._hold(buf, pos, end)
        return controls

    def _publish(self, buf: bytes, first: int, start: int, end: int) -> None:
        if end - start < 2:
            raise MqttProtocolError("PUBLISH without a topic")
        topic_end = start + 2 + (buf[start] << 8 | buf[start + 1])
        qos = first >> 1 & 3
        payload_start = topic_end + 2 if qos else topic_end
        if payload_start > end:
            raise MqttProtocolError("PUBLISH topic longer than the packet")
        if self.v5:
            payload_start = publish_payload_start(buf, payload_start, end)
        raw_topic = buf[start + 2 : topic_end]
        try:
            topic = raw_topic.decode()
        except UnicodeDecodeError:
            self.bad_topics += 1
            topic = raw_topic.decode(errors="replace")
        if qos == 2:
            before = len(self.messages)
            self._publish_qos2(buf, first, topic, topic_end, payload_start, end)
            if len(self.messages) > before:
                self.packet_ids.append(0)
            return
        self.messages.append((topic, buf[payload_start:end], qos, first & 1 == 1))
        self.packet_ids.append(buf[topic_end] << 8 | buf[topic_end + 1] if qos else 0)
