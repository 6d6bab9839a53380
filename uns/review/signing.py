"""Signing in the workspace: the server's key, and a user's signature of a batch's review.

The web workspace signs with its own Ed25519 key (``web.signing_key``), trusted as a
*service* key (``uns keys trust ... --service``): it may sign for the users it
authenticates.  A signature is :func:`uns.batch.signing.sign_report`'s entry -- signer
(user id, printed full name, role), meaning, time, reason, the report content's SHA-256
(which must still be what the user read: ``expect_sha256``) and the chain head -- plus
the SHA-256 of the dispositions it signs (for ``reviewed`` and ``approved``).  Before it:
the password again (:meth:`uns.users.AccessControl.reauthenticate`), the role
(:mod:`uns.users.roles`) and the review's rules (:func:`uns.batch.review.check_signature`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uns.audit.signatures import Signer, SigningKey
from uns.batch.review import check_signature
from uns.batch.signing import sign_report, signing_key
from uns.config import Config
from uns.errors import ReviewRefused, SignatureError, UnsError, UserError
from uns.keyring import TrustedKey, load_keyring
from uns.users.roles import require
from uns.users.sessions import Session

if TYPE_CHECKING:
    from uns.review.workspace import Workspace

__all__ = ["ServerKey", "server_key", "sign_review"]

#: how to make the server's key, said when there is none (one line)
HOW: str = (
    "make one with `uns keys new uns-web --dir /etc/uns/keys`, trust it with `uns keys trust "
    "/etc/uns/keys/uns-web.pub --name uns-web --full-name 'uns review workspace' --service --reason ...`, "
    "and set web.signing_key (UNS_WEB_SIGNING_KEY=/etc/uns/keys/uns-web.key)"
)


@dataclass(slots=True)
class ServerKey:
    """The server's signing key, and the trusted keys (read again when their directory changes)."""

    key: SigningKey
    trusted_dir: str | None
    _keyring: dict[str, TrustedKey] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keyring(self) -> Mapping[str, TrustedKey]:
        with self._lock:
            if not self._keyring:
                self._keyring = load_keyring(self.trusted_dir)
            return self._keyring

    def reload(self) -> None:
        with self._lock:
            self._keyring = {}


def server_key(cfg: Config) -> ServerKey:
    """The key of ``web.signing_key``, trusted as a service key; UnsError saying how to
    make one when it is missing or cannot sign."""
    if not cfg.web.signing_key:
        raise UnsError(f"uns serve needs its signing key: {HOW}")
    keyring = load_keyring(cfg.audit.trusted_keys)
    try:
        key, trusted = signing_key(cfg.web.signing_key, keyring)
    except SignatureError as exc:
        raise UnsError(f"uns serve cannot sign with web.signing_key: {exc.reason}; {HOW}") from exc
    if trusted.owner is None or trusted.owner.signs_for != "users":
        raise UnsError(
            f"web.signing_key {key.name!r} is not trusted as a service key (it would sign only for "
            f"its owner): trust it with `uns keys trust ... --name {key.name} --service`"
        )
    return ServerKey(key, cfg.audit.trusted_keys, keyring)


def _role(meaning: str, roles: tuple[str, ...]) -> str:
    """The role a user signs in (shown with the signature)."""
    if meaning == "approved" or (meaning == "rejected" and "approver" in roles):
        return "approver"
    return "reviewer"


def sign_review(ws: Workspace, session: Session, batch_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /api/batches/{id}/signatures``: see the module doc.  401 wrong password, 423
    locked, 403 role, 409 a rule, 400 bad input (the errors say which)."""
    meaning, password, reason = body.get("meaning"), body.get("password"), body.get("reason") or ""
    expect = body.get("content_sha256")
    if meaning not in ("reviewed", "approved", "rejected"):
        raise UserError("meaning must be reviewed, approved or rejected", field="meaning")
    if not isinstance(password, str) or not password:
        raise UserError("the password is asked again for every signature", field="password")
    if not isinstance(reason, str) or len(reason) > 4000:
        raise UserError("the reason must be text of at most 4000 characters", field="reason")
    identity = ws.access.reauthenticate(session, password)
    require(identity.user, identity.roles, f"sign:{meaning}")
    with ws.signing_lock:
        review = ws.review(batch_id)
        check_signature(
            str(meaning), identity.user, reason, status=review.status,
            exception_ids=[e["id"] for e in review.document["exceptions"]],
            dispositions=review.dispositions, signatures=review.signed,
        )  # fmt: skip
        if isinstance(expect, str) and expect and expect != review.content_sha256:
            raise ReviewRefused(
                "content-unchanged", "the report changed since you read it: read it again before signing"
            )
        cached = review.document

        def document(_con: Any) -> dict[str, Any]:
            return dict(cached)

        extra = {"dispositions_sha256": review.dispositions_sha256} if meaning != "rejected" else {}
        signer = Signer(identity.user, identity.full_name, _role(str(meaning), identity.roles))
        try:
            ws.write_signature(
                lambda: sign_report(
                    ws.root, batch_id, document=document, signer=signer, meaning=str(meaning),
                    reason=reason.strip(), key=ws.signing.key, keyring=ws.signing.keyring(),
                    expect_sha256=review.content_sha256, spec=ws.spec, writer_id=ws.cfg.web.writer_id,
                    audit=ws.cfg.audit, extra=extra,
                )
            )  # fmt: skip
        except SignatureError as exc:  # what sign_report itself refuses (a changed report, a clock)
            rule = "content-unchanged" if "changed since" in exc.reason else "signature-refused"
            raise ReviewRefused(rule, exc.reason) from exc
    return ws.review(batch_id).summary()
