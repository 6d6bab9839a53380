"""The plant model: loading, validation errors, resolution, and the JSON Schema."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns.core.model import MetricInfo, PlantModel, parse_model
from uns.engine.plant import load_model
from uns.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "pilot-plant.toml"
SCHEMA = json.loads((ROOT / "schemas" / "plant-model.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())

CELL = "acme/basel/pilot/usp"


@pytest.fixture(scope="module")
def pilot() -> PlantModel:
    return load_model(EXAMPLE)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.toml"
    path.write_text(text)
    return path


# ------------------------------------------------------------- the pilot plant


def test_pilot_plant_units_resolve_to_isa95_paths(pilot: PlantModel) -> None:
    expected = {
        ("USP-Ctrl", "BR-101"): "acme/basel/pilot/usp/br-101",
        ("USP-Ctrl", "BR-102"): "acme/basel/pilot/usp/br-102",
        ("GRAN-Ctrl", "GR-201"): "acme/basel/pilot/granulation/gr-201",
        ("TAB-Ctrl", "TP-301"): "acme/basel/pilot/compression/tp-301",
    }
    for (node, device), path in expected.items():
        resolved = pilot.resolve("PilotPlant", node, device)
        assert (resolved.path, resolved.unmapped) == (path, False)
    assert pilot.equipment["acme/basel/pilot/usp/br-101"].level == "unit"
    assert pilot.equipment["acme/basel/pilot/granulation"].level == "process_cell"
    assert pilot.name == "ACME Basel pilot plant"


def test_node_level_metrics_map_to_the_process_cell(pilot: PlantModel) -> None:
    resolved = pilot.resolve("PilotPlant", "USP-Ctrl", None)
    assert (resolved.path, resolved.unmapped) == (CELL, False)


def test_metric_overrides_and_cpp_limits(pilot: PlantModel) -> None:
    assert pilot.metric("PilotPlant", "USP-Ctrl", "BR-101", "Temperature") == MetricInfo(
        "Temperature", "degC", 36.5, 37.5
    )
    assert pilot.metric("PilotPlant", "USP-Ctrl", "BR-102", "pH") == MetricInfo("pH", None, 6.9, 7.3)
    assert pilot.metric("PilotPlant", "TAB-Ctrl", "TP-301", "CompressionForce") == MetricInfo(
        "CompressionForce", "kN", 8.0, 14.0
    )
    assert pilot.metric("PilotPlant", "GRAN-Ctrl", "GR-201", "SprayRate") == MetricInfo("SprayRate", "g/min")
    assert pilot.metric("PilotPlant", "TAB-Ctrl", "TP-301", "Running") == MetricInfo("Running")
    assert pilot.metric("PilotPlant", "TAB-Ctrl", "TP-301", "NotInModel") is None


def test_context_metrics(pilot: PlantModel) -> None:
    assert pilot.context_key("PilotPlant", "GRAN-Ctrl", "GR-201", "Batch/ID") == "batch_id"
    assert pilot.context_key("PilotPlant", "GRAN-Ctrl", "GR-201", "Batch/Phase") == "phase"
    assert pilot.context_key("PilotPlant", "GRAN-Ctrl", "GR-201", "BedTemp") is None
    assert pilot.context_key("PilotPlant", "USP-Ctrl", "BR-101", "Batch/ID") is None


def test_unmapped_sources_never_collide(pilot: PlantModel) -> None:
    a = pilot.resolve("PilotPlant", "Other-Ctrl", "BR-101")
    b = pilot.resolve("PilotPlant", "Other2-Ctrl", "BR-101")
    node = pilot.resolve("PilotPlant", "Other-Ctrl")
    assert a.path == "_unmapped/PilotPlant/Other-Ctrl/BR-101"
    assert b.path == "_unmapped/PilotPlant/Other2-Ctrl/BR-101"
    assert node.path == "_unmapped/PilotPlant/Other-Ctrl"
    assert a.unmapped
    assert b.unmapped
    assert node.unmapped
    # an unmapped device of a mapped node is unmapped too (a node mapping covers node metrics only)
    assert pilot.resolve("PilotPlant", "USP-Ctrl", "BR-999").unmapped


def test_resolution_is_cached(pilot: PlantModel) -> None:
    assert pilot.resolve("G", "N", "D") is pilot.resolve("G", "N", "D")
    assert pilot.resolve("PilotPlant", "USP-Ctrl", "BR-101") is pilot.resolve(
        "PilotPlant", "USP-Ctrl", "BR-101"
    )


def test_empty_model_maps_nothing() -> None:
    model = PlantModel.empty()
    resolved = model.resolve("PilotPlant", "USP-Ctrl", "BR-101")
    assert resolved.unmapped
    assert resolved.path == "_unmapped/PilotPlant/USP-Ctrl/BR-101"
    assert model.metric("PilotPlant", "USP-Ctrl", "BR-101", "Temperature") is None
    assert model.context_key("PilotPlant", "GRAN-Ctrl", "GR-201", "Batch/ID") is None


@given(
    ids=st.lists(
        st.tuples(
            st.text(st.characters(exclude_characters="/+#"), min_size=1, max_size=8),
            st.text(st.characters(exclude_characters="/+#"), min_size=1, max_size=8),
            st.none() | st.text(st.characters(exclude_characters="/+#"), min_size=1, max_size=8),
        ),
        unique=True,
        max_size=20,
    )
)
@settings(max_examples=100, deadline=None)
def test_unmapped_paths_are_distinct_for_distinct_sources(ids: list[tuple[str, str, str | None]]) -> None:
    model = PlantModel.empty()
    paths = [model.resolve(*source).path for source in ids]
    assert len(set(paths)) == len(paths)


# ------------------------------------------------------------- the JSON Schema


def test_schema_is_valid_and_the_example_conforms() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    VALIDATOR.validate(tomllib.loads(EXAMPLE.read_text()))


# ------------------------------------------------------------- errors

GOOD = """
[equipment."acme"]
level = "enterprise"
[equipment."acme/site"]

