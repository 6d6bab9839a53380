"""The simulator's batch faults (uns.sim.inject): parsing, and what they do to a batch (pure)."""

from __future__ import annotations

import pytest

from uns.errors import ConfigError
from uns.sim.batch import ContextEvent
from uns.sim.inject import CORRECTION_USER, BatchFault, Injector, parse_fault
from uns.sim.plant import BatchUnit, pilot_plant


@pytest.mark.parametrize(
    ("kind", "text", "fault"),
    [
        ("excursion", "B1:Temperature=38.2", BatchFault("excursion", "B1", metric="Temperature", value=38.2)),
        (
            "excursion",
            "B1:pH=7.6:growth",
            BatchFault("excursion", "B1", metric="pH", value=7.6, phase="growth"),
        ),
        ("shift", "B1:Temperature=0.8", BatchFault("shift", "B1", metric="Temperature", value=0.8)),
        ("shift", "B1:Agitation=-5", BatchFault("shift", "B1", metric="Agitation", value=-5.0)),
        ("death", "B1", BatchFault("death", "B1")),
        ("gap", "B1", BatchFault("gap", "B1", seconds=3.0)),
        ("gap", "B1:1.5", BatchFault("gap", "B1", seconds=1.5)),
        ("correct_context", "B1", BatchFault("correct_context", "B1")),
    ],
)
def test_faults_parse(kind: str, text: str, fault: BatchFault) -> None:
    assert parse_fault(kind, text) == fault


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("excursion", "B1"),
        ("excursion", "B1:T=x"),
        ("shift", "B1:Temperature"),
        ("shift", "B1:Temperature=nan"),
        ("shift", "B1:=1"),
        ("gap", "B1:0"),
        ("gap", "B1:soon"),
        ("death", "B1:x"),
        ("death", ""),
        ("melt", "B1"),
    ],
)
def test_bad_faults_are_config_errors(kind: str, text: str) -> None:
    with pytest.raises(ConfigError):
        parse_fault(kind, text)


def bioreactor(faults: tuple[BatchFault, ...]) -> tuple[BatchUnit, Injector]:
    plant = pilot_plant(phase_seconds=10.0)
    injector = Injector(faults)
    injector.attach(plant)
    unit = plant.nodes[0].devices[0]  # BR-101: batch B2026-0001 from t = 0
    assert isinstance(unit, BatchUnit)
    return unit, injector


def test_an_excursion_holds_the_value_in_the_middle_of_the_second_phase() -> None:
    unit, _ = bioreactor((BatchFault("excursion", "B2026-0001", metric="Temperature", value=38.2),))
    held = []
    for step in range(1, 200):  # 0.1 s steps through 20 s: setup, inoculation
        unit.step(0.1)
        if unit.values["Temperature"] == 38.2:
            held.append((unit.cycle.phase, round(step * 0.1, 1)))
    assert held and {p for p, _ in held} == {"inoculation"}
    assert min(t for _, t in held) >= 14.0 and max(t for _, t in held) <= 16.0


def test_a_shift_offsets_the_whole_batch_and_leaves_the_next_alone() -> None:
    """Twin units from the same seed: one with B2026-0001 shifted, one without.  The shifted
    one publishes exactly 0.8 more during that batch and the same values afterwards."""
    shifted, _ = bioreactor((BatchFault("shift", "B2026-0001", metric="Temperature", value=0.8),))
    plain, _ = bioreactor(())
    seen: dict[str | None, set[float]] = {}
    for _ in range(1, 600):  # 0.1 s steps through 60 s: the batch (40 s), idle, the next batch
        shifted.step(0.1)
        plain.step(0.1)
        a, b = shifted.values["Temperature"], plain.values["Temperature"]
        assert isinstance(a, float) and isinstance(b, float)
        seen.setdefault(plain.cycle.batch_id, set()).add(round(a - b, 9))
    assert seen["B2026-0001"] == {0.8}
    assert {round(d, 9) for k, v in seen.items() if k != "B2026-0001" for d in v} == {0.0}


def test_a_gap_mutes_the_start_of_the_last_phase_and_a_death_fires_once() -> None:
    unit, injector = bioreactor(
        (BatchFault("gap", "B2026-0001", seconds=2.0), BatchFault("death", "B2026-0001"))
    )
    muted, deaths = [], []
    for step in range(1, 450):
        unit.step(0.1)
        if unit.muted:
            muted.append(round(step * 0.1, 1))
        deaths += [round(step * 0.1, 1) for _ in injector.take_deaths()]
    assert muted and min(muted) >= 30.0 and max(muted) < 32.1  # harvest starts at 30 s
    assert len(deaths) == 1 and 25.0 <= deaths[0] < 25.2  # halfway through growth (20-30 s)


def test_a_correction_is_back_dated_to_the_batch_start_when_the_last_phase_starts() -> None:
    _, injector = bioreactor((BatchFault("correct_context", "B2026-0001"),))
    sent: list[ContextEvent] = []
    on_context = injector.observe(sent.append)
    path = "acme/basel/pilot/usp/br-101"
    full = {"batch_id": "B2026-0001", "recipe": "mAb-A v3"}
    on_context(ContextEvent(path, 1000, set={**full, "phase": "setup"}, reason="batch start"))
    on_context(ContextEvent(path, 2000, set={**full, "phase": "growth"}, reason="phase change"))
    on_context(ContextEvent(path, 3000, set={**full, "phase": "harvest"}, reason="phase change"))
    assert [(e.ts, e.set.get("recipe"), e.user) for e in sent] == [
        (1000, "mAb-A v3", "sim"),
        (2000, "mAb-A v3", "sim"),
        (3000, "mAb-A v3 (corrected)", "sim"),  # from now on the MES sends the corrected recipe
        (1000, "mAb-A v3 (corrected)", CORRECTION_USER),  # the correction, dated at the batch start
    ]
