-- The statistics of every series (path, metric) per batch, both per phase (whole false)
-- and over the whole batch (whole true, phase NULL), from the pieces of _uns_batch_pieces.
-- Pieces combine exactly: the squared deviations within each piece (m2) plus each piece's
-- offset from the group's mean, n * (piece mean - mean)^2; the group's mean comes from a
-- window, so no sum of squares of the raw values (which loses precision) is needed.
CREATE OR REPLACE VIEW _uns_batch_series AS
WITH pieces AS (
    SELECT *,
        sum(total) OVER (PARTITION BY batch_id, path, metric, phase)
            / sum(samples) OVER (PARTITION BY batch_id, path, metric, phase) AS phase_mean,
        sum(total) OVER (PARTITION BY batch_id, path, metric)
            / sum(samples) OVER (PARTITION BY batch_id, path, metric) AS batch_mean
    FROM _uns_batch_pieces
)
SELECT batch_id, path, metric, phase, grouping(phase) = 1 AS whole, batch_path,
    sum(samples) AS samples,
    sum(total) / sum(samples) AS mean,
    min(min) AS min,
    max(max) AS max,
    CASE WHEN sum(samples) > 1 THEN sqrt(greatest(0, (
        sum(m2) + CASE WHEN grouping(phase) = 1
                       THEN sum(samples * (total / samples - batch_mean) ^ 2)
                       ELSE sum(samples * (total / samples - phase_mean) ^ 2) END
    ) / (sum(samples) - 1))) END AS std,
    arg_max(last, last_ts) AS last,
    min(first_ts) AS first_ts,
    max(last_ts) AS last_ts
FROM pieces
GROUP BY GROUPING SETS ((batch_id, path, metric, batch_path, phase), (batch_id, path, metric, batch_path))
