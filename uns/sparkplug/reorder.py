"""Per-edge-node seq tracking and the reorder buffer (pure: no I/O, no clocks).

Sparkplug B numbers every DBIRTH, NDATA, DDATA and DDEATH of one edge node
with a single counter 0..255 that wraps (docs/sparkplug.md §3).  A host must buffer
messages that arrive after a gap, release them when the gap fills and give up
(rebirth) when a Reorder Timeout expires.  :class:`SeqTracker` holds that state
for one node; the session manager decides what to do with each verdict.

Ring arithmetic: a seq at distance 1..127 ahead of the expected one is in the
future (a gap); 128..255 ahead is read as *behind*, i.e. already seen.  To keep
that reading unambiguous the buffer never spans :data:`REORDER_SPAN` seqs or
more: the session manager gives up its holes before that.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from uns.sparkplug.payload import Payload
from uns.sparkplug.topic import Topic

__all__ = ["REORDER_SPAN", "Received", "SeqPosition", "SeqTracker", "seqs_text"]

#: the buffer must not reach this distance ahead of the expected seq: beyond
#: 127 a newer message would look like an old one; 96 leaves room for stragglers
REORDER_SPAN = 96


class SeqPosition(enum.Enum):
    """Where a received seq stands relative to the expected one."""

    IN_ORDER = "in_order"  # exactly the expected seq
    AHEAD = "ahead"  # later than expected: there is a gap before it
    DUPLICATE = "duplicate"  # the same bytes were already processed or buffered under this seq
    STRAY = "stray"  # behind the window (or clashing with a buffered message) but not a copy


@dataclass(slots=True)
class Received:
    """One received message as the session tracker sees it (and buffers it).

    ``seq`` is the payload's seq reduced modulo 256, None when the payload has none.
    """

    topic: Topic
    payload: Payload
    raw: bytes
    received_at: int
    seq: int | None


class SeqTracker:
    """Expected seq, recently processed seqs and the reorder buffer of one edge node."""

    __slots__ = ("_buffer", "_digests", "deadline", "expected")

    def __init__(self) -> None:
        #: next seq expected; None until a base is known (no NBIRTH, or an NBIRTH without seq)
        self.expected: int | None = None
        #: when the oldest buffered message has waited the reorder timeout (ms)
        self.deadline: int | None = None
        # hash of the raw bytes processed under each seq, so a redelivered copy
        # (a duplicate) can be told from a message that is genuinely out of window
        self._digests: list[int | None] = [None] * 256
        self._buffer: dict[int, Received] = {}

    def restart(self, base: int | None, digest: int) -> None:
        """Start a new seq stream at an NBIRTH (the buffer must have been emptied)."""
        self._digests = [None] * 256
        self._buffer.clear()
        self.deadline = None
        if base is None:
            self.expected = None
        else:
            self._digests[base] = digest
            self.expected = (base + 1) & 255

    def forget(self) -> None:
        """Drop the stream (the node went offline); the buffer must have been emptied."""
        self.restart(None, 0)

    def classify(self, seq: int, digest: int) -> SeqPosition:
        expected = self.expected
        if expected is None or seq == expected:
            return SeqPosition.IN_ORDER
        if (seq - expected) & 255 < 128:
            held = self._buffer.get(seq)
            if held is None:
                return SeqPosition.AHEAD
            return SeqPosition.DUPLICATE if hash(held.raw) == digest else SeqPosition.STRAY
        return SeqPosition.DUPLICATE if self._digests[seq] == digest else SeqPosition.STRAY

    def processed(self, seq: int, digest: int) -> None:
        """Record that the message with ``seq`` was processed; the next one is expected."""
        self._digests[seq] = digest
        self.expected = (seq + 1) & 255

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def span(self) -> int:
        """How far ahead of the expected seq the furthest buffered message is."""
        expected = self.expected or 0
        return max(((s - expected) & 255 for s in self._buffer), default=0)

    def hold(self, message: Received, seq: int, timeout_ms: int) -> None:
        """Buffer a message that arrived after a gap; the timer starts with the first one."""
        self._buffer[seq] = message
        deadline = message.received_at + timeout_ms
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline

    def release_next(self) -> Received | None:
        """The buffered message carrying the expected seq, if it is here (removed from the buffer)."""
        if self.expected is None:
            return None
        return self._buffer.pop(self.expected, None)

    def skip_hole(self) -> list[int]:
        """Give up the first run of missing seqs: the earliest buffered message becomes
        the expected one.  Returns the seqs given up (empty when nothing is buffered)."""
        if not self._buffer or self.expected is None:
            return []
        expected = self.expected
        first = min(self._buffer, key=lambda s: (s - expected) & 255)
        missing = [(expected + i) & 255 for i in range((first - expected) & 255)]
        for seq in missing:
            self._digests[seq] = None
        self.expected = first
        return missing

    def skip_to(self, seq: int) -> list[int]:
        """Give up every seq before ``seq`` (no buffering: the message is processed now)."""
        expected = self.expected if self.expected is not None else seq
        missing = [(expected + i) & 255 for i in range((seq - expected) & 255)]
        for s in missing:
            self._digests[s] = None
        self.expected = seq
        return missing

    def refresh_deadline(self, timeout_ms: int) -> None:
        """Restart the timer from the oldest message still buffered (None when empty)."""
        if self._buffer:
            self.deadline = min(p.received_at for p in self._buffer.values()) + timeout_ms
        else:
            self.deadline = None


def seqs_text(seqs: list[int]) -> str:
    """A short text for seqs given up: ``5`` or ``5..7`` (a run), ``none``."""
    if not seqs:
        return "none"
    if len(seqs) == 1:
        return str(seqs[0])
    return f"{seqs[0]}..{seqs[-1]}"
