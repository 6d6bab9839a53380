"""The ``uns records`` commands' parsing (a typer sub-app that cli.py mounts); the work is
in :mod:`uns.client.records_import` and :mod:`uns.client.import_run`."""

from __future__ import annotations

from typing import Annotated

import typer

from uns.cli.commands import BrokerOpt
from uns.cli.context_cli import (
    ON_TERMINAL,
    HostIdOpt,
    ImportWaitOpt,
    InFlightOpt,
    KeyOpt,
    PrefixOpt,
    ProgressOpt,
    SkipBadOpt,
    file_import,
)
from uns.cli.keys_cli import PassphraseOpt

__all__ = ["records_app"]

records_app = typer.Typer(
    help="Batch records: materials charged, quality results, operator comments.", no_args_is_help=True
)


@records_app.command("import")
def records_import(
    file: Annotated[str, typer.Argument(help="JSON Lines (.jsonl) or CSV (.csv) file of batch records")],
    broker: BrokerOpt = None,
    skip_bad: SkipBadOpt = False,
    wait: ImportWaitOpt = 10.0,
    host_id: HostIdOpt = None,
    prefix: PrefixOpt = "uns/v1",
    in_flight: InFlightOpt = 1000,
    progress: ProgressOpt = ON_TERMINAL,
    key: KeyOpt = None,
    passphrase: PassphraseOpt = False,
) -> None:
    """Import batch records (materials, results, comments) from a file, each acknowledged; safe to repeat.

    JSON Lines: one record per line with its "path", "kind" (material, result,
    comment), "ts" and its kind's fields (docs/batches.md section 8). CSV: a
    header of ts, path, kind and the fields used (id, user, source, material,
    lot, quantity, unit, status, expiry, test, value, low, high, text), one
    record per row. Every line is validated first; nothing is sent if one is bad
    (unless --skip-bad). Each record gets an id (its own, or one derived from
    its content), so importing a file again changes nothing. Exit 0 all applied
    or duplicates, 1 some rejected (or bad lines), 3 acknowledgements missing.
    With --key every record is signed.

    Example: uns records import lims-results.csv --broker mqtt://127.0.0.1:1883 --wait 30
    """
    file_import(
        file, broker, records=True, prefix=prefix, host_id=host_id, wait=wait, skip_bad=skip_bad,
        in_flight=in_flight, progress=progress, key=key, passphrase=passphrase,
    )  # fmt: skip
