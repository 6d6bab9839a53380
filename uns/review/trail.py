"""The review's entries of the audit trail, by batch: dispositions and signatures.

The workspace reads them from the trail as it is now (every process over the lake
writes them), through an :class:`uns.audit.follow.AuditFollower`: only what is new is
read on each look, so a batch page or the batch list costs no scan of the trail.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Final

from uns.audit.follow import AuditFollower
from uns.batch.dispositions import KIND as DISPOSITION
from uns.lake.hashing import ChainRow

__all__ = ["KINDS", "ReviewTrail"]

SIGNATURE: Final = "signature"
#: a key's revocation recorded in the trail applies to its signatures (uns keys revoke)
REVOKED: Final = "key_revoked"
KINDS: Final = (DISPOSITION, SIGNATURE, REVOKED)


class ReviewTrail:
    """Dispositions and signatures of every batch of the lake at ``root``, kept up to date."""

    def __init__(self, root: str | Path) -> None:
        self._follower = AuditFollower(root, KINDS)
        self._by_batch: dict[str, list[ChainRow]] = {}
        self._revoked: list[ChainRow] = []
        self._lock = threading.Lock()

    def refresh(self) -> None:
        rows = self._follower.refresh()
        if not rows:
            return
        with self._lock:
            for row in rows:
                if row.kind == REVOKED:
                    self._revoked.append(row)
                else:
                    self._by_batch.setdefault(row.subject, []).append(row)
            for batch in {r.subject for r in rows if r.kind != REVOKED}:
                self._by_batch[batch].sort(key=lambda r: (r.ts, r.writer_id, r.seq))

    def rows(self, batch_id: str) -> list[ChainRow]:
        """The batch's dispositions and signatures, oldest first."""
        self.refresh()
        with self._lock:
            return list(self._by_batch.get(batch_id, ()))

    def revocations(self) -> list[ChainRow]:
        """The key revocations the trail recorded."""
        self.refresh()
        with self._lock:
            return list(self._revoked)

    def batches(self) -> dict[str, list[ChainRow]]:
        """Every batch with review entries -> its entries, oldest first."""
        self.refresh()
        with self._lock:
            return {b: list(rows) for b, rows in self._by_batch.items()}
