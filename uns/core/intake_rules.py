"""The rules every intake of JSON events from MQTT applies: context now, records later (pure).

Whoever can publish on ``<prefix>/_context/...`` (and, with issue 31, on
``<prefix>/_records/...``) reaches the engine with bytes it chose.  Before any of it
is used, an intake holds it to these rules, each failure an
:class:`~uns.errors.IntakeError` whose ``reason`` goes into the acknowledgement and
the rejected row:

- **the topic's path** (:func:`check_topic_path`): present (the intake's own topic
  without a path is not one), every level non-empty, no ``.`` or ``..`` level (an
  ISA-95 path names equipment, never a relative step), no ``+``/``#``, no control
  characters, at most :data:`MAX_PATH_LEVELS` levels and :data:`MAX_PATH_CHARS`
  characters;
- **the payload** (:func:`decode_json_object`): at most :data:`MAX_EVENT_BYTES`, UTF-8
  (no byte order mark: UTF-16/32 JSON is refused), one JSON object, no key twice in any
  object (last-one-wins would let two readers see two events), no lone surrogate
  (``"\\ud800"`` would become U+FFFD somewhere downstream), no NaN/Infinity, nested at
  most :data:`MAX_DEPTH` deep;
- **the event's time** (:func:`check_event_ts`): not before 2000-01-01 and not more
  than ``max_future_ms`` after the engine's clock (``context.max_future_s``);
- **the identity** (:func:`content_fingerprint`): an event id stands for one content.
  An id seen before with other content is a ``conflict`` (rejected, never applied);
  with the same content a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from uns.errors import IntakeError

__all__ = [
    "EARLIEST_TS_MS",
    "MAX_DEPTH",
    "MAX_EVENT_BYTES",
    "MAX_PATH_CHARS",
    "MAX_PATH_LEVELS",
    "check_event_ts",
    "check_topic_path",
    "content_fingerprint",
    "decode_json_object",
]

#: 2000-01-01T00:00:00Z: nothing a plant records today happened before it
EARLIEST_TS_MS: Final = 946_684_800_000
#: bytes of one event's payload (a context event of many keys is a few KiB)
MAX_EVENT_BYTES: Final = 256 * 1024
#: levels of an ISA-95 path, and its characters
MAX_PATH_LEVELS: Final = 32
MAX_PATH_CHARS: Final = 1024
#: nesting of objects and arrays in an event's JSON
MAX_DEPTH: Final = 16
_CONTROL: Final = re.compile("[\x00-\x1f\x7f]")


def check_topic_path(path: str) -> str:
    """The ISA-95 path of an intake topic (the part after ``<prefix>/_context/``), or
    :class:`IntakeError` saying what is wrong with it."""
    if not path:
        raise IntakeError("the topic has no path after the intake's prefix")
    if len(path) > MAX_PATH_CHARS:
        raise IntakeError(f"path longer than {MAX_PATH_CHARS} characters")
    levels = path.split("/")
    if len(levels) > MAX_PATH_LEVELS:
        raise IntakeError(f"path of more than {MAX_PATH_LEVELS} levels")
    for level in levels:
        if not level:
            raise IntakeError(f"path {path!r:.120} has an empty level")
        if level in (".", ".."):
            raise IntakeError(f"path {path!r:.120} has a {level!r} level")
        if "+" in level or "#" in level:
            raise IntakeError(f"path {path!r:.120} has a wildcard ('+' or '#')")
        if _CONTROL.search(level):
            raise IntakeError(f"path {path!r:.120} has a control character")
    _check_text(path, "path")
    return path


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise IntakeError(f"key {key!r:.80} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise IntakeError(f"{name} is not a JSON number")


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise IntakeError(f"{what} holds a lone surrogate (an unpaired \\ud800-\\udfff escape)") from None


def _check_values(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise IntakeError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value, "a string")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, "a key")
            _check_values(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_values(item, depth + 1)


def decode_json_object(payload: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> dict[str, Any]:
    """The JSON object of an event's payload, or :class:`IntakeError` (see the module doc)."""
    if len(payload) > max_bytes:
        raise IntakeError(f"payload of {len(payload):,} bytes, more than {max_bytes:,}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntakeError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if text.startswith("\ufeff"):
        raise IntakeError("a byte order mark: send UTF-8 JSON without one")
    try:
        event = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise IntakeError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # json.JSONDecodeError included
        raise IntakeError(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise IntakeError("an event must be a JSON object")
    _check_values(event, 1)
    return event


def check_event_ts(ts: int, now_ms: int, max_future_ms: int) -> int:
    """``ts`` (epoch ms) when it is from 2000 on and at most ``max_future_ms`` after
    ``now_ms``; :class:`IntakeError` otherwise."""
    if ts < EARLIEST_TS_MS:
        raise IntakeError(f"ts {ts} is before 2000-01-01 (epoch ms expected)")
    if ts > now_ms + max_future_ms:
        ahead = (ts - now_ms) / 1000
        raise IntakeError(
            f"ts {ts} is {ahead:,.0f} s ahead of the engine's clock (more than {max_future_ms / 1000:g} s)"
        )
    return ts


def content_fingerprint(
    path: str, ts: int, values: Iterable[tuple[str, str | None]], fields: Mapping[str, Any]
) -> str:
    """What an event id stands for: the hex SHA-256 of the canonical JSON of the event's
    path, time, its (key, value) pairs sorted (value None: cleared) and ``fields`` (its
    source, user, reason: who and why).  Computed the same from an event as received and
    from its rows in the lake, so a conflict is seen across restarts too."""
    content = {"path": path, "ts": ts, "values": sorted(values, key=lambda kv: kv[0]), **fields}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
