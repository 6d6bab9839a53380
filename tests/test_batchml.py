"""Batch history from an ISA-88 export (issue 31, item 6): a B2MML/BatchML document becomes
the same batches and phases as the equivalent context events, its equipment ids are mapped
by the plant model (one clear error for an unmapped one), it is idempotent, and the parser
refuses entity expansion."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lake_helpers import views_connection
from uns.client.batchml import BATCHML_SOURCE, batchml_events
from uns.client.importer import read_events
from uns.core.context import parse_context_event
from uns.core.events import ContextChange
from uns.core.model import PlantModel, model_from_toml
from uns.engine.plant import load_model
from uns.errors import UnsError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "batch-history.xml"
PILOT = load_model(ROOT / "examples" / "pilot-plant.toml")
GR = "acme/basel/pilot/granulation/gr-201"
BR = "acme/basel/pilot/usp/br-101"
H = 3_600_000


def changes_of(events: list[tuple[str, dict[str, Any]]]) -> list[ContextChange]:
    """The changes the engine makes of (path, event) pairs, arriving in this order."""
    out = []
    for n, (path, event) in enumerate(events):
        out += parse_context_event(path, event, event["ts"] + n)
    return out


def views(changes: list[ContextChange]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    con = views_connection([], changes)
    try:
        batches = con.execute(
            'SELECT batch_id, path, product, recipe, order_id, epoch_ms(start), epoch_ms("end"), status'
            " FROM batches ORDER BY 1, 2"
        ).fetchall()
        phases = con.execute(
            'SELECT batch_id, path, phase, epoch_ms(start), epoch_ms("end") FROM batch_phases ORDER BY 1, 4'
        ).fetchall()
    finally:
        con.close()
    return batches, phases


def imported(data: bytes, model: PlantModel = PILOT) -> list[ContextChange]:
    return changes_of([(path, event) for _line, path, event in batchml_events(data, model, file="t.xml")])


def test_the_example_is_the_batches_its_equivalent_context_events_make() -> None:
    """The MES events that say the same as examples/batch-history.xml, written by hand."""
    t0 = 1_762_149_600_000  # 2025-11-03T06:00:00Z
    granulation = {"product": "Tab-X 50 mg", "recipe": "Tab-X granulation v2", "recipe_version": "2"}
    keys = ["batch_id", "order_id", "product", "recipe", "recipe_version", "unit_procedure", "phase"]
    equivalent = [
        (GR, {"ts": t0, "set": {"batch_id": "H2025-0101", "order_id": "PO-4700101", **granulation,
                                "unit_procedure": "granulation", "phase": "dry_mix"}}),
        (GR, {"ts": t0 + H // 2, "set": {"phase": "wet_granulation"}}),
        (GR, {"ts": t0 + 3 * H // 2, "set": {"phase": "drying"}}),
        (GR, {"ts": t0 + 3 * H, "clear": keys}),
        (GR, {"ts": t0 + 4 * H, "set": {"batch_id": "H2025-0102", "order_id": "PO-4700102", **granulation,
                                        "unit_procedure": "granulation", "phase": "dry_mix"}}),
        (GR, {"ts": t0 + 9 * H // 2, "set": {"phase": "wet_granulation"}}),
        (GR, {"ts": t0 + 19 * H // 4, "set": {"batch_status": "aborted"}, "clear": keys}),
        (BR, {"ts": t0 + 25 * H, "set": {"batch_id": "H2025-0103", "order_id": "PO-4700103",
                                         "product": "mAb-A", "recipe": "mAb-A v3", "phase": "setup"}}),
        (BR, {"ts": t0 + 26 * H, "set": {"phase": "growth"}}),
        (BR, {"ts": t0 + 36 * H, "set": {"phase": "harvest"}}),
        (BR, {"ts": t0 + 37 * H, "clear": ["batch_id", "order_id", "product", "recipe", "phase"]}),
    ]  # fmt: skip
    expected = views(changes_of(equivalent))
    assert views(imported(EXAMPLE.read_bytes())) == expected
    batches, phases = expected
    assert [(b[0], b[1], b[7]) for b in batches] == [
        ("H2025-0101", GR, "closed"), ("H2025-0102", GR, "aborted"), ("H2025-0103", BR, "closed"),
    ]  # fmt: skip
    assert [p[2] for p in phases if p[0] == "H2025-0103"] == ["setup", "growth", "harvest"]


# ------------------------------------------------------------------ any history (hypothesis)

PHASES = ("charge", "mix", "heat", "hold", "cool", "discharge")
#: equipment id -> path: by the model's [equipment_ids], and by an equipment's name
UNITS = {"UNIT-A": "a/cell/u1", "Unit B": "a/cell/u2"}
MODEL = model_from_toml("""
[equipment."a"]
[equipment."a/cell"]
[equipment."a/cell/u1"]
[equipment."a/cell/u2"]
name = "Unit B"
[equipment_ids]
"UNIT-A" = "a/cell/u1"
""")


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Batches on two units, one after another on each (gaps of 0 or more minutes), each
    with 1-3 different phases that cover it."""
    batches: list[dict[str, Any]] = []
    for equipment in draw(st.lists(st.sampled_from([*UNITS, "Unit B"]), min_size=1, max_size=6)):
        path = UNITS.get(equipment, "a/cell/u2")
        start = (
            max((b["end"] for b in batches if b["path"] == path), default=0)
            + draw(st.integers(0, 3)) * 60_000
        )
        names = draw(st.lists(st.sampled_from(PHASES), min_size=1, max_size=3, unique=True))
        cuts = [start]
        for _ in names:
            cuts.append(cuts[-1] + draw(st.integers(1, 30)) * 60_000)
        batches.append({
            "id": f"B{len(batches) + 1:03d}", "equipment": equipment, "path": path, "start": start,
            "end": cuts[-1], "phases": list(zip(names, cuts, cuts[1:], strict=False)),
            "aborted": draw(st.booleans()),
        })  # fmt: skip
    return batches


