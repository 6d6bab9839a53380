"""Normalized UNS events: path, unit and context on every sample, and their JSON (pure).

:class:`Normalizer` runs once per batch, after the Sparkplug sessions and
before the sinks.  :meth:`~Normalizer.enrich`

1. resolves each sample's source to its ISA-95 path (``_unmapped/...`` when
   the plant model does not know it), applies the model's unit and UNS name
   overrides (samples and catalog entries alike, so the lake and the broker
   use the same names);
2. turns samples of context metrics (``Batch/ID`` -> ``batch_id``) into
   :class:`~uns.events.ContextChange` entries of the batch and applies them to
   the context store -- before step 3, so a measurement in the same message at
   the same timestamp already carries the new context; a value equal to the
   one the path already holds is not repeated;
3. attaches the context valid at each sample's own timestamp.

Topic names: ``<prefix>/<path>/<metric>`` where the ``/`` folders of a
metric name become topic levels.  Each level is made safe for MQTT by a
reversible rule (:func:`sanitize_name` / :func:`unsanitize_name`):
``%`` -> ``%25``, ``+`` -> ``%2B``, ``#`` -> ``%23``, NUL -> ``%00``, and an
empty level becomes a lone ``%`` (which the escaping can never produce
otherwise).  Names without these characters are unchanged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from uns.context import ContextStore
from uns.errors import ConfigError
from uns.events import Batch, ContextChange, Sample
from uns.model import PlantModel, Resolved
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import MetricValue
from uns.values import json_value, value_text

__all__ = [
    "DEFAULT_PREFIX",
    "Normalizer",
    "check_prefix",
    "sanitize_level",
    "sanitize_name",
    "unsanitize_level",
    "unsanitize_name",
]

DEFAULT_PREFIX = "uns/v1"

_ESCAPE = str.maketrans({"%": "%25", "+": "%2B", "#": "%23", "\x00": "%00"})
_UNESCAPE = {"%25": "%", "%2B": "+", "%23": "#", "%00": "\x00"}
_ESCAPED = re.compile(r"%(25|2B|23|00)")
_NEEDS_ESCAPE = re.compile(r"[%+#\x00]|^/|/$|//|^$")
EMPTY_LEVEL = "%"
# Topic caches are bounded: metric names come from the plant floor.
_TOPIC_CACHE_MAX = 200_000
_DATATYPE_NAMES = {datatype: datatype.name for datatype in DataType}
# One encoder for all events: json.dumps with options builds a new one per call.
# allow_nan=False: json_value already turned non-finite floats into strings,
# so a NaN here would be a bug that must not produce invalid JSON.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sanitize_level(level: str) -> str:
    """One topic level made safe for MQTT (see module docstring)."""
    if not level:
        return EMPTY_LEVEL
    return level.translate(_ESCAPE)


def unsanitize_level(level: str) -> str:
    """The inverse of :func:`sanitize_level`; ValueError for text it cannot have produced."""
    if level == EMPTY_LEVEL:
        return ""
    decoded = _ESCAPED.sub(lambda m: _UNESCAPE[m.group(0)], level)
    if "+" in level or "#" in level or "\x00" in level or level.count("%") != len(_ESCAPED.findall(level)):
        raise ValueError(f"not a sanitized topic level: {level!r}")
    return decoded


def sanitize_name(name: str) -> str:
    """A ``/``-separated name made safe as MQTT topic levels (reversible)."""
    if not _NEEDS_ESCAPE.search(name):
        return name
    return "/".join(sanitize_level(level) for level in name.split("/"))


def unsanitize_name(topic: str) -> str:
    """The inverse of :func:`sanitize_name`."""
    return "/".join(unsanitize_level(level) for level in topic.split("/"))


def check_prefix(prefix: str) -> str:
    """A valid UNS topic prefix (non-empty levels, no wildcards, not ``$...``)."""
    if (
        not prefix
        or prefix.startswith("$")
        or _NEEDS_ESCAPE.search(prefix)
        or any(not level for level in prefix.split("/"))
    ):
        raise ConfigError(
            f"UNS prefix {prefix!r} must be non-empty '/'-separated levels without '+', '#', '%' "
            "and must not start with '$'",
            key="engine.prefix",
        )
    return prefix


class Normalizer:
    """Enriches batches and renders normalized events and their topics."""

    __slots__ = ("_device_topics", "_topics", "context", "model", "prefix")

    def __init__(self, model: PlantModel, context: ContextStore, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.model = model
        self.context = context
        self.prefix = check_prefix(prefix)
        self._topics: dict[tuple[str, str], str] = {}
        self._device_topics: dict[str, str] = {}

    # ---------------------------------------------------------------- enrich

    def enrich(self, batch: Batch) -> None:
        """Fill path, unit, UNS name, unmapped and context of every sample (see module doc)."""
        model = self.model
        last_source: tuple[str, str, str | None] | None = None
        resolved: Resolved | None = None
        for sample in batch.samples:
            source = (sample.group_id, sample.edge_node_id, sample.device_id)
            if source != last_source or resolved is None:
                resolved = model.resolve(*source)
                last_source = source
            sample.path = resolved.path
            sample.unmapped = resolved.unmapped
            if resolved.context_keys:
                key = resolved.context_keys.get(sample.metric)
                if key is not None:
                    self._context_metric(sample, key, batch)
            if resolved.metrics:
                info = resolved.metrics.get(sample.metric)
                if info is not None:
                    sample.metric = info.display_name
                    if info.unit is not None:
                        sample.unit = info.unit
        for entry in batch.catalog:
            resolved = model.resolve(entry.group_id, entry.edge_node_id, entry.device_id)
            entry.path = resolved.path
            info = resolved.metrics.get(entry.metric)
            if info is not None:
                entry.metric = info.display_name
                if info.unit is not None:
                    entry.unit = info.unit
        at = self.context.at
        for sample in batch.samples:
            sample.context = at(sample.path, sample.ts)

    def _context_metric(self, sample: Sample, key: str, batch: Batch) -> None:
        value = value_text(sample.value)
        if self.context.value_at(sample.path, key, sample.ts) == value:
            return  # births and periodic reports repeat the value; the history needs it once
        device = f"/{sample.device_id}" if sample.device_id is not None else ""
        change = ContextChange(
            ts=sample.ts,
            received_at=sample.received_at,
            path=sample.path,
            key=key,
            value=value,
            source=f"sparkplug:{sample.group_id}/{sample.edge_node_id}{device}/{sample.metric}",
        )
        self.context.apply(change)
        batch.context.append(change)

    # ---------------------------------------------------------------- topics

    def topic_for(self, path: str, metric: str) -> str:
        """``<prefix>/<path>/<metric>``, sanitized (cached per (path, metric))."""
        key = (path, metric)
        topic = self._topics.get(key)
        if topic is None:
            if len(self._topics) >= _TOPIC_CACHE_MAX:
                self._topics.clear()
            topic = self._topics[key] = f"{self.prefix}/{sanitize_name(path)}/{sanitize_name(metric)}"
        return topic

    def device_topic(self, path: str) -> str:
        """``<prefix>/<path>``, sanitized: the topic of device-mode events."""
        topic = self._device_topics.get(path)
        if topic is None:
            if len(self._device_topics) >= _TOPIC_CACHE_MAX:
                self._device_topics.clear()
            topic = self._device_topics[path] = f"{self.prefix}/{sanitize_name(path)}"
        return topic

    # ---------------------------------------------------------------- events

    @staticmethod
    def event_json(sample: Sample) -> dict[str, Any]:
        """The normalized event of a sample (``schemas/uns-event.schema.json``)."""
        return {
            "ts": sample.ts,
            "path": sample.path,
            "metric": sample.metric,
            "value": _json_value(sample.value),
            "datatype": _DATATYPE_NAMES[sample.datatype],
            "unit": sample.unit,
            "quality": sample.quality,
            "historical": sample.is_historical,
            "source": {
                "group": sample.group_id,
                "node": sample.edge_node_id,
                "device": sample.device_id,
                "seq": sample.seq,
                "bdseq": sample.bdseq,
            },
            "context": sample.context if sample.context is not None else {},
        }

    @staticmethod
    def device_event_json(samples: Sequence[Sample]) -> dict[str, Any]:
        """One event for the samples of one message and path (device mode).

        ``ts`` and ``context`` are those of the newest sample; a metric whose
        own context differs (an older, historical value) carries its own
        ``context``.  Schema: ``$defs/deviceEvent`` in uns-event.schema.json."""
        if not samples:
            raise ValueError("a device event needs at least one sample")
        newest = max(samples, key=_sample_ts)
        context = newest.context if newest.context is not None else {}
        metrics: list[dict[str, Any]] = []
        for sample in samples:
            entry = {
                "metric": sample.metric,
                "value": _json_value(sample.value),
                "datatype": _DATATYPE_NAMES[sample.datatype],
                "unit": sample.unit,
                "quality": sample.quality,
                "ts": sample.ts,
                "historical": sample.is_historical,
            }
            own = sample.context if sample.context is not None else {}
            if own is not context and own != context:
                entry["context"] = own
            metrics.append(entry)
        return {
            "ts": newest.ts,
            "path": newest.path,
            "source": {
                "group": newest.group_id,
                "node": newest.edge_node_id,
                "device": newest.device_id,
                "seq": newest.seq,
                "bdseq": newest.bdseq,
            },
            "context": context,
            "metrics": metrics,
        }

    def encode_event(self, sample: Sample) -> bytes:
        """The normalized event as compact UTF-8 JSON."""
        return _ENCODER.encode(self.event_json(sample)).encode()

    def encode_device_event(self, samples: Sequence[Sample]) -> bytes:
        """The device-mode event as compact UTF-8 JSON."""
        return _ENCODER.encode(self.device_event_json(samples)).encode()


def _sample_ts(sample: Sample) -> int:
    return sample.ts


def _json_value(value: MetricValue) -> Any:
    # the common scalars skip the general conversion (per-event hot path)
    if isinstance(value, float):
        return value if math.isfinite(value) else json_value(value)
    if value is None or isinstance(value, int | str):  # bool is an int
        return value
    return json_value(value)
