"""Signing in the workspace: a user's signature of a batch's review.

The web workspace signs with its own Ed25519 key (:mod:`uns.review.keys`), trusted as a
*service* key: it may sign for the users it authenticates.  A signature is the entry of
:func:`uns.batch.signing.sign_report` -- signer (user id, printed full name, role),
meaning, time, reason, the report content's SHA-256 (which must still be what the user
read: ``expect_sha256``) and the chain head -- plus
the SHA-256 of the dispositions it signs (for ``reviewed`` and ``approved``).  Before it:
the password again (:meth:`uns.users.AccessControl.reauthenticate`), the role
(:mod:`uns.users.roles`) and the review's rules (:func:`uns.batch.review.check_signature`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from uns.audit.signatures import Signer
from uns.batch.review import check_signature
from uns.batch.signing import sign_report
from uns.errors import ReviewRefused, SignatureError, UserError
from uns.users.roles import require
from uns.users.sessions import Session

if TYPE_CHECKING:
    from uns.review.workspace import Workspace

__all__ = ["sign_review"]


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
