"""The benchmark harness end to end at tiny rates: a report with every key and zero loss.

Speed itself is measured by ``scripts/bench``, never here; this only proves the
harness runs (its own mosquitto, generators, engine processes, subscribers)
and that its loss check sees every generated sample in the lake exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PHASE_KEYS = {
    "generated_metrics",
    "generator_metrics_per_s",
    "engine_metrics_per_s",
    "engine_msgs_per_s",
    "kept_up",
    "behind_at_end_s",
    "cpu_s_per_million_metrics",
    "peak_rss_mb",
    "lake_lag_ms",
}


def test_smoke_run_reports_every_key_and_no_loss(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "verdict" in out.stdout  # the table was printed
    (path,) = tmp_path.glob("*.json")
    report = json.loads(path.read_text())
    assert {"machine", "ceiling", "modes", "targets", "loss"} <= set(report)
    assert report["ceiling"]["max_sustained_msgs_per_s"] > 0
    assert set(report["modes"]) == {"lake", "device"}
    lake = report["modes"]["lake"]
    for phase in ("latency", "throughput"):
        assert set(lake[phase]) >= PHASE_KEYS, phase
        assert lake[phase]["kept_up"], lake[phase]
    assert lake["saturation"]["max_sustained_metrics_per_s"] > 0
    for scenario in ("large_birth", "rebirth_storm", "tag_scale"):
        assert lake[scenario]["initial_births_processed"] == lake[scenario]["born_metrics"], scenario
        assert lake[scenario]["storm_births_processed"] == lake[scenario]["born_metrics"], scenario
    device = report["modes"]["device"]["latency"]
    assert device["republish"]["latency_ms"]["p99"] >= 0
    assert device["republish"]["metrics_lost"] == 0
    for mode in report["modes"].values():
        assert mode["engine"]["exit_code"] == 0
        assert mode["loss"]["groups"], mode
        assert mode["loss"]["unexpected_groups"] == []
    assert report["loss"] == {"missing": 0, "duplicates": 0}
    assert all(g["generated"] > 0 for m in report["modes"].values() for g in m["loss"]["groups"].values())
