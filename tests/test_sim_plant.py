"""The simulated plants, batch cycles, context events and one node's messages (pure: no broker)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.core.context import decode_context_payload, parse_context_event
from uns.errors import ConfigError
from uns.mqtt.settings import BrokerSettings
from uns.sim.batch import BATCH_KEYS, BatchCycle, BatchRecipe, ContextEvent
from uns.sim.node import SparkplugNode, _wire_converter
from uns.sim.plant import PILOT_PATHS, Granulator, NodeModel, Plant, TabletPress, bench_plant, pilot_plant
from uns.sim.runner import SimConfig
from uns.sim.sentlog import SentLog, SentSample
from uns.sparkplug.codec import decode_payload, encode_payload
from uns.sparkplug.datatypes import SIGNED_WIDTH, DataType
from uns.sparkplug.payload import Metric, Payload

ROOT = Path(__file__).resolve().parent.parent
CONTEXT_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((ROOT / "schemas" / "context-event.schema.json").read_text())
)

EXPECTED_METRICS = {
    ("USP-Ctrl", "BR-101"): {
        "Temperature": DataType.Double,
        "pH": DataType.Double,
        "DO": DataType.Float,
        "Agitation": DataType.Float,
    },
    ("GRAN-Ctrl", "GR-201"): {
        "ImpellerSpeed": DataType.Float,
        "ChopperSpeed": DataType.Float,
        "Power": DataType.Double,
        "BedTemp": DataType.Double,
        "SprayRate": DataType.Double,
        "Batch/ID": DataType.String,
        "Batch/Phase": DataType.String,
    },
    ("TAB-Ctrl", "TP-301"): {
        "TabletCount": DataType.UInt64,
        "RejectCount": DataType.UInt32,
        "CompressionForce": DataType.Double,
        "TurretSpeed": DataType.Float,
        "Running": DataType.Boolean,
    },
}


def run_plant(plant: Plant, steps: int, dt: float) -> dict[tuple[str, str | None, str], list[object]]:
    """Step every unit ``steps`` times; the value history of every metric."""
    history: dict[tuple[str, str | None, str], list[object]] = {}
    for _ in range(steps):
        for node in plant.nodes:
            for unit in node.units():
                unit.step(dt)
                for name, value in unit.values.items():
                    history.setdefault((node.node_id, unit.device_id, name), []).append(value)
    return history


def is_f32(x: object) -> bool:
    return isinstance(x, float) and struct.unpack("<f", struct.pack("<f", x))[0] == x


# ---------------------------------------------------------------- plant shape


def test_pilot_plant_has_the_agreed_ids_and_datatypes() -> None:
    plant = pilot_plant()
    assert plant.group_id == "PilotPlant"
    layout = {n.node_id: [d.device_id for d in n.devices] for n in plant.nodes}
    assert layout == {"USP-Ctrl": ["BR-101", "BR-102"], "GRAN-Ctrl": ["GR-201"], "TAB-Ctrl": ["TP-301"]}
    for (node_id, device_id), expected in EXPECTED_METRICS.items():
        node = next(n for n in plant.nodes if n.node_id == node_id)
        declared = {m.name: m.datatype for m in node.device(device_id).metrics}
        assert expected.items() <= declared.items()
    usp = plant.nodes[0]
    br101 = {m.name: m.datatype for m in usp.device("BR-101").metrics}
    assert br101["Headspace/Pressure"] is DataType.Int16
    assert br101["LastCIP"] is DataType.DateTime
    assert br101["Spectrum"] is DataType.FloatArray
    assert "Spectrum" not in {m.name for m in usp.device("BR-102").metrics}
    own = {m.name: m.datatype for m in usp.device(None).metrics}
    assert own["Properties/Firmware"] is DataType.String
    assert own["Uptime"] is DataType.Int64
    paths = {d.device_id: d.path for n in plant.nodes for d in n.devices}
    assert paths == PILOT_PATHS


def test_aliases_are_unique_per_node_and_cover_every_metric() -> None:
    for plant in (pilot_plant(), bench_plant(nodes=2, devices=3, metrics=4)):
        for node in plant.nodes:
            declared = [(u.device_id, m.name) for u in node.units() for m in u.metrics]
            assert list(node.aliases) == declared
            assert len(set(node.aliases.values())) == len(node.aliases)


def test_bench_plant_shape_and_names() -> None:
    plant = bench_plant("Load", nodes=3, devices=2, metrics=5, seed=1)
    assert plant.group_id == "Load"
    assert [n.node_id for n in plant.nodes] == ["node-000", "node-001", "node-002"]
    assert [d.device_id for d in plant.nodes[2].devices] == ["dev-00", "dev-01"]
    metrics = plant.nodes[0].devices[1].metrics
    assert [m.name for m in metrics] == ["m000", "m001", "m002", "m003", "m004"]
    assert {m.datatype for m in metrics} == {DataType.Double}
    assert all(n.own is None for n in plant.nodes)
    with pytest.raises(ValueError):
        bench_plant(nodes=0, devices=1, metrics=1)


# ---------------------------------------------------------------- determinism and physics


def test_same_seed_same_values_other_seed_other_values() -> None:
    first = run_plant(pilot_plant(seed=7, phase_seconds=5.0), 300, 0.5)
    again = run_plant(pilot_plant("OtherGroup", seed=7, phase_seconds=5.0), 300, 0.5)
    other = run_plant(pilot_plant(seed=8, phase_seconds=5.0), 300, 0.5)
    assert first == again  # the group id does not seed the values
    assert first[("USP-Ctrl", "BR-101", "Temperature")] != other[("USP-Ctrl", "BR-101", "Temperature")]
    bench = run_plant(bench_plant(nodes=1, devices=2, metrics=3, seed=3), 50, 0.1)
    assert bench == run_plant(bench_plant(nodes=1, devices=2, metrics=3, seed=3), 50, 0.1)


def test_values_are_physically_plausible_over_many_batches() -> None:
    h = run_plant(pilot_plant(phase_seconds=60.0), 3000, 1.0)  # ~10 batches per unit
    for device in ("BR-101", "BR-102"):
        assert all(36.7 <= v <= 37.3 for v in h[("USP-Ctrl", device, "Temperature")])
        assert all(6.8 <= v <= 7.3 for v in h[("USP-Ctrl", device, "pH")])
        assert all(30.0 <= v <= 60.0 and is_f32(v) for v in h[("USP-Ctrl", device, "DO")])
        agitation = h[("USP-Ctrl", device, "Agitation")]
        assert max(agitation) > 110
        pressure = h[("USP-Ctrl", device, "Headspace/Pressure")]
        assert all(isinstance(v, int) and -32768 <= v <= 32767 for v in pressure)
        assert min(pressure) < 0 < max(pressure)
        cips = h[("USP-Ctrl", device, "LastCIP")]
        assert cips == sorted(cips)
        assert len(set(cips)) > 5  # cleaned after every batch
    spectra = h[("USP-Ctrl", "BR-101", "Spectrum")]
    assert all(len(s) == 16 and all(is_f32(x) for x in s) for s in spectra)
    assert 50 < len({tuple(s) for s in spectra}) < 300  # a new spectrum every 30 s, not every step
    tablets = h[("TAB-Ctrl", "TP-301", "TabletCount")]
    rejects = h[("TAB-Ctrl", "TP-301", "RejectCount")]
    assert tablets == sorted(tablets)
    assert rejects == sorted(rejects)
    made = tablets[-1] - tablets[0]
    assert made > 10_000  # 27 tablets/s during the compression quarter of each batch
    assert 0 < rejects[-1] - rejects[0] < made * 0.01
    force = h[("TAB-Ctrl", "TP-301", "CompressionForce")]
    running = h[("TAB-Ctrl", "TP-301", "Running")]
    for f, r in zip(force, running, strict=True):
        assert (8.0 <= f <= 14.0) if r else f == 0.0
    assert True in running
    assert False in running
    power = h[("GRAN-Ctrl", "GR-201", "Power")]
    assert max(power) > 7.0
    assert min(power) < 1.0
    for name in ("ImpellerSpeed", "ChopperSpeed"):
        assert all(is_f32(v) for v in h[("GRAN-Ctrl", "GR-201", name)])
    uptime = h[("USP-Ctrl", None, "Uptime")]
    assert uptime == sorted(uptime)
    assert uptime[-1] - uptime[0] == pytest.approx(2999, abs=1)


def test_granulator_metrics_carry_the_batch_of_its_cycle() -> None:
    plant = pilot_plant(phase_seconds=2.0)
    gran = plant.nodes[1].device("GR-201")
    assert isinstance(gran, Granulator)
    seen = set()
    for _ in range(100):
        gran.step(0.5)
        context = gran.cycle.context()
        assert gran.values["Batch/ID"] == context.get("batch_id", "")
        assert gran.values["Batch/Phase"] == context.get("phase", "")
        seen.add((gran.values["Batch/ID"], gran.values["Batch/Phase"]))
    phases = {phase for _, phase in seen}
    assert phases == {"dry_mix", "wet_granulation", "drying", ""}
    assert ("", "") in seen  # idle between batches
    assert {"B2026-0003", "B2026-0007"} <= {batch for batch, _ in seen}


def test_tablet_press_counts_only_while_compressing() -> None:
    press = pilot_plant(phase_seconds=10.0).nodes[2].device("TP-301")
    assert isinstance(press, TabletPress)
    before = press.values["TabletCount"]
    press.step(1.0)
    while press.cycle.phase != "compression":
        assert press.values["TabletCount"] == before
        assert press.values["Running"] is False
        press.step(1.0)
    press.step(1.0)
    assert press.values["Running"] is True
    assert press.values["TabletCount"] > before


# ---------------------------------------------------------------- batch cycles

RECIPE = BatchRecipe(product="P", recipe="R v1", phases=("a", "b", "c"))


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(min_value=0, max_value=40), max_size=60),
    unit_index=st.integers(min_value=0, max_value=3),
    offset_quarters=st.integers(min_value=0, max_value=19),
)
def test_batch_cycle_matches_the_closed_form(steps: list[int], unit_index: int, offset_quarters: int) -> None:
    """After total time T the unit is in slot floor((offset+T)/phase) of phases+idle, cyclically."""
    phase_seconds = 5.0
    cycle = BatchCycle(
        RECIPE, unit_index=unit_index, unit_count=4, phase_seconds=phase_seconds, offset=offset_quarters / 4
    )
    slots = len(RECIPE.phases) + 1
    position = offset_quarters / 4  # quarters of a second: exact in binary floating point
    previous_slot = 0
    for quarters in steps:
        update = cycle.advance(quarters / 4)
        position += quarters / 4
        slot = math.floor(position / phase_seconds)
        assert cycle.cycle == slot // slots
        expected_phase = ((*RECIPE.phases, "idle"))[slot % slots]
        assert cycle.phase == expected_phase
        assert (update is not None) == (slot != previous_slot)
        if update is not None:
            assert update == cycle.current_update()
            if expected_phase == "idle":
                assert update.set == {}
                assert set(update.clear) == set(BATCH_KEYS)
            else:
                assert set(update.set) == set(BATCH_KEYS)
                assert update.clear == ()
                assert update.set["phase"] == expected_phase
                number = unit_index + 1 + (slot // slots) * 4
                assert update.set["batch_id"] == f"B2026-{number:04d}"
        previous_slot = slot


def test_batch_cycle_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        BatchCycle(RECIPE, unit_index=0, unit_count=1, phase_seconds=0)
    with pytest.raises(ValueError):
        BatchCycle(RECIPE, unit_index=0, unit_count=1, phase_seconds=1.0, offset=1.0)


def test_context_events_are_valid_for_the_schema_and_the_context_store() -> None:
    plant = pilot_plant(phase_seconds=1.0)
    events = []
    for node in plant.nodes:
        for unit in node.units():
            update = unit.context_now()
            for step in range(12):
                if update is not None and unit.path is not None:
                    events.append(ContextEvent(unit.path, 1_767_225_600_000 + step, update.set, update.clear))
                update = unit.step(0.5)
    reasons = set()
    for event in events:
        raw = event.to_json()
        doc = json.loads(raw)
        assert set(doc) == {"ts", "set", "clear", "source", "user", "reason"}
        CONTEXT_SCHEMA.validate(doc)
        changes = parse_context_event(event.path, decode_context_payload(raw, path=event.path), 0)
        assert changes
        assert all(c.ts == event.ts for c in changes)
        reasons.add(event.reason)
    assert {e.path for e in events} == set(PILOT_PATHS.values())


# ---------------------------------------------------------------- wire values


SIGNED = st.sampled_from(sorted(SIGNED_WIDTH))


@settings(max_examples=80, deadline=None)
@given(data=st.data(), datatype=SIGNED)
def test_signed_values_travel_masked_and_decode_back(data: st.DataObject, datatype: DataType) -> None:
    width = SIGNED_WIDTH[datatype]
    value = data.draw(st.integers(min_value=-(1 << (width - 1)), max_value=(1 << (width - 1)) - 1))
    wire = _wire_converter(datatype)
    assert wire is not None
    raw = wire(value)
    assert 0 <= raw < (1 << width)
    decoded = decode_payload(encode_payload(Payload(metrics=[Metric(alias=1, value=raw)]))).metrics[0]
    assert decoded.value_as(datatype) == value


def test_every_pilot_value_survives_untyped_data_encoding() -> None:
    """What the simulator logs for a DATA metric is what a host decodes with the BIRTH's datatype."""
    plant = pilot_plant(phase_seconds=3.0)
    for _ in range(40):
        for node in plant.nodes:
            for unit in node.units():
                unit.step(1.0)
                for m in unit.metrics:
                    wire = _wire_converter(m.datatype)
                    value = unit.values[m.name]
                    raw = value if wire is None else wire(value)
                    payload = Payload(metrics=[Metric(alias=1, timestamp=1, value=raw)])
                    decoded = decode_payload(encode_payload(payload)).metrics[0]
                    assert decoded.datatype is None
                    assert decoded.value_as(m.datatype) == value, (unit.device_id, m.name)


