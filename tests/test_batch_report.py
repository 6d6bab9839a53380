"""The batch report over a small hand-made lake (in memory: the real views, no broker):
which samples belong to the batch, the limits per phase, completeness, late context."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import duckdb
import jsonschema
import pytest

from tests.lake_helpers import views_connection
from uns.batch.html import render_html, trend_svg
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


def _line_paths(svg: str) -> list[list[tuple[float, float]]]:
    """The vertices of every plotted line (matplotlib's ``line2d`` groups) of an SVG."""
    out = []
    for group in re.findall(r'<g id="line2d_\d+">(.*?)</g>', svg, flags=re.DOTALL):
        for d in re.findall(r'<path d="([^"]+)"', group):
            numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
            out.append(list(zip(numbers[::2], numbers[1::2], strict=True)))
    return out


def test_the_html_report_says_each_figure_once_and_draws_held_values_as_steps(
    con: duckdb.DuckDBPyConnection,
) -> None:
    report = build_report(con, ReportRequest("B1", spec=SPEC))
    report.document |= {
        "signatures": [],
        "content_sha256": "0" * 64,
        "audit_trail": [],
    }  # no audit table here
    html = render_html(report)
    # a 20 s batch: its duration once (a long one also in seconds: "1:02:03 (3723 s)")
    assert "<tr><th>Duration</th><td>20.000 s</td></tr>" in html
    assert "<th>Samples expected (at least one per interval)</th><th>Samples received</th>" in html
    # T jumps 5 -> 50 -> 5: a held value is drawn flat until the next sample, then a step up
    t_param = next(p for p in report.parameters if p.metric == "T")
    (line,) = [pts for pts in _line_paths(trend_svg(t_param, report.info)) if len(pts) > 10]
    assert len(line) == 2 * len(t_param.plot_x) - 1  # steps-post: one corner per sample
    assert all(a[0] == b[0] or a[1] == b[1] for a, b in itertools.pairwise(line)), "a ramp was drawn"


def test_completeness_counts_the_intervals_of_the_whole_batch_not_per_phase() -> None:
    """Two phases of 1.5 s at one sample expected per second: 3 expected (per phase rounded
    down it said 2); a source sampling every 0.25 s sends 12: received above expected is
    normal, and no gap."""
    changes = [
        change(0, "u", "batch_id", "B1"),
        change(0, "u", "phase", "a"),
        change(1500, "u", "phase", "b"),
        change(3000, "u", "batch_id", None),
        change(3000, "u", "phase", None),
    ]
    samples = [sample("u", "P", t, 1.0) for t in range(0, 3000, 250)]
    spec = parse_spec('[[limit]]\nmetric = "P"\nexpected_interval_s = 1.0\n')
    doc = build_report(views_connection(samples, changes), ReportRequest("B1", spec=spec)).document
    (m,) = doc["completeness"]["metrics"]
    assert (m["expected"], m["received"], m["gaps"]) == (3, 12, [])

