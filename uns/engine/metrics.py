"""The engine's Prometheus metrics (``GET /metrics``), read from its counters at scrape time.

Nothing here runs per message: :class:`EngineCollector` reads what the engine
already counts (:class:`uns.engine.status.Counters`, the sessions' ``stats()``
and ``population()``, each sink's ``stats()``) when Prometheus scrapes, and the
lake's per-commit histograms are observed once per commit
(:mod:`uns.engine.lake_meter`).  The names, labels and help texts are a
contract (README "Monitoring", docs/operations.md); ``METRIC_NAMES`` lists them
and a test checks the docs against a real scrape.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from uns.engine.host import Engine
from uns.engine.lake_meter import LakeMeter, meter_lake
from uns.engine.readiness import Readiness
from uns.engine.status import REJECT_REASONS
from uns.lake import LakeSink

__all__ = ["METRIC_NAMES", "EngineCollector", "EngineMetrics"]

#: the lake sink's states (``uns_lake_state``); a state the lake reports beyond these is added
LAKE_STATES = ("ok", "degraded", "full")

#: every metric family the engine exports (Prometheus adds ``_total`` to counters and
#: ``_bucket``/``_sum``/``_count`` to histograms in the text format)
METRIC_NAMES = (
    "uns_info",
    "uns_ready",
    "uns_messages_received",
    "uns_metrics_received",
    "uns_rejected",
    "uns_seq_gaps",
    "uns_reorder_timeouts",
    "uns_rebirth_requests",
    "uns_births",
    "uns_deaths",
    "uns_edge_nodes_online",
    "uns_edge_nodes_known",
    "uns_devices_online",
    "uns_devices_known",
    "uns_born_metrics",
    "uns_context_events",
    "uns_context_changes",
    "uns_records",
    "uns_receive_queue_messages",
    "uns_backpressure_waits",
    "uns_internal_errors",
    "uns_sink_errors",
    "uns_broker_connected",
    "uns_broker_reconnects",
    "uns_republish_published",
    "uns_republish_dropped",
    "uns_republish_queue_events",
    "uns_republish_errors",
    "uns_lake_state",
    "uns_lake_degraded_since_timestamp_seconds",
    "uns_lake_rows_committed",
    "uns_lake_rows_pending",
    "uns_lake_wal_bytes",
    "uns_lake_wal_segments",
    "uns_lake_commits",
    "uns_lake_last_commit_timestamp_seconds",
    "uns_lake_commit_errors",
    "uns_lake_commit_lag_seconds",
    "uns_lake_commit_duration_seconds",
    "uns_lake_compactions",
    "uns_lake_backpressure",
    "uns_lake_commit_worker_restarts",
)


@functools.cache
def _version() -> str:
    """The installed version of uns (``uns --version`` prints the same); read once, not per scrape."""
    try:
        return importlib.metadata.version("uns")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(family: CounterMetricFamily | GaugeMetricFamily, values: Mapping[str, float]) -> Metric:
    for label, value in values.items():
        family.add_metric([label], value)
    return family


class EngineCollector(Collector):
    """Yields the engine's metric families from its counters (see module doc)."""

    def __init__(self, engine: Engine, readiness: Readiness) -> None:
        self.engine = engine
        self.readiness = readiness

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        c = engine.counters
        sessions = engine.session_stats()
        groups = ",".join(engine.groups) or "all"  # its shard (engine.groups), or spBv1.0/#
        yield InfoMetricFamily(
            "uns",
            "The engine: its version, Sparkplug host id and the groups it subscribes to",
            value={"version": _version(), "host_id": engine.host_id, "groups": groups},
        )
        yield _gauge(
            "uns_ready",
            "1 when /readyz answers 200 (broker connected, lake committing)",
            1.0 if self.readiness.check()[0] else 0.0,
        )
        by_type = {t: float(n) for t, n in c.messages_by_type.items()}
        by_type["context"] = c.context_events
        by_type["records"] = c.records
        by_type["invalid"] = max(
            0, c.messages - c.context_events - c.records - sum(c.messages_by_type.values())
        )
        yield _labelled(
            CounterMetricFamily(
                "uns_messages_received",
                "MQTT messages received, by Sparkplug message type (context: context events; "
                "invalid: not a Sparkplug B topic)",
                labels=["type"],
            ),
            by_type,
        )
        yield _counter(
            "uns_metrics_received", "Metric values (samples) produced from Sparkplug messages", c.metrics
        )
        yield _labelled(
            CounterMetricFamily(
                "uns_rejected",
                "Messages and metrics that could not be used (each is a row of the lake's rejected "
                "table), by reason",
                labels=["reason"],
            ),
            {r: c.rejected_by_reason.get(r, 0) for r in REJECT_REASONS},
        )
        yield _counter("uns_seq_gaps", "Sparkplug seq gaps given up (a rebirth is requested)", c.seq_gaps)
        yield _counter(
            "uns_reorder_timeouts",
            "Reorder buffers that timed out waiting for a missing seq",
            sessions["reorder_timeouts"],
        )
        yield _labelled(
            CounterMetricFamily(
                "uns_rebirth_requests",
                "Rebirth requests (NCMD Node Control/Rebirth): sent, or suppressed by the rate limit",
                labels=["outcome"],
            ),
            {"sent": c.rebirths_requested, "suppressed": sessions["rebirths_suppressed"]},
        )
        yield _labelled(
            CounterMetricFamily(
                "uns_births", "Births accepted (NBIRTH: node, DBIRTH: device)", labels=["scope"]
            ),
            {"node": c.node_births, "device": c.device_births},
        )
        yield _labelled(
            CounterMetricFamily(
                "uns_deaths", "Deaths that ended a session (NDEATH: node, DDEATH: device)", labels=["scope"]
            ),
            {"node": c.node_deaths, "device": c.device_deaths},
        )
        yield from self._population()
        yield _labelled(
            CounterMetricFamily(
                "uns_context_events", "Context events received, by outcome", labels=["outcome"]
            ),
            {
                "applied": c.context_applied,
                "duplicate": c.context_duplicates,
                "rejected": c.context_rejected,
                "retained_ignored": c.context_retained_ignored,
            },
        )
        yield _counter(
            "uns_context_changes",
            "Context changes applied (an event sets one or more keys)",
            c.context_changes,
        )
        yield _labelled(
            CounterMetricFamily(
                "uns_records",
                "Batch records (materials, results, comments) received, by outcome",
                labels=["outcome"],
            ),
            {
                "applied": c.records_applied,
                "duplicate": c.records_duplicates,
                "rejected": c.records_rejected,  # conflicts included (records_conflicts)
                "retained_ignored": c.records_retained_ignored,
            },
        )
        yield _gauge(
            "uns_receive_queue_messages", "Messages received and not processed yet", engine.receive_queue
        )
        yield _counter(
            "uns_backpressure_waits", "Times intake paused because a sink was full", c.backpressure_waits
        )
        yield _counter(
            "uns_internal_errors", "Messages that hit a bug (rejected; the loop goes on)", c.internal_errors
        )
        yield _counter(
            "uns_sink_errors", "Batches a sink failed to take with an unexpected error", c.sink_errors
        )
        yield _labelled(
            GaugeMetricFamily(
                "uns_broker_connected",
                "1 while the broker session is up, by connection",
                labels=["connection"],
            ),
            {
                "sparkplug": float(engine.connected.is_set()),
                "context": float(engine.context_intake.connected.is_set()),
                "records": float(engine.records_intake.connected.is_set()),
            },
        )
        yield _counter(
            "uns_broker_reconnects", "Reconnections of the Sparkplug session after a loss", c.reconnects
        )
        for sink in engine.sinks:
            if sink.name == "republish":
                yield from _republish(sink.stats())
            elif isinstance(sink, LakeSink):
                yield from _lake(sink.stats())

    def _population(self) -> Iterator[Metric]:
        nodes_online, nodes_known = self.engine.node_counts()
        devices_online, devices_known, born = self.engine.population()
        yield _gauge("uns_edge_nodes_online", "Edge nodes online (NBIRTH, no NDEATH since)", nodes_online)
        yield _gauge("uns_edge_nodes_known", "Edge nodes seen since start", nodes_known)
        yield _gauge("uns_devices_online", "Devices online (DBIRTH, no DDEATH since)", devices_online)
        yield _gauge("uns_devices_known", "Devices seen since start", devices_known)
        yield _gauge("uns_born_metrics", "Metrics defined by the births of nodes and devices", born)


