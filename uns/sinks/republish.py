"""The republish sink: normalized JSON events back onto the broker, under ``<prefix>/``.

``add(batch)`` never blocks and never fails.  It filters the batch's
samples and then either

- publishes them at once (QoS 0 with a ``publish_nowait(topic, payload, qos,
  retain) -> bool`` that hands a message to the MQTT client without waiting,
  e.g. ``Engine.publish_nowait``): encoded and handed over inside ``add``, no
  queue and no task hop, so an event leaves with the message that carried it
  -- as long as the client accepts (True) and nothing older is still queued;
- or appends them to a bounded queue, which a named background task
  (``uns-republish``) encodes and publishes in order: always at QoS 1/2 and
  without ``publish_nowait`` (through the awaited ``publish(topic, payload,
  qos, retain)``, e.g. ``Engine.publish``), and at QoS 0 from the
  first refused hand-over (client disconnected or its buffer full) until the
  queue is empty again.  The task retries a refused event through the
  awaited ``publish`` (which waits for the client, or fails when it is gone).

Its settings are the config file's ``[republish]`` section
(:class:`uns.config.RepublishSection`, validated there), among them two modes:

- ``metric``: one event per sample on ``<prefix>/<path>/<metric>``
  (``schemas/uns-event.schema.json``);
- ``device``: one event per received message and path on ``<prefix>/<path>``
  with all its metrics (``$defs/deviceEvent`` of the same schema).

Topics and payloads come from an :class:`uns.sinks.encoders.EventEncoder`.

When the queue is full (``max_queue`` events: the broker or the client cannot
keep up), it drops its *oldest* events and counts them
(``dropped_queue_full``), with a rate-limited warning.  On the direct path
the MQTT client's own buffer holds what the socket has not taken yet: a
client that refuses beyond a bound sends the overflow to this queue.

A failed publish (broker gone) is counted in ``errors`` and not retried; the
sink backs off briefly and keeps running.
Neither loses data for good: the lake sink has every sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Self

from uns.config import RepublishSection
from uns.core.events import Batch, Sample
from uns.logs import RateLimitedLog
from uns.sinks.encoders import EventEncoder

__all__ = ["PublishFn", "PublishNowaitFn", "RepublishSink"]

log = logging.getLogger(__name__)

#: ``publish(topic, payload, qos, retain)``, e.g. ``Engine.publish``
PublishFn = Callable[[str, bytes, int, bool], Awaitable[None]]
#: hands a QoS 0 message to the MQTT client without waiting for the socket write; False = refused
PublishNowaitFn = Callable[[str, bytes, int, bool], bool]

_QOS0_CHUNK = 256  # QoS 0 events published per turn of the republish task
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


# a queued event: one sample (metric mode) or the samples of one message and path (device mode)
_Item = Sample | tuple[Sample, ...]


def _by_path(samples: list[Sample]) -> list[tuple[Sample, ...]]:
    """Device mode: the samples of one message grouped by path, in first-seen order."""
    path = samples[0].path
    for sample in samples:
        if sample.path != path:
            break
    else:  # the usual case: one device, one path
        return [tuple(samples)]
    by_path: dict[str, list[Sample]] = {}
    for sample in samples:
        by_path.setdefault(sample.path, []).append(sample)
    return [tuple(group) for group in by_path.values()]


class RepublishSink:
    """A :class:`uns.core.events.Sink` that publishes normalized events (see module doc)."""

    name = "republish"

    def __init__(
        self,
        publish: PublishFn,
        encoder: EventEncoder | None = None,
        config: RepublishSection | None = None,
        *,
        publish_nowait: PublishNowaitFn | None = None,
    ) -> None:
        self._publish = publish
        self._publish_nowait = publish_nowait
        self._encoder = encoder or EventEncoder()
        self.config = config or RepublishSection()
        # QoS 0 with a non-blocking client: add() publishes itself while nothing is queued
        self._direct = publish_nowait is not None and self.config.qos == 0
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
        self._rlog = RateLimitedLog(log)

    # ------------------------------------------------------------ Sink API

    def add(self, batch: Batch) -> None:
        """Publish the batch's wanted samples now, or queue them (see module doc). Never blocks."""
        config = self.config
        if not config.enabled or not batch.samples:
            return
        if config.include_historical and config.include_transient and config.include_unmapped:
            samples = batch.samples
        else:
            historical, transient, unmapped = (
                config.include_historical,
                config.include_transient,
                config.include_unmapped,
            )
            samples = [
                s
                for s in batch.samples
                if (historical or not s.is_historical)
                and (transient or not s.is_transient)
                and (unmapped or not s.unmapped)
            ]
            self._filtered += len(batch.samples) - len(samples)
            if not samples:
                return
        items: Sequence[_Item] = samples if config.mode == "metric" else _by_path(samples)
        if self._direct and not self._queue and not self._in_flight and self._task is not None:
            sent = self._send_now(items)
            if sent == len(items):
                return
            items = items[sent:]
        self._enqueue(items)
        self._idle.clear()
        self._wakeup.set()

    def _send_now(self, items: Sequence[_Item]) -> int:
        """Encode and hand ``items`` to ``publish_nowait`` in order; returns how many were
        done with (published, or failed: counted) before the first refusal."""
        nowait = self._publish_nowait
        assert nowait is not None
        retain = self.config.retain
        encode = self._encode
        published = 0
        for i, item in enumerate(items):
            try:
                topic, payload = encode(item)
                sent = nowait(topic, payload, 0, retain)
            except Exception as exc:  # one bad event must not stop the others; counted
                self._error(exc)
                continue
            if not sent:
                self._published += published
                return i
            published += 1
        self._published += published
        return len(items)

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
            self._rlog.warning(
                "queue full",
                "republish: queue full (%d events), dropped the %d oldest (%d so far); "
                "the lake still has every sample",
                self.config.max_queue,
                overflow,
                self._dropped_full,
            )
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
        # ``_closing`` and not only cancellation ends this loop: an awaited publish may swallow
        # a cancellation that races its completion (Python 3.11's asyncio.wait_for does).
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
        encoder = self._encoder
        if isinstance(item, Sample):
            return encoder.topic_for(item.path, item.metric), encoder.encode_event(item)
        return encoder.device_topic(item[0].path), encoder.encode_device_event(item)

    async def _publish_sequentially(self, chunk: list[_Item]) -> int:
        """QoS 0: publish in order; returns the number that failed.

        With ``publish_nowait`` each message is handed to the client without
        waiting for its socket write; one it refuses goes through the awaited
        ``publish`` (which waits until the client takes it, or raises when the
        connection is gone)."""
        config, publish, nowait = self.config, self._publish, self._publish_nowait
        failed = 0
        self._in_flight = len(chunk)
        for item in chunk:
            if self._closing:
                break  # the rest counts as dropped on close
            try:
                topic, payload = self._encode(item)
                if nowait is None or not nowait(topic, payload, config.qos, config.retain):
                    await publish(topic, payload, config.qos, config.retain)
            except Exception as exc:  # counted, the sink keeps running
                failed += 1
                self._error(exc)
            else:
                self._published += 1
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
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._rlog.warning(
            "publish error",
            "republish: publish failed: %s (%d failed so far); the lake still has every sample",
            self._last_error,
            self._errors,
        )
