"""Sparkplug B 3.0 host session state machine (pure: no I/O, no asyncio, no clocks).

:class:`SessionManager` tracks every edge node and device seen on the broker
(SPARKPLUG.md §3, §5, §6) and turns each decoded message into an
:class:`Outcome`: a :class:`uns.core.events.Batch` for the sinks and the rebirth
requests the I/O shell should send.  Time is an argument (ms, UTC).  What is
kept of each born metric (and how its DATA values are typed) is in
:mod:`uns.sparkplug.births`.

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

from dataclasses import dataclass, field

from uns.core.events import (
    Batch,
    CatalogEntry,
    Quality,
    RebirthRequest,
    Rejected,
    Sample,
    SessionEvent,
    SessionEventKind,
)
from uns.errors import ConfigError, SparkplugDecodeError
from uns.sparkplug.births import BornMetric, describe_properties, property_quality
from uns.sparkplug.codec import decode_payload_lenient
from uns.sparkplug.compression import DEFAULT_MAX_SIZE, is_compressed, unwrap_compressed_lenient
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.fastdata import data_samples, parse_data
from uns.sparkplug.payload import Metric, MetricValue, Payload, Template
from uns.sparkplug.reorder import REORDER_SPAN, Received, SeqPosition, SeqTracker
from uns.sparkplug.topic import MessageType, Topic

__all__ = ["DeviceInfo", "MetricInfo", "NodeInfo", "Outcome", "SessionConfig", "SessionManager"]

_NBIRTH, _NDEATH, _NDATA = MessageType.NBIRTH, MessageType.NDEATH, MessageType.NDATA
_DBIRTH, _DDEATH, _DDATA = MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA
_SEQUENCED = frozenset({_DBIRTH, _NDATA, _DDATA, _DDEATH})
_SESSION_TYPES = _SEQUENCED | {_NBIRTH, _NDEATH}
_GOOD = Quality.GOOD
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


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How the host reacts to gaps and errors (SPARKPLUG.md §3 "seq", "Rebirth request")."""

    reorder_timeout_ms: int = 2000  # 0 = no buffering: a gap is given up (and a rebirth requested) at once
    rebirth_on_error: bool = True  # send rebirth requests at all (usually only the primary host does)
    rebirth_min_interval_ms: int = 5000  # at most one rebirth request per node per interval
    max_reorder_buffer: int = 1000  # messages buffered per node before the holes are given up

    def __post_init__(self) -> None:
        for key in ("reorder_timeout_ms", "rebirth_min_interval_ms", "max_reorder_buffer"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}", key=key)


@dataclass(slots=True)
class Outcome:
    """What one call produced: data for the sinks and rebirth requests for the I/O shell."""

    batch: Batch = field(default_factory=Batch)
    rebirths: list[RebirthRequest] = field(default_factory=list)
    #: :meth:`SessionManager.handle_raw` only: why the bytes could not be decoded (for the log)
    undecodable: str | None = None


