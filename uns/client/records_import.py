"""`uns records import FILE`: batch records (materials, results, comments) from a file.

Read and validated whole before anything is sent, with the engine's own rules
(:func:`uns.core.records.parse_record`), every error naming its line; each record gets
its id (its own ``id``, or ``auto-`` of its content), so importing a file again changes
nothing.  A record of a file must have its ``ts`` (a file tells what happened when).

- **JSON Lines** (``.jsonl``, ``.ndjson``, ``.json``, or a first character ``{``): one
  record event per line with its ``"path"`` added (``schemas/record-event.schema.json``).
- **CSV**: a header naming some of :data:`RECORD_CSV_COLUMNS` (``ts``, ``path`` and
  ``kind`` required), one record per row; an empty cell is a field left out; ``quantity``,
  ``low`` and ``high`` are numbers, ``value`` a number when it reads as one, else text;
  ``ts`` epoch ms or ISO 8601 (UTC when it has no zone).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Final

from uns.client.importer import BadLine, Collector, ParsedFile, parse_jsonl
from uns.clock import now_ms, parse_time
from uns.core.records import parse_record
from uns.errors import RecordError, UnsError

__all__ = ["RECORD_CSV_COLUMNS", "parse_records_csv", "read_records", "record_identity"]

RECORD_CSV_COLUMNS: Final = (
    "ts", "path", "kind", "id", "user", "source",
    "material", "lot", "quantity", "unit", "status", "expiry",
    "test", "value", "low", "high", "text",
)  # fmt: skip
_REQUIRED: Final = ("ts", "path", "kind")
_NUMBERS: Final = ("quantity", "low", "high")


def record_identity(path: str, event: dict[str, Any]) -> str:
    """The id of a record of a file, validated with the engine's rules (RecordError)."""
    if "ts" not in event:
        raise RecordError("ts is required in a file (when the material was charged, the sample taken, ...)")
    return parse_record(path, event, now_ms()).record_id


def _cell_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _row_event(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as a record event (empty cells left out); RecordError for a bad cell."""
    event: dict[str, Any] = {}
    for name, raw in row.items():
        text = raw.strip() if name != "text" else raw
        if name == "path" or not text.strip():
            continue
        if name == "ts":
            try:
                event["ts"] = parse_time(text)
            except UnsError as exc:
                raise RecordError(str(exc)) from None
        elif name in _NUMBERS:
            number = _cell_number(text)
            if number is None:
                raise RecordError(f"{name} {text!r} is not a number")
            event[name] = number
        elif name == "value":
            number = _cell_number(text)
            event[name] = text if number is None else number
        else:
            event[name] = text
    return event


def parse_records_csv(text: str) -> ParsedFile:
    """The records of a CSV text (see the module doc)."""
    out = Collector(record_identity)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return out.parsed
    except csv.Error as exc:
        out.parsed.bad.append(BadLine(1, f"bad CSV: {exc}"))
        return out.parsed
    unknown = [h for h in header if h not in RECORD_CSV_COLUMNS]
    missing = [h for h in _REQUIRED if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        out.parsed.bad.append(
            BadLine(1, f"the header must name ts, path, kind and any of {', '.join(RECORD_CSV_COLUMNS[3:])}")
        )
        return out.parsed
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return out.parsed
        except csv.Error as exc:
            out.parsed.bad.append(BadLine(line, f"bad CSV: {exc}"))
            return out.parsed
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            out.parsed.bad.append(BadLine(line, f"{len(cells)} fields, the header has {len(header)}"))
            continue
        row = dict(zip(header, cells, strict=True))
        try:
            event = _row_event(row)
        except RecordError as exc:
            out.parsed.bad.append(BadLine(line, exc.reason))
            continue
        out.add(line, line, row["path"], event)


def read_records(file: str | Path) -> ParsedFile:
    """Read and validate a JSON Lines or CSV file of records (by suffix, else by its first
    character)."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnsError(f"cannot read {file}: {exc}") from exc
    suffix = path.suffix.lower()
    jsonl = suffix in (".jsonl", ".ndjson", ".json") or (suffix != ".csv" and text.lstrip().startswith("{"))
    return parse_jsonl(text, Collector(record_identity)) if jsonl else parse_records_csv(text)
