"""Which connection failures are final (BrokerRefused) and which may heal (BrokerError).

A reconnect loop retries a BrokerError and stops at a BrokerRefused, so each
class is pinned down here: CONNACK codes from a server that answers exactly
what a test tells it to, then real refusals from mosquitto (password file,
TLS) and the minibroker, and the one line the CLI prints for them (topics,
watch, context set, sim).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.aio_helpers import serving
from tests.test_tls import _make_pki
from uns.errors import BrokerClosedEarly, BrokerError, BrokerRefused
from uns.mqtt.client import FastClient
from uns.mqtt.minibroker import MiniBroker
from uns.mqtt.mosquitto import Mosquitto, free_port, password_file
from uns.mqtt.settings import BrokerSettings
from uns.mqtt.wire import encode_connack
from uns.sim import SimConfig, run_sim

ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def answering(answer: bytes | None, *, close: bool = False) -> AsyncIterator[int]:
    """A TCP server that reads the CONNECT and replies ``answer`` (None: nothing), then
    closes at once (``close``) or keeps the connection open; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1024)
            if answer is not None:
                writer.write(answer)
                await writer.drain()
            if not close:
                await reader.read(1024)  # until the client gives up
        finally:
            writer.close()

    async with serving(handle) as port:
        yield port


async def _connect(settings: BrokerSettings, **kw: object) -> BaseException:
    client = FastClient(settings, identifier=kw.pop("identifier", "refusal-test"), **kw)  # type: ignore[arg-type]
    try:
        await client.connect()
    except BrokerError as exc:
        assert not client.connected
        with pytest.raises(BrokerError):
            await client.publish("t", b"")  # the reason sticks to the client
        return exc
    finally:
        await client.disconnect()
    raise AssertionError("connected")


# ---------------------------------------------------------------- CONNACK codes, one by one
@pytest.mark.parametrize(
    ("code", "final", "text"),
    [
        (1, True, "unacceptable protocol version"),
        (2, True, "identifier rejected"),
        (3, False, "server unavailable"),  # the broker says "not now": try again
        (4, True, "bad user name or password"),
        (5, True, "not authorized"),
        (6, False, "return code 6"),  # reserved: nothing says it is final
    ],
)
async def test_connack_refusals(code: int, final: bool, text: str) -> None:
    async with answering(encode_connack(code)) as port:
        exc = await _connect(BrokerSettings(port=port))
    assert isinstance(exc, BrokerRefused) is final
    assert str(exc) == f"broker refused the connection: {text}"


async def test_silence_and_early_close_may_heal() -> None:
    async with answering(None) as port:
        exc = await _connect(BrokerSettings(port=port), connect_timeout=0.3)
    assert type(exc) is BrokerError
    assert str(exc) == "no answer within 0.3 s"
    async with answering(None, close=True) as port:
        exc = await _connect(BrokerSettings(port=port))
    assert type(exc) is BrokerClosedEarly  # a BrokerError (retried), saying what it may mean
    assert str(exc) == (
        "connection lost before CONNACK: closed by the broker "
        "(a port that speaks TLS answers plain MQTT so: if it does, use mqtts://)"
    )
    exc = await _connect(BrokerSettings(port=free_port()))
    assert type(exc) is BrokerError
    assert str(exc) == "connection refused"


async def test_a_plain_connection_answered_with_tls_is_final() -> None:
    """A broker that sends a TLS alert to plain MQTT (HiveMQ, EMQX do): no retry heals it."""
    alert = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32])
    async with answering(alert) as port:
        exc = await _connect(BrokerSettings(port=port))
    assert isinstance(exc, BrokerRefused)
    assert str(exc) == "the broker answered with TLS, not MQTT: the port speaks TLS; use mqtts://"


async def test_tls_files_that_cannot_be_loaded_are_final(tmp_path: Path) -> None:
    settings = BrokerSettings(port=free_port(), tls=True, ca_file=str(tmp_path / "missing.crt"))
    exc = await _connect(settings)
    assert isinstance(exc, BrokerRefused)
    assert str(exc).startswith("bad TLS settings: cannot load TLS files: ")


async def test_minibroker_rejects_an_empty_identifier_for_a_persistent_session() -> None:
    async with MiniBroker() as broker:
        exc = await _connect(BrokerSettings(port=broker.port), identifier="", clean_session=False)
        assert isinstance(exc, BrokerRefused)
        assert str(exc) == "broker refused the connection: identifier rejected"
        async with FastClient(BrokerSettings(port=broker.port), identifier="") as anonymous:
            assert anonymous.connected  # a clean session may leave the identifier to the broker


# ---------------------------------------------------------------- mosquitto's refusals
@pytest.fixture(scope="module")
def guarded_broker() -> Iterator[tuple[Mosquitto, Path, int]]:
    """Mosquitto with a password file on a plain port and on a TLS port that wants a client certificate."""
    with tempfile.TemporaryDirectory(prefix="uns-refuse-") as tmp:
        d = Path(tmp)
        _make_pki(d)
        password_file(d, "op", "s3cret")
        plain, tls = free_port(), free_port()
        conf = (
            "per_listener_settings false\nallow_anonymous false\n"
            f"password_file {d / 'passwd'}\n"
            "user root\n"  # read the test's private files when started as root
            f"listener {plain} 127.0.0.1\n"
            f"listener {tls} 127.0.0.1\n"
            f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"
            "require_certificate true\n"
        )
        with Mosquitto(port=plain, workdir=d, listener_conf=conf) as broker:
            yield broker, d, tls


