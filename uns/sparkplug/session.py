"""Sparkplug B 3.0 host session state machine (pure: no I/O, no asyncio, no clocks).

:class:`SessionManager` tracks every edge node and device seen on the broker
(docs/sparkplug.md §3, §5, §6) and turns each decoded message into an
:class:`Outcome`: a :class:`uns.core.events.Batch` for the sinks and the rebirth
requests the I/O shell should send.  Time is an argument (ms, UTC).  Its
settings are the config's ``[sparkplug]`` section, taken as any object with
those attributes (:class:`SessionSettings`; this layer does not import the
config).

This module holds the manager and each node's seq stream (in order, reorder
buffer, gaps); the rest of a session is beside it:

- :mod:`uns.sparkplug.nodes`: the state kept per node and device, and snapshots;
- :mod:`uns.sparkplug.lifecycle`: births and deaths;
- :mod:`uns.sparkplug.data`: DATA messages (the typed path), and
  :mod:`uns.sparkplug.fastdata`: the lean decoder ordinary DATA takes instead;
- :mod:`uns.sparkplug.births`: what is kept of each born metric;
- :mod:`uns.sparkplug.outcome`: the :class:`Outcome` and how handlers record
  events, rejections and rate-limited rebirth requests.

Decisions where the specification leaves room (each has a test):

- Samples: every metric value of NBIRTH/DBIRTH/NDATA/DDATA is a sample, except
  the node's ``bdSeq`` and ``Node Control/*`` metrics (session bookkeeping, not
  measurements; in births and DATA alike) and Template *definitions*.  All born
  metrics, those included, are in the catalog.
- DATA metrics: the alias decides when present (a DATA name that differs from
  the BIRTH is ignored); the value is typed with the BIRTH's datatype unless the
  metric carries its own ``datatype`` on the wire, which then wins.
- Anything that cannot be used becomes a :class:`Rejected` entry with the raw
  message bytes: a whole message (unknown node, device without DBIRTH,
  duplicate or out-of-window seq, undecodable bytes) or one metric (unknown
  alias, unborn name, value not convertible); the rest of a message is used.
- Ignored NDEATH/DDEATH are recorded as ``death_ignored`` session events.
- Gaps: later messages wait in the reorder buffer.  When the timeout expires,
  the buffer is full, or the reorder timeout is 0, the missing seqs are given
  up (``seq_gap``), the buffered messages are processed in seq order (as
  Ignition does) and a rebirth is requested.  A message that arrives after its
  seq was given up is rejected (it cannot be put back in order).
- A new NBIRTH, a matched NDEATH or :meth:`SessionManager.disconnected` first
  process what is buffered (giving up its holes, without a rebirth request),
  because those messages belong to the session that is ending.
- DBIRTH before any NBIRTH cannot be ordered (no seq base): rejected, rebirth.
- DDEATH without seq (field behaviour) is applied at once; DATA/DBIRTH without
  seq are applied at once too, with one ``protocol_error`` per NBIRTH.
- NDEATH matches by bdSeq equality (the ``bdSeq`` metric, or the NBIRTH's bdSeq
  alias); an NBIRTH without bdSeq is matched only by an NDEATH without one.
- After :meth:`SessionManager.disconnected` every node needs a new NBIRTH:
  DATA arriving first is rejected and triggers a (rate-limited) rebirth.
"""

from __future__ import annotations

from typing import Protocol

from uns.core.events import Batch, SessionEventKind
from uns.errors import SparkplugDecodeError
from uns.sparkplug import native
from uns.sparkplug.codec import decode_payload_steps
from uns.sparkplug.compression import is_compressed, unwrap_compressed_steps
from uns.sparkplug.data import apply_data
from uns.sparkplug.fastdata import data_samples, parse_data
from uns.sparkplug.lifecycle import (
    dbirth,
    ddeath,
    go_offline,
    ignored_ndeath,
    nbirth,
    ndeath_bdseq,
    node_died,
)
from uns.sparkplug.limits import OVER_LIMIT, MessageLimits
from uns.sparkplug.native_data import native_outcome
from uns.sparkplug.nodes import NO_DBIRTH, NO_NBIRTH, NodeInfo, NodeState, node_info
from uns.sparkplug.outcome import Outcome, RebirthPolicy, protocol_error_once, reject, session_event
from uns.sparkplug.payload import Payload
from uns.sparkplug.reorder import REORDER_SPAN, Received, SeqPosition, seqs_text
from uns.sparkplug.steps import Steps, run_steps
from uns.sparkplug.topic import MessageType, Topic

