"""The time-correct context store: which batch/order/phase was valid when (pure).

Context (``batch_id``, ``order_id``, ``phase``, ...) is set on ISA-95 paths by
context events and by Sparkplug context metrics.  Keys follow the ISA-88/95
vocabulary of ``docs/model.md`` where it fits, but any valid key is accepted,
so the code keeps no list of them.  :meth:`ContextStore.at` answers "what
context applied to this path at this source timestamp":

- **By timestamp, not by arrival.**  Answers are as if all changes had
  arrived in timestamp order; for equal timestamps the later arrival wins.
- **Inheritance.**  A key set on a path applies to every path below it unless
  a deeper path sets it too.  A *clear* removes only the path's own value, so
  the ancestor's value shows through again.  To hide an inherited value, set
  the key to ``""`` on the deeper path: empty values are never reported.
- **Bounded memory.**  History older than ``window_ms`` before the newest
  change is compacted to one baseline entry per (path, key).  Answers for
  timestamps within the window are exact; a change that arrives older than a
  compacted baseline is not applied (``apply`` returns False) -- the lake
  still records it and ``measurements_asof`` recomputes from the full history.

``at()`` runs per sample: the common case (``ts`` at or after the latest
change on the path and its ancestors) is one dict lookup.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

from uns.core.events import ContextChange
from uns.core.intake_rules import check_topic_path, content_fingerprint, decode_json_object
from uns.errors import ContextError, IntakeError

__all__ = [
    "DEFAULT_WINDOW_MS",
    "ContextStore",
    "change_fingerprint",
    "check_context_key",
    "check_context_path",
    "decode_context_payload",
    "event_id",
    "parse_context_event",
]

DEFAULT_WINDOW_MS = 24 * 3600 * 1000

MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 4096
MAX_TEXT_LENGTH = 4096  # source, user, reason
MAX_ID_LENGTH = 128
AUTO_ID_PREFIX = "auto-"
_EVENT_FIELDS = frozenset({"id", "ts", "set", "clear", "source", "user", "reason", "signature"})
_FORBIDDEN = frozenset("/+#")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_LAST = sys.maxsize  # sorts after every arrival number at the same timestamp
_NEVER = -(2**63)
_EMPTY: dict[str, str] = {}


def check_context_key(key: object) -> str:
    """A valid context key, or :class:`ContextError`."""
    if not isinstance(key, str) or not key:
        raise ContextError(f"a context key must be a non-empty string, not {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise ContextError(f"context key longer than {MAX_KEY_LENGTH} characters")
    if _FORBIDDEN.intersection(key) or _CONTROL.search(key):
        raise ContextError(f"context key {key!r} must not contain '/', '+', '#' or control characters")
    return key


def check_context_path(path: object) -> str:
    """A valid ISA-95 path (non-empty ``/``-separated levels, no wildcards)."""
    if not isinstance(path, str) or not path:
        raise ContextError(f"a context path must be a non-empty string, not {path!r}")
    if "+" in path or "#" in path or any(not level for level in path.split("/")):
        raise ContextError(f"path {path!r} must have non-empty levels and no '+' or '#'", path=path)
    return path


def decode_context_payload(payload: bytes, *, path: str | None = None) -> dict[str, Any]:
    """The JSON object of an MQTT context event on ``path``, or :class:`ContextError` (whose
    ``reason`` the engine records for the rejected message): the intake rules of
    :mod:`uns.core.intake_rules` for the path and the payload (UTF-8, one object, no key
    twice, no lone surrogate, bounded)."""
    try:
        if path is not None:
            check_topic_path(path)
        return decode_json_object(payload)
    except IntakeError as exc:
        raise ContextError(exc.reason, path=path) from None


def change_fingerprint(changes: list[ContextChange]) -> str:
    """What the event of ``changes`` (all of one event) stands for: its content
    (:func:`uns.core.intake_rules.content_fingerprint`), the same from the lake's rows."""
    first = changes[0]
    fields = {"source": first.source or "", "user": first.user, "reason": first.reason}
    return content_fingerprint(first.path, first.ts, [(c.key, c.value) for c in changes], fields)


class _History:
    """One (path, key): changes sorted by (ts, arrival)."""

    __slots__ = ("floor", "stamps", "values")

    def __init__(self) -> None:
        self.stamps: list[tuple[int, int]] = []
        self.values: list[str | None] = []
        # after compaction: the baseline's ts; older changes can no longer be placed
        self.floor: int | None = None

    def value_at(self, ts: int) -> str | None:
        i = bisect_right(self.stamps, (ts, _LAST))
        return self.values[i - 1] if i else None


