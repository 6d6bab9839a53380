-- Every measurement with the context columns recomputed from the context table by the
-- measurement's own timestamp, so late or corrected context corrects history.
--
-- Context changes are few, measurements many: each measurement path is mapped to its
-- deepest context path (all context that can apply to it applies to that path too), and
-- the measurements meet that path's timeline in one ASOF join.
CREATE OR REPLACE VIEW measurements_asof AS
WITH m_paths AS (SELECT DISTINCT path FROM _uns_measurements),
ctx_paths AS (SELECT DISTINCT path FROM _uns_context_changes),
m_q AS (  -- the deepest context path at or above each measurement path
    SELECT mp.path, arg_max(cp.path, length(cp.path)) AS q
    FROM m_paths mp JOIN ctx_paths cp ON mp.path = cp.path OR starts_with(mp.path, cp.path || '/')
    GROUP BY mp.path
)
SELECT m."ts", m."received_at", m."path", m."metric", m."datatype", m."value_double", m."value_text",
    m."unit", m."quality", m."is_historical", m."group_id", m."edge_node_id", m."device_id", m."seq",
    t."batch_id", t."order_id", t."product", t."recipe", t."phase", t."context",
    m."bdseq", m."alias", m."is_transient", m."is_null", m."unmapped", m."wal_writer", m."wal_segment",
    m."value_int", m."date"
FROM measurements m
LEFT JOIN m_q ON m_q.path = m.path
ASOF LEFT JOIN _uns_context_timeline t ON t.q = m_q.q AND m.ts >= t.ts
