"""The simulated plants: their Sparkplug ids, metrics and deterministic value models (pure).

Two plants:

- :func:`pilot_plant`: a small pharma pilot plant.  Group ``PilotPlant``;
  edge node ``USP-Ctrl`` with bioreactors ``BR-101`` and ``BR-102``,
  ``GRAN-Ctrl`` with the high-shear granulator ``GR-201``, ``TAB-Ctrl`` with
  the tablet press ``TP-301``.  Every unit runs ISA-88 batches
  (:mod:`uns.sim.batch`); setpoints follow the phase.
- :func:`bench_plant`: ``nodes`` x ``devices`` x ``metrics`` Doubles
  (``node-000``/``dev-00``/``m000``) for load tests.

Values are a function of the seed and the number and size of the steps taken
(simulated time), never of the wall clock: every model draws from its own
``random.Random(f"{seed}/{node}/{device}")``.  Float metrics hold values that
are exact in float32 so what the simulator logs is what a host decodes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from uns.sim.batch import BatchCycle, BatchRecipe, ContextUpdate
from uns.sim.models import ALARM, COMPRESSION, GRANULATION, MAB, BatchUnit, MetricDef, UnitModel, f32
from uns.sim.units import Bioreactor, Granulator, TabletPress
from uns.sparkplug.datatypes import DataType

__all__ = [
    "ALARM",
    "PILOT_GROUP",
    "PILOT_PATHS",
    "BatchUnit",
    "BenchDevice",
    "Bioreactor",
    "Granulator",
    "MetricDef",
    "NodeController",
    "NodeModel",
    "Plant",
    "TabletPress",
    "UnitModel",
    "bench_plant",
    "pilot_plant",
]

PILOT_GROUP = "PilotPlant"
#: ISA-95 paths of the units (the matching plant model file maps devices to them)
PILOT_PATHS = {
    "BR-101": "acme/basel/pilot/usp/br-101",
    "BR-102": "acme/basel/pilot/usp/br-102",
    "GR-201": "acme/basel/pilot/granulation/gr-201",
    "TP-301": "acme/basel/pilot/compression/tp-301",
}


class NodeController(UnitModel):
    """An edge node's own metrics: firmware, hardware, uptime and load."""

    metrics = (
        MetricDef("Properties/Firmware", DataType.String),
        MetricDef("Properties/Hardware", DataType.String),
        MetricDef("Uptime", DataType.Int64, "s"),
        MetricDef("CPU/Load", DataType.Float, "%", 0.0, 100.0),
    )

    def __init__(self, rng: random.Random, *, firmware: str, hardware: str) -> None:
        super().__init__(None, rng)
        self._boot_age = 86_400.0 * (1 + rng.randrange(30))  # already up for days
        self.values = {
            "Properties/Firmware": firmware,
            "Properties/Hardware": hardware,
            "Uptime": int(self._boot_age),
            "CPU/Load": f32(12.0),
        }

    def step(self, dt: float) -> ContextUpdate | None:
        super().step(dt)
        self.values["Uptime"] = int(self._boot_age + self.sim_seconds)
        load = min(100.0, max(0.0, self._approach("CPU/Load", 12.0, tau=30.0, noise=0.5, dt=dt)))
        self.values["CPU/Load"] = f32(round(load, 1))
        return None


class BenchDevice(UnitModel):
    """``count`` Double metrics ``m000``.. doing independent random walks (uniform steps of +-0.5)."""

    def __init__(self, device_id: str, rng: random.Random, *, count: int) -> None:
        super().__init__(device_id, rng)
        self.metrics = tuple(MetricDef(f"m{i:03d}", DataType.Double) for i in range(count))
        self._names = [m.name for m in self.metrics]
        self._walk = [round(rng.uniform(0.0, 100.0), 3) for _ in self._names]
        self.values = dict(zip(self._names, self._walk, strict=True))

    def step(self, dt: float) -> ContextUpdate | None:
        # hot at benchmark rates: plain lists, one dict rebuild
        self.sim_seconds += dt
        rand = self.rng.random
        self._walk = [round(v + rand() - 0.5, 3) for v in self._walk]
        self.values = dict(zip(self._names, self._walk, strict=True))
        return None


