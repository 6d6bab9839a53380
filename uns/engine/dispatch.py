"""What the engine decides for each message it receives -- no I/O, no asyncio.

:meth:`Dispatcher.process` routes one MQTT message by topic (Sparkplug,
STATE, commands, context events), runs it through the host sessions and
the enrichment, and returns everything it decided as one value, a
:data:`Decision`: the batch for the sinks, the rebirth requests and the
other publishes (the STATE re-assertion).  The I/O shell
(:mod:`uns.engine.host`) carries those out; nothing is left behind in a side
channel, so a test can call ``process`` and see all of it.

``process`` is the hot path (100k metrics/s): no awaits, and nothing is
allocated for a DATA message beyond what the sessions produce -- the empty
rebirth and publish sequences are one shared tuple.  :meth:`Dispatcher.process_steps`
decides the same in slices (:mod:`uns.sparkplug.steps`) and hands the batch over a
slice at a time: the engine takes that way for a large message
(:mod:`uns.engine.slicing`), so its event loop runs between the slices.

Batch records (:meth:`Dispatcher.process_records`: materials, results, comments on
``<prefix>/_records/<path>``, :mod:`uns.core.records`) follow the same rules: applied once
per id, an id seen again with other content rejected as a conflict, signatures checked,
answered on the same acknowledgement topic.

Context events (:meth:`Dispatcher.process_context`) are held to the intake rules
(:mod:`uns.core.intake_rules`: the topic's path, the JSON, the time window
``context.max_future_s``) and applied at most once per event id
(:func:`uns.core.context.event_id`): the dispatcher keeps every id applied with what
it stood for (its content's fingerprint; seeded at start from the lake), a repeat
with the same content is a duplicate, one with other content a ``conflict`` (rejected,
recorded: the first content stays), and a retained delivery (the broker's copy of an
event already seen) is never applied.  Each context event is answered with an
acknowledgement (``schemas/context-ack.schema.json``) on
``<prefix>/_engine/<host_id>/context_ack``, among the decision's publishes, signed by
the engine's key when it has one (``engine.signing_key``).

A context event's ``signature`` (:mod:`uns.core.signing`) is checked against the
trusted keys before anything else of the event: a bad one, or none while
``context.require_signature`` is on, rejects the event with the reason; the
signer's key name goes with each change into the lake (the context table's
``signer``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from uns.config import Config
from uns.core.context import (
    ContextStore,
    change_fingerprint,
    decode_context_payload,
    event_id,
    parse_context_event,
)
from uns.core.enrich import Enricher
from uns.core.events import Batch, RebirthRequest, Rejected, SampleRuns, SessionEventKind, metric_rejections
from uns.core.intake_rules import check_event_ts
from uns.core.reasons import check_reason
from uns.core.signing import canonical_json, signature_block, verify_event
from uns.engine.decisions import (
    ALREADY_APPLIED,
    APPLIED,
    CONFLICT,
    DUPLICATE,
    NONE,
    REJECTED,
    RETAINED_COPY,
    Decision,
)
from uns.engine.record_decisions import RecordDecisions
from uns.engine.status import Counters
from uns.engine.transport import Message, Publish
from uns.errors import ContextError, IntakeError, SignatureError, UnsError
from uns.logs import RateLimitedLog
from uns.sparkplug import native
from uns.sparkplug.outcome import Outcome
from uns.sparkplug.session import SessionManager
from uns.sparkplug.state import format_state, parse_state
from uns.sparkplug.steps import SLICE
from uns.sparkplug.topic import MessageType, Topic, parse_topic

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["APPLIED", "CONFLICT", "DUPLICATE", "REJECTED", "Decision", "Dispatcher"]

log = logging.getLogger("uns.engine")

_NONE = NONE  # the shared "nothing to send" of a decision
_TOPIC_CACHE_MAX = 100_000  # parsed topics kept (a flood of distinct bad topics stays bounded)


class Dispatcher:
    """Per-message decisions of a Sparkplug host; the engine owns one (see module doc)."""

    def __init__(
        self,
        config: Config,
        *,
        sessions: SessionManager,
        context: ContextStore,
        enricher: Enricher,
        counters: Counters,
        applied_ids: Iterable[str] = (),
        trusted_keys: Mapping[str, Ed25519PublicKey] | None = None,
        ack_key: tuple[str, Ed25519PrivateKey] | None = None,
    ) -> None:
        self.sessions = sessions
        self.context = context
        self.enricher = enricher
        self.counters = counters
        self.host_id = config.engine.host_id
        self.state_topic = f"spBv1.0/STATE/{self.host_id}"
        self.context_prefix = f"{config.engine.prefix}/_context/"
        self.records_prefix = f"{config.engine.prefix}/_records/"
        self.context_ack_topic = f"{config.engine.prefix}/_engine/{self.host_id}/context_ack"
        #: ids of the context events applied (by this engine, or found in the lake at start),
        #: each with the fingerprint of its content (None: not known)
        self.applied_ids: dict[str, str | None] = dict.fromkeys(applied_ids)
        #: ids another run or another engine stored in the lake that this process has not yet
        #: applied to its own context store (see remember_applied)
        self._stored_elsewhere: set[str] = set()
        #: the public keys context signatures are checked against, by name (uns.keyring)
        self.trusted_keys: Mapping[str, Ed25519PublicKey] = trusted_keys or {}
        self.require_signature = config.context.require_signature
        #: manual and back-dated changes must give a reason (uns.core.reasons)
        self.require_reason = config.context.require_reason
        self.late_ms = round(config.batch.late_context_s * 1000)
        self.max_future_ms = int(config.context.max_future_s * 1000)
        #: the batch records' decisions (applied ids with their content's SHA-256)
        self.records = RecordDecisions(self)
        #: (name, private key) that signs every acknowledgement (engine.signing_key), or None
        self.ack_key = ack_key
        self._event_digest = ""  # SHA-256 of the context message being acknowledged
        #: T of our STATE birth (and Will) on the current connection; None when we publish no
        #: STATE (not the primary host) or have not connected yet.  Set by the engine.
        self.state_ts: int | None = None
        self._max_decompressed = config.sparkplug.max_decompressed_bytes
        #: a message is being processed in slices (process_steps): the reorder timer waits
        self.busy = False
        self._by_type = counters.messages_by_type
        self._topics: dict[str, Topic | None] = {}
        self._rlog = RateLimitedLog(log)
        #: the native lane's routes (process_many): DATA topic -> (node, device_id, group_id,
        #: edge_node_id, message type, path, unmapped), learnt from messages the session decoded
        #: natively into a block; the lane checks the session state live on every message
        self._routes: dict[str, tuple[Any, ...]] = {}

    def process(self, topic: str, payload: bytes, received_at: int) -> Decision:
        """Handle one received message; never raises (bad input is rejected and counted).

        Whatever goes wrong with one message -- a bug here, in the sessions or in the
        enrichment included -- costs that message (a ``rejected`` row naming the error, a
        rate-limited log line with the traceback), never the receive loop."""
        try:
            decision = self._process(topic, payload, received_at)
        except Exception as exc:  # the loop must outlive any one message
            return self._internal_error(topic, payload, received_at, exc)
        return decision

    def _process(self, topic: str, payload: bytes, received_at: int) -> Decision:
        routed = self._route(topic, payload, received_at)
        if not isinstance(routed, Topic):
            return routed
        outcome, bad_metrics = self.sessions.handle_raw(
            routed, payload, received_at, max_decompressed_bytes=self._max_decompressed
        )
        batch = self._decided(outcome, bad_metrics, topic, payload, received_at)
        if batch.blocks and topic not in self._routes:
            self._learn_route(topic, routed)
        self.account(batch, outcome.rebirths)
        return batch, outcome.rebirths, _NONE

    def process_steps(
        self, topic: str, payload: bytes, received_at: int
    ) -> Generator[Batch | None, None, Decision]:
        """:meth:`process` in slices: yields None between slices of the work, and a batch
        (enriched and counted) for each slice of the rows but the last, which is in the
        decision it returns.  The rows together are what :meth:`process` gives.  Never
        raises; no other message may be processed until it returned."""
        try:
            decision = yield from self._process_steps(topic, payload, received_at)
        except Exception as exc:  # as process(): one message costs only itself
            return self._internal_error(topic, payload, received_at, exc)
        return decision

    def _process_steps(
        self, topic: str, payload: bytes, received_at: int
    ) -> Generator[Batch | None, None, Decision]:
        routed = self._route(topic, payload, received_at)
        if not isinstance(routed, Topic):
            return routed
        self.busy = True
        try:
            outcome, bad_metrics = yield from self.sessions.handle_raw_steps(
                routed, payload, received_at, self._max_decompressed
            )
            batch = self._decided(outcome, bad_metrics, topic, payload, received_at)
            yield from self.enricher.enrich_steps(batch)
        finally:
            self.busy = False
        self.account(batch, outcome.rebirths, enrich=False)
        *first, last = batch.parts(SLICE)
        yield from first
        return last, outcome.rebirths, _NONE

    def _internal_error(self, topic: str, payload: bytes, received_at: int, exc: Exception) -> Decision:
        self.counters.internal_errors += 1
        self.counters.rejected_by_reason["internal"] += 1
        self._rlog.exception(f"internal:{type(exc).__name__}", "error handling a message on %s", topic)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        return Batch(rejected=[Rejected(received_at, topic, payload, reason)]), _NONE, _NONE

    def _route(self, topic: str, payload: bytes, received_at: int) -> Decision | Topic:
        """What a message is: the decision for anything but an edge node's session message
        (context, STATE, commands, a topic that is not Sparkplug), else its parsed topic."""
        if topic.startswith(self.context_prefix):
            return self.process_context(topic, payload, received_at)
        if topic.startswith(self.records_prefix):
            return self.process_records(topic, payload, received_at)
        self.counters.messages += 1
        parsed = self._topics.get(topic, False)
        if parsed is False:
            try:
                parsed = parse_topic(topic)
            except UnsError:
                parsed = None
            if len(self._topics) < _TOPIC_CACHE_MAX:
                self._topics[topic] = parsed
        if parsed is None:
            return self._reject(topic, payload, received_at, "not a Sparkplug B topic"), _NONE, _NONE
        assert isinstance(parsed, Topic)
        mtype = parsed.message_type
        self._by_type[mtype._value_] += 1  # a str key: an Enum member hashes in Python, slowly
        if mtype is MessageType.STATE:
            return Batch(), _NONE, self._process_state(parsed, payload)
        if mtype is MessageType.NCMD or mtype is MessageType.DCMD:
            self.counters.commands_ignored += 1  # ours echoed back, or another host's
            return Batch(), _NONE, _NONE
        return parsed

    def _decided(
        self,
        outcome: Outcome,
        bad_metrics: list[tuple[int, str]],
        topic: str,
        payload: bytes,
        received_at: int,
    ) -> Batch:
        """The batch of a session message: the outcome's, with a row per metric that could
        not be decoded (at most MAX_REJECTED_PER_MESSAGE, then one that counts the rest)."""
        if outcome.undecodable is not None:
            self._rlog.warning(f"decode:{topic}", "undecodable payload on %s: %s", topic, outcome.undecodable)
        batch = outcome.batch
        if bad_metrics:
            errors = [f"undecodable: {reason}" for _index, reason in bad_metrics]
            batch.rejected.extend(metric_rejections(received_at, topic, payload, errors))
        return batch

    @property
    def lane(self) -> bool:
        """Whether :meth:`process_many` decodes anything (the native decoder, columnar sinks)."""
        return self.sessions.columnar and native.AVAILABLE

    def process_many(
        self, messages: list[Message], start: int, received_at: int, *, below: int = 0
    ) -> tuple[int, Batch | None]:
        """The native lane: ``messages[start:]`` as long as each is ordinary in-order DATA of a
        known route, decoded in one C loop into one batch of :class:`SampleRuns` (the same
        samples, sessions and counters as :meth:`process` message by message).  Returns the
        index of the first message left for :meth:`process` and the batch (None: nothing);
        payloads of ``below`` bytes or more (when given) are left for it too."""
        if not self._routes or not self.lane:
            return start, None
        sessions = self.sessions
        # ``below``: payloads of that many bytes or more are left for process() (the engine
        # slices them)
        limit = (
            min(sessions.max_payload_bytes or below - 1, below - 1) if below else sessions.max_payload_bytes
        )
        try:
            end, rows, records, runs = native.decode_many(
                messages, start, self._routes, received_at, sessions.max_metrics, limit
            )
        except Exception:  # a bug must not cost the messages: they take process() instead
            self._rlog.exception("lane", "native lane failed; these messages take the Python path")
            return start, None
        if not runs:
            return start, None
        counters, by_type, at = self.counters, self._by_type, self.context.at
        count = end - start
        counters.messages += count
        counters.metrics += len(records)
        sessions.count_fast(count, len(records))
        routes, _seqs, _bdseqs, times, _rows = zip(*runs, strict=True)  # per message, in C
        kinds = [route[4] for route in routes]
        for kind in set(kinds):
            by_type[kind] += kinds.count(kind)
        contexts: list[dict[str, str] | None] = list(map(at, [route[5] for route in routes], times))
        return end, Batch(blocks=[SampleRuns(rows, records, runs, contexts, received_at)])

    def _learn_route(self, topic: str, parsed: Topic) -> None:
        """A DATA topic whose message the session decoded natively becomes a route of the lane,
        unless its source has context metrics or metric overrides in the model (those samples
        are enriched one by one)."""
        if len(self._routes) >= _TOPIC_CACHE_MAX:
            return
        node = self.sessions.node_state(parsed.group_id, parsed.edge_node_id)
        resolved = self.enricher.model.resolve(parsed.group_id, parsed.edge_node_id, parsed.device_id)
        if node is None or resolved.context_keys or resolved.metrics:
            return
        self._routes[topic] = (
            node, parsed.device_id, parsed.group_id, parsed.edge_node_id, parsed.message_type._value_,
            resolved.path, resolved.unmapped,
        )  # fmt: skip

    def tick(self, now_ms: int) -> tuple[Batch, list[RebirthRequest]]:
        """Expire the reorder timeouts due at ``now_ms`` (what they released, and rebirths);
        nothing while a large message is processed in slices (its node's state is half made)."""
        if self.busy:
            return Batch(), []
        outcome = self.sessions.tick(now_ms)
        if outcome.batch or outcome.rebirths:
            self.account(outcome.batch, outcome.rebirths)
        return outcome.batch, outcome.rebirths

    def broker_lost(self, now_ms: int) -> Batch:
        """The connection is gone: every node and device offline and stale (docs/sparkplug.md §3.7)."""
        outcome = self.sessions.disconnected(now_ms)
        self.account(outcome.batch, ())
        return outcome.batch

    def broker_back(self, now_ms: int) -> Batch:
        """The connection is back: a ``reconnected`` session event for every known node."""
        outcome = self.sessions.reconnected(now_ms)
        self.account(outcome.batch, ())
        return outcome.batch

    def rebirth_all(self, reason: str) -> list[RebirthRequest]:
        """A rebirth request for every node known (``engine.on_reconnect = "rebirth"``)."""
        requests = [RebirthRequest(n.group_id, n.edge_node_id, reason) for n in self.sessions.nodes()]
        self.counters.rebirths_requested += len(requests)
        return requests

    def account(self, batch: Batch, rebirths: Sequence[RebirthRequest], *, enrich: bool = True) -> None:
        """Enrich ``batch`` (paths, context; unless ``enrich`` is False: done already) and
        count what it holds."""
        if enrich and (batch.samples or batch.blocks or batch.catalog):
            self.enricher.enrich(batch)
        counters = self.counters
        counters.metrics += batch.sample_count
        counters.context_changes += len(batch.context)
        if batch.rejected:
            counters.count_rejected([r.error for r in batch.rejected])
            for rejected in batch.rejected:  # each is also a row of the lake's rejected table
                self._rlog.warning(
                    f"reject:{rejected.topic}", "rejected on %s: %s", rejected.topic, rejected.error
                )
        for ev in batch.sessions:
            kind = ev.event
            if kind == SessionEventKind.SEQ_GAP:
                counters.seq_gaps += 1
            elif kind == SessionEventKind.BIRTH:
                if ev.device_id is None:
                    counters.node_births += 1
                else:
                    counters.device_births += 1
            elif kind == SessionEventKind.DEATH:
                if ev.device_id is None:
                    counters.node_deaths += 1
                else:
                    counters.device_deaths += 1
        counters.rebirths_requested += len(rebirths)

    def _reject(
        self, topic: str, payload: bytes, received_at: int, reason: str, *, context: bool = False
    ) -> Batch:
        self.counters.count_rejected([reason], context=context)
        if context:
            self.counters.context_rejected += 1
        self._rlog.warning(f"reject:{topic}", "rejected message on %s: %s", topic, reason)
        return Batch(rejected=[Rejected(received_at, topic, payload, reason)])

    def remember_applied(self, ids: Mapping[str, str | None] | Iterable[str]) -> None:
        """Context event ids applied elsewhere (the lake's, at start; with the fingerprint of
        their content when known): never stored again.  One that arrives with the same
        content (a redelivery, or an event another shard of the lake stored while this
        engine was away) still updates this engine's own context store once, so its live
        enrichment has it; it is acknowledged as a duplicate and writes nothing."""
        known = ids if isinstance(ids, Mapping) else dict.fromkeys(ids)
        new = {i: f for i, f in known.items() if i not in self.applied_ids}
        self.applied_ids.update(new)
        self._stored_elsewhere.update(new)

    def process_context(
        self, topic: str, payload: bytes, received_at: int, *, retained: bool = False
    ) -> Decision:
        """One context event: applied at most once per id, always acknowledged.

        Returns the changes (for the lake's context table) when the event is applied,
        a ``rejected`` row when it is malformed, nothing when it is a duplicate (its id
        was applied before) or a ``retained`` delivery (the broker's copy of an event
        already seen: never applied, counted as ``context_retained_ignored``), and in
        every case the acknowledgement among the publishes.  Never raises."""
        self.counters.context_events += 1

        def handle(path: str) -> Decision:
            return self._process_context(topic, path, payload, received_at, retained)

        return self.take_event(topic, payload, received_at, self.context_prefix, handle, "context_rejected")

    def take_event(
        self,
        topic: str,
        payload: bytes,
        received_at: int,
        prefix: str,
        handle: Callable[[str], Decision],
        failures: str,
    ) -> Decision:
        """The frame of an intake event (a context event, a batch record): counted, its
        path (none for the intake's own topic, never the topic itself), the SHA-256 its
        acknowledgement names, and a bug in ``handle(path)`` costs only this message
        (counted in the counter ``failures`` too)."""
        self.counters.messages += 1
        path = topic[len(prefix) :] if topic.startswith(prefix) else ""
        self._event_digest = hashlib.sha256(payload).hexdigest()
        try:
            return handle(path)
        except Exception as exc:  # as process(): one message costs only itself
            setattr(self.counters, failures, getattr(self.counters, failures) + 1)
            return self._event_internal_error(topic, path, payload, received_at, exc)

    def _event_internal_error(
        self, topic: str, path: str, payload: bytes, received_at: int, exc: Exception
    ) -> Decision:
        """A context event or record that hit a bug: rejected with the error, acknowledged."""
        batch, _, _ = self._internal_error(topic, payload, received_at, exc)
        reason = batch.rejected[0].error
        return batch, _NONE, (self._ack(None, REJECTED, reason, path, received_at),)

    def _process_context(
        self, topic: str, path: str, payload: bytes, received_at: int, retained: bool
    ) -> Decision:
        try:
            event = decode_context_payload(payload, path=path)
        except ContextError as exc:
            if retained:
                self.counters.context_retained_ignored += 1
                return Batch(), _NONE, (self._ack(None, DUPLICATE, RETAINED_COPY, path, received_at),)
            ack = self._ack(None, REJECTED, exc.reason, path, received_at)
            return self._reject(topic, payload, received_at, exc.reason, context=True), _NONE, (ack,)
        if retained:
            self.counters.context_retained_ignored += 1
            ack = self._ack(_id_of(path, event, received_at), DUPLICATE, RETAINED_COPY, path, received_at)
            return Batch(), _NONE, (ack,)
        try:
            signer = verify_event(path, event, self.trusted_keys, required=self.require_signature)
            changes = parse_context_event(path, event, received_at, signer=signer)
            if "ts" in event:  # without one it is the engine's own clock
                check_event_ts(changes[0].ts, received_at, self.max_future_ms)
            if self.require_reason:
                check_reason(changes, received_at, late_ms=self.late_ms)
        except (ContextError, SignatureError, IntakeError) as exc:
            ack = self._ack(_id_of(path, event, received_at), REJECTED, exc.reason, path, received_at)
            return self._reject(topic, payload, received_at, exc.reason, context=True), _NONE, (ack,)
        ident = changes[0].event_id
        assert ident is not None  # every change of an event carries its id
        fingerprint = change_fingerprint(changes)
        if ident in self.applied_ids:
            known = self.applied_ids[ident]
            if known is not None and known != fingerprint:  # the id stands for other content
                return self._conflict(topic, payload, received_at, ident, path)
            if ident in self._stored_elsewhere:  # in the lake, not yet in this engine's memory
                self._stored_elsewhere.discard(ident)
                for change in changes:
                    self.context.apply(change)
            self.counters.context_duplicates += 1
            return Batch(), _NONE, (self._ack(ident, DUPLICATE, ALREADY_APPLIED, path, received_at),)
        for change in changes:
            self.context.apply(change)
        self.applied_ids[ident] = fingerprint
        self.counters.context_applied += 1
        self.counters.context_changes += len(changes)
        return Batch(context=changes), _NONE, (self._ack(ident, APPLIED, None, path, received_at),)

    def _conflict(self, topic: str, payload: bytes, received_at: int, ident: str, path: str) -> Decision:
        """An id applied before with other content: rejected as ``conflict``, recorded, counted
        (an event cannot take the place of another by reusing its id)."""
        self.counters.context_conflicts += 1
        reason = f"conflict: event {ident!r} was applied before with other content; nothing changed"
        ack = self._ack(ident, CONFLICT, reason, path, received_at)
        return self._reject(topic, payload, received_at, reason, context=True), _NONE, (ack,)

    # ------------------------------------------------------------------ batch records
    def remember_records(self, records: Mapping[str, str]) -> None:
        """Records the lake holds (``{record id: content SHA-256}``, at start): never stored
        again; one that comes again is a duplicate, or a conflict when its content differs."""
        self.records.remember(records)

    def process_records(
        self, topic: str, payload: bytes, received_at: int, *, retained: bool = False
    ) -> Decision:
        """One batch record (:mod:`uns.engine.record_decisions`); never raises."""
        return self.records.process(topic, payload, received_at, retained=retained)

    def _ack(self, ident: str | None, status: str, reason: str | None, path: str, ts: int) -> Publish:
        """The acknowledgement of one context event (``schemas/context-ack.schema.json``);
        ``ts`` is when the engine decided (the event's receive time).  With the engine's key
        it carries a ``signature`` over the rest (uns.core.signing)."""
        body: dict[str, object] = {
            "id": ident,
            "status": status,
            "reason": reason,
            "path": path,
            "host_id": self.host_id,
            "ts": ts,
            "event_sha256": self._event_digest,
        }
        if self.ack_key is not None:
            name, private = self.ack_key
            body["signature"] = signature_block(private, name, canonical_json(body))
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")
        return Publish(self.context_ack_topic, payload, 1, False)

    def _process_state(self, topic: Topic, payload: bytes) -> Sequence[Publish]:
        """Another host's STATE is only counted; our own saying offline while we are online
        (someone else, or our old Will arriving late) is answered by re-asserting online with
        the same T (docs/sparkplug.md §3 rule 4)."""
        self.counters.host_states_seen += 1
        try:
            state = parse_state(payload)
        except UnsError as exc:
            self._rlog.warning(f"state:{topic}", "bad STATE on %s: %s", topic, exc)
            return _NONE
        if (
            topic.host_id == self.host_id
            and not topic.legacy
            and not state.online
            and self.state_ts is not None
        ):
            return (Publish(self.state_topic, format_state(True, self.state_ts), 1, True),)
        return _NONE


def _id_of(path: str, event: dict[str, Any], received_at: int) -> str | None:
    """The id of an event that may be malformed, for its acknowledgement (None if it has none)."""
    try:
        return event_id(path, event if "ts" in event else {**event, "ts": received_at})
    except (ContextError, TypeError, ValueError):
        return None