[[source]]
group = "G"
node = "N"
path = "acme/site"
[source.metrics.T]
unit = "degC"
"""

BAD_CASES: list[tuple[str, str, str, bool]] = [
    # (toml, key expected in the error, message fragment, schema also rejects)
    ("format = 2\n" + GOOD, "format", "unsupported model format", True),
    ("colour = 'red'\n" + GOOD, "colour", "unknown key", True),
    ('[equipment."acme/x"]\n', 'equipment."acme/x"', "parent 'acme' is not declared", False),
    ('[equipment."acme/_x"]\n', 'equipment."acme/_x"', "segment '_x'", True),
    ('[equipment."acme"]\nlevel = "Process Cell"\n', "equipment.acme.level", "lower_snake_case", True),
    (
        GOOD + '[[source]]\ngroup = "G"\nnode = "N"\npath = "acme/nope"\n',
        "source[1].path",
        "not declared",
        False,
    ),
    (GOOD + '[[source]]\ngroup = "G"\nnode = "N"\npath = "acme"\n', "source[1]", "mapped twice", False),
    (GOOD.replace('node = "N"', 'node = "N/1"'), "source[0].node", "must not contain", True),
    (GOOD.replace('path = "acme/site"', ""), "source[0].path", "is required", True),
    (GOOD + "low = 5\nhigh = 1\n", "source[0].metrics.T.low", "above high", False),
    (GOOD + "low = 'five'\n", "source[0].metrics.T.low", "finite number", True),
    (GOOD + "context = 'batch/id'\n", "source[0].metrics.T.context", "must not contain", True),
    (GOOD + "colour = 1\n", "source[0].metrics.T.colour", "unknown key", True),
    (GOOD + "display_name = 'a//b'\n", "source[0].metrics.T.display_name", "empty", True),
    (GOOD + "[source.metrics.U]\ndisplay_name = 'T'\n", "source[0].metrics.U", "also used", False),
    ("source = 3\n", "source", "array of tables", True),
]


@pytest.mark.parametrize(("text", "key", "fragment", "schema_rejects"), BAD_CASES)
def test_bad_models_raise_one_clear_error(
    tmp_path: Path, text: str, key: str, fragment: str, schema_rejects: bool
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ModelError) as info:
        load_model(path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key
    assert fragment in str(err)
    assert str(path) in str(err)
    assert VALIDATOR.is_valid(tomllib.loads(text)) is not schema_rejects


def test_good_snippet_loads_and_conforms(tmp_path: Path) -> None:
    model = load_model(write(tmp_path, GOOD))
    assert model.resolve("G", "N").path == "acme/site"
    assert VALIDATOR.is_valid(tomllib.loads(GOOD))


def test_error_names_the_line(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("low = 8.0", "low = 18.0")
    with pytest.raises(ModelError) as info:
        load_model(write(tmp_path, text))
    line = text.splitlines().index("low = 18.0") + 1
    assert f"(line {line})" in str(info.value)
    assert info.value.key == "source[4].metrics.CompressionForce.low"


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[equipment\nlevel = 1\n")
    with pytest.raises(ModelError, match=r"not valid TOML.*line 1") as info:
        load_model(path)
    assert info.value.file == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        load_model(tmp_path / "absent.toml")


# ------------------------------------------------------------- generated models

SEGMENT = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,6}", fullmatch=True)
SP_ID = st.text(st.characters(exclude_characters="/+#", exclude_categories=("Cs",)), min_size=1, max_size=6)


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    paths: list[str] = []
    for _ in range(draw(st.integers(1, 8))):
        parent = draw(st.sampled_from([None, *paths]))
        child = draw(SEGMENT)
        path = child if parent is None else f"{parent}/{child}"
        if path not in paths:
            paths.append(path)
    sources = draw(st.lists(st.tuples(SP_ID, SP_ID, st.none() | SP_ID), unique=True, max_size=6))
    return {
        "equipment": {p: {"level": "unit"} for p in paths},
        "source": [
            {
                "group": g,
                "node": n,
                **({} if d is None else {"device": d}),
                "path": draw(st.sampled_from(paths)),
                # sources that share a path need different metric names: number them per source
                "metrics": {f"m/{i}": {"unit": "u", "low": 0, "high": 1}, f"x{i}": {"context": "batch_id"}},
            }
            for i, (g, n, d) in enumerate(sources)
        ],
    }


@given(doc=models())
@settings(max_examples=60, deadline=None)
def test_generated_models_load_conform_and_resolve(doc: dict[str, Any]) -> None:
    assert VALIDATOR.is_valid(doc)
    model = parse_model(doc)
    for i, entry in enumerate(doc["source"]):
        resolved = model.resolve(entry["group"], entry["node"], entry.get("device"))
        assert resolved.path == entry["path"]
        assert not resolved.unmapped
        assert resolved.context_keys == {f"x{i}": "batch_id"}
        assert resolved.metrics[f"m/{i}"] == MetricInfo(f"m/{i}", "u", 0.0, 1.0)


def test_a_context_key_the_store_refuses_is_a_model_error() -> None:
    """The model is checked completely: a context key that the context store would refuse
    at the first birth (too long, a control character) is refused when the model loads."""
    for bad in ("k" * 129, "bad\tkey", "a/b"):
        doc = {
            "equipment": {"a": {}},
            "source": [{"group": "g", "node": "n", "path": "a", "metrics": {"m": {"context": bad}}}],
        }
        with pytest.raises(ModelError, match="context key") as info:
            parse_model(doc)
        assert info.value.key == "source[0].metrics.m.context"
    ok = {
        "equipment": {"a": {}},
        "source": [{"group": "g", "node": "n", "path": "a", "metrics": {"m": {"context": "k" * 128}}}],
    }
    assert parse_model(ok).resolve("g", "n", None).context_keys == {"m": "k" * 128}


def test_sources_sharing_a_path_need_different_metric_names() -> None:
    def doc(second: dict[str, Any]) -> dict[str, Any]:
        return {
            "equipment": {"a": {}},
            "source": [
                {"group": "g", "node": "n1", "path": "a", "metrics": {"Temp": {"unit": "degC"}}},
                {"group": "g", "node": "n2", "path": "a", "metrics": second},
            ],
        }

    with pytest.raises(ModelError, match="also a metric of source g/n1") as info:
        parse_model(doc({"Temp": {}}))
    assert info.value.key == "source[1].metrics.Temp"
    with pytest.raises(ModelError, match="'Temp' on 'a'"):
        parse_model(doc({"T2": {"display_name": "Temp"}}))  # the UNS name counts, not the Sparkplug one
    model = parse_model(doc({"Pressure": {}}))
    assert model.resolve("g", "n2", None).path == "a"
