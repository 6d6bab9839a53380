"""The review workspace's library calls (what ``uns serve`` does; the web face only turns
HTTP into them): :mod:`uns.review.workspace` (the workspace over a lake),
:mod:`uns.review.reports` (report contents kept per lake version), :mod:`uns.review.trail`
(the review's entries followed in the audit trail), :mod:`uns.review.listing` (the batch
list with review states), :mod:`uns.review.signing` (the server's key, a user's signature),
:mod:`uns.review.context` (context by people).  The review's rules are pure, in
:mod:`uns.batch.review`; a batch's review state in :mod:`uns.batch.review_state`.
"""

from __future__ import annotations

from uns.review.workspace import Workspace, open_workspace

__all__ = ["Workspace", "open_workspace"]
