-- One row per material lot charged (the materials table), with the batch context of its
-- path at its ts (by event time: _uns_record_context).
CREATE OR REPLACE VIEW materials AS
SELECT m."ts", m."received_at", m."path", m."record_id", m."user", m."source", m."signer",
    m."content_sha256", m."material", m."lot", m."quantity", m."unit", m."status", m."expiry",
    c."batch_id", c."order_id", c."product", c."recipe", c."phase", m."date"
FROM _uns_materials m LEFT JOIN _uns_record_context c ON c.path = m.path AND c.ts = m.ts
