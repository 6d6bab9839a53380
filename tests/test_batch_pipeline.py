"""The batch report end to end: the simulator spoils a batch on purpose (an excursion, a
death, a gap, a late correction of its context), the engine writes the lake, and the
report lists exactly those — as JSON, as HTML opened in a real headless Chromium, as PDF."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.plant_helpers import opened_page, simulated_lake
from uns.audit.trail import audit_log
from uns.batch.api import load_spec
from uns.batch.report import ReportRequest, generate_report
from uns.engine.plant import load_model
from uns.sim.inject import BatchFault

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
BATCH = "B2026-0001"  # BR-101's first batch: starts with the run, 4 phases of 2 s
REFERENCE = "B2026-0005"  # BR-101's second batch, untouched
PATH = "acme/basel/pilot/usp/br-101"
FAULTS = (
    BatchFault("excursion", BATCH, metric="Temperature", value=38.2),
    BatchFault("death", BATCH),
    BatchFault("gap", BATCH, seconds=1.5),
    BatchFault("correct_context", BATCH),
)
SPEC = """
name = "pipeline test"
[[limit]]
metric = "Temperature"
path = "acme/basel/pilot/usp/*"
action_low = 36.5
action_high = 37.5
expected_interval_s = 0.5
"""


@pytest.fixture(scope="module")
def plant_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulated_lake(tmp_path_factory.mktemp("batch"), 21.0, FAULTS, phase_seconds=2.0)


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text(SPEC)
    return path


def report(lake_dir: Path, spec: Path, fmt: str, **kw: Any) -> bytes:
    request = ReportRequest(
        BATCH, spec=load_spec(str(spec)), model=load_model(ROOT / "examples" / "pilot-plant.toml"), **kw
    )
    return generate_report(lake_dir, request, fmt)[0]


def test_the_json_report_lists_exactly_the_injected_faults(plant_lake: Path, spec_file: Path) -> None:
    doc = json.loads(report(plant_lake, spec_file, "json"))
    jsonschema.validate(doc, json.loads((ROOT / "schemas" / "batch-report.schema.json").read_text()))
    assert doc["batch"]["units"] == [PATH] and doc["batch"]["status"] == "closed"
    assert [p["phase"] for p in doc["phases"]] == ["setup", "inoculation", "growth", "harvest"]
    assert doc["batch"]["recipe"] == "mAb-A v3 (corrected)"  # the correction is in effect
    kinds = sorted(e["kind"] for e in doc["exceptions"])
    assert kinds == sorted(["excursion", "death", "rebirth", "gap", "historical", "context_correction"])
    (excursion,) = doc["excursions"]
    assert excursion["metric"] == "Temperature" and excursion["path"] == PATH
    assert (excursion["level"], excursion["direction"], excursion["phase"]) == (
        "action",
        "high",
        "inoculation",
    )
    assert excursion["peak"] == 38.2 and excursion["limit"] == 37.5
    (late,) = doc["completeness"]["late_context"]
    assert (late["key"], late["user"], late["late"], late["corrects"]) == (
        "recipe",
        "qa.reviewer",
        True,
        True,
    )
    assert late["ts"] == doc["batch"]["start"]  # back-dated to the batch start
    (metric,) = doc["completeness"]["metrics"]
    (gap,) = metric["gaps"]
    harvest = doc["phases"][3]["start"]
    assert gap["start"] >= harvest and gap["duration_s"] > 1.0
    assert metric["received"] < metric["expected"] or metric["expected"] > 0
    assert {"death", "birth"} <= {s["event"] for s in doc["completeness"]["session_events"]}
    assert doc["verdict"] == f"{len(doc['exceptions'])} exceptions"
    # the batch's audit trail (issue 17): the correction of its recipe is an entry of it
    assert any(
        a["kind"] == "context_change"
        and a["detail"]["key"] == "recipe"
        and a["detail"]["new"].endswith("(corrected)")
        for a in doc["audit_trail"]
    ), doc["audit_trail"]
    # the context changes of the batch carry who made them and why
    assert any(
        c["user"] == "qa.reviewer" and c["reason"].startswith("correction") for c in doc["context_changes"]
    )


def test_the_untouched_reference_batch_has_no_exceptions(plant_lake: Path, spec_file: Path) -> None:
    request = ReportRequest(
        REFERENCE, spec=load_spec(str(spec_file)), model=load_model(ROOT / "examples" / "pilot-plant.toml")
    )
    data, verdict = generate_report(plant_lake, request, "json")
    assert verdict == "no exceptions", json.loads(data)["exceptions"]
    # every report made is in the audit trail by its SHA-256 (issue 17)
    digest = hashlib.sha256(data).hexdigest()
    entries = audit_log(str(plant_lake), kind="report", batch=REFERENCE, parse_detail=True)
    assert any(e[-1]["sha256"] == digest and e[-1]["format"] == "json" for e in entries)


def test_the_html_report_in_a_real_browser(plant_lake: Path, spec_file: Path, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    html.write_bytes(report(plant_lake, spec_file, "html", reference=REFERENCE))
    doc = json.loads(report(plant_lake, spec_file, "json", reference=REFERENCE))
    with opened_page(html) as (page, requests):
        plots = page.locator("section.parameter svg").count()
        rows = page.locator("#exceptions tbody tr").all_inner_texts()
        verdict = page.locator("#verdict").inner_text()
        legend = page.locator("section.parameter").first.inner_text()
        audit = page.locator("#audit-trail tbody tr").all_inner_texts()
    assert requests == [html.as_uri()]  # nothing but the file itself: no other host, no other file
    assert plots == len(doc["parameters"]) >= 5  # one plot per parameter
    assert len(rows) == len(doc["exceptions"])
    assert any("excursion" in r and "Temperature" in r for r in rows)
    assert verdict == f"Verdict: {doc['verdict']}"
    assert f"reference {REFERENCE}" in legend
    assert any("context_change" in r and "recipe" in r for r in audit)


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils (pdftotext) is not installed")
def test_the_pdf_report_has_the_same_pages(plant_lake: Path, spec_file: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(report(plant_lake, spec_file, "pdf"))
    assert pdf.read_bytes().startswith(b"%PDF")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    for words in (
        f"Batch report {BATCH}",
        "Exceptions",
        "excursion",
        "Temperature",
        "Phase timeline",
        "Completeness",
    ):
        assert words in text, words


def test_the_commands(plant_lake: Path, spec_file: Path, tmp_path: Path) -> None:
    def uns(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "uns", *args], capture_output=True, text=True, cwd=ROOT, check=False
        )

    listed = uns("batch", "list", "--lake", str(plant_lake), "--format", "json", "--product", "mAb-A")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert BATCH in {r["batch_id"] for r in rows} and {r["product"] for r in rows} == {"mAb-A"}
    shown = uns("batch", "show", BATCH, "--lake", str(plant_lake), "--spec", str(spec_file))
    assert shown.returncode == 0 and "harvest" in shown.stdout and "verdict:" in shown.stdout
    out = tmp_path / "r.json"
    made = uns(
        "batch",
        "report",
        BATCH,
        "--lake",
        str(plant_lake),
        "--spec",
        str(spec_file),
        "-f",
        "json",
        "-o",
        str(out),
    )
    assert made.returncode == 0 and made.stdout.strip().endswith("exceptions") and out.is_file()
    unknown = uns("batch", "show", "B1999-0000", "--lake", str(plant_lake))
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [
        "uns: error: unknown batch 'B1999-0000': no context in the lake sets batch_id to it"
    ]