def _tls_settings(pki: Path, port: int, *, cert: bool = True, ca: bool = True) -> BrokerSettings:
    return BrokerSettings(
        port=port,
        tls=True,
        username="op",
        password="s3cret",
        ca_file=str(pki / "ca.crt") if ca else None,
        cert_file=str(pki / "client.crt") if cert else None,
        key_file=str(pki / "client.key") if cert else None,
    )


@pytest.mark.integration
@pytest.mark.parametrize(("username", "password"), [("op", "wrong"), (None, None), ("nobody", "s3cret")])
async def test_bad_credentials_are_final(
    guarded_broker: tuple[Mosquitto, Path, int], username: str | None, password: str | None
) -> None:
    broker = guarded_broker[0]
    exc = await _connect(BrokerSettings(port=broker.port, username=username, password=password))
    assert isinstance(exc, BrokerRefused)
    assert str(exc) in (
        "broker refused the connection: bad user name or password",
        "broker refused the connection: not authorized",
    )
    good = BrokerSettings(port=broker.port, username="op", password="s3cret")
    async with FastClient(good, identifier="ok") as client:
        assert client.connected


@pytest.mark.integration
async def test_tls_refusals_are_final(guarded_broker: tuple[Mosquitto, Path, int]) -> None:
    _, pki, port = guarded_broker
    async with FastClient(_tls_settings(pki, port), identifier="tls-ok") as client:
        assert client.connected
    untrusted = await _connect(_tls_settings(pki, port, ca=False))
    assert isinstance(untrusted, BrokerRefused)
    assert str(untrusted).startswith("TLS handshake failed: CERTIFICATE_VERIFY_FAILED (")
    # TLS 1.3: the broker's alert (final) or, when its reset overtakes the alert, a reset
    # that proves nothing by itself (retried) but says what it probably means
    for _ in range(5):
        no_certificate = await _connect(_tls_settings(pki, port, cert=False))
        if isinstance(no_certificate, BrokerRefused):
            assert str(no_certificate) == "TLS error before CONNACK: TLSV13_ALERT_CERTIFICATE_REQUIRED"
        else:
            assert str(no_certificate).startswith("connection lost before CONNACK: Connection reset by peer")
            assert "requires a client certificate" in str(no_certificate)


@pytest.mark.integration
def test_uns_run_with_mqtt_to_a_tls_port_stops_with_one_line_naming_tls(
    guarded_broker: tuple[Mosquitto, Path, int], tmp_path: Path
) -> None:
    """mosquitto resets plain MQTT on its TLS port: the engine retries a few times (it could
    be a restarting broker), then stops with one line saying the port likely speaks TLS."""
    _, _, port = guarded_broker
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    env.update(UNS_BROKER_RECONNECT_MIN="0.05", UNS_BROKER_RECONNECT_MAX="0.2")
    r = subprocess.run(
        [sys.executable, "-m", "uns", "run", "--broker", f"mqtt://op:s3cret@127.0.0.1:{port}", "--lake", ""],
        env=env, cwd=tmp_path, check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"uns: error: cannot reach the broker at mqtt://op:***@127.0.0.1:{port} after 6 attempts"
    )
    assert "port that speaks TLS" in last and "use mqtts://" in last and "s3cret" not in r.stderr


# ---------------------------------------------------------------- the CLI: one line, exit 1
@pytest.mark.integration
@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        (["watch", "#", "--count", "1"], "cannot reach the broker at"),
        (["topics", "--duration", "1"], "cannot reach the broker at"),
        (["context", "set", "acme/site", "batch_id=B-1"], "cannot publish to"),
        (["sim", "--duration", "1"], "cannot reach the broker at"),
    ],
    ids=["watch", "topics", "context-set", "sim"],
)
def test_cli_stops_at_a_refusal_with_one_line(
    guarded_broker: tuple[Mosquitto, Path, int], command: list[str], prefix: str
) -> None:
    broker = guarded_broker[0]
    url = f"mqtt://op:wrong@127.0.0.1:{broker.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    r = subprocess.run(
        [sys.executable, "-m", "uns", *command, "--broker", url],
        env=env,
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    error = [line for line in lines if line.startswith("uns: error: ")]
    assert error == lines[-1:], r.stderr  # the last line, and the only one (uns sim announces itself first)
    assert len(lines) == (2 if command[0] == "sim" else 1), r.stderr
    where = f"{prefix} mqtt://op:***@127.0.0.1:{broker.port}"
    assert error[0].startswith(f"uns: error: {where}: broker refused the connection: ")
    assert "wrong" not in r.stderr


# ---------------------------------------------------------------- the simulator
@pytest.mark.integration
async def test_sim_runs_with_credentials_and_stops_at_a_refusal(
    guarded_broker: tuple[Mosquitto, Path, int],
) -> None:
    _, pki, port = guarded_broker
    good = _tls_settings(pki, port)  # user name, password and client certificate over TLS
    report = await run_sim(SimConfig(broker=good, group_id="refusals", rate=100, duration=0.5))
    assert report.data_messages > 0
    assert report.deaths == 3
    wrong = dataclasses.replace(good, password="wrong")
    with pytest.raises(BrokerRefused, match=r"bad user name or password|not authorized"):
        await run_sim(SimConfig(broker=wrong, group_id="refusals", rate=100, duration=0.5))
