"""How the engine hands batches to its sinks, and what a stop does to that.

:class:`SinkDelivery` is a part of :class:`uns.engine.host.Engine` (a mixin:
the engine supplies the state declared below).  ``sink.add`` never blocks; a
sink that pushes back (:class:`~uns.errors.LakeBackpressure`: the lake's WAL is
full or cannot be written) makes the delivering task wait as it asks and try
again, so the receive path stops taking messages and the transport stops
reading the broker (it queues for us).  During a stop the wait ends at the
stop's deadline (:mod:`uns.engine.stopping`): the messages in hand are then
given up and counted (``unpersisted``).
"""

from __future__ import annotations

import asyncio

from uns.config import Config
from uns.core.events import Batch, Sink
from uns.engine.status import Counters
from uns.engine.stopping import StopBudget
from uns.engine.transport import Message, Transport
from uns.errors import LakeBackpressure
from uns.logs import RateLimitedLog

__all__ = ["SinkDelivery"]


class SinkDelivery:
    """Delivery to the sinks; :class:`~uns.engine.host.Engine` supplies the state."""

    config: Config
    sinks: list[Sink]
    counters: Counters
    _rlog: RateLimitedLog
    #: the deadlines of a stop in progress, None while running
    stopping: StopBudget | None
    #: received messages given up at a stop's deadline (a sink kept pushing back)
    unpersisted: int
    #: a stop gave messages up: the rest it drains are only counted
    gave_up: bool
    # batches (each with the first sink still to take it), the rest of their chunk, and how
    # many messages the batches hold: what a stop interrupted (see _deliver_leftover)
    _leftover: tuple[list[tuple[Batch, int]], list[Message], int] | None
    _client: Transport | None

    @property
    def receive_queue(self) -> int:
        raise NotImplementedError

    async def _handle_messages(self, client: Transport, messages: list[Message]) -> None:
        raise NotImplementedError

    async def _deliver(self, batch: Batch) -> bool:
        """Hand the batch to every sink; False when a stop's deadline made it give up."""
        return await self._deliver_from(batch, 0) if batch else True

    def _sink_failed(self, sink: Sink, exc: Exception) -> None:
        """A sink raised something other than back-pressure: a bug.  The other sinks still get
        the batch; this one's loss is counted (``sink_errors``) and logged with the traceback."""
        self.counters.sink_errors += 1
        self._rlog.exception(f"sink:{sink.name}", "sink %s failed to take a batch: %s", sink.name, exc)

    async def _deliver_after_backpressure(self, batch: Batch, index: int, exc: LakeBackpressure) -> bool:
        """Sink ``index`` is full: wait as it asks, retry it, then hand the batch to the rest.
        False when a stop's deadline passed first (the batch is given up)."""
        sink = self.sinks[index]
        while True:
            self.counters.backpressure_waits += 1
            self._rlog.warning(f"bp:{sink.name}", "sink %s is full, pausing intake: %s", sink.name, exc)
            if not await self._wait_for_sink(exc.retry_after):
                return False
            try:
                sink.add(batch)
                break
            except LakeBackpressure as again:
                exc = again
        for later in self.sinks[index + 1 :]:
            while True:
                try:
                    later.add(batch)
                    break
                except LakeBackpressure as again:
                    self.counters.backpressure_waits += 1
                    if not await self._wait_for_sink(again.retry_after):
                        return False
        return True

    async def _wait_for_sink(self, seconds: float) -> bool:
        stopping = self.stopping
        if stopping is None:
            await asyncio.sleep(seconds)
            return True
        return await stopping.wait_for_sink(seconds)

    async def _deliver_held(
        self,
        batch: Batch,
        index: int,
        exc: LakeBackpressure,
        messages: list[Message],
        position: int,
        held: int = 1,
    ) -> bool:
        """The receive path's wait for a sink that pushes back (``batch``: the ``held``
        messages up to ``messages[position]``).  A stop that interrupts it leaves the batch
        and the rest of the chunk to :meth:`_drain`; a stop's deadline gives them up (False;
        counted in ``unpersisted``)."""
        try:
            delivered = await self._deliver_after_backpressure(batch, index, exc)
        except asyncio.CancelledError:
            self._leftover = ([(batch, index)], messages[position + 1 :], held)
            raise
        if not delivered:
            self.unpersisted += len(messages) - position - 1 + held
            self.gave_up = True
        return delivered

    async def _deliver_leftover(self, client: Transport) -> int:
        """Deliver what a stop interrupted (see :meth:`_deliver_held`); returns its messages."""
        if self._leftover is None:
            return 0
        (batches, rest, held), self._leftover = self._leftover, None
        for batch, index in batches:
            if not await self._deliver_from(batch, index):
                self.unpersisted += held + len(rest)
                self.gave_up = True
                return held + len(rest)
        await self._handle_messages(client, rest)
        return held + len(rest)

    async def _deliver_from(self, batch: Batch, index: int) -> bool:
        """Hand ``batch`` to the sinks from ``index`` on, waiting for one that pushes back;
        False when a stop's deadline made it give up."""
        for position in range(index, len(self.sinks)):
            sink = self.sinks[position]
            try:
                sink.add(batch)
            except LakeBackpressure as exc:
                return await self._deliver_after_backpressure(batch, position, exc)
            except Exception as exc:  # a sink's bug must not end the loop
                self._sink_failed(sink, exc)
        return True

    async def _drain_received(self, client: Transport, messages: list[Message]) -> None:
        """At a stop: process received messages -- or, once the stop gave up on a sink, count
        them unprocessed (processing some and not others would only make seq gaps)."""
        if self.gave_up:
            self.unpersisted += len(messages)
        else:
            await self._handle_messages(client, messages)

    def _begin_stop(self) -> None:
        """Start the stop's clock (engine.stop_timeout_s) and tell the sinks their deadline."""
        if self.stopping is not None:
            return
        self.stopping = StopBudget.starting_now(self.config.engine.stop_timeout_s)
        for sink in self.sinks:
            stop_by = getattr(sink, "stop_by", None)
            if stop_by is not None:
                stop_by(self.stopping.sinks_at)

    def _stop_left(self, default: float = 10.0) -> float:
        """Seconds a step of the stop may still take (until the sinks' deadline)."""
        return default if self.stopping is None else max(0.1, self.stopping.left(self.stopping.sinks_at))

    def lost_messages(self) -> int:
        """Received messages that are not persisted: given up at the stop's deadline, still
        waiting in the live connection, or accepted by a sink that could not write them
        (its ``unwritten_batches``)."""
        waiting = self.receive_queue
        return self.unpersisted + waiting + sum(int(getattr(s, "unwritten_batches", 0)) for s in self.sinks)
