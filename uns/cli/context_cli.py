"""The ``uns context`` commands' parsing (a typer sub-app that cli.py mounts); the work is
in :mod:`uns.client.context` and :mod:`uns.client.importer`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from uns.cli.commands import BrokerOpt, FormatOpt, LakeOpt, broker_settings, fail, guard, lake_path
from uns.cli.keys_cli import PassphraseOpt

__all__ = ["context_app"]

context_app = typer.Typer(help="Read and publish batch/equipment context.", no_args_is_help=True)


@context_app.command("show")
def context_show(
    path: Annotated[str, typer.Argument(help="ISA-95 path, e.g. acme/basel/pilot/usp/br-101")],
    at: Annotated[str | None, typer.Option("--at", help="epoch ms or ISO time (default: now)")] = None,
    lake: LakeOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Show the context valid at PATH (inherited from its ancestors) at a time, from the lake.

    Example: uns context show acme/basel/pilot/usp/br-101 --at 2026-11-25T10:00:00Z --lake ./uns-lake
    """
    from uns.client.context import context_at  # noqa: PLC0415
    from uns.output import render_rows  # noqa: PLC0415

    lake_dir = guard(lambda: lake_path(lake))
    values = guard(lambda: context_at(lake_dir, path, at))
    typer.echo(render_rows(["key", "value"], sorted(values.items()), fmt))


HostIdOpt = Annotated[
    str | None,
    typer.Option("--host-id", help="wait for this engine's acknowledgement only (default: any engine)"),
]


KeyOpt = Annotated[
    str | None,
    typer.Option("--key", help="sign with this Ed25519 private key file (uns keys new; <name>.key)"),
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
            "exit 0 applied or duplicate, 1 rejected or conflict, 3 no engine answered",
        ),
    ] = False,
    host_id: HostIdOpt = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="the event's id, 1-128 characters (default with --wait: new)")
    ] = None,
    key: KeyOpt = None,
    passphrase: PassphraseOpt = False,
) -> None:
    """Publish a context event (validated before it is sent) on <prefix>/_context/<path>.

    With --wait the event gets an id and the command waits for an engine to
    acknowledge it on <prefix>/_engine/<host id>/context_ack.  Where the config names
    the engine's key (engine.signing_key, its .pub among audit.trusted_keys) only an
    acknowledgement signed by it counts; otherwise the command says the answer is
    unauthenticated.

    With --key the event is signed (needed where the engine has
    context.require_signature on).

    A change made by hand, or back-dated, needs --reason (context.require_reason).

    Example: uns context set acme/basel/pilot/usp/br-101 phase=growth --user jdoe --reason "MES down" --wait 5
    """
    from uns.cli.keys_cli import read_passphrase  # noqa: PLC0415
    from uns.client.context import (  # noqa: PLC0415
        UNAUTHENTICATED,
        configured_ack_key,
        publish_context,
        split_wait,
    )

    path, pairs, seconds = split_wait(path, pairs, wait)
    settings = guard(lambda: broker_settings(broker))
    ack_key, max_future_s = guard(configured_ack_key)
    result = guard(
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
            key=key,
            ack_key=ack_key,
            max_future_s=max_future_s,
            passphrase=read_passphrase(passphrase),
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
    if ack.status in ("rejected", "conflict"):
        raise fail(f"{engine} rejected event {ack.id}: {ack.reason or 'no reason given'}")
    if not result.authenticated:  # a success anyone could have announced: say so
        typer.echo(UNAUTHENTICATED, err=True)
    signed = f"; signed by key {ack.signer}" if ack.signer else ""
    if ack.status == "duplicate":
        typer.echo(f"duplicate: {engine} had already applied event {ack.id}; nothing changed{signed}")
    else:
        typer.echo(f"applied by {engine} (event {ack.id}, {result.topic}{signed})")


SkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad", help="report and skip bad lines instead of sending nothing")
]
ImportWaitOpt = Annotated[
    float,
    typer.Option("--wait", help="seconds to wait for each event's acknowledgement (0: do not wait)", min=0),
]
PrefixOpt = Annotated[str, typer.Option(help="UNS prefix")]
InFlightOpt = Annotated[
    int, typer.Option("--in-flight", help="events published and not yet acknowledged, at most", min=1)
]
ProgressOpt = Annotated[
    bool, typer.Option("--progress/--no-progress", help="progress bar on stderr (default: on a terminal)")
]
#: the default of --progress: stderr is a terminal
ON_TERMINAL = sys.stderr.isatty()


def file_import(
    file: str, broker: str | None, *, records: bool = False, passphrase: bool = False, **options: Any
) -> None:
    """``uns context import`` and ``uns records import``: the library's import run, its exit code."""
    from uns.cli.keys_cli import read_passphrase  # noqa: PLC0415
    from uns.client.context import configured_ack_key  # noqa: PLC0415
    from uns.client.import_run import run_import  # noqa: PLC0415

    settings = guard(lambda: broker_settings(broker))
    ack_key, _future = guard(configured_ack_key)  # only acknowledgements the engine signed count
    secret = read_passphrase(passphrase)
    code = guard(
        lambda: run_import(
            settings, file, echo=typer.echo, records=records, ack_key=ack_key, passphrase=secret, **options
        )
    )
    if code:
        raise typer.Exit(code)


@context_app.command("import")
def context_import(
    file: Annotated[
        str, typer.Argument(help="JSON Lines (.jsonl), CSV (.csv) or ISA-88 BatchML (.xml) file of context")
    ],
    broker: BrokerOpt = None,
    skip_bad: SkipBadOpt = False,
    wait: ImportWaitOpt = 10.0,
    host_id: HostIdOpt = None,
    prefix: PrefixOpt = "uns/v1",
    in_flight: InFlightOpt = 1000,
    progress: ProgressOpt = ON_TERMINAL,
    key: KeyOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="plant model mapping a BatchML file's EquipmentIDs (default: engine.model of the config)",
        ),
    ] = None,
    passphrase: PassphraseOpt = False,
) -> None:
    """Import context events from a file, each acknowledged by the engine; safe to repeat.

    JSON Lines: one context event per line with its "path" (and optionally its
    "id"). CSV: header ts,path,key,value,user,reason; consecutive rows with the
    same ts, path, user and reason form one event. BatchML (.xml): an ISA-88
    BatchInformation export; each batch list entry becomes batch and phase
    context on the path its EquipmentID maps to in the plant model. Every line
    is validated first; nothing is sent if one is bad (unless --skip-bad). Each
    event gets an id (its own, or one derived from its content), so importing a
    file again changes nothing. Exit 0 all applied or duplicates, 1 some
    rejected (or bad lines), 3 acknowledgements missing. With --key every event
    is signed.

    Example: uns context import batches.csv --broker mqtt://127.0.0.1:1883 --wait 30
    """
    if model is None and file.lower().endswith(".xml"):
        from uns.config import load_config  # noqa: PLC0415

        model = guard(lambda: load_config().engine.model) or None
    file_import(
        file, broker, prefix=prefix, host_id=host_id, wait=wait, skip_bad=skip_bad, in_flight=in_flight,
        progress=progress, key=key, model=model, passphrase=passphrase,
    )  # fmt: skip
