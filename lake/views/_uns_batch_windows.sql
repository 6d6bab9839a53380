-- One row per batch and path that sets batch_id itself (a unit the batch runs on): from the
-- first instant the batch is in effect there to the instant it stops being in effect (end
-- NULL while it still is); product, recipe, order_id: the last value in effect during it;
-- aborts: the context changes batch_status = 'aborted' inside it (NULL: none) -- on the
-- path, above or below it, valid from inside the window (its end included: an abort may
-- come with the batch's end; at its start instant only when the path's batch before does
-- not end there: then it is that one's).
CREATE OR REPLACE VIEW _uns_batch_windows AS
WITH w AS MATERIALIZED (
    SELECT *, lag("end") OVER (PARTITION BY path ORDER BY start) AS before_end FROM (
        SELECT batch_id, path,
            arg_max(product, start) FILTER (WHERE product IS NOT NULL) AS product,
            arg_max(recipe, start) FILTER (WHERE recipe IS NOT NULL) AS recipe,
            arg_max(order_id, start) FILTER (WHERE order_id IS NOT NULL) AS order_id,
            min(start) AS start,
            CASE WHEN bool_or("end" IS NULL) THEN NULL ELSE max("end") END AS "end"
        FROM _uns_batch_segments WHERE sets_batch
        GROUP BY batch_id, path
    )
),
a AS (SELECT path, ts FROM _uns_context_changes WHERE key = 'batch_status' AND value = 'aborted'),
ab AS (
    SELECT w.batch_id, w.path, list(struct_pack(path := a.path, ts := a.ts) ORDER BY a.ts, a.path) AS aborts
    FROM w JOIN a
        ON (a.path = w.path OR starts_with(a.path, w.path || '/') OR starts_with(w.path, a.path || '/'))
        AND a.ts >= w.start AND (w."end" IS NULL OR a.ts <= w."end")
    WHERE a.ts > w.start OR w.before_end IS DISTINCT FROM w.start
    GROUP BY w.batch_id, w.path
)
SELECT w.batch_id, w.path, w.product, w.recipe, w.order_id, w.start, w."end", ab.aborts
FROM w LEFT JOIN ab USING (batch_id, path)
