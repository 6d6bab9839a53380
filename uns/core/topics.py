"""UNS topic names: ``<prefix>/<path>/<metric>`` and the reversible rule that makes them MQTT-safe (pure).

The ``/`` folders of a metric name become topic levels.  Each level is made
safe for MQTT by a reversible rule (:func:`sanitize_name` /
:func:`unsanitize_name`): ``%`` -> ``%25``, ``+`` -> ``%2B``, ``#`` -> ``%23``,
NUL -> ``%00``, and an empty level becomes a lone ``%`` (which the escaping can
never produce otherwise).  Names without these characters are unchanged.

:class:`TopicNames` renders the topics of one prefix, cached, since every
normalized event needs one.
"""

from __future__ import annotations

import re
from typing import TypeVar

from uns.errors import ConfigError

__all__ = [
    "DEFAULT_PREFIX",
    "EMPTY_LEVEL",
    "TopicNames",
    "check_prefix",
    "sanitize_level",
    "sanitize_name",
    "unsanitize_level",
    "unsanitize_name",
]

DEFAULT_PREFIX = "uns/v1"
EMPTY_LEVEL = "%"

_ESCAPE = str.maketrans({"%": "%25", "+": "%2B", "#": "%23", "\x00": "%00"})
_UNESCAPE = {"%25": "%", "%2B": "+", "%23": "#", "%00": "\x00"}
_ESCAPED = re.compile(r"%(25|2B|23|00)")
_NEEDS_ESCAPE = re.compile(r"[%+#\x00]|^/|/$|//|^$")
#: topic caches are bounded: metric names come from the plant floor
TOPIC_CACHE_MAX = 200_000
_K = TypeVar("_K")


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


class TopicNames:
    """The sanitized topics of normalized events under one prefix (checked by :func:`check_prefix`)."""

    __slots__ = ("_device_topics", "_topics", "prefix")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = check_prefix(prefix)
        self._topics: dict[tuple[str, str], str] = {}
        self._device_topics: dict[str, str] = {}

    def topic_for(self, path: str, metric: str) -> str:
        """``<prefix>/<path>/<metric>``, sanitized (cached per (path, metric))."""
        key = (path, metric)
        topic = self._topics.get(key)
        if topic is None:  # the hit path stays inline: it runs once per sample
            name = f"{self.prefix}/{sanitize_name(path)}/{sanitize_name(metric)}"
            topic = _remember(self._topics, key, name)
        return topic

    def device_topic(self, path: str) -> str:
        """``<prefix>/<path>``, sanitized: the topic of device-mode events."""
        topic = self._device_topics.get(path)
        if topic is None:
            topic = _remember(self._device_topics, path, f"{self.prefix}/{sanitize_name(path)}")
        return topic


def _remember(cache: dict[_K, str], key: _K, topic: str) -> str:
    """Keep ``topic`` under ``key``; a full cache is emptied first, so memory stays bounded
    however many distinct names pass."""
    if len(cache) >= TOPIC_CACHE_MAX:
        cache.clear()
    cache[key] = topic
    return topic
