"""The ``uns lake`` commands' parsing (a typer sub-app that app.py mounts); what they print
is :mod:`uns.cli.lake_cmds`.  Loads nothing but typer until a command runs."""

from __future__ import annotations

from typing import Annotated

import typer

from uns.cli.commands import FormatOpt, LakeOpt, guard

__all__ = ["lake_app"]

lake_app = typer.Typer(
    help="Query and maintain the lake (Delta tables read with DuckDB).", no_args_is_help=True
)


# A query that starts with a `-- comment` line is the query, not an unknown option (a
# mistyped option still fails: it takes the QUERY's place and leaves the query extra).
@lake_app.command("sql", context_settings={"ignore_unknown_options": True})
def lake_sql(
    query: Annotated[
        str | None,
        typer.Argument(help="SQL over the views measurements, context, sessions, ... (or --file)"),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file", metavar="FILE", help="run the queries of a SQL file (`-- name: NAME` headers)"
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="with --file: run only the query NAME")
    ] = None,
    lake: LakeOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    """Run a DuckDB query against the lake's views (a directory or s3://bucket/prefix).

    Give the query as QUERY, or --file FILE: a file of queries, each after a `-- name: NAME`
    line (as examples/queries.sql), runs all of them, each under its name, or with --name
    only that one; a file without such lines is one query.

    Example: uns lake sql "SELECT batch_id, count(*) FROM measurements GROUP BY 1" --lake ./uns-lake

    Example: uns lake sql --file examples/queries.sql --name batch_timeline --lake ./uns-lake
    """
    from uns.cli import lake_cmds  # noqa: PLC0415

    typer.echo(guard(lambda: lake_cmds.sql(lake, query, fmt, file=file, name=name)))


@lake_app.command("info")
def lake_info(lake: LakeOpt = None, fmt: FormatOpt = "table") -> None:
    """Tables, rows, files, size, time range and last commit of the lake.

    Example: uns lake info --lake ./uns-lake
    """
    from uns.cli import lake_cmds  # noqa: PLC0415

    typer.echo(guard(lambda: lake_cmds.info(lake, fmt)))


@lake_app.command("compact")
def lake_compact(
    lake: LakeOpt = None,
    z_order: Annotated[
        bool, typer.Option("--z-order", help="also sort by path and time (rewrites partitions)")
    ] = False,
    fmt: FormatOpt = "table",
) -> None:
    """Merge small files within each partition (with --z-order also sort them by path and time).

    Waits for a compaction the engine is running on the same lake.  Prints per table the
    files removed and added, the rows and the seconds it took.

    Example: uns lake compact --lake ./uns-lake
    """
    from uns.cli import lake_cmds  # noqa: PLC0415

    typer.echo(guard(lambda: lake_cmds.compact(lake, z_order=z_order, fmt=fmt)))


@lake_app.command("repair")
def lake_repair(
    lake: LakeOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="why (recorded in the audit trail)")] = "",
) -> None:
    """Rewrite bounded the rejected rows an older version stored whole (first KiB, size, SHA-256 kept).

    Readers skip such a file until then.  Recorded in the audit trail.
    Example: uns lake repair --lake ./uns-lake --reason "after the upgrade"
    """
    from uns.cli import lake_cmds  # noqa: PLC0415

    typer.echo(guard(lambda: lake_cmds.repair(lake, reason)))


@lake_app.command("quarantine")
def lake_quarantine(
    lake: LakeOpt = None,
    show: Annotated[int | None, typer.Option("--show", help="print the rows of this segment (JSON)")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """The WAL segments the engine moved aside because their commit kept failing (nothing is deleted).

    Example: uns lake quarantine --lake ./uns-lake
    """
    from uns.cli import lake_cmds  # noqa: PLC0415

    typer.echo(guard(lambda: lake_cmds.quarantine(lake, show, fmt)))


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

    Example: uns lake vacuum --lake ./uns-lake --retention-hours 168
    """
    from uns.cli import lake_cmds  # noqa: PLC0415

    typer.echo(guard(lambda: lake_cmds.vacuum(lake, retention_hours, dry_run=dry_run, force=force)))
