"""The asyncio engine: the I/O shell around the pure Sparkplug host sessions.

The broker connections, each in its own named task:

    uns-connection[-N]  the Sparkplug host session on each broker of ``broker.urls`` (clean
                    session, client id ``uns-<host_id>``): :class:`~uns.engine.links.BrokerLink`,
                    with one task group of named tasks per connection:
        uns-receive   MQTT messages -> dispatch -> sessions -> enrich -> sinks
        uns-timer     reorder timeouts (SessionManager.tick)
        uns-status    the retained status document on <prefix>/_engine/<host_id>/status
    uns-context     context events (``<prefix>/_context/#``) on a persistent session
                    (client id ``uns-<host_id>-context``) on the home (first) broker, each
                    acknowledged only once durable in the lake: :mod:`uns.engine.context_intake`

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
bad credentials, not authorized, a certificate that does not verify, a broker that
answers plain MQTT with TLS; in MQTT 5 also a SUBSCRIBE refused as not authorized)
ends :meth:`Engine.run` at once with an :class:`~uns.errors.EngineError`, at
start-up and after a reconnect alike.  A plain connection closed before CONNACK
:data:`~uns.engine.links.CLOSED_EARLY_ATTEMPTS` times in a row before the first one
got through (``broker.connect_retries`` when set) ends it too, saying that the port
likely speaks TLS: mosquitto resets plain MQTT on a TLS port.

A message of :data:`~uns.engine.slicing.SLICED_BYTES` or more is processed in slices,
the event loop running between them (:mod:`uns.engine.slicing`).

Conformance: as primary host without ``engine.groups`` the engine subscribes the
literal ``spBv1.0/#`` plus its own STATE topic, as the Sparkplug TCK's session
test requires; with groups it subscribes per group and says once, at start,
that this fails that test (docs/sparkplug.md, "Conformance").

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

from uns.clock import now_ms
from uns.config import Config
from uns.core.context import ContextStore
from uns.core.enrich import Enricher
from uns.core.events import Batch, RebirthRequest, Sink
from uns.core.model import PlantModel
from uns.engine.context_intake import ContextIntake
from uns.engine.dispatch import Decision, Dispatcher
from uns.engine.keys import signing_key, trusted_keys
from uns.engine.links import BrokerLink, cancel_all, mark_connected
from uns.engine.slicing import SLICED_BYTES, SlicedIntake
from uns.engine.status import Counters
from uns.engine.transport import Message, Publish, Transport, TransportFactory
from uns.errors import EngineError, LakeBackpressure, LakeError
from uns.logs import RateLimitedLog
from uns.mqtt.client import FastClient, Will
from uns.mqtt.settings import BrokerSettings
from uns.sparkplug import native
from uns.sparkplug.ncmd import rebirth_payload
from uns.sparkplug.session import SessionManager
from uns.sparkplug.topic import group_list, namespace_filters

__all__ = ["Engine"]

log = logging.getLogger("uns.engine")


class Engine(SlicedIntake):
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
            trusted_keys=trusted_keys(config),
            ack_key=signing_key(config),
        )
        self._transport = transport
        # The home broker's connection state, in one field: the transport of its live session
        # (subscribed, STATE birth sent), None otherwise.  Only _set_client changes it.
        self._client: Transport | None = None
        #: the dispatcher (so: the broker) of each live transport, by id(transport)
        self._dispatchers: dict[int, Dispatcher] = {}
        #: set while a session is live (follows ``_client``): what callers wait on
        self.connected = asyncio.Event()
        #: set while :meth:`run` runs with its sinks open (what readiness waits for)
        self.running = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._rlog = RateLimitedLog(log)
        self._started = time.monotonic()
        #: the context connection (a persistent session: context is never lost)
        self.context_intake = ContextIntake(self)
        #: the batch records' connection (the same pattern: a persistent session of its own)
        self.records_intake = ContextIntake(self, kind="records")
        self.stopping = None  # a stop in progress: its deadlines (uns.engine.delivery)
        self.unpersisted = 0
        self.gave_up = False
        self._leftover = None
        #: one Sparkplug host session per broker (``broker.urls``); the first is the home broker
        self.links = [BrokerLink(self, i, s) for i, s in enumerate(config.broker.all_settings())]
        if config.engine.primary and self.groups:
            log.warning(
                "engine.groups is set: the host subscribes %s, not spBv1.0/#; the Sparkplug TCK's "
                "session-establishment test requires spBv1.0/# (leave engine.groups empty to pass it)",
                ", ".join(self.namespace_filters),
            )

    def _set_client(self, client: Transport | None) -> None:
        self._client = client
        mark_connected(self.connected, client)

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

    def new_transport(self, settings: BrokerSettings, *, identifier: str, will: Will | None) -> Transport:
        """A clean-session transport with ``will`` (a Sparkplug host session)."""
        return self._transport(settings, identifier=identifier, will=will)

    def bind_transport(self, client: Transport, dispatch: Dispatcher) -> None:
        """Messages from ``client`` go through ``dispatch`` (its broker's sessions)."""
        self._dispatchers[id(client)] = dispatch

    def forget_transport(self, client: Transport) -> None:
        self._dispatchers.pop(id(client), None)

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
        """Messages received and not processed yet, on every broker (0 without a live session)."""
        return sum(link.client.pending for link in self.links if link.client is not None)

    def node_counts(self) -> tuple[int, int]:
        """(online, known) edge nodes over every broker."""
        counts = [link.sessions.node_counts() for link in self.links]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    def population(self) -> tuple[int, int, int]:
        """(devices online, devices known, born metrics) over every broker."""
        counts = [link.sessions.population() for link in self.links]
        return sum(c[0] for c in counts), sum(c[1] for c in counts), sum(c[2] for c in counts)

    def born(self, group_id: str, edge_node_id: str, device_id: str | None = None) -> dict[str, Any] | None:
        """The last birth of a node or device as the sessions hold it (on whichever broker
        knows it online, else the first that knows it), for ``uns cmd``; None when unknown."""
        found = None
        for link in self.links:
            node = link.sessions.node(group_id, edge_node_id)
            if node is None:
                continue
            owner: Any = node
            if device_id is not None:
                owner = next((d for d in node.devices if d.device_id == device_id), None)
                if owner is None:
                    continue
            doc = {
                "group_id": group_id,
                "edge_node_id": edge_node_id,
                "device_id": device_id,
                "online": owner.online,
                "birth_ts": owner.birth_ts,
                "broker": link.where,
                "metrics": [
                    {"name": m.name, "alias": m.alias, "datatype": m.datatype.name} for m in owner.metrics
                ],
            }
            if owner.online:
                return doc
            found = found or doc
        return found

    def session_stats(self) -> dict[str, int]:
        """The sessions' counters, summed over every broker."""
        total: dict[str, int] = {}
        for link in self.links:
            for key, value in link.sessions.stats().items():
                total[key] = total.get(key, 0) + value
        return total

    def status(self, *, online: bool = True) -> dict[str, Any]:
        """The status document (retained on ``<prefix>/_engine/<host_id>/status``)."""
        nodes_online, nodes_known = self.node_counts()
        devices_online, devices_known, _born = self.population()
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
            "devices_online": devices_online,
            "devices_known": devices_known,
            "brokers": [link.status() for link in self.links],
            "sinks": {s.name: s.stats() for s in self.sinks},
            "context_intake": self.context_intake.stats(),
            "records_intake": self.records_intake.stats(),
        }

    async def publish_status(self, client: Transport, *, online: bool = True) -> None:
        """The retained status document.  Periodic ones go at QoS 0: a QoS 1 PUBACK can
        queue behind a backlog of incoming messages and time the connection out."""
        body = json.dumps(self.status(online=online), separators=(",", ":")).encode()
        await client.publish(self.status_topic, body, qos=0 if online else 1, retain=True)

    # ------------------------------------------------------------------ the hot path
    #: messages processed per turn of the receive task
    CHUNK = 1024

    async def _handle_messages(self, client: Transport, messages: list[Message]) -> None:
        """The hot path: no await unless a sink pushes back.  Each broker's messages go
        through that broker's dispatcher (its sessions)."""
        dispatch = self._dispatchers.get(id(client), self.dispatch)
        if dispatch.lane:
            await self._handle_lane(client, messages, dispatch)
            return
        process = dispatch.process
        clock = time.time_ns
        for position, (topic, payload, _qos, _retain) in enumerate(messages):
            if len(payload) >= SLICED_BYTES:  # seconds of work: in slices, the loop runs between
                received_at = clock() // 1_000_000
                message = (topic, payload, received_at)
                if not await self._handle_large(client, dispatch, message, messages, position):
                    return
                continue
            batch, rebirths, publishes = process(topic, payload, clock() // 1_000_000)
            if batch and not await self._to_sinks(batch, messages, position):
                return
            if rebirths or publishes:
                self.act(client, rebirths, publishes)

    async def _handle_lane(self, client: Transport, messages: list[Message], dispatch: Dispatcher) -> None:
        """:meth:`_handle_messages` with the native lane: runs of ordinary DATA in one C call
        (:meth:`Dispatcher.process_many`), every other message by :meth:`Dispatcher.process`."""
        process, many = dispatch.process, dispatch.process_many
        position, end = 0, len(messages)
        while position < end:
            now = time.time_ns() // 1_000_000
            after, lane = many(messages, position, now, below=SLICED_BYTES)
            if lane is not None:
                if not await self._to_sinks(lane, messages, after - 1, after - position):
                    return
                position = after
                if position == end:
                    break
            topic, payload, _qos, _retain = messages[position]
            position += 1
            if len(payload) >= SLICED_BYTES:  # as in _handle_messages (the lane stops before these)
                if not await self._handle_large(
                    client, dispatch, (topic, payload, now), messages, position - 1
                ):
                    return
                continue
            batch, rebirths, publishes = process(topic, payload, now)
            if batch and not await self._to_sinks(batch, messages, position - 1):
                return
            if rebirths or publishes:
                self.act(client, rebirths, publishes)

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

    async def flush_sinks(self) -> None:
        """Flush every sink within the stop's deadline (a failure is logged, the sink's own
        exit says it once more)."""
        for sink in self.sinks:
            try:
                async with asyncio.timeout(self._stop_left(3600.0)):
                    await sink.flush()
            except (LakeError, TimeoutError) as exc:
                log.warning("sink %s could not flush at the stop: %s", sink.name, exc or "stop deadline")

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
            for link in self.links:
                link.sessions.columnar = columnar
            log.info("%s%s", native.STATUS, "; samples go to the lake in columns" if columnar else "")
            self.running.set()
            stack.callback(self.running.clear)
            await self._run_connections(stop)
            stopped = {"counters": self.counters.as_dict(), "sinks": {s.name: s.stats() for s in self.sinks}}
            log.info("engine stopped: %s", json.dumps(stopped))

    async def _run_connections(self, stop: asyncio.Event) -> None:
        """The Sparkplug connection of each broker and the context connection, each in its
        named task.  When one ends with an error the others are stopped in order (drained,
        flushed, acknowledged) and the error is raised."""
        halt = asyncio.Event()  # stop, or one of them failed
        tasks = [
            asyncio.create_task(link.run(halt), name=f"uns-connection{link._suffix}") for link in self.links
        ]
        tasks.append(asyncio.create_task(self.context_intake.run(halt), name="uns-context"))
        tasks.append(asyncio.create_task(self.records_intake.run(halt), name="uns-records"))
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
            await cancel_all([*tasks, stopper])
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error
