"""The review rules of issue 31 against oracles (hypothesis where one exists): the context a
unit has at an instant (the engine's ContextStore), equipment readiness, material fitness,
OOS, alarm intervals and bad-quality runs (brute force), batch records by event time, and
aborted batches in the lake's views."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.lake_helpers import views_connection
from uns.batch.report import ReportRequest, build_report
from uns.batch.rules import Change, alarm_intervals, effective_at, equipment_problems, material_problems, runs
from uns.core.context import ContextStore
from uns.core.events import ContextChange, Sample
from uns.core.records import ResultRecord, parse_expiry, parse_record
from uns.errors import RecordError
from uns.sparkplug.datatypes import DataType

T0 = 1_764_583_200_000  # 2025-12-01T10:00:00Z
S = 1000
UNIT = "a/cell/u1"


# ------------------------------------------------------------------ context at an instant

PATHS = ("a", "a/cell", "a/cell/u1", "a/cell/u1/x")
changes_st = st.lists(
    st.builds(
        Change,
        path=st.sampled_from(PATHS),
        key=st.sampled_from(("equipment_status", "clean_expires")),
        ts=st.integers(0, 20),
        value=st.one_of(st.none(), st.just(""), st.sampled_from(("clean", "dirty", "in_use"))),
    ),
    max_size=25,
)


@settings(max_examples=300)
@given(changes_st, st.sampled_from(PATHS), st.integers(0, 21))
def test_the_context_at_an_instant_is_the_context_stores(changes: list[Change], path: str, ts: int) -> None:
    """effective_at agrees with the engine's ContextStore (the same inheritance rules),
    changes in arrival order; and ``inclusive=False`` is the store asked just before."""
    ordered = [Change(c.path, c.key, c.ts, c.value, order=n) for n, c in enumerate(changes)]
    store = ContextStore(window_ms=2**60)
    for c in ordered:
        store.apply(ContextChange(c.ts, c.ts, c.path, c.key, c.value))
    got = effective_at(ordered, path, ts)
    assert {k: v for k, (v, _since) in got.items()} == store.at(path, ts)
    before = effective_at(ordered, path, ts, inclusive=False)
    assert {k: v for k, (v, _since) in before.items()} == store.at(path, ts - 1)
    for key, (value, since) in got.items():  # "since": the change that set what counts
        assert any(c.key == key and c.value == value and c.ts == since for c in ordered)


# ------------------------------------------------------------------ equipment readiness


def status(ts: int, value: str | None, path: str = UNIT, key: str = "equipment_status") -> Change:
    return Change(path, key, ts, value, order=ts)


@pytest.mark.parametrize(
    ("changes", "ready", "why"),
    [
        ([], True, ""),  # nothing recorded: the plant does not publish it
        ([status(-5, "clean")], True, ""),
        ([status(-5, "clean"), status(0, "in_use")], True, ""),  # the batch took a clean unit
        ([status(0, "in_use")], True, ""),  # the batch took it; nothing recorded before
        ([status(-5, "dirty"), status(0, "in_use")], False, "status 'dirty'"),  # in_use hides nothing
        ([status(-5, "dirty")], False, "status 'dirty'"),
        ([status(-5, "maintenance", path="a/cell")], False, "status 'maintenance'"),  # inherited
        ([status(-5, "dirty", path="a/cell"), status(-3, "clean")], True, ""),  # the unit's own wins
        ([status(-5, "in_use")], False, "in use since"),  # another batch's
        ([status(-9, "in_use"), status(0, "in_use")], False, "in use by another batch"),
        (
            [
                status(-5, "clean"),
                status(
                    -1,
                    "",
                ),
            ],
            True,
            "",
        ),  # "" hides: nothing in effect
        ([status(-5, "clean"), status(-2, "2025-12-01T09:59:59Z", key="clean_expires")], False, "clean hold"),
        ([status(-5, "clean"), status(-2, "2025-12-01", key="clean_expires")], True, ""),  # to the day's end
        ([status(-5, "clean"), status(-2, "tomorrow", key="clean_expires")], False, "not an ISO 8601"),
        ([status(-2, "2025-12-01T10:00:05Z", key="calibration_due")], False, "calibration due"),
        ([status(-2, "2025-12-01T10:00:10Z", key="calibration_due")], True, ""),  # due at the end: in time
    ],
)
def test_equipment_readiness(changes: list[Change], ready: bool, why: str) -> None:
    at = [Change(c.path, c.key, T0 + c.ts * S, c.value, c.order) for c in changes]
    found = equipment_problems(at, UNIT, T0, T0 + 10 * S)
    assert (not found.problems) == ready, found.problems
    assert why in "; ".join(found.problems)


def test_material_fitness() -> None:
    assert material_problems("released", None, T0) == []
    assert material_problems("released", T0, T0) == []  # usable up to and including its expiry
    assert material_problems("released", T0 - 1, T0) == [f"expired at {T0 - 1}"]
    assert material_problems("quarantine", T0 - 1, T0) == [
        "not released (quarantine)",
        f"expired at {T0 - 1}",
    ]
    assert parse_expiry("2027-03-31") == parse_expiry("2027-03-31T23:59:59.999Z")
    assert parse_expiry("2027-03-31T12:00:00+02:00") == parse_expiry("2027-03-31T10:00:00Z")
    for bad in ("2027-03-31T12:00:00", "31.03.2027", 20270331):
        with pytest.raises(RecordError):
            parse_expiry(bad)


@given(
    st.one_of(st.floats(-1e6, 1e6), st.text(min_size=1, max_size=5)),
    st.one_of(st.none(), st.floats(-1e6, 1e6)),
    st.one_of(st.none(), st.floats(-1e6, 1e6)),
    st.sampled_from((None, "pass", "fail", "pending")),
)
def test_out_of_specification(
    value: float | str, low: float | None, high: float | None, verdict: str | None
) -> None:
    if low is not None and high is not None and low > high:
        low, high = high, low
    record = ResultRecord(T0, T0, UNIT, "r", None, "", None, "", "t", value, None, low, high, verdict)
    outside = isinstance(value, float) and (
        (low is not None and value < low) or (high is not None and value > high)
    )
    assert record.out_of_specification == (outside or verdict == "fail")


# ------------------------------------------------------------------ alarms and runs


def alarm_oracle(
    ts: list[int], values: list[float], start: int, end: int, before: bool
) -> list[tuple[int, int, bool]]:
    out, active, since = [], before, start
    for t, v in zip(ts, values, strict=True):
        if np.isnan(v):
            continue
        if v and not active:
            active, since = True, t
        elif not v and active:
            active = False
            out.append((since, t, False))
    if active:
        out.append((since, max(end, since), True))
    return out


@given(
    st.lists(st.sampled_from((0.0, 1.0, 2.0, float("nan"))), max_size=40),
    st.booleans(),
)
def test_alarm_intervals(values: list[float], before: bool) -> None:
    ts = [10 + 3 * i for i in range(len(values))]
    end = 10 + 3 * len(values) + 5
    got = alarm_intervals(np.array(ts, dtype=np.int64), np.array(values), 0, end, active_before=before)
    assert got == alarm_oracle(ts, values, 0, end, before)


@given(st.lists(st.booleans(), max_size=60))
def test_runs(flags: list[bool]) -> None:
    expected, first = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and first is None:
            first = i
        elif not flag and first is not None:
            expected.append((first, i - 1))
            first = None
    assert runs(np.array(flags, dtype=bool)) == expected


# ------------------------------------------------------------------ records by event time, aborts


def change(ts: int, path: str, key: str, value: str | None, **kw: Any) -> ContextChange:
    return ContextChange(T0 + ts, T0 + ts, path, key, value, **kw)


def record(path: str, ts: int, kind: str, **fields: Any) -> Any:
    return parse_record(path, {"kind": kind, "ts": T0 + ts, **fields}, T0 + ts)


def test_a_record_belongs_to_the_batch_its_paths_context_has_at_its_time() -> None:
    changes = [
        change(0, UNIT, "batch_id", "B1"),
        change(10 * S, UNIT, "batch_id", "B2"),
        change(20 * S, UNIT, "batch_id", None),
        change(12 * S, "a/cell/u1/x", "batch_id", "B9"),  # the module below works for B9 a while
        change(14 * S, "a/cell/u1/x", "batch_id", None),
    ]
    records = [
        record(UNIT, 0, "comment", text="at the start: B1's"),
        record("a/cell/u1/x", 5 * S, "comment", text="below the unit: inherited B1"),
        record(UNIT, 10 * S, "comment", text="at B1's end: B2's"),
        record("a/cell/u1/x", 13 * S, "comment", text="the module's own batch: B9"),
        record(UNIT, 20 * S, "comment", text="after: none"),
        record("a/other", 5 * S, "comment", text="elsewhere: none"),
    ]
    con = views_connection([], changes, records)
    rows = dict(con.execute("SELECT text, batch_id FROM comments").fetchall())
    assert rows == {
        "at the start: B1's": "B1", "below the unit: inherited B1": "B1", "at B1's end: B2's": "B2",
        "the module's own batch: B9": "B9", "after: none": None, "elsewhere: none": None,
    }  # fmt: skip
    # late context corrects it: B1 started a second earlier than first said
    con = views_connection(
        [], [*changes, change(-1 * S, UNIT, "batch_id", "B1")], [record(UNIT, -500, "comment", text="x")]
    )
    assert con.execute("SELECT batch_id FROM comments").fetchall() == [("B1",)]


def test_the_report_lists_the_batchs_records_and_their_exceptions() -> None:
    changes = [
        change(0, UNIT, "batch_id", "B1"),
        change(0, UNIT, "phase", "mix"),
        change(30 * S, UNIT, "batch_id", None),
    ]
    records = [
        record(
            UNIT,
            1 * S,
            "material",
            material="M",
            lot="L1",
            quantity=2,
            status="released",
            expiry="2030-01-01",
        ),
        record(
            UNIT,
            2 * S,
            "material",
            material="M",
            lot="L2",
            quantity=1,
            status="released",
            expiry="2025-11-30",
        ),
        record(UNIT, 3 * S, "result", test="Assay", value=99.0, low=95, high=105, status="pass"),
        record(UNIT, 4 * S, "result", test="pH", value=8.1, low=6.5, high=7.5),
        record(UNIT, 5 * S, "result", test="Appearance", value="complies", status="fail"),
        record(UNIT, 6 * S, "comment", text="<script>alert(1)</script>", user="op"),
        record(UNIT, 40 * S, "comment", text="after the batch"),
    ]
    doc = build_report(views_connection([], changes, records), ReportRequest("B1")).document
    assert [m["lot"] for m in doc["materials"]] == ["L1", "L2"]
    assert doc["materials"][1]["problems"] == ["expired at 2025-11-30T23:59:59.999Z"]
    assert [(r["test"], r["value"], r["oos"]) for r in doc["results"]] == [
        ("Assay", 99.0, False), ("pH", 8.1, True), ("Appearance", "complies", True),
    ]  # fmt: skip
    assert [c["text"] for c in doc["comments"]] == ["<script>alert(1)</script>"]
    kinds = [e["kind"] for e in doc["exceptions"]]
    assert kinds == ["material", "oos_result", "oos_result", "operator_comment"]
    assert doc["equipment"] == [
        {"path": UNIT, "start": "2025-12-01T10:00:00.000Z", "status": None, "status_since": None,
         "clean_expires": None, "calibration_due": None, "ready": None, "problems": []}
    ]  # fmt: skip


def test_aborted_batches_in_the_views() -> None:
    changes = [
        change(0, UNIT, "batch_id", "B1"),
        change(10 * S, UNIT, "batch_id", "B2"),
        change(10 * S, UNIT, "batch_status", "aborted"),  # with B1's end: B1's, not B2's
        change(20 * S, UNIT, "batch_id", "B3"),
        change(25 * S, "a/cell", "batch_status", "aborted"),  # above the unit, inside B3
        change(30 * S, UNIT, "batch_id", None),
        change(40 * S, UNIT, "batch_id", "B4"),
        change(40 * S, UNIT, "batch_status", "aborted"),  # voided as it started: nothing ended there
        change(50 * S, UNIT, "batch_id", None),
    ]
    con = views_connection([], changes)
    status = dict(con.execute("SELECT batch_id, status FROM batches").fetchall())
    assert status == {"B1": "aborted", "B2": "closed", "B3": "aborted", "B4": "aborted"}
    doc = build_report(con, ReportRequest("B3")).document
    assert doc["batch"]["status"] == "aborted"
    assert [(e["kind"], e["ts"]) for e in doc["exceptions"]] == [("aborted", "2025-12-01T10:00:25.000Z")]


def sample(metric: str, ts: int, value: float, quality: str = "good") -> Sample:
    return Sample("G", "N", "D", metric, DataType.Double, value, T0 + ts, T0 + ts, path=UNIT, quality=quality)


def test_bad_quality_runs_of_the_batch() -> None:
    changes = [change(0, UNIT, "batch_id", "B1"), change(10 * S, UNIT, "batch_id", None)]
    qualities = ["good", "bad", "bad", "good", "stale", "good", "bad", "bad", "bad", "good"]
    samples = [sample("T", i * S, 1.0, q) for i, q in enumerate(qualities)]
    samples += [sample("T", 11 * S, 1.0, "bad"), sample("P", 3 * S, 2.0)]  # after the batch; another series
    doc = build_report(views_connection(samples, changes), ReportRequest("B1")).document
    runs_ = [
        (q["quality"], q["start"][17:19], q["end"][17:19], q["samples"])
        for q in doc["completeness"]["bad_quality"]
    ]
    assert runs_ == [("bad", "01", "02", 2), ("stale", "04", "04", 1), ("bad", "06", "08", 3)]
    assert [e["kind"] for e in doc["exceptions"]] == ["bad_quality"] * 3
