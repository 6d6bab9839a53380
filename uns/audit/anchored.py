"""``uns audit verify`` against the anchors outside the lake, and the audit trail's clock.

The chain proves nothing against someone who rewrites it whole; the anchors
(:mod:`uns.lake.anchors`, written once outside the lake) do.  Per writer:

- **truncation or rollback**: the chain ends before its newest anchored seq;
- **re-chaining**: the hash at an anchored seq is not the anchored one.  Every hash
  covers all before it, so the newest anchor the chain still reaches is checked, and
  when it differs a bisection over older anchors names the last seq that still matched;
- **gaps in anchoring**: entries not anchored within ``audit.anchor_interval_s`` (plus
  ``audit.clock_skew_s``) of their time -- anchoring stopped, or a writer was killed and
  anchored its last entries only at its next start.  Entries before a writer's first
  anchor (anchoring began later) are covered by that anchor only, and said so;
- **the clock**: an entry dated more than ``audit.clock_skew_s`` before the entry
  before it, or before an anchor of an earlier seq was stored (a clock set back);
- **time-stamps** (``audit.tsa_url``): the authority's time of each writer's newest
  anchor, its token checked against ``audit.tsa_ca_file``; a writer's clock that was
  off the authority's by more than the skew when it anchored.

Only the newest anchors (and the bisection's) are read; the others are listed with
the time the store got them (file mtime, S3 LastModified), which is what the coverage
and clock checks use.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from uns.clock import iso_us
from uns.lake.anchors import AnchorStore, StoredAnchor, anchor_name
from uns.lake.hashing import ChainRow

__all__ = ["AnchorCheck", "anchor_findings", "clock_findings"]


def _who(writer: str) -> str:
    return writer or "(default)"


def _span(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}-{last}"


def _runs(items: Iterable[tuple[int, str]]) -> list[tuple[int, int, str]]:
    """Consecutive seqs with the same problem, as (first, last, problem)."""
    out: list[tuple[int, int, str]] = []
    for seq, problem in items:
        if out and out[-1][2] == problem and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq, problem)
        else:
            out.append((seq, seq, problem))
    return out


def clock_findings(chain: Sequence[ChainRow], skew_s: float) -> list[str]:
    """Entries dated more than ``skew_s`` before the entry before them in their chain."""
    skew_us = skew_s * 1_000_000
    by_writer: dict[str, list[ChainRow]] = {}
    for row in chain:
        by_writer.setdefault(row.writer_id, []).append(row)
    out: list[str] = []
    for writer, rows in sorted(by_writer.items()):
        rows.sort(key=lambda r: r.seq)
        for before, row in itertools.pairwise(rows):
            if row.seq == before.seq + 1 and row.ts < before.ts - skew_us:
                back = (before.ts - row.ts) / 1_000_000
                out.append(
                    f"audit: writer {_who(writer)} seq {row.seq} is dated {iso_us(row.ts)}, "
                    f"{back:.0f} s before seq {before.seq} ({iso_us(before.ts)}): the clock went back "
                    f"(audit.clock_skew_s = {skew_s:g})"
                )
    return out


@dataclass(slots=True)
class AnchorCheck:
    """What the anchors say: ``findings`` (empty: consistent) and one line per writer's head."""

    findings: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    anchors: int = 0


@dataclass(slots=True)
class _Writer:
    writer: str
    rows: dict[int, ChainRow]
    anchors: list[StoredAnchor]


class _Reader:
    def __init__(self, store: AnchorStore, out: AnchorCheck) -> None:
        self.store = store
        self.out = out

    def body(self, writer: str, seq: int) -> dict[str, Any] | None:
        data = self.store.get(anchor_name(writer, seq))
        try:
            body = json.loads(data) if data is not None else None
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("writer_id") != writer or body.get("seq") != seq:
            self.out.findings.append(f"audit: the anchor of writer {_who(writer)} seq {seq} is unreadable")
            return None
        return body


def anchor_findings(
    chain: Sequence[ChainRow],
    store: AnchorStore,
    *,
    interval_s: float,
    skew_s: float,
    now_us: int,
    tsa_ca_file: str | None = None,
) -> AnchorCheck:
    """Check the chains of ``chain`` against the anchors in ``store`` (module doc)."""
    out = AnchorCheck()
    listed = store.listing()
    out.anchors = len(listed)
    writers: dict[str, _Writer] = {}
    for row in chain:
        writers.setdefault(row.writer_id, _Writer(row.writer_id, {}, [])).rows[row.seq] = row
    for anchor in listed:
        writers.setdefault(anchor.writer_id, _Writer(anchor.writer_id, {}, [])).anchors.append(anchor)
    began = min((a.stored_us for a in listed), default=None)  # anchoring began then
    reader = _Reader(store, out)
    for writer in sorted(writers):
        w = writers[writer]
        w.anchors.sort(key=lambda a: a.seq)
        _check_writer(w, reader, out, began, interval_s * 1e6 + skew_s * 1e6, skew_s, now_us, tsa_ca_file)
    return out


