"""What the engine decides for each batch record it receives -- no I/O, no asyncio.

Batch records (materials, results, comments on ``<prefix>/_records/<path>``,
:mod:`uns.core.records`) follow the rules of context events
(:class:`uns.engine.dispatch.Dispatcher`): the intake rules of the topic's path, the JSON
and the time window (``context.max_future_s``); a present signature checked against the
trusted keys (required with ``context.require_signature``); each id applied once, a repeat
with the same content a ``duplicate``, one with other content a ``conflict`` (rejected,
recorded: the first stays); a retained delivery never applied; every record answered on
the context acknowledgement topic.  The decision is the dispatcher's: a batch with the
record for the lake's ``materials``, ``results`` or ``comments`` table, or a rejected row,
and the acknowledgement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from uns.core.context import decode_context_payload
from uns.core.events import Batch, Rejected
from uns.core.records import parse_record
from uns.core.signing import verify_event
from uns.engine import decisions as ack
from uns.engine.decisions import Decision
from uns.engine.status import Counters
from uns.engine.transport import Publish
from uns.errors import ContextError, SignatureError
from uns.logs import RateLimitedLog

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["RecordDecisions"]

_NONE = ack.NONE


class DecisionHost(Protocol):
    """What the record decisions take of their :class:`~uns.engine.dispatch.Dispatcher`."""

    counters: Counters
    records_prefix: str
    trusted_keys: Mapping[str, Ed25519PublicKey]
    require_signature: bool
    max_future_ms: int
    _rlog: RateLimitedLog

    def _ack(self, ident: str | None, status: str, reason: str | None, path: str, ts: int) -> Publish: ...

    def take_event(
        self, topic: str, payload: bytes, received_at: int, prefix: str,
        handle: Callable[[str], Decision], failures: str,
    ) -> Decision: ...  # fmt: skip


class RecordDecisions:
    """The records side of a :class:`~uns.engine.dispatch.Dispatcher`: its acknowledgements,
    counters, keys and clock window are the dispatcher's (this is its part, in a module of
    its own for length: it uses the dispatcher's private helpers)."""

    def __init__(self, dispatcher: DecisionHost) -> None:
        self.dispatcher = dispatcher
        #: record id -> the SHA-256 of its content (records applied, or found in the lake at
        #: start): a repeat is a duplicate, the same id with other content a conflict
        self.applied: dict[str, str] = {}

    def remember(self, records: Mapping[str, str]) -> None:
        for ident, content in records.items():
            self.applied.setdefault(ident, content)

    def process(self, topic: str, payload: bytes, received_at: int, *, retained: bool = False) -> Decision:
        """One batch record: applied at most once per id, always acknowledged.  Never raises."""
        d = self.dispatcher
        d.counters.records += 1

        def handle(path: str) -> Decision:
            return self._process(topic, path, payload, received_at, retained)

        return d.take_event(topic, payload, received_at, d.records_prefix, handle, "records_rejected")

    def _process(self, topic: str, path: str, payload: bytes, received_at: int, retained: bool) -> Decision:
        d, counters = self.dispatcher, self.dispatcher.counters
        ident: str | None = None
        try:
            event = decode_context_payload(payload, path=path)
            ident = _record_id(event)
            if retained:  # the broker's copy of a record seen before: never applied
                counters.records_retained_ignored += 1
                return Batch(), _NONE, (d._ack(ident, ack.DUPLICATE, ack.RETAINED_COPY, path, received_at),)
            signer = verify_event(path, event, d.trusted_keys, required=d.require_signature)
            record = parse_record(path, event, received_at, signer=signer, max_future_ms=d.max_future_ms)
        except (ContextError, SignatureError) as exc:
            if retained:
                counters.records_retained_ignored += 1
                return Batch(), _NONE, (d._ack(None, ack.DUPLICATE, ack.RETAINED_COPY, path, received_at),)
            return self._reject(topic, payload, received_at, exc.reason, (ident, path, ack.REJECTED))
        ident = record.record_id
        seen = self.applied.get(ident)
        if seen is not None:
            if seen != record.content_sha256:  # the id stands for other content: the first stays
                counters.records_conflicts += 1
                reason = f"conflict: record {ident!r} was applied before with other content; nothing changed"
                return self._reject(topic, payload, received_at, reason, (ident, path, ack.CONFLICT))
            counters.records_duplicates += 1
            return Batch(), _NONE, (d._ack(ident, ack.DUPLICATE, ack.ALREADY_APPLIED, path, received_at),)
        self.applied[ident] = record.content_sha256
        counters.records_applied += 1
        return Batch(records=[record]), _NONE, (d._ack(ident, ack.APPLIED, None, path, received_at),)

    def _reject(
        self, topic: str, payload: bytes, received_at: int, reason: str, answer: tuple[str | None, str, str]
    ) -> Decision:
        """A record not applied: a ``rejected`` row with the reason, counted, acknowledged
        (``answer``: the acknowledgement's id, path and status)."""
        d = self.dispatcher
        d.counters.records_rejected += 1
        d.counters.count_rejected([reason], context=True)
        d._rlog.warning(f"reject:{topic}", "rejected record on %s: %s", topic, reason)
        ident, path, status = answer
        batch = Batch(rejected=[Rejected(received_at, topic, payload, reason)])
        return batch, _NONE, (d._ack(ident, status, reason, path, received_at),)


def _record_id(event: dict[str, Any]) -> str | None:
    """A record's own ``id`` when it is a valid one, for the acknowledgement of a record
    that is rejected (an auto id needs the whole record to be valid)."""
    ident = event.get("id")
    return ident if isinstance(ident, str) and 1 <= len(ident) <= 128 else None
