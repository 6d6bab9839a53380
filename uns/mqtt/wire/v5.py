"""MQTT 5.0 on the wire: properties, reason codes, and the packets whose layout differs from 3.1.1.

Part of :mod:`uns.mqtt.wire` (no I/O).  What MQTT 5 adds to a packet is, for the
packets the client exchanges:

- CONNECT: protocol level 5, a property block after the keepalive (ours: Session
  Expiry Interval, Receive Maximum) and an (empty) Will property block before the
  Will topic; a password no longer needs a user name.
- CONNACK: a reason code instead of a return code, then properties the client
  must obey (:class:`ConnAck`: Receive Maximum, Maximum QoS, Retain Available,
  Maximum Packet Size, Server Keep Alive, ...).
- PUBLISH: a property block after the topic (and packet id).  **The one place
  that reads it is** :func:`publish_payload_start`; the readers inline only its
  common case, a property length of 0 (one byte ``00``).  A native parser must
  do the same: read the property length (a variable byte integer), check every
  property id within that length, refuse a Topic Alias (we announce Topic Alias
  Maximum 0, so a broker must never send one [MQTT-3.2.2-17]; one that does
  breaks the protocol) and skip the rest -- user properties (string pairs)
  included -- without keeping them.  The payload starts right after the block.
- SUBSCRIBE / UNSUBSCRIBE: an (empty) property block after the packet id; a
  subscription's options byte carries the QoS in its low two bits.
- SUBACK / UNSUBACK / PUBACK / PUBREC / PUBREL / PUBCOMP: a property block and a
  reason code per filter or packet (omitted on success for the acknowledgements).
- DISCONNECT may come from the broker, with a reason code; AUTH is not used.

Our own PUBACK, PUBREC, PUBREL, PUBCOMP (``xx 02 <id>``) and DISCONNECT (``e0 00``)
are valid MQTT 5 as they are: a remaining length of 2 (or 0) means "success" /
"normal disconnection".
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uns.mqtt.wire.packets import (
    SUBSCRIBE,
    UNSUBSCRIBE,
    MqttProtocolError,
    Will,
    _packet,
    _string,
    encode_connect,
    encode_publish,
    encode_remaining_length,
)

__all__ = [
    "PROTOCOL_5",
    "REASONS",
    "ConnAck",
    "Connect5",
    "encode_connect5",
    "encode_publish5",
    "encode_subscribe5",
    "encode_unsubscribe5",
    "parse_ack5",
    "parse_connack5",
    "parse_connect5",
    "parse_disconnect5",
    "parse_properties",
    "parse_publish5",
    "parse_suback5",
    "parse_subscribe5",
    "publish_payload_start",
    "reason_text",
]

#: the protocol level byte of MQTT 5.0 in CONNECT (3.1.1 is 4)
PROTOCOL_5 = 5

# property identifiers (MQTT 5.0, section 2.2.2.2) of the packets we exchange
PAYLOAD_FORMAT, MESSAGE_EXPIRY, CONTENT_TYPE = 0x01, 0x02, 0x03
RESPONSE_TOPIC, CORRELATION_DATA, SUBSCRIPTION_ID = 0x08, 0x09, 0x0B
SESSION_EXPIRY, ASSIGNED_CLIENT_ID, SERVER_KEEP_ALIVE = 0x11, 0x12, 0x13
AUTH_METHOD, AUTH_DATA, REQUEST_PROBLEM_INFO, WILL_DELAY = 0x15, 0x16, 0x17, 0x18
REQUEST_RESPONSE_INFO, RESPONSE_INFO, SERVER_REFERENCE, REASON_STRING = 0x19, 0x1A, 0x1C, 0x1F
RECEIVE_MAXIMUM, TOPIC_ALIAS_MAXIMUM, TOPIC_ALIAS, MAXIMUM_QOS = 0x21, 0x22, 0x23, 0x24
RETAIN_AVAILABLE, USER_PROPERTY, MAXIMUM_PACKET_SIZE = 0x25, 0x26, 0x27
WILDCARD_AVAILABLE, SUBSCRIPTION_IDS_AVAILABLE, SHARED_AVAILABLE = 0x28, 0x29, 0x2A

_BYTE, _U16, _U32, _VARINT, _STRING, _BINARY, _PAIR = range(7)
#: the wire type of each property
_KINDS = {
    PAYLOAD_FORMAT: _BYTE, MESSAGE_EXPIRY: _U32, CONTENT_TYPE: _STRING, RESPONSE_TOPIC: _STRING,
    CORRELATION_DATA: _BINARY, SUBSCRIPTION_ID: _VARINT, SESSION_EXPIRY: _U32,
    ASSIGNED_CLIENT_ID: _STRING, SERVER_KEEP_ALIVE: _U16, AUTH_METHOD: _STRING, AUTH_DATA: _BINARY,
    REQUEST_PROBLEM_INFO: _BYTE, WILL_DELAY: _U32, REQUEST_RESPONSE_INFO: _BYTE,
    RESPONSE_INFO: _STRING, SERVER_REFERENCE: _STRING, REASON_STRING: _STRING,
    RECEIVE_MAXIMUM: _U16, TOPIC_ALIAS_MAXIMUM: _U16, TOPIC_ALIAS: _U16, MAXIMUM_QOS: _BYTE,
    RETAIN_AVAILABLE: _BYTE, USER_PROPERTY: _PAIR, MAXIMUM_PACKET_SIZE: _U32,
    WILDCARD_AVAILABLE: _BYTE, SUBSCRIPTION_IDS_AVAILABLE: _BYTE, SHARED_AVAILABLE: _BYTE,
}  # fmt: skip

# which properties each packet may carry (anything else is a malformed packet)
_ACK_PROPS = frozenset({REASON_STRING, USER_PROPERTY})
_PUBLISH_PROPS = frozenset(
    {PAYLOAD_FORMAT, MESSAGE_EXPIRY, CONTENT_TYPE, RESPONSE_TOPIC, CORRELATION_DATA, SUBSCRIPTION_ID,
     TOPIC_ALIAS, USER_PROPERTY}
)  # fmt: skip
#: what a PUBLISH to us may carry: no Topic Alias, as we announce Topic Alias Maximum 0
_RECEIVED_PUBLISH_PROPS = _PUBLISH_PROPS - {TOPIC_ALIAS}
_CONNACK_PROPS = frozenset(
    {SESSION_EXPIRY, RECEIVE_MAXIMUM, MAXIMUM_QOS, RETAIN_AVAILABLE, MAXIMUM_PACKET_SIZE,
     ASSIGNED_CLIENT_ID, TOPIC_ALIAS_MAXIMUM, REASON_STRING, USER_PROPERTY, WILDCARD_AVAILABLE,
     SUBSCRIPTION_IDS_AVAILABLE, SHARED_AVAILABLE, SERVER_KEEP_ALIVE, RESPONSE_INFO,
     SERVER_REFERENCE, AUTH_METHOD, AUTH_DATA}
)  # fmt: skip
_CONNECT_PROPS = frozenset(
    {SESSION_EXPIRY, RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE, TOPIC_ALIAS_MAXIMUM, REQUEST_RESPONSE_INFO,
     REQUEST_PROBLEM_INFO, USER_PROPERTY, AUTH_METHOD, AUTH_DATA}
)  # fmt: skip
_WILL_PROPS = frozenset(
    {WILL_DELAY, PAYLOAD_FORMAT, MESSAGE_EXPIRY, CONTENT_TYPE, RESPONSE_TOPIC, CORRELATION_DATA,
     USER_PROPERTY}
)  # fmt: skip
_DISCONNECT_PROPS = frozenset({SESSION_EXPIRY, REASON_STRING, USER_PROPERTY, SERVER_REFERENCE})
_SUBSCRIBE_PROPS = frozenset({SUBSCRIPTION_ID, USER_PROPERTY})

#: reason codes (MQTT 5.0, section 2.4) as the text an error message shows
REASONS = {
    0x04: "disconnect with Will message", 0x10: "no matching subscribers",
    0x11: "no subscription existed", 0x80: "unspecified error", 0x81: "malformed packet",
    0x82: "protocol error", 0x83: "implementation specific error",
    0x84: "unsupported protocol version", 0x85: "client identifier not valid",
    0x86: "bad user name or password", 0x87: "not authorized", 0x88: "server unavailable",
    0x89: "server busy", 0x8A: "banned", 0x8B: "server shutting down",
    0x8C: "bad authentication method", 0x8D: "keep alive timeout", 0x8E: "session taken over",
    0x8F: "topic filter invalid", 0x90: "topic name invalid", 0x91: "packet identifier in use",
    0x92: "packet identifier not found", 0x93: "receive maximum exceeded",
    0x94: "topic alias invalid", 0x95: "packet too large", 0x96: "message rate too high",
    0x97: "quota exceeded", 0x98: "administrative action", 0x99: "payload format invalid",
    0x9A: "retain not supported", 0x9B: "QoS not supported", 0x9C: "use another server",
    0x9D: "server moved", 0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded", 0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported", 0xA2: "wildcard subscriptions not supported",
}  # fmt: skip


def reason_text(code: int, reason_string: str | None = None) -> str:
    """``not authorized (0x87)``, with the broker's own reason string when it sent one."""
    text = f"{REASONS.get(code, 'reason code')} (0x{code:02X})"
    return f"{text}: {reason_string}" if reason_string else text


