"""`uns context import FILE`: many context events from a file, each acknowledged; safe to repeat.

The file is read and validated whole before anything is sent, with the
engine's own rules (:func:`uns.core.context.parse_context_event`), and every
error names its line.  Each event gets an id: its own ``id`` or
:func:`uns.core.context.event_id` of its content, so an engine that
deduplicates by id answers ``duplicate`` to every event of a file imported a
second time.  Formats:

- **JSON Lines** (``.jsonl``, ``.ndjson``, or a file whose first character is
  ``{``): one context event per line, with its ``"path"`` added; blank lines
  are skipped.
- **CSV** (header ``ts,path,key,value,user,reason``; ``user`` and ``reason``
  may be left out): one key per row; consecutive rows with the same ts
  (epoch ms or ISO 8601), path, user and reason form one event.  An empty
  ``user``/``reason`` cell means none; an empty ``value`` sets ``""`` (hides
  an inherited value); clearing a key needs JSON Lines.  CSV events have
  ``source`` ``"uns-import"``.

An event is taken or skipped whole: a bad row of a CSV event makes the
whole event bad.  The same event twice in a file (same id, same content) is
sent once and counted as a duplicate; the same id with other content is an
error.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uns.client.context import UNAUTHENTICATED, Ack, AckKey, Outgoing, ack_filter, send_events
from uns.clock import parse_time
from uns.core.context import event_id, parse_context_event
from uns.core.signing import SIGNATURE_FIELD, sign_event
from uns.errors import ContextError, UnsError
from uns.keyring import load_private_key
from uns.mqtt.settings import BrokerSettings

__all__ = [
    "CSV_COLUMNS",
    "CSV_SOURCE",
    "BadLine",
    "CsvRow",
    "ImportEvent",
    "ImportSummary",
    "ParsedFile",
    "group_rows",
    "parse_csv",
    "parse_jsonl",
    "read_events",
    "run_import",
]

CSV_COLUMNS = ("ts", "path", "key", "value", "user", "reason")
_CSV_REQUIRED = ("ts", "path", "key", "value")
CSV_SOURCE = "uns-import"


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line (or the lines of one CSV event) that cannot be imported, and why."""

    line: int
    message: str
    last: int | None = None  # the last line of a multi-line CSV event

    def __str__(self) -> str:
        where = f"line {self.line}" if self.last in (None, self.line) else f"lines {self.line}-{self.last}"
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class ImportEvent:
    """One valid context event of the file: where it was, its path, its JSON and its id."""

    line: int
    last: int
    path: str
    event: dict[str, Any]  # with "id"
    id: str

    @property
    def where(self) -> str:
        return f"line {self.line}" if self.last == self.line else f"lines {self.line}-{self.last}"


@dataclass(slots=True)
class ParsedFile:
    """The file's valid events in file order, its bad lines, and events repeated within it."""

    events: list[ImportEvent] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    repeats: int = 0  # events identical to an earlier one of the file (sent once)


class _Collector:
    """Validates candidate events with the engine's rules and gives each its id."""

    def __init__(self) -> None:
        self.parsed = ParsedFile()
        self._seen: dict[str, tuple[int, str, dict[str, Any]]] = {}

    def add(self, line: int, last: int, path: object, event: dict[str, Any]) -> None:
        bad = self.parsed.bad
        if not isinstance(path, str):
            bad.append(BadLine(line, f'"path" must be a string, not {path!r:.80}', last))
            return
        path = path.strip().strip("/")
        try:
            changes = parse_context_event(path, event, 0)
            # the changes carry the event's id; without a ts they would carry the receive time's
            eid = changes[0].event_id if changes and "ts" in event else None
            eid = eid or event_id(path, event)
        except ContextError as exc:
            bad.append(BadLine(line, exc.reason, last))
            return
        earlier = self._seen.get(eid)
        body = {k: v for k, v in event.items() if k != "id"}
        if earlier is not None:
            if (earlier[1], earlier[2]) == (path, body):
                self.parsed.repeats += 1
            else:
                bad.append(BadLine(line, f"id {eid!r} is already used by line {earlier[0]}", last))
            return
        self._seen[eid] = (line, path, body)
        # an event signed at its source without an id keeps its content as signed (the
        # engine derives the same id from it)
        sent = event if SIGNATURE_FIELD in event and "id" not in event else {"id": eid, **body}
        self.parsed.events.append(ImportEvent(line, last, path, sent, eid))


# ------------------------------------------------------------------ JSON Lines


def parse_jsonl(text: str) -> ParsedFile:
    """The events of a JSON Lines text (one event with its "path" per line)."""
    out = _Collector()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            out.parsed.bad.append(BadLine(number, f"not JSON: {exc}"))
            continue
        if not isinstance(doc, dict):
            out.parsed.bad.append(
                BadLine(number, "a line must be a JSON object (a context event with its path)")
            )
            continue
        if "path" not in doc:
            out.parsed.bad.append(BadLine(number, 'no "path"'))
            continue
        path = doc.pop("path")
        out.add(number, number, path, doc)
    return out.parsed