class NodeModel:
    """One edge node: its own metrics, its devices, and node-wide unique aliases."""

    def __init__(self, node_id: str, own: UnitModel | None, devices: list[UnitModel]) -> None:
        self.node_id = node_id
        self.own = own
        self.devices = devices
        self.aliases: dict[tuple[str | None, str], int] = {}
        units: list[UnitModel] = ([own] if own is not None else []) + devices
        for unit in units:
            for metric in unit.metrics:
                self.aliases[(unit.device_id, metric.name)] = len(self.aliases) + 1

    def units(self) -> list[UnitModel]:
        """Everything that publishes DATA: the node's own metrics first, then the devices."""
        own = [self.own] if self.own is not None and self.own.metrics else []
        return own + list(self.devices)

    def device(self, device_id: str | None) -> UnitModel:
        for unit in self.units():
            if unit.device_id == device_id:
                return unit
        raise KeyError(device_id)


@dataclass(slots=True)
class Plant:
    """A whole simulated plant: one Sparkplug group of edge nodes."""

    group_id: str
    nodes: list[NodeModel]


def _rng(seed: int, node_id: str, device_id: str | None) -> random.Random:
    # str seeds hash with SHA-512: stable across processes, unlike hash()
    return random.Random(f"{seed}/{node_id}/{device_id or '-'}")


def pilot_plant(group_id: str = PILOT_GROUP, *, seed: int = 0, phase_seconds: float = 10.0) -> Plant:
    """The pharma pilot plant (ids fixed, see the module docstring)."""
    units = ("BR-101", "BR-102", "GR-201", "TP-301")

    def cycle(device_id: str, spec: tuple[str, str, tuple[str, ...]]) -> BatchCycle:
        recipe = BatchRecipe(product=spec[0], recipe=spec[1], phases=spec[2])
        index = units.index(device_id)
        return BatchCycle(
            recipe,
            unit_index=index,
            unit_count=len(units),
            phase_seconds=phase_seconds,
            offset=phase_seconds * index / len(units),
        )

    def controller(node_id: str, firmware: str, hardware: str) -> NodeController:
        return NodeController(_rng(seed, node_id, None), firmware=firmware, hardware=hardware)

    usp = NodeModel(
        "USP-Ctrl",
        controller("USP-Ctrl", "4.2.1", "S7-1518"),
        [
            Bioreactor(
                device_id,
                _rng(seed, "USP-Ctrl", device_id),
                path=PILOT_PATHS[device_id],
                cycle=cycle(device_id, MAB),
                spectrum=device_id == "BR-101",
            )
            for device_id in ("BR-101", "BR-102")
        ],
    )
    gran = NodeModel(
        "GRAN-Ctrl",
        controller("GRAN-Ctrl", "3.9.0", "CompactLogix 5380"),
        [
            Granulator(
                "GR-201",
                _rng(seed, "GRAN-Ctrl", "GR-201"),
                path=PILOT_PATHS["GR-201"],
                cycle=cycle("GR-201", GRANULATION),
            )
        ],
    )
    tab = NodeModel(
        "TAB-Ctrl",
        controller("TAB-Ctrl", "2.7.4", "X20CP3586"),
        [
            TabletPress(
                "TP-301",
                _rng(seed, "TAB-Ctrl", "TP-301"),
                path=PILOT_PATHS["TP-301"],
                cycle=cycle("TP-301", COMPRESSION),
            )
        ],
    )
    return Plant(group_id, [usp, gran, tab])


def bench_plant(group_id: str = "Bench", *, nodes: int, devices: int, metrics: int, seed: int = 0) -> Plant:
    """The load plant: ``node-%03d`` / ``dev-%02d`` / ``m%03d`` Doubles, no node metrics."""
    if nodes < 1 or devices < 1 or metrics < 1:
        raise ValueError("nodes, devices and metrics must be at least 1")
    built = []
    for n in range(nodes):
        node_id = f"node-{n:03d}"
        devs: list[UnitModel] = [
            BenchDevice(f"dev-{d:02d}", _rng(seed, node_id, f"dev-{d:02d}"), count=metrics)
            for d in range(devices)
        ]
        built.append(NodeModel(node_id, None, devs))
    return Plant(group_id, built)
