"""The asyncio engine: the I/O shell around the pure Sparkplug host sessions.

Two broker connections, each in its own named task:

    uns-connection  the Sparkplug host session (clean session, client id ``uns-<host_id>``),
                    with one task group of named tasks per connection:
        uns-receive   MQTT messages -> dispatch -> sessions -> enrich -> sinks
        uns-timer     reorder timeouts (SessionManager.tick)
        uns-status    the retained status document on <prefix>/_engine/<host_id>/status
    uns-context     context events (``<prefix>/_context/#``) on a persistent session
                    (client id ``uns-<host_id>-context``), each acknowledged only once
                    durable in the lake: :mod:`uns.engine.context_intake`

What to do with each message is decided by :class:`~uns.engine.dispatch.Dispatcher`
(no I/O); this module carries the decisions out.  The connection is a
:class:`~uns.engine.transport.Transport` made by the factory the engine is given:
:class:`uns.mqtt.client.FastClient` in production, which parses every packet of a
socket read in one go, so the receive task takes them as a list and processes them
without an event-loop round per message; :class:`uns.engine.memory.MemoryBroker` in
the unit tests.

The receive path never waits on a sink, except when a sink says it is full
(``LakeBackpressure``): then processing pauses for ``retry_after`` while new
messages wait in the transport's buffer (documented policy; counted as
``backpressure_waits``, the buffer depth is ``receive_queue`` in the status).
Once that buffer reaches its high-water mark the transport stops reading the
socket, so the broker queues instead of the engine's memory growing.

Connecting: a dropped or refused socket is retried with capped, jittered
backoff (forever, or ``broker.connect_retries`` times before the first
connection); a refusal that retrying cannot heal (:class:`~uns.errors.BrokerRefused`:
bad credentials, not authorized, a certificate that does not verify) ends
:meth:`Engine.run` at once with an :class:`~uns.errors.EngineError`, at start-up
and after a reconnect alike.

Shutdown order: stop intake, drain what was already received, flush the
sinks, publish status and STATE offline (primary host), disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from uns.clock import now_ms
from uns.config import Config
from uns.core.context import ContextStore
from uns.core.enrich import Enricher
from uns.core.events import Batch, RebirthRequest, Sink
from uns.core.model import PlantModel
from uns.engine.context_intake import ContextIntake
from uns.engine.delivery import SinkDelivery
from uns.engine.dispatch import Decision, Dispatcher
from uns.engine.status import Counters
from uns.engine.transport import Message, Publish, Transport, TransportFactory
from uns.errors import BrokerError, BrokerRefused, EngineError, LakeBackpressure, LakeError, SignatureError
from uns.keyring import load_trusted_keys
from uns.logs import RateLimitedLog
from uns.mqtt.client import FastClient, Will
from uns.mqtt.settings import Backoff, BrokerSettings
from uns.sparkplug import native
from uns.sparkplug.ncmd import rebirth_payload
from uns.sparkplug.session import SessionManager
from uns.sparkplug.state import format_state
from uns.sparkplug.topic import group_list, namespace_filters

__all__ = ["Engine"]

log = logging.getLogger("uns.engine")


class Engine(SinkDelivery):
    """A Sparkplug B host application feeding sinks.  Use :meth:`run`.

    ``transport`` makes the broker connections (default :class:`~uns.mqtt.client.FastClient`);
    pass a :class:`~uns.engine.memory.MemoryBroker` to run the engine without a broker."""

    def __init__(
        self,
        config: Config,
        *,
        sinks: Sequence[Sink] = (),
        model: PlantModel | None = None,
        transport: TransportFactory = FastClient,
    ) -> None:
        self.config = config
        self.sessions = SessionManager(config.sparkplug)
        self.context = ContextStore(window_ms=int(config.context.window_hours * 3_600_000))
        self.model = model or PlantModel.empty()
        self.prefix = config.engine.prefix
        self.enricher = Enricher(self.model, self.context)
        self.sinks: list[Sink] = list(sinks)
        self.counters = Counters()
        self.host_id = config.engine.host_id
        self.state_topic = f"spBv1.0/STATE/{self.host_id}"
        self.status_topic = f"{self.prefix}/_engine/{self.host_id}/status"
        #: the Sparkplug groups this engine hosts (its shard; empty: every group)
        self.groups: tuple[str, ...] = group_list(config.engine.groups)
        #: what the Sparkplug connection subscribes: ``spBv1.0/<group>/#`` per group, or all
        self.namespace_filters = namespace_filters(self.groups)
        self.dispatch = Dispatcher(
            config,
            sessions=self.sessions,
            context=self.context,
            enricher=self.enricher,
            counters=self.counters,
            trusted_keys=_trusted_keys(config),
        )
        self._transport = transport
        # The connection state, in one field: the transport of the live session (subscribed,
        # STATE birth sent), None otherwise.  Only _set_client changes it.
        self._client: Transport | None = None
        #: set while a session is live (follows ``_client``): what callers wait on
        self.connected = asyncio.Event()
        #: set while :meth:`run` runs with its sinks open (what readiness waits for)
        self.running = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._rlog = RateLimitedLog(log)
        self._started = time.monotonic()
        #: the context connection (a persistent session: context is never lost)
        self.context_intake = ContextIntake(self)
        self.stopping = None  # a stop in progress: its deadlines (uns.engine.delivery)
        self.unpersisted = 0
        self.gave_up = False
        self._leftover = None

    def _set_client(self, client: Transport | None) -> None:
        self._client = client
        if client is None:
            self.connected.clear()
        else:
            self.connected.set()

    def process(self, topic: str, payload: bytes, received_at: int) -> Decision:
        """Decide what one received message means: (batch, rebirth requests, publishes).
        Pure of I/O; :meth:`run` carries the decision out (see :class:`Dispatcher`)."""
        return self.dispatch.process(topic, payload, received_at)

    # ------------------------------------------------------------------ sending
    def act(
        self, client: Transport, rebirths: Sequence[RebirthRequest], publishes: Sequence[Publish]
    ) -> None:
        """Send what processing decided: rebirth requests (QoS 0, straight to the socket
        buffer) and other publishes such as the STATE re-assertion (QoS 1, in the
        background: a PUBACK may queue behind a backlog of received messages and must
        never stall the receive path)."""
        for p in publishes:
            self._spawn(client.publish(p.topic, p.payload, qos=p.qos, retain=p.retain), f"publish {p.topic}")
        for req in rebirths:
            log.info("requesting rebirth of %s/%s: %s", req.group_id, req.edge_node_id, req.reason)
            client.publish_nowait(
                f"spBv1.0/{req.group_id}/NCMD/{req.edge_node_id}", self.rebirth_payload(), qos=0, retain=False
            )

    # ------------------------------------------------------------------ for the context intake
    def open_transport(self, settings: BrokerSettings, *, identifier: str, manual_ack: bool) -> Transport:
        """A persistent-session transport without a Will (the context connection)."""
        return self._transport(
            settings, identifier=identifier, will=None, clean_session=False, manual_ack=manual_ack
        )

    def warn_limited(self, key: str, message: str, *args: Any) -> None:
        self._rlog.warning(key, message, *args)

    async def deliver(self, batch: Batch) -> bool:
        return await self._deliver(batch)

    def background(self) -> set[asyncio.Task[None]]:
        return set(self._background)

    @staticmethod
    def rebirth_payload() -> bytes:
        """NCMD Node Control/Rebirth=true, stamped now."""
        return rebirth_payload(now_ms())

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish through the live session (used by the republish sink); EngineError when
        there is none, so nothing leaves before the session's STATE birth."""
        client = self._client
        if client is None:
            raise EngineError("not connected to the broker")
        await client.publish(topic, payload, qos=qos, retain=retain)

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Hand a message to the live session's socket buffer without waiting; False when
        there is none (the caller queues or counts it)."""
        client = self._client
        return client is not None and client.publish_nowait(topic, payload, qos, retain)

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Run a publish in the background; a failure is logged, never fatal to the session."""
        task = asyncio.create_task(coro, name=f"uns-{what}")
        self._background.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._background.discard(t)
            if not t.cancelled() and (exc := t.exception()) is not None:
                self._rlog.warning(f"bg:{what}", "%s failed: %s", what, exc)

        task.add_done_callback(done)

    # ------------------------------------------------------------------ status
    @property
    def receive_queue(self) -> int:
        """Messages received and not processed yet (0 without a live session)."""
        client = self._client
        return client.pending if client is not None else 0

    def status(self, *, online: bool = True) -> dict[str, Any]:
        """The status document (retained on ``<prefix>/_engine/<host_id>/status``)."""
        nodes_online, nodes_known = self.sessions.node_counts()
        return {
            "host_id": self.host_id,
            "groups": list(self.groups),
            "online": online,
            "ts": now_ms(),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "connected": self.connected.is_set(),
            "receive_queue": self.receive_queue,
            "counters": self.counters.as_dict(),
            "nodes_online": nodes_online,
            "nodes_known": nodes_known,
            "sinks": {s.name: s.stats() for s in self.sinks},
            "context_intake": self.context_intake.stats(),
        }

    async def _publish_status(self, client: Transport, *, online: bool = True) -> None:
        """The retained status document.  Periodic ones go at QoS 0: a QoS 1 PUBACK can
        queue behind a backlog of incoming messages and time the connection out."""
        body = json.dumps(self.status(online=online), separators=(",", ":")).encode()
        await client.publish(self.status_topic, body, qos=0 if online else 1, retain=True)

    # ------------------------------------------------------------------ loops
    #: messages processed per turn of the receive task
    CHUNK = 1024

    async def _receive(self, client: Transport) -> None:
        """Take every message the transport has parsed since the last wake-up and process
        them in one go: one event-loop round per socket read, not per message."""
        while True:
            await client.wait_messages()
            await self._handle_messages(client, client.take(self.CHUNK))
            if client.pending:
                await asyncio.sleep(0)  # let the timer, status and sink tasks have their turn

    async def _handle_messages(self, client: Transport, messages: list[Message]) -> None:
        """The hot path: no await unless a sink pushes back."""
        if self.dispatch.lane:
            await self._handle_lane(client, messages)
            return
        process = self.dispatch.process
        clock = time.time_ns
        for position, (topic, payload, _qos, _retain) in enumerate(messages):
            batch, rebirths, publishes = process(topic, payload, clock() // 1_000_000)
            if batch and not await self._to_sinks(batch, messages, position):
                return
            if rebirths or publishes:
                self.act(client, rebirths, publishes)

    async def _handle_lane(self, client: Transport, messages: list[Message]) -> None:
        """:meth:`_handle_messages` with the native lane: runs of ordinary DATA in one C call
        (:meth:`Dispatcher.process_many`), every other message by :meth:`Dispatcher.process`."""
        process, many = self.dispatch.process, self.dispatch.process_many
        position, end = 0, len(messages)
        while position < end:
            now = time.time_ns() // 1_000_000
            after, lane = many(messages, position, now)
            if lane is not None:
                if not await self._to_sinks(lane, messages, after - 1, after - position):
                    return
                position = after
                if position == end:
                    break
            topic, payload, _qos, _retain = messages[position]
            batch, rebirths, publishes = process(topic, payload, now)
            if batch and not await self._to_sinks(batch, messages, position):
                return
            if rebirths or publishes:
                self.act(client, rebirths, publishes)
            position += 1

    async def _to_sinks(self, batch: Batch, messages: list[Message], position: int, held: int = 1) -> bool:
        """Hand ``batch`` (of ``held`` messages ending at ``messages[position]``) to every sink;
        False when a stop gave up waiting for one that pushes back."""
        for index, sink in enumerate(self.sinks):
            try:
                sink.add(batch)
            except LakeBackpressure as exc:
                return await self._deliver_held(batch, index, exc, messages, position, held)
            except Exception as exc:  # a sink's bug must not end the loop
                self._sink_failed(sink, exc)
        return True

    async def _timer(self, client: Transport) -> None:
        while True:
            deadline = self.sessions.next_deadline()
            now = now_ms()
            delay = 0.25 if deadline is None else max(0.0, min(0.25, (deadline - now) / 1000))
            await asyncio.sleep(delay)
            batch, rebirths = self.dispatch.tick(now_ms())
            if batch or rebirths:
                await self._deliver(batch)
                self.act(client, rebirths, ())

    async def _status_loop(self, client: Transport) -> None:
        while True:
            try:
                await self._publish_status(client)
            except BrokerError as exc:  # a lost connection is noticed by the receive loop
                self._rlog.warning("status", "status publish failed: %s", exc)
            await asyncio.sleep(self.config.engine.status_interval)

    async def _session(self, client: Transport, stop: asyncio.Event, *, reconnect: bool) -> None:
        """One broker connection: subscribe, STATE online, loops until stop (then drain) or
        a BrokerError (the connection is lost)."""
        # Sparkplug: subscribe to the namespace (our shard's groups) and our own STATE before
        # any publish.
        for topic_filter in self.namespace_filters:
            await client.subscribe(topic_filter, qos=0)
        await client.subscribe(self.state_topic, qos=1)
        state_ts = self.dispatch.state_ts
        if state_ts is not None:
            await client.publish(self.state_topic, format_state(True, state_ts), qos=1, retain=True)
        if reconnect:
            self.counters.reconnects += 1
            await self._deliver(self.dispatch.broker_back(now_ms()))
            if self.config.engine.on_reconnect == "rebirth":
                self.act(client, self.dispatch.rebirth_all("host reconnected"), ())
        self._set_client(client)
        log.info("connected to %s as host %s", self.config.broker.settings().masked_url(), self.host_id)
        tasks = [
            asyncio.create_task(self._receive(client), name="uns-receive"),
            asyncio.create_task(self._timer(client), name="uns-timer"),
            asyncio.create_task(self._status_loop(client), name="uns-status"),
        ]
        stopper = asyncio.create_task(stop.wait(), name="uns-stop")
        try:
            done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel_all([*tasks, stopper])
        for task in tasks:
            if task in done and (error := task.exception()) is not None:
                raise error
        if stopper not in done:
            raise BrokerError("connection loop ended unexpectedly")
        await self._drain(client)

    async def _drain(self, client: Transport) -> None:
        """Stop intake, process what was already received, flush sinks, status and STATE offline."""
        with contextlib.suppress(BrokerError, TimeoutError):
            async with asyncio.timeout(self._stop_left()):
                for topic_filter in self.namespace_filters:
                    await client.unsubscribe(topic_filter)
        drained = await self._deliver_leftover(client)
        while messages := client.take(self.CHUNK):
            await self._drain_received(client, messages)
            drained += len(messages)
        if drained:
            log.info("drained %d messages received before stop", drained)
        for sink in self.sinks:
            try:
                async with asyncio.timeout(self._stop_left(3600.0)):
                    await sink.flush()
            except (LakeError, TimeoutError) as exc:  # the sink's own exit says it once more
                log.warning("sink %s could not flush at the stop: %s", sink.name, exc or "stop deadline")
        with contextlib.suppress(BrokerError, TimeoutError):
            async with asyncio.timeout(self._stop_left()):
                await self._publish_status(client, online=False)
                if self.dispatch.state_ts is not None:
                    await client.publish(self.state_topic, format_state(False, now_ms()), qos=1, retain=True)

    async def _lost(self, client: Transport, exc: BrokerError) -> None:
        """The connection dropped: use what arrived before the loss, then mark every node
        and device offline and stale (their data can no longer be trusted to be current)."""
        log.warning("lost the broker: %s", exc)
        while messages := client.take(self.CHUNK):
            await self._drain_received(client, messages)
        await self._deliver(self.dispatch.broker_lost(now_ms()))

    def _new_transport(self, settings: BrokerSettings) -> Transport:
        """A fresh connection with a fresh T: the Will and the STATE birth carry the same one."""
        will = None
        if self.config.engine.primary:
            self.dispatch.state_ts = now_ms()
            will = Will(self.state_topic, format_state(False, self.dispatch.state_ts), qos=1, retain=True)
        return self._transport(settings, identifier=f"uns-{self.host_id}", will=will)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect (and reconnect) until ``stop`` is set; then shut down in order.

        Raises EngineError when the broker refuses us for good (BrokerRefused) or, before
        the first connection, after ``broker.connect_retries`` failed attempts."""
        stop = stop or asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            for sink in self.sinks:
                await stack.enter_async_context(sink)
            # samples in columns (SampleBlock) only when every sink takes them
            columnar = native.AVAILABLE and all(getattr(s, "accepts_blocks", False) for s in self.sinks)
            self.sessions.columnar = columnar
            log.info("%s%s", native.STATUS, "; samples go to the lake in columns" if columnar else "")
            self.running.set()
            stack.callback(self.running.clear)
            await self._run_connections(stop)
            stopped = {"counters": self.counters.as_dict(), "sinks": {s.name: s.stats() for s in self.sinks}}
            log.info("engine stopped: %s", json.dumps(stopped))

    async def _run_connections(self, stop: asyncio.Event) -> None:
        """The Sparkplug connection and the context connection, each in its named task.  When
        one ends with an error the other is stopped in order (drained, flushed, acknowledged)
        and the error is raised."""
        halt = asyncio.Event()  # stop, or one of the two failed
        tasks = [
            asyncio.create_task(self._connection_loop(halt), name="uns-connection"),
            asyncio.create_task(self.context_intake.run(halt), name="uns-context"),
        ]
        stopper = asyncio.create_task(stop.wait(), name="uns-run-stop")
        try:
            pending: set[asyncio.Task[Any]] = {*tasks, stopper}
            while any(not t.done() for t in tasks):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done or any(t in done and t.exception() is not None for t in tasks):
                    self._begin_stop()
                    halt.set()
        finally:
            self._begin_stop()
            halt.set()
            await _cancel_all([*tasks, stopper])
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error

    async def _connection_loop(self, stop: asyncio.Event) -> None:
        """Connect, serve, and after a failed attempt or a lost connection wait (capped,
        jittered backoff) and connect again, until ``stop``; see the module doc for when not."""
        cfg = self.config.broker
        settings = cfg.settings()
        where = settings.masked_url()
        backoff = Backoff(cfg.reconnect_min, cfg.reconnect_max)
        failures = 0
        served = False  # a connection got through CONNACK: later ones are reconnects
        while not stop.is_set():
            client = self._new_transport(settings)
            try:
                await client.connect()
            except BrokerRefused as exc:  # the same answer on every attempt: say so once and stop
                await client.disconnect()
                raise EngineError(f"cannot reach the broker at {where}: {exc}") from exc
            except BrokerError as exc:
                await client.disconnect()
                failures += 1
                if not served and 0 <= cfg.connect_retries < failures:
                    raise EngineError(
                        f"cannot reach the broker at {where} after {failures} attempts: {exc}"
                    ) from exc
                self._rlog.warning("connect", "cannot connect to %s: %s", where, exc)
            else:
                failures = 0
                backoff.reset()
                reconnect, served = served, True
                try:
                    await self._session(client, stop, reconnect=reconnect)
                except BrokerError as exc:
                    self._set_client(None)  # at once: nothing more is handed to a dead connection
                    await self._lost(client, exc)
                finally:
                    self._set_client(None)
                    await client.disconnect()
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.next())


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
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


def _trusted_keys(config: Config) -> dict[str, Ed25519PublicKey]:
    """The public keys of ``audit.trusted_keys`` (read once, at start: restart the engine
    after adding or removing a key); EngineError when they cannot be read."""
    try:
        return load_trusted_keys(config.audit.trusted_keys)
    except SignatureError as exc:
        raise EngineError(f"cannot start: {exc}") from exc
