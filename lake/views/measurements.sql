-- The measurements table with value_text whole: the table stores the text of strings,
-- bytes, arrays, DataSets and Templates only; numbers and booleans are rendered here from
-- value_int (integers, exact; UInt64 above 2^63 is stored as two's complement) and
-- value_double (floats: DuckDB's shortest round-trip text, as Python's repr; booleans).
-- Files written before value_int existed hold the text itself, which wins.
CREATE OR REPLACE VIEW measurements AS
SELECT "ts", "received_at", "path", "metric", "datatype", "value_double",
    coalesce("value_text", CASE
        WHEN "value_int" IS NOT NULL THEN
            CASE WHEN "datatype" = 'UInt64' AND "value_int" < 0
                THEN CAST(CAST("value_int" AS HUGEINT) + 18446744073709551616 AS VARCHAR)
                ELSE CAST("value_int" AS VARCHAR) END
        WHEN "value_double" IS NULL THEN NULL
        WHEN "datatype" = 'Boolean' THEN CASE WHEN "value_double" <> 0 THEN 'true' ELSE 'false' END
        WHEN isnan("value_double") THEN 'nan'
        ELSE CAST("value_double" AS VARCHAR) END) AS "value_text",
    "unit", "quality", "is_historical", "group_id", "edge_node_id", "device_id", "seq",
    "batch_id", "order_id", "product", "recipe", "phase", "context", "bdseq", "alias", "is_transient",
    "is_null", "unmapped", "wal_writer", "wal_segment", "value_int", "date"
FROM _uns_measurements
