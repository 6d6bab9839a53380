"""`uns run`: build the engine and its sinks from a Config and run until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from uns.clock import now_ms
from uns.config import Config
from uns.core.events import ContextChange, Sink
from uns.core.model import PlantModel
from uns.engine.host import Engine
from uns.engine.plant import load_model
from uns.engine.readiness import Readiness
from uns.engine.sdnotify import systemd_notifications
from uns.engine.stopping import Watchdog, unpersisted_line
from uns.errors import EngineError, LakeError
from uns.lake import LakeSink
from uns.lake.anchors import AnchorSettings
from uns.lake.audit_entries import engine_event, named_files, software_version
from uns.lake.storage import OPTIONS_ENV, LakeStore, as_store
from uns.lake.timesync import time_sync_state
from uns.sinks.encoders import EventEncoder
from uns.sinks.republish import RepublishSink

__all__ = [
    "build_engine",
    "check_lake_path",
    "load_applied_context_ids",
    "load_applied_ids",
    "load_engine_start",
    "load_start_context",
    "run_daemon",
    "startup_line",
]

log = logging.getLogger("uns.daemon")


def _config_json(config: Config) -> str:
    """The effective configuration, secrets masked, as canonical JSON (what the audit
    trail's ``engine_start`` entry records)."""
    return json.dumps(config.to_dict(masked=True), sort_keys=True, separators=(",", ":"), default=str)


def startup_line(config: Config) -> str:
    """The start-up log line: who and where, and the SHA-256 of the effective configuration
    (secrets masked), which tells two starts' configurations apart; the whole configuration
    is logged at debug level and recorded in the audit trail."""
    e = config.engine
    digest = hashlib.sha256(_config_json(config).encode()).hexdigest()
    return (
        f"uns {software_version()} starting: host {e.host_id}{' (primary)' if e.primary else ''}, "
        f"broker {config.broker.settings().masked_url()}, lake {config.lake.path or '(none)'}, "
        f"groups {e.groups or 'all'}, config sha256 {digest}"
    )


def check_lake_path(path: str) -> Path:
    """Create the lake directory if needed; fail clearly when it is not writable."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".uns-write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise EngineError(f"lake path {p} is not writable: {exc.strerror or exc}") from exc
    if not os.access(p, os.W_OK):
        raise EngineError(f"lake path {p} is not writable")
    return p


def audited(sink: LakeSink, config: Config, reason: str = "") -> LakeSink:
    """The sink, recording the engine's start now and its stop at the end (the audit trail):
    the version, the effective configuration with secrets masked, and the files it names;
    ``reason`` (``uns run --reason``) is the start's reason, and that of the configuration
    change it records when the configuration differs from the previous start's."""
    effective = config.to_dict(masked=True)
    started = engine_event(
        "engine_start",
        config=effective,
        files=named_files(effective),
        reason=reason,
        time_sync=time_sync_state(),
    )
    sink.record_audit(started)
    sink.on_stop = lambda: engine_event("engine_stop")
    return sink


def build_engine(config: Config, *, model: PlantModel | None = None, reason: str = "") -> Engine:
    """The engine with the sinks the config asks for (lake first, then republish)."""
    if model is None:
        model = load_model(config.engine.model) if config.engine.model else PlantModel.empty()
    sinks: list[Sink] = []
    applied: dict[str, str | None] = {}
    seed: list[ContextChange] = []
    records: dict[str, str] = {}
    if config.lake.path:
        store = LakeStore(config.lake.path, config.lake.storage)  # a directory or an object store
        if not store.remote:
            check_lake_path(config.lake.path)
        sink = LakeSink(store, config.lake, anchor=AnchorSettings.of(config.audit))
        sinks.append(audited(sink, config, reason))
        wal_dir = Path(config.lake.wal_dir) if config.lake.wal_dir else None
        since = now_ms() - int(config.context.window_hours * 3_600_000)
        applied, seed, records = load_engine_start(store, wal_dir, since_ms=since)
    engine = Engine(config, sinks=sinks, model=model)
    engine.dispatch.remember_applied(applied)
    engine.dispatch.remember_records(records)
    for change in seed:  # the context in effect before this start (docs/model.md section 4)
        engine.context.apply(change)
    rp = config.republish
    if rp.enabled:
        engine.sinks.append(
            RepublishSink(
                engine.publish,
                EventEncoder(engine.prefix),
                rp,
                publish_nowait=engine.publish_nowait,
            )
        )
    return engine


#: reads the ids and the context seed in a child process (see load_start_context); prints
#: {"ids": {id: fingerprint}, "seed": [[ts, received_at, path, key, value, source, user,
#: reason, event_id], ...], "records": {record id: content sha256}} as JSON
_READ_IDS = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from uns.lake.query import applied_context_fingerprints, applied_records, context_seed\n"
    "from uns.lake.storage import store_from_env\n"
    "from uns.errors import LakeError\n"
    "try:\n"
    "    wal = Path(sys.argv[2]) if sys.argv[2] else None\n"
    "    ids = applied_context_fingerprints(store_from_env(sys.argv[1]), wal)\n"
    "    seed = context_seed(store_from_env(sys.argv[1]), wal, since_ms=int(sys.argv[3]))\n"
    "    records = applied_records(store_from_env(sys.argv[1]), wal)\n"
    "except LakeError as exc:\n"
    "    sys.exit(str(exc))\n"
    "json.dump({'ids': ids, 'seed': seed, 'records': records}, sys.stdout, sort_keys=True)\n"
)


