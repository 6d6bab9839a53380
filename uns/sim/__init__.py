"""A Sparkplug B edge-node simulator: a pharma pilot plant or a load plant, with batch context.

- :mod:`uns.sim.plant`: plant definitions and deterministic value models (pure)
- :mod:`uns.sim.batch`: ISA-88 batch/phase cycles and context events (pure)
- :mod:`uns.sim.node`: what one edge node sends: births, DATA, deaths, seq, bdSeq (pure)
- :mod:`uns.sim.edge`: that node on its own MQTT connection, with fault hooks
- :mod:`uns.sim.faults`: the fault-injection hooks an edge node inherits
- :mod:`uns.sim.runner`: many nodes at a target rate; :func:`run_sim`
- :mod:`uns.sim.sentlog`: what was published, for exactly-once checks

Run a plant::

    report = await run_sim(SimConfig(port=1883, rate=50, duration=60, keep_samples=True))
    report.data_messages, report.samples[0]

Drive one node by hand (tests, fault injection)::

    async with EdgeNode(pilot_plant("G").nodes[0], group_id="G", port=1883) as node:
        await node.publish_data()   # one step of every unit, DATA out
        await node.skip_seq()       # the host sees a seq gap next
        await node.kill()           # no DISCONNECT: the broker sends the Will
"""

from uns.sim.batch import ContextEvent
from uns.sim.edge import EdgeNode
from uns.sim.plant import PILOT_GROUP, PILOT_PATHS, Plant, bench_plant, pilot_plant
from uns.sim.runner import SimConfig, SimReport, build_plant, run_sim
from uns.sim.sentlog import SentCounts, SentLog, SentSample

__all__ = [
    "PILOT_GROUP",
    "PILOT_PATHS",
    "ContextEvent",
    "EdgeNode",
    "Plant",
    "SentCounts",
    "SentLog",
    "SentSample",
    "SimConfig",
    "SimReport",
    "bench_plant",
    "build_plant",
    "pilot_plant",
    "run_sim",
]
