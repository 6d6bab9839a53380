"""Batch records: materials charged, quality results, operator comments (pure).

A batch record event is JSON on ``<prefix>/_records/<path>`` (schema
``schemas/record-event.schema.json``, docs/batches.md section 8)::

    {"id": "lims-88121", "ts": 1767261600000, "kind": "result", "user": "a.lab", "source": "lims",
     "test": "Assay", "value": 99.2, "unit": "%", "low": 95, "high": 105, "status": "pass"}

Common fields: ``id`` (optional, as for context: 1-128 characters; default
``auto-`` and 32 hex digits of the record's content), ``ts`` (epoch ms UTC,
optional: default the time the engine received it), ``kind``, ``user``,
``source``, ``signature`` (optional, :mod:`uns.core.signing`, over the same
canonical form as a context event).  Per kind:

- ``material``: ``material``, ``lot``, ``quantity``, ``unit``, ``status``
  (``released``, ``quarantine``, ``rejected``), ``expiry`` (ISO 8601; a date
  means the end of that day, UTC);
- ``result``: ``test``, ``value`` (a number or text), ``unit``, ``low``,
  ``high`` (either may be absent; inclusive), ``status`` (the lab's own
  verdict: ``pass``, ``fail``, ``pending``; optional);
- ``comment``: ``text`` (an operator comment or a manual entry).

A record is validated whole (:func:`parse_record`) and becomes one row of the
lake's ``materials``, ``results`` or ``comments`` table.  It belongs to the
batch its path's context has at its ``ts``, exactly as a measurement does
(the lake's views compute that by event time).  Its identity follows the rules
of context events: each id is applied once, and an id that comes again with
other content is rejected as a conflict (``content_sha256`` is what an id
stands for).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from uns.core.context import AUTO_ID_PREFIX, MAX_ID_LENGTH, check_context_path
from uns.core.intake_rules import check_event_ts
from uns.errors import ContextError, IntakeError, RecordError

__all__ = [
    "MATERIAL_STATUSES",
    "MAX_FUTURE_MS",
    "RECORD_KINDS",
    "RECORD_TABLES",
    "RESULT_STATUSES",
    "CommentRecord",
    "MaterialRecord",
    "Record",
    "ResultRecord",
    "parse_expiry",
    "parse_record",
    "record_content",
]

#: how far after the engine's clock a record's ``ts`` may be by default (the engine passes
#: ``context.max_future_s``): a clock a little ahead is tolerated, a record dated next month
#: is a mistake
MAX_FUTURE_MS: Final = 24 * 3600 * 1000
MATERIAL_STATUSES: Final = ("released", "quarantine", "rejected")
RESULT_STATUSES: Final = ("pass", "fail", "pending")
MAX_TEXT: Final = 4096  # comment text, result value text, user, source
MAX_NAME: Final = 256  # material, lot, test, unit
_COMMON: Final = frozenset({"id", "ts", "kind", "user", "source", "signature"})
_DAY_MS: Final = 86_400_000
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(slots=True)
class Record:
    """What every record has (the first columns of its lake table)."""

    TABLE: ClassVar[str] = ""
    KIND: ClassVar[str] = ""

    ts: int
    received_at: int
    path: str
    record_id: str
    user: str | None
    source: str
    #: the trusted key that signed the record (uns.core.signing); None when unsigned
    signer: str | None
    #: SHA-256 of the record's content (:func:`record_content`): what its id stands for
    content_sha256: str


@dataclass(slots=True)
class MaterialRecord(Record):
    """A lot of a material charged to the batch (the ``materials`` table)."""

    TABLE: ClassVar[str] = "materials"
    KIND: ClassVar[str] = "material"

    material: str
    lot: str
    quantity: float
    unit: str | None
    status: str
    expiry: int | None  # epoch ms: the lot may be used up to and including this instant


@dataclass(slots=True)
class ResultRecord(Record):
    """An in-process or release test result (the ``results`` table)."""

    TABLE: ClassVar[str] = "results"
    KIND: ClassVar[str] = "result"

    test: str
    value: float | str  # a finite number or text
    unit: str | None
    low: float | None
    high: float | None
    status: str | None

    @property
    def out_of_specification(self) -> bool:
        """OOS: a numeric value outside ``[low, high]``, or the lab's verdict ``fail``."""
        if self.status == "fail":
            return True
        if isinstance(self.value, str):
            return False
        return (self.low is not None and self.value < self.low) or (
            self.high is not None and self.value > self.high
        )


@dataclass(slots=True)
class CommentRecord(Record):
    """An operator comment or a manual entry (the ``comments`` table)."""

    TABLE: ClassVar[str] = "comments"
    KIND: ClassVar[str] = "comment"

    text: str


RECORD_KINDS: Final[dict[str, type[Record]]] = {
    "material": MaterialRecord,
    "result": ResultRecord,
    "comment": CommentRecord,
}
#: the lake tables of the records, in the order of lake.tables.TABLES
RECORD_TABLES: Final = tuple(cls.TABLE for cls in RECORD_KINDS.values())
_FIELDS: Final[dict[str, frozenset[str]]] = {
    "material": frozenset({"material", "lot", "quantity", "unit", "status", "expiry"}),
    "result": frozenset({"test", "value", "unit", "low", "high", "status"}),
    "comment": frozenset({"text"}),
}


# ------------------------------------------------------------------ field checks


