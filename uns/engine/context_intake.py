"""Context events on a connection of their own: at least once from the broker, once in the lake.

Sparkplug wants the host's own connection to be a clean session; context is not
Sparkplug, and must not be lost while the engine is stopped, killed or
reconnecting.  So the engine takes ``<prefix>/_context/#`` on a second
connection (:class:`ContextIntake`), client id ``uns-<host_id>-context``,
``clean_session=False``, subscribed at QoS 1:

- the broker keeps the session while the engine is away and queues the context
  messages published meanwhile (with ``persistence true`` it keeps them across
  its own restart too);
- each message is acknowledged (PUBACK) only once its event is in the lake's
  write-ahead log and fsynced (:meth:`lake.sink.LakeSink.durable`; a sink
  without ``durable`` counts as durable at once).  A message the engine took but
  never acknowledged -- it was killed, the connection dropped, the WAL write
  failed -- is redelivered by the broker on the next connection, and the lake
  keeps each event once by its ``id`` (the dispatcher's dedupe);
- the subscription is made once, when the broker has no session for us; later
  connections find it in the session (no re-subscribe, so the retained
  messages are not sent again on each reconnect).

Reconnecting uses the main connection's capped, jittered backoff, until the
engine stops (``broker.connect_retries`` is the Sparkplug connection's); a
refusal retrying cannot heal (:class:`~uns.errors.BrokerRefused`) stops the engine.

Shutdown: stop taking, process what was taken, wait until it is durable,
acknowledge it, disconnect (the session, and what the broker queues for it,
stays).  What arrives after that is acknowledged by the next run.

Batch records (materials, results, comments on ``<prefix>/_records/#``) come in the
same way on a connection of their own, ``uns-<host_id>-records``
(``ContextIntake(engine, kind="records")``): a session of its own keeps the
subscribe-once rule of each, and an engine upgraded from a version without records
finds its context session as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from uns.config import Config
from uns.core.events import Batch, RebirthRequest
from uns.engine.dispatch import Dispatcher
from uns.engine.transport import HeldMessage, Publish, Transport
from uns.errors import BrokerError, BrokerRefused, EngineError, LakeError
from uns.mqtt.settings import Backoff, BrokerSettings

__all__ = ["ContextIntake", "IntakeHost"]

log = logging.getLogger("uns.engine.context")


class IntakeHost(Protocol):
    """What the context intake needs of its engine (:class:`uns.engine.host.Engine` is one)."""

    host_id: str
    config: Config
    dispatch: Dispatcher

    @property
    def sinks(self) -> Sequence[object]: ...

    def open_transport(self, settings: BrokerSettings, *, identifier: str, manual_ack: bool) -> Transport:
        """A persistent-session transport (clean_session false, no Will)."""

    def warn_limited(self, key: str, message: str, *args: Any) -> None:
        """A warning, rate-limited per ``key``."""

    async def deliver(self, batch: Batch) -> bool:
        """Hand a batch to the sinks; False when a stop gave it up."""

    def act(
        self, client: Transport, rebirths: Sequence[RebirthRequest], publishes: Sequence[Publish]
    ) -> None:
        """Send what processing decided."""

    def background(self) -> set[asyncio.Task[None]]:
        """The publishes still in flight."""


class ContextIntake:
    """The engine's context connection; :meth:`run` until ``stop``."""

    #: messages processed (and acknowledged together) per turn
    CHUNK = 256

    def __init__(self, engine: IntakeHost, *, kind: str = "context") -> None:
        self.engine = engine
        #: ``context`` (context events) or ``records`` (batch records)
        self.kind = kind
        self.identifier = f"uns-{engine.host_id}-{kind}"
        dispatch = engine.dispatch
        if kind == "records":
            self.topic = f"{dispatch.records_prefix}#"
            self._process = dispatch.process_records
        else:
            self.topic = f"{dispatch.context_prefix}#"
            self._process = dispatch.process_context
        #: set while the context session is live (subscribed)
        self.connected = asyncio.Event()
        #: messages acknowledged after their batch was durable
        self.acknowledged = 0
        #: connections that found the broker's session kept for us (``session_present``)
        self.sessions_resumed = 0

    def stats(self) -> dict[str, int | bool]:
        """For the status document: the session is up, messages acknowledged, sessions resumed."""
        return {
            "connected": self.connected.is_set(),
            "acknowledged": self.acknowledged,
            "sessions_resumed": self.sessions_resumed,
        }

    # ------------------------------------------------------------------ connection loop
    async def run(self, stop: asyncio.Event) -> None:
        engine = self.engine
        cfg = engine.config.broker
        settings = cfg.settings()
        where = settings.masked_url()
        backoff = Backoff(cfg.reconnect_min, cfg.reconnect_max)
        while not stop.is_set():
            client = engine.open_transport(settings, identifier=self.identifier, manual_ack=True)
            try:
                await client.connect()
            except BrokerRefused as exc:
                await client.disconnect()
                raise EngineError(f"cannot reach the broker at {where}: {exc}") from exc
            except BrokerError as exc:
                await client.disconnect()
                # broker.connect_retries is the Sparkplug connection's to enforce: this one
                # retries until the engine stops
                engine.warn_limited(
                    f"{self.kind}-connect", "%s intake cannot connect to %s: %s", self.kind, where, exc
                )
            else:
                backoff.reset()
                try:
                    await self._session(client, stop)
                except BrokerError as exc:
                    log.warning(
                        "%s intake lost the broker (unacknowledged messages come again): %s", self.kind, exc
                    )
                finally:
                    self.connected.clear()
                    await client.disconnect()
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.next())

    async def _session(self, client: Transport, stop: asyncio.Event) -> None:
        if client.session_present:
            self.sessions_resumed += 1
        else:  # a new session: subscribe once; the broker keeps it from now on
            await client.subscribe(self.topic, qos=1)
        self.connected.set()
        log.info(
            "%s intake connected as %s (session %s)",
            self.kind,
            self.identifier,
            "resumed" if client.session_present else "new",
        )
        stopper = asyncio.create_task(stop.wait(), name=f"uns-{self.kind}-stop")
        try:
            while not stop.is_set():
                waiter = asyncio.create_task(client.wait_messages(), name=f"uns-{self.kind}-wait")
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not waiter.done():
                        waiter.cancel()
                        with contextlib.suppress(asyncio.CancelledError, BrokerError):
                            await waiter
                if waiter.done() and not waiter.cancelled() and (error := waiter.exception()) is not None:
                    raise error
                await self._handle(client, client.take_held(self.CHUNK))
        finally:
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
        # stop: what was received is processed, made durable and acknowledged
        while held := client.take_held(self.CHUNK):
            await self._handle(client, held)
        # and the answers to it (context_ack) leave before the disconnect, within reason
        answers = self.engine.background()
        if answers:
            await asyncio.wait(answers, timeout=2.0)

    # ------------------------------------------------------------------ one batch
    async def _handle(self, client: Transport, held: list[HeldMessage]) -> None:
        """Process, hand to the sinks, wait until durable, then PUBACK (in order)."""
        if not held:
            return
        engine = self.engine
        process = self._process
        clock = time.time_ns
        ids: list[int] = []
        rebirths: list[RebirthRequest] = []
        publishes: list[Publish] = []
        for topic, payload, _qos, retain, packet_id in held:
            batch, more_rebirths, more_publishes = process(
                topic, payload, clock() // 1_000_000, retained=retain
            )
            if not await engine.deliver(batch):  # a stop gave it up: never acknowledge it
                raise BrokerError(f"{self.kind} not acknowledged: the stop ended before the lake took it")
            ids.append(packet_id)
            rebirths.extend(more_rebirths)
            publishes.extend(more_publishes)
        await self._durable(engine.sinks)
        if client.ack_all(ids):
            self.acknowledged += sum(1 for i in ids if i)
        if rebirths or publishes:
            engine.act(client, rebirths, publishes)

    @staticmethod
    async def _durable(sinks: Sequence[object]) -> None:
        """Every sink that can say so says what it took is durable; BrokerError (ends the
        connection, the messages come again) when one cannot."""
        for sink in sinks:
            durable = getattr(sink, "durable", None)
            if durable is None:
                continue
            try:
                await durable()
            except LakeError as exc:
                raise BrokerError(f"not acknowledged, the lake cannot make it durable: {exc}") from exc
