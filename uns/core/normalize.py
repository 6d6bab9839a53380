"""Normalized UNS events: path, unit and context on every sample, and their JSON (pure).

:class:`Normalizer` runs once per batch, after the Sparkplug sessions and
before the sinks.  :meth:`~Normalizer.enrich`

1. resolves each sample's source to its ISA-95 path (``_unmapped/...`` when
   the plant model does not know it), applies the model's unit and UNS name
   overrides (samples and catalog entries alike, so the lake and the broker
   use the same names);
2. turns samples of context metrics (``Batch/ID`` -> ``batch_id``) into
   :class:`~uns.core.events.ContextChange` entries of the batch and applies them to
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
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from operator import attrgetter
from typing import Any

from uns.core.context import ContextStore
from uns.core.events import Batch, CatalogEntry, ContextChange, Sample
from uns.core.model import MetricInfo, PlantModel, Resolved
from uns.core.values import json_value, value_text
from uns.errors import ConfigError
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import MetricValue

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
        # Hot path (per sample).  Consecutive samples usually share their source (one
        # message), so the source is resolved again only when one of its ids is another
        # object.  The context is asked once per (path, ts) of the batch, so samples of one
        # path and time share one dict object (the lake renders each object once).
        model = self.model
        at = self.context.at
        samples = batch.samples
        changes_before = len(batch.context)
        _unset = object()
        group: object = _unset
        node: object = _unset
        device: object = _unset
        path, unmapped, has_keys, has_infos = "", False, False, False
        contexts: dict[tuple[str, int], dict[str, str]] = {}
        context_path: str | None = None
        context_ts = 0
        context: dict[str, str] = {}
        for sample in samples:
            if (
                device is not sample.device_id
                or node is not sample.edge_node_id
                or group is not sample.group_id
            ):
                group, node, device = sample.group_id, sample.edge_node_id, sample.device_id
                resolved: Resolved = model.resolve(sample.group_id, sample.edge_node_id, sample.device_id)
                path, unmapped = resolved.path, resolved.unmapped
                has_keys, has_infos = bool(resolved.context_keys), bool(resolved.metrics)
            sample.path = path
            sample.unmapped = unmapped
            if has_keys:
                key = resolved.context_keys.get(sample.metric)
                if key is not None:
                    self._context_metric(sample, key, batch)
            if has_infos:
                _apply_metric_info(sample, resolved.metrics)
            ts = sample.ts
            if ts != context_ts or path is not context_path:
                found = contexts.get((path, ts))
                if found is None:
                    found = contexts[path, ts] = at(path, ts)
                context, context_ts, context_path = found, ts, path
            sample.context = context
        if len(batch.context) != changes_before:
            # a context metric changed the store: the context of every sample is the one
            # after all of the batch's changes (a measurement at the same ts carries it)
            contexts.clear()
            for sample in samples:
                found = contexts.get((sample.path, sample.ts))
                if found is None:
                    found = contexts[sample.path, sample.ts] = at(sample.path, sample.ts)
                sample.context = found
        group = node = device = _unset
        for entry in batch.catalog:
            if entry.device_id is not device or entry.edge_node_id is not node or entry.group_id is not group:
                group, node, device = entry.group_id, entry.edge_node_id, entry.device_id
                resolved = model.resolve(entry.group_id, entry.edge_node_id, entry.device_id)
                path, has_infos = resolved.path, bool(resolved.metrics)
            entry.path = path
            if has_infos:
                _apply_metric_info(entry, resolved.metrics)

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
        """:meth:`event_json` as compact UTF-8 JSON, byte for byte what ``json`` makes of it.

        Per-event hot path: the text is assembled from fragments pre-rendered
        per (path, metric) and per context dict (see :class:`_Fragments`);
        only ts, value, quality, flags and seq are formatted per event."""
        f = _fragments(sample)
        value = sample.value
        # finite floats first: the common case; x - x is 0.0 only for finite x
        text = repr(value) if type(value) is float and value - value == 0.0 else _value_text(value)
        if sample.quality == "good" and not sample.is_historical:
            flags = f.good_live
        else:
            flags = f"{f.tail}{_quality_text(sample.quality)}{_TRUE if sample.is_historical else _FALSE}"
        context = sample.context
        if context:
            hit = _CONTEXTS.get(id(context))
            context_text = hit[1] if hit is not None and hit[0] is context else _context_text(context)
        else:
            context_text = "{}"
        seq, bdseq = sample.seq, sample.bdseq
        return (
            f'{{"ts":{sample.ts}{f.event_head}{text}{flags}{f.source}{"null" if seq is None else seq}'
            f',"bdseq":{"null" if bdseq is None else bdseq}}},"context":{context_text}}}'
        ).encode()

    def encode_device_event(self, samples: Sequence[Sample]) -> bytes:
        """:meth:`device_event_json` as compact UTF-8 JSON, byte for byte what ``json`` makes of it
        (fragments as in :meth:`encode_event`)."""
        if not samples:
            raise ValueError("a device event needs at least one sample")
        newest = max(samples, key=_sample_ts)
        context = newest.context if newest.context is not None else _NO_CONTEXT
        # the entries in one list, joined once; an entry's text before its value is
        # "," + its head (the first entry's comma is dropped by the slice below)
        parts: list[str] = []
        append = parts.append
        head: _Fragments | None = None
        for sample in samples:
            f = _fragments(sample)
            if sample is newest:
                head = f  # its path and source head the event
            value = sample.value
            own = sample.context if sample.context is not None else _NO_CONTEXT
            append(
                f"{f.metric_head}"
                f"{repr(value) if type(value) is float and value - value == 0.0 else _value_text(value)}"
                f"{f.good_ts if sample.quality == 'good' else _quality_ts_text(f, sample.quality)}"
                f"{sample.ts}{_TRUE if sample.is_historical else _FALSE}"
                f"{'}' if own is context or own == context else _own_context_text(own)}"
            )
        assert head is not None
        seq, bdseq = newest.seq, newest.bdseq
        return (
            f'{{"ts":{newest.ts}{head.path}{head.source}{"null" if seq is None else seq}'
            f',"bdseq":{"null" if bdseq is None else bdseq}}},"context":'
            f'{_context_text(context) if context else "{}"},"metrics":[{"".join(parts)[1:]}]}}'
        ).encode()


_sample_ts = attrgetter("ts")


def _apply_metric_info(item: Sample | CatalogEntry, infos: Mapping[str, MetricInfo]) -> None:
    """The plant model's display name and unit for the item's metric, if it has any."""
    info = infos.get(item.metric)
    if info is not None:
        item.metric = info.display_name
        if info.unit is not None:
            item.unit = info.unit


def _fragments(sample: Sample) -> _Fragments:
    """The cached fragments of the sample's (path, metric), checked against the fields a
    rebirth or a second source on the same path could change."""
    f = _FRAGMENTS.get((sample.path, sample.metric))
    if (
        f is None
        or f.datatype != sample.datatype
        or f.unit != sample.unit
        or f.group != sample.group_id
        or f.node != sample.edge_node_id
        or f.device != sample.device_id
    ):
        f = _Fragments.of(sample)
    return f


def _json_value(value: MetricValue) -> Any:
    # the common scalars skip the general conversion (per-event hot path)
    if isinstance(value, float):
        return value if math.isfinite(value) else json_value(value)
    if value is None or isinstance(value, int | str):  # bool is an int
        return value
    return json_value(value)


# ---------------------------------------------------------------- event text
#
# encode_event / encode_device_event write the JSON text themselves instead of
# building a dict for json: most of an event is the same from one value to the
# next (names, unit, source, context), so it is rendered once, escaped by
# json's own string encoder, and reused.  tests/test_republish.py checks the
# result byte for byte against json of event_json / device_event_json.

_TRUE = ',"historical":true'
_FALSE = ',"historical":false'
_NO_CONTEXT: dict[str, str] = {}  # a missing context (None) renders as {}; never mutated
_CONTEXT_CACHE_MAX = 4_096


def _json_text(value: Any) -> str:
    return "null" if value is None else encode_basestring(value)


class _Fragments:
    """The pre-rendered JSON of what one (path, metric) repeats in every event.

    Cached by (path, metric); the encoders check the fields a rebirth or a
    second source on the same path could change (datatype, unit, source)."""

    __slots__ = (
        "datatype",
        "device",
        "event_head",
        "good_live",
        "good_ts",
        "group",
        "metric_head",
        "node",
        "path",
        "source",
        "tail",
        "unit",
    )

    def __init__(self, sample: Sample) -> None:
        self.datatype = sample.datatype
        self.unit = sample.unit
        self.group = sample.group_id
        self.node = sample.edge_node_id
        self.device = sample.device_id
        path, metric = encode_basestring(sample.path), encode_basestring(sample.metric)
        self.path = f',"path":{path}'
        self.event_head = f'{self.path},"metric":{metric},"value":'  # metric mode, after "ts"
        self.metric_head = f',{{"metric":{metric},"value":'  # one entry of a device event, "," first
        self.tail = f',"datatype":"{_DATATYPE_NAMES[sample.datatype]}","unit":{_json_text(sample.unit)}'
        self.good_live = f'{self.tail},"quality":"good"{_FALSE}'  # metric mode: the usual flags
        self.good_ts = f'{self.tail},"quality":"good","ts":'  # device mode: up to the entry's ts
        self.source = (
            f',"source":{{"group":{_json_text(sample.group_id)},"node":{_json_text(sample.edge_node_id)}'
            f',"device":{_json_text(sample.device_id)},"seq":'
        )

    @staticmethod
    def of(sample: Sample) -> _Fragments:
        """Render and cache the fragments of ``sample``'s (path, metric)."""
        if len(_FRAGMENTS) >= _TOPIC_CACHE_MAX:
            _FRAGMENTS.clear()  # bounded: metric names come from the plant floor
        fragments = _FRAGMENTS[(sample.path, sample.metric)] = _Fragments(sample)
        return fragments


