-- One row per batch, phase and series (metric on a path) measured in that phase: the
-- statistics of batch_statistics over the samples in the phase (all its runs, if the
-- phase occurs twice), and the time the batch spent in the phase on the series' batch
-- path (the sum of its runs; "end" and duration_s NULL while a run lasts).  Samples of
-- the batch in no phase are the rows with phase NULL.  `uns batch trend --phase` reads it.
CREATE OR REPLACE VIEW batch_phase_statistics AS
WITH pieces AS (
    SELECT *, sum(total) OVER w / sum(samples) OVER w AS grand_mean
    FROM _uns_batch_pieces
    WINDOW w AS (PARTITION BY batch_id, path, metric, phase)
),
grouped AS (
    SELECT batch_id, path, metric, phase, any_value(batch_path) AS batch_path,
        sum(samples) AS samples,
        sum(total) / sum(samples) AS mean,
        min(min) AS min,
        max(max) AS max,
        CASE WHEN sum(samples) > 1 THEN
            sqrt(greatest(sum(m2 + samples * (total / samples - grand_mean) ^ 2), 0) / (sum(samples) - 1))
        END AS std,
        arg_max(last, last_ts) AS last,
        min(first_ts) AS first_ts,
        max(last_ts) AS last_ts
    FROM pieces
    GROUP BY batch_id, path, metric, phase
),
runs AS (
    SELECT batch_id, path AS batch_path, phase, min(start) AS start,
        CASE WHEN bool_or("end" IS NULL) THEN NULL ELSE max("end") END AS "end",
        CASE WHEN bool_or("end" IS NULL) THEN NULL
             ELSE sum(epoch_ms("end") - epoch_ms(start)) / 1000.0 END AS duration_s
    FROM _uns_batch_segments GROUP BY batch_id, path, phase
)
SELECT g.batch_id, g.path, g.metric, g.phase, g.samples, g.mean, g.min, g.max, g.std, g.last,
    g.first_ts, g.last_ts, r.start, r."end", r.duration_s
FROM grouped g JOIN runs r ON r.batch_id = g.batch_id AND r.batch_path = g.batch_path
    AND r.phase IS NOT DISTINCT FROM g.phase
