"""MQTT 3.1.1 and 5.0 packets for both ends of a connection: encoders, parsers, stream readers; no I/O.

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

Packets one at a time live in :mod:`uns.mqtt.wire.packets` (3.1.1) and
:mod:`uns.mqtt.wire.v5` (what MQTT 5.0 changes: properties, reason codes, and the
one documented place that reads a PUBLISH's properties), the stream readers in
:mod:`uns.mqtt.wire.readers`; import them from here (this package re-exports each
module's ``__all__``).
"""

from uns.mqtt.wire import packets, readers, v5
from uns.mqtt.wire.packets import *  # noqa: F403  (the names are packets.__all__)
from uns.mqtt.wire.readers import *  # noqa: F403  (the names are readers.__all__)
from uns.mqtt.wire.v5 import *  # noqa: F403  (the names are v5.__all__)

__all__ = packets.__all__ + readers.__all__ + v5.__all__