# ---------------------------------------------------------------- sent log and config


def test_sent_log_writes_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "sent.jsonl"
    sample = SentSample("G", "N", "D", "Spectrum", 5, [1.5, 2.0], DataType.FloatArray, 3, "DDATA", 0)
    with SentLog(path=path) as log:
        assert log.detailed
        log.add_samples([sample])
        log.add_context(ContextEvent("a/b", 7, {"phase": "x"}, reason="phase change"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {
        "group": "G",
        "node": "N",
        "device": "D",
        "metric": "Spectrum",
        "ts": 5,
        "value": [1.5, 2.0],
        "datatype": "FloatArray",
        "seq": 3,
        "type": "DDATA",
        "bdseq": 0,
        "historical": False,
    }
    assert lines[1]["context"] == "a/b"
    assert lines[1]["set"] == {"phase": "x"}
    assert log.counts.context_events == 1
    assert not SentLog().detailed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0},
        {"tick": -1},
        {"duration": -1.0},
        {"context_interval": 0},
        {"context_delay": -0.1},
        {"nodes": 0},
        {"group_id": "a/b"},
        {"group_id": "a+"},
        {"prefix": "uns/#"},
        {"port": 0},
    ],
)
def test_sim_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SimConfig(**kwargs)


def test_sim_config_repr_masks_the_password() -> None:
    config = SimConfig(broker=BrokerSettings(username="u", password="s3cret"))
    assert "s3cret" not in repr(config)
    assert "mqtt://u:***@127.0.0.1:1883" in repr(config)


