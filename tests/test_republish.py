"""The republish sink against a real mosquitto: topics, payloads, modes, filters, overflow, broker loss."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest

from uns.broker import Mosquitto
from uns.context import ContextStore
from uns.errors import ConfigError
from uns.events import Batch, ContextChange, Sample
from uns.model import PlantModel, load_model
from uns.normalize import Normalizer
from uns.republish import RepublishConfig, RepublishSink
from uns.sparkplug.datatypes import DataType

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "uns-event.schema.json").read_text())
EVENT = jsonschema.Draft202012Validator(SCHEMA)
DEVICE_EVENT = jsonschema.Draft202012Validator({**SCHEMA, "$ref": "#/$defs/deviceEvent"})
BR = "acme/basel/pilot/usp/br-101"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def model() -> PlantModel:
    return load_model(ROOT / "examples" / "pilot-plant.toml")


def normalizer(model: PlantModel, ns: str) -> Normalizer:
    store = ContextStore()
    store.apply(ContextChange(0, 0, "acme/basel/pilot/usp", "batch_id", "B-1"))
    return Normalizer(model, store, prefix=ns)


def br_sample(metric: str, value: float, ts: int = 1_000, **kw: Any) -> Sample:
    return Sample(
        "PilotPlant", "USP-Ctrl", "BR-101", metric, DataType.Double, value, ts, ts, seq=1, bdseq=0, **kw
    )


def enriched(norm: Normalizer, *samples: Sample) -> Batch:
    batch = Batch(samples=list(samples))
    norm.enrich(batch)
    return batch


@pytest.fixture
async def client(broker: Mosquitto, ns: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"{ns}-pub") as c:
        yield c


@pytest.fixture
async def subscriber(broker: Mosquitto, ns: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"{ns}-sub") as c:
        await c.subscribe(f"{ns}/#", qos=1)
        yield c


async def receive(sub: aiomqtt.Client, count: int) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        async for message in sub.messages:
            assert isinstance(message.payload, bytes)
            out.append((message.topic.value, json.loads(message.payload)))
            if len(out) == count:
                break
    return out


async def nothing_more(sub: aiomqtt.Client, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(wait):
            await anext(sub.messages)


# ------------------------------------------------------------- modes


async def test_metric_mode_one_event_per_sample(
    model: PlantModel, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    norm = normalizer(model, ns)
    async with RepublishSink(client.publish, norm) as sink:
        sink.add(
            enriched(
                norm,
                br_sample("Temperature", 37.1),
                br_sample("Headspace/Pressure", 12.0),
                br_sample("pH", 7.0, is_historical=True),  # not republished by default
                br_sample("DO", 40.0, is_transient=True),  # nor this
            )
        )
        await sink.flush()
        got = await receive(subscriber, 2)
        await nothing_more(subscriber)
        stats = sink.stats()
    assert [topic for topic, _ in got] == [f"{ns}/{BR}/Temperature", f"{ns}/{BR}/Headspace/Pressure"]
    for _, event in got:
        EVENT.validate(event)
    assert got[0][1]["unit"] == "degC"
    assert got[0][1]["value"] == 37.1
    assert got[0][1]["context"] == {"batch_id": "B-1"}
    assert got[0][1]["source"] == {
        "group": "PilotPlant",
        "node": "USP-Ctrl",
        "device": "BR-101",
        "seq": 1,
        "bdseq": 0,
    }
    assert stats["published"] == 2
    assert stats["filtered"] == 2
    assert stats["errors"] == 0
    assert stats["queue_depth"] == 0


async def test_device_mode_one_event_per_message_and_path(
    model: PlantModel, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    norm = normalizer(model, ns)
    config = RepublishConfig(mode="device", include_historical=True)
    async with RepublishSink(client.publish, norm, config) as sink:
        sink.add(
            enriched(norm, br_sample("Temperature", 37.1), br_sample("pH", 7.0, ts=900, is_historical=True))
        )
        node_metric = Sample("PilotPlant", "USP-Ctrl", None, "CPU/Load", DataType.Float, 5.5, 1_000, 1_000)
        sink.add(enriched(norm, node_metric))
        got = await receive(subscriber, 2)
        await nothing_more(subscriber)
    (topic1, ev1), (topic2, ev2) = got
    assert topic1 == f"{ns}/{BR}"
    assert topic2 == f"{ns}/acme/basel/pilot/usp"
    for event in (ev1, ev2):
        DEVICE_EVENT.validate(event)
    assert [(m["metric"], m["historical"]) for m in ev1["metrics"]] == [("Temperature", False), ("pH", True)]
    assert ev1["ts"] == 1_000
    assert ev2["metrics"][0]["metric"] == "CPU/Load"


async def test_order_is_kept_under_load(
    model: PlantModel, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    norm = normalizer(model, ns)
    count = 2_000
    async with RepublishSink(client.publish, norm, RepublishConfig(max_in_flight=64)) as sink:
        for i in range(count):
            sink.add(enriched(norm, br_sample("Temperature", float(i), ts=i)))
        got = await receive(subscriber, count)
        await sink.flush()
        assert sink.stats()["published"] == count
    assert [event["value"] for _, event in got] == [float(i) for i in range(count)]


async def test_order_is_kept_when_handing_over_without_waiting(
    model: PlantModel, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    """The engine's fast path: all but the last message of a chunk go to paho directly."""
    norm = normalizer(model, ns)
    count = 2_000
    paho = client._client

    def nowait(topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        return bool(paho.publish(topic, payload, qos, retain).rc == 0)

    async with RepublishSink(client.publish, norm, RepublishConfig(), publish_nowait=nowait) as sink:
        for i in range(count):
            sink.add(enriched(norm, br_sample("Temperature", float(i), ts=i)))
        got = await receive(subscriber, count)
        await sink.flush()
        assert sink.stats()["published"] == count
    assert [event["value"] for _, event in got] == [float(i) for i in range(count)]


async def test_retained_qos1_events_reach_late_subscribers(
    broker: Mosquitto, model: PlantModel, ns: str, client: aiomqtt.Client
) -> None:
    norm = normalizer(model, ns)
    async with RepublishSink(client.publish, norm, RepublishConfig(qos=1, retain=True)) as sink:
        sink.add(enriched(norm, br_sample("Temperature", 36.9)))
        await sink.flush()
        assert sink.stats()["published"] == 1
    async with aiomqtt.Client(broker.host, broker.port) as late:
        await late.subscribe(f"{ns}/#", qos=1)
        (topic, event), *_ = await receive(late, 1)
    assert topic == f"{ns}/{BR}/Temperature"
    assert event["value"] == 36.9
    await client.publish(topic, b"", qos=1, retain=True)  # leave the session broker clean


async def test_unmapped_sources_can_be_left_out(
    model: PlantModel, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    norm = normalizer(model, ns)
    rogue = Sample("PilotPlant", "Rogue", "X", "m", DataType.Int32, 1, 5, 5)
    async with RepublishSink(client.publish, norm, RepublishConfig(include_unmapped=False)) as sink:
        sink.add(enriched(norm, rogue, br_sample("Temperature", 37.0)))
        got = await receive(subscriber, 1)
        await nothing_more(subscriber)
    assert got[0][0] == f"{ns}/{BR}/Temperature"
    async with RepublishSink(client.publish, norm) as sink:
        sink.add(enriched(norm, Sample("PilotPlant", "Rogue", "X", "m", DataType.Int32, 1, 5, 5)))
        got = await receive(subscriber, 1)
    assert got[0][0] == f"{ns}/_unmapped/PilotPlant/Rogue/X/m"


# ------------------------------------------------------------- overflow and failures


async def test_full_queue_drops_the_oldest(
    model: PlantModel, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    norm = normalizer(model, ns)
    sink = RepublishSink(client.publish, norm, RepublishConfig(max_queue=5))
    for i in range(6):  # before the background task runs: nothing leaves the queue
        sink.add(enriched(norm, br_sample("Temperature", float(i))))
    sink.add(enriched(norm, br_sample("Temperature", 6.0), br_sample("Temperature", 7.0)))
    assert sink.stats()["dropped_queue_full"] == 3
    assert sink.stats()["queue_depth"] == 5
    async with sink:
        got = await receive(subscriber, 5)
        await nothing_more(subscriber)
    assert [event["value"] for _, event in got] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert sink.stats()["published"] == 5


async def test_broker_loss_is_counted_and_the_sink_keeps_running(
    own_broker: Mosquitto, model: PlantModel, ns: str
) -> None:
    norm = normalizer(model, ns)
    config = RepublishConfig(drain_timeout_s=1.0)
    async with (
        aiomqtt.Client(own_broker.host, own_broker.port) as client,
        RepublishSink(client.publish, norm, config) as sink,
    ):
        sink.add(enriched(norm, br_sample("Temperature", 1.0)))
        await sink.flush()
        assert sink.stats()["published"] == 1
        own_broker.stop()
        await asyncio.sleep(0.3)
        for i in range(3):
            sink.add(enriched(norm, br_sample("Temperature", float(i)), br_sample("pH", 7.0)))
            await asyncio.sleep(0)
        await sink.flush()
        stats = sink.stats()
        assert stats["errors"] == 6
        assert "not currently connected" in str(stats["last_error"])
        assert sink._task is not None
        assert not sink._task.done()
    assert sink.stats()["published"] == 1


async def test_publishing_resumes_when_the_broker_is_back(
    own_broker: Mosquitto, model: PlantModel, ns: str
) -> None:
    # The engine reconnects with a new client; the sink keeps one publish callable.
    norm = normalizer(model, ns)
    current: dict[str, aiomqtt.Client] = {}

    async def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
        await current["client"].publish(topic, payload, qos, retain)

    async with RepublishSink(publish, norm, RepublishConfig(drain_timeout_s=2.0)) as sink:
        async with aiomqtt.Client(own_broker.host, own_broker.port) as first:
            current["client"] = first
            own_broker.stop()
            await asyncio.sleep(0.3)
            sink.add(enriched(norm, br_sample("Temperature", 1.0)))
            await sink.flush()
            assert sink.stats()["errors"] == 1
        own_broker.start()
        async with (
            aiomqtt.Client(own_broker.host, own_broker.port) as second,
            aiomqtt.Client(own_broker.host, own_broker.port) as sub,
        ):
            await sub.subscribe(f"{ns}/#", qos=1)
            current["client"] = second
            sink.add(enriched(norm, br_sample("Temperature", 2.0)))
            got = await receive(sub, 1)
            await sink.flush()
    assert got[0][1]["value"] == 2.0
    assert sink.stats()["published"] == 1
    assert sink.stats()["errors"] == 1


async def test_exit_accounts_for_every_event(
    model: PlantModel, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    norm = normalizer(model, ns)
    total = 5_000
    sink = RepublishSink(client.publish, norm, RepublishConfig(drain_timeout_s=0.0, max_queue=4_000))
    async with sink:
        for i in range(total):
            sink.add(enriched(norm, br_sample("Temperature", float(i))))
        await asyncio.sleep(0)
    stats = sink.stats()
    assert stats["dropped_queue_full"] == 1_000
    assert stats["published"] + stats["dropped_on_close"] + stats["dropped_queue_full"] == total
    assert stats["queue_depth"] == 0


async def test_disabled_sink_does_nothing(model: PlantModel, ns: str, client: aiomqtt.Client) -> None:
    norm = normalizer(model, ns)
    async with RepublishSink(client.publish, norm, RepublishConfig(enabled=False)) as sink:
        sink.add(enriched(norm, br_sample("Temperature", 37.0)))
        await sink.flush()
        assert sink.stats()["queue_depth"] == 0
        assert sink._task is None


@pytest.mark.parametrize(
    "kwargs",
    [{"qos": 3}, {"mode": "topic"}, {"max_queue": 0}, {"max_in_flight": 0}, {"drain_timeout_s": -1.0}],
)
def test_bad_config(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="republish"):
        RepublishConfig(**kwargs)
