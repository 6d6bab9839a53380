"""The ISA-95 plant model: which Sparkplug source is which piece of equipment (pure).

A model file (TOML, format in ``docs/model.md``, schema in
``schemas/plant-model.schema.json``) declares the equipment hierarchy and maps
Sparkplug sources, ``(group, node)`` or ``(group, node, device)``, to ISA-95
paths such as ``acme/basel/pilot/usp/br-101``.  Per metric it may override the
name and unit, give CPP limits, or mark the metric as context (a PLC's
``Batch/ID`` becomes ``batch_id`` of that path).

:func:`model_from_toml` validates the whole file before building anything, so a bad
file is rejected whole with one :class:`~uns.errors.ModelError` naming the
file, the key and (when it can be found) the line.

Sources that the model does not map resolve to
``_unmapped/<group>/<node>[/<device>]`` with ``unmapped=True``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from uns.core.context import check_context_key
from uns.errors import ContextError, ModelError

__all__ = [
    "MODEL_FORMAT",
    "UNMAPPED_ROOT",
    "Equipment",
    "MetricInfo",
    "PlantModel",
    "Resolved",
    "SourceKey",
    "model_from_toml",
    "parse_model",
]

MODEL_FORMAT = 1
UNMAPPED_ROOT = "_unmapped"

#: (group_id, edge_node_id, device_id or None)
SourceKey = tuple[str, str, str | None]

# Model path segments are plain so that model topics never need escaping; a
# leading "_" or "." is reserved for the engine's own trees (_unmapped, _context, _engine).
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SPARKPLUG_ID_FORBIDDEN = frozenset("/+#")
# Resolutions of unmapped sources are cached too; a misbehaving plant that
# invents ids must not grow the cache without bound.
_UNMAPPED_CACHE_MAX = 65_536


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """Per-metric overrides: UNS name, unit, CPP limits (``low``/``high``, inclusive), and
    ``alarm``: the metric is an alarm (true while it is active; the batch report lists
    every interval in which it was)."""

    display_name: str
    unit: str | None = None
    low: float | None = None
    high: float | None = None
    alarm: bool = False


@dataclass(frozen=True, slots=True)
class Equipment:
    """One node of the equipment hierarchy."""

    path: str
    level: str | None = None
    name: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where a Sparkplug source lives in the UNS, and its metric overrides.

    ``metrics`` and ``context_keys`` are keyed by the Sparkplug metric name."""

    path: str
    unmapped: bool
    metrics: Mapping[str, MetricInfo] = field(default_factory=lambda: _EMPTY_METRICS)
    context_keys: Mapping[str, str] = field(default_factory=lambda: _EMPTY_KEYS)


_EMPTY_METRICS: Mapping[str, MetricInfo] = MappingProxyType({})
_EMPTY_KEYS: Mapping[str, str] = MappingProxyType({})