def test_sim_config_host_and_port_replace_the_brokers() -> None:
    tls = BrokerSettings(host="plant", port=8883, tls=True, username="u", ca_file="ca.crt")
    assert SimConfig(broker=tls).settings == tls
    moved = SimConfig(broker=tls, host="127.0.0.1", port=18883).settings
    assert (moved.host, moved.port, moved.tls, moved.username, moved.ca_file) == (
        "127.0.0.1",
        18883,
        True,
        "u",
        "ca.crt",
    )
    assert SimConfig().settings == BrokerSettings()


def test_node_model_device_lookup() -> None:
    node: NodeModel = pilot_plant().nodes[0]
    assert node.device("BR-102").device_id == "BR-102"
    with pytest.raises(KeyError):
        node.device("BR-999")


# ---------------------------------------------------------------- one node's messages (no connection)
def _node(**kwargs: object) -> SparkplugNode:
    ticks = iter(range(1_000_000, 2_000_000, 10))
    return SparkplugNode(pilot_plant("G").nodes[0], group_id="G", clock=lambda: next(ticks), **kwargs)  # type: ignore[arg-type]


def _decoded(messages: list[tuple[str, bytes]]) -> list[tuple[str, Payload]]:
    return [(topic.split("/", 2)[2], decode_payload(payload)) for topic, payload in messages]


