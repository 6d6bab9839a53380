"""`uns run` against a real mosquitto that refuses its credentials: one line, exit 1, at once.

A refusal that retrying cannot heal must not turn into a reconnect loop that
runs forever with a warning per attempt; the unit tests cover the engine's side
(tests/test_engine_unit.py), this is the whole command against the real thing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from uns.mqtt.mosquitto import Mosquitto, free_port, password_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ")


@pytest.fixture(scope="module")
def password_broker() -> Iterator[Mosquitto]:
    """Mosquitto that accepts only user ``op`` with password ``s3cret``."""
    with tempfile.TemporaryDirectory(prefix="uns-refusal-") as tmp:
        d = Path(tmp)
        password_file(d, "op", "s3cret")
        port = free_port()
        conf = (
            f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {d / 'passwd'}\n"
            "user root\n"  # read the test's password file when started as root
        )
        broker = Mosquitto(port=port, workdir=d, listener_conf=conf)
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


@pytest.mark.parametrize("log_level", ["warning", "info"])
@pytest.mark.parametrize("user", ["op:wrong", "nobody:s3cret"])
def test_uns_run_stops_at_a_refusal_with_one_line_and_exit_1(
    password_broker: Mosquitto, user: str, log_level: str
) -> None:
    url = f"mqtt://{user}@127.0.0.1:{password_broker.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    env.update(UNS_LAKE="", UNS_REPUBLISH_ENABLED="false")
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "uns", "run", "--broker", url, "--log-level", log_level],
        env=env,
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,  # a retry loop would never end by itself
    )
    elapsed = time.monotonic() - started
    assert r.returncode == 1, r.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s: retried?"
    lines = r.stderr.strip().splitlines()
    if log_level == "info":  # the start-up log record may come first, nothing else
        records = [m.group(1) for line in lines if (m := LOG_RECORD.match(line))]
        assert set(records) <= {"INFO"}, r.stderr  # no warning per attempt
        lines = [line for line in lines if not LOG_RECORD.match(line)]
    name, password = user.split(":")
    where = f"mqtt://{name}:***@127.0.0.1:{password_broker.port}"
    # mosquitto 2.0 answers a bad password with 5 (not authorized); other brokers with 4
    assert len(lines) == 1 and lines[0] in {
        f"uns: error: cannot reach the broker at {where}: broker refused the connection: {reason}"
        for reason in ("not authorized", "bad user name or password")
    }, r.stderr
    assert password not in r.stderr
    assert r.stdout == ""