__all__ = ["SessionManager", "SessionSettings"]

_NBIRTH, _NDEATH, _NDATA = MessageType.NBIRTH, MessageType.NDEATH, MessageType.NDATA
_DBIRTH, _DDEATH, _DDATA = MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA
_SEQUENCED = frozenset({_DBIRTH, _NDATA, _DDATA, _DDEATH})
_SESSION_TYPES = _SEQUENCED | {_NBIRTH, _NDEATH}
_STAT_NAMES = (
    "messages",
    "samples",
    "rejected",
    "duplicates",
    "seq_gaps",
    "reorder_ok",
    "reorder_timeouts",
    "rebirths_requested",
    "rebirths_suppressed",
)


class SessionSettings(Protocol):
    """What the sessions take from the config's ``[sparkplug]`` section
    (:class:`uns.config.SparkplugSection` has these; docs/sparkplug.md §3 "seq", "Rebirth request")."""

    @property
    def reorder_timeout_ms(self) -> int:
        """0 = no buffering: a gap is given up (and a rebirth requested) at once."""

    @property
    def rebirth_requests(self) -> bool:
        """Send rebirth requests at all (usually only the primary host does)."""

    @property
    def rebirth_min_interval_ms(self) -> int:
        """At most one rebirth request per node per interval."""

    @property
    def max_reorder_buffer(self) -> int:
        """Messages buffered per node before the holes are given up."""

    @property
    def max_decompressed_bytes(self) -> int:
        """Bound for the payload inside a compression envelope."""

    @property
    def max_payload_bytes(self) -> int:
        """Bound for a message's payload (uns.sparkplug.limits)."""

    @property
    def max_metrics_per_message(self) -> int:
        """Bound for a message's metrics, Template members included."""

    @property
    def max_nesting(self) -> int:
        """Bound for Template/PropertySet nesting."""


