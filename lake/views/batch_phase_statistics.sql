-- One row per batch, phase and series (metric on a path) measured in that phase: the
-- statistics of batch_statistics over the samples in the phase (all its runs, if the
-- phase occurs twice), and the time the batch spent in the phase on the series' batch
-- path (the sum of its runs; "end" and duration_s NULL while a run lasts).  Samples of
-- the batch in no phase are the rows with phase NULL.  `uns batch trend --phase` reads it.
CREATE OR REPLACE VIEW batch_phase_statistics AS
WITH runs AS (
    SELECT batch_id, path AS batch_path, phase, min(start) AS start,
        CASE WHEN bool_or("end" IS NULL) THEN NULL ELSE max("end") END AS "end",
        CASE WHEN bool_or("end" IS NULL) THEN NULL
             ELSE sum(epoch_ms("end") - epoch_ms(start)) / 1000.0 END AS duration_s
    FROM _uns_batch_segments GROUP BY batch_id, path, phase
)
SELECT s.batch_id, s.path, s.metric, s.phase, s.samples, s.mean, s.min, s.max, s.std, s.last,
    s.first_ts, s.last_ts, r.start, r."end", r.duration_s
FROM _uns_batch_series s JOIN runs r ON r.batch_id = s.batch_id AND r.batch_path = s.batch_path
    AND r.phase IS NOT DISTINCT FROM s.phase
WHERE NOT s.whole