@dataclass(frozen=True, slots=True)
class MetricInfo:
    name: str
    alias: int | None
    datatype: DataType
    unit: str | None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    online: bool
    birth_ts: int | None
    metrics: tuple[MetricInfo, ...]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Read-only snapshot of one edge node (for status and ``uns topics``)."""

    group_id: str
    edge_node_id: str
    online: bool
    bdseq: int | None
    next_seq: int | None
    birth_ts: int | None
    metrics: tuple[MetricInfo, ...]
    templates: tuple[str, ...]
    devices: tuple[DeviceInfo, ...]
    buffered: int
    rebirths_requested: int
    rebirths_suppressed: int


# --- per-session state -------------------------------------------------------------


class _Owner:
    """The born metrics of the node itself or of one device."""

    __slots__ = ("birth_ts", "by_alias", "by_name", "device_id", "offline_reason", "online")

    def __init__(self, device_id: str | None, offline_reason: str) -> None:
        self.device_id = device_id
        self.online = False
        self.offline_reason = offline_reason
        self.birth_ts: int | None = None
        self.by_name: dict[str, BornMetric] = {}
        self.by_alias: dict[int, BornMetric] = {}


_NO_NBIRTH = "no NBIRTH in this session (host started after it, or the NBIRTH was lost)"
_NEVER_BORN = f"with {_NO_NBIRTH}"
_NO_DBIRTH = "with no DBIRTH in this session"


class _Node:
    __slots__ = (
        "alias_owner",
        "ambiguous",
        "bdseq",
        "bdseq_alias",
        "born",
        "devices",
        "edge_node_id",
        "group_id",
        "key",
        "last_rebirth_at",
        "own",
        "rebirths_requested",
        "rebirths_suppressed",
        "templates",
        "tracker",
        "warned",
    )

    def __init__(self, group_id: str, edge_node_id: str) -> None:
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.key = (group_id, edge_node_id)
        self.own = _Owner(None, _NEVER_BORN)
        self.devices: dict[str, _Owner] = {}
        self.alias_owner: dict[int, str | None] = {}  # node-wide alias space: alias -> device id (None: node)
        self.ambiguous: set[int] = set()  # aliases claimed twice in the births: unusable until NBIRTH
        self.templates: dict[str, BornMetric] = {}
        self.born = False
        self.bdseq: int | None = None
        self.bdseq_alias: int | None = None
        self.tracker = SeqTracker()
        self.last_rebirth_at: int | None = None
        self.rebirths_requested = 0
        self.rebirths_suppressed = 0
        self.warned: set[str] = set()  # protocol errors already recorded since the NBIRTH


def _payload_ts(msg: Received) -> int:
    ts = msg.payload.timestamp
    return msg.received_at if ts is None else ts


def _int_value(metric: Metric) -> int | None:
    value = metric.value
    return value if type(value) is int else None


def _is_bdseq(name: str | None) -> bool:
    return name is not None and name.lower() == "bdseq"


class SessionManager:
    """All edge-node and device sessions of one host on one broker."""

    def __init__(self, config: SessionConfig = SessionConfig()) -> None:
        self._config = config
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._buffering: dict[tuple[str, str], _Node] = {}  # nodes with a reorder timer running
        self._stats = dict.fromkeys(_STAT_NAMES, 0)

    # --- public API ------------------------------------------------------------------

    def handle(self, topic: Topic, payload: Payload, raw: bytes, received_at: int) -> Outcome:
        """Apply one decoded message from ``spBv1.0/<group>/<type>/<node>[/<device>]``."""
        out = Outcome()
        self._stats["messages"] += 1
        msg = Received(topic, payload, raw, received_at, None if payload.seq is None else payload.seq & 255)
        mtype = topic.message_type
        if mtype not in _SESSION_TYPES:  # the engine routes STATE and NCMD/DCMD elsewhere
            self._reject(out, msg, f"{mtype.value} is not a session message")
            return self._done(out)
        key = (topic.group_id, topic.edge_node_id)
        node = self._nodes.get(key)
        if node is None:
            if mtype is _NDEATH:
                self._event(out, received_at, topic, None, SessionEventKind.DEATH_IGNORED, _NO_NBIRTH)
                return self._done(out)
            node = self._nodes[key] = _Node(*key)
        deadline = node.tracker.deadline
        if deadline is not None and received_at >= deadline:
            # the engine's timer may fire late: expire first so the result does not depend on it
            self._expire(node, received_at, out)
        if mtype in _SEQUENCED:
            self._sequenced(node, msg, out)
        elif mtype is _NBIRTH:
            self._nbirth(node, msg, out)
        else:
            self._ndeath(node, msg, out)
        if payload.seq is not None and payload.seq > 255 and mtype is not _NDEATH:
            detail = f"{mtype.value} seq {payload.seq} > 255, used modulo 256"
            self._protocol_error_once(node, "seq>255", detail, received_at, out)
        return self._done(out)

    def handle_raw(
        self, topic: Topic, raw: bytes, received_at: int, *, max_decompressed_bytes: int = DEFAULT_MAX_SIZE
    ) -> tuple[Outcome, list[tuple[int, str]]]:
        """Decode and apply one message: ``(outcome, [(metric index, reason), ...])``.

        The same as :func:`~uns.sparkplug.codec.decode_payload_lenient` (a
        compression envelope unwrapped with at most ``max_decompressed_bytes``)
        followed by :meth:`handle`, or :meth:`handle_undecodable` when the bytes
        cannot be decoded (``outcome.undecodable`` then says why).  The second
        item lists the metrics that could not be decoded; the caller records
        them.  Ordinary in-order DATA takes a fast path that gives the same result.
        """
        mtype = topic.message_type
        if mtype is _DDATA or mtype is _NDATA:
            fast = self._fast_data(topic, raw, received_at)
            if fast is not None:
                return fast, []
        try:
            payload, bad_metrics = decode_payload_lenient(raw)
            if is_compressed(payload):
                payload, bad_metrics = unwrap_compressed_lenient(payload, max_decompressed_bytes)
        except SparkplugDecodeError as exc:
            out = self.handle_undecodable(topic, raw, exc.reason, received_at)
            out.undecodable = exc.reason
            return out, []
        return self.handle(topic, payload, raw, received_at), bad_metrics

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
        lean = parse_data(raw)
        if lean is None:
            return None
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

    def handle_undecodable(self, topic: Topic, raw: bytes, error: str, received_at: int) -> Outcome:
        """Record bytes from a Sparkplug topic that could not be decoded, and ask for a rebirth."""
        out = Outcome()
        self._stats["messages"] += 1
        what = f"undecodable {topic.message_type.value}"
        self._reject(out, Received(topic, Payload(), raw, received_at, None), f"{what}: {error}")
        if topic.message_type in _SESSION_TYPES:
            key = (topic.group_id, topic.edge_node_id)
            node = self._nodes.get(key) or self._nodes.setdefault(key, _Node(*key))
            self._request_rebirth(node, what, received_at, out)
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
                self._event(out, now_ms, node, None, SessionEventKind.DISCONNECTED, "host lost the broker")
                why = "since the host lost the broker (waiting for a rebirth)"
                self._go_offline(node, now_ms, out, why, "host lost the broker", device_deaths=False)
        return self._done(out)

    def nodes(self) -> tuple[NodeInfo, ...]:
        """Snapshot of every node seen (sorted by group, edge node)."""
        return tuple(_node_info(n) for _, n in sorted(self._nodes.items()))

    def node_counts(self) -> tuple[int, int]:
        """(online, known) edge nodes: what a status document needs, without the
        per-metric snapshot of :meth:`nodes` (200,000 born metrics take ~0.1 s to copy)."""
        return sum(1 for n in self._nodes.values() if n.own.online), len(self._nodes)

    def stats(self) -> dict[str, int]:
        """Counters since start (messages, samples, rejected, rebirths, ...)."""
        return {**self._stats, "nodes": len(self._nodes), "buffering_nodes": len(self._buffering)}

    # --- the seq stream ----------------------------------------------------------------

    def _sequenced(self, node: _Node, msg: Received, out: Outcome) -> None:
        mtype = msg.topic.message_type
        if not node.own.online:
            why = f"{mtype.value} from an edge node {node.own.offline_reason}"
            self._reject(out, msg, why)
            self._request_rebirth(node, why, msg.received_at, out)
            return
        seq = msg.seq
        if seq is None:
            if mtype is not _DDEATH:  # DDEATH without seq is common in the field: accepted
                self._protocol_error_once(node, "no-seq", f"{mtype.value} without seq", msg.received_at, out)
            self._apply(node, msg, out)
            return
        tracker = node.tracker
        digest = hash(msg.raw)
        position = tracker.classify(seq, digest)
        if position is SeqPosition.IN_ORDER:
            self._apply(node, msg, out)
            tracker.processed(seq, digest)
            if tracker.deadline is not None:
                self._gap_filled(node, msg.received_at, out)
        elif position is SeqPosition.AHEAD:
            self._ahead(node, msg, seq, digest, out)
        elif position is SeqPosition.DUPLICATE:
            self._stats["duplicates"] += 1
            self._reject(out, msg, f"duplicate of the message already received with seq {seq}")
        else:
            why = (
                f"seq {seq} is outside the reorder window (expected {tracker.expected}): late or out of sync"
            )
            self._reject(out, msg, why)
            self._request_rebirth(node, why, msg.received_at, out)

    def _ahead(self, node: _Node, msg: Received, seq: int, digest: int, out: Outcome) -> None:
        tracker, now = node.tracker, msg.received_at
        if self._config.reorder_timeout_ms == 0:
            # no buffering: give the gap up at once, but keep the message (its aliases are still valid)
            missing = tracker.skip_to(seq)
            self._record_gap(node, missing, "reorder timeout is 0", 1, now, out)
            self._request_rebirth(node, f"seq gap: {_seqs(missing)} missing", now, out)
            self._apply(node, msg, out)
            tracker.processed(seq, digest)
            return
        tracker.hold(msg, seq, self._config.reorder_timeout_ms)
        self._buffering[node.key] = node
        if tracker.buffered > self._config.max_reorder_buffer or tracker.span() >= REORDER_SPAN:
            self._give_up_all(node, now, out, "reorder buffer full", rebirth=True)

    def _gap_filled(self, node: _Node, now: int, out: Outcome) -> None:
        opened = (node.tracker.deadline or now) - self._config.reorder_timeout_ms
        released = self._release(node, out)
        if released:  # the whole first hole is filled (a later one may remain)
            self._stats["reorder_ok"] += 1
            detail = f"gap filled {now - opened} ms after it opened; {released} buffered messages released"
            self._event(out, now, node, None, SessionEventKind.REORDER_OK, detail)
        self._after_release(node)

    def _release(self, node: _Node, out: Outcome) -> int:
        """Process buffered messages while the next expected one is there; returns how many."""
        tracker = node.tracker
        released = 0
        while (msg := tracker.release_next()) is not None:
            self._apply(node, msg, out)
            tracker.processed(msg.seq or 0, hash(msg.raw))
            released += 1
        return released

    def _after_release(self, node: _Node) -> None:
        node.tracker.refresh_deadline(self._config.reorder_timeout_ms)
        if node.tracker.deadline is None:
            self._buffering.pop(node.key, None)

    def _expire(self, node: _Node, now: int, out: Outcome) -> None:
        tracker = node.tracker
        while tracker.deadline is not None and now >= tracker.deadline:
            self._stats["reorder_timeouts"] += 1
            waited = now - (tracker.deadline - self._config.reorder_timeout_ms)
            missing = tracker.skip_hole()
            detail = f"seq {_seqs(missing)} still missing after {waited} ms"
            self._event(out, now, node, None, SessionEventKind.REORDER_TIMEOUT, detail)
            released = self._release(node, out)
            self._record_gap(node, missing, "reorder timeout", released, now, out)
            self._request_rebirth(node, f"reorder timeout: seq {_seqs(missing)} missing", now, out)
            self._after_release(node)

    def _give_up_all(self, node: _Node, now: int, out: Outcome, cause: str, *, rebirth: bool) -> None:
        """Process the whole buffer in seq order, giving up every hole."""
        tracker = node.tracker
        given_up: list[int] = []
        while tracker.buffered:
            missing = tracker.skip_hole()
            self._record_gap(node, missing, cause, self._release(node, out), now, out)
            given_up.extend(missing)
        self._after_release(node)
        if rebirth and given_up:
            self._request_rebirth(node, f"{cause}: seq {_seqs(given_up)} missing", now, out)

    def _record_gap(
        self, node: _Node, missing: list[int], cause: str, released: int, now: int, out: Outcome
    ) -> None:
        self._stats["seq_gaps"] += 1
        detail = f"seq {_seqs(missing)} missing ({cause}); {released} later messages processed without them"
        self._event(out, now, node, None, SessionEventKind.SEQ_GAP, detail)

    # --- applying messages in seq order ------------------------------------------------

    def _apply(self, node: _Node, msg: Received, out: Outcome) -> None:
        mtype = msg.topic.message_type
        if mtype is _NDATA:
            self._data(node, node.own, msg, out)
            return
        device_id = msg.topic.device_id or ""
        if mtype is _DBIRTH:
            self._dbirth(node, device_id, msg, out)
            return
        device = node.devices.get(device_id)
        offline = _NO_DBIRTH if device is None else device.offline_reason
        if mtype is _DDEATH:
            ts = _payload_ts(msg)
            if device is None or not device.online:
                self._event(
                    out, ts, node, device_id, SessionEventKind.DEATH_IGNORED, f"device offline {offline}"
                )
            else:
                self._event(out, ts, node, device_id, SessionEventKind.DEATH, f"DDEATH seq={msg.seq}")
                self._owner_offline(node, device, ts, out, "after its DDEATH", "DDEATH")
        elif device is None or not device.online:
            why = f"DDATA for device {device_id!r} {offline}"
            self._reject(out, msg, why)
            self._request_rebirth(node, why, msg.received_at, out)
        else:
            self._data(node, device, msg, out)

    def _data(self, node: _Node, owner: _Owner, msg: Received, out: Outcome) -> None:
        # the hot path: one dict lookup, one converter call and one Sample per metric
        samples = out.batch.samples
        group_id, edge_node_id, device_id = node.group_id, node.edge_node_id, owner.device_id
        received_at, seq, bdseq = msg.received_at, msg.seq, node.bdseq
        payload_ts = _payload_ts(msg)
        by_alias, by_name = owner.by_alias, owner.by_name
        unborn: list[str] = []
        for metric in msg.payload.metrics:
            alias = metric.alias
            record = by_alias.get(alias) if alias is not None else by_name.get(metric.name or "")
            if record is None:
                unborn.append(self._unborn(node, owner, metric, msg, out))
                continue
            value: MetricValue
            if metric.is_null:
                value, datatype = None, metric.datatype or record.datatype
            elif metric.datatype is None:
                try:
                    value = record.convert(metric.value)
                except SparkplugDecodeError as exc:
                    self._reject(
                        out, msg, f"metric {record.name!r}: not a {record.datatype.name}: {exc.reason}"
                    )
                    continue
                datatype = record.datatype
            else:
                value, datatype = metric.value, metric.datatype
            if record.is_sample:
                props = metric.properties
                samples.append(
                    Sample(
                        group_id, edge_node_id, device_id, record.name, datatype, value,
                        payload_ts if metric.timestamp is None else metric.timestamp, received_at,
                        _GOOD if props is None else property_quality(props),
                        metric.is_historical, metric.is_transient, seq, bdseq, record.alias, "", record.unit,
                    )
                )  # fmt: skip
        if unborn:
            listed = ", ".join(unborn[:3]) + (f" (+{len(unborn) - 3} more)" if len(unborn) > 3 else "")
            self._request_rebirth(node, f"{msg.topic.message_type.value} with {listed}", received_at, out)

    def _unborn(self, node: _Node, owner: _Owner, metric: Metric, msg: Received, out: Outcome) -> str:
        """Reject a DATA metric that no BIRTH defined; returns a short description."""
        alias = metric.alias
        if alias is None:
            what = f"unborn metric {metric.name!r}" if metric.name else "a metric with neither name nor alias"
            why = f"{what}: not in the {'DBIRTH' if owner.device_id else 'NBIRTH'}"
        else:
            what = f"unknown alias {alias}"
            if alias in node.ambiguous:
                why = f"alias {alias} is claimed by more than one metric in the births"
            elif alias in node.alias_owner:
                holder = node.alias_owner[alias]
                why = f"alias {alias} belongs to {f'device {holder!r}' if holder else 'the node'}"
            else:
                why = f"alias {alias} is not in any BIRTH of this session"
            if metric.name:
                why += f" (metric named {metric.name!r})"
        self._reject(out, msg, why)
        return what

    # --- births and deaths -------------------------------------------------------------

    def _nbirth(self, node: _Node, msg: Received, out: Outcome) -> None:
        ts = _payload_ts(msg)
        # buffered messages belong to the session this NBIRTH ends: use them first
        self._give_up_all(node, msg.received_at, out, "new NBIRTH", rebirth=False)
        previous = node.bdseq if node.own.online else None
        for device in node.devices.values():
            if device.online:
                self._owner_offline(
                    node, device, ts, out, "since the NBIRTH (waiting for a DBIRTH)", "NBIRTH"
                )
            device.by_alias = {}  # the alias space is rebuilt; names stay for the view until the DBIRTH
        node.alias_owner.clear()
        node.ambiguous.clear()
        node.templates.clear()
        node.warned.clear()
        bdseq_metric = next(
            (m for m in msg.payload.metrics if _is_bdseq(m.name) and _int_value(m) is not None), None
        )
        node.bdseq = None if bdseq_metric is None else _int_value(bdseq_metric)
        node.bdseq_alias = None if bdseq_metric is None else bdseq_metric.alias
        node.tracker.restart(msg.seq, hash(msg.raw))
        node.own = _Owner(None, _NEVER_BORN)
        count = self._birth_metrics(node, node.own, msg, out)
        node.own.online, node.own.birth_ts, node.born = True, ts, True
        detail = f"bdSeq={node.bdseq} seq={msg.seq} metrics={count}"
        if previous is not None and previous != node.bdseq:
            detail += f"; the session with bdSeq={previous} ended without an NDEATH"
        self._event(out, ts, node, None, SessionEventKind.BIRTH, detail)
        if bdseq_metric is None:
            self._protocol_error_once(node, "no-bdseq", "NBIRTH without an integer bdSeq metric", ts, out)
        if msg.seq is None:
            self._protocol_error_once(node, "no-seq", "NBIRTH without seq: the next seq is the base", ts, out)

    def _dbirth(self, node: _Node, device_id: str, msg: Received, out: Outcome) -> None:
        old = node.devices.get(device_id)
        for alias in () if old is None else old.by_alias:
            node.alias_owner.pop(alias, None)
        device = node.devices[device_id] = _Owner(device_id, _NO_DBIRTH)
        count = self._birth_metrics(node, device, msg, out)
        device.online, device.birth_ts = True, _payload_ts(msg)
        self._event(
            out, device.birth_ts, node, device_id, SessionEventKind.BIRTH, f"seq={msg.seq} metrics={count}"
        )

    def _birth_metrics(self, node: _Node, owner: _Owner, msg: Received, out: Outcome) -> int:
        """Build the owner's records, catalog entries and samples; returns how many metrics were born."""
        batch = out.batch
        birth_ts = _payload_ts(msg)
        ids = (node.group_id, node.edge_node_id, owner.device_id)
        count = 0
        for metric in msg.payload.metrics:
            name, datatype, alias = metric.name, metric.datatype, metric.alias
            if not name or datatype is None:
                what = (
                    f"metric {name!r} has no datatype" if name else f"metric with alias {alias} has no name"
                )
                self._reject(out, msg, f"BIRTH {what}: it cannot be defined")
                continue
            unit, properties = describe_properties(metric.properties)
            value = None if metric.is_null else metric.value
            definition = isinstance(value, Template) and bool(value.is_definition)
            control = owner.device_id is None and (_is_bdseq(name) or name.startswith("Node Control/"))
            is_sample = not (control or definition)
            record = BornMetric.define(name, alias, datatype, unit, is_sample)
            batch.catalog.append(
                CatalogEntry(*ids, name, alias, datatype, birth_ts, node.bdseq, unit, properties)
            )
            count += 1
            if definition:
                node.templates[name] = record
                continue
            owner.by_name[name] = record
            if alias is not None:
                self._claim_alias(node, owner, record, msg.received_at, out)
            if record.is_sample:
                props = metric.properties
                batch.samples.append(
                    Sample(
                        *ids, name, datatype, value,
                        birth_ts if metric.timestamp is None else metric.timestamp, msg.received_at,
                        _GOOD if props is None else property_quality(props),
                        metric.is_historical, metric.is_transient, msg.seq, node.bdseq, alias, "", unit,
                    )
                )  # fmt: skip
        return count

    def _claim_alias(self, node: _Node, owner: _Owner, record: BornMetric, now: int, out: Outcome) -> None:
        alias = record.alias
        assert alias is not None
        if alias not in node.alias_owner and alias not in node.ambiguous:
            node.alias_owner[alias] = owner.device_id
            owner.by_alias[alias] = record
            return
        # aliases are unique node-wide: a second claim makes every use of it unresolvable
        if alias in node.alias_owner:
            holder_id = node.alias_owner.pop(alias)
            holder = node.own if holder_id is None else node.devices.get(holder_id)
            if holder is not None:
                holder.by_alias.pop(alias, None)
        node.ambiguous.add(alias)
        why = f"alias {alias} of metric {record.name!r} is already used in this node's births"
        self._event(out, now, node, owner.device_id, SessionEventKind.PROTOCOL_ERROR, why)
        self._request_rebirth(node, why, now, out)

    def _ndeath(self, node: _Node, msg: Received, out: Outcome) -> None:
        bdseq: int | None = None
        for metric in msg.payload.metrics:  # seq is ignored on NDEATH (some nodes send one)
            by_alias = metric.name is None and metric.alias is not None and metric.alias == node.bdseq_alias
            if _is_bdseq(metric.name) or by_alias:
                bdseq = _int_value(metric)
                break
        now, ignored = msg.received_at, SessionEventKind.DEATH_IGNORED
        if not node.born:
            self._event(out, now, node, None, ignored, f"bdSeq={bdseq}: {_NO_NBIRTH}")
        elif bdseq != node.bdseq:
            detail = f"bdSeq={bdseq} does not match the NBIRTH's bdSeq={node.bdseq} (an old session's Will?)"
            self._event(out, now, node, None, ignored, detail)
        elif not node.own.online:
            self._event(out, now, node, None, ignored, f"repeated NDEATH bdSeq={bdseq}: node already offline")
        else:
            self._give_up_all(node, now, out, "NDEATH", rebirth=False)
            self._event(out, now, node, None, SessionEventKind.DEATH, f"bdSeq={bdseq}")
            why = f"that is offline (NDEATH bdSeq={bdseq})"
            self._go_offline(node, now, out, why, "NDEATH", device_deaths=True)

    def _go_offline(
        self, node: _Node, ts: int, out: Outcome, why: str, cause: str, *, device_deaths: bool
    ) -> None:
        """The node and every online device offline, their metrics stale at ``ts``."""
        for device in node.devices.values():
            if device.online:
                if device_deaths:
                    self._event(out, ts, node, device.device_id, SessionEventKind.DEATH, f"edge node {cause}")
                self._owner_offline(node, device, ts, out, f"since its edge node's {cause}", cause)
        self._owner_offline(node, node.own, ts, out, why, cause)
        node.tracker.forget()

    def _owner_offline(self, node: _Node, owner: _Owner, ts: int, out: Outcome, why: str, cause: str) -> None:
        owner.online, owner.offline_reason = False, why
        self._event(
            out,
            ts,
            node,
            owner.device_id,
            SessionEventKind.STALE,
            f"{cause}: {len(owner.by_name)} metrics stale",
        )

    # --- helpers -----------------------------------------------------------------------

    def _request_rebirth(self, node: _Node, reason: str, now: int, out: Outcome) -> None:
        if not self._config.rebirth_on_error:
            return
        last = node.last_rebirth_at
        if last is not None and 0 <= now - last < self._config.rebirth_min_interval_ms:
            node.rebirths_suppressed += 1
            self._stats["rebirths_suppressed"] += 1
            return
        node.last_rebirth_at = now
        node.rebirths_requested += 1
        self._stats["rebirths_requested"] += 1
        out.rebirths.append(RebirthRequest(node.group_id, node.edge_node_id, reason))
        self._event(out, now, node, None, SessionEventKind.REBIRTH_REQUESTED, reason)

    def _protocol_error_once(self, node: _Node, key: str, detail: str, ts: int, out: Outcome) -> None:
        if key not in node.warned:  # once per NBIRTH: a misbehaving node must not flood the history
            node.warned.add(key)
            self._event(out, ts, node, None, SessionEventKind.PROTOCOL_ERROR, detail)

    @staticmethod
    def _event(
        out: Outcome, ts: int, at: _Node | Topic, device_id: str | None, kind: str, detail: str
    ) -> None:
        out.batch.sessions.append(SessionEvent(ts, at.group_id, at.edge_node_id, device_id, kind, detail))

    @staticmethod
    def _reject(out: Outcome, msg: Received, error: str) -> None:
        out.batch.rejected.append(Rejected(msg.received_at, str(msg.topic), msg.raw, error))

    def _done(self, out: Outcome) -> Outcome:
        self._stats["samples"] += len(out.batch.samples)
        self._stats["rejected"] += len(out.batch.rejected)
        return out


def _node_info(node: _Node) -> NodeInfo:
    def metrics(owner: _Owner) -> tuple[MetricInfo, ...]:
        return tuple(MetricInfo(r.name, r.alias, r.datatype, r.unit) for r in owner.by_name.values())

    devices = tuple(DeviceInfo(d, o.online, o.birth_ts, metrics(o)) for d, o in sorted(node.devices.items()))
    own, tracker = node.own, node.tracker
    return NodeInfo(
        node.group_id, node.edge_node_id, own.online, node.bdseq, tracker.expected, own.birth_ts,
        metrics(own), tuple(node.templates), devices, tracker.buffered,
        node.rebirths_requested, node.rebirths_suppressed,
    )  # fmt: skip


def _seqs(seqs: list[int]) -> str:
    """A short text for seqs given up: ``5`` or ``5..7`` (a run), ``none``."""
    if not seqs:
        return "none"
    if len(seqs) == 1:
        return str(seqs[0])
    return f"{seqs[0]}..{seqs[-1]}"
