"""The benchmark harness: the engine under load, measured against the targets of issue 7.

Usage (from the repository root; ``scripts/bench`` sets up and runs this)::

    .venv/bin/python -m benchmarks.harness [--quick | --smoke] [--out bench-results] \
        [--soak SECONDS [--soak-rate METRICS_PER_S]]

Everything runs on loopback and is started and stopped here: a private
mosquitto, load generators (:mod:`benchmarks.loadgen`, one process each),
the engine (``uns run``, its own process, a fresh lake per mode), the
bare-subscriber ceiling and the republished-events listener
(:mod:`benchmarks.subscribers`).  Phases, in order:

1. ``ceiling``: a bare aiomqtt subscriber counts what the generator sends at
   full speed (no engine running).
2. Per mode (``lake``: republish off; ``device``; ``metric``), one engine:
   ``latency`` (fixed rate: end-to-end latency of the republished events and
   lake lag), ``throughput`` (the mode's target rate), ``saturation`` (the
   generator at full speed); in ``lake`` mode also the scenarios
   ``large_birth`` (1,000 metrics per DBIRTH), ``rebirth_storm`` (NCMD rebirth
   to every node at once) and ``tag_scale`` (200,000 born metrics over 200
   nodes).  Then SIGTERM (the engine flushes) and the loss check: every
   generated sample must be in ``measurements`` exactly once.
3. ``soak`` (600 s in the full run, or ``--soak SECONDS``; none with ``--quick``): a fresh lake-mode engine at
   ``--soak-rate`` metrics/s (default 50,000) for that long, its RSS sampled
   every few seconds: start/end/peak and the slope over the second half
   (:func:`benchmarks.report.rss_trend`), then its own loss check.

The report is JSON (``<out>/<timestamp>.json``) plus a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import psutil  # type: ignore[import-untyped]

from benchmarks.procs import EngineProcess, LakeLagProbe, Subscriber, kill_children, run_generator
from benchmarks.report import SOAK_RATE, evaluate_targets, render_table, rss_trend, save_report
from benchmarks.subscribers import percentiles
from uns.engine.host import Engine
from uns.mqtt.mosquitto import running_mosquitto

__all__ = ["PROFILES", "Profile", "commit_left_wal", "lake_loss", "main", "run_bench"]

MB = 1024 * 1024
RAMP_STEP_KEYS = (
    "target_metrics_per_s",
    "engine_metrics_per_s",
    "engine_msgs_per_s",
    "kept_up",
    "behind_at_end_s",
    "cpu_s_per_million_metrics",
    "peak_rss_mb",
)
MAX_BEHIND_S = 5.0  # stop a phase's generator once the engine is this many seconds of load behind
SOAK_TARGET_S = 600.0  # the soak: 10 minutes (the full run's default)
SOAK_SAMPLE_S = 2.0  # the soak's RSS sampling interval (shorter for soaks under 40 s)


@dataclass(frozen=True)
class Profile:
    name: str
    latency_rate: float  # metrics/s
    latency_s: float
    throughput: dict[str, tuple[float, float]]  # mode -> (metrics/s, seconds)
    ramp: tuple[int, ...]  # metrics/s steps of the saturation ramp (engine and ceiling)
    ramp_step_s: float
    plant: tuple[int, int, int]  # nodes, devices, metrics per DDATA (typical plant)
    large_birth: tuple[int, int, int]
    storm: tuple[int, int, int]
    scale: tuple[int, int, int]
    modes: tuple[str, ...] = ("lake", "device", "metric")


_FULL = Profile(
    "full",
    latency_rate=20_000,
    latency_s=20,
    throughput={"lake": (100_000, 60), "device": (80_000, 30), "metric": (40_000, 30)},
    ramp=(20_000, 40_000, 60_000, 80_000, 100_000, 120_000, 150_000, 200_000),
    ramp_step_s=8,
    plant=(10, 10, 10),
    large_birth=(10, 1, 1000),
    storm=(100, 10, 10),
    scale=(200, 10, 100),
)

PROFILES = {
    "full": _FULL,
    # the full run's plant shapes and rates, for shorter phases and a shorter ramp
    "quick": dataclasses.replace(
        _FULL,
        name="quick",
        latency_s=6,
        throughput={"lake": (100_000, 8), "device": (80_000, 6), "metric": (40_000, 6)},
        ramp=(20_000, 40_000, 60_000, 80_000, 100_000, 150_000),
        ramp_step_s=4,
    ),
    "smoke": Profile(
        "smoke",
        latency_rate=1_000,
        latency_s=1,
        throughput={"lake": (3_000, 1), "device": (2_000, 1), "metric": (1_000, 1)},
        ramp=(2_000,),
        ramp_step_s=1,
        plant=(2, 2, 10),
        large_birth=(2, 1, 100),
        storm=(4, 2, 10),
        scale=(4, 2, 10),
        modes=("lake", "device"),
    ),
}


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        out = subprocess.run([mosq, "-h"], capture_output=True, text=True, timeout=5, check=False)
        mosq_version = (out.stdout or out.stderr).splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        mosq_version = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "mosquitto": mosq_version,
    }


class Bench:
    """One run: a broker, then the ceiling and the modes (see module doc)."""

    def __init__(self, profile: Profile, port: int, workdir: Path, *, scrape_s: float = 0.0) -> None:
        self.p = profile
        self.port = port
        self.workdir = workdir
        self.scrape_s = scrape_s  # > 0: every engine serves /metrics, scraped this often
        self.expected: dict[str, int] = {}  # group -> device metric samples generated
        self.group_phase: dict[str, str] = {}

    # ------------------------------------------------------------------ ceiling
    async def ceiling(self) -> dict[str, Any]:
        """The same ramp as the engine's, received by a bare aiomqtt subscriber (no engine running)."""
        nodes, devices, metrics = self.p.plant
        steps = []
        best: dict[str, Any] | None = None
        for rate in self.p.ramp:
            sub = Subscriber("ceiling", port=self.port, topic="spBv1.0/#", idle=2.0)
            await sub.start()
            gen = await run_generator(
                port=self.port, group="Ceiling", nodes=nodes, devices=devices, metrics=metrics,
                rate=rate, duration=self.p.ramp_step_s,
            )  # fmt: skip
            got = await sub.result(stop=False)
            report = gen.report
            gen_end = report["started"] + report["elapsed"]
            behind = max(0.0, got["last_wall"] - gen_end)
            step = {
                "target_metrics_per_s": rate,
                "generator_msgs_per_s": round(report["data_messages"] / max(report["elapsed"], 1e-9), 1),
                "received_msgs_per_s": got["msgs_per_s"],
                "sent": report["messages"],
                "received": got["messages"],
                "behind_at_end_s": round(behind, 2),
                "kept_up": got["messages"] >= report["messages"] and behind <= 1.0,
                "generator_cpu_us_per_msg": round(
                    report["data_cpu_s"] / max(report["data_messages"], 1) * 1e6, 2
                ),
            }
            steps.append(step)
            if not step["kept_up"]:
                break
            best = step
        top = steps[-1]
        return {
            "subscriber": "aiomqtt 2.5.1, counting only",
            "steps": steps,
            "step_seconds": self.p.ramp_step_s,
            "max_sustained_msgs_per_s": best["generator_msgs_per_s"] if best else 0.0,
            "max_sustained_metrics_per_s": best["generator_msgs_per_s"] * metrics if best else 0.0,
            # the last step: the subscriber's own rate while it fell behind (or the top of the ramp)
            "msgs_per_s": max(s["received_msgs_per_s"] for s in steps),
            "ramp_exhausted": top["kept_up"],
        }

    # ------------------------------------------------------------------ one mode
    async def mode(self, mode: str) -> dict[str, Any]:
        lake = self.workdir / f"lake-{mode}"
        engine = EngineProcess(port=self.port, lake=lake, mode=mode, scrape_s=self.scrape_s)
        probe = LakeLagProbe(lake)
        results: dict[str, Any] = {}
        windows: dict[str, tuple[int, int]] = {}
        started = time.monotonic()
        await engine.start()
        probe.start()
        try:
            nodes, devices, metrics = self.p.plant
            phases = [
                ("latency", self.p.latency_rate, self.p.latency_s),
                ("throughput", *self.p.throughput[mode]),
            ]
            for name, rate, seconds in phases:
                group = f"{mode}-{name}"
                res = await self.load_phase(engine, group, (nodes, devices, metrics), rate, seconds)
                windows[name] = (res.pop("_t0_ms"), res.pop("_t1_ms"))
                del res["_data_window"]
                results[name] = res
            results["saturation"] = await self.ramp(engine, mode)
            if mode == "lake":
                results["large_birth"] = await self.birth_phase(
                    engine, "lake-large_birth", self.p.large_birth
                )
                results["rebirth_storm"] = await self.birth_phase(engine, "lake-rebirth_storm", self.p.storm)
                results["tag_scale"] = await self.birth_phase(engine, "lake-tag_scale", self.p.scale)
        finally:
            stop_t = time.monotonic()
            code = await engine.stop()
            probe.stop()
        results["engine"] = {
            "exit_code": code,
            "shutdown_s": round(time.monotonic() - stop_t, 2),
            "peak_rss_mb": round(engine.hwm_bytes / MB, 1),
            "wall_s": round(time.monotonic() - started, 1),
            "lake_versions_seen": probe.versions,
            "scrapes": engine.scrapes,
        }
        for name, (t0, t1) in windows.items():
            lags = probe.lags_between(t0, t1)
            results[name]["lake_lag_ms"] = percentiles(lags, (50, 99))
            results[name]["lake_lag_rows_sampled"] = len(lags)
        results["loss"] = self.loss_check(lake, [g for g in self.expected if g.startswith(f"{mode}-")])
        return results

    async def load_phase(
        self, engine: EngineProcess, group: str, shape: tuple[int, int, int], rate: float, seconds: float
    ) -> dict[str, Any]:
        """The generator at ``rate`` metrics/s for ``seconds``; the engine's figures meanwhile.

        Stopped early once the engine is more than ``MAX_BEHIND_S`` seconds of load behind:
        the backlog then sits in mosquitto, and a longer one only makes the run longer
        (and, past 10 s, trips the engine's QoS 1 publish timeout: see docs/performance.md)."""
        nodes, devices, metrics = shape
        status = engine.status
        m0 = status.metrics
        msgs0 = int(status.latest.get("counters", {}).get("messages", 0))
        rp0 = dict(status.latest.get("sinks", {}).get("republish", {}))
        cpu0 = engine.cpu_seconds()
        engine.rss_peak_window = 0
        sub = None
        if engine.mode != "lake":
            sub = Subscriber("events", port=self.port, topic=f"{engine.prefix}/#", idle=120.0)
            await sub.start()
        t0 = time.time()
        born, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_generator(
                port=self.port, group=group, nodes=nodes, devices=devices, metrics=metrics,
                rate=rate, duration=seconds, on_born=born, stop=stop,
            )
        )  # fmt: skip
        stopped_after = None
        try:
            await asyncio.wait_for(born.wait(), 60)
            data_start = time.time()
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                elapsed = time.time() - data_start
                if rate > 0 and rate * elapsed - (status.metrics - m0) > rate * MAX_BEHIND_S:
                    stopped_after = round(elapsed, 1)
                    stop.set()
                    break
        finally:
            gen = await task
        report = gen.report
        self.expected[group] = self.expected.get(group, 0) + report["device_metrics"]
        gen_end = report["started"] + report["elapsed"]
        t_done, m1 = await status.wait_metrics(
            m0 + report["device_metrics"], limit_s=max(90.0, seconds * 3), alive=engine.running
        )
        engine.check_running()
        cpu1 = engine.cpu_seconds()
        processed = m1 - m0
        msgs = int(status.latest.get("counters", {}).get("messages", 0)) - msgs0
        # from the first DATA publish to the status that showed the last sample processed
        span = max(t_done - report["started"], 1e-3)
        out: dict[str, Any] = {
            "shape": f"{nodes}x{devices}x{metrics}",
            "target_metrics_per_s": rate,
            "seconds": round(report["elapsed"], 1),
            "planned_seconds": seconds,
            "stopped_early_after_s": stopped_after,
            "generated_metrics": report["device_metrics"],
            "generator_metrics_per_s": round(report["data_metrics"] / max(report["elapsed"], 1e-9), 1),
            "engine_metrics": processed,
            "engine_metrics_per_s": round(processed / span, 1),
            "engine_msgs_per_s": round(msgs / span, 1),
            "behind_at_end_s": round(max(0.0, t_done - gen_end), 2),
            "cpu_s_per_million_metrics": round((cpu1 - cpu0) / max(processed, 1) * 1e6, 2),
            "peak_rss_mb": round(engine.rss_peak_window / MB, 1),
            "generator_cpu_us_per_msg": round(
                report["data_cpu_s"] / max(report["data_messages"], 1) * 1e6, 2
            ),
            "_t0_ms": int(t0 * 1000),
            "_t1_ms": int(t_done * 1000),
            "_data_window": (report["started"], gen_end),
        }
        # kept up: ran the full time and processed everything within ~1 s (+ status resolution)
        out["kept_up"] = (
            stopped_after is None and processed >= report["device_metrics"] and out["behind_at_end_s"] <= 1.5
        )
        if sub is not None:
            await self.wait_republish_drained(engine)
            await asyncio.sleep(1.0)
            events = await sub.result()
            rp1 = dict(status.latest.get("sinks", {}).get("republish", {}))
            out["republish"] = {
                "events_received": events["events"],
                "metrics_received": events["metrics"],
                "events_per_s": events["events_per_s"],
                "latency_ms": events["latency_ms"],
                # seconds since the phase's first DATA publish
                "worst_seconds": [
                    {"at_s": round(w["second"] - report["started"], 1), "max_ms": w["max_ms"]}
                    for w in events.get("worst_seconds", [])
                ],
                "published": int(rp1.get("published", 0)) - int(rp0.get("published", 0)),
                "dropped_queue_full": int(rp1.get("dropped_queue_full", 0))
                - int(rp0.get("dropped_queue_full", 0)),
                "errors": int(rp1.get("errors", 0)) - int(rp0.get("errors", 0)),
            }
            out["republish"]["metrics_lost"] = report["device_metrics"] - events["metrics"]
        return out

    async def ramp(self, engine: EngineProcess, mode: str) -> dict[str, Any]:
        """Rising rates, ``ramp_step_s`` each, until the engine no longer keeps up."""
        steps = []
        best: dict[str, Any] | None = None
        for rate in self.p.ramp:
            res = await self.load_phase(
                engine, f"{mode}-ramp-{rate // 1000}k", self.p.plant, rate, self.p.ramp_step_s
            )
            for key in ("_t0_ms", "_t1_ms", "_data_window"):
                del res[key]
            steps.append({k: res[k] for k in RAMP_STEP_KEYS})
            if not res["kept_up"]:
                break
            best = res
        out: dict[str, Any] = {"steps": steps, "step_seconds": self.p.ramp_step_s}
        out["max_sustained_metrics_per_s"] = best["generator_metrics_per_s"] if best else 0.0
        out["max_sustained_msgs_per_s"] = best["engine_msgs_per_s"] if best else 0.0
        out["highest_step_kept_up"] = best["target_metrics_per_s"] if best else 0
        return out

    async def wait_republish_drained(self, engine: EngineProcess, limit_s: float = 60.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            await engine.status.next(0.5)
            if int(engine.status.latest.get("sinks", {}).get("republish", {}).get("queue_depth", 0)) == 0:
                return

    async def birth_phase(
        self, engine: EngineProcess, group: str, shape: tuple[int, int, int]
    ) -> dict[str, Any]:
        """Births only: the initial births, then NCMD rebirth to every node at once."""
        nodes, devices, metrics = shape
        status = engine.status
        born_metrics = nodes * devices * metrics
        engine.rss_peak_window = 0
        m0 = status.metrics
        born, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_generator(
                port=self.port, group=group, nodes=nodes, devices=devices, metrics=metrics,
                rate=0, duration=600, on_born=born, stop=stop,
            )
        )  # fmt: skip
        try:
            await asyncio.wait_for(born.wait(), 120)
            t_first, m1 = await status.wait_metrics(m0 + born_metrics, limit_s=120, alive=engine.running)
            engine.check_running()
            rss_after_birth = engine.rss_peak_window
            # every node at once: one connection, NCMDs back to back
            payload = Engine.rebirth_payload()
            async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"bench-ncmd-{time.time_ns()}") as c:
                t_ncmd = time.time()
                for n in range(nodes):
                    await c.publish(f"spBv1.0/{group}/NCMD/node-{n:03d}", payload, qos=0)
            t_storm, m2 = await status.wait_metrics(m0 + 2 * born_metrics, limit_s=120, alive=engine.running)
            engine.check_running()
        finally:
            stop.set()
            gen = await task
        self.expected[group] = self.expected.get(group, 0) + gen.report["device_metrics"]
        first_s = t_first - gen.births_started
        return {
            "shape": f"{nodes}x{devices}x{metrics}",
            "born_metrics": born_metrics,
            "initial_birth_s": round(first_s, 2),
            "initial_births_processed": m1 - m0,
            "rebirth_storm_s": round(t_storm - t_ncmd, 2),
            "rebirths_answered": gen.report["rebirths_answered"],
            "storm_births_processed": m2 - m1,
            "rss_after_birth_mb": round(rss_after_birth / MB, 1),
            "peak_rss_mb": round(engine.rss_peak_window / MB, 1),
            "status_resolution_s": 0.25,
        }

    # ------------------------------------------------------------------ soak
    async def soak(self, seconds: float, rate: float) -> dict[str, Any]:
        """A fresh lake-mode engine at ``rate`` metrics/s for ``seconds``: does its RSS grow?

        The same load phase as the others (cut short once the engine is
        ``MAX_BEHIND_S`` behind: then the soak did not run at its rate), with the
        engine's RSS sampled every ``SOAK_SAMPLE_S`` seconds meanwhile."""
        lake = self.workdir / "lake-soak"
        engine = EngineProcess(port=self.port, lake=lake, mode="lake")
        interval = min(SOAK_SAMPLE_S, max(0.25, seconds / 20))
        samples: list[tuple[float, int]] = []  # (wall clock, RSS bytes of the engine + its children)

        async def sample_rss() -> None:
            with contextlib.suppress(psutil.Error):
                while True:
                    samples.append((time.time(), engine.rss_bytes()))
                    await asyncio.sleep(interval)

        started = time.monotonic()
        await engine.start()
        sampler = asyncio.create_task(sample_rss())
        try:
            phase = await self.load_phase(engine, "soak", self.p.plant, rate, seconds)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            stop_t = time.monotonic()
            code = await engine.stop()
        del phase["_t0_ms"], phase["_t1_ms"]
        data_start, data_end = phase.pop("_data_window")
        # the data window only: births before it and the drain after it are not the soak
        series = [(round(t - data_start, 2), round(rss / MB, 1)) for t, rss in samples]
        series = [(t, mb) for t, mb in series if 0 <= t <= data_end - data_start]
        phase["rss"] = rss_trend(series, data_end - data_start)
        phase["rss"]["interval_s"] = interval
        phase["rss_series"] = series
        lake_stats = engine.status.latest.get("sinks", {}).get("lake", {})
        phase["engine"] = {
            "exit_code": code,
            "commit_worker_recycled": lake_stats.get("commit_worker_recycled"),
            "commit_worker_restarts": lake_stats.get("commit_worker_restarts"),
            "compactions": lake_stats.get("compactions"),
            "last_compaction_s": lake_stats.get("last_compaction_s"),
            "shutdown_s": round(time.monotonic() - stop_t, 2),
            "peak_rss_mb": round(engine.hwm_bytes / MB, 1),
            "wall_s": round(time.monotonic() - started, 1),
        }
        phase["loss"] = self.loss_check(lake, ["soak"])
        phase["lake_files"] = self.data_files(lake)
        return phase

    @staticmethod
    def data_files(lake: Path) -> dict[str, int]:
        """Data files per table at the end (compaction keeps the measurements' count low)."""
        from uns.lake.maintenance import Lake  # noqa: PLC0415 - deltalake only here

        return {table: info.files for table, info in Lake(lake).info().items()}

    # ------------------------------------------------------------------ loss
    def loss_check(self, lake: Path, groups: list[str]) -> dict[str, Any]:
        return lake_loss(lake, {g: self.expected[g] for g in groups})