def _text(event: Mapping[str, Any], name: str, limit: int, *, required: bool) -> str | None:
    if name not in event or event[name] is None:
        if required:
            raise RecordError(f"{name} is required")
        return None
    value = event[name]
    if not isinstance(value, str) or not value or len(value) > limit:
        raise RecordError(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def _number(event: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    if name not in event or event[name] is None:
        if required:
            raise RecordError(f"{name} is required")
        return None
    value = event[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError(f"{name} must be a finite number, not {value!r:.40}")
    return float(value)


def _choice(event: Mapping[str, Any], name: str, allowed: tuple[str, ...], *, required: bool) -> str | None:
    value = event.get(name)
    if value is None and not required:
        return None
    if value not in allowed:
        raise RecordError(f"{name} must be one of {', '.join(allowed)}, not {value!r:.40}")
    return str(value)


def parse_expiry(value: object) -> int:
    """An expiry as epoch ms: an ISO 8601 date-time with its zone, or a date (the lot may
    be used to the end of that day, UTC: ``2027-03-31`` is ``2027-03-31T23:59:59.999Z``)."""
    if not isinstance(value, str) or not value:
        raise RecordError(f"expiry must be an ISO 8601 date or date-time, not {value!r:.40}")
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return (day - _EPOCH.date()).days * _DAY_MS + _DAY_MS - 1
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(f"expiry {text!r:.40} is not an ISO 8601 date or date-time") from None
    if when.tzinfo is None:
        raise RecordError(f"expiry {text!r:.40} has no time zone (add Z for UTC)")
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)


def _check_ts(ts: object, now_ms: int, max_future_ms: int) -> int:
    """The record's time, held to the intake rules' window (:func:`check_event_ts`)."""
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise RecordError(f"ts must be an integer (epoch ms), not {ts!r:.40}")
    try:
        return check_event_ts(ts, now_ms, max_future_ms)
    except IntakeError as exc:
        raise RecordError(exc.reason) from None


# ------------------------------------------------------------------ the record


def record_content(path: str, ts: int, kind: str, fields: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a record's content: the canonical JSON (sorted keys, no spaces,
    UTF-8) of its path, time, kind, who (user, source) and its kind's fields as validated.
    Its ``id`` and ``signature`` are not content."""
    body = {"path": path, "ts": ts, "kind": kind, **fields}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _kind_fields(kind: str, event: Mapping[str, Any]) -> dict[str, Any]:
    if kind == "material":
        material = _text(event, "material", MAX_NAME, required=True)
        lot = _text(event, "lot", MAX_NAME, required=True)
        quantity = _number(event, "quantity", required=True)
        assert quantity is not None
        if quantity < 0:
            raise RecordError(f"quantity must not be negative, not {quantity:g}")
        expiry = event.get("expiry")
        return {
            "material": material,
            "lot": lot,
            "quantity": quantity,
            "unit": _text(event, "unit", MAX_NAME, required=False),
            "status": _choice(event, "status", MATERIAL_STATUSES, required=True),
            "expiry": None if expiry is None else parse_expiry(expiry),
        }
    if kind == "result":
        value = event.get("value")
        if isinstance(value, str):
            if not value or len(value) > MAX_TEXT:
                raise RecordError(f"value text must have 1-{MAX_TEXT} characters")
        else:
            value = _number(event, "value", required=True)
        low, high = _number(event, "low", required=False), _number(event, "high", required=False)
        if low is not None and high is not None and low > high:
            raise RecordError(f"low {low:g} is above high {high:g}")
        return {
            "test": _text(event, "test", MAX_NAME, required=True),
            "value": value,
            "unit": _text(event, "unit", MAX_NAME, required=False),
            "low": low,
            "high": high,
            "status": _choice(event, "status", RESULT_STATUSES, required=False),
        }
    return {"text": _text(event, "text", MAX_TEXT, required=True)}


def parse_record(
    path: str,
    event: Mapping[str, Any],
    received_at: int,
    *,
    signer: str | None = None,
    max_future_ms: int = MAX_FUTURE_MS,
) -> Record:
    """The record of an event on ``path``, validated whole (see the module doc), or
    :class:`~uns.errors.RecordError` saying what is wrong.  ``ts`` defaults to
    ``received_at``; one before 2000 or more than ``max_future_ms`` after ``received_at``
    is refused (the intake rules' window, :func:`uns.core.intake_rules.check_event_ts`).
    ``signer``: the key whose signature the caller verified."""
    try:
        check_context_path(path)
        if not isinstance(event, Mapping):
            raise RecordError("a record must be a JSON object")
        kind = event.get("kind")
        if kind not in RECORD_KINDS:
            raise RecordError(f"kind must be one of {', '.join(RECORD_KINDS)}, not {kind!r:.40}")
        allowed = _COMMON | _FIELDS[kind]
        unknown = set(event) - allowed
        if unknown:
            raise RecordError(f"unknown fields {sorted(unknown)} for a {kind} (allowed: {sorted(allowed)})")
        ts = _check_ts(event.get("ts", received_at), received_at, max_future_ms)
        user = _text(event, "user", MAX_TEXT, required=False)
        source = _text(event, "source", MAX_TEXT, required=False) or ""
        fields = _kind_fields(kind, event)
        content = record_content(path, ts, kind, {"user": user, "source": source, **fields})
        ident = event.get("id", AUTO_ID_PREFIX + content[:32])
        if not isinstance(ident, str) or not 1 <= len(ident) <= MAX_ID_LENGTH:
            raise RecordError(f"id must be a string of 1-{MAX_ID_LENGTH} characters, not {ident!r:.80}")
    except ContextError as exc:  # RecordError, or the path's ContextError: one kind of error
        raise RecordError(exc.reason, path=path if isinstance(path, str) else None) from None
    return RECORD_KINDS[kind](ts, received_at, path, ident, user, source, signer, content, **fields)
