"""The uns lake: Delta/Parquet tables, a crash-safe writer and a DuckDB query layer.

- :class:`LakeSink` / :class:`LakeConfig`: the engine's writer (a Sink with a write-ahead log).
- :func:`connect`: a DuckDB connection with the lake's views over one consistent snapshot.
- :class:`Lake`: maintenance (info, compact, vacuum) and a writer factory.

See docs/lake.md for the guarantees, the views and their columns.
"""

from lake.maintenance import Lake, TableInfo
from lake.query import VIEWS, connect, refresh
from lake.sink import LakeConfig, LakeSink
from lake.tables import SCHEMAS, TABLES

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
