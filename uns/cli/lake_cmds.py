"""What the ``uns lake`` commands (sql, info, compact, vacuum, repair, quarantine) print.

The lake comes from ``--lake`` (or ``UNS_LAKE``, or the config file's ``lake.path``), its
store options from the config file's ``[lake.storage]`` and the store's own environment
variables (``AWS_*``; :mod:`uns.lake.storage`).  Each function returns what the command prints.
"""

from __future__ import annotations

import json
from pathlib import Path

from uns import lake as lake_pkg
from uns.config import load_config
from uns.errors import UnsError
from uns.lake.maintenance import compaction_summary
from uns.lake.quarantine import quarantined, quarantined_rows
from uns.lake.query import queries_from_file, run_queries
from uns.lake.storage import LakeStore, wal_dir_of
from uns.output import FORMATS, render_rows

__all__ = ["compact", "info", "lake_store", "quarantine", "repair", "sql", "vacuum"]


def _lake(lake: str | None) -> lake_pkg.Lake:
    """The lake to maintain, with the configuration's audit anchor (audit.anchor)."""
    return lake_pkg.Lake(lake_store(lake), audit=load_config().audit)


def lake_store(lake: str | None) -> LakeStore:
    """The lake the command works on (UnsError when none is configured)."""
    section = load_config(overrides={"lake.path": lake}).lake
    if not section.path:
        raise UnsError("no lake configured: pass --lake DIR or set UNS_LAKE")
    return LakeStore(section.path, section.storage)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UnsError(f"--format must be one of {', '.join(FORMATS)}")


def sql(
    lake: str | None, query: str | None, fmt: str, *, file: str | None = None, name: str | None = None
) -> str:
    """One query given as text, or the queries of a file (all, or the one named): each
    result under its name when there are several (JSON: an object by name)."""
    _check_format(fmt)
    if (query is None) == (file is None):
        raise UnsError("give the query as QUERY or a file of queries with --file FILE (one of the two)")
    if name is not None and file is None:
        raise UnsError("--name picks a query of --file FILE")
    queries = {"": query or ""} if file is None else queries_from_file(file, name)
    if len(queries) > 1 and fmt == "csv":
        raise UnsError(f"--format csv shows one query: pick one with --name ({', '.join(queries)})")
    results = run_queries(lake_store(lake), queries)
    if len(results) == 1:
        return render_rows(results[0].columns, results[0].rows, fmt)
    if fmt == "json":
        parts = {r.name: json.loads(render_rows(r.columns, r.rows, "json")) for r in results}
        return json.dumps(parts, indent=2)
    return "\n\n".join(f"-- name: {r.name}\n{render_rows(r.columns, r.rows, fmt)}" for r in results)


def info(lake: str | None, fmt: str) -> str:
    _check_format(fmt)
    rows = [ti.as_dict() for ti in lake_pkg.Lake(lake_store(lake)).info().values()]
    columns = list(rows[0]) if rows else ["table"]
    return render_rows(columns, [[r.get(c) for c in columns] for r in rows], fmt)


def compact(lake: str | None, *, z_order: bool, fmt: str = "table") -> str:
    """Per table: files removed and added, the live rows and files, the seconds taken."""
    _check_format(fmt)
    target = _lake(lake)
    rows = compaction_summary(target.compact(z_order=z_order), target.info())
    columns = ["table", "files_removed", "files_added", "rows", "files", "seconds"]
    if fmt != "table":
        return render_rows(list(rows[0]) if rows else columns, [list(r.values()) for r in rows], fmt)
    removed = sum(r["files_removed"] for r in rows)
    added = sum(r["files_added"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    table = render_rows(columns, [[r[c] for c in columns] for r in rows], "table")
    return (
        f"{table}\ncompacted {removed} files into {added} in {seconds:.1f} s; the replaced files stay on "
        "disk for time travel until `uns lake vacuum` (the live ones are in each table's Delta log)"
    )


def vacuum(lake: str | None, retention_hours: float, *, dry_run: bool, force: bool) -> str:
    result = _lake(lake).vacuum(retention_hours, dry_run=dry_run, enforce_retention=not force)
    return json.dumps(result, indent=2, default=str)


def repair(lake: str | None, reason: str) -> str:
    result = lake_pkg.Lake(lake_store(lake)).repair(reason=reason)
    if not result.partitions:
        return "nothing to repair: every rejected row is bounded"
    days = ", ".join(sorted(result.partitions))
    files = sum(map(len, result.partitions.values()))
    return f"rewrote {files} file(s) of the rejected table bounded ({result.rows} rows; partitions {days})"


def _wal_dirs(lake: str | None) -> list[Path]:
    """Every write-ahead log of the lake on this machine: ``<lake>/_wal*`` and ``lake.wal_dir``."""
    section = load_config(overrides={"lake.path": lake}).lake
    store = lake_store(lake)
    dirs = [] if store.remote else sorted(p for p in store.local.glob("_wal*") if p.is_dir())
    if section.wal_dir:
        dirs.append(wal_dir_of(store, section))
    return list(dict.fromkeys(dirs))


def quarantine(lake: str | None, show: int | None, fmt: str) -> str:
    """The WAL segments moved aside (lake.quarantine), or the rows of segment ``show``."""
    _check_format(fmt)
    dirs = _wal_dirs(lake)
    if show is not None:
        for wal_dir in dirs:
            if any(q.number == show for q in quarantined(wal_dir)):
                return json.dumps(quarantined_rows(wal_dir, show), indent=2, default=str)
        raise UnsError(f"no quarantined WAL segment {show} (see `uns lake quarantine`)")
    columns = ["segment", "file", "bytes", "rows", "failures", "moved_at_ms", "error"]
    rows = [
        [q.number, str(q.path), q.size, q.note.get("rows"), q.note.get("failures"), q.note.get("moved_at_ms"),
         q.note.get("error")]
        for wal_dir in dirs
        for q in quarantined(wal_dir)
    ]  # fmt: skip
    return render_rows(columns, rows, fmt)
