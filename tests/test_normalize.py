"""Normalized events: enrichment (uns.core.enrich), topics and their reversible sanitizing
(uns.core.topics), their JSON and its schema (uns.sinks.encoders)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.core.context import ContextStore
from uns.core.enrich import Enricher
from uns.core.events import Batch, CatalogEntry, ContextChange, Quality, Sample
from uns.core.model import PlantModel, parse_model
from uns.core.topics import (
    TopicNames,
    check_prefix,
    sanitize_level,
    sanitize_name,
    unsanitize_level,
    unsanitize_name,
)
from uns.engine.plant import load_model
from uns.errors import ConfigError
from uns.sinks.encoders import EventEncoder
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import DataSet, Metric, MetricValue, Parameter, Template

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "uns-event.schema.json").read_text())
EVENT = jsonschema.Draft202012Validator(SCHEMA)
DEVICE_EVENT = jsonschema.Draft202012Validator({**SCHEMA, "$ref": "#/$defs/deviceEvent"})

GR = "acme/basel/pilot/granulation/gr-201"
BR = "acme/basel/pilot/usp/br-101"


@pytest.fixture(scope="module")
def model() -> PlantModel:
    return load_model(ROOT / "examples" / "pilot-plant.toml")


def sample(
    metric: str,
    value: MetricValue,
    ts: int,
    *,
    node: str = "GRAN-Ctrl",
    device: str | None = "GR-201",
    datatype: DataType = DataType.Double,
    **kw: Any,
) -> Sample:
    return Sample("PilotPlant", node, device, metric, datatype, value, ts, ts + 5, seq=7, bdseq=2, **kw)


# ------------------------------------------------------------- enrichment


def test_enrich_fills_path_unit_and_context(model: PlantModel) -> None:
    store = ContextStore()
    store.apply(ContextChange(0, 0, "acme/basel/pilot", "order_id", "PO-1"))
    enricher = Enricher(model, store)
    batch = Batch(
        samples=[
            sample("Temperature", 37.0, 100, node="USP-Ctrl", device="BR-101"),
            sample("Unknown", 1.0, 100, node="USP-Ctrl", device="BR-101", unit="bar"),
            sample("Heartbeat", 1, 100, node="Rogue", device=None, datatype=DataType.Int32),
        ]
    )
    enricher.enrich(batch)
    t, u, h = batch.samples
    assert (t.path, t.unit, t.unmapped, t.context) == (BR, "degC", False, {"order_id": "PO-1"})
    assert (u.path, u.unit) == (BR, "bar")  # no override: the BIRTH's unit stays
    assert (h.path, h.unmapped, h.context) == ("_unmapped/PilotPlant/Rogue", True, {})
    assert batch.context == []


def test_context_metric_becomes_context_of_its_path(model: PlantModel) -> None:
    store = ContextStore()
    enricher = Enricher(model, store)
    birth = Batch(
        samples=[
            sample("BedTemp", 40.0, 1_000),
            sample("Batch/ID", "B-0042", 1_000, datatype=DataType.String),
            sample("Batch/Phase", "GRANULATING", 1_000, datatype=DataType.String),
        ]
    )
    enricher.enrich(birth)
    # the measurement in the same message, at the same timestamp, already carries the new context
    assert birth.samples[0].context == {"batch_id": "B-0042", "phase": "GRANULATING"}
    assert [(c.path, c.key, c.value, c.ts) for c in birth.context] == [
        (GR, "batch_id", "B-0042", 1_000),
        (GR, "phase", "GRANULATING", 1_000),
    ]
    assert birth.context[0].source == "sparkplug:PilotPlant/GRAN-Ctrl/GR-201/Batch/ID"
    assert store.at(f"{GR}/module", 2_000) == {"batch_id": "B-0042", "phase": "GRANULATING"}
    # the same value again (a rebirth, a periodic report) is no new change
    again = Batch(samples=[sample("Batch/ID", "B-0042", 5_000, datatype=DataType.String)])
    enricher.enrich(again)
    assert again.context == []
    # a null value clears the key
    end = Batch(samples=[sample("Batch/Phase", None, 6_000, datatype=DataType.String)])
    enricher.enrich(end)
    assert [(c.key, c.value) for c in end.context] == [("phase", None)]
    assert store.at(GR, 6_000) == {"batch_id": "B-0042"}
    assert store.at(GR, 5_999) == {"batch_id": "B-0042", "phase": "GRANULATING"}


def test_late_measurement_gets_the_context_of_its_own_time(model: PlantModel) -> None:
    store = ContextStore()
    enricher = Enricher(model, store)
    enricher.enrich(Batch(samples=[sample("Batch/ID", "B1", 1_000, datatype=DataType.String)]))
    enricher.enrich(Batch(samples=[sample("Batch/ID", "B2", 2_000, datatype=DataType.String)]))
    late = Batch(samples=[sample("BedTemp", 41.0, 1_500, is_historical=True), sample("BedTemp", 42.0, 2_500)])
    enricher.enrich(late)
    assert [s.context for s in late.samples] == [{"batch_id": "B1"}, {"batch_id": "B2"}]


def test_display_name_renames_samples_and_catalog_entries() -> None:
    doc = {
        "equipment": {"site": {}, "site/unit": {}},
        "source": [
            {
                "group": "G",
                "node": "N",
                "device": "D",
                "path": "site/unit",
                "metrics": {"DB10.TT101": {"display_name": "Process/Temperature", "unit": "degC"}},
            }
        ],
    }
    enricher = Enricher(parse_model(doc), ContextStore())
    s = Sample("G", "N", "D", "DB10.TT101", DataType.Float, 20.5, 1, 1)
    entry = CatalogEntry("G", "N", "D", "DB10.TT101", 3, DataType.Float, 1, 0)
    batch = Batch(samples=[s], catalog=[entry])
    enricher.enrich(batch)
    assert (s.metric, s.unit, s.path) == ("Process/Temperature", "degC", "site/unit")
    assert (entry.metric, entry.unit, entry.path) == ("Process/Temperature", "degC", "site/unit")
    assert EventEncoder().topic_for(s.path, s.metric) == "uns/v1/site/unit/Process/Temperature"


# ------------------------------------------------------------- events and schema

TEMPLATE = Template(
    version="1",
    template_ref="Motor",
    is_definition=False,
    parameters=[Parameter("rated", DataType.Float, 1.5)],
    metrics=[Metric(name="rpm", datatype=DataType.Int32, value=1500)],
)
VALUES: dict[DataType, MetricValue] = {
    DataType.Unknown: None,
    DataType.Int8: -128,
    DataType.Int16: -32768,
    DataType.Int32: -(2**31),
    DataType.Int64: -(2**63),
    DataType.UInt8: 255,
    DataType.UInt16: 65535,
    DataType.UInt32: 2**32 - 1,
    DataType.UInt64: 2**64 - 1,
    DataType.Float: float("nan"),
    DataType.Double: float("-inf"),
    DataType.Boolean: True,
    DataType.String: 'ä"\\\n/+#',
    DataType.DateTime: 1_767_225_600_000,
    DataType.Text: "long text",
    DataType.UUID: "0b7e6c1e-6b1a-4f2c-9d2e-3a4b5c6d7e8f",
    DataType.DataSet: DataSet(
        ["a", "b"], [DataType.Int32, DataType.Double], [[1, 2.5], [None, float("inf")]]
    ),
    DataType.Bytes: b"\x00\xff",
    DataType.File: b"%PDF-1.7",
    DataType.Template: TEMPLATE,
    DataType.PropertySet: None,
    DataType.PropertySetList: None,
    DataType.Int8Array: [-1, 0, 1],
    DataType.Int16Array: [-300],
    DataType.Int32Array: [1, 2],
    DataType.Int64Array: [-(2**63)],
    DataType.UInt8Array: [255],
    DataType.UInt16Array: [],
    DataType.UInt32Array: [2**32 - 1],
    DataType.UInt64Array: [2**64 - 1],
    DataType.FloatArray: [1.5, float("nan")],
    DataType.DoubleArray: [float("inf"), -0.0],
    DataType.BooleanArray: [True, False],
    DataType.StringArray: ["a", ""],
    DataType.DateTimeArray: [0, 1_767_225_600_000],
}


def test_every_datatype_is_covered() -> None:
    assert set(VALUES) == set(DataType)


@pytest.mark.parametrize("datatype", list(DataType), ids=lambda d: d.name)
def test_events_of_every_datatype_conform(datatype: DataType) -> None:
    encoder = EventEncoder()
    s = sample("Folder/Value", VALUES[datatype], 1_000, datatype=datatype, quality=Quality.STALE)
    Enricher(PlantModel.empty(), ContextStore()).enrich(Batch(samples=[s]))
    event = encoder.event_json(s)
    EVENT.validate(event)
    assert event["datatype"] == datatype.name
    assert event["source"] == {
        "group": "PilotPlant",
        "node": "GRAN-Ctrl",
        "device": "GR-201",
        "seq": 7,
        "bdseq": 2,
    }
    assert event["quality"] == "stale"
    encoded = encoder.encode_event(s)
    assert json.loads(encoded) == json.loads(json.dumps(event))
    compact = json.dumps(json.loads(encoded), separators=(",", ":"), ensure_ascii=False)
    assert encoded == compact.encode()


def test_exact_values_in_events() -> None:
    encoder = EventEncoder()
    big = sample("c", 2**64 - 1, 1, datatype=DataType.UInt64)
    nan = sample("f", float("nan"), 1, datatype=DataType.Float)
    raw = sample("b", b"\x00\xff", 1, datatype=DataType.Bytes)
    assert json.loads(encoder.encode_event(big))["value"] == 2**64 - 1
    assert json.loads(encoder.encode_event(nan))["value"] == "NaN"
    assert json.loads(encoder.encode_event(raw))["value"] == "AP8="


def test_event_fields(model: PlantModel) -> None:
    store = ContextStore()
    store.apply(ContextChange(0, 0, GR, "batch_id", "B7"))
    encoder = EventEncoder("plant/uns")
    s = sample("BedTemp", 41.25, 123, is_historical=True)
    Enricher(model, store).enrich(Batch(samples=[s]))
    assert encoder.event_json(s) == {
        "ts": 123,
        "path": GR,
        "metric": "BedTemp",
        "value": 41.25,
        "datatype": "Double",
        "unit": "degC",
        "quality": "good",
        "historical": True,
        "source": {"group": "PilotPlant", "node": "GRAN-Ctrl", "device": "GR-201", "seq": 7, "bdseq": 2},
        "context": {"batch_id": "B7"},
    }
    assert encoder.topic_for(s.path, s.metric) == f"plant/uns/{GR}/BedTemp"
    assert encoder.device_topic(s.path) == f"plant/uns/{GR}"


def test_device_event_carries_differing_context_per_metric(model: PlantModel) -> None:
    store = ContextStore()
    store.apply(ContextChange(1_000, 0, GR, "batch_id", "B1"))
    store.apply(ContextChange(2_000, 0, GR, "batch_id", "B2"))
    enricher = Enricher(model, store)
    samples = [
        sample("BedTemp", 41.0, 1_500, is_historical=True),
        sample("Power", 3.5, 2_500),
        sample("Batch/ID", "B2", 2_500, datatype=DataType.String),
    ]
    enricher.enrich(Batch(samples=samples))
    event = EventEncoder.device_event_json(samples)
    DEVICE_EVENT.validate(event)
    assert (event["ts"], event["path"], event["context"]) == (2_500, GR, {"batch_id": "B2"})
    assert [m["metric"] for m in event["metrics"]] == ["BedTemp", "Power", "Batch/ID"]
    assert event["metrics"][0]["context"] == {"batch_id": "B1"}
    assert "context" not in event["metrics"][1]
    assert event["metrics"][1]["unit"] == "kW"
    assert not EVENT.is_valid(event)
    with pytest.raises(ValueError, match="at least one"):
        EventEncoder.device_event_json([])


def test_schemas_are_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


# ------------------------------------------------------------- topics

names = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
tricky = st.lists(
    st.sampled_from(["", "a", "+", "#", "%", "%25", "%2B", "/", "\x00", "x/y", "%%"]), max_size=8
).map("".join)


@given(name=names | tricky)
@settings(max_examples=500, deadline=None)
def test_sanitize_is_reversible_and_mqtt_safe(name: str) -> None:
    topic = sanitize_name(name)
    assert unsanitize_name(topic) == name
    assert not set(topic) & {"+", "#", "\x00"}
    assert all(topic.split("/"))  # no empty levels
    if not any(c in name for c in "%+#\x00") and all(name.split("/")):
        assert topic == name  # clean names are left alone


@given(level=names | tricky)
@settings(max_examples=200, deadline=None)
def test_sanitize_level_is_reversible(level: str) -> None:
    assert unsanitize_level(sanitize_level(level)) == level


def test_sanitize_examples() -> None:
    assert sanitize_name("Batch/ID") == "Batch/ID"
    assert sanitize_name("a+b/#/100%") == "a%2Bb/%23/100%25"
    assert sanitize_name("/lead//trail/") == "%/lead/%/trail/%"
    assert sanitize_name("") == "%"
    topics = TopicNames("uns/v1")
    assert topics.topic_for("_unmapped/G/N+1", "/x") == "uns/v1/_unmapped/G/N%2B1/%/x"
    assert topics.topic_for("_unmapped/G/N+1", "/x") is topics.topic_for("_unmapped/G/N+1", "/x")


@pytest.mark.parametrize("level", ["%2b", "%", "a%", "%zz", "a+b", "#"])
def test_unsanitize_rejects_what_sanitize_cannot_produce(level: str) -> None:
    if level == "%":
        assert unsanitize_level(level) == ""
        return
    with pytest.raises(ValueError, match="not a sanitized"):
        unsanitize_level(level)


@pytest.mark.parametrize("prefix", ["", "/uns", "uns/", "uns//v1", "uns/+", "uns/#", "$SYS/uns", "a%b"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        check_prefix(prefix)
    with pytest.raises(ConfigError):
        TopicNames(prefix)
    with pytest.raises(ConfigError):
        EventEncoder(prefix)


# ------------------------------------------------------------- enrichment against a reference


def reference_enrich(model: PlantModel, store: ContextStore, batch: Batch) -> None:
    """The straightforward enrichment (one resolve and one context lookup per sample)."""
    for s in batch.samples:
        resolved = model.resolve(s.group_id, s.edge_node_id, s.device_id)
        s.path, s.unmapped = resolved.path, resolved.unmapped
        key = resolved.context_keys.get(s.metric)
        if key is not None:
            value = None if s.value is None else str(s.value)
            if store.value_at(s.path, key, s.ts) != value:
                device = f"/{s.device_id}" if s.device_id is not None else ""
                source = f"sparkplug:{s.group_id}/{s.edge_node_id}{device}/{s.metric}"
                change = ContextChange(s.ts, s.received_at, s.path, key, value, source)
                store.apply(change)
                batch.context.append(change)
        info = resolved.metrics.get(s.metric)
        if info is not None:
            s.metric = info.display_name
            s.unit = info.unit if info.unit is not None else s.unit
    for e in batch.catalog:
        resolved = model.resolve(e.group_id, e.edge_node_id, e.device_id)
        e.path = resolved.path
        info = resolved.metrics.get(e.metric)
        if info is not None:
            e.metric = info.display_name
            e.unit = info.unit if info.unit is not None else e.unit
    for s in batch.samples:
        s.context = store.at(s.path, s.ts)


SOURCES = [("GRAN-Ctrl", "GR-201"), ("USP-Ctrl", "BR-101"), ("USP-Ctrl", None), ("Rogue", None)]
METRICS = ["Batch/ID", "Batch/Phase", "BedTemp", "Temperature", "Other"]
samples_st = st.builds(
    lambda src, metric, value, ts: sample(
        metric, value, ts, node=src[0], device=src[1], datatype=DataType.String
    ),
    st.sampled_from(SOURCES),
    st.sampled_from(METRICS),
    st.sampled_from([None, "B1", "B2", "GRANULATING"]),
    st.sampled_from([1_000, 2_000, 2_000, 3_000]),
)
#: a context event on a path (or its parent) between batches: (path, ts, key, value)
events_st = st.tuples(
    st.sampled_from([GR, "acme/basel/pilot", "acme/basel/pilot/usp"]),
    st.sampled_from([500, 1_500, 2_000, 3_500]),
    st.sampled_from(["batch_id", "operator"]),
    st.sampled_from([None, "", "X"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(samples_st, max_size=8), st.lists(events_st, max_size=2)), max_size=6))
def test_enrich_equals_the_per_sample_reference(
    model: PlantModel, steps: list[tuple[list[Sample], list[tuple[str, int, str, str | None]]]]
) -> None:
    store, ref_store = ContextStore(), ContextStore()
    enricher = Enricher(model, store)
    for samples, events in steps:
        for path, ts, key, value in events:
            for target in (store, ref_store):
                target.apply(ContextChange(ts, ts, path, key, value, "test"))
        got = Batch(samples=[dataclasses.replace(s) for s in samples])
        want = Batch(samples=samples)
        enricher.enrich(got)
        reference_enrich(model, ref_store, want)
        assert got == want
        # samples of one path and timestamp share one context object (the lake renders it once)
        seen: dict[tuple[str, int], dict[str, str] | None] = {}
        for s in got.samples:
            assert seen.setdefault((s.path, s.ts), s.context) is s.context