class PlantModel:
    """A validated plant model.  Build it with :func:`model_from_toml` or :meth:`empty`."""

    __slots__ = ("_equipment", "_sources", "_unmapped_cache", "equipment_ids", "file", "name")

    def __init__(
        self,
        *,
        equipment: Mapping[str, Equipment],
        sources: Mapping[SourceKey, Resolved],
        name: str = "",
        file: str | None = None,
        equipment_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.file = file
        self._equipment = MappingProxyType(dict(equipment))
        self._sources = dict(sources)
        self._unmapped_cache: dict[SourceKey, Resolved] = {}
        #: equipment ids of other systems (an ISA-88 export's ``EquipmentID``) -> model path
        self.equipment_ids: Mapping[str, str] = MappingProxyType(dict(equipment_ids or {}))

    @classmethod
    def empty(cls) -> PlantModel:
        """A model that maps nothing: every source resolves under ``_unmapped``."""
        return cls(equipment={}, sources={})

    @property
    def equipment(self) -> Mapping[str, Equipment]:
        """The declared equipment, keyed by path."""
        return self._equipment

    @property
    def sources(self) -> Mapping[SourceKey, Resolved]:
        """The mapped sources (a copy)."""
        return MappingProxyType(self._sources)

    def resolve(self, group: str, node: str, device: str | None = None) -> Resolved:
        """The path and overrides of a source (hot path: one dict lookup when cached)."""
        key = (group, node, device)
        found = self._sources.get(key)
        if found is not None:
            return found
        found = self._unmapped_cache.get(key)
        if found is None:
            if len(self._unmapped_cache) >= _UNMAPPED_CACHE_MAX:
                self._unmapped_cache.clear()
            tail = f"{group}/{node}" if device is None else f"{group}/{node}/{device}"
            found = Resolved(path=f"{UNMAPPED_ROOT}/{tail}", unmapped=True)
            self._unmapped_cache[key] = found
        return found

    def metric(self, group: str, node: str, device: str | None, metric: str) -> MetricInfo | None:
        """The overrides of one metric, or None when the model says nothing about it."""
        return self.resolve(group, node, device).metrics.get(metric)

    def context_key(self, group: str, node: str, device: str | None, metric: str) -> str | None:
        """The context key a metric feeds (e.g. ``batch_id``), or None for a measurement."""
        return self.resolve(group, node, device).context_keys.get(metric)

    def alarm_metrics(self) -> frozenset[tuple[str, str]]:
        """``(path, UNS metric name)`` of every metric marked ``alarm = true``."""
        return frozenset(
            (resolved.path, info.display_name)
            for resolved in self._sources.values()
            for info in resolved.metrics.values()
            if info.alarm
        )

    def equipment_path(self, equipment_id: str) -> str | None:
        """The path of another system's equipment id: the ``[equipment_ids]`` map, else the
        equipment whose display ``name`` it is (when only one has it), else the id itself
        when it is a declared path; None when nothing matches."""
        found = self.equipment_ids.get(equipment_id)
        if found is not None:
            return found
        named = [e.path for e in self._equipment.values() if e.name == equipment_id]
        if len(named) == 1:
            return named[0]
        return equipment_id if equipment_id in self._equipment else None


# --------------------------------------------------------------------------- loading


def model_from_toml(text: str, *, file: str | None = None) -> PlantModel:
    """Validate and build a plant model from the text of a TOML file.

    Raises :class:`~uns.errors.ModelError` (file, key path, line) for any
    problem; nothing of a bad file is used."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"not valid TOML: {exc}", file=file) from exc
    return parse_model(data, file=file, text=text)


def parse_model(data: Mapping[str, Any], *, file: str | None = None, text: str | None = None) -> PlantModel:
    """Validate an already-parsed model document and build the model.

    ``text`` (the TOML source) only serves to name the line of an error."""
    return _Validator(file, text).build(data)


class _Invalid(Exception):
    def __init__(self, key: list[str | int], message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _key_text(key: list[str | int]) -> str:
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            plain = re.fullmatch(r"[A-Za-z0-9_-]+", part) is not None
            shown = part if plain else f'"{part}"'
            out += shown if not out else f".{shown}"
    return out


class _Validator:
    """Checks a parsed document completely, then builds the model."""

    def __init__(self, file: str | None, text: str | None) -> None:
        self.file = file
        self.text = text

    def build(self, data: Mapping[str, Any]) -> PlantModel:
        try:
            return self._build(data)
        except _Invalid as exc:
            line = _find_line(self.text, exc.key) if self.text is not None else None
            message = exc.message if line is None else f"{exc.message} (line {line})"
            raise ModelError(message, file=self.file, key=_key_text(exc.key) or None) from None

    def _build(self, data: Mapping[str, Any]) -> PlantModel:
        _only_keys(data, [], {"format", "name", "description", "equipment", "source", "equipment_ids"})
        fmt = data.get("format", MODEL_FORMAT)
        if type(fmt) is not int or fmt != MODEL_FORMAT:
            raise _Invalid(
                ["format"], f"unsupported model format {fmt!r} (this uns reads format {MODEL_FORMAT})"
            )
        name = _opt_str(data, [], "name") or ""
        _opt_str(data, [], "description")
        equipment = self._equipment(data.get("equipment", {}))
        sources = self._sources(data.get("source", []), equipment)
        ids = self._equipment_ids(data.get("equipment_ids", {}), equipment)
        return PlantModel(equipment=equipment, sources=sources, name=name, file=self.file, equipment_ids=ids)

    @staticmethod
    def _equipment_ids(table: Any, equipment: Mapping[str, Equipment]) -> dict[str, str]:
        """``[equipment_ids]``: another system's equipment id -> a declared path."""
        if not isinstance(table, dict):
            raise _Invalid(["equipment_ids"], 'must be a table: equipment id = "path"')
        for ident, path in table.items():
            if not ident:
                raise _Invalid(["equipment_ids", ident], "an equipment id must not be empty")
            if not isinstance(path, str) or path not in equipment:
                raise _Invalid(["equipment_ids", ident], f"{path!r} is not a path declared under [equipment]")
        return dict(table)

    def _equipment(self, table: Any) -> dict[str, Equipment]:
        if not isinstance(table, dict):
            raise _Invalid(["equipment"], "must be a table of equipment keyed by path")
        out: dict[str, Equipment] = {}
        for path, attrs in table.items():
            key: list[str | int] = ["equipment", path]
            _check_model_path(key, path)
            if not isinstance(attrs, dict):
                raise _Invalid(key, "must be a table (level, name, description)")
            _only_keys(attrs, key, {"level", "name", "description"})
            level = _opt_str(attrs, key, "level")
            if level is not None and not re.fullmatch(r"[a-z][a-z0-9_]*", level):
                raise _Invalid(
                    [*key, "level"], f"level {level!r} must be lower_snake_case, e.g. process_cell"
                )
            out[path] = Equipment(
                path=path,
                level=level,
                name=_opt_str(attrs, key, "name"),
                description=_opt_str(attrs, key, "description"),
            )
        for path in out:
            parent = path.rpartition("/")[0]
            if parent and parent not in out:
                raise _Invalid(["equipment", path], f"its parent {parent!r} is not declared")
        return out

    def _sources(self, array: Any, equipment: Mapping[str, Equipment]) -> dict[SourceKey, Resolved]:
        if not isinstance(array, list):
            raise _Invalid(["source"], "must be an array of tables ([[source]])")
        out: dict[SourceKey, Resolved] = {}
        shown_on_path: dict[tuple[str, str], SourceKey] = {}  # (path, UNS metric name) -> its source
        for index, entry in enumerate(array):
            key: list[str | int] = ["source", index]
            if not isinstance(entry, dict):
                raise _Invalid(key, "must be a table")
            _only_keys(entry, key, {"group", "node", "device", "path", "metrics"})
            group = _sparkplug_id(entry, key, "group", required=True)
            node = _sparkplug_id(entry, key, "node", required=True)
            device = _sparkplug_id(entry, key, "device", required=False)
            assert group is not None
            assert node is not None
            path = entry.get("path")
            if not isinstance(path, str):
                raise _Invalid([*key, "path"], "is required: the ISA-95 path of this source")
            if path not in equipment:
                _check_model_path([*key, "path"], path)
                raise _Invalid([*key, "path"], f"{path!r} is not declared under [equipment]")
            source: SourceKey = (group, node, device)
            if source in out:
                raise _Invalid(key, f"source {_source_text(source)} is mapped twice")
            metrics, context_keys = self._metrics(entry.get("metrics", {}), [*key, "metrics"])
            for metric, info in metrics.items():
                other = shown_on_path.setdefault((path, info.display_name), source)
                if other != source:
                    raise _Invalid(
                        [*key, "metrics", metric],
                        f"UNS name {info.display_name!r} on {path!r} is also a metric of source "
                        f"{_source_text(other)}: sources sharing a path need different metric names",
                    )
            out[source] = Resolved(
                path=path,
                unmapped=False,
                metrics=MappingProxyType(metrics) if metrics else _EMPTY_METRICS,
                context_keys=MappingProxyType(context_keys) if context_keys else _EMPTY_KEYS,
            )
        return out

    def _metrics(self, table: Any, key: list[str | int]) -> tuple[dict[str, MetricInfo], dict[str, str]]:
        if not isinstance(table, dict):
            raise _Invalid(key, "must be a table keyed by Sparkplug metric name")
        metrics: dict[str, MetricInfo] = {}
        context_keys: dict[str, str] = {}
        names_used: dict[str, str] = {}
        for metric, attrs in table.items():
            mkey = [*key, metric]
            if not metric:
                raise _Invalid(mkey, "a metric name must not be empty")
            if not isinstance(attrs, dict):
                raise _Invalid(mkey, "must be a table (display_name, unit, low, high, context, alarm)")
            _only_keys(attrs, mkey, {"display_name", "unit", "low", "high", "context", "alarm"})
            display = _opt_str(attrs, mkey, "display_name")
            if display is not None:
                _check_metric_name([*mkey, "display_name"], display)
            shown = display or metric
            if shown in names_used:
                raise _Invalid(mkey, f"UNS name {shown!r} is also used by metric {names_used[shown]!r}")
            names_used[shown] = metric
            unit = _opt_str(attrs, mkey, "unit")
            low = _opt_number(attrs, mkey, "low")
            high = _opt_number(attrs, mkey, "high")
            if low is not None and high is not None and low > high:
                raise _Invalid([*mkey, "low"], f"low {low} is above high {high}")
            context = _opt_str(attrs, mkey, "context")
            if context is not None:
                _check_context_key([*mkey, "context"], context)
                context_keys[metric] = context
            alarm = attrs.get("alarm", False)
            if not isinstance(alarm, bool):
                raise _Invalid([*mkey, "alarm"], "must be true or false")
            metrics[metric] = MetricInfo(display_name=shown, unit=unit, low=low, high=high, alarm=alarm)
        return metrics, context_keys


def _source_text(source: SourceKey) -> str:
    return "/".join(p for p in source if p is not None)


def _only_keys(table: Mapping[str, Any], key: list[str | int], allowed: set[str]) -> None:
    for name in table:
        if name not in allowed:
            raise _Invalid([*key, name], f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _opt_str(table: Mapping[str, Any], key: list[str | int], name: str) -> str | None:
    value = table.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _Invalid([*key, name], "must be a non-empty string")
    return value


def _opt_number(table: Mapping[str, Any], key: list[str | int], name: str) -> float | None:
    value = table.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Invalid([*key, name], "must be a finite number")
    return float(value)


def _sparkplug_id(table: Mapping[str, Any], key: list[str | int], name: str, *, required: bool) -> str | None:
    value = table.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _Invalid([*key, name], "must be a non-empty string (a Sparkplug id)")
    if _SPARKPLUG_ID_FORBIDDEN.intersection(value):
        raise _Invalid([*key, name], f"Sparkplug id {value!r} must not contain '/', '+' or '#'")
    return value


def _check_model_path(key: list[str | int], path: str) -> None:
    for segment in path.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise _Invalid(
                key,
                f"path {path!r}: segment {segment!r} must be 1-64 of A-Z a-z 0-9 . _ - "
                "and start with a letter or digit",
            )


def _check_metric_name(key: list[str | int], name: str) -> None:
    if "+" in name or "#" in name or "%" in name or "\x00" in name:
        raise _Invalid(key, f"{name!r} must not contain '+', '#', '%' or NUL")
    if any(not level for level in name.split("/")):
        raise _Invalid(key, f"{name!r} must not have empty '/' levels")


def _check_context_key(key: list[str | int], name: str) -> None:
    """The context store's own rule (docs/model.md §4), so a metric marked as context can
    never produce a key the store refuses while the engine runs."""
    try:
        check_context_key(name)
    except ContextError as exc:
        raise _Invalid(key, str(exc)) from None


# ------------------------------------------------------------------ error lines


def _find_line(text: str | None, key: list[str | int]) -> int | None:
    """Best-effort 1-based line of a key path in the TOML text (None if not found)."""
    if text is None or not key:
        return None
    lines = text.splitlines()
    start, end = 0, len(lines)
    rest: list[str | int] = list(key)
    head = rest.pop(0)
    if head == "source" and rest and isinstance(rest[0], int):
        index = rest.pop(0)
        headers = [i for i, ln in enumerate(lines) if re.match(r"\s*\[\[\s*source\s*\]\]", ln)]
        if not isinstance(index, int) or index >= len(headers):
            return None
        start = headers[index]
        end = headers[index + 1] if index + 1 < len(headers) else len(lines)
    elif head == "equipment" and rest:
        path = str(rest.pop(0))
        pattern = re.compile(r'\s*\[\s*equipment\s*\.\s*["\']?' + re.escape(path) + r'["\']?\s*\]')
        found = next((i for i, ln in enumerate(lines) if pattern.match(ln)), None)
        if found is None:
            return None
        start = found
        end = next((i for i in range(found + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    else:
        rest.insert(0, head)
    best = start
    for part in rest:
        name = re.escape(str(part))
        pattern = re.compile(r'(^|[\s.\[{,])["\']?' + name + r'["\']?\s*(=|\]|\.)')
        found = next((i for i in range(best, end) if pattern.search(lines[i])), None)
        if found is None:
            break
        best = found
    return best + 1
