"""MQTT 3.1.1 packets: encoding and incremental parsing, no I/O.

Shared by the engine's client (:mod:`uns.mqtt.client`) and the demo broker
(:mod:`uns.mqtt.minibroker`).  :class:`PacketReader` parses every complete packet
of a received chunk in one loop; a packet split over several chunks is
joined only once it is complete.
"""

from __future__ import annotations

from dataclasses import dataclass

from uns.errors import BrokerError

__all__ = [
    "CONNACK",
    "CONNACK_REASONS",
    "CONNECT",
    "DISCONNECT",
    "DISCONNECT_PACKET",
    "MAX_REMAINING_LENGTH",
    "PINGREQ",
    "PINGREQ_PACKET",
    "PINGRESP",
    "PUBACK",
    "PUBCOMP",
    "PUBLISH",
    "PUBREC",
    "PUBREL",
    "SUBACK",
    "SUBSCRIBE",
    "UNSUBACK",
    "UNSUBSCRIBE",
    "Message",
    "PacketReader",
    "Will",
    "encode_connect",
    "encode_publish",
    "encode_remaining_length",
    "encode_subscribe",
    "encode_unsubscribe",
]

#: (topic, payload, qos, retain) of one received PUBLISH
Message = tuple[str, bytes, int, bool]

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

#: CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3)
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
MAX_REMAINING_LENGTH = 268_435_455  # four varint bytes


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes when the connection ends without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