def commit_left_wal(lake: Path) -> int:
    """Commit the write-ahead log segments that stopped engines left in the lake's ``_wal*``
    directories, as each one's next start would, and return the rows they held.

    An engine whose stop deadline (``engine.stop_timeout_s``) comes before its lake has
    committed its backlog exits 0 with the rest in its WAL, safe (docs/lake.md §3).  On
    a busy machine that happened at the end of ``--quick``: the lake was counted before
    those rows were committed, and they were reported missing (issue 26)."""
    from uns.lake.wal import list_segments  # noqa: PLC0415 - deltalake only here
    from uns.lake.writer import DeltaWriter  # noqa: PLC0415

    rows = 0
    for wal in sorted(lake.glob("_wal*")):
        segments = list_segments(wal)
        if not segments:
            continue
        writer = DeltaWriter(lake, wal.name.removeprefix("_wal").removeprefix("-"))
        writer.open_tables()
        for number, path in segments:  # in number order, as the writer's replay commits them
            rows += writer.commit_segment(number, path).rows_written
    return rows


def lake_loss(lake: Path, expected: dict[str, int]) -> dict[str, Any]:
    """Per group of ``expected`` (group -> device samples generated): samples missing from
    the lake's measurements and samples in it more than once; groups not expected.  The
    engines must have stopped: what they left in their WALs is committed first (and
    counted in ``left_in_wal_rows``, rows of every table)."""
    from uns.lake.query import connect  # noqa: PLC0415 - pyarrow/duckdb only here

    left = commit_left_wal(lake)
    con = connect(lake)
    try:
        rows = con.execute(
            "SELECT group_id, count(*), count(DISTINCT (edge_node_id, device_id, metric, ts)) "
            "FROM measurements WHERE device_id IS NOT NULL GROUP BY group_id"
        ).fetchall()
    finally:
        con.close()
    found = {g: (int(n), int(d)) for g, n, d in rows}
    per_group = {}
    for g, generated in expected.items():
        rows_n, distinct = found.get(g, (0, 0))
        per_group[g] = {
            "generated": generated,
            "rows": rows_n,
            "distinct": distinct,
            "missing": generated - distinct,
            "duplicates": rows_n - distinct,
        }
    return {
        "groups": per_group,
        "missing": sum(v["missing"] for v in per_group.values()),
        "duplicates": sum(v["duplicates"] for v in per_group.values()),
        "unexpected_groups": sorted(set(found) - set(expected)),
        "left_in_wal_rows": left,
    }