# Module-wide (events do not depend on the normalizer); one event loop uses them.
_FRAGMENTS: dict[tuple[str, str], _Fragments] = {}
# id(context dict) -> (the dict, its JSON).  The context store hands out one
# shared, read-only dict per path and state, so the text is made once per
# context change; keeping the dict keeps its id from being reused.
_CONTEXTS: dict[int, tuple[dict[str, str], str]] = {}


def _context_text(context: dict[str, str]) -> str:
    hit = _CONTEXTS.get(id(context))
    if hit is not None and hit[0] is context:
        return hit[1]
    text = _ENCODER.encode(context)
    if len(_CONTEXTS) >= _CONTEXT_CACHE_MAX:
        _CONTEXTS.clear()
    _CONTEXTS[id(context)] = (context, text)
    return text


def _own_context_text(context: dict[str, str]) -> str:
    """The closing of a device-event entry whose context differs from the event's."""
    return f',"context":{_context_text(context) if context else "{}"}}}'


def _quality_text(quality: str) -> str:
    return f',"quality":{encode_basestring(quality)}'


def _quality_ts_text(fragments: _Fragments, quality: str) -> str:
    """A device-event entry from its datatype up to its ts, for a quality other than good."""
    return f'{fragments.tail}{_quality_text(quality)},"ts":'


def _value_text(value: MetricValue) -> str:
    """JSON text of a value (finite floats are handled inline by the callers)."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)  # exact, as json writes it
    if kind is str:
        return encode_basestring(value)  # type: ignore[arg-type]
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    return _ENCODER.encode(json_value(value))