def load_start_context(
    lake_dir: Path | LakeStore, wal_dir: Path | None = None, *, since_ms: int = 0
) -> tuple[dict[str, str | None], list[ContextChange]]:
    """The context part of :func:`load_engine_start`."""
    ids, seed, _records = load_engine_start(lake_dir, wal_dir, since_ms=since_ms)
    return ids, seed


def load_applied_ids(
    lake_dir: Path | LakeStore, wal_dir: Path | None = None
) -> tuple[dict[str, str | None], dict[str, str]]:
    """The context event ids (with their fingerprints) and the batch records the lake holds."""
    ids, _seed, records = load_engine_start(lake_dir, wal_dir, since_ms=2**62)
    return ids, records


def load_engine_start(
    lake_dir: Path | LakeStore, wal_dir: Path | None = None, *, since_ms: int = 0
) -> tuple[dict[str, str | None], list[ContextChange], dict[str, str]]:
    """What an engine starting on the lake needs of its context and records tables:

    - the context event ids the lake already holds, each with the fingerprint of its
      content: the engine applies none of them again, and rejects one reused with other
      content as a conflict (docs/model.md section 4);
    - the changes that rebuild its in-memory context store (every change since
      ``since_ms``, the newest before it per path and key), so that live enrichment after
      a restart is right before any new context arrives;
    - the batch records the lake holds, ``{record id: content SHA-256}`` (docs/batches.md
      section 8): none is applied again, one reused with other content is a conflict.

    Read once at start, so an engine sees what engines that wrote the lake before it
    wrote; two engines applying the same new id at the same moment are not coordinated.

    The read runs in a child process: DuckDB, deltalake and pyarrow stay out of the
    engine's own process (they live in the lake's commit worker), as lake/__init__.py
    promises, and so does the memory they would keep (about 80 MB)."""
    store = as_store(lake_dir)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _READ_IDS, store.url, str(wal_dir or ""), str(since_ms)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, OPTIONS_ENV: store.options_json()},  # not argv: ps shows it
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"cannot read the context of the lake at {lake_dir}: {exc}") from exc
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise EngineError(f"cannot read the context of the lake at {lake_dir}: {why}")
    found = json.loads(done.stdout)
    ids: dict[str, str | None] = found["ids"]
    seed = [
        ContextChange(int(ts), int(received or 0), path, key, value, source or "", user, reason, event_id)
        for ts, received, path, key, value, source, user, reason, event_id in found["seed"]
    ]
    records: dict[str, str] = found["records"]
    log.info(
        "lake %s holds %d context event ids and %d batch records (not applied again); "
        "%d context changes restored",
        lake_dir, len(ids), len(records), len(seed),
    )  # fmt: skip
    return ids, seed, records


