"""The lake's tables as explicit Arrow schemas, built from ``lake/tables.toml``
(:mod:`uns.lake.declared`; docs/lake.md explains the columns)."""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from uns.lake.declared import table_columns

__all__ = ["SCHEMAS", "arrow_type"]

_TYPES: Final[dict[str, pa.DataType]] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "binary": pa.binary(),
    "date32": pa.date32(),
    "timestamp[ms, UTC]": pa.timestamp("ms", tz="UTC"),
    "timestamp[us, UTC]": pa.timestamp("us", tz="UTC"),
}


def arrow_type(name: str) -> pa.DataType:
    """The Arrow type a type name of ``lake/tables.toml`` stands for."""
    try:
        return _TYPES[name]
    except KeyError:
        raise ValueError(f"lake/tables.toml: unknown column type {name!r}") from None


SCHEMAS: Final[dict[str, pa.Schema]] = {
    table: pa.schema([(name, arrow_type(kind)) for name, kind in columns])
    for table, columns in table_columns().items()
}
