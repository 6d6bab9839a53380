"""The benchmark harness: its pure parts against oracles, and one end-to-end run at tiny rates.

Speed itself is measured by ``scripts/bench``, never here.  The smoke run only
proves the harness runs (its own mosquitto, generators, engine processes,
subscribers, a short soak) and that its loss check sees every generated sample
in the lake exactly once.  The load generator writes MQTT and protobuf bytes
by hand; protobuf's own serializer is the oracle for them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.harness import RAMP_STEP_KEYS, lake_loss
from benchmarks.loadgen import (
    VARINT6_RANGE,
    DataTemplate,
    varint,
    varint6,
)
from benchmarks.report import SOAK_FLAT_FRACTION, evaluate_targets, linear_slope, rss_trend
from tests.lake_crash_child import SAMPLES_PER_BATCH
from uns.mqtt.wire import PacketReader, encode_publish
from uns.sparkplug import sparkplug_b_pb2 as pb
from uns.sparkplug.codec import decode_payload

ROOT = Path(__file__).resolve().parent.parent
PURE = settings(max_examples=60, deadline=None)
#: what a latency or throughput phase reports: all a ramp step keeps, and more
PHASE_KEYS = {
    *RAMP_STEP_KEYS,
    "generated_metrics",
    "generator_metrics_per_s",
    "lake_lag_ms",
    "generator_cpu_us_per_msg",
}
timestamps = st.integers(min_value=VARINT6_RANGE[0], max_value=VARINT6_RANGE[1] - 1)


# ---------------------------------------------------------------------- the generator's bytes
@PURE
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_is_protobufs(value: int) -> None:
    encoded = pb.Payload(seq=value).SerializeToString()  # seq: field 3, a varint
    assert encoded == b"\x18" + varint(value)


@PURE
@given(timestamps)
def test_varint6_is_the_canonical_varint_of_epoch_milliseconds(ts: int) -> None:
    assert varint6(ts) == varint(ts)
    assert len(varint6(ts)) == 6


@pytest.mark.parametrize("ts", [0, VARINT6_RANGE[0] - 1, VARINT6_RANGE[1]])
def test_varint6_refuses_other_widths(ts: int) -> None:
    with pytest.raises(ValueError, match="6-byte"):
        varint6(ts)


@PURE
@given(
    aliases=st.lists(st.integers(min_value=0, max_value=2**28), min_size=1, max_size=30),
    ts=timestamps,
    seq=st.integers(min_value=0, max_value=255),
    value=st.floats(allow_nan=False, min_value=-1e300, max_value=1e300),
    topic=st.text(min_size=1, max_size=40),
)
def test_ddata_packet_is_protobufs_serialization_in_a_publish(
    aliases: list[int], ts: int, seq: int, value: float, topic: str
) -> None:
    template = DataTemplate(topic, aliases)
    template.packet(varint6(VARINT6_RANGE[0]), (seq + 1) % 256, value + 1)  # must not leak into the next
    packet = template.packet(varint6(ts), seq, value)
    expected = pb.Payload(timestamp=ts, seq=seq)
    for i, alias in enumerate(aliases):
        expected.metrics.add(alias=alias, timestamp=ts, double_value=value + i)
    assert packet == encode_publish(topic, expected.SerializeToString())
    reader = PacketReader()
    assert reader.feed(packet) == []
    ((got_topic, body, qos, retain),) = reader.messages
    assert (got_topic, qos, retain) == (topic, 0, False)
    payload = decode_payload(body)
    assert (payload.timestamp, payload.seq) == (ts, seq)
    assert [m.alias for m in payload.metrics] == aliases


# ---------------------------------------------------------------------- the soak's verdict
@PURE
@given(
    xs=st.lists(st.integers(min_value=0, max_value=10_000), min_size=2, max_size=50, unique=True),
    intercept=st.floats(min_value=-1000, max_value=1000),
    slope=st.floats(min_value=-100, max_value=100),
)
def test_linear_slope_recovers_a_line(xs: list[int], intercept: float, slope: float) -> None:
    fitted = linear_slope([(x, intercept + slope * x) for x in xs])
    assert fitted == pytest.approx(slope, abs=1e-6)


def test_linear_slope_needs_two_distinct_x() -> None:
    assert linear_slope([]) is None
    assert linear_slope([(1.0, 2.0), (1.0, 3.0)]) is None


@PURE
@given(
    start=st.floats(min_value=50, max_value=1000),
    mb_per_min=st.floats(min_value=-5, max_value=20),
    duration=st.sampled_from([60.0, 600.0]),
)
def test_rss_trend_is_flat_when_the_growth_is_under_the_rule(
    start: float, mb_per_min: float, duration: float
) -> None:
    # a warm-up jump in the first half must not count: only the second half is fitted
    series = [
        (t, start + (30.0 if t > 5 else 0.0) + mb_per_min * t / 60) for t in range(0, int(duration) + 1, 2)
    ]
    trend = rss_trend([(float(t), mb) for t, mb in series], duration)
    growth = mb_per_min * duration / 60
    assert trend["slope_mb_per_min"] == pytest.approx(mb_per_min, abs=1e-3)
    assert trend["start_mb"] == start
    if abs(growth - SOAK_FLAT_FRACTION * start) > 0.1:
        assert trend["flat"] == (growth < SOAK_FLAT_FRACTION * start)


# ---------------------------------------------------------------------- end to end
@pytest.mark.integration
def _bench(tmp_path: Path, module: str, *args: str) -> tuple[str, dict[str, Any]]:
    """Run ``benchmarks.<module>``; its printed table and its JSON report."""
    out = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--out", str(tmp_path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    return out.stdout, json.loads(path.read_text())


def test_smoke_run_reports_every_key_and_no_loss(tmp_path: Path) -> None:
    table, report = _bench(tmp_path, "harness", "--smoke", "--soak", "2", "--soak-rate", "2000")
    assert "verdict" in table  # the table was printed
    assert {"machine", "ceiling", "modes", "targets", "loss", "soak"} <= set(report)
    assert report["ceiling"]["max_sustained_msgs_per_s"] > 0
    assert set(report["modes"]) == {"lake", "device"}
    lake = report["modes"]["lake"]
    for phase in ("latency", "throughput"):
        assert set(lake[phase]) >= PHASE_KEYS, phase
        assert lake[phase]["kept_up"], lake[phase]
        assert not any(key.startswith("_") for key in lake[phase])
    assert lake["saturation"]["max_sustained_metrics_per_s"] > 0
    for scenario in ("large_birth", "rebirth_storm", "tag_scale"):
        assert lake[scenario]["initial_births_processed"] == lake[scenario]["born_metrics"], scenario
        assert lake[scenario]["storm_births_processed"] == lake[scenario]["born_metrics"], scenario
        assert lake[scenario]["rebirths_answered"] == int(lake[scenario]["shape"].split("x")[0])
    device = report["modes"]["device"]["latency"]
    assert device["republish"]["latency_ms"]["p99"] >= 0
    assert device["republish"]["metrics_lost"] == 0
    for mode in report["modes"].values():
        assert mode["engine"]["exit_code"] == 0
        assert mode["loss"]["groups"], mode
        assert mode["loss"]["unexpected_groups"] == []
    soak = report["soak"]
    assert soak["kept_up"], soak
    assert soak["engine"]["exit_code"] == 0
    assert soak["rss"]["samples"] >= 4 and soak["rss"]["start_mb"] > 0
    assert soak["loss"]["groups"]["soak"]["generated"] > 0
    assert soak["loss"]["missing"] == soak["loss"]["duplicates"] == 0
    (soak_row,) = [t for t in report["targets"] if "soak" in t["target"]]
    assert soak_row["holds"] is None  # 2 s at 2,000/s: shorter and slower than the target
    assert report["targets"] == evaluate_targets(report)
    assert report["loss"]["missing"] == report["loss"]["duplicates"] == 0
    assert report["loss"]["left_in_wal_rows"] >= 0  # > 0 when an engine's stop deadline came first
    assert all(g["generated"] > 0 for m in report["modes"].values() for g in m["loss"]["groups"].values())


def test_the_loss_check_counts_the_rows_a_stopped_engine_left_in_its_wal(tmp_path: Path) -> None:
    """Issue 26: `--quick` on a busy machine reported 28,500 samples of tag_scale missing
    while the engine exited 0.  They were in its WAL: its stop deadline came before its
    lake had committed the backlog (the rows are safe there; the next start commits them),
    and the harness counted the lake at once.  The loss check commits what an engine left,
    as its next start would, and says how much that was.  Here a writer dies just before
    its first commit (the lake's test hook): its ten batches are in its WAL only."""
    lake = tmp_path / "lake"
    child = [sys.executable, "-m", "tests.lake_crash_child", "write", str(lake), "0", "10", "0.05", "0"]
    env = {**os.environ, "UNS_LAKE_TEST_HOOK": "kill:before:measurements"}  # fsync 0: in the WAL at add()
    died = subprocess.run(child, cwd=ROOT, env=env, capture_output=True, timeout=120, check=False)
    assert died.returncode == -signal.SIGKILL, died.stderr
    loss = lake_loss(lake, {"PilotPlant": 10 * SAMPLES_PER_BATCH})
    assert loss["groups"]["PilotPlant"]["rows"] == 10 * SAMPLES_PER_BATCH
    assert (loss["missing"], loss["duplicates"]) == (0, 0)
    assert loss["left_in_wal_rows"] > 10 * SAMPLES_PER_BATCH  # the samples and the other tables' rows
    assert lake_loss(lake, {"PilotPlant": 10 * SAMPLES_PER_BATCH})["left_in_wal_rows"] == 0  # committed once


@pytest.mark.slow
def test_the_shards_benchmark_compares_one_engine_with_two_and_loses_nothing(tmp_path: Path) -> None:
    table, report = _bench(tmp_path, "bench_shards", "--rate", "500", "--seconds", "2")
    assert "two engines" in table
    one, two = report["setups"]["one"], report["setups"]["two"]
    assert (one["engines"], two["engines"]) == (1, 2)
    assert two["groups_per_engine"] == [["two-S1"], ["two-S2"]]
    for setup in (one, two):
        assert setup["generated_metrics"] > 0 and setup["missing"] == setup["duplicates"] == 0, setup
        assert setup["aggregate_lossless_metrics_per_s"] > 0 and setup["cpu_s_per_million_metrics"] > 0
    assert report["cpu_per_metric_two_over_one"] > 0


def test_the_batch_report_benchmark_runs_with_records_and_alarms(capsys: pytest.CaptureFixture[str]) -> None:
    """``bash scripts/bench rbe`` at a tiny size: its lake builds and its reports are made,
    with the records, alarm intervals and bad-quality runs it asks for (issue 31)."""
    from benchmarks.bench_batch import main  # noqa: PLC0415

    args = ["--samples", "4000", "--metrics", "2", "--batches", "4", "--formats", "json"]
    main([*args, "--records", "30", "--alarms", "3", "--bad-quality", "2"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["records"], result["alarm_intervals"], result["bad_quality_runs"]) == (30, 3, 2)
    assert result["report_json_s"] > 0 and result["list_command_s"] > 0
