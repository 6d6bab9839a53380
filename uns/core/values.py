"""Renderings of typed Sparkplug values for the lake and for JSON (pure).

- :func:`value_text`: the exact text of a value (lake ``value_text``): integers
  exact (UInt64 max included), floats by ``repr`` (``nan``, ``inf``), booleans
  ``true``/``false``, strings as-is, bytes as base64, arrays / DataSets /
  Templates as JSON; ``None`` for a null value.
- :func:`value_double`: numbers and booleans as float (lake ``value_double``),
  ``None`` otherwise.
- :func:`json_value`: a JSON-serialisable value for normalized events:
  non-finite floats become the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"``; bytes become base64 text.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import DataSet, MetricValue, Template

__all__ = ["json_value", "value_double", "value_text"]


def _json_float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def json_value(value: MetricValue) -> Any:
    """A JSON-ready rendering of a typed value (see module docstring)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, DataSet):
        return {
            "columns": list(value.columns),
            "types": [DataType(t).name for t in value.types],
            "rows": [[json_value(c) for c in row] for row in value.rows],
        }
    if isinstance(value, Template):
        return {
            "template_ref": value.template_ref,
            "version": value.version,
            "is_definition": bool(value.is_definition),
            "parameters": {p.name: json_value(p.value) for p in value.parameters},
            "metrics": {m.name: json_value(m.value) for m in value.metrics},
        }
    return [json_value(v) for v in value]


def value_text(value: MetricValue) -> str | None:
    """Exact text of a typed value (see module docstring)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return json.dumps(json_value(value), separators=(",", ":"))


def value_double(value: MetricValue) -> float | None:
    """Numbers and booleans as float; ``None`` for anything else."""
    if isinstance(value, bool | int):
        try:
            return float(value)
        except OverflowError:  # pragma: no cover - ints beyond float range
            return None
    if isinstance(value, float):
        return value
    return None
