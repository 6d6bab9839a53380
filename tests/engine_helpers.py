"""Running an Engine inside a test: against the real mosquitto, or an in-memory broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

from uns.config import Config, load_config
from uns.core.events import Batch, Sample, SessionEvent
from uns.engine.host import Engine, Sink
from uns.engine.memory import MemoryBroker, MemoryTransport
from uns.mqtt.mosquitto import Mosquitto


class CollectingSink:
    """A real in-memory sink: keeps every batch so tests can assert on it."""

    name = "collect"

    def __init__(self, on_flush: Callable[[], None] | None = None) -> None:
        self.batches: list[Batch] = []
        self.flushes = 0
        self._on_flush = on_flush  # lets a test place the flush among the broker's events

    def add(self, batch: Batch) -> None:
        self.batches.append(batch)

    async def flush(self) -> None:
        self.flushes += 1
        if self._on_flush is not None:
            self._on_flush()

    def stats(self) -> dict[str, int | float | str]:
        return {"batches": len(self.batches)}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.batches for s in b.samples]

    @property
    def sessions(self) -> list[SessionEvent]:
        return [e for b in self.batches for e in b.sessions]

    def events(self, kind: str) -> list[SessionEvent]:
        return [e for e in self.sessions if e.event == kind]


def engine_config(broker: Mosquitto | str, ns: str, **overrides: Any) -> Config:
    """A quick-reconnecting engine without lake or republish, in namespace ``ns``
    (``broker`` is a mosquitto or a URL, e.g. for :class:`uns.engine.memory.MemoryBroker`)."""
    values: dict[str, Any] = {
        "broker.url": broker if isinstance(broker, str) else broker.url,
        "engine.host_id": ns,
        "engine.prefix": f"{ns}/uns",
        "lake.path": "",
        "republish.enabled": False,
        "broker.reconnect_min": 0.1,
        "broker.reconnect_max": 0.5,
        "engine.status_interval": 0.5,
    }
    values.update(overrides)
    return load_config(env={}, overrides=values)


async def connected(broker: MemoryBroker, client_id: str) -> MemoryTransport:
    """A connected client of the in-memory broker (an edge node, the MES, another host)."""
    client = broker.client(client_id)
    await client.connect()
    return client


@contextlib.asynccontextmanager
async def on_memory(config: Config, *sinks: Sink) -> AsyncIterator[tuple[MemoryBroker, Engine]]:
    """An engine running against a fresh in-memory broker, with ``sinks``."""
    broker = MemoryBroker()
    async with running_engine(Engine(config, sinks=sinks, transport=broker)) as engine:
        yield broker, engine


@contextlib.asynccontextmanager
async def running_engine(engine: Engine) -> AsyncIterator[Engine]:
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop), name="test-engine")
    try:
        # generous: on a busy machine starting the lake sink (its commit worker process,
        # deltalake's import, the tables) alone took more than 10 s
        await asyncio.wait_for(engine.connected.wait(), 60)
        await asyncio.wait_for(engine.context_intake.connected.wait(), 60)
        yield engine
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)  # engine.stop_timeout_s (30 s) bounds it


async def wait_for(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Until ``cond()`` holds (polled); the timeout is generous: under stress-ng an engine
    with a lake sink took more than 10 s to start its context session."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
