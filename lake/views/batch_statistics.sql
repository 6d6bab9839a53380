-- One row per batch and series (metric on a path) measured during the batch: the statistics
-- of its finite numeric samples over the whole batch (every phase, and the time in the
-- batch without a phase), and the batch's time on the series' batch path.
--
-- samples, mean, min, max, std (sample standard deviation, n - 1; NULL under two samples),
-- last (the value of the newest sample), first_ts and last_ts (the first and newest
-- sample's time); start, "end" and duration_s: the batch on the series' batch path (the
-- deepest path at or above it that sets batch_id or phase), "end" and duration_s NULL
-- while the batch is open there.  `uns batch trend` reads this view.
CREATE OR REPLACE VIEW batch_statistics AS
WITH spans AS (
    SELECT batch_id, path AS batch_path, min(start) AS start,
        CASE WHEN bool_or("end" IS NULL) THEN NULL ELSE max("end") END AS "end"
    FROM _uns_batch_segments GROUP BY batch_id, path
)
SELECT s.batch_id, s.path, s.metric, s.samples, s.mean, s.min, s.max, s.std, s.last,
    s.first_ts, s.last_ts, t.start, t."end",
    (epoch_ms(t."end") - epoch_ms(t.start)) / 1000.0 AS duration_s
FROM _uns_batch_series s JOIN spans t USING (batch_id, batch_path)
WHERE s.whole
