"""RFC 3161 time-stamps of audit anchors (``audit.tsa_url``, ``audit.tsa_ca_file``).

A time-stamping authority signs "this SHA-256 existed at time T" with its own clock and
certificate, so the time of an anchored chain head does not rest on the writer's host
clock.  :func:`request_token` sends a TimeStampReq over HTTP (``application/
timestamp-query``) for the SHA-256 of an anchor's bytes and returns the authority's
reply (DER), checked: granted, for that digest, with our nonce.  :func:`attested`
reads a stored reply back: its time and, given the authority's CA certificate, whether
its signature and certificate chain verify.  Request and token are built and parsed by
``rfc3161-client``; replies are bounded (:data:`MAX_REPLY`).
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Final

from uns.errors import LakeError

__all__ = ["MAX_REPLY", "Attested", "attested", "request_token"]

#: the largest reply read from an authority (a token with its certificates is a few KiB)
MAX_REPLY: Final = 256 << 10
TIMEOUT_S: Final = 10.0


def request_token(url: str, data: bytes, *, timeout_s: float = TIMEOUT_S) -> bytes:
    """The authority's time-stamp reply for the SHA-256 of ``data`` (DER); LakeError saying
    why when there is none."""
    import rfc3161_client as tsp  # noqa: PLC0415

    request = tsp.TimestampRequestBuilder(data=data, hash_algorithm=tsp.HashAlgorithm.SHA256).build()
    http = urllib.request.Request(  # noqa: S310 - the configured authority, http or https
        url, data=request.as_bytes(), method="POST", headers={"Content-Type": "application/timestamp-query"}
    )
    try:
        with urllib.request.urlopen(http, timeout=timeout_s) as reply:  # noqa: S310
            body: bytes = reply.read(MAX_REPLY + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise LakeError(f"the time-stamping authority {url} did not answer: {exc}") from exc
    if len(body) > MAX_REPLY:
        raise LakeError(f"the time-stamping authority {url} sent more than {MAX_REPLY} bytes")
    try:
        response = tsp.decode_timestamp_response(body)
    except ValueError as exc:
        raise LakeError(f"the time-stamping authority {url} sent no RFC 3161 reply: {exc}") from exc
    if tsp.PKIStatus(response.status) not in (tsp.PKIStatus.GRANTED, tsp.PKIStatus.GRANTED_WITH_MODS):
        raise LakeError(f"the time-stamping authority {url} refused: status {response.status}")
    info = response.tst_info
    if info.message_imprint.message != hashlib.sha256(data).digest() or info.nonce != request.nonce:
        raise LakeError(f"the time-stamping authority {url} stamped something else (digest or nonce differ)")
    return body


@dataclass(frozen=True, slots=True)
class Attested:
    """What a stored reply attests: the time (epoch µs), and ``problem`` ('' when the token
    verified against the CA certificate; otherwise why not, or that no CA was given)."""

    time_us: int | None
    problem: str

    @property
    def verified(self) -> bool:
        return self.time_us is not None and not self.problem


def attested(token: bytes, data: bytes, ca_file: str | None) -> Attested:
    """The time ``token`` attests for ``data``, checked against the CA of ``ca_file``."""
    import rfc3161_client as tsp  # noqa: PLC0415
    from cryptography import x509  # noqa: PLC0415

    try:
        response = tsp.decode_timestamp_response(token[:MAX_REPLY])
        moment = response.tst_info.gen_time
    except ValueError as exc:
        return Attested(None, f"unreadable time-stamp token: {exc}")
    time_us = int(moment.timestamp() * 1_000_000)
    if response.tst_info.message_imprint.message != hashlib.sha256(data).digest():
        return Attested(time_us, "the time-stamp token is for other content than the anchor")
    if not ca_file:
        return Attested(time_us, "its certificate was not checked (set audit.tsa_ca_file)")
    try:
        with open(ca_file, "rb") as f:
            roots = x509.load_pem_x509_certificates(f.read())
        builder = tsp.VerifierBuilder()
        for root in roots:
            builder = builder.add_root_certificate(root)
        builder.build().verify_message(response, data)
    except OSError as exc:
        return Attested(time_us, f"cannot read audit.tsa_ca_file: {exc}")
    except (tsp.VerificationError, ValueError) as exc:
        return Attested(time_us, f"the time-stamp token does not verify: {exc}")
    return Attested(time_us, "")
