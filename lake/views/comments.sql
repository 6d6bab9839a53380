-- One row per operator comment or manual entry (the comments table), with the batch
-- context of its path at its ts (by event time: _uns_record_context).
CREATE OR REPLACE VIEW comments AS
SELECT k."ts", k."received_at", k."path", k."record_id", k."user", k."source", k."signer",
    k."content_sha256", k."text", c."batch_id", c."order_id", c."product", c."recipe", c."phase", k."date"
FROM _uns_comments k LEFT JOIN _uns_record_context c ON c.path = k.path AND c.ts = k.ts
