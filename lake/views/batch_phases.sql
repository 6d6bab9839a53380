-- One row per batch, batch path and run of one phase.
CREATE OR REPLACE VIEW batch_phases AS
SELECT batch_id, path, phase, start, "end" FROM _uns_batch_segments WHERE phase IS NOT NULL
