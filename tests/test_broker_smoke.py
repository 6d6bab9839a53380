"""The session mosquitto accepts connections and relays messages (aiomqtt)."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from uns.mqtt.mosquitto import Mosquitto

pytestmark = pytest.mark.integration


async def test_publish_and_receive(broker: Mosquitto, ns: str) -> None:
    topic = f"{ns}/smoke"
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"{ns}-sub") as sub:
        await sub.subscribe(f"{ns}/#", qos=1)
        async with aiomqtt.Client(broker.host, broker.port, identifier=f"{ns}-pub") as pub:
            await pub.publish(topic, b"hello", qos=1)
        msg = await asyncio.wait_for(anext(sub.messages), timeout=5)
    assert msg.topic.value == topic
    assert msg.payload == b"hello"


async def test_namespaces_are_isolated(broker: Mosquitto, ns: str) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as sub:
        await sub.subscribe(f"{ns}/#", qos=1)
        async with aiomqtt.Client(broker.host, broker.port) as pub:
            await pub.publish(f"other-{ns}/x", b"not for us", qos=1)
            await pub.publish(f"{ns}/x", b"for us", qos=1)
        msg = await asyncio.wait_for(anext(sub.messages), timeout=5)
    assert msg.payload == b"for us"
