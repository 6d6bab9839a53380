"""Run a simulated plant: many edge nodes, a target message rate, context events, a report.

``run_sim(SimConfig(...))`` connects one :class:`~uns.sim.edge.EdgeNode` per
edge node of the plant plus one MES client for context events, then publishes
DATA on a fixed tick (10 ms by default): each tick earns ``rate * elapsed``
messages, handed out round-robin over every unit (a node's own metrics or a
device), so high rates come out as bursts of a hundred messages or more
(one process reaches about 40k one-metric or 15k ten-metric DATA messages/s
against a local mosquitto on 2 cores; run several processes for more).
A unit steps ``units / rate`` simulated seconds per message, so simulated
time runs at wall-clock speed and batch phases last ``context_interval``
seconds.  With report by exception an unchanged unit
sends nothing, so the DATA rate can fall short of ``rate``; benchmarks set
``report_by_exception=False`` for exactly ``metrics`` values per message.

A node that loses the broker keeps its DATA (store and forward) and
reconnects every second with the next bdSeq; a refusal that retrying cannot
heal (:class:`~uns.errors.BrokerRefused`: credentials, certificates) ends the
run with that error instead.  QoS 0 messages written just before the
connection dropped may be lost although the sent log counts them:
exactly-once checks should not span a broker outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from uns.errors import BrokerError, BrokerRefused, ConfigError
from uns.mqtt.client import FastClient
from uns.mqtt.settings import BrokerSettings
from uns.sim.batch import ContextEvent
from uns.sim.edge import EdgeNode, broker_settings
from uns.sim.inject import UNIT_KINDS, BatchFault, Injector
from uns.sim.mes import MES_KINDS, Mes, RecordEvent
from uns.sim.plant import PILOT_GROUP, Plant, UnitModel, bench_plant, pilot_plant
from uns.sim.sentlog import SentLog, SentSample

__all__ = ["ContextPublisher", "SimConfig", "SimReport", "build_plant", "run_sim"]

RECONNECT_DELAY = 1.0  # seconds between two connection attempts of a node that lost the broker
MAX_BACKLOG = 0.05  # seconds of messages one tick may catch up on; a slower loop sends less


@dataclass(frozen=True, repr=False)
class SimConfig:
    """Everything a simulation run needs; validated on construction."""

    #: the broker: ``broker`` (credentials, TLS, keepalive; default 127.0.0.1:1883 in
    #: plain MQTT) with ``host``/``port`` in place of its own when given
    host: str | None = None
    port: int | None = None
    broker: BrokerSettings | None = None
    plant: Literal["pilot", "bench"] = "pilot"
    #: the Sparkplug group; default ``PilotPlant`` / ``Bench``
    group_id: str | None = None
    nodes: int = 1  # bench plant shape
    devices: int = 1
    metrics: int = 10
    rate: float = 20.0  # DATA messages per second, all nodes together
    duration: float | None = None  # seconds; None runs until ``stop`` is set
    seed: int = 0
    prefix: str = "uns/v1"  # context events go to <prefix>/_context/<path>
    primary_host_id: str | None = None
    context_interval: float = 10.0  # seconds per batch phase
    context_delay: float = 0.0  # publish each context event this long after its ts
    report_by_exception: bool = True
    tick: float = 0.01
    bd_seq: int = 0  # bdSeq of every node's first connection
    sent_log_path: str | None = None  # JSON lines of every sample and context event
    keep_samples: bool = False  # keep every sample in memory (SimReport.samples)
    client_id_prefix: str = "sim"
    #: batches spoilt on purpose (pilot plant; uns.sim.inject)
    faults: tuple[BatchFault, ...] = ()

    def __post_init__(self) -> None:
        checks = [
            (self.rate > 0, "rate", "must be positive"),
            (self.tick > 0, "tick", "must be positive"),
            (self.duration is None or self.duration >= 0, "duration", "must not be negative"),
            (self.context_interval > 0, "context_interval", "must be positive"),
            (self.context_delay >= 0, "context_delay", "must not be negative"),
            (min(self.nodes, self.devices, self.metrics) >= 1, "nodes", "nodes/devices/metrics must be >= 1"),
            (self.plant in ("pilot", "bench"), "plant", "must be 'pilot' or 'bench'"),
            (self.port is None or 0 < self.port < 65536, "port", "must be 1..65535"),
        ]
        for ok, key, message in checks:
            if not ok:
                raise ConfigError(f"sim.{key} {message}", key=f"sim.{key}")
        for text, key in ((self.group_id or "x", "group_id"), (self.prefix, "prefix")):
            if any(c in text for c in "+#") or (key == "group_id" and "/" in text):
                raise ConfigError(f"sim.{key} {text!r} is not valid in an MQTT topic", key=f"sim.{key}")

    @property
    def settings(self) -> BrokerSettings:
        """The connection settings every client of the run uses."""
        return broker_settings(self.broker, self.host, self.port)

    def __repr__(self) -> str:
        return (
            f"SimConfig(broker={self.settings.masked_url()!r}, plant={self.plant!r}, "
            f"group_id={self.group_id!r}, rate={self.rate}, duration={self.duration}, seed={self.seed})"
        )


@dataclass(frozen=True)
class SimReport:
    """What a run published (counts from :class:`~uns.sim.sentlog.SentCounts`)."""

    messages: int
    data_messages: int
    metrics: int
    births: int
    deaths: int
    context_events: int
    records: int  # batch records published (uns.sim.mes)
    rebirths_answered: int
    historical_messages: int
    dropped_messages: int
    faults: int
    reconnects: int
    elapsed: float
    samples: tuple[SentSample, ...] = ()  # only with keep_samples
    contexts: tuple[ContextEvent, ...] = ()
    record_events: tuple[RecordEvent, ...] = ()  # only with keep_samples

    @property
    def data_rate(self) -> float:
        """DATA messages per second actually published."""
        return self.data_messages / self.elapsed if self.elapsed > 0 else 0.0


def build_plant(config: SimConfig) -> Plant:
    if config.plant == "bench":
        return bench_plant(
            config.group_id or "Bench",
            nodes=config.nodes,
            devices=config.devices,
            metrics=config.metrics,
            seed=config.seed,
        )
    return pilot_plant(
        config.group_id or PILOT_GROUP, seed=config.seed, phase_seconds=config.context_interval
    )


class ContextPublisher:
    """The MES of the simulation: publishes context events and batch records (QoS 1),
    optionally late.

    An event that cannot be published (broker away) waits and goes out after
    the client has reconnected (at most one attempt a second); on exit, events
    still delayed are published when they are due.  A refusal that retrying
    cannot heal ends the attempts and is kept in ``refused``."""

    def __init__(
        self, *, broker: BrokerSettings, prefix: str, delay: float, log: SentLog, client_id: str
    ) -> None:
        self.broker = broker
        self.prefix = prefix
        self.delay = delay
        self.log = log
        self.client_id = client_id
        self.refused: BrokerRefused | None = None
        self._client = FastClient(broker, identifier=client_id)
        self._pending: list[tuple[float, int, ContextEvent | RecordEvent]] = []  # (due, order, event) heap
        self._order = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_attempt = 0.0

    @property
    def _down(self) -> bool:
        return not self._client.connected

    async def __aenter__(self) -> ContextPublisher:
        await self._client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks)
        while self._pending and not self._down:
            await asyncio.sleep(max(0.0, self._pending[0][0] - time.monotonic()))
            await self.publish_due()
        await self._client.disconnect()

    def submit(self, event: ContextEvent | RecordEvent) -> None:
        """Take an event or a batch record (called synchronously by the edge nodes)."""
        if self.delay > 0 or self._down:
            self._push(time.monotonic() + self.delay, event)
        else:
            # a task started now reaches the MQTT client before the DATA the caller is about to send
            task = asyncio.create_task(self._publish(event), name="sim-context-publish")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def submit_record(self, record: RecordEvent) -> None:
        """Take a batch record (uns.sim.mes), published like a context event."""
        self.submit(record)

    def submit_later(self, event: ContextEvent, seconds: float) -> None:
        """Take an event to publish ``seconds`` from now (its ``ts`` is then)."""
        self._push(time.monotonic() + seconds + self.delay, event)

    def _push(self, due: float, event: ContextEvent | RecordEvent) -> None:
        heapq.heappush(self._pending, (due, next(self._order), event))

    async def _publish(self, event: ContextEvent | RecordEvent) -> None:
        channel = "_records" if isinstance(event, RecordEvent) else "_context"
        try:
            await self._client.publish(f"{self.prefix}/{channel}/{event.path}", event.to_json(), qos=1)
        except BrokerError:
            self._push(time.monotonic(), event)
            return
        if isinstance(event, RecordEvent):
            self.log.add_record(event)
        else:
            self.log.add_context(event)

    async def publish_due(self) -> None:
        """Publish the events that are due; reconnect first (at most once a second) if needed."""
        now = time.monotonic()
        if self._down:
            if now < self._next_attempt or self.refused is not None:
                return
            self._next_attempt = now + RECONNECT_DELAY
            await self._client.disconnect()
            self._client = FastClient(self.broker, identifier=self.client_id)
            try:
                await self._client.connect()
            except BrokerRefused as exc:
                self.refused = exc
                return
            except BrokerError:
                return
        while self._pending and self._pending[0][0] <= now and not self._down:
            _, _, event = heapq.heappop(self._pending)
            await self._publish(event)


class _Runner:
    """The tick loop over the nodes of one run."""

    def __init__(self, config: SimConfig, plant: Plant, log: SentLog, context: ContextPublisher) -> None:
        self.config = config
        self.log = log
        self.injector = Injector(tuple(f for f in config.faults if f.kind in UNIT_KINDS))
        self.injector.attach(plant)
        mes_faults = [(f.kind, f.batch_id) for f in config.faults if f.kind in MES_KINDS]
        self.mes = Mes(mes_faults, phase_seconds=config.context_interval)
        self.mes.attach(plant)
        self.units: list[tuple[EdgeNode, UnitModel]] = []
        unit_count = sum(len(n.units()) for n in plant.nodes)
        step_seconds = unit_count / config.rate  # simulated time runs at wall-clock speed
        self.nodes = [
            EdgeNode(
                model,
                group_id=plant.group_id,
                broker=config.settings,
                report_by_exception=config.report_by_exception,
                step_seconds=step_seconds,
                primary_host_id=config.primary_host_id,
                bd_seq=config.bd_seq,
                sent_log=log,
                on_context=self.injector.observe(self.mes.observe(context)),
                client_id=f"{config.client_id_prefix}-{plant.group_id}-{model.node_id}",
            )
            for model in plant.nodes
        ]
        for node in self.nodes:
            self.units += [(node, unit) for unit in node.model.units()]
        self._cursor = 0
        self._reviving: dict[EdgeNode, asyncio.Task[None]] = {}
        self.reconnects = 0
        #: a node's reconnect met a refusal that retrying cannot heal: the run stops
        self.refused: BrokerRefused | None = None

    def take(self, count: int) -> dict[EdgeNode, list[UnitModel]]:
        """The next ``count`` units round-robin, grouped by node (order kept)."""
        chosen: dict[EdgeNode, list[UnitModel]] = {}
        total = len(self.units)
        for i in range(count):
            node, unit = self.units[(self._cursor + i) % total]
            chosen.setdefault(node, []).append(unit)
        self._cursor = (self._cursor + count) % total
        return chosen

    async def inject_deaths(self) -> None:
        """Kill the edge nodes whose batch fault says so now; they come back a second later."""
        for unit in self.injector.take_deaths():
            for node in self.nodes:
                if unit in node.model.devices and node.connected:
                    await node.kill()
                    self.revive(node)

    async def drive(self, node: EdgeNode, units: list[UnitModel]) -> None:
        if not node.connected:
            self.revive(node)  # meanwhile publish_data stores the DATA
        try:
            await node.publish_data(units)
        except BrokerError:
            self.revive(node)

    def revive(self, node: EdgeNode) -> None:
        if node not in self._reviving:
            self._reviving[node] = asyncio.create_task(
                self._reconnect(node), name=f"sim-reconnect-{node.node_id}"
            )

    async def _reconnect(self, node: EdgeNode) -> None:
        try:
            while True:
                await asyncio.sleep(RECONNECT_DELAY)
                try:
                    await node.start()
                except BrokerRefused as exc:
                    self.refused = exc
                    return
                except BrokerError:
                    continue
                self.reconnects += 1
                return
        finally:
            del self._reviving[node]

    async def close(self) -> None:
        for task in list(self._reviving.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(node.stop() for node in self.nodes))


def _report(log: SentLog, runner: _Runner, elapsed: float, *, final: bool) -> SimReport:
    # SimReport carries every SentCounts total under the same name
    return SimReport(
        **dataclasses.asdict(log.counts),
        reconnects=runner.reconnects,
        elapsed=elapsed,
        samples=tuple(log.samples) if final else (),
        contexts=tuple(log.contexts) if final else (),
        record_events=tuple(log.records) if final else (),
    )


async def run_sim(
    config: SimConfig,
    *,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[SimReport], None] | None = None,
) -> SimReport:
    """Run the simulation until ``config.duration`` has passed or ``stop`` is set.

    ``on_progress`` gets a report (without samples) about once a second.  The
    nodes end with a clean NDEATH; pending context events are published."""
    plant = build_plant(config)
    loop = asyncio.get_running_loop()
    with SentLog(keep_samples=config.keep_samples, path=config.sent_log_path) as log:
        context = ContextPublisher(
            broker=config.settings,
            prefix=config.prefix,
            delay=config.context_delay,
            log=log,
            client_id=f"{config.client_id_prefix}-{plant.group_id}-mes",
        )
        async with context:
            runner = _Runner(config, plant, log, context)
            try:
                started_nodes = await asyncio.gather(
                    *(node.start() for node in runner.nodes), return_exceptions=True
                )
                for outcome in started_nodes:  # every start has ended: close() finds no half-open node
                    if isinstance(outcome, BaseException):
                        raise outcome
                started = last = loop.time()
                next_tick = started + config.tick
                next_progress = started + 1.0
                credit = 0.0
                while not (stop is not None and stop.is_set()):
                    now = loop.time()
                    if config.duration is not None and now - started >= config.duration:
                        break
                    refused = runner.refused or context.refused
                    if refused is not None:
                        raise refused
                    credit = min(credit + (now - last) * config.rate, config.rate * MAX_BACKLOG + 1)
                    last = now
                    count = int(credit)
                    credit -= count
                    if count:
                        chosen = runner.take(count)
                        await asyncio.gather(*(runner.drive(node, units) for node, units in chosen.items()))
                        await runner.inject_deaths()
                    await context.publish_due()
                    if on_progress is not None and now >= next_progress:
                        next_progress = now + 1.0
                        on_progress(_report(log, runner, now - started, final=False))
                    next_tick = max(next_tick + config.tick, loop.time())
                    await asyncio.sleep(next_tick - loop.time())
                elapsed = loop.time() - started
            finally:
                await runner.close()
        return _report(log, runner, elapsed, final=True)