# ------------------------------------------------------------------ properties
def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the variable byte integer at ``pos``."""
    value = 0
    for i in range(4):
        if pos >= end:
            raise MqttProtocolError("variable byte integer runs past its packet")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, pos
    raise MqttProtocolError("variable byte integer longer than 4 bytes")


def _text(raw: bytes, what: str) -> str:
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise MqttProtocolError(f"{what} with a string that is not UTF-8") from exc
    if "\x00" in text:
        raise MqttProtocolError(f"{what} with a string containing U+0000")
    return text


def parse_properties(
    buf: bytes, pos: int, end: int, allowed: frozenset[int], what: str, *, keep: bool = True
) -> tuple[dict[int, Any], int]:
    """The property block at ``pos``: ``({id: value}, position after it)``.

    User properties (0x26) come as a list of ``(name, value)`` pairs under their id
    (or are only checked and skipped, like everything, with ``keep=False``).  An id
    the packet may not carry, a repeated single-valued one, or a length past ``end``
    is a :class:`MqttProtocolError`."""
    length, pos = _varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise MqttProtocolError(f"{what} properties longer than the packet")
    props: dict[int, Any] = {}
    while pos < stop:
        ident = buf[pos]
        kind = _KINDS.get(ident)
        if kind is None or ident not in allowed:
            if ident == TOPIC_ALIAS and kind is not None:
                raise MqttProtocolError(
                    f"{what} with a topic alias, which we did not allow (Topic Alias Maximum 0)"
                )
            raise MqttProtocolError(f"{what} with property 0x{ident:02X}, which it may not carry")
        pos += 1
        value: Any
        if kind == _BYTE:
            if pos >= stop:
                raise MqttProtocolError(f"{what} property 0x{ident:02X} truncated")
            value, pos = buf[pos], pos + 1
        elif kind in (_U16, _U32):
            size = 2 if kind == _U16 else 4
            if pos + size > stop:
                raise MqttProtocolError(f"{what} property 0x{ident:02X} truncated")
            value, pos = int.from_bytes(buf[pos : pos + size], "big"), pos + size
        elif kind == _VARINT:
            value, pos = _varint(buf, pos, stop)
        else:
            first, pos = _length_prefixed(buf, pos, stop, what)
            if kind == _PAIR:
                second, pos = _length_prefixed(buf, pos, stop, what)
                value = (_text(first, what), _text(second, what)) if keep else None
            else:
                value = first if kind == _BINARY else _text(first, what)
        if not keep:
            continue
        if ident in (USER_PROPERTY, SUBSCRIPTION_ID):
            props.setdefault(ident, []).append(value)
        elif ident in props:
            raise MqttProtocolError(f"{what} with property 0x{ident:02X} twice")
        else:
            props[ident] = value
    return props, stop


def _length_prefixed(buf: bytes, pos: int, stop: int, what: str) -> tuple[bytes, int]:
    if pos + 2 > stop:
        raise MqttProtocolError(f"{what} property truncated")
    n = buf[pos] << 8 | buf[pos + 1]
    if pos + 2 + n > stop:
        raise MqttProtocolError(f"{what} property longer than its block")
    return bytes(buf[pos + 2 : pos + 2 + n]), pos + 2 + n


_PACKERS: dict[int, Callable[[Any], bytes]] = {
    _BYTE: lambda v: bytes((v,)),
    _U16: lambda v: struct.pack(">H", v),
    _U32: lambda v: struct.pack(">I", v),
    _VARINT: encode_remaining_length,
    _STRING: lambda v: _string(v.encode()),
    _BINARY: _string,
    _PAIR: lambda v: _string(v[0].encode()) + _string(v[1].encode()),
}


def encode_properties(props: list[tuple[int, Any]]) -> bytes:
    """A property block: its length, then each ``(id, value)`` in order."""
    body = b"".join(bytes((ident,)) + _PACKERS[_KINDS[ident]](value) for ident, value in props)
    return encode_remaining_length(len(body)) + body


# ------------------------------------------------------------------ CONNECT / CONNACK
def encode_connect5(
    identifier: str,
    *,
    keepalive: int,
    clean_session: bool = True,
    session_expiry: int = 0,
    receive_maximum: int | None = None,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
) -> bytes:
    """A CONNECT packet of MQTT 5.0 (``clean_session``: the Clean Start flag):
    ``session_expiry`` seconds (0: the session ends with the connection, as Sparkplug wants
    of a host), ``receive_maximum`` unacknowledged QoS 1/2 messages the broker may send us
    at once (None: the protocol's 65535)."""
    props: list[tuple[int, Any]] = []
    if session_expiry:
        props.append((SESSION_EXPIRY, session_expiry))
    if receive_maximum is not None:
        if not 0 < receive_maximum <= 0xFFFF:
            raise ValueError(f"receive maximum {receive_maximum} is not 1-65535")
        props.append((RECEIVE_MAXIMUM, receive_maximum))
    return encode_connect(
        identifier,
        keepalive=keepalive,
        clean_session=clean_session,
        username=username,
        password=password,
        will=will,
        level=PROTOCOL_5,
        properties=encode_properties(props),
    )


@dataclass(frozen=True, slots=True)
class ConnAck:
    """A CONNACK of either protocol, with the limits an MQTT 5 broker sets (3.1.1: the defaults)."""

    session_present: bool
    #: 0 accepts; else the 3.1.1 return code (1-5) or the MQTT 5 reason code (>= 0x80)
    code: int
    #: QoS 1/2 publishes we may have unacknowledged at once
    receive_maximum: int = 0xFFFF
    maximum_qos: int = 2
    retain_available: bool = True
    #: the largest packet the broker takes from us (None: no limit but the protocol's)
    maximum_packet_size: int | None = None
    #: the keepalive the broker wants instead of ours
    server_keep_alive: int | None = None
    #: the session expiry the broker granted, when it differs from what we asked
    session_expiry: int | None = None
    reason_string: str | None = None
    server_reference: str | None = None


def parse_connack5(body: bytes) -> ConnAck:
    """A CONNACK body of MQTT 5.0."""
    if len(body) < 3:
        raise MqttProtocolError(f"CONNACK of {len(body)} bytes")
    if body[0] & 0xFE:
        raise MqttProtocolError("reserved CONNACK flags set")
    props, _ = parse_properties(body, 2, len(body), _CONNACK_PROPS, "CONNACK")
    maximum_qos = props.get(MAXIMUM_QOS, 2)
    receive_maximum = props.get(RECEIVE_MAXIMUM, 0xFFFF)
    if (maximum_qos > 1 and MAXIMUM_QOS in props) or receive_maximum == 0:
        raise MqttProtocolError("CONNACK with an invalid Maximum QoS or Receive Maximum")
    return ConnAck(
        session_present=bool(body[0] & 0x01),
        code=body[1],
        receive_maximum=receive_maximum,
        maximum_qos=maximum_qos,
        retain_available=bool(props.get(RETAIN_AVAILABLE, 1)),
        maximum_packet_size=props.get(MAXIMUM_PACKET_SIZE),
        server_keep_alive=props.get(SERVER_KEEP_ALIVE),
        session_expiry=props.get(SESSION_EXPIRY),
        reason_string=props.get(REASON_STRING),
        server_reference=props.get(SERVER_REFERENCE),
    )


@dataclass(frozen=True, slots=True)
class Connect5:
    """The fields of an MQTT 5.0 CONNECT (what a broker, or a test's wiretap, reads)."""

    client_id: str
    keepalive: int
    clean_start: bool
    will: Will | None
    username: str | None
    password: bytes | None
    properties: dict[int, Any] = field(default_factory=dict)

    @property
    def session_expiry(self) -> int:
        """Seconds the broker keeps the session after the connection ends (absent: 0)."""
        return int(self.properties.get(SESSION_EXPIRY, 0))

    @property
    def receive_maximum(self) -> int:
        return int(self.properties.get(RECEIVE_MAXIMUM, 0xFFFF))


def parse_connect5(body: bytes) -> Connect5:
    """An MQTT 5.0 CONNECT body (the protocol name and level included)."""
    end = len(body)
    name, pos = _length_prefixed(body, 0, end, "CONNECT")
    if name != b"MQTT" or pos >= end or body[pos] != PROTOCOL_5:
        raise MqttProtocolError("not an MQTT 5.0 CONNECT")
    if pos + 4 > end:
        raise MqttProtocolError("CONNECT shorter than its fields")
    flags, keepalive = body[pos + 1], body[pos + 2] << 8 | body[pos + 3]
    if flags & 0x01:
        raise MqttProtocolError("reserved CONNECT flag set")
    props, pos = parse_properties(body, pos + 4, end, _CONNECT_PROPS, "CONNECT")
    raw_id, pos = _length_prefixed(body, pos, end, "CONNECT")
    will = None
    if flags & 0x04:
        _, pos = parse_properties(body, pos, end, _WILL_PROPS, "CONNECT Will", keep=False)
        topic, pos = _length_prefixed(body, pos, end, "CONNECT")
        payload, pos = _length_prefixed(body, pos, end, "CONNECT")
        will = Will(_text(topic, "CONNECT"), payload, flags >> 3 & 0x03, bool(flags & 0x20))
    username = password = None
    if flags & 0x80:
        raw_user, pos = _length_prefixed(body, pos, end, "CONNECT")
        username = _text(raw_user, "CONNECT")
    if flags & 0x40:
        password, pos = _length_prefixed(body, pos, end, "CONNECT")
    if pos != end:
        raise MqttProtocolError("CONNECT longer than its fields")
    client_id = _text(raw_id, "CONNECT")
    return Connect5(client_id, keepalive, bool(flags & 0x02), will, username, password, props)


# ------------------------------------------------------------------ PUBLISH
def encode_publish5(
    topic: str, payload: bytes, qos: int = 0, retain: bool = False, packet_id: int = 0, dup: bool = False
) -> bytes:
    """A PUBLISH packet of MQTT 5.0 without properties (an empty property block)."""
    return encode_publish(topic, payload, qos, retain, packet_id, dup, b"\x00")


def publish_payload_start(buf: bytes, pos: int, end: int) -> int:
    """Where the payload of an MQTT 5.0 PUBLISH starts, given ``pos``, the start of its
    property block (right after the topic, or the packet id at QoS 1/2), and ``end``,
    the end of the packet.  The readers inline the common case (``buf[pos] == 0``).

    Every property is checked to be one a PUBLISH may carry and to lie within the block,
    then skipped (user properties too: nothing of them is kept).  A Topic Alias is a
    protocol error, since we never allow the broker one (Topic Alias Maximum 0)."""
    if pos >= end:
        raise MqttProtocolError("PUBLISH without its property length")
    return parse_properties(buf, pos, end, _RECEIVED_PUBLISH_PROPS, "PUBLISH", keep=False)[1]


def parse_publish5(flags: int, body: bytes) -> tuple[str, int, dict[int, Any], bytes]:
    """(topic, packet id or 0, properties, payload) of an MQTT 5.0 PUBLISH body (a broker's side)."""
    qos = flags >> 1 & 0x03
    if qos == 3:
        raise MqttProtocolError("PUBLISH with QoS 3")
    end = len(body)
    raw_topic, pos = _length_prefixed(body, 0, end, "PUBLISH")
    packet_id = 0
    if qos:
        if pos + 2 > end:
            raise MqttProtocolError("PUBLISH shorter than its fields")
        packet_id, pos = body[pos] << 8 | body[pos + 1], pos + 2
    props, pos = parse_properties(body, pos, end, _PUBLISH_PROPS, "PUBLISH")
    return _text(raw_topic, "PUBLISH"), packet_id, props, bytes(body[pos:])


# ------------------------------------------------------------------ SUBSCRIBE and the acknowledgements
def encode_subscribe5(packet_id: int, topic: str, qos: int) -> bytes:
    """A SUBSCRIBE of MQTT 5.0 for one filter (no properties; options: the QoS only)."""
    body = packet_id.to_bytes(2, "big") + b"\x00" + _string(topic.encode()) + bytes((qos,))
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def encode_unsubscribe5(packet_id: int, topic: str) -> bytes:
    """An UNSUBSCRIBE of MQTT 5.0 for one filter (no properties)."""
    return _packet(UNSUBSCRIBE << 4 | 0x02, packet_id.to_bytes(2, "big") + b"\x00" + _string(topic.encode()))


def parse_subscribe5(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """(packet id, [(filter, options byte)]) of an MQTT 5.0 SUBSCRIBE body (a broker's side)."""
    end = len(body)
    if end < 3:
        raise MqttProtocolError("SUBSCRIBE shorter than its fields")
    packet_id = body[0] << 8 | body[1]
    _, pos = parse_properties(body, 2, end, _SUBSCRIBE_PROPS, "SUBSCRIBE")
    filters = []
    while pos < end:
        raw, pos = _length_prefixed(body, pos, end, "SUBSCRIBE")
        if pos >= end:
            raise MqttProtocolError("SUBSCRIBE filter without options")
        filters.append((_text(raw, "SUBSCRIBE"), body[pos]))
        pos += 1
    if not filters:
        raise MqttProtocolError("SUBSCRIBE without topic filters")
    return packet_id, filters


def parse_suback5(body: bytes) -> tuple[int, list[int], str | None]:
    """(packet id, [reason code per filter], reason string) of a SUBACK or UNSUBACK of MQTT 5.0."""
    if len(body) < 3:
        raise MqttProtocolError(f"acknowledgement of {len(body)} bytes")
    props, pos = parse_properties(body, 2, len(body), _ACK_PROPS, "SUBACK")
    codes = list(body[pos:])
    if not codes:
        raise MqttProtocolError("SUBACK without a reason code")
    return body[0] << 8 | body[1], codes, props.get(REASON_STRING)


def parse_ack5(body: bytes) -> tuple[int, int, str | None]:
    """(packet id, reason code, reason string) of a PUBACK, PUBREC, PUBREL or PUBCOMP of MQTT 5.0
    (a remaining length of 2 means success)."""
    n = len(body)
    if n < 2:
        raise MqttProtocolError(f"acknowledgement of {n} bytes")
    packet_id = body[0] << 8 | body[1]
    if n == 2:
        return packet_id, 0, None
    reason_string = None
    if n > 3:
        props, _ = parse_properties(body, 3, n, _ACK_PROPS, "acknowledgement")
        reason_string = props.get(REASON_STRING)
    return packet_id, body[2], reason_string


def parse_disconnect5(body: bytes) -> tuple[int, str | None, str | None]:
    """(reason code, reason string, server reference) of a DISCONNECT of MQTT 5.0."""
    if not body:
        return 0, None, None
    props: dict[int, Any] = {}
    if len(body) > 1:
        props, _ = parse_properties(body, 1, len(body), _DISCONNECT_PROPS, "DISCONNECT")
    return body[0], props.get(REASON_STRING), props.get(SERVER_REFERENCE)
