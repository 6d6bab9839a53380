"""`uns demo` end to end, on mosquitto and on the in-process fallback broker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import uns.demo
from uns import lake
from uns.demo import report_command, run_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _check(out: list[str], lake_dir: Path) -> None:
    text = "\n".join(out)
    assert "Summary" in text
    assert "Mean bioreactor temperature per batch and phase" in text
    con = lake.connect(lake_dir)
    try:
        rows = con.execute("SELECT count(*), count(DISTINCT path) FROM measurements").fetchone()
    finally:
        con.close()
    assert rows is not None
    assert rows[0] > 100
    assert rows[1] >= 5  # the four units and the process-cell-level node metrics
    # it ends with the HTML report of the batch it spoilt on purpose: its path and verdict
    report = lake_dir.parent / "uns-demo-B2026-0002.html"
    assert out[-1] == f"  {report}: 2 exceptions", out[-3:]
    html = report.read_text()
    assert "action excursion of Temperature" in html
    # the batch records every simulated batch carries, and the comment the demo adds
    for section in ('id="materials"', 'id="results"', 'id="comments"', 'id="equipment"'):
        assert f"<table {section}" in html, section
    assert "sample port leaking" in html
    # the closing hint makes that report again from here: with the lake it was made from
    assert out[-2] == f"Batch report of B2026-0002 (again: {report_command(lake_dir)}):"
    # the summary's numbers say what they count, so they compare
    lines = {line.split()[0] + " " + line.split()[1]: line for line in out if line.startswith("  ")}
    plant, engine = lines["plant published"], lines["engine received"]
    context = lines["context changes"]
    published = re.search(
        r"([\d,]+) Sparkplug messages .* with ([\d,]+) metric values, and (\d+) context events", plant
    )
    received = re.search(
        r"([\d,]+) Sparkplug messages with ([\d,]+) metric values, (\d+) context events", engine
    )
    assert published and received, (plant, engine)
    assert published.group(3) == received.group(3)  # every context event arrived (QoS 1)
    changes = re.search(
        r"changes +([\d,]+), one per key set or cleared: ([\d,]+) from the (\d+) context events"
        r".*?(?:, ([\d,]+) from the controllers' context metrics|$)",
        context,
    )
    assert changes, context
    total, by_events, events, by_plc = (int((g or "0").replace(",", "")) for g in changes.groups())
    assert total == by_events + by_plc and events == int(published.group(3))


def test_demo_on_mosquitto(tmp_path: Path) -> None:
    out: list[str] = []
    run_demo(duration=4, lake=str(tmp_path / "lake"), echo=out.append)
    assert "mosquitto on mqtt://127.0.0.1:" in out[0]
    _check(out, tmp_path / "lake")


def test_demo_falls_back_to_the_in_process_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uns.demo, "find_mosquitto", lambda: None)  # as on a machine without mosquitto
    out: list[str] = []
    run_demo(duration=4, lake=str(tmp_path / "lake"), echo=out.append)
    assert "in-process MiniBroker" in out[0]
    _check(out, tmp_path / "lake")
