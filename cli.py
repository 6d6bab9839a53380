"""The ``uns`` command line: a thin typer shell over the ``uns`` and ``lake`` packages.

Every command turns a :class:`uns.errors.UnsError` into one clear line on
stderr and exit code 1; nothing else is printed for a domain error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from uns.errors import UnsError
from uns_cli.batch_cli import batch_app

T = TypeVar("T")

app = typer.Typer(
    name="uns",
    help="Unified Namespace context engine: Sparkplug B host, batch context, Delta lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lake_app = typer.Typer(
    help="Query and maintain the lake (Delta tables read with DuckDB).", no_args_is_help=True
)
context_app = typer.Typer(help="Read and publish batch/equipment context.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")
app.add_typer(context_app, name="context")
app.add_typer(batch_app, name="batch")  # its commands: uns_cli/batch_cli.py (cli.py is at its size limit)

BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", "-b", help="mqtt://[user[:pass]@]host[:port] or mqtts://... (env UNS_BROKER)"),
]
LakeOpt = Annotated[str | None, typer.Option("--lake", help="lake directory (env UNS_LAKE; default ./lake)")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, csv or json")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"uns: error: {message}", err=True)
    return typer.Exit(1)


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; a UnsError becomes one line on stderr and exit 1."""
    try:
        return fn()
    except UnsError as exc:
        raise _fail(str(exc)) from None


def _setup_logging(level: str, log_format: str = "text") -> None:
    from uns.logs import setup_logging  # noqa: PLC0415

    setup_logging(level, log_format)


def _broker_settings(broker: str | None) -> Any:
    """Broker settings for the short commands (watch, topics, sim, context set)."""
    from uns.config import load_config  # noqa: PLC0415 - keep `uns --help` fast

    return load_config(overrides={"broker.url": broker}).broker.settings()


def _lake_path(lake: str | None) -> str:
    from uns.config import load_config  # noqa: PLC0415

    path = load_config(overrides={"lake.path": lake}).lake.path
    if not path:
        raise UnsError("no lake configured: pass --lake DIR or set UNS_LAKE")
    return path


@app.command()
def run(
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="TOML config file (env UNS_CONFIG)")
    ] = None,
    broker: BrokerOpt = None,
    lake: LakeOpt = None,
    model: Annotated[str | None, typer.Option("--model", help="plant model TOML (env UNS_MODEL)")] = None,
    host_id: Annotated[
        str | None, typer.Option("--host-id", help="Sparkplug host id (env UNS_HOST_ID)")
    ] = None,
    primary: Annotated[
        bool | None, typer.Option("--primary/--no-primary", help="act as the Sparkplug primary host (STATE)")
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", help="debug, info, warning, error")] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="text, or json: one JSON object per line")
    ] = None,
    http: Annotated[
        str | None,
        typer.Option("--http", metavar="ADDR", help="serve /metrics, /healthz, /readyz on host:port"),
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="show the effective config and exit")
    ] = False,
) -> None:
    """Run the engine until SIGINT/SIGTERM, then flush everything and exit 0 (within
    engine.stop_timeout_s; exit 1 with one line counting the received messages that could
    not be persisted when the lake stays unwritable).

    A lost or unreachable broker is retried; one that refuses the credentials,
    the authorization or the TLS certificate stops it with one line and exit 1.

    Example: uns run --broker mqtt://127.0.0.1:1883 --lake /var/lib/uns/lake --model plant.toml --primary

    Monitoring: --http 127.0.0.1:9464 serves /metrics, /healthz and /readyz; --log-format json.
    """
    from uns.config import load_config  # noqa: PLC0415

    overrides = {
        "broker.url": broker,
        "lake.path": lake,
        "engine.model": model,
        "engine.host_id": host_id,
        "engine.primary": primary,
        "engine.log_level": log_level,
        "engine.log_format": log_format,
        "engine.http_listen": http,
    }
    cfg = _guard(lambda: load_config(config, overrides=overrides))
    if print_config:
        for section, values in cfg.to_dict(masked=True).items():
            typer.echo(f"[{section}]")
            for key, value in values.items():
                typer.echo(f"{key} = {json.dumps(value)}")
            typer.echo("")
        return
    _setup_logging(cfg.engine.log_level, cfg.engine.log_format)
    from uns.engine.daemon import run_daemon  # noqa: PLC0415

    _guard(lambda: asyncio.run(run_daemon(cfg)))


