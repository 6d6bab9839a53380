"""The asyncio engine: the I/O shell around the pure Sparkplug host sessions.

One task group of named tasks per broker connection::

    uns-receive   MQTT messages -> dispatch -> sessions -> enrich -> sinks
    uns-timer     reorder timeouts (SessionManager.tick)
    uns-status    the retained status document on <prefix>/_engine/<host_id>/status

The connection is :class:`uns.mqtt.client.FastClient`, which parses every packet
of a socket read in one go; the receive task takes them as a list and
processes them without an event-loop round per message.

The receive path never waits on a sink, except when a sink says it is full
(``LakeBackpressure``): then processing pauses for ``retry_after`` while new
messages wait in the client's buffer (documented policy; counted as
``backpressure_waits``, the buffer depth is ``receive_queue`` in the status).
Once that buffer reaches its high-water mark the client stops reading the
socket, so the broker queues instead of the engine's memory growing.
Shutdown order: stop intake, drain what was already received, flush the
sinks, publish STATE offline (primary host), disconnect.
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
from uns.core.events import Batch, RebirthRequest, Rejected, SessionEventKind, Sink
from uns.core.model import PlantModel
from uns.engine.status import Counters
from uns.errors import (
    BrokerError,
    ContextError,
    EngineError,
    LakeBackpressure,
    UnsError,
)
from uns.logs import RateLimitedLog
from uns.mqtt.client import FastClient, Message, Will
from uns.mqtt.settings import Backoff
from uns.sparkplug.ncmd import rebirth_payload
from uns.sparkplug.session import SessionConfig, SessionManager
from uns.sparkplug.state import format_state, parse_state
from uns.sparkplug.topic import MessageType, Topic, parse_topic

__all__ = ["Engine"]

log = logging.getLogger("uns.engine")


class Engine:
    """A Sparkplug B host application feeding sinks.  Use :meth:`run`."""

    def __init__(
        self,
        config: Config,
        *,
        sinks: Sequence[Sink] = (),
        model: PlantModel | None = None,
    ) -> None:
        self.config = config
        sp = config.sparkplug
        self.sessions = SessionManager(
            SessionConfig(
                reorder_timeout_ms=sp.reorder_timeout_ms,
                rebirth_on_error=sp.rebirth_requests,
                rebirth_min_interval_ms=sp.rebirth_min_interval_ms,
            )
        )
        self.context = ContextStore(window_ms=int(config.context.window_hours * 3_600_000))
        self.model = model or PlantModel.empty()
        self.prefix = config.engine.prefix
        self.enricher = Enricher(self.model, self.context)
        self.sinks: list[Sink] = list(sinks)
        self.counters = Counters()
        self.host_id = config.engine.host_id
        self.state_topic = f"spBv1.0/STATE/{self.host_id}"
        self.status_topic = f"{self.prefix}/_engine/{self.host_id}/status"
        self._context_prefix = f"{self.prefix}/_context/"
        self._topics: dict[str, Topic | None] = {}
        self._client: FastClient | None = None
        self._state_ts: int | None = None  # T of the current connection's Will and online STATE
        self._pending: list[tuple[str, bytes, int, bool]] = []  # publishes decided by process()
        self._background: set[asyncio.Task[None]] = set()
        self._rlog = RateLimitedLog(log)
        self._started = time.monotonic()
        self.connected = asyncio.Event()
        self.ever_connected = False

    # ------------------------------------------------------------------ pure-ish dispatch
    def process(self, topic: str, payload: bytes, received_at: int) -> tuple[Batch, list[RebirthRequest]]:
        """Handle one received message; never raises for bad input."""
        self.counters.messages += 1
        if topic.startswith(self._context_prefix):
            return self._process_context(topic, payload, received_at), []
        parsed = self._topics.get(topic, False)
        if parsed is False:
            try:
                parsed = parse_topic(topic)
            except UnsError:
                parsed = None
            if len(self._topics) < 100_000:
                self._topics[topic] = parsed
        if parsed is None:
            return self._reject(topic, payload, received_at, "not a Sparkplug B topic"), []
        assert isinstance(parsed, Topic)
        mtype = parsed.message_type
        if mtype is MessageType.STATE:
            self._process_state(parsed, payload, received_at)
            return Batch(), []
        if mtype is MessageType.NCMD or mtype is MessageType.DCMD:
            self.counters.commands_ignored += 1
            return Batch(), []
        self.counters.sparkplug_messages += 1
        outcome, bad_metrics = self.sessions.handle_raw(
            parsed, payload, received_at, max_decompressed_bytes=self.config.sparkplug.max_decompressed_bytes
        )
        if outcome.undecodable is not None:
            self._rlog.warning(
                f"decode:{parsed.node_key}", "undecodable payload on %s: %s", topic, outcome.undecodable
            )
        for _index, reason in bad_metrics:
            outcome.batch.rejected.append(Rejected(received_at, topic, payload, f"undecodable: {reason}"))
        batch = outcome.batch
        self._account(batch, outcome.rebirths)
        return batch, outcome.rebirths

    def _account(self, batch: Batch, rebirths: list[RebirthRequest]) -> None:
        if batch.samples or batch.catalog:
            self.enricher.enrich(batch)
        self.counters.metrics += len(batch.samples)
        self.counters.context_changes += len(batch.context)
        if batch.rejected:
            self.counters.rejected += len(batch.rejected)
        for ev in batch.sessions:
            if ev.event == SessionEventKind.SEQ_GAP:
                self.counters.seq_gaps += 1
        self.counters.rebirths_requested += len(rebirths)

    def _reject(self, topic: str, payload: bytes, received_at: int, reason: str) -> Batch:
        self.counters.rejected += 1
        self._rlog.warning(f"reject:{topic}", "rejected message on %s: %s", topic, reason)
        return Batch(rejected=[Rejected(received_at, topic, payload, reason)])

    def _process_context(self, topic: str, payload: bytes, received_at: int) -> Batch:
        self.counters.context_events += 1
        path = topic[len(self._context_prefix) :]
        try:
            event = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._reject(topic, payload, received_at, f"context event is not valid JSON: {exc}")
        if not isinstance(event, dict):
            return self._reject(topic, payload, received_at, "context event must be a JSON object")
        try:
            changes = self.context.apply_event(path, event, received_at)
        except ContextError as exc:
            return self._reject(topic, payload, received_at, exc.reason)
        self.counters.context_changes += len(changes)
        return Batch(context=changes)

    def _process_state(self, topic: Topic, payload: bytes, received_at: int) -> None:
        self.counters.host_states_seen += 1
        try:
            state = parse_state(payload)
        except UnsError as exc:
            self._rlog.warning(f"state:{topic}", "bad STATE on %s: %s", topic, exc)
            return
        if (
            topic.host_id == self.host_id
            and not topic.legacy
            and self.config.engine.primary
            and not state.online
            and self._state_ts is not None
        ):
            # Someone (or our old Will) says we are offline while we are connected: re-assert.
            self._pending.append((self.state_topic, format_state(True, self._state_ts), 1, True))

    # ------------------------------------------------------------------ sinks
    async def _deliver(self, batch: Batch) -> None:
        if batch:
            for index, sink in enumerate(self.sinks):
                try:
                    sink.add(batch)
                except LakeBackpressure as exc:
                    await self._deliver_after_backpressure(batch, index, exc)
                    return

    async def _deliver_after_backpressure(self, batch: Batch, index: int, exc: LakeBackpressure) -> None:
        """Sink ``index`` is full: wait as it asks, retry it, then hand the batch to the rest."""
        sink = self.sinks[index]
        while True:
            self.counters.backpressure_waits += 1
            self._rlog.warning(f"bp:{sink.name}", "sink %s is full, pausing intake: %s", sink.name, exc)
            await asyncio.sleep(exc.retry_after)
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
                    await asyncio.sleep(again.retry_after)

    def _act(self, rebirths: list[RebirthRequest]) -> None:
        """Send what processing decided: rebirth requests (QoS 0, straight to the socket
        buffer) and STATE re-assertions (QoS 1, in the background: a PUBACK may queue
        behind a backlog of received messages and must never stall the receive path)."""
        client = self._client
        pending, self._pending = self._pending, []
        if client is None:
            return
        for topic, payload, qos, retain in pending:
            self._spawn(client.publish(topic, payload, qos=qos, retain=retain), f"publish {topic}")
        for req in rebirths:
            log.info("requesting rebirth of %s/%s: %s", req.group_id, req.edge_node_id, req.reason)
            client.publish_nowait(
                f"spBv1.0/{req.group_id}/NCMD/{req.edge_node_id}", self.rebirth_payload(), qos=0, retain=False
            )

    @staticmethod
    def rebirth_payload() -> bytes:
        """NCMD Node Control/Rebirth=true, stamped now."""
        return rebirth_payload(now_ms())

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish through the current connection (used by the republish sink)."""
        client = self._client
        if client is None:
            raise EngineError("not connected to the broker")
        await client.publish(topic, payload, qos=qos, retain=retain)

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bool:
        """Hand a message to the connection's socket buffer without waiting; False when
        not connected (the caller queues or counts it)."""
        client = self._client
        return client is not None and client.publish_nowait(topic, payload, qos, retain)

    # ------------------------------------------------------------------ status
    def status(self, *, online: bool = True) -> dict[str, Any]:
        nodes_online, nodes_known = self.sessions.node_counts()
        return {
            "host_id": self.host_id,
            "online": online,
            "ts": now_ms(),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "connected": self._client is not None,
            "receive_queue": self._client.pending if self._client is not None else 0,
            "counters": self.counters.as_dict(),
            "nodes_online": nodes_online,
            "nodes_known": nodes_known,
            "sinks": {s.name: s.stats() for s in self.sinks},
        }

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Run a publish in the background; a failure is logged, never fatal to the session."""
        task = asyncio.create_task(coro, name=f"uns-{what}")
        self._background.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._background.discard(t)
            if not t.cancelled() and (exc := t.exception()) is not None:
                self._rlog.warning(f"bg:{what}", "%s failed: %s", what, exc)

        task.add_done_callback(done)

    async def _publish_status(self, *, online: bool = True) -> None:
        """The retained status document.  Periodic ones go at QoS 0: a QoS 1 PUBACK can
        queue behind a backlog of incoming messages and time the connection out."""
        if self._client is not None:
            body = json.dumps(self.status(online=online), separators=(",", ":")).encode()
            await self._client.publish(self.status_topic, body, qos=0 if online else 1, retain=True)

    # ------------------------------------------------------------------ loops
    async def _receive(self, client: FastClient) -> None:
        """Take every message the client has parsed since the last wake-up and process
        them in one go: one event-loop round per socket read, not per message."""
        while True:
            await client.wait_messages()
            await self._handle_messages(client.take(self.CHUNK))
            if client.pending:
                await asyncio.sleep(0)  # let the timer, status and sink tasks have their turn

    #: messages processed per turn of the receive task
    CHUNK = 1024

    async def _handle_messages(self, messages: list[Message]) -> None:
        sinks = self.sinks
        for topic, payload, _qos, _retain in messages:
            batch, rebirths = self.process(topic, payload, time.time_ns() // 1_000_000)
            if batch:
                for index, sink in enumerate(sinks):
                    try:
                        sink.add(batch)
                    except LakeBackpressure as exc:
                        await self._deliver_after_backpressure(batch, index, exc)
                        break
            if rebirths or self._pending:
                self._act(rebirths)

    async def _timer(self) -> None:
        while True:
            deadline = self.sessions.next_deadline()
            now = now_ms()
            delay = 0.25 if deadline is None else max(0.0, min(0.25, (deadline - now) / 1000))
            await asyncio.sleep(delay)
            outcome = self.sessions.tick(now_ms())
            if outcome.batch or outcome.rebirths:
                self._account(outcome.batch, outcome.rebirths)
                await self._deliver(outcome.batch)
                self._act(outcome.rebirths)

    async def _status_loop(self) -> None:
        while True:
            try:
                await self._publish_status()
            except BrokerError as exc:  # a lost connection is noticed by the receive loop
                self._rlog.warning("status", "status publish failed: %s", exc)
            await asyncio.sleep(self.config.engine.status_interval)

    async def _session(self, client: FastClient, stop: asyncio.Event) -> None:
        """One broker connection: subscribe, STATE online, loops until stop or error."""
        # Sparkplug: subscribe to the namespace and our own STATE before any publish.
        await client.subscribe("spBv1.0/#", qos=0)
        await client.subscribe(self.state_topic, qos=1)
        await client.subscribe(f"{self._context_prefix}#", qos=1)
        if self.config.engine.primary and self._state_ts is not None:
            await client.publish(self.state_topic, format_state(True, self._state_ts), qos=1, retain=True)
        if self.ever_connected:
            self.counters.reconnects += 1
            if self.config.engine.on_reconnect == "rebirth":
                self._act(
                    [
                        RebirthRequest(n.group_id, n.edge_node_id, "host reconnected")
                        for n in self.sessions.nodes()
                    ]
                )
        self.ever_connected = True
        self.connected.set()
        log.info("connected to %s as host %s", self.config.broker.settings().masked_url(), self.host_id)
        tasks = [
            asyncio.create_task(self._receive(client), name="uns-receive"),
            asyncio.create_task(self._timer(), name="uns-timer"),
            asyncio.create_task(self._status_loop(), name="uns-status"),
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

    async def _drain(self, client: FastClient) -> None:
        """Stop intake, process what was already received, flush sinks, STATE offline."""
        with contextlib.suppress(BrokerError):
            await client.unsubscribe("spBv1.0/#")
            await client.unsubscribe(f"{self._context_prefix}#")
        drained = 0
        while messages := client.take(self.CHUNK):
            await self._handle_messages(messages)
            drained += len(messages)
        if drained:
            log.info("drained %d messages received before stop", drained)
        for sink in self.sinks:
            await sink.flush()
        with contextlib.suppress(BrokerError):
            await self._publish_status(online=False)
            if self.config.engine.primary and self._state_ts is not None:
                await client.publish(self.state_topic, format_state(False, now_ms()), qos=1, retain=True)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect (and reconnect) until ``stop`` is set; then shut down in order."""
        stop = stop or asyncio.Event()
        cfg = self.config.broker
        broker = cfg.settings()
        backoff = Backoff(cfg.reconnect_min, cfg.reconnect_max)
        failures = 0
        async with contextlib.AsyncExitStack() as stack:
            for sink in self.sinks:
                await stack.enter_async_context(sink)
            while not stop.is_set():
                self._state_ts = now_ms()
                will = None
                if self.config.engine.primary:
                    will = Will(self.state_topic, format_state(False, self._state_ts), qos=1, retain=True)
                client = FastClient(broker, identifier=f"uns-{self.host_id}", will=will)
                try:
                    await client.connect()
                    self._client = client
                    failures = 0
                    backoff.reset()
                    await self._session(client, stop)
                except BrokerError as exc:
                    failures += 1
                    was = self._client is not None
                    self._client = None
                    self.connected.clear()
                    if was:
                        log.warning("lost the broker: %s", exc)
                        # whatever arrived before the loss is processed, not dropped
                        while messages := client.take(self.CHUNK):
                            await self._handle_messages(messages)
                        outcome = self.sessions.disconnected(now_ms())
                        self._account(outcome.batch, [])
                        await self._deliver(outcome.batch)
                    elif not self.ever_connected and 0 <= cfg.connect_retries < failures:
                        where = broker.masked_url()
                        raise EngineError(
                            f"cannot reach the broker at {where} after {failures} attempts: {exc}"
                        ) from exc
                    else:
                        self._rlog.warning("connect", "cannot connect to %s: %s", broker.masked_url(), exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff.next())
                finally:
                    self._client = None
                    self.connected.clear()
                    await client.disconnect()
            log.info("engine stopped: %s", json.dumps(self.counters.as_dict()))


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel and await tasks, cancelling again while any survives: Python 3.11's
    ``wait_for`` (inside aiomqtt's publish) can swallow a cancellation that races
    its completion, and a loop that swallowed one would otherwise run on forever."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for task in tasks:  # retrieve results so nothing is logged as never retrieved
        if not task.cancelled():
            task.exception()
