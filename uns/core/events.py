"""What flows from the Sparkplug host sessions to the sinks (pure data).

The engine turns every MQTT message into one :class:`Batch`; every sink
(republish, lake, ...) receives the same batches in arrival order.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Final, Protocol, Self

from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import MetricValue

__all__ = [
    "MAX_REJECTED_PER_MESSAGE",
    "REJECTED_HEAD_BYTES",
    "REJECTED_TEXT_CHARS",
    "Batch",
    "BatchRecord",
    "CatalogEntry",
    "ContextChange",
    "DurableSink",
    "Quality",
    "RebirthRequest",
    "Rejected",
    "Sample",
    "SampleBlock",
    "SampleRuns",
    "SessionEvent",
    "SessionEventKind",
    "Sink",
    "metric_rejections",
]


class Quality:
    """Quality as text (Sparkplug property ``Quality``: 0 bad, 192 good, 500 stale)."""

    GOOD = "good"
    BAD = "bad"
    STALE = "stale"

    @staticmethod
    def from_code(code: int | None) -> str:
        if code is None or code == 192:
            return Quality.GOOD
        if code == 500:
            return Quality.STALE
        return Quality.BAD


class SessionEventKind:
    """Values of ``SessionEvent.event`` (the lake's ``sessions.event`` column)."""

    BIRTH = "birth"
    DEATH = "death"
    DEATH_IGNORED = "death_ignored"  # NDEATH whose bdSeq does not match the NBIRTH
    STALE = "stale"
    SEQ_GAP = "seq_gap"
    REORDER_OK = "reorder_ok"  # a gap filled within the reorder timeout
    REORDER_TIMEOUT = "reorder_timeout"
    REBIRTH_REQUESTED = "rebirth_requested"
    PROTOCOL_ERROR = "protocol_error"  # message from a session that cannot use it
    DISCONNECTED = "disconnected"  # the host lost the broker; everything stale
    RECONNECTED = "reconnected"


@dataclass(slots=True)
class Sample:
    """One metric value, as received.  ``path``/``unit``/``context`` are filled
    by the plant model and the context store after the session tracker."""

    group_id: str
    edge_node_id: str
    device_id: str | None
    metric: str
    datatype: DataType
    value: MetricValue
    ts: int  # source time, ms UTC (metric timestamp, else payload timestamp, else receive time)
    received_at: int  # ms UTC
    quality: str = Quality.GOOD
    is_historical: bool = False
    is_transient: bool = False
    seq: int | None = None
    bdseq: int | None = None
    alias: int | None = None
    path: str = ""
    unit: str | None = None
    context: dict[str, str] | None = None
    unmapped: bool = False


#: One row of a :class:`SampleBlock` (the native decoder's ``spd_row``, uns/sparkplug/spdata.h):
#: ts, integer value, float value, datatype code, value kind (see ``BLOCK_*``), 6 pad bytes.
BLOCK_ROW: Final = struct.Struct("<qqdBB6x")
#: value kinds of a block row
BLOCK_NULL, BLOCK_INT, BLOCK_FLOAT, BLOCK_BOOL = 0, 1, 2, 3
_UINT64: Final = int(DataType.UInt64)
_DATATYPES: Final = {int(d): d for d in DataType}


@dataclass(slots=True)
class SampleBlock:
    """The samples of one DATA message as packed rows (what the native decoder makes,
    :mod:`uns.sparkplug.native`): the same samples as a list of :class:`Sample` with
    quality good, not historical, not transient, one timestamp ``ts`` for all.

    ``records`` holds each row's born metric (name, alias, unit).  The lake sink takes
    blocks as they are (columns, no object per sample); :meth:`samples` makes the
    objects for everything else."""

    group_id: str
    edge_node_id: str
    device_id: str | None
    seq: int
    bdseq: int | None
    received_at: int
    ts: int  # the source time of every row
    rows: bytes  # BLOCK_ROW.size bytes per sample
    records: tuple[Any, ...]  # uns.sparkplug.births.BornMetric per row
    path: str = ""
    unmapped: bool = False
    context: dict[str, str] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def samples(self) -> list[Sample]:
        """The block's samples as objects (identical to what the Python decoder makes)."""
        out: list[Sample] = []
        append = out.append
        group, node, device, seq, bdseq, received_at = (
            self.group_id, self.edge_node_id, self.device_id, self.seq, self.bdseq, self.received_at
        )  # fmt: skip
        for (ts, ival, dval, code, kind), record in zip(
            BLOCK_ROW.iter_unpack(self.rows), self.records, strict=True
        ):
            value: MetricValue
            if kind == BLOCK_FLOAT:
                value = dval
            elif kind == BLOCK_INT:
                value = ival + (1 << 64) if ival < 0 and code == _UINT64 else ival
            elif kind == BLOCK_BOOL:
                value = bool(ival)
            else:
                value = None
            append(
                Sample(
                    group, node, device, record.name, _DATATYPES[code], value, ts, received_at,
                    Quality.GOOD, False, False, seq, bdseq, record.alias, self.path, record.unit,
                    self.context, self.unmapped,
                )
            )  # fmt: skip
        return out


@dataclass(slots=True)
class SampleRuns:
    """The samples of several consecutive DATA messages in columns (the native decoder's
    lane over one socket read, ``uns.engine.dispatch.Dispatcher.process_many``): ``rows``
    and ``records`` as in :class:`SampleBlock`, ``runs`` one ``(route, seq, bdseq, ts,
    rows)`` per message, where ``route`` is ``(node, device_id, group_id, edge_node_id,
    message type, path, unmapped)``, and ``contexts`` the context of each run."""

    rows: bytes
    records: tuple[Any, ...]
    runs: list[tuple[Any, ...]]
    contexts: list[dict[str, str] | None]
    received_at: int

    def __len__(self) -> int:
        return len(self.records)

    def blocks(self) -> list[SampleBlock]:
        """One :class:`SampleBlock` per message."""
        out: list[SampleBlock] = []
        first = 0
        size = BLOCK_ROW.size
        for (route, seq, bdseq, ts, n), context in zip(self.runs, self.contexts, strict=True):
            _node, device, group, edge, _kind, path, unmapped = route
            rows, records = self.rows[first * size : (first + n) * size], self.records[first : first + n]
            out.append(
                SampleBlock(
                    group,
                    edge,
                    device,
                    seq,
                    bdseq,
                    self.received_at,
                    ts,
                    rows,
                    records,
                    path,
                    unmapped,
                    context,
                )
            )
            first += n
        return out

    def samples(self) -> list[Sample]:
        return [s for block in self.blocks() for s in block.samples()]


@dataclass(slots=True)
class SessionEvent:
    """A node/device lifecycle event (the lake's ``sessions`` table)."""

    ts: int
    group_id: str
    edge_node_id: str
    device_id: str | None
    event: str
    detail: str = ""


@dataclass(slots=True)
class CatalogEntry:
    """One metric definition from a BIRTH (the lake's ``metric_catalog`` table)."""

    group_id: str
    edge_node_id: str
    device_id: str | None
    metric: str
    alias: int | None
    datatype: DataType
    birth_ts: int
    bdseq: int | None
    unit: str | None = None
    properties: str | None = None  # JSON object of the metric's properties
    path: str = ""


#: bytes of a rejected message's payload its record keeps (the rest: size and SHA-256)
REJECTED_HEAD_BYTES: Final = 1024
#: characters of a rejected message's topic, and of the reason, its record keeps
REJECTED_TEXT_CHARS: Final = 1024
#: rejected rows one message may make (its metrics beyond that: one summary row)
MAX_REJECTED_PER_MESSAGE: Final = 100
_CUT: Final = "\u2026"  # marks a text cut at REJECTED_TEXT_CHARS


def _clip(text: str) -> str:
    return text if len(text) <= REJECTED_TEXT_CHARS else text[: REJECTED_TEXT_CHARS - 1] + _CUT


@dataclass(slots=True)
class Rejected:
    """A message (or part of one) that could not be used, with the reason: a bounded
    record whatever the message holds (the lake's ``rejected`` table).

    Built from the whole payload, it keeps ``payload_size`` and ``payload_sha256`` of
    it and only its first :data:`REJECTED_HEAD_BYTES` in ``payload``; the topic and the
    reason are cut at :data:`REJECTED_TEXT_CHARS`.  Pass ``payload_size`` (with the
    head and the digest) to build a record of a payload measured before (:meth:`again`)."""

    received_at: int
    topic: str
    payload: bytes  # the payload's first REJECTED_HEAD_BYTES (all of a short one)
    error: str
    payload_size: int = -1  # bytes of the whole payload (-1: ``payload`` is the whole payload)
    payload_sha256: str = ""  # hex SHA-256 of the whole payload

    def __post_init__(self) -> None:
        if self.payload_size < 0:
            whole = self.payload
            self.payload_size = len(whole)
            self.payload_sha256 = hashlib.sha256(whole).hexdigest()
            self.payload = bytes(whole[:REJECTED_HEAD_BYTES])
        elif len(self.payload) > REJECTED_HEAD_BYTES:
            self.payload = bytes(self.payload[:REJECTED_HEAD_BYTES])
        if len(self.topic) > REJECTED_TEXT_CHARS:
            self.topic = _clip(self.topic)
        if len(self.error) > REJECTED_TEXT_CHARS:
            self.error = _clip(self.error)

    def again(self, error: str, *, head: bool = False) -> Rejected:
        """Another rejection of the same message (another metric of it): the payload's
        size and digest without hashing it again, its head only when ``head``."""
        payload = self.payload if head else b""
        return Rejected(self.received_at, self.topic, payload, error, self.payload_size, self.payload_sha256)

    def summary(self, unrecorded: int, last_error: str) -> Rejected:
        """The row that stands for the rejections of this message beyond
        :data:`MAX_REJECTED_PER_MESSAGE` (``unrecorded`` of them, the last one's reason)."""
        error = (
            f"{unrecorded} more rejections of this message not recorded one by one "
            f"(at most {MAX_REJECTED_PER_MESSAGE} rows per message); the last: {last_error}"
        )
        return self.again(error)


def metric_rejections(received_at: int, topic: str, payload: bytes, errors: list[str]) -> list[Rejected]:
    """The rows of a message of which the metrics with ``errors`` could not be used: the
    payload measured once, at most :data:`MAX_REJECTED_PER_MESSAGE` rows and a summary."""
    if not errors:
        return []
    first = Rejected(received_at, topic, payload, errors[0])
    rows = [first, *(first.again(e) for e in errors[1:MAX_REJECTED_PER_MESSAGE])]
    if len(errors) > MAX_REJECTED_PER_MESSAGE:
        rows.append(first.summary(len(errors) - MAX_REJECTED_PER_MESSAGE, errors[-1]))
    return rows


@dataclass(slots=True)
class ContextChange:
    """One applied context change: ``value`` None means the key was cleared.
    ``event_id`` is the identity of the context event it came from (every change of
    one event carries it; None for changes not from an event, e.g. context metrics).
    ``signer`` names the trusted key that signed the event, None for an unsigned one."""

    ts: int
    received_at: int
    path: str
    key: str
    value: str | None
    source: str = ""
    user: str | None = None
    reason: str | None = None
    event_id: str | None = None
    #: the trusted key that signed the event (uns.core.signing); None when unsigned
    signer: str | None = None


class BatchRecord(Protocol):
    """A batch record (a material, a result, a comment: :mod:`uns.core.records`) as the
    pipeline sees it: one row of the lake table ``TABLE``."""

    TABLE: ClassVar[str]
    record_id: str


@dataclass(slots=True)
class RebirthRequest:
    """An action for the I/O shell: send NCMD Node Control/Rebirth to a node."""

    group_id: str
    edge_node_id: str
    reason: str


@dataclass(slots=True)
class Batch:
    """Everything one received message produced, for the sinks."""

    samples: list[Sample] = field(default_factory=list)
    sessions: list[SessionEvent] = field(default_factory=list)
    catalog: list[CatalogEntry] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    context: list[ContextChange] = field(default_factory=list)
    #: samples in columns (only for sinks that take them: ``Sink.accepts_blocks``)
    blocks: list[SampleBlock | SampleRuns] = field(default_factory=list)
    #: batch records (uns.core.records): rare, so an empty tuple by default -- the hot path
    #: makes a Batch per message and should not pay for a list it never fills
    records: Sequence[BatchRecord] = ()

    def __bool__(self) -> bool:
        return bool(
            self.samples
            or self.blocks
            or self.sessions
            or self.catalog
            or self.rejected
            or self.context
            or self.records
        )

    @property
    def sample_count(self) -> int:
        """Samples as objects and in blocks."""
        return len(self.samples) + sum(map(len, self.blocks))

    def all_samples(self) -> list[Sample]:
        """Every sample as an object (the blocks' made on the spot)."""
        if not self.blocks:
            return self.samples
        return [*self.samples, *(s for block in self.blocks for s in block.samples())]

    def parts(self, rows: int) -> list[Batch]:
        """This batch as batches of at most ``rows`` samples and ``rows`` catalog entries
        each, the other rows with the last: how the engine hands a large message to its
        sinks, a slice at a time.  A batch within ``rows`` is itself, the only part."""
        if len(self.samples) <= rows and len(self.catalog) <= rows:
            return [self]
        samples, catalog = self.samples, self.catalog
        out = [
            Batch(samples=samples[start : start + rows], catalog=catalog[start : start + rows])
            for start in range(0, max(len(samples), len(catalog)), rows)
        ]
        # the message's events go last: a birth's event then follows all its catalog rows
        # (the audit trail compares a birth once it is complete: lake.audit_state)
        last = out[-1]
        last.sessions, last.rejected, last.context = self.sessions, self.rejected, self.context
        last.records = self.records
        return out

    def extend(self, other: Batch) -> None:
        self.samples.extend(other.samples)
        self.blocks.extend(other.blocks)
        self.sessions.extend(other.sessions)
        self.catalog.extend(other.catalog)
        self.rejected.extend(other.rejected)
        self.context.extend(other.context)
        if other.records:
            self.records = [*self.records, *other.records]


class Sink(Protocol):
    """A consumer of batches.  ``add`` must not block the event loop: it either
    takes the batch (into its own buffer or write-ahead log) or raises
    :class:`uns.errors.LakeBackpressure` with ``retry_after``.  ``flush`` makes
    everything added so far durable/visible.  Sinks are async context managers."""

    name: str

    def add(self, batch: Batch) -> None: ...

    async def flush(self) -> None: ...

    def stats(self) -> dict[str, int | float | str]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class DurableSink(Sink, Protocol):
    """A sink that can say when what it took survives a crash (the lake: in the WAL and
    fsynced).  Optional: the engine acknowledges a context message to the broker only
    after ``durable()`` of every sink that has it returned; a sink without it counts as
    durable at once."""

    async def durable(self) -> None: ...
