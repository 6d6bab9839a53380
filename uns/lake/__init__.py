"""The uns lake: Delta/Parquet tables, a crash-safe writer and a DuckDB query layer.

- :class:`LakeSink`: the engine's writer (a Sink with a write-ahead log); :class:`LakeConfig`,
  its settings, is the config file's ``[lake]`` section (:class:`uns.config.LakeSection`).
- :func:`connect`: a DuckDB connection with the lake's views over one consistent snapshot.
- :class:`Lake`: maintenance (info, compact, vacuum) and a writer factory.

See docs/lake.md for the guarantees, the views and their columns.

The names load on first use: the engine's process needs the sink only, and
never loads DuckDB, deltalake or pyarrow (its Delta commits run in the lake's
commit worker process, :mod:`lake.worker`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uns.lake.maintenance import Lake, TableInfo
    from uns.lake.query import VIEWS, connect, refresh
    from uns.lake.schemas import SCHEMAS
    from uns.lake.sink import LakeConfig, LakeSink
    from uns.lake.tables import TABLES

__all__ = [
    "SCHEMAS",
    "TABLES",
    "VIEWS",
    "Lake",
    "LakeConfig",
    "LakeSink",
    "TableInfo",
    "connect",
    "refresh",
]

_HOME = {
    "Lake": "uns.lake.maintenance",
    "TableInfo": "uns.lake.maintenance",
    "VIEWS": "uns.lake.query",
    "connect": "uns.lake.query",
    "refresh": "uns.lake.query",
    "SCHEMAS": "uns.lake.schemas",
    "LakeConfig": "uns.lake.sink",
    "LakeSink": "uns.lake.sink",
    "TABLES": "uns.lake.tables",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'uns.lake' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
