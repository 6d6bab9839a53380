"""MQTT 3.1.1 packets for both ends of a connection: encoders, body parsers and stream readers, no I/O.

The project's one wire codec: the client (:mod:`uns.mqtt.client`), the demo
broker (:mod:`uns.mqtt.minibroker`) and the benchmark load generator use it.

- ``encode_*`` builds every packet either side sends;
- ``parse_*`` reads the body of a packet whose fields the receiver needs;
  malformed bytes raise :class:`MqttProtocolError`;
- two incremental readers split a byte stream into packets.
  :class:`PacketReader` is the client's hot path: it turns every complete
  PUBLISH of a received chunk into a tuple in one loop and answers QoS 1/2
  itself.  :class:`FrameReader` returns every packet in arrival order, as a
  broker needs (a SUBSCRIBE followed by a PUBLISH must be handled in that order).

Packets one at a time live in :mod:`uns.mqtt.wire.packets`, the stream
readers in :mod:`uns.mqtt.wire.readers`; import both from here.
"""

from uns.mqtt.wire.packets import (
    CONNACK,
    CONNACK_REASONS,
    CONNECT,
    DISCONNECT,
    DISCONNECT_PACKET,
    MAX_REMAINING_LENGTH,
    PINGREQ,
    PINGREQ_PACKET,
    PINGRESP,
    PINGRESP_PACKET,
    PROTOCOLS,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    Connect,
    Message,
    MqttProtocolError,
    Will,
    decode_remaining_length,
    encode_ack,
    encode_connack,
    encode_connect,
    encode_publish,
    encode_remaining_length,
    encode_suback,
    encode_subscribe,
    encode_unsubscribe,
    fixed_flags_ok,
    parse_ack,
    parse_connack,
    parse_connect,
    parse_publish,
    parse_suback,
    parse_subscribe,
    parse_unsubscribe,
)
from uns.mqtt.wire.readers import FrameReader, PacketReader

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
    "FrameReader",
    "Message",
    "MqttProtocolError",
    "PacketReader",
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
]