def _iso(ms: int) -> str:
    return "2026-01-01T00:00:00Z" if ms == 0 else _stamp(ms)


def _stamp(ms: int) -> str:

    return (
        (dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms))
        .isoformat()
        .replace("+00:00", "Z")
    )


def to_batchml(batches: list[dict[str, Any]]) -> bytes:
    """A BatchInformation document of the history: Batch entries with a UnitProcedure on
    their unit and its Phase entries nested inside."""
    out = [
        '<?xml version="1.0"?>',
        '<BatchInformation xmlns="http://www.mesa.org/xml/B2MML-V0600"><BatchList>',
    ]
    for b in batches:
        times = (
            f"<ActualStartTime>{_iso(b['start'])}</ActualStartTime>"
            f"<ActualEndTime>{_iso(b['end'])}</ActualEndTime>"
        )
        status = "Aborted" if b["aborted"] else "Complete"
        out.append(
            f"<BatchListEntry><ID>{b['id']}</ID><BatchListEntryType>Batch</BatchListEntryType>"
            f"<Status>{status}</Status><RecipeID>R1</RecipeID><BatchID>{b['id']}</BatchID>"
            f"<ProductID>P1</ProductID>{times}"
            f"<BatchListEntry><ID>{b['id']}.1</ID><BatchListEntryType>UnitProcedure</BatchListEntryType>"
            f"<EquipmentID>{b['equipment']}</EquipmentID>{times}"
        )
        for name, a, z in b["phases"]:
            out.append(
                f"<BatchListEntry><ID>{b['id']}.{name}</ID><Description>{name}</Description>"
                f"<BatchListEntryType>Phase</BatchListEntryType><ActualStartTime>{_iso(a)}</ActualStartTime>"
                f"<ActualEndTime>{_iso(z)}</ActualEndTime></BatchListEntry>"
            )
        out.append("</BatchListEntry></BatchListEntry>")
    out.append("</BatchList></BatchInformation>")
    return "\n".join(out).encode()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_any_history_comes_back_as_its_batches_and_phases(batches: list[dict[str, Any]]) -> None:
    t0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    got_batches, got_phases = views(imported(to_batchml(batches), MODEL))
    status = {b["id"]: "aborted" if b["aborted"] else "closed" for b in batches}
    assert got_batches == sorted(
        (b["id"], b["path"], "P1", "R1", None, t0 + b["start"], t0 + b["end"], status[b["id"]])
        for b in batches
    )
    assert got_phases == sorted(
        ((b["id"], b["path"], name, t0 + a, t0 + z) for b in batches for name, a, z in b["phases"]),
        key=lambda row: (row[0], row[3]),
    )


# ------------------------------------------------------------------ errors and identity


def test_an_unmapped_equipment_id_is_one_error_naming_its_line() -> None:
    data = (
        EXAMPLE.read_bytes()
        .replace(b"<EquipmentID>TP-301</EquipmentID>", b"")
        .replace(b"<EquipmentID>Bioreactor BR-101</EquipmentID>", b"<EquipmentID>BR-999</EquipmentID>")
    )
    lines = data.decode().splitlines()
    line = next(n for n, text in enumerate(lines, start=1) if "BR-999" in text)
    with pytest.raises(UnsError) as caught:
        batchml_events(data, PILOT, file="history.xml")
    message = str(caught.value)
    assert (
        message.startswith("history.xml: line ")
        and "EquipmentID 'BR-999' is not in the plant model" in message
    )
    entry_line = int(message.split("line ")[1].split(":", maxsplit=1)[0])
    assert entry_line < line  # the line of the BatchListEntry that names it


def test_entities_and_doctypes_are_refused() -> None:
    bomb = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<BatchInformation><BatchList>&lol2;</BatchList></BatchInformation>"""
    with pytest.raises(UnsError, match=r"refused: .*entities and DTDs are not read"):
        batchml_events(bomb, PILOT, file="bomb.xml")
    with pytest.raises(UnsError, match="not XML"):
        batchml_events(b"<BatchInformation><BatchList>", PILOT)
    with pytest.raises(UnsError, match="is a Foo, not a BatchInformation"):
        batchml_events(b"<Foo/>", PILOT)


def test_a_bad_time_names_its_line() -> None:
    data = EXAMPLE.read_bytes().replace(
        b"2025-11-03T07:30:00Z</ActualStartTime>", b"soon</ActualStartTime>", 1
    )
    with pytest.raises(UnsError, match=r"line \d+: ActualStartTime 'soon' is not an xs:dateTime"):
        batchml_events(data, PILOT)


def test_the_import_is_idempotent_by_the_events_ids(tmp_path: Path) -> None:
    first = read_events(EXAMPLE, model=PILOT)
    again = read_events(EXAMPLE, model=str(ROOT / "examples" / "pilot-plant.toml"))
    assert not first.bad and len(first.events) == 11
    assert [e.id for e in first.events] == [e.id for e in again.events]
    assert all(e.event["source"] == BATCHML_SOURCE and e.id.startswith("auto-") for e in first.events)
    renamed = tmp_path / "other-name.xml"
    renamed.write_bytes(EXAMPLE.read_bytes())
    assert [e.id for e in read_events(renamed, model=PILOT).events] == [e.id for e in first.events]
    with pytest.raises(UnsError, match="needs the plant model"):
        read_events(EXAMPLE)
    assert json.dumps(first.events[0].event)  # what is sent is plain JSON
