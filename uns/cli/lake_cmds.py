"""What ``uns lake sql|info|compact|vacuum`` print, on a lake directory or an object-store URL.

The lake comes from ``--lake`` (or ``UNS_LAKE``, or the config file's ``lake.path``), its
store options from the config file's ``[lake.storage]`` and the store's own environment
variables (``AWS_*``; :mod:`uns.lake.storage`).  Each function returns what the command prints.
"""

from __future__ import annotations

import json

from uns import lake as lake_pkg
from uns.config import load_config
from uns.errors import UnsError
from uns.lake.maintenance import compaction_summary
from uns.lake.query import queries_from_file, run_queries
from uns.lake.storage import LakeStore
from uns.output import FORMATS, render_rows

__all__ = ["compact", "info", "lake_store", "sql", "vacuum"]


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
    target = lake_pkg.Lake(lake_store(lake))
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
    result = lake_pkg.Lake(lake_store(lake)).vacuum(
        retention_hours, dry_run=dry_run, enforce_retention=not force
    )
    return json.dumps(result, indent=2, default=str)
