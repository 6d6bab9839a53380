"""One DATA message by the native decoder, for :meth:`SessionManager._fast_data` (pure).

The session's checks before it (node and owner online, no reorder buffer) and its
bookkeeping after it (the seq tracker, the counts) are those of the Python fast path;
only the decoding is native (:mod:`uns.sparkplug.native`).
"""

from __future__ import annotations

from typing import Protocol

from uns.core.events import Batch, SampleBlock
from uns.sparkplug import native
from uns.sparkplug.nodes import NodeState, Owner
from uns.sparkplug.outcome import Outcome

__all__ = ["native_outcome"]


class _Sessions(Protocol):
    """What this needs of :class:`uns.sparkplug.session.SessionManager`."""

    columnar: bool
    max_metrics: int
    max_payload_bytes: int

    def count_fast(self, messages: int, samples: int) -> None: ...


def native_outcome(
    sessions: _Sessions, node: NodeState, owner: Owner, raw: bytes, received_at: int
) -> Outcome | None:
    """The outcome of an ordinary in-order DATA message of ``owner``; None: the native
    decoder leaves the message to the Python path (nothing changed)."""
    if sessions.max_payload_bytes and len(raw) > sessions.max_payload_bytes:
        return None
    got = native.decode_data(raw, owner.by_alias, owner.by_name, received_at, sessions.max_metrics)
    if got is None:
        return None
    seq, rows, records, ts = got
    tracker = node.tracker
    expected = tracker.expected
    if expected is not None and seq != expected:
        return None
    tracker.processed(seq, hash(raw))
    sessions.count_fast(1, len(records))
    block = SampleBlock(
        node.group_id, node.edge_node_id, owner.device_id, seq, node.bdseq, received_at,
        0 if ts is None else ts, rows, records,
    )  # fmt: skip
    if sessions.columnar and ts is not None:  # one source time: one context for the block
        return Outcome(Batch(blocks=[block]))
    return Outcome(Batch(block.samples()))
