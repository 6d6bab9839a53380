"""The republish sink against a real mosquitto: topics, payloads, modes, filters, overflow, broker loss;
and the event encoding it uses, byte for byte against json of the reference dicts."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.config import RepublishSection
from uns.core.context import ContextStore
from uns.core.enrich import Enricher
from uns.core.events import Batch, ContextChange, Quality, Sample
from uns.core.model import PlantModel
from uns.engine.plant import load_model
from uns.mqtt.mosquitto import Mosquitto
from uns.sinks.encoders import EventEncoder
from uns.sinks.republish import RepublishSink
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import DataSet

integration = pytest.mark.integration  # the tests that need mosquitto

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "uns-event.schema.json").read_text())
EVENT = jsonschema.Draft202012Validator(SCHEMA)
DEVICE_EVENT = jsonschema.Draft202012Validator({**SCHEMA, "$ref": "#/$defs/deviceEvent"})
BR = "acme/basel/pilot/usp/br-101"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def model() -> PlantModel:
    return load_model(ROOT / "examples" / "pilot-plant.toml")


@pytest.fixture
def enricher(model: PlantModel) -> Enricher:
    """The pilot plant's enricher, with batch_id B-1 set on the USP area."""
    store = ContextStore()
    store.apply(ContextChange(0, 0, "acme/basel/pilot/usp", "batch_id", "B-1"))
    return Enricher(model, store)


def br_sample(metric: str, value: float, ts: int = 1_000, **kw: Any) -> Sample:
    return Sample(
        "PilotPlant", "USP-Ctrl", "BR-101", metric, DataType.Double, value, ts, ts, seq=1, bdseq=0, **kw
    )


def enriched(enricher: Enricher, *samples: Sample) -> Batch:
    batch = Batch(samples=list(samples))
    enricher.enrich(batch)
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


