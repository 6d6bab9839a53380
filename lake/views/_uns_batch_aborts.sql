-- Every context change batch_status = 'aborted' inside a batch: on the batch's unit path,
-- above or below it, valid from inside the batch's window there (its end included: an abort
-- may come with the batch's end).  At the window's start instant it counts only when no
-- other batch of that path ends there (that one's end, not this one's start).
CREATE OR REPLACE VIEW _uns_batch_aborts AS
WITH a AS (SELECT path, ts FROM _uns_context_changes WHERE key = 'batch_status' AND value = 'aborted')
SELECT w.batch_id, w.path AS unit, a.path, a.ts
FROM _uns_batch_windows w
JOIN a ON (a.path = w.path OR starts_with(a.path, w.path || '/') OR starts_with(w.path, a.path || '/'))
    AND a.ts >= w.start AND (w."end" IS NULL OR a.ts <= w."end")
WHERE a.ts > w.start
   OR NOT EXISTS (SELECT 1 FROM _uns_batch_windows o WHERE o.path = w.path AND o."end" = w.start)
