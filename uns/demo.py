"""`uns demo`: a broker + the simulated pilot plant + the engine + a lake on this machine.

The broker is mosquitto on a free loopback port when the Debian package
``mosquitto`` is installed (``bash scripts/demo`` installs it when run as
root), otherwise the in-process :class:`uns.mqtt.minibroker.MiniBroker`.  The plant
and the engine run for ``duration`` seconds with a progress line, then stop
cleanly (the engine flushes the lake); a summary and example queries follow, and
the HTML batch report of the second bioreactor's first batch (:data:`DEMO_BATCH`,
with a temperature excursion injected and an operator comment, beside the equipment
status, material lot and quality result every simulated batch carries), whose path and
verdict end the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uns import lake
from uns.batch.api import load_spec
from uns.batch.report import ReportRequest, generate_report
from uns.config import load_config
from uns.engine.daemon import build_engine
from uns.engine.host import Engine
from uns.engine.plant import load_model
from uns.errors import EngineError
from uns.mqtt.minibroker import MiniBroker
from uns.mqtt.mosquitto import find_mosquitto, running_mosquitto
from uns.mqtt.settings import parse_broker_url
from uns.output import render_rows
from uns.sim import SimConfig, SimReport, run_sim
from uns.sim.inject import BatchFault

__all__ = [
    "DEMO_BATCH",
    "DEMO_QUERIES",
    "examples_dir",
    "report_command",
    "run_demo",
    "run_plant",
    "summary_lines",
]

#: the batch the demo reports on, and what it spoils in it (docs/batches.md §5)
DEMO_BATCH = "B2026-0002"
DEMO_FAULTS = (
    BatchFault("excursion", DEMO_BATCH, metric="Temperature", value=38.2),
    BatchFault("comment", DEMO_BATCH),  # an operator comment beside its material and result records
)

Echo = Callable[[str], Any]

#: (title, SQL) shown after the run
DEMO_QUERIES: list[tuple[str, str]] = [
    (
        "Mean bioreactor temperature per batch and phase (context as of each sample's time)",
        """SELECT path, batch_id, phase, count(*) AS samples,
                  round(avg(value_double), 3) AS mean_degC, round(min(value_double), 3) AS min_degC,
                  round(max(value_double), 3) AS max_degC
           FROM measurements_asof
           WHERE metric = 'Temperature' AND path LIKE 'acme/basel/pilot/usp/%' AND batch_id IS NOT NULL
           GROUP BY ALL ORDER BY path, min(ts)""",
    ),
    (
        "Tablets pressed per batch (TabletCount counter, TP-301)",
        """SELECT batch_id, max(value_double) - min(value_double) AS tablets, count(*) AS samples
           FROM measurements_asof
           WHERE metric = 'TabletCount' AND batch_id IS NOT NULL
           GROUP BY batch_id ORDER BY batch_id""",
    ),
    (
        "Session events (births, deaths, gaps, rebirths) per edge node",
        """SELECT group_id, edge_node_id, event, count(*) AS events
           FROM sessions GROUP BY ALL ORDER BY edge_node_id, event""",
    ),
]


def examples_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "examples"
    if not (here / "pilot-plant.toml").is_file():
        raise EngineError(f"the example plant model is missing: {here / 'pilot-plant.toml'}")
    return here


def _progress(echo: Echo, t0: float, sim: SimReport | None, engine: Engine) -> None:
    sent = sim.messages if sim else 0
    stats = engine.sinks[0].stats() if engine.sinks else {}
    echo(
        f"  {time.monotonic() - t0:5.1f}s  plant sent {sent:>7,} msgs | engine got "
        f"{engine.counters.messages:>7,} msgs, {engine.counters.metrics:>8,} metrics | "
        f"lake rows committed {stats.get('rows_committed', 0):>8,}"
    )


async def run_plant(
    duration: float,
    lake_dir: Path,
    broker_url: str,
    echo: Echo,
    *,
    faults: tuple[BatchFault, ...] = DEMO_FAULTS,
    phase_seconds: float | None = None,
) -> tuple[Engine, SimReport]:
    """The engine (pilot plant model, lake in ``lake_dir``) and the simulated pilot plant for
    ``duration`` seconds (batch phases of ``phase_seconds``, default a tenth of it, at least
    1 s), then the engine stopped once its intake is quiet."""
    config = load_config(
        env={},
        overrides={
            "broker.url": broker_url,
            "lake.path": str(lake_dir),
            "engine.model": str(examples_dir() / "pilot-plant.toml"),
            "engine.host_id": "uns-demo",
            "engine.primary": True,
            "lake.commit_interval": 2.0,
            "engine.status_interval": 2.0,
        },
    )
    engine = build_engine(config)
    stop_engine = asyncio.Event()
    engine_task = asyncio.create_task(engine.run(stop_engine), name="demo-engine")
    await asyncio.wait_for(engine.connected.wait(), 15)
    sim_config = SimConfig(
        broker=parse_broker_url(broker_url),
        plant="pilot",
        rate=40.0,
        duration=duration,
        seed=2026,
        context_interval=phase_seconds or max(1.0, duration / 10),
        primary_host_id="uns-demo",
        context_delay=0.0,
        faults=faults,
    )
    t0 = time.monotonic()
    last: list[SimReport] = []

    def on_progress(r: SimReport) -> None:
        last[:] = [r]
        if int(r.elapsed) % 2 == 0:
            _progress(echo, t0, r, engine)

    report = await run_sim(sim_config, on_progress=on_progress)
    # let the engine take in what is still on its way, then stop it (it flushes the lake)
    settle = time.monotonic() + 5
    previous = -1
    while time.monotonic() < settle and engine.counters.messages != previous:
        previous = engine.counters.messages
        await asyncio.sleep(0.5)
    stop_engine.set()
    await asyncio.wait_for(engine_task, 60)
    _progress(echo, t0, report, engine)
    return engine, report


def run_demo(*, duration: float = 20.0, lake: str | None = None, echo: Echo = print) -> None:
    """Run the whole demo; see the module docstring."""
    if duration <= 0:
        raise EngineError("--duration must be positive")
    with contextlib.ExitStack() as stack:
        lake_dir = (
            Path(lake) if lake else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uns-demo-")))
        )
        if lake is None:
            lake_dir = lake_dir / "lake"
        engine, sim = asyncio.run(_with_broker(duration, lake_dir, echo))
        _summary(engine, sim, lake_dir, echo)
        if lake is None:
            echo("(the lake was temporary; pass --lake DIR to keep it and query it with `uns lake sql`)")
        _report(
            lake_dir,
            Path(tempfile.gettempdir()) if lake is None else lake_dir.parent,
            echo,
            kept=lake is not None,
        )


def report_command(lake_dir: Path | str) -> str:
    """The ``uns batch report`` command that makes the demo batch's report again, runnable
    from the current directory (the paths relative to it when they are below it)."""
    spec = _from_here(examples_dir() / "pilot-spec.toml")
    where = shlex.quote(_from_here(Path(lake_dir)))
    return f"uns batch report {DEMO_BATCH} --lake {where} --spec {shlex.quote(spec)}"


def _from_here(path: Path) -> str:
    here = Path.cwd()
    full = path if path.is_absolute() else here / path
    try:
        return f"./{full.resolve().relative_to(here.resolve())}"
    except ValueError:
        return str(full.resolve())


def _report(lake_dir: Path, where: Path, echo: Echo, *, kept: bool) -> None:
    """Write the demo batch's HTML report; echo its path and verdict."""
    examples = examples_dir()
    request = ReportRequest(
        DEMO_BATCH,
        spec=load_spec(str(examples / "pilot-spec.toml")),
        model=load_model(examples / "pilot-plant.toml"),
    )
    data, verdict = generate_report(lake_dir, request, "html")
    target = where / f"uns-demo-{DEMO_BATCH}.html"
    target.write_bytes(data)
    echo("")
    again = f" (again: {report_command(lake_dir)})" if kept else ""
    echo(f"Batch report of {DEMO_BATCH}{again}:")
    echo(f"  {target}: {verdict}")


