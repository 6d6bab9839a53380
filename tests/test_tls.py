"""TLS (mqtts://, CA, client certificate) and username/password against a real mosquitto."""

from __future__ import annotations

import os
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


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(d: Path) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=uns test CA",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={'127.0.0.1' if name == 'server' else 'uns-client'}",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            cwd=d,
        )


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[tuple[Mosquitto, Path]]:
    with tempfile.TemporaryDirectory(prefix="uns-tls-") as tmp:
        d = Path(tmp)
        _make_pki(d)
        password_file(d, "op", "s3cret")
        port = free_port()
        conf = (
            f"listener {port} 127.0.0.1\n"
            f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"
            "require_certificate true\nallow_anonymous false\n"
            f"password_file {d / 'passwd'}\n"
            "user root\n"  # read the test's private key files when started as root
        )
        with Mosquitto(port=port, workdir=d, listener_conf=conf) as broker:
            yield broker, d


def _env(pki: Path, *, cert: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
    env["UNS_BROKER_CA_FILE"] = str(pki / "ca.crt")
    if cert:
        env["UNS_BROKER_CERT_FILE"] = str(pki / "client.crt")
        env["UNS_BROKER_KEY_FILE"] = str(pki / "client.key")
    return env


def _uns(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "uns", *args],
        env=env,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_tls_with_client_certificate_and_password(tls_broker: tuple[Mosquitto, Path]) -> None:
    broker, pki = tls_broker
    url = f"mqtts://op:s3cret@127.0.0.1:{broker.port}"
    watch = _uns(
        ["watch", "uns/v1/_context/#", "--broker", url, "--count", "1", "--json", "--duration", "30"],
        _env(pki),
    )
    time.sleep(2.5)
    ctx = _uns(["context", "set", "acme/site", "batch_id=B-7", "--broker", url], _env(pki))
    _, err = ctx.communicate(timeout=30)
    assert ctx.returncode == 0, err
    out, err = watch.communicate(timeout=40)
    assert watch.returncode == 0, err
    assert '"batch_id": "B-7"' in out
    assert "s3cret" not in err


@pytest.mark.parametrize(
    ("url", "cert"),
    [("mqtts://op:wrong@127.0.0.1:{port}", True), ("mqtts://op:s3cret@127.0.0.1:{port}", False)],
    ids=["bad-password", "no-client-certificate"],
)
def test_tls_refusals_are_one_clear_line(tls_broker: tuple[Mosquitto, Path], url: str, cert: bool) -> None:
    broker, pki = tls_broker
    proc = _uns(
        ["context", "set", "acme/site", "batch_id=B-7", "--broker", url.format(port=broker.port)],
        _env(pki, cert=cert),
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("uns: error: cannot publish to mqtts://op:***@127.0.0.1")
    assert "wrong" not in err and "s3cret" not in err
