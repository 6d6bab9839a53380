"""What one simulated Sparkplug B edge node sends, and in which order (pure: no I/O).

:class:`SparkplugNode` holds the node's session state (bdSeq, seq, aliases,
what each unit last sent, DATA kept while it cannot send) and builds the
messages of docs/sparkplug.md sections 2, 3 and 6:

- bdSeq +1 per connection (0..255), carried in the NBIRTH and in the NDEATH
  registered as the Will (no seq);
- NBIRTH (seq 0) with every node metric, ``bdSeq`` and ``Node Control/Rebirth``,
  then a DBIRTH per live device; aliases node-wide; seq +1 mod 256 on every
  DBIRTH, NDATA, DDATA and DDEATH;
- DATA alias-only and without datatype, metric timestamps set; only changed
  values (report by exception) or every value per message.

DATA values travel as their raw wire form, as field nodes send them: signed
integers masked to their width (Int16 -3 as 65533), arrays packed into bytes,
Floats in ``double_value`` (the value is float32-exact, so a host reading it
with the BIRTH's datatype gets the same number).

Every message built is counted in the sent log (and, if detailed, each sample).
:class:`uns.sim.edge.EdgeNode` puts them on an MQTT connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from uns.clock import now_ms
from uns.sim.batch import ContextEvent, ContextUpdate
from uns.sim.plant import MetricDef, NodeModel, UnitModel
from uns.sim.sentlog import SentLog, SentSample
from uns.sparkplug.arrays import pack_array
from uns.sparkplug.codec import encode_payload
from uns.sparkplug.datatypes import ARRAY_TYPES, SIGNED_WIDTH, DataType
from uns.sparkplug.ncmd import REBIRTH_METRIC
from uns.sparkplug.payload import Metric, MetricValue, Payload, PropertySet, PropertyValue

__all__ = ["BDSEQ_METRIC", "NAMESPACE", "Outgoing", "SparkplugNode"]

NAMESPACE = "spBv1.0"
BDSEQ_METRIC = "bdSeq"

#: messages in publish order: (topic, payload)
Outgoing = list[tuple[str, bytes]]
WireConverter = Callable[[Any], MetricValue]


def _wire_converter(datatype: DataType) -> WireConverter | None:
    """How a typed value becomes the raw value an untyped DATA metric carries."""
    width = SIGNED_WIDTH.get(datatype)
    if width is not None:
        mask = (1 << width) - 1
        return lambda value: value & mask
    if datatype is DataType.DateTime:
        return lambda value: value & 0xFFFF_FFFF_FFFF_FFFF
    if datatype in ARRAY_TYPES:
        return lambda value: pack_array(datatype, value)
    return None


@dataclass(frozen=True, slots=True)
class _BornMetric:
    """A metric as the births declare it."""

    definition: MetricDef
    alias: int
    wire: WireConverter | None

    @property
    def name(self) -> str:
        return self.definition.name

    def properties(self) -> PropertySet | None:
        d = self.definition
        items: dict[str, PropertyValue] = {}
        if d.unit is not None:
            items["engUnit"] = PropertyValue(DataType.String, d.unit)
        if d.low is not None:
            items["engLow"] = PropertyValue(DataType.Double, float(d.low))
        if d.high is not None:
            items["engHigh"] = PropertyValue(DataType.Double, float(d.high))
        return PropertySet(items) if items else None


#: the Sparkplug ``Quality`` property of a bad sample (192 is good, the default)
_BAD_QUALITY = PropertySet({"Quality": PropertyValue(DataType.Int32, 0)})


@dataclass(slots=True)
class _Unit:
    """Per-unit publishing state: its born metrics and what was last sent."""

    model: UnitModel
    metrics: list[_BornMetric]
    last_sent: dict[str, MetricValue] = field(default_factory=dict)
    last_bad: frozenset[str] = frozenset()  # metrics last sent with bad quality
    alive: bool = True  # False after a DDEATH until the next DBIRTH
    last_ts: int = 0  # timestamp of the last step


@dataclass(slots=True)
class _Stored:
    """A DATA message held back (store and forward): its time and typed values."""

    device_id: str | None
    ts: int
    values: list[tuple[_BornMetric, MetricValue]]


class SparkplugNode:
    """The session state and message building of one edge node and its devices."""

    def __init__(
        self,
        model: NodeModel,
        *,
        group_id: str,
        report_by_exception: bool = True,
        step_seconds: float = 1.0,
        bd_seq: int = 0,
        sent_log: SentLog | None = None,
        on_context: Callable[[ContextEvent], None] | None = None,
        store_limit: int = 10_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.model = model
        self.group_id = group_id
        self.node_id = model.node_id
        self.report_by_exception = report_by_exception
        self.step_seconds = step_seconds
        self.log = sent_log if sent_log is not None else SentLog()
        self.on_context = on_context
        self.clock = clock
        self._next_bd_seq = bd_seq % 256
        self._ndeath = b""  # the Will of the current connection
        self.bd_seq = self._next_bd_seq  # of the current (or next) connection
        self.seq = 0  # the last seq used
        self._store: deque[_Stored] = deque()
        self._store_limit = store_limit
        self._context_started = False
        self._units: dict[str | None, _Unit] = {}
        if model.own is not None:
            self._units[None] = self._unit_state(model.own)
        for device in model.devices:
            self._units[device.device_id] = self._unit_state(device)

    def _unit_state(self, unit: UnitModel) -> _Unit:
        born = [
            _BornMetric(m, self.model.aliases[(unit.device_id, m.name)], _wire_converter(m.datatype))
            for m in unit.metrics
        ]
        return _Unit(unit, born)

    # ---------------------------------------------------------------- topics and sessions

    def topic(self, message_type: str, device_id: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.group_id}/{message_type}/{self.node_id}"
        return base if device_id is None else f"{base}/{device_id}"

    @property
    def device_ids(self) -> list[str]:
        return [d for d in self._units if d is not None]

    @property
    def will_payload(self) -> bytes:
        """The NDEATH registered as the Will of the current connection (what a clean stop sends)."""
        return self._ndeath

    def _ndeath_payload(self, bd_seq: int, ts: int) -> bytes:
        return encode_payload(
            Payload(timestamp=ts, metrics=[Metric(name=BDSEQ_METRIC, datatype=DataType.Int64, value=bd_seq)])
        )

    def _next_session(self) -> tuple[int, bytes]:
        """(bdSeq, NDEATH) for the next connection attempt; nothing changes until it succeeds."""
        bd_seq = self._next_bd_seq
        return bd_seq, self._ndeath_payload(bd_seq, self.clock())

    def _session_started(self, bd_seq: int, ndeath: bytes) -> None:
        """The connection with this bdSeq is up (a failed attempt leaves bdSeq alone:
        the next NBIRTH follows the last one a host saw)."""
        self.bd_seq, self._ndeath = bd_seq, ndeath
        self._next_bd_seq = (bd_seq + 1) % 256

    # ---------------------------------------------------------------- births and deaths

    def _birth_metrics(self, unit: _Unit, ts: int) -> list[Metric]:
        values = unit.model.values
        return [
            Metric(
                name=m.name,
                alias=m.alias,
                timestamp=ts,
                datatype=m.definition.datatype,
                value=values[m.name],
                properties=m.properties(),
            )
            for m in unit.metrics
        ]

    def _births(self, *, dbirth_first: bool) -> Outgoing:
        """NBIRTH (seq 0) and every live device's DBIRTH; ``dbirth_first`` swaps the first two."""
        ts = self._fresh_ts(self._units.values())
        node_metrics = [
            Metric(name=BDSEQ_METRIC, timestamp=ts, datatype=DataType.Int64, value=self.bd_seq),
            Metric(name=REBIRTH_METRIC, timestamp=ts, datatype=DataType.Boolean, value=False),
        ]
        own = self._units.get(None)
        if own is not None:
            node_metrics += self._birth_metrics(own, ts)
        self.seq = 0
        nbirth = Payload(timestamp=ts, metrics=node_metrics, seq=0)
        messages = [(self.topic("NBIRTH"), encode_payload(nbirth))]
        self._log_birth(None, "NBIRTH", ts, 0)
        for device_id in self.device_ids:
            if self._units[device_id].alive:
                messages.append(self._dbirth(device_id, ts))
        if dbirth_first and len(messages) > 1:
            messages[0], messages[1] = messages[1], messages[0]
        self.log.counts.births += len(messages)
        return messages

    def _dbirth(self, device_id: str, ts: int) -> tuple[str, bytes]:
        unit = self._units[device_id]
        seq = self._next_seq()
        payload = Payload(timestamp=ts, metrics=self._birth_metrics(unit, ts), seq=seq)
        self._log_birth(device_id, "DBIRTH", ts, seq)
        return self.topic("DBIRTH", device_id), encode_payload(payload)

    def _device_reborn(self, device_id: str) -> tuple[str, bytes]:
        """The DBIRTH that brings a dead device back."""
        unit = self._units[device_id]
        unit.alive = True
        self.log.counts.births += 1
        return self._dbirth(device_id, self._fresh_ts([unit]))

    def _device_dead(self, device_id: str) -> tuple[str, bytes]:
        """The DDEATH (in the seq stream); the device sends nothing until it is reborn."""
        self._units[device_id].alive = False
        self.log.counts.deaths += 1
        payload = Payload(timestamp=self.clock(), seq=self._next_seq())
        return self.topic("DDEATH", device_id), encode_payload(payload)

    def _log_birth(self, device_id: str | None, message_type: str, ts: int, seq: int) -> None:
        unit = self._units.get(device_id)
        if unit is None:
            return
        unit.last_sent = dict(unit.model.values)
        self.log.counts.metrics += len(unit.metrics)
        if self.log.detailed:
            self.log.add_samples(
                self._sample(device_id, m, unit.model.values[m.name], ts, seq, message_type, historical=False)
                for m in unit.metrics
            )

    def _sample(
        self,
        device_id: str | None,
        metric: _BornMetric,
        value: MetricValue,
        ts: int,
        seq: int,
        message_type: str,
        *,
        historical: bool,
    ) -> SentSample:
        return SentSample(
            self.group_id,
            self.node_id,
            device_id,
            metric.name,
            ts,
            value,
            metric.definition.datatype,
            seq,
            message_type,
            self.bd_seq,
            historical,
        )

    # ---------------------------------------------------------------- data

    def _fresh_ts(self, units: Iterable[_Unit]) -> int:
        """A timestamp later than every sample of ``units`` so far, now if possible.

        A sample is then identified by (metric, timestamp), births included."""
        chosen = list(units)
        ts = max(self.clock(), max((u.last_ts + 1 for u in chosen), default=0))
        for unit in chosen:
            unit.last_ts = ts
        return ts

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def _step(self, units: Sequence[UnitModel], *, sending: bool) -> Outgoing:
        """Step each unit once and return its DATA, or, unless ``sending``, keep it for later."""
        now = self.clock()
        messages: Outgoing = []
        for model in units:
            unit = self._units[model.device_id]
            # one sample per metric and ms: a unit stepped faster than 1 kHz runs ahead of the clock
            ts = unit.last_ts = max(now, unit.last_ts + 1)
            update = model.step(self.step_seconds)
            if update is not None:
                self._emit_context(model, update, ts)
            if not unit.alive or model.muted:
                continue
            values = self._changed(unit)
            if not values:
                continue
            if sending:
                messages.append(self._data_message(model.device_id, ts, values, historical=False))
            else:
                self._keep(_Stored(model.device_id, ts, values))
        return messages

    def _changed(self, unit: _Unit) -> list[tuple[_BornMetric, MetricValue]]:
        values, last = unit.model.values, unit.last_sent
        bad = frozenset(unit.model.bad_quality)
        flipped = bad ^ unit.last_bad  # a change of quality alone is news too
        unit.last_bad = bad
        if self.report_by_exception:
            changed = [
                (m, values[m.name])
                for m in unit.metrics
                if last.get(m.name) != values[m.name] or m.name in flipped
            ]
        else:
            changed = [(m, values[m.name]) for m in unit.metrics]
        for m, value in changed:
            last[m.name] = value
        return changed

    def _data_message(
        self,
        device_id: str | None,
        ts: int,
        values: list[tuple[_BornMetric, MetricValue]],
        *,
        historical: bool,
    ) -> tuple[str, bytes]:
        seq = self._next_seq()
        unit = self._units.get(device_id)
        bad = unit.last_bad if unit is not None else frozenset()
        metrics = [
            Metric(
                alias=m.alias,
                timestamp=ts,
                value=value if m.wire is None else m.wire(value),
                is_historical=historical,
                properties=_BAD_QUALITY if m.name in bad else None,
            )
            for m, value in values
        ]
        message_type = "NDATA" if device_id is None else "DDATA"
        counts = self.log.counts
        counts.data_messages += 1
        counts.metrics += len(metrics)
        counts.historical_messages += historical
        if self.log.detailed:
            self.log.add_samples(
                self._sample(device_id, m, value, ts, seq, message_type, historical=historical)
                for m, value in values
            )
        payload = Payload(timestamp=self.clock() if historical else ts, metrics=metrics, seq=seq)
        return self.topic(message_type, device_id), encode_payload(payload)

    def _keep(self, stored: _Stored) -> None:
        if len(self._store) >= self._store_limit:
            self._store.popleft()
            self.log.counts.dropped_messages += 1
        self._store.append(stored)

    def _stored_messages(self) -> Outgoing:
        """The DATA kept while the node could not send, now as historical, oldest first."""
        messages = []
        while self._store:
            s = self._store.popleft()
            messages.append(self._data_message(s.device_id, s.ts, s.values, historical=True))
        return messages

    # ---------------------------------------------------------------- context

    def _emit_context(self, unit: UnitModel, update: ContextUpdate, ts: int) -> None:
        if self.on_context is None or unit.path is None:
            return
        self.on_context(
            ContextEvent(unit.path, ts, set=dict(update.set), clear=update.clear, reason=update.reason)
        )

    def _emit_initial_context(self) -> None:
        """The context of every unit as the simulation starts (once per node object)."""
        if self._context_started:
            return
        self._context_started = True
        ts = self.clock()
        for unit in self.model.units():
            update = unit.context_now()
            if update is not None:
                self._emit_context(unit, update, ts)
