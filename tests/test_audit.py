"""The audit trail's pure parts: the hash chain over the canonical form, and what the
entries say (context changes, schema drift, configuration changes).  No I/O."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from uns.lake.audit_context import ContextHistory, context_entries
from uns.lake.audit_entries import births, catalog_entries, config_changes
from uns.lake.hashing import GENESIS, ChainRow, canonical, chain_findings, link, row_hash

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_ENTRY = st.tuples(st.integers(0, 2**62), _TEXT, _TEXT, _TEXT, _TEXT, _TEXT)


def chain(writer: str, entries: list[tuple[int, str, str, str, str, str]]) -> list[ChainRow]:
    return link(writer, (0, GENESIS), entries)


def test_the_canonical_form_is_the_documented_json_array() -> None:
    data = canonical("w1", 1, 1_700_000_000_000_000, "report", "jdoe", "", "B1", '{"a":1}', GENESIS)
    assert (
        data == ('["w1",1,1700000000000000,"report","jdoe","","B1","{\\"a\\":1}","' + GENESIS + '"]').encode()
    )
    (row,) = chain("w1", [(1_700_000_000_000_000, "report", "jdoe", "", "B1", '{"a":1}')])
    assert row.hash == hashlib.sha256(data).hexdigest()
    assert (row.seq, row.prev_hash) == (1, GENESIS)


@given(st.lists(_ENTRY, min_size=1, max_size=6), st.lists(_ENTRY, max_size=4))
def test_an_intact_chain_of_several_writers_verifies_in_any_order(
    first: list[tuple[int, str, str, str, str, str]], second: list[tuple[int, str, str, str, str, str]]
) -> None:
    a = chain("a", first)
    rows = a + chain("b", second)
    assert chain_findings(rows[::-1]) == []
    more = link("a", (a[-1].seq, a[-1].hash), second)  # appending continues the chain
    assert chain_findings(a + more) == []
    assert [r.seq for r in a + more] == list(range(1, len(a) + len(more) + 1))


_TEXT_FIELDS = ("writer_id", "kind", "actor", "reason", "subject", "detail", "prev_hash", "hash")


@given(
    st.lists(_ENTRY, min_size=1, max_size=5),
    st.data(),
)
def test_any_single_byte_change_in_any_audit_row_breaks_verification(
    entries: list[tuple[int, str, str, str, str, str]], data: st.DataObject
) -> None:
    rows = chain("engine-1", entries)
    index = data.draw(st.integers(0, len(rows) - 1))
    row = rows[index]
    name = data.draw(st.sampled_from((*_TEXT_FIELDS, "seq", "ts")))
    if name in ("seq", "ts"):
        value = getattr(row, name)
        encoded = bytearray(str(value).encode())
    else:
        encoded = bytearray(getattr(row, name).encode())
    assume(encoded)  # an empty field has no byte to change (the hypothesis below covers insertion)
    pos = data.draw(st.integers(0, len(encoded) - 1))
    new = data.draw(st.integers(0, 255))
    assume(new != encoded[pos])
    encoded[pos] = new
    try:
        text = encoded.decode()
    except UnicodeDecodeError:
        assume(False)  # not a string Delta could store
    if name in ("seq", "ts"):
        assume(text.lstrip("-").isdigit())
        changed = dataclasses.replace(row, **{name: int(text)})
    else:
        changed = dataclasses.replace(row, **{name: text})
    assume(changed != row)
    tampered = [*rows[:index], changed, *rows[index + 1 :]]
    assert chain_findings(tampered), f"changing {name} of seq {row.seq} went unnoticed"


@given(st.lists(_ENTRY, min_size=2, max_size=6), st.data())
def test_a_deleted_or_duplicated_row_breaks_verification(
    entries: list[tuple[int, str, str, str, str, str]], data: st.DataObject
) -> None:
    rows = chain("w", entries)
    index = data.draw(st.integers(0, len(rows) - 2))  # not the last: deleting the head is seen elsewhere
    assert any("missing" in f for f in chain_findings(rows[:index] + rows[index + 1 :]))
    assert any("more than once" in f for f in chain_findings([*rows, rows[index]]))


def test_findings_name_the_writer_and_seq() -> None:
    rows = chain(
        "w", [(1, "k", "a", "", "s", "{}"), (2, "k", "a", "", "s", "{}"), (3, "k", "a", "", "s", "{}")]
    )
    edited = dataclasses.replace(rows[1], reason="edited")
    assert chain_findings([rows[0], edited, rows[2]]) == [
        "audit: writer w seq 2 altered (its hash does not match its content)"
    ]
    assert row_hash(rows[1]) == rows[1].hash


# ---------------------------------------------------------------- entries
def _ctx(path: str, key: str, value: str | None, order: int, ts: int | None = None) -> dict[str, object]:
    return {
        "path": path, "key": key, "value": value, "user": "jdoe", "source": "mes", "reason": "start",
        "event_id": f"e{order}", "ts": order if ts is None else ts, "received_at": order,
        "ingest_order": order,
    }  # fmt: skip


def _no_lookup(path: str, key: str, ts: object, order: int) -> str | None:
    raise AssertionError("nothing was trimmed")


def test_a_context_change_records_the_value_it_replaced() -> None:
    history = ContextHistory.of([("a/b", "phase", 0, 0, "setup")], _no_lookup)
    out = context_entries([_ctx("a/b", "phase", "growth", 1), _ctx("a/b", "phase", None, 2)], history, 5)
    details = [json.loads(e[5]) for e in out]
    assert [(d["old"], d["new"]) for d in details] == [("setup", "growth"), ("growth", None)]
    assert [e[1:5] for e in out] == [("context_change", "jdoe", "start", "a/b")] * 2
    assert details[0]["event_id"] == "e1"
    assert history.value_at("a/b", "phase", 10, 10) is None


def test_a_back_dated_change_names_what_was_in_effect_at_its_own_time() -> None:
    """The auditor's cases: a change valid from 21:00 when nothing was in effect then, and a
    phase change that re-asserts every key (only the moved key is recorded)."""
    history = ContextHistory.of(
        [("u", "recipe", 22, 1, "mAb-A v3"), ("u", "phase", 22, 1, "setup")], _no_lookup
    )
    rows = [
        _ctx("u", "recipe", "mAb-A v2", 2, ts=21),  # back-dated to before anything was set
        _ctx("u", "recipe", "mAb-A v3", 3, ts=23),  # re-asserted: not a change
        _ctx("u", "phase", "growth", 3, ts=23),
    ]
    got = [
        (json.loads(e[5])["key"], json.loads(e[5])["old"], json.loads(e[5])["new"])
        for e in context_entries(rows, history, 5)
    ]
    assert got == [("recipe", None, "mAb-A v2"), ("phase", "setup", "growth")]


Change = tuple[str, int, str | None]  # key, ts, value


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["batch_id", "phase"]), st.integers(0, 30),
                       st.sampled_from(["a", "b", "c", None])), max_size=40),
    st.integers(1, 4),
)  # fmt: skip
def test_the_old_value_is_the_one_in_effect_at_the_changes_time(changes: list[Change], keep: int) -> None:
    """Against an oracle: changes arrive in list order with any valid-from times (out of
    order, back-dated, equal); the old value is the latest earlier arrival valid at or
    before the change's time; only value changes are recorded; a history that keeps only
    ``keep`` changes per key asks the lake (here: the oracle's own list) for older ones."""
    arrived: list[tuple[str, int, int, str | None]] = []  # key, ts, order, value

    def in_effect(key: str, ts: int, order: int) -> str | None:
        known = [c for c in arrived if c[0] == key and c[2] < order and c[1] <= ts]
        return max(known, key=lambda c: (c[1], c[2]))[3] if known else None

    history = ContextHistory(lambda _p, key, ts, order: in_effect(key, ts, order), keep=keep)
    expected = []
    rows = []
    for order, (key, ts, value) in enumerate(changes, start=1):
        old = in_effect(key, ts, order)
        if old != value:
            expected.append((key, ts, old, value))
        rows.append(_ctx("u", key, value, order, ts=ts))
        arrived.append((key, ts, order, value))
    # one segment at a time or all at once: the same entries
    got = [json.loads(e[5]) for e in context_entries(rows, history, 5)]
    assert [(d["key"], d["valid_from"], d["old"], d["new"]) for d in got] == expected


def _cat(metric: str, datatype: str, unit: str | None, birth: int) -> dict[str, object]:
    return {
        "group_id": "G", "edge_node_id": "N", "device_id": "D", "path": "a/b", "metric": metric,
        "datatype": datatype, "unit": unit, "birth_ts": birth, "bdseq": birth,
    }  # fmt: skip


def test_schema_drift_between_births() -> None:
    previous: dict[tuple[str | None, str | None, str | None], dict[str, tuple[str | None, str | None]]] = {}
    first = [_cat("Temp", "Double", "degC", 1), _cat("Speed", "Int32", "rpm", 1)]
    same = [_cat("Temp", "Double", "degC", 2), _cat("Speed", "Int32", "rpm", 2)]
    drift = [_cat("Temp", "Float", "degF", 3), _cat("Level", "Double", "%", 3)]
    out = catalog_entries(births(first + same + drift), previous, 9)
    assert [e[1] for e in out] == ["catalog_new", "schema_drift"]  # the identical rebirth says nothing
    detail = json.loads(out[1][5])
    assert detail["added"] == [{"metric": "Level", "datatype": "Double", "unit": "%"}]
    assert detail["removed"] == [{"metric": "Speed", "datatype": "Int32", "unit": "rpm"}]
    assert detail["changed"] == [
        {"metric": "Temp", "datatype": ["Double", "Float"], "unit": ["degC", "degF"]}
    ]
    assert (detail["bdseq"], out[1][4]) == (3, "a/b")


def test_config_changes_name_the_keys_and_files_that_differ() -> None:
    old = {
        "version": "0.1.0",
        "config": {"lake": {"path": "/l", "commit_rows": 1}},
        "files": {"model": {"sha256": "a"}},
    }
    new = {
        "version": "0.2.0",
        "config": {"lake": {"path": "/l", "commit_rows": 2}},
        "files": {"model": {"sha256": "b"}},
    }
    assert config_changes(old, new) == {
        "version": ["0.1.0", "0.2.0"],
        "config": {"lake.commit_rows": [1, 2]},
        "files": {"model": ["a", "b"]},
    }
    assert config_changes(old, old) == {}