class Handover:
    """``publish_nowait`` as the engine offers it (straight to the client, no await; here
    paho's publish inside aiomqtt), with a switch that makes it refuse, as a client
    does whose buffer is full."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.paho = client._client
        self.refuse = False
        self.calls = 0

    def __call__(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        self.calls += 1
        if self.refuse:
            return False
        return bool(self.paho.publish(topic, payload, qos, retain).rc == 0)


# ------------------------------------------------------------- modes


@integration
async def test_metric_mode_one_event_per_sample(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    config = RepublishSection(include_transient=False)
    async with RepublishSink(client.publish, EventEncoder(ns), config) as sink:
        sink.add(
            enriched(
                enricher,
                br_sample("Temperature", 37.1),
                br_sample("Headspace/Pressure", 12.0),
                br_sample("pH", 7.0, is_historical=True),  # not republished by default
                br_sample("DO", 40.0, is_transient=True),  # nor this, with include_transient=False
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


@integration
async def test_device_mode_one_event_per_message_and_path(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    config = RepublishSection(mode="device", include_historical=True)
    async with RepublishSink(client.publish, EventEncoder(ns), config) as sink:
        sink.add(
            enriched(
                enricher, br_sample("Temperature", 37.1), br_sample("pH", 7.0, ts=900, is_historical=True)
            )
        )
        node_metric = Sample("PilotPlant", "USP-Ctrl", None, "CPU/Load", DataType.Float, 5.5, 1_000, 1_000)
        sink.add(enriched(enricher, node_metric))
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


@integration
@pytest.mark.parametrize("handover", [False, True], ids=["awaited", "handed-over"])
async def test_order_is_kept_under_load(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client, handover: bool
) -> None:
    """Awaited publishes (64 in flight) and the engine's fast path (events handed to the
    client from add(), no await) both keep the order of the samples."""
    count = 2_000
    nowait = Handover(client) if handover else None
    config = RepublishSection() if handover else RepublishSection(max_in_flight=64)
    async with RepublishSink(client.publish, EventEncoder(ns), config, publish_nowait=nowait) as sink:
        for i in range(count):
            sink.add(enriched(enricher, br_sample("Temperature", float(i), ts=i)))
        got = await receive(subscriber, count)
        await sink.flush()
        assert sink.stats()["published"] == count
    assert [event["value"] for _, event in got] == [float(i) for i in range(count)]


@integration
@pytest.mark.parametrize("mode", ["metric", "device"])
async def test_qos0_events_are_handed_over_inside_add(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client, mode: str
) -> None:
    """No queue, no task hop: the events are with the client when add() returns."""
    handover = Handover(client)
    async with RepublishSink(
        client.publish, EventEncoder(ns), RepublishSection(mode=mode), publish_nowait=handover
    ) as sink:
        await asyncio.sleep(0)
        sink.add(enriched(enricher, br_sample("Temperature", 1.0), br_sample("pH", 7.0)))
        stats = sink.stats()
        expected = 2 if mode == "metric" else 1
        assert (stats["published"], stats["queue_depth"], handover.calls) == (expected, 0, expected)
        got = await receive(subscriber, expected)
    if mode == "metric":
        assert [(topic, event["value"]) for topic, event in got] == [
            (f"{ns}/{BR}/Temperature", 1.0),
            (f"{ns}/{BR}/pH", 7.0),
        ]
    else:
        assert got[0][0] == f"{ns}/{BR}"
        assert [m["value"] for m in got[0][1]["metrics"]] == [1.0, 7.0]


@integration
async def test_refused_handover_queues_and_later_events_wait_behind(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    handover = Handover(client)
    async with RepublishSink(client.publish, EventEncoder(ns), publish_nowait=handover) as sink:
        await asyncio.sleep(0)
        handover.refuse = True
        sink.add(enriched(enricher, br_sample("Temperature", 0.0), br_sample("Temperature", 1.0)))
        assert (sink.stats()["published"], sink.stats()["queue_depth"]) == (0, 2)
        handover.refuse = False
        sink.add(enriched(enricher, br_sample("Temperature", 2.0)))  # behind the queued ones: no overtaking
        assert (sink.stats()["published"], sink.stats()["queue_depth"]) == (0, 3)
        handover.refuse = True  # the task retries refused events through the awaited publish
        await sink.flush()
        assert (sink.stats()["published"], sink.stats()["queue_depth"]) == (3, 0)
        handover.refuse = False
        sink.add(enriched(enricher, br_sample("Temperature", 3.0)))  # nothing queued: direct again
        assert sink.stats()["published"] == 4
        got = await receive(subscriber, 4)
        assert sink.stats()["errors"] == 0
    assert [event["value"] for _, event in got] == [0.0, 1.0, 2.0, 3.0]


@integration
async def test_refused_handover_fills_the_queue_and_drops_the_oldest(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    handover = Handover(client)
    handover.refuse = True
    config = RepublishSection(max_queue=3)
    async with RepublishSink(client.publish, EventEncoder(ns), config, publish_nowait=handover) as sink:
        await asyncio.sleep(0)
        for i in range(5):  # no await: the task cannot drain meanwhile
            sink.add(enriched(enricher, br_sample("Temperature", float(i))))
        assert (sink.stats()["dropped_queue_full"], sink.stats()["queue_depth"]) == (2, 3)
        handover.refuse = False
        got = await receive(subscriber, 3)
        await nothing_more(subscriber)
    assert [event["value"] for _, event in got] == [2.0, 3.0, 4.0]
    assert sink.stats()["published"] == 3


@integration
async def test_nothing_is_handed_over_before_the_sink_runs(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    handover = Handover(client)
    sink = RepublishSink(client.publish, EventEncoder(ns), publish_nowait=handover)
    sink.add(enriched(enricher, br_sample("Temperature", 1.0)))
    assert (handover.calls, sink.stats()["queue_depth"]) == (0, 1)
    async with sink:
        sink.add(enriched(enricher, br_sample("Temperature", 2.0)))  # queued behind the first
        got = await receive(subscriber, 2)
    assert [event["value"] for _, event in got] == [1.0, 2.0]


@integration
async def test_qos1_never_takes_the_handover(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    handover = Handover(client)
    async with RepublishSink(
        client.publish, EventEncoder(ns), RepublishSection(qos=1), publish_nowait=handover
    ) as sink:
        sink.add(enriched(enricher, br_sample("Temperature", 1.0)))
        assert sink.stats()["queue_depth"] == 1
        await sink.flush()
        got = await receive(subscriber, 1)
    assert handover.calls == 0
    assert got[0][1]["value"] == 1.0


@integration
async def test_retained_qos1_events_reach_late_subscribers(
    broker: Mosquitto, enricher: Enricher, ns: str, client: aiomqtt.Client
) -> None:
    async with RepublishSink(client.publish, EventEncoder(ns), RepublishSection(qos=1, retain=True)) as sink:
        sink.add(enriched(enricher, br_sample("Temperature", 36.9)))
        await sink.flush()
        assert sink.stats()["published"] == 1
    async with aiomqtt.Client(broker.host, broker.port) as late:
        await late.subscribe(f"{ns}/#", qos=1)
        (topic, event), *_ = await receive(late, 1)
    assert topic == f"{ns}/{BR}/Temperature"
    assert event["value"] == 36.9
    await client.publish(topic, b"", qos=1, retain=True)  # leave the session broker clean


@integration
async def test_unmapped_sources_can_be_left_out(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    rogue = Sample("PilotPlant", "Rogue", "X", "m", DataType.Int32, 1, 5, 5)
    async with RepublishSink(
        client.publish, EventEncoder(ns), RepublishSection(include_unmapped=False)
    ) as sink:
        sink.add(enriched(enricher, rogue, br_sample("Temperature", 37.0)))
        got = await receive(subscriber, 1)
        await nothing_more(subscriber)
    assert got[0][0] == f"{ns}/{BR}/Temperature"
    async with RepublishSink(client.publish, EventEncoder(ns)) as sink:
        sink.add(enriched(enricher, Sample("PilotPlant", "Rogue", "X", "m", DataType.Int32, 1, 5, 5)))
        got = await receive(subscriber, 1)
    assert got[0][0] == f"{ns}/_unmapped/PilotPlant/Rogue/X/m"


# ------------------------------------------------------------- overflow and failures


@integration
async def test_full_queue_drops_the_oldest(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    sink = RepublishSink(client.publish, EventEncoder(ns), RepublishSection(max_queue=5))
    for i in range(6):  # before the background task runs: nothing leaves the queue
        sink.add(enriched(enricher, br_sample("Temperature", float(i))))
    sink.add(enriched(enricher, br_sample("Temperature", 6.0), br_sample("Temperature", 7.0)))
    assert sink.stats()["dropped_queue_full"] == 3
    assert sink.stats()["queue_depth"] == 5
    async with sink:
        got = await receive(subscriber, 5)
        await nothing_more(subscriber)
    assert [event["value"] for _, event in got] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert sink.stats()["published"] == 5


@integration
async def test_broker_loss_is_counted_and_the_sink_keeps_running(
    own_broker: Mosquitto, enricher: Enricher, ns: str
) -> None:
    config = RepublishSection(drain_timeout_s=1.0)
    async with (
        aiomqtt.Client(own_broker.host, own_broker.port) as client,
        RepublishSink(client.publish, EventEncoder(ns), config) as sink,
    ):
        sink.add(enriched(enricher, br_sample("Temperature", 1.0)))
        await sink.flush()
        assert sink.stats()["published"] == 1
        own_broker.stop()
        await asyncio.sleep(0.3)
        for i in range(3):
            sink.add(enriched(enricher, br_sample("Temperature", float(i)), br_sample("pH", 7.0)))
            await asyncio.sleep(0)
        await sink.flush()
        stats = sink.stats()
        assert stats["errors"] == 6
        assert "not currently connected" in str(stats["last_error"])
        assert sink._task is not None
        assert not sink._task.done()
    assert sink.stats()["published"] == 1


@integration
async def test_broker_loss_with_handover_is_counted_and_bounded(
    own_broker: Mosquitto, enricher: Enricher, ns: str
) -> None:
    config = RepublishSection(drain_timeout_s=1.0, max_queue=4)
    async with aiomqtt.Client(own_broker.host, own_broker.port) as client:
        handover = Handover(client)
        async with RepublishSink(client.publish, EventEncoder(ns), config, publish_nowait=handover) as sink:
            await asyncio.sleep(0)
            sink.add(enriched(enricher, br_sample("Temperature", 1.0)))
            assert sink.stats()["published"] == 1
            own_broker.stop()
            await asyncio.sleep(0.3)
            for i in range(10):  # paho refuses (not connected): queued, drop-oldest beyond 4
                sink.add(enriched(enricher, br_sample("Temperature", float(i))))
            assert (sink.stats()["queue_depth"], sink.stats()["dropped_queue_full"]) == (4, 6)
            await sink.flush()  # the awaited publish fails for each: counted, not retried
            stats = sink.stats()
            assert (stats["errors"], stats["queue_depth"], stats["published"]) == (4, 0, 1)
            assert "not currently connected" in str(stats["last_error"])
            assert sink._task is not None
            assert not sink._task.done()


@integration
async def test_publishing_resumes_when_the_broker_is_back(
    own_broker: Mosquitto, enricher: Enricher, ns: str
) -> None:
    # The engine reconnects with a new client; the sink keeps one publish callable.
    current: dict[str, aiomqtt.Client] = {}

    async def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
        await current["client"].publish(topic, payload, qos, retain)

    async with RepublishSink(publish, EventEncoder(ns), RepublishSection(drain_timeout_s=2.0)) as sink:
        async with aiomqtt.Client(own_broker.host, own_broker.port) as first:
            current["client"] = first
            own_broker.stop()
            await asyncio.sleep(0.3)
            sink.add(enriched(enricher, br_sample("Temperature", 1.0)))
            await sink.flush()
            assert sink.stats()["errors"] == 1
        own_broker.start()
        async with (
            aiomqtt.Client(own_broker.host, own_broker.port) as second,
            aiomqtt.Client(own_broker.host, own_broker.port) as sub,
        ):
            await sub.subscribe(f"{ns}/#", qos=1)
            current["client"] = second
            sink.add(enriched(enricher, br_sample("Temperature", 2.0)))
            got = await receive(sub, 1)
            await sink.flush()
    assert got[0][1]["value"] == 2.0
    assert sink.stats()["published"] == 1
    assert sink.stats()["errors"] == 1


@integration
async def test_exit_accounts_for_every_event(
    enricher: Enricher, ns: str, client: aiomqtt.Client, subscriber: aiomqtt.Client
) -> None:
    total = 5_000
    sink = RepublishSink(
        client.publish, EventEncoder(ns), RepublishSection(drain_timeout_s=0.0, max_queue=4_000)
    )
    async with sink:
        for i in range(total):
            sink.add(enriched(enricher, br_sample("Temperature", float(i))))
        await asyncio.sleep(0)
    stats = sink.stats()
    assert stats["dropped_queue_full"] == 1_000
    assert sum(int(stats[key]) for key in ("published", "dropped_on_close", "dropped_queue_full")) == total
    assert stats["queue_depth"] == 0


@integration
async def test_disabled_sink_does_nothing(enricher: Enricher, ns: str, client: aiomqtt.Client) -> None:
    async with RepublishSink(client.publish, EventEncoder(ns), RepublishSection(enabled=False)) as sink:
        sink.add(enriched(enricher, br_sample("Temperature", 37.0)))
        await sink.flush()
        assert sink.stats()["queue_depth"] == 0
        assert sink._task is None


def test_queue_full_and_publish_errors_are_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
        raise AssertionError("not started: nothing is published")

    enricher = Enricher(PlantModel.empty(), ContextStore())
    sink = RepublishSink(publish, config=RepublishSection(max_queue=2))
    with caplog.at_level(logging.WARNING, logger="uns.sinks.republish"):
        for i in range(5):
            sink.add(enriched(enricher, br_sample("Temperature", float(i))))
        for _ in range(3):
            sink._error(OSError("gone"))
    assert sink.stats()["dropped_queue_full"] == 3
    assert [r.getMessage() for r in caplog.records] == [
        "republish: queue full (2 events), dropped the 1 oldest (1 so far); the lake still has every sample",
        "republish: publish failed: OSError: gone (1 failed so far); the lake still has every sample",
    ]


# ------------------------------------------------------------- event encoding (pure)

REFERENCE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
names = (
    st.sampled_from(["Temperature", "Headspace/Pressure", 'q"uote', "back\\slash", "tab\tnl\n", "ü€𝄞", ""])
    | text
)
floats = st.floats(allow_nan=True, allow_infinity=True)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    floats,
    text,
    st.binary(max_size=8),
    st.lists(floats | st.integers(-5, 5), max_size=3),
    st.lists(text | st.booleans(), max_size=3),
    st.builds(
        lambda rows: DataSet(["a", "b"], [DataType.Double, DataType.String], [[v, s] for v, s in rows]),
        st.lists(st.tuples(floats, text), max_size=2),
    ),
)
contexts: st.SearchStrategy[dict[str, str] | None] = st.one_of(
    st.none(),
    st.just({}),
    st.just({"batch_id": "B-1"}),  # one shared dict object, as the context store hands out
    st.dictionaries(st.sampled_from(["batch_id", "phase", 'k"ey']), text, max_size=3),
)


@st.composite
def samples(draw: st.DrawFn, path: str | None = None) -> Sample:
    device = draw(st.sampled_from(["BR-101", None, 'd"ev']))
    sample = Sample(
        draw(st.sampled_from(["PilotPlant", "Gr/oup"])),
        draw(st.sampled_from(["USP-Ctrl", "nöde"])),
        device,
        draw(names),
        draw(st.sampled_from([DataType.Double, DataType.Int64, DataType.String, DataType.DataSet])),
        draw(values),
        draw(st.integers(min_value=0, max_value=2**53)),
        0,
        quality=draw(st.sampled_from([Quality.GOOD, Quality.BAD, Quality.STALE])),
        is_historical=draw(st.booleans()),
        seq=draw(st.none() | st.integers(0, 255)),
        bdseq=draw(st.none() | st.integers(0, 2**40)),
        unit=draw(st.sampled_from([None, "degC", "µS/cm", 'in"ch'])),
        context=draw(contexts),
    )
    sample.path = path if path is not None else draw(st.sampled_from([BR, "_unmapped/G/N+1", "ä/b"]))
    return sample


@given(sample=samples())
@settings(max_examples=300, deadline=None)
def test_encoded_event_is_byte_for_byte_json_of_event_json(sample: Sample) -> None:
    # the same (path, metric) comes back with other units, types and sources: the fragment
    # cache must notice; and an event that passes once must pass again from the cache
    encoder = EventEncoder()
    expected = REFERENCE.encode(encoder.event_json(sample)).encode()
    assert encoder.encode_event(sample) == expected
    assert encoder.encode_event(sample) == expected


@given(
    path=st.sampled_from([BR, 'p/"q"']),
    data=st.data(),
)
@settings(max_examples=300, deadline=None)
def test_encoded_device_event_is_byte_for_byte_json_of_device_event_json(
    path: str, data: st.DataObject
) -> None:
    group = data.draw(st.lists(samples(path), min_size=1, max_size=5))
    encoder = EventEncoder()
    expected = REFERENCE.encode(encoder.device_event_json(group)).encode()
    assert encoder.encode_device_event(group) == expected
    assert encoder.encode_device_event(group) == expected


def test_encoded_events_conform_and_name_their_fields(enricher: Enricher) -> None:
    encoder = EventEncoder("uns/v1")
    batch = enriched(
        enricher,
        br_sample("Temperature", 37.5),
        br_sample("pH", float("nan"), ts=900, is_historical=True, quality=Quality.BAD),
    )
    first, second = batch.samples
    second.context = {"batch_id": "B-0"}  # an older value under an older context
    event = json.loads(encoder.encode_event(first))
    EVENT.validate(event)
    assert list(event) == [
        "ts",
        "path",
        "metric",
        "value",
        "datatype",
        "unit",
        "quality",
        "historical",
        "source",
        "context",
    ]
    assert (event["value"], event["unit"], event["context"]) == (37.5, "degC", {"batch_id": "B-1"})
    device = json.loads(encoder.encode_device_event(batch.samples))
    DEVICE_EVENT.validate(device)
    assert (device["ts"], device["context"]) == (1_000, {"batch_id": "B-1"})
    assert "context" not in device["metrics"][0]
    assert device["metrics"][1]["context"] == {"batch_id": "B-0"}
    assert (device["metrics"][1]["value"], device["metrics"][1]["quality"]) == ("NaN", "bad")
    with pytest.raises(ValueError, match="at least one"):
        encoder.encode_device_event([])
