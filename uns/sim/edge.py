"""One simulated Sparkplug B edge node on its own MQTT connection (the I/O shell).

The messages and their order come from :class:`uns.sim.node.SparkplugNode`;
this class puts them on a :class:`uns.mqtt.client.FastClient` connection and
behaves like a field edge node (docs/sparkplug.md sections 2, 3 and 6):

- one connection per session, clean session, the NDEATH (QoS 1, not
  retained) registered as the Will; a clean :meth:`EdgeNode.stop` publishes
  the NDEATH, then DISCONNECTs; :meth:`EdgeNode.kill` drops the socket
  without DISCONNECT, so the broker publishes the Will;
- answers NCMD ``Node Control/Rebirth`` by republishing its births (same bdSeq);
- with a primary host id it follows ``spBv1.0/STATE/<id>``: births wait for the
  host, and DATA made while the host is away (or the broker is unreachable) is
  stored and sent later with ``is_historical`` set.  Unlike a strict Sparkplug
  node it keeps its session while the host is away, which is simpler and shows a
  host the same data;
- fault hooks (``skip_seq``, ``swap_next_two``, ...; :mod:`uns.sim.faults`)
  misbehave on purpose, at the moment a test calls them, the way field devices do.

QoS 0 messages of one call are queued in the client and written together
with the last one, which waits while the socket is full: a slow broker slows
the node down instead of its memory growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from uns.clock import now_ms
from uns.errors import BrokerError, SparkplugDecodeError, SparkplugStateError
from uns.mqtt.client import FastClient, Will
from uns.mqtt.settings import BrokerSettings
from uns.sim.batch import ContextEvent
from uns.sim.faults import GARBAGE, FaultHooks
from uns.sim.node import BDSEQ_METRIC, NAMESPACE, SparkplugNode
from uns.sim.plant import NodeModel, UnitModel
from uns.sim.sentlog import SentLog
from uns.sparkplug.codec import decode_payload
from uns.sparkplug.ncmd import REBIRTH_METRIC
from uns.sparkplug.state import parse_state

__all__ = ["BDSEQ_METRIC", "GARBAGE", "REBIRTH_METRIC", "EdgeNode", "broker_settings", "now_ms"]


def broker_settings(
    broker: BrokerSettings | None, host: str | None = None, port: int | None = None
) -> BrokerSettings:
    """``broker`` (credentials, TLS, keepalive; default a plain local broker) with
    ``host``/``port`` in place of its own when given."""
    settings = broker or BrokerSettings()
    if host is not None:
        settings = dataclasses.replace(settings, host=host)
    if port is not None:
        settings = dataclasses.replace(settings, port=port)
    return settings


class EdgeNode(SparkplugNode, FaultHooks):
    """A Sparkplug B edge node with its devices, driven by :meth:`publish_data`.

    Use as an async context manager (``start`` on entry, clean ``stop`` on exit
    unless :meth:`kill` was called).  Connection errors are
    :class:`~uns.errors.BrokerError` (:class:`~uns.errors.BrokerRefused` when
    the broker will not take this node however often it tries)."""

    def __init__(
        self,
        model: NodeModel,
        *,
        group_id: str,
        host: str | None = None,
        port: int | None = None,
        broker: BrokerSettings | None = None,
        report_by_exception: bool = True,
        step_seconds: float = 1.0,
        primary_host_id: str | None = None,
        bd_seq: int = 0,
        sent_log: SentLog | None = None,
        on_context: Callable[[ContextEvent], None] | None = None,
        client_id: str | None = None,
        store_limit: int = 10_000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        super().__init__(
            model,
            group_id=group_id,
            report_by_exception=report_by_exception,
            step_seconds=step_seconds,
            bd_seq=bd_seq,
            sent_log=sent_log,
            on_context=on_context,
            store_limit=store_limit,
            clock=clock,
        )
        #: where and how to connect (host/port given here win over ``broker``'s)
        self.broker = broker_settings(broker, host, port)
        self.primary_host_id = primary_host_id
        self.client_id = client_id or f"sim-{group_id}-{self.node_id}"
        self._born = asyncio.Event()
        self.host_online = primary_host_id is None
        self._host_timestamp: int | None = None
        self._client: FastClient | None = None
        self._listener: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one of births, DATA, death or fault at a time: keeps seq order

    @property
    def connected(self) -> bool:
        """Whether the MQTT session is up."""
        return self._client is not None and self._client.connected

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, *, dbirth_first: bool = False) -> None:
        """Connect (a new bdSeq), subscribe to commands, publish the births.

        With a primary host the births wait until its STATE says online.
        ``dbirth_first`` puts one DBIRTH before the NBIRTH (a fault seen in the field)."""
        if self._client is not None:
            await self._drop_client()
        self._born.clear()
        bd_seq, ndeath = self._next_session()
        will = Will(self.topic("NDEATH"), ndeath, qos=1, retain=False)
        client = FastClient(self.broker, identifier=self.client_id, will=will, clean_session=True)
        try:
            await client.connect()
            self._session_started(bd_seq, ndeath)
            self._client = client
            await client.subscribe(self.topic("NCMD"), qos=1)
            await client.subscribe(self.topic("DCMD", "+"), qos=1)
            if self.primary_host_id is not None:
                self.host_online = False
                await client.subscribe(f"{NAMESPACE}/STATE/{self.primary_host_id}", qos=1)
        except BaseException:
            self._client = client
            await self._drop_client()
            raise
        self._listener = asyncio.create_task(self._listen(client), name=f"sim-edge-{self.node_id}-commands")
        self._emit_initial_context()
        if self.host_online:
            async with self._lock:
                await self._publish_births(dbirth_first=dbirth_first)
                await self._flush_store()

    async def stop(self) -> None:
        """Clean shutdown: publish the NDEATH (the Will's payload), then DISCONNECT."""
        if self._client is None:
            return
        if self.connected:
            async with self._lock:
                with contextlib.suppress(BrokerError):
                    await self._send([(self.topic("NDEATH"), self._ndeath)], qos=1)
                    self.log.counts.deaths += 1
                self._born.clear()
        await self._drop_client()

    async def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT, so the broker publishes the Will."""
        client = self._client
        if client is None:
            return
        client.abort()
        if self._listener is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._listener), timeout=5)
        self._born.clear()
        await self._drop_client()

    async def _drop_client(self) -> None:
        client, listener = self._client, self._listener
        self._client, self._listener = None, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        if client is not None:
            await client.disconnect()

    @property
    def born(self) -> bool:
        """Whether the births of the current session are out (DATA may flow)."""
        return self._born.is_set()

    async def wait_born(self) -> None:
        """Wait until the births are out (useful with a primary host); wrap in a timeout."""
        await self._born.wait()

    # ---------------------------------------------------------------- incoming

    async def _listen(self, client: FastClient) -> None:
        with contextlib.suppress(BrokerError):  # the connection ended; stop/kill/the runner decide
            while True:
                await client.wait_messages()
                for topic, payload, _qos, _retain in client.take():
                    await self._on_message(topic, payload)

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.topic("NCMD"):
            try:
                metrics = decode_payload(payload).metrics
            except SparkplugDecodeError:
                return
            if any(m.name == REBIRTH_METRIC and m.value is True for m in metrics):
                await self.rebirth()
                self.log.counts.rebirths_answered += 1
        elif self.primary_host_id is not None and topic == f"{NAMESPACE}/STATE/{self.primary_host_id}":
            try:
                state = parse_state(payload)
            except SparkplugStateError:
                return
            last = self._host_timestamp
            # an older session's STATE (a late Will, a stale retained message) changes nothing
            if last is not None and state.timestamp is not None and state.timestamp < last:
                return
            self._host_timestamp = state.timestamp
            was_online, self.host_online = self.host_online, state.online
            if state.online and not was_online:
                # a host that was away may have lost our aliases: birth again, then the stored DATA
                async with self._lock:
                    await self._publish_births(dbirth_first=False)
                    await self._flush_store()
        # DCMD: the simulated devices have no writable metrics; commands are ignored

    # ---------------------------------------------------------------- outgoing

    async def _publish_births(self, *, dbirth_first: bool) -> None:
        """NBIRTH and DBIRTHs, then DATA may flow; the caller holds the lock."""
        await self._send(self._births(dbirth_first=dbirth_first))
        self._born.set()

    async def rebirth(self, *, dbirth_first: bool = False) -> None:
        """Stop DATA, republish NBIRTH (same bdSeq, seq from 0) and all DBIRTHs, resume."""
        async with self._lock:
            await self._publish_births(dbirth_first=dbirth_first)

    async def device_death(self, device_id: str) -> None:
        """Publish a DDEATH (in the seq stream); the device sends nothing until :meth:`device_birth`."""
        async with self._lock:
            await self._send([self._device_dead(device_id)])

    async def device_birth(self, device_id: str) -> None:
        """Bring a dead device back with a new DBIRTH."""
        async with self._lock:
            await self._send([self._device_reborn(device_id)])

    async def publish_data(self, units: Sequence[UnitModel] | None = None) -> int:
        """Step each unit once (``step_seconds`` of simulated time) and send its DATA.

        ``units`` defaults to every unit of the node.  Returns the number of DATA
        messages published (stored ones not included)."""
        chosen = self.model.units() if units is None else units
        async with self._lock:
            messages = self._step(chosen, sending=self.born and self.host_online and self.connected)
            if messages:
                await self._send(messages)
            return len(messages)

    async def _flush_store(self) -> None:
        """Send stored DATA as historical; the caller holds the lock."""
        if self._store:
            await self._send(self._stored_messages())

    async def _send(self, messages: Sequence[tuple[str, bytes]], *, qos: int = 0) -> None:
        """Publish in order; return once the last message is written (QoS 0) or acknowledged.

        BrokerError when not connected or lost meanwhile."""
        client = self._client
        if client is None or not client.connected:
            raise BrokerError(f"edge node {self.node_id} is not connected")
        if not messages:
            return
        self.log.counts.messages += len(messages)
        if qos:
            for topic, payload in messages:
                await client.publish(topic, payload, qos=qos)
            return
        *head, (last_topic, last_payload) = messages
        for topic, payload in head:
            if not client.publish_nowait(topic, payload):
                # the write buffer is full (or the connection just went): wait for the
                # socket, in order, or raise BrokerError
                await client.publish(topic, payload)
        # written now, with all queued before it, and waiting while the socket is full: what
        # the sent log counts has left the process, even if kill() follows at once
        await client.publish(last_topic, last_payload)
