"""Context events that are never lost and never applied twice: event identity,
at-most-once application, retained copies, and the acknowledgements (issue 15)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.engine_helpers import CollectingSink, connected, engine_config, on_memory, running_engine, wait_for
from uns.core.context import event_id, parse_context_event
from uns.engine.daemon import build_engine
from uns.engine.dispatch import Decision, Dispatcher
from uns.engine.host import Engine
from uns.engine.memory import MemoryBroker
from uns.errors import ContextError
from uns.lake import connect
from uns.mqtt.client import FastClient
from uns.mqtt.mosquitto import Mosquitto
from uns.mqtt.settings import BrokerSettings

ROOT = Path(__file__).resolve().parent.parent
ACK_SCHEMA = json.loads((ROOT / "schemas" / "context-ack.schema.json").read_text())
ACK_VALIDATOR = jsonschema.Draft202012Validator(ACK_SCHEMA)
EVENT_VALIDATOR = jsonschema.Draft202012Validator(
    json.loads((ROOT / "schemas" / "context-event.schema.json").read_text())
)

UNIT = "acme/basel/pilot/granulation/gr-201"

# ------------------------------------------------------------------ event ids

keys = st.text(
    st.characters(blacklist_characters="/+#", blacklist_categories=("Cc", "Cs")), min_size=1, max_size=8
)
scalars = st.one_of(st.text(max_size=8), st.integers(-(10**6), 10**6), st.booleans())


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    to_set = draw(st.dictionaries(keys, scalars, max_size=4))
    to_clear = draw(st.lists(keys.filter(lambda k: k not in to_set), max_size=3, unique=True))
    if not to_set and not to_clear:
        to_set = {"batch_id": "B1"}
    # from 2000 to 2026: the times the engine takes (uns.core.intake_rules)
    event: dict[str, Any] = {"ts": draw(st.integers(946_684_800_000, 1_767_261_600_000))}
    if to_set:
        event["set"] = to_set
    if to_clear:
        event["clear"] = to_clear
    for name in ("source", "user", "reason"):
        if draw(st.booleans()):
            event[name] = draw(st.text(max_size=8))
    return event


def canonical_id(path: str, event: dict[str, Any]) -> str:
    """The contract's formula, written out independently."""
    content = {
        "path": path,
        "ts": event["ts"],
        "set": event.get("set", {}),
        "clear": sorted(event.get("clear", [])),
        "source": event.get("source", ""),
        "user": event.get("user"),
        "reason": event.get("reason"),
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "auto-" + hashlib.sha256(text.encode()).hexdigest()[:32]


@settings(max_examples=200, deadline=None)
@given(events(), st.randoms(use_true_random=False))
def test_the_id_is_a_function_of_the_canonical_content_stable_under_key_order(
    event: dict[str, Any], rnd: Any
) -> None:
    ident = event_id(UNIT, event)
    assert ident == canonical_id(UNIT, event)
    assert ident.startswith("auto-") and len(ident) == 37
    items = list(event.items())
    rnd.shuffle(items)
    shuffled = dict(items)
    if "set" in shuffled:
        set_items = list(shuffled["set"].items())
        rnd.shuffle(set_items)
        shuffled["set"] = dict(set_items)
    if "clear" in shuffled:
        shuffled["clear"] = rnd.sample(shuffled["clear"], len(shuffled["clear"]))
    assert event_id(UNIT, shuffled) == ident
    # the same id through a JSON round trip (what the engine receives) and on every change
    received = json.loads(json.dumps(shuffled))
    assert {c.event_id for c in parse_context_event(UNIT, received, received_at=1)} == {ident}


@settings(max_examples=200, deadline=None)
@given(events(), events())
def test_different_content_gives_a_different_id(a: dict[str, Any], b: dict[str, Any]) -> None:
    same = canonical_id(UNIT, a) == canonical_id(UNIT, b)
    assert (event_id(UNIT, a) == event_id(UNIT, b)) == same
    if not same:
        assert event_id(UNIT, a) != event_id(UNIT, b)


@pytest.mark.parametrize(
    "change",
    [
        {"ts": 2},
        {"set": {"batch_id": "B2"}},
        {"set": {"batch_id": "B1", "x": "y"}},
        {"clear": ["phase"]},
        {"source": "ebr"},
        {"user": "jdoe"},
        {"reason": "correction"},
    ],
)
def test_each_field_of_the_content_changes_the_id(change: dict[str, Any]) -> None:
    base = {"ts": 1, "set": {"batch_id": "B1"}}
    assert event_id(UNIT, {**base, **change}) != event_id(UNIT, base)
    assert event_id(f"{UNIT}/x", base) != event_id(UNIT, base)


def test_absent_fields_read_as_the_engine_reads_them() -> None:
    bare = {"ts": 5, "set": {"a": "b"}}
    explicit = {"ts": 5, "set": {"a": "b"}, "clear": [], "source": "", "user": None, "reason": None}
    assert event_id(UNIT, bare) == event_id(UNIT, explicit)


def test_a_given_id_is_the_identity() -> None:
    assert event_id(UNIT, {"id": "mes-4711", "set": {"a": "b"}}) == "mes-4711"
    changes = parse_context_event(UNIT, {"id": "mes-4711", "set": {"a": "b"}, "clear": ["c"]}, received_at=1)
    assert [c.event_id for c in changes] == ["mes-4711", "mes-4711"]
    for bad in ("", "x" * 129, 5, None, ["a"]):
        with pytest.raises(ContextError, match="id must be a string of 1-128 characters"):
            event_id(UNIT, {"id": bad, "set": {"a": "b"}})


def test_an_event_without_ts_is_identified_by_its_receive_time() -> None:
    event = {"set": {"a": "b"}}
    first = parse_context_event(UNIT, event, received_at=1000)[0].event_id
    again = parse_context_event(UNIT, event, received_at=1000)[0].event_id
    later = parse_context_event(UNIT, event, received_at=2000)[0].event_id
    assert first == again == event_id(UNIT, {**event, "ts": 1000})
    assert later != first  # so only events with an id or a ts are recognised on redelivery


def test_the_schema_takes_an_id() -> None:
    assert EVENT_VALIDATOR.is_valid({"id": "a", "set": {"k": "v"}})
    assert not EVENT_VALIDATOR.is_valid({"id": "", "set": {"k": "v"}})
    assert not EVENT_VALIDATOR.is_valid({"id": "x" * 129, "set": {"k": "v"}})
    assert not EVENT_VALIDATOR.is_valid({"id": 1, "set": {"k": "v"}})


# ------------------------------------------------------------------ the dispatcher

NS = "ident"
T = 1_767_261_600_000  # 2026-01-01T10:00:00Z: event times are checked (from 2000, not far ahead)
PREFIX = f"{NS}/uns"
TOPIC = f"{PREFIX}/_context/{UNIT}"
ACK_TOPIC = f"{PREFIX}/_engine/{NS}/context_ack"


def dispatcher(applied: tuple[str, ...] = ()) -> Dispatcher:
    engine = Engine(engine_config("mqtt://memory:1883", NS), transport=MemoryBroker())
    engine.dispatch.remember_applied(applied)
    return engine.dispatch


def ack_of(decision: Decision, payload: bytes | None = None) -> dict[str, Any]:
    """The acknowledgement of a decision, without its ``event_sha256`` (checked against
    ``payload`` when given)."""
    _batch, rebirths, publishes = decision
    assert not rebirths
    (publish,) = publishes
    assert (publish.topic, publish.qos, publish.retain) == (ACK_TOPIC, 1, False)
    ack: dict[str, Any] = json.loads(publish.payload)
    ACK_VALIDATOR.validate(ack)
    digest = ack.pop("event_sha256")
    assert payload is None or digest == hashlib.sha256(payload).hexdigest()
    return ack


def test_an_event_is_applied_once_and_acknowledged_each_time() -> None:
    d = dispatcher()
    payload = b'{"id": "mes-1", "ts": %d, "set": {"batch_id": "B1"}, "clear": ["phase"]}' % (T + 10)
    first = d.process_context(TOPIC, payload, T + 100)
    assert ack_of(first, payload) == {
        "id": "mes-1", "status": "applied", "reason": None, "path": UNIT, "host_id": NS, "ts": T + 100
    }  # fmt: skip
    assert [(c.key, c.value, c.event_id) for c in first[0].context] == [
        ("batch_id", "B1", "mes-1"),
        ("phase", None, "mes-1"),
    ]
    again = d.process_context(TOPIC, payload, T + 200)
    assert ack_of(again, payload) == {
        "id": "mes-1", "status": "duplicate", "reason": "already applied",
        "path": UNIT, "host_id": NS, "ts": T + 200,
    }  # fmt: skip
    assert not again[0]  # nothing for the lake
    # the same id with other content is a conflict: refused and recorded, the first stays
    other = b'{"id": "mes-1", "set": {"batch_id": "B9"}}'
    conflict = d.process_context(TOPIC, other, T + 300)
    ack = ack_of(conflict, other)
    assert (ack["status"], ack["id"]) == ("conflict", "mes-1")
    assert "applied before with other content" in ack["reason"]
    (row,) = conflict[0].rejected
    assert row.error == ack["reason"] and not conflict[0].context
    assert d.context.at(UNIT, T + 10**6) == {"batch_id": "B1"}
    c = d.counters
    assert (c.context_events, c.context_changes, c.context_duplicates, c.context_conflicts, c.messages) == (
        3, 2, 1, 1, 3,
    )  # fmt: skip


def test_an_event_without_id_is_recognised_by_its_content_when_it_has_a_ts() -> None:
    d = dispatcher()
    with_ts = b'{"ts": %d, "set": {"batch_id": "B1"}, "source": "mes"}' % (T + 10)
    ack = ack_of(d.process_context(TOPIC, with_ts, T + 100))
    assert ack["status"] == "applied"
    assert ack["id"] == event_id(UNIT, json.loads(with_ts))
    assert ack_of(d.process_context(TOPIC, with_ts, T + 999))["status"] == "duplicate"
    without_ts = b'{"set": {"batch_id": "B2"}}'
    assert ack_of(d.process_context(TOPIC, without_ts, 100))["status"] == "applied"
    assert ack_of(d.process_context(TOPIC, without_ts, 100))["status"] == "duplicate"  # same receive ms
    assert ack_of(d.process_context(TOPIC, without_ts, 101))["status"] == "applied"  # a new event


def test_ids_found_in_the_lake_are_not_stored_again_but_reach_this_engines_memory_once() -> None:
    """Another run or another shard of the lake stored it (a redelivery, or an event queued
    for this engine while it was away): nothing for the lake, the engine's own context store
    gets it once (its live enrichment needs it), acknowledged as a duplicate each time."""
    d = dispatcher(applied=("mes-1",))
    for received_at in (T + 100, T + 200):
        decision = d.process_context(
            TOPIC, b'{"id": "mes-1", "ts": %d, "set": {"batch_id": "B1"}}' % (T + 50), received_at
        )
        assert ack_of(decision)["status"] == "duplicate"
        assert not decision[0]
    assert d.context.at(UNIT, T + 60) == {"batch_id": "B1"} and d.context.entry_count == 1


def test_a_retained_delivery_is_never_applied() -> None:
    d = dispatcher()
    for payload in (b'{"id": "mes-7", "set": {"batch_id": "B1"}}', b'{"ts": 5, "set": {"a": "b"}}', b"{nope"):
        decision = d.process_context(TOPIC, payload, 100, retained=True)
        ack = ack_of(decision)
        assert (ack["status"], ack["reason"]) == ("duplicate", "retained copy")
        assert not decision[0]
    assert ack_of(d.process_context(TOPIC, b'{"id": "mes-7", "set": {"a": "b"}}', 100, retained=True))[
        "id"
    ] == ("mes-7")
    assert d.context.entry_count == 0
    assert d.counters.context_retained_ignored == 4
    # the same event delivered live is applied (the retained copy did not count as applied)
    assert ack_of(d.process_context(TOPIC, b'{"id": "mes-7", "set": {"batch_id": "B1"}}', 100))["status"] == (
        "applied"
    )


@pytest.mark.parametrize(
    ("payload", "ident", "fragment"),
    [
        (b"{nope", None, "not JSON"),
        (b"[1]", None, "an event must be a JSON object"),
        (b'{"id": "", "set": {"a": "b"}}', None, "id must be a string of 1-128 characters"),
        (b'{"id": 5, "set": {"a": "b"}}', None, "id must be a string of 1-128 characters"),
        (b'{"id": "mes-2", "set": {"a/b": "x"}}', "mes-2", "must not contain"),
        (b'{"ts": -1, "set": {"a": "b"}}', "auto-", "ts must be"),
    ],
)
def test_a_malformed_event_is_rejected_with_its_reason(
    payload: bytes, ident: str | None, fragment: str
) -> None:
    d = dispatcher()
    decision = d.process_context(TOPIC, payload, 100)
    ack = ack_of(decision)
    assert ack["status"] == "rejected" and fragment in ack["reason"]
    assert (ack["id"] is None) if ident is None else ack["id"].startswith(ident)
    (rejected,) = decision[0].rejected
    assert rejected.error == ack["reason"] and rejected.topic == TOPIC
    assert not decision[0].context
    # rejected ids are not remembered: a corrected event with the same id applies
    if ident == "mes-2":
        assert (
            ack_of(d.process_context(TOPIC, b'{"id": "mes-2", "set": {"a": "x"}}', 101))["status"]
            == "applied"
        )


def test_process_routes_context_topics_to_process_context_as_live_deliveries() -> None:
    d = dispatcher()
    payload = b'{"id": "mes-3", "set": {"batch_id": "B1"}}'
    assert ack_of(d.process(TOPIC, payload, 100))["status"] == "applied"
    assert ack_of(d.process(TOPIC, payload, 100))["status"] == "duplicate"
    assert d.counters.messages == 2


def test_the_ack_schema_examples_validate() -> None:
    jsonschema.Draft202012Validator.check_schema(ACK_SCHEMA)
    for example in ACK_SCHEMA["examples"]:
        ACK_VALIDATOR.validate(example)


# ------------------------------------------------------------------ over the in-memory transport


async def test_the_engine_publishes_an_ack_per_event_and_applies_each_id_once() -> None:
    sink = CollectingSink()
    async with on_memory(engine_config("mqtt://memory:1883", NS), sink) as (broker, _engine):
        mes = await connected(broker, "mes")
        event = b'{"id": "mes-9", "ts": %d, "set": {"batch_id": "B-1"}, "reason": "back-dated test"}' % (
            T + 5
        )
        await mes.publish(TOPIC, event, qos=1)
        await mes.publish(TOPIC, event, qos=1)  # a redelivery
        await mes.publish(TOPIC, b"{nope", qos=1)
        await mes.publish(TOPIC, event, qos=1, retain=True)  # the broker keeps a copy ...
        late = broker.client("late")  # ... which a new subscriber would get; the engine
        await late.connect()  # gets it live (retain flag clear) and it is a duplicate
        await wait_for(lambda: len(broker.published(ACK_TOPIC)) == 4)
    acks = [json.loads(e.payload) for e in broker.published(ACK_TOPIC)]
    for ack in acks:
        ACK_VALIDATOR.validate(ack)
    assert [(a["id"], a["status"]) for a in acks] == [
        ("mes-9", "applied"),
        ("mes-9", "duplicate"),
        (None, "rejected"),
        ("mes-9", "duplicate"),
    ]
    assert all((e.qos, e.retain) == (1, False) for e in broker.published(ACK_TOPIC))
    assert [(c.key, c.event_id) for b in sink.batches for c in b.context] == [("batch_id", "mes-9")]


# ------------------------------------------------------------------ real mosquitto, real lake


async def _collect_acks(client: FastClient, into: list[dict[str, Any]]) -> None:
    while True:
        await client.wait_messages()
        into.extend(json.loads(payload) for _topic, payload, _qos, _retain in client.take())


@pytest.mark.integration
async def test_a_restarted_engine_on_the_same_lake_applies_redelivered_events_once(
    broker: Mosquitto, ns: str, tmp_path: Path
) -> None:
    """uns run's engine (build_engine), stopped and started again on one lake: the same
    events published again are acknowledged as duplicates and the lake has them once."""
    lake_dir = tmp_path / "lake"
    config = engine_config(broker, ns, **{"lake.path": str(lake_dir), "lake.commit_interval": 0.2})
    topic = f"{ns}/uns/_context/{UNIT}"
    ack_topic = f"{ns}/uns/_engine/{ns}/context_ack"
    events = [
        b'{"id": "mes-1", "ts": 1767261600000, "set": {"batch_id": "B-1"}, "source": "mes", "reason": "r"}',
        b'{"id": "mes-2", "ts": 1767261601000, "set": {"phase": "dry_mix"}, "clear": ["lot"], "reason": "r"}',
        b'{"ts": 1767261602000, "set": {"operator": "jdoe"}, "reason": "r"}',  # no id: identified by content
    ]
    expected_ids = ["mes-1", "mes-2", event_id(UNIT, json.loads(events[2]))]
    acks: list[dict[str, Any]] = []
    settings_ = BrokerSettings(host=broker.host, port=broker.port)
    async with (
        FastClient(settings_, identifier=f"{ns}-observer") as observer,
        FastClient(settings_, identifier=f"{ns}-mes") as mes,
    ):
        await observer.subscribe(ack_topic, qos=1)
        listener = asyncio.create_task(_collect_acks(observer, acks))
        try:
            for round_, status in enumerate(("applied", "duplicate")):
                engine = build_engine(config)
                assert set(engine.dispatch.applied_ids) == (set() if round_ == 0 else set(expected_ids))
                # a restarted engine has the context in effect from its first sample on
                restored = {} if round_ == 0 else {"batch_id": "B-1", "phase": "dry_mix", "operator": "jdoe"}
                assert engine.context.at(UNIT, 1767261603000) == restored
                async with running_engine(engine):
                    for payload in events:
                        await mes.publish(topic, payload, qos=1)
                    want = 3 * (round_ + 1)
                    await wait_for(lambda want=want: len(acks) == want, timeout=20, what="acks")
                batch = acks[3 * round_ :]
                for ack in batch:
                    ACK_VALIDATOR.validate(ack)
                assert [(a["id"], a["status"], a["path"], a["host_id"]) for a in batch] == [
                    (ident, status, UNIT, ns) for ident in expected_ids
                ]
                if status == "duplicate":
                    assert {a["reason"] for a in batch} == {"already applied"}
                    assert engine.counters.context_duplicates == 3
                    assert engine.counters.context_changes == 0
        finally:
            listener.cancel()
    con = connect(lake_dir)
    try:
        rows = con.execute("SELECT key, value, event_id FROM context ORDER BY ts, key").fetchall()
    finally:
        con.close()
    assert rows == [
        ("batch_id", "B-1", "mes-1"),
        ("lot", None, "mes-2"),
        ("phase", "dry_mix", "mes-2"),
        ("operator", "jdoe", expected_ids[2]),
    ]


@pytest.mark.integration
async def test_a_retained_context_event_is_not_applied_when_the_engine_subscribes(
    broker: Mosquitto, ns: str
) -> None:
    """The broker's retained copy arrives with the retain flag at every subscription: it is
    acknowledged as a duplicate and changes nothing."""
    config = engine_config(broker, ns)
    topic = f"{ns}/uns/_context/{UNIT}"
    acks: list[dict[str, Any]] = []
    settings_ = BrokerSettings(host=broker.host, port=broker.port)
    async with (
        FastClient(settings_, identifier=f"{ns}-observer") as observer,
        FastClient(settings_, identifier=f"{ns}-mes") as mes,
    ):
        await observer.subscribe(f"{ns}/uns/_engine/{ns}/context_ack", qos=1)
        listener = asyncio.create_task(_collect_acks(observer, acks))
        try:
            await mes.publish(topic, b'{"id": "kept", "set": {"batch_id": "B-1"}}', qos=1, retain=True)
            sink = CollectingSink()
            engine = Engine(config, sinks=[sink])
            async with running_engine(engine):
                await wait_for(lambda: len(acks) == 1, timeout=10, what="the ack")
            assert (acks[0]["id"], acks[0]["status"], acks[0]["reason"]) == (
                "kept",
                "duplicate",
                "retained copy",
            )
            assert engine.counters.context_retained_ignored == 1
            assert not [c for b in sink.batches for c in b.context]
        finally:
            listener.cancel()
            await mes.publish(topic, b"", qos=1, retain=True)  # delete the retained copy
