-- Example analyst queries over the uns lake (DuckDB SQL).
--
-- Run them all, each under its name, or one of them:
--   uns lake sql --file examples/queries.sql --lake ./uns-lake
--   uns lake sql --file examples/queries.sql --name batch_timeline --lake ./uns-lake
-- or in Python:
--   from uns import lake; con = lake.connect("./uns-lake"); con.sql("...").show()
-- Every query below starts with a "-- name:" line; uns.lake.query.named_queries()
-- splits this file into {name: sql}.  Paths and metric names are those of the
-- simulated pilot plant (`uns sim`); change the literals for your plant.


-- name: batch_timeline
-- When each batch went through which phase on each unit, from the MES/EBR
-- context events: one row per (unit, batch, phase) with start, end, duration.
WITH phases AS (
    SELECT
        path,
        ts AS phase_start,
        value AS phase,
        lead(ts) OVER (PARTITION BY path ORDER BY ts, ingest_order) AS phase_end
    FROM context
    WHERE key = 'phase'
),
batches AS (
    SELECT path, ts, value AS batch_id FROM context WHERE key = 'batch_id'
)
SELECT
    p.path,
    b.batch_id,
    p.phase,
    p.phase_start,
    p.phase_end,
    p.phase_end - p.phase_start AS duration
FROM phases AS p
ASOF LEFT JOIN batches AS b ON b.path = p.path AND b.ts <= p.phase_start
WHERE p.phase IS NOT NULL AND p.phase <> '' AND b.batch_id IS NOT NULL
ORDER BY p.path, p.phase_start;


-- name: phase_statistics
-- Per-phase statistics of a critical process parameter (bed temperature of
-- the granulator) for every batch, with the context as of each sample's time.
SELECT
    batch_id,
    phase,
    metric,
    any_value(unit) AS unit,
    min(ts) AS first_sample,
    count(*) AS samples,
    round(min(value_double), 3) AS minimum,
    round(avg(value_double), 3) AS mean,
    round(max(value_double), 3) AS maximum,
    round(stddev_samp(value_double), 4) AS std_dev,
    round(quantile_cont(value_double, 0.05), 3) AS p05,
    round(quantile_cont(value_double, 0.95), 3) AS p95
FROM measurements_asof
WHERE path = 'acme/basel/pilot/granulation/gr-201'
    AND metric = 'BedTemp'
    AND batch_id IS NOT NULL
    AND value_double IS NOT NULL
    AND quality = 'good'
GROUP BY batch_id, phase, metric
ORDER BY batch_id, first_sample;


-- name: batch_trend
-- A critical process parameter across batches (continued process verification):
-- one value per closed batch in batch start order -- here the mean bed temperature
-- of the granulator in its drying phase -- with the individuals / moving-range chart's
-- centre line and control limits.  `uns batch trend BedTemp --phase drying` charts
-- the same numbers (docs/batches.md section 7).  The views batch_phase_statistics
-- (per phase) and batch_statistics (over the whole batch) hold, per batch and series,
-- samples, mean, min, max, std, last and the duration of the batch or phase.
WITH b AS (
    SELECT batch_id, min(start) AS batch_start, bool_and(status = 'closed') AS closed
    FROM batches GROUP BY batch_id
),
points AS (
    SELECT s.batch_id, b.batch_start, s.samples, s.mean AS value,
        abs(s.mean - lag(s.mean) OVER (ORDER BY b.batch_start, s.batch_id)) AS moving_range
    FROM batch_phase_statistics AS s JOIN b USING (batch_id)
    WHERE s.metric = 'BedTemp' AND s.phase = 'drying'
        AND s.path = 'acme/basel/pilot/granulation/gr-201' AND b.closed
)
SELECT
    batch_id,
    batch_start,
    samples,
    value,
    moving_range,
    avg(value) OVER () AS centre,
    avg(moving_range) OVER () / 1.128 AS sigma_within,  -- d2 of a range of two
    avg(value) OVER () + 3 * avg(moving_range) OVER () / 1.128 AS ucl,
    avg(value) OVER () - 3 * avg(moving_range) OVER () / 1.128 AS lcl
FROM points
ORDER BY batch_start, batch_id;


-- name: excursions
-- Excursions beyond the engineering limits (engLow/engHigh) the device declared
-- in its newest BIRTH: consecutive out-of-limit samples form one excursion.
WITH limits AS (
    SELECT
        path,
        metric,
        TRY_CAST(json_extract_string(properties, '$.engLow') AS DOUBLE) AS low,
        TRY_CAST(json_extract_string(properties, '$.engHigh') AS DOUBLE) AS high
    FROM metric_catalog
    WHERE properties IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY path, metric ORDER BY birth_ts DESC) = 1
),
flagged AS (
    SELECT
        m.path, m.metric, m.ts, m.value_double, m.batch_id, m.phase, l.low, l.high,
        coalesce(m.value_double < l.low OR m.value_double > l.high, false) AS outside
    FROM measurements_asof AS m
    JOIN limits AS l USING (path, metric)
    WHERE m.value_double IS NOT NULL AND NOT isnan(m.value_double)
),
islands AS (
    -- samples of one excursion share the number of in-limit samples seen before them
    SELECT *, count(*) FILTER (WHERE NOT outside) OVER (PARTITION BY path, metric ORDER BY ts) AS island
    FROM flagged
)
SELECT
    path,
    metric,
    batch_id,
    phase,
    min(ts) AS excursion_start,
    max(ts) AS excursion_end,
    count(*) AS samples,
    min(value_double) AS lowest,
    max(value_double) AS highest,
    any_value(low) AS low_limit,
    any_value(high) AS high_limit
