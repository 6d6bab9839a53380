"""MQTT 3.1.1 packets one at a time: constants, encoders for every packet either side
sends, parsers for the bodies a receiver needs (no I/O).  Part of :mod:`uns.mqtt.wire`."""

from __future__ import annotations

from collections.abc import Sequence
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
    "PINGRESP_PACKET",
    "PROTOCOLS",
    "PUBACK",
    "PUBCOMP",
    "PUBLISH",
    "PUBREC",
    "PUBREL",
    "SUBACK",
    "SUBSCRIBE",
    "UNSUBACK",
    "UNSUBSCRIBE",
    "Connect",
    "HeldMessage",
    "Message",
    "MqttProtocolError",
    "Will",
    "decode_remaining_length",
    "encode_ack",
    "encode_connack",
    "encode_connect",
    "encode_publish",
    "encode_remaining_length",
    "encode_suback",
    "encode_subscribe",
    "encode_unsubscribe",
    "fixed_flags_ok",
    "parse_ack",
    "parse_connack",
    "parse_connect",
    "parse_publish",
    "parse_suback",
    "parse_subscribe",
    "parse_unsubscribe",
    "remaining_length_at",
]

#: (topic, payload, qos, retain) of one received PUBLISH
Message = tuple[str, bytes, int, bool]

#: (topic, payload, qos, retain, packet_id) of a PUBLISH whose acknowledgement the receiver
#: sends itself, later (packet_id 0: nothing is owed, QoS 0 or 2; FastClient.take_held
#: adds the connection above the low 16 bits, so a stale id acknowledges nothing)
HeldMessage = tuple[str, bytes, int, bool, int]

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
PINGRESP_PACKET = b"\xd0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
MAX_REMAINING_LENGTH = 268_435_455  # four varint bytes
#: the protocol names and levels whose CONNECT has the 3.1.1 layout (3.1 is "MQIsdp" level 3)
PROTOCOLS = frozenset({("MQTT", 4), ("MQIsdp", 3)})
_FLAGS_TWO = frozenset({PUBREL, SUBSCRIBE, UNSUBSCRIBE})  # fixed header flags 0b0010 [MQTT-2.2.2-1]
_ACKS = frozenset({PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK})


class MqttProtocolError(BrokerError):
    """The peer sent bytes that break MQTT 3.1.1; the connection cannot go on.

    ``connack`` is the return code a broker answers a bad CONNECT with before
    closing (1: unacceptable protocol version), ``None`` to just close."""

    def __init__(self, reason: str, *, connack: int | None = None) -> None:
        super().__init__(f"protocol error: {reason}")
        self.reason = reason
        self.connack = connack


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes when the connection ends without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Connect:
    """The fields of a CONNECT packet."""

    client_id: str
    keepalive: int
    clean_session: bool = True
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None  # binary data in MQTT, not a string
    protocol: str = "MQTT"
    level: int = 4


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
    level: int = 4,
    properties: bytes = b"",
) -> bytes:
    """A CONNECT packet (protocol "MQTT", level 4; :func:`uns.mqtt.wire.v5.encode_connect5` passes
    level 5 and its ``properties``, and then a Will has an empty property block too)."""
    if password is not None and username is None and level == 4:
        username = ""  # 3.1.1 allows a password only together with a user name [MQTT-3.1.2-22]
    flags = 0x02 if clean_session else 0
    payload = _string(identifier.encode())
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
        payload += (b"\x00" if properties else b"") + _string(will.topic.encode()) + _string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _string(username.encode())
    if password is not None:
        flags |= 0x40
        payload += _string(password.encode())
    header = _string(b"MQTT") + bytes((level, flags)) + keepalive.to_bytes(2, "big")
    return _packet(CONNECT << 4, header + properties + payload)


def encode_connack(code: int = 0, *, session_present: bool = False) -> bytes:
    """A CONNACK: return code 0 accepts, 1-5 refuse (:data:`CONNACK_REASONS`)."""
    return bytes((CONNACK << 4, 2, 1 if session_present else 0, code))


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    packet_id: int = 0,
    dup: bool = False,
    properties: bytes = b"",
) -> bytes:
    """A PUBLISH packet; ``packet_id`` is used (and required) when ``qos`` > 0; ``properties``
    is MQTT 5's property block (:func:`uns.mqtt.wire.v5.encode_publish5`)."""
    head = _string(topic.encode())
    if qos:
        head += packet_id.to_bytes(2, "big")
    if properties:
        head += properties
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    body_len = len(head) + len(payload)
    return bytes((first,)) + encode_remaining_length(body_len) + head + payload


