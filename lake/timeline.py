"""The effective-context timeline as SQL: what ``measurements_asof`` and the batch views share.

:func:`timeline_ctes` is the body of a ``WITH`` clause over the registered
``_uns_context`` relation.  Its last CTE, ``timeline``, has one row per context
path (``q``) and instant at which any context that applies to it changes, with
the effective value of every key of :data:`lake.tables.CONTEXT_COLUMNS` (and,
when asked for, the JSON object of every effective key) by the rules of
:class:`uns.core.context.ContextStore`: a key set on a path applies below it
unless a deeper path sets it; a clear (``value`` NULL) removes only that path's
own value; an empty value hides the key; for equal timestamps the later arrival
(``ingest_order``) wins.  The CTE ``ctx`` (one change per path, key and
instant) and ``ctx_paths`` are there to use too.
"""

from __future__ import annotations

from lake.tables import CONTEXT_COLUMNS

__all__ = ["timeline_ctes"]


def timeline_ctes(context: str, *, with_json: bool = True) -> str:
    """The CTEs ``ctx`` .. ``timeline`` over the context relation named ``context``."""
    pivots = ",\n        ".join(
        f"max(e.value) FILTER (WHERE e.key = '{k}') AS \"{k}\"" for k in CONTEXT_COLUMNS
    )
    json_column = (
        """,
        CAST(to_json(map_from_entries(
            list(struct_pack(k := e.key, v := e.value) ORDER BY e.key) FILTER (WHERE e.value IS NOT NULL)
        )) AS VARCHAR) AS context"""
        if with_json
        else ""
    )
    # Only our own constant table and column names are interpolated.
    return f"""
ctx AS (  -- one change per (path, key, ts): the later arrival wins
    SELECT path, key, ts, value FROM {context}
    QUALIFY row_number() OVER (PARTITION BY path, key, ts ORDER BY ingest_order DESC) = 1
),
ctx_paths AS (SELECT DISTINCT path FROM ctx),
ctx_anc AS (  -- each context path with its ancestors-or-self among the context paths
    SELECT q.path AS q, a.path AS a, length(a.path) AS depth
    FROM ctx_paths q JOIN ctx_paths a ON q.path = a.path OR starts_with(q.path, a.path || '/')
),
changes AS (SELECT DISTINCT an.q, x.ts FROM ctx x JOIN ctx_anc an ON x.path = an.a),
pairs AS (SELECT DISTINCT path, key FROM ctx),
grid AS (
    SELECT ch.q, ch.ts, an.a, an.depth, p.key
    FROM changes ch JOIN ctx_anc an ON an.q = ch.q JOIN pairs p ON p.path = an.a
),
state AS (  -- the value each ancestor holds at each change instant (NULL: cleared)
    SELECT g.q, g.ts, g.key, g.depth, x.value
    FROM grid g ASOF JOIN ctx x ON x.path = g.a AND x.key = g.key AND x.ts <= g.ts
),
effective AS (  -- the deepest set value wins; an empty value hides the key
    SELECT q, ts, key, nullif(arg_max(value, depth), '') AS value
    FROM state WHERE value IS NOT NULL GROUP BY q, ts, key
),
timeline AS (
    SELECT ch.q, ch.ts,
        {pivots}{json_column}
    FROM changes ch LEFT JOIN effective e ON e.q = ch.q AND e.ts = ch.ts
    GROUP BY ch.q, ch.ts
)"""  # noqa: S608