FROM islands
WHERE outside
GROUP BY path, metric, batch_id, phase, island
ORDER BY excursion_start;


-- name: batch_completeness
-- Is the record of each batch complete?  Samples, metrics, gaps in the data
-- (more than 10 s in which the unit sent no sample at all), and what the
-- Sparkplug sessions saw meanwhile: deaths, rebirths, sequence gaps, rebirth requests.
WITH samples AS (
    SELECT * FROM measurements_asof WHERE batch_id IS NOT NULL
),
windows AS (
    SELECT
        path,
        batch_id,
        min(ts) AS batch_start,
        max(ts) AS batch_end,
        count(*) AS samples,
        count(DISTINCT metric) AS metrics,
        count(*) FILTER (WHERE quality <> 'good') AS not_good,
        any_value(group_id) AS group_id,
        any_value(edge_node_id) AS edge_node_id,
        any_value(device_id) AS device_id
    FROM samples
    GROUP BY path, batch_id
),
intervals AS (
    SELECT path, batch_id, ts - lag(ts) OVER (PARTITION BY path, batch_id ORDER BY ts) AS step
    FROM (SELECT DISTINCT path, batch_id, ts FROM samples)
),
gaps AS (
    SELECT
        path,
        batch_id,
        count(*) FILTER (WHERE step > INTERVAL 10 SECOND) AS gaps,
        max(step) AS longest_gap
    FROM intervals
    GROUP BY path, batch_id
),
session_events AS (
    SELECT
        w.path,
        w.batch_id,
        -- an NDEATH is recorded for the node and for each of its devices, and every
        -- NBIRTH is followed by DBIRTHs: count the unit's own deaths and births
        count(s.event) FILTER (WHERE s.event = 'death' AND s.device_id IS NOT DISTINCT FROM w.device_id)
            AS deaths,
        count(s.event) FILTER (WHERE s.event = 'birth' AND s.device_id IS NOT DISTINCT FROM w.device_id)
            AS rebirths,
        count(s.event) FILTER (WHERE s.event IN ('seq_gap', 'reorder_timeout')) AS seq_gaps,
        count(s.event) FILTER (WHERE s.event = 'rebirth_requested') AS rebirth_requests
    FROM windows AS w
    LEFT JOIN sessions AS s
        ON s.group_id = w.group_id
        AND s.edge_node_id = w.edge_node_id
        AND (s.device_id IS NULL OR s.device_id = w.device_id)
        AND s.ts BETWEEN w.batch_start AND w.batch_end
    GROUP BY w.path, w.batch_id
)
SELECT
    w.path,
    w.batch_id,
    w.batch_start,
    w.batch_end,
    w.samples,
    w.metrics,
    w.not_good,
    g.gaps,
    g.longest_gap,
    e.deaths,
    e.rebirths,
    e.seq_gaps,
    e.rebirth_requests
FROM windows AS w
JOIN gaps AS g USING (path, batch_id)
JOIN session_events AS e USING (path, batch_id)
ORDER BY w.path, w.batch_start;

-- name: trace_measurements
-- Where each measurement row came from (docs/gxp.md, "Traceability"): the broker
-- message (its topic rebuilt from the Sparkplug ids, receive time, seq, bdSeq), the
-- writer and WAL segment it was committed from, and the audit entry that recorded
-- that segment's commit to the measurements table (with the files' SHA-256).
SELECT m.ts, m.path, m.metric, m.value_text,
       'spBv1.0/' || m.group_id || '/' || CASE WHEN m.device_id IS NULL THEN 'N' ELSE 'D' END
           || 'DATA/' || m.edge_node_id || coalesce('/' || m.device_id, '') AS topic,
       m.received_at, m.seq, m.bdseq, m.wal_writer, m.wal_segment,
       a.seq AS audit_seq, a.hash AS audit_hash, a.ts AS committed_at
FROM measurements m
LEFT JOIN audit a
       ON a.kind = 'data_commit' AND a.subject = 'measurements' AND a.writer_id = m.wal_writer
      AND CAST(json_extract(a.detail, '$.segment') AS BIGINT) = m.wal_segment
WHERE m.path = 'acme/basel/pilot/granulation/gr-201'
ORDER BY m.ts, m.metric
LIMIT 100;