async def _with_broker(duration: float, lake_dir: Path, echo: Echo) -> tuple[Engine, SimReport]:
    """mosquitto on a free port when installed, else the in-process MiniBroker."""
    if find_mosquitto() is not None:
        with running_mosquitto() as broker:
            echo(f"uns demo: mosquitto on {broker.url}, lake in {lake_dir}, pilot plant for {duration:g} s")
            return await run_plant(duration, lake_dir, broker.url, echo)
    async with MiniBroker() as mini:
        echo(
            f"uns demo: mosquitto is not installed, using the in-process MiniBroker on {mini.url} "
            f"(fine for a demo, not for production); lake in {lake_dir}, pilot plant for {duration:g} s"
        )
        return await run_plant(duration, lake_dir, mini.url, echo)


def _summary(engine: Engine, sim: SimReport, lake_dir: Path, echo: Echo) -> None:
    con = lake.connect(lake_dir)
    try:
        for line in summary_lines(engine, sim, con):
            echo(line)
        for title, sql in DEMO_QUERIES:
            cur = con.execute(sql)
            columns = [d[0] for d in cur.description or []]
            echo("")
            echo(title)
            echo(render_rows(columns, cur.fetchall(), "table"))
    finally:
        con.close()


def summary_lines(engine: Engine, sim: SimReport, con: Any) -> list[str]:
    """What the plant sent, what the engine took and what the lake holds, each number saying
    what it counts, so that the lines compare: a Sparkplug message with the same on both
    sides, a context event with a context event, and the context changes split by origin
    (one change per key an event sets or clears, plus the controllers' own context metrics)."""
    c = engine.counters
    (rows,) = _one(con, "SELECT count(*) FROM measurements")
    (batches,) = _one(
        con, "SELECT count(DISTINCT batch_id) FROM measurements_asof WHERE batch_id IS NOT NULL"
    )
    (rejected,) = _one(con, "SELECT count(*) FROM rejected")
    plc = "source LIKE 'sparkplug:%'"
    by_events, events, keys, by_plc, plc_keys = _one(
        con,
        f"""SELECT count(*) FILTER (WHERE NOT {plc}), count(DISTINCT event_id) FILTER (WHERE NOT {plc}),
                  string_agg(DISTINCT key, ', ' ORDER BY key) FILTER (WHERE NOT {plc}),
                  count(*) FILTER (WHERE {plc}),
                  string_agg(DISTINCT key, ', ' ORDER BY key) FILTER (WHERE {plc})
           FROM context""",  # noqa: S608 - a constant
    )
    state = c.messages_by_type.get("STATE", 0)
    lines = [
        "",
        "Summary",
        f"  plant published   {sim.messages:,} Sparkplug messages (births, data, deaths) with "
        f"{sim.metrics:,} metric values, and {sim.context_events} context events (the MES)",
        f"  engine received   {c.sparkplug_messages:,} Sparkplug messages with {c.metrics:,} metric "
        f"values, {c.context_events} context events and {state} STATE message{'s' if state != 1 else ''} "
        f"(primary host); it asked for {c.rebirths_requested} rebirths",
    ]
    missing = sim.messages - c.sparkplug_messages
    if missing > 0:
        lines.append(
            f"                    ({missing:,} Sparkplug messages published at QoS 0 did not arrive)"
        )
    elif missing < 0:
        lines.append(
            f"                    ({-missing:,} more: deaths the broker published for nodes that went away)"
        )
    lines += [
        f"  context changes   {c.context_changes:,}, one per key set or cleared: {by_events:,} from the "
        f"{events} context events (each sets several keys: {keys or '-'})"
        + (f", {by_plc:,} from the controllers' context metrics ({plc_keys})" if by_plc else ""),
        f"  lake              {rows:,} measurements, {batches} batches, {rejected} rejected messages",
    ]
    return lines


def _one(con: Any, sql: str) -> tuple[Any, ...]:
    row = con.execute(sql).fetchone()
    assert row is not None  # an aggregate always has a row
    return tuple(row)
