"""A local RFC 3161 time-stamping authority for the audit-anchor tests: a private CA, a TSA
certificate (extended key usage timeStamping) and OpenSSL's ``ts -reply`` behind a small
HTTP handler on a free loopback port, one per test that needs it.

The TSA's clock is this machine's: :attr:`TSA.offset_s` is not there -- a test that
needs the writer's clock off the authority's injects the writer's clock instead."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TSA", "running_tsa"]

_CONFIG = """\
[ tsa ]
default_tsa = uns_test_tsa
[ uns_test_tsa ]
serial = {dir}/serial
crypto_device = builtin
signer_digest = sha256
default_policy = 1.3.6.1.4.1.55555.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _pki(root: Path) -> None:
    """ca.pem (the trust anchor), tsa.pem + tsa.key (the signer)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("uns test TSA CA")).issuer_name(_name("uns test TSA CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = (
        x509.CertificateBuilder().subject_name(_name("uns test TSA")).issuer_name(ca.subject)
        .public_key(tsa_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "tsa.pem").write_bytes(tsa.public_bytes(serialization.Encoding.PEM))
    _write_key(root / "tsa.key", tsa_key)
    (root / "serial").write_text("01\n")
    (root / "ts.cnf").write_text(_CONFIG.format(dir=root))


class TSA:
    """A running authority: its URL, its CA certificate file and how many it stamped."""

    def __init__(self, url: str, ca_file: Path) -> None:
        self.url = url
        self.ca_file = ca_file
        self.stamped = 0


@contextlib.contextmanager
def running_tsa() -> Iterator[TSA]:
    with tempfile.TemporaryDirectory(prefix="uns-tsa-") as tmp:
        root = Path(tmp)
        _pki(root)
        lock = threading.Lock()  # one openssl at a time: the serial file is shared

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 16))
                with lock, tempfile.TemporaryDirectory(dir=root) as work:
                    (Path(work) / "q.tsq").write_bytes(query)
                    argv = ["openssl", "ts", "-reply", "-config", str(root / "ts.cnf")]
                    argv += ["-queryfile", f"{work}/q.tsq", "-out", f"{work}/r.tsr"]
                    argv += ["-signer", str(root / "tsa.pem"), "-inkey", str(root / "tsa.key")]
                    done = subprocess.run(argv, capture_output=True, check=False, timeout=30)
                    reply = (Path(work) / "r.tsr").read_bytes() if done.returncode == 0 else b""
                if not reply:
                    self.send_error(500, done.stderr.decode(errors="replace")[:200])
                    return
                tsa.stamped += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                """Quiet."""

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tsa = TSA(f"http://127.0.0.1:{server.server_address[1]}/tsr", root / "ca.pem")
        thread = threading.Thread(target=server.serve_forever, name="test-tsa", daemon=True)
        thread.start()
        try:
            yield tsa
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
