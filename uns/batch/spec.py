"""Specifications: the limits a batch's parameters are reviewed against (pure).

A spec file (TOML, ``schemas/spec.schema.json``) holds ``[[limit]]`` entries::

    [[limit]]
    metric = "Temperature"              # the metric's name in the lake
    path = "acme/basel/pilot/usp/*"     # optional glob on the ISA-95 path
    product = "mAb-A"                   # optional
    recipe = "mAb-A v3"                 # optional
    phase = "growth"                    # optional
    alert_low = 36.8                    # any of the four limits may be absent
    alert_high = 37.2
    action_low = 36.5
    action_high = 37.5
    expected_interval_s = 1.0           # optional: completeness

**The most specific matching entry wins**, as a whole (its limits are not
merged with those of less specific entries).  An entry matches a sample's
metric, path, product, recipe and phase when its metric is equal and every
scope key it has matches (``path`` as a glob where ``*`` also crosses ``/``,
the others exactly).  Specificity, compared in this order: an entry with
``phase`` beats one without; then ``recipe``; then ``product``; then
``path``; then the longer literal part of the path glob (characters other
than ``*?[]``).  Two entries with the same metric and the same scope are an
error; among remaining ties the first in the file wins.

Where no entry matches, the fallbacks are the plant model's ``low``/``high``
(as action limits), then the ``engLow``/``engHigh`` of the metric's newest
BIRTH (:func:`fallback_limits`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from uns.errors import BatchError

__all__ = ["LIMIT_KEYS", "Limit", "Limits", "Spec", "fallback_limits", "parse_spec"]

#: the four limits, from lowest to highest where all are given
LIMIT_KEYS: Final = ("action_low", "alert_low", "alert_high", "action_high")
_SCOPE: Final = ("phase", "recipe", "product", "path")  # most significant first
_NUMBERS: Final = (*LIMIT_KEYS, "expected_interval_s")
_ALLOWED: Final = frozenset({"metric", *_SCOPE, *_NUMBERS})


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits that apply to one parameter (any may be None) and where they came from."""

    source: str = "spec"  # spec | model | birth
    action_low: float | None = None
    alert_low: float | None = None
    alert_high: float | None = None
    action_high: float | None = None
    #: completeness: one sample is expected this often
    expected_interval_s: float | None = None

    @property
    def any(self) -> bool:
        return any(getattr(self, k) is not None for k in LIMIT_KEYS)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (*LIMIT_KEYS, "expected_interval_s", "source")}


@dataclass(frozen=True, slots=True)
class Limit:
    """One ``[[limit]]`` entry of a spec file."""

    metric: str
    limits: Limits
    path: str | None = None
    product: str | None = None
    recipe: str | None = None
    phase: str | None = None
    index: int = 0  # position in the file

    def matches(
        self, metric: str, path: str, product: str | None, recipe: str | None, phase: str | None
    ) -> bool:
        if metric != self.metric:
            return False
        if self.path is not None and not fnmatch.fnmatchcase(path, self.path):
            return False
        wanted = ((self.product, product), (self.recipe, recipe), (self.phase, phase))
        return all(want is None or want == got for want, got in wanted)

    def specificity(self) -> tuple[int, ...]:
        literal = sum(c not in "*?[]" for c in self.path) if self.path is not None else -1
        present = tuple(int(getattr(self, k) is not None) for k in _SCOPE)
        return (*present, literal, -self.index)


@dataclass(frozen=True, slots=True)
class Spec:
    """A parsed spec file: its entries, and its ``name``/``version`` for the report header."""

    limits: tuple[Limit, ...] = ()
    name: str | None = None
    version: str | None = None
    file: str | None = None
    #: SHA-256 of the spec file's text: what a signature records of the spec it was read with
    sha256: str | None = None

    def identity(self) -> dict[str, str | None]:
        """The spec's identity a signature records (uns.audit.signatures): file, name,
        version and the SHA-256 of its text."""
        return {"file": self.file, "name": self.name, "version": self.version, "sha256": self.sha256}

    def resolve(
        self, metric: str, path: str, *, product: str | None, recipe: str | None, phase: str | None
    ) -> Limits | None:
        """The limits of the most specific matching entry, None when no entry matches."""
        found = [e for e in self.limits if e.matches(metric, path, product, recipe, phase)]
        if not found:
            return None
        return max(found, key=Limit.specificity).limits

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(e.metric for e in self.limits)


