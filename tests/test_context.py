"""The context store: time-correct, inherited, bounded; context events validated whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.core.context import ContextStore, decode_context_payload, event_id, parse_context_event
from uns.core.events import ContextChange
from uns.errors import ContextError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "context-event.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

CELL = "acme/basel/pilot/granulation"
UNIT = f"{CELL}/gr-201"


def change(path: str, key: str, value: str | None, ts: int) -> ContextChange:
    return ContextChange(ts=ts, received_at=ts, path=path, key=key, value=value)


# ------------------------------------------------------------- semantics


def test_value_applies_from_its_timestamp_on() -> None:
    store = ContextStore()
    store.apply(change(UNIT, "batch_id", "B1", 100))
    store.apply(change(UNIT, "batch_id", "B2", 200))
    assert store.at(UNIT, 99) == {}
    assert store.at(UNIT, 100) == {"batch_id": "B1"}
    assert store.at(UNIT, 199) == {"batch_id": "B1"}
    assert store.at(UNIT, 200) == {"batch_id": "B2"}
    assert store.at(UNIT, 10**13) == {"batch_id": "B2"}


def test_ancestors_are_inherited_and_deeper_paths_override() -> None:
    store = ContextStore()
    store.apply(change(CELL, "product", "ACME-500", 10))
    store.apply(change(CELL, "batch_id", "CELL-B", 10))
    store.apply(change(UNIT, "batch_id", "UNIT-B", 20))
    assert store.at(UNIT, 15) == {"product": "ACME-500", "batch_id": "CELL-B"}
    assert store.at(UNIT, 25) == {"product": "ACME-500", "batch_id": "UNIT-B"}
    assert store.at(f"{CELL}/gr-202", 25) == {"product": "ACME-500", "batch_id": "CELL-B"}
    assert store.at(f"{UNIT}/module", 25) == {"product": "ACME-500", "batch_id": "UNIT-B"}
    assert store.at("acme/basel/pilot", 25) == {}
    # a path that merely starts with the same letters is not below it
    assert store.at(f"{CELL}2/x", 25) == {}


def test_clear_removes_own_value_and_lets_the_ancestor_show_through() -> None:
    store = ContextStore()
    store.apply(change(CELL, "phase", "CELL-PHASE", 0))
    store.apply(change(UNIT, "phase", "GRANULATING", 10))
    store.apply(change(UNIT, "phase", None, 20))
    assert store.at(UNIT, 15) == {"phase": "GRANULATING"}
    assert store.at(UNIT, 25) == {"phase": "CELL-PHASE"}


def test_empty_value_hides_an_inherited_value() -> None:
    store = ContextStore()
    store.apply(change(CELL, "batch_id", "B1", 0))
    store.apply(change(UNIT, "batch_id", "", 10))
    assert store.at(UNIT, 5) == {"batch_id": "B1"}
    assert store.at(UNIT, 10) == {}
    assert store.at(CELL, 10) == {"batch_id": "B1"}


def test_out_of_order_arrival_answers_by_timestamp() -> None:
    store = ContextStore()
    store.apply(change(UNIT, "batch_id", "B2", 200))
    assert store.at(UNIT, 150) == {}
    store.apply(change(UNIT, "batch_id", "B1", 100))  # late: corrects the past
    assert store.at(UNIT, 150) == {"batch_id": "B1"}
    assert store.at(UNIT, 250) == {"batch_id": "B2"}


def test_equal_timestamps_later_arrival_wins() -> None:
    store = ContextStore()
    store.apply(change(UNIT, "phase", "A", 100))
    store.apply(change(UNIT, "phase", "B", 100))
    assert store.at(UNIT, 100) == {"phase": "B"}
    store.apply(change(UNIT, "phase", None, 100))
    assert store.at(UNIT, 100) == {}


def test_common_case_is_cached_and_invalidated_by_changes() -> None:
    store = ContextStore()
    store.apply(change(UNIT, "batch_id", "B1", 100))
    first = store.at(UNIT, 500)
    assert store.at(UNIT, 600) is first
    store.apply(change(CELL, "product", "P", 550))
    assert store.at(UNIT, 600) == {"batch_id": "B1", "product": "P"}
    assert store.at(UNIT, 500) == {"batch_id": "B1"}
    assert first == {"batch_id": "B1"}  # answers already handed out are never mutated


def test_value_at_reads_the_path_itself() -> None:
    store = ContextStore()
    store.apply(change(CELL, "batch_id", "B1", 0))
    assert store.value_at(UNIT, "batch_id", 5) is None
    assert store.value_at(CELL, "batch_id", 5) == "B1"
    assert store.paths() == [CELL]
    assert store.newest_ts == 0


# ------------------------------------------------------------- hypothesis oracle

PATHS = ["a", "a/b", "a/b/c", "a/d", "x", "x/y"]
KEYS = ["batch_id", "phase", "product"]
VALUES = [None, "", "v1", "v2", "v3"]


def oracle(events: list[ContextChange], path: str, ts: int) -> dict[str, str]:
    """Brute force: every event sorted by (ts, arrival), merged root to leaf."""
    levels = path.split("/")
    out: dict[str, str] = {}
    for depth in range(1, len(levels) + 1):
        prefix = "/".join(levels[:depth])
        latest: dict[str, tuple[int, int, str | None]] = {}
        for arrival, e in enumerate(events):
            if e.path == prefix and e.ts <= ts:
                current = latest.get(e.key)
                if current is None or (e.ts, arrival) >= current[:2]:
                    latest[e.key] = (e.ts, arrival, e.value)
        for key, (_, _, value) in latest.items():
            if value:
                out[key] = value
            elif value == "":
                out.pop(key, None)
    return out


applies = st.tuples(
    st.just("apply"),
    st.sampled_from(PATHS),
    st.sampled_from(KEYS),
    st.sampled_from(VALUES),
    st.integers(0, 30),
)
lookups = st.tuples(st.just("at"), st.sampled_from([*PATHS, "a/b/c/z", "q"]), st.integers(-1, 35))
ops = st.lists(st.one_of(applies, lookups), max_size=60)


@given(ops=ops)
@settings(max_examples=300, deadline=None)
def test_at_equals_the_timestamp_ordered_oracle(ops: list[tuple[Any, ...]]) -> None:
    store = ContextStore(window_ms=10**9)
    events: list[ContextChange] = []
    for op in ops:
        if op[0] == "apply":
            _, path, key, value, ts = op
            e = change(path, key, value, ts)
            assert store.apply(e)
            events.append(e)
        else:
            _, path, ts = op
            assert store.at(path, ts) == oracle(events, path, ts)
    for path in PATHS:
        for ts in (0, 15, 30, 40):
            assert store.at(path, ts) == oracle(events, path, ts)


@given(ops=st.lists(st.one_of(applies, lookups), max_size=80), window=st.integers(0, 8))
@settings(max_examples=300, deadline=None)
def test_compaction_never_changes_answers_within_the_window(ops: list[tuple[Any, ...]], window: int) -> None:
    store = ContextStore(window_ms=window)
    events: list[ContextChange] = []
    newest = -1
    for op in ops:
        if op[0] == "apply":
            _, path, key, value, ts = op
            e = change(path, key, value, ts)
            taken = store.apply(e)
            newest = max(newest, ts)
            assert taken or ts < newest - window  # only changes older than the window are refused
            events.append(e)
        else:
            _, path, ts = op
            if ts >= newest - window:
                assert store.at(path, ts) == oracle(events, path, ts)
    store.compact()
    for path in PATHS:
        for ts in range(max(0, newest - window), newest + 2):
            assert store.at(path, ts) == oracle(events, path, ts)


def test_memory_is_bounded_by_the_window() -> None:
    store = ContextStore(window_ms=1_000)
    for i in range(50_000):
        store.apply(change(f"{CELL}/u{i % 10}", KEYS[i % 3], f"v{i}", i * 10))  # 100 changes per window
    # 100 in the window plus a baseline per (path, key), with slack for the amortised sweep
    assert store.entry_count <= 2 * (100 + 30) + 256
    assert store.at(f"{CELL}/u9", 499_990) == {"batch_id": "v49989", "phase": "v49999", "product": "v49979"}


def test_late_change_older_than_the_baseline_is_refused() -> None:
    store = ContextStore(window_ms=100)
    store.apply(change(UNIT, "phase", "A", 0))
    store.apply(change(UNIT, "phase", "B", 50))
    store.apply(change(UNIT, "other", "x", 1_000))
    store.compact()
    assert not store.apply(change(UNIT, "phase", "LATE", 10))
    assert store.at(UNIT, 1_000) == {"phase": "B", "other": "x"}
    assert store.apply(change(UNIT, "phase", "LATER", 60))  # after the baseline: still exact
    assert store.at(UNIT, 1_000)["phase"] == "LATER"


# ------------------------------------------------------------- context events


def test_apply_event_sets_and_clears_with_audit_fields() -> None:
    store = ContextStore()
    event = {
        "ts": 1000,
        "set": {"batch_id": "B-42", "recipe_version": 3, "ratio": 0.5, "released": True},
        "source": "mes",
        "user": "jdoe",
        "reason": "start",
    }
    changes = store.apply_event(UNIT, event, received_at=2000)
    assert [(c.key, c.value) for c in changes] == [
        ("batch_id", "B-42"),
        ("recipe_version", "3"),
        ("ratio", "0.5"),
        ("released", "true"),
    ]
    assert all(
        (c.ts, c.received_at, c.path, c.source, c.user, c.reason)
        == (1000, 2000, UNIT, "mes", "jdoe", "start")
        for c in changes
    )
    assert store.at(UNIT, 1000)["batch_id"] == "B-42"
    cleared = store.apply_event(UNIT, {"clear": ["batch_id"]}, received_at=3000)
    ident = event_id(UNIT, {"ts": 3000, "clear": ["batch_id"]})  # ts: the receive time
    assert cleared == [ContextChange(3000, 3000, UNIT, "batch_id", None, event_id=ident)]
    assert "batch_id" not in store.at(UNIT, 3000)


BAD_EVENTS: list[tuple[Any, str]] = [
    ({}, "at least one key"),
    ({"set": {}}, "at least one key"),
    ({"ts": 1}, "at least one key"),
    ({"ts": "1", "set": {"a": "b"}}, "ts must be"),
    ({"ts": 1.5, "set": {"a": "b"}}, "ts must be"),
    ({"ts": True, "set": {"a": "b"}}, "ts must be"),
    ({"ts": -1, "set": {"a": "b"}}, "ts must be"),
    ({"set": {"a": None}}, "use clear"),
    ({"set": {"a": [1]}}, "string, number or boolean"),
    ({"set": {"a": {"b": 1}}}, "string, number or boolean"),
    ({"set": {"": "x"}}, "non-empty"),
    ({"set": {"a/b": "x"}}, "must not contain"),
    ({"set": {"a+": "x"}}, "must not contain"),
    ({"set": {"a#": "x"}}, "must not contain"),
    ({"set": {"a\n": "x"}}, "control"),
    ({"set": {"ok": "x", "bad/key": "y"}}, "must not contain"),  # nothing applied, not even "ok"
    ({"set": {"a": "x"}, "clear": ["a"]}, "both set and cleared"),
    ({"clear": "a"}, "array of keys"),
    ({"clear": [1]}, "non-empty string"),
    ({"set": ["a"]}, "object"),
    ({"set": {"a": "x"}, "sets": {}}, "unknown fields"),
    ({"set": {"a": "x"}, "user": 7}, "user must be"),
    ({"set": {"a": "x"}, "source": None}, "source must be"),
    ({"set": {"a": "x" * 5000}}, "longer than"),
    ([1, 2], "JSON object"),
    ({"id": "", "set": {"a": "x"}}, "id must be a string of 1-128"),
    ({"id": "x" * 129, "set": {"a": "x"}}, "id must be a string of 1-128"),
    ({"id": 7, "set": {"a": "x"}}, "id must be a string of 1-128"),
    ({"id": None, "set": {"a": "x"}}, "id must be a string of 1-128"),
]


@pytest.mark.parametrize(("event", "fragment"), BAD_EVENTS)
def test_bad_events_are_rejected_whole(event: Any, fragment: str) -> None:
    store = ContextStore()
    with pytest.raises(ContextError, match=fragment) as info:
        store.apply_event(UNIT, event, received_at=5)
    assert info.value.path == UNIT
    assert store.entry_count == 0
    if fragment != "both set and cleared":  # the one rule JSON Schema cannot express
        assert not VALIDATOR.is_valid(event)


@pytest.mark.parametrize("path", ["", "a//b", "/a", "a/", "a/+/b", "a/#"])
def test_bad_paths_are_rejected(path: str) -> None:
    with pytest.raises(ContextError, match="path"):
        ContextStore().apply_event(path, {"set": {"a": "b"}}, received_at=0)


GOOD_EVENTS: list[dict[str, Any]] = [
    {"set": {"batch_id": "B1"}},
    {"ts": 0, "clear": ["phase"]},
    {"ts": 17, "set": {"n": 1, "f": -2.5e3, "b": False}, "clear": ["x"], "source": "ebr", "user": None},
    {"set": {"ключ": "значение"}, "reason": "unicode is fine"},
    {"id": "x" * 128, "set": {"a": "b"}},
    {"id": "mes/4711#2", "clear": ["a"]},
    *SCHEMA["examples"],
]


@pytest.mark.parametrize("event", GOOD_EVENTS)
def test_good_events_conform_to_the_schema_and_apply(event: dict[str, Any]) -> None:
    VALIDATOR.validate(event)
    changes = parse_context_event(UNIT, event, received_at=99)
    assert len(changes) == len(event.get("set", {})) + len(event.get("clear", []))
    assert all(c.ts == event.get("ts", 99) for c in changes)


def test_schema_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_decode_context_payload() -> None:
    assert decode_context_payload(b'{"set":{"a":"b"}}') == {"set": {"a": "b"}}
    with pytest.raises(ContextError, match="not JSON"):
        decode_context_payload(b"{nope", path=UNIT)
    with pytest.raises(ContextError, match="not UTF-8"):
        decode_context_payload(b"\xff\xfe")
    with pytest.raises(ContextError, match="JSON object"):
        decode_context_payload(b"[1]")
