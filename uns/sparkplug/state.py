"""Host Application STATE payloads (docs/sparkplug.md sections 2, 3 and 5.9).

Sparkplug 3.0 publishes ``{"online": bool, "timestamp": int}`` as UTF-8 JSON
on ``spBv1.0/STATE/<host_id>``; hosts before 3.0 published the bare words
``ONLINE`` / ``OFFLINE`` on ``STATE/<host_id>``.  Both are parsed here; the
topic decides nothing, the payload does, because a retained message may be of
either generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from uns.errors import SparkplugStateError

__all__ = ["HostState", "format_state", "parse_state"]

_LEGACY = {b"ONLINE": True, b"OFFLINE": False}
#: the 3.0 timestamp is a ms epoch in a u64-sized range; beyond it is not a time
_TIMESTAMP_LIMIT = 1 << 64
#: a STATE payload is a few dozen bytes; refuse to JSON-parse megabytes
_MAX_STATE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class HostState:
    """A host's STATE: online or not, its session timestamp (None for legacy)."""

    online: bool
    timestamp: int | None
    legacy: bool = False


def parse_state(data: bytes) -> HostState:
    """Parse a STATE payload (3.0 JSON or legacy text); else :class:`SparkplugStateError`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SparkplugStateError(f"payload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    legacy = _LEGACY.get(data.strip())
    if legacy is not None:
        return HostState(online=legacy, timestamp=None, legacy=True)
    if len(data) > _MAX_STATE_BYTES:
        raise SparkplugStateError(f"payload of {len(data)} bytes is too large for STATE")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SparkplugStateError(f"not JSON and not ONLINE/OFFLINE: {exc}") from exc
    if not isinstance(doc, dict):
        raise SparkplugStateError("JSON payload is not an object")
    online = doc.get("online")
    timestamp = doc.get("timestamp")
    if type(online) is not bool:
        raise SparkplugStateError(f"'online' must be a JSON boolean, got {online!r}")
    # bool is an int subclass in Python but not an integer in JSON
    if type(timestamp) is not int:
        raise SparkplugStateError(f"'timestamp' must be a JSON integer, got {timestamp!r}")
    if not 0 <= timestamp < _TIMESTAMP_LIMIT:
        raise SparkplugStateError(f"'timestamp' {timestamp} is not a ms epoch")
    return HostState(online=online, timestamp=timestamp, legacy=False)


def format_state(online: bool, timestamp: int) -> bytes:
    """The compact 3.0 JSON STATE payload, e.g. ``b'{"online":true,"timestamp":1700000000000}'``."""
    if type(online) is not bool or type(timestamp) is not int or timestamp < 0:
        raise SparkplugStateError(f"cannot format STATE online={online!r} timestamp={timestamp!r}")
    return json.dumps({"online": online, "timestamp": timestamp}, separators=(",", ":")).encode()
