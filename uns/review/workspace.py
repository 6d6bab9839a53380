"""The review workspace: what ``uns serve`` does, as library calls (the web face only
turns HTTP into these calls and their results into pages and JSON).

:func:`open_workspace` checks what the server needs before it starts (a local lake,
the server's signing key, its own audit chain) and builds a :class:`Workspace`:

- the users and their sessions (:class:`uns.users.AccessControl`);
- each batch's report with its review (:meth:`Workspace.report`): the report content from
  :class:`uns.review.reports.ReportCache`, the review (dispositions, signatures, state)
  from the trail as it is now;
- the review's steps: :meth:`Workspace.dispose` here, :func:`uns.review.signing.sign_review`
  and :func:`uns.review.context.set_batch_context` beside it (the batch list:
  :func:`uns.review.listing.batch_list`), each checked against the roles
  (:mod:`uns.users.roles`) and the rules (:mod:`uns.batch.review`), each an entry of this
  server's audit chain (``web.writer_id``) with the authenticated user as its actor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from uns.batch.api import report_request
from uns.batch.dispositions import disposition_entry
from uns.batch.document import ReportRequest
from uns.batch.review import check_disposition
from uns.batch.review_state import BatchReview, review_of
from uns.config import Config
from uns.config_web import ldap_settings
from uns.errors import UnsError
from uns.lake.audit_entries import Entry
from uns.review.keys import ServerKey, server_key
from uns.review.reports import ReportCache
from uns.review.trail import ReviewTrail
from uns.users.access import AccessControl
from uns.users.roles import require
from uns.users.sessions import Session
from uns.users.store import UserStore

__all__ = ["Workspace", "open_workspace"]


def _now_us() -> int:
    return time.time_ns() // 1000


class Workspace:
    """The workspace over ``cfg``'s lake (see the module doc); made by :func:`open_workspace`."""

    def __init__(self, cfg: Config, recorder: Any, signing: ServerKey) -> None:
        self.cfg = cfg
        self.root = Path(cfg.lake.path or "")
        self._recorder = recorder
        self.signing = signing  # the server's key: it signs what the users sign
        self._write = threading.Lock()
        self.users = UserStore(self.root, self._record)
        ldap = ldap_settings(cfg.web.ldap)
        directory = None
        if ldap is not None:
            from uns.users.ldap import LdapDirectory  # noqa: PLC0415 - ldap3 only with a directory

            directory = LdapDirectory(ldap)
        self.access = AccessControl(self.users, cfg.web, ldap=directory)
        self.trail = ReviewTrail(self.root)
        # the spec and the plant model are read once, when the server starts
        self._template = report_request(cfg, "", spec=None)
        #: the identity of the spec the reports are read with (a signature records it)
        self.spec = self._template.spec.identity()
        self.reports = ReportCache(self.root, self._request)
        #: one review step of this server at a time: a rule is checked and its entry written together
        self.signing_lock = threading.Lock()

    # ---------------------------------------------------------------- plumbing
    def _record(self, entries: Sequence[Entry]) -> None:
        with self._write:
            self._recorder.record(list(entries))

    def write_signature(self, write: Callable[[], Any]) -> Any:
        """Run ``write`` (which appends to this server's chain through a recorder of its own,
        :func:`uns.batch.signing.sign_report`), then drop this server's cached chain tail."""
        with self._write:
            try:
                return write()
            finally:
                self._recorder.forget()

    def _request(self, batch_id: str) -> ReportRequest:
        return dataclasses.replace(self._template, batch_id=batch_id)

    # ---------------------------------------------------------------- reading
    def review(self, batch_id: str) -> BatchReview:
        """The batch's report content as the lake is now and its review (BatchError: unknown)."""
        document, _versions = self.reports.document(batch_id)
        rows = self.trail.rows(batch_id)
        return review_of(
            document, rows, self.signing.keyring(), revocations=self.trail.revocations(), spec=self.spec
        )

    def report(self, batch_id: str) -> dict[str, Any]:
        """The report JSON with its ``review`` (``GET /api/batches/{id}/report``)."""
        return self.review(batch_id).report()

    def audit(self, batch_id: str) -> list[dict[str, Any]]:
        """The batch's audit trail (``uns audit log --batch``), oldest first."""
        from uns import lake  # noqa: PLC0415
        from uns.batch.report import audit_trail  # noqa: PLC0415

        self.reports.document(batch_id)  # an unknown batch: one line
        con = lake.connect(self.root)
        try:
            return audit_trail(con, batch_id)
        finally:
            con.close()

    # ---------------------------------------------------------------- the review's steps
    def dispose(self, session: Session, batch_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Disposition one exception (role reviewer); returns the review as it is then."""
        who = session.identity
        require(who.user, who.roles, "dispose")
        with self.signing_lock:
            review = self.review(batch_id)
            ids = [e["id"] for e in review.document["exceptions"]]
            exception_id, decision, comment, ref = check_disposition(
                review.state, ids, body.get("exception_id"), body.get("decision"), body.get("comment"),
                body.get("deviation_ref"),
            )  # fmt: skip
            exception = next(e for e in review.document["exceptions"] if e["id"] == exception_id)
            self._record([
                disposition_entry(
                    _now_us(), batch_id, exception, decision=decision, comment=comment, deviation_ref=ref,
                    user=who.user, full_name=who.full_name, report_sha256=review.content_sha256,
                )
            ])  # fmt: skip
        return self.review(batch_id).summary()

    def report_file(self, session: Session, batch_id: str, fmt: str) -> bytes:
        """The HTML or PDF report of the batch, recorded in the audit trail as made by the user."""
        from uns.batch.report import generate_report  # noqa: PLC0415

        if fmt not in ("html", "pdf"):
            raise UnsError(f"unknown report format {fmt!r} (html or pdf)")
        self.reports.document(batch_id)  # an unknown batch: one line
        data, _verdict = generate_report(self.root, self._request(batch_id), fmt, actor=session.identity.user)
        return data


@contextlib.contextmanager
def open_workspace(cfg: Config) -> Iterator[Workspace]:
    """The workspace of ``cfg``, holding its audit chain (``web.writer_id``) while open.
    UnsError, in one line saying what to do, when it cannot serve: no lake, a lake on
    object storage, no signing key, another server on the same chain."""
    from uns.lake.locks import writer_lock  # noqa: PLC0415
    from uns.lake.storage import as_store  # noqa: PLC0415
    from uns.lake.writer import DeltaWriter  # noqa: PLC0415

    path = cfg.lake.path
    if not path:
        raise UnsError("no lake configured: pass --lake DIR or set UNS_LAKE")
    store = as_store(path)
    if store.remote:
        raise UnsError(f"uns serve needs a lake on local disk (the audit trail is not kept on {store})")
    root = Path(path)
    if not root.is_dir():
        raise UnsError(f"no lake at {root} (uns run makes one; uns users add ... --lake {root} too)")
    signing = server_key(cfg)
    with writer_lock(root, cfg.web.writer_id) as held:
        if not held:
            raise UnsError(
                f"another uns serve writes the audit chain {cfg.web.writer_id!r} of {root}: give this one "
                "its own web.writer_id (e.g. UNS_WEB_WRITER_ID=uns-web-2)"
            )
        writer = DeltaWriter(root, cfg.web.writer_id)
        writer.ensure_tables()
        writer.audit.shared = True  # a signature appends through a recorder of its own (sign_report)
        yield Workspace(cfg, writer.audit, signing)