class ContextStore:
    """Context per ISA-95 path, valid-time correct and inherited (see module doc)."""

    __slots__ = (
        "_arrivals",
        "_current",
        "_entries",
        "_entries_after_sweep",
        "_last",
        "_newest",
        "_next_sweep_ts",
        "_nodes",
        "_path_max",
        "window_ms",
    )

    def __init__(self, *, window_ms: int = DEFAULT_WINDOW_MS) -> None:
        if window_ms < 0:
            raise ValueError("window_ms must be >= 0")
        self.window_ms = window_ms
        self._nodes: dict[str, dict[str, _History]] = {}
        self._path_max: dict[str, int] = {}  # per path: newest change ts
        self._arrivals = 0
        self._newest = _NEVER
        self._entries = 0
        self._entries_after_sweep = 0
        self._next_sweep_ts = _NEVER
        # path -> (newest change ts on the path and its ancestors, context after it)
        self._current: dict[str, tuple[int, dict[str, str]]] = {}
        # path -> (ts, context): the last historical answer (backfills ask the same ts repeatedly)
        self._last: dict[str, tuple[int, dict[str, str]]] = {}

    # ----------------------------------------------------------------- writing

    def apply(self, change: ContextChange) -> bool:
        """Apply one change (``value`` None clears the key on that path).

        Returns False when the change is older than the compacted baseline of
        its key and so cannot change any answer the store still gives exactly."""
        path = check_context_path(change.path)
        key = check_context_key(change.key)
        histories = self._nodes.get(path)
        if histories is None:
            histories = self._nodes[path] = {}
        history = histories.get(key)
        if history is None:
            history = histories[key] = _History()
        if history.floor is not None and change.ts < history.floor:
            return False
        self._arrivals += 1
        stamp = (change.ts, self._arrivals)
        i = bisect_right(history.stamps, stamp)
        history.stamps.insert(i, stamp)
        history.values.insert(i, change.value)
        self._entries += 1
        if change.ts > self._path_max.get(path, _NEVER):
            self._path_max[path] = change.ts
        self._newest = max(self._newest, change.ts)
        self._current.clear()
        self._last.clear()
        self._maybe_compact()
        return True

    def apply_event(self, path: str, event: Mapping[str, Any], received_at: int) -> list[ContextChange]:
        """Validate a context event (``schemas/context-event.schema.json``) and apply it whole.

        Returns every change of the event (for the lake's context table), also
        those too old for the in-memory window.  Raises :class:`ContextError`
        before applying anything when the event is malformed."""
        changes = parse_context_event(path, event, received_at)
        for change in changes:
            self.apply(change)
        return changes

    # ----------------------------------------------------------------- reading

    def at(self, path: str, ts: int) -> dict[str, str]:
        """The context valid for ``path`` at source time ``ts``, inherited from ancestors.

        The returned dict is shared between callers: treat it as read-only."""
        current = self._current.get(path)
        if current is None:
            current = self._current[path] = self._compute_current(path)
        if ts >= current[0]:
            return current[1]
        last = self._last.get(path)
        if last is not None and last[0] == ts:
            return last[1]
        answer = self._compute(path, ts)
        self._last[path] = (ts, answer)
        return answer

    def value_at(self, path: str, key: str, ts: int) -> str | None:
        """The value ``path`` itself holds for ``key`` at ``ts`` (no inheritance; None if unset)."""
        history = self._nodes.get(path, _EMPTY_NODE).get(key)
        return None if history is None else history.value_at(ts)

    @property
    def newest_ts(self) -> int | None:
        """The newest change timestamp seen, or None before the first change."""
        return None if self._newest == _NEVER else self._newest

    @property
    def entry_count(self) -> int:
        """History entries held (memory use is proportional to this)."""
        return self._entries

    def paths(self) -> list[str]:
        """Paths that hold context history, sorted."""
        return sorted(self._nodes)

    # ------------------------------------------------------------------ inside

    def _chain(self, path: str) -> list[tuple[str, dict[str, _History]]]:
        chain = []
        end = path.find("/")
        while True:
            prefix = path if end < 0 else path[:end]
            histories = self._nodes.get(prefix)
            if histories:
                chain.append((prefix, histories))
            if end < 0:
                return chain
            end = path.find("/", end + 1)

    def _compute_current(self, path: str) -> tuple[int, dict[str, str]]:
        chain = self._chain(path)
        if not chain:
            return _NEVER, _EMPTY
        newest = max(self._path_max[prefix] for prefix, _ in chain)
        return newest, _merge(chain, None)

    def _compute(self, path: str, ts: int) -> dict[str, str]:
        return _merge(self._chain(path), ts)

    def _maybe_compact(self) -> None:
        # Amortised: sweep when the history doubled or the window moved on by half.
        if self._entries > 2 * self._entries_after_sweep + 256 or self._newest >= self._next_sweep_ts:
            self.compact()

    def compact(self) -> None:
        """Drop history older than the window, keeping one baseline per (path, key)."""
        horizon = self._newest - self.window_ms
        entries = 0
        for histories in self._nodes.values():
            for history in histories.values():
                i = bisect_right(history.stamps, (horizon, _LAST)) - 1
                if i > 0:
                    del history.stamps[:i]
                    del history.values[:i]
                    history.floor = history.stamps[0][0]
                entries += len(history.stamps)
        self._entries = self._entries_after_sweep = entries
        self._next_sweep_ts = self._newest + max(1, self.window_ms // 2)
        self._last.clear()


_EMPTY_NODE: dict[str, _History] = {}


def _merge(chain: list[tuple[str, dict[str, _History]]], ts: int | None) -> dict[str, str]:
    """Root-to-leaf merge: deeper values override, None is transparent, "" hides."""
    out: dict[str, str] = {}
    for _, histories in chain:
        for key, history in histories.items():
            # a history is never empty: compaction keeps a baseline
            value = history.values[-1] if ts is None else history.value_at(ts)
            if value is None:
                continue
            if value:
                out[key] = value
            else:
                out.pop(key, None)
    return out


# ------------------------------------------------------------------ event parsing


def event_id(path: str, event: Mapping[str, Any]) -> str:
    """The identity of a context event: its ``id``, or a deterministic one of its content.

    Without ``id``: ``"auto-"`` and the first 32 hex digits of the SHA-256 of the
    canonical JSON (sorted keys, no spaces, UTF-8) of ``{"path", "ts", "set", "clear"
    (sorted), "source", "user", "reason"}``, absent fields as the engine reads them
    (``set`` {}, ``clear`` [], ``source`` "", ``user`` and ``reason`` null).  An event
    without ``ts`` gets the receive time from the engine, so pass the event with the
    ``ts`` it was applied at (``uns context set`` always sends one).  Raises
    :class:`ContextError` for an ``id`` that is not a string of 1-128 characters."""
    if "id" in event:
        return _check_id(event["id"])
    content = {
        "path": path,
        "ts": event.get("ts"),
        "set": event.get("set", {}),
        "clear": sorted(event.get("clear", [])),
        "source": event.get("source", ""),
        "user": event.get("user"),
        "reason": event.get("reason"),
    }
    try:
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ContextError(f"cannot identify the event: {exc}") from exc
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return AUTO_ID_PREFIX + digest[:32]


def _check_id(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LENGTH:
        raise ContextError(f"id must be a string of 1-{MAX_ID_LENGTH} characters, not {value!r:.80}")
    return value


def parse_context_event(
    path: str, event: Mapping[str, Any], received_at: int, *, signer: str | None = None
) -> list[ContextChange]:
    """The changes of a context event, validated whole (see the schema); each carries the
    event's :func:`event_id` (with ``ts`` the receive time when the event has none) and
    ``signer``, the key whose signature the caller verified (:mod:`uns.core.signing`;
    the ``signature`` field itself is not checked here)."""
    try:
        return _parse(path, event, received_at, signer)
    except ContextError as exc:
        if exc.path is None:
            raise ContextError(exc.reason, path=path if isinstance(path, str) else None) from None
        raise


def _parse(path: str, event: Mapping[str, Any], received_at: int, signer: str | None) -> list[ContextChange]:
    check_context_path(path)
    if not isinstance(event, Mapping):
        raise ContextError("a context event must be a JSON object")
    unknown = set(event) - _EVENT_FIELDS
    if unknown:
        raise ContextError(f"unknown fields {sorted(unknown)} (allowed: {sorted(_EVENT_FIELDS)})")
    ts = event.get("ts", received_at)
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise ContextError(f"ts must be a non-negative integer (epoch ms), not {ts!r}")
    to_set = event.get("set", {})
    to_clear = event.get("clear", [])
    if not isinstance(to_set, Mapping):
        raise ContextError("set must be an object {key: value}")
    if not isinstance(to_clear, list):
        raise ContextError("clear must be an array of keys")
    if not to_set and not to_clear:
        raise ContextError("a context event needs at least one key in set or clear")
    source = _text(event, "source", nullable=False) or ""
    user = _text(event, "user", nullable=True)
    reason = _text(event, "reason", nullable=True)
    ident = _check_id(event["id"]) if "id" in event else None
    values: list[tuple[str, str | None]] = []
    for key, value in to_set.items():
        check_context_key(key)
        values.append((key, _scalar_text(key, value)))
    cleared: set[str] = set()
    for key in to_clear:
        check_context_key(key)
        if key in to_set:
            raise ContextError(f"key {key!r} is both set and cleared")
        if key not in cleared:
            cleared.add(key)
            values.append((key, None))
    if ident is None:
        ident = event_id(path, event if "ts" in event else {**event, "ts": ts})
    return [
        ContextChange(ts, received_at, path, k, v, source, user, reason, ident, signer) for k, v in values
    ]


def _text(event: Mapping[str, Any], name: str, *, nullable: bool) -> str | None:
    if name not in event:
        return None
    value = event[name]
    if value is None and nullable:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT_LENGTH:
        raise ContextError(f"{name} must be a string of at most {MAX_TEXT_LENGTH} characters")
    return value


def _scalar_text(key: str, value: object) -> str:
    """Context values are text: numbers as JSON writes them, booleans true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and math.isfinite(value):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ContextError(f"value of {key!r} must be a string, number or boolean (use clear to remove)")
    if len(text) > MAX_VALUE_LENGTH:
        raise ContextError(f"value of {key!r} is longer than {MAX_VALUE_LENGTH} characters")
    return text
