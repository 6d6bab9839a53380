"""One simulated Sparkplug B edge node on its own MQTT connection (the I/O shell).

It behaves like a field edge node (SPARKPLUG.md sections 2, 3 and 6):

- one aiomqtt connection, clean session; bdSeq +1 per connection (0..255),
  carried in the NBIRTH and in the NDEATH registered as the Will (QoS 1, not
  retained, no seq);
- NBIRTH (seq 0) with every node metric, ``bdSeq`` and ``Node Control/Rebirth``,
  then a DBIRTH per device; aliases node-wide; seq +1 mod 256 on every DBIRTH,
  NDATA, DDATA and DDEATH;
- DATA alias-only and without datatype, metric timestamps set; only changed
  values (report by exception) or every value per message;
- answers NCMD ``Node Control/Rebirth`` by republishing its births (same bdSeq);
- with a primary host id it follows ``spBv1.0/STATE/<id>``: births wait for the
  host, and DATA made while the host is away (or the broker is unreachable) is
  stored and sent later with ``is_historical`` set.  Unlike a strict Sparkplug
  node it keeps its session while the host is away, which is simpler and shows a
  host the same data;
- fault hooks (``skip_seq``, ``swap_next_two``, ...; :mod:`uns.sim.faults`)
  misbehave on purpose, at the moment a test calls them, the way field devices do.

DATA values travel as their raw wire form, as field nodes send them: signed
integers masked to their width (Int16 -3 as 65533), arrays packed into bytes,
Floats in ``double_value`` (the value is float32-exact, so a host reading it
with the BIRTH's datatype gets the same number).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiomqtt
import paho.mqtt.client as mqtt

from uns.clock import now_ms
from uns.errors import SparkplugDecodeError, SparkplugStateError
from uns.sim.batch import ContextEvent, ContextUpdate
from uns.sim.faults import GARBAGE, FaultHooks
from uns.sim.plant import MetricDef, NodeModel, UnitModel
from uns.sim.sentlog import SentLog, SentSample
from uns.sparkplug.arrays import pack_array
from uns.sparkplug.codec import decode_payload, encode_payload
from uns.sparkplug.datatypes import ARRAY_TYPES, SIGNED_WIDTH, DataType
from uns.sparkplug.ncmd import REBIRTH_METRIC
from uns.sparkplug.payload import Metric, MetricValue, Payload, PropertySet, PropertyValue
from uns.sparkplug.state import parse_state

__all__ = ["BDSEQ_METRIC", "GARBAGE", "REBIRTH_METRIC", "EdgeNode", "now_ms"]

NAMESPACE = "spBv1.0"
BDSEQ_METRIC = "bdSeq"
#: aiomqtt logs a warning per publish beyond this many awaiting confirmation; bursts are normal here
PENDING_CALLS_WARNING = 1_000_000


def _queue_publish(client: aiomqtt.Client, topic: str, payload: bytes) -> None:
    """Hand a QoS 0 message to paho without waiting for it to be written.

    aiomqtt (pinned <2.6) keeps its paho client in ``_client``; this and
    :meth:`EdgeNode.kill` are the only places that reach into it."""
    info = client._client.publish(topic, payload, 0)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")


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


@dataclass(slots=True)
class _Unit:
    """Per-unit publishing state: its born metrics and what was last sent."""

    model: UnitModel
    metrics: list[_BornMetric]
    last_sent: dict[str, MetricValue] = field(default_factory=dict)
    alive: bool = True  # False after device_death() until device_birth()
    last_ts: int = 0  # timestamp of the last step


@dataclass(slots=True)
class _Stored:
    """A DATA message held back (store and forward): its time and typed values."""

    device_id: str | None
    ts: int
    values: list[tuple[_BornMetric, MetricValue]]


class EdgeNode(FaultHooks):
    """A Sparkplug B edge node with its devices, driven by :meth:`publish_data`.

    Use as an async context manager (``start`` on entry, clean ``stop`` on exit
    unless :meth:`kill` was called)."""

    def __init__(
        self,
        model: NodeModel,
        *,
        group_id: str,
        host: str = "127.0.0.1",
        port: int = 1883,
        mqtt_options: Mapping[str, Any] | None = None,
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
        self.model = model
        self.group_id = group_id
        self.node_id = model.node_id
        self.host = host
        self.port = port
        self.mqtt_options = dict(mqtt_options or {})
        self.report_by_exception = report_by_exception
        self.step_seconds = step_seconds
        self.primary_host_id = primary_host_id
        self.log = sent_log if sent_log is not None else SentLog()
        self.on_context = on_context
        self.client_id = client_id or f"sim-{group_id}-{self.node_id}"
        self.clock = clock
        self._next_bd_seq = bd_seq % 256
        self._ndeath = b""  # the Will of the current connection
        self.bd_seq = self._next_bd_seq  # of the current (or next) connection
        self.seq = 0  # the last seq used
        self._born = asyncio.Event()
        self.host_online = primary_host_id is None
        self._host_timestamp: int | None = None
        self._client: aiomqtt.Client | None = None
        self._listener: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one of births, DATA, death or fault at a time: keeps seq order
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

    # ---------------------------------------------------------------- topics

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

    @property
    def connected(self) -> bool:
        """Whether the MQTT session is up (the command listener still runs)."""
        return self._client is not None and self._listener is not None and not self._listener.done()

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _ndeath_payload(self, bd_seq: int, ts: int) -> bytes:
        return encode_payload(
            Payload(timestamp=ts, metrics=[Metric(name=BDSEQ_METRIC, datatype=DataType.Int64, value=bd_seq)])
        )

    async def start(self, *, dbirth_first: bool = False) -> None:
        """Connect (a new bdSeq), subscribe to commands, publish the births.

        With a primary host the births wait until its STATE says online.
        ``dbirth_first`` puts one DBIRTH before the NBIRTH (a fault seen in the field)."""
        if self._client is not None:
            await self._drop_client()
        self._born.clear()
        bd_seq = self._next_bd_seq
        ndeath = self._ndeath_payload(bd_seq, self.clock())
        options: dict[str, Any] = {"identifier": self.client_id, "clean_session": True, **self.mqtt_options}
        will = aiomqtt.Will(self.topic("NDEATH"), ndeath, qos=1, retain=False)
        client = aiomqtt.Client(self.host, self.port, will=will, **options)
        client.pending_calls_threshold = PENDING_CALLS_WARNING
        await client.__aenter__()
        # a failed attempt leaves bdSeq alone: the next NBIRTH follows the last one seen
        self.bd_seq, self._ndeath = bd_seq, ndeath
        self._next_bd_seq = (bd_seq + 1) % 256
        self._client = client
        try:
            await client.subscribe(self.topic("NCMD"), qos=1)
            await client.subscribe(self.topic("DCMD", "+"), qos=1)
            if self.primary_host_id is not None:
                self.host_online = False
                await client.subscribe(f"{NAMESPACE}/STATE/{self.primary_host_id}", qos=1)
        except BaseException:
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
        client = self._client
        if client is None:
            return
        if self.connected:
            async with self._lock:
                with contextlib.suppress(aiomqtt.MqttError):
                    await self._send([(self.topic("NDEATH"), self._ndeath)], qos=1)
                    self.log.counts.deaths += 1
                self._born.clear()
        await self._drop_client()

    async def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT, so the broker publishes the Will."""
        client = self._client
        if client is None:
            return
        # aiomqtt has no public way to lose a connection on purpose; paho's socket does it
        sock = client._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._listener is not None:
            with contextlib.suppress(asyncio.TimeoutError):
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
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    @property
    def born(self) -> bool:
        """Whether the births of the current session are out (DATA may flow)."""
        return self._born.is_set()

    async def wait_born(self) -> None:
        """Wait until the births are out (useful with a primary host); wrap in a timeout."""
        await self._born.wait()

    # ---------------------------------------------------------------- incoming

    async def _listen(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the connection ended; stop/kill/the runner decide
            async for message in client.messages:
                payload = message.payload
                if isinstance(payload, bytes | bytearray):
                    await self._on_message(message.topic.value, bytes(payload))

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

    # ---------------------------------------------------------------- births

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

    async def _publish_births(self, *, dbirth_first: bool) -> None:
        """NBIRTH (seq 0) and every live device's DBIRTH; the caller holds the lock."""
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
            unit = self._units[device_id]
            if unit.alive:
                messages.append(self._dbirth(device_id, ts))
        if dbirth_first and len(messages) > 1:
            messages[0], messages[1] = messages[1], messages[0]
        await self._send(messages)
        self.log.counts.births += len(messages)
        self._born.set()

    def _dbirth(self, device_id: str, ts: int) -> tuple[str, bytes]:
        unit = self._units[device_id]
        seq = self._next_seq()
        payload = Payload(timestamp=ts, metrics=self._birth_metrics(unit, ts), seq=seq)
        self._log_birth(device_id, "DBIRTH", ts, seq)
        return self.topic("DBIRTH", device_id), encode_payload(payload)

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

    async def rebirth(self, *, dbirth_first: bool = False) -> None:
        """Stop DATA, republish NBIRTH (same bdSeq, seq from 0) and all DBIRTHs, resume."""
        async with self._lock:
            await self._publish_births(dbirth_first=dbirth_first)

    async def device_death(self, device_id: str) -> None:
        """Publish a DDEATH (in the seq stream); the device sends nothing until :meth:`device_birth`."""
        async with self._lock:
            unit = self._units[device_id]
            unit.alive = False
            payload = Payload(timestamp=self.clock(), seq=self._next_seq())
            await self._send([(self.topic("DDEATH", device_id), encode_payload(payload))])
            self.log.counts.deaths += 1

    async def device_birth(self, device_id: str) -> None:
        """Bring a dead device back with a new DBIRTH."""
        async with self._lock:
            unit = self._units[device_id]
            unit.alive = True
            await self._send([self._dbirth(device_id, self._fresh_ts([unit]))])
            self.log.counts.births += 1

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

    async def publish_data(self, units: Sequence[UnitModel] | None = None) -> int:
        """Step each unit once (``step_seconds`` of simulated time) and send its DATA.

        ``units`` defaults to every unit of the node.  Returns the number of DATA
        messages published (stored ones not included)."""
        chosen = self.model.units() if units is None else units
        async with self._lock:
            now = self.clock()
            sending = self.born and self.host_online and self.connected
            messages: list[tuple[str, bytes]] = []
            for model in chosen:
                unit = self._units[model.device_id]
                # one sample per metric and ms: a unit stepped faster than 1 kHz runs ahead of the clock
                ts = unit.last_ts = max(now, unit.last_ts + 1)
                update = model.step(self.step_seconds)
                if update is not None:
                    self._emit_context(model, update, ts)
                if not unit.alive:
                    continue
                values = self._changed(unit)
                if not values:
                    continue
                if sending:
                    messages.append(self._data_message(model.device_id, ts, values, historical=False))
                else:
                    self._keep(_Stored(model.device_id, ts, values))
            if messages:
                await self._send(messages)
            return len(messages)

    def _changed(self, unit: _Unit) -> list[tuple[_BornMetric, MetricValue]]:
        values, last = unit.model.values, unit.last_sent
        if self.report_by_exception:
            changed = [(m, values[m.name]) for m in unit.metrics if last.get(m.name) != values[m.name]]
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
        metrics = [
            Metric(
                alias=m.alias,
                timestamp=ts,
                value=value if m.wire is None else m.wire(value),
                is_historical=historical,
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

    async def _flush_store(self) -> None:
        """Send stored DATA as historical; the caller holds the lock."""
        if not self._store:
            return
        messages = []
        while self._store:
            s = self._store.popleft()
            messages.append(self._data_message(s.device_id, s.ts, s.values, historical=True))
        await self._send(messages)

    async def _send(self, messages: Sequence[tuple[str, bytes]], *, qos: int = 0) -> None:
        """Publish in order; returns when the last message has left (QoS 0) or is acknowledged."""
        client = self._client
        if client is None:
            raise RuntimeError(f"edge node {self.node_id} is not connected")
        self.log.counts.messages += len(messages)
        if qos == 0:
            # aiomqtt awaits every publish and scans all pending calls each time, which
            # caps a burst at a few thousand messages/s; paho sends its queue in order,
            # so queue all but the last and await only the last one.
            for topic, payload in messages[:-1]:
                _queue_publish(client, topic, payload)
            await self._confirmed(client.publish(messages[-1][0], messages[-1][1], qos=0))
        else:
            for topic, payload in messages:
                await self._confirmed(client.publish(topic, payload, qos=qos))

    async def _confirmed(self, publish: Coroutine[Any, Any, None]) -> None:
        """Await a publish, but give up as soon as the connection is lost.

        aiomqtt would wait for the confirmation until its timeout (10 s) when the
        socket closes under a queued message; the listener ends at once."""
        listener = self._listener
        task = asyncio.ensure_future(publish)
        if listener is None or listener is asyncio.current_task():  # a rebirth answering an NCMD
            await task
            return
        await asyncio.wait((task, listener), return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
            raise aiomqtt.MqttError(f"edge node {self.node_id} lost the broker while publishing")
        task.result()

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
