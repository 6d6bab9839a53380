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
WITH pieces AS (
    SELECT *, sum(total) OVER w / sum(samples) OVER w AS grand_mean
    FROM _uns_batch_pieces
    WINDOW w AS (PARTITION BY batch_id, path, metric)
),
grouped AS (
    SELECT batch_id, path, metric, any_value(batch_path) AS batch_path,
        sum(samples) AS samples,
        sum(total) / sum(samples) AS mean,
        min(min) AS min,
        max(max) AS max,
        -- pieces combined exactly: within-piece squares plus each piece's offset from the mean
        CASE WHEN sum(samples) > 1 THEN
            sqrt(greatest(sum(m2 + samples * (total / samples - grand_mean) ^ 2), 0) / (sum(samples) - 1))
        END AS std,
        arg_max(last, last_ts) AS last,
        min(first_ts) AS first_ts,
        max(last_ts) AS last_ts
    FROM pieces
    GROUP BY batch_id, path, metric
),
spans AS (
    SELECT batch_id, path AS batch_path, min(start) AS start,
        CASE WHEN bool_or("end" IS NULL) THEN NULL ELSE max("end") END AS "end"
    FROM _uns_batch_segments GROUP BY batch_id, path
)
SELECT g.batch_id, g.path, g.metric, g.samples, g.mean, g.min, g.max, g.std, g.last,
    g.first_ts, g.last_ts, s.start, s."end",
    (epoch_ms(s."end") - epoch_ms(s.start)) / 1000.0 AS duration_s
FROM grouped g JOIN spans s USING (batch_id, batch_path)
