-- One change per (path, key, ts) of the context table: for equal timestamps the later
-- arrival (ingest_order) wins.  A NULL value is a clear of that path's own value.
CREATE OR REPLACE VIEW _uns_context_changes AS
SELECT path, key, ts, value
FROM _uns_context
QUALIFY row_number() OVER (PARTITION BY path, key, ts ORDER BY ingest_order DESC) = 1
