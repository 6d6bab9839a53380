-- One row per batch and path that sets batch_id itself (a unit the batch runs on), from
-- the first instant the batch is in effect there to the instant it stops being in effect
-- (end NULL while it still is); product, recipe, order_id: the last value in effect during
-- the batch; status 'aborted' when a context change batch_status = 'aborted' is inside the
-- batch (_uns_batch_aborts), else 'open' while the batch is in effect, else 'closed'.
CREATE OR REPLACE VIEW batches AS
SELECT w.batch_id, w.path, w.product, w.recipe, w.order_id, w.start, w."end",
    CASE WHEN w."end" IS NULL THEN NULL ELSE (epoch_ms(w."end") - epoch_ms(w.start)) / 1000.0 END AS duration_s,
    CASE WHEN EXISTS (SELECT 1 FROM _uns_batch_aborts a WHERE a.batch_id = w.batch_id AND a.unit = w.path)
         THEN 'aborted'
         WHEN w."end" IS NULL THEN 'open' ELSE 'closed' END AS status
FROM _uns_batch_windows w
