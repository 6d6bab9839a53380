"""`uns demo` end to end, on mosquitto and on the in-process fallback broker."""

from __future__ import annotations

from pathlib import Path

import pytest

import uns.demo
from uns import lake
from uns.demo import run_demo

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
    assert out[-1] == f"  {report}: 1 exception", out[-3:]
    assert "action excursion of Temperature" in report.read_text()


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
