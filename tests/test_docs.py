"""The docs name only what exists: config keys, environment variables, CLI options, lake columns.

A user reads README.md and docs/ and types what they say; in a GMP plant those
texts are part of the validation record.  These tests fail when a text names a
config key, a `UNS_*` variable, an option of a `uns` command or a column of a
lake view that the code does not have (as sqlite-utils tests its docs against
its CLI).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from uns import lake
from uns.cli import app as cli
from uns.config import ENV_SHORTCUTS, Config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def config_keys() -> set[str]:
    defaults = Config()
    return {
        f"{section}.{field.name}"
        for section in SECTIONS
        for field in dataclasses.fields(getattr(defaults, section))
    }


def doc_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def named_config_keys(text: str) -> set[str]:
    """`section.key` in backticks, for the config's sections."""
    found = re.findall(r"`([a-z_]+)\.([a-z_]+)(?: = [^`]*)?`", text)
    return {f"{s}.{k}" for s, k in found if s in SECTIONS}


def named_env_vars(text: str) -> set[str]:
    return set(re.findall(r"\bUNS_[A-Z_]*[A-Z]\b", text))


def env_var_key(name: str) -> str | None:
    """The config key an environment variable sets (as uns.config reads it)."""
    if name in ENV_SHORTCUTS:
        return ENV_SHORTCUTS[name]
    rest = name[4:].lower()
    for section in SECTIONS:
        if rest.startswith(section + "_"):
            return f"{section}.{rest[len(section) + 1 :]}"
    return None


def command_lines(text: str) -> list[str]:
    """Every `uns ...` command in the docs' code blocks, continuation lines joined."""
    lines: list[str] = []
    in_block = False
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            in_block = not in_block
            continue
        indented = raw.startswith("    ")
        if not (in_block or indented):
            pending = ""
            continue
        line = pending + " " + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        pending = ""
        line = re.sub(r"\s+#.*$", "", line)  # a trailing comment
        # a command, not a line of output that starts with "uns" (`uns benchmark (full) ...`)
        if re.match(r"uns [a-z][a-z-]*( (?!\()|$)", line):
            lines.append(line)
    return lines


def resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The (click) command that `uns <words>` runs, and the words after its name."""
    command: Any = typer.main.get_command(cli.app)
    rest = list(words)
    while getattr(command, "commands", None) and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        assert sub is not None, f"`uns {' '.join(words)}`: no command {rest[0]!r}"
        command, rest = sub, rest[1:]
    return command, rest


def options_of(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("-"))
    return names


def lake_columns(directory: Path) -> dict[str, set[str]]:
    """view -> columns, from an empty lake (it has every view, with its columns)."""
    con = lake.connect(directory)
    views = [row[0] for row in con.sql("SELECT table_name FROM information_schema.tables").fetchall()]
    return {view: {row[0] for row in con.sql(f"DESCRIBE {view}").fetchall()} for view in views}


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_config_keys_in_docs_exist(doc: Path, tmp_path: Path) -> None:
    # `context.ts` names a column of the context table, not a config key: both are real
    columns = {f"{view}.{c}" for view, cols in lake_columns(tmp_path).items() for c in cols}
    missing = sorted(named_config_keys(doc_text(doc)) - config_keys() - columns)
    assert not missing, f"{doc.name} names config keys that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_environment_variables_in_docs_exist(doc: Path) -> None:
    known = config_keys()
    wrong = [
        name
        for name in sorted(named_env_vars(doc_text(doc)))
        # UNS_CONFIG names the file; UNS_NATIVE=0 turns the native decoder off (read at import)
        if name not in ("UNS_CONFIG", "UNS_NATIVE") and env_var_key(name) not in known
    ]
    assert not wrong, f"{doc.name} names environment variables that set nothing: {wrong}"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_cli_options_in_docs_exist(doc: Path) -> None:
    wrong = []
    for line in command_lines(doc_text(doc)):
        try:
            words = shlex.split(line)[1:]
        except ValueError:
            words = line.split()[1:]
        words = [w for w in words if w not in ("|", "&&", ">")]
        command, rest = resolve(words)
        known = options_of(command)
        wrong += [f"{line!r}: {w}" for w in rest if w.startswith("--") and w.split("=")[0] not in known]
    assert not wrong, f"{doc.name} shows options that the commands do not have:\n" + "\n".join(wrong)


def readme_view_columns() -> dict[str, set[str]]:
    """The README's lake table: view -> the columns it names."""
    out: dict[str, set[str]] = {}
    for line in doc_text(ROOT / "README.md").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[a-z_]+`", cells[0]):
            view = cells[0].strip("`")
            # a column is a backticked name at the start of the cell or after a comma
            out[view] = set(re.findall(r"(?:^|, )`([a-z_]+)`", cells[2]))
    return out


def test_readme_lake_columns_exist(tmp_path: Path) -> None:
    views = readme_view_columns()
    assert {"measurements", "measurements_asof", "context", "sessions", "rejected"} <= set(views)
    have = lake_columns(tmp_path)
    for view, columns in views.items():
        missing = sorted(columns - have[view])
        assert not missing, f"README: view {view} has no columns {missing}"


def test_the_doc_checks_can_fail() -> None:
    assert named_config_keys("set `lake.no_such_key` and `lake.commit_rows = 5`") == {
        "lake.no_such_key",
        "lake.commit_rows",
    }
    assert "lake.no_such_key" not in config_keys()
    assert env_var_key("UNS_LAKE_COMMIT_ROWS") == "lake.commit_rows"
    assert env_var_key("UNS_NOTHING") is None
    command, rest = resolve(["lake", "vacuum", "--retention-hours", "1"])
    assert rest == ["--retention-hours", "1"]
    assert command.name == "vacuum"
    assert "--retention-hours" in options_of(command)
    assert "--no-such-option" not in options_of(command)
    assert command_lines("```\nuns run --broker x \\\n    --lake y   # why\n```\n") == [
        "uns run --broker x --lake y"
    ]
