-- One row per batch path (a context path that sets batch_id or phase itself) and run of
-- equal effective (batch_id, phase), with its start and end (NULL while the run lasts).
-- Inherited context is effective context: a path below a unit that sets only phase gets
-- the unit's batch.
CREATE OR REPLACE VIEW _uns_batch_segments AS
WITH own AS (
    SELECT path, bool_or(key = 'batch_id') AS sets_batch FROM _uns_context_changes
    WHERE key IN ('batch_id', 'phase') GROUP BY path
),
rows AS (
    SELECT t.q AS path, o.sets_batch, t.ts, lead(t.ts) OVER (PARTITION BY t.q ORDER BY t.ts) AS next_ts,
        t.batch_id, t.phase, t.product, t.recipe, t.order_id
    FROM _uns_context_timeline t JOIN own o ON o.path = t.q
),
islands AS (
    SELECT *, row_number() OVER (PARTITION BY path ORDER BY ts)
        - row_number() OVER (PARTITION BY path, batch_id, phase ORDER BY ts) AS island
    FROM rows
)
SELECT path, sets_batch, batch_id, phase, min(ts) AS start,
    CASE WHEN bool_or(next_ts IS NULL) THEN NULL ELSE max(next_ts) END AS "end",
    arg_max(product, ts) FILTER (WHERE product IS NOT NULL) AS product,
    arg_max(recipe, ts) FILTER (WHERE recipe IS NOT NULL) AS recipe,
    arg_max(order_id, ts) FILTER (WHERE order_id IS NOT NULL) AS order_id
FROM islands WHERE batch_id IS NOT NULL
GROUP BY path, sets_batch, batch_id, phase, island
