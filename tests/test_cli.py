"""The `uns` command line: help and docs for every command, clear errors, and the
commands working against a real mosquitto and a real lake."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import aiomqtt
import pytest
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

from tests.edge import RawEdge
from uns.cli.app import app
from uns.config import load_config
from uns.engine.daemon import startup_line
from uns.lake.audit_entries import software_version
from uns.mqtt.mosquitto import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
#: the `uns` command, as a child process runs it from this checkout
UNS = (sys.executable, "-m", "uns")
runner = CliRunner()


def _commands() -> list[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    names: list[str] = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, TyperGroup):
            names.extend(f"{name} {sub}" for sub in cmd.commands)
        else:
            names.append(name)
    return sorted(names)


def test_every_command_has_help_and_an_example() -> None:
    commands = _commands()
    assert {
        "run",
        "sim",
        "demo",
        "topics",
        "watch",
        "lake sql",
        "lake info",
        "lake compact",
        "lake vacuum",
        "context show",
        "context set",
    } <= set(commands)
    for command in commands:
        result = runner.invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Example" in result.output or command == "version", command


def test_every_command_is_documented() -> None:
    docs = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for command in _commands():
        assert re.search(rf"uns {command}\b", docs), (
            f"`uns {command}` is not documented in README.md or docs/"
        )


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    env.update(extra)
    return env


def _uns(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*UNS, *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


async def _uns_started(*args: str) -> asyncio.subprocess.Process:
    """`uns *args` started in the background, stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        *UNS,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
        cwd=ROOT,
    )


def test_print_config_masks_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "uns.toml"
    cfg.write_text('[broker]\nurl = "mqtt://op:hunter2@broker.plant:1883"\n[engine]\nhost_id = "line-1"\n')
    r = _uns("run", "--config", str(cfg), "--primary", "--print-config", env=_env(UNS_LAKE="/srv/lake"))
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout
    assert 'host_id = "line-1"' in r.stdout
    assert "primary = true" in r.stdout
    assert 'path = "/srv/lake"' in r.stdout


def test_print_config_reads_back_as_the_same_config(tmp_path: Path) -> None:
    """--print-config is a config file: TOML (no `null`), every set value the same read back,
    the unset keys named in a comment."""
    cfg = tmp_path / "uns.toml"
    cfg.write_text(
        '[broker]\nurl = "mqtts://broker.plant:8883"\nca_file = "/etc/ssl/plant-ca.pem"\n'
        '[engine]\nhost_id = "line-1"\ngroups = "L1,L2"\n'
        '[lake]\npath = "s3://plant/lake"\n[lake.storage]\nregion = "eu-central-2"\n'
    )
    r = _uns("run", "--config", str(cfg), "--print-config")
    assert r.returncode == 0, r.stderr
    assert "null" not in r.stdout
    assert "# not set: username, password, cert_file, key_file" in r.stdout
    printed = tmp_path / "printed.toml"
    printed.write_text(r.stdout)
    tomllib.loads(r.stdout)  # plain TOML, whatever reads it
    assert load_config(printed, env={}).to_dict() == load_config(cfg, env={}).to_dict()