def receive_path(rounds: int) -> dict[str, float]:
    """The client's receive path parsing one socket read of 1,000 PUBLISHes (200 B payloads):
    ns per message for MQTT 3.1.1 and 5.0, best of five (benchmarks/bench_wire5.py; under
    callgrind for figures that a loaded machine does not move)."""
    from benchmarks.bench_wire5 import measure, readers, streams  # noqa: PLC0415

    cases = readers(streams(1000, 200))
    # like for like: MQTT 5 against the same Python reader loop; 3.1.1's C run of PUBLISH
    # packets (issue 34) is reported beside it, not used as the bar
    v3, v5 = measure(cases["v3-python"], rounds), measure(cases["v5"], rounds)
    native = measure(cases["v3"], rounds)
    return {
        "v3_ns_per_msg": round(v3, 1),
        "v5_ns_per_msg": round(v5, 1),
        "v5_over_v3": round(v5 / v3, 3),
        "v3_native_ns_per_msg": round(native, 1),
    }


async def run_bench(
    profile: Profile,
    workdir: Path,
    *,
    soak_s: float = 0.0,
    soak_rate: float = SOAK_RATE,
    scrape_s: float = 0.0,
) -> dict[str, Any]:
    started = time.time()
    result: dict[str, Any] = {
        "profile": profile.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": machine_info(),
        "scrape_s": scrape_s,
    }
    result["mqtt5_receive"] = receive_path(rounds=20 if profile.name == "smoke" else 200)
    with running_mosquitto() as broker:
        bench = Bench(profile, broker.port, workdir, scrape_s=scrape_s)
        try:
            result["ceiling"] = await bench.ceiling()
            result["modes"] = {}
            for mode in profile.modes:
                result["modes"][mode] = await bench.mode(mode)
            if soak_s > 0:
                result["soak"] = await bench.soak(soak_s, soak_rate)
        finally:
            kill_children()
    result["elapsed_s"] = round(time.time() - started, 1)
    checks = [m["loss"] for m in result["modes"].values()]
    if "soak" in result:
        checks.append(result["soak"]["loss"])
    result["loss"] = {
        "missing": sum(c["missing"] for c in checks),
        "duplicates": sum(c["duplicates"] for c in checks),
        "left_in_wal_rows": sum(c["left_in_wal_rows"] for c in checks),
    }
    result["targets"] = evaluate_targets(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="uns benchmark harness (issue 7)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short smoke run (< 2 minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny rates, seconds (the test suite's run)")
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="directory for the JSON report"
    )
    parser.add_argument("--keep", action="store_true", help="keep the lakes and engine logs")
    parser.add_argument("--modes", default=None, help="comma-separated subset of lake,device,metric")
    parser.add_argument(
        "--soak",
        type=float,
        default=None,
        metavar="SECONDS",
        help="after the other phases, a lake-mode soak this long (0 = none; default: the "
        "target's 600 in the full run, none with --quick/--smoke)",
    )
    parser.add_argument(
        "--soak-rate", type=float, default=SOAK_RATE, help="the soak's metrics/s (the target's is 50,000)"
    )
    parser.add_argument(
        "--scrape",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="turn on the engine's HTTP endpoint and GET /metrics this often (0 = endpoint off)",
    )
    args = parser.parse_args(argv)
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.modes:
        profile = dataclasses.replace(profile, modes=tuple(args.modes.split(",")))
    soak_s = args.soak if args.soak is not None else 0.0 if args.quick or args.smoke else SOAK_TARGET_S
    workdir = Path(tempfile.mkdtemp(prefix="uns-bench-"))
    try:
        result = asyncio.run(
            run_bench(profile, workdir, soak_s=soak_s, soak_rate=args.soak_rate, scrape_s=args.scrape)
        )
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    save_report(args.out, profile.name, result, render_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
