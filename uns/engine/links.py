"""One broker of the engine's Sparkplug host: its connection loop, its sessions, its STATE.

A Sparkplug host on several MQTT servers (``broker.urls``; docs/sparkplug.md
§3 rule 6, the TCK's MultipleBrokerTest) keeps one session per server.  Each
:class:`BrokerLink` has its own connection (client id ``uns-<host_id>`` on that
broker), its own STATE birth/Will/death timestamp T, and its own
:class:`~uns.sparkplug.session.SessionManager` and
:class:`~uns.engine.dispatch.Dispatcher`: births, deaths, seq and aliases are
tracked per broker, so an edge node that moves from one broker to the other
is a death on one and a birth on the other, and each message lands in the
sinks once, from the broker it came through.  Losing one broker makes stale
only what was learned through it.  The sinks, the plant model, the context
store and the counters are the engine's, shared by every link.

The first broker (``broker.url``, or the first of ``broker.urls``) is the home
broker: the context connection, the republished events and ``uns cmd`` use it,
and ``Engine.connected`` follows its session.

Per connection, in order (docs/sparkplug.md §3 rules 1-5): a fresh T for the
Will and the birth; CONNECT (clean: 3.1.1 Clean Session, MQTT 5 Clean Start
and Session Expiry 0); SUBSCRIBE the namespace and our own STATE topic; the
STATE birth, the first PUBLISH; then the loops, each a named task:

    uns-receive[-N]  messages -> the link's dispatcher -> the sinks
    uns-timer[-N]    the link's reorder timeouts
    uns-status[-N]   the retained status document, on every broker

At a stop: unsubscribe, drain, flush the sinks, status and STATE offline (T =
now), then DISCONNECT.  A refusal a retry cannot heal (bad credentials, not
authorized -- of the CONNECT or, in MQTT 5, of a SUBSCRIBE) ends the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from uns.clock import now_ms
from uns.config import Config
from uns.core.context import ContextStore
from uns.core.enrich import Enricher
from uns.core.events import Batch, RebirthRequest
from uns.engine.dispatch import Dispatcher
from uns.engine.status import Counters
from uns.engine.transport import Message, Publish, Transport
from uns.errors import BrokerClosedEarly, BrokerError, BrokerRefused, EngineError
from uns.mqtt.client import Will
from uns.mqtt.settings import Backoff, BrokerSettings
from uns.sparkplug.session import SessionManager
from uns.sparkplug.state import format_state

__all__ = ["CLOSED_EARLY_ATTEMPTS", "BrokerLink", "LinkHost", "cancel_all", "mark_connected"]

log = logging.getLogger("uns.engine")

#: plain connections closed before CONNACK in a row, before the first one got through, after
#: which the engine stops (broker.connect_retries when set): a TLS port does that to mqtt://
CLOSED_EARLY_ATTEMPTS = 5


class LinkHost(Protocol):
    """What a link needs of its engine (:class:`uns.engine.host.Engine` is one)."""

    config: Config
    host_id: str
    state_topic: str
    namespace_filters: tuple[str, ...]
    sessions: SessionManager
    dispatch: Dispatcher
    context: ContextStore
    enricher: Enricher
    counters: Counters
    CHUNK: int

    def _set_client(self, client: Transport | None) -> None: ...
    def new_transport(self, settings: BrokerSettings, *, identifier: str, will: Will | None) -> Transport: ...
    def bind_transport(self, client: Transport, dispatch: Dispatcher) -> None: ...
    def forget_transport(self, client: Transport) -> None: ...
    def warn_limited(self, key: str, message: str, *args: Any) -> None: ...
    async def deliver(self, batch: Batch) -> bool: ...
    def act(
        self, client: Transport, rebirths: Sequence[RebirthRequest], publishes: Sequence[Publish]
    ) -> None: ...
    async def publish_status(self, client: Transport, *, online: bool = True) -> None: ...
    async def flush_sinks(self) -> None: ...
    async def _handle_messages(self, client: Transport, messages: list[Message]) -> None: ...
    async def _deliver_leftover(self, client: Transport) -> int: ...
    async def _drain_received(self, client: Transport, messages: list[Message]) -> None: ...
    def _stop_left(self, default: float = 10.0) -> float: ...


class BrokerLink:
    """The engine's Sparkplug host session on one broker; :meth:`run` until stopped."""

    def __init__(self, engine: LinkHost, index: int, settings: BrokerSettings) -> None:
        self.engine = engine
        self.index = index
        self.settings = settings
        #: the broker's URL, password masked (for logs and the status document)
        self.where = settings.masked_url()
        if index == 0:
            self.sessions, self.dispatch = engine.sessions, engine.dispatch
        else:
            self.sessions = SessionManager(engine.config.sparkplug)
            self.dispatch = Dispatcher(
                engine.config,
                sessions=self.sessions,
                context=engine.context,
                enricher=engine.enricher,
                counters=engine.counters,
                trusted_keys=engine.dispatch.trusted_keys,
            )
        #: the live session's transport (subscribed, STATE birth sent), None otherwise
        self.client: Transport | None = None
        #: set while the session on this broker is live
        self.connected = asyncio.Event()
        self._suffix = "" if index == 0 else f"-{index + 1}"

    @property
    def state_ts(self) -> int | None:
        """T of this broker's STATE birth and Will (None: not primary, or never connected)."""
        return self.dispatch.state_ts

    def _set_client(self, client: Transport | None) -> None:
        self.client = client
        mark_connected(self.connected, client)
        if self.index == 0:
            self.engine._set_client(client)

    def new_transport(self) -> Transport:
        """A fresh connection with a fresh T: the Will and the STATE birth carry the same one."""
        engine = self.engine
        will = None
        if engine.config.engine.primary:
            self.dispatch.state_ts = now_ms()
            will = Will(engine.state_topic, format_state(False, self.dispatch.state_ts), qos=1, retain=True)
        return engine.new_transport(self.settings, identifier=f"uns-{engine.host_id}", will=will)

    # ------------------------------------------------------------------ the connection loop
    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve, and after a failed attempt or a lost connection wait (capped,
        jittered backoff) and connect again, until ``stop``; see the module doc for when not."""
        cfg = self.engine.config.broker
        backoff = Backoff(cfg.reconnect_min, cfg.reconnect_max)
        failures = closed_early = 0
        served = False  # a connection got through CONNACK: later ones are reconnects
        while not stop.is_set():
            client = self.new_transport()
            try:
                await client.connect()
            except BrokerRefused as exc:  # the same answer on every attempt: say so once and stop
                await client.disconnect()
                raise EngineError(f"cannot reach the broker at {self.where}: {exc}") from exc
            except BrokerError as exc:
                await client.disconnect()
                failures += 1
                closed_early = closed_early + 1 if isinstance(exc, BrokerClosedEarly) else 0
                early_limit = cfg.connect_retries if cfg.connect_retries >= 0 else CLOSED_EARLY_ATTEMPTS
                if not served and (0 <= cfg.connect_retries < failures or closed_early > early_limit):
                    raise EngineError(
                        f"cannot reach the broker at {self.where} after {failures} attempts: {exc}"
                    ) from exc
                self.engine.warn_limited(
                    f"connect{self._suffix}", "cannot connect to %s: %s", self.where, exc
                )
            else:
                failures = 0
                backoff.reset()
                reconnect, served = served, True
                try:
                    await self._session(client, stop, reconnect=reconnect)
                except BrokerRefused as exc:  # e.g. MQTT 5: our SUBSCRIBE is not authorized
                    raise EngineError(f"the broker at {self.where} refused us: {exc}") from exc
                except BrokerError as exc:
                    self._set_client(None)  # at once: nothing more is handed to a dead connection
                    await self._lost(client, exc)
                finally:
                    self._set_client(None)
                    self.engine.forget_transport(client)
                    await client.disconnect()
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.next())

    async def _session(self, client: Transport, stop: asyncio.Event, *, reconnect: bool) -> None:
        """One broker connection: subscribe, STATE online, loops until stop (then drain) or
        a BrokerError (the connection is lost)."""
        engine = self.engine
        engine.bind_transport(client, self.dispatch)
        # Sparkplug: subscribe to the namespace (spBv1.0/#, or our shard's groups) and our own
        # STATE before any publish; then the STATE birth is the session's first PUBLISH.
        for topic_filter in engine.namespace_filters:
            await client.subscribe(topic_filter, qos=0)
        await client.subscribe(engine.state_topic, qos=1)
        if self.state_ts is not None:
            await client.publish(engine.state_topic, format_state(True, self.state_ts), qos=1, retain=True)
        if reconnect:
            engine.counters.reconnects += 1
            await engine.deliver(self.dispatch.broker_back(now_ms()))
            if engine.config.engine.on_reconnect == "rebirth":
                engine.act(client, self.dispatch.rebirth_all("host reconnected"), ())
        self._set_client(client)
        log.info("connected to %s as host %s", self.where, engine.host_id)
        tasks = [
            asyncio.create_task(self._receive(client), name=f"uns-receive{self._suffix}"),
            asyncio.create_task(self._timer(client), name=f"uns-timer{self._suffix}"),
            asyncio.create_task(self._status_loop(client), name=f"uns-status{self._suffix}"),
        ]
        stopper = asyncio.create_task(stop.wait(), name=f"uns-stop{self._suffix}")
        try:
            done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_all([*tasks, stopper])
        for task in tasks:
            if task in done and (error := task.exception()) is not None:
                raise error
        if stopper not in done:
            raise BrokerError("connection loop ended unexpectedly")
        await self._drain(client)

    # ------------------------------------------------------------------ loops
    async def _receive(self, client: Transport) -> None:
        """Take every message the transport has parsed since the last wake-up and process
        them in one go: one event-loop round per socket read, not per message."""
        handle, chunk = self.engine._handle_messages, self.engine.CHUNK
        while True:
            await client.wait_messages()
            await handle(client, client.take(chunk))
            if client.pending:
                await asyncio.sleep(0)  # let the timer, status and sink tasks have their turn

    async def _timer(self, client: Transport) -> None:
        engine, sessions, dispatch = self.engine, self.sessions, self.dispatch
        while True:
            deadline = sessions.next_deadline()
            now = now_ms()
            delay = 0.25 if deadline is None else max(0.0, min(0.25, (deadline - now) / 1000))
            await asyncio.sleep(delay)
            batch, rebirths = dispatch.tick(now_ms())
            if batch or rebirths:
                await engine.deliver(batch)
                engine.act(client, rebirths, ())

    async def _status_loop(self, client: Transport) -> None:
        while True:
            try:
                await self.engine.publish_status(client)
            except BrokerError as exc:  # a lost connection is noticed by the receive loop
                self.engine.warn_limited(f"status{self._suffix}", "status publish failed: %s", exc)
            await asyncio.sleep(self.engine.config.engine.status_interval)

    # ------------------------------------------------------------------ endings
    async def _drain(self, client: Transport) -> None:
        """Stop intake, process what was already received, flush sinks, status and STATE
        offline (a death stamped now, before the DISCONNECT)."""
        engine = self.engine
        with contextlib.suppress(BrokerError, TimeoutError):
            async with asyncio.timeout(engine._stop_left()):
                for topic_filter in engine.namespace_filters:
                    await client.unsubscribe(topic_filter)
        drained = await engine._deliver_leftover(client)
        while messages := client.take(engine.CHUNK):
            await engine._drain_received(client, messages)
            drained += len(messages)
        if drained:
            log.info("drained %d messages received from %s before stop", drained, self.where)
        await engine.flush_sinks()
        with contextlib.suppress(BrokerError, TimeoutError):
            async with asyncio.timeout(engine._stop_left()):
                await engine.publish_status(client, online=False)
                if self.state_ts is not None:
                    await client.publish(
                        engine.state_topic, format_state(False, now_ms()), qos=1, retain=True
                    )

    async def _lost(self, client: Transport, exc: BrokerError) -> None:
        """The connection dropped: use what arrived before the loss, then mark every node
        and device learned through this broker offline and stale (docs/sparkplug.md §3.7)."""
        log.warning("lost the broker %s: %s", self.where, exc)
        await self.engine._deliver_leftover(client)  # a message a slice at a time, cut short
        while messages := client.take(self.engine.CHUNK):
            await self.engine._drain_received(client, messages)
        await self.engine.deliver(self.dispatch.broker_lost(now_ms()))

    def status(self) -> dict[str, Any]:
        """This broker in the status document."""
        return {"url": self.where, "connected": self.connected.is_set(), "state_ts": self.state_ts}


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel and await tasks, cancelling again while any survives: Python 3.11's
    ``wait_for`` (in a publish that waits for its acknowledgement) can swallow a
    cancellation that races its completion, and a loop that swallowed one would
    otherwise run on forever."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for task in tasks:  # retrieve results so nothing is logged as never retrieved
        if not task.cancelled():
            task.exception()


def mark_connected(connected: asyncio.Event, client: Transport | None) -> None:
    """Keep ``connected`` in step with a link's (or the engine's) client: set while there is one."""
    if client is None:
        connected.clear()
    else:
        connected.set()
