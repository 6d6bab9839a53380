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
from uns.lake.query import run_sql
from uns.lake.storage import LakeStore
from uns.output import FORMATS, render_rows

__all__ = ["compact", "info", "lake_store", "sql", "vacuum"]


def _lake(lake: str | None) -> lake_pkg.Lake:
    """The lake to maintain, with the configuration's audit anchor (audit.anchor)."""
    return lake_pkg.Lake(lake_store(lake), audit=load_config().audit)


def lake_store(lake: str | None) -> LakeStore:
    """The lake the command works on (UnsError when none is configured)."""
    section = load_config(overrides={"lake.path": lake}).lake
    if not section.path:
        raise UnsError("no lake configured: pass --lake DIR or set UNS_LAKE")
    return LakeStore(section.path, section.storage)


def sql(lake: str | None, query: str, fmt: str) -> str:
    if fmt not in FORMATS:
        raise UnsError(f"--format must be one of {', '.join(FORMATS)}")
    columns, rows = run_sql(lake_store(lake), query)
    return render_rows(columns, rows, fmt)


def info(lake: str | None, fmt: str) -> str:
    rows = [ti.as_dict() for ti in lake_pkg.Lake(lake_store(lake)).info().values()]
    columns = list(rows[0]) if rows else ["table"]
    return render_rows(columns, [[r.get(c) for c in columns] for r in rows], fmt)


def compact(lake: str | None, *, z_order: bool) -> str:
    return json.dumps(_lake(lake).compact(z_order=z_order), indent=2, default=str)


def vacuum(lake: str | None, retention_hours: float, *, dry_run: bool, force: bool) -> str:
    result = _lake(lake).vacuum(
        retention_hours, dry_run=dry_run, enforce_retention=not force
    )
    return json.dumps(result, indent=2, default=str)
