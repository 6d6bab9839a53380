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
- **BatchML** (``.xml``, or a file whose first character is ``<``): an ISA-88
  ``BatchInformation`` export (:mod:`uns.client.batchml`), its equipment ids mapped by
  the plant model.
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

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uns.client.batchml import batchml_events
from uns.clock import parse_time
from uns.core.context import event_id, parse_context_event
from uns.core.model import PlantModel
from uns.core.signing import SIGNATURE_FIELD
from uns.errors import ContextError, UnsError

__all__ = [
    "CSV_COLUMNS",
    "CSV_SOURCE",
    "BadLine",
    "Collector",
    "CsvRow",
    "ImportEvent",
    "ParsedFile",
    "context_identity",
    "group_rows",
    "parse_batchml_file",
    "parse_csv",
    "parse_jsonl",
    "read_events",
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


def context_identity(path: str, event: dict[str, Any]) -> str:
    """The id of a context event of a file, validated with the engine's rules
    (:class:`~uns.errors.ContextError` when it is bad)."""
    changes = parse_context_event(path, event, 0)
    # the changes carry the event's id; without a ts they would carry the receive time's
    eid = changes[0].event_id if changes and "ts" in event else None
    return eid or event_id(path, event)


class Collector:
    """Validates candidate events with the engine's rules (``identify``: the event's id,
    or :class:`~uns.errors.ContextError`) and gives each its id."""

    def __init__(self, identify: Callable[[str, dict[str, Any]], str] = context_identity) -> None:
        self.parsed = ParsedFile()
        self._identify = identify
        self._seen: dict[str, tuple[int, str, dict[str, Any]]] = {}

    def add(self, line: int, last: int, path: object, event: dict[str, Any]) -> None:
        bad = self.parsed.bad
        if not isinstance(path, str):
            bad.append(BadLine(line, f'"path" must be a string, not {path!r:.80}', last))
            return
        path = path.strip().strip("/")
        try:
            eid = self._identify(path, event)
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


def parse_jsonl(text: str, collector: Collector | None = None) -> ParsedFile:
    """The events of a JSON Lines text (one event with its "path" per line)."""
    out = collector or Collector()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            out.parsed.bad.append(BadLine(number, f"not JSON: {exc}"))
            continue
        if not isinstance(doc, dict):
            out.parsed.bad.append(BadLine(number, "a line must be a JSON object (an event with its path)"))
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
    out = Collector()
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


def read_events(file: str | Path, *, model: str | PlantModel | None = None) -> ParsedFile:
    """Read and validate a JSON Lines, CSV or BatchML (``.xml``, with the plant ``model``
    or its file that maps its equipment ids) file (by suffix, else by its first character)."""
    path = Path(file)
    suffix = path.suffix.lower()
    known = (".jsonl", ".ndjson", ".json", ".csv")
    if suffix == ".xml" or (suffix not in known and _starts_with(path, b"<")):
        return parse_batchml_file(path, model)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnsError(f"cannot read {file}: {exc}") from exc
    if suffix in (".jsonl", ".ndjson", ".json"):
        return parse_jsonl(text)
    if suffix == ".csv":
        return parse_csv(text)
    return parse_jsonl(text) if text.lstrip().startswith("{") else parse_csv(text)


def _starts_with(path: Path, prefix: bytes) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(prefix)
    except OSError:
        return False


def parse_batchml_file(path: Path, model: str | PlantModel | None) -> ParsedFile:
    """The context events of a BatchML file (:mod:`uns.client.batchml`), validated; ``model``
    (the plant model, or its file) maps the file's equipment ids to paths."""
    if not model:
        raise UnsError(
            f"{path}: a BatchML file needs the plant model to map its equipment ids "
            "(--model FILE, or engine.model of the config)"
        )
    if isinstance(model, str):
        from uns.engine.plant import load_model  # noqa: PLC0415 - only a BatchML import reads a model

        model = load_model(model)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    out = Collector()
    for line, where, event in batchml_events(data, model, file=str(path)):
        out.add(line, line, where, event)
    return out.parsed
