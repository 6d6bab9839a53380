"""Review by exception, complete (issue 31), end to end: the simulator spoils one batch in
each new way (equipment not ready, a quarantined lot, an OOS result, an alarm, bad-quality
samples, an operator comment, an abort), the engine takes the context and the batch
records through mosquitto into a real lake, and each batch's JSON report lists exactly its
exception; the HTML shows the new sections in a real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from playwright.sync_api import sync_playwright

from uns.audit.trail import verify_lines
from uns.batch.report import ReportRequest, generate_report
from uns.batch.spec import parse_spec
from uns.demo import run_plant
from uns.engine.plant import load_model
from uns.mqtt.mosquitto import running_mosquitto
from uns.pdf import CHROMIUM_ARGS, find_chromium
from uns.sim.inject import BatchFault

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "batch-report.schema.json").read_text())
#: batch -> (how it is spoilt, the one exception kind its report must list).  The pilot
#: plant's four units run B2026-0001..0004 first, 0005..0008 second (phases of 2 s).
SPOILT = {
    "B2026-0002": ("not_ready", "equipment_not_ready"),
    "B2026-0003": ("material", "material"),
    "B2026-0004": ("oos", "oos_result"),
    "B2026-0005": ("alarm", "alarm"),
    "B2026-0006": ("bad_quality", "bad_quality"),
    "B2026-0007": ("comment", "operator_comment"),
    "B2026-0008": ("abort", "aborted"),
}
CLEAN = "B2026-0001"
#: limits the simulated values keep (CompressionForce has none outside its spec: 0 kN at rest)
SPEC = parse_spec("""
[[limit]]
metric = "Temperature"
path = "acme/basel/pilot/usp/*"
action_low = 36.5
action_high = 37.5
[[limit]]
metric = "CompressionForce"
""")


@pytest.fixture(scope="module")
def plant_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake_dir = tmp_path_factory.mktemp("review") / "lake"
    faults = tuple(BatchFault(kind, batch) for batch, (kind, _) in SPOILT.items())
    with running_mosquitto() as broker:
        asyncio.run(
            run_plant(21.0, lake_dir, broker.url, lambda _line: None, faults=faults, phase_seconds=2.0)
        )
    return lake_dir


def report(lake_dir: Path, batch: str, fmt: str = "json") -> bytes:
    request = ReportRequest(batch, spec=SPEC, model=load_model(ROOT / "examples" / "pilot-plant.toml"))
    return generate_report(lake_dir, request, fmt)[0]


@pytest.mark.parametrize("batch", [CLEAN, *SPOILT])
def test_each_spoilt_batch_lists_exactly_its_exception(plant_lake: Path, batch: str) -> None:
    doc = json.loads(report(plant_lake, batch))
    jsonschema.validate(doc, SCHEMA)
    kinds = [e["kind"] for e in doc["exceptions"]]
    assert kinds == ([] if batch == CLEAN else [SPOILT[batch][1]]), doc["exceptions"]
    # every batch carries its material lot and in-process result, and its unit's readiness
    assert [m["lot"] for m in doc["materials"]] == [f"L-{batch}"]
    assert len(doc["results"]) == 1
    (unit,) = doc["equipment"]
    assert unit["status"] in ("clean", "dirty", "in_use")
    assert doc["batch"]["status"] == ("aborted" if batch == "B2026-0008" else "closed")


def test_what_each_exception_says(plant_lake: Path) -> None:
    docs = {b: json.loads(report(plant_lake, b)) for b in SPOILT}
    (unit,) = docs["B2026-0002"]["equipment"]
    assert unit["ready"] is False and unit["status"] == "dirty"
    (lot,) = docs["B2026-0003"]["materials"]
    assert lot["status"] == "quarantine" and lot["problems"] == ["not released (quarantine)"]
    (result,) = docs["B2026-0004"]["results"]
    assert result["oos"] is True and result["test"] == "Tablet hardness" and result["value"] == 41
    (alarm,) = docs["B2026-0005"]["alarms"]
    assert alarm["metric"] == "Alarm" and alarm["active_at_end"] is False and 0 < alarm["duration_s"] < 2
    phases = {p["phase"]: p for p in docs["B2026-0005"]["phases"]}
    assert phases["inoculation"]["start"] < alarm["start"] < alarm["end"] < phases["inoculation"]["end"]
    (run,) = docs["B2026-0006"]["completeness"]["bad_quality"]
    assert (run["metric"], run["quality"]) == ("Temperature", "bad") and run["samples"] >= 1
    (comment,) = docs["B2026-0007"]["comments"]
    assert "sample port leaking" in comment["text"] and comment["user"] == "op.sim"
    (aborted,) = docs["B2026-0008"]["exceptions"]
    assert aborted["severity"] == "high" and "agitator failure" in aborted["message"]
    # the ids a reviewer dispositions stay the same in every report of the same data
    again = json.loads(report(plant_lake, "B2026-0003"))
    assert [e["id"] for e in again["exceptions"]] == [e["id"] for e in docs["B2026-0003"]["exceptions"]]


def test_the_batch_list_says_aborted(plant_lake: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "uns", "batch", "list", "--lake", str(plant_lake), "--format", "json"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    status = {r["batch_id"]: r["status"] for r in json.loads(listed.stdout)}
    assert status["B2026-0008"] == "aborted" and status[CLEAN] == "closed"


def test_the_records_are_in_the_lake_once_with_their_audit_entries(plant_lake: Path) -> None:
    from uns import lake  # noqa: PLC0415

    con = lake.connect(plant_lake)
    try:
        dupes = con.execute(
            "SELECT record_id FROM materials GROUP BY 1 HAVING count(*) > 1 UNION ALL "
            "SELECT record_id FROM results GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
        (materials,) = con.execute("SELECT count(*) FROM materials").fetchone() or (0,)
        (entries,) = con.execute(
            "SELECT count(*) FROM audit WHERE kind = 'record'"
            " AND json_extract_string(detail, '$.table') = 'materials'"
        ).fetchone() or (0,)
    finally:
        con.close()
    assert dupes == [] and materials >= 8 and entries == materials
    # and the audit trail accounts for every file of the records tables
    code, lines = verify_lines(str(plant_lake))
    assert code == 0, lines


def test_the_html_shows_the_new_sections_in_a_real_browser(plant_lake: Path, tmp_path: Path) -> None:
    pages = {}
    for batch in ("B2026-0002", "B2026-0003", "B2026-0004", "B2026-0005", "B2026-0007"):
        path = tmp_path / f"{batch}.html"
        path.write_bytes(report(plant_lake, batch, "html"))
        pages[batch] = path
    seen: dict[str, dict[str, list[str]]] = {}
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=list(CHROMIUM_ARGS))
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        for batch, path in pages.items():
            page.goto(path.as_uri(), wait_until="load")
            seen[batch] = {
                name: page.locator(f"#{name} tbody tr").all_inner_texts()
                for name in ("equipment", "materials", "results", "alarms", "comments", "exceptions")
            }
            seen[batch]["headings"] = page.locator("h2").all_inner_texts()
            seen[batch]["oos"] = page.locator("#results tr.oos").all_inner_texts()
        browser.close()
    assert set(requests) == {p.as_uri() for p in pages.values()}  # nothing from any other place
    headings = seen["B2026-0003"]["headings"]
    for title in ("Equipment readiness", "Alarms", "Materials", "Quality results", "Operator comments"):
        assert any(title in h for h in headings), (title, headings)
    assert any("no" in r and "dirty" in r for r in seen["B2026-0002"]["equipment"])
    assert any("quarantine" in r and "not released" in r for r in seen["B2026-0003"]["materials"])
    assert len(seen["B2026-0004"]["oos"]) == 1 and "OOS" in seen["B2026-0004"]["oos"][0]
    assert len(seen["B2026-0005"]["alarms"]) == 1 and "Alarm" in seen["B2026-0005"]["alarms"][0]
    assert any("sample port leaking" in r for r in seen["B2026-0007"]["comments"])
    assert any("operator_comment" in r for r in seen["B2026-0007"]["exceptions"])
