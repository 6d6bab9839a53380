"""How ``uns topics`` and ``uns watch`` show a value to a person (pure, no I/O).

A Sparkplug ``Float`` is 32 bits: decoded into Python's 64-bit float, 9.7 becomes
9.699999809265137, a digit string the device never meant.  It is shown as the
shortest text that reads back as the same 32-bit float (``9.7``).  A ``DateTime``
is epoch milliseconds on the wire; it is shown as ISO 8601 UTC.  A normalized UNS
event (``schemas/uns-event.schema.json``) is shown by its value first, so a
shortened line never loses it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
from typing import Any

__all__ = ["float32_text", "iso_ms", "plain_value", "shown", "uns_event_text"]

_F32 = struct.Struct("<f")
#: how long one shown value or line may get
LIMIT = 80


def float32_text(x: float) -> str:
    """The shortest decimal text that reads back as the 32-bit float nearest ``x``."""
    if not math.isfinite(x):
        return repr(x)
    (target,) = _F32.unpack(_F32.pack(x))
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        text = f"{target:.{digits}g}"
        try:
            if _F32.unpack(_F32.pack(float(text)))[0] == target:
                return repr(float(text))
        except OverflowError:  # rounded up beyond the largest float32: more digits
            continue
    return repr(target)  # pragma: no cover - unreachable: 9 digits suffice


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC (``2026-11-25T10:00:00.123Z``)."""
    try:
        when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)  # beyond what a calendar date can say: the number itself
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def plain_value(value: Any, datatype: str | None) -> Any:
    """``value`` (as :func:`uns.core.values.json_value` gives it) as a person reads it:
    Float and FloatArray elements by :func:`float32_text` (as a number), DateTime and
    DateTimeArray elements as ISO 8601 text; anything else unchanged."""
    if datatype in ("Float", "FloatArray"):
        return _each(value, lambda v: float(float32_text(v)) if isinstance(v, float) else v)
    if datatype in ("DateTime", "DateTimeArray"):
        return _each(value, lambda v: iso_ms(v) if isinstance(v, int) and not isinstance(v, bool) else v)
    return value


def shown(value: Any, datatype: str | None = None, limit: int = LIMIT) -> str:
    """One value as text of at most ``limit`` characters (``null`` for none)."""
    value = plain_value(value, datatype)
    if value is None:
        text = "null"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, float) and math.isfinite(value):
        text = float32_text(value) if datatype in ("Float", "FloatArray") else repr(value)
    else:
        text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def uns_event_text(body: Any, limit: int = LIMIT) -> str | None:
    """A normalized UNS event (per metric, or per device with ``metrics``) as one line that
    starts with its values: ``37.02 degC <Double> (batch_id=B2026-0001, phase=growth)``;
    None for anything else."""
    if not isinstance(body, dict):
        return None
    if "metric" in body and "value" in body:
        text = _metric_text(body, limit)
    elif isinstance(body.get("metrics"), list) and all(isinstance(m, dict) for m in body["metrics"]):
        text = "  ".join(f"{m.get('metric')}={_metric_text(m, limit)}" for m in body["metrics"])
    else:
        return None
    context = body.get("context")
    if isinstance(context, dict) and context:
        text += "  (" + ", ".join(f"{k}={v}" for k, v in context.items()) + ")"
    return text if len(text) <= 3 * limit else text[: 3 * limit - 3] + "..."


def _metric_text(m: dict[str, Any], limit: int) -> str:
    datatype = m.get("datatype") if isinstance(m.get("datatype"), str) else None
    unit = f" {m['unit']}" if m.get("unit") else ""
    quality = f" ({m['quality']})" if m.get("quality") not in (None, "good") else ""
    return f"{shown(m.get('value'), datatype, limit)}{unit}{quality}"


def _each(value: Any, one: Any) -> Any:
    return [one(v) for v in value] if isinstance(value, list) else one(value)