def load_applied_context_ids(
    lake_dir: Path | LakeStore, wal_dir: Path | None = None
) -> dict[str, str | None]:
    """The context event ids the lake already holds (see :func:`load_start_context`)."""
    return load_start_context(lake_dir, wal_dir, since_ms=2**62)[0]


#: seconds between the daemon's full garbage collections (see run_daemon)
GC_FULL_INTERVAL_S = 60.0


async def _collect_garbage(interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        started = time.perf_counter()
        found = gc.collect()
        took_ms = (time.perf_counter() - started) * 1e3
        log.debug("full garbage collection: %d objects in %.1f ms", found, took_ms)


async def _serve_operations(stack: contextlib.AsyncExitStack, engine: Engine, stop: asyncio.Event) -> None:
    """The HTTP endpoint (``engine.http_listen``) and systemd's notifications, for as long
    as ``stack`` is open (README "Monitoring")."""
    listen = engine.config.engine.http_listen
    readiness = Readiness(engine)
    if listen:
        # prometheus-client only when asked: importing it takes ~0.15 s of every start
        from uns.engine.http import HttpEndpoint  # noqa: PLC0415
        from uns.engine.metrics import EngineMetrics  # noqa: PLC0415

        metrics = EngineMetrics(engine, readiness)
        await stack.enter_async_context(HttpEndpoint(listen, metrics))
    await stack.enter_async_context(systemd_notifications(engine, readiness, stop))


async def run_daemon(config: Config, *, stop: asyncio.Event | None = None, reason: str = "") -> Engine:
    """Run the engine until ``stop`` is set or SIGINT/SIGTERM arrives; return it (for its counters).

    A signal also arms the stop watchdog (``engine.stop_timeout_s``, uns.engine.stopping).
    EngineError with one line when received messages could not be persisted (the lake
    stayed unwritable)."""
    engine = build_engine(config, reason=reason)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(
        max(0.5, config.engine.stop_timeout_s - 0.5),
        lambda: unpersisted_line(engine.lost_messages(), _lake_fault(engine)),
    )

    def on_signal() -> None:
        watchdog.arm()
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    # Threads that share the GIL with the receive loop (WAL fsyncs; the lake's commit
    # thread with lake.commit_worker = "thread"): a 1 ms switch interval (Python's
    # default is 5 ms) gives the GIL back to the receive loop sooner.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, 0.001))
    # Every sample is an object that lives until the lake's WAL write at the end of its
    # loop iteration.  With the default gen-0 threshold (700) most are still alive at a
    # collection and get promoted, and the older generations (which hold every born metric:
    # 200,000 in the tag-scale benchmark) are then traversed again and again.  Collecting
    # less often lets them die young; handling 200,000 born metrics took 2.7 s of CPU with
    # the defaults and 1.3-1.5 s with these (1.6 s with no collection at all).
    # With these thresholds a full collection almost never runs on its own: a full
    # collection once a minute frees what cycles there are (50-70 ms measured, at 50k-260k
    # objects; with the thread committer, deltalake leaves cycles behind on every write).
    gc_thresholds = gc.get_threshold()
    gc.set_threshold(20_000, 50, 100)
    collector = asyncio.create_task(_collect_garbage(GC_FULL_INTERVAL_S), name="uns-gc")
    failure: LakeError | None = None
    try:
        log.info("%s", startup_line(config))
        log.debug("effective configuration: %s", _config_json(config))
        async with contextlib.AsyncExitStack() as operations:
            await _serve_operations(operations, engine, stop)
            await engine.run(stop)
    except LakeError as exc:  # the lake's final flush failed: said below, in one line
        failure = exc
    finally:
        # the watchdog stays armed: the interpreter's own exit (joining threads) counts too
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        sys.setswitchinterval(switch_interval)
        gc.set_threshold(*gc_thresholds)
        for sig in installed:
            loop.remove_signal_handler(sig)
    lost = engine.lost_messages()
    if failure is not None or lost:
        raise EngineError(unpersisted_line(lost, _lake_fault(engine) or str(failure or "")))
    return engine


def _lake_fault(engine: Engine) -> str:
    """Why a sink is degraded (its ``degraded_reason``), or ""."""
    for sink in engine.sinks:
        reason = sink.stats().get("degraded_reason")
        if reason:
            return str(reason)
    return ""
