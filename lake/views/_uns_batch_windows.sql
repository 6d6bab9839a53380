-- One row per batch and path that sets batch_id itself (a unit the batch runs on): from the
-- first instant the batch is in effect there to the instant it stops being in effect (end
-- NULL while it still is); product, recipe, order_id: the last value in effect during it.
CREATE OR REPLACE VIEW _uns_batch_windows AS
SELECT batch_id, path,
    arg_max(product, start) FILTER (WHERE product IS NOT NULL) AS product,
    arg_max(recipe, start) FILTER (WHERE recipe IS NOT NULL) AS recipe,
    arg_max(order_id, start) FILTER (WHERE order_id IS NOT NULL) AS order_id,
    min(start) AS start,
    CASE WHEN bool_or("end" IS NULL) THEN NULL ELSE max("end") END AS "end"
FROM _uns_batch_segments WHERE sets_batch
GROUP BY batch_id, path
