"""What the lake's commits take, for ``/metrics``: a committer that times the one it wraps.

:class:`lake.sink.LakeSink` counts what it committed (``stats()``); how long each
commit took, how old its oldest row was when it became queryable, and how many
rows each table got are seen here, once per commit (every few seconds, never per
message), by wrapping the sink's committer before the sink opens
(:func:`meter_lake`).  The observations go into prometheus-client histograms and
counters of the registry the ``/metrics`` endpoint serves.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from uns.lake import LakeSink
from uns.lake.committers import Committer, Sealed
from uns.lake.tables import TABLES
from uns.lake.wal import CommitResult

__all__ = ["LAG_BUCKETS", "LakeMeter", "MeteredCommitter", "meter_lake"]

#: seconds: a commit every ``lake.commit_interval`` (5 s) is normal; minutes mean trouble
LAG_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class LakeMeter:
    """The lake's per-commit metrics, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Histogram(
            "uns_lake_commit_lag_seconds",
            "Age of the oldest row of a write-ahead log segment when its commit made it queryable "
            "(segments replayed at start are not observed)",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "uns_lake_commit_duration_seconds",
            "Time to commit one write-ahead log segment to the Delta tables",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.rows = Counter(
            "uns_lake_rows_committed",
            "Rows committed to the lake, by table",
            ["table"],
            registry=registry,
        )
        for table in TABLES:
            self.rows.labels(table=table)

    def committed(self, seg: Sealed, result: CommitResult, seconds: float, now: float) -> None:
        self.duration.observe(seconds)
        if seg.file is not None:  # written by this run: its opening time is known
            self.lag.observe(max(0.0, now - seg.file.opened_at))
        for table, rows in result.tables:
            self.rows.labels(table=table).inc(rows)


class MeteredCommitter:
    """A :class:`lake.committers.Committer` that reports each commit to a :class:`LakeMeter`."""

    def __init__(self, inner: Committer, meter: LakeMeter) -> None:
        self.inner = inner
        self.meter = meter
        self.keeps_columns = inner.keeps_columns

    async def open(self) -> int:
        return await self.inner.open()

    async def commit(self, seg: Sealed) -> CommitResult:
        started = time.monotonic()
        result = await self.inner.commit(seg)
        now = time.monotonic()
        self.meter.committed(seg, result, now - started, now)
        return result

    async def compact(self, since: dt.date) -> int | None:
        return await self.inner.compact(since)

    def abandon_compaction(self) -> None:
        self.inner.abandon_compaction()

    async def anchor(self, *, force: bool = False) -> None:
        await self.inner.anchor(force=force)

    async def close(self, *args: Any, **kwargs: Any) -> None:
        await self.inner.close(*args, **kwargs)  # whatever the sink passes (a stop deadline)

    def worker_stats(self) -> tuple[int, int, int]:
        return self.inner.worker_stats()


def meter_lake(sink: LakeSink, meter: LakeMeter) -> None:
    """Wrap the committer of a sink that has not opened yet (the sink takes no committer
    as an argument: the one it made is replaced, once)."""
    committer = sink._committer
    if not isinstance(committer, MeteredCommitter):
        sink._committer = MeteredCommitter(committer, meter)
