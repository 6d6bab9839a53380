-- One row per batch and path that sets batch_id itself (a unit the batch runs on), from
-- the first instant the batch is in effect there to the instant it stops being in effect
-- (end NULL while it still is); product, recipe, order_id: the last value in effect during
-- the batch; status 'aborted' when a context change batch_status = 'aborted' is inside the
-- batch (_uns_batch_windows), else 'open' while the batch is in effect, else 'closed'.
CREATE OR REPLACE VIEW batches AS
SELECT batch_id, path, product, recipe, order_id, start, "end",
    CASE WHEN "end" IS NULL THEN NULL ELSE (epoch_ms("end") - epoch_ms(start)) / 1000.0 END AS duration_s,
    CASE WHEN aborts IS NOT NULL THEN 'aborted' WHEN "end" IS NULL THEN 'open' ELSE 'closed' END AS status
FROM _uns_batch_windows
