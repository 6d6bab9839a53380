-- One row per batch and path that sets batch_id itself (a unit the batch runs on), from
-- the first instant the batch is in effect there to the instant it stops being in effect
-- (end NULL while it still is); product, recipe, order_id: the last value in effect during
-- the batch; status 'aborted' when a context change batch_status = 'aborted' on the path,
-- above or below it is valid from inside the batch (its end included), else 'open' while
-- the batch is in effect, else 'closed'.
CREATE OR REPLACE VIEW batches AS
WITH b AS (
    SELECT batch_id, path,
        arg_max(product, start) FILTER (WHERE product IS NOT NULL) AS product,
        arg_max(recipe, start) FILTER (WHERE recipe IS NOT NULL) AS recipe,
        arg_max(order_id, start) FILTER (WHERE order_id IS NOT NULL) AS order_id,
        min(start) AS start,
        CASE WHEN bool_or("end" IS NULL) THEN NULL ELSE max("end") END AS "end"
    FROM _uns_batch_segments WHERE sets_batch
    GROUP BY batch_id, path
),
aborts AS (SELECT path, ts FROM _uns_context_changes WHERE key = 'batch_status' AND value = 'aborted')
SELECT batch_id, b.path, product, recipe, order_id, start, "end",
    CASE WHEN "end" IS NULL THEN NULL ELSE (epoch_ms("end") - epoch_ms(start)) / 1000.0 END AS duration_s,
    CASE WHEN EXISTS (
            SELECT 1 FROM aborts a
            WHERE (a.path = b.path OR starts_with(a.path, b.path || '/') OR starts_with(b.path, a.path || '/'))
              AND a.ts >= b.start AND (b."end" IS NULL OR a.ts <= b."end"))
         THEN 'aborted'
         WHEN "end" IS NULL THEN 'open' ELSE 'closed' END AS status
FROM b
