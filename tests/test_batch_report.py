"""The batch report over a small hand-made lake (in memory: the real views, no broker):
which samples belong to the batch, the limits per phase, completeness, late context."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import jsonschema
import pytest

from tests.lake_helpers import views_connection
from uns.batch.report import ReportRequest, build_report
from uns.batch.spec import parse_spec
from uns.core.events import ContextChange, Sample
from uns.errors import BatchError
from uns.sparkplug.datatypes import DataType

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_764_583_200_000  # 2025-12-01T10:00:00Z
S = 1000
SPEC = parse_spec("""
[[limit]]
metric = "T"
action_high = 100.0
[[limit]]
metric = "T"
phase = "dry"
alert_high = 8.0
action_high = 10.0
[[limit]]
metric = "P"
path = "a/u1/*"
expected_interval_s = 1.0
""")


def change(
    ts: int, path: str, key: str, value: str | None, received: int | None = None, **kw: str
) -> ContextChange:
    return ContextChange(T0 + ts, T0 + (ts if received is None else received), path, key, value, **kw)


def sample(path: str, metric: str, ts: int, value: float) -> Sample:
    return Sample("G", "N", "D", metric, DataType.Double, value, T0 + ts, T0 + ts, path=path)


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    changes = [
        change(0, "a/u1", "batch_id", "B1"),
        change(0, "a/u1", "phase", "mix"),
        change(0, "a/u1", "product", "P-1"),
        change(5 * S, "a/u1/pump", "batch_id", "B9"),  # the pump works for another batch meanwhile
        change(8 * S, "a/u1/pump", "batch_id", None),  # ... and is back in B1 (inherited)
        change(10 * S, "a/u1", "phase", "dry"),
        change(2 * S, "a/u1", "operator", "jdoe", received=30 * S, user="jdoe", reason="forgot to log in"),
        change(20 * S, "a/u1", "batch_id", None),
        change(20 * S, "a/u1", "phase", None),
    ]
    temperatures = [sample("a/u1/probe", "T", t * S, 50.0 if t in (3, 12, 13) else 5.0) for t in range(25)]
    pump = [sample("a/u1/pump", "P", t * S, 1.0) for t in range(25)]
    c = views_connection(temperatures + pump, changes)
    c.execute("SET VARIABLE uns_lake_versions = MAP {'context': 3}")
    return c


def test_the_report_reviews_only_the_batchs_samples_against_the_limits_of_their_phase(
    con: duckdb.DuckDBPyConnection,
) -> None:
    doc = build_report(con, ReportRequest("B1", spec=SPEC)).document
    jsonschema.validate(doc, json.loads((ROOT / "schemas" / "batch-report.schema.json").read_text()))
    assert (
        doc["batch"]["start"] == "2025-12-01T10:00:00.000Z"
        and doc["batch"]["end"] == "2025-12-01T10:00:20.000Z"
    )
    assert doc["batch"]["lake_versions"] == {"context": 3}
    params = {p["metric"]: p for p in doc["parameters"]}
    assert params["T"]["samples"] == 20  # 0..19 s: the batch ends at 20 s
    assert params["P"]["samples"] == 17  # 5..7 s the pump was in B9
    assert [(s["phase"], s["samples"]) for s in params["T"]["stats"]] == [
        ("mix", 10),
        ("dry", 10),
        ("all", 20),
    ]
    # 50 at 3 s is inside mix's limit of 100; 50 at 12-13 s is one action excursion in dry
    (e,) = doc["excursions"]
    assert (e["phase"], e["level"], e["samples"], e["peak"], e["limit"]) == ("dry", "action", 2, 50.0, 10.0)
    assert (e["start"], e["end"]) == ("2025-12-01T10:00:12.000Z", "2025-12-01T10:00:13.000Z")
    (p,) = doc["completeness"]["metrics"]
    assert (p["metric"], p["expected"], p["received"], p["gaps"]) == ("P", 17, 17, [])
    (late,) = doc["completeness"]["late_context"]
    assert (late["key"], late["user"], late["reason"], late["delay_s"]) == (
        "operator",
        "jdoe",
        "forgot to log in",
        28.0,
    )
    assert sorted(x["kind"] for x in doc["exceptions"]) == ["excursion", "late_context"]
    assert doc["verdict"] == "2 exceptions"


def test_a_reference_batch_and_a_stricter_late_threshold(con: duckdb.DuckDBPyConnection) -> None:
    doc = build_report(con, ReportRequest("B1", spec=SPEC, late_context_s=100.0)).document
    assert [x["kind"] for x in doc["exceptions"]] == ["excursion"]
    report = build_report(con, ReportRequest("B1", spec=SPEC, reference="B9"))
    pump = next(p for p in report.parameters if p.metric == "P")
    assert pump.reference_path == "a/u1/pump" and pump.reference_x is not None


def test_an_unknown_batch_is_one_clear_error(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(BatchError, match="unknown batch 'B404'"):
        build_report(con, ReportRequest("B404"))


def test_every_exception_has_a_stable_id_of_its_kind_time_and_place(con: duckdb.DuckDBPyConnection) -> None:
    """A disposition names an exception by its id: the same for the same data in every
    report (whatever the report time), different for different exceptions."""
    first = build_report(con, ReportRequest("B1", spec=SPEC, now=None)).document["exceptions"]
    again = build_report(con, ReportRequest("B1", spec=SPEC, late_context_s=5.0)).document["exceptions"]
    assert first and [e["id"] for e in first] == [e["id"] for e in again]
    assert len({e["id"] for e in first}) == len(first)
    from uns.batch.exceptions import exception_id, unique_ids  # noqa: PLC0415

    assert exception_id("gap", "2026-01-01T00:00:00.000Z", "a/u1", "P") != exception_id(
        "gap", "2026-01-01T00:00:00.000Z", "a/u1", "T"
    )
    twins = [{"id": "0123456789abcdef"}, {"id": "0123456789abcdef"}, {"id": "0123456789abcdef"}]
    unique_ids(twins)
    assert [t["id"] for t in twins] == ["0123456789abcdef", "0123456789abcdef-2", "0123456789abcdef-3"]
