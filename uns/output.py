"""Rows as text: a table, CSV or JSON (the command line, the demo and the docs print them)."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["FORMATS", "render_rows"]

FORMATS = ("table", "csv", "json")


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    plain = _plain(value)
    return (
        plain
        if isinstance(plain, str)
        else json.dumps(plain)
        if isinstance(plain, list | dict)
        else str(plain)
    )


def render_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    """Render a result set; ``fmt`` is one of :data:`FORMATS`."""
    if fmt == "json":
        return json.dumps(
            [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows], indent=2
        )
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else _cell(v) for v in row])
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    widths = [min(w, 60) for w in widths]

    def line(values: Sequence[str]) -> str:
        return " | ".join(
            (v if len(v) <= w else v[: w - 1] + "…").ljust(w) for v, w in zip(values, widths, strict=True)
        )

    sep = "-+-".join("-" * w for w in widths)
    out = [
        line(list(columns)),
        sep,
        *(line(r) for r in cells),
        f"({len(rows)} row{'s' if len(rows) != 1 else ''})",
    ]
    return "\n".join(out)
