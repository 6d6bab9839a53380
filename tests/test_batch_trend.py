"""Continued process verification end to end: the simulated pilot plant runs more than twelve
bioreactor batches, one of them shifted on purpose (``uns sim --shift``), the engine writes
the lake, and `uns batch trend` finds that batch by rule 1 -- as JSON (the same numbers as
the lake's view in SQL), as HTML opened in a real headless Chromium, as PDF -- and the
golden envelope of a report finds where it leaves its references' band."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.plant_helpers import opened_page, simulated_lake
from uns import lake
from uns.batch.api import load_spec
from uns.batch.report import ReportRequest, generate_report
from uns.batch.trend import TrendRequest, generate_trend
from uns.sim.inject import BatchFault

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SHIFTED = "B2026-0013"  # BR-101's fourth batch
REFERENCES = ("B2026-0009", "B2026-0017", "B2026-0021")  # BR-101's batches around it
SHIFT = 0.8  # degC, for the whole batch
#: the pilot plant's spec: Temperature of mAb-A between the action limits 36.5 and 37.5
SPEC = ROOT / "examples" / "pilot-spec.toml"
TREND_SCHEMA = json.loads((ROOT / "schemas" / "batch-trend.schema.json").read_text())
REPORT_SCHEMA = json.loads((ROOT / "schemas" / "batch-report.schema.json").read_text())


@pytest.fixture(scope="module")
def cpv_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Batch phases of 1 s: 40 s make about 16 bioreactor batches (8 per unit)."""
    faults = (BatchFault("shift", SHIFTED, metric="Temperature", value=SHIFT),)
    return simulated_lake(tmp_path_factory.mktemp("cpv"), 40.0, faults, phase_seconds=1.0)


@pytest.fixture(scope="module")
def spec_file() -> Path:
    return SPEC


def trend(lake_dir: Path, spec: Path, fmt: str, **kw: object) -> tuple[bytes, str]:
    request = TrendRequest("Temperature", product="mAb-A", spec=load_spec(str(spec)), **kw)  # type: ignore[arg-type]
    return generate_trend(lake_dir, request, fmt)


def test_rule_1_finds_the_shifted_batch(cpv_lake: Path, spec_file: Path) -> None:
    data, summary = trend(cpv_lake, spec_file, "json")
    doc = json.loads(data)
    jsonschema.validate(doc, TREND_SCHEMA)
    ids = [b["batch_id"] for b in doc["batches"]]
    assert doc["n"] == len(ids) >= 12 and SHIFTED in ids
    assert [b["start"] for b in doc["batches"]] == sorted(b["start"] for b in doc["batches"])
    assert {b["product"] for b in doc["batches"]} == {"mAb-A"}
    rule1 = [v["batch_ids"] for v in doc["violations"] if v["rule"] == 1]
    assert [SHIFTED] in rule1, doc["violations"]
    shifted = doc["batches"][ids.index(SHIFTED)]
    assert shifted["value"] > doc["ucl"] and shifted["value"] == max(b["value"] for b in doc["batches"])
    # capability against the spec's action limits, from ten batches on
    assert (doc["action_low"], doc["action_high"]) == (36.5, 37.5)
    assert None not in (doc["cp"], doc["cpk"], doc["pp"], doc["ppk"]) and doc["capability_notes"] == []
    assert doc["cp"] == pytest.approx(1.0 / (6 * doc["sigma_within"]))
    assert doc["spec"] == {"file": str(spec_file), "name": "ACME Basel pilot plant CPPs", "version": "1"}
    assert summary.startswith(f"{doc['n']} batches") and "rule 1" in summary


