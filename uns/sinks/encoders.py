"""The republisher's encoders: topic and JSON payload of each normalized event (pure).

Two shapes (``schemas/uns-event.schema.json``): one event per sample on
``<prefix>/<path>/<metric>`` (:meth:`EventEncoder.encode_event`), or one per
received message and path on ``<prefix>/<path>`` with all its metrics
(:meth:`EventEncoder.encode_device_event`, ``$defs/deviceEvent``).  Topic
names follow :mod:`uns.core.topics`.

:meth:`~EventEncoder.event_json` / :meth:`~EventEncoder.device_event_json`
are the reference: the event as a dict.  The ``encode_*`` methods write the
same JSON text themselves instead of building a dict for ``json``: most of an
event is the same from one value to the next (names, unit, source, context),
so it is rendered once, escaped by json's own string encoder, and reused.
tests/test_republish.py checks the result byte for byte against ``json`` of
the reference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring
from operator import attrgetter
from typing import Any

from uns.core.events import Sample
from uns.core.topics import DEFAULT_PREFIX, TOPIC_CACHE_MAX, TopicNames
from uns.core.values import json_value
from uns.sparkplug.datatypes import DataType
from uns.sparkplug.payload import MetricValue

__all__ = ["EventEncoder"]

_DATATYPE_NAMES = {datatype: datatype.name for datatype in DataType}
# One encoder for all events: json.dumps with options builds a new one per call.
# allow_nan=False: json_value already turned non-finite floats into strings,
# so a NaN here would be a bug that must not produce invalid JSON.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class EventEncoder:
    """Topics and payloads of the normalized events under one prefix."""

    __slots__ = ("device_topic", "prefix", "topic_for")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        names = TopicNames(prefix)
        self.prefix = names.prefix
        # the cached topic methods themselves: no extra call per event
        self.topic_for: Callable[[str, str], str] = names.topic_for
        self.device_topic: Callable[[str], str] = names.device_topic

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


def _json_value(value: MetricValue) -> Any:
    # the common scalars skip the general conversion (per-event hot path)
    if isinstance(value, float):
        return value if math.isfinite(value) else json_value(value)
    if value is None or isinstance(value, int | str):  # bool is an int
        return value
    return json_value(value)


# ---------------------------------------------------------------- event text

_TRUE = ',"historical":true'
_FALSE = ',"historical":false'
_NO_CONTEXT: dict[str, str] = {}  # a missing context (None) renders as {}; never mutated
_CONTEXT_CACHE_MAX = 4_096


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
        if len(_FRAGMENTS) >= TOPIC_CACHE_MAX:
            _FRAGMENTS.clear()  # bounded: metric names come from the plant floor
        fragments = _FRAGMENTS[(sample.path, sample.metric)] = _Fragments(sample)
        return fragments


# Module-wide (events do not depend on the prefix); one event loop uses them.
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
