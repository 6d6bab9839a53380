-- The batch context of every batch record (materials, results, comments) by the record's
-- own time: what measurements_asof gives a sample on that path at that time, so a record
-- belongs to the batch its path's context has at its ts, and late or corrected context
-- corrects it.  One row per distinct (path, ts) of the three tables.
CREATE OR REPLACE VIEW _uns_record_context AS
WITH r AS (
    SELECT path, ts FROM _uns_materials
    UNION SELECT path, ts FROM _uns_results
    UNION SELECT path, ts FROM _uns_comments
),
ctx_paths AS (SELECT DISTINCT path FROM _uns_context_changes),
r_q AS (  -- the deepest context path at or above each record path
    SELECT rp.path, arg_max(cp.path, length(cp.path)) AS q
    FROM (SELECT DISTINCT path FROM r) rp
    JOIN ctx_paths cp ON rp.path = cp.path OR starts_with(rp.path, cp.path || '/')
    GROUP BY rp.path
)
SELECT r.path, r.ts, t."batch_id", t."order_id", t."product", t."recipe", t."phase"
FROM r
LEFT JOIN r_q ON r_q.path = r.path
ASOF LEFT JOIN _uns_context_timeline t ON t.q = r_q.q AND r.ts >= t.ts
