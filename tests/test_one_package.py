"""One import package (issue 26): a data folder named like a package never hides the code.

With the editable install of ``scripts/setup.sh``, ``uns run`` started twice in a
directory whose lake folder is called ``lake`` (and beside a folder called ``uns``)
starts, commits and stops both times; ``uns.lake`` imports there, and the lake verifies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Mosquitto

pytestmark = pytest.mark.integration

UNS = Path(sys.executable).with_name("uns")  # the console script of this venv


def _run_once(where: Path, broker: Mosquitto, ns: str, log: Path) -> str:
    argv = [str(UNS), "run", "--broker", broker.url, "--lake", "lake", "--host-id", ns, "--log-level", "info"]
    env = {**os.environ, "UNS_ENGINE_PREFIX": f"{ns}/uns"}
    env.pop("PYTHONPATH", None)  # as a user runs it: the installed package, nothing else
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=where, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while "context intake connected" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "uns run did not come up: " + log.read_text(errors="replace")
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
    return log.read_text(errors="replace")


@pytest.mark.skipif(not UNS.exists(), reason="the uns console script of this venv")
def test_uns_run_twice_beside_folders_named_lake_and_uns(tmp_path: Path, broker: Mosquitto, ns: str) -> None:
    (tmp_path / "uns").mkdir()  # a folder called like the package, in the current directory
    for turn in (1, 2):
        text = _run_once(tmp_path, broker, ns, tmp_path / f"run{turn}.log")
        assert "commit worker died" not in text
        assert "Traceback" not in text
        assert "engine stopped" in text
    assert (tmp_path / "lake" / "_delta_log").exists() or (tmp_path / "lake" / "audit").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = (
        "import uns.lake, uns; from uns import lake; con = lake.connect('lake'); "
        "print(uns.__file__); "
        "print(con.execute(\"SELECT count(*) FROM audit WHERE kind = 'engine_start'\").fetchone()[0])"
    )
    for argv in (
        [sys.executable, "-c", probe],
        [sys.executable, "-m", "uns", "audit", "verify", "--lake", "lake"],
    ):
        r = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert r.returncode == 0, r.stderr
        if argv[1] == "-c":
            where, starts = r.stdout.split()
            assert Path(where).parent.parent != tmp_path  # the package, not the folder here
            assert int(starts) == 2


def test_the_source_definition_folder_is_never_taken_for_a_lake(tmp_path: Path) -> None:
    """From a checkout's root, ``--lake lake`` names the lake's definition (tables.toml,
    views/): every command refuses it in one line instead of writing data into the sources."""
    root = Path(__file__).resolve().parent.parent
    before = sorted(p.name for p in (root / "lake").iterdir())
    for argv in (("lake", "info", "--lake", "lake"), ("batch", "list", "--lake", "lake")):
        r = subprocess.run(
            [sys.executable, "-m", "uns", *argv], cwd=root, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert r.returncode == 1, r.stdout + r.stderr
        assert "the lake's definition in the uns source tree" in r.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in (root / "lake").iterdir()) == before