def test_the_values_are_the_lake_views_and_measurements_asof(cpv_lake: Path, spec_file: Path) -> None:
    doc = json.loads(trend(cpv_lake, spec_file, "json")[0])
    con = lake.connect(cpv_lake)
    try:
        view = dict(
            con.execute(
                "SELECT batch_id, mean FROM batch_statistics WHERE metric = 'Temperature'"
                " AND path LIKE 'acme/basel/pilot/usp/%'"
            ).fetchall()
        )
        oracle = dict(
            con.execute(
                """SELECT batch_id, avg(value_double) FROM measurements_asof
                   WHERE metric = 'Temperature' AND product = 'mAb-A' AND batch_id IS NOT NULL
                   GROUP BY batch_id"""
            ).fetchall()
        )
    finally:
        con.close()
    for b in doc["batches"]:
        # the view's number: equal to the last bits DuckDB's parallel sums leave free (their
        # order, and so the final rounding, varies from one query to the next)
        assert b["value"] == pytest.approx(view[b["batch_id"]], rel=1e-14)
        assert b["value"] == pytest.approx(oracle[b["batch_id"]], rel=1e-12)


def test_the_phase_and_the_other_statistics(cpv_lake: Path, spec_file: Path) -> None:
    growth = json.loads(trend(cpv_lake, spec_file, "json", phase="growth", stat="max")[0])
    jsonschema.validate(growth, TREND_SCHEMA)
    assert growth["filters"]["phase"] == "growth" and growth["stat"] == "max"
    assert growth["batches"][[b["batch_id"] for b in growth["batches"]].index(SHIFTED)]["value"] > 37.3
    durations = json.loads(trend(cpv_lake, spec_file, "json", phase="growth", stat="duration")[0])
    assert all(0.5 < b["value"] < 2.0 for b in durations["batches"])  # phases of about 1 s
    assert durations["cp"] is None and "durations" in durations["capability_notes"][0]
    one_unit = json.loads(trend(cpv_lake, spec_file, "json", path="*/br-101")[0])
    assert {p for b in one_unit["batches"] for p in b["paths"]} == {"acme/basel/pilot/usp/br-101"}
    assert one_unit["n"] < 10 and one_unit["cp"] is None
    assert one_unit["capability_notes"] == [f"capability needs at least 10 batches ({one_unit['n']} here)"]


