"""The monitoring examples load, and every query in them names a metric the engine exports:
the Grafana dashboard, the Prometheus alert rules, the systemd unit."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.metrics_helpers import full_scrape, parse

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: metrics Prometheus itself makes (not the engine's)
PROMETHEUS_OWN = frozenset({"up"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels or keywords)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors ($__rate_interval too)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set(re.findall(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", e))
    return names - _KEYWORDS


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    return set(parse(full_scrape(tmp_path_factory.mktemp("lake")))) | PROMETHEUS_OWN


def test_the_query_check_can_fail() -> None:
    assert promql_metrics('sum by (le) (rate(uns_x_bucket{a="b"}[5m])) > 0.5 and time() - y') == {
        "uns_x_bucket",
        "y",
    }


def test_the_dashboard_loads_and_queries_only_exported_metrics(exported: set[str]) -> None:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 20
    unknown = {e: sorted(promql_metrics(e) - exported) for e in exprs if promql_metrics(e) - exported}
    assert not unknown
    read = set().union(*map(promql_metrics, exprs))
    # the panels: throughput, lag, rejects, nodes online, back-pressure
    assert {
        "uns_messages_received_total",
        "uns_lake_commit_lag_seconds_bucket",
        "uns_rejected_total",
        "uns_edge_nodes_online",
        "uns_backpressure_waits_total",
    } <= read
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_alert_rules_load_and_reference_exported_metrics(exported: set[str]) -> None:
    rules = yaml.safe_load((EXAMPLES / "prometheus-alerts.yml").read_text(encoding="utf-8"))
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    for name, rule in alerts.items():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert promql_metrics(rule["expr"]), name
        assert promql_metrics(rule["expr"]) <= exported, (name, promql_metrics(rule["expr"]) - exported)
        assert {"summary", "description"} <= set(rule["annotations"]), name
    # the alerts: not ready, lake lag over a threshold, rejects rising, nodes offline
    assert {"UnsEngineNotReady", "UnsLakeCommitLagHigh", "UnsRejectsRising", "UnsEdgeNodesOffline"} <= set(
        alerts
    )
    documented = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in documented for name in alerts)


def test_the_service_is_notify_with_a_watchdog() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((EXAMPLES / "uns.service").read_text(encoding="utf-8"))
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecStart"].split()[1:3] == ["run", "--config"]
