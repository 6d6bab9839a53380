"""``uns validate``: the command line of :mod:`uns.validation` (it parses and prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uns.cli.commands import fail, guard

__all__ = ["validate"]


def validate(
    out: Annotated[
        str | None,
        typer.Option("--out", help="directory for the evidence (default: ./uns-validation-<time>)"),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option("--broker", "-b", help="run the OQ on this broker, in a namespace of its own"),
    ] = None,
    only: Annotated[str | None, typer.Option("--only", help="iq or oq: run one part only")] = None,
    protocol_only: Annotated[
        bool, typer.Option("--protocol-only", help="write the protocol (JSON, HTML, PDF) and stop")
    ] = False,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="execute this protocol file (protocol.json)")
    ] = None,
    pq: Annotated[
        bool, typer.Option("--pq", help="performance qualification on the plant's --config and --lake")
    ] = False,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="the configuration to qualify (default: UNS_CONFIG)")
    ] = None,
    lake: Annotated[
        str | None,
        typer.Option(
            "--lake", help="the PQ's lake; the seal's audit entry goes here (default: the OQ's lake)"
        ),
    ] = None,
    batch: Annotated[
        list[str] | None, typer.Option("--batch", help="a PQ batch (repeat; default: the newest closed one)")
    ] = None,
) -> None:
    """Qualify this installation: IQ (Python, uns, dependencies and their files against their
    RECORD, schemas, config), OQ (a simulated plant with faults, a killed engine, the lake,
    the batch report, the audit trail, signatures), or with --pq the plant's own
    configuration and lake.  With --protocol-only it writes the protocol to approve; with
    --protocol it executes that protocol: per step expected against actual, a numbered
    deviation for every failure, every file in SHA256SUMS, whose SHA-256 is recorded in
    the lake; exit 0 only when every requirement passed (docs/gxp.md).

    Example: uns validate --protocol-only --out /srv/validation/uns-protocol
    """
    import datetime as dt  # noqa: PLC0415

    from uns.validation.run import ValidationRequest, run_validation, write_protocol  # noqa: PLC0415

    if protocol is not None and (only or pq or protocol_only or batch):
        raise fail("--protocol executes the parts, lake and batches the protocol names: give it alone")
    if pq and only:
        raise fail("--pq is the PQ alone: leave out --only")
    if only not in (None, "iq", "oq"):
        raise fail(f"--only must be iq or oq, not {only!r}")
    parts = ("pq",) if pq else (only,) if only else ("iq", "oq")
    target = Path(out or f"uns-validation-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
    request = ValidationRequest(
        target, parts, broker=broker, config_file=config, lake=lake, batches=tuple(batch or ()),
        protocol_file=protocol,
    )  # fmt: skip
    if protocol_only:
        guard(lambda: write_protocol(request, echo=typer.echo))
        return
    code = guard(lambda: run_validation(request, echo=typer.echo))
    if code:
        raise typer.Exit(code)
