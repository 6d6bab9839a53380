"""What handling one message produces, and how the session handlers record it (pure).

An :class:`Outcome` holds a :class:`uns.core.events.Batch` for the sinks and
the rebirth requests the I/O shell should send.  The handlers of
:mod:`uns.sparkplug.session`, :mod:`uns.sparkplug.lifecycle` and
:mod:`uns.sparkplug.data` fill it through the helpers here: session events,
rejections, protocol errors recorded once per NBIRTH, and rebirth requests
rate-limited per node (:class:`RebirthPolicy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from uns.core.events import (
    MAX_REJECTED_PER_MESSAGE,
    Batch,
    RebirthRequest,
    Rejected,
    SessionEvent,
    SessionEventKind,
)
from uns.sparkplug.nodes import NodeState
from uns.sparkplug.reorder import Received
from uns.sparkplug.topic import Topic

__all__ = ["Outcome", "RebirthPolicy", "payload_ts", "protocol_error_once", "reject", "session_event"]


@dataclass(slots=True)
class Outcome:
    """What one call produced: data for the sinks and rebirth requests for the I/O shell."""

    batch: Batch = field(default_factory=Batch)
    rebirths: list[RebirthRequest] = field(default_factory=list)
    #: :meth:`SessionManager.handle_raw` only: why the bytes could not be decoded (for the log)
    undecodable: str | None = None
    # the message rejected last (see reject): its first row, rows so far, the summary row
    _rejected_raw: bytes | None = None
    _rejected_first: Rejected | None = None
    _rejected_rows: int = 0
    _rejected_summary: Rejected | None = None


def payload_ts(msg: Received) -> int:
    """The message's own timestamp, else when it was received."""
    ts = msg.payload.timestamp
    return msg.received_at if ts is None else ts


def session_event(
    out: Outcome, ts: int, at: NodeState | Topic, device_id: str | None, kind: str, detail: str
) -> None:
    out.batch.sessions.append(SessionEvent(ts, at.group_id, at.edge_node_id, device_id, kind, detail))


def reject(out: Outcome, msg: Received, error: str) -> None:
    """Record that ``msg`` (or one of its metrics) could not be used.  The first row of a
    message measures its payload (size, SHA-256, head); its later rows reuse that; beyond
    MAX_REJECTED_PER_MESSAGE rows one summary row counts the rest."""
    rejected = out.batch.rejected
    first = out._rejected_first
    if first is None or out._rejected_raw is not msg.raw:
        first = Rejected(msg.received_at, str(msg.topic), msg.raw, error)
        out._rejected_raw, out._rejected_first, out._rejected_rows = msg.raw, first, 1
        out._rejected_summary = None
        rejected.append(first)
        return
    out._rejected_rows += 1
    unrecorded = out._rejected_rows - MAX_REJECTED_PER_MESSAGE
    if unrecorded <= 0:
        rejected.append(first.again(error))
        return
    summary = first.summary(unrecorded, error)
    if out._rejected_summary is None:
        out._rejected_summary = summary
        rejected.append(summary)
    else:  # the same row counts on
        out._rejected_summary.error = summary.error


def protocol_error_once(node: NodeState, key: str, detail: str, ts: int, out: Outcome) -> None:
    if key not in node.warned:  # once per NBIRTH: a misbehaving node must not flood the history
        node.warned.add(key)
        session_event(out, ts, node, None, SessionEventKind.PROTOCOL_ERROR, detail)


class RebirthPolicy:
    """When the host asks an edge node for a rebirth (docs/sparkplug.md §3 "Rebirth request"):
    only when ``enabled`` (usually only the primary host), at most once per node per
    ``min_interval_ms``.  Counts into the session manager's ``stats``."""

    __slots__ = ("enabled", "min_interval_ms", "stats")

    def __init__(self, enabled: bool, min_interval_ms: int, stats: dict[str, int]) -> None:
        self.enabled = enabled
        self.min_interval_ms = min_interval_ms
        self.stats = stats

    def request(self, node: NodeState, reason: str, now: int, out: Outcome) -> None:
        if not self.enabled:
            return
        last = node.last_rebirth_at
        if last is not None and 0 <= now - last < self.min_interval_ms:
            node.rebirths_suppressed += 1
            self.stats["rebirths_suppressed"] += 1
            return
        node.last_rebirth_at = now
        node.rebirths_requested += 1
        self.stats["rebirths_requested"] += 1
        out.rebirths.append(RebirthRequest(node.group_id, node.edge_node_id, reason))
        session_event(out, now, node, None, SessionEventKind.REBIRTH_REQUESTED, reason)
