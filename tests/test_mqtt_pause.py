"""A client that stops reading (back-pressure) keeps its connection however long the pause,
against a mosquitto with production-like queue limits (docs/lake.md section 4).

While it does not read, the broker's PINGRESPs wait in the TCP stream behind the
PUBLISHes; the client keeps pinging (the broker hears from it and keeps the
session) and does not count the broker's silence against it.  What the broker
holds for it is bounded by its own limits (``max_queued_messages``,
``max_queued_bytes``): beyond them mosquitto drops QoS 0 messages for that client
and says so in its log; the connection stays up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from uns.mqtt.client import FastClient
from uns.mqtt.mosquitto import Mosquitto, free_port
from uns.mqtt.settings import BrokerSettings

#: a production-like broker: bounded per-client queues (mosquitto's default is 1000 messages)
LIMITS = "max_queued_messages 200\nmax_queued_bytes 1000000\nlog_type notice\n"
MESSAGES = 20_000
PAYLOAD = bytes(1000)  # 20 MB in all: more than the socket buffers of both ends hold


async def test_a_paused_client_keeps_its_connection_and_the_broker_drops_beyond_its_limits(
    tmp_path: Path,
) -> None:
    with Mosquitto(port=free_port(), workdir=tmp_path, extra_conf=LIMITS) as broker:
        paused = BrokerSettings(host=broker.host, port=broker.port, keepalive=1)
        async with (
            FastClient(paused, identifier="paused", high_water=100, low_water=10) as sub,
            FastClient(BrokerSettings(host=broker.host, port=broker.port), identifier="edge") as pub,
        ):
            await sub.subscribe("t/#")
            for i in range(MESSAGES):
                await pub.publish("t/data", i.to_bytes(4, "big") + PAYLOAD)
            await asyncio.sleep(4.0)  # nothing taken: paused for more than 1.5 x keepalive
            assert sub.connected, "the paused client lost its connection"
            assert sub.stats["pauses"] >= 1
            received = []
            while True:
                try:
                    await asyncio.wait_for(sub.wait_messages(), 1.0)
                except TimeoutError:
                    break
                received += [int.from_bytes(payload[:4], "big") for _, payload, _, _ in sub.take()]
            assert received == sorted(set(received)), "out of order or twice"
            assert 100 <= len(received) < MESSAGES, "the broker's limit should have dropped some"
            await pub.publish("t/after", b"still here")
            await asyncio.wait_for(sub.wait_messages(), 5.0)
            assert [topic for topic, *_ in sub.take()] == ["t/after"]
            assert sub.connected
    log = (tmp_path / "mosquitto.log").read_text()
    assert "Outgoing messages are being dropped for client paused" in log
    assert "Client paused has exceeded timeout" not in log  # the broker kept hearing our pings