class SessionManager:
    """All edge-node and device sessions of one host on one broker."""

    def __init__(self, config: SessionSettings) -> None:
        self._reorder_timeout_ms = config.reorder_timeout_ms
        self._max_reorder_buffer = config.max_reorder_buffer
        self._max_decompressed_bytes = config.max_decompressed_bytes
        #: what one message may cost (docs/sparkplug.md section 6): over a limit it is refused whole
        self.limits = MessageLimits(
            config.max_payload_bytes, config.max_metrics_per_message, config.max_nesting
        )
        self._nodes: dict[tuple[str, str], NodeState] = {}
        self._buffering: dict[tuple[str, str], NodeState] = {}  # nodes with a reorder timer running
        self._stats = dict.fromkeys(_STAT_NAMES, 0)
        self._rebirths = RebirthPolicy(config.rebirth_requests, config.rebirth_min_interval_ms, self._stats)
        #: hand ordinary DATA to the sinks as SampleBlocks (the engine sets it when every sink
        #: takes them); otherwise the native decoder's rows are made Sample objects
        self.columnar = False
        #: beyond the limits the native decoder leaves a message to Python, which applies them
        self.max_metrics, self.max_payload_bytes = self.limits.max_metrics, self.limits.max_payload_bytes

    # --- public API ------------------------------------------------------------------

    def handle(self, topic: Topic, payload: Payload, raw: bytes, received_at: int) -> Outcome:
        """Apply one decoded message from ``spBv1.0/<group>/<type>/<node>[/<device>]``."""
        return run_steps(self.handle_steps(topic, payload, raw, received_at))

    def handle_steps(self, topic: Topic, payload: Payload, raw: bytes, received_at: int) -> Steps[Outcome]:
        """:meth:`handle` in slices (uns.sparkplug.steps): a birth pauses between its metrics."""
        out = Outcome()
        self._stats["messages"] += 1
        msg = Received(topic, payload, raw, received_at, None if payload.seq is None else payload.seq & 255)
        mtype = topic.message_type
        if mtype not in _SESSION_TYPES:  # the engine routes STATE and NCMD/DCMD elsewhere
            reject(out, msg, f"{mtype.value} is not a session message")
            return self._done(out)
        key = (topic.group_id, topic.edge_node_id)
        node = self._nodes.get(key)
        if node is None:
            if mtype is _NDEATH:
                session_event(out, received_at, topic, None, SessionEventKind.DEATH_IGNORED, NO_NBIRTH)
                return self._done(out)
            node = self._nodes[key] = NodeState(*key)
        deadline = node.tracker.deadline
        if deadline is not None and received_at >= deadline:
            # the engine's timer may fire late: expire first so the result does not depend on it
            self._expire(node, received_at, out)
        if mtype is _NDEATH:
            self._ndeath(node, msg, out)
        else:
            yield from (self._sequenced if mtype in _SEQUENCED else self._nbirth)(node, msg, out)
        if payload.seq is not None and payload.seq > 255 and mtype is not _NDEATH:
            detail = f"{mtype.value} seq {payload.seq} > 255, used modulo 256"
            protocol_error_once(node, "seq>255", detail, received_at, out)
        return self._done(out)

    def handle_raw(
        self, topic: Topic, raw: bytes, received_at: int, *, max_decompressed_bytes: int | None = None
    ) -> tuple[Outcome, list[tuple[int, str]]]:
        """Decode and apply one message: ``(outcome, [(metric index, reason), ...])``.

        The same as :func:`~uns.sparkplug.codec.decode_payload_lenient` within
        :attr:`limits` (a compression envelope unwrapped with at most
        ``max_decompressed_bytes``, by default the settings' value) followed by
        :meth:`handle`, or :meth:`handle_undecodable` when the bytes cannot be
        decoded or are over a limit (``outcome.undecodable`` then says why).  The
        second item lists the metrics that could not be decoded; the caller records
        them.  Ordinary in-order DATA takes a fast path that gives the same result.
        """
        return run_steps(self.handle_raw_steps(topic, raw, received_at, max_decompressed_bytes))

    def handle_raw_steps(
        self, topic: Topic, raw: bytes, received_at: int, max_decompressed_bytes: int | None = None
    ) -> Steps[tuple[Outcome, list[tuple[int, str]]]]:
        """:meth:`handle_raw` in slices (uns.sparkplug.steps): decoding and births pause."""
        mtype = topic.message_type
        if (mtype is _DDATA or mtype is _NDATA) and len(raw) <= self.limits.max_payload_bytes:
            fast = self._fast_data(topic, raw, received_at)
            if fast is not None:
                return fast, []
        try:
            payload, bad_metrics = yield from decode_payload_steps(raw, self.limits)
            if is_compressed(payload):
                limit = max_decompressed_bytes
                if limit is None:
                    limit = self._max_decompressed_bytes
                payload, bad_metrics = yield from unwrap_compressed_steps(payload, limit, self.limits)
        except SparkplugDecodeError as exc:
            out = self.handle_undecodable(topic, raw, exc.reason, received_at)
            out.undecodable = exc.reason
            return out, []
        return (yield from self.handle_steps(topic, payload, raw, received_at)), bad_metrics

    def _fast_data(self, topic: Topic, raw: bytes, received_at: int) -> Outcome | None:
        """:meth:`handle` of an ordinary in-order DATA message of an online node or
        device, without typed decoding; None (nothing changed) for anything else."""
        node = self._nodes.get((topic.group_id, topic.edge_node_id))
        if node is None or not node.own.online:
            return None
        tracker = node.tracker
        if tracker.deadline is not None:  # a reorder buffer to look after
            return None
        if topic.message_type is _DDATA:
            owner = node.devices.get(topic.device_id or "")
            if owner is None or not owner.online:
                return None
        else:
            owner = node.own
        if native.AVAILABLE:
            done = native_outcome(self, node, owner, raw, received_at)
            if done is not None:
                return done
        lean = parse_data(raw)
        if lean is None or len(lean.metrics) > self.limits.max_metrics:
            return None  # the typed path decides (and refuses a message over the limit)
        seq = lean.seq
        if seq > 255 or (not seq and not lean.HasField("seq")):
            return None
        expected = tracker.expected
        if expected is not None and seq != expected:
            return None
        payload_ts = lean.timestamp
        if not payload_ts and not lean.HasField("timestamp"):
            payload_ts = received_at
        samples = data_samples(
            lean.metrics, owner.by_alias, owner.by_name, node.group_id, node.edge_node_id, owner.device_id,
            payload_ts, received_at, seq, node.bdseq,
        )  # fmt: skip
        if samples is None:
            return None
        tracker.processed(seq, hash(raw))
        stats = self._stats
        stats["messages"] += 1
        stats["samples"] += len(samples)
        return Outcome(Batch(samples))

    def node_state(self, group_id: str, edge_node_id: str) -> NodeState | None:
        """The state of one edge node (the native lane reads it live)."""
        return self._nodes.get((group_id, edge_node_id))

    def count_fast(self, messages: int, samples: int) -> None:
        """Count DATA the native lane handled (what :meth:`stats` says)."""
        stats = self._stats
        stats["messages"] += messages
        stats["samples"] += samples

    def handle_undecodable(self, topic: Topic, raw: bytes, error: str, received_at: int) -> Outcome:
        """Record bytes from a Sparkplug topic that could not be decoded, and ask for a rebirth."""
        out = Outcome()
        self._stats["messages"] += 1
        over = error.startswith(OVER_LIMIT)
        what = f"{OVER_LIMIT if over else 'undecodable'} {topic.message_type.value}"
        detail = error[len(OVER_LIMIT) :].lstrip(": ") if over else error
        reject(out, Received(topic, Payload(), raw, received_at, None), f"{what}: {detail}")
        if topic.message_type in _SESSION_TYPES:
            key = (topic.group_id, topic.edge_node_id)
            node = self._nodes.get(key) or self._nodes.setdefault(key, NodeState(*key))
            self._rebirths.request(node, what, received_at, out)
        return self._done(out)

    def tick(self, now_ms: int) -> Outcome:
        """Expire the reorder timeouts that are due at ``now_ms``."""
        out = Outcome()
        for node in list(self._buffering.values()):
            deadline = node.tracker.deadline
            if deadline is not None and now_ms >= deadline:
                self._expire(node, now_ms, out)
        return self._done(out)

    def next_deadline(self) -> int | None:
        """The earliest pending reorder deadline (ms), for the engine's timer."""
        deadlines = (n.tracker.deadline for n in self._buffering.values())
        return min((d for d in deadlines if d is not None), default=None)

    def disconnected(self, now_ms: int) -> Outcome:
        """The host lost the broker: process what is buffered, then everything offline and stale."""
        out = Outcome()
        for node in self._nodes.values():
            node.last_rebirth_at = None  # a new connection deserves a prompt rebirth
            if node.own.online:
                self._give_up_all(node, now_ms, out, "host lost the broker", rebirth=False)
                session_event(out, now_ms, node, None, SessionEventKind.DISCONNECTED, "host lost the broker")
                why = "since the host lost the broker (waiting for a rebirth)"
                go_offline(node, now_ms, out, why, "host lost the broker", device_deaths=False)
        return self._done(out)

    def reconnected(self, now_ms: int) -> Outcome:
        """The host has the broker again: a ``reconnected`` event for every node it knows
        (each waits for a birth, or a rebirth request, before its data counts again)."""
        out = Outcome()
        for node in self._nodes.values():
            why = "host reconnected to the broker"
            session_event(out, now_ms, node, None, SessionEventKind.RECONNECTED, why)
        return self._done(out)

    def node(self, group_id: str, edge_node_id: str) -> NodeInfo | None:
        """Snapshot of one node (None: never seen)."""
        node = self._nodes.get((group_id, edge_node_id))
        return None if node is None else node_info(node)

    def nodes(self) -> tuple[NodeInfo, ...]:
        """Snapshot of every node seen (sorted by group, edge node)."""
        return tuple(node_info(n) for _, n in sorted(self._nodes.items()))

    def node_counts(self) -> tuple[int, int]:
        """(online, known) edge nodes: what a status document needs, without the
        per-metric snapshot of :meth:`nodes` (200,000 born metrics take ~0.1 s to copy)."""
        return sum(1 for n in self._nodes.values() if n.own.online), len(self._nodes)

    def population(self) -> tuple[int, int, int]:
        """(devices online, devices known, born metrics of nodes and devices): what a scrape of
        ``/metrics`` reads; it walks nodes and devices, never the born metrics themselves."""
        online = known = born = 0
        for node in self._nodes.values():
            born += len(node.own.by_name)
            for device in node.devices.values():
                known += 1
                online += device.online
                born += len(device.by_name)
        return online, known, born

    def stats(self) -> dict[str, int]:
        """Counters since start (messages, samples, rejected, rebirths, ...)."""
        return {**self._stats, "nodes": len(self._nodes), "buffering_nodes": len(self._buffering)}

    # --- the seq stream ----------------------------------------------------------------

    def _sequenced(self, node: NodeState, msg: Received, out: Outcome) -> Steps[None]:
        mtype = msg.topic.message_type
        if not node.own.online:
            why = f"{mtype.value} from an edge node {node.own.offline_reason}"
            reject(out, msg, why)
            self._rebirths.request(node, why, msg.received_at, out)
            return
        seq = msg.seq
        if seq is None:
            if mtype is not _DDEATH:  # DDEATH without seq is common in the field: accepted
                protocol_error_once(node, "no-seq", f"{mtype.value} without seq", msg.received_at, out)
            yield from self._apply_steps(node, msg, out)
            return
        tracker = node.tracker
        digest = hash(msg.raw)
        position = tracker.classify(seq, digest)
        if position is SeqPosition.IN_ORDER:
            yield from self._apply_steps(node, msg, out)
            tracker.processed(seq, digest)
            if tracker.deadline is not None:
                self._gap_filled(node, msg.received_at, out)
        elif position is SeqPosition.AHEAD:
            self._ahead(node, msg, seq, digest, out)
        elif position is SeqPosition.DUPLICATE:
            self._stats["duplicates"] += 1
            reject(out, msg, f"duplicate of the message already received with seq {seq}")
        else:
            why = (
                f"seq {seq} is outside the reorder window (expected {tracker.expected}): late or out of sync"
            )
            reject(out, msg, why)
            self._rebirths.request(node, why, msg.received_at, out)

    def _ahead(self, node: NodeState, msg: Received, seq: int, digest: int, out: Outcome) -> None:
        tracker, now = node.tracker, msg.received_at
        if self._reorder_timeout_ms == 0:
            # no buffering: give the gap up at once, but keep the message (its aliases are still valid)
            missing = tracker.skip_to(seq)
            self._record_gap(node, missing, "reorder timeout is 0", 1, now, out)
            self._rebirths.request(node, f"seq gap: {seqs_text(missing)} missing", now, out)
            self._apply(node, msg, out)
            tracker.processed(seq, digest)
            return
        tracker.hold(msg, seq, self._reorder_timeout_ms)
        self._buffering[node.key] = node
        if tracker.buffered > self._max_reorder_buffer or tracker.span() >= REORDER_SPAN:
            self._give_up_all(node, now, out, "reorder buffer full", rebirth=True)

    def _gap_filled(self, node: NodeState, now: int, out: Outcome) -> None:
        opened = (node.tracker.deadline or now) - self._reorder_timeout_ms
        released = self._release(node, out)
        if released:  # the whole first hole is filled (a later one may remain)
            self._stats["reorder_ok"] += 1
            detail = f"gap filled {now - opened} ms after it opened; {released} buffered messages released"
            session_event(out, now, node, None, SessionEventKind.REORDER_OK, detail)
        self._after_release(node)

    def _release(self, node: NodeState, out: Outcome) -> int:
        """Process buffered messages while the next expected one is there; returns how many."""
        tracker = node.tracker
        released = 0
        while (msg := tracker.release_next()) is not None:
            self._apply(node, msg, out)
            tracker.processed(msg.seq or 0, hash(msg.raw))
            released += 1
        return released

    def _after_release(self, node: NodeState) -> None:
        node.tracker.refresh_deadline(self._reorder_timeout_ms)
        if node.tracker.deadline is None:
            self._buffering.pop(node.key, None)

    def _expire(self, node: NodeState, now: int, out: Outcome) -> None:
        tracker = node.tracker
        while tracker.deadline is not None and now >= tracker.deadline:
            self._stats["reorder_timeouts"] += 1
            waited = now - (tracker.deadline - self._reorder_timeout_ms)
            missing = tracker.skip_hole()
            detail = f"seq {seqs_text(missing)} still missing after {waited} ms"
            session_event(out, now, node, None, SessionEventKind.REORDER_TIMEOUT, detail)
            released = self._release(node, out)
            self._record_gap(node, missing, "reorder timeout", released, now, out)
            self._rebirths.request(node, f"reorder timeout: seq {seqs_text(missing)} missing", now, out)
            self._after_release(node)

    def _give_up_all(self, node: NodeState, now: int, out: Outcome, cause: str, *, rebirth: bool) -> None:
        """Process the whole buffer in seq order, giving up every hole."""
        tracker = node.tracker
        given_up: list[int] = []
        while tracker.buffered:
            missing = tracker.skip_hole()
            self._record_gap(node, missing, cause, self._release(node, out), now, out)
            given_up.extend(missing)
        self._after_release(node)
        if rebirth and given_up:
            self._rebirths.request(node, f"{cause}: seq {seqs_text(given_up)} missing", now, out)

    def _record_gap(
        self, node: NodeState, missing: list[int], cause: str, released: int, now: int, out: Outcome
    ) -> None:
        self._stats["seq_gaps"] += 1
        missed = seqs_text(missing)
        detail = f"seq {missed} missing ({cause}); {released} later messages processed without them"
        session_event(out, now, node, None, SessionEventKind.SEQ_GAP, detail)

    # --- applying messages in seq order ------------------------------------------------

    def _apply(self, node: NodeState, msg: Received, out: Outcome) -> None:
        run_steps(self._apply_steps(node, msg, out))

    def _apply_steps(self, node: NodeState, msg: Received, out: Outcome) -> Steps[None]:
        mtype = msg.topic.message_type
        if mtype is _NDATA:
            apply_data(node, node.own, msg, out, self._rebirths)
            return
        device_id = msg.topic.device_id or ""
        if mtype is _DBIRTH:
            yield from dbirth(node, device_id, msg, out, self._rebirths)
            return
        device = node.devices.get(device_id)
        if mtype is _DDEATH:
            ddeath(node, device_id, device, msg, out)
        elif device is None or not device.online:
            why = f"DDATA for device {device_id!r} {NO_DBIRTH if device is None else device.offline_reason}"
            reject(out, msg, why)
            self._rebirths.request(node, why, msg.received_at, out)
        else:
            apply_data(node, device, msg, out, self._rebirths)

    # --- births and deaths: the seq stream's side -----------------------------------------

    def _nbirth(self, node: NodeState, msg: Received, out: Outcome) -> Steps[None]:
        # buffered messages belong to the session this NBIRTH ends: use them first
        self._give_up_all(node, msg.received_at, out, "new NBIRTH", rebirth=False)
        yield from nbirth(node, msg, out, self._rebirths)

    def _ndeath(self, node: NodeState, msg: Received, out: Outcome) -> None:
        bdseq = ndeath_bdseq(node, msg)
        now = msg.received_at
        ignored = ignored_ndeath(node, bdseq)
        if ignored is not None:
            session_event(out, now, node, None, SessionEventKind.DEATH_IGNORED, ignored)
            return
        self._give_up_all(node, now, out, "NDEATH", rebirth=False)
        node_died(node, bdseq, now, out)

    # --- helpers -----------------------------------------------------------------------

    def _done(self, out: Outcome) -> Outcome:
        self._stats["samples"] += len(out.batch.samples)
        self._stats["rejected"] += len(out.batch.rejected)
        return out
