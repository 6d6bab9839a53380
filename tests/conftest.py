"""Shared fixtures: a real mosquitto per test session, a topic namespace per test."""

from __future__ import annotations

import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3_server import S3Server, running_s3
from uns.mqtt.mosquitto import Mosquitto, find_mosquitto, free_port, running_mosquitto
from uns.mqtt.wire import readers
from uns.sparkplug import native

#: fixtures that start a real mosquitto: a test using one is an integration test, marked or not
BROKER_FIXTURES = frozenset({"broker", "second_broker", "own_broker", "persistent_broker"})

#: Test modules that run twice: with the native DATA decoder and with the pure-Python one
#: (``UNS_NATIVE=0``, also for the processes they start).  The engine, session, codec and lake
#: tests whose path the native decoder changes; the rest runs with whatever is installed.
BOTH_DECODERS = frozenset(
    {
        "test_session_fast",
        "test_session",
        "test_engine_unit",
        "test_pipeline",
        "test_lake_crash",
        "test_engine_host",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rpartition(".")[2] in BOTH_DECODERS:
        metafunc.fixturenames.append("decoder")
        metafunc.parametrize("decoder", ["native", "python"], indirect=True)


@pytest.fixture
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``native``: the extension (skipped when it is not built); ``python``: the reference."""
    mode: str = request.param
    if mode == "python":
        monkeypatch.setenv("UNS_NATIVE", "0")
        monkeypatch.setattr(native, "AVAILABLE", False)
        monkeypatch.setattr(readers, "FAST_PUBLISHES", None)  # the MQTT reader's C run too
    elif not native.AVAILABLE:
        pytest.skip(native.STATUS)
    return mode


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``pytest -m "not integration"`` must run without mosquitto: mark every test that
    needs one through the broker fixtures, so a forgotten marker cannot break that."""
    for item in items:
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[Mosquitto]:
    """One real mosquitto for the whole test session, on a free loopback port."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed; run the tests with: bash scripts/test")
    with running_mosquitto() as b:
        yield b


@pytest.fixture(scope="session")
def second_broker(broker: Mosquitto) -> Iterator[Mosquitto]:
    """A second real mosquitto for the session, for a host on two brokers (broker.urls)."""
    with running_mosquitto() as b:
        yield b


@pytest.fixture
def own_broker() -> Iterator[Mosquitto]:
    """A private mosquitto for tests that stop or kill the broker."""
    with running_mosquitto() as b:
        yield b


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    """A topic namespace unique to this test, e.g. ``t-test_smoke-1a2b3c4d``.

    Use it as the UNS prefix and in Sparkplug group ids so tests sharing the
    session broker never see each other's messages."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:40]
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def persistent_broker() -> Iterator[Mosquitto]:
    """A private mosquitto with persistence on (sessions and queues survive its restart),
    as production runs it for context (README: "Context that is never lost")."""
    with (
        tempfile.TemporaryDirectory(prefix="uns-mosq-") as d,
        Mosquitto(port=free_port(), workdir=Path(d), persistence=True) as broker,
    ):
        yield broker


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One local S3-compatible server (moto) for the whole test session, on loopback."""
    with running_s3() as server:
        yield server


@pytest.fixture
def s3_lake(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of a lake in a fresh bucket, with the AWS_* environment pointing at the server
    (this process's and so the commit worker's)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.new_bucket()}/plant/lake"