@app.command()
def sim(
    broker: BrokerOpt = None,
    nodes: Annotated[int, typer.Option(help="edge nodes (0 = the pilot plant)")] = 0,
    devices: Annotated[int, typer.Option(help="devices per node (generic load plant)")] = 2,
    metrics: Annotated[int, typer.Option(help="metrics per device (generic load plant)")] = 10,
    rate: Annotated[float, typer.Option(help="DATA messages per second, all nodes together")] = 10.0,
    duration: Annotated[float, typer.Option(help="seconds to run (0 = until Ctrl-C)")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed for deterministic values")] = 1,
    group: Annotated[str | None, typer.Option(help="Sparkplug group id")] = None,
    prefix: Annotated[str, typer.Option(help="UNS prefix for context events")] = "uns/v1",
    excursion: Annotated[
        list[str] | None, typer.Option(help="BATCH:METRIC=VALUE[:PHASE] (docs/batches.md)")
    ] = None,
    death: Annotated[list[str] | None, typer.Option(help="BATCH: its edge node dies mid-batch")] = None,
    gap: Annotated[list[str] | None, typer.Option(help="BATCH[:SECONDS]: its unit sends nothing")] = None,
    correct_context: Annotated[list[str] | None, typer.Option(help="BATCH: a late recipe correction")] = None,
) -> None:
    """Simulate a pharma plant as Sparkplug B edge nodes, with batch context events.

    Example: uns sim --broker mqtt://127.0.0.1:1883 --rate 20 --duration 60 --excursion B2026-0005:pH=7.6
    """
    from uns_cli.sim import run_sim_cli  # noqa: PLC0415

    settings = _guard(lambda: _broker_settings(broker))
    _guard(
        lambda: run_sim_cli(
            settings,
            nodes=nodes,
            devices=devices,
            metrics=metrics,
            rate=rate,
            duration=duration,
            seed=seed,
            group=group,
            prefix=prefix,
            faults={"excursion": excursion, "death": death, "gap": gap, "correct_context": correct_context},
        )
    )


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="seconds the plant runs")] = 20.0,
    lake: Annotated[
        str | None, typer.Option("--lake", help="lake directory (default: a new temporary one)")
    ] = None,
) -> None:
    """Broker + simulated pilot plant + engine on this machine, then a summary and example queries.

    Example: uns demo --duration 30 --lake ./demo-lake
    """
    from uns_cli.demo import run_demo  # noqa: PLC0415

    _guard(lambda: run_demo(duration=duration, lake=lake, echo=typer.echo))


