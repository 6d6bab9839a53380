-- One row per quality result (the results table), with the batch context of its path at
-- its ts (by event time: _uns_record_context) and whether it is out of specification.
CREATE OR REPLACE VIEW results AS
SELECT r."ts", r."received_at", r."path", r."record_id", r."user", r."source", r."signer",
    r."content_sha256", r."test", r."value_double", r."value_text", r."unit", r."low", r."high",
    r."status",
    coalesce(r."status" = 'fail' OR r."value_double" < r."low" OR r."value_double" > r."high", false) AS oos,
    c."batch_id", c."order_id", c."product", c."recipe", c."phase", r."date"
FROM _uns_results r LEFT JOIN _uns_record_context c ON c.path = r.path AND c.ts = r.ts
