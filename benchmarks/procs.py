"""The processes the benchmark harness starts, and the probes it watches them with.

- :class:`EngineProcess`: ``uns run`` with a fresh lake, watched with psutil
  (CPU seconds, RSS sampled every 0.25 s, the kernel's peak ``VmHWM``) and
  through its retained status document (counters, sink stats);
- :func:`run_generator`: one :mod:`benchmarks.loadgen` process;
- :class:`Subscriber`: one :mod:`benchmarks.subscribers` process;
- :class:`Scraper`: ``GET /metrics`` of the engine every few seconds, as Prometheus does
  (``--scrape``: the endpoint's cost is measured with it on and off);
- :class:`LakeLagProbe`: a thread that notices each new Delta version of
  ``measurements`` and records, for the rows of the files it added, how long
  after ``received_at`` they became queryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiomqtt
import psutil  # type: ignore[import-untyped]

from uns.mqtt.mosquitto import free_port

__all__ = [
    "CHILDREN",
    "EngineProcess",
    "LakeLagProbe",
    "Scraper",
    "StatusWatcher",
    "Subscriber",
    "kill_children",
    "run_generator",
    "uns_command",
]

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent


#: every child process started here, so the harness can kill what is left on an error
CHILDREN: list[asyncio.subprocess.Process] = []


def kill_children() -> None:
    for proc in CHILDREN:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


def uns_command() -> list[str]:
    script = Path(PYTHON).parent / "uns"
    return [str(script)] if script.exists() else [PYTHON, "-c", "from cli import app; app()"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _json_lines(stream: asyncio.StreamReader) -> list[dict[str, Any]]:
    out = []
    while line := await stream.readline():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


# ---------------------------------------------------------------------- engine status
@dataclass
class StatusWatcher:
    """Follows ``<prefix>/_engine/<host>/status``: the newest counters and when they arrived."""

    port: int
    topic: str
    latest: dict[str, Any] = field(default_factory=dict)
    arrived: float = 0.0  # wall clock of the newest status
    history: list[tuple[float, int]] = field(default_factory=list)  # (wall, counters.metrics)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready))
        await asyncio.wait_for(ready.wait(), 10)

    async def _run(self, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"bench-status-{time.time_ns()}") as c:
            await c.subscribe(self.topic, qos=0)
            ready.set()
            async for message in c.messages:
                if not isinstance(message.payload, bytes | bytearray):
                    continue
                self.latest = json.loads(message.payload)
                self.arrived = time.time()
                self.history.append((self.arrived, self.metrics))
                self._changed.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task

    @property
    def metrics(self) -> int:
        return int(self.latest.get("counters", {}).get("metrics", 0))

    @property
    def online(self) -> bool:
        return bool(self.latest.get("online"))

    async def next(self, wait_s: float) -> bool:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), wait_s)
        except TimeoutError:
            return False
        return True

    async def wait_metrics(
        self,
        target: int,
        *,
        limit_s: float,
        quiet: float = 3.0,
        alive: Callable[[], bool] = lambda: True,
    ) -> tuple[float, int]:
        """Wait until ``counters.metrics`` >= target, or timeout, or the counter stood still
        for ``quiet`` seconds of status documents (a busy engine publishes none: keep waiting),
        or ``alive()`` says the engine is gone (a dead engine publishes none either).

        Returns (wall time the final value was first seen, value)."""
        deadline = time.monotonic() + limit_s
        value, since = self.metrics, self.arrived
        # the quiet span runs between status documents received during this wait: the one before
        # it may be seconds old (an engine that held the GIL in a commit published none meanwhile)
        unchanged_from: float | None = None
        while self.metrics < target and time.monotonic() < deadline and alive():
            if not await self.next(0.5):
                continue
            if self.metrics != value:
                value, since = self.metrics, self.arrived
                unchanged_from = since
            elif unchanged_from is None:
                unchanged_from = self.arrived
            elif self.arrived - unchanged_from > quiet:
                break
        return since, value


# ---------------------------------------------------------------------- scraper
class Scraper:
    """``GET /metrics`` on ``127.0.0.1:port`` every ``interval`` seconds, each timed."""

    def __init__(self, port: int, interval: float) -> None:
        self.port, self.interval = port, interval
        self.took_ms: list[float] = []
        self.errors = 0
        self.bytes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
                body = await asyncio.wait_for(reader.read(), 10)  # the engine closes the connection
                writer.close()
            except (OSError, TimeoutError):
                body = b""
            if body.startswith(b"HTTP/1.1 200"):
                self.bytes = len(body)
                self.took_ms.append((time.perf_counter() - started) * 1e3)
            else:
                self.errors += 1
            await asyncio.sleep(self.interval)

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        took = sorted(self.took_ms)
        return {
            "interval_s": self.interval,
            "scrapes": len(took),
            "errors": self.errors,
            "bytes": self.bytes,
            "p50_ms": round(took[len(took) // 2], 2) if took else None,
            "max_ms": round(took[-1], 2) if took else None,
        }


# ---------------------------------------------------------------------- engine
class EngineProcess:
    """``uns run`` in its own process (see module doc)."""

    def __init__(
        self,
        *,
        port: int,
        lake: Path,
        mode: str,
        host_id: str = "bench",
        prefix: str = "uns/v1",
        scrape_s: float = 0.0,
    ) -> None:
        self.port, self.lake, self.mode, self.host_id, self.prefix = port, lake, mode, host_id, prefix
        #: with scrape_s > 0 the engine serves /metrics and it is scraped that often
        self.scraper = Scraper(free_port(), scrape_s) if scrape_s > 0 else None
        self.scrapes: dict[str, Any] | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None
        self.status = StatusWatcher(port, f"{prefix}/_engine/{host_id}/status")
        self.rss_peak_window = 0  # bytes; reset by the harness per phase
        self.rss_samples: list[int] = []
        self._sampler: asyncio.Task[None] | None = None
        self.log_path = lake.parent / f"engine-{mode}.log"
        self.exit_code: int | None = None
        self.hwm_bytes = 0
        self._children_cpu: dict[int, float] = {}

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "UNS_BROKER": f"mqtt://127.0.0.1:{self.port}",
                "UNS_LAKE": str(self.lake),
                "UNS_HOST_ID": self.host_id,
                "UNS_ENGINE_PREFIX": self.prefix,
                "UNS_ENGINE_STATUS_INTERVAL": "0.25",
                "UNS_ENGINE_LOG_LEVEL": "warning",
                "UNS_REPUBLISH_ENABLED": "false" if self.mode == "lake" else "true",
                "UNS_REPUBLISH_MODE": "device" if self.mode == "device" else "metric",
            }
        )
        if self.scraper is not None:
            env["UNS_ENGINE_HTTP_LISTEN"] = f"127.0.0.1:{self.scraper.port}"
        else:
            env.pop("UNS_ENGINE_HTTP_LISTEN", None)
        env.pop("UNS_CONFIG", None)
        return env

    async def start(self) -> None:
        await self.status.start()
        log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *uns_command(), "run", env=self.env(), cwd=ROOT, stdout=log, stderr=log
        )
        log.close()
        CHILDREN.append(self.proc)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 30
        while not self.status.online:
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"engine did not come up: {self.log_path.read_text()[-2000:]}")
            await self.status.next(0.5)
        self._sampler = asyncio.create_task(self._sample())
        if self.scraper is not None:
            self.scraper.start()

    def _tree(self) -> list[psutil.Process]:
        """The engine and its child processes (the lake's commit worker)."""
        assert self.ps is not None
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.Error:
            return [self.ps]

    def rss_bytes(self) -> int:
        """RSS of the engine plus its children (their shared library pages count twice:
        the figure errs high, never low)."""
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    async def _sample(self) -> None:
        assert self.ps is not None
        with contextlib.suppress(psutil.Error):
            while True:
                rss = self.rss_bytes()
                self.rss_peak_window = max(self.rss_peak_window, rss)
                self.rss_samples.append(rss)
                self.hwm_bytes = max(self.hwm_bytes, self._hwm())
                self._child_cpu()
                await asyncio.sleep(0.25)

    def _hwm(self) -> int:
        """The kernel's peak RSS (VmHWM) of the engine plus that of each child, in bytes."""
        total = 0
        for proc in self._tree():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def _child_cpu(self) -> float:
        """CPU seconds of the engine's children, including ones that exited since
        (the last figure seen of each)."""
        for proc in self._tree()[1:]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                self._children_cpu[proc.pid] = float(t.user + t.system)
        return sum(self._children_cpu.values())

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def check_running(self) -> None:
        """Raise with the log's tail if the engine exited (a crash must not read as a slow engine)."""
        if not self.running():
            code = self.proc.returncode if self.proc is not None else None
            raise RuntimeError(f"engine exited ({code}): {self.log_path.read_text()[-2000:]}")

    def cpu_seconds(self) -> float:
        """CPU seconds of the engine and its children (the lake's commit worker)."""
        assert self.ps is not None
        try:
            t = self.ps.cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system) + self._child_cpu()

    async def stop(self, limit_s: float = 60.0) -> int:
        """SIGTERM (the engine drains and flushes its sinks), then wait."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self.scraper is not None:
            self.scrapes = await self.scraper.stop()
        assert self.proc is not None
        self.hwm_bytes = max(self.hwm_bytes, self._hwm())
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), limit_s)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.status.stop()
        self.exit_code = code = self.proc.returncode
        return -1 if code is None else code


# ---------------------------------------------------------------------- load generator
@dataclass
class GeneratorRun:
    report: dict[str, Any]
    born_at: float  # wall clock: births out
    births_started: float


async def run_generator(
    *,
    port: int,
    group: str,
    nodes: int,
    devices: int,
    metrics: int,
    rate: float,
    duration: float,
    node_offset: int = 0,
    start_delay: float = 0.6,
    on_born: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> GeneratorRun:
    """Run one load generator to the end; ``on_born`` is set once its births are out,
    setting ``stop`` ends it early (SIGTERM: it reports what it sent)."""
    args = [
        "--port", str(port), "--group", group, "--nodes", str(nodes), "--devices", str(devices),
        "--metrics", str(metrics), "--rate", str(rate), "--duration", str(duration),
        "--node-offset", str(node_offset), "--start-at", str(time.time() + start_delay),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "benchmarks.loadgen", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    CHILDREN.append(proc)
    born_at = births_started = 0.0
    report: dict[str, Any] = {}

    async def stopper() -> None:
        if stop is not None:
            await stop.wait()
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    watcher = asyncio.create_task(stopper())
    try:
        while line := await proc.stdout.readline():
            with contextlib.suppress(ValueError):
                body = json.loads(line)
                if "born" in body:
                    born_at, births_started = body["born"], body["births_started"]
                    if on_born is not None:
                        on_born.set()
                if "report" in body:
                    report = body["report"]
        await proc.wait()
    finally:
        watcher.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # a SIGTERM that lands while the generator exits after its report is not a failure
    if not report or proc.returncode not in (0, -signal.SIGTERM):
        raise RuntimeError(f"load generator for {group} failed (exit {proc.returncode})")
    return GeneratorRun(report, born_at, births_started)


# ---------------------------------------------------------------------- subscribers
class Subscriber:
    """A :mod:`benchmarks.subscribers` process: ``ceiling`` or ``events``."""

    def __init__(self, mode: str, *, port: int, topic: str, idle: float) -> None:
        self.args = [mode, "--port", str(port), "--topic", topic, "--idle", str(idle)]
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "benchmarks.subscribers", *self.args, cwd=ROOT, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        CHILDREN.append(self.proc)
        self.ps = psutil.Process(self.proc.pid)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        if b"ready" not in line:
            raise RuntimeError("subscriber did not start")

    async def result(self, *, stop: bool = True, limit_s: float = 120.0) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        if stop and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        lines = await asyncio.wait_for(_json_lines(self.proc.stdout), limit_s)
        await self.proc.wait()
        for body in lines:
            if "report" in body:
                return dict(body["report"])
        raise RuntimeError("subscriber gave no report")


# ---------------------------------------------------------------------- lake lag
class LakeLagProbe(threading.Thread):
    """Polls ``<lake>/measurements`` for new Delta versions (see module doc).

    Reads each new commit of the Delta log and keeps (received_at, lag_ms) of every
    ``keep_every``-th row of the files it added; the lag is "first seen committed"
    minus ``received_at``, so it includes up to one poll interval of probe delay.
    Compactions (OPTIMIZE commits) add files of old rows and are skipped."""

    def __init__(self, lake: Path, *, interval: float = 0.25, keep_every: int = 7) -> None:
        super().__init__(name="bench-lake-lag", daemon=True)
        self.table = lake / "measurements"
        self.interval = interval
        self.keep_every = keep_every
        self.samples: list[tuple[int, int]] = []
        self.versions = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.parquet as pq  # noqa: PLC0415

        log_dir = self.table / "_delta_log"
        version = -1  # the newest version looked at
        while not self._stop_event.wait(self.interval):
            try:
                seen_at = now_ms()
                while (commit := log_dir / f"{version + 1:020d}.json").is_file():
                    found: list[tuple[int, int]] = []  # kept only once the whole commit was read
                    for uri in self._new_data_files(commit):
                        received = pq.read_table(uri, columns=["received_at"]).column(0)
                        # Delta keeps microseconds; back to ms since the epoch
                        values = received.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()
                        values = values[:: self.keep_every]
                        found.extend((r, seen_at - r) for r in values if r is not None)
                    self.samples.extend(found)
                    self.versions += 1
                    version += 1
            except Exception:  # a commit file being written: read it again at the next poll
                continue

    def _new_data_files(self, commit: Path) -> list[str]:
        """The files a Delta commit added with new rows: an OPTIMIZE (the writer's
        compaction) adds files too, but of rows committed long before."""
        actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
        operation = next((a["commitInfo"].get("operation", "") for a in actions if "commitInfo" in a), "")
        if operation == "OPTIMIZE":
            return []
        return [str(self.table / unquote(a["add"]["path"])) for a in actions if "add" in a]

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def lags_between(self, start_ms: int, end_ms: int) -> list[int]:
        return [lag for received, lag in list(self.samples) if start_ms <= received <= end_ms]