def test_the_trend_page_in_a_real_browser(cpv_lake: Path, spec_file: Path, tmp_path: Path) -> None:
    html = tmp_path / "trend.html"
    html.write_bytes(trend(cpv_lake, spec_file, "html")[0])
    doc = json.loads(trend(cpv_lake, spec_file, "json")[0])
    with opened_page(html) as (page, requests):
        chart = page.locator("#chart svg")
        box = chart.bounding_box()
        chart_text = page.locator("#chart").text_content() or ""
        violations = page.locator("#violations tbody tr").all_inner_texts()
        flagged = page.locator("#batches tr.flagged").evaluate_all("rows => rows.map(r => r.dataset.batch)")
        rows = page.locator("#batches tbody tr").count()
        capability = page.locator("#capability tbody td").all_inner_texts()
        verdict = page.locator("#verdict").inner_text()
    assert requests == [html.as_uri()]  # nothing but the file itself
    assert box is not None and box["width"] > 500 and box["height"] > 250
    assert "UCL" in chart_text and "rule 1" in chart_text and SHIFTED in chart_text
    assert any(r.startswith("1\t") and SHIFTED in r for r in violations)
    assert SHIFTED in flagged and rows == doc["n"]
    assert capability[:3] == [str(doc["n"]), "36.5", "37.5"]
    assert capability[4] == f"{doc['cpk']:.6g}"
    assert verdict.endswith(("violation", "violations"))


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils (pdftotext) is not installed")
def test_the_trend_pdf(cpv_lake: Path, spec_file: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "trend.pdf"
    pdf.write_bytes(trend(cpv_lake, spec_file, "pdf")[0])
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    for words in ("Trend of Temperature across batches", "Run-rule violations", SHIFTED, "Capability", "Cpk"):
        assert words in text, words


def test_the_envelope_of_golden_batches_finds_the_shifted_batch(cpv_lake: Path, spec_file: Path) -> None:
    def report(batch: str, **kw: object) -> dict[str, object]:
        request = ReportRequest(batch, spec=load_spec(str(spec_file)), references=REFERENCES, **kw)  # type: ignore[arg-type]
        doc = json.loads(generate_report(cpv_lake, request, "json")[0])
        jsonschema.validate(doc, REPORT_SCHEMA)
        return doc

    doc = report(SHIFTED, envelope_exceptions=True)
    assert doc["batch"]["reference_batch"] == ", ".join(REFERENCES)
    (temperature,) = [p for p in doc["parameters"] if p["metric"] == "Temperature"]
    envelope = temperature["reference"]
    assert envelope["batches"] == list(REFERENCES) and envelope["sigmas"] == 3.0
    assert envelope["departures"] and {d["direction"] for d in envelope["departures"]} == {"high"}
    left = [e for e in doc["exceptions"] if e["kind"] == "envelope"]
    every = [d for p in doc["parameters"] if p["reference"] for d in p["reference"]["departures"]]
    assert len(left) == len(every) and {e["severity"] for e in left} == {"low"}  # one per departure
    mine = [e for e in left if e["message"].startswith("Temperature on ")]
    assert len(mine) == len(envelope["departures"])
    assert all(REFERENCES[0] in e["message"] and "above it" in e["message"] for e in mine)
    # without --envelope-exceptions the departures are shown, not listed as exceptions
    quiet = report(SHIFTED)
    assert not [e for e in quiet["exceptions"] if e["kind"] == "envelope"]
    # a batch like its references stays (nearly) inside: far fewer samples outside
    normal = report("B2026-0005", envelope_exceptions=True)
    (t_normal,) = [p for p in normal["parameters"] if p["metric"] == "Temperature"]
    outside = sum(d["samples"] for d in t_normal["reference"]["departures"])
    assert outside < sum(d["samples"] for d in envelope["departures"])


def test_the_commands(cpv_lake: Path, spec_file: Path, tmp_path: Path) -> None:
    def uns(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "uns", *args], capture_output=True, text=True, cwd=tmp_path, check=False
        )

    at = ("--lake", str(cpv_lake), "--spec", str(spec_file))
    made = uns("batch", "trend", "Temperature", *at, "--product", "mAb-A")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("Temperature-trend.html: ") and "rule 1" in made.stdout
    assert (tmp_path / "Temperature-trend.html").read_text().startswith("<!DOCTYPE html>")
    piped = uns("batch", "trend", "Temperature", *at, "--product", "mAb-A", "-f", "json", "-o", "-")
    assert piped.returncode == 0 and json.loads(piped.stdout)["metric"] == "Temperature"
    assert "batches" in piped.stderr
    for args, message in (
        (("batch", "trend", "Temprature", *at), "no closed batch has a sample of 'Temprature'"),
        (("batch", "trend", "Temperature", *at, "--stat", "median"), "unknown statistic 'median'"),
        (("batch", "trend", "Temperature", *at, "--since", "monday"), "--since 'monday' is not an ISO 8601"),
        (("batch", "trend", "Temperature", *at, "-f", "xml"), "unknown trend format 'xml'"),
        (
            ("batch", "report", SHIFTED, *at, "--reference", "B2026-0009", "--envelope-exceptions"),
            "envelope exceptions need at least 2 reference batches",
        ),
        (
            ("batch", "report", SHIFTED, *at, "--reference", "B2026-0009,,B1"),
            "--reference 'B2026-0009,,B1': give batch ids separated by commas",
        ),
    ):
        failed = uns(*args)
        assert failed.returncode == 1 and failed.stderr.startswith(f"uns: error: {message}"), failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1
    out = tmp_path / "r.json"
    refs = ",".join(REFERENCES)
    done = uns(
        "batch",
        "report",
        SHIFTED,
        *at,
        "--reference",
        refs,
        "--envelope-exceptions",
        "-f",
        "json",
        "-o",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert any(e["kind"] == "envelope" for e in json.loads(out.read_text())["exceptions"])


def test_the_benchmark_runs(tmp_path: Path) -> None:
    """`bash scripts/bench trend` at a tiny size: it builds its lake, checks the shifted batch is
    found and times the command (the figure itself is not judged here)."""
    from benchmarks.bench_trend import main  # noqa: PLC0415

    main(["--batches", "12", "--samples", "200", "--formats", "json", "--keep", str(tmp_path)])
    assert (tmp_path / "Temperature-trend.json").is_file()
