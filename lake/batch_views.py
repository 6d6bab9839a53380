"""The ``batches`` and ``batch_phases`` views: batches derived from the context table by event time.

Both come from the effective-context timeline (:mod:`lake.timeline`), so a late
or corrected context change corrects them exactly as it corrects
``measurements_asof``.  The internal view ``_uns_batch_segments`` has one row
per *batch path* (a context path that sets ``batch_id`` or ``phase`` itself)
and run of equal effective ``(batch_id, phase)`` with its ``start`` and ``end``
(NULL while the run lasts); inherited context is effective context, so a path
below a unit that sets only ``phase`` gets the unit's batch.

- ``batches``: per batch and path that sets ``batch_id`` itself (a unit the
  batch runs on), from the first instant the batch is in effect there to the
  instant it stops being in effect (``end`` NULL and ``status`` ``open`` while
  it still is); ``product``, ``recipe``, ``order_id``: the last value in effect
  during the batch.
- ``batch_phases``: per batch, batch path and run of one phase.
"""

from __future__ import annotations

from typing import Final

from lake.timeline import timeline_ctes

__all__ = ["BATCH_VIEWS", "SEGMENTS_VIEW", "batch_views_sql"]

BATCH_VIEWS: Final = ("batches", "batch_phases")
SEGMENTS_VIEW: Final = "_uns_batch_segments"


def batch_views_sql(context: str) -> tuple[str, ...]:
    """``CREATE VIEW`` statements for the batch views over the context relation ``context``."""
    # Only our own constant names are interpolated.
    segments = f"""
CREATE OR REPLACE VIEW {SEGMENTS_VIEW} AS
WITH {timeline_ctes(context, with_json=False)},
own AS (SELECT path, bool_or(key = 'batch_id') AS sets_batch FROM ctx
        WHERE key IN ('batch_id', 'phase') GROUP BY path),
rows AS (
    SELECT t.q AS path, o.sets_batch, t.ts, lead(t.ts) OVER (PARTITION BY t.q ORDER BY t.ts) AS next_ts,
        t.batch_id, t.phase, t.product, t.recipe, t.order_id
    FROM timeline t JOIN own o ON o.path = t.q
),
islands AS (
    SELECT *, row_number() OVER (PARTITION BY path ORDER BY ts)
        - row_number() OVER (PARTITION BY path, batch_id, phase ORDER BY ts) AS island
    FROM rows
)
SELECT path, sets_batch, batch_id, phase, min(ts) AS start,
    CASE WHEN bool_or(next_ts IS NULL) THEN NULL ELSE max(next_ts) END AS "end",
    arg_max(product, ts) FILTER (WHERE product IS NOT NULL) AS product,
    arg_max(recipe, ts) FILTER (WHERE recipe IS NOT NULL) AS recipe,
    arg_max(order_id, ts) FILTER (WHERE order_id IS NOT NULL) AS order_id
FROM islands WHERE batch_id IS NOT NULL
GROUP BY path, sets_batch, batch_id, phase, island
"""  # noqa: S608
    batches = f"""
CREATE OR REPLACE VIEW batches AS
SELECT batch_id, path,
    arg_max(product, start) FILTER (WHERE product IS NOT NULL) AS product,
    arg_max(recipe, start) FILTER (WHERE recipe IS NOT NULL) AS recipe,
    arg_max(order_id, start) FILTER (WHERE order_id IS NOT NULL) AS order_id,
    min(start) AS start,
    CASE WHEN bool_or("end" IS NULL) THEN NULL ELSE max("end") END AS "end",
    CASE WHEN bool_or("end" IS NULL) THEN NULL
         ELSE (epoch_ms(max("end")) - epoch_ms(min(start))) / 1000.0 END AS duration_s,
    CASE WHEN bool_or("end" IS NULL) THEN 'open' ELSE 'closed' END AS status
FROM {SEGMENTS_VIEW} WHERE sets_batch
GROUP BY batch_id, path
"""  # noqa: S608
    phases = f"""
CREATE OR REPLACE VIEW batch_phases AS
SELECT batch_id, path, phase, start, "end" FROM {SEGMENTS_VIEW} WHERE phase IS NOT NULL
"""  # noqa: S608
    return segments, batches, phases
