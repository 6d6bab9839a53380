-- The finite numeric samples of every series (path, metric) summed up in pieces, each
-- piece inside one run of one phase of one batch (a segment of _uns_batch_segments), with
-- that segment's batch_id and phase: the per-batch statistics views add pieces up.
--
-- A sample belongs to the segment of the deepest batch path at or above its path (a path
-- that sets batch_id or phase itself) that is in effect at the sample's time: what
-- measurements_asof gives it.  Assigning each sample on its own would sort every sample
-- of the lake; instead samples are summed per series and minute, and a minute in which
-- any segment starts or ends is cut at those instants (the piece: how many of the cuts
-- come at or before the sample).  Each piece then lies inside one segment of its batch
-- path, or between two, and one small ASOF join finds it.
CREATE OR REPLACE VIEW _uns_batch_pieces AS
WITH seg AS (
    SELECT path AS q, batch_id, phase, start, "end" FROM _uns_batch_segments
),
cuts AS (  -- per minute: the instants (epoch microseconds) in it at which a segment starts or ends
    SELECT t // 60000000 AS bucket, list(DISTINCT t ORDER BY t) AS cuts
    FROM (SELECT epoch_us(start) AS t FROM seg UNION ALL SELECT epoch_us("end") FROM seg)
    WHERE t IS NOT NULL
    GROUP BY bucket
),
samples AS (
    SELECT m.path, m.metric, m.ts, m.value_double AS v, m.bucket,
        CASE WHEN c.cuts IS NULL THEN 0
             ELSE len(list_filter(c.cuts, lambda x: x <= epoch_us(m.ts))) END AS piece
    FROM (SELECT *, epoch_us(ts) // 60000000 AS bucket FROM _uns_measurements) m
    LEFT JOIN cuts c USING (bucket)
    WHERE isfinite(m.value_double)
),
pieces AS (
    SELECT path, metric, bucket, piece,
        count(*) AS samples,
        sum(v) AS total,
        var_pop(v) * count(*) AS m2,  -- the squared deviations from the piece's mean, summed
        min(v) AS min,
        max(v) AS max,
        arg_max(v, ts) AS last,
        min(ts) AS first_ts,
        max(ts) AS last_ts
    FROM samples
    GROUP BY path, metric, bucket, piece
),
batch_paths AS (  -- every path that sets batch_id or phase itself, in a batch or not (yet)
    SELECT DISTINCT path AS q FROM _uns_context_changes WHERE key IN ('batch_id', 'phase')
),
placed AS (  -- each piece with the deepest batch path at or above its path
    SELECT p.*, g.q
    FROM pieces p JOIN batch_paths g ON p.path = g.q OR starts_with(p.path, g.q || '/')
    QUALIFY length(g.q) = max(length(g.q)) OVER (PARTITION BY p.path, p.metric, p.bucket, p.piece)
)
SELECT g.batch_id, p.path, p.metric, g.phase, p.q AS batch_path,
    p.samples, p.total, p.m2, p.min, p.max, p.last, p.first_ts, p.last_ts
FROM placed p
ASOF JOIN seg g ON g.q = p.q AND p.first_ts >= g.start
WHERE g."end" IS NULL OR p.first_ts < g."end"