# ------------------------------------------------------------------ encoding
def encode_remaining_length(n: int) -> bytes:
    """The fixed header's variable length integer: 7 bits per byte, low bits first."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length out of range: {n}")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_remaining_length(len(body)) + body


def _string(raw: bytes) -> bytes:
    if len(raw) > 0xFFFF:
        raise ValueError(f"MQTT string of {len(raw)} bytes is longer than 65535")
    return len(raw).to_bytes(2, "big") + raw


def encode_connect(
    identifier: str,
    *,
    keepalive: int,
    clean_session: bool = True,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    """A CONNECT packet (protocol "MQTT", level 4)."""
    if password is not None and username is None:
        username = ""  # 3.1.1 allows a password only together with a user name [MQTT-3.1.2-22]
    flags = 0x02 if clean_session else 0
    payload = _string(identifier.encode())
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
        payload += _string(will.topic.encode()) + _string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _string(username.encode())
    if password is not None:
        flags |= 0x40
        payload += _string(password.encode())
    header = _string(b"MQTT") + bytes((4, flags)) + keepalive.to_bytes(2, "big")
    return _packet(CONNECT << 4, header + payload)


def encode_publish(
    topic: str, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 0, dup: bool = False
) -> bytes:
    """A PUBLISH packet; ``packet_id`` is used (and required) when ``qos`` > 0."""
    head = _string(topic.encode())
    if qos:
        head += packet_id.to_bytes(2, "big")
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    body_len = len(head) + len(payload)
    return bytes((first,)) + encode_remaining_length(body_len) + head + payload


def encode_subscribe(packet_id: int, topic: str, qos: int) -> bytes:
    """A SUBSCRIBE packet for one filter."""
    return _packet(
        SUBSCRIBE << 4 | 0x02, packet_id.to_bytes(2, "big") + _string(topic.encode()) + bytes((qos,))
    )


def encode_unsubscribe(packet_id: int, topic: str) -> bytes:
    """An UNSUBSCRIBE packet for one filter."""
    return _packet(UNSUBSCRIBE << 4 | 0x02, packet_id.to_bytes(2, "big") + _string(topic.encode()))


# ------------------------------------------------------------------ decoding
def _long_length(buf: bytes, pos: int, n: int) -> tuple[int, int]:
    """(remaining length, body start) of the packet at ``pos``; start -1 when incomplete."""
    length = 0
    for i in range(4):
        if pos + 1 + i >= n:
            return 0, -1
        byte = buf[pos + 1 + i]
        length |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return length, pos + 2 + i
    raise BrokerError("protocol error from the broker: remaining length longer than 4 bytes")


class PacketReader:
    """Splits the byte stream from the broker into packets (no I/O).

    :meth:`feed` appends every complete PUBLISH to ``messages``, handles the
    inbound QoS 1/2 handshakes itself (the acknowledgements collect in
    ``replies``, to be written in one go), and returns the other packets as
    ``(type, flags, body)``.  A malformed packet raises :class:`BrokerError`;
    the messages before it are kept.
    """

    def __init__(self, messages: list[Message] | None = None) -> None:
        self.messages: list[Message] = [] if messages is None else messages
        #: PUBACK / PUBREC / PUBCOMP bytes owed to the broker
        self.replies = bytearray()
        #: topics that were not valid UTF-8 (decoded with U+FFFD instead)
        self.bad_topics = 0
        self._held: list[bytes] = []  # the start of an incomplete packet
        self._held_len = 0
        self._need = 0  # bytes the incomplete packet needs in all (0: header not complete yet)
        self._qos2_open: set[int] = set()  # QoS 2 ids delivered, PUBREL not yet received

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete packet waiting for the rest."""
        return self._held_len

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Parse ``data`` (plus what an earlier call held back); return the non-PUBLISH packets."""
        if self._held:
            self._held.append(data)
            self._held_len += len(data)
            if self._held_len < self._need:
                return []  # a large packet arriving in pieces: join only once it is complete
            buf = b"".join(self._held)
            self._held.clear()
            self._held_len = self._need = 0
        else:
            buf = data
        n = len(buf)
        pos = 0
        end = 0
        append = self.messages.append
        controls: list[tuple[int, int, bytes]] = []
        while n - pos >= 2:
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
                length, start = _long_length(buf, pos, n)
                if start < 0:
                    end = 0  # the header itself is incomplete
                    break
            end = start + length
            if end > n:
                break
            if first >> 4 == 3:  # PUBLISH (a literal: no global lookup per packet)
                if length < 2:
                    raise BrokerError("protocol error from the broker: PUBLISH without a topic")
                topic_end = start + 2 + (buf[start] << 8 | buf[start + 1])
                qos = first >> 1 & 3
                payload_start = topic_end + 2 if qos else topic_end
                if payload_start > end:
                    raise BrokerError("protocol error from the broker: PUBLISH topic longer than the packet")
                raw_topic = buf[start + 2 : topic_end]
                try:
                    topic = raw_topic.decode()
                except UnicodeDecodeError:
                    self.bad_topics += 1
                    topic = raw_topic.decode(errors="replace")
                if not qos:
                    append((topic, buf[payload_start:end], 0, first & 1 == 1))
                elif qos == 1:
                    self.replies += b"\x40\x02" + buf[topic_end:payload_start]
                    append((topic, buf[payload_start:end], 1, first & 1 == 1))
                else:
                    self._publish_qos2(buf, first, topic, topic_end, payload_start, end)
            else:
                self._control(first, buf[start:end], controls)
            pos = end
        if pos < n:
            rest = buf[pos:]
            self._held.append(rest)
            self._held_len = len(rest)
            self._need = end - pos if end > pos else 0
        return controls

    def _publish_qos2(
        self, buf: bytes, first: int, topic: str, topic_end: int, payload_start: int, end: int
    ) -> None:
        if first & 0x06 == 0x06:
            raise BrokerError("protocol error from the broker: PUBLISH with QoS 3")
        packet_id = buf[topic_end:payload_start]
        self.replies += b"\x50\x02" + packet_id
        key = int.from_bytes(packet_id, "big")
        if key not in self._qos2_open:  # a DUP resend of an id not yet released is the same message
            self._qos2_open.add(key)
            self.messages.append((topic, buf[payload_start:end], 2, first & 1 == 1))

    def _control(self, first: int, body: bytes, controls: list[tuple[int, int, bytes]]) -> None:
        kind = first >> 4
        if kind == PUBREL:
            if len(body) != 2:
                raise BrokerError("protocol error from the broker: PUBREL of wrong length")
            self._qos2_open.discard(int.from_bytes(body, "big"))
            self.replies += b"\x70\x02" + body
            return
        if kind in (CONNACK, PUBACK, PUBREC, PUBCOMP, UNSUBACK) and len(body) != 2:
            raise BrokerError(f"protocol error from the broker: packet type {kind} of {len(body)} bytes")
        if kind == SUBACK and len(body) < 3:
            raise BrokerError("protocol error from the broker: SUBACK without a return code")
        if kind not in (CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, PINGRESP):
            raise BrokerError(f"protocol error from the broker: unexpected packet type {kind}")
        controls.append((kind, first & 0x0F, body))
