"""The ``uns`` command line: a thin typer shell over the ``uns`` library.

Every command turns a :class:`uns.errors.UnsError` into one clear line on
stderr and exit code 1; nothing else is printed for a domain error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

import typer

from uns.cli.audit_commands import audit_app
from uns.cli.batch_cli import batch_app
from uns.cli.cmd_cli import cmd
from uns.cli.commands import BrokerOpt, LakeOpt
from uns.cli.commands import broker_settings as _broker_settings
from uns.cli.commands import guard as _guard
from uns.cli.context_cli import context_app
from uns.cli.keys_cli import keys_app
from uns.cli.lake_cli import lake_app
from uns.cli.records_cli import records_app
from uns.cli.users_cli import users_app
from uns.cli.validate_cli import validate

app = typer.Typer(
    name="uns",
    help="Unified Namespace context engine: Sparkplug B host, batch context, Delta lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(lake_app, name="lake")  # uns.cli/lake_cli.py
app.add_typer(context_app, name="context")  # its commands: uns.cli/context_cli.py
app.add_typer(records_app, name="records")  # uns.cli/records_cli.py
app.add_typer(keys_app, name="keys")  # uns.cli/keys_cli.py
app.add_typer(batch_app, name="batch")  # uns.cli/batch_cli.py
app.add_typer(audit_app, name="audit")
app.command(name="cmd")(cmd)  # uns.cli/cmd_cli.py
app.add_typer(users_app, name="users")  # uns.cli/users_cli.py
app.command(name="validate")(validate)  # uns.cli/validate_cli.py


def _setup_logging(level: str, log_format: str = "text") -> None:
    from uns.logs import setup_logging  # noqa: PLC0415

    setup_logging(level, log_format)


@app.command()
def run(
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="TOML config file (env UNS_CONFIG)")
    ] = None,
    broker: Annotated[
        list[str] | None,
        typer.Option(
            "--broker",
            "-b",
            help="mqtt://[user[:pass]@]host[:port] or mqtts://... (env UNS_BROKER); repeat for "
            "several brokers, one Sparkplug host session each (broker.urls)",
        ),
    ] = None,
    lake: LakeOpt = None,
    model: Annotated[str | None, typer.Option("--model", help="plant model TOML (env UNS_MODEL)")] = None,
    host_id: Annotated[
        str | None, typer.Option("--host-id", help="Sparkplug host id (env UNS_HOST_ID)")
    ] = None,
    primary: Annotated[
        bool | None, typer.Option("--primary/--no-primary", help="act as the Sparkplug primary host (STATE)")
    ] = None,
    groups: Annotated[
        str | None,
        typer.Option("--groups", help="host only these Sparkplug groups, G1,G2 (env UNS_ENGINE_GROUPS)"),
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
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="why this start (a change request), recorded with its config change"),
    ] = None,
) -> None:
    """Run the engine until SIGINT/SIGTERM, then flush everything and exit 0 (within
    engine.stop_timeout_s; exit 1 with one line counting the received messages that could
    not be persisted when the lake stays unwritable).

    A lost or unreachable broker is retried; one that refuses the credentials,
    the authorization or the TLS certificate stops it with one line and exit 1.

    Example: uns run --broker mqtt://127.0.0.1:1883 --lake /var/lib/uns/lake --model plant.toml --primary

    Two brokers: uns run --primary --broker mqtt://broker-a:1883 --broker mqtt://broker-b:1883

    Monitoring: --http 127.0.0.1:9464 serves /metrics, /healthz and /readyz; --log-format json.

    Change control: uns run --config /etc/uns/uns.toml --reason "CR-2026-117: commit interval 0.5 s"
    """
    from uns.config import load_config  # noqa: PLC0415

    overrides = {
        # one --broker is broker.url; several are broker.urls (and the first is also the url)
        "broker.url": broker[0] if broker else None,
        "broker.urls": broker if broker and len(broker) > 1 else ([] if broker else None),
        "lake.path": lake,
        "engine.model": model,
        "engine.host_id": host_id,
        "engine.primary": primary,
        "engine.groups": groups,
        "engine.log_level": log_level,
        "engine.log_format": log_format,
        "engine.http_listen": http,
    }
    cfg = _guard(lambda: load_config(config, overrides=overrides))
    if print_config:
        from uns.config_toml import config_toml  # noqa: PLC0415

        typer.echo(config_toml(cfg), nl=False)
        return
    _setup_logging(cfg.engine.log_level, cfg.engine.log_format)
    from uns.engine.daemon import run_daemon  # noqa: PLC0415

    _guard(lambda: asyncio.run(run_daemon(cfg, reason=reason or "")))


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
    shift: Annotated[
        list[str] | None, typer.Option(help="BATCH:METRIC=DELTA: the batch runs off-centre (docs/batches.md)")
    ] = None,
    death: Annotated[list[str] | None, typer.Option(help="BATCH: its edge node dies mid-batch")] = None,
    gap: Annotated[list[str] | None, typer.Option(help="BATCH[:SECONDS]: its unit sends nothing")] = None,
    correct_context: Annotated[list[str] | None, typer.Option(help="BATCH: a late recipe correction")] = None,
    not_ready: Annotated[
        list[str] | None, typer.Option(help="BATCH: its unit is dirty when the batch starts")
    ] = None,
    material: Annotated[list[str] | None, typer.Option(help="BATCH: a lot in quarantine is charged")] = None,
    oos: Annotated[list[str] | None, typer.Option(help="BATCH: its in-process result is out of spec")] = None,
    alarm: Annotated[list[str] | None, typer.Option(help="BATCH: its unit's alarm is raised")] = None,
    bad_quality: Annotated[
        list[str] | None, typer.Option(help="BATCH: an instrument sends bad-quality samples")
    ] = None,
    comment: Annotated[list[str] | None, typer.Option(help="BATCH: an operator comment")] = None,
    abort: Annotated[list[str] | None, typer.Option(help="BATCH: the MES aborts it")] = None,
) -> None:
    """Simulate a pharma plant as Sparkplug B edge nodes, with batch context events.

    Example: uns sim --broker mqtt://127.0.0.1:1883 --duration 60 --oos B2026-0005 --alarm B2026-0006
    """
    from uns.cli.sim import run_sim_cli  # noqa: PLC0415

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
            faults={
                "excursion": excursion,
                "shift": shift,
                "death": death,
                "gap": gap,
                "correct_context": correct_context,
                "not_ready": not_ready,
                "material": material,
                "oos": oos,
                "alarm": alarm,
                "bad_quality": bad_quality,
                "comment": comment,
                "abort": abort,
            },
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
    from uns.demo import run_demo  # noqa: PLC0415

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
    from uns.client.inspect import listen  # noqa: PLC0415

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
    from uns.client.inspect import MessageView, listen  # noqa: PLC0415

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


@app.command()
def serve(
    lake: LakeOpt = None,
    listen: Annotated[
        str | None, typer.Option("--listen", metavar="HOST:PORT", help="where to listen (web.listen)")
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="TOML config file (env UNS_CONFIG)")
    ] = None,
) -> None:
    """Serve the review workspace: QA reviewers log in, disposition each exception and
    sign in the browser (docs/web.md).  Needs the server's signing key (web.signing_key).

    Example: UNS_WEB_SIGNING_KEY=/etc/uns/keys/uns-web.key uns serve --lake ./lake --listen 127.0.0.1:8080
    """
    from uns.config import load_config  # noqa: PLC0415
    from uns.web.server import serve as run_server  # noqa: PLC0415

    cfg = _guard(lambda: load_config(config, overrides={"lake.path": lake, "web.listen": listen}))
    _setup_logging(cfg.engine.log_level, cfg.engine.log_format)
    _guard(lambda: run_server(cfg))


@app.command()
def version() -> None:
    """Print the uns version.  Example: uns version"""
    import uns  # noqa: PLC0415

    typer.echo(uns.__version__)


def main() -> None:
    """The console script ``uns`` (and ``python -m uns``, ``python cli.py``)."""
    app()


if __name__ == "__main__":
    main()
