"""What one Sparkplug message may cost: the per-message limits (pure).

A message is untrusted bytes from anyone who can publish on ``spBv1.0/#``.  Its
cost -- memory, time on the event loop, rows in the lake -- must not grow without
bound with what it holds, so three limits are checked at the decoder's entry,
before anything is built from the message (docs/sparkplug.md section 6):

- ``max_payload_bytes``: the payload's size, checked before it is parsed (a
  compressed payload's inner bytes are bound by ``max_decompressed_bytes``);
- ``max_metrics``: the metrics of the payload, those inside Templates included,
  checked right after the protobuf parse and before any metric is decoded;
- ``max_nesting``: Templates in Templates and PropertySets in PropertySets,
  checked as the decoder descends.

A message over a limit raises :class:`~uns.errors.SparkplugLimitError` and is
refused whole (the session records it as rejected, with the reason).  The
defaults are far above what a plant sends (its largest births hold some
thousands of metrics); the config's ``[sparkplug]`` section sets them.  Any
decoder -- this package's Python one or a native one -- takes a
:class:`MessageLimits` and applies the same checks in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from uns.errors import SparkplugLimitError

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_METRICS",
    "DEFAULT_MAX_NESTING",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MAX_NESTING_ALLOWED",
    "OVER_LIMIT",
    "MessageLimits",
    "check_metric_count",
    "check_nesting",
    "check_payload_size",
]

#: how the reason of a refusal for a limit begins (SparkplugLimitError's, and the rejected row's)
OVER_LIMIT: Final = "over limit"
#: 16 MiB: Eclipse Tahu's own bound for a decompressed payload, 16 times EMQX's default
#: packet limit; mosquitto would take 256 MB
DEFAULT_MAX_PAYLOAD_BYTES: Final = 16 * 1024 * 1024
#: metrics of one message (Template members included): the largest births of real plants
#: hold some thousands; 100,000 costs about 0.3 GB of memory and a few seconds of CPU
DEFAULT_MAX_METRICS: Final = 100_000
#: Template-in-Template or PropertySet-in-PropertySet levels
DEFAULT_MAX_NESTING: Final = 32
#: the protobuf parser refuses messages nested deeper than 100 levels; a Template level
#: is two (Metric, Template), so deeper than this the parser would answer first
MAX_NESTING_ALLOWED: Final = 48


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """The per-message limits (see the module doc); each > 0."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_metrics: int = DEFAULT_MAX_METRICS
    max_nesting: int = DEFAULT_MAX_NESTING


DEFAULT_LIMITS: Final = MessageLimits()


def check_payload_size(size: int, limits: MessageLimits, *, key: str = "sparkplug.max_payload_bytes") -> None:
    """Refuse a payload of ``size`` bytes over ``limits.max_payload_bytes`` (``key`` names
    the limit in the reason: the inner payload of a compression envelope has its own)."""
    if size > limits.max_payload_bytes:
        raise SparkplugLimitError(key, size, limits.max_payload_bytes, "payload bytes")


def check_metric_count(count: int, limits: MessageLimits) -> None:
    """Refuse a message of more than ``limits.max_metrics`` metrics."""
    if count > limits.max_metrics:
        raise SparkplugLimitError("sparkplug.max_metrics_per_message", count, limits.max_metrics, "metrics")


def check_nesting(depth: int, limits: MessageLimits, what: str) -> None:
    """Refuse a ``what`` (Template, PropertySet) nested ``depth`` levels deep, beyond the limit."""
    if depth > limits.max_nesting:
        raise SparkplugLimitError(
            "sparkplug.max_nesting", depth, limits.max_nesting, f"levels of {what} nesting"
        )