def test_the_start_up_log_line_is_short_and_names_the_config_by_its_hash() -> None:
    cfg = load_config(
        env={}, overrides={"broker.url": "mqtt://op:hunter2@broker.plant:1883", "engine.host_id": "line-1"}
    )
    line = startup_line(cfg)
    digest = hashlib.sha256(
        json.dumps(cfg.to_dict(masked=True), sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()
    assert line == (
        f"uns {software_version()} starting: host line-1, broker mqtt://op:***@broker.plant:1883, "
        f"lake ./uns-lake, groups all, config sha256 {digest}"
    )
    other = load_config(env={}, overrides={"broker.url": "mqtt://op:hunter2@broker.plant:1883",
                                           "engine.host_id": "line-1", "engine.primary": True,
                                           "engine.groups": "L1,L2"})  # fmt: skip
    assert "host line-1 (primary)" in startup_line(other)
    assert "groups L1,L2" in startup_line(other)
    assert startup_line(other).rsplit(" ", 1)[1] != digest


def test_bad_config_is_one_line_and_exit_1(tmp_path: Path) -> None:
    cfg = tmp_path / "uns.toml"
    cfg.write_text("[engine]\nprimary = 'perhaps'\n")
    r = _uns("run", "--config", str(cfg))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert "engine.primary must be true or false" in r.stderr


def test_unreachable_broker_fails_after_retry_budget() -> None:
    port = free_port()
    r = _uns(
        "run",
        "--broker",
        f"mqtt://127.0.0.1:{port}",
        "--lake",
        "",
        env=_env(UNS_BROKER_CONNECT_RETRIES="1", UNS_BROKER_RECONNECT_MIN="0.1"),
    )
    assert r.returncode == 1
    assert "cannot reach the broker" in r.stderr.splitlines()[-1]


def test_unwritable_lake_path(tmp_path: Path, broker: Mosquitto) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = _uns("run", "--broker", broker.url, "--lake", str(blocker / "lake"))
    assert r.returncode == 1
    assert "is not writable" in r.stderr.splitlines()[-1]


def test_run_stops_cleanly_on_sigterm(tmp_path: Path, broker: Mosquitto, ns: str) -> None:
    proc = subprocess.Popen(
        [
            *UNS,
            "run",
            "--broker",
            broker.url,
            "--lake",
            str(tmp_path / "lake"),
            "--host-id",
            ns,
        ],
        env=_env(),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "engine stopped" in err
    # one short start-up line (the whole config only at debug level)
    assert re.search(
        rf"uns \S+ starting: host {ns}, broker {broker.url}, .*config sha256 [0-9a-f]{{64}}", err
    )
    assert "'broker':" not in err


def test_lake_sql_bad_query_prints_duckdb_message(tmp_path: Path) -> None:
    r = _uns("lake", "sql", "SELEC nonsense", "--lake", str(tmp_path))
    assert r.returncode == 1
    assert r.stdout == ""
    assert "syntax error" in r.stderr.lower()


def test_lake_commands_on_a_missing_lake_say_so_and_exit_1(tmp_path: Path) -> None:
    for command in (("info",), ("compact",), ("vacuum",), ("sql", "SELECT 1")):
        r = _uns("lake", *command, "--lake", str(tmp_path / "nothing"))
        assert r.returncode == 1, (command, r.stdout)
        assert r.stderr == f"uns: error: no lake at {tmp_path / 'nothing'}\n", command
    assert not (tmp_path / "nothing").exists()  # nothing was created on the way


def test_lake_sql_needs_exactly_one_query(tmp_path: Path) -> None:
    queries = tmp_path / "q.sql"
    queries.write_text("-- name: one\nSELECT 1 AS x;\n")
    for args, message in (
        ((), "give the query as QUERY or a file of queries with --file FILE"),
        (
            ("SELECT 1", "--file", str(queries)),
            "give the query as QUERY or a file of queries with --file FILE",
        ),
        (("SELECT 1", "--name", "one"), "--name picks a query of --file FILE"),
        (("",), "the query is empty"),
        (("-- only a comment",), "the query is empty"),
        (("--file", str(tmp_path / "missing.sql")), f"cannot read {tmp_path / 'missing.sql'}"),
        (("--file", str(queries), "--name", "two"), f"{queries} has no query named 'two'; its queries: one"),
    ):
        r = _uns("lake", "sql", *args, "--lake", str(tmp_path))
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stderr.startswith(f"uns: error: {message}"), (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr  # one line, no traceback


def test_lake_sql_runs_a_file_of_named_queries(tmp_path: Path) -> None:
    queries = tmp_path / "q.sql"
    queries.write_text(
        "-- my queries\n\n-- name: tables\n-- how many views\nSELECT count(*) AS views\n"
        "FROM information_schema.tables;\n\n-- name: answer\nSELECT 42 AS answer;\n"
    )
    r = _uns("lake", "sql", "--file", str(queries), "--lake", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("-- name: tables\nviews\n")
    assert "\n\n-- name: answer\nanswer\n------\n42    \n(1 row)\n" in r.stdout
    r = _uns("lake", "sql", "--file", str(queries), "--name", "answer", "--lake", str(tmp_path), "-f", "csv")
    assert (r.returncode, r.stdout) == (0, "answer\n42\n"), r.stderr
    r = _uns("lake", "sql", "--file", str(queries), "--lake", str(tmp_path), "-f", "json")
    assert json.loads(r.stdout)["answer"] == [{"answer": 42}], r.stderr
    r = _uns("lake", "sql", "--file", str(queries), "--lake", str(tmp_path), "-f", "csv")
    assert r.returncode == 1
    assert "--format csv shows one query: pick one with --name (tables, answer)" in r.stderr
    plain = tmp_path / "plain.sql"
    plain.write_text("-- a plain file: one query\nSELECT 7 AS seven\n")
    r = _uns("lake", "sql", "--file", str(plain), "--lake", str(tmp_path), "-f", "csv")
    assert (r.returncode, r.stdout) == (0, "seven\n7\n"), r.stderr


async def test_watch_topics_and_context_against_a_real_broker(broker: Mosquitto, ns: str) -> None:
    async def publish_plant() -> None:
        await asyncio.sleep(1.5)
        async with aiomqtt.Client(broker.host, broker.port) as c:
            edge = RawEdge(c, ns, "N1")
            await edge.nbirth()
            await edge.dbirth("D1")
            await edge.ddata("D1", 36.6)

    proc = await _uns_started("watch", f"spBv1.0/{ns}/#", "--broker", broker.url, "--count", "3", "--json")
    await publish_plant()
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [m["kind"] for m in lines] == ["NBIRTH", "DBIRTH", "DDATA"]
    assert lines[2]["metrics"][0]["name"] == "Temperature"  # alias resolved from the DBIRTH
    assert lines[2]["metrics"][0]["value"] == 36.6

    topics = await _uns_started(
        "topics", "--broker", broker.url, "--filter", f"spBv1.0/{ns}/#", "--duration", "4"
    )
    async with aiomqtt.Client(broker.host, broker.port) as c:
        await asyncio.sleep(1.5)
        edge = RawEdge(c, ns, "N2")
        edge.seq = 5
        await edge.ddata("D9", 1.0)  # a node whose birth was never seen
    out, err = await asyncio.wait_for(topics.communicate(), 30)
    assert topics.returncode == 0, err
    assert "N2" in out.decode()
    assert "birth not seen yet" in out.decode()

    # context set: validated, then published where the engine listens
    async with aiomqtt.Client(broker.host, broker.port) as c:
        await c.subscribe(f"{ns}/_context/#", qos=1)
        r = await asyncio.to_thread(
            _uns,
            "context",
            "set",
            "acme/site/cell",
            "batch_id=B-1",
            "phase=growth",
            "--user",
            "jdoe",
            "--broker",
            broker.url,
            "--prefix",
            ns,
        )
        assert r.returncode == 0, r.stderr
        msg = await asyncio.wait_for(anext(c.messages), 10)
    event = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
    assert event["set"] == {"batch_id": "B-1", "phase": "growth"}
    assert event["user"] == "jdoe"
    bad = await asyncio.to_thread(
        _uns, "context", "set", "acme/site", "no-equals-sign", "--broker", broker.url
    )
    assert bad.returncode == 1
    assert "KEY=VALUE" in bad.stderr


@pytest.mark.parametrize("command", [["watch", "#", "--count", "1"], ["topics", "--duration", "1"]])
def test_inspection_against_an_unreachable_broker_is_one_line(command: list[str]) -> None:
    r = _uns(*command, "--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("uns: error: cannot reach the broker at mqtt://127.0.0.1:")
