"""Fault injection for a simulated edge node: misbehave on purpose, the way field devices do.

:class:`FaultHooks` is mixed into :class:`uns.sim.edge.EdgeNode`.  Each hook
acts at the moment a test calls it, under the node's publish lock, so it lands
at a known place in the seq stream; each counts in ``log.counts.faults``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from uns.sim.batch import ContextUpdate
from uns.sim.plant import NodeModel, UnitModel
from uns.sim.sentlog import SentLog
from uns.sparkplug.codec import encode_payload
from uns.sparkplug.payload import Metric, MetricValue, Payload

if TYPE_CHECKING:  # for types only: the hooks reach into the node's state
    from uns.sim.node import _BornMetric, _Unit

__all__ = ["GARBAGE", "FaultHooks"]

#: what :meth:`FaultHooks.send_garbage` publishes: not a protobuf message (wire type 7 is invalid)
GARBAGE = b"\xff\xff\xff\xff not a sparkplug payload"


class _Edge(Protocol):
    """What the hooks use of the edge node they are mixed into."""

    model: NodeModel
    log: SentLog
    seq: int
    bd_seq: int
    step_seconds: float
    clock: Callable[[], int]
    _lock: asyncio.Lock
    _units: dict[str | None, _Unit]

    @property
    def device_ids(self) -> list[str]: ...

    def topic(self, message_type: str, device_id: str | None = None) -> str: ...

    def _next_seq(self) -> int: ...

    def _ndeath_payload(self, bd_seq: int, ts: int) -> bytes: ...

    def _emit_context(self, unit: UnitModel, update: ContextUpdate, ts: int) -> None: ...

    def _data_message(
        self,
        device_id: str | None,
        ts: int,
        values: list[tuple[_BornMetric, MetricValue]],
        *,
        historical: bool,
    ) -> tuple[str, bytes]: ...

    async def _send(self, messages: Sequence[tuple[str, bytes]], *, qos: int = 0) -> None: ...


def _unit_for_fault(node: _Edge, device_id: str | None) -> _Unit:
    """The unit a hook acts on: ``device_id``, else the first device, else the node itself."""
    if device_id is None:
        device_id = node.device_ids[0] if node.device_ids else None
    return node._units[device_id]


class FaultHooks:
    """Fault hooks of :class:`uns.sim.edge.EdgeNode` (a mixin: it has no state of its own)."""

    async def skip_seq(self: _Edge) -> int:
        """Consume one seq number without publishing: the host sees a gap.  Returns it."""
        async with self._lock:
            self.log.counts.faults += 1
            return self._next_seq()

    async def swap_next_two(self: _Edge, device_id: str | None = None) -> tuple[int, int]:
        """Make two DATA messages (every value) and publish them in the wrong order.

        Returns their seqs in publish order (the higher one first)."""
        unit = _unit_for_fault(self, device_id)
        async with self._lock:
            now = self.clock()
            pair = []
            for _ in range(2):
                ts = unit.last_ts = max(now, unit.last_ts + 1)
                update = unit.model.step(self.step_seconds)
                if update is not None:
                    self._emit_context(unit.model, update, ts)
                values = [(m, unit.model.values[m.name]) for m in unit.metrics]
                unit.last_sent = dict(unit.model.values)
                pair.append(self._data_message(unit.model.device_id, ts, values, historical=False))
            await self._send([pair[1], pair[0]])
            self.log.counts.faults += 1
            first = self.seq
            return first, (first - 1) % 256

    async def send_unknown_alias(self: _Edge, device_id: str | None = None) -> int:
        """Publish DATA (in the seq stream) with an alias no birth declared.  Returns the alias."""
        unit = _unit_for_fault(self, device_id)
        alias = max(self.model.aliases.values(), default=0) + 1000
        async with self._lock:
            ts = self.clock()
            payload = Payload(
                timestamp=ts, seq=self._next_seq(), metrics=[Metric(alias=alias, timestamp=ts, value=42.0)]
            )
            message_type = "NDATA" if unit.model.device_id is None else "DDATA"
            await self._send([(self.topic(message_type, unit.model.device_id), encode_payload(payload))])
            self.log.counts.faults += 1
        return alias

    async def send_garbage(self: _Edge, device_id: str | None = None) -> bytes:
        """Publish bytes that are not a Sparkplug payload on a DDATA topic (no seq used)."""
        unit = _unit_for_fault(self, device_id)
        message_type = "NDATA" if unit.model.device_id is None else "DDATA"
        async with self._lock:
            await self._send([(self.topic(message_type, unit.model.device_id), GARBAGE)])
            self.log.counts.faults += 1
        return GARBAGE

    async def send_stale_ndeath(self: _Edge) -> int:
        """Publish an NDEATH with the previous connection's bdSeq (like a late Will).  Returns it."""
        stale = (self.bd_seq - 1) % 256
        async with self._lock:
            await self._send([(self.topic("NDEATH"), self._ndeath_payload(stale, self.clock()))], qos=1)
            self.log.counts.faults += 1
        return stale
