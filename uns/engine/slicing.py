"""A large message in slices: the event loop keeps running while one message takes seconds.

A birth of 100,000 metrics is seconds of Python (decoding, the session, the
enrichment, the sinks' intake).  Done in one go it would stall everything else
on the loop -- the reorder timer, the status, the context connection, ``/healthz``,
the systemd watchdog.  So a message of :data:`SLICED_BYTES` or more goes through
:meth:`~uns.engine.dispatch.Dispatcher.process_steps` instead of ``process``: the
pure work pauses after every slice of metrics, and the engine lets the loop run
whenever :data:`BREATH_S` has passed since it last did; the rows reach the sinks a
slice at a time, the loop running after each (the lake writes each slice as its own
WAL record before the next is handed over).  Messages stay
in order: the next one waits until this one is done.

A stop or a lost connection that cancels the receive task between slices does not
lose half a message: the rest of its pure work is finished at once and what it
made waits, with the messages after it, for the drain
(:meth:`~uns.engine.delivery.SinkDelivery._deliver_leftover`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Sequence
from typing import Final

from uns.core.events import Batch, RebirthRequest
from uns.engine.delivery import SinkDelivery
from uns.engine.dispatch import Decision, Dispatcher
from uns.engine.transport import Message, Publish, Transport
from uns.errors import LakeBackpressure

__all__ = ["BREATH_S", "SLICED_BYTES", "SlicedIntake"]

#: payloads of this size or more are processed in slices (about 2,000 metrics of a birth)
SLICED_BYTES: Final = 64 * 1024
#: the longest the loop waits for its turn while a large message is processed (seconds)
BREATH_S: Final = 0.02


class SlicedIntake(SinkDelivery):
    """Large messages in slices; a part of :class:`~uns.engine.host.Engine`."""

    def act(
        self, client: Transport, rebirths: Sequence[RebirthRequest], publishes: Sequence[Publish]
    ) -> None:
        raise NotImplementedError

    async def _handle_large(
        self,
        client: Transport,
        dispatch: Dispatcher,
        message: tuple[str, bytes, int],
        messages: list[Message],
        position: int,
    ) -> bool:
        """Process ``messages[position]`` (``message``: its topic, payload and receive time)
        through ``dispatch`` (its broker's) in slices and hand its rows to the sinks; False
        when a stop's deadline gave it (and the rest of ``messages``) up."""
        steps = dispatch.process_steps(*message)
        breath = time.monotonic()
        while True:
            try:
                part = next(steps)
            except StopIteration as done:
                decision: Decision = done.value
                break
            if part is not None and not await self._deliver_part(part, steps, messages, position):
                return False
            # after each slice of rows the loop runs (the lake writes them, one WAL record a
            # slice); between slices of pure work, once BREATH_S has passed
            if part is not None or time.monotonic() - breath >= BREATH_S:
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    self._keep_rest(steps, [], messages, position)
                    raise
                breath = time.monotonic()
        batch, rebirths, publishes = decision
        if batch and not await self._deliver_part(batch, None, messages, position):
            return False
        if rebirths or publishes:
            self.act(client, rebirths, publishes)
        return True

    async def _deliver_part(
        self,
        part: Batch,
        steps: Generator[Batch | None, None, Decision] | None,
        messages: list[Message],
        position: int,
    ) -> bool:
        """Hand one slice's rows to every sink, waiting while one pushes back."""
        for index, sink in enumerate(self.sinks):
            try:
                sink.add(part)
            except LakeBackpressure as exc:
                try:
                    delivered = await self._deliver_after_backpressure(part, index, exc)
                except asyncio.CancelledError:
                    self._keep_rest(steps, [(part, index)], messages, position)
                    raise
                if not delivered:
                    self.unpersisted += len(messages) - position
                    self.gave_up = True
                return delivered
            except Exception as exc:  # a sink's bug must not end the loop
                self._sink_failed(sink, exc)
        return True

    def _keep_rest(
        self,
        steps: Generator[Batch | None, None, Decision] | None,
        held: list[tuple[Batch, int]],
        messages: list[Message],
        position: int,
    ) -> None:
        """Cancelled between slices: finish the message's pure work now and leave its rows
        (after ``held``, the slice a sink had not taken yet) and the later messages to the drain."""
        rest = Batch()
        if steps is not None:
            while True:
                try:
                    part = next(steps)
                except StopIteration as done:
                    rest.extend(done.value[0])
                    break
                if part is not None:
                    rest.extend(part)
        self._leftover = ([*held, (rest, 0)], messages[position + 1 :], 1)  # one message
