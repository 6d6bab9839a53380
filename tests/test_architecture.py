"""The layout's rules, checked over the imports (docs/architecture.md draws them).

Dependencies point one way: cli -> uns_cli -> engine -> sinks/lake -> config ->
mqtt/core -> sparkplug -> errors.  The pure layers (uns.core, uns.sparkplug) import
no asyncio, sockets, files, processes, threads or clocks.  No I/O happens here:
the test reads the source files and parses them with :mod:`ast`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: layer -> the layers it may import (its own layer is always allowed)
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "util": frozenset({"errors"}),  # uns.clock, uns.logs: shell helpers with no uns dependencies
    # The host sessions of uns.sparkplug emit the pipeline's events (uns.core.events and the
    # value helpers of uns.core.values); that is the one way up, and both sides are pure.
    "sparkplug": frozenset({"errors", "core.vocabulary"}),
    "core.vocabulary": frozenset({"errors", "sparkplug"}),
    "core": frozenset({"errors", "sparkplug", "core.vocabulary"}),
    "mqtt": frozenset({"errors", "util"}),
    "config": frozenset({"errors", "util", "mqtt", "core", "core.vocabulary", "sparkplug"}),
    "sinks": frozenset({"errors", "util", "config", "core", "core.vocabulary", "sparkplug"}),
    "lake": frozenset({"errors", "util", "config", "core", "core.vocabulary", "sparkplug"}),
    "sim": frozenset({"errors", "util", "mqtt", "core.vocabulary", "sparkplug"}),
    "batch": frozenset({"errors"}),  # uns.batch: the batch report's pure logic (specs, excursions, ...)
    "engine": frozenset(
        {"errors", "util", "config", "mqtt", "core", "core.vocabulary", "sparkplug", "sinks", "lake"}
    ),
    "uns_cli": frozenset(
        {"errors", "util", "config", "mqtt", "core", "core.vocabulary", "sparkplug", "sinks", "lake", "sim"}
        | {"engine", "package", "batch"}
    ),
    "cli": frozenset(
        {"errors", "util", "config", "mqtt", "core", "core.vocabulary", "sparkplug", "sinks", "lake", "sim"}
        | {"engine", "package", "uns_cli", "batch"}
    ),
    "package": frozenset(),  # uns/__init__.py: the version
}

PURE_LAYERS = frozenset({"sparkplug", "core", "core.vocabulary", "batch"})
#: standard modules that mean I/O, concurrency or a clock
IMPURE_MODULES = frozenset(
    {
        "asyncio",
        "socket",
        "ssl",
        "selectors",
        "os",
        "pathlib",
        "io",
        "shutil",
        "subprocess",
        "threading",
        "multiprocessing",
        "concurrent",
        "time",
        "tempfile",
        "signal",
        "logging",
    }
)
#: calls that read a clock or open a file, whatever was imported
IMPURE_CALLS = frozenset({"open", "now", "utcnow", "today", "time_ns", "monotonic", "perf_counter"})


def layer_of(module: str) -> str | None:
    """The layer of a module of this project, None for a foreign module."""
    parts = module.split(".")
    top = parts[0]
    if top == "cli":
        return "cli"
    if top in ("uns_cli", "lake"):
        return top
    if top != "uns":
        return None
    if len(parts) == 1:
        return "package"
    second = parts[1]
    if second in ("clock", "logs"):
        return "util"
    if second in ("config_options", "config_schema", "keyring"):  # [lake.storage] option tables; key files
        return "config"
    if second == "core":
        return "core.vocabulary" if parts[2:3] in (["events"], ["values"]) else "core"
    if second in ("errors", "config", "sparkplug", "mqtt", "sinks", "sim", "engine", "batch"):
        return second
    raise AssertionError(f"{module}: a module outside the layout; add it to docs/architecture.md and here")


def modules() -> Iterator[tuple[str, Path]]:
    for base in ("uns", "uns_cli", "lake"):
        for path in sorted((ROOT / base).rglob("*.py")):
            if path.name.endswith("_pb2.py"):
                continue
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path
    yield "cli", ROOT / "cli.py"


def imports(source: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in the source, at any depth (lazy imports count too)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, f"line {node.lineno}: use absolute imports"
            yield node.lineno, node.module


def wrong_imports(name: str, source: str) -> list[str]:
    """The imports of module ``name`` that point the wrong way."""
    own = layer_of(name)
    assert own is not None
    wrong = []
    for line, target in imports(source):
        theirs = layer_of(target)
        if theirs is not None and theirs != own and theirs not in ALLOWED[own]:
            wrong.append(f"{name}:{line}: {own} must not import {target} ({theirs})")
    return wrong


def impurities(name: str, source: str) -> list[str]:
    """What makes a module of the pure core impure: I/O modules, clock and file calls."""
    wrong = [
        f"{name}:{line}: imports {target}"
        for line, target in imports(source)
        if target.split(".")[0] in IMPURE_MODULES
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            called = getattr(func, "id", None) or getattr(func, "attr", "")
            if called in IMPURE_CALLS:
                wrong.append(f"{name}:{node.lineno}: calls {called}()")
    return wrong


MODULES = list(modules())
PURE = [(m, p) for m, p in MODULES if layer_of(m) in PURE_LAYERS]


def test_layers_are_known() -> None:
    for name, _path in MODULES:
        assert layer_of(name) in ALLOWED, name


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_one_way(name: str, path: Path) -> None:
    wrong = wrong_imports(name, path.read_text(encoding="utf-8"))
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("name", "path"), PURE, ids=[m for m, _ in PURE])
def test_pure_core_does_no_io(name: str, path: Path) -> None:
    wrong = impurities(name, path.read_text(encoding="utf-8"))
    assert not wrong, f"{name} belongs to the pure core:\n" + "\n".join(wrong)


def test_the_checks_catch_a_violation() -> None:
    bad = (
        "import asyncio\nfrom uns.engine.host import Engine\n\n"
        "def f():\n    return open('x'), time.time_ns()\n"
    )
    assert wrong_imports("uns.core.probe", bad) == [
        "uns.core.probe:2: core must not import uns.engine.host (engine)"
    ]
    assert impurities("uns.core.probe", bad) == [
        "uns.core.probe:1: imports asyncio",
        "uns.core.probe:5: calls open()",
        "uns.core.probe:5: calls time_ns()",
    ]
    assert wrong_imports("uns.engine.host", "from uns.core.events import Batch\n") == []
    assert wrong_imports("lake.sink", "import uns_cli.output\n") == [
        "lake.sink:1: lake must not import uns_cli.output (uns_cli)"
    ]
    with pytest.raises(AssertionError):
        layer_of("uns.somewhere_new")