def _check_writer(
    w: _Writer, reader: _Reader, out: AnchorCheck, began: int | None, late_us: float, skew_s: float,
    now_us: int, tsa_ca_file: str | None,
) -> None:  # fmt: skip
    who = _who(w.writer)
    for a in w.anchors:
        if a.versions > 1:
            out.findings.append(
                f"audit: the anchor of writer {who} seq {a.seq} was written {a.versions} times "
                "(the first counts)"
            )
    last = max(w.rows, default=0)
    if not w.anchors:
        if began is not None and w.rows:
            tail = w.rows[last]
            if tail.ts > began and now_us - tail.ts > late_us:
                out.findings.append(
                    f"audit: writer {who} has no anchor, though anchoring began {iso_us(began)} "
                    f"(its entries up to seq {last}, {iso_us(tail.ts)})"
                )
        return
    newest = w.anchors[-1]
    if newest.seq > last:
        out.findings.append(
            f"audit: writer {who} ends at seq {last} but was anchored at seq {newest.seq} "
            f"({iso_us(newest.stored_us)}): entries deleted (the chain truncated or the lake rolled back)"
        )
    reached = [a for a in w.anchors if a.seq in w.rows]
    if reached:
        _check_hashes(w, reached, reader, out)
    _head_line(w, newest, reader, out, skew_s, tsa_ca_file)
    _coverage(w, out, late_us, now_us)
    _dated_before_anchor(w, out, skew_s)


def _matches(w: _Writer, a: StoredAnchor, reader: _Reader) -> bool | None:
    body = reader.body(w.writer, a.seq)
    return None if body is None else body.get("hash") == w.rows[a.seq].hash


def _check_hashes(w: _Writer, reached: list[StoredAnchor], reader: _Reader, out: AnchorCheck) -> None:
    """The newest anchor the chain reaches; when it differs, bisect for the last that matches."""
    if _matches(w, reached[-1], reader) is not False:
        return
    lo, hi = -1, len(reached) - 1  # reached[lo] matches (or none does), reached[hi] differs
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _matches(w, reached[mid], reader) is False:
            hi = mid
        else:
            lo = mid
    since = f"; it matched at seq {reached[lo].seq}" if lo >= 0 else ""
    a = reached[hi]
    out.findings.append(
        f"audit: writer {_who(w.writer)} seq {a.seq} differs from its anchor of {iso_us(a.stored_us)}: "
        f"the chain was rewritten at or before seq {a.seq}{since}"
    )


def _head_line(
    w: _Writer, a: StoredAnchor, reader: _Reader, out: AnchorCheck, skew_s: float, tsa_ca_file: str | None
) -> None:
    body = reader.body(w.writer, a.seq)
    if body is None:
        return
    line = (
        f"anchor {_who(w.writer)}@{a.seq}:{str(body.get('hash'))[:12]} written {iso_us(int(body['time_us']))}"
    )
    token = reader.store.get(anchor_name(w.writer, a.seq, ".tsr"))
    if token is None:
        out.heads.append(f"{line}, not time-stamped")
        return
    from uns.lake.tsa import attested  # noqa: PLC0415 - rfc3161-client only with tokens

    data = reader.store.get(anchor_name(w.writer, a.seq)) or b""
    stamp = attested(token, data, tsa_ca_file)
    if stamp.time_us is None or (tsa_ca_file and stamp.problem):
        out.findings.append(f"audit: the time-stamp of writer {_who(w.writer)} seq {a.seq}: {stamp.problem}")
        return
    note = " (verified)" if stamp.verified else f" ({stamp.problem})"
    out.heads.append(f"{line}, attested by the TSA at {iso_us(stamp.time_us)}{note}")
    off = abs(int(body["time_us"]) - stamp.time_us) / 1e6
    if off > skew_s:
        out.findings.append(
            f"audit: writer {_who(w.writer)}'s clock was {off:.0f} s off the TSA's "
            f"when it anchored seq {a.seq}"
        )


def _coverage(w: _Writer, out: AnchorCheck, late_us: float, now_us: int) -> None:
    """Each entry after the writer's first anchor is anchored within the interval."""
    seqs = [a.seq for a in w.anchors]
    first = seqs[0]
    problems: list[tuple[int, str]] = []
    for seq in sorted(s for s in w.rows if s > first):
        row = w.rows[seq]
        at = bisect.bisect_left(seqs, seq)
        if at == len(seqs):
            if now_us - row.ts > late_us:
                problems.append((seq, f"not anchored (the newest anchor is seq {seqs[-1]})"))
        elif w.anchors[at].stored_us - row.ts > late_us:
            problems.append((seq, f"anchored only at {iso_us(w.anchors[at].stored_us)} (seq {seqs[at]})"))
    for lo, hi, problem in _runs(problems):
        out.findings.append(
            f"audit: writer {_who(w.writer)} {_span(lo, hi)} (from {iso_us(w.rows[lo].ts)}) {problem}: "
            "an anchor was missing for longer than audit.anchor_interval_s"
        )
    if first > 1 and 1 in w.rows:
        out.heads.append(f"anchor {_who(w.writer)}: seq 1-{first} were recorded before its first anchor")


def _dated_before_anchor(w: _Writer, out: AnchorCheck, skew_s: float) -> None:
    """Entries dated before an anchor of an earlier seq was stored: the clock went back."""
    problems: list[tuple[int, str]] = []
    anchors = iter(w.anchors)
    pending = next(anchors, None)
    newest_us = None
    for seq in sorted(w.rows):
        while pending is not None and pending.seq < seq:
            newest_us = max(newest_us or 0, pending.stored_us)
            pending = next(anchors, None)
        if newest_us is not None and w.rows[seq].ts < newest_us - skew_s * 1e6:
            problems.append((seq, f"dated before an earlier seq was anchored ({iso_us(newest_us)})"))
    for lo, hi, problem in _runs(problems):
        out.findings.append(
            f"audit: writer {_who(w.writer)} {_span(lo, hi)} (dated {iso_us(w.rows[lo].ts)}) {problem}: "
            "the clock went back"
        )