# ------------------------------------------------------------------ CSV


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One CSV row: ``ts`` in epoch ms, or the cell's text when it is not a time."""

    line: int
    ts: int | str
    path: str
    key: str
    value: str
    user: str | None
    reason: str | None
    error: str | None = None  # why the row itself is bad

    @property
    def group(self) -> tuple[int | str, str, str | None, str | None]:
        return (self.ts, self.path, self.user, self.reason)


def group_rows(rows: list[CsvRow]) -> list[list[CsvRow]]:
    """Consecutive rows with the same ts, path, user and reason: one event each."""
    groups: list[list[CsvRow]] = []
    for row in rows:
        if groups and groups[-1][-1].group == row.group:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _csv_rows(text: str, bad: list[BadLine]) -> Iterator[CsvRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        bad.append(BadLine(1, f"bad CSV: {exc}"))
        return
    names = [h.strip().lower() for h in header]
    unknown = [n for n in names if n not in CSV_COLUMNS]
    missing = [n for n in _CSV_REQUIRED if n not in names]
    if unknown or missing or len(set(names)) != len(names):
        bad.append(
            BadLine(
                1,
                f"the header must be {','.join(CSV_COLUMNS)} (user and reason optional), "
                f"not {','.join(header)}",
            )
        )
        return
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            bad.append(BadLine(line, f"bad CSV: {exc}"))
            return
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            bad.append(BadLine(line, f"{len(cells)} fields, the header has {len(names)}"))
            continue
        row = dict(zip(names, cells, strict=True))
        ts_text = row["ts"].strip()
        ts: int | str = ts_text
        error = None
        if not ts_text:
            error = "ts is empty"
        else:
            try:
                ts = parse_time(ts_text)
            except UnsError as exc:
                error = str(exc)
        yield CsvRow(
            line,
            ts,
            row["path"].strip(),
            row["key"].strip(),
            row["value"],
            row.get("user", "").strip() or None,
            row.get("reason", "").strip() or None,
            error,
        )


def parse_csv(text: str) -> ParsedFile:
    """The events of a CSV text (header ``ts,path,key,value,user,reason``)."""
    bad: list[BadLine] = []
    rows = list(_csv_rows(text, bad))
    out = _Collector()
    out.parsed.bad.extend(bad)
    for group in group_rows(rows):
        first, last = group[0].line, group[-1].line
        errors = [r for r in group if r.error is not None]
        if errors:
            for r in errors:
                message = r.error or ""
                if len(group) > 1:
                    message += f" (the event of lines {first}-{last} is not imported)"
                out.parsed.bad.append(BadLine(r.line, message))
            continue
        values: dict[str, str] = {}
        repeated: CsvRow | None = None
        for r in group:
            if r.key in values:
                repeated = r
                break
            values[r.key] = r.value
        if repeated is not None:
            out.parsed.bad.append(
                BadLine(repeated.line, f"key {repeated.key!r} twice in the event of lines {first}-{last}")
            )
            continue
        head = group[0]
        assert isinstance(head.ts, int)
        event: dict[str, Any] = {"ts": head.ts, "set": values, "source": CSV_SOURCE}
        if head.user is not None:
            event["user"] = head.user
        if head.reason is not None:
            event["reason"] = head.reason
        out.add(first, last, head.path, event)
    out.parsed.bad.sort(key=lambda b: b.line)
    return out.parsed


def read_events(file: str | Path) -> ParsedFile:
    """Read and validate a JSON Lines or CSV file (by suffix, else by its first character)."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnsError(f"cannot read {file}: {exc}") from exc
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return parse_jsonl(text)
    if suffix == ".csv":
        return parse_csv(text)
    return parse_jsonl(text) if text.lstrip().startswith("{") else parse_csv(text)


# ------------------------------------------------------------------ the import


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
    ack_key: AckKey | None = None,
) -> int:
    """Validate, publish and await ``file``'s events; print a summary; return the exit code.

    With ``key`` (a private key file, :mod:`uns.keyring`) every event is signed by it
    (a signature it had is replaced).  With ``ack_key`` only acknowledgements signed by
    the engine's key count (uns.client.context.engine_ack_key); without one the summary
    says they were unauthenticated.  ``echo(text, err=True)`` writes to stderr
    (typer.echo's signature)."""
    ack_topic = ack_filter(prefix, host_id)
    signing = load_private_key(key) if key is not None else None
    started = time.perf_counter()
    parsed = read_events(file)
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
        outgoing.append(Outgoing(f"{prefix}/_context/{ev.path}", json.dumps(body).encode(), ev.id))
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