@app.command()
def topics(
    broker: BrokerOpt = None,
    filter_: Annotated[str, typer.Option("--filter", help="MQTT topic filter")] = "#",
    duration: Annotated[float, typer.Option(help="seconds to listen before printing the tree")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the tree as JSON")] = False,
    rebirth: Annotated[
        bool, typer.Option("--rebirth", help="ask nodes whose birth was not seen for one")
    ] = False,
) -> None:
    """Listen for a while and show the topic tree with decoded last values.

    Example: uns topics --broker mqtt://127.0.0.1:1883 --filter 'spBv1.0/#' --duration 10
    """
    from uns_cli.inspect import listen  # noqa: PLC0415

    settings = _guard(lambda: _broker_settings(broker))

    tree = _guard(
        lambda: asyncio.run(
            listen(
                settings, [filter_], on_message=lambda _v: None, duration=duration, request_rebirth=rebirth
            )
        )
    )
    typer.echo(json.dumps(tree.as_json(), indent=2) if as_json else tree.render())


@app.command()
def watch(
    filter_: Annotated[str, typer.Argument(metavar="FILTER", help="MQTT topic filter, e.g. 'spBv1.0/#'")],
    broker: BrokerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    count: Annotated[int | None, typer.Option(help="stop after this many messages")] = None,
    rebirth: Annotated[
        bool, typer.Option("--rebirth", help="ask nodes whose birth was not seen for one")
    ] = False,
) -> None:
    """Print a live decoded stream, one line per message (Sparkplug decoded, JSON pretty-printed).

    Example: uns watch 'spBv1.0/PilotPlant/#' --broker mqtt://127.0.0.1:1883
    """
    from uns_cli.inspect import MessageView, listen  # noqa: PLC0415

    settings = _guard(lambda: _broker_settings(broker))

    def show(view: MessageView) -> None:
        text = json.dumps(view.as_json(), ensure_ascii=False) if as_json else view.as_line()
        typer.echo(text)

    with contextlib.suppress(KeyboardInterrupt):
        _guard(
            lambda: asyncio.run(
                listen(
                    settings,
                    [filter_],
                    on_message=show,
                    duration=duration,
                    count=count,
                    request_rebirth=rebirth,
                )
            )
        )


@lake_app.command("sql")
def lake_sql(
    query: Annotated[str, typer.Argument(help="SQL over the views measurements, context, sessions, ...")],
    lake: LakeOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Run a DuckDB query against the lake's views.

    Example: uns lake sql "SELECT batch_id, count(*) FROM measurements GROUP BY 1" --lake ./lake
    """
    import duckdb  # noqa: PLC0415

    import lake as lake_pkg  # noqa: PLC0415
    from uns_cli.output import FORMATS, render_rows  # noqa: PLC0415

    if fmt not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}")
    path = _guard(lambda: _lake_path(lake))
    con = _guard(lambda: lake_pkg.connect(path))
    try:
        cur = con.execute(query)
        columns = [d[0] for d in cur.description or []]
        rows = cur.fetchall()
    except duckdb.Error as exc:
        raise _fail(str(exc)) from None
    finally:
        con.close()
    typer.echo(render_rows(columns, rows, fmt))


@lake_app.command("info")
def lake_info(lake: LakeOpt = None, fmt: FormatOpt = "table") -> None:
    """Tables, rows, files, size, time range and last commit of the lake.

    Example: uns lake info --lake ./lake
    """
    import lake as lake_pkg  # noqa: PLC0415
    from uns_cli.output import render_rows  # noqa: PLC0415

    path = _guard(lambda: _lake_path(lake))
    info = _guard(lambda: lake_pkg.Lake(path).info())
    rows = [ti.as_dict() for ti in info.values()]
    columns = list(rows[0]) if rows else ["table"]
    typer.echo(render_rows(columns, [[r.get(c) for c in columns] for r in rows], fmt))


@lake_app.command("compact")
def lake_compact(
    lake: LakeOpt = None,
    z_order: Annotated[
        bool, typer.Option("--z-order", help="also sort by path and time (rewrites partitions)")
    ] = False,
) -> None:
    """Merge small files within each partition (with --z-order also sort them by path and time).

    Waits for a compaction the engine is running on the same lake.  Example: uns lake compact --lake ./lake
    """
    import lake as lake_pkg  # noqa: PLC0415

    path = _guard(lambda: _lake_path(lake))
    result = _guard(lambda: lake_pkg.Lake(path).compact(z_order=z_order))
    typer.echo(json.dumps(result, indent=2, default=str))


@lake_app.command("vacuum")
def lake_vacuum(
    lake: LakeOpt = None,
    retention_hours: Annotated[
        float, typer.Option(help="keep files needed by versions younger than this")
    ] = 168.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would be deleted")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="allow a retention below the tables' minimum")
    ] = False,
) -> None:
    """Delete files no longer referenced by versions within the retention period.

    With a retention of an hour or more, also the data files a killed commit or
    compaction left behind unreferenced, once they are older than the retention.

    Example: uns lake vacuum --lake ./lake --retention-hours 168
    """
    import lake as lake_pkg  # noqa: PLC0415

    path = _guard(lambda: _lake_path(lake))
    result = _guard(
        lambda: lake_pkg.Lake(path).vacuum(retention_hours, dry_run=dry_run, enforce_retention=not force)
    )
    typer.echo(json.dumps(result, indent=2, default=str))


@context_app.command("show")
def context_show(
    path: Annotated[str, typer.Argument(help="ISA-95 path, e.g. acme/basel/pilot/usp/br-101")],
    at: Annotated[str | None, typer.Option("--at", help="epoch ms or ISO time (default: now)")] = None,
    lake: LakeOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Show the context valid at PATH (inherited from its ancestors) at a time, from the lake.

    Example: uns context show acme/basel/pilot/usp/br-101 --at 2026-11-25T10:00:00Z --lake ./lake
    """
    from uns_cli.context import context_at  # noqa: PLC0415
    from uns_cli.output import render_rows  # noqa: PLC0415

    lake_dir = _guard(lambda: _lake_path(lake))
    values = _guard(lambda: context_at(lake_dir, path, at))
    typer.echo(render_rows(["key", "value"], sorted(values.items()), fmt))


HostIdOpt = Annotated[
    str | None,
    typer.Option("--host-id", help="wait for this engine's acknowledgement only (default: any engine)"),
]


@context_app.command("set")
def context_set(
    path: Annotated[str, typer.Argument(help="ISA-95 path the context applies to (and everything below)")],
    pairs: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...", help="context keys to set")],
    broker: BrokerOpt = None,
    clear: Annotated[list[str] | None, typer.Option("--clear", help="keys to clear")] = None,
    user: Annotated[str | None, typer.Option(help="who sets it (audit trail)")] = None,
    reason: Annotated[str | None, typer.Option(help="why (audit trail)")] = None,
    ts: Annotated[
        str | None, typer.Option("--ts", help="time the change took effect (epoch ms or ISO)")
    ] = None,
    prefix: Annotated[str, typer.Option(help="UNS prefix")] = "uns/v1",
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="wait for the engine's acknowledgement: --wait [SECONDS] (default 10 s); "
            "exit 0 applied or duplicate, 1 rejected, 3 no engine answered",
        ),
    ] = False,
    host_id: HostIdOpt = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="the event's id, 1-128 characters (default with --wait: new)")
    ] = None,
) -> None:
    """Publish a context event (validated before it is sent) on <prefix>/_context/<path>.

    With --wait the event gets an id and the command waits for an engine to
    acknowledge it on <prefix>/_engine/<host id>/context_ack.

    Example: uns context set acme/basel/pilot/usp/br-101 batch_id=B2026-0042 phase=growth --user jdoe --wait 5
    """
    from uns_cli.context import publish_context, split_wait  # noqa: PLC0415

    path, pairs, seconds = split_wait(path, pairs, wait)
    settings = _guard(lambda: _broker_settings(broker))
    result = _guard(
        lambda: publish_context(
            settings,
            path,
            pairs,
            clear or [],
            user=user,
            reason=reason,
            ts=ts,
            prefix=prefix,
            wait=seconds,
            host_id=host_id,
            event_id=event_id,
        )
    )
    if not result.waited:
        typer.echo(f"published to {result.topic}")
        return
    ack = result.ack
    if ack is None:
        typer.echo(
            f"uns: no engine acknowledged event {result.event_id} within {seconds:g} s "
            f"(published to {result.topic}; is an engine with prefix {prefix!r} running?)",
            err=True,
        )
        raise typer.Exit(3)
    engine = f"engine {ack.host_id}" if ack.host_id else "the engine"
    if ack.status == "rejected":
        raise _fail(f"{engine} rejected event {ack.id}: {ack.reason or 'no reason given'}")
    if ack.status == "duplicate":
        typer.echo(f"duplicate: {engine} had already applied event {ack.id}; nothing changed")
    else:
        typer.echo(f"applied by {engine} (event {ack.id}, {result.topic})")