def _republish(stats: Mapping[str, Any]) -> Iterator[Metric]:
    yield _counter(
        "uns_republish_published", "Normalized events published on the UNS topics", stats["published"]
    )
    yield _labelled(
        CounterMetricFamily("uns_republish_dropped", "Events not published, by reason", labels=["reason"]),
        {"queue_full": stats["dropped_queue_full"], "on_close": stats["dropped_on_close"]},
    )
    yield _gauge("uns_republish_queue_events", "Events waiting to be published", stats["queue_depth"])
    yield _counter("uns_republish_errors", "Publishes that failed", stats["errors"])


def _lake(stats: Mapping[str, Any]) -> Iterator[Metric]:
    state = str(stats["state"])
    states = dict.fromkeys(LAKE_STATES, 0.0)
    states[state] = 1.0
    yield _labelled(
        GaugeMetricFamily("uns_lake_state", "1 for the lake sink's current state", labels=["state"]), states
    )
    since = stats.get("degraded_since_ms", 0) / 1000
    doc = "When the lake became degraded (0: it is not)"
    yield _gauge("uns_lake_degraded_since_timestamp_seconds", doc, since)
    yield _gauge("uns_lake_rows_pending", "Rows accepted and not committed yet", stats["rows_pending"])
    yield _gauge("uns_lake_wal_bytes", "Bytes of write-ahead log not committed yet", stats["wal_bytes"])
    yield _gauge("uns_lake_wal_segments", "Write-ahead log segments not committed yet", stats["wal_segments"])
    yield _counter("uns_lake_commits", "Delta commits made", stats["commits"])
    yield _gauge(
        "uns_lake_last_commit_timestamp_seconds",
        "When the last commit succeeded (0: none yet)",
        stats["last_commit_ms"] / 1000,
    )
    yield _counter(
        "uns_lake_commit_errors", "Commit attempts that failed (retried with backoff)", stats["commit_errors"]
    )
    yield _labelled(
        CounterMetricFamily(
            "uns_lake_compactions", "Compactions of recent partitions, by outcome", labels=["outcome"]
        ),
        {"done": stats["compactions"], "abandoned": stats["compactions_abandoned"]},
    )
    yield _counter(
        "uns_lake_backpressure",
        "Batches the lake refused because its write-ahead log was full",
        stats["backpressure"],
    )
    yield _counter(
        "uns_lake_commit_worker_restarts",
        "Commit worker processes restarted after dying",
        stats["commit_worker_restarts"],
    )


class EngineMetrics:
    """The registry ``/metrics`` serves for one engine: its collector, the lake meter and
    the process's own metrics (``process_*``: CPU, memory, open files)."""

    def __init__(self, engine: Engine, readiness: Readiness | None = None) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        self.readiness = readiness or Readiness(engine)
        self.registry.register(EngineCollector(engine, self.readiness))
        ProcessCollector(registry=self.registry)
        self.lake = LakeMeter(self.registry)
        for sink in engine.sinks:
            if isinstance(sink, LakeSink):
                meter_lake(sink, self.lake)
