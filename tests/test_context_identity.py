"""Context events that are never lost and never applied twice: event identity,
at-most-once application, retained copies, and the acknowledgements (issue 15)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.core.context import event_id, parse_context_event
from uns.errors import ContextError

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
    event: dict[str, Any] = {"ts": draw(st.integers(0, 2**45))}
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
