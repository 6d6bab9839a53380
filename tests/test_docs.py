"""The docs name only what exists, and every command in them runs as written.

A user reads README.md and docs/ and types what they say; in a GMP plant those
texts are part of the validation record.  These tests fail when a text names a
config key, a `UNS_*` variable, an option of a `uns` command or a column of a
lake view that the code does not have (as sqlite-utils tests its docs against
its CLI); and every code block is fenced with its language, every shell, Python
and SQL block is run in a prepared setting (:class:`DocsSetting`: a demo lake, a
broker with an engine) and must exit 0, unless the line above it says why tests
do not run it (tests/docs_blocks.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import typer.main

from tests.docs_blocks import RUNNABLE, TEXT, Block, code_blocks, indented_code
from uns import lake
from uns.cli import app as cli
from uns.config import ENV_SHORTCUTS, Config
from uns.mqtt.mosquitto import Mosquitto, free_port

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
        # `VAR=value uns ...` and `/opt/uns/bin/uns ...` run uns too
        line = re.sub(r"^(?:[A-Z_]+=\S+\s+)*(?:\S*/)?(?=uns )", "", line)
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
    assert command_lines(
        "```sh\nUNS_X=1 /opt/uns/bin/uns validate --out v\n/opt/uns/bin/pip install u\n```\n"
    ) == ["uns validate --out v"]


# --- Every code block of the docs is run, or says why not (tests/docs_blocks.py) -------------

BLOCKS = [block for doc in DOCS for block in code_blocks(doc, ROOT)]
RUN = [b for b in BLOCKS if b.lang in RUNNABLE and b.excuse is None]
#: a broker, the lake and system paths as the docs name them -> where a test has them
PLANT_BROKER = "mqtt://127.0.0.1:1883"
SYSTEM_DIRS = ("/etc/uns/", "/var/lib/uns/", "/srv/")


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_code_block_says_what_it_is_and_whether_tests_run_it(doc: Path) -> None:
    """A fenced block with its language; a runnable one (sh, python, sql) is run below unless
    the line above it excuses it with a reason; an excuse on a block that never runs is noise."""
    indented = indented_code(doc)
    assert not indented, (
        f"{doc.name}: fence these code blocks with a language (```sh, ```text): lines {indented}"
    )
    for block in code_blocks(doc, ROOT):
        assert block.lang in RUNNABLE | TEXT, (
            f"{block.id}: a code block says what it is: ```{' / ```'.join(sorted(RUNNABLE | TEXT))}"
        )
        if block.excuse is not None:
            assert block.lang in RUNNABLE, f"{block.id}: only a runnable block needs an excuse"
            assert len(block.excuse) > 10, f"{block.id}: say why tests do not run it"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in RUNNABLE], ids=lambda b: b.id)
def test_every_runnable_block_parses(block: Block) -> None:
    """Excused or not, a block is valid shell, Python or SQL (the options of its `uns`
    commands are checked by test_cli_options_in_docs_exist)."""
    if block.lang == "sh":
        r = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True, check=False)
        assert r.returncode == 0, f"{block.id}: {r.stderr}"
    elif block.lang == "python":
        compile(block.text, block.id, "exec")
    else:
        assert duckdb.connect().extract_statements(block.text), block.id


def test_the_block_checks_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Text\n\n    uns lake info\n\n- a list\n\n    its continuation\n\n"
        "<!-- not run by tests: needs a plant -->\n```sh\nuns run\n```\n\n```\nplain\n```\n"
    )
    assert indented_code(page) == [3]
    run, plain = code_blocks(page, tmp_path)
    assert (run.id, run.lang, run.text, run.excuse) == ("page.md:10", "sh", "uns run\n", "needs a plant")
    assert (plain.lang, plain.excuse) == ("", None)


@dataclasses.dataclass(frozen=True)
class DocsSetting:
    """Where the docs' commands run, as on a plant's machine: each block in a directory of its
    own with the checkout's layout (examples/, schemas/, the source folder lake/) and its own
    HOME; one demo lake in ./uns-lake (the default lake path); one broker as the plant's
    default (UNS_BROKER; `mqtt://127.0.0.1:1883` in a command means it) with an engine on it
    (host id line-1: it acknowledges context); /etc/uns, /var/lib/uns and /srv below
    ``system`` (each block runs on a copy), with the trusted keys the config names
    (UNS_AUDIT_TRUSTED_KEYS=/etc/uns/trusted-keys)."""

    lake: Path
    broker: str
    system: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def docs_setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsSetting]:
    from uns.demo import run_demo  # noqa: PLC0415 - the whole engine; only these tests need it

    base = tmp_path_factory.mktemp("docs")
    lake_dir = base / "uns-lake"
    run_demo(duration=12, lake=str(lake_dir), echo=lambda _line: None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    system = base / "system"
    env["UNS_AUDIT_TRUSTED_KEYS"] = f"{system}/etc/uns/trusted-keys"
    Path(env["UNS_AUDIT_TRUSTED_KEYS"]).mkdir(parents=True)
    with Mosquitto(port=free_port(), workdir=base) as broker:
        env["UNS_BROKER"] = broker.url
        log = base / "engine.log"
        with log.open("wb") as out:
            engine = subprocess.Popen(
                ["uns", "run", "--lake", str(lake_dir), "--host-id", "line-1"],
                cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "context intake connected" not in log.read_text(errors="replace"):
                assert engine.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.1)
            yield DocsSetting(lake_dir, broker.url, system, env)
        finally:
            engine.send_signal(signal.SIGTERM)
            code = engine.wait(60)
        assert code == 0, log.read_text(errors="replace")


def _prepared(block: Block, setting: DocsSetting, where: Path) -> tuple[str, dict[str, str]]:
    """The block's text as it runs in ``where``, and its environment."""
    for name in ("examples", "schemas"):
        (where / name).symlink_to(ROOT / name)
    # a copy, not a link: a block that wrote into ./lake must not write into the source tree
    shutil.copytree(ROOT / "lake", where / "lake")
    (where / "uns-lake").symlink_to(setting.lake)
    (where / "home").mkdir()
    # the system folders as the engine has them, copied: a block that trusts a key does so on
    # its own machine, so two blocks that enrol the same name both run as written
    system = where / "system"
    shutil.copytree(setting.system, system)
    text = block.text.replace(PLANT_BROKER, setting.broker)
    for folder in SYSTEM_DIRS:
        text = text.replace(folder, f"{system}{folder}")
    trusted = f"{system}/etc/uns/trusted-keys"
    return text, {**setting.env, "HOME": str(where / "home"), "UNS_AUDIT_TRUSTED_KEYS": trusted}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("block", RUN, ids=lambda b: b.id)
def test_every_documented_block_runs_as_written(
    block: Block, docs_setting: DocsSetting, tmp_path: Path
) -> None:
    text, env = _prepared(block, docs_setting, tmp_path)
    source = tmp_path / f"block.{block.lang}"
    source.write_text(text)
    argv = {
        "sh": ["bash", "-e", "-o", "pipefail", str(source)],
        "python": [sys.executable, str(source)],
        "sql": ["uns", "lake", "sql", "--file", str(source)],
    }[block.lang]
    r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    said = (
        f"{block.id} ran in {tmp_path}:\n{text}\nexit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    )
    assert r.returncode == 0, said
    assert "Traceback" not in r.stderr, said
