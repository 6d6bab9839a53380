"""The import run of ``uns context import`` and ``uns records import``: a file read and
validated whole (:mod:`uns.client.importer`, :mod:`uns.client.records_import`), every event
published and its acknowledgement awaited, a summary and an exit code."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uns.client.context import UNAUTHENTICATED, Ack, AckKey, Outgoing, ack_filter, send_events
from uns.client.importer import ImportEvent, ParsedFile, read_events
from uns.core.model import PlantModel
from uns.core.signing import sign_event
from uns.keyring import load_private_key
from uns.mqtt.settings import BrokerSettings

__all__ = ["ImportSummary", "run_import", "summarize"]


@dataclass(slots=True)
class ImportSummary:
    """What the engines answered for the events of a file."""

    events: int = 0  # valid events in the file, repeats included
    applied: int = 0
    duplicates: int = 0  # incl. repeats within the file
    rejected: list[tuple[ImportEvent, str]] = field(default_factory=list)
    unanswered: int = 0
    skipped: int = 0  # bad lines/events skipped with --skip-bad
    waited: bool = True
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 all applied or duplicates, 1 any rejected, 3 any unanswered."""
        if self.rejected:
            return 1
        return 3 if self.unanswered else 0

    def line(self) -> str:
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        timing = f"{self.seconds:.1f} s, {rate:,.0f} events/s"
        skipped = f", {self.skipped} bad skipped" if self.skipped else ""
        if not self.waited:
            return f"{self.events} events published, acknowledgements not awaited{skipped} ({timing})"
        return (
            f"{self.events} events: {self.applied} applied, {self.duplicates} duplicates, "
            f"{len(self.rejected)} rejected, {self.unanswered} unanswered{skipped} ({timing})"
        )


def summarize(parsed: ParsedFile, acks: Mapping[str, Ack], *, waited: bool) -> ImportSummary:
    """Count the answers per status (pure)."""
    s = ImportSummary(events=len(parsed.events) + parsed.repeats, waited=waited)
    s.duplicates = parsed.repeats
    if not waited:
        return s
    for ev in parsed.events:
        ack = acks.get(ev.id)
        if ack is None:
            s.unanswered += 1
        elif ack.status == "applied":
            s.applied += 1
        elif ack.status == "duplicate":
            s.duplicates += 1
        else:
            s.rejected.append((ev, ack.reason or "no reason given"))
    return s


def run_import(
    broker: BrokerSettings,
    file: str | Path,
    *,
    prefix: str = "uns/v1",
    host_id: str | None = None,
    wait: float = 10.0,
    skip_bad: bool = False,
    in_flight: int = 1000,
    progress: bool = False,
    echo: Callable[..., Any] = print,
    key: str | None = None,
    model: str | PlantModel | None = None,
    records: bool = False,
    ack_key: AckKey | None = None,
    passphrase: bytes | None = None,
) -> int:
    """Validate, publish and await ``file``'s events; print a summary; return the exit code.

    ``records``: the file holds batch records (:mod:`uns.client.records_import`), sent to
    ``<prefix>/_records/<path>``; else context events (``model`` maps a BatchML file's
    equipment; a plant model or its file).  With ``key`` (a private key file,
    :mod:`uns.keyring`) every event is signed by it (a signature it had is replaced).
    ``passphrase`` opens an encrypted ``key``.  With ``ack_key`` only acknowledgements
    signed by the engine's key count
    (uns.client.context.engine_ack_key); without one the summary says they were
    unauthenticated.  ``echo(text, err=True)`` writes to stderr (typer.echo's signature)."""
    ack_topic = ack_filter(prefix, host_id)
    signing = load_private_key(key, passphrase) if key is not None else None
    started = time.perf_counter()
    if records:
        from uns.client.records_import import read_records  # noqa: PLC0415

        parsed = read_records(file)
    else:
        parsed = read_events(file, model=model)
    channel = "_records" if records else "_context"
    for bad in parsed.bad:
        echo(f"{file}: {bad}", err=True)
    if parsed.bad and not skip_bad:
        echo(
            f"uns: error: {len(parsed.bad)} bad line(s) in {file}; nothing was sent "
            "(fix them, or pass --skip-bad to import the rest)",
            err=True,
        )
        return 1
    outgoing = []
    for ev in parsed.events:
        body = ev.event if signing is None else sign_event(signing[1], signing[0], ev.path, ev.event)
        outgoing.append(Outgoing(f"{prefix}/{channel}/{ev.path}", json.dumps(body).encode(), ev.id))
    acks = _send_with_progress(broker, outgoing, ack_topic, wait, in_flight, progress, ack_key)
    summary = summarize(parsed, acks, waited=wait > 0)
    summary.skipped = len(parsed.bad)
    summary.seconds = time.perf_counter() - started
    for ev, reason in summary.rejected:
        echo(f"{file}: {ev.where}: rejected: {reason}", err=True)
    echo(summary.line())
    if wait > 0 and ack_key is None:
        echo(UNAUTHENTICATED, err=True)
    if summary.unanswered:
        echo(
            f"uns: {summary.unanswered} event(s) unanswered within {wait:g} s: is an engine with "
            f"prefix {prefix!r} running? Importing the file again is safe.",
            err=True,
        )
    return summary.exit_code


def _send_with_progress(
    broker: BrokerSettings,
    outgoing: list[Outgoing],
    ack_topic: str,
    wait: float,
    in_flight: int,
    progress: bool,
    ack_key: AckKey | None,
) -> dict[str, Ack]:
    if not progress or not outgoing:
        return asyncio.run(
            send_events(
                broker, outgoing, ack_topic=ack_topic, wait=wait, in_flight=in_flight, ack_key=ack_key
            )
        )
    from rich.console import Console  # noqa: PLC0415 - only for a terminal
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task("import", total=len(outgoing))
        return asyncio.run(
            send_events(
                broker,
                outgoing,
                ack_topic=ack_topic,
                wait=wait,
                in_flight=in_flight,
                on_answer=lambda n: bar.update(task, completed=n),
                ack_key=ack_key,
            )
        )
