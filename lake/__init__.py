"""The uns lake: Delta/Parquet tables, a crash-safe writer and a DuckDB query layer."""
