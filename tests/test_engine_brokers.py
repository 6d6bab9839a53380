"""One engine on two brokers (``broker.urls``), over two in-memory brokers: the host logic
without processes (tests/test_tck_brokers.py runs it against two real mosquittos)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.edge import RawEdge
from tests.engine_helpers import CollectingSink, connected, engine_config, running_engine, wait_for
from uns.config import load_config
from uns.core.events import SessionEventKind
from uns.engine.host import Engine
from uns.engine.memory import MemoryBroker, MemoryTransport
from uns.engine.readiness import Readiness
from uns.errors import BrokerError, ConfigError
from uns.mqtt.settings import BrokerSettings
from uns.mqtt.wire import Will

NS = "plant"
STATE = f"spBv1.0/STATE/{NS}"
URLS = ["mqtt://broker-a:1883", "mqtt://broker-b:1884"]


class TwoBrokers:
    """A transport factory that connects by port: 1883 to ``a``, 1884 to ``b``."""

    def __init__(self) -> None:
        self.a, self.b = MemoryBroker(), MemoryBroker()

    def __call__(
        self, settings: BrokerSettings, *, identifier: str, will: Will | None, **kw: Any
    ) -> MemoryTransport:
        return (self.a if settings.port == 1883 else self.b)(settings, identifier=identifier, will=will, **kw)


async def _edge(broker: MemoryBroker, node: str) -> RawEdge:
    client = await connected(broker, f"edge-{node}")
    return RawEdge(client, NS, node)  # type: ignore[arg-type]  # a MemoryTransport publishes alike


def test_the_urls_are_distinct_brokers_and_the_first_is_home() -> None:
    cfg = load_config(env={"UNS_BROKER_URLS": ",".join(URLS)})
    assert [s.port for s in cfg.broker.all_settings()] == [1883, 1884]
    assert cfg.broker.settings().host == "broker-a"
    with pytest.raises(ConfigError, match=r"broker\.urls must be distinct brokers"):
        load_config(env={"UNS_BROKER_URLS": "mqtt://a:1,mqtt://a:1"})
    with pytest.raises(ConfigError, match=r"broker\.urls entry"):
        load_config(env={"UNS_BROKER_URLS": "mqtt://a:1,http://b"})
    with pytest.raises(ConfigError, match=r"broker\.protocol must be .3\.1\.1. or .5."):
        load_config(env={"UNS_BROKER_PROTOCOL": "4"})
    assert load_config(env={"UNS_BROKER_PROTOCOL": "5"}).broker.settings().protocol == 5


async def test_each_broker_has_its_own_state_sessions_and_staleness() -> None:
    brokers = TwoBrokers()
    sink = CollectingSink()
    cfg = engine_config(
        URLS[0], NS, **{"broker.urls": URLS, "engine.primary": True, "engine.status_interval": 0.1}
    )
    engine = Engine(cfg, sinks=[sink], transport=brokers)
    async with running_engine(engine):
        await wait_for(lambda: all(link.connected.is_set() for link in engine.links), what="both sessions")
        births = [json.loads(b.published(STATE)[0].payload) for b in (brokers.a, brokers.b)]
        assert [b["online"] for b in births] == [True, True]
        assert [b["timestamp"] for b in births] == [link.state_ts for link in engine.links]
        n1, n2 = await _edge(brokers.a, "N1"), await _edge(brokers.b, "N2")
        await n1.born_with_data("D1", 1)
        await n2.born_with_data("D1", 1)
        await wait_for(lambda: engine.node_counts() == (2, 2), what="both nodes born")
        assert engine.links[0].sessions.node_counts() == (1, 1) == engine.links[1].sessions.node_counts()
        born = engine.born(NS, "N2", "D1")
        assert born is not None and born["broker"] == "mqtt://broker-b:1884" and born["online"] is True
        brokers.a.drop(f"uns-{NS}")  # broker a is lost: only what it taught goes stale
        await wait_for(lambda: engine.counters.reconnects == 1, what="reconnect to a")
        stale = {(e.edge_node_id, e.device_id) for e in sink.events(SessionEventKind.STALE)}
        assert stale == {("N1", None), ("N1", "D1")}
        assert engine.node_counts() == (1, 2)
        doc = engine.status()
        assert [b["url"] for b in doc["brokers"]] == URLS
    samples = [(s.edge_node_id, s.metric) for s in sink.samples if s.metric == "Temperature"]
    assert sorted(samples) == [("N1", "Temperature")] * 2 + [("N2", "Temperature")] * 2  # each once


async def test_readiness_names_each_broker_that_is_down() -> None:
    brokers = TwoBrokers()
    cfg = engine_config(URLS[0], NS, **{"broker.urls": URLS})
    engine = Engine(cfg, transport=brokers)
    readiness = Readiness(engine)
    async with running_engine(engine):
        await wait_for(lambda: all(link.connected.is_set() for link in engine.links), what="both sessions")
        assert readiness.check() == (True, [])
        brokers.b.refuse(BrokerError("server unavailable"), identifier=f"uns-{NS}")
        brokers.b.drop(f"uns-{NS}")
        await wait_for(lambda: not engine.links[1].connected.is_set(), what="b down")
        assert readiness.check() == (False, ["not connected to the broker mqtt://broker-b:1884"])