def test_bdseq_advances_only_when_a_connection_succeeds() -> None:
    node = _node(bd_seq=255)
    first, _ = node._next_session()
    assert node._next_session()[0] == first == 255  # a failed attempt changes nothing
    bd_seq, ndeath = node._next_session()
    node._session_started(bd_seq, ndeath)
    assert (node.bd_seq, node.will_payload) == (255, ndeath)
    assert decode_payload(ndeath).metrics[0].value == 255
    assert decode_payload(ndeath).seq is None
    assert node._next_session()[0] == 0  # wraps after 255


def test_births_data_deaths_share_one_seq_stream() -> None:
    node = _node(report_by_exception=False)
    births = _decoded(node._births(dbirth_first=False))
    assert [(t, p.seq) for t, p in births] == [
        ("NBIRTH/USP-Ctrl", 0),
        ("DBIRTH/USP-Ctrl/BR-101", 1),
        ("DBIRTH/USP-Ctrl/BR-102", 2),
    ]
    assert {m.name for m in births[0][1].metrics} >= {"bdSeq", "Node Control/Rebirth"}
    data = _decoded(node._step(node.model.units(), sending=True))
    assert [(t, p.seq) for t, p in data] == [
        ("NDATA/USP-Ctrl", 3),
        ("DDATA/USP-Ctrl/BR-101", 4),
        ("DDATA/USP-Ctrl/BR-102", 5),
    ]
    assert all(m.name is None and m.alias is not None for _, p in data for m in p.metrics)
    assert _decoded([node._device_dead("BR-102")])[0][1].seq == 6
    assert [t for t, _ in _decoded(node._step(node.model.units(), sending=True))] == [
        "NDATA/USP-Ctrl",
        "DDATA/USP-Ctrl/BR-101",
    ]  # a dead device is silent
    reborn = _decoded([node._device_reborn("BR-102")])
    assert [(t, p.seq) for t, p in reborn] == [("DBIRTH/USP-Ctrl/BR-102", 9)]
    swapped = [t for t, _ in _decoded(node._births(dbirth_first=True))]
    assert swapped[:2] == ["DBIRTH/USP-Ctrl/BR-101", "NBIRTH/USP-Ctrl"]
    assert (node.log.counts.births, node.log.counts.deaths, node.log.counts.data_messages) == (7, 1, 5)


def test_data_kept_while_not_sending_goes_out_later_as_history() -> None:
    node = _node(report_by_exception=False, store_limit=4)
    node._births(dbirth_first=False)
    for _ in range(2):
        assert node._step(node.model.units(), sending=False) == []  # 3 units x 2 steps, 4 kept
    assert node.log.counts.dropped_messages == 2
    stored = _decoded(node._stored_messages())
    assert node._stored_messages() == []
    assert [p.seq for _, p in stored] == [3, 4, 5, 6]  # seq taken when sent, not when measured
    assert all(m.is_historical for _, p in stored for m in p.metrics)
    for _, payload in stored:  # measured before it was sent
        assert payload.timestamp is not None
        assert all(m.timestamp is not None and m.timestamp < payload.timestamp for m in payload.metrics)