def fallback_limits(
    model_low: float | None, model_high: float | None, birth: Mapping[str, Any]
) -> Limits | None:
    """Limits where no spec entry matches: the plant model's ``low``/``high`` as action
    limits, else the ``engLow``/``engHigh`` properties of the newest BIRTH; None without either."""
    if model_low is not None or model_high is not None:
        return Limits(action_low=model_low, action_high=model_high, source="model")
    low, high = _number(birth.get("engLow")), _number(birth.get("engHigh"))
    if low is not None or high is not None:
        return Limits(action_low=low, action_high=high, source="birth")
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def parse_spec(text: str, *, file: str | None = None) -> Spec:
    """Parse and validate a spec file's text; BatchError names the file, entry and key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BatchError(f"not valid TOML: {exc}", file=file) from exc
    unknown = set(data) - {"limit", "name", "version"}
    if unknown:
        raise BatchError(
            f"unknown top-level key {sorted(unknown)[0]!r} (allowed: limit, name, version)", file=file
        )
    header = {k: data.get(k) for k in ("name", "version")}
    for key, value in header.items():
        if value is not None and not isinstance(value, str):
            raise BatchError(f"{key} must be text", file=file)
    entries = data.get("limit", [])
    if not isinstance(entries, list):
        raise BatchError("limit must be an array of tables ([[limit]])", file=file)
    limits = tuple(_entry(entry, i, file) for i, entry in enumerate(entries))
    seen: dict[tuple[str | None, ...], int] = {}
    for entry in limits:
        scope = (entry.metric, entry.path, entry.product, entry.recipe, entry.phase)
        if scope in seen:
            raise BatchError(
                f"limit[{entry.index}] has the same metric and scope as limit[{seen[scope]}]", file=file
            )
        seen[scope] = entry.index
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return Spec(limits, name=header["name"], version=header["version"], file=file, sha256=digest)


def _entry(entry: Any, index: int, file: str | None) -> Limit:
    where = f"limit[{index}]"
    if not isinstance(entry, dict):
        raise BatchError(f"{where} must be a table", file=file)
    extra = set(entry) - _ALLOWED
    if extra:
        raise BatchError(
            f"{where}: unknown key {sorted(extra)[0]!r} (allowed: {', '.join(sorted(_ALLOWED))})", file=file
        )
    metric = entry.get("metric")
    if not isinstance(metric, str) or not metric:
        raise BatchError(f"{where}: metric (text) is required", file=file)
    scope: dict[str, str | None] = {}
    for key in _SCOPE:
        value = entry.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise BatchError(f"{where}.{key} must be non-empty text", file=file)
        scope[key] = value
    numbers: dict[str, float | None] = {}
    for key in _NUMBERS:
        value = entry.get(key)
        if value is not None and _number(value) is None:
            raise BatchError(f"{where}.{key} must be a finite number, got {value!r}", file=file)
        numbers[key] = None if value is None else float(value)
    interval = numbers["expected_interval_s"]
    if interval is not None and interval <= 0:
        raise BatchError(f"{where}.expected_interval_s must be positive", file=file)
    _check_order(numbers, where, file)
    return Limit(
        metric=metric,
        limits=Limits(**numbers),  # type: ignore[arg-type]
        path=scope["path"],
        product=scope["product"],
        recipe=scope["recipe"],
        phase=scope["phase"],
        index=index,
    )


def _check_order(numbers: Mapping[str, float | None], where: str, file: str | None) -> None:
    """action_low <= alert_low <= alert_high <= action_high, for the limits given."""
    given: Sequence[tuple[str, float]] = [(k, v) for k in LIMIT_KEYS if (v := numbers[k]) is not None]
    for (low_key, low), (high_key, high) in itertools.pairwise(given):
        if low > high:
            raise BatchError(f"{where}: {low_key} {low} is above {high_key} {high}", file=file)
