"""The ``uns batch`` commands' parsing (a typer sub-app that cli.py mounts); the work is
in :mod:`uns.cli.batch_commands`.  Loads nothing but typer until a command runs."""

from __future__ import annotations

from typing import Annotated

import typer

from uns.cli.commands import FormatOpt, LakeOpt, PassphraseOpt, SignKeyOpt, SignUserOpt, guard

__all__ = ["batch_app"]

batch_app = typer.Typer(
    help="Batches: list them, summarise one, write its review-by-exception report, trend a parameter "
    "across them.",
    no_args_is_help=True,
)

SpecOpt = Annotated[
    str | None, typer.Option("--spec", help="spec file with limits (default: batch.spec of the config)")
]
#: the filters ``batch list`` and ``batch trend`` share
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="only batches started at or after this ISO 8601 time")
]
ProductOpt = Annotated[str | None, typer.Option("--product", help="only batches of this product")]
BatchArg = Annotated[str, typer.Argument(metavar="BATCH", help="batch id, e.g. B2026-0001")]


@batch_app.command("list")
def batch_list(
    lake: LakeOpt = None,
    since: SinceOpt = None,
    product: ProductOpt = None,
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
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="file to write (default: BATCH.FORMAT here, the batch id made a safe file name)",
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="golden batch to overlay, aligned by phase; several (B1,B2,B3): their mean ± 3 sd band",
        ),
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="also report this numeric metric (repeatable)")
    ] = None,
    envelope_exceptions: Annotated[
        bool,
        typer.Option(
            "--envelope-exceptions", help="list where the batch leaves the references' band as exceptions"
        ),
    ] = False,
) -> None:
    """Write the batch's review-by-exception report; prints its path and verdict.

    Example: uns batch report B2026-0001 --lake ./uns-lake --spec examples/pilot-spec.toml -o B2026-0001.html

    Example: uns batch report B2026-0013 --reference B2026-0005,B2026-0009,B2026-0017 --envelope-exceptions
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
            envelope_exceptions=envelope_exceptions,
            echo=typer.echo,
        )
    )


@batch_app.command("trend")
def batch_trend(
    metric: Annotated[str, typer.Argument(metavar="METRIC", help="the metric's name in the lake")],
    lake: LakeOpt = None,
    spec: SpecOpt = None,
    product: ProductOpt = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="only batches of this recipe")] = None,
    phase: Annotated[
        str | None, typer.Option("--phase", help="the statistic over this phase (default: the whole batch)")
    ] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="only the metric on paths matching this glob (* crosses /)")
    ] = None,
    since: SinceOpt = None,
    until: Annotated[
        str | None, typer.Option("--until", help="only batches started before this ISO 8601 time")
    ] = None,
    stat: Annotated[
        str, typer.Option("--stat", help="one value per batch: mean, min, max, last or duration")
    ] = "mean",
    fmt: Annotated[str, typer.Option("--format", "-f", help="html, json or pdf")] = "html",
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="file to write (default: METRIC-trend.FORMAT; - for stdout)"),
    ] = None,
) -> None:
    """A parameter across the closed batches: one value per batch, the individuals / moving-range
    chart with run rules 1-4, and the capability against the spec's action limits.  Prints the
    file written and a summary.

    Example: uns batch trend Temperature --lake ./uns-lake --product mAb-A --spec examples/pilot-spec.toml
    """
    from uns.cli.batch_commands import batch_trend as work  # noqa: PLC0415

    options = {
        "stat": stat, "product": product, "recipe": recipe, "phase": phase, "path": path, "since": since,
        "until": until, "spec": spec,
    }  # fmt: skip
    guard(lambda: work(lake, metric, fmt=fmt, output=output, options=options, echo=typer.echo))


@batch_app.command("sign")
def batch_sign(
    batch: BatchArg,
    meaning: Annotated[str, typer.Option("--meaning", help="reviewed, approved or rejected")],
    key: SignKeyOpt,
    expect_sha256: Annotated[
        str | None,
        typer.Option(
            "--expect-sha256",
            help="sign only if the report content still has this SHA-256 (the one you read)",
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="the signer's comment")] = None,
    user: SignUserOpt = None,
    passphrase: PassphraseOpt = False,
    lake: LakeOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Sign the batch's report as the owner of your key: an audit entry with your user id,
    full name, the time, the meaning, your comment, the SHA-256 of the report content and
    the audit chain's head, signed with your Ed25519 key (checked by `uns audit verify`
    and by every report).  A signature needs a key.

    Example: uns batch sign B2026-0001 --meaning approved --key ~/.uns/qa-jdoe.key --expect-sha256 9c1f...
    """
    from uns.cli.batch_commands import batch_sign as work  # noqa: PLC0415
    from uns.cli.keys_cli import read_passphrase  # noqa: PLC0415

    guard(
        lambda: work(
            lake, batch, spec=spec, meaning=meaning, user=user, reason=reason, key=key,
            expect_sha256=expect_sha256, passphrase=read_passphrase(passphrase), echo=typer.echo,
        )
    )  # fmt: skip
