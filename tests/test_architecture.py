"""The layout's rules, checked over the imports (docs/architecture.md draws them).

Dependencies point one way: the faces (uns.cli, uns.web) -> validation, demo -> review ->
batch, audit, client, users -> engine -> sinks/lake -> config -> mqtt/core -> sparkplug ->
errors.  The library never imports a face, and a face imports nothing of the world but the
standard library and its own toolkit (typer for the command line, starlette, uvicorn and
jinja2 for the web workspace; so it cannot hold a query, a file of the lake or a
signature: those are library calls a test can reach).  No module takes part in an import
circle.  The pure layers (uns.core, uns.sparkplug, the batch report's logic) import no
asyncio, sockets, files, processes, threads or clocks.  No I/O happens here:
the test reads the source files and parses them with :mod:`ast`.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: layer -> the layers it may import (its own layer is always allowed)
_BASE = frozenset({"errors", "util", "config", "mqtt", "core", "core.vocabulary", "sparkplug"})
#: everything but the faces (and the validation and demo that use the whole library)
_LIBRARY = _BASE | {
    "sinks", "lake", "sim", "engine", "engine.plant", "batch", "batch.logic", "audit", "client", "render",
    "users", "review",
}  # fmt: skip
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "util": frozenset({"errors"}),  # uns.clock, uns.logs, uns.output: shell helpers
    # The host sessions of uns.sparkplug emit the pipeline's events (uns.core.events and the
    # value helpers of uns.core.values); that is the one way up, and both sides are pure.
    "sparkplug": frozenset({"errors", "core.vocabulary"}),
    "core.vocabulary": frozenset({"errors", "sparkplug"}),
    "core": frozenset({"errors", "sparkplug", "core.vocabulary"}),
    "mqtt": frozenset({"errors", "util"}),
    "config": frozenset({"errors", "util", "mqtt", "core", "core.vocabulary", "sparkplug"}),
    "sinks": _BASE - {"mqtt"},
    "lake": _BASE - {"mqtt"},
    "sim": frozenset({"errors", "util", "mqtt", "core.vocabulary", "sparkplug"}),
    # uns.batch.{spec,signals,times,spc,envelope,review,rules}: the batch record's pure logic
    "batch.logic": frozenset({"errors"}),
    "render": frozenset({"errors"}),  # uns.pdf: HTML printed by Chromium
    "engine.plant": frozenset({"errors", "core"}),  # the plant model file, read
    "engine": _BASE | {"sinks", "lake", "engine.plant"},
    # library features over the lake, which both faces call
    "audit": _BASE | {"lake"},
    # talking to a running engine: context events, records, inspection; a BatchML import
    # maps its equipment with the plant model file (engine.plant)
    "client": _BASE | {"lake", "engine.plant"},
    "batch": _BASE | {"lake", "audit", "batch.logic", "render", "engine.plant"},
    "users": _BASE | {"lake", "audit"},  # accounts, passwords, log-ins and sessions of the workspace
    # the review: report + dispositions + signatures + context by people, over the above
    "review": _BASE | {"lake", "audit", "batch", "batch.logic", "client", "users", "render", "engine.plant"},
    "demo": _LIBRARY,
    "validation": _LIBRARY | {"demo", "package"},
    # the faces: they may import the whole library; the library never imports them
    "cli": _LIBRARY | {"validation", "demo", "package", "web"},  # uns serve starts the web face
    "web": _LIBRARY | {"package"},
    "entry": frozenset({"cli"}),  # uns/__main__.py
    "package": frozenset(),  # uns/__init__.py: the version
}

PURE_LAYERS = frozenset({"sparkplug", "core", "core.vocabulary", "batch.logic"})
#: what a face may import of the world outside uns and the standard library: its toolkit,
#: nothing that would hold logic (queries, crypto, files of the lake: duckdb, pyarrow,
#: deltalake, cryptography)
FACE_FOREIGN = {
    "cli": frozenset({"typer", "click", "rich"}),
    "web": frozenset({"starlette", "uvicorn", "jinja2", "markupsafe"}),
}
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
    if parts[0] != "uns":
        return None
    if len(parts) == 1:
        return "package"
    second = parts[1]
    third = parts[2] if len(parts) > 2 else ""
    if second == "__main__":
        return "entry"
    if second in ("clock", "logs", "output"):
        return "util"
    if second == "pdf":
        return "render"
    # [lake.storage] option tables; the schema; the [broker] section; the config as TOML; [web]; key files
    if second in ("config_options", "config_schema", "config_broker", "config_toml", "config_web", "keyring"):
        return "config"
    if second == "core":
        return "core.vocabulary" if third in ("events", "values") else "core"
    if second == "batch" and third in ("spec", "signals", "times", "spc", "envelope", "review", "rules"):
        return "batch.logic"
    if second == "engine" and third == "plant":
        return "engine.plant"
    if second in (
        "errors", "config", "sparkplug", "mqtt", "sinks", "lake", "sim", "engine", "batch", "audit",
        "client", "validation", "demo", "cli", "users", "review", "web",
    ):  # fmt: skip
        return second
    raise AssertionError(f"{module}: a module outside the layout; add it to docs/architecture.md and here")


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / "uns").rglob("*.py")):
        if path.name.endswith("_pb2.py"):
            continue
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(source: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in the source, at any depth (lazy imports count too)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, f"line {node.lineno}: use absolute imports"
            if node.module == "uns":  # from uns import lake: the module uns.lake
                for alias in node.names:
                    yield node.lineno, f"uns.{alias.name}"
            else:
                yield node.lineno, node.module


def wrong_imports(name: str, source: str) -> list[str]:
    """The imports of module ``name`` that point the wrong way."""
    own = layer_of(name)
    assert own is not None
    wrong = []
    for line, target in imports(source):
        theirs = layer_of(target)
        # uns/__init__.py holds the version only: anyone may read it
        if theirs not in (None, own, "package") and theirs not in ALLOWED[own]:
            wrong.append(f"{name}:{line}: {own} must not import {target} ({theirs})")
    return wrong


#: the one exception, and what it may import: the native decoder's loader reads UNS_NATIVE
#: (``os.environ``) once at import to choose between the C extension and the pure-Python
#: reference, as MarkupSafe chooses its speed-ups; it does no other I/O
IMPORT_TIME_CHOICE = {"uns.sparkplug.native": frozenset({"os"})}


def impurities(name: str, source: str) -> list[str]:
    """What makes a module of the pure core impure: I/O modules, clock and file calls."""
    allowed = IMPORT_TIME_CHOICE.get(name, frozenset())
    wrong = [
        f"{name}:{line}: imports {target}"
        for line, target in imports(source)
        if target.split(".")[0] in IMPURE_MODULES - allowed
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
    assert wrong_imports("uns.lake.sink", "import uns.cli.output\n") == [
        "uns.lake.sink:1: lake must not import uns.cli.output (cli)"
    ]
    assert face_foreign_imports("uns.cli.x", "import duckdb\nimport typer\nimport json\n") == [
        "uns.cli.x:1: a face must not import duckdb (put the work in the library)"
    ]
    assert face_foreign_imports("uns.web.x", "import starlette\nimport pyarrow\nimport typer\n") == [
        "uns.web.x:2: a face must not import pyarrow (put the work in the library)",
        "uns.web.x:3: a face must not import typer (put the work in the library)",
    ]
    assert wrong_imports("uns.review.x", "import uns.web.app\n") == [
        "uns.review.x:1: review must not import uns.web.app (web)"
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    with pytest.raises(AssertionError):
        layer_of("uns.somewhere_new")


FACES = [(m, p) for m, p in MODULES if layer_of(m) in FACE_FOREIGN]


def face_foreign_imports(name: str, source: str) -> list[str]:
    """The imports of a face module from outside uns, the standard library and its toolkit."""
    toolkit = FACE_FOREIGN[layer_of(name) or "cli"]
    return [
        f"{name}:{line}: a face must not import {target} (put the work in the library)"
        for line, target in imports(source)
        if layer_of(target) is None
        and target.split(".")[0] not in sys.stdlib_module_names
        and target.split(".")[0] not in toolkit
    ]


@pytest.mark.parametrize(("name", "path"), FACES, ids=[m for m, _ in FACES])
def test_a_face_holds_no_logic(name: str, path: Path) -> None:
    wrong = face_foreign_imports(name, path.read_text(encoding="utf-8"))
    assert not wrong, "\n".join(wrong)


def _graph() -> dict[str, set[str]]:
    """module -> the modules of uns it imports (lazy and TYPE_CHECKING imports count)."""
    names = {m for m, _ in MODULES}

    def resolve(target: str) -> str | None:
        while target and target not in names:
            target = target.rpartition(".")[0]
        return target or None

    graph: dict[str, set[str]] = {}
    for name, path in MODULES:
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                found = resolve(target)
                # a package's __init__ importing its own modules is not a circle
                if found and found != name and not name.startswith(found + "."):
                    out.add(found)
        graph[name] = out
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_circles() -> None:
    assert cycles(_graph()) == []


def test_one_top_level_import_package() -> None:
    """A wheel installs ``uns`` and nothing else importable (tests/test_validate.py builds and
    installs one); here: the build's package list is ``uns`` and its subpackages."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'include = ["uns", "uns.*"]' in text
    assert "py-modules" not in text
    assert not (ROOT / "lake" / "__init__.py").exists()
    assert not list((ROOT / "lake").glob("*.py"))
