"""The ``uns audit`` commands (registered by cli.py; the work is in uns.cli/audit.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from uns.cli.commands import FormatOpt, LakeOpt, guard, lake_path

__all__ = ["audit_app"]

audit_app = typer.Typer(help="The lake's audit trail: verify it, read it.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(lake: LakeOpt = None) -> None:
    """Recompute the audit hash chains and every data file's SHA-256, and check every
    digital signature against the trusted keys (audit.trusted_keys); exit 0 with a
    summary when the lake is intact, 1 with one line per finding.

    Example: uns audit verify --lake ./uns-lake
    """
    from uns.audit.trail import verify_lines  # noqa: PLC0415
    from uns.config import load_config  # noqa: PLC0415

    path = guard(lambda: lake_path(lake))
    trusted = guard(lambda: load_config().audit.trusted_keys)
    code, lines = guard(lambda: verify_lines(path, trusted))
    for line in lines:
        typer.echo(line)
    if code:
        raise typer.Exit(code)


@audit_app.command("log")
def audit_log(
    lake: LakeOpt = None,
    since: Annotated[str | None, typer.Option("--since", help="from this time (epoch ms or ISO)")] = None,
    until: Annotated[str | None, typer.Option("--until", help="before this time (epoch ms or ISO)")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="e.g. context_change, data_commit")] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="entries about this ISA-95 path or below")
    ] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="entries of this batch")] = None,
    user: Annotated[str | None, typer.Option("--user", help="entries by this actor")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Print audit trail entries in time order, filtered.

    Example: uns audit log --batch B2026-0042 --kind context_change --lake ./uns-lake
    """
    from uns.audit.trail import LOG_COLUMNS, audit_log  # noqa: PLC0415
    from uns.output import render_rows  # noqa: PLC0415

    where = guard(lambda: lake_path(lake))
    rows = guard(
        lambda: audit_log(
            where,
            since=since,
            until=until,
            kind=kind,
            path=path,
            batch=batch,
            user=user,
            parse_detail=fmt == "json",
        )
    )
    typer.echo(render_rows(list(LOG_COLUMNS), rows, fmt))
