"""The ``uns batch`` commands' parsing (a typer sub-app that cli.py mounts); the work is
in :mod:`uns.cli.batch_commands`.  Loads nothing but typer until a command runs."""

from __future__ import annotations

from typing import Annotated

import typer

from uns.cli.commands import FormatOpt, LakeOpt, guard

__all__ = ["batch_app"]

batch_app = typer.Typer(
    help="Batches: list them, summarise one, write its review-by-exception report.", no_args_is_help=True
)

SpecOpt = Annotated[
    str | None, typer.Option("--spec", help="spec file with limits (default: batch.spec of the config)")
]
BatchArg = Annotated[str, typer.Argument(metavar="BATCH", help="batch id, e.g. B2026-0001")]


@batch_app.command("list")
def batch_list(
    lake: LakeOpt = None,
    since: Annotated[
        str | None, typer.Option("--since", help="only batches started at or after this ISO 8601 time")
    ] = None,
    product: Annotated[str | None, typer.Option("--product", help="only batches of this product")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="only batches still running")] = False,
    fmt: FormatOpt = "table",
) -> None:
    """One line per batch (newest first): product, recipe, order, units, start, end, duration, status.

    Example: uns batch list --lake ./uns-lake --product mAb-A --since 2026-12-01T00:00:00Z
    """
    from uns.cli.batch_commands import batch_list as work  # noqa: PLC0415

    guard(lambda: work(lake, since=since, product=product, open_only=open_only, fmt=fmt, echo=typer.echo))


@batch_app.command("show")
def batch_show(batch: BatchArg, lake: LakeOpt = None, spec: SpecOpt = None) -> None:
    """A terminal summary of one batch: units, phases, exceptions, completeness, verdict.

    Example: uns batch show B2026-0001 --lake ./uns-lake --spec examples/pilot-spec.toml
    """
    from uns.cli.batch_commands import batch_show as work  # noqa: PLC0415

    guard(lambda: work(lake, batch, spec=spec, echo=typer.echo))


@batch_app.command("report")
def batch_report(
    batch: BatchArg,
    lake: LakeOpt = None,
    spec: SpecOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="html, json or pdf")] = "html",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="file to write (default: BATCH.FORMAT)")
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="golden batch to overlay, aligned by phase")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="also report this numeric metric (repeatable)")
    ] = None,
) -> None:
    """Write the batch's review-by-exception report; prints its path and verdict.

    Example: uns batch report B2026-0001 --lake ./uns-lake --spec examples/pilot-spec.toml -o B2026-0001.html
    """
    from uns.cli.batch_commands import batch_report as work  # noqa: PLC0415

    guard(
        lambda: work(
            lake,
            batch,
            spec=spec,
            fmt=fmt,
            output=output,
            reference=reference,
            metrics=tuple(metric or ()),
            echo=typer.echo,
        )
    )


@batch_app.command("sign")
def batch_sign(
    batch: BatchArg,
    meaning: Annotated[str, typer.Option("--meaning", help="reviewed, approved or rejected")],
    user: Annotated[str, typer.Option("--user", help="the signer's printed name")],
    reason: Annotated[str | None, typer.Option("--reason", help="the signer's comment")] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Ed25519 private key file (uns keys new): a digital signature")
    ] = None,
    lake: LakeOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Sign the batch's report: an audit entry with the signer, time, meaning and the
    SHA-256 of the report content; with --key also an Ed25519 signature that
    `uns audit verify` checks against the trusted keys.

    Example: uns batch sign B2026-0001 --meaning approved --user "J. Doe" --key ~/.uns/qa-jdoe.key
    """
    from uns.cli.batch_commands import batch_sign as work  # noqa: PLC0415

    guard(
        lambda: work(
            lake, batch, spec=spec, meaning=meaning, user=user, reason=reason, key=key, echo=typer.echo
        )
    )
