"""The republish sink: normalized JSON events back onto the broker, under ``<prefix>/``.

``add(batch)`` never blocks and never fails: it filters the batch's samples
and appends them to a bounded queue.  A named background task
(``uns-republish``) encodes and publishes them through an injected async
``publish(topic, payload, qos, retain)`` -- the engine passes aiomqtt's
``client.publish``.

Two modes (:class:`RepublishConfig`):

- ``metric``: one event per sample on ``<prefix>/<path>/<metric>``
  (``schemas/uns-event.schema.json``);
- ``device``: one event per received message and path on ``<prefix>/<path>``
  with all its metrics (``$defs/deviceEvent`` of the same schema).

When the broker cannot keep up, the queue (``max_queue`` events) drops its
*oldest* events and counts them (``dropped_queue_full``), with a
rate-limited warning.  A failed publish (broker gone) is counted in
``errors`` and not retried; the sink backs off briefly and keeps running.
Neither loses data for good: the lake sink has every sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from uns.context import ContextStore
from uns.errors import ConfigError
from uns.events import Batch, Sample
from uns.model import PlantModel
from uns.normalize import Normalizer

__all__ = ["PublishFn", "RepublishConfig", "RepublishSink"]

log = logging.getLogger(__name__)

#: ``publish(topic, payload, qos, retain)``, e.g. aiomqtt's ``Client.publish``
PublishFn = Callable[[str, bytes, int, bool], Awaitable[None]]
#: hands a QoS 0 message to the MQTT client without waiting for the socket write; False = refused
PublishNowaitFn = Callable[[str, bytes, int, bool], bool]

_WARN_INTERVAL_S = 10.0
_QOS0_CHUNK = 256  # QoS 0 events published per turn of the republish task
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


@dataclass(frozen=True, slots=True)
class RepublishConfig:
    """How normalized events are republished (``[republish]`` in the config file)."""

    enabled: bool = True
    qos: int = 0
    retain: bool = False
    include_historical: bool = False  # Sparkplug is_historical values: late backfill, usually not live
    include_transient: bool = False  # Sparkplug is_transient values
    include_unmapped: bool = True  # sources the plant model does not know, under _unmapped/
    mode: str = "metric"  # "metric" or "device" (checked below; a str like the config file's)
    max_queue: int = 100_000  # events (messages to publish)
    # Publishes awaited together.  8 stays below aiomqtt's default
    # pending_calls_threshold (10), above which it logs a warning per publish;
    # raise both together for more throughput (benchmarks/bench_republish.py).
    max_in_flight: int = 8
    drain_timeout_s: float = 5.0  # how long flush()/exit wait for the queue to empty

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ConfigError(f"republish qos must be 0, 1 or 2, not {self.qos!r}", key="republish.qos")
        if self.mode not in ("metric", "device"):
            raise ConfigError(
                f"republish mode must be 'metric' or 'device', not {self.mode!r}", key="republish.mode"
            )
        if self.max_queue < 1:
            raise ConfigError("republish max_queue must be at least 1", key="republish.max_queue")
        if self.max_in_flight < 1:
            raise ConfigError("republish max_in_flight must be at least 1", key="republish.max_in_flight")
        if self.drain_timeout_s < 0:
            raise ConfigError("republish drain_timeout_s must be >= 0", key="republish.drain_timeout_s")


# a queued event: one sample (metric mode) or the samples of one message and path (device mode)
_Item = Sample | tuple[Sample, ...]


class RepublishSink:
    """A :class:`uns.events.Sink` that publishes normalized events (see module doc)."""

    name = "republish"

    def __init__(
        self,
        publish: PublishFn,
        normalizer: Normalizer | None = None,
        config: RepublishConfig | None = None,
        *,
        publish_nowait: PublishNowaitFn | None = None,
    ) -> None:
        self._publish = publish
        self._publish_nowait = publish_nowait
        self._normalizer = normalizer or Normalizer(PlantModel.empty(), ContextStore())
        self.config = config or RepublishConfig()
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._closing = False
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0  # events of the chunk being published right now
        self._published = 0
        self._dropped_full = 0
        self._dropped_close = 0
        self._filtered = 0
        self._errors = 0
        self._last_error = ""
        self._drops_unreported = 0
        self._errors_unreported = 0
        self._last_drop_warning = 0.0
        self._last_error_warning = 0.0

    # ------------------------------------------------------------ Sink API

    def add(self, batch: Batch) -> None:
        """Queue the batch's publishable samples; drops the oldest when full. Never blocks."""
        config = self.config
        if not config.enabled or not batch.samples:
            return
        samples = [s for s in batch.samples if self._wanted(s)]
        self._filtered += len(batch.samples) - len(samples)
        if not samples:
            return
        if config.mode == "metric":
            self._enqueue(samples)
        else:
            by_path: dict[str, list[Sample]] = {}
            for sample in samples:
                by_path.setdefault(sample.path, []).append(sample)
            self._enqueue([tuple(group) for group in by_path.values()])
        self._idle.clear()
        self._wakeup.set()

    def _wanted(self, sample: Sample) -> bool:
        config = self.config
        if sample.is_historical and not config.include_historical:
            return False
        if sample.is_transient and not config.include_transient:
            return False
        return config.include_unmapped or not sample.unmapped

    def _enqueue(self, items: Sequence[_Item]) -> None:
        queue = self._queue
        overflow = len(queue) + len(items) - self.config.max_queue
        if overflow > 0:
            # Drop the oldest: live dashboards want the newest values.
            from_queue = min(overflow, len(queue))
            for _ in range(from_queue):
                queue.popleft()
            items = items[overflow - from_queue :]
            self._dropped_full += overflow
            self._drops_unreported += overflow
            self._warn_drops()
        queue.extend(items)

    async def flush(self) -> None:
        """Wait until everything queued so far was handed to ``publish`` (at most ``drain_timeout_s``)."""
        if self._idle.is_set():
            return
        if self._task is None or self._task.done():
            return  # nothing is publishing; exit counts what is left
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.drain_timeout_s)
        except TimeoutError:
            log.warning(
                "republish: %d events still queued after %.1fs (broker slow or gone)",
                len(self._queue),
                self.config.drain_timeout_s,
            )

    def stats(self) -> dict[str, int | float | str]:
        return {
            "mode": self.config.mode,
            "published": self._published,
            "queue_depth": len(self._queue),
            "dropped_queue_full": self._dropped_full,
            "dropped_on_close": self._dropped_close,
            "filtered": self._filtered,
            "errors": self._errors,
            "last_error": self._last_error,
        }

    async def __aenter__(self) -> Self:
        if self.config.enabled and self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="uns-republish")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.flush()
        finally:
            task, self._task = self._task, None
            self._closing = True
            self._wakeup.set()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # a chunk cancelled mid-publish counts as not published (some may have gone out)
            left = len(self._queue) + self._in_flight
            if left:
                self._dropped_close += left
                log.warning("republish: %d queued events not published at shutdown", left)
                self._queue.clear()
                self._in_flight = 0
            self._idle.set()

    # ------------------------------------------------------------ background

    async def _run(self) -> None:
        backoff = 0.0
        # ``_closing`` and not only cancellation ends this loop: Python 3.11's wait_for (inside
        # aiomqtt's publish) can swallow a cancellation that races the publish completing.
        while not self._closing:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.config.qos == 0:
                # QoS 0 publishes complete without waiting for the broker: one after the
                # other, no task per message, then a yield so ingest keeps its turns.
                count = min(len(self._queue), _QOS0_CHUNK)
                chunk = [self._queue.popleft() for _ in range(count)]
                failed = await self._publish_sequentially(chunk)
                await asyncio.sleep(0)
            else:
                count = min(len(self._queue), self.config.max_in_flight)
                chunk = [self._queue.popleft() for _ in range(count)]
                failed = await self._publish_chunk(chunk)
            if self._closing:
                break  # what is left in flight is counted by __aexit__
            self._in_flight = 0
            if failed:
                backoff = min(_BACKOFF_MAX_S, max(_BACKOFF_MIN_S, backoff * 2))
                await asyncio.sleep(backoff)
            else:
                backoff = 0.0

    def _encode(self, item: _Item) -> tuple[str, bytes]:
        normalizer = self._normalizer
        if isinstance(item, Sample):
            return normalizer.topic_for(item.path, item.metric), normalizer.encode_event(item)
        return normalizer.device_topic(item[0].path), normalizer.encode_device_event(item)

    async def _publish_sequentially(self, chunk: list[_Item]) -> int:
        """QoS 0: publish in order; returns the number that failed.

        With ``publish_nowait`` every message but the last is handed to the client
        without waiting for its socket write (one wait per chunk instead of one
        event-loop round trip per message); the client keeps them in order."""
        config, publish, nowait = self.config, self._publish, self._publish_nowait
        failed = 0
        self._in_flight = len(chunk)
        last = len(chunk) - 1
        for i, item in enumerate(chunk):
            if self._closing:
                break  # the rest counts as dropped on close
            try:
                topic, payload = self._encode(item)
                if nowait is not None and i < last:
                    sent = nowait(topic, payload, config.qos, config.retain)
                else:
                    await publish(topic, payload, config.qos, config.retain)
                    sent = True
            except Exception as exc:  # counted, the sink keeps running
                failed += 1
                self._error(exc)
            else:
                if sent:
                    self._published += 1
                else:
                    failed += 1
                    self._error(RuntimeError(f"the MQTT client refused the publish to {topic}"))
            self._in_flight -= 1
        return failed

    async def _publish_chunk(self, chunk: list[_Item]) -> int:
        """Encode and publish a chunk concurrently (in order); returns the number that failed."""
        config = self.config
        publish = self._publish
        pending: list[Awaitable[None]] = []
        failed = 0
        for item in chunk:
            try:
                topic, payload = self._encode(item)
                pending.append(publish(topic, payload, config.qos, config.retain))
            except Exception as exc:  # one bad event must not stop the sink
                failed += 1
                self._error(exc)
        self._in_flight = len(pending)
        if len(pending) == 1:
            results: list[BaseException | None] = []
            try:
                await pending[0]
                results.append(None)
            except Exception as exc:  # counted, the sink keeps running
                results.append(exc)
        else:
            results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if result is None:
                self._published += 1
            elif isinstance(result, Exception):
                failed += 1
                self._error(result)
            else:  # pragma: no cover - CancelledError/KeyboardInterrupt from a publish
                raise result
        return failed

    # ------------------------------------------------------------ logging

    def _error(self, exc: Exception) -> None:
        self._errors += 1
        self._errors_unreported += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._last_error_warning >= _WARN_INTERVAL_S:
            log.warning(
                "republish: %d publish errors (last: %s); the lake still has every sample",
                self._errors_unreported,
                self._last_error,
            )
            self._errors_unreported = 0
            self._last_error_warning = now

    def _warn_drops(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_warning >= _WARN_INTERVAL_S:
            log.warning(
                "republish: queue full (%d), dropped %d oldest events; the lake still has every sample",
                self.config.max_queue,
                self._drops_unreported,
            )
            self._drops_unreported = 0
            self._last_drop_warning = now
