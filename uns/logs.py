"""Logging for a process that must not flood its log: one line per key and interval."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs at most one line per key per ``interval`` seconds, counting the rest."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        self._log(logging.WARNING, key, msg, args, exc_info=False)

    def error(self, key: str, msg: str, *args: Any) -> None:
        self._log(logging.ERROR, key, msg, args, exc_info=False)

    def exception(self, key: str, msg: str, *args: Any) -> None:
        """An error with the traceback of the exception being handled."""
        self._log(logging.ERROR, key, msg, args, exc_info=True)

    def _log(self, level: int, key: str, msg: str, args: tuple[Any, ...], *, exc_info: bool) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) > 10_000:  # bound memory for a flood of distinct sources
            self._last.clear()
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        suffix = f" ({more} similar suppressed)" if more else ""
        self._logger.log(level, msg + suffix, *args, exc_info=exc_info)
