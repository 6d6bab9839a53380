"""``uns cmd``: a metric write or a rebirth request to an edge node (the work is
:func:`uns.client.command.send_command`; this only parses and prints)."""

from __future__ import annotations

from typing import Annotated

import typer

from uns.cli.commands import BrokerOpt, LakeOpt, guard

__all__ = ["cmd"]


def cmd(
    target: Annotated[str, typer.Argument(help="GROUP/NODE (NCMD) or GROUP/NODE/DEVICE (DCMD)")],
    writes: Annotated[
        list[str] | None, typer.Argument(help="METRIC=VALUE, each metric as named in the last birth")
    ] = None,
    rebirth: Annotated[bool, typer.Option("--rebirth", help="ask for a rebirth instead of writing")] = False,
    reason: Annotated[str, typer.Option("--reason", help="why (required: recorded in the audit trail)")] = "",
    user: Annotated[str | None, typer.Option("--user", help="who sends it (default: the OS user)")] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="TOML config file (env UNS_CONFIG)")
    ] = None,
    broker: BrokerOpt = None,
    lake: LakeOpt = None,
) -> None:
    """Send an NCMD or DCMD: write metrics of an edge node or device, or ask for a rebirth.

    Off unless sparkplug.commands_enabled = true.  Names and datatypes come from the
    node's last birth (a running engine's, else the lake's); values are checked
    before anything is sent; QoS 0, not retained, payload timestamp, no seq.  Each
    command is an audit entry (kind command) with the user and the reason.

    Example: uns cmd Plant/Line1/Filler Speed=1200 --reason "recipe step 3, batch B42"

    Example: uns cmd Plant/Line1 --rebirth --reason "refresh after maintenance"
    """
    from uns.client.command import parse_assignments, parse_target, send_command  # noqa: PLC0415
    from uns.config import load_config  # noqa: PLC0415

    # --broker: that one broker (a list in the config is set aside)
    overrides: dict[str, object] = {
        "broker.url": broker,
        "broker.urls": [] if broker else None,
        "lake.path": lake,
    }
    cfg = guard(lambda: load_config(config, overrides=overrides))
    parsed = guard(lambda: parse_target(target))
    pairs = guard(lambda: parse_assignments(writes or []))
    sent = guard(
        lambda: send_command(cfg, parsed, pairs, rebirth=rebirth, user=user, reason=reason, lake=lake)
    )
    values = ", ".join(f"{name}={value!r} ({datatype})" for name, datatype, value in sent.metrics)
    typer.echo(f"sent {sent.verb} to {sent.topic}: {values}")