def encode_ack(kind: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK: a packet id and nothing else."""
    if kind not in _ACKS:
        raise ValueError(f"packet type {kind} is not an acknowledgement")
    return bytes((kind << 4 | (0x02 if kind == PUBREL else 0), 2)) + packet_id.to_bytes(2, "big")


def encode_subscribe(packet_id: int, topic: str, qos: int) -> bytes:
    """A SUBSCRIBE packet for one filter."""
    return _packet(
        SUBSCRIBE << 4 | 0x02, packet_id.to_bytes(2, "big") + _string(topic.encode()) + bytes((qos,))
    )


def encode_suback(packet_id: int, codes: Sequence[int]) -> bytes:
    """A SUBACK: per filter the granted QoS, or 0x80 for a refusal."""
    return _packet(SUBACK << 4, packet_id.to_bytes(2, "big") + bytes(codes))


def encode_unsubscribe(packet_id: int, topic: str) -> bytes:
    """An UNSUBSCRIBE packet for one filter."""
    return _packet(UNSUBSCRIBE << 4 | 0x02, packet_id.to_bytes(2, "big") + _string(topic.encode()))


# ------------------------------------------------------------------ parsing packet bodies
def fixed_flags_ok(kind: int, flags: int) -> bool:
    """Whether the fixed header's flag nibble is the one the spec fixes for ``kind`` (PUBLISH: any)."""
    return kind == PUBLISH or flags == (0x02 if kind in _FLAGS_TWO else 0)


def remaining_length_at(buf: bytes, pos: int, n: int) -> tuple[int, int]:
    """(remaining length, body start) for the fixed header at ``pos``; start -1 when incomplete."""
    length = 0
    for i in range(4):
        if pos + 1 + i >= n:
            return 0, -1
        byte = buf[pos + 1 + i]
        length |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return length, pos + 2 + i
    raise MqttProtocolError("remaining length longer than 4 bytes")


def decode_remaining_length(data: bytes) -> tuple[int, int]:
    """(value, bytes used) of the variable length integer at the start of ``data``."""
    length, start = remaining_length_at(data, -1, len(data))
    if start < 0:
        raise MqttProtocolError("remaining length truncated")
    return length, start


class _Cursor:
    """Reads the fields of one packet body in order; any overrun is a protocol error."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MqttProtocolError(f"{self.what} shorter than its fields")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def packet_id(self) -> int:
        packet_id = self.u16()
        if not packet_id:
            raise MqttProtocolError(f"{self.what} with packet id 0")  # [MQTT-2.3.1-1]
        return packet_id

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        try:
            text = self.binary().decode()
        except UnicodeDecodeError as exc:
            raise MqttProtocolError(f"{self.what} with a string that is not UTF-8") from exc
        if "\x00" in text:
            raise MqttProtocolError(f"{self.what} with a string containing U+0000")  # [MQTT-1.5.3-2]
        return text

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)

    def end(self) -> None:
        if not self.done:
            raise MqttProtocolError(f"{self.what} longer than its fields")


def _topic_name_ok(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic  # [MQTT-3.3.2-2]


def parse_connect(body: bytes) -> Connect:
    """The fields of a CONNECT body.  An unknown protocol raises with ``connack=1``."""
    c = _Cursor(body, "CONNECT")
    protocol, level = c.string(), c.u8()
    if (protocol, level) not in PROTOCOLS:
        raise MqttProtocolError(f"protocol {protocol!r} level {level}", connack=1)
    flags, keepalive = c.u8(), c.u16()
    if flags & 0x01:
        raise MqttProtocolError("reserved CONNECT flag set")  # [MQTT-3.1.2-3]
    client_id = c.string()
    will = None
    if flags & 0x04:
        topic, payload, qos = c.string(), c.binary(), flags >> 3 & 0x03
        if qos == 3 or not _topic_name_ok(topic):
            raise MqttProtocolError("invalid Will")
        will = Will(topic, payload, qos, bool(flags & 0x20))
    elif flags & 0x38:
        raise MqttProtocolError("Will QoS or retain without a Will")  # [MQTT-3.1.2-13, -15]
    if flags & 0x40 and not flags & 0x80:
        raise MqttProtocolError("password without a user name")  # [MQTT-3.1.2-22]
    username = c.string() if flags & 0x80 else None
    password = c.binary() if flags & 0x40 else None
    c.end()
    return Connect(client_id, keepalive, bool(flags & 0x02), will, username, password, protocol, level)


def parse_connack(body: bytes) -> tuple[bool, int]:
    """(session present, return code) of a CONNACK body."""
    if len(body) != 2:
        raise MqttProtocolError(f"CONNACK of {len(body)} bytes")
    return bool(body[0] & 0x01), body[1]


def parse_publish(flags: int, body: bytes) -> tuple[str, int, bytes]:
    """(topic, packet id or 0 at QoS 0, payload) of a PUBLISH from a client, strictly checked."""
    qos = flags >> 1 & 0x03
    if qos == 3:
        raise MqttProtocolError("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
    c = _Cursor(body, "PUBLISH")
    topic = c.string()
    if not _topic_name_ok(topic):
        raise MqttProtocolError(f"PUBLISH to {topic!r}, which is not a topic name")
    packet_id = c.packet_id() if qos else 0
    return topic, packet_id, c.rest()


def parse_ack(body: bytes, what: str = "acknowledgement") -> int:
    """The packet id of a PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK body."""
    if len(body) != 2:
        raise MqttProtocolError(f"{what} of {len(body)} bytes")
    return body[0] << 8 | body[1]


def parse_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """(packet id, [(filter, requested QoS)]) of a SUBSCRIBE body; at least one filter."""
    c = _Cursor(body, "SUBSCRIBE")
    packet_id = c.packet_id()
    filters = []
    while not c.done:
        topic_filter, qos = c.string(), c.u8()
        if qos > 2:
            raise MqttProtocolError("SUBSCRIBE QoS above 2")  # [MQTT-3.8.3-4]
        filters.append((topic_filter, qos))
    if not filters:
        raise MqttProtocolError("SUBSCRIBE without topic filters")  # [MQTT-3.8.3-3]
    return packet_id, filters


def parse_suback(body: bytes) -> tuple[int, list[int]]:
    """(packet id, [granted QoS or 0x80]) of a SUBACK body."""
    if len(body) < 3:
        raise MqttProtocolError("SUBACK without a return code")
    return body[0] << 8 | body[1], list(body[2:])


def parse_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    """(packet id, [filter]) of an UNSUBSCRIBE body; at least one filter."""
    c = _Cursor(body, "UNSUBSCRIBE")
    packet_id = c.packet_id()
    filters = []
    while not c.done:
        filters.append(c.string())
    if not filters:
        raise MqttProtocolError("UNSUBSCRIBE without topic filters")  # [MQTT-3.10.3-2]
    return packet_id, filters
