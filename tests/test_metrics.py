"""The engine's /metrics, /healthz and /readyz over the in-memory broker: the counters a
scrape shows move exactly as the traffic says; the names are the documented contract."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.registry import Collector

from tests.edge import now_ms
from tests.engine_helpers import CollectingSink, running_engine, wait_for
from tests.metrics_helpers import family_name, full_scrape, get, parse, ready, scrape, value
from tests.test_engine_unit import NS, config, ddeath, edge_node
from uns.config import parse_listen
from uns.engine.host import Engine
from uns.engine.http import HttpEndpoint
from uns.engine.memory import MemoryBroker
from uns.engine.metrics import METRIC_NAMES, EngineMetrics
from uns.engine.readiness import lake_reasons
from uns.engine.status import REJECT_REASONS, reject_reason
from uns.errors import ConfigError
from uns.sparkplug.codec import encode_payload
from uns.sparkplug.payload import Metric, Payload

ROOT = Path(__file__).resolve().parent.parent


async def test_a_scrape_counts_what_the_traffic_says() -> None:
    broker = MemoryBroker()
    engine = Engine(config(), sinks=[CollectingSink()], transport=broker)
    async with running_engine(engine), HttpEndpoint("127.0.0.1:0", EngineMetrics(engine)) as http:
        base = f"http://127.0.0.1:{http.port}"
        edge = await edge_node(broker)
        await edge.nbirth()
        await edge.dbirth("D1")
        for v in (21.0, 22.0, 23.0):
            await edge.ddata("D1", v)
        await wait_for(lambda: engine.counters.messages == 5)
        before = await scrape(base)
        assert value(before, "uns_messages_received_total", type="DDATA") == 3
        assert value(before, "uns_births_total", scope="node") == 1
        assert value(before, "uns_births_total", scope="device") == 1
        assert value(before, "uns_edge_nodes_online") == 1
        assert value(before, "uns_devices_online") == 1
        assert value(before, "uns_born_metrics") == 4  # bdSeq, Node Control/Rebirth, Temperature, Count
        assert value(before, "uns_metrics_received_total") == engine.counters.metrics
        assert value(before, "uns_broker_connected", connection="sparkplug") == 1
        assert value(before, "uns_ready") == 1
        # one garbage message: rejected goes up by exactly one, under its reason
        await edge.client.publish(f"spBv1.0/{NS}/NDATA", b"garbage", qos=0)
        await edge.client.publish(edge.topic("DDATA", "D1"), b"\xff\xff garbage", qos=0)
        await ddeath(edge, "D1")
        await edge.ndeath()
        await wait_for(lambda: engine.counters.messages == 9)
        after = await scrape(base)
    rejected = {labels: v for labels, v in after["uns_rejected_total"].items() if v}
    assert rejected == {(("reason", "not_sparkplug"),): 1, (("reason", "undecodable"),): 1}
    assert value(after, "uns_messages_received_total", type="invalid") == 1
    assert value(after, "uns_messages_received_total", type="DDATA") == 4
    assert value(after, "uns_deaths_total", scope="node") == 1
    assert value(after, "uns_deaths_total", scope="device") == 1
    assert value(after, "uns_edge_nodes_online") == 0
    assert value(after, "uns_devices_online") == 0
    assert value(after, "uns_edge_nodes_known") == 1
    assert value(after, "uns_rebirth_requests_total", outcome="sent") == engine.counters.rebirths_requested
    assert sum(after["uns_messages_received_total"].values()) == engine.counters.messages


async def test_health_and_readiness_answer_on_the_loop() -> None:
    broker = MemoryBroker()
    engine = Engine(config(), sinks=[CollectingSink()], transport=broker)
    async with HttpEndpoint("127.0.0.1:0", EngineMetrics(engine)) as http:
        base = f"http://127.0.0.1:{http.port}"
        status, doc = await ready(base)
        assert (status, doc["reasons"]) == (503, ["starting"])
        async with running_engine(engine):
            assert await ready(base) == (200, {"ready": True, "reasons": [], "host_id": NS})
            status, content_type, body = await get(f"{base}/healthz")
            assert (status, content_type) == (200, "application/json")
            assert '"status":"ok"' in body
            assert (await get(f"{base}/nothing"))[0] == 404
            status, content_type, _ = await get(f"{base}/metrics")
            assert content_type.startswith("text/plain; version=")


def test_every_family_is_the_documented_contract(tmp_path: Path) -> None:
    """A scrape of an engine with a lake and the republisher has exactly METRIC_NAMES (and
    the process's own ``process_*``); the README and docs/operations.md name each of them,
    and no ``uns_*`` metric that does not exist."""
    names = {family_name(name) for name in parse(full_scrape(tmp_path / "lake"))}
    assert {n for n in names if n.startswith("uns_")} == set(METRIC_NAMES)
    assert {n for n in names if not n.startswith("uns_")} <= {n for n in names if n.startswith("process_")}
    for doc in (ROOT / "README.md", ROOT / "docs" / "operations.md"):
        named = {family_name(n) for n in re.findall(r"`(uns_[a-z_]+)", doc.read_text(encoding="utf-8"))}
        assert named == set(METRIC_NAMES), f"{doc.name}: {sorted(named ^ set(METRIC_NAMES))}"


async def test_each_kind_of_rejection_has_its_reason() -> None:
    broker = MemoryBroker()
    engine = Engine(config(), sinks=[CollectingSink()], transport=broker)
    async with running_engine(engine):
        edge = await edge_node(broker)
        await edge.ddata("D1", 1.0)  # before any NBIRTH
        await edge.nbirth()
        await edge.dbirth("D1")
        await edge.ddata("D1", 2.0, alias=99)  # an alias no birth defined
        again = edge.ddata_payload(3.0)
        for _ in range(2):  # the same message twice: the second is a duplicate
            await edge.client.publish(edge.topic("DDATA", "D1"), again, qos=0)
        bad = Payload(timestamp=now_ms(), seq=edge.next_seq(), metrics=[Metric(name="x", value=1.0)])
        await edge.client.publish(edge.topic("DBIRTH", "D2"), encode_payload(bad), qos=0)
        await edge.client.publish(f"{NS}/uns/_context/line/1", b"not json", qos=1)
        await wait_for(lambda: engine.counters.rejected == 5 and engine.counters.context_events == 1)
    reasons = {r: n for r, n in engine.counters.rejected_by_reason.items() if n}
    assert reasons == {"not_born": 2, "duplicate": 1, "bad_birth": 1, "context": 1}
    assert engine.counters.context_rejected == 1
    assert sum(reasons.values()) == engine.counters.rejected


@given(st.text(), st.booleans())
def test_a_reason_is_always_one_of_the_labels(error: str, context: bool) -> None:
    assert reject_reason(error, context=context) in REJECT_REASONS


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("", 9464)), ("[::1]:0", ("::1", 0))],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9464", "host:", "host:99999", "a b:1", "[::1:9"])
def test_bad_listen_addresses_name_the_key(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(**{"engine.http_listen": text})
    assert err.value.key == "engine.http_listen"


class _Broken(Collector):
    def collect(self) -> Iterator[Family]:
        raise RuntimeError("a bug in a collector")


async def test_bad_requests_and_a_broken_collector_cost_only_their_answer() -> None:
    engine = Engine(config(), sinks=[CollectingSink()], transport=MemoryBroker())
    metrics = EngineMetrics(engine)
    async with HttpEndpoint("127.0.0.1:0", metrics) as http:
        assert http.answer(b"POST /metrics HTTP/1.1\r\n\r\n")[0] == 405
        assert http.answer(b"garbage\r\n\r\n")[0] == 400
        assert http.answer(b"HEAD /healthz HTTP/1.0\r\n\r\n")[0] == 200
        metrics.registry.register(_Broken())
        base = f"http://127.0.0.1:{http.port}"
        status, _, body = await get(f"{base}/metrics")
        assert (status, json.loads(body)) == (500, {"error": "RuntimeError: a bug in a collector"})
        assert (await get(f"{base}/healthz"))[0] == 200


@pytest.mark.parametrize(
    ("stats", "reasons"),
    [
        ({"state": "ok", "rows_pending": 0, "last_commit_ms": 0}, []),
        ({"state": "ok", "rows_pending": 5, "last_commit_ms": 950_000}, []),  # committed 50 s ago
        (
            {"state": "ok", "rows_pending": 5, "last_commit_ms": 900_000},
            ["lake not committing: rows wait and no commit for 100 s"],
        ),
        (
            {"state": "ok", "rows_pending": 5, "last_commit_ms": 0},
            ["lake not committing: rows wait and no commit for 200 s"],
        ),
        ({"state": "retrying", "last_error": "disk full"}, ["lake retrying: disk full"]),
        (
            {"state": "degraded", "degraded_reason": "no space left", "last_error": "x"},
            ["lake degraded: no space left"],
        ),
        ({"state": "full", "last_error": ""}, ["lake full"]),
    ],
)
def test_the_lake_makes_the_engine_not_ready(stats: dict[str, Any], reasons: list[str]) -> None:
    assert lake_reasons(stats, since=800.0, stall_s=60.0, now=1000.0) == reasons
