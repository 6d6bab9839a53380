"""Shards by Sparkplug group (issue 19, item 1): ``engine.groups``.

An engine with groups subscribes ``spBv1.0/<group>/#`` per group (and its own STATE),
hosts only those groups' edge nodes, names them in its status document, and still takes
every context event.  The real engine runs over the in-memory broker.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from typer.testing import CliRunner

from tests.edge import RawEdge
from tests.engine_helpers import CollectingSink, connected, engine_config, running_engine, wait_for
from uns.cli.app import app
from uns.config import Config, load_config
from uns.engine.host import Engine
from uns.engine.memory import MemoryBroker
from uns.engine.metrics import EngineMetrics
from uns.errors import ConfigError
from uns.mqtt.minibroker import topic_matches
from uns.sparkplug.topic import group_list, namespace_filters

NS = "shard"
CONTEXT = f"{NS}/uns/_context"


def config(host_id: str, groups: str, **overrides: Any) -> Config:
    fast = {"broker.reconnect_min": 0.01, "broker.reconnect_max": 0.05, "engine.status_interval": 0.2}
    values = {**fast, "engine.host_id": host_id, "engine.groups": groups, **overrides}
    return engine_config("mqtt://memory:1883", NS, **values)


# ------------------------------------------------------------------ the setting


def test_groups_come_from_the_file_the_environment_and_the_command_line() -> None:
    assert group_list(load_config(env={}).engine.groups) == ()
    env = load_config(env={"UNS_ENGINE_GROUPS": " line1, line2,line1 ,"})
    assert group_list(env.engine.groups) == ("line1", "line2")  # trimmed, in order, once each
    flag = load_config(env={"UNS_ENGINE_GROUPS": "a"}, overrides={"engine.groups": "b,c"})
    assert group_list(flag.engine.groups) == ("b", "c")


@pytest.mark.parametrize("bad", ["a/b", "line+", "#", "STATE", "ok,STATE"])
def test_a_group_that_cannot_be_a_sparkplug_group_id_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"engine\.groups") as caught:
        load_config(env={"UNS_ENGINE_GROUPS": bad})
    assert caught.value.key == "engine.groups"


def test_uns_run_takes_groups_on_the_command_line() -> None:
    result = CliRunner().invoke(app, ["run", "--groups", "G1,G2", "--print-config"], env={})
    assert result.exit_code == 0, result.output
    assert 'groups = "G1,G2"' in result.output


group_ids = st.text(st.characters(codec="ascii", exclude_characters="+#/"), min_size=1, max_size=6).filter(
    lambda g: g != "STATE"
)


@given(st.lists(group_ids, max_size=4, unique=True), group_ids, st.sampled_from(["NDATA", "DBIRTH", "NCMD"]))
def test_the_filters_take_exactly_the_shards_groups(groups: list[str], group: str, mtype: str) -> None:
    topic = f"spBv1.0/{group}/{mtype}/node/dev" if mtype == "DBIRTH" else f"spBv1.0/{group}/{mtype}/node"
    filters = namespace_filters(tuple(groups))
    taken = any(topic_matches(f, topic) for f in filters)
    assert taken == (not groups or group in groups)  # no groups: every group
    if groups:  # a shard does not see other hosts' STATE
        assert not any(topic_matches(f, "spBv1.0/STATE/other-host") for f in filters)


# ------------------------------------------------------------------ two shards on one broker


async def test_two_shards_split_the_groups_and_both_take_every_context_event() -> None:
    broker = MemoryBroker()
    sinks = {"A": CollectingSink(), "B": CollectingSink()}
    engines = {name: Engine(config(f"host-{name}", f"line{name}"), sinks=[sinks[name]], transport=broker)
               for name in sinks}  # fmt: skip
    async with running_engine(engines["A"]), running_engine(engines["B"]):
        for name in ("A", "B"):
            subscribed = [e.topic for e in broker.actions(f"uns-host-{name}") if e.action == "subscribe"]
            assert subscribed == [f"spBv1.0/line{name}/#", f"spBv1.0/STATE/host-{name}"]
        for group in ("lineA", "lineB"):
            edge = RawEdge(await connected(broker, f"edge-{group}"), group, "N1")  # type: ignore[arg-type]
            await edge.nbirth()
            await edge.dbirth("D1")
            await edge.ddata("D1", 1.0)
        mes = await connected(broker, "mes")
        # from 2000 on (the intake's rule); back-dated, so with a reason (context.require_reason)
        body = {"id": "ev-1", "ts": 1_767_261_600_000, "set": {"batch_id": "B-1"}, "reason": "MES"}
        await mes.publish(f"{CONTEXT}/acme/line", json.dumps(body).encode(), qos=1)
        await wait_for(
            lambda: all(s.samples and [c for b in s.batches for c in b.context] for s in sinks.values())
        )
        status = {name: e.status() for name, e in engines.items()}
    for name, sink in sinks.items():
        assert {s.group_id for s in sink.samples} == {f"line{name}"}  # only its own group
        assert [c.event_id for b in sink.batches for c in b.context] == ["ev-1"]  # every engine
        assert status[name]["groups"] == [f"line{name}"]
        assert engines[name].groups == (f"line{name}",)
        metrics = generate_latest(EngineMetrics(engines[name]).registry).decode()
        assert f'groups="line{name}"' in metrics  # uns_info names the shard


def test_an_engine_of_every_group_says_so_in_its_metrics() -> None:
    engine = Engine(config("host-all", ""), transport=MemoryBroker())
    assert engine.groups == () and engine.namespace_filters == ("spBv1.0/#",)
    assert 'groups="all"' in generate_latest(EngineMetrics(engine).registry).decode()
