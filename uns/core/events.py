"""What flows from the Sparkplug host sessions to the sinks (pure data).

The engine turns every MQTT message into one :class:`Batch`; every sink
(republish, lake, ...) receives the same batches in arrival order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol, Self

from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import MetricValue

__all__ = [
    "Batch",
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


@dataclass(slots=True)
class Rejected:
    """A message (or part of one) that could not be used, with the reason."""

    received_at: int
    topic: str
    payload: bytes
    error: str


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

    def __bool__(self) -> bool:
        return bool(
            self.samples or self.blocks or self.sessions or self.catalog or self.rejected or self.context
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

    def extend(self, other: Batch) -> None:
        self.samples.extend(other.samples)
        self.blocks.extend(other.blocks)
        self.sessions.extend(other.sessions)
        self.catalog.extend(other.catalog)
        self.rejected.extend(other.rejected)
        self.context.extend(other.context)


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