@context_app.command("import")
def context_import(
    file: Annotated[str, typer.Argument(help="JSON Lines (.jsonl) or CSV (.csv) file of context events")],
    broker: BrokerOpt = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="report and skip bad lines instead of sending nothing")
    ] = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait", help="seconds to wait for each event's acknowledgement (0: do not wait)", min=0
        ),
    ] = 10.0,
    host_id: HostIdOpt = None,
    prefix: Annotated[str, typer.Option(help="UNS prefix")] = "uns/v1",
    in_flight: Annotated[
        int, typer.Option("--in-flight", help="events published and not yet acknowledged, at most", min=1)
    ] = 1000,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="progress bar on stderr (default: on a terminal)")
    ] = sys.stderr.isatty(),
) -> None:
    """Import context events from a file, each acknowledged by the engine; safe to repeat.

    JSON Lines: one context event per line with its "path" (and optionally its
    "id"). CSV: header ts,path,key,value,user,reason; consecutive rows with the
    same ts, path, user and reason form one event. Every line is validated
    first; nothing is sent if one is bad (unless --skip-bad). Each event gets
    an id (its own, or one derived from its content), so importing a file
    again changes nothing. Exit 0 all applied or duplicates, 1 some rejected
    (or bad lines), 3 acknowledgements missing.

    Example: uns context import batches.csv --broker mqtt://127.0.0.1:1883 --wait 30
    """
    from uns_cli.importer import run_import  # noqa: PLC0415

    settings = _guard(lambda: _broker_settings(broker))
    code = _guard(
        lambda: run_import(
            settings,
            file,
            prefix=prefix,
            host_id=host_id,
            wait=wait,
            skip_bad=skip_bad,
            in_flight=in_flight,
            progress=progress,
            echo=typer.echo,
        )
    )
    if code:
        raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the uns version.  Example: uns version"""
    import uns  # noqa: PLC0415

    typer.echo(uns.__version__)


if __name__ == "__main__":
    app()
